//! `drill` and `status`: is the data there, and could we get it back in time?

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use strata::audit::{self, Coverage};
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
    /// Only the sets whose drill is due: no passing drill within their drill interval, or
    /// a last drill that failed (for a daily timer: each set is drilled on its schedule).
    #[arg(long)]
    due: bool,
    #[command(flatten)]
    cold: super::restore::ColdArgs,
    #[command(flatten)]
    recreate: super::restore::RecreateArgs,
}

/// A set's (or lineage's) name and its newest snapshot, if it has one.
pub(super) type Pick = (String, Option<(SnapshotId, Snapshot)>);

/// The snapshots to look at: the newest of each set named, else of each configured set,
/// else of every lineage.
pub(super) fn newest(
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
    // By label: a set's name, or `host:<host>:<paths>` for a lineage without a set (the
    // name the metrics and the "known" list give it).
    let by_set: std::collections::HashMap<String, (SnapshotId, Snapshot)> = newest
        .into_iter()
        .map(|(lineage, id, s)| (lineage.label(), (id, s)))
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
pub(super) fn check_known(
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
    let sample = parse_sample(args.sample.as_deref())?;
    let scratch = args.target.clone().unwrap_or_else(std::env::temp_dir);
    remove_scratch_on_signals(&scratch)?;
    let repo = global.open().inspect_err(|e| {
        // A drill that cannot reach the repository failed: its sets are told so.
        let names: Vec<&String> = match args.sets.is_empty() {
            true => global.file.sets.keys().collect(),
            false => args.sets.iter().collect(),
        };
        for name in names {
            tell_failed_drill(global, name, exit::code_of_anyhow(e), &output::chain(e));
        }
    })?;
    let all = repo.snapshots().list()?;
    let mut picks = newest(global, all.clone(), &args.sets)?;
    let classes = data_classes(repo.config().data_storage_class.as_deref(), &[]);
    if args.due {
        let records = audit::load(&repo)?;
        let judged = judge(global, picks.clone(), &all, &records, &classes, None)?.rows;
        picks.retain(|(name, _)| {
            let row = judged.iter().find(|r| &r.set == name);
            row.is_some_and(|r| r.objectives.drill.as_ref().is_some_and(|v| !v.holds()))
        });
        if picks.is_empty() && !global.quiet && !global.json {
            println!("no drill is due");
        }
    }
    let mut code = exit::OK;
    let mut reports = Vec::new();
    for (name, pick) in picks.clone() {
        let Some((id, snap)) = pick else {
            eprintln!("error: set {}: no snapshot to drill", output::plain(&name));
            tell_failed_drill(global, &name, exit::FAILURE, "no snapshot to drill");
            code = exit::FAILURE;
            continue;
        };
        let set = global.file.sets.get(&name);
        let bar = Bar::new(global.show_progress(), false, "drill").quiet(global.quiet);
        let opts = DrillOptions {
            sample,
            scratch: scratch.clone(),
            cold: args.cold.wait(),
            verify: set.map(|s| s.drill_verify()).transpose()?.flatten(),
            recreate: args.recreate.recreate(),
            stop: Some(&STOP),
        };
        let report = drill::run(&repo, &id, &snap, &opts, &bar);
        // A signal came: its handler removes the copy and ends the process (130); this
        // drill neither reports nor records anything meanwhile.
        if STOP.load(std::sync::atomic::Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
        let report = match report {
            Ok(report) => report,
            // Before anything was restored (the target, the snapshot's tree): this set's
            // drill failed; the others are still drilled.
            Err(e) => {
                let e = anyhow::Error::from(e);
                eprintln!("error: set {}: {}", output::plain(&name), output::chain(&e));
                tell_failed_drill(global, &name, exit::code_of_anyhow(&e), &output::chain(&e));
                code = exit::FAILURE;
                continue;
            }
        };
        bar.finish();
        global.update_metrics(|s| metrics::record_drill(s, &name, &report.drill));
        // Said before the hook runs: a signal during the hook must not swallow it.
        if !global.json {
            print_drill(&name, &report, global.quiet);
        }
        if !report.drill.passed() {
            code = exit::FAILURE;
            let env = strata::sets::drill_hook_env(&name, &report.drill);
            failure_hook(global, &name, &env);
        }
        reports.push(json!({"set": name, "report": report}));
    }
    // The objectives as the drills leave them, for the metrics file.
    if global.metrics().is_some() && !reports.is_empty() {
        let records = audit::load(&repo)?;
        let judged = judge(global, picks, &all, &records, &classes, None)?.rows;
        record_judged(global, &judged, &all);
    }
    if global.json {
        output::print_json(&serde_json::Value::Array(reports));
    }
    Ok(code)
}

/// The verdicts into the metrics file, with every configured set's objectives (what the
/// alert rules compare ages with, changed in the config since its last backup); the
/// series of sets that neither the config nor a snapshot knows any more are dropped.
fn record_judged(global: &Global, rows: &[status::SetStatus], all: &[(SnapshotId, Snapshot)]) {
    let sets = &global.file.sets;
    let known: std::collections::HashSet<String> = (sets.keys().cloned())
        .chain(all.iter().map(|(_, s)| metrics::set_label(s)))
        .collect();
    global.update_metrics(|s| {
        for r in rows {
            metrics::record_assessment(s, &r.set, &r.objectives);
        }
        for (name, set) in sets {
            if let Ok(o) = set.objectives(None, &[]) {
                metrics::record_objectives(s, name, &o);
            }
        }
        s.forget_sets(|set| known.contains(set));
    });
}

/// `--sample P%` as a share in (0, 1]; none: 1.
fn parse_sample(sample: Option<&str>) -> anyhow::Result<f64> {
    let Some(s) = sample else {
        return Ok(1.0);
    };
    let p: f64 = s
        .strip_suffix('%')
        .and_then(|p| p.trim().parse().ok())
        .filter(|p| *p > 0.0 && *p <= 100.0)
        .ok_or_else(|| {
            exit::usage(format!(
                "--sample {s:?}: give a percentage in (0, 100], e.g. 2%"
            ))
        })?;
    Ok(p / 100.0)
}

/// The storage classes data packs are written in (the repository's default) or moved to
/// (by lifecycle rules): what the sets' RTOs must allow for besides their own class.
pub(super) fn data_classes(
    repository_class: Option<&str>,
    lifecycle: &[strata::backend::lifecycle::Danger],
) -> Vec<String> {
    let mut classes: Vec<String> = repository_class.into_iter().map(str::to_string).collect();
    classes.extend(lifecycle.iter().filter_map(|d| d.archives_data_to.clone()));
    classes.sort();
    classes.dedup();
    classes
}

/// The sets judged: each pick's state, the objectives it was held to, and every
/// lineage's drills (oldest first).
pub(super) struct Judged {
    pub rows: Vec<status::SetStatus>,
    pub objectives: std::collections::HashMap<String, strata::objectives::Objectives>,
    pub drills: std::collections::HashMap<Lineage, Vec<audit::Drill>>,
}

/// Each pick's state and objectives, judged now: configured sets by their objectives
/// (`given_rpo` overriding their RPO), other lineages by `given_rpo` alone.
pub(super) fn judge(
    global: &Global,
    picks: Vec<Pick>,
    all: &[(SnapshotId, Snapshot)],
    records: &[(strata::AuditId, audit::Audit)],
    classes: &[String],
    given_rpo: Option<chrono::Duration>,
) -> anyhow::Result<Judged> {
    let lineages: std::collections::HashMap<SnapshotId, Lineage> =
        all.iter().map(|(id, s)| (*id, s.lineage())).collect();
    let drills = audit::drills_by_lineage(records, |id| lineages.get(id).cloned());
    let mut objectives = std::collections::HashMap::new();
    for (name, _) in &picks {
        let o = match global.file.sets.get(name) {
            Some(set) => set.objectives(given_rpo, classes)?,
            // A lineage without a set: held to the bound given, never required.
            None => strata::objectives::Objectives {
                rpo: given_rpo,
                ..Default::default()
            },
        };
        objectives.insert(name.clone(), o);
    }
    let rows = status::assess(picks, &objectives, &drills, strata::timespec::now());
    Ok(Judged {
        rows,
        objectives,
        drills,
    })
}

/// Set by SIGINT or SIGTERM during a drill: a running hook is told to end.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Held while a hook runs: the process exits only once the hook has ended.
static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// SIGINT or SIGTERM during a drill: what it restored is decrypted data, which must not
/// outlive it, and neither may a hook. The drill's directories are removed, a running
/// hook is stopped (SIGTERM, then SIGKILL after a grace), then the process exits 130.
fn remove_scratch_on_signals(scratch: &std::path::Path) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    super::signals_taken_over();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let scratch = scratch.to_path_buf();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            STOP.store(true, std::sync::atomic::Ordering::SeqCst);
            let remove = || {
                for dir in drill::remove_scratch(&scratch) {
                    eprintln!("drill interrupted: removed {}", dir.display());
                }
            };
            remove();
            let _hook = HOOK.lock();
            // The next set's drill may have begun while the hook ended.
            remove();
            std::process::exit(exit::INTERRUPTED);
        }
    });
    Ok(())
}

