//! The index: the cache brought up to date with the index files, rebuilt from pack headers,
//! replaced; packs written and blobs looked up through it.

use super::*;

/// Listings an index read makes at most while files it listed vanish before it reads
/// them (replaced by a prune or a backup's merge meanwhile).
const INDEX_READS: usize = 8;

impl Repository {
    /// Brings the cached blob index in line with the repository's index files: reads new
    /// ones, and rebuilds from scratch if one the cache knows has gone (prune removed it).
    pub(crate) fn sync_index(&self) -> Result<()> {
        self.sync_index_from(None)
    }

    /// As [`Repository::sync_index`], starting from what `open` fetched early. A full
    /// view needs no mark records (format-spec §10.1 holds for it as it is); a rebuild
    /// forgets those read, so that the next partial view reads them all again.
    pub(super) fn sync_index_from(&self, mut early: Option<EarlyIndex>) -> Result<()> {
        // A prune running meanwhile deletes index files between our listing and reading
        // (after writing the ones that replace them): list again and read what is there now.
        let mut synced = None;
        for _ in 0..INDEX_READS {
            match self.sync_index_once(early.take()) {
                Err(Error::NotFound {
                    what:
                        Missing::File {
                            kind: FileKind::Index,
                            ..
                        },
                }) => continue,
                r => {
                    synced = Some(r);
                    break;
                }
            }
        }
        // Still listed and not there after every listing: a listing that lags deletions (a
        // node of a cluster back from an outage lists what was deleted meanwhile). Read as
        // a damaged file: its packs are found from their headers, if they are still there.
        synced.unwrap_or_else(|| self.sync_index_tolerant(None, true))?;
        self.partial
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.synced.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Adds to a partial view the index files listed now that it has not read (none is
    /// dropped: a file gone was superseded by one that is listed), then the mark records
    /// listed after them. What a backup does once it has found enough new data that other
    /// hosts may have stored it: its cost then pays for itself. Runs inside the backup's
    /// cache transaction.
    pub(crate) fn extend_view(&self) -> Result<()> {
        let listed: Vec<IndexId> = (self.backend.list(FileKind::Index)?.into_iter())
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let known: HashSet<IndexId> = self.cache.index().files()?.into_iter().collect();
        let new: Vec<IndexId> = listed
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        let index = self.cache.index();
        for (id, loaded) in self.load_index_files(&new) {
            match loaded {
                Ok(file) => index.add_file(&id, &file)?,
                // Gone since the listing (a prune superseded it) or damaged: its packs are
                // simply not deduplicated against.
                Err(Error::NotFound { .. } | Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if self.apply_mark_records()?.reread {
            self.stop_deduplicating()?;
        }
        Ok(())
    }

    /// Whether this run may still deduplicate (see [`Repository::extend_view`]).
    pub(crate) fn may_dedupe(&self) -> bool {
        !self.dedupe_off.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the blob index is a partial view (see [`Repository::extend_view`]).
    pub(crate) fn partial_view(&self) -> bool {
        self.partial.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn sync_index_once(&self, early: Option<EarlyIndex>) -> Result<()> {
        self.sync_index_tolerant(early, false)
    }

    fn sync_index_tolerant(&self, early: Option<EarlyIndex>, missing_ok: bool) -> Result<()> {
        let (listed, mut sealed) = match early {
            Some(e) => (e.listed, e.sealed),
            None => (self.backend.list(FileKind::Index)?, HashMap::new()),
        };
        // The newest file listed is what the next partial view checks (format-spec §7.3).
        if self.config.partial_views() {
            self.choose_sentinel(&listed)?;
        }
        // One too large to be an index file is damaged from its listed size, never read.
        let mut oversized: Vec<(IndexId, Error)> = (listed.iter())
            .filter_map(|f| Some((f.name.parse().ok()?, f.oversized(FileKind::Index)?)))
            .collect();
        let listed: HashSet<IndexId> = listed
            .into_iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let known: HashSet<IndexId> = self.cache.index().files()?.into_iter().collect();
        let stale = known.iter().any(|id| !listed.contains(id));
        let tx = self.cache.transaction()?;
        let result = (|| {
            if stale {
                self.cache.index().clear()?;
            }
            let new: Vec<IndexId> = listed
                .iter()
                .filter(|id| stale || !known.contains(id))
                .copied()
                .collect();
            oversized.retain(|(id, _)| stale || !known.contains(id));
            let refused: HashSet<IndexId> = oversized.iter().map(|(id, _)| *id).collect();
            let new: Vec<IndexId> = (new.into_iter())
                .filter(|id| !refused.contains(id))
                .collect();
            let mut damaged = std::mem::take(&mut oversized);
            let (ready, to_load): (Vec<IndexId>, Vec<IndexId>) =
                new.iter().partition(|id| sealed.contains_key(id));
            let ready = ready.into_iter().map(|id| {
                let bytes = sealed.remove(&id).unwrap_or_default();
                (
                    id,
                    self.open_file::<IndexFile>(FileKind::Index, &id.to_hex(), &bytes),
                )
            });
            let loader = self.cache.index().loader()?;
            for (id, loaded) in ready.chain(self.load_index_files(&to_load)) {
                match loaded {
                    Ok(file) => loader.add_file(&id, &file)?,
                    // One damaged index file must not stop every operation: its packs are
                    // found from their own headers once the intact ones are known.
                    Err(e @ Error::Corrupt { .. }) => damaged.push((id, e)),
                    Err(e @ Error::NotFound { .. }) if missing_ok => damaged.push((id, e)),
                    Err(e) => return Err(e),
                }
            }
            loader.finish()?;
            let ids: Vec<IndexId> = damaged.iter().map(|(id, _)| *id).collect();
            let n = self.index_from_headers(&ids)?;
            match damaged.as_slice() {
                [] => {}
                [(_, e)] => self.warn(format!(
                    "{e}; skipped it and read the headers of {n} pack(s) no intact index \
                     names instead (a repair of the index writes a new one)"
                )),
                [(_, e), ..] => self.warn(format!(
                    "{} index files cannot be read (the first: {e}); skipped them and read \
                     the headers of {n} pack(s) no intact index names instead (a repair of \
                     the index writes a new one)",
                    damaged.len()
                )),
            }
            Ok(())
        })();
        result?;
        tx.commit()
    }

    /// Index files, decoded a batch at a time as the caller consumes them: a rebuild holds
    /// one batch of decoded entries, not the whole index (10^6 blobs are ~64 MB decoded).
    pub(super) fn load_index_files<'a>(
        &'a self,
        ids: &'a [IndexId],
    ) -> impl Iterator<Item = (IndexId, Result<IndexFile>)> + 'a {
        let batch = self.backend.capabilities().read_concurrency.max(1) * 4;
        ids.chunks(batch)
            .flat_map(move |chunk| self.load_many::<IndexFile, _>(FileKind::Index, chunk))
    }

    /// Loads sealed files of one kind, several requests in flight (a bare machine reads
    /// every index file and snapshot manifest: one round trip each, one after the other,
    /// would dominate its time on an object store). Batches keep memory bounded.
    pub(crate) fn load_many<T, I>(&self, kind: FileKind, ids: &[I]) -> Vec<(I, Result<T>)>
    where
        T: DeserializeOwned + Send,
        I: Copy + Send + Sync + std::fmt::Display,
    {
        use rayon::prelude::*;
        let batch = self.backend.capabilities().read_concurrency.max(1) * 4;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(batch) {
            let loaded: Vec<(I, Result<T>)> =
                crate::util::with_read_pool(self.backend.as_ref(), || {
                    chunk
                        .par_iter()
                        .map(|id| (*id, self.load_file::<T>(kind, &id.to_string())))
                        .collect()
                });
            out.extend(loaded);
        }
        out
    }

    /// Stands in for damaged index files: every pack on the backend that no intact index
    /// file names (nor marks) is read by its header and made readable in the cache, under
    /// the first damaged file's id, and each damaged id is recorded so that it is not read
    /// again. Once for all of them: a listing of every pack per damaged file made 20,000
    /// junk files cost a minute. Readable, not live: like a marked pack, backups do not
    /// deduplicate against it (nothing in the repository names it yet). Returns the number
    /// of packs so found.
    pub(super) fn index_from_headers(&self, damaged: &[IndexId]) -> Result<usize> {
        let Some((first, rest)) = damaged.split_first() else {
            return Ok(0);
        };
        let mut known: HashSet<PackId> = self
            .cache
            .index()
            .packs()?
            .into_iter()
            .map(|p| p.0)
            .collect();
        known.extend(self.cache.index().marked_packs()?.into_iter().map(|p| p.0));
        let now = crate::timespec::now().to_rfc3339();
        let mut unknown: Vec<(PackId, (pack::BlobKind, u64))> = self
            .stored_packs()?
            .into_iter()
            .filter(|(id, _)| !known.contains(id))
            .collect();
        unknown.sort_by_key(|u| u.0);
        let mut found = Vec::new();
        for (id, (kind, size)) in unknown {
            match self.read_pack_header(kind, &id, size) {
                Ok(entries) => found.push(ObsoletePack {
                    id,
                    kind,
                    marked: now.clone(),
                    blobs: Vec::new(),
                    entries,
                }),
                Err(e) => self.warn(format!("{e} (its blobs cannot be found)")),
            }
        }
        let n = found.len();
        let stand_in = |obsolete| IndexFile {
            version: FILE_VERSION,
            supersedes: Vec::new(),
            packs: Vec::new(),
            obsolete,
        };
        self.cache.index().add_file(first, &stand_in(found))?;
        for id in rest {
            self.cache.index().add_file(id, &stand_in(Vec::new()))?;
        }
        Ok(n)
    }

    /// A pack's header, read from its end (one range read for any usual header size).
    pub(crate) fn read_pack_header(
        &self,
        kind: pack::BlobKind,
        id: &PackId,
        size: u64,
    ) -> Result<Vec<pack::BlobEntry>> {
        const TAIL: u64 = 64 << 10;
        let take = size.min(TAIL);
        let mut tail = self.read_pack_range(kind, id, size - take, take)?;
        if tail.len() >= pack::TRAILER_LEN {
            let t = &tail[tail.len() - pack::TRAILER_LEN..];
            let hlen = u32::from_le_bytes(t.try_into().expect("4 bytes")) as u64;
            let need = hlen + pack::TRAILER_LEN as u64;
            if need > take && need <= size {
                tail = self.read_pack_range(kind, id, size - need, need)?;
            }
        }
        pack::read_header(&self.key, id, &tail)
    }

    /// Reads every index file, verifying each, and rebuilds the cached blob index from them
    /// unless it holds exactly these files already (its rows came from the same immutable
    /// files: re-inserting 10^6 of them was most of a prune's time); returns what was read,
    /// the files that could not be (their packs are then found by their headers) and the
    /// marks of earlier prunes.
    pub(crate) fn rebuild_index(&self) -> Result<IndexRead> {
        let mut read = self.rebuild_index_once()?;
        // A prune or a backup's merge running meanwhile replaces index files between our
        // listing and reading: a file that vanished is no damage, so list again and read
        // what is there now; with backups every few seconds, more than once (hostile
        // pass 9: check reported replaced files as missing, and prune stopped).
        let vanished =
            |r: &IndexRead| (r.damaged.iter()).any(|(_, e)| matches!(e, Error::NotFound { .. }));
        for _ in 1..INDEX_READS {
            if !vanished(&read) {
                break;
            }
            read = self.rebuild_index_once()?;
        }
        Ok(read)
    }

    pub(super) fn rebuild_index_once(&self) -> Result<IndexRead> {
        let listed: Vec<IndexId> = self
            .backend
            .list(FileKind::Index)?
            .into_iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let mut out = IndexRead::default();
        let known: HashSet<IndexId> = self.cache.index().files()?.into_iter().collect();
        let in_sync = known == listed.iter().copied().collect::<HashSet<_>>();
        let tx = self.cache.transaction()?;
        let rebuilt = (|| {
            if !in_sync {
                self.cache.index().clear()?;
            }
            let loader = self.cache.index().loader()?;
            for (id, loaded) in self.load_index_files(&listed) {
                match loaded {
                    Ok(file) => {
                        if !in_sync {
                            loader.add_file(&id, &file)?;
                        }
                        for m in file.obsolete {
                            index::add_mark(&mut out.marks, m);
                        }
                        out.read.push(id);
                    }
                    Err(e) => out.damaged.push((id, e)),
                }
            }
            loader.finish()?;
            // As in sync_index: the packs a damaged file named are found by their headers,
            // so that what they hold is not also reported as lost.
            let corrupt: Vec<IndexId> = (out.damaged.iter())
                .filter(|(_, e)| matches!(e, Error::Corrupt { .. }))
                .map(|(id, _)| *id)
                .collect();
            self.index_from_headers(&corrupt)?;
            Ok(())
        })();
        rebuilt?;
        tx.commit()?;
        Ok(out)
    }

    /// Every pack file the backend holds, with its kind and size.
    pub(crate) fn stored_packs(&self) -> Result<HashMap<PackId, (pack::BlobKind, u64)>> {
        Ok(self.stored_packs_classed()?.0)
    }

    /// As [`Repository::stored_packs`], with the storage class and write time of each
    /// pack the listing gives a class other than STANDARD.
    pub(crate) fn stored_packs_classed(&self) -> Result<StoredPacks> {
        let mut stored = HashMap::new();
        let mut classed = Vec::new();
        for kind in [pack::BlobKind::Data, pack::BlobKind::Tree] {
            for f in self.backend.list(pack_file_kind(kind))? {
                if let Ok(id) = f.name.parse::<PackId>() {
                    stored.insert(id, (kind, f.size));
                    if let Some(class) = f.storage_class.filter(|c| c != "STANDARD") {
                        classed.push((id, class, f.modified));
                    }
                }
            }
        }
        Ok((stored, classed))
    }

    /// Writes a new index that replaces `supersedes`: files of at most
    /// [`PACKS_PER_INDEX_FILE`] packs and about [`ENTRIES_PER_INDEX_FILE`] blob entries,
    /// the marks first, the first file naming what it supersedes (at least one file is
    /// written). The replaced files are deleted only after every new one is durable.
    /// Returns the number of files written.
    pub(crate) fn replace_index(
        &self,
        packs: &mut dyn Iterator<Item = Result<IndexedPack>>,
        obsolete: Vec<ObsoletePack>,
        supersedes: &[IndexId],
    ) -> Result<usize> {
        let mut marks = obsolete.into_iter();
        let mut supersedes_first = Some(supersedes.to_vec());
        let mut written = 0;
        loop {
            let mut file = IndexFile {
                version: FILE_VERSION,
                supersedes: supersedes_first.take().unwrap_or_default(),
                packs: Vec::new(),
                obsolete: Vec::new(),
            };
            fill_index_file(&mut file, &mut marks, packs, ENTRIES_PER_INDEX_FILE)?;
            if file.packs.is_empty() && file.obsolete.is_empty() && written > 0 {
                break;
            }
            self.save_index(&file)?;
            written += 1;
        }
        for id in supersedes {
            self.backend.delete(FileKind::Index, &id.to_hex())?;
        }
        Ok(written)
    }

    /// An index file naming `packs`: its name and stored size.
    pub(crate) fn write_index(&self, packs: Vec<IndexedPack>) -> Result<(IndexId, u64)> {
        self.write_index_superseding(packs, &[])
    }

    /// An index file naming `packs` that includes, and so may replace, the index files
    /// `supersedes` (format-spec §7): its name and stored size.
    pub(crate) fn write_index_superseding(
        &self,
        packs: Vec<IndexedPack>,
        supersedes: &[IndexId],
    ) -> Result<(IndexId, u64)> {
        let file = IndexFile {
            version: FILE_VERSION,
            supersedes: supersedes.to_vec(),
            packs,
            obsolete: Vec::new(),
        };
        let (id, size) = self.save_index(&file)?;
        let id = IndexId(id);
        self.cache.index().add_file(&id, &file)?;
        Ok((id, size))
    }

    /// Deletes index files that a durable one supersedes, in one request where the store
    /// allows. The cache forgets the files but keeps their entries (the superseding file
    /// has them), so the next open does not take the deletion for a prune's and rebuild
    /// the whole index.
    pub(crate) fn delete_index_files(&self, ids: &[IndexId]) -> Result<()> {
        let names: Vec<String> = ids.iter().map(|id| id.to_hex()).collect();
        self.backend.delete_many(FileKind::Index, &names)?;
        let index = self.cache.index();
        ids.iter().try_for_each(|id| index.forget_file(id))
    }

    /// Uploads a finished pack; the caller must get it into an index file afterwards.
    /// Data packs go to `class`, else to the repository's data storage class.
    pub(crate) fn write_pack(
        &self,
        pack: &FinishedPack,
        class: Option<&str>,
    ) -> Result<IndexedPack> {
        let kind = match pack.kind {
            pack::BlobKind::Data => FileKind::Data,
            pack::BlobKind::Tree => FileKind::Tree,
        };
        // Only data packs go cold (trees are read by every listing and restore), and only
        // those big enough not to be billed as 128 KiB each.
        let class = match pack.kind {
            pack::BlobKind::Data if pack.bytes.len() >= crate::backend::MIN_CLASSED_OBJECT => {
                class.or(self.config.data_storage_class.as_deref())
            }
            _ => None,
        };
        self.backend.put(
            kind,
            &pack.id.to_hex(),
            &pack.bytes,
            &WriteOptions::in_class(class),
        )?;
        Ok(IndexedPack {
            id: pack.id,
            kind: pack.kind,
            size: pack.bytes.len() as u64,
            blobs: pack.entries.clone(),
        })
    }

    /// Where a blob is stored; not found if the index does not name it.
    pub(crate) fn lookup_blob(&self, id: &BlobId) -> Result<BlobLocation> {
        self.cache
            .index()
            .lookup(id)?
            .ok_or_else(|| Error::not_found(Missing::Blob(*id)))
    }

    /// A blob's plaintext from `buf`, bytes of pack `pack` from offset `at` on (the whole
    /// pack, or one range read of it): cut out, decrypted, decompressed and checked against
    /// its id. Restore, check, prune and tree fetches all open blobs here; errors name the
    /// blob and its pack.
    pub(crate) fn open_blob_in(
        &self,
        pack: &PackId,
        buf: &[u8],
        at: u64,
        entry: &pack::BlobEntry,
    ) -> Result<Vec<u8>> {
        let sealed = sealed_in(pack, buf, at, entry)?;
        open_blob(&self.key, entry, sealed).map_err(|e| in_pack(e, pack))
    }
}

/// What [`Repository::rebuild_index`] read.
#[derive(Debug, Default)]
pub(crate) struct IndexRead {
    /// The index files read.
    pub read: Vec<IndexId>,
    /// Index files that could not be read, and why.
    pub damaged: Vec<(IndexId, Error)>,
    /// The marks of earlier prunes, one per pack.
    pub marks: HashMap<PackId, index::ObsoletePack>,
}

/// The index listing, and some index files still sealed, fetched before the key is known.
pub(super) struct EarlyIndex {
    listed: Vec<FileInfo>,
    sealed: HashMap<IndexId, Vec<u8>>,
}

impl EarlyIndex {
    /// The listing; with `files`, also the first batch of index files (memory stays
    /// bounded: the rest are read as usual, once the key is known).
    pub(super) fn fetch(backend: &BackendRef, files: bool) -> Result<Self> {
        use rayon::prelude::*;
        let listed = backend.list(FileKind::Index)?;
        let mut sealed = HashMap::new();
        if files {
            let first: Vec<IndexId> = listed
                .iter()
                .filter_map(|f| f.name.parse().ok())
                .take(backend.capabilities().read_concurrency.max(1) * 4)
                .collect();
            sealed = crate::util::with_read_pool(backend.as_ref(), || {
                first
                    .par_iter()
                    .filter_map(|id| {
                        let bytes = backend.read(FileKind::Index, &id.to_hex()).ok()?;
                        Some((*id, bytes))
                    })
                    .collect()
            });
        }
        Ok(EarlyIndex { listed, sealed })
    }
}

impl super::Index<'_> {
    /// Where a blob is stored; not found if the index does not name it.
    #[doc(hidden)]
    pub fn lookup(&self, id: &BlobId) -> Result<BlobLocation> {
        self.0.lookup_blob(id)
    }

    /// Reads, decrypts and verifies one blob with a range read.
    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let repo = self.0;
        let loc = repo.lookup_blob(id)?;
        let sealed = repo.read_pack_range(
            loc.entry.kind,
            &loc.pack,
            loc.entry.offset,
            loc.entry.length as u64,
        )?;
        repo.open_blob_in(&loc.pack, &sealed, loc.entry.offset, &loc.entry)
    }
}

/// Fills one index file of [`Repository::replace_index`]: marks, then packs, until it
/// holds [`PACKS_PER_INDEX_FILE`] packs or `limit` entries (a mark without entries counts
/// as one).
fn fill_index_file(
    file: &mut IndexFile,
    marks: &mut impl Iterator<Item = ObsoletePack>,
    packs: &mut dyn Iterator<Item = Result<IndexedPack>>,
    limit: usize,
) -> Result<()> {
    let mut entries = 0;
    while entries < limit {
        let Some(m) = marks.next() else { break };
        entries += (m.entries.len() + m.blobs.len()).max(1);
        file.obsolete.push(m);
    }
    while entries < limit && file.packs.len() < PACKS_PER_INDEX_FILE {
        let Some(p) = packs.next() else { break };
        let p = p?;
        entries += p.blobs.len();
        file.packs.push(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pack::{BlobEntry, BlobKind, Compression};

    /// Worst-case entries for the size of an index file: random ids, large numbers.
    fn entries(n: usize, seed: u64) -> Vec<BlobEntry> {
        let ids = crate::util::pseudo_random(32 * n, seed);
        (0..n)
            .map(|i| BlobEntry {
                id: BlobId(ids[32 * i..32 * (i + 1)].try_into().unwrap()),
                kind: BlobKind::Data,
                offset: (2 << 30) - i as u64,
                length: u32::MAX - i as u32,
                raw_length: u32::MAX - 2 * i as u32,
                compression: Compression::Zstd,
            })
            .collect()
    }

    fn pack(n: usize, seed: u64) -> IndexedPack {
        IndexedPack {
            id: PackId([seed as u8; 32]),
            kind: BlobKind::Data,
            size: 2 << 30,
            blobs: entries(n, seed),
        }
    }

    fn mark(n: usize) -> ObsoletePack {
        ObsoletePack {
            id: PackId([9; 32]),
            kind: BlobKind::Data,
            marked: "2026-01-01T00:00:00+00:00".into(),
            blobs: Vec::new(),
            entries: entries(n, 99),
        }
    }

    fn file(packs: Vec<IndexedPack>) -> IndexFile {
        IndexFile {
            version: FILE_VERSION,
            supersedes: Vec::new(),
            packs,
            obsolete: Vec::new(),
        }
    }

    /// A file closes at the entry limit as well as at the pack limit: marks first (one
    /// without entries counting as one), then packs, the last taking it past.
    #[test]
    fn index_files_that_replace_others_close_at_the_entry_limit() {
        let mut marks = vec![mark(3), mark(0)].into_iter();
        let mut packs = (0..5).map(|i| Ok(pack(4, i)));
        let mut first = file(Vec::new());
        fill_index_file(&mut first, &mut marks, &mut packs, 10).unwrap();
        assert_eq!((first.obsolete.len(), first.packs.len()), (2, 2));
        let mut second = file(Vec::new());
        fill_index_file(&mut second, &mut marks, &mut packs, 10).unwrap();
        assert_eq!((second.obsolete.len(), second.packs.len()), (0, 3));
        let mut last = file(Vec::new());
        fill_index_file(&mut last, &mut marks, &mut packs, 10).unwrap();
        assert!(last.packs.is_empty() && last.obsolete.is_empty());
        // Many packs without entries: the pack limit.
        let mut empty = (0..5000).map(|i| Ok(pack(0, i)));
        let mut full = file(Vec::new());
        fill_index_file(&mut full, &mut marks, &mut empty, 10).unwrap();
        assert_eq!(full.packs.len(), PACKS_PER_INDEX_FILE);
    }

    /// What prune and repair write stays far below the index bound (format-spec §1), in
    /// either form: the limits times the measured bytes per entry and per pack.
    #[test]
    fn the_largest_index_file_written_is_far_below_the_bound() {
        const N: usize = 10_000;
        let sizes = |f: &IndexFile| {
            let map = encode(f).len();
            let compact = pack::compact::compress(&encode(&index::CompactIndex::from(f)));
            (map, compact.len())
        };
        let (map_entries, compact_entries) = sizes(&file(vec![pack(N, 1)]));
        let many: Vec<IndexedPack> = (0..PACKS_PER_INDEX_FILE)
            .map(|i| pack(0, i as u64))
            .collect();
        let (map_packs, compact_packs) = sizes(&file(many));
        for (per_n_entries, packs) in [(map_entries, map_packs), (compact_entries, compact_packs)] {
            let largest = per_n_entries * (ENTRIES_PER_INDEX_FILE / N + 1) + packs;
            assert!(
                (largest as u64) < FileKind::Index.max_size() / 2,
                "{largest} bytes"
            );
        }
        // The measure: about 100 bytes an entry in the map form, fewer in the compact one.
        assert!((90 * N..120 * N).contains(&map_entries), "{map_entries}");
        assert!(compact_entries < map_entries, "{compact_entries}");
    }
}
