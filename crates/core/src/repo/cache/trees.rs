//! Decrypted snapshot manifests, audit records and trees, the trees bounded in size.

use rusqlite::{params, Connection, OptionalExtension};

use super::Cache;
use crate::error::Result;
use crate::id::{AuditId, BlobId, SnapshotId};

/// Decrypted snapshot manifests, by id.
pub struct SnapshotCache<'c>(&'c Cache);

/// Decrypted audit records, by id.
pub struct AuditCache<'c>(&'c Cache);

/// Decrypted trees, by id, bounded in bytes.
pub struct TreeCache<'c>(&'c Cache);

impl Cache {
    /// The snapshot manifest cache.
    pub fn snapshots(&self) -> SnapshotCache<'_> {
        SnapshotCache(self)
    }

    /// The tree cache.
    pub fn trees(&self) -> TreeCache<'_> {
        TreeCache(self)
    }

    /// The audit record cache.
    pub fn audits(&self) -> AuditCache<'_> {
        AuditCache(self)
    }
}

impl AuditCache<'_> {
    pub fn ids(&self) -> Result<Vec<AuditId>> {
        Ok(self
            .0
            .ids("SELECT id FROM audits")?
            .into_iter()
            .map(AuditId)
            .collect())
    }

    pub fn get(&self, id: &AuditId) -> Result<Option<Vec<u8>>> {
        self.0.get("audits", &id.0)
    }

    pub fn put(&self, id: &AuditId, data: &[u8]) -> Result<()> {
        self.0.put("audits", &id.0, data)
    }

    pub fn remove(&self, id: &AuditId) -> Result<()> {
        self.0
            .lock()
            .execute("DELETE FROM audits WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(|e| self.0.err(e))
    }
}

impl SnapshotCache<'_> {
    pub fn ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .0
            .ids("SELECT id FROM snapshots")?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    pub fn get(&self, id: &SnapshotId) -> Result<Option<Vec<u8>>> {
        self.0.get("snapshots", &id.0)
    }

    pub fn put(&self, id: &SnapshotId, data: &[u8]) -> Result<()> {
        self.0.put("snapshots", &id.0, data)
    }

    pub fn remove(&self, id: &SnapshotId) -> Result<()> {
        self.0
            .lock()
            .execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(|e| self.0.err(e))
    }
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

impl TreeCache<'_> {
    pub fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        self.0.get("trees", &id.0)
    }

    /// Keeps the cached trees under `limit` bytes: when over, the oldest go until a quarter
    /// of the room is free again (they come back by the pack when needed).
    pub fn bound(&self, limit: u64) -> Result<()> {
        let conn = self.0.lock();
        let run = || -> rusqlite::Result<()> {
            let total = tree_bytes(&conn)?;
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
        run().map_err(|e| self.0.err(e))
    }

    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM trees WHERE id = ?1")
            .map_err(|e| self.0.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.0.err(e))
    }

    /// Caches many trees in one transaction (or in the one already open).
    pub fn put(&self, trees: &[(BlobId, Vec<u8>)]) -> Result<()> {
        if trees.is_empty() {
            return Ok(());
        }
        let conn = self.0.lock();
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
                    [(tree_bytes(&conn)? + added).to_string()],
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
        r.map_err(|e| self.0.err(e))
    }
}

impl Cache {
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
}
