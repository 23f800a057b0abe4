use std::path::PathBuf;

use super::exit;
use anyhow::anyhow;
use clap::Args;
use strata::patterns::Patterns;
use strata::restore::{self, RestoreOptions};
use strata::timespec;
use strata::{select_at, select_per_lineage};

use super::args::{in_snapshot, FilterArgs};
use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").args(["snapshot", "at", "all_sets"]).required(true).multiple(true)))]
pub struct RestoreArgs {
    /// Snapshot id, unique id prefix, or "latest" (the newest of the one lineage the filters
    /// leave; or use --at).
    #[arg(conflicts_with = "at")]
    snapshot: Option<String>,
    /// Restore the newest snapshot taken at or before this time (RFC 3339,
    /// "YYYY-MM-DD HH:MM[:SS]" local time, or a duration ago such as 90m, 2h, 3d).
    #[arg(long)]
    at: Option<String>,
    /// Directory to restore into.
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Restore only paths matching this glob (and what lies below them).
    #[arg(long = "include")]
    includes: Vec<String>,
    /// Do not restore paths matching this glob.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Re-read restored files and check them against the snapshot.
    #[arg(long)]
    verify: bool,
    /// Read, decrypt and verify everything, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --at or "latest": restore the chosen snapshot of every backup set (and of every
    /// host and paths without a set) into the target, the whole service as of one moment.
    #[arg(long)]
    all_sets: bool,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    cold: ColdArgs,
    #[command(flatten)]
    recreate: RecreateArgs,
}

/// What of owners, attributes and devices `restore`, `dump`, `drill` and `pg restore`
/// recreate: by default everything the user running them may (owners only as root).
/// Set-id bits and file capabilities (`security.capability`) are kept only where owners
/// are restored: as root without --no-owner.
#[derive(Args, Debug, Clone, Copy)]
#[command(next_help_heading = "Owners, attributes and devices")]
pub struct RecreateArgs {
    /// Leave every entry owned by the user running the command, not the snapshot's
    /// owners (the default as root); drops setuid and setgid bits and file capabilities.
    #[arg(long)]
    no_owner: bool,
    /// Set no extended attributes (by default user.* attributes, and as root the others
    /// the file system takes).
    #[arg(long)]
    no_xattrs: bool,
    /// Skip block and character devices, each named in a warning (by default root
    /// recreates them with the snapshot's owner and mode).
    #[arg(long)]
    no_devices: bool,
}

impl RecreateArgs {
    pub fn recreate(&self) -> restore::Recreate {
        restore::Recreate {
            no_owner: self.no_owner,
            no_xattrs: self.no_xattrs,
            no_devices: self.no_devices,
        }
    }
}

/// Says which devices a command left out as asked.
pub fn warn_skipped(global: &Global, skipped: &[PathBuf]) {
    if global.quiet {
        return;
    }
    for p in skipped {
        eprintln!(
            "warning: {}: device not restored (--no-devices)",
            output::plain(&p.to_string_lossy())
        );
    }
}

/// What a command that reads file contents does about data packs in archive storage.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Archive storage")]
pub struct ColdArgs {
    /// Do not thaw data packs in archive storage (GLACIER, DEEP_ARCHIVE): stop before
    /// reading and say how many packs and bytes a thaw would take, and how long.
    #[arg(long)]
    no_warm_up: bool,
    /// Restore tier of the thaws this command requests: expedited (minutes; GLACIER only),
    /// standard (hours) or bulk.
    #[arg(long = "thaw-tier", value_enum, default_value = "standard")]
    tier: Tier,
    /// How many days thawed copies stay readable.
    #[arg(long, default_value_t = 1)]
    thaw_days: u32,
    /// The first pause between looks at packs still thawing; it doubles up to 15 minutes.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    thaw_poll: std::time::Duration,
    /// Give up waiting for thaws after this long [default: twice the longest wait S3
    /// documents for the tier: 24h standard, 96h bulk, 10m expedited].
    #[arg(long, value_parser = humantime::parse_duration)]
    thaw_timeout: Option<std::time::Duration>,
}

