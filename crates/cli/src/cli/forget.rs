use super::exit;
use anyhow::anyhow;
use clap::Args;
use serde_json::json;
use strata::metrics;
use strata::retention::{self, ForgetJob, Policy};

use super::args::FilterArgs;
use super::output;
use super::Global;

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Backup sets from the config file, each with its own `keep` policy.
    sets: Vec<String>,
    /// Every set of the config file.
    #[arg(long, conflicts_with = "sets")]
    all: bool,
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// Keep the newest snapshot of each of the N newest days (local time).
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// Keep the newest snapshot of each of the N newest ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    /// Keep the newest snapshot of each of the N newest months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    /// Keep the newest snapshot of each of the N newest years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Keep every snapshot younger than this, counted back from the newest (e.g. 7d, 36h).
    #[arg(long)]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Remove this snapshot (id or unique prefix; repeatable), whatever any policy says.
    #[arg(long = "snapshot", value_name = "ID", conflicts_with_all = ["sets", "all"])]
    snapshots: Vec<String>,
    /// Show what would be kept and removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_opts: super::prune::PruneOpts,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: ForgetArgs) -> anyhow::Result<i32> {
    let within = args
        .keep_within
        .as_deref()
        .map(|d| {
            strata::timespec::parse_duration(d)
                .map_err(|e| exit::usage(format!("--keep-within {d}: {e}")))
        })
        .transpose()?;
    let flags = Policy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within,
        tags: args.keep_tags.clone(),
    };
    if !args.snapshots.is_empty() {
        if !flags.is_empty() {
            return Err(anyhow!(
                "--snapshot removes the snapshots named: give no --keep-* rule"
            ));
        }
        return forget_named(global, &args);
    }
    let jobs = jobs(global, &args, flags)?;
    if let Some(job) = jobs.iter().find(|j| j.policy.is_empty()) {
        // Before the password is asked for; the library refuses it too.
        return Err(strata::Error::EmptyPolicy {
            set: job.set.clone(),
        }
        .into());
    }
    let repo = global.open()?;
    // Base backups forgotten take the WAL only they needed with them.
    let strata_pg::Forgotten { plans, wal } = strata_pg::forget(
        &repo,
        &jobs,
        &args.filter.filter(global, &repo)?,
        args.dry_run,
    )?;
    let removed = plans.iter().map(|p| p.remove.len()).sum();
    let pruned = prune_after(global, &repo, &args, removed)?;
    if global.json {
        output::print_json(
            &json!({"dry_run": args.dry_run, "groups": plans, "wal": wal, "prune": pruned}),
        );
    } else if !global.quiet {
        print_plans(&plans, args.dry_run, global.verbose > 0);
        for w in &wal {
            println!(
                "postgres {}: {} {} archived WAL file(s) older than the oldest base backup kept{}",
                w.cluster,
                if args.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                w.removed.len(),
                w.kept_from
                    .as_deref()
                    .map(|f| format!(" (WAL from {f} on is kept)"))
                    .unwrap_or_default()
            );
        }
    }
    if let (Some(r), false) = (&pruned, global.json) {
        super::prune::print(global, r, false);
    }
    Ok(exit::OK)
}

/// After `removed` snapshots went: `--prune`, then the forget (and prune) series of the
/// metrics file, when there is one. A dry run does neither.
fn prune_after(
    global: &Global,
    repo: &strata::Repository,
    args: &ForgetArgs,
    removed: usize,
) -> anyhow::Result<Option<strata::prune::PruneReport>> {
    if args.dry_run {
        return Ok(None);
    }
    let pruned = match args.prune {
        true => Some(super::prune::execute(
            global,
            repo,
            &args.prune_opts.options(false)?,
        )?),
        false => None,
    };
    if global.metrics().is_some() {
        let left = repo.snapshots().list();
        global.update_metrics(|s| {
            if let Ok(left) = &left {
                metrics::record_forget(s, removed, left);
            }
            if let Some(r) = &pruned {
                metrics::record_prune(s, r);
            }
        });
    }
    Ok(pruned)
}

