//! `find` and `diff`: which versions of a path exist, and what changed between snapshots.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Args;
use strata::history::{self, ChangeKind, FindOptions};
use strata::patterns::Patterns;
use strata::timespec;

use super::args::FilterArgs;
use super::browse::escape_into;
use super::exit;
use super::output;
use super::Global;

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Globs matched against absolute paths in the snapshots; one without a `/` matches a
    /// name at any depth (as in .gitignore).
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Only snapshots taken at or after this time (as --at takes it).
    #[arg(long)]
    since: Option<String>,
    /// Only snapshots taken at or before this time.
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn find(global: &Global, args: FindArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let instant = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| timespec::parse_instant(t, timespec::now()))
            .transpose()
            .map_err(|e| exit::usage(format!("--{flag}: {e}")))
    };
    if args.patterns.iter().any(|p| p.trim().is_empty()) {
        return Err(exit::usage(
            "pattern: an empty pattern would match every path: give a name or a glob",
        ));
    }
    let opts = FindOptions {
        patterns: Patterns::new(&args.patterns).map_err(exit::usage)?,
        filter: args.filter.filter(global, &repo)?,
        since: instant("since", &args.since)?,
        until: instant("until", &args.until)?,
    };
    let found = history::find(&repo, &opts)?;
    let versions = found.versions;
    if global.json {
        output::print_json(&versions);
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for v in &versions {
            let mut line = Vec::new();
            escape_into(&mut line, v.path.as_os_str().as_bytes());
            writeln!(
                out,
                "{}\n    {:?}, {} bytes, modified {}; in {} snapshot(s): {} ({}) .. {} ({}){}",
                String::from_utf8_lossy(&line),
                v.kind,
                v.size,
                output::when(&v.mtime),
                v.snapshots,
                v.first.id.short(),
                output::when(&v.first.time),
                v.last.id.short(),
                output::when(&v.last.time),
                match &v.first.set {
                    Some(s) => format!(", set {}", output::plain(s)),
                    None => format!(", {}", output::plain(&v.lineage)),
                }
            )?;
        }
        out.flush()?;
    }
    for (id, e) in &found.refused {
        let remedy = e.remedy().map(|r| format!(" ({})", output::remedy(r)));
        eprintln!(
            "error: snapshot {} not searched: {}{}",
            id.short(),
            output::plain(&e.to_string()),
            remedy.unwrap_or_default()
        );
    }
    if versions.is_empty() {
        eprintln!(
            "nothing matched {} in the snapshots {}",
            output::plain(&args.patterns.join(" ")),
            match found.refused.is_empty() {
                true => "selected",
                false => "searched",
            }
        );
        return Ok(exit::FAILURE);
    }
    match found.refused.is_empty() {
        true => Ok(exit::OK),
        false => Ok(exit::FAILURE),
    }
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The earlier snapshot: id, unique id prefix, or "latest".
    first: String,
    /// The later snapshot.
    second: String,
    /// Only below this path.
    path: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn diff(global: &Global, args: DiffArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let f = args.filter.filter(global, &repo)?;
    let (_, a) = repo.snapshots().find_in(&args.first, &f)?;
    let (_, b) = repo.snapshots().find_in(&args.second, &f)?;
    // Each change is printed as the walk meets it: a diff of millions of paths holds
    // none of them.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut walk = |sink: &mut dyn FnMut(history::Change) -> strata::Result<()>| {
        history::diff(&repo, (&a, &b), args.path.as_deref(), sink)
    };
    if global.json {
        diff_json(&mut out, &mut walk)?;
    } else {
        let totals = walk(&mut |c| out.write_all(&change_line(&c)).map_err(stdout))?;
        if !global.quiet {
            writeln!(
                out,
                "{} added, {} removed, {} changed; +{} -{}",
                totals.added,
                totals.removed,
                totals.changed,
                output::bytes(totals.bytes_added),
                output::bytes(totals.bytes_removed)
            )?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

type Sink<'a> = &'a mut dyn FnMut(history::Change) -> strata::Result<()>;

/// A write to standard output that failed, as the diff's sink reports it.
fn stdout(e: std::io::Error) -> strata::Error {
    strata::Error::io("standard output", e)
}

/// `diff --json`: one object, `changes` then the totals, written piece by piece as
/// `walk` hands each change over.
fn diff_json(
    out: &mut impl Write,
    walk: &mut dyn FnMut(Sink) -> strata::Result<history::DiffTotals>,
) -> anyhow::Result<()> {
    out.write_all(b"{\n  \"changes\": [")?;
    let mut first = true;
    let totals = walk(&mut |c| {
        let sep = if std::mem::take(&mut first) {
            "\n"
        } else {
            ",\n"
        };
        let json = serde_json::to_string(&c).expect("JSON");
        write!(out, "{sep}    {json}").map_err(stdout)
    });
    out.write_all(if first { b"]" } else { b"\n  ]" })?;
    let totals = match totals {
        Ok(totals) => serde_json::to_value(totals).expect("JSON"),
        // What was written stays one JSON object, saying why it ends there (hostile
        // pass 7: it ended mid-array).
        Err(e) => {
            let why = serde_json::Value::from(e.to_string());
            write!(out, ",\n  \"error\": {why}\n}}\n")?;
            out.flush()?;
            return Err(e.into());
        }
    };
    for (k, v) in totals.as_object().expect("an object") {
        write!(out, ",\n  {}: {v}", serde_json::Value::from(k.as_str()))?;
    }
    out.write_all(b"\n}\n")?;
    Ok(())
}

/// `diff`'s line for one change: `+`, `-` or `M`, the path escaped, what differs.
fn change_line(c: &history::Change) -> Vec<u8> {
    let mut line = match c.change {
        ChangeKind::Added => b"+ ".to_vec(),
        ChangeKind::Removed => b"- ".to_vec(),
        ChangeKind::Changed => b"M ".to_vec(),
    };
    escape_into(&mut line, c.path.as_os_str().as_bytes());
    if !c.what.is_empty() {
        line.extend_from_slice(format!("  ({})", c.what.join(", ")).as_bytes());
    }
    line.push(b'\n');
    line
}