/// Runs the set's on-failure hook (if it has one) after a failed drill; a signal stops it.
fn failure_hook(global: &Global, name: &str, env: &[(&str, String)]) {
    let Some(cmd) = (global.file.sets.get(name)).and_then(|s| s.on_failure.as_deref()) else {
        return;
    };
    let _running = HOOK.lock();
    let what = format!("set {}: on-failure", output::plain(name));
    super::monitor::run_hook(&what, cmd, env, Some(&STOP));
}

/// A drill that failed before it restored anything (no repository, no snapshot, no
/// target): the metrics file and the on-failure hook hear of it as of any failed drill.
fn tell_failed_drill(global: &Global, name: &str, code: i32, error: &str) {
    global.update_metrics(|s| metrics::record_drill_error(s, name, strata::timespec::now()));
    let env = strata::sets::drill_error_env(name, code, error);
    failure_hook(global, name, &env);
}

fn print_drill(name: &str, r: &drill::DrillReport, quiet: bool) {
    // A lineage's label holds its host and paths: anybody's with the password.
    let name = &output::plain(name);
    for e in &r.errors {
        eprintln!("error: set {name}: {}", output::plain(e));
    }
    for w in r.warnings.iter().filter(|_| !quiet) {
        eprintln!("warning: set {name}: {}", output::plain(w));
    }
    let d = &r.drill;
    if let Some(v) = d.verify.as_ref().filter(|v| !v.passed()) {
        eprintln!(
            "error: set {name}: drill verify {:?} {} after {:.1}s; its output ended:\n{}",
            v.command,
            v.outcome,
            v.duration_secs,
            output::plain(v.output_tail.trim_end())
        );
    }
    if quiet {
        return;
    }
    if let Some(v) = d.verify.as_ref().filter(|v| v.passed()) {
        println!(
            "set {name}: drill verify {:?} passed in {:.1}s",
            v.command, v.duration_secs
        );
    }
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
    let took = output::age(d.projected_secs);
    println!(
        "  a full restore of its {} would take {}",
        output::bytes(d.snapshot_bytes),
        match took.as_str() {
            "under 1s" => took,
            _ => format!("about {took}"),
        }
    );
    if !d.passed() {
        println!("set {name}: drill FAILED: {}", output::plain(&d.failure()));
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

/// `status`: per set the newest snapshot and its age, the last drill, its objectives
/// judged, and the repository's verification; exit 1 when an objective of a set does not
/// hold (or cannot be judged). Cheap: the index is not synced, and a warm cache leaves
/// four requests (config, keys, snapshots and audit listings).
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
    let picks = if args.all {
        strata::select_per_lineage(all.clone(), None, &SnapshotFilter::default())
            .into_iter()
            .map(|(lineage, id, s)| (lineage.label(), Some((id, s))))
            .collect()
    } else {
        newest(global, all.clone(), &args.sets)?
    };
    let records = repo.audit_records()?;
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
    let coverage = repo.coverage(&records, strata::timespec::now())?;
    let classes = data_classes(repo.config().data_storage_class.as_deref(), &lifecycle);
    let rows = judge(global, picks, &all, &records, &classes, given_max)?.rows;
    record_judged(global, &rows, &all);
    if global.json {
        output::print_json(&status_json(&rows, &coverage, &lifecycle));
    } else if !global.quiet {
        // Quiet: only what does not hold (below) and the exit code, for cron mail.
        print_status(&rows, &coverage);
    }
    let failing: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.objectives
                .verdicts()
                .filter(|(_, v)| !v.holds())
                .map(|(what, v)| format!("{} {what} {}", output::plain(&r.set), v.state()))
        })
        .collect();
    let stale: Vec<&str> = rows
        .iter()
        .filter(|r| r.stale)
        .map(|r| r.set.as_str())
        .collect();
    if !stale.is_empty() {
        eprintln!(
            "stale: {} (newest snapshot older than its rpo, or none)",
            output::plain(&stale.join(", "))
        );
    }
    if !failing.is_empty() {
        eprintln!("objectives not met: {}", failing.join(", "));
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
                "objectives": r.objectives,
                "objectives_hold": r.objectives.holds(),
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
            &output::plain(&r.set),
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
        for (what, v) in r.objectives.verdicts() {
            let state = match v.holds() {
                true => "holds",
                false => &v.state().to_uppercase(),
            };
            println!("  {what}: {state}: {}", output::plain(v.reason()));
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

/// `stats` in words.
fn print_stats(st: &strata::stats::Stats, cost: &strata::stats::MonthlyCost) {
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
    if !cost.items.is_empty() {
        let parts: Vec<String> = (cost.items.iter())
            .map(|(c, v)| format!("{c} {v:.2}"))
            .collect();
        println!("monthly cost: {:.2} ({})", cost.total(), parts.join(", "));
        println!(
            "  requests: {} writes and {} reads by {} backups in the last 30 days (estimated)",
            r.writes, r.reads, r.backups
        );
    }
    if !cost.unpriced.is_empty() {
        println!("no price for: {}", cost.unpriced.join(", "));
    }
    for g in &st.sets {
        println!(
            "{}: {} snapshots, newest {}, {}, last +{}{}{}",
            output::plain(&g.set),
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
    let cost = strata::stats::monthly_cost(&st.classes, &st.requests_30d, &global.file.prices);
    global.update_metrics(|s| {
        metrics::record_usage(s, &st.classes);
        for g in &st.sets {
            let flag = if g.anomaly { 1.0 } else { 0.0 };
            s.set("strata_backup_size_anomaly", &[("set", &g.set)], flag);
        }
        s.clear("strata_repository_monthly_cost");
        for (item, c) in &cost.items {
            s.set("strata_repository_monthly_cost", &[("item", item)], *c);
        }
    });
    if global.json {
        let mut v = serde_json::to_value(&st)?;
        v["monthly_cost"] = json!(cost.items);
        output::print_json(&v);
        return Ok(exit::OK);
    }
    print_stats(&st, &cost);
    Ok(exit::OK)
}
