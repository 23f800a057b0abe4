//! Per-lineage state: each lineage's last snapshot, and the file cache that lets a backup
//! skip files whose stat is unchanged.

use rusqlite::{params, OptionalExtension};

use super::{Cache, FileStat};
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};

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

    pub fn file(&self, path: &[u8]) -> Result<Option<(FileStat, Vec<BlobId>)>> {
        let conn = self.cache.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, inode, device, content FROM files
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
                ))
            })
            .optional()
            .map_err(|e| self.cache.err(e))?;
        Ok(row.map(|(stat, content)| {
            let ids = content
                .chunks_exact(32)
                .filter_map(BlobId::from_slice)
                .collect();
            (stat, ids)
        }))
    }

    pub fn store_file(
        &self,
        path: &[u8],
        stat: &FileStat,
        content: &[BlobId],
        mark: i64,
    ) -> Result<()> {
        let ids: Vec<u8> = content.iter().flat_map(|id| id.0).collect();
        let conn = self.cache.lock();
        let mut st = conn
            .prepare_cached(
                "INSERT OR REPLACE INTO files
                 (set_key, path, size, mtime_ns, ctime_ns, inode, device, content, run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
