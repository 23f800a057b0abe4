//! `strata copy`: snapshots into a second repository.

use anyhow::{anyhow, Context};
use clap::Args;
use strata::copy::{self, CopyPlan};
use strata::{select_per_lineage, timespec};

use super::args::{in_snapshot, FilterArgs};
use super::{exit, output, Global};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy (ids, id prefixes or "latest"); without any, per set (or host and
    /// paths) the snapshots the filters match that are newer than the last one copied.
    snapshots: Vec<String>,
    /// Every snapshot the filters match that the destination lacks, older ones included
    /// (also those forgotten there since they were copied).
    #[arg(long, conflicts_with_all = ["snapshots", "at"])]
    all: bool,
    /// The destination repository (a local directory or an S3 URL, as --repo). It must
    /// exist (`strata init`); its password, keys and storage classes are its own.
    #[arg(long, value_name = "REPO")]
    to: String,
    /// Read the destination's password from this file (first line). The destination's
    /// password is taken from STRATA_TO_PASSWORD if set, else from this file, else from
    /// --to-password-command, else asked for on the terminal; never from the source's.
    #[arg(long, env = "STRATA_TO_PASSWORD_FILE", value_name = "FILE")]
    to_password_file: Option<std::path::PathBuf>,
    /// Run this shell command for the destination's password (its first line of output).
    #[arg(long, env = "STRATA_TO_PASSWORD_COMMAND", value_name = "COMMAND")]
    to_password_command: Option<String>,
    /// Per set (or host and paths), the snapshot that was newest at this time.
    #[arg(long, conflicts_with = "snapshots")]
    at: Option<String>,
    /// Copy snapshots only. Without it, a copy that names no snapshot and filters none
    /// (the hourly copy, or --all) also copies the root records (the PostgreSQL WAL
    /// archive) written since the last copy: a second site can then recover a database
    /// to any instant.
    #[arg(long)]
    no_roots: bool,
    /// Say what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// The destination's options: the source's, but its own location and password sources.
fn destination(global: &Global, args: &CopyArgs) -> Global {
    let mut dst = global.clone();
    dst.repo = Some(args.to.clone());
    dst.password_var = "STRATA_TO_PASSWORD";
    dst.password_file = args.to_password_file.clone();
    dst.password_command = args.to_password_command.clone();
    dst.file.password_file = None;
    dst.file.password_command = None;
    dst
}

pub fn run(global: &Global, args: CopyArgs) -> anyhow::Result<i32> {
    let src = global.open()?;
    let filter = args.filter.filter(global, &src)?;
    let at = args
        .at
        .as_deref()
        .map(|at| timespec::parse_instant(at, timespec::now()))
        .transpose()
        .map_err(|e| exit::usage(format!("--at: {e}")))?;
    let mut damaged = Vec::new();
    let selected = match (&args.snapshots[..], at) {
        ([], None) => {
            let (all, bad) = src.snapshots().with_damage()?;
            damaged = bad;
            all.into_iter().filter(|(_, s)| filter.matches(s)).collect()
        }
        ([], Some(_)) => select_per_lineage(src.snapshots().list()?, at, &filter)
            .into_iter()
            .map(|(_, id, s)| (id, s))
            .collect(),
        (specs, _) => specs
            .iter()
            .map(|s| src.snapshots().find_in(s, &filter))
            .collect::<strata::Result<Vec<_>>>()?,
    };
    if selected.is_empty() && (at.is_some() || !filter.is_empty()) {
        return Err(anyhow!(
            "no snapshot matches {}{}",
            filter.describe(),
            args.at
                .as_ref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default()
        ));
    }
    let dst = destination(global, &args)
        .open_for_backup()
        .context("opening the destination")?;
    if dst.config().id == src.config().id {
        return Err(exit::usage(format!(
            "the destination has the source's repository id {}: it is the source itself, or \
             a copy of its files (cp, rsync); strata copy needs a repository that `strata \
             init` created",
            src.config().id.to_hex()
        )));
    }
    let selection = match args.all || at.is_some() || !args.snapshots.is_empty() {
        true => copy::Selection::Missing,
        false => copy::Selection::SinceLast,
    };
    let mut plan = copy::plan(&src, &dst, selected, selection)?;
    if !args.no_roots && args.snapshots.is_empty() && at.is_none() && filter.is_empty() {
        plan.roots = copy::plan_roots(&src, &dst, selection)?;
    }
    if args.dry_run {
        print_plan(global, &plan);
        return Ok(exit::OK);
    }
    let stop = super::stop_on_signals()?;
    let bar = output::Bar::new(global.show_progress(), true, "copy");
    let report = copy::run(&src, &dst, plan, &bar, &stop);
    bar.finish();
    let report = report?;
    if global.json {
        output::print_json(&report);
    } else if !global.quiet {
        for (from, to) in &report.copied {
            println!("copied snapshot {} as {}", from.short(), to.short());
        }
        println!(
            "{} snapshot(s) copied, {} there already{}; read {} from the source, added {} \
             ({} stored)",
            report.copied.len(),
            report.present,
            older(report.older),
            output::bytes(report.bytes_read),
            output::bytes(report.bytes_added),
            output::bytes(report.bytes_stored)
        );
        if report.roots_copied + report.roots_present + report.roots_failed.len() > 0 {
            println!(
                "{} root record(s) copied, {} copied before",
                report.roots_copied, report.roots_present
            );
        }
    }
    for (what, why) in &report.roots_failed {
        eprintln!(
            "error: root record {} not copied: {}",
            output::plain(what),
            output::plain(why)
        );
    }
    if !report.roots_failed.is_empty() {
        eprintln!(
            "{} root record(s) not copied (the others were)",
            report.roots_failed.len()
        );
        return Ok(exit::FAILURE);
    }
    // The second site lacks what could not be read here: said, and not a success.
    for (id, why) in &report.failed {
        eprintln!(
            "error: snapshot {} not copied: {}",
            id.short(),
            output::plain(why)
        );
    }
    if !report.failed.is_empty() {
        eprintln!(
            "{} snapshot(s) not copied: the source could not give all of their data (the \
             others were copied)",
            report.failed.len()
        );
        return Ok(exit::FAILURE);
    }
    if !damaged.is_empty() {
        for (id, e) in &damaged {
            eprintln!(
                "error: snapshot {} not copied: {}",
                id.short(),
                output::plain(&e.to_string())
            );
        }
        eprintln!(
            "{} damaged snapshot(s) of the source not copied",
            damaged.len()
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

fn print_plan(global: &Global, plan: &CopyPlan) {
    if global.json {
        output::print_json(&serde_json::json!({
            "copy": plan.copy.iter().map(|(id, _)| id.to_hex()).collect::<Vec<_>>(),
            "present": plan.present.iter().map(|(s, d)| (s.to_hex(), d.to_hex())).collect::<Vec<_>>(),
            "older": plan.older,
            "roots": plan.roots.copy.iter().map(|r| format!("{}/{}", r.root.namespace, r.root.key)).collect::<Vec<_>>(),
            "roots_present": plan.roots.present,
        }));
        return;
    }
    for r in &plan.roots.copy {
        println!(
            "would copy root record {}/{}",
            output::plain(&r.root.namespace),
            output::plain(&r.root.key)
        );
    }
    for (id, snap) in &plan.copy {
        println!(
            "would copy {}",
            in_snapshot(id, snap).trim_start_matches("in ")
        );
    }
    println!(
        "{} snapshot(s) to copy, {} there already{}",
        plan.copy.len(),
        plan.present.len(),
        older(plan.older)
    );
    if !plan.roots.copy.is_empty() || plan.roots.present > 0 {
        println!(
            "{} root record(s) to copy, {} copied before",
            plan.roots.copy.len(),
            plan.roots.present
        );
    }
}

fn older(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(", {n} older than the last copy left out (--all takes them)"),
    }
}
