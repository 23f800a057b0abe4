//! Restoring a snapshot: structure first, then contents pack by pack, then metadata.
//!
//! Contents are planned per pack so that each pack is read once, in few range reads, and
//! packs are processed in parallel. Metadata comes last and bottom-up, so writing a file
//! cannot disturb its directory's restored mtime. Every file-system operation goes through
//! `Target`, which never leaves the target directory.
//!
//! Damage costs only what it must: a damaged tree loses its own subtree, a damaged or
//! missing blob only the files that hold it (those are named, and renamed with a
//! `.strata-damaged` suffix rather than left looking complete), and a damaged pack only
//! its damaged blobs.

mod select;
mod target;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, TreeId};
use crate::patterns::Patterns;
use crate::progress::Progress;
use crate::repo::pack::BlobEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::thaw::{ThawWait, WaitReport};
use crate::util;
use crate::walk;

pub(crate) use target::open_trusted_dir;
pub use target::open_trusted_existing;
pub(crate) use target::Target;
pub use target::STAGED;
use target::{Apply, Ident};

/// Blobs of one pack closer than this are fetched in one range read.
pub(crate) const MAX_GAP: u64 = 256 << 10;
/// Largest single range read: a whole data pack (16 MiB of blobs plus its header) fits, so a
/// pack costs one request, and each reader thread holds at most this much.
pub(crate) const MAX_RANGE: u64 = 17 << 20;

/// Where and how a restore writes.
#[derive(Default)]
pub struct RestoreOptions {
    /// The directory the snapshot's paths are restored below.
    pub target: PathBuf,
    /// Only what matches (with the directories leading to it); everything when `None`.
    pub includes: Option<Patterns>,
    /// Paths matching these are not restored.
    pub excludes: Option<Patterns>,
    /// Read every restored file back and compare it with the snapshot.
    pub verify: bool,
    /// Report what would be restored; write nothing.
    pub dry_run: bool,
    /// How packs in archive storage are thawed and waited for. Without it (and in a dry
    /// run, which must not cost a thaw) their files are not restored: archived packs are
    /// counted, and their files named as errors unless it is a dry run.
    pub cold: Option<ThawWait>,
    /// Set (by a signal handler) to stop: no more packs are read, files left partly
    /// written are removed, and [`run`] returns [`Error::RestoreInterrupted`].
    pub cancel: Option<std::sync::Arc<AtomicBool>>,
    /// What of owners, attributes and devices is recreated.
    pub recreate: Recreate,
    /// The target is a scratch or staging directory this run made (a drill's, `pg
    /// restore`'s): it must be this user's, mode 0700, once opened. One swapped for another
    /// user's directory would hand them the decrypted copy.
    pub private: bool,
    /// The memory of one batch of entries, estimated; `None`: `STRATA_RESTORE_BATCH_BYTES`
    /// or 16 MiB.
    pub batch_bytes: Option<usize>,
    /// Regular files (snapshot paths) the caller puts in place itself (`pg restore
    /// --delta` moves those a data directory holds already): not restored, not counted.
    pub provided: HashSet<PathBuf>,
}

/// What of a snapshot's owners, extended attributes and devices a restore (or a dump)
/// recreates, with the options `tar` and `rsync` users know. By default everything the
/// restoring user may: owners only as root. Set-id bits and file capabilities go only
/// with the snapshot's owners (issue 31, item 3): a restore as another user, or with
/// `no_owner`, drops them (a directory's setgid stays).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recreate {
    /// Everything is owned by the restoring user (`--no-owner`).
    pub no_owner: bool,
    /// No extended attributes are set (`--no-xattrs`).
    pub no_xattrs: bool,
    /// Block and character devices are skipped, each named in the report
    /// (`--no-devices`): a snapshot can hold a world-writable disk.
    pub no_devices: bool,
}

impl Recreate {
    /// Whether entries get the snapshot's owners: as root, unless `no_owner`.
    pub fn owners(&self) -> bool {
        !self.no_owner && util::is_root()
    }

    /// Whether `node` is a device this restore skips.
    pub fn skips(&self, node: &Node) -> bool {
        self.no_devices && matches!(node.kind, NodeKind::Chardev | NodeKind::Blockdev)
    }
}

/// One thing that went wrong: where, and why. Causes repeat (a full disk fails every
/// file), so the CLI groups by cause.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreError {
    /// The path in the snapshot, when the error concerns one (serialized lossily).
    #[serde(serialize_with = "lossy_path")]
    pub path: Option<PathBuf>,
    /// What went wrong.
    pub cause: String,
}

fn lossy_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    match path {
        Some(p) => ser.serialize_some(&p.to_string_lossy()),
        None => ser.serialize_none(),
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.cause),
            None => f.write_str(&self.cause),
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// Files restored exactly: without an error (in `errors`) on their path.
    pub files: u64,
    /// Directories restored without an error.
    pub dirs: u64,
    /// Symlinks, devices, fifos and sockets restored without an error.
    pub other: u64,
    /// Bytes of content of the files restored exactly (a hard-linked file's once).
    pub bytes: u64,
    /// Files read back and found identical (with `verify`).
    pub verified_files: u64,
    /// Files that could not be restored exactly (snapshot paths); each is also in `errors`.
    /// Serialized lossily: a name that is not UTF-8 must not make the report unprintable.
    #[serde(serialize_with = "lossy_paths")]
    pub damaged_files: Vec<PathBuf>,
    /// Of those, the ones written and renamed with the suffix `.strata-damaged`.
    pub marked_damaged: u64,
    /// Of those, the ones the target could not take (a full disk, an I/O error): what
    /// was written of them is removed, not kept as damaged (it is the snapshot's, not
    /// damage, and a partial copy would keep the disk full).
    pub unwritten: u64,
    /// Serialized as `path: cause` lines.
    #[serde(serialize_with = "as_lines")]
    pub errors: Vec<RestoreError>,
    /// Devices not restored (`no_devices`), snapshot paths (serialized lossily).
    #[serde(serialize_with = "lossy_paths")]
    pub skipped_devices: Vec<PathBuf>,
    /// Unix sockets, which no restore can recreate (the program that listens on one makes
    /// it), as tar skips them: snapshot paths (serialized lossily).
    #[serde(serialize_with = "lossy_paths")]
    pub skipped_sockets: Vec<PathBuf>,
    /// Directories the target held already: they keep their owner, mode, attributes and
    /// times (the snapshot's go only to directories the restore makes).
    pub kept_dirs: u64,
    /// Staged files a restore killed outright had left in the target, removed.
    pub stale_removed: usize,
    /// Data packs met in archive storage.
    pub archived_packs: usize,
    /// Errors, damaged files and skipped entries beyond the first 10,000 of each
    /// list: counted, not listed.
    pub unlisted: u64,
    /// What thawing them cost, when the restore waited for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thaw: Option<WaitReport>,
}

