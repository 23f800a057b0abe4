//! The metrics file: Prometheus's text format, for node_exporter's textfile collector.
//!
//! Each run (backup, forget, prune, check, drill) updates its own series and keeps every
//! other series the file holds: the file is read, changed and written again under an
//! exclusive lock (`flock` on a `.lock` file beside it), the new text written to a
//! temporary file and renamed over the old one, so the collector never sees half a file.
//! Reading it needs no password: it holds no secrets, only counts, sizes and times.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use chrono::{DateTime, FixedOffset};

use crate::backup::BackupReport;
use crate::check::CheckReport;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::prune::PruneReport;
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;

/// Every metric Strata writes: name, type, help. Series of other names found in an old
/// file are dropped, so a renamed metric does not linger.
#[rustfmt::skip]
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    ("strata_backup_last_attempt_timestamp_seconds", "gauge", "When the set's last backup started."),
    ("strata_backup_last_success_timestamp_seconds", "gauge", "When the set's last backup that read every file ended."),
    ("strata_backup_last_snapshot_timestamp_seconds", "gauge", "The time of the set's last snapshot written (also by a backup that missed files)."),
    ("strata_backup_last_exit_code", "gauge", "Exit code of the set's last backup (0 ok, 3 files missed, else failed)."),
    ("strata_backup_last_duration_seconds", "gauge", "How long the set's last backup took."),
    ("strata_backup_last_files", "gauge", "Files of the set's last backup, by state (new, changed, unchanged, errors)."),
    ("strata_backup_last_read_bytes", "gauge", "Bytes the set's last backup read from changed files."),
    ("strata_backup_last_added_bytes", "gauge", "New data the set's last backup added, before compression."),
    ("strata_backup_last_stored_bytes", "gauge", "What the set's last backup added to the repository, after compression and encryption."),
    ("strata_backup_runs_total", "counter", "Backups of the set run, by result (success, partial, failure)."),
    ("strata_snapshots", "gauge", "Snapshots of the set in the repository."),
    ("strata_snapshots_vanished", "gauge", "Snapshots of the set this host had seen that vanished with no forget recorded (a possible rollback; prune waits)."),
    ("strata_forget_last_timestamp_seconds", "gauge", "When forget last ran."),
    ("strata_forget_last_removed_snapshots", "gauge", "Snapshots the last forget removed."),
    ("strata_prune_last_timestamp_seconds", "gauge", "When prune last ran."),
    ("strata_prune_last_freed_bytes", "gauge", "Bytes the last prune deleted."),
    ("strata_prune_last_duration_seconds", "gauge", "How long the last prune took."),
    ("strata_repository_bytes", "gauge", "Bytes stored, by kind of object and storage class."),
    ("strata_repository_objects", "gauge", "Objects stored, by kind of object and storage class."),
    ("strata_repository_blobs", "gauge", "Blobs in the index, by kind."),
    ("strata_check_last_timestamp_seconds", "gauge", "When check last ran."),
    ("strata_check_last_success_timestamp_seconds", "gauge", "When check last found no problem."),
    ("strata_check_last_errors", "gauge", "Problems the last check found."),
    ("strata_check_last_read_bytes", "gauge", "Bytes of packs the last check read and verified."),
    ("strata_drill_last_timestamp_seconds", "gauge", "When the set's last restore drill ran."),
    ("strata_drill_last_bytes", "gauge", "Bytes the set's last drill restored and verified."),
    ("strata_drill_last_throughput_bytes_per_second", "gauge", "Restore-and-verify speed of the set's last drill."),
    ("strata_drill_last_projected_restore_seconds", "gauge", "Restore time of the set's whole newest snapshot at the last drill's speed (RTO estimate)."),
    ("strata_drill_last_errors", "gauge", "Files the set's last drill could not restore or verify."),
    ("strata_drill_last_passed", "gauge", "1 when the set's last drill restored and verified every file and its verify command exited 0, else 0."),
    ("strata_drill_last_success_timestamp_seconds", "gauge", "When the set's last passing drill ran."),
    ("strata_drill_last_verify_exit_code", "gauge", "Exit code of the last drill's verify command (-1: killed or not started)."),
    ("strata_drill_last_verify_duration_seconds", "gauge", "How long the last drill's verify command ran."),
    ("strata_objective_rpo_seconds", "gauge", "The set's recovery point objective: the oldest its newest snapshot may be."),
    ("strata_objective_rto_seconds", "gauge", "The set's recovery time objective: the longest a bare-machine restore may take."),
    ("strata_objective_drill_interval_seconds", "gauge", "The longest the set may go without a passing drill."),
    ("strata_objective_met", "gauge", "1 when the set's objective (rpo, rto, drill) held when last judged (status, drill); 0 when it did not or could not be judged."),
    ("strata_rto_projected_seconds", "gauge", "Projected bare-machine restore time of the set: restore and index at the last passing drill's speed, thaw, verify."),
    ("strata_metrics_written_timestamp_seconds", "gauge", "When a Strata run last wrote this file (a stale value: the host stopped reporting)."),
    ("strata_backup_size_anomaly", "gauge", "1 when the set's newest snapshot added far more than its recent range (stats), else 0."),
    ("strata_repository_monthly_cost", "gauge", "Estimated monthly cost from the config's prices, by item: a storage class, or PUT or GET requests."),
    ("strata_verification_recent_ratio", "gauge", "Share of the packs verified byte by byte in the last 30 days."),
    ("strata_verification_oldest_age_seconds", "gauge", "Age of the oldest last verification among the packs ever verified."),
    ("strata_verification_unverified_packs", "gauge", "Packs never verified byte by byte."),
    ("strata_verification_damaged_packs", "gauge", "Packs found damaged when last read (until repaired)."),
];

