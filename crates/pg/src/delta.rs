//! `pg restore --delta`: a stopped cluster's data directory brought back to a base backup
//! by fetching only the files that differ.
//!
//! The backup is restored, less the files the data directory holds already, into the
//! private staging directory as a full restore is; those files are then moved (renamed,
//! by directory descriptors) from the data directory into the staged one, and the two
//! directories exchanged. What a SIGKILL leaves at each step:
//! 1. comparing, restoring into the staging: the data directory as it was;
//! 2. moving: first `global/pg_control` is removed from the data directory (PostgreSQL
//!    refuses to start without it), then the kept files leave it: a directory no server
//!    starts from, which a rerun of `pg restore --delta` completes (it fetches the files
//!    that had moved, and rewrites `pg_control`, which is never kept);
//! 3. the exchange is one `renameat2(RENAME_EXCHANGE)`: the old directory or the new.
//!
//! A staging left by a killed run is removed by a later run (see `Staging`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;
use strata::{Node, NodeKind, Repository, Snapshot};

use crate::{Error, Result, DIR_FLAGS};

/// Files a delta restore never keeps: without `pg_control` PostgreSQL does not start from
/// a directory half moved; `PG_VERSION` tells a rerun that its target is a data directory.
const NEVER_KEPT: [&str; 2] = ["global/pg_control", "PG_VERSION"];

/// A base backup's entries below its data directory, by path relative to it.
#[derive(Debug, Default)]
pub struct BackupFiles {
    /// Regular files.
    pub files: BTreeMap<PathBuf, Node>,
    /// Every entry, directories too.
    pub paths: HashSet<PathBuf>,
}

impl BackupFiles {
    /// The entries of `snapshot` below `data_directory` (an absolute path).
    pub fn of(repo: &Repository, snapshot: &Snapshot, data_directory: &Path) -> Result<Self> {
        let mut out = BackupFiles::default();
        let below = data_directory.strip_prefix("/").unwrap_or(data_directory);
        let limits = strata::walk::Limits::of(snapshot);
        strata::walk::walk(repo, &snapshot.tree, limits, &mut |rel, node| {
            let Ok(rel) = rel.strip_prefix(below) else {
                // Only the directories leading to the data directory.
                return Ok(below.starts_with(rel));
            };
            if rel.as_os_str().is_empty() {
                return Ok(true);
            }
            out.paths.insert(rel.to_path_buf());
            if node.kind == NodeKind::File {
                out.files.insert(rel.to_path_buf(), node.clone());
            }
            Ok(true)
        })?;
        Ok(out)
    }
}

/// A file the data directory holds as the backup does: moved, not fetched.
#[derive(Debug)]
pub struct Kept {
    /// Relative to the data directory.
    pub path: PathBuf,
    /// The inode compared (device, inode, size, mtime): the one moved must be it.
    seen: (u64, u64, u64, i64, i64),
}

/// What a delta restore does, decided (reading only) before anything changes.
#[derive(Debug, Default)]
pub struct DeltaPlan {
    /// Files that match the backup's: size, mtime and content.
    pub kept: Vec<Kept>,
    /// The backup's other files (missing, different, not a regular file of one link):
    /// fetched.
    pub rewritten: Vec<PathBuf>,
    /// Entries other than directories that the backup does not hold.
    pub removed: Vec<PathBuf>,
    /// Counts and bytes.
    pub summary: DeltaSummary,
    /// The data directory's real directories, open, by relative path ("" for itself).
    dirs: HashMap<PathBuf, Arc<OwnedFd>>,
    /// The data directory's device and inode; `None` when it was absent.
    pub root: Option<(u64, u64)>,
}

/// What a delta restore did, for the report.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeltaSummary {
    /// Files kept (moved, not fetched).
    pub kept_files: u64,
    /// Their bytes.
    pub kept_bytes: u64,
    /// The backup's files fetched instead of kept.
    pub rewritten_files: u64,
    /// Their bytes.
    pub rewritten_bytes: u64,
    /// Entries other than directories removed (the backup does not hold them).
    pub removed_files: u64,
    /// Their bytes (a symlink's: its own).
    pub removed_bytes: u64,
    /// Content bytes restored from the repository (files rewritten).
    pub bytes_fetched: u64,
}

