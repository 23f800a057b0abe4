use anyhow::anyhow;
use clap::Args;
use serde_json::json;
use strata::error::exit;
use strata::retention::{self, Policy};

use super::browse::FilterArgs;
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
        .map(|d| strata::timespec::parse_duration(d).map_err(|e| anyhow!("--keep-within {d}: {e}")))
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
    let names: Vec<String> = if args.all {
        global.file.sets.keys().cloned().collect()
    } else {
        args.sets.clone()
    };
    // (set filter, policy) pairs; keep-* flags override a set's own policy.
    let mut jobs = Vec::new();
    if names.is_empty() {
        if args.all {
            return Err(anyhow!("--all: the config file defines no backup sets"));
        }
        jobs.push((None, flags.clone()));
    }
    for name in names {
        let set = global.file.set(&name)?;
        let policy = if flags.is_empty() {
            set.keep.policy()?
        } else {
            flags.clone()
        };
        jobs.push((Some(name), policy));
    }
    for (name, policy) in &jobs {
        if policy.is_empty() {
            return Err(anyhow!(
                "no --keep-* rule given{}: refusing to forget every snapshot",
                name.as_ref()
                    .map(|n| format!(" and set {n} has no keep policy"))
                    .unwrap_or_default()
            ));
        }
    }
    let repo = global.open()?;
    let all = repo.snapshots()?;
    let mut plans = Vec::new();
    for (name, policy) in &jobs {
        let mut f = args.filter.filter();
        if let Some(n) = name {
            f.sets = vec![n.clone()];
        }
        let snaps = all.iter().filter(|(_, s)| f.matches(s)).cloned().collect();
        plans.extend(retention::plan(snaps, policy));
    }
    if !args.dry_run {
        for p in &plans {
            for (id, _) in &p.remove {
                repo.remove_snapshot(id)?;
            }
        }
    }
    let pruned = if args.prune && !args.dry_run {
        Some(super::prune::execute(
            global,
            &repo,
            &args.prune_opts.options(false)?,
        )?)
    } else {
        None
    };
    if global.json {
        let v: Vec<_> = plans
            .iter()
            .map(|p| {
                json!({
                    "group": p.group.to_string(),
                    "keep": p.keep.iter().map(|(id, s, r)| json!({"id": id.to_hex(), "time": s.time, "reasons": r})).collect::<Vec<_>>(),
                    "remove": p.remove.iter().map(|(id, s)| json!({"id": id.to_hex(), "time": s.time})).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::print_json(&json!({"dry_run": args.dry_run, "groups": v, "prune": pruned}));
    } else if !global.quiet {
        for p in &plans {
            println!(
                "{}: keep {}, remove {}",
                p.group,
                p.keep.len(),
                p.remove.len()
            );
            for (id, s, reasons) in &p.keep {
                println!(
                    "  keep    {}  {}  {}",
                    id.short(),
                    s.time,
                    reasons.join(", ")
                );
            }
            for (id, s) in &p.remove {
                println!("  remove  {}  {}", id.short(), s.time);
            }
        }
        let removed: usize = plans.iter().map(|p| p.remove.len()).sum();
        if args.dry_run {
            println!("dry run: {removed} snapshot(s) would be removed");
        } else {
            println!("{removed} snapshot(s) removed; their data stays until prune");
        }
    }
    if let (Some(r), false) = (&pruned, global.json) {
        super::prune::print(global, r, false);
    }
    Ok(exit::OK)
}