/// A series: its metric name and labels (sorted by name).
pub type Series = (String, Vec<(String, String)>);

/// The samples of a metrics file, by series.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Samples(BTreeMap<Series, f64>);

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    (name.to_string(), labels)
}

impl Samples {
    /// Sets a gauge.
    pub fn set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(CATALOGUE.iter().any(|(n, ..)| *n == name), "{name}");
        self.0.insert(series(name, labels), value);
    }

    /// Adds to a counter (from 0 when the file had none).
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], delta: f64) {
        debug_assert!(CATALOGUE.iter().any(|(n, ..)| *n == name), "{name}");
        *self.0.entry(series(name, labels)).or_insert(0.0) += delta;
    }

    /// A sample's value.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&series(name, labels)).copied()
    }

    /// Removes one series.
    pub fn remove(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.remove(&series(name, labels));
    }

    /// Removes every series of `name` (before setting those that exist now).
    pub fn clear(&mut self, name: &str) {
        self.0.retain(|(n, _), _| n != name);
    }

    /// Removes every series of a set that `known` does not know (one the config no longer
    /// has and no snapshot names): its alerts would otherwise fire forever.
    pub fn forget_sets(&mut self, known: impl Fn(&str) -> bool) {
        self.0.retain(|(_, labels), _| {
            labels
                .iter()
                .find(|(k, _)| k == "set")
                .is_none_or(|(_, v)| known(v))
        });
    }

    /// Takes every metric `other` has, replacing all series of that metric here.
    pub fn merge(&mut self, other: Samples) {
        for (name, _) in other.0.keys() {
            let name = name.clone();
            self.clear(&name);
        }
        self.0.extend(other.0);
    }

    /// Reads the samples of a file in the text format; series of unknown metrics and lines
    /// that are not samples are skipped.
    pub fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((s, v)) = parse_sample(line) {
                if CATALOGUE.iter().any(|(n, ..)| *n == s.0) {
                    out.insert(s, v);
                }
            }
        }
        Samples(out)
    }

    /// The text format: each metric's HELP and TYPE, then its series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in CATALOGUE {
            let mut first = true;
            for ((n, labels), value) in &self.0 {
                if n != name {
                    continue;
                }
                if first {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                    first = false;
                }
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", number(*value));
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<(Series, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find("=\"")?;
            let key = rest[..eq].to_string();
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            rest = &rest[eq + 2 + end + 1..];
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    labels.sort();
    Some(((name.to_string(), labels), value))
}

/// A metrics file on disk.
#[derive(Clone, Debug)]
pub struct MetricsFile {
    path: PathBuf,
}

impl MetricsFile {
    /// The file at `path` (created on first update; its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MetricsFile { path: path.into() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The samples the file holds now (none if it does not exist).
    pub fn read(&self) -> Result<Samples> {
        let (dir, name) = self.dir_and_name()?;
        match open_dir(&dir) {
            Ok(dir) => self.read_in(&dir, &name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Samples::default()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// The samples of the file `name` in `dir`.
    fn read_in(&self, dir: &OwnedFd, name: &str) -> Result<Samples> {
        let text = open_plain(dir, name, OFlags::RDONLY).and_then(|f| {
            // Another user's directory may hold a huge file under the name: a metrics file
            // is a few KB, and past this it is not ours to read.
            if f.metadata()?.len() > METRICS_FILE_MAX {
                return Err(std::io::Error::other(format!(
                    "larger than a metrics file can be ({METRICS_FILE_MAX} bytes)"
                )));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(&f, METRICS_FILE_MAX), &mut text)
                .map(|_| text)
        });
        match text {
            Ok(text) => Ok(Samples::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Samples::default()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// The samples of `name` in `dir` when it is this user's own regular file; none when
    /// it is another's or no regular file, which the rename then replaces: in a shared
    /// (1777) directory another user could plant series (a last success in the future, no
    /// errors) that would silence the alerts, or a FIFO that would stop every update.
    fn read_own(&self, dir: &OwnedFd, name: &str) -> Result<Samples> {
        let stat = match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Ok(Samples::default()),
            Err(e) => return Err(Error::io(&self.path, e.into())),
        };
        let regular = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
        if !regular || stat.st_uid != nix::unistd::geteuid().as_raw() {
            return Ok(Samples::default());
        }
        self.read_in(dir, name)
    }

    /// The file's directory and its name in it.
    fn dir_and_name(&self) -> Result<(PathBuf, String)> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = (self.path.file_name())
            .ok_or_else(|| Error::io(&self.path, std::io::Error::other("not a file name")))?
            .to_string_lossy()
            .into_owned();
        Ok((dir, name))
    }

    /// Changes the file's samples with `f`, atomically and serialized with other runs.
    /// The lock, the temporary file and the rename all go through one descriptor of the
    /// directory, never through a link: whoever owns the directory, or its parent
    /// (node_exporter's), may plant links in it or swap it for one meanwhile.
    pub fn update(&self, f: impl FnOnce(&mut Samples)) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        let (dir, name) = self.dir_and_name()?;
        let dir = open_dir(&dir).map_err(io)?;
        // A dot file: the collector only reads `*.prom`.
        let lock_name = format!(".{name}.lock");
        let _lock = take_lock(&dir, &lock_name, LOCK_WAIT)
            .map_err(|e| Error::io(self.path.with_file_name(&lock_name), e))?;
        let mut samples = self.read_own(&dir, &name)?;
        f(&mut samples);
        samples.set(
            "strata_metrics_written_timestamp_seconds",
            &[],
            seconds(crate::timespec::now()),
        );
        let (tmp, mut file) = temp_file_in(&dir, &name).map_err(io)?;
        let written = (|| {
            file.write_all(samples.render().as_bytes())?;
            file.sync_all()?;
            // Readable by the collector; nothing in it is secret.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            rustix::fs::renameat(&dir, &tmp, &dir, &name).map_err(std::io::Error::from)
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &tmp, rustix::fs::AtFlags::empty());
        }
        written.map_err(io)
    }
}

/// A metrics file larger than this is not read (nor replaced).
const METRICS_FILE_MAX: u64 = 16 << 20;

/// The longest a run waits for another's lock on the metrics file: runs hold it for
/// milliseconds, so a longer hold is a hung run or another user's doing (the directory may
/// be theirs), and the run goes on without its metrics rather than hang.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the lock file `name` in `dir` exclusively, waiting `wait` at most, and returns it
/// (the lock lasts as long as it is open). Only this user's own file will do: in a shared
/// (1777) directory another user could create it first and hold it for as long as she
/// likes, and no run would write its metrics.
fn take_lock(
    dir: &OwnedFd,
    name: &str,
    wait: std::time::Duration,
) -> std::io::Result<std::fs::File> {
    // Another run may replace an unusable file between this run's open and its lock.
    for _ in 0..3 {
        let lock = own_lock_file(dir, name)?;
        lock_within(&lock, wait)?;
        let held = rustix::fs::fstat(&lock)?;
        let now = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        if now.is_ok_and(|n| (n.st_dev, n.st_ino) == (held.st_dev, held.st_ino)) {
            return Ok(lock);
        }
    }
    Err(std::io::Error::other(
        "replaced by another process again and again: the metrics were not written",
    ))
}

/// The lock file `name` in `dir` as this user's own regular file of mode 0600 with one
/// link: made so if absent, made 0600 if this user's of another mode (an older version's
/// 0644), and replaced if it is another user's (or has another name too) and this user may
/// remove it (root, the directory's owner); refused, naming its owner, if not.
fn own_lock_file(dir: &OwnedFd, name: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let only_mine = || std::fs::Permissions::from_mode(0o600);
    for _ in 0..3 {
        match open_plain(dir, name, OFlags::RDONLY) {
            Ok(f) => {
                let m = f.metadata()?;
                if m.uid() == me && m.nlink() == 1 {
                    if m.mode() & 0o7777 != 0o600 {
                        f.set_permissions(only_mine())?;
                    }
                    return Ok(f);
                }
                remove_unusable(dir, name, m.uid())?;
            }
            // Another user's that this user cannot even open.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
                remove_unusable(dir, name, st.st_uid)?;
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                // A symlink, FIFO or directory planted under the name would silence every
                // run's metrics (hostile pass 5): removed, or a directory moved aside.
                let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
                match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                    rustix::fs::FileType::RegularFile => return Err(e),
                    rustix::fs::FileType::Directory => move_aside(dir, name)?,
                    _ => remove_unusable(dir, name, st.st_uid)?,
                }
            }
            Err(_) => {}
        }
        let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        match rustix::fs::openat(
            dir,
            name,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                let f = std::fs::File::from(fd);
                // Whatever the umask.
                f.set_permissions(only_mine())?;
                return Ok(f);
            }
            // Another run made it meanwhile: judged again.
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(
        "replaced by another process again and again: the metrics were not written",
    ))
}

/// Removes the lock file `name` (owned by `uid`) that this user may not use; where it may
/// not remove it either (a sticky directory, another user's file), says whose it is.
fn remove_unusable(dir: &OwnedFd, name: &str, uid: u32) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS) => {
            let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(
                    || format!("uid {uid}"),
                    |u| format!("{} (uid {uid})", u.name),
                );
            Err(std::io::Error::other(format!(
                "owned by {owner}, not by this user, who may not remove it: the metrics were \
                 not written (remove it, or give this user a metrics directory of its own)"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Moves the directory `name` (planted where a lock file goes) aside, to a name of its
/// own beside it, where only its planter's files are.
fn move_aside(dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    use rand::Rng;
    let aside = format!("{name}.not-a-lock-{:016x}", rand::thread_rng().gen::<u64>());
    match rustix::fs::renameat_with(dir, name, dir, &aside, rustix::fs::RenameFlags::NOREPLACE) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(std::io::Error::other(format!(
            "a directory, not a lock file, and it cannot be moved aside ({e}): the metrics \
             were not written (remove it)"
        ))),
    }
}

/// Takes `lock` exclusively, trying for `wait` at most.
fn lock_within(lock: &std::fs::File, wait: std::time::Duration) -> std::io::Result<()> {
    let start = std::time::Instant::now();
    loop {
        match rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(std::io::Error::other(format!(
                    "held by another process for {} s: the metrics were not written",
                    wait.as_secs()
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The directory at `path`, opened for the `*at` calls: a symlink on the way only if this
/// user or root made it (hostile pass 5: another user's link in a shared directory above
/// made root replace a file of that name where it pointed).
fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    crate::restore::open_trusted_existing(path)
}

/// Opens `name` in `dir` with `flags`, refusing what is not a regular file of its own:
/// the metrics directory may belong to another user (node_exporter's), who could plant a
/// symlink (root would create or read what it names) or a FIFO (the run would hang).
fn open_plain(dir: &OwnedFd, name: &str, flags: OFlags) -> std::io::Result<std::fs::File> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o644);
    let f = std::fs::File::from(rustix::fs::openat(dir, name, flags, mode)?);
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// A new temporary file beside `name` in `dir`, made with O_EXCL and never through a
/// link: its name and the open file.
fn temp_file_in(dir: &OwnedFd, name: &str) -> std::io::Result<(String, std::fs::File)> {
    use rand::Rng;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    loop {
        let tmp = format!(".{name}.{:016x}", rand::thread_rng().gen::<u64>());
        match rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((tmp, std::fs::File::from(fd))),
            // Taken (planted, or another run's): another name.
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Seconds since the epoch of a time, as the timestamps are written.
pub fn seconds(t: DateTime<FixedOffset>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0
}

/// One backup run, as the metrics record it.
pub struct BackupRun<'a> {
    /// The set, or `host:<host>` for a backup outside the config's sets.
    pub set: &'a str,
    /// When it started.
    pub started: DateTime<FixedOffset>,
    /// How long it took.
    pub duration_secs: f64,
    /// Its exit code (0 ok, 3 files missed, others failed).
    pub exit_code: i32,
    /// What it did, when it wrote a snapshot.
    pub report: Option<&'a BackupReport>,
    /// The set's snapshots after it, when known.
    pub snapshots: Option<usize>,
    /// Whether its newest snapshot added far more than the recent ones
    /// ([`crate::stats::SetGrowth::anomaly`]), when known.
    pub anomaly: Option<bool>,
}

/// A backup run's series: the set's last attempt, outcome and sizes, and its run counters.
pub fn record_backup(s: &mut Samples, run: &BackupRun<'_>) {
    let set = [("set", run.set)];
    s.set(
        "strata_backup_last_attempt_timestamp_seconds",
        &set,
        seconds(run.started),
    );
    s.set(
        "strata_backup_last_exit_code",
        &set,
        f64::from(run.exit_code),
    );
    s.set(
        "strata_backup_last_duration_seconds",
        &set,
        run.duration_secs,
    );
    let result = match (run.report, run.exit_code) {
        (Some(_), 0) => "success",
        (Some(_), _) => "partial",
        (None, _) => "failure",
    };
    // Every result's counter exists from the first run, so that rate() sees each from 0.
    for r in ["success", "partial", "failure"] {
        let delta = if r == result { 1.0 } else { 0.0 };
        s.add(
            "strata_backup_runs_total",
            &[("set", run.set), ("result", r)],
            delta,
        );
    }
    if let Some(report) = run.report {
        let sum = &report.snapshot.summary;
        if let Some(t) = report.snapshot.datetime() {
            s.set(
                "strata_backup_last_snapshot_timestamp_seconds",
                &set,
                seconds(t),
            );
        }
        if run.exit_code == 0 {
            let ended = seconds(run.started) + run.duration_secs;
            s.set("strata_backup_last_success_timestamp_seconds", &set, ended);
        }
        for (state, n) in [
            ("new", sum.files_new),
            ("changed", sum.files_changed),
            ("unchanged", sum.files_unchanged),
            ("errors", report.warnings.len() as u64),
        ] {
            s.set(
                "strata_backup_last_files",
                &[("set", run.set), ("state", state)],
                n as f64,
            );
        }
        s.set("strata_backup_last_read_bytes", &set, sum.bytes_read as f64);
        s.set(
            "strata_backup_last_added_bytes",
            &set,
            sum.bytes_added as f64,
        );
        s.set(
            "strata_backup_last_stored_bytes",
            &set,
            sum.bytes_stored as f64,
        );
    }
    if let Some(n) = run.snapshots {
        s.set("strata_snapshots", &set, n as f64);
    }
    if let Some(a) = run.anomaly {
        s.set(
            "strata_backup_size_anomaly",
            &set,
            if a { 1.0 } else { 0.0 },
        );
    }
}

/// The snapshot count of every set (snapshots outside sets count under `host:<host>`);
/// sets with none left disappear.
pub fn record_snapshot_counts(s: &mut Samples, snapshots: &[(SnapshotId, Snapshot)]) {
    s.clear("strata_snapshots");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, snap) in snapshots {
        *counts.entry(set_label(snap)).or_default() += 1;
    }
    for (set, n) in counts {
        s.set("strata_snapshots", &[("set", &set)], n as f64);
    }
}

/// The rollback alarms standing (format-spec §16.3), counted per set; sets without one
/// have no sample.
pub fn record_vanished(s: &mut Samples, vanished: &[crate::repo::rollback::Vanished]) {
    s.clear("strata_snapshots_vanished");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in vanished {
        *counts.entry(&v.set).or_default() += 1;
    }
    for (set, n) in counts {
        s.set("strata_snapshots_vanished", &[("set", set)], n as f64);
    }
}

/// The label a snapshot's lineage has in the metrics: its set, else `host:<host>`.
pub fn set_label(snap: &Snapshot) -> String {
    snap.lineage().label()
}

/// Objects and bytes by kind and storage class.
pub fn record_usage(s: &mut Samples, usage: &[crate::stats::ClassUsage]) {
    s.clear("strata_repository_objects");
    s.clear("strata_repository_bytes");
    for c in usage {
        let labels = [
            ("kind", c.kind),
            ("storage_class", c.storage_class.as_str()),
        ];
        s.set("strata_repository_objects", &labels, c.objects as f64);
        s.set("strata_repository_bytes", &labels, c.bytes as f64);
    }
}

/// A forget's series.
pub fn record_forget(s: &mut Samples, removed: usize, left: &[(SnapshotId, Snapshot)]) {
    s.set(
        "strata_forget_last_timestamp_seconds",
        &[],
        seconds(crate::timespec::now()),
    );
    s.set("strata_forget_last_removed_snapshots", &[], removed as f64);
    record_snapshot_counts(s, left);
}

/// A prune's series.
pub fn record_prune(s: &mut Samples, report: &PruneReport) {
    s.set(
        "strata_prune_last_timestamp_seconds",
        &[],
        seconds(crate::timespec::now()),
    );
    s.set(
        "strata_prune_last_freed_bytes",
        &[],
        report.bytes_freed as f64,
    );
    s.set(
        "strata_prune_last_duration_seconds",
        &[],
        report.duration_secs,
    );
}

/// A check's series.
pub fn record_check(s: &mut Samples, report: &CheckReport) {
    let now = seconds(crate::timespec::now());
    s.set("strata_check_last_timestamp_seconds", &[], now);
    s.set(
        "strata_check_last_errors",
        &[],
        report.problems.len() as f64,
    );
    s.set(
        "strata_check_last_read_bytes",
        &[],
        report.bytes_read as f64,
    );
    if report.problems.is_empty() {
        s.set("strata_check_last_success_timestamp_seconds", &[], now);
    }
    if let Some(v) = &report.verification {
        record_coverage(s, v);
    }
}

/// How much verification covers.
pub fn record_coverage(s: &mut Samples, v: &crate::audit::Coverage) {
    s.set("strata_verification_recent_ratio", &[], v.fraction_recent());
    s.set(
        "strata_verification_unverified_packs",
        &[],
        v.never_verified as f64,
    );
    s.set(
        "strata_verification_damaged_packs",
        &[],
        v.damaged.len() as f64,
    );
    match v.oldest_verification_secs {
        Some(age) => s.set("strata_verification_oldest_age_seconds", &[], age),
        None => s.clear("strata_verification_oldest_age_seconds"),
    }
}

/// What the repository holds: objects and bytes by kind and storage class (one listing
/// per kind), and blobs by kind (from the index cache).
pub fn record_repository(s: &mut Samples, repo: &Repository) -> Result<()> {
    record_usage(s, &crate::stats::usage_by_class(repo)?);
    s.clear("strata_repository_blobs");
    for (kind, n) in repo.blob_index().blob_counts()? {
        let kind = match kind {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        };
        s.set("strata_repository_blobs", &[("kind", kind)], n as f64);
    }
    Ok(())
}

/// A drill of `set` that failed before it restored anything: it passed nothing and
/// measured nothing (the last passing drill's time stays).
pub fn record_drill_error(s: &mut Samples, set: &str, when: DateTime<FixedOffset>) {
    let set = [("set", set)];
    s.set("strata_drill_last_timestamp_seconds", &set, seconds(when));
    s.set("strata_drill_last_passed", &set, 0.0);
    s.set("strata_drill_last_errors", &set, 1.0);
    for name in [
        "strata_drill_last_bytes",
        "strata_drill_last_verify_exit_code",
        "strata_drill_last_verify_duration_seconds",
        "strata_drill_last_throughput_bytes_per_second",
        "strata_drill_last_projected_restore_seconds",
    ] {
        s.remove(name, &set);
    }
}

/// A set's last drill: when, what it restored, whether it passed, its verify command.
pub fn record_drill(s: &mut Samples, set: &str, d: &crate::audit::Drill) {
    let set = [("set", set)];
    let when = DateTime::parse_from_rfc3339(&d.time)
        .map(seconds)
        .unwrap_or_default();
    s.set("strata_drill_last_timestamp_seconds", &set, when);
    s.set("strata_drill_last_bytes", &set, d.bytes as f64);
    s.set("strata_drill_last_errors", &set, d.errors as f64);
    s.set(
        "strata_drill_last_passed",
        &set,
        f64::from(u8::from(d.passed())),
    );
    if d.passed() {
        s.set("strata_drill_last_success_timestamp_seconds", &set, when);
    }
    match &d.verify {
        Some(v) => {
            let code = v.exit_code.map_or(-1.0, f64::from);
            s.set("strata_drill_last_verify_exit_code", &set, code);
            s.set(
                "strata_drill_last_verify_duration_seconds",
                &set,
                v.duration_secs,
            );
        }
        None => {
            s.remove("strata_drill_last_verify_exit_code", &set);
            s.remove("strata_drill_last_verify_duration_seconds", &set);
        }
    }
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

/// A set's objectives (what backups write: the alert rules compare ages with them).
pub fn record_objectives(s: &mut Samples, set: &str, o: &crate::objectives::Objectives) {
    let label = [("set", set)];
    for (name, value) in [
        ("strata_objective_rpo_seconds", o.rpo),
        ("strata_objective_rto_seconds", o.rto),
        ("strata_objective_drill_interval_seconds", o.drill_interval),
    ] {
        match value {
            Some(d) => s.set(name, &label, d.num_seconds() as f64),
            None => s.remove(name, &label),
        }
    }
}

/// A set's objectives judged (by `status`, `drill`): whether each holds and the projected
/// restore time. An objective the set no longer has loses its series.
pub fn record_assessment(s: &mut Samples, set: &str, a: &crate::objectives::Assessment) {
    for (objective, verdict) in [("rpo", &a.rpo), ("rto", &a.rto), ("drill", &a.drill)] {
        let labels = [("set", set), ("objective", objective)];
        match verdict {
            Some(v) => s.set(
                "strata_objective_met",
                &labels,
                f64::from(u8::from(v.holds())),
            ),
            None => s.remove("strata_objective_met", &labels),
        }
    }
    match &a.projection {
        Some(p) => s.set(
            "strata_rto_projected_seconds",
            &[("set", set)],
            p.total_secs(),
        ),
        None => s.remove("strata_rto_projected_seconds", &[("set", set)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user who owns the metrics directory cannot make a run create, read or hang on
    /// another file through the lock or the file itself.
    #[test]
    fn planted_symlinks_and_fifos_are_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        let file = MetricsFile::new(dir.path().join("m.prom"));
        // Hostile pass 5: each planted entry silenced every run's metrics. Now a symlink
        // or FIFO is removed and a directory moved aside, and the run writes its metrics.
        let lock = dir.path().join(".m.prom.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        file.update(|_| {}).unwrap();
        assert!(!victim.exists(), "the lock's target was created");
        assert!(lock.symlink_metadata().unwrap().is_file());
        std::fs::remove_file(&lock).unwrap();
        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let t = std::time::Instant::now();
        file.update(|_| {}).unwrap();
        assert!(t.elapsed().as_secs() < 5, "hung on a FIFO");
        std::fs::remove_file(&lock).unwrap();
        std::fs::create_dir_all(lock.join("full")).unwrap();
        file.update(|_| {}).unwrap();
        assert!(lock.symlink_metadata().unwrap().is_file());
        let aside = std::fs::read_dir(dir.path()).unwrap().flatten();
        let aside: Vec<_> = (aside.map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with(".m.prom.lock.not-a-lock-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        std::fs::remove_file(&lock).unwrap();
        std::fs::remove_file(dir.path().join("m.prom")).unwrap();
        std::fs::write(&victim, "strata_check_last_errors 7\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("m.prom")).unwrap();
        assert!(file.read().is_err(), "read through a symlink");
        std::fs::remove_file(dir.path().join("m.prom")).unwrap();
        file.update(|s| s.set("strata_check_last_errors", &[], 0.0))
            .unwrap();
        assert_eq!(
            file.read().unwrap().get("strata_check_last_errors", &[]),
            Some(0.0)
        );
    }
    /// Hostile pass 5: another user's symlink as the metrics directory (planted in a 1777
    /// directory above it) made root replace a file of that name where it pointed.
    #[test]
    fn another_users_symlink_above_the_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("m.prom"), "mine\n").unwrap();
        let link = dir.path().join("metrics");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        // Another user's (uid 65534) link: the suite runs as root, as CI does.
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let file = MetricsFile::new(link.join("m.prom"));
        let err = file.update(|s| s.set("strata_check_last_errors", &[], 0.0));
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("symlink owned by uid 65534"));
        assert_eq!(std::fs::read(victim.join("m.prom")).unwrap(), b"mine\n");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        // This user's own link is followed.
        std::os::unix::fs::lchown(&link, Some(nix::unistd::geteuid().as_raw()), None).unwrap();
        file.update(|s| s.set("strata_check_last_errors", &[], 0.0))
            .unwrap();
    }

    /// Hostile pass 3: another user's `m.prom` in a shared directory was merged into this
    /// user's (forged series silence alerts), and a symlink or FIFO under the name stopped
    /// every update. Each is replaced, and nothing of it kept.
    #[test]
    fn another_users_file_or_a_planted_entry_is_replaced_not_merged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.path().join("m.prom");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "strata_check_last_errors 7\n").unwrap();
        let file = MetricsFile::new(&path);
        let forged = "strata_backup_last_success_timestamp_seconds{set=\"c\"} 9999999999\n";
        let plant: [&dyn Fn(); 3] = [
            &|| {
                std::fs::write(&path, forged).unwrap();
                // Another user's file (uid 65534), as in a 1777 textfile directory.
                nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            },
            &|| std::os::unix::fs::symlink(&victim, &path).unwrap(),
            &|| nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap(),
        ];
        for (i, plant) in plant.iter().enumerate() {
            let _ = std::fs::remove_file(&path);
            plant();
            file.update(|s| s.set("strata_check_last_errors", &[], 0.0))
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("9999999999"), "case {i}: merged: {text}");
            assert!(
                text.contains("strata_check_last_errors 0"),
                "case {i}: {text}"
            );
            assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
            assert_eq!(
                std::fs::read_to_string(&victim).unwrap(),
                "strata_check_last_errors 7\n"
            );
        }
        // This user's own file is kept and updated.
        file.update(|s| s.set("strata_check_last_read_bytes", &[], 1.0))
            .unwrap();
        let own = std::fs::read_to_string(&path).unwrap();
        assert!(own.contains("strata_check_last_errors 0"), "{own}");
    }

    /// The textfile directory's path swapped for a link while a run holds the lock (its
    /// parent is another user's, node_exporter's home): the new file still lands in the
    /// directory the lock was taken in, and nothing is created where the link points.
    #[test]
    fn a_directory_swapped_for_a_link_mid_update_takes_nothing_elsewhere() {
        let base = tempfile::tempdir().unwrap();
        let (textfile, moved, victim) = (
            base.path().join("textfile"),
            base.path().join("moved"),
            base.path().join("victim"),
        );
        std::fs::create_dir(&textfile).unwrap();
        std::fs::create_dir(&victim).unwrap();
        let file = MetricsFile::new(textfile.join("m.prom"));
        file.update(|s| {
            std::fs::rename(&textfile, &moved).unwrap();
            std::os::unix::fs::symlink(&victim, &textfile).unwrap();
            s.set("strata_check_last_errors", &[], 1.0);
        })
        .unwrap();
        let left: Vec<_> = std::fs::read_dir(&victim).unwrap().collect();
        assert!(left.is_empty(), "written where the link points: {left:?}");
        let text = std::fs::read_to_string(moved.join("m.prom")).unwrap();
        assert!(text.contains("strata_check_last_errors 1"), "{text}");
    }

    /// The lock is used only as this user's own 0600 file with one link: an own one of
    /// another mode (an older version's 0644) is made 0600, and one with a second link is
    /// replaced (changing its mode would change the other name's file).
    #[test]
    fn the_lock_is_this_users_own_0600_file() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".m.prom.lock");
        let file = MetricsFile::new(dir.path().join("m.prom"));
        std::fs::write(&lock, "").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ino = std::fs::metadata(&lock).unwrap().ino();
        file.update(|_| {}).unwrap();
        let m = std::fs::symlink_metadata(&lock).unwrap();
        assert_eq!((m.ino(), m.mode() & 0o7777), (ino, 0o600));
        let other = dir.path().join("other");
        std::fs::write(&other, "").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(&lock).unwrap();
        std::fs::hard_link(&other, &lock).unwrap();
        file.update(|_| {}).unwrap();
        assert_eq!(std::fs::metadata(&other).unwrap().mode() & 0o7777, 0o644);
        let m = std::fs::symlink_metadata(&lock).unwrap();
        assert_eq!((m.nlink(), m.mode() & 0o7777), (1, 0o600));
    }

    use proptest::prelude::*;

    #[test]
    fn a_held_lock_or_a_huge_file_costs_a_bounded_wait_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join(".m.prom.lock");
        let holder = std::fs::File::create(&lock_path).unwrap();
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let other = std::fs::File::open(&lock_path).unwrap();
        let started = std::time::Instant::now();
        let wait = std::time::Duration::from_millis(300);
        let err = lock_within(&other, wait).unwrap_err();
        assert!(err.to_string().contains("held by another process"), "{err}");
        assert!(started.elapsed() >= wait);
        drop(holder);
        lock_within(&other, wait).unwrap();
        drop(other);
        // A sparse file past the bound under the metrics file's name is not read.
        let path = dir.path().join("m.prom");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(METRICS_FILE_MAX + 1)
            .unwrap();
        let err = MetricsFile::new(path.clone()).update(|_| {}).unwrap_err();
        assert!(
            err.to_string().contains("larger than a metrics file"),
            "{err}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            METRICS_FILE_MAX + 1
        );
    }

    #[test]
    fn updates_keep_the_other_series_and_counters_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = MetricsFile::new(dir.path().join("strata.prom"));
        for set in ["critical", "metrics", "critical"] {
            file.update(|s| {
                s.set("strata_backup_last_exit_code", &[("set", set)], 0.0);
                s.add(
                    "strata_backup_runs_total",
                    &[("set", set), ("result", "success")],
                    1.0,
                );
            })
            .unwrap();
        }
        let s = file.read().unwrap();
        let runs = |set| {
            s.get(
                "strata_backup_runs_total",
                &[("result", "success"), ("set", set)],
            )
        };
        assert_eq!(runs("critical"), Some(2.0));
        assert_eq!(runs("metrics"), Some(1.0));
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(
            text.matches("# TYPE strata_backup_runs_total counter")
                .count(),
            1
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Nothing else left beside it but the lock.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn unknown_metrics_and_junk_lines_are_dropped() {
        let s = Samples::parse(
            "# HELP x y\nold_metric 3\nstrata_snapshots{set=\"a\"} 4\nnot a sample\n\
             strata_snapshots{set=\"b\"} 5 1700000000000\n",
        );
        assert_eq!(s.get("strata_snapshots", &[("set", "a")]), Some(4.0));
        assert_eq!(s.get("strata_snapshots", &[("set", "b")]), Some(5.0));
        assert!(!s.render().contains("old_metric"));
    }

    proptest! {
        #[test]
        fn render_then_parse_gives_the_same_samples(
            entries in proptest::collection::vec(
                (0..CATALOGUE.len(), "[a-zé \"\\\\\n{}=,.-]{0,12}", "[a-z_]{1,6}", -1e12f64..1e12),
                0..20,
            )
        ) {
            let mut s = Samples::default();
            for (i, value, key, v) in entries {
                let labels = [("set", value.as_str()), (key.as_str(), "x")];
                let labels = if key == "set" { &labels[..1] } else { &labels[..] };
                s.set(CATALOGUE[i].0, labels, v);
            }
            prop_assert_eq!(Samples::parse(&s.render()), s);
        }
    }
}
