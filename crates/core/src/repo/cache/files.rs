//! Per-lineage state: each lineage's last snapshot, and the file cache that lets a backup
//! skip files whose stat is unchanged.

use rusqlite::{params, OptionalExtension};

use super::{Cache, FileStat};
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};
use crate::repo::tree::FileContent;

/// One lineage's state in the cache: its last snapshot and its file cache.
pub struct SetState<'c> {
    cache: &'c Cache,
    set: &'c str,
}

impl Cache {
    /// The state kept for one lineage (by [`crate::repo::snapshot::Lineage::cache_key`]).
    pub fn set_state<'c>(&'c self, set: &'c str) -> SetState<'c> {
        SetState { cache: self, set }
    }
}

impl SetState<'_> {
    /// The last snapshot this cache saw written for the lineage.
    pub fn last_snapshot(&self) -> Result<Option<SnapshotId>> {
        let conn = self.cache.lock();
        let v: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("last:{}", self.set)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.cache.err(e))?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    pub fn set_last_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.cache
            .lock()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![format!("last:{}", self.set), id.to_hex()],
            )
            .map(|_| ())
            .map_err(|e| self.cache.err(e))
    }

    // ---- file cache ----

    /// What the last run stored for the file at `path`, and its stat then.
    pub fn file(&self, path: &[u8]) -> Result<Option<(FileStat, FileContent)>> {
        let conn = self.cache.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, inode, device, content, data FROM files
                 WHERE set_key = ?1 AND path = ?2",
            )
            .map_err(|e| self.cache.err(e))?;
        let row = st
            .query_row(params![self.set, path], |r| {
                Ok((
                    FileStat {
                        size: r.get::<_, i64>(0)? as u64,
                        mtime_ns: r.get(1)?,
                        ctime_ns: r.get(2)?,
                        inode: r.get::<_, i64>(3)? as u64,
                        device: r.get::<_, i64>(4)? as u64,
                    },
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })
            .optional()
            .map_err(|e| self.cache.err(e))?;
        Ok(row.map(|(stat, content, data)| {
            let content = match data {
                Some(bytes) => FileContent::Inline(bytes),
                None => FileContent::Blobs(
                    content
                        .chunks_exact(32)
                        .filter_map(BlobId::from_slice)
                        .collect(),
                ),
            };
            (stat, content)
        }))
    }

    /// Remembers what this run (`mark`) stored for the file at `path`.
    pub fn store_file(
        &self,
        path: &[u8],
        stat: &FileStat,
        content: &FileContent,
        mark: i64,
    ) -> Result<()> {
        let (ids, data): (Vec<u8>, Option<&[u8]>) = match content {
            FileContent::Blobs(ids) => (ids.iter().flat_map(|id| id.0).collect(), None),
            FileContent::Inline(bytes) => (Vec::new(), Some(bytes)),
        };
        let conn = self.cache.lock();
        let mut st = conn
            .prepare_cached(
                "INSERT OR REPLACE INTO files
                 (set_key, path, size, mtime_ns, ctime_ns, inode, device, content, data, run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(|e| self.cache.err(e))?;
        st.execute(params![
            self.set,
            path,
            stat.size as i64,
            stat.mtime_ns,
            stat.ctime_ns,
            stat.inode as i64,
            stat.device as i64,
            ids,
            data,
            mark
        ])
        .map(|_| ())
        .map_err(|e| self.cache.err(e))
    }

    /// Whether the file cache knows any file of the lineage.
    pub fn has_files(&self) -> Result<bool> {
        let conn = self.cache.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM files WHERE set_key = ?1 LIMIT 1")
            .map_err(|e| self.cache.err(e))?;
        st.exists([self.set]).map_err(|e| self.cache.err(e))
    }

    pub fn touch(&self, path: &[u8], mark: i64) -> Result<()> {
        let conn = self.cache.lock();
        let mut st = conn
            .prepare_cached("UPDATE files SET run = ?3 WHERE set_key = ?1 AND path = ?2")
            .map_err(|e| self.cache.err(e))?;
        st.execute(params![self.set, path, mark])
            .map(|_| ())
            .map_err(|e| self.cache.err(e))
    }

    /// Files the cache holds that the run with `mark` did not see: those a complete run
    /// found deleted (or now excluded), before [`SetState::sweep`] drops them.
    pub fn unseen(&self, mark: i64) -> Result<u64> {
        self.cache
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM files WHERE set_key = ?1 AND run <> ?2",
                params![self.set, mark],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.cache.err(e))
    }

    /// Drops files the latest run of the lineage did not see (deleted since): those without that
    /// run's `mark`, which every file it saw got by `store_file` or `touch`.
    pub fn sweep(&self, mark: i64) -> Result<()> {
        self.cache
            .lock()
            .execute(
                "DELETE FROM files WHERE set_key = ?1 AND run <> ?2",
                params![self.set, mark],
            )
            .map(|_| ())
            .map_err(|e| self.cache.err(e))
    }
}
