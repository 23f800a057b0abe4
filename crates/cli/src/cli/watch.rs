//! `drill` and `status`: is the data there, and could we get it back in time?

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use strata::audit::{self, Coverage, Drill};
use strata::drill::{self, DrillOptions};
use strata::metrics;
use strata::status;
use strata::{Lineage, Snapshot, SnapshotFilter, SnapshotId};

use super::exit;
use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Sets to drill (default: every set of the config file, else the newest snapshot of
    /// every lineage).
    sets: Vec<String>,
    /// Restore a random share of the files (e.g. 2%) instead of all of them.
    #[arg(long, value_name = "P%", conflicts_with = "full")]
    sample: Option<String>,
    /// Restore every file (the default).
    #[arg(long)]
    full: bool,
    /// Where to restore (a temporary directory is made in it and removed again; default:
    /// the system's temporary directory). Give one on the disk a real restore would use.
    #[arg(long)]
    target: Option<PathBuf>,
    #[command(flatten)]
    cold: super::restore::ColdArgs,
}

/// A set's (or lineage's) name and its newest snapshot, if it has one.
type Pick = (String, Option<(SnapshotId, Snapshot)>);

/// The snapshots to look at: the newest of each set named, else of each configured set,
/// else of every lineage.
fn newest(
    global: &Global,
    all: Vec<(SnapshotId, Snapshot)>,
    names: &[String],
) -> anyhow::Result<Vec<Pick>> {
    let names: Vec<String> = if names.is_empty() {
        global.file.sets.keys().cloned().collect()
    } else {
        check_known(global, &all, names)?;
        names.to_vec()
    };
    let newest = strata::select_per_lineage(all, None, &SnapshotFilter::default());
    if names.is_empty() {
        return Ok(newest
            .into_iter()
            .map(|(lineage, id, s)| (lineage.label(), Some((id, s))))
            .collect());
    }
    let by_set: std::collections::HashMap<String, (SnapshotId, Snapshot)> = newest
        .into_iter()
        .filter_map(|(lineage, id, s)| match lineage {
            Lineage::Set(set) => Some((set, (id, s))),
            Lineage::HostPaths { .. } => None,
        })
        .collect();
    Ok(names
        .into_iter()
        .map(|name| {
            let pick = by_set.get(&name).cloned();
            (name, pick)
        })
        .collect())
}

/// Refuses a set name that neither the config file nor any snapshot knows: a misspelled
/// set must not read as a set with no snapshot (`status` exits 0 on that, when nothing
/// configures a max-age for it).
fn check_known(
    global: &Global,
    all: &[(SnapshotId, Snapshot)],
    names: &[String],
) -> anyhow::Result<()> {
    let mut known: std::collections::BTreeSet<String> = global.file.sets.keys().cloned().collect();
    known.extend(all.iter().map(|(_, s)| metrics::set_label(s)));
    let unknown: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let list = |v: Vec<&String>| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    Err(exit::usage(format!(
        "set: no set named {} in the config file or in any snapshot (known: {})",
        list(unknown),
        if known.is_empty() {
            "none".to_string()
        } else {
            list(known.iter().collect())
        }
    )))
}

pub fn drill(global: &Global, args: DrillArgs) -> anyhow::Result<i32> {
    let sample = match &args.sample {
        Some(s) => {
            let p: f64 = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse().ok())
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| {
                    exit::usage(format!(
                        "--sample {s:?}: give a percentage in (0, 100], e.g. 2%"
                    ))
                })?;
            p / 100.0
        }
        None => 1.0,
    };
    let scratch = args.target.clone().unwrap_or_else(std::env::temp_dir);
    remove_scratch_on_signals(&scratch)?;
    let repo = global.open()?;
    let picks = newest(global, repo.snapshots().list()?, &args.sets)?;
    let mut code = exit::OK;
    let mut reports = Vec::new();
    for (name, pick) in picks {
        let Some((id, snap)) = pick else {
            eprintln!("error: set {name}: no snapshot to drill");
            code = exit::FAILURE;
            continue;
        };
        let bar = Bar::new(global.show_progress(), false, "drill").quiet(global.quiet);
        let opts = DrillOptions {
            sample,
            scratch: scratch.clone(),
            cold: args.cold.wait(),
        };
        let report = drill::run(&repo, &id, &snap, &opts, &bar)?;
        bar.finish();
        global.update_metrics(|s| record_drill(s, &name, &report.drill));
        if !report.errors.is_empty() {
            code = exit::FAILURE;
        }
        if !global.json {
            print_drill(&name, &report, global.quiet);
        }
        reports.push(json!({"set": name, "report": report}));
    }
    if global.json {
        output::print_json(&serde_json::Value::Array(reports));
    }
    Ok(code)
}