impl DeltaPlan {
    /// Compares the data directory `old` (absent: everything is fetched) with `backup`,
    /// file by file in parallel.
    pub fn new(repo: &Repository, old: &Path, backup: &BackupFiles) -> Result<Self> {
        let (root, (dirs, entries)) = match rustix::fs::open(old, DIR_FLAGS, Mode::empty()) {
            Ok(root) => {
                let st = rustix::fs::fstat(&root).map_err(|e| Error::io(old, e.into()))?;
                (Some((st.st_dev, st.st_ino)), list(root, old)?)
            }
            Err(rustix::io::Errno::NOENT) => Default::default(),
            Err(e) => return Err(Error::io(old, e.into())),
        };
        let mut plan = DeltaPlan {
            root,
            dirs,
            ..Default::default()
        };
        let compared: Vec<(&PathBuf, &Node, Option<Kept>)> = (backup.files.par_iter())
            .map(|(rel, node)| (rel, node, plan.matching(repo, rel, node)))
            .collect();
        let s = &mut plan.summary;
        for (rel, node, kept) in compared {
            match kept {
                Some(k) => {
                    s.kept_files += 1;
                    s.kept_bytes += node.size;
                    plan.kept.push(k);
                }
                None => {
                    s.rewritten_files += 1;
                    s.rewritten_bytes += node.size;
                    plan.rewritten.push(rel.clone());
                }
            }
        }
        for (rel, size) in entries {
            if !backup.paths.contains(&rel) {
                s.removed_files += 1;
                s.removed_bytes += size;
                plan.removed.push(rel);
            }
        }
        Ok(plan)
    }

    /// The file at `rel`, when it is the backup's `node`: a regular file of one link
    /// (never a link to a file elsewhere, to be chowned), of its size and mtime, read
    /// through a descriptor opened without following a link, cut into the node's blobs.
    fn matching(&self, repo: &Repository, rel: &Path, node: &Node) -> Option<Kept> {
        if NEVER_KEPT.iter().any(|n| rel == Path::new(n)) {
            return None;
        }
        let (dir, name) = (self.dirs.get(rel.parent()?)?, rel.file_name()?);
        // Nothing but a regular file is opened: opening a device node can act on it.
        let st = rustix::fs::statat(&**dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        let file = open_file(dir, name).ok()?;
        let seen = unchanged(&file, node)?;
        same_content(repo, file, node).then(|| Kept {
            path: rel.to_path_buf(),
            seen,
        })
    }

    /// Paths (absolute, as the snapshot has them) of the kept files, which the restore
    /// leaves out.
    pub fn provided(&self, data_directory: &Path) -> HashSet<PathBuf> {
        let all = self.kept.iter().map(|k| data_directory.join(&k.path));
        all.collect()
    }

    /// Step 2 (see the module): makes the old directory one PostgreSQL does not start
    /// from, then moves the kept files into `staged` (the staged data directory, open),
    /// giving each the backup node's owner (with `owners`) and mode.
    pub fn move_kept(&self, staged: &OwnedFd, backup: &BackupFiles, owners: bool) -> Result<()> {
        self.unstartable()?;
        let mut to: HashMap<&Path, OwnedFd> = HashMap::new();
        for k in &self.kept {
            let parent = k.path.parent().unwrap_or(Path::new(""));
            if !to.contains_key(parent) {
                to.insert(parent, open_below(staged, parent)?);
            }
        }
        self.kept.par_iter().try_for_each(|k| {
            let parent = k.path.parent().unwrap_or(Path::new(""));
            let (from, into) = (&self.dirs[parent], &to[parent]);
            move_one(from, into, k, &backup.files[&k.path], owners)
                .map_err(|e| Error::io(&k.path, e))
        })
    }

    /// Removes `global/pg_control` from the old directory, durably.
    fn unstartable(&self) -> Result<()> {
        let Some(global) = self.dirs.get(Path::new("global")) else {
            return Ok(());
        };
        let io = |e: rustix::io::Errno| Error::io("global/pg_control", e.into());
        match rustix::fs::unlinkat(&**global, "pg_control", AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io(e)),
        }
        rustix::fs::fsync(&**global).map_err(io)
    }
}

/// The directories (open) and other entries (with their size) below `root`, never
/// through a link: a symlink is an entry, whatever it points at.
type Listing = (HashMap<PathBuf, Arc<OwnedFd>>, Vec<(PathBuf, u64)>);

fn list(root: OwnedFd, path: &Path) -> Result<Listing> {
    let mut dirs = HashMap::new();
    let mut entries = Vec::new();
    let mut todo = vec![(PathBuf::new(), Arc::new(root))];
    while let Some((rel, fd)) = todo.pop() {
        let io = |e: rustix::io::Errno| Error::io(path.join(&rel), e.into());
        let mut d = rustix::fs::Dir::read_from(&*fd).map_err(io)?;
        while let Some(e) = d.read() {
            let e = e.map_err(io)?;
            let name = std::os::unix::ffi::OsStrExt::from_bytes(e.file_name().to_bytes());
            let name: &std::ffi::OsStr = name;
            if name == "." || name == ".." {
                continue;
            }
            let child = rel.join(name);
            match rustix::fs::openat(&*fd, name, DIR_FLAGS, Mode::empty()) {
                Ok(sub) => todo.push((child, Arc::new(sub))),
                Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                    let st = rustix::fs::statat(&*fd, name, AtFlags::SYMLINK_NOFOLLOW);
                    let size = st.map_or(0, |st| st.st_size as u64);
                    entries.push((child, size));
                }
                Err(e) => return Err(Error::io(path.join(&child), e.into())),
            }
        }
        dirs.insert(rel, fd);
    }
    Ok((dirs, entries))
}

