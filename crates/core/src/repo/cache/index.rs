//! The blob index (from the repository's index files, with prune's marked packs) and
//! prune's set of used blobs.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use chrono::{DateTime, FixedOffset};

use rusqlite::{params, OptionalExtension};

use super::{BlobLocation, Cache, PackUsage};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, MarkId, PackId};
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::marks::MarkRecord;
use crate::repo::pack::{BlobEntry, BlobKind, Compression};

/// The cached blob index: where each blob is, which packs and index files exist.
pub struct BlobIndex<'c>(&'c Cache);

/// Adds many index files at once (see [`BlobIndex::loader`]); [`IndexLoader::finish`]
/// makes what it added visible to lookups. Dropped unfinished inside a rolled-back
/// transaction, it leaves nothing behind.
pub struct IndexLoader<'c> {
    index: BlobIndex<'c>,
    staged: bool,
}

impl IndexLoader<'_> {
    /// Adds an index file's entries (and its marked packs).
    pub fn add_file(&self, id: &IndexId, file: &IndexFile) -> Result<()> {
        let table = if self.staged { "staged_blobs" } else { "blobs" };
        self.index.insert_file(id, file, table)
    }

    /// Moves the staged entries into the blob table, in key order. A blob listed twice
    /// keeps its first location, as inserting file by file would.
    pub fn finish(self) -> Result<()> {
        if !self.staged {
            return Ok(());
        }
        let cache = self.index.0;
        // The by-pack index is left to the first command that needs it (BlobIndex::by_pack):
        // a restore on a bare machine never does.
        cache.by_pack.store(false, Ordering::Relaxed);
        cache.sorting(
            "DROP INDEX IF EXISTS blobs_by_pack;
             INSERT OR IGNORE INTO blobs
                 SELECT id, kind, pack, offset, length, raw_length, compression
                 FROM staged_blobs ORDER BY id, rowid;
             DROP TABLE staged_blobs;",
        )
    }
}

/// Prune's set of blobs some snapshot uses, a temporary table so it never has to fit in
/// memory, and what it makes of each pack.
pub struct UsedBlobs<'c>(&'c Cache);

impl Cache {
    /// The blob index.
    pub fn index(&self) -> BlobIndex<'_> {
        BlobIndex(self)
    }

    /// Prune's used-blob set.
    pub fn used_blobs(&self) -> UsedBlobs<'_> {
        UsedBlobs(self)
    }
}

impl<'c> BlobIndex<'c> {
    /// The index files whose entries are in the cache.
    pub fn files(&self) -> Result<Vec<IndexId>> {
        Ok(self
            .0
            .ids("SELECT id FROM index_files")?
            .into_iter()
            .map(IndexId)
            .collect())
    }

    /// Forgets that an index file was read, keeping its entries (another file has them).
    pub fn forget_file(&self, id: &IndexId) -> Result<()> {
        self.0
            .lock()
            .execute("DELETE FROM index_files WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(|e| self.0.err(e))
    }

    /// Remembers an index file this cache's backups wrote, with its packs, so that a later
    /// backup can merge it without reading it (format-spec §10).
    pub fn add_own_file(&self, id: &IndexId, packs: &[IndexedPack]) -> Result<()> {
        let mut buf = Vec::new();
        ciborium::into_writer(packs, &mut buf).expect("CBOR into memory");
        self.0
            .lock()
            .execute(
                "INSERT OR REPLACE INTO own_files (id, packs) VALUES (?1, ?2)",
                params![&id.0[..], buf],
            )
            .map(|_| ())
            .map_err(|e| self.0.err(e))
    }

    /// The index files this cache's backups wrote that are still in its view (listed at
    /// the last full read or written since, and superseded by no record read), with their
    /// packs. The others are forgotten.
    pub fn own_files(&self) -> Result<Vec<(IndexId, Vec<IndexedPack>)>> {
        let rows: Vec<([u8; 32], Vec<u8>, bool)> = {
            let conn = self.0.lock();
            let mut stmt = conn
                .prepare(
                    "SELECT o.id, o.packs,
                            o.id IN (SELECT id FROM index_files)
                            AND o.id NOT IN (SELECT id FROM superseded_files)
                     FROM own_files o",
                )
                .map_err(|e| self.0.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.0.err(e))?;
            rows
        };
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, packs, in_view) in rows {
            let packs = ciborium::from_reader::<Vec<IndexedPack>, _>(&packs[..]);
            match (in_view, packs) {
                (true, Ok(packs)) => live.push((IndexId(id), packs)),
                _ => gone.push(IndexId(id)),
            }
        }
        self.forget_own_files(&gone)?;
        Ok(live)
    }

