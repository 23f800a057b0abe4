//! The backup pipeline: walk, detect changes, chunk, store, build trees, write a snapshot.
//!
//! Directories are walked in sorted order; the entries of one directory are archived in
//! parallel on the rayon pool, and a large file's chunks are sealed in parallel batch by
//! batch, so both many small files and one huge file keep every core busy while memory
//! stays bounded by the batch and pack sizes (never by the file or repository size).

mod scan;

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, FixedOffset};
use rayon::prelude::*;

pub(crate) use crate::repo::saver::{BlobSaver, SaverShared};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId, TreeId};
use crate::patterns::Patterns;
use crate::progress::Progress;
use crate::repo::cache::FileStat;
use crate::repo::config::{FILE_VERSION, INLINE_LIMIT};
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::{Lineage, Snapshot, Summary};
use crate::repo::tree::{FileContent, Node, NodeKind, Timespec, Tree, Xattr};
use crate::repo::Repository;
use crate::util;

/// Bytes read from a file before its chunks are sealed in parallel: ~32 chunks, enough to
/// keep every core busy. Small on purpose: rayon's work stealing can leave several files'
/// batches in flight at once, and peak memory grows with each.
const BATCH_SIZE: usize = 1 << 20;

/// What a backup reads.
pub enum Source<'a> {
    /// Files and directories, walked recursively.
    Paths(Vec<PathBuf>),
    /// Standard input (or any reader) stored as one file under this name.
    Stdin {
        /// The data.
        reader: Box<dyn Read + Send + 'a>,
        /// The file name it gets in the snapshot (a relative path of normal parts).
        name: String,
    },
}

/// What a backup reads and how it records it.
pub struct BackupOptions<'a> {
    /// What to read.
    pub source: Source<'a>,
    /// The host recorded (default: this host's name).
    pub host: Option<String>,
    /// Tags recorded.
    pub tags: Vec<String>,
    /// The backup set, which names the lineage (parent, retention, file cache).
    pub set: Option<String>,
    /// Paths matching these are left out (recorded in the snapshot).
    pub excludes: Option<Patterns>,
    /// Stay on the file system of each source path.
    pub one_file_system: bool,
    /// The time recorded (default: now).
    pub time: Option<DateTime<FixedOffset>>,
    /// Uploads in flight; 0 means the backend's default.
    pub uploaders: usize,
    /// Storage class for this backup's data packs, overriding the repository's.
    pub data_storage_class: Option<String>,
    /// Set (by a signal handler, say) to stop early: the backup stops reading, uploads the
    /// pack in flight, indexes every pack it uploaded and fails with
    /// [`Error::Interrupted`], writing no snapshot. The next backup, from any host, does
    /// not upload those packs again.
    pub cancel: Option<&'a AtomicBool>,
    /// Files may change or vanish while they are read, and that is expected: a PostgreSQL
    /// data directory between `pg_backup_start` and `pg_backup_stop`, whose WAL repairs
    /// torn pages. What is read is stored without a second read or a warning, a file that
    /// vanished is left out silently, and neither gets a file-cache entry.
    pub tolerate_changes: bool,
    /// Called once the snapshot's data is durable, just before the snapshot is written: it
    /// may add to the snapshot (`pg basebackup` records `pg_backup_stop`'s answer) or fail
    /// the backup, which then writes no snapshot.
    pub before_snapshot: Option<BeforeSnapshot<'a>>,
    /// On a partial view of the index (format-spec §7.3): once the run has found this many
    /// bytes of file data new to it, it reads the index files other hosts wrote since its
    /// last full read, which may hold the rest (a file deployed on every host). Default
    /// [`EXTEND_VIEW_AFTER`].
    pub extend_view_after: u64,
}

/// See [`BackupOptions::extend_view_after`]: past 64 MiB of new data, reading a few
/// hundred index files costs less than storing what they may name a second time.
pub const EXTEND_VIEW_AFTER: u64 = 64 << 20;

/// See [`BackupOptions::before_snapshot`].
pub type BeforeSnapshot<'a> = Box<dyn FnOnce(&mut Snapshot) -> Result<()> + 'a>;

impl Default for BackupOptions<'_> {
    fn default() -> Self {
        BackupOptions {
            source: Source::Paths(Vec::new()),
            host: None,
            tags: Vec::new(),
            set: None,
            excludes: None,
            one_file_system: false,
            time: None,
            uploaders: 0,
            data_storage_class: None,
            cancel: None,
            tolerate_changes: false,
            before_snapshot: None,
            extend_view_after: EXTEND_VIEW_AFTER,
        }
    }
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// The new snapshot's id.
    pub snapshot_id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Paths that could not be read; the snapshot lacks them.
    pub warnings: Vec<String>,
    /// Under Object Lock: files whose retention this run extended.
    pub retention_extended: usize,
}