impl ColdArgs {
    /// How the library thaws and waits; `None` with `--no-warm-up`.
    pub fn wait(&self) -> Option<strata::thaw::ThawWait> {
        (!self.no_warm_up).then(|| {
            let request = strata::thaw::WarmUpOptions {
                tier: self.tier.into(),
                days: self.thaw_days,
            };
            let wait = strata::thaw::ThawWait::new(request, self.thaw_poll);
            strata::thaw::ThawWait {
                give_up: self.thaw_timeout.unwrap_or(wait.give_up),
                ..wait
            }
        })
    }

    /// With `--no-warm-up`: `Some(exit code)` after saying what a thaw of the packs the
    /// command needs (`packs` finds them, only then) would take, when any of them is
    /// archived; `None` when the command may go on.
    pub fn refuse_if_cold(
        &self,
        global: &Global,
        repo: &strata::Repository,
        packs: impl FnOnce() -> strata::Result<std::collections::BTreeSet<strata::PackId>>,
    ) -> anyhow::Result<Option<i32>> {
        if !self.no_warm_up {
            return Ok(None);
        }
        let packs = packs()?;
        let r = strata::thaw::cost(repo, &packs, self.tier.into())?;
        if r.ready() {
            return Ok(None);
        }
        if global.json {
            output::print_json(&serde_json::json!({"archived": r}));
        }
        eprintln!(
            "error: {} of the {} data packs needed are in archive storage: {} to thaw, {} \
             thawing already; nothing read (--no-warm-up)",
            r.requested + r.thawing,
            r.packs,
            output::bytes(r.requested_bytes),
            r.thawing
        );
        for (class, wait) in &r.expected_wait {
            eprintln!("  {class} at the {:?} tier: {wait}", self.tier);
        }
        eprintln!("run `strata warm-up` (or this command without --no-warm-up) to thaw them");
        Ok(Some(exit::PENDING))
    }
}

