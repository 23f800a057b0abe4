use std::path::PathBuf;

use super::exit;
use anyhow::anyhow;
use clap::Args;
use strata::patterns::Patterns;
use strata::restore::{self, RestoreOptions};
use strata::select_at;
use strata::timespec;

use super::browse::FilterArgs;
use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique id prefix, or "latest" (or use --at).
    #[arg(required_unless_present = "at", conflicts_with = "at")]
    snapshot: Option<String>,
    /// Restore the newest snapshot taken at or before this time (RFC 3339,
    /// "YYYY-MM-DD HH:MM[:SS]" local time, or a duration ago such as 90m, 2h, 3d).
    #[arg(long)]
    at: Option<String>,
    /// Directory to restore into.
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Restore only paths matching this glob (and what lies below them).
    #[arg(long = "include")]
    includes: Vec<String>,
    /// Do not restore paths matching this glob.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Re-read restored files and check them against the snapshot.
    #[arg(long)]
    verify: bool,
    /// Read, decrypt and verify everything, but write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: RestoreArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let (id, snap) = match (&args.snapshot, &args.at) {
        (_, Some(at)) => {
            let t =
                timespec::parse_instant(at, timespec::now()).map_err(|e| anyhow!("--at: {e}"))?;
            select_at(repo.snapshots()?, t, &args.filter.filter())?
        }
        (Some(s), None) => repo.find_snapshot_in(s, &args.filter.filter())?,
        (None, None) => unreachable!("clap requires one"),
    };
    let opts = RestoreOptions {
        target: args.target.clone(),
        includes: Patterns::new(&args.includes)?,
        excludes: Patterns::new(&args.excludes)?,
        verify: args.verify,
        dry_run: args.dry_run,
    };
    if !global.quiet && !global.json {
        eprintln!(
            "restoring snapshot {} from {} to {}",
            id.short(),
            snap.time,
            args.target.display()
        );
    }
    let bar = Bar::new(global.show_progress(), true, "restore");
    let report = restore::run(&repo, &snap, &opts, &bar)?;
    bar.finish();
    print_errors(&report.errors);
    if global.json {
        #[derive(serde::Serialize)]
        struct Restored<'a> {
            snapshot_id: strata::SnapshotId,
            time: &'a str,
            dry_run: bool,
            #[serde(flatten)]
            report: &'a restore::RestoreReport,
        }
        output::print_json(&Restored {
            snapshot_id: id,
            time: &snap.time,
            dry_run: args.dry_run,
            report: &report,
        });
    } else if !global.quiet {
        println!(
            "{} {} files, {} dirs, {} others, {}{}",
            if args.dry_run {
                "verified (dry run)"
            } else {
                "restored"
            },
            report.files,
            report.dirs,
            report.other,
            output::bytes(report.bytes),
            if args.verify {
                format!("; {} files re-read and verified", report.verified_files)
            } else {
                String::new()
            }
        );
    }
    if !report.errors.is_empty() {
        eprintln!(
            "restore incomplete: {} error(s); {} file(s) not restored exactly{}",
            report.errors.len(),
            report.damaged_files.len(),
            if report.damaged_files.is_empty() || args.dry_run {
                ""
            } else {
                " (renamed with the suffix .strata-damaged)"
            }
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

/// Errors grouped by cause: a full disk fails thousands of files for one reason, and the
/// operator needs the reason and a few examples, not thousands of lines.
fn print_errors(errors: &[restore::RestoreError]) {
    const EXAMPLES: usize = 3;
    let mut causes: Vec<(&str, Vec<&restore::RestoreError>)> = Vec::new();
    for e in errors {
        match causes.iter_mut().find(|(c, _)| *c == e.cause) {
            Some((_, v)) => v.push(e),
            None => causes.push((&e.cause, vec![e])),
        }
    }
    for (cause, list) in causes {
        for e in list.iter().take(EXAMPLES) {
            eprintln!("error: {}", output::plain(&e.to_string()));
        }
        if list.len() > EXAMPLES {
            eprintln!(
                "error: ... and {} more path(s) with the same error: {}",
                list.len() - EXAMPLES,
                output::plain(cause)
            );
        }
    }
}