/// `{snapshot_id, set, time, parent, <summary fields>, warnings}`.
impl serde::Serialize for BackupReport {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct View<'a> {
            snapshot_id: &'a SnapshotId,
            set: &'a Option<String>,
            time: &'a str,
            parent: &'a Option<SnapshotId>,
            #[serde(flatten)]
            summary: &'a Summary,
            warnings: &'a [String],
            #[serde(skip_serializing_if = "is_zero")]
            retention_extended: usize,
        }
        View {
            snapshot_id: &self.snapshot_id,
            set: &self.snapshot.set,
            time: &self.snapshot.time,
            parent: &self.snapshot.parent,
            summary: &self.snapshot.summary,
            warnings: &self.warnings,
            retention_extended: self.retention_extended,
        }
        .serialize(ser)
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A file's content as stored, its size, and its stat when it did not change meanwhile.
type ReadContent = (FileContent, u64, Option<FileStat>);

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    dirs: AtomicU64,
    bytes_read: AtomicU64,
    errors: AtomicU64,
    files_removed: AtomicU64,
    total_bytes: AtomicU64,
}

struct Archiver<'a, 's, 'r> {
    repo: &'r Repository,
    saver: &'a BlobSaver<'s, 'r>,
    progress: &'a dyn Progress,
    excludes: Option<&'a Patterns>,
    one_file_system: bool,
    set_key: String,
    /// This run's mark on the file-cache entries it saw (see `SetState::sweep`).
    mark: i64,
    /// Whether the lineage has a snapshot to compare with (else every file is new).
    has_parent: bool,
    cancel: Option<&'a AtomicBool>,
    tolerate_changes: bool,
    counters: Counters,
    warnings: std::sync::Mutex<Vec<String>>,
}

