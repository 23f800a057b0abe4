//! PostgreSQL base backups and point-in-time restores (format-spec §14), on top of the WAL
//! archive of [`crate::wal`].
//!
//! A base backup is an ordinary snapshot of the data directory, taken between
//! `pg_backup_start` and `pg_backup_stop` through one `psql` session, so successive base
//! backups deduplicate against each other like any hourly backup. The snapshot records what
//! `pg_backup_stop` answered (the backup label, the WAL positions and timeline): a restore
//! writes the label back and lets PostgreSQL replay the archived WAL to the instant asked.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use strata::backup::{self, BackupOptions, BackupReport, Source};
use strata::{Patterns, Progress, Repository, Snapshot, SnapshotId};

pub use check::WalCheck;
pub use error::{Error, Result};

mod check;
pub mod delta;
mod error;
mod timeline;
pub mod wal;
mod waldump;

pub use timeline::{divergence, Line};

/// What a snapshot taken by `pg basebackup` records (format-spec §14.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseBackup {
    /// The cluster's name in the config (`[postgres.NAME]`).
    pub cluster: String,
    /// The server's data directory (the snapshot's one path).
    pub data_directory: String,
    /// `server_version_num`.
    pub server_version: u32,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// WAL segment size in bytes.
    pub segment_size: u64,
    /// Where replay starts (`pg_backup_start`), as PostgreSQL writes an LSN (`0/2000028`).
    pub start_lsn: String,
    /// Where the backup becomes consistent (`pg_backup_stop`).
    pub stop_lsn: String,
    /// The WAL file holding `start_lsn`.
    pub start_wal: String,
    /// The WAL file holding the last byte before `stop_lsn`.
    pub stop_wal: String,
    /// When `pg_backup_stop` returned (RFC 3339): no earlier instant can be restored
    /// from this backup.
    pub stop_time: String,
    /// The `backup_label` file `pg_backup_stop` returned, written back by a restore.
    pub backup_label: String,
    /// The `tablespace_map` file, when there are tablespaces (never, so far: refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_map: Option<String>,
}

impl BaseBackup {
    /// `stop_time`, parsed.
    pub fn consistent_at(&self) -> Option<DateTime<FixedOffset>> {
        DateTime::parse_from_rfc3339(&self.stop_time).ok()
    }
}

/// A cluster as the config describes it.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// `[postgres.NAME]`.
    pub name: String,
    /// The data directory (it must be the one the connection reaches).
    pub data_directory: PathBuf,
    /// libpq conninfo for psql (`host=/run/postgresql port=5432 user=postgres`).
    pub connection: String,
}

impl Cluster {
    /// The backup set its base backups belong to.
    pub fn set(&self) -> String {
        set_of(&self.name)
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Postgres {
            cluster: self.name.clone(),
            reason: reason.into(),
        }
    }
}

/// The backup set of cluster `name`'s base backups.
pub fn set_of(name: &str) -> String {
    format!("postgres.{name}")
}

/// A log sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// PostgreSQL's `X/Y` form.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A WAL segment: timeline and segment number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Timeline.
    pub tli: u32,
    /// Segment number (LSN / segment size).
    pub no: u64,
}

impl Segment {
    /// The file name PostgreSQL gives it.
    pub fn name(&self, segment_size: u64) -> String {
        let per_id = 0x1_0000_0000 / segment_size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.tli,
            self.no / per_id,
            self.no % per_id
        )
    }

    /// The segment a file name (24 hex digits) stands for.
    pub fn parse(name: &str, segment_size: u64) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[..8], 16).ok()?;
        let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
        let lo = u64::from_str_radix(&name[16..], 16).ok()?;
        Some(Segment {
            tli,
            no: hi * (0x1_0000_0000 / segment_size) + lo,
        })
    }
}

/// One psql session: a non-exclusive base backup lasts as long as the session that
/// started it, so start and stop must go through the same connection.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: tempfile::NamedTempFile,
    cluster: String,
}

/// Separates fields in psql's unaligned output: no value we ask for contains it.
const FIELD_SEP: &str = "\x1f";
const DONE: &str = "strata:done";

