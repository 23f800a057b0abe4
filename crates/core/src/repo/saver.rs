//! Turns blobs into indexed packs on the backend: dedup, compress, encrypt, then the
//! [`Packer`] packs and uploads, and this indexes each pack once it is up.
//!
//! Write order is the repository's law and this module enforces it: a pack is uploaded
//! before any index file names it, and the index file is written before the caller may write
//! a snapshot that needs it ([`BlobSaver::finish`] returns only after both).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Scope;

use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::repo::index::IndexedPack;
use crate::repo::pack::BlobKind;
use crate::repo::packer::Packer;
use crate::repo::Repository;

// Every pack is indexed as soon as it is uploaded (a checkpoint index file), so that a
// backup killed at any moment loses at most the packs whose index write was still under way,
// one per uploader: the next run, from any host, finds the rest in the index and does not
// send them again. An index write costs one small request against a 16 MiB pack's.
/// Checkpoint files are merged into one index file (which supersedes them) at the end of the
/// run, or once they name this many packs, so that frequent checkpoints do not leave
/// thousands of small index files. Bounds the entries held in memory for the merge.
const PACKS_PER_MERGE: usize = 256;
/// Checkpoints are merged once they name this many blobs, too: a 16 MiB pack of 1 KiB
/// files holds 16,000 of them, and 256 such packs would hold 4 million entries (~600 MB)
/// in memory until the merge.
const BLOBS_PER_MERGE: usize = 1 << 16;
/// A backup merges the small index files earlier runs of its cache wrote into its own
/// once there would be this many (format-spec §10): between prunes a host leaves a few
/// index files, not one per run, for a bare machine or a new host to read.
const OWN_FILES_MERGED_AT: usize = 8;

/// What a saver stored (blobs the repository had already are not counted).
#[derive(Default)]
pub struct SaverStats {
    /// Blobs stored.
    pub blobs_added: AtomicU64,
    /// Their plaintext bytes.
    pub bytes_added: AtomicU64,
    /// Their bytes sealed (compressed and encrypted), as packed.
    pub bytes_stored: AtomicU64,
    /// Of the plaintext, file content (data blobs).
    pub data_added: AtomicU64,
    /// Of the sealed bytes, file content's.
    pub data_stored: AtomicU64,
}

/// Deduplicates and seals blobs for the packer, and indexes its packs.
pub struct BlobSaver<'s, 'r> {
    repo: &'r Repository,
    level: i32,
    packer: Packer<'s, 'r>,
    shared: &'r SaverShared,
    /// Counters of what was saved.
    pub stats: SaverStats,
}

/// State shared with the uploader threads; owned by the caller so it outlives the scope.
/// One per run: what belongs to a run (its data storage class) lives here, never in the
/// repository or the backend that several runs share.
pub struct SaverShared {
    /// Blobs this run took that no index file names yet. Once a checkpoint indexes their
    /// pack, the cached index answers for them: the set stays as small as the packs in
    /// flight, however many files the run backs up.
    pending: Mutex<HashSet<BlobId>>,
    /// Packs uploaded and not yet in an index file.
    unindexed: Mutex<Vec<IndexedPack>>,
    /// Checkpoint index files of this run not merged yet, and the packs they name.
    checkpoints: Mutex<(Vec<IndexId>, Vec<IndexedPack>)>,
    /// Packs and bytes of this run that an index file names: what an interrupted run saved.
    saved_packs: AtomicU64,
    saved_bytes: AtomicU64,
    /// Storage class of this run's data packs (else the repository's).
    data_class: Option<String>,
    /// Under Object Lock: the packs this run deduplicated against, whose retention must
    /// cover the snapshot's before it is written.
    pub reused: Mutex<HashSet<(BlobKind, PackId)>>,
    /// File data this run found new, and past how much of it a partial view of the index
    /// is extended by the index files other hosts wrote (once: `extended`).
    new_data: AtomicU64,
    extend_after: u64,
    extended: Mutex<bool>,
}

impl Default for SaverShared {
    fn default() -> Self {
        SaverShared {
            pending: Mutex::default(),
            unindexed: Mutex::default(),
            checkpoints: Mutex::default(),
            saved_packs: AtomicU64::new(0),
            saved_bytes: AtomicU64::new(0),
            data_class: None,
            reused: Mutex::default(),
            new_data: AtomicU64::new(0),
            extend_after: u64::MAX,
            extended: Default::default(),
        }
    }
}

impl SaverShared {
    /// For a run whose data packs go to `class` instead of the repository's class.
    pub fn with_data_class(class: Option<String>) -> Self {
        SaverShared {
            data_class: class,
            ..Default::default()
        }
    }