/// Backs up `opts.source` and writes a snapshot. Long on purpose: it is the pipeline's
/// order in one place (sources, parent, archive, packs and index durable, snapshot, cache),
/// and every step hands several values to the next.
pub fn run(
    repo: &Repository,
    opts: BackupOptions<'_>,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    if let Some(class) = &opts.data_storage_class {
        crate::backend::check_storage_class(class)?;
    }
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(crate::timespec::now);
    let host = opts.host.clone().unwrap_or_else(util::hostname);
    crate::repo::snapshot::check_name("host name", &host)?;
    if let Some(set) = &opts.set {
        crate::repo::snapshot::check_name("set name", set)?;
    }

    let (paths, display_paths) = resolve_sources(&opts.source)?;
    // A source its own excludes match would be an empty snapshot, `latest` every hour
    // while forget drops the real ones (hostile pass 9).
    let excluded = |p: &&PathBuf| opts.excludes.as_ref().is_some_and(|g| g.is_match(p));
    if let Some(p) = paths.iter().find(excluded) {
        return Err(Error::BadInput {
            what: "pattern",
            reason: format!(
                "the excludes match the source {} itself: nothing of it would be backed up",
                p.display()
            ),
        });
    }

    let lineage = Lineage::of(opts.set.as_deref(), &host, &display_paths);
    let set_key = lineage.cache_key();
    repo.refresh_partial_view()?;
    let parent = find_parent(repo, &lineage)?;
    let parent_root = parent_root(repo, parent, &set_key)?;
    // Start time in ns: distinct from every earlier run's mark.
    let mark = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let shared = SaverShared::with_data_class(opts.data_storage_class.clone())
        .extending_view_after(opts.extend_view_after);
    // Dropped on any error below, it rolls back: what packs and index files the failed run
    // wrote is in the repository, and the next open reads it into the cache from there.
    let tx = repo.transaction()?;
    let scan_done = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| -> Result<(TreeId, Summary, Vec<String>)> {
        let scanner = matches!(opts.source, Source::Paths(_)).then(|| {
            let (paths, excludes, done) = (&paths, opts.excludes.as_ref(), &scan_done);
            let one_fs = opts.one_file_system;
            scope.spawn(move || scan::scan(paths, excludes, one_fs, progress, done))
        });
        let saver = BlobSaver::new(repo, &shared, scope, opts.uploaders);
        let archiver = Archiver {
            repo,
            saver: &saver,
            progress,
            excludes: opts.excludes.as_ref(),
            one_file_system: opts.one_file_system,
            set_key: set_key.clone(),
            mark,
            has_parent: parent.is_some(),
            cancel: opts.cancel,
            tolerate_changes: opts.tolerate_changes,
            counters: Counters::default(),
            warnings: Default::default(),
        };
        let root = match opts.source {
            Source::Paths(_) => archiver.virtual_tree(Path::new("/"), &paths, parent_root),
            Source::Stdin { reader, name } => archiver.stdin_tree(reader, &name, &time),
        }
        .and_then(|tree| archiver.save_tree(tree));
        scan_done.store(true, Ordering::Relaxed);
        let warnings = std::mem::take(&mut *archiver.warnings.lock().unwrap());
        let summary = archiver.summary();
        // A walk that overtook its scan (a small tree, a busy machine) knows the totals
        // itself: the progress gets them all the same.
        let scanned = scanner.map(|h| h.join().unwrap_or(false));
        if scanned == Some(false) && root.is_ok() {
            let files = summary.files_new + summary.files_changed + summary.files_unchanged;
            progress.found(files, summary.total_bytes, true);
        }
        drop(archiver);
        // Packs and their index files must be durable before the snapshot names them. On
        // an error too, what reached the backend is indexed, for the next run to reuse.
        let finished = saver.finish();
        let root = root.map_err(|e| shared.account(e))?;
        finished?;
        Ok((root, summary, warnings))
    });
    let (root, mut summary, warnings) = outcome?;
    // Under Object Lock, what the snapshot reuses must be retained as long as the snapshot
    // itself before the snapshot names it (write order: packs, index, retention, snapshot).
    let retention_extended = repo.extend_retention(&shared.reused.lock().unwrap())?;
    summary.duration_secs = started.elapsed().as_secs_f64();
    // With a warm file cache the parent's trees are not read: the files it knows and this
    // run did not see are the removed ones (a run that missed files cannot tell).
    if parent.is_some() && warnings.is_empty() && parent_root.is_none() {
        summary.files_removed += repo.set_state(&set_key).unseen(mark)?;
    }
    let mut snapshot = Snapshot {
        version: FILE_VERSION,
        time: time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
        host,
        user: util::username(),
        paths: display_paths,
        tags: opts.tags,
        set: opts.set,
        parent,
        tree: root,
        excludes: opts
            .excludes
            .as_ref()
            .map(|p| p.source().to_vec())
            .unwrap_or_default(),
        summary,
        program: concat!("strata ", env!("CARGO_PKG_VERSION")).into(),
        repaired: None,
        extensions: Default::default(),
    };
    let tx = match opts.before_snapshot {
        Some(hook) => {
            // The hook may wait on other processes sharing this cache (pg_backup_stop waits
            // for `wal push`), which must not wait on this transaction meanwhile. What it
            // holds is safe to commit: packs and index files are durable (above).
            tx.commit()?;
            hook(&mut snapshot)?;
            repo.transaction()?
        }
        None => tx,
    };
    let snapshot_id = repo.snapshots().write(&snapshot)?;
    remember(repo, &set_key, &snapshot_id, mark, warnings.is_empty())?;
    tx.commit()?;
    Ok(BackupReport {
        snapshot_id,
        snapshot,
        warnings,
        retention_extended,
    })
}

/// A cache that knows no file of this set (another host, a wiped cache) would read every
/// file again: the parent snapshot's trees say which are unchanged instead, at the cost of
/// fetching its tree packs. A parent that cannot be read only costs reading the files.
fn parent_root(
    repo: &Repository,
    parent: Option<SnapshotId>,
    set_key: &str,
) -> Result<Option<TreeId>> {
    Ok(match parent {
        Some(pid) if !repo.set_state(set_key).has_files()? => {
            repo.snapshots().get(&pid).ok().map(|s| s.tree)
        }
        _ => None,
    })
}

/// The set's last snapshot, and (after a complete run only) the files it no longer has:
/// an unreadable directory must not drop its files from the cache.
fn remember(
    repo: &Repository,
    set_key: &str,
    snapshot: &SnapshotId,
    mark: i64,
    complete: bool,
) -> Result<()> {
    repo.set_state(set_key).set_last_snapshot(snapshot)?;
    if complete {
        repo.set_state(set_key).sweep(mark)?;
    }
    Ok(())
}