/// SIGINT or SIGTERM during a drill: what it restored is decrypted data, which must not
/// outlive it. The drill's directories are removed, then the process exits 130.
fn remove_scratch_on_signals(scratch: &std::path::Path) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let scratch = scratch.to_path_buf();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            for dir in drill::remove_scratch(&scratch) {
                eprintln!("drill interrupted: removed {}", dir.display());
            }
            std::process::exit(exit::INTERRUPTED);
        }
    });
    Ok(())
}

fn print_drill(name: &str, r: &drill::DrillReport, quiet: bool) {
    for e in &r.errors {
        eprintln!("error: set {name}: {}", output::plain(e));
    }
    if quiet {
        return;
    }
    let d = &r.drill;
    if d.errors > 0 {
        println!(
            "set {name}: drill of snapshot {} FAILED: {} error(s) in {} files; no restore time \
             projected",
            d.snapshot.short(),
            d.errors,
            d.files
        );
        return;
    }
    println!(
        "set {name}: snapshot {} restored {} files, {} in {:.2}s ({}/s){}, {}",
        d.snapshot.short(),
        d.files,
        output::bytes(d.bytes),
        d.duration_secs,
        output::bytes(r.throughput as u64),
        if d.sample < 1.0 {
            format!(" (a {:.1}% sample)", d.sample * 100.0)
        } else {
            String::new()
        },
        if d.errors == 0 {
            "every byte verified".to_string()
        } else {
            format!("{} error(s)", d.errors)
        }
    );
    println!(
        "  a full restore of its {} would take about {}",
        output::bytes(d.snapshot_bytes),
        output::age(d.projected_secs)
    );
}

