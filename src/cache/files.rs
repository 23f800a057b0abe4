//! Per-lineage state: each lineage's last snapshot, and the file cache that lets a backup
//! skip files whose stat is unchanged.

use rusqlite::{params, OptionalExtension};

use super::{Cache, FileStat};
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};

impl Cache {
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