fn lossy_paths<S: serde::Serializer>(
    paths: &[PathBuf],
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    ser.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

fn as_lines<S: serde::Serializer>(
    errors: &[RestoreError],
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    ser.collect_seq(errors.iter().map(|e| e.to_string()))
}

#[derive(Clone)]
struct Item {
    /// Path in the snapshot, e.g. `/srv/data/a.json`.
    path: PathBuf,
    node: Node,
    /// For the second and later names of a hard-linked file: the item of this batch
    /// holding the content,
    link_to: Option<usize>,
    /// or the name an earlier batch restored it under.
    earlier: Option<select::Earlier>,
}

impl Item {
    /// The path relative to the target.
    fn rel(&self) -> &Path {
        self.path.strip_prefix("/").unwrap_or(&self.path)
    }

    /// Not a later name of a hard-linked file: the item whose content is written.
    fn holds_content(&self) -> bool {
        self.link_to.is_none() && self.earlier.is_none()
    }
}

/// One blob to fetch and where its plaintext goes.
struct Fetch {
    entry: BlobEntry,
    targets: Vec<(usize, u64)>,
}

/// Errors and damaged files, gathered from the parallel phases.
#[derive(Default)]
struct Trouble {
    errors: Mutex<Vec<RestoreError>>,
    /// Items (by index) whose content is not what the snapshot holds.
    damaged: Mutex<HashSet<usize>>,
    /// Of those, the ones a write to the target failed for (see
    /// [`RestoreReport::unwritten`]).
    unwritten: Mutex<HashSet<usize>>,
}

impl Trouble {
    fn error(&self, path: Option<&Path>, cause: impl fmt::Display) {
        let mut cause = cause.to_string();
        // The report puts the path first: a cause that starts with it already (a library
        // error naming its file) does not say it twice.
        if let Some(named) = path.and_then(|p| cause.strip_prefix(&format!("{}: ", p.display()))) {
            cause = named.to_string();
        }
        self.errors.lock().unwrap().push(RestoreError {
            path: path.map(Path::to_path_buf),
            cause,
        });
    }

    fn damaged(&self, items: &[Item], idx: usize, cause: impl fmt::Display) {
        if self.damaged.lock().unwrap().insert(idx) {
            self.error(Some(&items[idx].path), cause);
        }
    }

    /// Item `idx`'s file could not be written to the target.
    fn unwritten(&self, items: &[Item], idx: usize, cause: impl fmt::Display) {
        self.unwritten.lock().unwrap().insert(idx);
        self.damaged(items, idx, cause);
    }
}

/// Errors, damaged files and skipped entries a report lists, each; more are counted in
/// [`RestoreReport::unlisted`] (a crafted snapshot can damage every one of 10^7 files).
const LISTED: usize = 10_000;

/// Restores `snap` below `opts.target`. Never writes outside the target, never follows a
/// symlink in it; errors on single files are collected in the report, not fatal.
///
/// The walk of the snapshot's trees streams into batches of bounded memory
/// (about 16 MiB of entries, or `STRATA_RESTORE_BATCH_BYTES`), each written whole (its
/// directories, then its packs' content, then its entries' metadata) before the walk goes
/// on; a directory's metadata once the walk has left it.
pub fn run(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // A tree bomb is refused before the target is touched: judged by its first part
    // only, it was refused after its first batch was written (hostile pass 7).
    let limits = walk::expansion(repo, walk::Limits::of(snapshot))?;
    let target = if opts.dry_run {
        None
    } else {
        let tree = snapshot.tree.to_hex();
        let open = Target::open_restoring(&opts.target, opts.private, &tree);
        Some(open.map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::RestoreRunning(e.to_string()),
            _ => Error::io(&opts.target, e),
        })?)
    };
    let trouble = Trouble::default();
    let mut run = Run {
        repo,
        snapshot,
        opts,
        warmed: Default::default(),
        progress,
        target: target.as_ref(),
        trouble: &trouble,
        report: RestoreReport::default(),
        planned: 0,
        written: AtomicU64::new(0),
    };
    let mut sel = select::Selector::new(opts, opts.batch_bytes.unwrap_or_else(batch_bytes));
    // A repository gone meanwhile loses no subtree: the restore stops; so does a tree
    // that expands past its snapshot's counts.
    let gone = std::cell::RefCell::new(None);
    let mut on_error = |tree: &TreeId, dir: &Path, e: Error| match e {
        Error::NoRepository(_) | Error::TreeExpands { .. } => *gone.borrow_mut() = Some(e),
        e => trouble.error(
            Some(&Path::new("/").join(dir)),
            format!("not restored: tree {tree}: {e}"),
        ),
    };
    walk::walk_tolerant(
        repo,
        &snapshot.tree,
        limits,
        &mut |rel, node| {
            if opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                // Every earlier batch is whole: nothing partly written to remove.
                return Err(Error::RestoreInterrupted { removed: 0 });
            }
            // Restore's own names (its staged files, its journal): a snapshot's entry
            // under one would pass for a killed restore's journal to the next restore
            // (hostile pass 6: it re-owned an existing private directory), or be swept.
            if node.name.starts_with(STAGED.as_bytes()) {
                let cause = format!("not restored: {STAGED}* names are restore's own");
                trouble.error(Some(&Path::new("/").join(rel)), cause);
                return Ok(false);
            }
            let descend = sel.visit(rel, node);
            if sel.full() && gone.borrow().is_none() {
                run.batch(&mut sel, false)?;
            }
            Ok(descend)
        },
        &mut on_error,
    )?;
    if let Some(e) = gone.into_inner() {
        return Err(e);
    }
    sel.end();
    run.batch(&mut sel, true)?;
    if let Some(t) = &target {
        t.done();
    }
    let mut report = run.report;
    let (skipped, sockets) = (sel.skipped, sel.sockets);
    report.unlisted += listed(&mut report.skipped_devices, skipped);
    report.unlisted += listed(&mut report.skipped_sockets, sockets);
    if sel.links_full {
        progress.warning(&format!(
            "more than {} hard-linked files: later names of the rest were restored as \
             copies, not links",
            select::LINKS_MAX
        ));
    }
    if report.unlisted > 0 {
        report.errors.push(RestoreError {
            path: None,
            cause: format!(
                "{} more errors, damaged files or skipped entries are not listed",
                report.unlisted
            ),
        });
    }
    report.stale_removed = target.as_ref().map_or(0, Target::swept);
    Ok(report)
}

/// Appends `more` to `list` up to [`LISTED`]; returns how many did not fit.
fn listed<T>(list: &mut Vec<T>, more: Vec<T>) -> u64 {
    let room = LISTED.saturating_sub(list.len());
    let over = more.len().saturating_sub(room) as u64;
    list.extend(more.into_iter().take(room));
    over
}

/// The batch budget: `STRATA_RESTORE_BATCH_BYTES` (tests make batches of a few entries
/// with it), else [`select::BATCH_BYTES`].
fn batch_bytes() -> usize {
    std::env::var("STRATA_RESTORE_BATCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(select::BATCH_BYTES)
}

/// What a restore keeps from one batch to the next.
struct Run<'a> {
    repo: &'a Repository,
    snapshot: &'a Snapshot,
    opts: &'a RestoreOptions,
    /// Whether the thaws of every archived pack the restore needs were requested.
    warmed: std::cell::Cell<bool>,
    progress: &'a dyn Progress,
    target: Option<&'a Target>,
    /// This batch's errors and damaged files (drained into the report after each).
    trouble: &'a Trouble,
    report: RestoreReport,
    /// Plaintext bytes of the batches planned so far: the progress bar's total.
    planned: u64,
    written: AtomicU64,
}