fn record_drill(s: &mut metrics::Samples, set: &str, d: &Drill) {
    let set = [("set", set)];
    let when = chrono::DateTime::parse_from_rfc3339(&d.time)
        .map(metrics::seconds)
        .unwrap_or_default();
    s.set("strata_drill_last_timestamp_seconds", &set, when);
    s.set("strata_drill_last_bytes", &set, d.bytes as f64);
    s.set("strata_drill_last_errors", &set, d.errors as f64);
    // A failed drill measured no speed: an earlier drill's must not stand for it either.
    let speed = [
        (
            "strata_drill_last_throughput_bytes_per_second",
            d.throughput(),
        ),
        (
            "strata_drill_last_projected_restore_seconds",
            d.projected_secs,
        ),
    ];
    for (name, value) in speed {
        if d.errors == 0 {
            s.set(name, &set, value);
        } else {
            s.remove(name, &set);
        }
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Sets to report (default: every set of the config file, else every lineage).
    sets: Vec<String>,
    /// Every lineage in the repository, configured or not.
    #[arg(long, conflicts_with = "sets")]
    all: bool,
    /// A set whose newest snapshot is older than this is stale (exit 1); default: the
    /// set's max-age in the config, else twice its smallest keep interval.
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
}

/// `status`: per set the newest snapshot and its age, the last drill, and the repository's
/// verification; exit 1 when a set is stale. Cheap: the index is not synced, and a warm
/// cache leaves four requests (config, keys, snapshots and audit listings).
pub fn status(global: &Global, args: StatusArgs) -> anyhow::Result<i32> {
    let given_max = args
        .max_age
        .as_deref()
        .map(|d| {
            strata::timespec::parse_duration(d)
                .map_err(|e| exit::usage(format!("--max-age {d}: {e}")))
        })
        .transpose()?;
    let repo = global.open_metadata()?;
    let all = repo.snapshots().list()?;
    let lineages: std::collections::HashMap<SnapshotId, Lineage> =
        all.iter().map(|(id, s)| (*id, s.lineage())).collect();
    let picks = if args.all {
        strata::select_per_lineage(all, None, &SnapshotFilter::default())
            .into_iter()
            .map(|(lineage, id, s)| (lineage.label(), Some((id, s))))
            .collect()
    } else {
        newest(global, all, &args.sets)?
    };
    let records = repo.audit_records()?;
    let drills = audit::last_drills(&records, |id| lineages.get(id).cloned());
    // Asked of the store once a day from one machine: status stays a few requests.
    let lifecycle = match repo.lifecycle_dangers(Some(std::time::Duration::from_secs(86_400))) {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => {
            eprintln!("warning: could not read the bucket's lifecycle rules: {e}");
            Vec::new()
        }
    };
    for d in &lifecycle {
        eprintln!("warning: {d}; {}", strata::backend::lifecycle::FIX);
    }
    let now = strata::timespec::now();
    let coverage = repo.coverage(&records, now)?;
    let mut freshness = std::collections::HashMap::new();
    for (name, _) in &picks {
        let f = match global.file.sets.get(name) {
            Some(set) => set.freshness(given_max)?,
            // A lineage without a set: held to the bound given, never required.
            None => status::Freshness {
                max_age: given_max,
                required: false,
            },
        };
        freshness.insert(name.clone(), f);
    }
    let rows = status::assess(picks, &freshness, &drills, now);
    if global.json {
        output::print_json(&status_json(&rows, &coverage, &lifecycle));
    } else {
        print_status(&rows, &coverage);
    }
    let stale_sets: Vec<&str> = rows
        .iter()
        .filter(|r| r.stale)
        .map(|r| r.set.as_str())
        .collect();
    if !stale_sets.is_empty() {
        eprintln!(
            "stale: {} (newest snapshot older than its max-age, or none)",
            stale_sets.join(", ")
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

/// `status --json`.
fn status_json(
    rows: &[status::SetStatus],
    coverage: &Coverage,
    lifecycle: &[strata::backend::lifecycle::Danger],
) -> serde_json::Value {
    let sets: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({
                "set": r.set,
                "snapshot": r.snapshot.as_ref().map(|(id, s)| json!({
                    "id": id.to_hex(),
                    "time": s.time,
                    "age_secs": r.age_secs,
                    "files": s.summary.files_new + s.summary.files_changed + s.summary.files_unchanged,
                    "total_bytes": s.summary.total_bytes,
                    "bytes_added": s.summary.bytes_added,
                    "bytes_stored": s.summary.bytes_stored,
                })),
                "max_age_secs": r.max_age.map(|m| m.num_seconds()),
                "stale": r.stale,
                "last_drill": r.last_drill,
            })
        })
        .collect();
    json!({
        "sets": sets,
        "verification": coverage_json(coverage),
        "lifecycle": lifecycle,
    })
}

fn coverage_json(c: &Coverage) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["fraction_recent"] = json!(c.fraction_recent());
    v
}

fn print_status(rows: &[status::SetStatus], coverage: &Coverage) {
    for r in rows {
        let (name, pick, age, max_age, stale, drill) = (
            &r.set,
            &r.snapshot,
            &r.age_secs,
            &r.max_age,
            &r.stale,
            &r.last_drill,
        );
        match pick {
            None => println!("{name}: no snapshot{}", if *stale { "  STALE" } else { "" }),
            Some((id, s)) => println!(
                "{name}: {} {} ({} ago{}), {} files, {}, added {} ({} stored){}",
                id.short(),
                output::when(&s.time),
                output::age(age.unwrap_or_default()),
                max_age
                    .map(|m| format!(", max {}", output::age(m.num_seconds() as f64)))
                    .unwrap_or_default(),
                s.summary.files_new + s.summary.files_changed + s.summary.files_unchanged,
                output::bytes(s.summary.total_bytes),
                output::bytes(s.summary.bytes_added),
                output::bytes(s.summary.bytes_stored),
                if *stale { "  STALE" } else { "" }
            ),
        }
        match drill {
            Some(d) if d.errors > 0 => println!(
                "  last drill {}: FAILED with {} error(s)",
                output::when(&d.time),
                d.errors
            ),
            Some(d) => println!(
                "  last drill {}: {} files, {}/s, full restore about {}{}",
                output::when(&d.time),
                d.files,
                output::bytes(d.throughput() as u64),
                output::age(d.projected_secs),
                if d.errors > 0 {
                    format!(", {} ERRORS", d.errors)
                } else {
                    String::new()
                }
            ),
            None => println!("  no drill yet"),
        }
    }
    match &coverage.last_check {
        Some(t) => println!(
            "verification: last check {}; {:.1}% of {} packs verified in the last {} days, {} never{}",
            output::when(t),
            100.0 * coverage.fraction_recent(),
            coverage.packs,
            audit::RECENT_DAYS,
            coverage.never_verified,
            if coverage.damaged.is_empty() {
                String::new()
            } else {
                format!("; {} packs DAMAGED (see strata check)", coverage.damaged.len())
            }
        ),
        None => println!("verification: no check has read data yet"),
    }
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Sets whose growth to show (default: every set and lineage).
    sets: Vec<String>,
}

/// The estimated monthly cost per storage class and request kind (GB-month, 10^9 bytes,
/// as providers bill), and the classes `prices` has no price for.
fn monthly_cost<'a>(
    st: &'a strata::stats::Stats,
    prices: &std::collections::BTreeMap<String, f64>,
) -> (std::collections::BTreeMap<&'a str, f64>, Vec<&'a str>) {
    // Per class, GB-month (10^9 bytes) as providers bill.
    let mut cost: std::collections::BTreeMap<&str, f64> = Default::default();
    for c in &st.classes {
        if let Some(p) = prices.get(&c.storage_class) {
            *cost.entry(c.storage_class.as_str()).or_default() += c.bytes as f64 / 1e9 * p;
        }
    }
    let r = &st.requests_30d;
    for (key, n, label) in [
        ("put-per-1000", r.writes, "PUT requests"),
        ("get-per-1000", r.reads, "GET requests"),
    ] {
        if let Some(p) = prices.get(key) {
            *cost.entry(label).or_default() += n as f64 / 1000.0 * p;
        }
    }
    let mut unpriced: Vec<&str> = st
        .classes
        .iter()
        .map(|c| c.storage_class.as_str())
        .filter(|c| !prices.is_empty() && !prices.contains_key(*c))
        .collect();
    unpriced.dedup();
    (cost, unpriced)
}