impl Session {
    fn connect(cluster: &Cluster) -> Result<Session> {
        let stderr = tempfile::NamedTempFile::new().map_err(|e| Error::io("temporary file", e))?;
        let err_file = stderr.reopen().map_err(|e| Error::io(stderr.path(), e))?;
        // psql needs libpq's own variables (PGPASSWORD, PGSSLMODE), not the
        // repository's password nor the cloud's keys.
        let mut child = strata::hooks::without_secrets(&mut Command::new("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                FIELD_SEP,
            ])
            .arg("-d")
            .arg(&cluster.connection)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .map_err(|e| cluster.err(format!("cannot run psql: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Session {
            child,
            stdin,
            stdout,
            stderr,
            cluster: cluster.name.clone(),
        })
    }

    fn failed(&mut self, what: &str) -> Error {
        let _ = self.child.wait();
        let msg = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
        Error::Postgres {
            cluster: self.cluster.clone(),
            reason: format!("{what}: {}", msg.trim()),
        }
    }

    /// The rows `sql` (one statement) returns, each split into its fields.
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>> {
        if writeln!(self.stdin, "{sql};\n\\echo {DONE}")
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            return Err(self.failed(sql));
        }
        let mut rows = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failed(sql)),
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line == DONE {
                return Ok(rows);
            }
            rows.push(line.split(FIELD_SEP).map(String::from).collect());
        }
    }

    /// The one row of `sql`, with `n` fields.
    fn row(&mut self, sql: &str, n: usize) -> Result<Vec<String>> {
        let rows = self.query(sql)?;
        match rows.into_iter().next() {
            Some(r) if r.len() == n => Ok(r),
            other => Err(Error::Postgres {
                cluster: self.cluster.clone(),
                reason: format!("unexpected answer to {sql}: {other:?}"),
            }),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Ending the session aborts a base backup still in progress.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unhex(cluster: &str, hex_text: &str) -> Result<String> {
    hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Error::Postgres {
            cluster: cluster.to_string(),
            reason: "pg_backup_stop returned an unreadable label".into(),
        })
}

/// What the data directory holds that a base backup leaves out (as pg_basebackup does):
/// the WAL (archived on its own), the server's runtime state, temporary files. Directories
/// whose contents are left out are kept, empty.
fn excludes(data_dir: &Path) -> Result<Patterns> {
    let dd = globset::escape(&data_dir.to_string_lossy());
    let mut p: Vec<String> = [
        "pg_wal",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    ]
    .iter()
    .map(|d| format!("{dd}/{d}/*"))
    .collect();
    for f in [
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "recovery.signal",
        "standby.signal",
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
    ] {
        p.push(format!("{dd}/{f}"));
    }
    p.extend(["pg_internal.init".into(), "pgsql_tmp*".into()]);
    Ok(Patterns::new(&p)?.expect("patterns given"))
}

/// Takes a base backup of `cluster` into a snapshot of its set: `pg_backup_start`, a
/// backup of the data directory, `pg_backup_stop` (which waits until the WAL up to the
/// backup's end is archived), then the snapshot, recording the label. A failure anywhere
/// ends the psql session, which aborts the backup on the server, and writes no snapshot.
pub fn basebackup(
    repo: &Repository,
    cluster: &Cluster,
    wal_timeout: std::time::Duration,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let mut s = Session::connect(cluster)?;
    let server = Server::query(&mut s, cluster)?;
    let (start_fn, stop_fn) = if server.version >= 150000 {
        ("pg_backup_start('strata', true)", "pg_backup_stop(false)")
    } else {
        (
            "pg_start_backup('strata', true, false)",
            "pg_stop_backup(false, false)",
        )
    };
    let start = s.row(
        &format!("SELECT l, pg_walfile_name(l) FROM {start_fn} AS l"),
        2,
    )?;
    let (start_lsn, start_wal) = (start[0].clone(), start[1].clone());
    let timeline = u32::from_str_radix(start_wal.get(..8).unwrap_or(""), 16)
        .map_err(|_| cluster.err(format!("unexpected WAL file name {start_wal}")))?;
    let data_dir = server.data_dir.clone();
    let name = cluster.name.clone();
    let stop = move |snap: &mut Snapshot| -> Result<()> {
        let r = s.row(
            &format!(
                "SELECT b.lsn, pg_walfile_name(b.lsn), \
                 encode(convert_to(b.labelfile, 'UTF8'), 'hex'), \
                 encode(convert_to(coalesce(b.spcmapfile, ''), 'UTF8'), 'hex') \
                 FROM {stop_fn} AS b"
            ),
            4,
        )?;
        // The backup is over in the server; its WAL must be archived before the snapshot
        // may say it restores (write order: the WAL, then the snapshot).
        wait_archived(repo, &mut s, &name, &r[1], (wal_timeout, cancel), progress)?;
        let map = unhex(&name, &r[3])?;
        let backup_label = unhex(&name, &r[2])?;
        let base = BaseBackup {
            cluster: name,
            data_directory: server.data_dir.to_string_lossy().into_owned(),
            server_version: server.version,
            timeline,
            segment_size: server.segment_size,
            start_lsn,
            stop_lsn: r[0].clone(),
            start_wal,
            stop_wal: r[1].clone(),
            stop_time: strata::timespec::now().to_rfc3339(),
            backup_label,
            tablespace_map: (!map.is_empty()).then_some(map),
        };
        Ok(snap.set_extension(EXTENSION, &base)?)
    };
    backup::run(
        repo,
        BackupOptions {
            source: Source::Paths(vec![data_dir.clone()]),
            set: Some(cluster.set()),
            tags: vec!["postgres".into()],
            excludes: Some(excludes(&data_dir)?),
            tolerate_changes: true,
            before_snapshot: Some(Box::new(move |snap: &mut Snapshot| {
                stop(snap).map_err(Error::into_repository)
            })),
            cancel,
            ..Default::default()
        },
        progress,
    )
    .map_err(Error::from)
}

/// What a base backup needs to know of the server, checked before it starts.
struct Server {
    data_dir: PathBuf,
    version: u32,
    segment_size: u64,
}

impl Server {
    /// Asks the server, and refuses what a base backup cannot serve: another server than
    /// the config's, archiving off, a standby, tablespaces.
    fn query(s: &mut Session, cluster: &Cluster) -> Result<Server> {
        let info = s.row(
            "SELECT current_setting('data_directory'), current_setting('server_version_num'), \
             current_setting('archive_mode'), pg_is_in_recovery()::text, \
             (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')",
            5,
        )?;
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let data_dir = canon(&cluster.data_directory);
        if canon(Path::new(&info[0])) != data_dir {
            return Err(cluster.err(format!(
                "the connection reaches the server of {}, not the data-directory {} of the \
                 config",
                info[0],
                cluster.data_directory.display()
            )));
        }
        if info[2] == "off" {
            return Err(cluster.err(
                "archive_mode is off: without the WAL archive a base backup cannot be \
                 restored; set archive_mode = on and an archive_command that pushes WAL into \
                 this repository",
            ));
        }
        if info[3] == "true" {
            return Err(cluster.err("the server is a standby: take base backups on the primary"));
        }
        let segment_size: u64 = info[4].parse().unwrap_or(0);
        if !segment_size.is_power_of_two() || segment_size < (1 << 20) {
            return Err(cluster.err(format!("unexpected wal_segment_size {}", info[4])));
        }
        let tblspc = data_dir.join("pg_tblspc");
        if std::fs::read_dir(&tblspc)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            return Err(cluster.err(
                "the cluster has tablespaces outside its data directory (pg_tblspc), which \
                 base backups do not cover yet",
            ));
        }
        Ok(Server {
            data_dir,
            version: info[1].parse().unwrap_or(0),
            segment_size,
        })
    }
}

