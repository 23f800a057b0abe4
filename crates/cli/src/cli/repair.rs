use super::exit;
use clap::{Args, Subcommand};
use strata::repair;

use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: RepairCmd,
}

#[derive(Subcommand, Debug)]
enum RepairCmd {
    /// Rebuild the index from the packs that exist: lost packs leave it (the next backup
    /// stores their data again), packs no intact index names are read by their headers.
    Index {
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write new snapshots without the files whose data is lost (listed in each new
    /// snapshot); run `repair index` first.
    Snapshots {
        /// Remove the originals once their replacements are written, and snapshot files
        /// that cannot be read at all.
        #[arg(long)]
        forget: bool,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the root records (WAL records) that cannot be read: they block prune and
    /// forget. Store them again instead when their source still has them.
    Roots {
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(global: &Global, args: RepairArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let bar = Bar::new(global.show_progress(), false, "repair");
    match args.what {
        RepairCmd::Index { dry_run } => {
            let r = repair::repair_index(&repo, dry_run, &bar)?;
            bar.finish();
            if global.json {
                output::print_json(&serde_json::to_value(&r)?);
            } else if !global.quiet {
                print_index(&r, dry_run);
            }
        }
        RepairCmd::Snapshots { forget, dry_run } => {
            let r = repair::repair_snapshots(&repo, forget, dry_run, &bar)?;
            bar.finish();
            if global.json {
                output::print_json(&serde_json::to_value(&r)?);
            } else if !global.quiet {
                print_snapshots(&r, dry_run);
            }
        }
        RepairCmd::Roots { dry_run } => {
            let r = repair::repair_roots(&repo, dry_run)?;
            bar.finish();
            if global.json {
                output::print_json(&serde_json::to_value(&r)?);
            } else if !global.quiet {
                print_roots(&r);
            }
        }
    }
    Ok(exit::OK)
}

/// `repair roots` in words.
fn print_roots(r: &repair::RootRepair) {
    let verb = if r.dry_run {
        "to be removed"
    } else {
        "removed"
    };
    for d in &r.damaged {
        println!("{} {} {verb}: {}", d.kind, d.file, output::plain(&d.reason));
    }
    println!("{} record(s) read, {} {verb}", r.records, r.damaged.len());
}

/// `repair index` in words.
fn print_index(r: &repair::IndexRepair, dry_run: bool) {
    // Thousands of junk files are one line of examples, not thousands.
    let verb = if dry_run {
        "to be replaced"
    } else {
        "replaced"
    };
    for e in r.index_files_damaged.iter().take(3) {
        println!("damaged index file {verb}: {e}");
    }
    if r.index_files_damaged.len() > 3 {
        println!(
            "... and {} more damaged index file(s) {verb}",
            r.index_files_damaged.len() - 3
        );
    }
    for p in &r.packs_missing {
        println!("pack {p} is gone: its blobs leave the index");
    }
    for p in &r.packs_unreadable {
        println!("unreadable pack left out: {p}");
    }
    println!(
        "{}{} packs indexed ({} from their headers); {} missing pack(s), {} blob(s) dropped; {} index file(s) replaced",
        if dry_run { "dry run: " } else { "" },
        r.packs,
        r.packs_from_headers,
        r.packs_missing.len(),
        r.blobs_dropped,
        r.index_files_replaced
    );
    if r.blobs_dropped > 0 && !dry_run {
        println!(
            "the next backup stores dropped data again if the source still has it; \
             `strata repair snapshots` writes snapshots without what is lost"
        );
    }
}

/// `repair snapshots` in words.
fn print_snapshots(r: &repair::SnapshotRepair, dry_run: bool) {
    for s in &r.repaired {
        println!(
            "snapshot {} ({}): {} path(s) lost{}",
            &s.original[..12],
            output::when(&s.time),
            s.lost.len(),
            match &s.new {
                Some(n) => format!(", replaced by {}", &n[..12]),
                None => String::new(),
            }
        );
        for l in &s.lost {
            println!("  lost {}", output::plain(l));
        }
    }
    for s in &r.already_repaired {
        println!(
            "snapshot {} ({}): repaired before, by {} ({} path(s) lost)",
            &s.original[..12],
            output::when(&s.time),
            s.new.as_deref().map_or("", |n| &n[..12]),
            s.lost.len()
        );
    }
    for d in &r.damaged {
        println!("damaged snapshot file: {d}");
    }
    for id in &r.removed {
        println!("removed snapshot {}", &id[..12]);
    }
    println!(
        "{}{} snapshot(s) checked, {} repaired",
        if dry_run { "dry run: " } else { "" },
        r.snapshots,
        r.repaired.len()
    );
}