/// Opens `name` in `dir` to read, never through a link, never blocking on a FIFO.
fn open_file(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rustix::fs::openat(dir, name, flags | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// What was seen of `file`, when it is a regular file of one link with `node`'s size and
/// mtime.
fn unchanged(file: &File, node: &Node) -> Option<(u64, u64, u64, i64, i64)> {
    let m = file.metadata().ok()?;
    let seen = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let same = m.is_file()
        && m.nlink() == 1
        && m.size() == node.size
        && m.mtime() == node.mtime.sec
        && m.mtime_nsec() == i64::from(node.mtime.nsec);
    same.then_some(seen)
}

/// Whether `file`'s content is `node`'s: its inline bytes, or its blobs cut as a backup
/// cuts them.
fn same_content(repo: &Repository, file: File, node: &Node) -> bool {
    match &node.data {
        Some(data) => {
            let mut bytes = Vec::with_capacity(data.len());
            let read = file.take(data.len() as u64 + 1).read_to_end(&mut bytes);
            read.is_ok() && bytes == *data
        }
        None => repo.content_ids(file).is_ok_and(|ids| ids == node.content),
    }
}

/// The directory `rel` below `dir`, each component opened without following a link.
fn open_below(dir: &OwnedFd, rel: &Path) -> Result<OwnedFd> {
    let io = |e: rustix::io::Errno| Error::io(rel, e.into());
    let mut at = rustix::io::dup(dir).map_err(io)?;
    for part in rel.components() {
        at = rustix::fs::openat(&at, part.as_os_str(), DIR_FLAGS, Mode::empty()).map_err(io)?;
    }
    Ok(at)
}

/// Moves kept file `k` from `from` into `into` (never over anything), checks that what
/// arrived is the inode compared (the cluster's owner could have swapped it meanwhile; once
/// in the private staging nobody can), then applies `node`'s owner and mode.
fn move_one(
    from: &OwnedFd,
    into: &OwnedFd,
    k: &Kept,
    node: &Node,
    owners: bool,
) -> std::io::Result<()> {
    let name = k.path.file_name().expect("a file");
    let flags = rustix::fs::RenameFlags::NOREPLACE;
    rustix::fs::renameat_with(from, name, into, name, flags)?;
    let arrived = open_file(into, name)?;
    let m = arrived.metadata()?;
    let seen = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    if !m.is_file() || m.nlink() != 1 || seen != k.seen {
        rustix::fs::unlinkat(into, name, AtFlags::empty())?;
        return Err(std::io::Error::other(
            "changed in the data directory while the restore ran: rerun pg restore --delta \
             once nothing else writes there",
        ));
    }
    if owners {
        std::os::unix::fs::fchown(&arrived, Some(node.uid), Some(node.gid))?;
    }
    // Set-id bits only with the snapshot's owner, as a restore gives them.
    let bits = if owners { 0o7777 } else { 0o777 };
    rustix::fs::fchmod(&arrived, Mode::from_raw_mode(node.mode & bits))?;
    Ok(())
}

/// Why the data directory `target` must not be restored over while it is: a live
/// postmaster, decided as PostgreSQL decides before starting (`CreateLockFile`,
/// `PGSharedMemoryIsInUse`): `postmaster.pid` unreadable or empty, its process alive
/// (`kill(pid, 0)` succeeds or fails otherwise than ESRCH or EPERM), or its shared
/// memory segment still attached (backends outliving a killed postmaster).
pub fn live_postmaster(target: &Path) -> Option<String> {
    let path = target.join("postmaster.pid");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("{} cannot be read ({e})", path.display())),
    };
    let mut lines = text.lines();
    let pid = lines.next().and_then(|l| l.trim().parse::<i32>().ok());
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return Some(format!(
            "{} names no process, as while a server starts",
            path.display()
        ));
    };
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(Errno::ESRCH | Errno::EPERM) => {}
        _ => return Some(format!("its postmaster (pid {pid}) is running")),
    }
    let shmid = lines
        .nth(5)
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    shmid
        .filter(|id| attached(*id))
        .map(|id| format!("its shared memory (id {id}) is still in use by server processes"))
}

