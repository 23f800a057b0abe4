//! The local SQLite cache: a rebuildable copy of what the repository says, plus the file
//! cache that lets a backup skip unchanged files.
//!
//! Nothing here is authoritative. Deleting the cache directory costs downloads and re-reads,
//! never data: every table is refilled from the repository or from the next backup.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::IndexFile;
use crate::repo::pack::{BlobEntry, BlobKind, Compression};

const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS index_files (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, raw_length INTEGER NOT NULL, compression INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs (pack);
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
CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (
    id BLOB PRIMARY KEY, data BLOB NOT NULL, added INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trees_by_age ON trees (added);
CREATE TABLE IF NOT EXISTS files (
    set_key TEXT NOT NULL, path BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, device INTEGER NOT NULL,
    content BLOB NOT NULL, run INTEGER NOT NULL,
    PRIMARY KEY (set_key, path)
) WITHOUT ROWID;
";

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
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

pub struct Cache {
    conn: Mutex<Connection>,
    path: PathBuf,
    last_commit: Mutex<std::time::Instant>,
}

/// Creates a directory (and its parents) readable by its owner only, and narrows an
/// existing one: the cache holds file names, decrypted manifests and trees.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(dir, e))
}

/// Creates a file readable by its owner only if it is missing, and narrows it if not.
pub fn private_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    Ok(f)
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
    pub fn open(dir: &Path) -> Result<Self> {
        private_dir(dir)?;
        let path = dir.join("cache.sqlite");
        let cache = match Self::open_file(&path) {
            Ok(c) => c,
            Err(_) => {
                // A damaged cache is rebuilt, not repaired: drop it and start afresh.
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
        // -shm files the database file's mode.
        private_file(path)?;
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))
            .map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Cache {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            last_commit: Mutex::new(std::time::Instant::now()),
        })
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

    // ---- blob index ----

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

    pub fn known_index_files(&self) -> Result<Vec<IndexId>> {
        Ok(self
            .ids("SELECT id FROM index_files")?
            .into_iter()
            .map(IndexId)
            .collect())
    }

    /// Forgets the whole blob index (before a rebuild).
    pub fn clear_index(&self) -> Result<()> {
        self.lock()
            .execute_batch(
                "DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_files;
                 DELETE FROM marked_packs; DELETE FROM marked_blobs;",
            )
            .map_err(|e| self.err(e))
    }

    pub fn add_index_file(&self, id: &IndexId, file: &IndexFile) -> Result<()> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<()> {
            let mut blob = conn.prepare_cached(
                "INSERT OR IGNORE INTO blobs (id, kind, pack, offset, length, raw_length, compression)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut pack = conn.prepare_cached(
                "INSERT OR IGNORE INTO packs (id, kind, size) VALUES (?1, ?2, ?3)",
            )?;
            for p in &file.packs {
                pack.execute(params![&p.id.0[..], p.kind as u8, p.size as i64])?;
                for b in &p.blobs {
                    blob.execute(params![
                        &b.id.0[..],
                        b.kind as u8,
                        &p.id.0[..],
                        b.offset as i64,
                        b.length,
                        b.raw_length,
                        b.compression as u8
                    ])?;
                }
            }
            // Marked packs stay readable until deleted (format-spec §7): a backup that
            // deduplicated against them before the mark must restore at every moment.
            let mut mpack = conn
                .prepare_cached("INSERT OR IGNORE INTO marked_packs (id, kind) VALUES (?1, ?2)")?;
            let mut mblob = conn.prepare_cached(
                "INSERT OR IGNORE INTO marked_blobs
                 (id, kind, pack, offset, length, raw_length, compression)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for m in &file.obsolete {
                mpack.execute(params![&m.id.0[..], m.kind as u8])?;
                for b in &m.entries {
                    mblob.execute(params![
                        &b.id.0[..],
                        b.kind as u8,
                        &m.id.0[..],
                        b.offset as i64,
                        b.length,
                        b.raw_length,
                        b.compression as u8
                    ])?;
                }
            }
            conn.execute(
                "INSERT OR IGNORE INTO index_files (id) VALUES (?1)",
                [&id.0[..]],
            )?;
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }

    /// Where to read a blob: from a live pack, else from a pack marked obsolete (which
    /// may be gone by now; the read then fails with the pack named).
    pub fn lookup_blob(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        match self.lookup_in("blobs", id)? {
            Some(loc) => Ok(Some(loc)),
            None => self.lookup_in("marked_blobs", id),
        }
    }

    /// Where a blob is in a live pack only (what a backup may deduplicate against).
    pub fn lookup_live_blob(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.lookup_in("blobs", id)
    }

    fn lookup_in(&self, table: &str, id: &BlobId) -> Result<Option<BlobLocation>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT kind, pack, offset, length, raw_length, compression FROM {table}
                 WHERE id = ?1 LIMIT 1"
            ))
            .map_err(|e| self.err(e))?;
        st.query_row([&id.0[..]], |r| {
            let kind: u8 = r.get(0)?;
            let pack: Vec<u8> = r.get(1)?;
            let comp: u8 = r.get(5)?;
            Ok((kind, pack, r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?, comp))
        })
        .optional()
        .map_err(|e| self.err(e))?
        .map(|(kind, pack, offset, length, raw_length, comp)| {
            Ok(BlobLocation {
                pack: PackId::from_slice(&pack)
                    .ok_or_else(|| Error::corrupt("local cache", "bad pack id"))?,
                entry: BlobEntry {
                    id: *id,
                    kind: BlobKind::try_from(kind).map_err(|e| Error::corrupt("local cache", e))?,
                    offset: offset as u64,
                    length,
                    raw_length,
                    compression: Compression::try_from(comp)
                        .map_err(|e| Error::corrupt("local cache", e))?,
                },
            })
        })
        .transpose()
    }

    /// Packs marked obsolete by prune, with their kinds.
    pub fn marked_packs(&self) -> Result<Vec<(PackId, BlobKind)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT id, kind FROM marked_packs ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u8>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind) = r.map_err(|e| self.err(e))?;
            if let (Some(id), Ok(kind)) = (PackId::from_slice(&id), BlobKind::try_from(kind)) {
                out.push((id, kind));
            }
        }
        Ok(out)
    }

    /// Whether a blob is in a live pack: backups deduplicate only against these, so that
    /// nothing new comes to depend on a pack that prune marked.
    pub fn has_blob(&self, id: &BlobId) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// Every pack the index names, with kind and size.
    pub fn packs(&self) -> Result<Vec<(PackId, BlobKind, u64)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT id, kind, size FROM packs ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, size) = r.map_err(|e| self.err(e))?;
            if let (Some(id), Ok(kind)) = (PackId::from_slice(&id), BlobKind::try_from(kind)) {
                out.push((id, kind, size as u64));
            }
        }
        Ok(out)
    }

    /// The blobs the index places in one pack, by offset.
    pub fn pack_blobs(&self, pack: &PackId) -> Result<Vec<BlobEntry>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT id, kind, offset, length, raw_length, compression FROM blobs
                 WHERE pack = ?1 ORDER BY offset",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([&pack.0[..]], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, u8>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, offset, length, raw_length, comp) = r.map_err(|e| self.err(e))?;
            out.push(BlobEntry {
                id: BlobId::from_slice(&id)
                    .ok_or_else(|| Error::corrupt("local cache", "bad blob id"))?,
                kind: BlobKind::try_from(kind).map_err(|e| Error::corrupt("local cache", e))?,
                offset: offset as u64,
                length,
                raw_length,
                compression: Compression::try_from(comp)
                    .map_err(|e| Error::corrupt("local cache", e))?,
            });
        }
        Ok(out)
    }

    // ---- prune's mark table ----

    /// Starts an empty set of used blobs (a temporary table: never in RAM as a whole).
    pub fn used_reset(&self) -> Result<()> {
        self.lock()
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS used (id BLOB PRIMARY KEY) WITHOUT ROWID;
                 DELETE FROM used;",
            )
            .map_err(|e| self.err(e))
    }

    /// Marks a blob used; returns whether it was new to the set.
    pub fn used_add(&self, id: &BlobId) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("INSERT OR IGNORE INTO used (id) VALUES (?1)")
            .map_err(|e| self.err(e))?;
        st.execute([&id.0[..]])
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    pub fn used_contains(&self, id: &BlobId) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM used WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// Per pack: kind, size, the bytes of its used blobs and of all its indexed blobs.
    pub fn pack_usage(&self) -> Result<Vec<PackUsage>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT p.id, p.kind, p.size,
                        COALESCE(SUM(CASE WHEN u.id IS NOT NULL THEN b.length ELSE 0 END), 0),
                        COALESCE(SUM(b.length), 0)
                 FROM packs p LEFT JOIN blobs b ON b.pack = p.id LEFT JOIN used u ON u.id = b.id
                 GROUP BY p.id ORDER BY p.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, size, used, total) = r.map_err(|e| self.err(e))?;
            if let (Some(id), Ok(kind)) = (PackId::from_slice(&id), BlobKind::try_from(kind)) {
                out.push(PackUsage {
                    id,
                    kind,
                    size: size as u64,
                    used: used as u64,
                    indexed: total as u64,
                });
            }
        }
        Ok(out)
    }

    // ---- snapshots and trees ----

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .ids("SELECT id FROM snapshots")?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    pub fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<Vec<u8>>> {
        self.get("snapshots", &id.0)
    }

    pub fn put_snapshot(&self, id: &SnapshotId, data: &[u8]) -> Result<()> {
        self.put("snapshots", &id.0, data)
    }

    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.lock()
            .execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn get_tree(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        self.get("trees", &id.0)
    }

    /// Bytes of cached trees, as counted when they were added.
    fn tree_bytes(conn: &Connection) -> rusqlite::Result<i64> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = 'tree_bytes'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Keeps the cached trees under `limit` bytes: when over, the oldest go until a quarter
    /// of the room is free again (they come back by the pack when needed).
    pub fn bound_trees(&self, limit: u64) -> Result<()> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<()> {
            let total = Self::tree_bytes(&conn)?;
            if total as u64 <= limit {
                return Ok(());
            }
            let goal = (limit / 4 * 3) as i64;
            let own = conn.is_autocommit();
            if own {
                conn.execute_batch("BEGIN IMMEDIATE")?;
            }
            let mut left = total;
            let mut oldest = Vec::new();
            {
                let mut st = conn.prepare("SELECT id, LENGTH(data) FROM trees ORDER BY added")?;
                let mut rows = st.query([])?;
                while left > goal {
                    let Some(r) = rows.next()? else { break };
                    left -= r.get::<_, i64>(1)?;
                    oldest.push(r.get::<_, Vec<u8>>(0)?);
                }
            }
            let mut del = conn.prepare_cached("DELETE FROM trees WHERE id = ?1")?;
            for id in &oldest {
                del.execute([id])?;
            }
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('tree_bytes', ?1)",
                [left.max(0).to_string()],
            )?;
            if own {
                conn.execute_batch("COMMIT")?;
            }
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }

    pub fn has_tree(&self, id: &BlobId) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM trees WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// Caches many trees in one transaction (or in the one already open).
    pub fn put_trees(&self, trees: &[(BlobId, Vec<u8>)]) -> Result<()> {
        if trees.is_empty() {
            return Ok(());
        }
        let conn = self.lock();
        let own = conn.is_autocommit();
        let run = || -> rusqlite::Result<()> {
            if own {
                conn.execute_batch("BEGIN IMMEDIATE")?;
            }
            // Content-addressed: a tree already cached is the same bytes, and counts once.
            let mut st = conn.prepare_cached(
                "INSERT OR IGNORE INTO trees (id, data, added) VALUES (?1, ?2, ?3)",
            )?;
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let mut added = 0i64;
            for (id, data) in trees {
                if st.execute(params![&id.0[..], data, now])? == 1 {
                    added += data.len() as i64;
                }
            }
            if added > 0 {
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('tree_bytes', ?1)",
                    [(Self::tree_bytes(&conn)? + added).to_string()],
                )?;
            }
            if own {
                conn.execute_batch("COMMIT")?;
            }
            Ok(())
        };
        let r = run();
        if r.is_err() && own && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        r.map_err(|e| self.err(e))
    }

    fn get(&self, table: &str, id: &[u8]) -> Result<Option<Vec<u8>>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!("SELECT data FROM {table} WHERE id = ?1"))
            .map_err(|e| self.err(e))?;
        st.query_row([id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    fn put(&self, table: &str, id: &[u8], data: &[u8]) -> Result<()> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {table} (id, data) VALUES (?1, ?2)"
            ))
            .map_err(|e| self.err(e))?;
        st.execute(params![id, data])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    // ---- per-set state ----

    /// The last snapshot this cache saw written for a backup set.
    pub fn last_snapshot(&self, set: &str) -> Result<Option<SnapshotId>> {
        let conn = self.lock();
        let v: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("last:{set}")],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    pub fn set_last_snapshot(&self, set: &str, id: &SnapshotId) -> Result<()> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![format!("last:{set}"), id.to_hex()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    // ---- file cache ----

    pub fn file_lookup(&self, set: &str, path: &[u8]) -> Result<Option<(FileStat, Vec<BlobId>)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, inode, device, content FROM files
                 WHERE set_key = ?1 AND path = ?2",
            )
            .map_err(|e| self.err(e))?;
        let row = st
            .query_row(params![set, path], |r| {
                Ok((
                    FileStat {
                        size: r.get::<_, i64>(0)? as u64,
                        mtime_ns: r.get(1)?,
                        ctime_ns: r.get(2)?,
                        inode: r.get::<_, i64>(3)? as u64,
                        device: r.get::<_, i64>(4)? as u64,
                    },
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(stat, content)| {
            let ids = content
                .chunks_exact(32)
                .filter_map(BlobId::from_slice)
                .collect();
            (stat, ids)
        }))
    }

    pub fn file_store(
        &self,
        set: &str,
        path: &[u8],
        stat: &FileStat,
        content: &[BlobId],
        mark: i64,
    ) -> Result<()> {
        let ids: Vec<u8> = content.iter().flat_map(|id| id.0).collect();
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "INSERT OR REPLACE INTO files
                 (set_key, path, size, mtime_ns, ctime_ns, inode, device, content, run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(|e| self.err(e))?;
        st.execute(params![
            set,
            path,
            stat.size as i64,
            stat.mtime_ns,
            stat.ctime_ns,
            stat.inode as i64,
            stat.device as i64,
            ids,
            mark
        ])
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Whether the file cache knows any file of a set.
    pub fn file_cache_has(&self, set: &str) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM files WHERE set_key = ?1 LIMIT 1")
            .map_err(|e| self.err(e))?;
        st.exists([set]).map_err(|e| self.err(e))
    }

    pub fn file_touch(&self, set: &str, path: &[u8], mark: i64) -> Result<()> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("UPDATE files SET run = ?3 WHERE set_key = ?1 AND path = ?2")
            .map_err(|e| self.err(e))?;
        st.execute(params![set, path, mark])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drops files the latest run of a set did not see (deleted since): those without that
    /// run's `mark`, which every file it saw got by `file_store` or `file_touch`.
    pub fn file_sweep(&self, set: &str, mark: i64) -> Result<()> {
        self.lock()
            .execute(
                "DELETE FROM files WHERE set_key = ?1 AND run <> ?2",
                params![set, mark],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_dropped_uncommitted_rolls_back_and_frees_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (a, b) = (SnapshotId([1; 32]), SnapshotId([2; 32]));
        {
            let _tx = cache.transaction().unwrap();
            cache.set_last_snapshot("set:x", &a).unwrap();
            // An error path: the guard goes without a commit.
        }
        assert_eq!(cache.last_snapshot("set:x").unwrap(), None);
        // No transaction is left open: the next one begins.
        let tx = cache.transaction().unwrap();
        cache.set_last_snapshot("set:x", &b).unwrap();
        tx.commit().unwrap();
        assert_eq!(cache.last_snapshot("set:x").unwrap(), Some(b));
        drop(cache);
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(
            cache.last_snapshot("set:x").unwrap(),
            Some(b),
            "committed for good"
        );
    }

    #[test]
    fn the_tree_cache_is_bounded_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        for i in 0..10u8 {
            cache
                .put_trees(&[(BlobId([i; 32]), vec![i; 1000])])
                .unwrap();
            // The same tree again counts once.
            cache
                .put_trees(&[(BlobId([i; 32]), vec![i; 1000])])
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        cache.bound_trees(20_000).unwrap();
        assert!(
            cache.has_tree(&BlobId([0; 32])).unwrap(),
            "under the limit: all kept"
        );
        cache.bound_trees(8_000).unwrap();
        // Down to three quarters of the limit: the four oldest went.
        for i in 0..10u8 {
            assert_eq!(
                cache.has_tree(&BlobId([i; 32])).unwrap(),
                i >= 4,
                "tree {i}"
            );
        }
        drop(cache);
        let cache = Cache::open(dir.path()).unwrap();
        cache.bound_trees(8_000).unwrap();
        assert!(
            cache.has_tree(&BlobId([4; 32])).unwrap(),
            "the count survived reopening"
        );
    }
}
