use chrono::{DateTime, FixedOffset};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::exit;
use anyhow::{anyhow, Context};
use clap::Args;
use strata::backup::{self, BackupOptions, BackupReport, Source};
use strata::metrics;
use strata::patterns::{self, Patterns};
use strata::timespec;

use super::monitor;
use super::output::{self, Bar};
use super::Global;
use strata::sets::BackupSet;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up, or the names of backup sets from the config file.
    paths: Vec<PathBuf>,
    /// Back up every set of the config file.
    #[arg(long, conflicts_with_all = ["paths", "stdin"])]
    all: bool,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Leave out paths matching this glob (repeatable).
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (# starts a comment).
    #[arg(long = "exclude-file")]
    exclude_files: Vec<PathBuf>,
    /// Do not cross file-system boundaries.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Snapshot time instead of now (RFC 3339, "YYYY-MM-DD HH:MM[:SS]", or a duration ago).
    #[arg(long)]
    time: Option<String>,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// Uploads in flight (default: 4 for S3, 2 for a local directory; at most 64).
    #[arg(long, default_value_t = 0, hide_default_value = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=64))]
    uploads: usize,
    /// Storage class for this backup's data packs (S3), overriding the repository's.
    #[arg(long)]
    data_storage_class: Option<String>,
    /// File name for --stdin; may hold directories (`pg/db.sql`).
    #[arg(long, default_value = "stdin", requires = "stdin")]
    stdin_filename: String,
    /// Accept a --time more than five minutes in the future.
    #[arg(long)]
    force: bool,
}

/// How far ahead of the clock `--time` may be without `--force`: a snapshot from the
/// future would be `latest` until then, and retention counts back from it.
const MAX_FUTURE: chrono::Duration = chrono::Duration::minutes(5);

fn read_patterns(excludes: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut patterns = excludes.to_vec();
    for f in files {
        patterns.extend(
            patterns::read_file(f)
                .with_context(|| format!("reading exclude file {}", f.display()))?,
        );
    }
    Ok(patterns)
}

/// One backup to run: from the command line, or a named set with the flags on top.
struct Job {
    set: Option<String>,
    paths: Vec<PathBuf>,
    patterns: Vec<String>,
    tags: Vec<String>,
    host: Option<String>,
    class: Option<String>,
    one_file_system: bool,
}

impl Job {
    /// The library's options for this job's backup.
    fn options<'a>(
        &self,
        excludes: Option<Patterns>,
        args: &BackupArgs,
        time: Option<DateTime<FixedOffset>>,
        stop: &'a AtomicBool,
    ) -> BackupOptions<'a> {
        BackupOptions {
            source: Source::Paths(self.paths.clone()),
            host: self.host.clone(),
            tags: self.tags.clone(),
            set: self.set.clone(),
            excludes,
            one_file_system: self.one_file_system,
            time,
            uploaders: args.uploads,
            data_storage_class: self.class.clone(),
            cancel: Some(stop),
            ..Default::default()
        }
    }
}