    /// Forgets index files of this cache's backups (merged, or gone).
    pub fn forget_own_files(&self, ids: &[IndexId]) -> Result<()> {
        let conn = self.0.lock();
        for id in ids {
            conn.execute("DELETE FROM own_files WHERE id = ?1", [&id.0[..]])
                .map_err(|e| self.0.err(e))?;
        }
        Ok(())
    }

    /// Forgets the whole blob index (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.0
            .lock()
            .execute_batch(
                "DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_files;
                 DELETE FROM marked_packs; DELETE FROM marked_blobs; DELETE FROM dropped_packs;
                 DELETE FROM mark_records; DELETE FROM superseded_files;",
            )
            .map_err(|e| self.0.err(e))
    }

    /// Adds an index file's entries (and its marked packs).
    pub fn add_file(&self, id: &IndexId, file: &IndexFile) -> Result<()> {
        self.insert_file(id, file, "blobs")
    }

    /// Makes sure blobs can be found by pack. The index that does it costs about a third
    /// of an index rebuild (a sort of every blob by pack), and only prune, check and
    /// repairs ask by pack: it is built by the first of them, not by every rebuild, so
    /// that the first command on a bare machine (typically a restore) does not pay for it.
    /// Once built, inserts keep it up to date.
    fn by_pack(&self) -> Result<()> {
        if self.0.by_pack.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.0
            .sorting("CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs (pack);")?;
        self.0.by_pack.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// A loader for many index files: into an empty blob table (a cache rebuilt from
    /// nothing), entries are staged as they come and moved in key order at the end.
    ///
    /// Inserted one by one, 10^6 random 32-byte keys land all over a B-tree far larger
    /// than the page cache, and every insert reads and dirties a page of it (twice, with
    /// the by-pack index): most of a rebuild went there. Appended to an unindexed table and
    /// then copied sorted, each page is written once. SQLite's sorter spills to temporary
    /// files beyond the page cache's size, so memory stays bounded.
    pub fn loader(&self) -> Result<IndexLoader<'c>> {
        let empty = !self
            .0
            .lock()
            .prepare("SELECT 1 FROM blobs LIMIT 1")
            .and_then(|mut st| st.exists([]))
            .map_err(|e| self.0.err(e))?;
        if empty {
            self.0
                .lock()
                .execute_batch(
                    "CREATE TEMP TABLE IF NOT EXISTS staged_blobs (
                         id BLOB NOT NULL, kind INTEGER NOT NULL, pack BLOB NOT NULL,
                         offset INTEGER NOT NULL, length INTEGER NOT NULL,
                         raw_length INTEGER NOT NULL, compression INTEGER NOT NULL);
                     DELETE FROM staged_blobs;",
                )
                .map_err(|e| self.0.err(e))?;
        }
        Ok(IndexLoader {
            index: BlobIndex(self.0),
            staged: empty,
        })
    }

    fn insert_file(&self, id: &IndexId, file: &IndexFile, table: &str) -> Result<()> {
        let conn = self.0.lock();
        let run = || -> rusqlite::Result<()> {
            // A blob listed twice keeps its first location, unless that one is in a pack
            // a mark record took out (a partial view does not read the prune's own index
            // file, so a copy stored again since is the only one it can deduplicate
            // against: kept on the first, it would be stored again on every run).
            let sql = match table {
                "blobs" => "INSERT INTO blobs
                     (id, kind, pack, offset, length, raw_length, compression)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,
                         pack = excluded.pack, offset = excluded.offset,
                         length = excluded.length, raw_length = excluded.raw_length,
                         compression = excluded.compression
                     WHERE blobs.pack IN (SELECT id FROM dropped_packs)
                         AND excluded.pack NOT IN (SELECT id FROM dropped_packs)"
                    .to_string(),
                _ => format!(
                    "INSERT OR IGNORE INTO {table}
                     (id, kind, pack, offset, length, raw_length, compression)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
            };
            let mut blob = conn.prepare_cached(&sql)?;
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
        run().map_err(|e| self.0.err(e))
    }

    /// Where to read a blob: from a live pack, else from a pack marked obsolete (which
    /// may be gone by now; the read then fails with the pack named).
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        match self.lookup_in("blobs", id)? {
            Some(loc) => Ok(Some(loc)),
            None => self.lookup_in("marked_blobs", id),
        }
    }

    fn lookup_in(&self, table: &str, id: &BlobId) -> Result<Option<BlobLocation>> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT pack, id, kind, offset, length, raw_length, compression FROM {table}
                 WHERE id = ?1 LIMIT 1"
            ))
            .map_err(|e| self.0.err(e))?;
        let row = st
            .query_row([&id.0[..]], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, EntryRow::read(r, 1)?))
            })
            .optional()
            .map_err(|e| self.0.err(e))?;
        row.map(|(pack, entry)| {
            Ok(BlobLocation {
                pack: PackId::from_slice(&pack)
                    .ok_or_else(|| Error::corrupt("local cache", "bad pack id"))?,
                entry: entry.entry()?,
            })
        })
        .transpose()
    }

    /// Packs marked obsolete by prune, with their kinds.
    pub fn marked_packs(&self) -> Result<Vec<(PackId, BlobKind)>> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT id, kind FROM marked_packs ORDER BY id")
            .map_err(|e| self.0.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u8>(1)?)))
            .map_err(|e| self.0.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind) = r.map_err(|e| self.0.err(e))?;
            if let (Some(id), Ok(kind)) = (PackId::from_slice(&id), BlobKind::try_from(kind)) {
                out.push((id, kind));
            }
        }
        Ok(out)
    }

    /// Whether a backup may deduplicate against the blob: it is in a live pack that no
    /// mark record read names (format-spec §7.3; a partial view does not know every mark
    /// an index file carries).
    pub fn dedupable(&self, id: &BlobId) -> Result<bool> {
        Ok(self.lookup_dedupable(id)?.is_some())
    }

    /// Where a blob is that a backup may deduplicate against (see [`Self::dedupable`]).
    pub fn lookup_dedupable(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let loc = self.lookup_in("blobs", id)?;
        match loc {
            Some(l) if self.dropped(&l.pack)? => Ok(None),
            loc => Ok(loc),
        }
    }

    fn dropped(&self, pack: &PackId) -> Result<bool> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM dropped_packs WHERE id = ?1")
            .map_err(|e| self.0.err(e))?;
        st.exists([&pack.0[..]]).map_err(|e| self.0.err(e))
    }

    /// Whether a blob is in a live pack: backups deduplicate only against these, so that
    /// nothing new comes to depend on a pack that prune marked.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")
            .map_err(|e| self.0.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.0.err(e))
    }

    /// Plaintext and stored bytes of the blobs of `kind` the index holds.
    pub fn byte_totals(&self, kind: BlobKind) -> Result<(u64, u64)> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(raw_length), 0), COALESCE(SUM(length), 0) \
                 FROM blobs WHERE kind = ?1",
            )
            .map_err(|e| self.0.err(e))?;
        st.query_row([kind as u8], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .map_err(|e| self.0.err(e))
    }

    /// How many blobs of each kind the index holds.
    pub fn blob_counts(&self) -> Result<Vec<(BlobKind, u64)>> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT kind, COUNT(*) FROM blobs GROUP BY kind ORDER BY kind")
            .map_err(|e| self.0.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, u8>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.0.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (kind, n) = r.map_err(|e| self.0.err(e))?;
            if let Ok(kind) = BlobKind::try_from(kind) {
                out.push((kind, n as u64));
            }
        }
        Ok(out)
    }

    /// Every pack the index names, with kind and size.
    pub fn packs(&self) -> Result<Vec<(PackId, BlobKind, u64)>> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT id, kind, size FROM packs ORDER BY id")
            .map_err(|e| self.0.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.0.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, size) = r.map_err(|e| self.0.err(e))?;
            if let (Some(id), Ok(kind)) = (PackId::from_slice(&id), BlobKind::try_from(kind)) {
                out.push((id, kind, size as u64));
            }
        }
        Ok(out)
    }

    /// The size the index gives a live pack (`None` for one it does not name).
    pub fn pack_size(&self, pack: &PackId) -> Result<Option<u64>> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT size FROM packs WHERE id = ?1")
            .map_err(|e| self.0.err(e))?;
        st.query_row([&pack.0[..]], |r| r.get::<_, i64>(0))
            .optional()
            .map(|s| s.map(|s| s as u64))
            .map_err(|e| self.0.err(e))
    }

    /// The blobs the index places in one pack, by offset.
    pub fn pack_blobs(&self, pack: &PackId) -> Result<Vec<BlobEntry>> {
        self.by_pack()?;
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT id, kind, offset, length, raw_length, compression FROM blobs
                 WHERE pack = ?1 ORDER BY offset",
            )
            .map_err(|e| self.0.err(e))?;
        let rows = st
            .query_map([&pack.0[..]], |r| EntryRow::read(r, 0))
            .map_err(|e| self.0.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(|e| self.0.err(e))?.entry()?);
        }
        Ok(out)
    }
}

