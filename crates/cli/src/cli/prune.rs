use super::exit;
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
    /// Keep unused packs of CLASS until they have been stored this long (the class's
    /// minimum storage duration, billed anyway). Defaults: GLACIER=90d, DEEP_ARCHIVE=180d,
    /// GLACIER_IR=90d, STANDARD_IA=30d, ONEZONE_IA=30d; CLASS=0 deletes at once.
    #[arg(long, value_name = "CLASS=DURATION")]
    min_storage: Vec<String>,
}

impl PruneOpts {
    pub fn options(&self, dry_run: bool) -> anyhow::Result<PruneOptions> {
        let share = self.max_unused.trim_end_matches('%').trim();
        let max_unused: f64 = share.parse::<f64>().map_err(|_| {
            exit::usage(format!(
                "--max-unused {}: give a percentage",
                self.max_unused
            ))
        })? / 100.0;
        if !(0.0..=1.0).contains(&max_unused) {
            return Err(exit::usage(format!(
                "--max-unused {} is not between 0% and 100%",
                self.max_unused
            )));
        }
        let grace = strata::timespec::parse_duration(&self.grace)
            .map_err(|e| exit::usage(format!("--grace {}: {e}", self.grace)))?;
        let mut min_storage = PruneOptions::default().min_storage;
        for m in &self.min_storage {
            let (class, d) = m.split_once('=').ok_or_else(|| {
                exit::usage(format!(
                    "--min-storage {m}: give CLASS=DURATION, e.g. GLACIER=90d"
                ))
            })?;
            strata::backend::check_storage_class(class)?;
            let d = strata::timespec::parse_duration(d)
                .map_err(|e| exit::usage(format!("--min-storage {m}: {e}")))?;
            min_storage.retain(|(c, _)| c != class);
            min_storage.push((class.to_string(), d));
        }
        Ok(PruneOptions {
            max_unused,
            grace,
            instant_delete: self.instant_delete,
            dry_run,
            min_storage,
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
    let r = prune::run(repo, opts, &bar).map_err(|e| {
        // The moment prune is run for: say how to free space without writing a pack.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let full = std::iter::from_fn(|| {
            let now = cause?;
            cause = now.source();
            Some(now)
        })
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::StorageFull);
        match full && opts.max_unused < 1.0 {
            true => anyhow::Error::from(e).context(
                "the repository's storage is full: `--max-unused 100%` deletes the packs no \
                 snapshot uses without repacking (writing) any",
            ),
            false => e.into(),
        }
    })?;
    bar.finish();
    if !opts.dry_run && global.metrics().is_some() {
        let sizes = {
            let mut s = strata::metrics::Samples::default();
            strata::metrics::record_repository(&mut s, repo).map(|()| s)
        };
        global.update_metrics(|s| {
            strata::metrics::record_prune(s, &r);
            if let Ok(sizes) = sizes {
                s.merge(sizes);
            }
        });
    }
    Ok(r)
}

pub fn print(global: &Global, r: &prune::PruneReport, dry_run: bool) {
    if global.quiet {
        return;
    }
    if dry_run {
        println!(
            "dry run: of {} packs, would delete {} ({}), repack {} ({} rewritten), mark {} \
             unused ({}, deleted by a later prune after the grace period); {} wait out the \
             grace period, {} would be revived",
            r.packs,
            r.packs_deleted,
            output::bytes(r.bytes_freed),
            r.packs_repacked,
            output::bytes(r.bytes_repacked),
            r.packs_marked,
            output::bytes(r.bytes_marked),
            r.packs_waiting,
            r.packs_resurrected
        );
    } else {
        println!(
            "{} packs: {} deleted, {} repacked, {} newly marked unused, {} waiting out the grace period, {} revived",
            r.packs,
            r.packs_deleted,
            r.packs_repacked,
            r.packs_marked,
            r.packs_waiting,
            r.packs_resurrected
        );
    }
    print_held(r, dry_run);
    if r.temporaries_removed > 0 {
        println!(
            "removed {} temporary file(s) of interrupted writes ({})",
            r.temporaries_removed,
            output::bytes(r.temporaries_bytes)
        );
    }
    println!(
        "{} {} in {:.2}s",
        if dry_run { "would free now" } else { "freed" },
        output::bytes(r.bytes_freed),
        r.duration_secs
    );
}

/// What prune kept because a storage class or Object Lock would not let it go yet.
fn print_held(r: &prune::PruneReport, dry_run: bool) {
    if r.packs_cold_not_repacked > 0 {
        println!(
            "{} partly used pack(s) in archive storage kept whole (repacking needs a thaw)",
            r.packs_cold_not_repacked
        );
    }
    if !r.packs_held.is_empty() {
        let last = r.packs_held.iter().map(|(_, _, t)| t).max().unwrap();
        let classes: std::collections::BTreeSet<&str> =
            r.packs_held.iter().map(|(_, c, _)| c.as_str()).collect();
        println!(
            "{} unused pack(s) ({}) kept until their minimum storage duration ends ({}; the \
             last on {}): deleting them earlier is billed all the same",
            r.packs_held.len(),
            output::bytes(r.bytes_held),
            classes.into_iter().collect::<Vec<_>>().join(", "),
            last
        );
    }
    if let Some(l) = &r.object_lock {
        if l.purged > 0 {
            println!(
                "{} deleted file version(s) whose retention has passed {} ({})",
                l.purged,
                if dry_run { "would be purged" } else { "purged" },
                output::bytes(l.purged_bytes)
            );
        }
        if let (Some(from), Some(until)) = (&l.held_from, &l.held_until) {
            println!(
                "{} deleted file version(s) ({}) held by object lock until {from}{}: a later \
                 prune purges them",
                l.held,
                output::bytes(l.held_bytes),
                if from == until {
                    String::new()
                } else {
                    format!(" (the last until {until})")
                }
            );
        }
    }
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
    if global.json {
        output::print_json(&serde_json::json!({ "removed": removed }));
    } else if !global.quiet {
        for r in &removed {
            // A lock's fields are another host's (or a key holder's) text.
            println!("removed lock: {}", output::plain(r));
        }
        println!("{} lock(s) removed", removed.len());
    }
    Ok(exit::OK)
}