fn jobs(global: &Global, args: &BackupArgs) -> anyhow::Result<Vec<Job>> {
    let cli_patterns = read_patterns(&args.excludes, &args.exclude_files)?;
    let names: Vec<String> = if args.all {
        if global.file.sets.is_empty() {
            return Err(anyhow!("--all: the config file defines no backup sets"));
        }
        global.file.sets.keys().cloned().collect()
    } else if !args.paths.is_empty()
        && args
            .paths
            .iter()
            .all(|p| global.file.sets.contains_key(&*p.to_string_lossy()))
    {
        // `backup critical critical` backs the set up once.
        let mut names: Vec<String> = Vec::new();
        for p in &args.paths {
            let name = p.to_string_lossy().into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    } else {
        refuse_set_typos(global, &args.paths)?;
        return Ok(vec![Job {
            set: None,
            paths: args.paths.clone(),
            patterns: cli_patterns,
            tags: args.tags.clone(),
            host: args.host.clone(),
            class: args.data_storage_class.clone(),
            one_file_system: args.one_file_system,
        }]);
    };
    names
        .into_iter()
        .map(|name| {
            let set = global.file.set(&name)?;
            if let Ok(Some(why)) = set.unreachable_rto(&[]) {
                eprintln!("warning: set {name}: {}", output::plain(&why));
            }
            // The set's excludes plus the command line's; other flags replace the set's.
            let mut patterns = read_patterns(&set.exclude, &set.exclude_file)?;
            patterns.extend(cli_patterns.iter().cloned());
            Ok(Job {
                paths: set.paths.clone(),
                patterns,
                tags: if args.tags.is_empty() {
                    set.tags.clone()
                } else {
                    args.tags.clone()
                },
                host: args.host.clone().or_else(|| set.host.clone()),
                class: args
                    .data_storage_class
                    .clone()
                    .or_else(|| set.data_storage_class.clone()),
                one_file_system: args.one_file_system || set.one_file_system,
                set: Some(name),
            })
        })
        .collect()
}

/// The repository; a run that cannot open it (wrong password, unreachable) is a failed
/// backup of every set it was to back up, told as such.
fn open_or_tell(
    global: &Global,
    jobs: &[Job],
    stop: &AtomicBool,
) -> anyhow::Result<strata::Repository> {
    let started = timespec::now();
    // Stopped while opening (a slow password command, a slow store): nothing written yet,
    // and an interrupted run all the same to the hooks and metrics.
    let opened = global.open_for_backup().and_then(|repo| {
        match stop.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(strata::Error::Interrupted { packs: 0, bytes: 0 }.into()),
            false => Ok(repo),
        }
    });
    opened.inspect_err(|e| {
        let code = exit::code_of_anyhow(e);
        for job in jobs {
            let label = job_label(job);
            let run = Run {
                label: &label,
                hooks: job.set.as_ref().and_then(|s| global.file.sets.get(s)),
                stop: None,
                started,
                duration_secs: 0.0,
            };
            run.tell(global, None, code, None, Some(e));
        }
    })
}

/// A backup of standard input.
fn backup_stdin(
    global: &Global,
    repo: &strata::Repository,
    args: &BackupArgs,
    time: Option<DateTime<FixedOffset>>,
    stop: &AtomicBool,
) -> anyhow::Result<(serde_json::Value, i32)> {
    let source = Source::Stdin {
        reader: Box::new(std::io::stdin()),
        name: args.stdin_filename.clone(),
    };
    let label = strata::backup::lineage_of(None, &host_of(&args.host), &source).label();
    let opts = BackupOptions {
        source,
        host: args.host.clone(),
        tags: args.tags.clone(),
        time,
        uploaders: args.uploads,
        data_storage_class: args.data_storage_class.clone(),
        cancel: Some(stop),
        ..Default::default()
    };
    observed(global, repo, &label, None, opts)
}