pub fn run(global: &Global, args: RestoreArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let filter = args.filter.filter(global, &repo)?;
    let at = args
        .at
        .as_deref()
        .map(|at| timespec::parse_instant(at, timespec::now()))
        .transpose()
        .map_err(|e| exit::usage(format!("--at: {e}")))?;
    // Picked from the snapshots that can be read: one that cannot may have been a set's
    // newest, so the restore says so and does not exit 0 (hostile pass 8: an older
    // snapshot restored, or a set left out, silently).
    let mut damaged = 0;
    let mut readable = || -> anyhow::Result<Vec<(strata::SnapshotId, strata::Snapshot)>> {
        let (snaps, bad) = repo.snapshots().with_damage()?;
        for (id, e) in &bad {
            eprintln!(
                "warning: skipped snapshot {id}: {}",
                output::plain(&e.to_string())
            );
        }
        damaged = bad.len();
        Ok(snaps)
    };
    let picks = match (&args.snapshot, args.all_sets) {
        (Some(s), true) if s != "latest" => {
            return Err(anyhow!(
                "--all-sets picks one snapshot per set: give --at or \"latest\", not {s}"
            ))
        }
        (_, true) => {
            let all = readable()?;
            let picks = select_per_lineage(all.clone(), at, &filter);
            if picks.is_empty() {
                // The same error a single pick gives: what is missing, and the oldest.
                select_at(all, at, &filter)?;
            }
            let picks: Vec<_> = picks.into_iter().map(|(_, id, s)| (id, s)).collect();
            refuse_overlap(&picks)?;
            picks
        }
        (Some(s), false) if at.is_none() && s != "latest" => {
            vec![repo.snapshots().find_in(s, &filter)?]
        }
        _ => vec![select_at(readable()?, at, &filter)?],
    };
    let opts = RestoreOptions {
        target: args.target.clone(),
        includes: Patterns::new(&args.includes).map_err(exit::usage)?,
        excludes: Patterns::new(&args.excludes).map_err(exit::usage)?,
        verify: args.verify,
        dry_run: args.dry_run,
        cold: args.cold.wait(),
        cancel: (!args.dry_run).then(super::stop_on_signals).transpose()?,
        recreate: args.recreate.recreate(),
        private: false,
        provided: Default::default(),
        batch_bytes: None,
    };
    let packs = || {
        let mut packs = std::collections::BTreeSet::new();
        for (_, snap) in &picks {
            packs.extend(strata::thaw::packs_needed(
                &repo,
                snap,
                opts.includes.as_ref(),
            )?);
        }
        Ok(packs)
    };
    if !args.dry_run {
        if let Some(code) = args.cold.refuse_if_cold(global, &repo, packs)? {
            return Ok(code);
        }
    }
    let existed = std::fs::symlink_metadata(&args.target).is_ok();
    let mut code = exit::OK;
    let mut results = Vec::new();
    let mut restored = 0;
    for (id, snap) in &picks {
        let (c, json) = match one(global, &repo, (id, snap), &opts, &args) {
            Ok(done) => done,
            // One set's damaged snapshot (a key holder's bomb, say) costs only that set
            // (hostile pass 7: the sets after it were not restored).
            Err(e) if picks.len() > 1 && damaged_snapshot(&e) => {
                eprintln!(
                    "error: {} not restored: {}; the other sets are restored",
                    in_snapshot(id, snap).trim_start_matches("in "),
                    output::chain(&e)
                );
                let json = serde_json::json!({
                    "snapshot_id": id, "time": snap.time, "set": snap.set,
                    "error": e.to_string(),
                });
                (exit::FAILURE, json)
            }
            Err(e) => return Err(e),
        };
        code = exit::worse(code, c);
        restored += ["files", "dirs", "other"]
            .iter()
            .map(|k| json[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        results.push(json);
    }
    if damaged > 0 {
        eprintln!(
            "error: {damaged} snapshot(s) could not be read: the newest of a set may be among \
             them, and then an older one was restored, or the set left out; run `strata check`"
        );
        code = exit::worse(code, exit::FAILURE);
    }
    // Nothing matched: the target this run made is left as it was, absent (an empty
    // directory only; rmdir takes nothing else).
    if !existed && restored == 0 && !args.dry_run {
        let _ = std::fs::remove_dir(&args.target);
    }
    if global.json {
        match results.len() {
            1 => output::print_json(&results[0]),
            _ => output::print_json(&serde_json::Value::Array(results)),
        }
    }
    Ok(code)
}

/// `--all-sets` restores every pick into one target: two picks that hold the same path
/// (two sets, or two hosts, backing up one directory) would overwrite each other there.
fn refuse_overlap(picks: &[(strata::SnapshotId, strata::Snapshot)]) -> anyhow::Result<()> {
    use std::path::Path;
    for (i, (a_id, a)) in picks.iter().enumerate() {
        for (b_id, b) in &picks[i + 1..] {
            let shared = a.paths.iter().find_map(|p| {
                b.paths.iter().find_map(|q| {
                    let (pp, qp) = (Path::new(p), Path::new(q));
                    (pp.starts_with(qp) || qp.starts_with(pp)).then_some((p, q))
                })
            });
            if let Some((p, q)) = shared {
                let holds = if p == q {
                    format!("both hold {}", output::plain(p))
                } else {
                    format!(
                        "hold {} and {}, one inside the other",
                        output::plain(p),
                        output::plain(q)
                    )
                };
                return Err(exit::usage(format!(
                    "--all-sets: {} ({}) and {} ({}) {holds}, and would overwrite each other \
                     in one target; restore each with --set (or --host) into its own --target",
                    a.lineage().label(),
                    a_id.short(),
                    b.lineage().label(),
                    b_id.short(),
                )));
            }
        }
    }
    Ok(())
}

/// Restores one snapshot and reports it; returns the exit code and the JSON report.
fn one(
    global: &Global,
    repo: &strata::Repository,
    (id, snap): (&strata::SnapshotId, &strata::Snapshot),
    opts: &RestoreOptions,
    args: &RestoreArgs,
) -> anyhow::Result<(i32, serde_json::Value)> {
    if !global.quiet && !global.json {
        eprintln!(
            "restoring snapshot {}{} from {} to {}",
            id.short(),
            snap.set
                .as_ref()
                .map(|s| format!(" of set {s}"))
                .unwrap_or_default(),
            output::when(&snap.time),
            args.target.display()
        );
    }
    let bar = Bar::new(global.show_progress(), true, "restore").quiet(global.quiet);
    let report = restore::run(repo, snap, opts, &bar)?;
    bar.finish();
    tell_cold(global, &report, args.dry_run);
    warn_skipped(global, &report.skipped_devices);
    if !global.quiet {
        for p in &report.skipped_sockets {
            eprintln!(
                "warning: {}: a socket, not restored (the program that listens on it makes it)",
                output::plain(&p.to_string_lossy())
            );
        }
    }
    if report.stale_removed > 0 && !global.quiet {
        eprintln!(
            "removed {} half-written file(s) ({}*) that a killed restore had left",
            report.stale_removed,
            restore::STAGED
        );
    }
    if report.kept_dirs > 0 && !global.quiet && !global.json {
        eprintln!(
            "{} existing {} kept {} owner, mode and times (the snapshot's go only to \
             directories the restore creates)",
            report.kept_dirs,
            if report.kept_dirs == 1 {
                "directory"
            } else {
                "directories"
            },
            if report.kept_dirs == 1 {
                "its"
            } else {
                "their"
            },
        );
    }
    print_errors(&report.errors);
    #[derive(serde::Serialize)]
    struct Restored<'a> {
        snapshot_id: strata::SnapshotId,
        time: &'a str,
        set: &'a Option<String>,
        dry_run: bool,
        #[serde(flatten)]
        report: &'a restore::RestoreReport,
    }
    let json = serde_json::to_value(Restored {
        snapshot_id: *id,
        time: &snap.time,
        set: &snap.set,
        dry_run: args.dry_run,
        report: &report,
    })?;
    if !global.quiet && !global.json {
        print_summary(&report, args);
    }
    if !report.errors.is_empty() {
        let mut how = Vec::new();
        if report.marked_damaged > 0 {
            how.push(format!(
                "{} written, and renamed with the suffix .strata-damaged",
                report.marked_damaged
            ));
        }
        if report.unwritten > 0 {
            how.push(format!(
                "{} the target could not take, removed: free space or fix the target, \
                 and restore again",
                report.unwritten
            ));
        }
        eprintln!(
            "restore incomplete: {} error(s); {} file(s) not restored exactly{}",
            report.errors.len(),
            report.damaged_files.len(),
            match how.is_empty() {
                true => String::new(),
                false => format!(" ({})", how.join("; ")),
            }
        );
        return Ok((exit::FAILURE, json));
    }
    // An empty restore during an incident must not pass for a success.
    if !args.includes.is_empty() && report.files + report.other == 0 {
        eprintln!(
            "error: nothing matched --include {} {}: nothing restored",
            output::plain(&args.includes.join(" --include ")),
            in_snapshot(id, snap)
        );
        return Ok((exit::FAILURE, json));
    }
    Ok((exit::OK, json))
}

/// What the restore did about archived packs.
fn tell_cold(global: &Global, report: &restore::RestoreReport, dry_run: bool) {
    if let (Some(t), false) = (&report.thaw, global.quiet || global.json) {
        eprintln!(
            "{} data pack(s) were in archive storage: {} thaw(s) requested, {} look(s) while \
             waiting, {} waited",
            t.packs,
            t.requested,
            t.polls,
            humantime::format_duration(std::time::Duration::from_secs(t.waited_seconds as u64))
        );
    }
    if dry_run && report.archived_packs > 0 && !global.quiet {
        eprintln!(
            "{} data pack(s) are in archive storage and were not read (a dry run thaws nothing)",
            report.archived_packs
        );
    }
}

fn print_summary(report: &restore::RestoreReport, args: &RestoreArgs) {
    println!(
        "{} {} files, {} dirs, {} others, {}{}",
        if args.dry_run {
            "verified (dry run)"
        } else {
            "restored"
        },
        report.files,
        report.dirs,
        report.other,
        output::bytes(report.bytes),
        if args.verify {
            format!("; {} files re-read and verified", report.verified_files)
        } else {
            String::new()
        }
    );
}

/// Errors grouped by cause: a full disk fails thousands of files for one reason, and the
/// operator needs the reason and a few examples, not thousands of lines.
fn print_errors(errors: &[restore::RestoreError]) {
    const EXAMPLES: usize = 3;
    let mut causes: Vec<(&str, Vec<&restore::RestoreError>)> = Vec::new();
    for e in errors {
        match causes.iter_mut().find(|(c, _)| *c == e.cause) {
            Some((_, v)) => v.push(e),
            None => causes.push((&e.cause, vec![e])),
        }
    }
    for (cause, list) in causes {
        for e in list.iter().take(EXAMPLES) {
            eprintln!("error: {}", output::plain(&e.to_string()));
        }
        if list.len() > EXAMPLES {
            eprintln!(
                "error: ... and {} more path(s) with the same error: {}",
                list.len() - EXAMPLES,
                output::plain(cause)
            );
        }
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").args(["snapshot", "at"]).required(true)))]
pub struct WarmUpArgs {
    /// Snapshot id, unique id prefix, or "latest".
    #[arg(conflicts_with = "at")]
    snapshot: Option<String>,
    /// The newest snapshot taken at or before this time (as restore --at).
    #[arg(long)]
    at: Option<String>,
    /// Only the packs of paths matching this glob (and what lies below them).
    #[arg(long = "include")]
    includes: Vec<String>,
    /// Restore tier: expedited (minutes; GLACIER only), standard (hours) or bulk.
    #[arg(long, value_enum, default_value = "standard")]
    tier: Tier,
    /// How many days the thawed copies stay readable.
    #[arg(long, default_value_t = 7)]
    days: u32,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Tier {
    Expedited,
    Standard,
    Bulk,
}

impl From<Tier> for strata::backend::ThawTier {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Expedited => Self::Expedited,
            Tier::Standard => Self::Standard,
            Tier::Bulk => Self::Bulk,
        }
    }
}

/// `warm-up`: requests thaws of the archived data packs a snapshot (or the paths
/// `--include` picks in it) needs; exit 0 when everything is readable now, else it says
/// what was requested and how long S3 says the wait is.
pub fn warm_up(global: &Global, args: WarmUpArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let filter = args.filter.filter(global, &repo)?;
    let (id, snap) = match (&args.snapshot, &args.at) {
        (Some(s), _) => repo.snapshots().find_in(s, &filter)?,
        (None, at) => {
            let at = at
                .as_deref()
                .map(|at| timespec::parse_instant(at, timespec::now()))
                .transpose()
                .map_err(|e| exit::usage(format!("--at: {e}")))?;
            select_at(repo.snapshots().list()?, at, &filter)?
        }
    };
    let includes = Patterns::new(&args.includes).map_err(exit::usage)?;
    let packs = strata::thaw::packs_needed(&repo, &snap, includes.as_ref())?;
    let opts = strata::thaw::WarmUpOptions {
        tier: args.tier.into(),
        days: args.days,
    };
    let r = strata::thaw::warm_up(&repo, &packs, opts)?;
    if global.json {
        output::print_json(&serde_json::json!({"snapshot": id.to_hex(), "report": r}));
    } else if !global.quiet {
        println!(
            "snapshot {} needs {} data packs ({}): {} hot, {} thawed, {} thawing, {} requested now ({})",
            id.short(),
            r.packs,
            output::bytes(r.bytes),
            r.hot,
            r.thawed,
            r.thawing,
            r.requested,
            output::bytes(r.requested_bytes)
        );
        for (class, wait) in &r.expected_wait {
            println!("  {class} at the {:?} tier: ready {wait}", args.tier);
        }
        if r.ready() {
            println!("everything is readable: restore can start");
        } else {
            println!("run warm-up again to follow the thaw (it requests nothing twice)");
        }
    }
    Ok(if r.ready() { exit::OK } else { exit::PENDING })
}

/// An error of one snapshot's own trees: the restore of the other sets goes on.
fn damaged_snapshot(e: &anyhow::Error) -> bool {
    use strata::Error;
    matches!(
        e.downcast_ref::<Error>(),
        Some(Error::TreeExpands { .. } | Error::Corrupt { .. } | Error::NotFound { .. })
    )
}
