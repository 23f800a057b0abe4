use super::exit;
use anyhow::anyhow;
use clap::Args;
use strata::prune::{self, PruneOptions};

use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    #[command(flatten)]
    opts: PruneOpts,
    /// Show what would be freed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Prune's tuning, shared with `forget --prune`.
#[derive(Args, Debug, Clone)]
pub struct PruneOpts {
    /// Repack a pack when more than this share of it is unused (e.g. 10%).
    #[arg(long, default_value = "10%")]
    max_unused: String,
    /// How long unused packs stay marked before deletion; longer than any backup runs.
    #[arg(long, default_value = "24h")]
    grace: String,
    /// Delete unused packs now, without the grace period. Only safe when no backup runs.
    #[arg(long)]
    instant_delete: bool,
}

impl PruneOpts {
    pub fn options(&self, dry_run: bool) -> anyhow::Result<PruneOptions> {
        let share = self.max_unused.trim_end_matches('%').trim();
        let max_unused: f64 = share
            .parse::<f64>()
            .map_err(|_| anyhow!("--max-unused {}: give a percentage", self.max_unused))?
            / 100.0;
        if !(0.0..=1.0).contains(&max_unused) {
            return Err(anyhow!(
                "--max-unused {} is not between 0% and 100%",
                self.max_unused
            ));
        }
        let grace = strata::timespec::parse_duration(&self.grace)
            .map_err(|e| anyhow!("--grace {}: {e}", self.grace))?;
        Ok(PruneOptions {
            max_unused,
            grace,
            instant_delete: self.instant_delete,
            dry_run,
        })
    }
}

pub fn run(global: &Global, args: PruneArgs) -> anyhow::Result<i32> {
    let opts = args.opts.options(args.dry_run)?;
    let repo = global.open()?;
    run_on(global, &repo, &opts)
}

pub fn run_on(
    global: &Global,
    repo: &strata::Repository,
    opts: &PruneOptions,
) -> anyhow::Result<i32> {
    let r = execute(global, repo, opts)?;
    if global.json {
        output::print_json(&r);
    } else {
        print(global, &r, opts.dry_run);
    }
    Ok(exit::OK)
}

pub fn execute(
    global: &Global,
    repo: &strata::Repository,
    opts: &PruneOptions,
) -> anyhow::Result<prune::PruneReport> {
    let bar = Bar::new(global.show_progress(), false, "prune");
    let r = prune::run(repo, opts, &bar)?;
    bar.finish();
    Ok(r)
}

pub fn print(global: &Global, r: &prune::PruneReport, dry_run: bool) {
    if global.quiet {
        return;
    }
    println!(
        "{}{} packs: {} deleted, {} repacked, {} newly marked unused, {} waiting out the grace period, {} revived",
        if dry_run { "dry run: " } else { "" },
        r.packs,
        r.packs_deleted,
        r.packs_repacked,
        r.packs_marked,
        r.packs_waiting,
        r.packs_resurrected
    );
    if r.temporaries_removed > 0 {
        println!(
            "removed {} temporary file(s) of interrupted writes ({})",
            r.temporaries_removed,
            output::bytes(r.temporaries_bytes)
        );
    }
    println!(
        "{} {} in {:.2}s",
        if dry_run { "would free" } else { "freed" },
        output::bytes(r.bytes_freed),
        r.duration_secs
    );
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones.
    #[arg(long)]
    all: bool,
}

pub fn unlock(global: &Global, args: UnlockArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let removed = strata::lock::unlock(&repo, args.all)?;
    if !global.quiet {
        for r in &removed {
            println!("removed lock: {r}");
        }
        println!("{} lock(s) removed", removed.len());
    }
    Ok(exit::OK)
}