impl Run<'_> {
    /// Writes the selector's batch: directories, then symlinks, devices and inline files,
    /// then the packs' content, then hard links and metadata, then the metadata of the
    /// directories the walk has left. An interruption, or the repository gone, ends the
    /// restore (files partly written removed).
    fn batch(&mut self, sel: &mut select::Selector<'_>, last: bool) -> Result<()> {
        if sel.is_empty() {
            // Nothing to write, but the walk's own errors (a tree unread, a name refused)
            // still go into the report.
            self.drain(&[], 0);
            return Ok(());
        }
        let select::Batch { items, closed } = sel.take_batch();
        let files: Vec<FileSlot> = items.iter().map(|_| FileSlot::default()).collect();
        let own_dirs: Vec<OnceLock<Ident>> = items.iter().map(|_| OnceLock::new()).collect();
        let archived = Mutex::new(Vec::new());
        let mut ctx = Ctx {
            repo: self.repo,
            items: &items,
            files: &files,
            how: Apply {
                owners: self.opts.recreate.owners(),
                xattrs: !self.opts.recreate.no_xattrs,
            },
            target: self.target,
            progress: self.progress,
            written: &self.written,
            trouble: self.trouble,
            archived: Some(&archived),
            cancel: self.opts.cancel.as_deref(),
            own_dirs: &own_dirs,
            kept_dirs: AtomicU64::new(0),
            gone: OnceLock::new(),
        };
        // Planning asks the index; creating directories asks the file system: both at once.
        let (plan, ()) = rayon::join(
            || ContentPlan::new(self.repo, &items, &files, self.trouble),
            || ctx.create_entries(),
        );
        self.planned += plan.bytes;
        self.progress.set_total(self.planned);
        self.repo.with_read_pool(|| {
            plan.packs
                .par_iter()
                .for_each(|(pack, fetches)| restore_pack(&ctx, pack, fetches))
        });
        let archived = std::mem::take(&mut *archived.lock().unwrap());
        self.report.archived_packs += archived.len();
        if !archived.is_empty() && !self.opts.dry_run {
            let asked = if last { 0 } else { self.warm_up() };
            ctx.archived = None;
            let cold = self.opts.cold.as_ref();
            let thaw = restore_archived(&ctx, &plan, &archived, cold);
            if asked > 0 || thaw.is_some() {
                let total = self.report.thaw.get_or_insert_with(Default::default);
                total.requested += asked;
                total.add(&thaw.unwrap_or_default());
            }
        }
        if ctx.cancelled() {
            let removed = ctx.remove_partial();
            return Err(match ctx.gone.take() {
                Some(at) => Error::NoRepository(at),
                None => Error::RestoreInterrupted { removed },
            });
        }
        ctx.damage_links();
        ctx.finish_entries();
        if self.opts.verify {
            self.report.verified_files += ctx.verify();
        }
        self.report.unwritten += ctx.remove_unwritten();
        self.report.marked_damaged += ctx.mark_damaged();
        // Last: a directory's mode may shut out what came before (its owner's writes, too),
        // and one changed is no longer the directory checked (see `Target::make_dir`).
        let dirs_failed = ctx.finish_dirs(&closed);
        self.report.kept_dirs += ctx.kept_dirs.load(Ordering::Relaxed);
        let damaged = self.trouble.damaged.lock().unwrap().clone();
        sel.written(
            &items,
            |n| own_dirs[n].get().copied(),
            |n| {
                files[n]
                    .ident()
                    .filter(|_| !damaged.contains(&n) && files[n].staged(items[n].rel()).is_none())
            },
        );
        self.drain(&items, dirs_failed);
        Ok(())
    }

    /// Requests the thaws of every archived pack the restore needs, once, when a batch
    /// that is not the last meets one: the later batches' packs thaw while this one waits,
    /// so that a restore waits about one thaw, not one per batch.
    /// Returns how many thaws it requested.
    fn warm_up(&self) -> usize {
        let Some(wait) = self
            .opts
            .cold
            .as_ref()
            .filter(|_| !self.warmed.replace(true))
        else {
            return 0;
        };
        let includes = self.opts.includes.as_ref();
        let asked = crate::thaw::packs_needed(self.repo, self.snapshot, includes)
            .and_then(|packs| crate::thaw::warm_up(self.repo, &packs, wait.request));
        match asked {
            Ok(w) => w.requested,
            // Each batch still requests its own.
            Err(e) => {
                self.progress.warning(&format!(
                    "could not request the thaws of the rest of the restore ahead: {e}"
                ));
                0
            }
        }
    }

    /// Moves the batch's errors and damaged files into the report, counting what it
    /// restored exactly; `dirs_failed` directories of earlier batches were counted there.
    fn drain(&mut self, items: &[Item], dirs_failed: u64) {
        let errors = std::mem::take(&mut *self.trouble.errors.lock().unwrap());
        let damaged = std::mem::take(&mut *self.trouble.damaged.lock().unwrap());
        let mut damaged: Vec<usize> = damaged.into_iter().collect();
        damaged.sort_unstable();
        self.report.count(items, &errors);
        self.report.dirs = self.report.dirs.saturating_sub(dirs_failed);
        let damaged = damaged.iter().map(|i| items[*i].path.clone()).collect();
        self.report.unlisted += listed(&mut self.report.damaged_files, damaged);
        self.report.unlisted += listed(&mut self.report.errors, errors);
    }
}

/// The files of archived packs: restored as each thaws when `cold` says how to wait, else
/// (and where a thaw failed) lost. A pack archived again by the time it is read is lost
/// like any unreadable one.
fn restore_archived(
    ctx: &Ctx<'_>,
    plan: &ContentPlan,
    archived: &[PackId],
    cold: Option<&crate::thaw::ThawWait>,
) -> Option<crate::thaw::WaitReport> {
    let fetches: HashMap<PackId, &Vec<Fetch>> = plan.packs.iter().map(|(p, f)| (*p, f)).collect();
    let lose = |packs: &[PackId], e: &Error| {
        for p in packs {
            for f in fetches[p] {
                blob_lost(ctx, p, f, e);
            }
        }
    };
    let Some(wait) = cold else {
        // No thawing asked for: the archived packs' files are not restored.
        for p in archived {
            let e = Error::Archived {
                object: format!("data pack {p}"),
            };
            lose(std::slice::from_ref(p), &e);
        }
        return None;
    };
    // Hot packs are restored; the archived ones follow each as soon as it thaws.
    let restore_batch = |batch: &[PackId]| {
        ctx.repo.with_read_pool(|| {
            batch
                .par_iter()
                .for_each(|p| restore_pack(ctx, p, fetches[p]))
        })
    };
    let thawed = crate::thaw::thaw_then_read(
        ctx.repo,
        archived,
        wait,
        ctx.cancel,
        ctx.progress,
        restore_batch,
    );
    match thawed {
        Ok(w) => Some(w),
        Err(failed) => {
            let (e, left) = *failed;
            lose(&left, &e);
            None
        }
    }
}

impl RestoreReport {
    /// Counts the items restored exactly: one with an error (not created, damaged, its
    /// metadata not applied) must not pass for restored in the summary.
    fn count(&mut self, items: &[Item], errors: &[RestoreError]) {
        let failed: HashSet<&Path> = errors.iter().filter_map(|e| e.path.as_deref()).collect();
        for item in items.iter().filter(|i| !failed.contains(i.path.as_path())) {
            match item.node.kind {
                NodeKind::Dir => self.dirs += 1,
                NodeKind::File => self.files += 1,
                _ => self.other += 1,
            }
            // The content of the files restored exactly, each once however many names.
            if item.node.kind == NodeKind::File && item.holds_content() {
                self.bytes += item.node.size;
            }
        }
    }
}

/// What the content phase reads: packs in the order of the files they fill, each pack's
/// blobs by offset, each blob with the places its plaintext goes.
struct ContentPlan {
    packs: Vec<(PackId, Vec<Fetch>)>,
    /// Plaintext bytes to write.
    bytes: u64,
}

impl ContentPlan {
    /// Also counts each file's pieces in its slot. A blob the index does not know costs
    /// the files holding it, not the restore.
    fn new(repo: &Repository, items: &[Item], files: &[FileSlot], trouble: &Trouble) -> Self {
        let mut by_pack: HashMap<PackId, HashMap<BlobId, Fetch>> = HashMap::new();
        let mut bytes = 0u64;
        for (idx, item) in items.iter().enumerate() {
            if item.node.kind != NodeKind::File || !item.holds_content() {
                continue;
            }
            // Files without blobs are written (and their size checked) with the entries.
            if item.node.content.is_empty() {
                continue;
            }
            // Nothing is fetched for a file whose blobs are not all indexed, or do not add
            // up to its size: what is written must be the file the listing shows.
            let locs = match (item.node.content.iter())
                .map(|id| repo.lookup_blob(id))
                .collect::<Result<Vec<_>>>()
            {
                Ok(locs) => locs,
                Err(e) => {
                    trouble.damaged(items, idx, e);
                    continue;
                }
            };
            // Inline bytes beside blobs are a lie too: they count, and are never written.
            let inline = item.node.data.as_ref().map_or(0, |d| d.len() as u64);
            let len = inline
                + locs
                    .iter()
                    .map(|l| u64::from(l.entry.raw_length))
                    .sum::<u64>();
            if let Err(e) = item.node.check_size(&item.path, len) {
                trouble.damaged(items, idx, e);
                continue;
            }
            let mut offset = 0u64;
            for (id, loc) in item.node.content.iter().zip(locs) {
                by_pack
                    .entry(loc.pack)
                    .or_default()
                    .entry(*id)
                    .or_insert_with(|| Fetch {
                        entry: loc.entry,
                        targets: Vec::new(),
                    })
                    .targets
                    .push((idx, offset));
                files[idx].remaining.fetch_add(1, Ordering::Relaxed);
                offset += loc.entry.raw_length as u64;
                bytes += loc.entry.raw_length as u64;
            }
        }
        let mut packs: Vec<(PackId, Vec<Fetch>)> = by_pack
            .into_iter()
            .map(|(p, blobs)| {
                let mut v: Vec<Fetch> = blobs.into_values().collect();
                v.sort_by_key(|f| f.entry.offset);
                (p, v)
            })
            .collect();
        // In the order of the files they fill: a backup writes a file's chunks into
        // consecutive packs, and rayon splits this list in halves, so the threads work on
        // different files instead of queueing on one file's inode lock.
        packs.sort_by_key(|(p, fetches)| {
            (
                fetches
                    .iter()
                    .filter_map(|f| f.targets.first())
                    .min()
                    .copied(),
                *p,
            )
        });
        ContentPlan { packs, bytes }
    }
}

