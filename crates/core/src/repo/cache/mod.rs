//! The local SQLite cache: a rebuildable copy of what the repository says, plus the file
//! cache that lets a backup skip unchanged files.
//!
//! Nothing here is authoritative. Deleting the cache directory costs downloads and re-reads,
//! never data: every table is refilled from the repository or from the next backup.

mod files;
mod index;
mod trees;

pub use files::SetState;
pub use index::{BlobIndex, UsedBlobs};
pub use trees::AuditCache;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, RepoId};
use crate::repo::pack::{BlobEntry, BlobKind};

const SCHEMA_VERSION: i64 = 5;
/// The SQLite page cache, KiB.
const PAGE_CACHE_KIB: u32 = 32 << 10;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS index_files (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, raw_length INTEGER NOT NULL, compression INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marked_packs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marked_blobs (
    id BLOB NOT NULL, kind INTEGER NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, raw_length INTEGER NOT NULL, compression INTEGER NOT NULL,
    PRIMARY KEY (id, pack)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mark_records (
    id BLOB PRIMARY KEY, time TEXT NOT NULL, packs BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dropped_packs (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS superseded_files (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS own_files (id BLOB PRIMARY KEY, packs BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS copied_ids (
    source BLOB NOT NULL, id BLOB NOT NULL, dest BLOB NOT NULL, PRIMARY KEY (source, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS copied_roots (
    source BLOB NOT NULL, name TEXT NOT NULL, stamp INTEGER NOT NULL,
    PRIMARY KEY (source, name, stamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audits (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (
    id BLOB PRIMARY KEY, data BLOB NOT NULL, added INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trees_by_age ON trees (added);
CREATE TABLE IF NOT EXISTS retention (
    kind TEXT NOT NULL, name TEXT NOT NULL, until INTEGER NOT NULL, PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    set_key TEXT NOT NULL, path BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, device INTEGER NOT NULL,
    content BLOB NOT NULL, data BLOB, run INTEGER NOT NULL,
    PRIMARY KEY (set_key, path)
) WITHOUT ROWID;
";

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack.
    pub pack: PackId,
    /// The blob's entry in it.
    pub entry: BlobEntry,
}

/// How much of a pack the snapshots use (prune's view).
#[derive(Clone, Copy, Debug)]
pub struct PackUsage {
    pub id: PackId,
    pub kind: BlobKind,
    pub size: u64,
    /// Bytes of blobs some snapshot references.
    pub used: u64,
    /// Bytes of all blobs the index places in this pack.
    pub indexed: u64,
}

/// A file as the last backup of its set saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
}

/// The local cache database of one repository.
pub struct Cache {
    conn: Mutex<Connection>,
    path: PathBuf,
    last_commit: Mutex<std::time::Instant>,
    /// Whether the by-pack index of blobs is known to exist (see `BlobIndex::by_pack`).
    by_pack: std::sync::atomic::AtomicBool,
}

/// Creates a directory (and its parents) readable by its owner only, and narrows an
/// existing one: the cache holds file names, decrypted manifests, trees and the WAL
/// agent's socket. An existing directory must be this user's own: one that another user
/// made first (a cache under a shared parent such as /tmp) is refused, not narrowed,
/// since its owner could change it back or put a socket of their own in it. A symlink
/// at its name is followed only if this user made it, one on the way to it only if this
/// user or root did.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::BadInput {
            what: "cache directory",
            reason: format!(
                "{} is not a directory: choose a directory for the cache (--cache-dir)",
                dir.display()
            ),
        });
    }
    safe_ancestors(dir)?;
    // Made (and its parents) as a restore target is: a symlink on the way followed only
    // if this user or root made it (hostile pass 5: root's cache went into the directory
    // another user's link pointed at).
    crate::restore::open_trusted_dir(dir, 0o700).map_err(|e| Error::BadInput {
        what: "cache directory",
        reason: format!("{e}: choose another cache directory (--cache-dir)"),
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let link = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    // A plain directory is said to be one (its lstat and stat are the same inode).
    let first = if link.file_type().is_symlink() {
        ("symlink", link.uid())
    } else {
        ("directory", link.uid())
    };
    for (what, uid) in [first, ("directory", meta.uid())] {
        if uid != me {
            return Err(Error::BadInput {
                what: "cache directory",
                reason: format!(
                    "{} is a {what} owned by uid {uid}, not by this user (uid {me}); \
                     refusing to keep private data there: remove it or choose another \
                     cache directory (--cache-dir)",
                    dir.display()
                ),
            });
        }
    }
    // Writable by every user (/tmp, a shared drop directory): others may have put things
    // in it already, and narrowing it would break it for them. Not ours to take over.
    if meta.mode() & 0o002 != 0 {
        return Err(Error::BadInput {
            what: "cache directory",
            reason: format!(
                "{} is writable by every user (mode {:o}); refusing to keep private data \
                 there: choose a directory of its own (--cache-dir)",
                dir.display(),
                meta.mode() & 0o7777
            ),
        });
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Refuses a cache (or a mountpoint of root's) below a directory another user could rename
/// entries in: one of theirs,
/// or one writable by others without the sticky bit (`/tmp` has it). SQLite opens the
/// cache's files by path: swapping a parent between the checks and those opens put root's
/// cache in another user's directory (hostile pass 9). As ssh's StrictModes, by the
/// path as given and as resolved.
pub fn safe_ancestors(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let real = std::fs::canonicalize(dir.parent().unwrap_or(dir)).ok();
    let given = dir.ancestors().skip(1);
    for a in given.chain(real.iter().flat_map(|r| r.ancestors())) {
        let Ok(meta) = std::fs::symlink_metadata(a) else {
            continue;
        };
        let others_write = !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0;
        let unsafe_dir = others_write && meta.mode() & 0o1000 == 0;
        if (meta.uid() != me && meta.uid() != 0) || unsafe_dir {
            return Err(Error::BadInput {
                what: "directory",
                reason: format!(
                    "{} is below {}, which another user could change (a {} owned by uid \
                     {}, mode {:o}): choose a directory whose parents are this user's or \
                     root's and not writable by others",
                    dir.display(),
                    a.display(),
                    match meta.file_type().is_symlink() {
                        true => "symlink",
                        false => "directory",
                    },
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            });
        }
    }
    Ok(())
}

/// [`private_dir`] for `dir` and every directory between it and `base`, `base` included:
/// each level is checked, not just the last.
pub fn private_dirs(base: &Path, dir: &Path) -> Result<()> {
    let mut levels: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| a.starts_with(base))
        .collect();
    levels.reverse();
    levels.into_iter().try_for_each(private_dir)
}

/// Creates a file readable by its owner only if it is missing, and narrows it if not.
/// One that is not a regular file of this user's (planted while its directory was open
/// to others, or a link) is refused, never followed: what the cache holds (trees, say)
/// is used without being checked against the repository.
pub fn private_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    owned_file(path, &f.metadata().map_err(|e| Error::io(path, e))?)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    Ok(f)
}

/// Refuses `meta` (of `path`) unless it is a regular file of this user's.
fn owned_file(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    if meta.is_file() && meta.uid() == me {
        return Ok(());
    }
    Err(Error::BadInput {
        what: "cache file",
        reason: format!(
            "{} is {} owned by uid {}, not a file of this user's (uid {me}); refusing to \
             trust what it holds",
            path.display(),
            if meta.is_file() {
                "a file"
            } else {
                "no regular file"
            },
            meta.uid()
        ),
    })
}

/// How many bytes of decrypted trees the cache keeps (oldest evicted first).
pub const TREE_CACHE_BYTES: u64 = 512 << 20;

/// How long a long operation may hold the cache's write lock before letting others in.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// An open cache transaction. Dropped without [`Transaction::commit`] it rolls back what
/// was written since it began (or since the last [`Cache::checkpoint`]), so no error path
/// can leave a transaction open for the next operation of the same process (`backup --all`
/// runs several). Rolling back never loses anything the repository has: the cache is
/// rebuilt from it.
pub struct Transaction<'c> {
    cache: &'c Cache,
    open: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.cache.commit()
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let conn = self.cache.lock();
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

impl Cache {
    /// The Object Lock retention date known for a file (Unix seconds).
    pub fn retention_get(&self, kind: &str, name: &str) -> Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        self.lock()
            .query_row(
                "SELECT until FROM retention WHERE kind = ?1 AND name = ?2",
                [kind, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records retention dates of files (a later date only ever replaces an earlier one).
    pub fn retention_put(&self, dates: &[(&str, String, i64)]) -> Result<()> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "INSERT INTO retention (kind, name, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, name) DO UPDATE SET until = MAX(until, excluded.until)",
            )
            .map_err(|e| self.err(e))?;
        for (kind, name, until) in dates {
            st.execute(rusqlite::params![kind, name, until])
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The ids `copy` found in this repository for blobs of repository `source` (the same
    /// plaintext under this repository's key), where it has found one.
    pub fn copied_ids(&self, source: &RepoId, ids: &[BlobId]) -> Result<Vec<Option<BlobId>>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT dest FROM copied_ids WHERE source = ?1 AND id = ?2")
            .map_err(|e| self.err(e))?;
        ids.iter()
            .map(|id| {
                let dest: Option<Vec<u8>> = st
                    .query_row([&source.0[..], &id.0[..]], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.err(e))?;
                Ok(dest.and_then(|d| Some(BlobId(d.try_into().ok()?))))
            })
            .collect()
    }

    /// Remembers ids `copy` found (source blob, this repository's blob).
    pub fn put_copied_ids(&self, source: &RepoId, pairs: &[(BlobId, BlobId)]) -> Result<()> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "INSERT OR REPLACE INTO copied_ids (source, id, dest) VALUES (?1, ?2, ?3)",
            )
            .map_err(|e| self.err(e))?;
        for (id, dest) in pairs {
            st.execute([&source.0[..], &id.0[..], &dest.0[..]])
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The root records of repository `source` copied here before: file name and listing
    /// time (a record rewritten there since is listed with another time).
    pub fn copied_roots(&self, source: &RepoId) -> Result<HashSet<(String, i64)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT name, stamp FROM copied_roots WHERE source = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([&source.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<HashSet<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Remembers a root record of `source` as copied (or found here already).
    pub fn put_copied_root(&self, source: &RepoId, name: &str, stamp: i64) -> Result<()> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO copied_roots (source, name, stamp) VALUES (?1, ?2, ?3)",
                rusqlite::params![&source.0[..], name, stamp],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A value of the cache's own bookkeeping.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        self.lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Sets a value of the cache's own bookkeeping.
    pub fn meta_put(&self, key: &str, value: &str) -> Result<()> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

impl Cache {
    /// Opens (or creates, or rebuilds when damaged or of another version) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        private_dir(dir)?;
        let path = dir.join("cache.sqlite");
        let cache = match Self::open_file(&path) {
            Ok(c) => c,
            Err(_) => {
                // A damaged cache is rebuilt, not repaired: drop it and start afresh. So
                // is one not this user's (see `private_file`): nothing of it is read.
                for suffix in ["", "-wal", "-shm"] {
                    let f = dir.join(format!("cache.sqlite{suffix}"));
                    match std::fs::remove_file(&f) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(Error::io(&f, e))
                        }
                        _ => {}
                    }
                }
                Self::open_file(&path)?
            }
        };
        let version: Option<i64> = cache
            .lock()
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(|e| cache.err(e))?
            .and_then(|v| v.parse().ok());
        match version {
            Some(SCHEMA_VERSION) => Ok(cache),
            None => {
                cache
                    .lock()
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                        [SCHEMA_VERSION.to_string()],
                    )
                    .map_err(|e| cache.err(e))?;
                Ok(cache)
            }
            Some(_) => {
                // Another version's cache: it is only a cache, so start afresh.
                drop(cache);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("cache.sqlite{suffix}")));
                }
                Self::open(dir)
            }
        }
    }

    fn open_file(path: &Path) -> Result<Self> {
        let err = |e| Error::Cache {
            path: path.to_path_buf(),
            source: e,
        };
        // Created (or narrowed) to 0600 before SQLite opens it: SQLite gives its -wal and
        // -shm files the database file's mode. Those must be this user's too: SQLite
        // reads pages from the -wal as the database's own.
        private_file(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = PathBuf::from(side);
            if let Ok(meta) = std::fs::symlink_metadata(&side) {
                owned_file(&side, &meta)?;
            }
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))
            .map_err(err)?;
        // A 32 MiB page cache (SQLite's default is 2 MiB): an index of 10^6 blobs is
        // ~100 MiB of B-tree, and with 2 MiB every insert of a rebuild and every lookup of a
        // prune went to the kernel for its pages (two thirds of a rebuild's time). Bounded,
        // so memory stays flat however large the repository grows.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA cache_size = -{PAGE_CACHE_KIB};"
        ))
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Cache {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            last_commit: Mutex::new(std::time::Instant::now()),
            by_pack: Default::default(),
        })
    }

    /// Runs statements that sort much (a bulk copy in key order, an index built), with a
    /// quarter of the page cache: SQLite's sorter may take as much memory as the page cache,
    /// and the two together would double the peak.
    fn sorting(&self, sql: &str) -> Result<()> {
        let conn = self.lock();
        let result = conn.execute_batch(&format!(
            "PRAGMA cache_size = -{}; {sql}",
            PAGE_CACHE_KIB / 4
        ));
        let restored = conn.execute_batch(&format!("PRAGMA cache_size = -{PAGE_CACHE_KIB};"));
        result.and(restored).map_err(|e| self.err(e))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Cache {
            path: self.path.clone(),
            source,
        }
    }

    /// The 32-byte ids a one-column query returns (malformed rows are skipped).
    fn ids(&self, sql: &str) -> Result<Vec<[u8; 32]>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(id) = <[u8; 32]>::try_from(r.map_err(|e| self.err(e))?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Opens a transaction: what is written through the cache until
    /// [`Transaction::commit`] becomes visible at once, or (dropped uncommitted, on any
    /// error path) not at all.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        self.lock()
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        Ok(Transaction {
            cache: self,
            open: true,
        })
    }

    /// Commits the open transaction, if any.
    fn commit(&self) -> Result<()> {
        let conn = self.lock();
        if conn.is_autocommit() {
            return Ok(());
        }
        conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    /// Commits what a long operation wrote so far and goes on in a new transaction, so other
    /// processes sharing the cache are not shut out for the whole of a backup.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = self.lock();
        if conn.is_autocommit() {
            return Ok(());
        }
        conn.execute_batch("COMMIT; BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        *self.last_commit.lock().unwrap() = std::time::Instant::now();
        Ok(())
    }

    /// [`Cache::checkpoint`] when the last one is a while ago, so that two backups sharing
    /// a cache (two sets started by the same cron minute) take turns instead of one waiting
    /// out the other's whole run.
    pub fn checkpoint_if_due(&self) -> Result<()> {
        if self.last_commit.lock().unwrap().elapsed() >= CHECKPOINT_INTERVAL {
            self.checkpoint()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{BlobId, SnapshotId};

    /// Hostile pass 9: below a directory others may rename entries in, the cache could be
    /// swapped between its checks and SQLite's opens by path.
    #[test]
    fn a_cache_below_a_directory_others_may_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let mode = |m| std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(m));
        mode(0o777).unwrap();
        let e = private_dir(&shared.join("cache")).unwrap_err().to_string();
        assert!(e.contains("another user could change"), "{e}");
        assert!(!shared.join("cache").exists());
        // Sticky (as /tmp), or this user's alone: fine.
        for m in [0o1777, 0o700] {
            mode(m).unwrap();
            private_dir(&shared.join("cache")).unwrap();
        }
        // Another user's, as a non-root user sees root's: refused only if not root's.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&shared, Some(65534), None).unwrap();
            let e = private_dir(&shared.join("cache")).unwrap_err().to_string();
            assert!(e.contains("directory owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_transaction_dropped_uncommitted_rolls_back_and_frees_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (a, b) = (SnapshotId([1; 32]), SnapshotId([2; 32]));
        {
            let _tx = cache.transaction().unwrap();
            cache.set_state("set:x").set_last_snapshot(&a).unwrap();
            // An error path: the guard goes without a commit.
        }
        assert_eq!(cache.set_state("set:x").last_snapshot().unwrap(), None);
        // No transaction is left open: the next one begins.
        let tx = cache.transaction().unwrap();
        cache.set_state("set:x").set_last_snapshot(&b).unwrap();
        tx.commit().unwrap();
        assert_eq!(cache.set_state("set:x").last_snapshot().unwrap(), Some(b));
        drop(cache);
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(
            cache.set_state("set:x").last_snapshot().unwrap(),
            Some(b),
            "committed for good"
        );
    }

    fn index_file(packs: &[(u8, &[u8])]) -> crate::repo::index::IndexFile {
        use crate::repo::index::{IndexFile, IndexedPack};
        use crate::repo::pack::{BlobEntry, BlobKind, Compression};
        IndexFile {
            version: 1,
            supersedes: Vec::new(),
            packs: packs
                .iter()
                .map(|(pack, blobs)| IndexedPack {
                    id: crate::id::PackId([*pack; 32]),
                    kind: BlobKind::Data,
                    size: 1000,
                    blobs: blobs
                        .iter()
                        .enumerate()
                        .map(|(i, b)| BlobEntry {
                            id: BlobId([*b; 32]),
                            kind: BlobKind::Data,
                            offset: 100 * i as u64,
                            length: 100,
                            raw_length: 60,
                            compression: Compression::None,
                        })
                        .collect(),
                })
                .collect(),
            obsolete: Vec::new(),
        }
    }

    #[test]
    fn a_bulk_load_finds_what_file_by_file_inserts_would() {
        use crate::id::{IndexId, PackId};
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        // Blob 5 is in two packs: the first file read wins, as file by file.
        let first = index_file(&[(1, &[9, 5, 7]), (2, &[3])]);
        let second = index_file(&[(3, &[5, 1])]);
        let tx = cache.transaction().unwrap();
        let loader = cache.index().loader().unwrap();
        loader.add_file(&IndexId([1; 32]), &first).unwrap();
        loader.add_file(&IndexId([2; 32]), &second).unwrap();
        // Staged: not visible before the end.
        assert!(cache.index().lookup(&BlobId([9; 32])).unwrap().is_none());
        loader.finish().unwrap();
        tx.commit().unwrap();
        let at = |b: u8| cache.index().lookup(&BlobId([b; 32])).unwrap().unwrap();
        assert_eq!(at(5).pack, PackId([1; 32]));
        assert_eq!((at(5).entry.offset, at(7).entry.offset), (100, 200));
        assert_eq!(at(1).pack, PackId([3; 32]));
        let by_pack: Vec<u8> = (cache.index().pack_blobs(&PackId([1; 32])).unwrap())
            .iter()
            .map(|e| e.id.0[0])
            .collect();
        assert_eq!(by_pack, [9, 5, 7], "by offset");
        // Into a table that has entries, a loader inserts as it goes.
        let third = index_file(&[(4, &[2])]);
        let loader = cache.index().loader().unwrap();
        loader.add_file(&IndexId([3; 32]), &third).unwrap();
        assert_eq!(at(2).pack, PackId([4; 32]));
        loader.finish().unwrap();
        assert_eq!(cache.index().pack_blobs(&PackId([4; 32])).unwrap().len(), 1);
        // Rolled back, a bulk load leaves nothing.
        cache.index().clear().unwrap();
        {
            let _tx = cache.transaction().unwrap();
            let loader = cache.index().loader().unwrap();
            loader.add_file(&IndexId([1; 32]), &first).unwrap();
            loader.finish().unwrap();
        }
        assert!(cache.index().lookup(&BlobId([9; 32])).unwrap().is_none());
    }

    /// A link planted as the cache database is neither followed nor trusted: the
    /// cache is rebuilt in its place (issue 31).
    #[test]
    fn a_planted_link_as_the_database_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("c");
        std::fs::create_dir(&cache_dir).unwrap();
        let victim = dir.path().join("victim.sqlite");
        std::os::unix::fs::symlink(&victim, cache_dir.join("cache.sqlite")).unwrap();
        let cache = Cache::open(&cache_dir).unwrap();
        cache.meta_put("k", "v").unwrap();
        assert!(!victim.exists(), "the link was followed");
        let meta = std::fs::symlink_metadata(cache_dir.join("cache.sqlite")).unwrap();
        assert!(meta.is_file());
    }

    #[test]
    fn the_tree_cache_is_bounded_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        for i in 0..10u8 {
            cache
                .trees()
                .put(&[(BlobId([i; 32]), vec![i; 1000])])
                .unwrap();
            // The same tree again counts once.
            cache
                .trees()
                .put(&[(BlobId([i; 32]), vec![i; 1000])])
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        cache.trees().bound(20_000).unwrap();
        assert!(
            cache.trees().contains(&BlobId([0; 32])).unwrap(),
            "under the limit: all kept"
        );
        cache.trees().bound(8_000).unwrap();
        // Down to three quarters of the limit: the four oldest went.
        for i in 0..10u8 {
            assert_eq!(
                cache.trees().contains(&BlobId([i; 32])).unwrap(),
                i >= 4,
                "tree {i}"
            );
        }
        drop(cache);
        let cache = Cache::open(dir.path()).unwrap();
        cache.trees().bound(8_000).unwrap();
        assert!(
            cache.trees().contains(&BlobId([4; 32])).unwrap(),
            "the count survived reopening"
        );
    }
}