/// Waits until `segment`, the last WAL a base backup needs, is in the archive, saying what
/// it waits for (and how archiving fails, when it does), for at most `timeout`.
/// `pg_backup_stop` could wait instead, but silently and for ever, with the backup
/// running in the server all the while.
fn wait_archived(
    repo: &Repository,
    s: &mut Session,
    cluster: &str,
    segment: &str,
    (timeout, cancel): (std::time::Duration, Option<&std::sync::atomic::AtomicBool>),
    progress: &dyn Progress,
) -> Result<()> {
    let started = std::time::Instant::now();
    // The archiver's state is asked every 2 s, not at every look at the archive.
    let mut asked: Option<std::time::Instant> = None;
    let mut archiver = String::new();
    loop {
        if wal::record(repo, cluster, segment)?.is_some() {
            return Ok(());
        }
        if asked.is_none_or(|a| a.elapsed() >= std::time::Duration::from_secs(2)) {
            archiver = archiver_state(s)?;
            if started.elapsed() >= std::time::Duration::from_secs(2) {
                progress.waiting(&format!(
                    "waiting for PostgreSQL to archive {segment}, the base backup's last WAL \
                     segment ({}s of {}s){archiver}",
                    started.elapsed().as_secs(),
                    timeout.as_secs()
                ));
            }
            asked = Some(std::time::Instant::now());
        }
        if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(strata::Error::Interrupted { packs: 0, bytes: 0 }.into());
        }
        if started.elapsed() >= timeout {
            return Err(Error::Postgres {
                cluster: cluster.to_string(),
                reason: format!(
                    "{segment}, the base backup's last WAL segment, was not archived within \
                     {}s{archiver}; no snapshot was written (the backup is stopped in the \
                     server). Check archive_command and the server's log, or give \
                     --wal-timeout",
                    timeout.as_secs()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `; archiving fails: …` from `pg_stat_archiver` when the last attempt failed.
fn archiver_state(s: &mut Session) -> Result<String> {
    let r = s.row(
        "SELECT failed_count::text, coalesce(last_failed_wal, ''), \
         coalesce(last_failed_time::text, ''), \
         (last_failed_time IS NOT NULL AND last_failed_time > \
          coalesce(last_archived_time, '-infinity'))::text FROM pg_stat_archiver",
        4,
    )?;
    Ok(if r[3] == "true" {
        format!(
            "; archiving fails: {} failure(s), the last for {} at {}",
            r[0], r[1], r[2]
        )
    } else {
        String::new()
    })
}

/// The snapshot extension a base backup records itself in (format-spec §14.2).
pub const EXTENSION: &str = "postgres";

/// The base backup a snapshot records, if it is one (one whose record does not decode is
/// not: check reports it).
pub fn base_backup(snap: &Snapshot) -> Option<BaseBackup> {
    snap.extension(EXTENSION).ok().flatten()
}

/// The base backups of `cluster`, oldest first.
pub fn base_backups(repo: &Repository, cluster: &str) -> Result<Vec<(SnapshotId, Snapshot)>> {
    Ok(repo
        .snapshots()
        .list()?
        .into_iter()
        .filter(|(_, s)| {
            base_backup(s).is_some_and(|p| p.cluster == cluster)
                && s.set.as_deref() == Some(set_of(cluster).as_str())
        })
        .collect())
}

/// The WAL a recovery from one base backup replays, as found in the archive.
#[derive(Clone, Debug, Serialize)]
pub struct WalChain {
    /// The timeline recovery follows to its end (the newest descending from the backup's).
    pub timeline: u32,
    /// WAL segments found, from the backup's first on.
    pub segments: u64,
    /// The last one found.
    pub last: Option<String>,
    /// When that one was archived.
    pub last_archived: Option<String>,
    /// Whether a segment archived at or after the instant asked for was reached.
    pub reaches_target: bool,
}

/// How many segments are probed at once, and looked for past the end of the archive (a
/// gap is a missing segment with archived ones after it).
const PROBE_BATCH: u64 = 16;

/// The lines recovery from `base` can follow: its own timeline, and each later one whose
/// `.history` file descends from it (PostgreSQL numbers timelines one after another, so the
/// history files are probed in order; `also`, when given, is probed too).
fn lines(
    repo: &Repository,
    cluster: &str,
    base: &BaseBackup,
    also: Option<u32>,
) -> Result<Vec<Line>> {
    let mut out = vec![Line::own(base)];
    let mut tli = base.timeline;
    loop {
        tli += 1;
        let Some(text) = fetch_text(repo, cluster, &format!("{tli:08X}.history"))? else {
            break;
        };
        out.extend(Line::from_history(&text, tli, base));
    }
    if let Some(t) = also.filter(|t| *t > tli) {
        if let Some(text) = fetch_text(repo, cluster, &format!("{t:08X}.history"))? {
            out.extend(Line::from_history(&text, t, base));
        }
    }
    Ok(out)
}

fn fetch_text(repo: &Repository, cluster: &str, name: &str) -> Result<Option<String>> {
    let Some(rec) = wal::record(repo, cluster, name)? else {
        return Ok(None);
    };
    let bytes = wal::content(repo, &rec)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Follows the WAL that a recovery from `base` replays through the archive, one request
/// per segment (in parallel batches), up to the first segment archived at or after
/// `until` (to its end without). Fails on a gap: a missing segment the backup itself needs,
/// or one with archived segments after it.
pub fn wal_chain(
    repo: &Repository,
    base: &BaseBackup,
    line: &Line,
    until: Option<DateTime<FixedOffset>>,
) -> Result<WalChain> {
    let cluster = &base.cluster;
    let size = base.segment_size;
    let err = |reason: String| Error::Postgres {
        cluster: cluster.clone(),
        reason,
    };
    let first = Segment::parse(&base.start_wal, size)
        .ok_or_else(|| err(format!("bad start WAL file {}", base.start_wal)))?;
    let stop = Segment::parse(&base.stop_wal, size)
        .ok_or_else(|| err(format!("bad stop WAL file {}", base.stop_wal)))?;
    let name_of = |no: u64| line.segment(no).name(size);
    let mut chain = WalChain {
        timeline: line.timeline(),
        segments: 0,
        last: None,
        last_archived: None,
        reaches_target: false,
    };
    let mut no = first.no;
    loop {
        let names: Vec<String> = (no..no + PROBE_BATCH).map(name_of).collect();
        let found = wal::records(repo, cluster, &names)
            .into_iter()
            .collect::<strata::Result<Vec<_>>>()?;
        for (i, rec) in found.iter().enumerate() {
            let Some(rec) = rec else {
                let missing = &names[i];
                if no + (i as u64) <= stop.no {
                    return Err(Error::WalGap {
                        cluster: cluster.clone(),
                        missing: missing.clone(),
                        needed: format!(
                            "and the base backup of {} needs every segment from {} to {}",
                            base.stop_time, base.start_wal, base.stop_wal
                        ),
                    });
                }
                // The end of the archive, unless something was archived after it (in the
                // rest of this batch or the next).
                let more: Vec<String> = (no + PROBE_BATCH..no + 2 * PROBE_BATCH)
                    .map(name_of)
                    .collect();
                let mut after = found[i..].iter().zip(&names[i..]);
                let archived_after = match after.find(|(r, _)| r.is_some()) {
                    Some((_, n)) => Some(n.clone()),
                    None => wal::records(repo, cluster, &more)
                        .into_iter()
                        .collect::<strata::Result<Vec<_>>>()?
                        .into_iter()
                        .zip(more)
                        .find_map(|(r, n)| r.map(|_| n)),
                };
                return match archived_after {
                    None => Ok(chain),
                    Some(n) => Err(Error::WalGap {
                        cluster: cluster.clone(),
                        missing: missing.clone(),
                        needed: format!("and {n} after it is archived"),
                    }),
                };
            };
            chain.segments += 1;
            chain.last = Some(names[i].clone());
            chain.last_archived = Some(rec.time.clone());
            if let Some(at) = until {
                if DateTime::parse_from_rfc3339(&rec.time).is_ok_and(|t| t >= at) {
                    chain.reaches_target = true;
                    return Ok(chain);
                }
            }
        }
        no += PROBE_BATCH;
    }
}

/// Whether the WAL files `archived` (names) of `base`'s cluster leave a gap in what
/// recovery from `base` replays: every segment from its start to the newest archived one
/// (at least to its end), on its timeline or a later one. Says what is missing.
pub fn chain_gap(base: &BaseBackup, archived: &[String]) -> Option<String> {
    let size = base.segment_size;
    let (Some(first), Some(stop)) = (
        Segment::parse(&base.start_wal, size),
        Segment::parse(&base.stop_wal, size),
    ) else {
        return Some(format!(
            "base backup records bad WAL file names {} and {}",
            base.start_wal, base.stop_wal
        ));
    };
    let have: std::collections::HashSet<u64> = archived
        .iter()
        .filter_map(|n| Segment::parse(n, size))
        .filter(|s| s.tli >= base.timeline)
        .map(|s| s.no)
        .collect();
    let newest = have.iter().copied().max().unwrap_or(0).max(stop.no);
    let missing: Vec<u64> = (first.no..=newest).filter(|n| !have.contains(n)).collect();
    let name = |no| {
        Segment {
            tli: base.timeline,
            no,
        }
        .name(size)
    };
    missing.first().map(|&no| {
        format!(
            "the WAL of base backup {} ({} to {}) has a gap: {} segment(s) missing, the \
             first {}{}",
            base.stop_time,
            base.start_wal,
            base.stop_wal,
            missing.len(),
            name(no),
            if no <= stop.no {
                ": the backup cannot be restored at all"
            } else {
                ": recovery stops before it"
            }
        )
    })
}

/// What [`forget`] did: the snapshots each job removed, and the WAL that only the base
/// backups removed now needed.
#[derive(Debug)]
pub struct Forgotten {
    /// The snapshots each job kept and removed.
    pub plans: Vec<strata::retention::GroupPlan>,
    /// The WAL expired, per cluster whose base backups a job covered.
    pub wal: Vec<WalExpiry>,
}

/// The cluster a backup set holds the base backups of (`postgres.NAME`), if it is one.
pub fn cluster_of(set: &str) -> Option<&str> {
    set.strip_prefix("postgres.").filter(|c| !c.is_empty())
}

/// Forgets snapshots as [`strata::retention::forget`] does, then expires the archived WAL
/// of each PostgreSQL set a job names that only base backups forgotten now needed (a
/// library caller's forget leaves no expired WAL behind).
pub fn forget(
    repo: &Repository,
    jobs: &[strata::retention::ForgetJob],
    filter: &strata::SnapshotFilter,
    dry_run: bool,
) -> Result<Forgotten> {
    // A job of a cluster's set, or of every set (which includes the clusters').
    let touches_wal = jobs
        .iter()
        .any(|j| j.set.as_deref().is_none_or(|s| cluster_of(s).is_some()));
    // Read before any snapshot goes: a record that cannot be read fails the forget
    // before it removed anything, not after, unreported.
    let records = match touches_wal {
        true => wal::all_records(repo)?,
        false => Vec::new(),
    };
    // Planned first, and carried out here: a cluster's plan may need mending.
    let mut plans = strata::retention::forget(repo, jobs, filter, true)?;
    for plan in &mut plans {
        keep_an_intact_base_backup(plan);
    }
    if !dry_run {
        let ids: Vec<_> = plans
            .iter()
            .flat_map(|p| p.remove.iter().map(|(id, _)| *id))
            .collect();
        repo.snapshots().forget(&ids)?;
    }
    let forgotten: std::collections::HashSet<SnapshotId> = plans
        .iter()
        .flat_map(|p| p.remove.iter().map(|(id, _)| *id))
        .collect();
    let mut clusters: Vec<&str> = jobs
        .iter()
        .filter_map(|j| cluster_of(j.set.as_deref()?))
        .collect();
    clusters.extend(plans.iter().filter_map(|p| match &p.group {
        strata::Lineage::Set(s) if touches_wal => cluster_of(s),
        _ => None,
    }));
    let mut wal = Vec::new();
    for cluster in clusters {
        if wal.iter().all(|w: &WalExpiry| w.cluster != cluster) {
            wal.push(expire(repo, cluster, dry_run, &forgotten, &records)?);
        }
    }
    Ok(Forgotten { plans, wal })
}

/// A policy counts a base backup that `repair snapshots` rewrote (it lost files, and
/// PostgreSQL cannot start from it) like any other: keeping only such ones would forget
/// the last base backup a restore can use. The newest intact one the plan removes is kept
/// then.
fn keep_an_intact_base_backup(plan: &mut strata::retention::GroupPlan) {
    let intact = |s: &Snapshot| base_backup(s).is_some() && s.repaired.is_none();
    let is_cluster = matches!(&plan.group, strata::Lineage::Set(s) if cluster_of(s).is_some());
    if !is_cluster || plan.keep.iter().any(|(_, s, _)| intact(s)) {
        return;
    }
    let newest = (plan.remove.iter().enumerate())
        .filter(|(_, (_, s))| intact(s))
        .max_by_key(|(_, (_, s))| s.datetime())
        .map(|(i, _)| i);
    if let Some(i) = newest {
        let (id, snap) = plan.remove.remove(i);
        plan.keep
            .push((id, snap, vec!["the newest intact base backup".to_string()]));
    }
}

/// What [`expire_wal`] removed.
#[derive(Clone, Debug, Serialize)]
pub struct WalExpiry {
    /// The cluster.
    pub cluster: String,
    /// The first WAL file kept: the start of the oldest base backup left. `None` when no
    /// base backup is left, and then nothing is removed.
    pub kept_from: Option<String>,
    /// The WAL files removed (or, in a dry run, that would be).
    pub removed: Vec<String>,
}

/// Removes the archived WAL of `cluster` that no base backup left needs: segments (and
/// `.partial` and `.backup` files) before the start of the oldest one. Timeline history
/// files stay, whatever their age: recovery reads them to pick its timeline. Without any
/// base backup nothing is removed: the archive may be all there is. Their blobs go with
/// the next prune.
pub fn expire_wal(
    repo: &Repository,
    cluster: &str,
    dry_run: bool,
    forgotten: &std::collections::HashSet<SnapshotId>,
) -> Result<WalExpiry> {
    expire(repo, cluster, dry_run, forgotten, &wal::all_records(repo)?)
}

/// [`expire_wal`] among `records`, the archive's WAL records.
fn expire(
    repo: &Repository,
    cluster: &str,
    dry_run: bool,
    forgotten: &std::collections::HashSet<SnapshotId>,
    records: &[wal::WalRecord],
) -> Result<WalExpiry> {
    let bases = base_backups(repo, cluster)?;
    // A dry run's forget removed nothing: its base backups count as gone all the same.
    let oldest = bases
        .iter()
        .filter(|(id, _)| !forgotten.contains(id))
        .filter_map(|(_, s)| base_backup(s))
        .filter_map(|b| Segment::parse(&b.start_wal, b.segment_size).map(|s| (s.no, b)))
        .min_by_key(|(no, _)| *no);
    let mut out = WalExpiry {
        cluster: cluster.to_string(),
        kept_from: oldest.as_ref().map(|(_, b)| b.start_wal.clone()),
        removed: Vec::new(),
    };
    let Some((first, base)) = oldest else {
        return Ok(out);
    };
    for rec in records {
        if rec.cluster != cluster || rec.name.ends_with(".history") {
            continue;
        }
        let old = rec
            .name
            .get(..24)
            .and_then(|n| Segment::parse(n, base.segment_size))
            .is_some_and(|s| s.no < first);
        if old {
            if !dry_run {
                wal::remove(repo, rec)?;
            }
            out.removed.push(rec.name.clone());
        }
    }
    out.removed.sort();
    Ok(out)
}

/// What a point-in-time restore will do, decided before anything is written.
#[derive(Clone, Debug, Serialize)]
pub struct RestorePlan {
    /// The base backup's snapshot.
    pub snapshot: SnapshotId,
    /// Its record.
    pub base: BaseBackup,
    /// The instant recovery stops at; `None`: the end of the archive.
    pub target_time: Option<String>,
    /// The WAL it replays; its timeline is the one recovery follows.
    pub wal: WalChain,
    /// The other timelines recovery from this base backup could follow (`--timeline`).
    pub other_timelines: Vec<u32>,
    /// What the plan decided that was not asked (a timeline chosen among several, a
    /// target PostgreSQL cannot stop at).
    pub notes: Vec<String>,
}

/// What a restore asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreTarget {
    /// The instant; `None`: the end of the archive.
    pub at: Option<DateTime<FixedOffset>>,
    /// The timeline to follow; `None`: the one archived most recently (the primary's).
    pub timeline: Option<u32>,
}

/// Picks the newest base backup of `cluster` consistent at the instant asked (the newest
/// of all without) and the timeline to follow, checks the WAL from it is archived without a
/// gap, and that recovery can stop at the instant.
pub fn plan_restore(
    repo: &Repository,
    cluster: &str,
    target: RestoreTarget,
) -> Result<RestorePlan> {
    let err = |reason: String| Error::Postgres {
        cluster: cluster.to_string(),
        reason,
    };
    let at = target.at;
    let mut notes = Vec::new();
    let (id, snap) = &choose_base(cluster, base_backups(repo, cluster)?, at, &mut notes)?;
    let base = base_backup(snap).expect("filtered");
    let (line, other_timelines, mut whole) = choose_line(repo, &base, target.timeline, &mut notes)
        .map_err(|e| match e {
            Error::Postgres { reason, .. } => err(format!("base backup {}: {reason}", id.short())),
            e => e,
        })?;
    // The chain to the archive's end, walked once: choosing among timelines walked it.
    let mut to_end = || match whole.take() {
        Some(chain) => Ok(chain),
        None => wal_chain(repo, &base, &line, None),
    };
    let mut wal = match at {
        Some(_) => wal_chain(repo, &base, &line, at)?,
        None => to_end()?,
    };
    let mut target_time = at;
    if let Some(at) = at {
        if !wal.reaches_target {
            return Err(err(format!(
                "the WAL archive ends at {} (archived {}), before {}: PostgreSQL would \
                 refuse to stop short of the target; leave out --at to restore to the end \
                 of the archive",
                wal.last.as_deref().unwrap_or(&base.stop_wal),
                wal.last_archived.as_deref().unwrap_or("never"),
                at.to_rfc3339()
            )));
        }
        if let Some(note) = unreachable_instant(repo, &base, &line, &wal, at)? {
            notes.push(note);
            target_time = None;
            wal = to_end()?;
        }
    }
    Ok(RestorePlan {
        snapshot: *id,
        base,
        target_time: target_time.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()),
        wal,
        other_timelines,
        notes,
    })
}

/// The newest of `all` (a cluster's base backups, oldest first) consistent at `at`, or
/// why there is none. One that `repair snapshots` rewrote without the files it lost is
/// passed over with a note: PostgreSQL cannot start from a data directory missing files.
fn choose_base(
    cluster: &str,
    all: Vec<(SnapshotId, Snapshot)>,
    at: Option<DateTime<FixedOffset>>,
    notes: &mut Vec<String>,
) -> Result<(SnapshotId, Snapshot)> {
    let err = |reason: String| Error::Postgres {
        cluster: cluster.to_string(),
        reason,
    };
    let Some(first) = all.first().and_then(|(_, s)| base_backup(s)) else {
        return Err(err("no base backup in the repository".to_string())
            .with_remedy(strata::Remedy::TakeBaseBackup));
    };
    let fits = |s: &Snapshot| {
        let p = base_backup(s).expect("filtered");
        at.is_none_or(|at| p.consistent_at().is_some_and(|t| t <= at))
    };
    let mut repaired = 0;
    for (id, snap) in all.into_iter().rev().filter(|(_, s)| fits(s)) {
        match &snap.repaired {
            None => return Ok((id, snap)),
            Some(r) => {
                repaired += 1;
                notes.push(format!(
                    "base backup {} passed over: it lost {} file(s) to damage (rewritten \
                     from {}), and PostgreSQL cannot start without them",
                    id.short(),
                    r.lost.len(),
                    r.from.short()
                ));
            }
        }
    }
    if repaired > 0 {
        let when = at
            .map(|t| format!(" at {}", t.to_rfc3339()))
            .unwrap_or_default();
        return Err(err(format!(
            "no intact base backup is consistent{when}: {repaired} lost files to damage and \
             cannot start"
        ))
        .with_remedy(strata::Remedy::TakeBaseBackup));
    }
    Err(err(format!(
        "no base backup is consistent at {}: the earliest one is consistent from {} on",
        at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        first.stop_time
    )))
}

/// The line recovery from `base` follows: timeline `asked`, or else the one whose WAL was
/// archived most recently. A restored copy or an old primary may have archived a line
/// with a newer number that nobody writes any more; the newest number is not the
/// primary's. Returns the other timelines too, and the chosen line's chain to the end of
/// the archive when choosing walked it.
fn choose_line(
    repo: &Repository,
    base: &BaseBackup,
    asked: Option<u32>,
    notes: &mut Vec<String>,
) -> Result<(Line, Vec<u32>, Option<WalChain>)> {
    let mut walked = Vec::new();
    let mut all = lines(repo, &base.cluster, base, asked)?;
    let numbers = |ls: &[Line]| ls.iter().map(Line::timeline).collect::<Vec<_>>();
    let chosen = match asked {
        Some(t) => all
            .iter()
            .position(|l| l.timeline() == t)
            .ok_or_else(|| Error::Postgres {
                cluster: base.cluster.clone(),
                reason: format!(
                    "recovery from it (timeline {}) cannot follow timeline {t}; it can follow \
                     {:?}",
                    base.timeline,
                    numbers(&all)
                ),
            })?,
        None if all.len() == 1 => 0,
        None => {
            let mut ends = Vec::new();
            for (i, l) in all.iter().enumerate() {
                // A line whose WAL cannot be followed (a gap) is no candidate.
                if let Ok(c) = wal_chain(repo, base, l, None) {
                    let t = c
                        .last_archived
                        .as_deref()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
                    ends.push((t, i, c.last_archived.clone()));
                    walked.push((i, c));
                }
            }
            let Some((_, i, when)) = ends.into_iter().max() else {
                return Err(Error::Postgres {
                    cluster: base.cluster.clone(),
                    reason: format!("none of the timelines {:?} can be followed", numbers(&all)),
                });
            };
            notes.push(format!(
                "timelines {:?} descend from the base backup; following {}, archived most \
                 recently ({}); --timeline chooses another",
                numbers(&all),
                all[i].timeline(),
                when.as_deref().unwrap_or("never")
            ));
            i
        }
    };
    let chain = (walked.into_iter()).find_map(|(i, c)| (i == chosen).then_some(c));
    let line = all.swap_remove(chosen);
    let mut others = numbers(&all);
    others.sort_unstable();
    Ok((line, others, chain))
}

/// Recovery to an instant stops at the first transaction that ended after it; with none in
/// the archive PostgreSQL stops with "recovery ended before configured recovery target was
/// reached". Reads the WAL from the first segment archived after `at` on (nothing before it
/// was written after `at`) until such a transaction. With none: the state at `at` is the
/// archive's end, and the note says so.
fn unreachable_instant(
    repo: &Repository,
    base: &BaseBackup,
    line: &Line,
    wal: &WalChain,
    at: DateTime<FixedOffset>,
) -> Result<Option<String>> {
    let size = base.segment_size;
    let Some(first) = wal.last.as_deref().and_then(|n| Segment::parse(n, size)) else {
        return Ok(None);
    };
    let tool = waldump::find(&base.cluster, base.server_version)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
    let mut last_end = None;
    for no in first.no.. {
        let name = line.segment(no).name(size);
        let path = dir.path().join(&name);
        if !wal::fetch(repo, &base.cluster, &name, &path)? {
            break;
        }
        let ends = waldump::commit_times(&tool, &path)?;
        let _ = std::fs::remove_file(&path);
        if ends.iter().any(|t| *t > at) {
            return Ok(None);
        }
        last_end = ends.last().copied().or(last_end);
    }
    Ok(Some(format!(
        "no transaction in the archived WAL ended after {} ({}): PostgreSQL cannot stop at \
         that instant, so recovery replays the archive to its end, which holds the state as \
         of then",
        at.to_rfc3339(),
        match last_end {
            Some(t) => format!("the last before it ended at {}", t.to_rfc3339()),
            None => "none ended in the WAL archived since".to_string(),
        }
    )))
}

/// The staging directory of one `pg restore`, beside its target: locked and marked while
/// its run lives (strata::scratch). A run killed with SIGKILL leaves a whole data directory
/// there: the next run beside it removes what provably is such a leftover.
struct Staging(strata::scratch::Scratch);

impl Staging {
    const PREFIX: &'static str = ".strata-pg-restore-";

    fn new(parent: &Path, target: &Path, progress: &dyn Progress) -> Result<Self> {
        let killed = "left by a pg restore that was killed";
        strata::scratch::remove_abandoned(
            parent,
            Self::PREFIX,
            target.file_name(),
            killed,
            progress,
        );
        // 0700: nobody else may plant files in a data directory.
        Ok(Staging(strata::scratch::Scratch::new(
            parent,
            Self::PREFIX,
        )?))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A string as PostgreSQL's configuration files quote it: quotes doubled, and
/// backslashes too, since its parser reads C-like escapes inside quotes (a shell's `'\''`
/// would otherwise end the string early, and `\t` would be a tab).
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', "''"))
}

/// Refuses a `target` that is a symlink or no directory; its metadata, `None` when
/// absent. `bad` makes the error.
fn no_link(target: &Path, bad: impl Fn(String) -> Error) -> Result<Option<std::fs::Metadata>> {
    // A symlink (or a file) where the data directory goes is refused before anything is
    // restored: the restored directory is moved into place by rename, which cannot
    // replace one, and following it would put the cluster somewhere else.
    let m = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(target, e)),
    };
    if !m.is_dir() {
        let kind = if m.file_type().is_symlink() {
            "a symlink"
        } else {
            "not a directory"
        };
        return Err(bad(format!(
            "{} is {kind}: give a new or empty directory (the real path, not a link)",
            target.display()
        )));
    }
    Ok(Some(m))
}

/// Whether the directory `target` holds anything.
fn occupied(target: &Path) -> Result<bool> {
    match std::fs::read_dir(target) {
        Ok(mut d) => Ok(d.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(target, e)),
    }
}

/// A restore target must be a new or empty real directory; `bad` makes the error.
fn check_target(target: &Path, bad: impl Fn(String) -> Error) -> Result<()> {
    no_link(target, &bad)?;
    if occupied(target)? {
        return Err(bad(format!(
            "{} is not empty: restore into a new or empty directory, or give --delta to \
             bring back the data directory of a stopped cluster",
            target.display()
        )));
    }
    Ok(())
}

/// A `--delta` target: new, empty, or a PostgreSQL data directory (`PG_VERSION`: a wrong
/// path would lose everything in it) that no server uses, on the file system of its
/// parent (its files are moved into the staging directory beside it).
fn check_delta_target(target: &Path, parent: &Path, bad: impl Fn(String) -> Error) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(meta) = no_link(target, &bad)? else {
        return Ok(());
    };
    if !occupied(target)? {
        return Ok(());
    }
    let version = std::fs::symlink_metadata(target.join("PG_VERSION"));
    if !version.is_ok_and(|m| m.is_file()) {
        return Err(bad(format!(
            "{} holds no PG_VERSION: --delta only brings back a PostgreSQL data directory \
             (it removes whatever the backup does not hold)",
            target.display()
        )));
    }
    if let Some(why) = delta::live_postmaster(target) {
        return Err(bad(format!(
            "{} is in use: {why}; stop the cluster first",
            target.display()
        )));
    }
    let parent_dev = std::fs::metadata(parent)
        .map_err(|e| Error::io(parent, e))?
        .dev();
    if meta.dev() != parent_dev {
        return Err(bad(format!(
            "{} is a mount point: --delta moves its files into a staging directory beside \
             it, which must be on the same file system; restore into a new directory",
            target.display()
        )));
    }
    Ok(())
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    /// The restore of the base backup (with `delta`: of the files not kept).
    pub report: strata::restore::RestoreReport,
    /// With `delta`: what was kept, fetched and removed.
    pub delta: Option<delta::DeltaSummary>,
}

/// Restores `plan`'s base backup as the data directory `target` (absent or empty; with
/// `delta`, also the data directory of a stopped cluster, of which only the files that
/// differ from the backup's are fetched: see [`delta`]), then writes what makes the next
/// start of PostgreSQL a recovery to the plan's target:
/// `backup_label`, `recovery.signal` and, appended to `postgresql.auto.conf`,
/// `restore_command` (which the caller gives: `strata wal fetch` with its config),
/// `recovery_target_timeline`, `recovery_target_time` and `recovery_target_action =
/// 'promote'`, and `archive_mode = off` unless `keep_archiving` (a failover that replaces
/// the primary). `recreate` says what of owners, attributes and devices the restore
/// recreates.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    target: &Path,
    restore_command: &str,
    keep_archiving: bool,
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    (recreate, delta): (strata::restore::Recreate, bool),
    progress: &dyn Progress,
) -> Result<Restored> {
    let bad = |reason: String| Error::Postgres {
        cluster: plan.base.cluster.clone(),
        reason,
    };
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match delta {
        true => check_delta_target(target, parent, bad)?,
        false => check_target(target, bad)?,
    }
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    // The snapshot holds the data directory under its absolute path: restore into a
    // staging directory beside the target, then move the data directory into place.
    let staging = Staging::new(parent, target, progress)?;
    let snapshot = repo.snapshots().get(&plan.snapshot)?;
    let data_dir = Path::new(&plan.base.data_directory);
    let delta = match delta {
        true => {
            let backup = delta::BackupFiles::of(repo, &snapshot, data_dir)?;
            let d = delta::DeltaPlan::new(repo, target, &backup)?;
            Some((backup, d))
        }
        false => None,
    };
    let provided = (delta.as_ref()).map_or_else(Default::default, |(_, d)| d.provided(data_dir));
    let how = (cancel, recreate, provided);
    let report = restore_base(repo, &snapshot, staging.path(), how, progress)?;
    if !report.errors.is_empty() {
        return Err(bad(format!(
            "the base backup did not restore cleanly ({} errors, the first: {}); nothing \
             was moved to {}",
            report.errors.len(),
            report.errors[0],
            target.display()
        )));
    }
    let staged = staged_data_directory(staging.path(), plan)?;
    if let Some((backup, d)) = &delta {
        d.move_kept(&staged.dir, backup, recreate.owners())?;
    }
    // Everything is written while the data directory is still inside the private staging
    // directory: once renamed into place it is the cluster owner's, who could swap it for
    // a symlink between the rename and the writes (root then wrote backup_label and
    // postgresql.auto.conf wherever it pointed).
    prepare_recovery(&staged, plan, restore_command, keep_archiving, progress)?;
    match std::fs::symlink_metadata(target) {
        Ok(_) if delta.is_some() => {
            let planned = delta.as_ref().and_then(|(_, d)| d.root);
            staged.exchange(parent, target, planned)?
        }
        Ok(_) => {
            std::fs::remove_dir(target).map_err(|e| Error::io(target, e))?;
            staged.move_to(parent, target)?;
        }
        Err(_) => staged.move_to(parent, target)?,
    }
    // Moved or replaced meanwhile: the restore is in place, but the run says so.
    staging.0.remove().map_err(|e| {
        bad(format!(
            "the data directory was restored to {}, but {e}",
            target.display()
        ))
    })?;
    let delta = delta.map(|(_, d)| delta::DeltaSummary {
        bytes_fetched: report.bytes,
        ..d.summary
    });
    Ok(Restored { report, delta })
}

/// Restores `snapshot` into the staging directory `into`, less the files `provided`.
fn restore_base(
    repo: &Repository,
    snapshot: &Snapshot,
    into: &Path,
    (cancel, recreate, provided): (
        Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
        strata::restore::Recreate,
        std::collections::HashSet<PathBuf>,
    ),
    progress: &dyn Progress,
) -> Result<strata::restore::RestoreReport> {
    let options = strata::restore::RestoreOptions {
        target: into.to_path_buf(),
        includes: None,
        excludes: None,
        verify: false,
        dry_run: false,
        cold: None,
        cancel,
        recreate,
        private: true,
        provided,
        batch_bytes: None,
    };
    Ok(strata::restore::run(repo, snapshot, &options, progress)?)
}

/// The components of `data_directory` when it is an absolute path in normal form: no
/// empty, `.` or `..` component, not the root itself.
fn normal_components(data_directory: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = data_directory.strip_prefix('/')?.split('/').collect();
    let normal = |p: &&str| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\0');
    parts.iter().all(normal).then_some(parts)
}

/// The base backup's data directory in the staging area, held open: the directory found
/// and checked is the one written to and moved into place, whatever its path leads to
/// meanwhile (the target's parent may be the cluster owner's, who can swap the staging
/// directory for a link).
struct Staged {
    /// Where it was found, for messages.
    path: PathBuf,
    /// The directory itself.
    dir: std::os::fd::OwnedFd,
    /// The directory holding it, and its name there.
    parent: std::os::fd::OwnedFd,
    name: String,
}

impl Staged {
    /// Moves the directory to `target` (absent now), a name in `parent`.
    fn move_to(&self, parent: &Path, target: &Path) -> Result<()> {
        use rustix::fs::{Mode, OFlags};
        let io = |e: rustix::io::Errno| Error::io(target, e.into());
        let name = target
            .file_name()
            .ok_or_else(|| io(rustix::io::Errno::INVAL))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let into = rustix::fs::open(parent, flags, Mode::empty()).map_err(io)?;
        rustix::fs::renameat(&self.parent, &self.name, &into, name).map_err(io)
    }

    /// Exchanges the directory with `target` (a directory in `parent`) in one step: a
    /// kill leaves the one or the other. The old one is left in the staging area, which
    /// removes it, once it is found to be the directory `planned` (device, inode): one the
    /// parent's owner put in its place meanwhile goes back. Where the file system cannot
    /// exchange, the old one is moved there first.
    fn exchange(&self, parent: &Path, target: &Path, planned: Option<(u64, u64)>) -> Result<()> {
        use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
        let io = |e: rustix::io::Errno| Error::io(target, e.into());
        let name = target
            .file_name()
            .ok_or_else(|| io(rustix::io::Errno::INVAL))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let into = rustix::fs::open(parent, flags, Mode::empty()).map_err(io)?;
        let swap = RenameFlags::EXCHANGE;
        let aside = match rustix::fs::renameat_with(&self.parent, &self.name, &into, name, swap) {
            Err(rustix::io::Errno::INVAL) => format!("{}.replaced", self.name),
            done => {
                done.map_err(io)?;
                self.name.clone()
            }
        };
        if aside != self.name {
            rustix::fs::renameat(&into, name, &self.parent, &aside).map_err(io)?;
        }
        let st = rustix::fs::statat(&self.parent, &aside, AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
        if planned != Some((st.st_dev, st.st_ino)) {
            let back = match aside == self.name {
                true => rustix::fs::renameat_with(&self.parent, &aside, &into, name, swap),
                false => rustix::fs::renameat(&self.parent, &aside, &into, name),
            };
            back.map_err(io)?;
            return Err(Error::io(
                target,
                std::io::Error::other("replaced by another directory while the restore ran"),
            ));
        }
        if aside != self.name {
            self.move_to(parent, target)?;
        }
        Ok(())
    }
}

/// The base backup's data directory as restored into `staging`, opened. The snapshot's
/// record says where it is, and a key holder writes that record: a `..` would lead out
/// of the staging area (a directory of the host moved into the target), a symlink node
/// on the way anywhere (root writing backup_label into it). Only a normal absolute path
/// is taken, each component opened without following a link, so the directory found is
/// a real one inside the staging area.
fn staged_data_directory(staging: &Path, plan: &RestorePlan) -> Result<Staged> {
    use rustix::fs::Mode;
    let refuse = |reason: &str| {
        Error::UnsafeDataDirectory {
            cluster: plan.base.cluster.clone(),
            snapshot: plan.snapshot.short(),
            data_directory: plan.base.data_directory.clone(),
            reason: reason.into(),
        }
        .with_remedy(strata::Remedy::RemoveCraftedSnapshot)
    };
    let parts = normal_components(&plan.base.data_directory).ok_or_else(|| {
        refuse("is not an absolute path in normal form (no `.`, `..` or empty component)")
    })?;
    let mut path = staging.to_path_buf();
    let mut dir = rustix::fs::open(staging, DIR_FLAGS, Mode::empty())
        .map_err(|e| Error::io(staging, e.into()))?;
    let mut parent = rustix::io::dup(&dir).map_err(|e| Error::io(staging, e.into()))?;
    for part in &parts {
        path.push(part);
        let next =
            rustix::fs::openat(&dir, *part, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => refuse(&format!(
                    "is no real directory in the backup ({} is a symlink or not a directory)",
                    path.strip_prefix(staging).unwrap_or(&path).display()
                )),
                rustix::io::Errno::NOENT => refuse("is not in the backup"),
                e => Error::io(&path, e.into()),
            })?;
        parent = std::mem::replace(&mut dir, next);
    }
    let name = parts
        .last()
        .expect("normal form has a component")
        .to_string();
    Ok(Staged {
        path,
        dir,
        parent,
        name,
    })
}

/// Writes what makes the next start of PostgreSQL in the staged data directory a
/// recovery to the plan's target (see [`restore`]), owned by the data directory's owner.
fn prepare_recovery(
    staged: &Staged,
    plan: &RestorePlan,
    restore_command: &str,
    keep_archiving: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let (path, dir) = (&staged.path, &staged.dir);
    let meta = rustix::fs::fstat(dir).map_err(|e| Error::io(path, e.into()))?;
    let owner = (meta.st_uid, meta.st_gid);
    let write = |name: &str, text: &str, append: bool| {
        write_recovery_file(dir, &path.join(name), (text, append), owner)
    };
    own_wal_directory(dir, path, owner, progress)?;
    write("backup_label", &plan.base.backup_label, false)?;
    if let Some(map) = &plan.base.tablespace_map {
        write("tablespace_map", map, false)?;
    }
    let mut conf = format!(
        "\n# strata pg restore, {}: recovery of {} from base backup {}\n\
         restore_command = {}\n",
        strata::timespec::now().to_rfc3339(),
        plan.base.cluster,
        plan.snapshot.to_hex(),
        conf_quote(restore_command)
    );
    // PostgreSQL would follow the newest timeline in the archive, whoever archived it.
    conf += &format!("recovery_target_timeline = '{}'\n", plan.wal.timeline);
    if let Some(t) = &plan.target_time {
        conf += &format!(
            "recovery_target_time = {}\nrecovery_target_action = 'promote'\n",
            conf_quote(t)
        );
    }
    if !keep_archiving {
        // A copy archiving under the cluster's name would start a timeline that competes
        // with the primary's in the archive (`--keep-archiving` for a failover).
        conf += "archive_mode = off\n";
    }
    write("postgresql.auto.conf", &conf, true)?;
    write("recovery.signal", "", false)?;
    Ok(())
}

/// Writes (or, with `append`, appends) `text` to the file `path` names in `dir`, relative
/// to the directory's descriptor and without following a link, and gives it to `owner`
/// (the server reads it as the data directory's owner).
fn write_recovery_file(
    dir: &std::os::fd::OwnedFd,
    path: &Path,
    (text, append): (&str, bool),
    owner: (u32, u32),
) -> Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let io = |e: rustix::io::Errno| Error::io(path, e.into());
    let name = path.file_name().expect("a file name");
    // A restored symlink in its place (planted in the primary's data directory, say)
    // must not carry these writes, nor the chown, out of the data directory.
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
    if st.is_ok_and(|st| FileType::from_raw_mode(st.st_mode) != FileType::RegularFile) {
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io)?;
    }
    let how = if append {
        OFlags::APPEND
    } else {
        OFlags::TRUNC
    };
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | how;
    let mut f = std::fs::File::from(
        rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)).map_err(io)?,
    );
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    if strata::is_root() {
        std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// A restored `pg_wal` that is a symlink (the primary's WAL on another disk) would have
/// the copy write into the live primary's WAL: it becomes a directory of the copy's own,
/// as `pg_basebackup` makes it; so does a `pg_tblspc` that is no directory. Tablespace
/// links in `pg_tblspc` point at the primary's tablespaces just as well: they are
/// removed, with a warning (the copy then lacks those tablespaces rather than writing
/// into the primary's). All relative to the data directory's descriptor `dir` (at
/// `path`), never through a link.
fn own_wal_directory(
    dir: &std::os::fd::OwnedFd,
    path: &Path,
    owner: (u32, u32),
    progress: &dyn Progress,
) -> Result<()> {
    use rustix::fs::{AtFlags, FileType};
    let wal = real_directory(dir, &path.join("pg_wal"), owner)?;
    owned_directory(&wal, &path.join("pg_wal/archive_status"), owner)?;
    let tblspc = real_directory(dir, &path.join("pg_tblspc"), owner)?;
    let io = |e: rustix::io::Errno| Error::io(path.join("pg_tblspc"), e.into());
    let mut entries = rustix::fs::Dir::read_from(&tblspc).map_err(io)?;
    while let Some(e) = entries.read() {
        let e = e.map_err(io)?;
        if e.file_type() != FileType::Symlink {
            continue;
        }
        rustix::fs::unlinkat(&tblspc, e.file_name(), AtFlags::empty()).map_err(io)?;
        progress.warning(&format!(
            "tablespace link pg_tblspc/{} removed: it pointed at the primary's tablespace; \
             strata does not restore tablespaces yet",
            e.file_name().to_string_lossy()
        ));
    }
    Ok(())
}

/// [`owned_directory`], after removing what stands in its place and is no directory (a
/// link to somewhere else).
fn real_directory(
    at: &std::os::fd::OwnedFd,
    path: &Path,
    owner: (u32, u32),
) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::{AtFlags, FileType};
    let name = path.file_name().expect("a directory name");
    let st = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW);
    if st.is_ok_and(|st| FileType::from_raw_mode(st.st_mode) != FileType::Directory) {
        rustix::fs::unlinkat(at, name, AtFlags::empty()).map_err(|e| Error::io(path, e.into()))?;
    }
    owned_directory(at, path, owner)
}