/// Directories, parents first: one level of depth at a time, each level in parallel. The
/// inode of each the restore is to give the snapshot's metadata goes in `own`; returns how
/// many were there already (they keep theirs).
fn make_dirs(t: &Target, items: &[Item], own: &[OnceLock<Ident>], trouble: &Trouble) -> u64 {
    let kept = AtomicU64::new(0);
    for level in dir_levels(items) {
        level
            .par_iter()
            .for_each(|&(idx, item)| match t.make_dir(item.rel(), &item.node) {
                Ok(Some(id)) => drop(own[idx].set(id)),
                Ok(None) => drop(kept.fetch_add(1, Ordering::Relaxed)),
                Err(e) => trouble.error(Some(&item.path), e),
            });
    }
    kept.into_inner()
}

/// Directories (with their index) by depth, the target's own entries first.
fn dir_levels(items: &[Item]) -> Vec<Vec<(usize, &Item)>> {
    let mut levels: Vec<Vec<(usize, &Item)>> = Vec::new();
    for (idx, item) in items.iter().enumerate() {
        if item.node.kind != NodeKind::Dir {
            continue;
        }
        let depth = item.rel().components().count();
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push((idx, item));
    }
    levels
}

/// Entries other than directories and regular files.
fn create(t: &Target, item: &Item) -> std::io::Result<()> {
    let node = &item.node;
    let rel = item.rel();
    match node.kind {
        NodeKind::Symlink => t.symlink(rel, node.target.as_deref().unwrap_or_default()),
        NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => t.special(rel, node),
        NodeKind::Dir | NodeKind::File | NodeKind::Socket => Ok(()),
    }
}

/// Descriptors of files still being written that are kept open for their later packs,
/// process-wide (the usual soft limit is 1024 descriptors). A file beyond it is opened by
/// path again for each pack, and used only if it is still the inode it was created as.
const HELD_FILES: usize = 256;
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A regular file the restore created: its inode, and the staged name beside its own that
/// it is written under until complete (a killed restore leaves no partial file under a
/// real name).
struct Made {
    id: Ident,
    staged: std::ffi::OsString,
}

/// A regular file's progress through the content phase, shared by the threads writing
/// its blobs.
#[derive(Default)]
struct FileSlot {
    /// Set once the file was created (or the error, for every later writer).
    created: OnceLock<std::result::Result<Made, String>>,
    /// The descriptor it was created with, while it is being written and [`HELD_FILES`]
    /// allows: no lookup by path, which another user could redirect, between two packs.
    held: Mutex<Option<Arc<fs::File>>>,
    /// Blobs still to be written; whoever writes the last one applies the metadata.
    remaining: AtomicUsize,
    finished: AtomicBool,
    /// Renamed from its staged name onto its own.
    placed: AtomicBool,
    /// Removed: the target could not take it.
    gone: AtomicBool,
}

impl FileSlot {
    /// The file open for writing: created by the first caller (which also gets its
    /// directory, to put it in place without looking it up again); later ones get the
    /// same descriptor, or the same inode opened again, or an error if its name now holds
    /// another (issue 31, item 4).
    fn open(&self, t: &Target, item: &Item) -> std::io::Result<(Arc<fs::File>, Option<OwnedFd>)> {
        let mut fresh = None;
        let created = self.created.get_or_init(|| {
            let file = t.create_staged(item.rel()).and_then(|new| {
                // Sized up front: unwritten (zero) ranges of sparse files stay holes.
                if item.node.sparse {
                    new.file.set_len(item.node.size)?;
                }
                let id = Ident::of(&new.file)?;
                Ok((
                    Made {
                        id,
                        staged: new.name,
                    },
                    new.file,
                    new.dir,
                ))
            });
            file.map(|(made, f, dir)| {
                fresh = Some((Arc::new(f), dir));
                made
            })
            .map_err(|e| e.to_string())
        });
        match (fresh, created) {
            (Some((f, dir)), _) => {
                self.hold(&f);
                Ok((f, Some(dir)))
            }
            (None, Ok(made)) => match self.held.lock().unwrap().clone() {
                Some(f) => Ok((f, None)),
                None => {
                    (t.open_write(&self.name(item.rel()), made.id)).map(|f| (Arc::new(f), None))
                }
            },
            (None, Err(e)) => Err(std::io::Error::other(e.clone())),
        }
    }