    /// Extends a partial view of the index once the run has found `bytes` of new file
    /// data (see [`crate::backup::BackupOptions::extend_view_after`]).
    pub fn extending_view_after(mut self, bytes: u64) -> Self {
        self.extend_after = bytes;
        self
    }

    /// An interruption, with what this run saved (once the saver has finished).
    pub fn account(&self, e: Error) -> Error {
        match e {
            Error::Interrupted { .. } => Error::Interrupted {
                packs: self.saved_packs.load(Ordering::Relaxed),
                bytes: self.saved_bytes.load(Ordering::Relaxed),
            },
            e => e,
        }
    }

    /// An uploader's pack is on the backend: index it at once. If that fails, the pack is
    /// left for [`BlobSaver::finish`] to index.
    fn uploaded(&self, repo: &Repository, pack: IndexedPack) -> Result<()> {
        self.checkpoint(repo, vec![pack.clone()]).inspect_err(|_| {
            self.unindexed.lock().unwrap().push(pack);
        })
    }

    /// Writes an index file naming `packs` (all on the backend by now) and merges the
    /// checkpoints when they have grown.
    fn checkpoint(&self, repo: &Repository, packs: Vec<IndexedPack>) -> Result<()> {
        let id = self.index(repo, packs.clone())?;
        repo.checkpoint()?;
        // In the cached index now (write_index added them), which dedup asks after this.
        let mut pending = self.pending.lock().unwrap();
        for b in packs.iter().flat_map(|p| &p.blobs) {
            pending.remove(&b.id);
        }
        drop(pending);
        let mut c = self.checkpoints.lock().unwrap();
        c.0.push(id);
        c.1.extend(packs);
        let blobs: usize = c.1.iter().map(|p| p.blobs.len()).sum();
        if (c.1.len() >= PACKS_PER_MERGE || blobs >= BLOBS_PER_MERGE) && c.0.len() > 1 {
            let (files, packs) = std::mem::take(&mut *c);
            merge(repo, files, packs, true)?;
        }
        Ok(())
    }

    fn index(&self, repo: &Repository, packs: Vec<IndexedPack>) -> Result<IndexId> {
        let counted = Saved::of(&packs);
        let (id, _) = repo.write_index(packs)?;
        self.add_saved(counted);
        Ok(id)
    }

    fn add_saved(&self, s: Saved) {
        self.saved_packs.fetch_add(s.packs, Ordering::Relaxed);
        self.saved_bytes.fetch_add(s.bytes, Ordering::Relaxed);
    }
}

/// Packs and their bytes.
#[derive(Clone, Copy)]
struct Saved {
    packs: u64,
    bytes: u64,
}

impl Saved {
    fn of(packs: &[IndexedPack]) -> Self {
        Saved {
            packs: packs.len() as u64,
            bytes: packs.iter().map(|p| p.size).sum(),
        }
    }
}

/// One index file for `packs`, superseding `files` (checkpoints of this run, small files of
/// earlier runs), which go once it is durable (write order: the merged file first, then
/// the record naming what it replaces when `record`, deletions last). Returns its name
/// and stored size.
fn merge(
    repo: &Repository,
    files: Vec<IndexId>,
    packs: Vec<IndexedPack>,
    record: bool,
) -> Result<(IndexId, u64)> {
    let written = repo.write_index_superseding(packs, &files)?;
    // Another host may keep a checkpoint as its sentinel (format-spec §7.3): a record
    // names them before they go, or they stay for prune. No host keeps another's small
    // file as its sentinel when a larger one is listed, and where none is, one that
    // vanishes costs a quiet full read: merging its own small files needs no record,
    // which every other host would have to read.
    if record {
        if let Err(e) = repo.write_mark_record(&[], false, &files) {
            repo.warn(format!(
                "superseded index files left for prune to delete: {e}"
            ));
            return Ok(written);
        }
    }
    // A superseded file left behind costs nothing but a listing entry (readers skip it,
    // prune deletes it): credentials without the right to delete (append-only backup
    // hosts) must not fail the backup over it.
    if let Err(e) = repo.delete_index_files(&files) {
        repo.warn(format!(
            "superseded index files left for prune to delete: {e}"
        ));
    }
    repo.cache.index().forget_own_files(&files)?;
    Ok(written)
}