/// Whether System V shared memory segment `id` has processes attached.
fn attached(id: i32) -> bool {
    // SAFETY: IPC_STAT fills the zeroed struct it is given, nothing else.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } == 0;
    ok && ds.shm_nattch > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn repo(dir: &Path) -> Repository {
        let store: strata::backend::BackendRef = Arc::new(strata::backend::MemBackend::default());
        let config = strata::Config::new(strata::ChunkerParams::with_average(16 << 10), 0);
        let cost = strata::KdfCost::INSECURE_FOR_TESTS;
        Repository::init(store.clone(), b"pw", config, &cost).unwrap();
        Repository::open(store, b"pw", &dir.join("cache")).unwrap()
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Writes `data` at `rel` below `root`, keeping the file's mtime as it was.
    fn rewrite_keeping_mtime(root: &Path, rel: &str, data: &[u8]) {
        let path = root.join(rel);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, data).unwrap();
        fs::File::open(&path).unwrap().set_modified(mtime).unwrap();
    }

    /// Which files are kept, rewritten and removed: only a regular file of one link
    /// whose size, mtime and content (inline or cut into blobs) are the backup's is
    /// kept; pg_control never is.
    #[test]
    fn a_delta_plan_keeps_only_files_that_are_the_backups() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repo(tmp.path());
        let data = tmp.path().join("data");
        fs::create_dir_all(data.join("base/1")).unwrap();
        fs::create_dir_all(data.join("global")).unwrap();
        let big = bytes(200 << 10, 7);
        for (rel, content) in [
            ("PG_VERSION", b"16\n".to_vec()),
            ("global/pg_control", bytes(8192, 1)),
            ("base/1/kept", big.clone()),
            ("base/1/kept_small", b"tiny".to_vec()),
            ("base/1/same_size_other_bytes", big.clone()),
            ("base/1/small_other_bytes", b"tiny".to_vec()),
            ("base/1/touched", big.clone()),
            ("base/1/deleted", big.clone()),
            ("base/1/now_a_link", big.clone()),
            ("base/1/linked_outside", big.clone()),
        ] {
            fs::write(data.join(rel), content).unwrap();
        }
        let report = strata::backup::run(
            &repo,
            strata::backup::BackupOptions {
                source: strata::backup::Source::Paths(vec![data.clone()]),
                ..Default::default()
            },
            &strata::NoProgress,
        )
        .unwrap();
        let backup = BackupFiles::of(&repo, &report.snapshot, &data).unwrap();
        assert_eq!(backup.files.len(), 10);
        assert!(backup.paths.contains(Path::new("base/1")));

        let mut other = big.clone();
        other[150 << 10] ^= 1;
        rewrite_keeping_mtime(&data, "base/1/same_size_other_bytes", &other);
        rewrite_keeping_mtime(&data, "base/1/small_other_bytes", b"TINY");
        let touched = fs::File::options()
            .append(true)
            .open(data.join("base/1/touched"))
            .unwrap();
        touched
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        fs::remove_file(data.join("base/1/deleted")).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        fs::write(&elsewhere, &big).unwrap();
        fs::remove_file(data.join("base/1/now_a_link")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, data.join("base/1/now_a_link")).unwrap();
        fs::hard_link(
            data.join("base/1/linked_outside"),
            tmp.path().join("second"),
        )
        .unwrap();
        fs::write(data.join("base/1/not_in_backup"), b"12345").unwrap();
        fs::create_dir(data.join("base/2")).unwrap();
        fs::write(data.join("base/2/dropped"), b"123").unwrap();
        std::os::unix::fs::symlink(tmp.path(), data.join("pg_wal")).unwrap();

        let plan = DeltaPlan::new(&repo, &data, &backup).unwrap();
        let mut kept: Vec<_> = plan.kept.iter().map(|k| k.path.clone()).collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                PathBuf::from("base/1/kept"),
                PathBuf::from("base/1/kept_small")
            ]
        );
        let mut rewritten = plan.rewritten.clone();
        rewritten.sort();
        let want: Vec<PathBuf> = [
            "PG_VERSION",
            "base/1/deleted",
            "base/1/linked_outside",
            "base/1/now_a_link",
            "base/1/same_size_other_bytes",
            "base/1/small_other_bytes",
            "base/1/touched",
            "global/pg_control",
        ]
        .map(PathBuf::from)
        .to_vec();
        assert_eq!(rewritten, want);
        let mut removed = plan.removed.clone();
        removed.sort();
        let want: Vec<PathBuf> = ["base/1/not_in_backup", "base/2/dropped", "pg_wal"]
            .map(PathBuf::from)
            .to_vec();
        assert_eq!(removed, want);
        let s = plan.summary;
        assert_eq!((s.kept_files, s.kept_bytes), (2, (200 << 10) + 4));
        assert_eq!(s.rewritten_files, 8);
        assert_eq!(s.removed_files, 3);
        let provided = plan.provided(&data);
        assert!(provided.contains(&data.join("base/1/kept")), "{provided:?}");
    }
}