/// One backup per job (a set, or the paths given), every job's sources checked before the
/// repository is touched.
pub fn run(global: &Global, args: BackupArgs) -> anyhow::Result<i32> {
    let time = backup_time(&args)?;
    if !args.stdin && args.paths.is_empty() && !args.all {
        return Err(anyhow!(
            "nothing to back up: give paths, a set name, --all, or --stdin"
        ));
    }
    if let Some(class) = &args.data_storage_class {
        strata::backend::check_storage_class(class).context("--data-storage-class")?;
    }
    let jobs = if args.stdin {
        Vec::new()
    } else {
        jobs(global, &args)?
    };
    let several = jobs.len() > 1;
    let mut excludes = check_jobs(&jobs)?;
    // One set alone (or paths): its error is the run's, before the repository is opened.
    // Of several, a set that fails its checks fails alone, told like any failed set.
    if !several && excludes.first().is_some_and(|x| x.is_err()) {
        let e = excludes.remove(0).unwrap_err();
        // Still a failed backup of the set to its metrics and on-failure hook: cron's
        // mail is not the only alert (a missing source path, say).
        if let Some(job) = jobs.first().filter(|j| j.set.is_some()) {
            let label = job_label(job);
            let run = Run {
                label: &label,
                hooks: job.set.as_ref().and_then(|s| global.file.sets.get(s)),
                stop: None,
                started: timespec::now(),
                duration_secs: 0.0,
            };
            run.tell(global, None, exit::code_of_anyhow(&e), None, Some(&e));
        }
        return Err(e);
    }
    let stop = super::stop_on_signals()?;
    let repo = open_or_tell(global, &jobs, &stop)?;
    let mut results = Vec::new();
    let mut code = exit::OK;
    if args.stdin {
        let (v, c) = backup_stdin(global, &repo, &args, time, &stop)?;
        results.push(v);
        code = c;
    }
    for (job, excludes) in jobs.into_iter().zip(excludes) {
        let label = job_label(&job);
        let hooks = job.set.as_ref().and_then(|s| global.file.sets.get(s));
        let outcome = excludes.inspect_err(|e| {
            // A set that failed its checks is a failed backup to its hooks and metrics.
            let run = Run {
                label: &label,
                hooks,
                stop: Some(&stop),
                started: timespec::now(),
                duration_secs: 0.0,
            };
            run.tell(global, Some(&repo), exit::code_of_anyhow(e), None, Some(e));
        });
        let outcome = outcome.and_then(|excludes| {
            if let (Some(set), false, false) = (&job.set, global.json, global.quiet) {
                println!("== set {set}");
            }
            let opts = job.options(excludes, &args, time, &stop);
            observed(global, &repo, &label, hooks, opts)
        });
        match outcome {
            Ok((v, c)) => {
                results.push(v);
                code = exit::worse(code, c);
            }
            // One set failing does not keep the others from their backups; an interrupt
            // stops them all.
            Err(e) if several && exit::code_of_anyhow(&e) != exit::INTERRUPTED => {
                let c = exit::code_of_anyhow(&e);
                let msg = output::chain(&e);
                eprintln!("error: set {label}: {}", output::plain_lines(&msg));
                results.push(serde_json::json!({"set": label, "error": msg, "exit_code": c}));
                code = exit::worse(code, c);
            }
            Err(e) => return Err(e),
        }
    }
    if global.json {
        if results.len() == 1 {
            output::print_json(&results[0]);
        } else {
            output::print_json(&serde_json::Value::Array(results));
        }
    }
    Ok(code)
}

/// The name a job's metrics go under: its set, else `host:<host>:<paths>`.
fn job_label(job: &Job) -> String {
    strata::backup::lineage_of(
        job.set.as_deref(),
        &host_of(&job.host),
        &Source::Paths(job.paths.clone()),
    )
    .label()
}

/// The host a backup records: the one given, else this machine's name.
fn host_of(given: &Option<String>) -> String {
    given.clone().unwrap_or_else(strata::internals::hostname)
}

/// `--time`, refused in the future unless forced.
fn backup_time(args: &BackupArgs) -> anyhow::Result<Option<DateTime<FixedOffset>>> {
    let time = args
        .time
        .as_deref()
        .map(|t| timespec::parse_instant(t, timespec::now()))
        .transpose()
        .map_err(|e| exit::usage(format!("--time: {e}")))?;
    if let Some(t) = time {
        if t > timespec::now() + MAX_FUTURE && !args.force {
            return Err(anyhow!(
                "--time {t} is in the future: such a snapshot would count as the newest until \
                 then (add --force if that is what you want)"
            ));
        }
    }
    Ok(time)
}