    fn hold(&self, f: &Arc<fs::File>) {
        if HELD.fetch_add(1, Ordering::Relaxed) < HELD_FILES {
            *self.held.lock().unwrap() = Some(f.clone());
        } else {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Closes the held descriptor (once the file is finished).
    fn release(&self) {
        if self.held.lock().unwrap().take().is_some() {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The inode the file was created as.
    fn ident(&self) -> Option<Ident> {
        self.made().map(|m| m.id)
    }

    fn made(&self) -> Option<&Made> {
        self.created.get().and_then(|c| c.as_ref().ok())
    }

    /// Where the file is while not in place: its staged name beside `rel`.
    fn staged(&self, rel: &Path) -> Option<PathBuf> {
        match self.placed.load(Ordering::Acquire) {
            true => None,
            false => self.made().map(|m| rel.with_file_name(&m.staged)),
        }
    }

    /// Where the file is now: staged, or in place at `rel`.
    fn name(&self, rel: &Path) -> PathBuf {
        self.staged(rel).unwrap_or_else(|| rel.to_path_buf())
    }

    /// Renames the complete file from its staged name onto `rel` (in `dir`, if open).
    fn place(&self, t: &Target, rel: &Path, dir: Option<&OwnedFd>) -> std::io::Result<()> {
        let made = self
            .made()
            .ok_or_else(|| std::io::Error::other("the file could not be created"))?;
        t.place(rel, &made.staged, made.id, dir.map(|d| d.as_fd()))?;
        self.placed.store(true, Ordering::Release);
        Ok(())
    }

    fn created(&self) -> bool {
        self.created.get().is_some()
    }

    /// The file could not be created: whatever holds its name in the target (a directory
    /// of the operator's, say) is not ours to chmod or rename.
    fn failed(&self) -> bool {
        matches!(self.created.get(), Some(Err(_)))
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a file whose content is complete is not restored exactly.
enum Unfinished {
    /// Its metadata could not be applied; it is in place (its content is whole).
    Metadata(std::io::Error),
    /// It could not be put under its own name: it stays staged, to be marked damaged.
    Unplaced(std::io::Error),
}

/// Applies a complete file's metadata through the descriptor that wrote it, then renames it
/// onto its own name; `file` and its directory `dir` (if open) as [`FileSlot::open`] gave.
fn finish_file(
    t: &Target,
    (file, dir): (&fs::File, Option<&OwnedFd>),
    item: &Item,
    slot: &FileSlot,
    how: Apply,
) -> std::result::Result<(), Unfinished> {
    // Finished even if this fails: the error is reported once, here.
    slot.finished.store(true, Ordering::Release);
    slot.release();
    let meta = t.set_metadata_of(file, &item.node, how);
    slot.place(t, item.rel(), dir)
        .map_err(Unfinished::Unplaced)?;
    meta.map_err(Unfinished::Metadata)
}

/// What the parallel content phase shares.
struct Ctx<'a> {
    repo: &'a Repository,
    items: &'a [Item],
    files: &'a [FileSlot],
    how: Apply,
    target: Option<&'a Target>,
    progress: &'a dyn Progress,
    written: &'a AtomicU64,
    trouble: &'a Trouble,
    /// Where packs in archive storage are put aside, to be thawed (or counted), rather
    /// than lost; `None` once they are being thawed.
    archived: Option<&'a Mutex<Vec<PackId>>>,
    cancel: Option<&'a AtomicBool>,
    /// Per item: the inode of a directory the restore is to give the snapshot's metadata.
    own_dirs: &'a [OnceLock<Ident>],
    /// Directories that were there already, and kept their metadata.
    kept_dirs: AtomicU64,
    /// The repository's location, once it was found gone mid-restore.
    gone: OnceLock<String>,
}

impl Ctx<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) || self.gone.get().is_some()
    }

    /// Reports what [`finish_file`] could not do for item `idx`.
    fn finished(&self, idx: usize, done: std::result::Result<(), Unfinished>) {
        match done {
            Ok(()) => {}
            Err(Unfinished::Metadata(e)) => self.trouble.error(Some(&self.items[idx].path), e),
            Err(Unfinished::Unplaced(e)) => self.trouble.damaged(self.items, idx, e),
        }
    }

    /// After an interruption: files created but not complete must not pass for restored
    /// (a sparse one already has its full size): their staged names go; returns how many.
    fn remove_partial(&self) -> usize {
        let Some(t) = self.target else {
            return 0;
        };
        let staged = (self.items.iter().zip(self.files)).filter_map(|(i, s)| s.staged(i.rel()));
        staged.filter(|at| t.remove_file(at).is_ok()).count()
    }

    /// Directories, then symlinks, devices, empty files and files held inline in their
    /// tree node. Files with blobs are
    /// created when their first blob arrives, so that fetching does not wait for 10^4
    /// inodes, and each file is opened once for its content and metadata.
    fn create_entries(&self) {
        let Some(t) = self.target else {
            // A dry run reports the inline bytes as it does blobs it would write.
            let inline = (self.items.iter())
                .filter(|i| i.holds_content())
                .filter_map(|i| i.node.data.as_ref())
                .map(|d| d.len() as u64)
                .sum();
            self.written.fetch_add(inline, Ordering::Relaxed);
            return;
        };
        let kept = make_dirs(t, self.items, self.own_dirs, self.trouble);
        self.kept_dirs.store(kept, Ordering::Relaxed);
        self.items
            .par_iter()
            .enumerate()
            .filter(|(_, i)| i.node.kind != NodeKind::Dir && i.holds_content())
            .filter(|(_, i)| i.node.kind != NodeKind::File || i.node.content.is_empty())
            .for_each(|(idx, item)| {
                let made = if item.node.kind == NodeKind::File {
                    let inline = item.node.data.as_ref().map_or(0, |d| d.len() as u64);
                    if let Err(e) = item.node.check_size(&item.path, inline) {
                        // Created empty and marked damaged with the files that lost blobs.
                        return self.trouble.damaged(self.items, idx, e);
                    }
                    let slot = &self.files[idx];
                    let written = slot.open(t, item).and_then(|(f, dir)| {
                        if let Some(data) = &item.node.data {
                            (&*f).write_all(data)?;
                            self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
                            self.progress.advance(data.len() as u64);
                        }
                        Ok((f, dir))
                    });
                    return match written {
                        Ok((f, dir)) => {
                            let done = finish_file(t, (&f, dir.as_ref()), item, slot, self.how);
                            self.finished(idx, done)
                        }
                        Err(e) => self.trouble.unwritten(self.items, idx, e),
                    };
                } else {
                    create(t, item)
                };
                if let Err(e) = made {
                    self.trouble.error(Some(&item.path), e);
                }
            });
    }

    /// The inode item `idx`'s file was created as.
    fn ident_of(&self, idx: usize) -> std::io::Result<Ident> {
        self.files[idx]
            .ident()
            .ok_or_else(|| std::io::Error::other("the file could not be created"))
    }

    /// The inode holding item `idx`'s content: its own, or its first name's.
    fn content_ident(&self, idx: usize) -> std::io::Result<Ident> {
        let item = &self.items[idx];
        match (item.link_to, &item.earlier) {
            (Some(first), _) => self.ident_of(first),
            (None, Some(e)) => {
                e.id.ok_or_else(|| std::io::Error::other("its first name was not restored"))
            }
            (None, None) => self.ident_of(idx),
        }
    }

    /// Second and later names of a damaged file are damaged too; so are those of a file
    /// an earlier batch did not restore exactly (they are not made).
    fn damage_links(&self) {
        let mut damaged = self.trouble.damaged.lock().unwrap();
        let links: Vec<usize> = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.link_to.is_some_and(|f| damaged.contains(&f)))
            .map(|(n, _)| n)
            .collect();
        damaged.extend(links);
        drop(damaged);
        // A dry run made no inodes to link.
        let made = self.target.is_some();
        for (n, item) in self.items.iter().enumerate().filter(|_| made) {
            if let Some(e) = item.earlier.as_ref().filter(|e| e.id.is_none()) {
                let cause = format!("a hard link of /{}, not restored exactly", e.rel.display());
                self.trouble.damaged(self.items, n, cause);
            }
        }
    }

    /// After the contents: files none of whose content arrived (they are marked damaged
    /// later), hard links, and the metadata not applied yet (directories' comes last, in
    /// [`Ctx::finish_dirs`]).
    fn finish_entries(&self) {
        let Some(t) = self.target else {
            return;
        };
        let (items, files) = (self.items, self.files);
        let make = |(idx, item): (usize, &Item)| {
            let made = match (item.link_to, &item.earlier) {
                (Some(first), _) => self
                    .ident_of(first)
                    .and_then(|id| self.link(t, idx, first, id)),
                (None, Some(e)) => match e.id {
                    Some(id) => t.hard_link(&e.rel, id, item.rel()),
                    // Damaged with it (`damage_links`), and not made.
                    None => return,
                },
                (None, None) => files[idx].open(t, item).map(drop),
            };
            if let Err(e) = made {
                // A link not made (past the file system's link limit, say) is no entry
                // to give metadata: one error, not a second ENOENT (hostile pass 5, E8).
                // And a file not restored: counted so (hostile pass 6).
                let _ = files[idx].created.set(Err(e.to_string()));
                self.trouble.damaged(self.items, idx, e);
            }
        };
        items
            .par_iter()
            .enumerate()
            .filter(|(idx, i)| {
                i.node.kind == NodeKind::File && i.holds_content() && !files[*idx].created()
            })
            .for_each(make);
        // Hard links need their first name in place.
        items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.node.kind == NodeKind::File && !i.holds_content())
            .for_each(make);
        let apply = |idx: usize, item: &Item| {
            let applied = match item.node.kind {
                // Through the inode created (a hard link's: its first name's), never
                // whatever holds the name now.
                NodeKind::File => self
                    .content_ident(idx)
                    .and_then(|id| t.open_meta(&files[idx].name(item.rel()), id))
                    .and_then(|f| t.set_metadata_of(&f, &item.node, self.how)),
                NodeKind::Dir => Ok(()),
                _ => t.set_metadata(item.rel(), &item.node, self.how),
            };
            if let Err(e) = applied {
                self.trouble.error(Some(&item.path), e);
            }
        };
        // Children before parents: setting a file's metadata never touches its directory,
        // but creating a file does, so directories come last. Files written whole had
        // theirs applied when their last blob was written.
        items
            .par_iter()
            .enumerate()
            .filter(|(idx, i)| i.node.kind != NodeKind::Dir && !files[*idx].finished())
            .filter(|(idx, _)| !files[*idx].failed())
            .for_each(|(idx, item)| apply(idx, item));
    }