/// `--snapshot ID...`: exactly those, each found first (a prefix must be unique), then
/// removed; `--prune` and `--dry-run` as with a policy.
fn forget_named(global: &Global, args: &ForgetArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let filter = args.filter.filter(global, &repo)?;
    let mut found = Vec::new();
    if args.snapshots.iter().any(|s| s.is_empty()) {
        return Err(super::exit::usage(
            "--snapshot: an empty id names no snapshot",
        ));
    }
    for s in &args.snapshots {
        match repo.snapshots().find_in(s, &filter) {
            Ok((id, snap)) => found.push((id, output::when(&snap.time))),
            // A snapshot file that cannot be read is removed by its id all the same.
            Err(e @ (strata::Error::NotFound { .. } | strata::Error::Corrupt { .. })) => {
                let prefix = s.to_ascii_lowercase();
                let damaged: Vec<strata::SnapshotId> = repo
                    .snapshots()
                    .damaged()?
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| id.to_hex().starts_with(&prefix))
                    .collect();
                // One the rollback watch says vanished: forgetting it records that its
                // absence is the operator's doing, for every host (format-spec §16.3).
                let vanished: Vec<strata::SnapshotId> = (repo.snapshots().vanished()?)
                    .into_iter()
                    .map(|v| v.id)
                    .filter(|id| id.to_hex().starts_with(&prefix))
                    .collect();
                match (damaged.as_slice(), vanished.as_slice()) {
                    ([id], []) if filter.is_empty() => found.push((*id, "(damaged)".into())),
                    ([], [id]) if filter.is_empty() => found.push((*id, "(vanished)".into())),
                    _ => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    found.sort_by_key(|(id, _)| *id);
    found.dedup_by_key(|(id, _)| *id);
    if !args.dry_run {
        let ids: Vec<_> = found.iter().map(|(id, _)| *id).collect();
        repo.snapshots().forget(&ids)?;
    }
    let pruned = prune_after(global, &repo, args, found.len())?;
    if global.json {
        let removed: Vec<String> = found.iter().map(|(id, _)| id.to_hex()).collect();
        output::print_json(&json!({"dry_run": args.dry_run, "removed": removed, "prune": pruned}));
    } else if !global.quiet {
        for (id, when) in &found {
            println!(
                "  {}  {}  {}",
                if args.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                id.short(),
                when
            );
        }
    }
    if let (Some(r), false) = (&pruned, global.json) {
        super::prune::print(global, r, false);
    }
    Ok(exit::OK)
}

/// One job per set named (or `--all`), each with its own policy unless keep-* flags
/// override it; without sets, one job for the flags alone.
fn jobs(global: &Global, args: &ForgetArgs, flags: Policy) -> anyhow::Result<Vec<ForgetJob>> {
    let names: Vec<String> = if args.all {
        let pg = global.file.postgres.keys().map(|c| strata_pg::set_of(c));
        global.file.sets.keys().cloned().chain(pg).collect()
    } else {
        args.sets.clone()
    };
    let mut jobs = Vec::new();
    if names.is_empty() {
        if args.all {
            return Err(anyhow!("--all: the config file defines no backup sets"));
        }
        jobs.push(ForgetJob {
            set: None,
            policy: flags.clone(),
        });
    }
    for name in names {
        let keep = global.file.keep_of(&name)?;
        let policy = if flags.is_empty() {
            keep.policy()?
        } else {
            flags.clone()
        };
        jobs.push(ForgetJob {
            set: Some(name),
            policy,
        });
    }
    Ok(jobs)
}

/// One line per group (kept by which rules, removed); with `verbose` every snapshot, and
/// on a dry run every snapshot that would go.
fn print_plans(plans: &[retention::GroupPlan], dry_run: bool, verbose: bool) {
    for p in plans {
        // How many snapshots each rule keeps ("hourly 3" counts as hourly).
        let mut rules: std::collections::BTreeMap<&str, usize> = Default::default();
        for (_, _, reasons) in &p.keep {
            for r in reasons {
                *rules.entry(r.split(' ').next().unwrap_or(r)).or_default() += 1;
            }
        }
        let rules: Vec<String> = rules.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "{}: keep {} ({}), {} {}",
            output::plain(&p.group.to_string()),
            p.keep.len(),
            if rules.is_empty() {
                "no rule".to_string()
            } else {
                rules.join(", ")
            },
            if dry_run { "would remove" } else { "removed" },
            p.remove.len()
        );
        if verbose {
            for (id, s, reasons) in &p.keep {
                println!(
                    "  keep    {}  {}  {}",
                    id.short(),
                    output::when(&s.time),
                    reasons.join(", ")
                );
            }
        }
        if verbose || dry_run {
            for (id, s) in &p.remove {
                println!("  remove  {}  {}", id.short(), output::when(&s.time));
            }
        }
    }
    let removed: usize = plans.iter().map(|p| p.remove.len()).sum();
    if dry_run {
        println!("dry run: {removed} snapshot(s) would be removed");
    } else {
        println!("{removed} snapshot(s) removed; their data stays until prune");
    }
}