impl UsedBlobs<'_> {
    /// Starts an empty set of used blobs (a temporary table: never in RAM as a whole).
    pub fn reset(&self) -> Result<()> {
        self.0
            .lock()
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS used (id BLOB PRIMARY KEY) WITHOUT ROWID;
                 DELETE FROM used;",
            )
            .map_err(|e| self.0.err(e))
    }

    /// Marks a blob used; returns whether it was new to the set.
    pub fn add(&self, id: &BlobId) -> Result<bool> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("INSERT OR IGNORE INTO used (id) VALUES (?1)")
            .map_err(|e| self.0.err(e))?;
        st.execute([&id.0[..]])
            .map(|n| n == 1)
            .map_err(|e| self.0.err(e))
    }

    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM used WHERE id = ?1")
            .map_err(|e| self.0.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.0.err(e))
    }

    /// Per pack: kind, size, the bytes of its used blobs and of all its indexed blobs.
    pub fn pack_usage(&self) -> Result<Vec<PackUsage>> {
        BlobIndex(self.0).by_pack()?;
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT p.id, p.kind, p.size,
                        COALESCE(SUM(CASE WHEN u.id IS NOT NULL THEN b.length ELSE 0 END), 0),
                        COALESCE(SUM(b.length), 0)
                 FROM packs p LEFT JOIN blobs b ON b.pack = p.id LEFT JOIN used u ON u.id = b.id
                 GROUP BY p.id ORDER BY p.id",
            )
            .map_err(|e| self.0.err(e))?;
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
            .map_err(|e| self.0.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, size, used, total) = r.map_err(|e| self.0.err(e))?;
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
}