/// Every source resolved before anything is written (a missing path is an error, not a
/// snapshot without it): the absolute paths to walk, and the paths the snapshot shows.
fn resolve_sources(source: &Source<'_>) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let p = match source {
        Source::Paths(p) => p,
        Source::Stdin { name, .. } => {
            return Ok((
                Vec::new(),
                vec![format!("/{}", stdin_path(name)?.join("/"))],
            ))
        }
    };
    if p.is_empty() {
        return Err(Error::NothingToBackUp);
    }
    let mut abs = Vec::new();
    for path in p {
        let a = absolute(path)?;
        fs::symlink_metadata(&a).map_err(|e| Error::io(path, e))?;
        abs.push(a);
    }
    abs.sort();
    abs.dedup();
    for a in &abs {
        for b in abs.iter().filter(|b| *b != a && a.starts_with(b)) {
            only_directories_between(b, a)?;
        }
    }
    let covered = outermost(abs);
    let shown = covered.iter().map(|p| p.display().to_string()).collect();
    Ok((covered, shown))
}

/// Sorted absolute paths without those inside another one (which it covers).
fn outermost(abs: Vec<PathBuf>) -> Vec<PathBuf> {
    abs.iter()
        .filter(|a| !abs.iter().any(|b| b != *a && a.starts_with(b)))
        .cloned()
        .collect()
}

/// The lineage a backup of `source` continues, as its snapshot will record it, worked out
/// without reading the sources: the name its metrics and hooks go under, whether the
/// backup succeeds or not.
pub fn lineage_of(set: Option<&str>, host: &str, source: &Source<'_>) -> Lineage {
    let shown = match source {
        Source::Paths(p) => {
            let mut abs: Vec<PathBuf> = p
                .iter()
                .map(|p| absolute(p).unwrap_or_else(|_| p.clone()))
                .collect();
            abs.sort();
            abs.dedup();
            outermost(abs)
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        }
        Source::Stdin { name, .. } => vec![match stdin_path(name) {
            Ok(parts) => format!("/{}", parts.join("/")),
            Err(_) => name.clone(),
        }],
    };
    Lineage::of(set, host, &shown)
}