/// The run's last index file, naming `packs` and superseding `checkpoints`; once this
/// cache's earlier runs have left enough small index files, it takes in theirs too
/// (read from the cache, not the store) and supersedes them.
fn write_last_index(
    repo: &Repository,
    checkpoints: Vec<IndexId>,
    packs: Vec<IndexedPack>,
) -> Result<()> {
    let own = repo.cache.index().own_files()?;
    let record = !checkpoints.is_empty();
    let mut files = checkpoints;
    let mut packs = packs;
    if own.len() + 1 >= OWN_FILES_MERGED_AT {
        for (id, listed) in own {
            files.push(id);
            packs.extend(listed);
        }
    }
    // A pack listed in two of them (a crash between a merge and its deletions) once,
    // with the union of its entries (format-spec §7.2).
    let mut by_id: std::collections::BTreeMap<PackId, IndexedPack> = Default::default();
    for p in packs {
        match by_id.entry(p.id) {
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().absorb(p),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(p);
            }
        }
    }
    let packs: Vec<IndexedPack> = by_id.into_values().collect();
    let (id, size) = match files.is_empty() {
        true => repo.write_index(packs.clone())?,
        false => merge(repo, files, packs.clone(), record)?,
    };
    // Small enough to merge later (format-spec §10): else it stays for prune.
    match size <= crate::repo::marks::MERGEABLE_INDEX_BYTES {
        true => repo.cache.index().add_own_file(&id, &packs),
        false => Ok(()),
    }
}

impl<'s, 'r: 's> BlobSaver<'s, 'r> {
    /// A saver whose uploads run on `scope` with `uploaders` in flight (0: as many as the
    /// backend likes).
    pub fn new<'e>(
        repo: &'r Repository,
        shared: &'r SaverShared,
        scope: &'s Scope<'s, 'e>,
        uploaders: usize,
    ) -> Self
    where
        'r: 'e,
    {
        // Every pack is indexed once it is up (a checkpoint), except the last ones of a
        // short run, which `finish` indexes together (an hourly backup's one or two packs
        // cost one index file, not two).
        let on_uploaded = move |pack: IndexedPack, last: bool| {
            let long_run = !shared.checkpoints.lock().unwrap().0.is_empty();
            match !last || long_run {
                true => shared.uploaded(repo, pack),
                false => {
                    shared.unindexed.lock().unwrap().push(pack);
                    Ok(())
                }
            }
        };
        BlobSaver {
            repo,
            level: repo.config().compression_level,
            packer: Packer::new(repo, scope, uploaders, on_uploaded),
            shared,
            stats: SaverStats::default(),
        }
    }

    /// True if the repository has the blob or this run already took it.
    pub fn is_known(&self, id: &BlobId) -> Result<bool> {
        if self.shared.pending.lock().unwrap().contains(id) {
            return Ok(true);
        }
        self.stored(id)
    }

    /// Whether a live pack holds the blob; under Object Lock, which pack is remembered.
    fn stored(&self, id: &BlobId) -> Result<bool> {
        if !self.repo.may_dedupe() {
            return Ok(false);
        }
        if self.repo.object_lock().is_none() {
            return self.repo.blob_index().dedupable(id);
        }
        Ok(match self.repo.blob_index().lookup_dedupable(id)? {
            Some(loc) => {
                self.shared
                    .reused
                    .lock()
                    .unwrap()
                    .insert((loc.entry.kind, loc.pack));
                true
            }
            None => false,
        })
    }

    /// Claims a blob for this run; false if it is stored or claimed already.
    fn claim(&self, id: &BlobId) -> Result<bool> {
        let mut pending = self.shared.pending.lock().unwrap();
        if pending.contains(id) || self.stored(id)? {
            return Ok(false);
        }
        pending.insert(*id);
        Ok(true)
    }

    /// Compresses at zstd `level` instead of the repository's.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Stores a blob unless the repository has it; returns whether it was new.
    pub fn save(&self, kind: BlobKind, id: BlobId, plain: &[u8]) -> Result<bool> {
        if let Some(e) = self.packer.failed() {
            return Err(e);
        }
        self.extend_view_if_due()?;
        if !self.claim(&id)? {
            return Ok(false);
        }
        if kind == BlobKind::Data {
            self.shared
                .new_data
                .fetch_add(plain.len() as u64, Ordering::Relaxed);
        }
        let sealed = self.repo.seal_blob(id, kind, plain, self.level);
        self.count(kind, plain.len(), sealed.bytes.len());
        let class = match kind {
            BlobKind::Data => self.shared.data_class.as_deref(),
            BlobKind::Tree => None,
        };
        self.packer.add(sealed, class)?;
        Ok(true)
    }

    /// On a partial view, once the run's new data passes its bound: the index files other
    /// hosts wrote since may hold the rest of it, and reading them now costs less than
    /// storing it again. The other threads wait for it rather than store more meanwhile.
    fn extend_view_if_due(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.new_data.load(Ordering::Relaxed) < shared.extend_after
            || !self.repo.partial_view()
        {
            return Ok(());
        }
        let mut extended = shared.extended.lock().unwrap_or_else(|p| p.into_inner());
        if !*extended {
            *extended = true;
            // On a thread of its own: a rayon worker that waits inside the read pool
            // steals this run's other chunks, which would wait on `extended`, held here.
            let repo = self.repo;
            std::thread::scope(|s| s.spawn(|| repo.extend_view()).join())
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(())
    }

    fn count(&self, kind: BlobKind, plain: usize, sealed: usize) {
        let add = |counter: &AtomicU64, n: usize| counter.fetch_add(n as u64, Ordering::Relaxed);
        add(&self.stats.blobs_added, 1);
        add(&self.stats.bytes_added, plain);
        add(&self.stats.bytes_stored, sealed);
        if kind == BlobKind::Data {
            add(&self.stats.data_added, plain);
            add(&self.stats.data_stored, sealed);
        }
    }

    /// Flushes partial packs, waits for every upload, and writes the last index file,
    /// merging this run's checkpoints into it. After this returns Ok, every blob saved is on
    /// the backend and in an index file. On an error, what did reach the backend is still
    /// indexed, so that the next run does not upload it again.
    pub fn finish(self) -> Result<()> {
        let uploaded = self.packer.finish();
        let rest = std::mem::take(&mut *self.shared.unindexed.lock().unwrap());
        if let Err(e) = uploaded {
            if !rest.is_empty() {
                let _ = self.shared.index(self.repo, rest);
            }
            return Err(e);
        }
        let (files, mut packs) = std::mem::take(&mut *self.shared.checkpoints.lock().unwrap());
        if rest.is_empty() && files.len() <= 1 {
            // Nothing written, or one checkpoint that is the run's index file as it is.
            return Ok(());
        }
        // The last packs go into the last file with the checkpoints' packs.
        let counted = Saved::of(&rest);
        packs.extend(rest);
        write_last_index(self.repo, files, packs)?;
        self.shared.add_saved(counted);
        Ok(())
    }
}