    /// The metadata of the directories the walk has left (`closed`) that the restore made,
    /// deepest first, so that one that loses its owner's search permission already holds
    /// what it should; one level in parallel. Returns how many of those carried from an
    /// earlier batch (and counted there) failed.
    fn finish_dirs(&self, closed: &[select::Closed]) -> u64 {
        let Some(t) = self.target else {
            return 0;
        };
        let mut levels: Vec<Vec<(&Item, Option<Ident>, bool)>> = Vec::new();
        for c in closed {
            let (item, own, carried) = match c {
                select::Closed::Batch(n) => {
                    (&self.items[*n], self.own_dirs[*n].get().copied(), false)
                }
                select::Closed::Carried(c) => (&c.item, c.own, true),
            };
            let depth = item.rel().components().count();
            if levels.len() <= depth {
                levels.resize_with(depth + 1, Vec::new);
            }
            levels[depth].push((item, own, carried));
        }
        let failed = AtomicU64::new(0);
        for level in levels.iter().rev() {
            level.par_iter().for_each(|&(item, own, carried)| {
                // Only a directory the restore made: one that was there keeps its own.
                if let Some(id) = own {
                    if let Err(e) = t.set_dir_metadata(item.rel(), &item.node, self.how, id) {
                        self.trouble.error(Some(&item.path), e);
                        failed.fetch_add(u64::from(carried), Ordering::Relaxed);
                    }
                }
                t.forget_dir(item.rel());
            });
        }
        failed.into_inner()
    }

    /// Makes item `idx` a hard link of item `first` (inode `id`). A link of a file that is
    /// not in place (a damaged one: so are its links) is staged too, to be marked damaged
    /// and never found under its own name.
    fn link(&self, t: &Target, idx: usize, first: usize, id: Ident) -> std::io::Result<()> {
        let (items, files) = (self.items, self.files);
        let from = files[first].name(items[first].rel());
        if files[first].staged(items[first].rel()).is_none() {
            return t.hard_link(&from, id, items[idx].rel());
        }
        let rel = items[idx].rel();
        let staged = t.staged_name(rel.parent().unwrap_or(Path::new("")))?;
        t.hard_link(&from, id, &rel.with_file_name(&staged))?;
        let _ = files[idx].created.set(Ok(Made { id, staged }));
        Ok(())
    }

    /// Re-reads every restored file that is not known damaged; returns how many passed.
    fn verify(&self) -> u64 {
        let Some(t) = self.target else {
            return 0;
        };
        let damaged = self.trouble.damaged.lock().unwrap().clone();
        let mut verified = 0;
        for (idx, item) in self.items.iter().enumerate() {
            if item.node.kind == NodeKind::File && item.holds_content() && !damaged.contains(&idx) {
                let id = self.ident_of(idx).map_err(|e| Error::io(item.rel(), e));
                match id.and_then(|id| verify_file(self.repo, t, item, id)) {
                    Ok(()) => verified += 1,
                    Err(e) => self.trouble.damaged(self.items, idx, e),
                }
            }
        }
        verified
    }