/// A blob entry as the tables store it: `id, kind, offset, length, raw_length,
/// compression` from column `at` on.
struct EntryRow {
    id: Vec<u8>,
    kind: u8,
    offset: i64,
    length: u32,
    raw_length: u32,
    compression: u8,
}

impl EntryRow {
    fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Self> {
        Ok(EntryRow {
            id: r.get(at)?,
            kind: r.get(at + 1)?,
            offset: r.get(at + 2)?,
            length: r.get(at + 3)?,
            raw_length: r.get(at + 4)?,
            compression: r.get(at + 5)?,
        })
    }

    fn entry(self) -> Result<BlobEntry> {
        let bad = |what: String| Error::corrupt("local cache", what);
        Ok(BlobEntry {
            id: BlobId::from_slice(&self.id).ok_or_else(|| bad("bad blob id".into()))?,
            kind: BlobKind::try_from(self.kind).map_err(bad)?,
            offset: self.offset as u64,
            length: self.length,
            raw_length: self.raw_length,
            compression: Compression::try_from(self.compression).map_err(bad)?,
        })
    }
}

/// Mark records (format-spec §7.3) and the packs they take out of what backups
/// deduplicate against.
impl BlobIndex<'_> {
    /// The mark records read.
    pub fn mark_records(&self) -> Result<HashSet<MarkId>> {
        Ok((self.0.ids("SELECT id FROM mark_records")?.into_iter())
            .map(MarkId)
            .collect())
    }

    /// Remembers a mark record read or written.
    /// Remembers a mark record read or written and takes its packs out of what backups
    /// deduplicate against, both or neither: a record counted as read whose packs were not
    /// dropped would never be applied again (format-spec §7.3).
    pub fn add_mark_record(&self, id: &MarkId, record: &MarkRecord) -> Result<()> {
        let packs: Vec<u8> = record.packs.iter().flat_map(|p| p.0).collect();
        let conn = self.0.lock();
        let run = || -> rusqlite::Result<()> {
            conn.execute_batch("SAVEPOINT mark_record")?;
            let added = (|| {
                let mut insert =
                    conn.prepare_cached("INSERT OR IGNORE INTO dropped_packs (id) VALUES (?1)")?;
                for pack in packs.chunks_exact(32) {
                    insert.execute([pack])?;
                }
                let mut superseded =
                    conn.prepare_cached("INSERT OR IGNORE INTO superseded_files (id) VALUES (?1)")?;
                for file in &record.superseded {
                    superseded.execute([&file.0[..]])?;
                }
                conn.execute(
                    "INSERT OR REPLACE INTO mark_records (id, time, packs) VALUES (?1, ?2, ?3)",
                    params![&id.0[..], record.time, packs],
                )
            })();
            match added {
                Ok(_) => conn.execute_batch("RELEASE mark_record"),
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO mark_record; RELEASE mark_record")?;
                    Err(e)
                }
            }
        };
        run().map_err(|e| self.0.err(e))
    }

    /// Makes the next listing of `marks/` happen before anything is deduplicated from a
    /// partial view again: the next run reads every index file.
    pub fn forget_marks_listed(&self) -> Result<()> {
        self.0
            .lock()
            .execute("DELETE FROM meta WHERE key = 'marks_listed'", [])
            .map(|_| ())
            .map_err(|e| self.0.err(e))
    }

    /// Forgets the records `listed` does not have (prune deleted them).
    pub fn keep_mark_records(&self, listed: &[MarkId]) -> Result<()> {
        let listed: HashSet<MarkId> = listed.iter().copied().collect();
        for id in self.mark_records()? {
            if !listed.contains(&id) {
                self.forget_mark_record(&id)?;
            }
        }
        Ok(())
    }

    /// Forgets one record.
    pub fn forget_mark_record(&self, id: &MarkId) -> Result<()> {
        self.0
            .lock()
            .execute("DELETE FROM mark_records WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(|e| self.0.err(e))
    }

    /// Each record read, with the time it says it was written.
    pub fn mark_record_times(&self) -> Result<Vec<(MarkId, String)>> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT id, time FROM mark_records")
            .map_err(|e| self.0.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.0.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, time) = r.map_err(|e| self.0.err(e))?;
            if let Ok(id) = <[u8; 32]>::try_from(id) {
                out.push((MarkId(id), time));
            }
        }
        Ok(out)
    }

    /// When `marks/` was last listed (the listing's start), if ever.
    pub fn marks_listed(&self) -> Result<Option<DateTime<FixedOffset>>> {
        Ok(self
            .0
            .meta_get("marks_listed")?
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok()))
    }

    /// Whether a mark record read says an operation superseded index file `id`.
    pub fn superseded(&self, id: &IndexId) -> Result<bool> {
        let conn = self.0.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM superseded_files WHERE id = ?1")
            .map_err(|e| self.0.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.0.err(e))
    }

    /// The index file a partial view checks is still there (see
    /// [`crate::Repository::sentinel_holds`]).
    pub fn sentinel(&self) -> Result<Option<IndexId>> {
        Ok(self.0.meta_get("sentinel")?.and_then(|s| s.parse().ok()))
    }

    /// Sets (or with `None` forgets) the sentinel index file, forgetting its fingerprint.
    pub fn set_sentinel(&self, id: Option<&IndexId>) -> Result<()> {
        self.0
            .lock()
            .execute(
                "DELETE FROM meta WHERE key IN ('sentinel', 'sentinel_print')",
                [],
            )
            .map_err(|e| self.0.err(e))?;
        match id {
            Some(id) => self.0.meta_put("sentinel", &id.to_hex()),
            None => Ok(()),
        }
    }

    /// The sentinel's size and last bytes (its authentication tag; empty until its first
    /// check), where known: what its check compares, so that junk written under its name
    /// does not pass for it.
    pub fn sentinel_print(&self) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self.0.meta_get("sentinel_print")?.and_then(|v| {
            let (size, tail) = v.split_once(':')?;
            Some((size.parse().ok()?, hex::decode(tail).ok()?))
        }))
    }

    /// Remembers the sentinel's size and last bytes.
    pub fn set_sentinel_print(&self, size: u64, tail: &[u8]) -> Result<()> {
        self.0
            .meta_put("sentinel_print", &format!("{size}:{}", hex::encode(tail)))
    }

    /// Remembers when `marks/` was listed.
    pub fn set_marks_listed(&self, at: DateTime<FixedOffset>) -> Result<()> {
        self.0.meta_put("marks_listed", &at.to_rfc3339())
    }
}