impl Repository {
    /// Stores `blobs` as data blobs (those the repository has already are not stored
    /// again) and returns their ids, in order. When this returns, their packs and the index
    /// file naming them are durable: a record naming the ids may be written next (write
    /// order, format-spec §10). For applications' small records; a backup streams instead.
    pub fn store_blobs(&self, blobs: &[&[u8]]) -> Result<Vec<BlobId>> {
        let shared = SaverShared::default();
        std::thread::scope(|scope| {
            let saver = BlobSaver::new(self, &shared, scope, 0);
            let ids = blobs
                .iter()
                .map(|plain| {
                    let id = self.blob_id(plain);
                    saver.save(BlobKind::Data, id, plain).map(|_| id)
                })
                .collect::<Result<Vec<_>>>();
            // Packs, then their index file, on an error too: what reached the backend
            // is indexed.
            let finished = saver.finish();
            let ids = ids?;
            finished?;
            Ok(ids)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    #[test]
    fn blobs_leave_the_pending_set_once_their_pack_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let store: crate::backend::BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store, 0, dir.path());
        let shared = SaverShared::default();
        // Three and a bit data packs of 64 KiB blobs.
        let blobs: Vec<Vec<u8>> = (0..800)
            .map(|i| crate::util::pseudo_random(64 << 10, 2 * i + 1))
            .collect();
        let ids: Vec<BlobId> = blobs.iter().map(|b| repo.blob_id(b)).collect();
        std::thread::scope(|scope| {
            let saver = BlobSaver::new(&repo, &shared, scope, 1);
            for (id, b) in ids.iter().zip(&blobs) {
                assert!(saver.save(BlobKind::Data, *id, b).unwrap());
            }
            // Every blob is known while its pack is open, in flight or indexed.
            for id in &ids {
                assert!(saver.is_known(id).unwrap());
                assert!(!saver.save(BlobKind::Data, *id, b"again").unwrap());
            }
            saver.finish().unwrap();
        });
        for id in &ids {
            assert!(repo.blob_index().contains(id).unwrap());
        }
        // The checkpointed packs' blobs went; only the last pack's, indexed at the end with
        // no checkpoint, may stay.
        let pending = shared.pending.lock().unwrap().len();
        let per_pack = crate::DATA_PACK_SIZE / (64 << 10);
        assert!(
            pending <= per_pack,
            "{pending} of {} blobs pending",
            ids.len()
        );
    }
}