/// Arguments that are not all set names are paths; a bare name that is no path may be a
/// set name mistyped (`backup critcal`), or a set given among paths: said as such, before
/// the repository is opened, rather than as a missing source.
fn refuse_set_typos(global: &Global, paths: &[PathBuf]) -> anyhow::Result<()> {
    let sets = &global.file.sets;
    if sets.is_empty() {
        return Ok(());
    }
    let missing = |p: &PathBuf| std::fs::symlink_metadata(p).is_err();
    let known: Vec<&str> = sets.keys().map(String::as_str).collect();
    for p in paths.iter().filter(|p| !missing(p)) {
        let name = p.to_string_lossy();
        if sets.contains_key(&*name) {
            eprintln!(
                "warning: {} is both a backup set and a path here: backed up as the path, \
                 with the other paths (give set names alone to back up sets)",
                output::plain(&name)
            );
        }
    }
    for p in paths.iter().filter(|p| missing(p)) {
        let name = p.to_string_lossy();
        if sets.contains_key(&*name) {
            return Err(exit::usage(format!(
                "{name} is a backup set, given among paths: back up sets alone (or with \
                 --all), paths in a run of their own"
            )));
        }
        if p.components().count() == 1 {
            return Err(exit::usage(format!(
                "{}: no such file or directory, and no backup set of that name in the config \
                 file (sets: {})",
                output::plain(&name),
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Each job's exclude patterns, compiled, and its sources, looked at before the
/// repository is touched. A bad pattern or storage class is a mistake in the config file
/// and refuses the whole run, before any set is backed up; a missing source (an unmounted
/// disk) is that job's failure alone: its error is in the job's slot.
fn check_jobs(jobs: &[Job]) -> anyhow::Result<Vec<anyhow::Result<Option<Patterns>>>> {
    let mut checked = Vec::new();
    for job in jobs {
        let excludes = check_config(job)?;
        checked.push(check_sources(job).map(|_| excludes));
    }
    Ok(checked)
}

fn what(job: &Job, thing: &str) -> String {
    match &job.set {
        Some(s) => format!("{thing} of set {s}"),
        None => thing.to_string(),
    }
}

fn check_config(job: &Job) -> anyhow::Result<Option<Patterns>> {
    let excludes = Patterns::new(&job.patterns).with_context(|| what(job, "excludes"))?;
    if let Some(class) = &job.class {
        strata::backend::check_storage_class(class)
            .with_context(|| what(job, "data storage class"))?;
    }
    Ok(excludes)
}

fn check_sources(job: &Job) -> anyhow::Result<()> {
    for p in &job.paths {
        std::fs::symlink_metadata(p)
            .map_err(|e| strata::Error::io(p, e))
            .with_context(|| what(job, "source path"))?;
    }
    Ok(())
}

/// Runs one backup and prints its summary; returns its report and exit code.
fn one(
    global: &Global,
    repo: &strata::Repository,
    opts: BackupOptions<'_>,
) -> anyhow::Result<(BackupReport, i32)> {
    let bar = Bar::new(global.show_progress(), true, "backup").verbose(global.verbose > 0);
    let report = backup::run(repo, opts, &bar)?;
    bar.finish();
    let s = &report.snapshot.summary;
    if !global.json && !global.quiet {
        println!(
            "files: {} new, {} changed, {} unchanged, {} removed; dirs: {}; {} in all",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.files_removed,
            s.dirs,
            output::bytes(s.total_bytes)
        );
        println!(
            "read {}; new file data {} ({} stored), new metadata {} ({} stored); {:.2}s",
            output::bytes(s.bytes_read),
            output::bytes(s.data_added),
            output::bytes(s.data_stored),
            output::bytes(s.bytes_added.saturating_sub(s.data_added)),
            output::bytes(s.bytes_stored.saturating_sub(s.data_stored)),
            s.duration_secs
        );
        if report.retention_extended > 0 {
            println!(
                "object lock: extended the retention of {} reused file(s)",
                report.retention_extended
            );
        }
        println!("snapshot {} saved", report.snapshot_id.to_hex());
    }
    if !report.warnings.is_empty() {
        eprintln!(
            "warning: {} path(s) named above could not be read (left out) or changed while \
             read (stored as read); the snapshot was saved",
            report.warnings.len()
        );
        return Ok((report, exit::PARTIAL));
    }
    Ok((report, exit::OK))
}

/// A backup run of one set (or of paths), for the metrics and the hooks.
struct Run<'a> {
    label: &'a str,
    hooks: Option<&'a BackupSet>,
    /// Set by SIGINT/SIGTERM: a running hook is told to end too.
    stop: Option<&'a AtomicBool>,
    started: DateTime<FixedOffset>,
    duration_secs: f64,
}

impl Run<'_> {
    /// Tells the metrics file and the set's hook how the run went.
    fn tell(
        &self,
        global: &Global,
        repo: Option<&strata::Repository>,
        code: i32,
        report: Option<&BackupReport>,
        error: Option<&anyhow::Error>,
    ) {
        if global.metrics().is_some() {
            // The set's snapshots: a listing (cached snapshots are not fetched again).
            let line: Option<Vec<(strata::SnapshotId, strata::Snapshot)>> =
                repo.and_then(|r| r.snapshots().list().ok()).map(|all| {
                    let mut line: Vec<_> = all
                        .into_iter()
                        .filter(|(_, s)| metrics::set_label(s) == self.label)
                        .collect();
                    line.sort_by_key(|(_, s)| s.datetime());
                    line
                });
            let snapshots = line.as_ref().map(|l| l.len());
            let anomaly = line.as_ref().map(|l| {
                let refs: Vec<_> = l.iter().collect();
                strata::stats::set_growth(self.label, &refs).anomaly
            });
            let run = metrics::BackupRun {
                set: self.label,
                started: self.started,
                duration_secs: self.duration_secs,
                exit_code: code,
                report,
                snapshots,
                anomaly,
            };
            // The set's objectives beside its times: the alert rules compare the two.
            let objectives = self.hooks.and_then(|set| set.objectives(None, &[]).ok());
            let vanished = repo.and_then(|r| r.snapshots().vanished().ok());
            global.update_metrics(|s| {
                metrics::record_backup(s, &run);
                if let Some(v) = &vanished {
                    metrics::record_vanished(s, v);
                }
                if let Some(o) = &objectives {
                    metrics::record_objectives(s, self.label, o);
                }
            });
        }
        let hook = self.hooks.and_then(|h| h.hook_for(code == exit::OK));
        super::result_known(code);
        if let Some((what, cmd)) = hook {
            let error = error.map(output::chain);
            let env = strata::sets::hook_env(
                self.label,
                code,
                self.duration_secs,
                report,
                error.as_deref(),
            );
            monitor::run_hook(&format!("set {}: {what}", self.label), cmd, &env, self.stop);
        }
    }
}

/// Runs one job's backup, then tells the metrics file and the set's hooks how it went:
/// on-success after exit 0, on-failure after anything else (3 included: files were missed).
fn observed(
    global: &Global,
    repo: &strata::Repository,
    label: &str,
    hooks: Option<&BackupSet>,
    opts: BackupOptions<'_>,
) -> anyhow::Result<(serde_json::Value, i32)> {
    let started = timespec::now();
    let clock = std::time::Instant::now();
    let stop = opts.cancel;
    let result = one(global, repo, opts);
    let run = Run {
        label,
        hooks,
        stop,
        started,
        duration_secs: clock.elapsed().as_secs_f64(),
    };
    match &result {
        Ok((r, c)) => run.tell(global, Some(repo), *c, Some(r), None),
        Err(e) => run.tell(global, Some(repo), exit::code_of_anyhow(e), None, Some(e)),
    }
    let (report, code) = result?;
    Ok((serde_json::to_value(&report)?, code))
}