    /// Removes what was written of the files the target could not take, which are then
    /// neither marked damaged nor (being neither placed nor staged) anything more.
    fn remove_unwritten(&self) -> u64 {
        let Some(t) = self.target else {
            return 0;
        };
        let unwritten = std::mem::take(&mut *self.trouble.unwritten.lock().unwrap());
        let mut removed = 0;
        for idx in unwritten {
            let (item, slot) = (&self.items[idx], &self.files[idx]);
            // Never made (no inode left, hostile pass 8): not taken all the same.
            if slot.failed() || !slot.created() {
                removed += 1;
                continue;
            }
            match t.remove_file(&slot.name(item.rel())) {
                Ok(()) => {
                    slot.gone.store(true, Ordering::Release);
                    removed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed += 1,
                Err(e) => self
                    .trouble
                    .error(Some(&item.path), format!("cannot remove: {e}")),
            }
        }
        removed
    }

    /// A file that is not what the snapshot holds must not pass for it: renamed. Returns
    /// how many were.
    fn mark_damaged(&self) -> u64 {
        let Some(t) = self.target else {
            return 0;
        };
        let mut marked = 0;
        let mut damaged: Vec<usize> = self
            .trouble
            .damaged
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect();
        damaged.sort_unstable();
        for idx in &damaged {
            let item = &self.items[*idx];
            if self.files[*idx].failed() || self.files[*idx].gone.load(Ordering::Acquire) {
                continue;
            }
            let now = self.files[*idx].name(item.rel());
            let from = now.file_name().unwrap_or_default();
            match t.mark_damaged(item.rel(), from) {
                Ok(to) => {
                    marked += 1;
                    // A name too long for the suffix was shortened, or the name was taken
                    // and numbered: said, or it is lost.
                    if to.file_name() != Some(&*marked_name_of(item.rel())) {
                        let to = to.file_name().unwrap_or_default().to_string_lossy();
                        let cause = format!(
                            "renamed {to} (its name with the suffix was too long or taken)"
                        );
                        self.trouble.error(Some(&item.path), cause);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self
                    .trouble
                    .error(Some(&item.path), format!("cannot mark as damaged: {e}")),
            }
        }
        marked
    }
}

fn restore_pack(ctx: &Ctx<'_>, pack: &PackId, fetches: &[Fetch]) {
    let mut i = 0;
    while i < fetches.len() {
        if ctx.cancelled() {
            return;
        }
        // Coalesce neighbouring blobs into one range read.
        let start = fetches[i].entry.offset;
        let mut end = start + fetches[i].entry.length as u64;
        let mut j = i + 1;
        while j < fetches.len() {
            let e = &fetches[j].entry;
            if e.offset > end + MAX_GAP || e.offset + e.length as u64 - start > MAX_RANGE {
                break;
            }
            end = end.max(e.offset + e.length as u64);
            j += 1;
        }
        let kind = fetches[i].entry.kind;
        match ctx.repo.read_pack_range(kind, pack, start, end - start) {
            // The repository went away: no pack can be read, and no file is damaged.
            Err(Error::NoRepository(at)) => {
                let _ = ctx.gone.set(at);
                return;
            }
            // A pack in archive storage is all or nothing: put aside before any blob of it
            // was written, it can be restored whole once thawed.
            Err(Error::Archived { .. }) if i == 0 && ctx.archived.is_some() => {
                ctx.archived.unwrap().lock().unwrap().push(*pack);
                return;
            }
            // One read may hold thousands of small files: they are written in parallel.
            Ok(bytes) => fetches[i..j]
                .par_iter()
                .for_each(|f| restore_blob(ctx, pack, f, &bytes, start)),
            // A truncated pack fails the coalesced read; its intact blobs may still be
            // there, so each blob is tried on its own.
            Err(_) if j - i > 1 => {
                for f in &fetches[i..j] {
                    let (at, len) = (f.entry.offset, f.entry.length as u64);
                    match ctx.repo.read_pack_range(kind, pack, at, len) {
                        Ok(bytes) => restore_blob(ctx, pack, f, &bytes, at),
                        Err(e) => blob_lost(ctx, pack, f, &e),
                    }
                }
            }
            Err(e) => blob_lost(ctx, pack, &fetches[i], &e),
        }
        i = j;
    }
}

/// `rel`'s name with the suffix of a damaged file, unshortened.
fn marked_name_of(rel: &Path) -> std::ffi::OsString {
    let mut name = rel.file_name().unwrap_or_default().to_os_string();
    name.push(target::DAMAGED);
    name
}

/// Every file holding a blob that could not be had is damaged.
fn blob_lost(ctx: &Ctx<'_>, pack: &PackId, f: &Fetch, cause: &dyn fmt::Display) {
    let cause = cause.to_string();
    // A cause that names the blob already is not prefixed with it again.
    let what = match cause.contains(&f.entry.id.to_string()) {
        true => format!("not restored exactly: {cause}"),
        false => format!(
            "not restored exactly: blob {} in pack {pack}: {cause}",
            f.entry.id
        ),
    };
    for (idx, _) in &f.targets {
        ctx.trouble.damaged(ctx.items, *idx, &what);
    }
}

/// Writes only the non-zero blocks of `data`: the file was sized in advance, so the
/// skipped zero blocks stay holes.
fn write_sparse(file: &fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: u64 = 4096;
    let mut pos = 0usize;
    while pos < data.len() {
        // Block boundaries follow the file, not the chunk.
        let abs = offset + pos as u64;
        let end = ((abs / BLOCK + 1) * BLOCK - offset).min(data.len() as u64) as usize;
        let start = pos;
        let mut stop = end;
        if data[start..end].iter().all(|b| *b == 0) {
            pos = end;
            continue;
        }
        // Extend the run over following non-zero blocks, so data is written in few calls.
        while stop < data.len() {
            let next = (stop + BLOCK as usize).min(data.len());
            if data[stop..next].iter().all(|b| *b == 0) {
                break;
            }
            stop = next;
        }
        file.write_all_at(&data[start..stop], offset + start as u64)?;
        pos = stop;
    }
    Ok(())
}

/// Opens one blob of a read (`buf`, the pack's bytes from `at` on) and writes it wherever
/// the snapshot has it.
fn restore_blob(ctx: &Ctx<'_>, pack: &PackId, f: &Fetch, buf: &[u8], at: u64) {
    let plain = match ctx.repo.open_blob_in(pack, buf, at, &f.entry) {
        Ok(p) => p,
        Err(e) => return blob_lost(ctx, pack, f, &e),
    };
    for (idx, offset) in &f.targets {
        let item = &ctx.items[*idx];
        ctx.written.fetch_add(plain.len() as u64, Ordering::Relaxed);
        ctx.progress.advance(plain.len() as u64);
        let Some(t) = ctx.target else {
            continue;
        };
        let slot = &ctx.files[*idx];
        let written = slot.open(t, item).and_then(|(file, dir)| {
            match item.node.sparse {
                true => write_sparse(&file, &plain, *offset)?,
                false => file.write_all_at(&plain, *offset)?,
            }
            Ok((file, dir))
        });
        match written {
            // The last writer sees every other write done (AcqRel), so the times it sets
            // stay set.
            Ok((file, dir)) if slot.remaining.fetch_sub(1, Ordering::AcqRel) == 1 => {
                let done = finish_file(t, (&file, dir.as_ref()), item, slot, ctx.how);
                ctx.finished(*idx, done)
            }
            Ok(_) => {}
            Err(e) => ctx.trouble.unwritten(ctx.items, *idx, e),
        }
    }
}

/// Writes the content of the regular file at `path` (absolute in the snapshot) to `out`, in
/// order; returns the bytes written. Consecutive chunks stored in the same pack come in one
/// range read (a backup seals a file's chunks in parallel, so they lie near each other but
/// not in order), so a large file costs about a request per pack, not one per chunk.
pub fn cat_file(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &Path,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let node = walk::lookup(repo, &snapshot.tree, path)?;
    let node = match node {
        Some(n) if n.kind == NodeKind::File => n,
        other => {
            return Err(Error::NotAFile {
                path: path.to_path_buf(),
                what: match other.map(|n| n.kind) {
                    None | Some(NodeKind::Dir) => "a directory",
                    Some(NodeKind::Symlink) => "a symlink",
                    _ => "a special file",
                },
            })
        }
    };
    let mut reader = ContentReader::new(repo, &node)?;
    node.check_size(path, reader.len())?;
    std::io::copy(&mut reader, out).map_err(|e| match reader.error.take() {
        Some(e) => e,
        None => Error::io("standard output", e),
    })
}

/// Writes the plaintext of `blobs`, in order, to `out` (named `out_name` in errors): the
/// content an application's root record keeps (a WAL file, say), which records its `size`.
/// Blobs that add up to another size (by the index) are refused before anything is
/// written, and nothing past `size` is ever written: a key holder's record naming one
/// blob 10^5 times filled memory or the disk (hostile pass 9). Returns the bytes written.
pub fn copy_blobs(
    repo: &Repository,
    blobs: &[crate::BlobId],
    size: u64,
    out: &mut impl std::io::Write,
    out_name: impl Into<std::path::PathBuf>,
) -> Result<u64> {
    let out_name = out_name.into();
    let mut node = Node::new(Vec::new(), crate::NodeKind::File);
    node.content = blobs.to_vec();
    let mut reader = ContentReader::new(repo, &node)?;
    if reader.len() != size {
        return Err(Error::corrupt(
            out_name.display().to_string(),
            format!(
                "content of {} bytes for a size of {size}: written by a faulty or hostile \
                 client; not used",
                reader.len()
            ),
        ));
    }
    let mut bounded = std::io::Read::take(&mut reader, size);
    let copied = std::io::copy(&mut bounded, out);
    copied.map_err(|e| match reader.error.take() {
        Some(e) => e,
        None => Error::io(out_name, e),
    })
}

/// A file's content as a reader, blob after blob, in order. Consecutive chunks stored in
/// the same pack come in one range read (a backup seals a file's chunks in parallel, so
/// they lie near each other but not in order), so a large file costs about a request per
/// pack, not one per chunk. A repository error is kept in `error` (the `io::Error` the
/// reader returns only says that one happened).
pub(crate) struct ContentReader<'r> {
    repo: &'r Repository,
    locations: Vec<crate::repo::cache::BlobLocation>,
    next: usize,
    ready: std::collections::VecDeque<Vec<u8>>,
    at: usize,
    /// The last range read (pack, offset, bytes): a run of one chunk repeated (a file of
    /// zeros) is read once, not once per run.
    last: Option<(PackId, u64, Vec<u8>)>,
    pub(crate) error: Option<Error>,
}

impl<'r> ContentReader<'r> {
    pub(crate) fn new(repo: &'r Repository, node: &Node) -> Result<Self> {
        let locations = node
            .content
            .iter()
            .map(|id| repo.lookup_blob(id))
            .collect::<Result<Vec<_>>>()?;
        Ok(ContentReader {
            repo,
            locations,
            next: 0,
            // Inline bytes come first; a node has them or blobs, never both.
            ready: node.data.iter().cloned().collect(),
            at: 0,
            last: None,
            error: None,
        })
    }

    /// The bytes the content will give (asked before reading): its inline bytes or its
    /// chunks' lengths as the index records them.
    pub(crate) fn len(&self) -> u64 {
        // Before the first read, `ready` holds just the inline bytes.
        let inline: usize = self.ready.iter().map(Vec::len).sum();
        let blobs: u64 = self
            .locations
            .iter()
            .map(|l| u64::from(l.entry.raw_length))
            .sum();
        blobs + inline as u64
    }

    /// Reads the next run of chunks that lie in one pack.
    fn fill(&mut self) -> Result<()> {
        let locations = &self.locations;
        let i = self.next;
        // The next chunks while they are in the same pack and both the span read and the
        // plaintext queued stay bounded: a chunk repeated widens no span, and each repeat
        // was queued (hostile pass 8: 3 GB held for a 3 GiB file of zeros, without end for
        // a key holder's file naming one blob a million times).
        let pack = locations[i].pack;
        let mut start = locations[i].entry.offset;
        let mut end = start + locations[i].entry.length as u64;
        let mut plain = u64::from(locations[i].entry.raw_length);
        let mut j = i + 1;
        while let Some(next) = locations.get(j).filter(|l| l.pack == pack) {
            let lo = start.min(next.entry.offset);
            let hi = end.max(next.entry.offset + next.entry.length as u64);
            plain += u64::from(next.entry.raw_length);
            if hi - lo > MAX_RANGE || plain > MAX_RANGE {
                break;
            }
            (start, end) = (lo, hi);
            j += 1;
        }
        let repo = self.repo;
        let reuse = match &self.last {
            Some((p, at, bytes)) => *p == pack && *at <= start && end <= at + bytes.len() as u64,
            None => false,
        };
        if !reuse {
            let bytes = repo.read_pack_range(locations[i].entry.kind, &pack, start, end - start)?;
            self.last = Some((pack, start, bytes));
        }
        let (_, at, bytes) = self.last.as_ref().expect("read above");
        for loc in &locations[i..j] {
            self.ready
                .push_back(repo.open_blob_in(&pack, bytes, *at, &loc.entry)?);
        }
        self.next = j;
        Ok(())
    }
}

impl std::io::Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.ready.front().is_none_or(|b| self.at == b.len()) {
            if self.ready.pop_front().is_some() {
                self.at = 0;
                continue;
            }
            if self.next == self.locations.len() {
                return Ok(0);
            }
            if let Err(e) = self.fill() {
                let msg = e.to_string();
                self.error = Some(e);
                return Err(std::io::Error::other(msg));
            }
        }
        let front = self.ready.front().expect("filled above");
        let n = buf.len().min(front.len() - self.at);
        buf[..n].copy_from_slice(&front[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Re-reads a restored file (inode `id`) and checks every chunk against its id.
fn verify_file(repo: &Repository, t: &Target, item: &Item, id: Ident) -> Result<()> {
    let dest = t.display(item.rel());
    let mut f = t
        .open_read(item.rel(), id)
        .map_err(|e| Error::io(&dest, e))?;
    let mut buf = Vec::new();
    if let Some(data) = &item.node.data {
        buf.resize(data.len(), 0);
        f.read_exact(&mut buf).map_err(|e| Error::io(&dest, e))?;
        if buf != *data {
            return Err(Error::corrupt(
                dest.display().to_string(),
                "restored content differs from the snapshot",
            ));
        }
    }
    for id in &item.node.content {
        let len = repo.lookup_blob(id)?.entry.raw_length as usize;
        buf.resize(len, 0);
        f.read_exact(&mut buf).map_err(|e| Error::io(&dest, e))?;
        if repo.blob_id(&buf) != *id {
            return Err(Error::corrupt(
                dest.display().to_string(),
                "restored content differs from the snapshot",
            ));
        }
    }
    // The node's size, which the listing shows, is what the file must hold.
    let len = f.metadata().map_err(|e| Error::io(&dest, e))?.len();
    item.node.check_size(&item.path, len)?;
    let mut rest = [0u8; 1];
    if f.read(&mut rest).map_err(|e| Error::io(&dest, e))? != 0 {
        return Err(Error::corrupt(
            dest.display().to_string(),
            "restored file is longer than in the snapshot",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Another user's doing (issue 31, item 4): the restore's file at `at` moved away, a
    /// file of theirs (owned by nobody) in its place.
    fn swap_in_theirs(at: &Path) {
        fs::rename(at, at.with_extension("moved")).unwrap();
        fs::write(at, "theirs").unwrap();
        std::os::unix::fs::chown(at, Some(65534), Some(65534)).unwrap();
        fs::set_permissions(at, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Owners and attributes as a root restore applies them by default.
    const ROOT: Apply = Apply {
        owners: true,
        xattrs: true,
    };

    fn file_item(path: &str, size: u64) -> Item {
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        (node.size, node.mode, node.uid, node.gid) = (size, 0o4755, 0, 0);
        Item {
            path: PathBuf::from(path),
            node,
            link_to: None,
            earlier: None,
        }
    }

    /// Issue 31, item 4: a file is written pack by pack; one swapped for another user's
    /// between two packs gets none of the rest, and not the owner and mode.
    /// Both ways: with the descriptor held, and opened again by path (past
    /// [`HELD_FILES`]).
    #[test]
    fn a_file_swapped_between_two_packs_is_not_written_through() {
        for held in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let t = Target::open(&dir.path().join("t")).unwrap();
            t.make_dir(Path::new("d"), &Node::new(b"d".to_vec(), NodeKind::Dir))
                .unwrap();
            let item = file_item("/d/f", 10);
            let slot = FileSlot::default();
            slot.open(&t, &item)
                .unwrap()
                .0
                .write_all_at(b"12345", 0)
                .unwrap();
            if !held {
                slot.release();
            }
            // Written under its staged name until complete.
            let at = dir.path().join("t").join(slot.name(item.rel()));
            assert!(!dir.path().join("t/d/f").exists());
            swap_in_theirs(&at);
            if let Ok((f, dir)) = slot.open(&t, &item) {
                let _ = f.write_all_at(b"67890", 5);
                let _ = finish_file(&t, (&f, dir.as_ref()), &item, &slot, ROOT);
            }
            assert_eq!(fs::read(&at).unwrap(), b"theirs", "held {held}");
            let meta = fs::metadata(&at).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o644));
            // Not put in place as the restored file either.
            assert!(!dir.path().join("t/d/f").exists(), "held {held}");
            // The restore's own file got all its content, through the held descriptor.
            let moved = fs::read(at.with_extension("moved")).unwrap();
            assert_eq!(moved.starts_with(b"1234567890"), held, "held {held}");
        }
    }

    /// Issue 31, item 4: metadata applied by path after the content phase (a fifo, a
    /// device, a file none of whose content arrived) goes only to what the restore made.
    #[test]
    fn metadata_is_not_applied_to_an_entry_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::open(&dir.path().join("t")).unwrap();
        for (name, kind) in [("fifo", NodeKind::Fifo), ("file", NodeKind::File)] {
            let mut node = Node::new(name.as_bytes().to_vec(), kind);
            (node.mode, node.uid, node.gid) = (0o4755, 0, 0);
            let rel = match kind {
                NodeKind::Fifo => t.special(Path::new(name), &node).map(|()| name.into()),
                _ => t.create_staged(Path::new(name)).map(|new| new.name),
            };
            let rel = PathBuf::from(rel.unwrap());
            let at = dir.path().join("t").join(&rel);
            swap_in_theirs(&at);
            assert!(t.set_metadata(&rel, &node, ROOT).is_err(), "{name}");
            let meta = fs::metadata(&at).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o644), "{name}");
        }
    }

    /// A report lists 10,000 of each kind at most and counts the rest.
    #[test]
    fn lists_stop_at_their_bound_and_count_the_rest() {
        let mut list: Vec<u32> = (0..9_998).collect();
        assert_eq!(listed(&mut list, vec![1, 2]), 0);
        assert_eq!(list.len(), LISTED);
        assert_eq!(listed(&mut list, vec![3, 4, 5]), 3);
        assert_eq!(list.len(), LISTED);
        let mut short = vec![];
        assert_eq!(listed(&mut short, vec![7; 3]), 0);
        assert_eq!(short, [7, 7, 7]);
    }

    #[test]
    fn only_a_first_name_holds_content() {
        let mut item = file_item("a", 1);
        assert!(item.holds_content());
        item.link_to = Some(0);
        assert!(!item.holds_content());
        item.link_to = None;
        item.earlier = Some(select::Earlier {
            rel: "b".into(),
            id: None,
        });
        assert!(!item.holds_content());
    }

    #[test]
    fn a_report_naming_files_that_are_not_utf8_still_serializes() {
        let name = PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/caf\xe9\nx"));
        let report = RestoreReport {
            files: 1,
            damaged_files: vec![name.clone()],
            errors: vec![RestoreError {
                path: Some(name),
                cause: "blob lost".into(),
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["damaged_files"][0], "/srv/caf\u{fffd}\nx");
        assert_eq!(json["errors"][0], "/srv/caf\u{fffd}\nx: blob lost");
        // The error on its own too.
        let one = serde_json::to_value(&report.errors[0]).unwrap();
        assert_eq!(one["path"], "/srv/caf\u{fffd}\nx");
    }
}
