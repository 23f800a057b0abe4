use super::exit;
use clap::Args;
use strata::check::{self, ReadData};

use super::args::FilterArgs;
use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read, decrypt and re-hash every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read a subset of packs: N/M (the N-th of M parts) or P% (a random share).
    #[arg(long, conflicts_with = "read_data_budget")]
    read_data_subset: Option<String>,
    /// Read the packs verified least recently (never verified first) up to P% of the data
    /// or a size (500MiB); what was verified is recorded in the repository, so that 20
    /// runs at 5% cover every pack.
    #[arg(long, value_name = "P%|SIZE", conflicts_with = "read_data")]
    read_data_budget: Option<String>,
    /// Walk only these snapshots (and read only the data packs they use); the index and
    /// the packs are checked whole.
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    cold: super::restore::ColdArgs,
}

pub fn run(global: &Global, args: CheckArgs) -> anyhow::Result<i32> {
    let mode = match (
        &args.read_data,
        &args.read_data_subset,
        &args.read_data_budget,
    ) {
        (true, _, _) => ReadData::All,
        (false, Some(s), _) => ReadData::parse_subset(s).map_err(exit::usage)?,
        (false, None, Some(b)) => ReadData::Budget(check::Budget::parse(b).map_err(exit::usage)?),
        (false, None, None) => ReadData::None,
    };
    let repo = global.open()?;
    let bar = Bar::new(global.show_progress(), false, "check").quiet(global.quiet);
    let opts = check::CheckOptions {
        read_data: mode,
        filter: args.filter.filter(global, &repo)?,
        cold: args.cold.wait(),
        apps: vec![std::sync::Arc::new(strata_pg::WalCheck)],
    };
    let report = check::run_with(&repo, &opts, &bar)?;
    bar.finish();
    record_metrics(global, &repo, &report);
    for d in &report.lifecycle {
        eprintln!("warning: {d}; {}", strata::backend::lifecycle::FIX);
    }
    if global.json {
        print_json(&report)?;
    } else {
        print_problems(&report.problems);
        if !global.quiet {
            print_summary(&report);
        }
    }
    Ok(if report.problems.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// The check's and the repository's figures into the metrics file, when there is one.
fn record_metrics(global: &Global, repo: &strata::Repository, report: &check::CheckReport) {
    if global.metrics().is_some() {
        let sizes = {
            let mut s = strata::metrics::Samples::default();
            strata::metrics::record_repository(&mut s, repo).map(|()| s)
        };
        let vanished = repo.snapshots().vanished().unwrap_or_default();
        global.update_metrics(|s| {
            strata::metrics::record_check(s, report);
            strata::metrics::record_vanished(s, &vanished);
            if let Ok(sizes) = sizes {
                s.merge(sizes);
            }
        });
    }
}

/// The report as JSON, each problem's remedy with the CLI's words for it.
fn print_json(report: &check::CheckReport) -> anyhow::Result<()> {
    let mut json = serde_json::to_value(report)?;
    // Beside each problem's remedy, the CLI's words for it.
    if let Some(problems) = json["problems"].as_array_mut() {
        for (j, p) in problems.iter_mut().zip(&report.problems) {
            j["fix"] = output::remedy(p.remedy).into();
        }
    }
    output::print_json(&json);
    Ok(())
}

/// What was checked and found, in words.
fn print_summary(report: &check::CheckReport) {
    println!(
        "{} snapshots, {} trees, {} packs; {} packs read ({}){}",
        report.snapshots,
        report.trees,
        report.packs,
        report.packs_read,
        output::bytes(report.bytes_read),
        if report.unreferenced_packs > 0 {
            format!(
                "; {} unreferenced packs (left by interrupted backups; prune removes them)",
                report.unreferenced_packs
            )
        } else {
            String::new()
        }
    );
    if report.marked_and_live_packs > 0 {
        println!(
            "note: {} pack(s) marked unused by prune are still named by a live index \
             (a prune or backup in progress, or one that raced the other): the next \
             prune settles them",
            report.marked_and_live_packs
        );
    }
    if let Some(t) = &report.thaw {
        println!(
            "{} data pack(s) were in archive storage: {} thaw(s) requested, {} look(s) \
             while waiting",
            t.packs, t.requested, t.polls
        );
    }
    if let Some(v) = &report.verification {
        println!(
            "verified in the last {} days: {:.1}% of {} packs ({} never verified{}{})",
            strata::audit::RECENT_DAYS,
            100.0 * v.fraction_recent(),
            v.packs,
            v.never_verified,
            match v.oldest_verification_secs {
                Some(s) => format!(", oldest verification {} ago", output::age(s)),
                None => String::new(),
            },
            if v.damaged.is_empty() {
                String::new()
            } else {
                format!(", {} found damaged", v.damaged.len())
            }
        );
    }
    if report.problems.is_empty() {
        println!("no errors found");
    } else {
        println!("{} problem(s) found", report.problems.len());
    }
}

/// Problems alike (the same kind of object, reason, hits and fix: the blobs of one lost
/// file) are said once, with their count; `--json` lists each.
fn plural(kind: &str) -> String {
    match kind {
        "index" => "index files".into(),
        k => format!("{k}s"),
    }
}

fn print_problems(problems: &[strata::check::Problem]) {
    let mut groups: Vec<(String, &strata::check::Problem, Vec<String>)> = Vec::new();
    for p in problems {
        let object = p.object.to_string();
        let (kind, id) = object.split_once(' ').unwrap_or(("object", &object));
        let same = |(k, q, _): &&mut (String, &strata::check::Problem, Vec<String>)| {
            k == kind && q.reason == p.reason && q.hits == p.hits && q.remedy == p.remedy
        };
        match groups.iter_mut().find(same) {
            Some((_, _, ids)) => ids.push(id.to_string()),
            None => groups.push((kind.to_string(), p, vec![id.to_string()])),
        }
    }
    for (kind, p, ids) in groups {
        match ids.as_slice() {
            [id] => println!("error: {kind} {id}: {}", output::plain(&p.reason)),
            _ => println!(
                "error: {} {} ({}, ...): {}",
                ids.len(),
                plural(&kind),
                ids.iter()
                    .take(3)
                    .map(|i| &i[..i.len().min(12)])
                    .collect::<Vec<_>>()
                    .join(", "),
                output::plain(&p.reason)
            ),
        }
        for h in &p.hits {
            println!("  hits {}", output::plain(h));
        }
        println!("  fix: {}", output::remedy(p.remedy));
    }
}