/// A source path below another one is covered by it only through real directories: the
/// outer backup stores a symlink on the way as a link, without what it points to.
fn only_directories_between(outer: &Path, inner: &Path) -> Result<()> {
    let rest: Vec<_> = inner
        .strip_prefix(outer)
        .unwrap_or(inner)
        .components()
        .collect();
    let mut dir = outer.to_path_buf();
    let mut between = vec![dir.clone()];
    for c in &rest[..rest.len().saturating_sub(1)] {
        dir.push(c);
        between.push(dir.clone());
    }
    for dir in between {
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        if !meta.is_dir() {
            return Err(Error::SourceBelowNonDirectory {
                path: inner.to_path_buf(),
                through: dir,
                what: if meta.file_type().is_symlink() {
                    "symlink"
                } else {
                    "file"
                },
                outer: outer.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The snapshot this backup follows: the cache remembers the lineage's last one; only a
/// fresh cache lists snapshots.
fn find_parent(repo: &Repository, lineage: &Lineage) -> Result<Option<SnapshotId>> {
    if let Some(id) = repo.set_state(&lineage.cache_key()).last_snapshot()? {
        return Ok(Some(id));
    }
    Ok(repo
        .snapshots()
        .list()?
        .into_iter()
        .rev()
        .find(|(_, s)| s.lineage() == *lineage)
        .map(|(id, _)| id))
}

/// The directories and file name that `--stdin-filename` stands for, checked before
/// anything is written: a name no reader could restore must never reach a snapshot.
pub fn stdin_path(name: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| *p == "." || *p == ".." || p.contains('\0') || p.len() > 255)
    // A part past NAME_MAX (255 bytes on every Linux file system) backs up but never
    // restores to a file.
    {
        return Err(Error::InvalidStdinName(name.to_string()));
    }
    Ok(parts)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    // Lexical clean-up only: `..` is resolved against the path as written, symlinks in the
    // source path are kept as the operator named them.
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

fn timespec(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        sec,
        nsec: nsec as u32,
    }
}

fn timespec_of(ns: i64) -> Timespec {
    timespec(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Whether a parent snapshot's node has the stat a file has now.
fn same_stat(old: &Node, stat: &FileStat) -> bool {
    old.size == stat.size
        && old.inode == stat.inode
        && old.device == stat.device
        && old.mtime.as_nanos() == i128::from(stat.mtime_ns)
        && old.ctime.as_nanos() == i128::from(stat.ctime_ns)
}

fn file_stat(meta: &Metadata) -> FileStat {
    FileStat {
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        device: meta.dev(),
    }
}

impl Archiver<'_, '_, '_> {
    /// Standard input as one file, under the directories its name gives: `pg/db.sql`
    /// becomes the directory `pg` holding `db.sql`.
    fn stdin_tree(
        &self,
        reader: Box<dyn Read + Send + '_>,
        name: &str,
        time: &DateTime<FixedOffset>,
    ) -> Result<Tree> {
        let parts = stdin_path(name)?;
        let (file_name, dirs) = parts.split_last().expect("stdin_path is never empty");
        let mut node = Node::new(file_name.as_bytes().to_vec(), NodeKind::File);
        node.mode = 0o644;
        node.uid = nix::unistd::getuid().as_raw();
        node.gid = nix::unistd::getgid().as_raw();
        node.mtime = Timespec {
            sec: time.timestamp(),
            nsec: time.timestamp_subsec_nanos(),
        };
        node.ctime = node.mtime;
        let (content, size) = self.store_stream(reader, "standard input")?;
        node.set_content(content);
        node.size = size;
        self.counters.files_new.fetch_add(1, Ordering::Relaxed);
        self.counters.total_bytes.fetch_add(size, Ordering::Relaxed);
        for dir in dirs.iter().rev() {
            let mut parent = Node::new(dir.as_bytes().to_vec(), NodeKind::Dir);
            parent.mode = 0o755;
            parent.uid = node.uid;
            parent.gid = node.gid;
            parent.mtime = node.mtime;
            parent.ctime = node.ctime;
            parent.subtree = Some(self.save_tree(Tree {
                entries: vec![node],
            })?);
            node = parent;
        }
        Ok(Tree {
            entries: vec![node],
        })
    }

    /// What this run did, as the snapshot records it (its duration is set last).
    fn summary(&self) -> Summary {
        let c = &self.counters;
        let stats = &self.saver.stats;
        Summary {
            files_new: c.files_new.load(Ordering::Relaxed),
            files_changed: c.files_changed.load(Ordering::Relaxed),
            files_unchanged: c.files_unchanged.load(Ordering::Relaxed),
            dirs: c.dirs.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_added: stats.bytes_added.load(Ordering::Relaxed),
            bytes_stored: stats.bytes_stored.load(Ordering::Relaxed),
            blobs_added: stats.blobs_added.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            duration_secs: 0.0,
            data_added: stats.data_added.load(Ordering::Relaxed),
            data_stored: stats.data_stored.load(Ordering::Relaxed),
            files_removed: c.files_removed.load(Ordering::Relaxed),
            total_bytes: c.total_bytes.load(Ordering::Relaxed),
        }
    }

    fn warn(&self, msg: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.progress.warning(&msg);
        self.warnings.lock().unwrap().push(msg);
    }

    fn save_tree(&self, mut tree: Tree) -> Result<TreeId> {
        let bytes = tree.encode();
        let id = self.repo.blob_id(&bytes);
        self.saver.save(BlobKind::Tree, id, &bytes)?;
        Ok(id)
    }

    /// The parent snapshot's entries of a directory, by name (empty without a parent).
    fn parent_entries(&self, tree: Option<TreeId>) -> std::collections::HashMap<Vec<u8>, Node> {
        let Some(id) = tree else {
            return Default::default();
        };
        // A parent tree that cannot be read only costs re-reading the files.
        match self.repo.trees().load(&id) {
            Ok(t) => t.entries.into_iter().map(|n| (n.name.clone(), n)).collect(),
            Err(_) => Default::default(),
        }
    }

    /// The tree of `dir` holding only what leads to the source paths; the directories on
    /// the way keep their real metadata.
    fn virtual_tree(
        &self,
        dir: &Path,
        targets: &[PathBuf],
        parent: Option<TreeId>,
    ) -> Result<Tree> {
        if targets.iter().any(|t| t == dir) {
            let meta = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
            return self.dir_tree(dir, meta.dev(), parent);
        }
        let mut children: Vec<&OsStr> = targets
            .iter()
            .filter_map(|t| t.strip_prefix(dir).ok()?.components().next())
            .map(|c| c.as_os_str())
            .collect();
        children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        children.dedup();
        let before = self.parent_entries(parent);
        let mut entries = Vec::new();
        for name in children {
            let path = dir.join(name);
            let old = before.get(name.as_bytes());
            if targets.contains(&path) {
                self.warn_if_link(&path);
                if let Some(node) = self.archive_entry(&path, name, None, old)? {
                    entries.push(node);
                }
            } else {
                let mut meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                // A symlink on the way to a source path (a deploy's `current`) stands for the
                // directory it leads to: its own mode (0777) and owner would give a restore a
                // world-writable directory holding the files (hostile pass 5).
                if meta.file_type().is_symlink() {
                    meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
                }
                let mut node = self.base_node(&path, name, &meta, NodeKind::Dir);
                let below: Vec<PathBuf> = targets
                    .iter()
                    .filter(|t| t.starts_with(&path))
                    .cloned()
                    .collect();
                let sub = old.and_then(|n| n.subtree);
                node.subtree = Some(self.save_tree(self.virtual_tree(&path, &below, sub)?)?);
                entries.push(node);
            }
        }
        Ok(Tree { entries })
    }

    /// Archives the contents of a directory.
    fn dir_tree(&self, dir: &Path, root_dev: u64, parent: Option<TreeId>) -> Result<Tree> {
        self.counters.dirs.fetch_add(1, Ordering::Relaxed);
        let mut names = Vec::new();
        match fs::read_dir(dir) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => self.warn(format!("{}: {e}", dir.display())),
                    }
                }
            }
            Err(e) => {
                self.warn(format!("{}: cannot read directory: {e}", dir.display()));
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let before = self.parent_entries(parent);
        let nodes: Vec<Result<Option<Node>>> = names
            .par_iter()
            .map(|name| {
                let old = before.get(name.as_bytes());
                self.archive_entry(&dir.join(name), name, Some(root_dev), old)
            })
            .collect();
        let mut entries = Vec::with_capacity(nodes.len());
        for n in nodes {
            if let Some(n) = n? {
                entries.push(n);
            }
        }
        self.count_removed(&before, &entries);
        Ok(Tree { entries })
    }

    /// Counts the files of the parent's directory that this one no longer has (below a
    /// directory that is gone, every file of it).
    fn count_removed(&self, before: &std::collections::HashMap<Vec<u8>, Node>, now: &[Node]) {
        let kept: std::collections::HashSet<&[u8]> =
            now.iter().map(|n| n.name.as_slice()).collect();
        let removed: u64 = before
            .iter()
            .filter(|(name, _)| !kept.contains(name.as_slice()))
            .map(|(_, old)| match (old.kind, old.subtree) {
                (NodeKind::File, _) => 1,
                (NodeKind::Dir, Some(tree)) => self.files_below(&tree),
                _ => 0,
            })
            .sum();
        self.counters
            .files_removed
            .fetch_add(removed, Ordering::Relaxed);
    }

    /// Files below a parent tree (a tree that cannot be read counts none).
    fn files_below(&self, tree: &TreeId) -> u64 {
        let Ok(t) = self.repo.trees().load(tree) else {
            return 0;
        };
        t.entries
            .iter()
            .map(|n| match (n.kind, n.subtree) {
                (NodeKind::File, _) => 1,
                (NodeKind::Dir, Some(sub)) => self.files_below(&sub),
                _ => 0,
            })
            .sum()
    }

    /// Fails with [`Error::Interrupted`] once the caller asked the backup to stop.
    fn go_on(&self) -> Result<()> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Interrupted { packs: 0, bytes: 0 }),
            _ => Ok(()),
        }
    }

    /// A source path that is a symlink is stored as the link (as tar and restic do), not
    /// what it leads to: said, and the backup exits 3, since a snapshot of a link alone
    /// (`/srv/app -> app-v2`) would be `latest` while holding nothing (hostile pass 9).
    fn warn_if_link(&self, path: &Path) {
        let Ok(to) = fs::read_link(path) else {
            return;
        };
        self.warn(format!(
            "{}: a symlink (to {}): stored as the link, not what it leads to; give that \
             path to back up its contents",
            path.display(),
            to.display()
        ));
    }

    fn excluded(&self, path: &Path) -> bool {
        self.excludes.is_some_and(|g| g.is_match(path))
    }

    /// One directory entry; `None` when it is excluded or could not be read (a warning).
    fn archive_entry(
        &self,
        path: &Path,
        name: &OsStr,
        root_dev: Option<u64>,
        old: Option<&Node>,
    ) -> Result<Option<Node>> {
        self.go_on()?;
        if self.excluded(path) {
            return Ok(None);
        }
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_socket() {
            NodeKind::Socket
        } else if ft.is_char_device() {
            NodeKind::Chardev
        } else {
            NodeKind::Blockdev
        };
        let mut node = self.base_node(path, name, &meta, kind);
        match kind {
            NodeKind::Dir => {
                let root_dev = root_dev.unwrap_or(meta.dev());
                let tree = if self.one_file_system && meta.dev() != root_dev {
                    // A mount point: keep the directory itself, not the other file system.
                    Tree::default()
                } else {
                    let sub = old
                        .filter(|n| n.kind == NodeKind::Dir)
                        .and_then(|n| n.subtree);
                    self.dir_tree(path, root_dev, sub)?
                };
                node.subtree = Some(self.save_tree(tree)?);
            }
            NodeKind::File => {
                let old = old.filter(|n| n.kind == NodeKind::File);
                if !self.archive_file(path, &meta, &mut node, old)? {
                    return Ok(None);
                }
                self.counters
                    .total_bytes
                    .fetch_add(node.size, Ordering::Relaxed);
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(t) => node.target = Some(t.as_os_str().as_bytes().to_vec()),
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            },
            NodeKind::Chardev | NodeKind::Blockdev => node.rdev = meta.rdev(),
            NodeKind::Fifo | NodeKind::Socket => {}
        }
        Ok(Some(node))
    }

    fn base_node(&self, path: &Path, name: &OsStr, meta: &Metadata, kind: NodeKind) -> Node {
        let mut node = Node::new(name.as_bytes().to_vec(), kind);
        node.mode = meta.mode() & 0o7777;
        node.uid = meta.uid();
        node.gid = meta.gid();
        node.user = util::user_name(meta.uid());
        node.group = util::group_name(meta.gid());
        node.mtime = timespec(meta.mtime(), meta.mtime_nsec());
        node.ctime = timespec(meta.ctime(), meta.ctime_nsec());
        node.inode = meta.ino();
        node.device = meta.dev();
        node.nlink = meta.nlink();
        if kind == NodeKind::File {
            node.size = meta.size();
        }
        node.xattrs = read_xattrs(path);
        node
    }

    /// Fills in a file's content; false if it could not be read (a warning, not an error).
    fn archive_file(
        &self,
        path: &Path,
        meta: &Metadata,
        node: &mut Node,
        old: Option<&Node>,
    ) -> Result<bool> {
        self.repo.checkpoint_if_due()?;
        node.sparse = meta.blocks() * 512 < meta.size();
        let stat = file_stat(meta);
        let key = path.as_os_str().as_bytes();
        let cached = self.repo.set_state(&self.set_key).file(key)?;
        if let Some((cached_stat, content)) = &cached {
            if *cached_stat == stat && self.all_known(content)? {
                node.set_content(content.clone());
                self.repo.set_state(&self.set_key).touch(key, self.mark)?;
                // Not read again. Without a parent snapshot the entry is an interrupted
                // run's, and the file is new to this lineage.
                self.progress.advance(node.size);
                self.progress.file_done(path);
                if self.has_parent {
                    self.counters
                        .files_unchanged
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.files_new.fetch_add(1, Ordering::Relaxed);
                    self.progress.item("new", path);
                }
                return Ok(true);
            }
        }
        // No file cache yet: the parent snapshot's node, if every stat field matches.
        if let (None, Some(old)) = (&cached, old) {
            let content = old.file_content();
            if same_stat(old, &stat) && self.all_known(&content)? {
                self.repo
                    .set_state(&self.set_key)
                    .store_file(key, &stat, &content, self.mark)?;
                node.set_content(content);
                self.progress.advance(node.size);
                self.progress.file_done(path);
                self.counters
                    .files_unchanged
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
        }
        let Some((content, size, stat)) = self.read_stable(path)? else {
            return Ok(false);
        };
        if let Some(st) = &stat {
            node.mtime = timespec_of(st.mtime_ns);
            node.ctime = timespec_of(st.ctime_ns);
        }
        // The size actually read wins over a stat taken before a concurrent append.
        node.size = size;
        // Without a parent snapshot every file is new, even one an interrupted run left in
        // the file cache.
        let (counter, what) = if cached.is_some() && self.has_parent {
            (&self.counters.files_changed, "changed")
        } else {
            (&self.counters.files_new, "new")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.progress.item(what, path);
        self.progress.file_done(path);
        if let Some(stat) = stat {
            self.repo
                .set_state(&self.set_key)
                .store_file(key, &stat, &content, self.mark)?;
        }
        node.set_content(content);
        Ok(true)
    }

    /// A file's content, stored; `None` if it could not be read (warned).
    ///
    /// A file written while it is read is stored torn. Its stat before and after the
    /// read tells; such a file is read once more, and if it changes again what was read
    /// is kept, with a warning (exit 3) and without a file-cache entry, so the next run
    /// reads it again.
    fn read_stable(&self, path: &Path) -> Result<Option<ReadContent>> {
        let mut attempt = 0;
        loop {
            let file = match open_regular(path) {
                Ok(f) => f,
                Err(e) if self.tolerate_changes && e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(None);
                }
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            let before = match file.metadata() {
                Ok(m) => file_stat(&m),
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            let (content, size) = match self.store_file_content(&file, &before, path) {
                Ok(v) => v,
                Err(Error::Io { path: p, source }) => {
                    self.warn(format!("{}: {source}", p.display()));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let after = file.metadata().map(|m| file_stat(&m)).ok();
            let stable = after.as_ref().is_some_and(|a| {
                a.size == before.size
                    && a.mtime_ns == before.mtime_ns
                    && a.ctime_ns == before.ctime_ns
            }) && size == before.size;
            if stable {
                return Ok(Some((content, size, Some(before))));
            }
            if self.tolerate_changes {
                return Ok(Some((content, size, None)));
            }
            if attempt == 1 {
                self.warn(format!(
                    "{}: changed while being read (twice); stored as read ({} bytes), \
                     which may mix old and new content",
                    path.display(),
                    size
                ));
                return Ok(Some((content, size, None)));
            }
            attempt += 1;
        }
    }

    /// Whether every blob of `content` is in the repository (inline bytes always are).
    fn all_known(&self, content: &FileContent) -> Result<bool> {
        let FileContent::Blobs(ids) = content else {
            return Ok(true);
        };
        for id in ids {
            if !self.saver.is_known(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stores an open file's content: in its tree node if the repository inlines and the
    /// file turns out small, else as blobs.
    fn store_file_content(
        &self,
        file: &File,
        stat: &FileStat,
        path: &Path,
    ) -> Result<(FileContent, u64)> {
        let what = path.display().to_string();
        if stat.size > INLINE_LIMIT as u64 {
            let (ids, size) = self.store_content(file, &what)?;
            return Ok((FileContent::Blobs(ids), size));
        }
        self.store_stream(file, &what)
    }

    /// Stores a stream of unknown length (standard input, or a file whose stat said small):
    /// inline if the repository inlines and it ends within the limit, else as blobs.
    fn store_stream(&self, mut reader: impl Read, what: &str) -> Result<(FileContent, u64)> {
        if !self.repo.config().inline() {
            let (ids, size) = self.store_content(reader, what)?;
            return Ok((FileContent::Blobs(ids), size));
        }
        // One byte more than the limit tells a stream too long to inline (or a file that
        // grew since its stat).
        let mut head = Vec::with_capacity(INLINE_LIMIT + 1);
        (&mut reader)
            .take(INLINE_LIMIT as u64 + 1)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(what, e))?;
        if head.len() > INLINE_LIMIT {
            let rest = std::io::Cursor::new(head).chain(reader);
            let (ids, size) = self.store_content(rest, what)?;
            return Ok((FileContent::Blobs(ids), size));
        }
        let n = head.len() as u64;
        self.counters.bytes_read.fetch_add(n, Ordering::Relaxed);
        self.progress.advance(n);
        // An empty file has neither blobs nor data.
        let content = if head.is_empty() {
            FileContent::Blobs(Vec::new())
        } else {
            FileContent::Inline(head)
        };
        Ok((content, n))
    }

    /// Chunks a stream and stores its new chunks; returns the chunk ids and the length.
    fn store_content(&self, reader: impl Read, what: &str) -> Result<(Vec<BlobId>, u64)> {
        let mut chunker = self.repo.chunker(reader, BATCH_SIZE);
        let mut ids = Vec::new();
        let mut size = 0u64;
        loop {
            self.go_on()?;
            let batch = match chunker.next_batch() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => return Err(Error::io(what, e)),
            };
            let batch_ids: Vec<BlobId> = (0..batch.chunks.len())
                .into_par_iter()
                .map(|i| {
                    let chunk = batch.chunk(i);
                    let id = self.repo.blob_id(chunk);
                    self.saver.save(BlobKind::Data, id, chunk)?;
                    Ok(id)
                })
                .collect::<Result<_>>()?;
            ids.extend(batch_ids);
            let n = batch.data.len() as u64;
            size += n;
            self.counters.bytes_read.fetch_add(n, Ordering::Relaxed);
            self.progress.advance(n);
        }
        Ok((ids, size))
    }
}

/// Opens a source file that the walk saw as a regular file, refusing whatever another
/// user swapped in since: a FIFO would block the open (and the backup, past SIGTERM) for
/// ever, a symlink would read what it points at. O_NONBLOCK for the open only.
fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "no longer a regular file (replaced since the directory was read); not read",
        ));
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok()??;
            Some(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::open_regular;

    /// Attacker pass (issue 25): what another user swaps in for a file between the walk
    /// and the read is refused at once: a FIFO with no writer (the open blocked for ever)
    /// and a symlink; a regular file opens, blocking as usual.
    #[test]
    fn only_a_regular_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular(&link).is_err());
        let f = open_regular(&file).unwrap();
        let flags = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FcntlArg::F_GETFL,
        )
        .unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(std::io::read_to_string(f).unwrap(), "x");
    }
}