/// How directories of a data directory being prepared are opened: never through a link.
const DIR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

/// The directory `path` names in `at` (its last component), opened; made (0700, given to
/// `owner`) when missing.
fn owned_directory(
    at: &std::os::fd::OwnedFd,
    path: &Path,
    owner: (u32, u32),
) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::Mode;
    let io = |e: rustix::io::Errno| Error::io(path, e.into());
    let name = path.file_name().expect("a directory name");
    let made = match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => return Err(io(e)),
    };
    let dir = rustix::fs::openat(at, name, DIR_FLAGS, Mode::empty()).map_err(io)?;
    if made && strata::is_root() {
        std::os::unix::fs::fchown(&dir, Some(owner.0), Some(owner.1))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let mb16 = 16 << 20;
        for (name, tli, no) in [
            ("000000010000000000000001", 1, 1),
            ("0000000100000000000000FF", 1, 255),
            ("000000010000000100000000", 1, 256),
            ("00000002000000A1000000FE", 2, 0xA1 * 256 + 0xFE),
        ] {
            let s = Segment::parse(name, mb16).unwrap();
            assert_eq!(s, Segment { tli, no }, "{name}");
            assert_eq!(s.name(mb16), name);
        }
        // 64 MiB segments: 64 per "xlogid".
        let s = Segment { tli: 1, no: 64 };
        assert_eq!(s.name(64 << 20), "000000010000000100000000");
        assert_eq!(Segment::parse("00000001000000000000000", mb16), None);
    }

    #[test]
    fn chain_gaps_are_found_in_names() {
        let mb16 = 16 << 20;
        let base = BaseBackup {
            cluster: "main".into(),
            data_directory: "/d".into(),
            server_version: 150000,
            timeline: 1,
            segment_size: mb16,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/3000100".into(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000003".into(),
            stop_time: "2026-11-27T00:00:00Z".into(),
            backup_label: String::new(),
            tablespace_map: None,
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = names(&[
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "00000002.history",
            // After a promotion the segment numbers go on, on the new timeline.
            "000000020000000000000005",
        ]);
        assert_eq!(chain_gap(&base, &ok), None);
        let gap = chain_gap(
            &base,
            &names(&["000000010000000000000002", "000000010000000000000005"]),
        );
        let gap = gap.unwrap();
        assert!(
            gap.contains("2 segment(s) missing, the first 000000010000000000000003"),
            "{gap}"
        );
        assert!(gap.contains("cannot be restored"), "{gap}");
        let later = chain_gap(
            &base,
            &names(&[
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000005",
            ]),
        )
        .unwrap();
        assert!(
            later.contains("000000010000000000000004") && later.contains("stops before"),
            "{later}"
        );
    }

    #[test]
    fn lsns_parse() {
        assert_eq!(Lsn::parse("0/2000028"), Some(Lsn(0x2000028)));
        assert_eq!(Lsn::parse("A/FF"), Some(Lsn((0xA << 32) | 0xFF)));
        assert_eq!(Lsn::parse("x"), None);
    }

    /// Only a normal absolute path names a data directory in a base backup (issue 31).
    #[test]
    fn data_directories_in_normal_form_only() {
        assert_eq!(
            normal_components("/var/lib/postgresql/15/main"),
            Some(vec!["var", "lib", "postgresql", "15", "main"])
        );
        for bad in [
            "",
            "/",
            "//d",
            "/d/",
            "/d/./e",
            "/d/../e",
            "/..",
            "/../srv/other",
            "d",
            "./d",
            "/d\0",
        ] {
            assert_eq!(normal_components(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn conf_strings_double_quotes() {
        assert_eq!(conf_quote("a 'b' c"), "'a ''b'' c'");
        // A shell-quoted quote and a backslash in a path survive PostgreSQL's parser
        // (hostile pass, issue 26).
        assert_eq!(conf_quote(r"'it'\''s' C:\x"), r"'''it''\\''''s'' C:\\x'");
    }
}