/// `stats` in words.
fn print_stats(
    st: &strata::stats::Stats,
    cost: &std::collections::BTreeMap<&str, f64>,
    unpriced: &[&str],
) {
    let r = &st.requests_30d;
    println!(
        "newest snapshot of each set: {}; all {} snapshots: {}",
        output::bytes(st.restore_bytes),
        st.sets.iter().map(|g| g.snapshots).sum::<usize>(),
        output::bytes(st.logical_bytes)
    );
    println!(
        "stored: {} in all; file data {} distinct ({:.1}x deduplication), {} in packs ({:.2}x compression)",
        output::bytes(st.stored_bytes),
        output::bytes(st.unique_bytes),
        st.dedup_ratio,
        output::bytes(st.unique_stored_bytes),
        st.compression_ratio
    );
    for c in &st.classes {
        println!(
            "  {:<10} {:<20} {:>8} objects {:>12}",
            c.kind,
            c.storage_class,
            c.objects,
            output::bytes(c.bytes)
        );
    }
    if !cost.is_empty() {
        let total: f64 = cost.values().sum();
        let parts: Vec<String> = cost.iter().map(|(c, v)| format!("{c} {v:.2}")).collect();
        println!("monthly cost: {total:.2} ({})", parts.join(", "));
        println!(
            "  requests: {} writes and {} reads by {} backups in the last 30 days (estimated)",
            r.writes, r.reads, r.backups
        );
    }
    if !unpriced.is_empty() {
        println!("no price for: {}", unpriced.join(", "));
    }
    for g in &st.sets {
        println!(
            "{}: {} snapshots, newest {}, {}, last +{}{}{}",
            g.set,
            g.snapshots,
            output::bytes(g.latest_bytes),
            match g.added_per_day {
                Some(rate) => format!("adds {}/day", output::bytes(rate as u64)),
                None => "too little history for a daily rate".into(),
            },
            output::bytes(g.last_added),
            match g.recent_range {
                Some((lo, hi)) =>
                    format!(" (recent {} to {})", output::bytes(lo), output::bytes(hi)),
                None => String::new(),
            },
            if g.anomaly { "  ANOMALY" } else { "" }
        );
    }
}

/// `stats`: sizes, savings, storage classes with an estimated monthly cost (from the
/// config's `[prices]`), and each set's growth with the size-anomaly flag.
pub fn stats(global: &Global, args: StatsArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    if !args.sets.is_empty() {
        check_known(global, &repo.snapshots().list()?, &args.sets)?;
    }
    let st = strata::stats::run(&repo, &args.sets)?;
    let (cost, unpriced) = monthly_cost(&st, &global.file.prices);
    global.update_metrics(|s| {
        metrics::record_usage(s, &st.classes);
        for g in &st.sets {
            let flag = if g.anomaly { 1.0 } else { 0.0 };
            s.set("strata_backup_size_anomaly", &[("set", &g.set)], flag);
        }
        s.clear("strata_repository_monthly_cost");
        for (item, c) in &cost {
            s.set("strata_repository_monthly_cost", &[("item", item)], *c);
        }
    });
    if global.json {
        let mut v = serde_json::to_value(&st)?;
        v["monthly_cost"] = json!(cost);
        output::print_json(&v);
        return Ok(exit::OK);
    }
    print_stats(&st, &cost, &unpriced);
    Ok(exit::OK)
}
