//! Turns blobs into packs on the backend: dedup, compress, encrypt, pack, upload, index.
//!
//! Write order is the repository's law and this module enforces it: a pack is uploaded
//! before any index file names it, and the index file is written before the caller may write
//! a snapshot that needs it ([`BlobSaver::finish`] returns only after both).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::index::IndexedPack;
use crate::repo::pack::{BlobKind, FinishedPack, PackBuilder};
use crate::repo::Repository;

/// Packs are closed at about this size: big enough for few objects and requests, small
/// enough that a restore's range reads and a prune's repacking stay cheap.
pub const DATA_PACK_SIZE: usize = 16 << 20;
pub const TREE_PACK_SIZE: usize = 4 << 20;
/// An index file is written every this many packs or this often, whichever comes first, so
/// an interrupted backup keeps its uploads (the next run finds them in the index and does
/// not send them again).
const PACKS_PER_INDEX: usize = 64;
const INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Default)]
pub struct SaverStats {
    pub blobs_added: AtomicU64,
    pub bytes_added: AtomicU64,
    pub bytes_stored: AtomicU64,
}

/// Deduplicates, seals and packs blobs, uploading full packs on a pool of threads.
pub struct BlobSaver<'s, 'r> {
    repo: &'r Repository,
    level: i32,
    pending: Mutex<HashSet<BlobId>>,
    data: Mutex<PackBuilder>,
    tree: Mutex<PackBuilder>,
    tx: Option<Sender<FinishedPack>>,
    /// Buffers of uploaded data packs, for the next ones.
    spare: Receiver<Vec<u8>>,
    uploaders: Vec<ScopedJoinHandle<'s, ()>>,
    unindexed: &'r Mutex<Vec<IndexedPack>>,
    error: &'r Mutex<Option<Error>>,
    /// Counters of what was saved.
    pub stats: SaverStats,
}

/// State shared with the uploader threads; owned by the caller so it outlives the scope.
/// One per run: what belongs to a run (its data storage class) lives here, never in the
/// repository or the backend that several runs share.
pub struct SaverShared {
    unindexed: Mutex<Vec<IndexedPack>>,
    error: Mutex<Option<Error>>,
    last_index: Mutex<std::time::Instant>,
    /// Storage class of this run's data packs (else the repository's).
    data_class: Option<String>,
}

impl Default for SaverShared {
    fn default() -> Self {
        SaverShared {
            unindexed: Mutex::default(),
            error: Mutex::default(),
            last_index: Mutex::new(std::time::Instant::now()),
            data_class: None,
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
}

impl<'s, 'r: 's> BlobSaver<'s, 'r> {
    /// A saver whose uploads run on `scope` with `uploaders` in flight.
    pub fn new<'e>(
        repo: &'r Repository,
        shared: &'r SaverShared,
        scope: &'s Scope<'s, 'e>,
        uploaders: usize,
    ) -> Self
    where
        'r: 'e,
    {
        // A finished pack is handed straight to an idle uploader (or its sender waits): peak
        // memory is the open pack plus one per uploader. Filling packs is slower than writing
        // them, so a queue would only hold memory.
        let (tx, rx) = bounded::<FinishedPack>(0);
        let (spare_tx, spare_rx) = bounded::<Vec<u8>>(uploaders.max(1) + 2);
        let handles = (0..uploaders.max(1))
            .map(|_| {
                let rx = rx.clone();
                let spare_tx = spare_tx.clone();
                scope.spawn(move || {
                    for pack in rx {
                        let result = repo.write_pack(&pack, shared.data_class.as_deref());
                        if pack.kind == BlobKind::Data {
                            // Full means enough spares already: then this one is freed.
                            let _ = spare_tx.try_send(pack.bytes);
                        }
                        let result = result.and_then(|indexed| {
                            let full = {
                                let mut u = shared.unindexed.lock().unwrap();
                                u.push(indexed);
                                let mut last = shared.last_index.lock().unwrap();
                                let due =
                                    u.len() >= PACKS_PER_INDEX || last.elapsed() >= INDEX_INTERVAL;
                                if due {
                                    *last = std::time::Instant::now();
                                }
                                due.then(|| std::mem::take(&mut *u))
                            };
                            match full {
                                // Packs above are on the backend: naming them is now safe.
                                Some(packs) => {
                                    repo.write_index(packs)?;
                                    repo.checkpoint()
                                }
                                None => Ok(()),
                            }
                        });
                        if let Err(e) = result {
                            shared.error.lock().unwrap().get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        BlobSaver {
            repo,
            level: repo.config().compression_level,
            pending: Mutex::new(HashSet::new()),
            data: Mutex::new(PackBuilder::with_capacity(
                BlobKind::Data,
                DATA_PACK_SIZE + (1 << 20),
            )),
            tree: Mutex::new(PackBuilder::new(BlobKind::Tree)),
            tx: Some(tx),
            spare: spare_rx,
            uploaders: handles,
            unindexed: &shared.unindexed,
            error: &shared.error,
            stats: SaverStats::default(),
        }
    }

    /// True if the repository has the blob or this run already took it.
    pub fn is_known(&self, id: &BlobId) -> Result<bool> {
        if self.pending.lock().unwrap().contains(id) {
            return Ok(true);
        }
        self.repo.index().contains(id)
    }

    /// Claims a blob for this run; false if it is stored or claimed already.
    fn claim(&self, id: &BlobId) -> Result<bool> {
        let mut pending = self.pending.lock().unwrap();
        if pending.contains(id) || self.repo.index().contains(id)? {
            return Ok(false);
        }
        pending.insert(*id);
        Ok(true)
    }

    /// Stores a blob unless the repository has it; returns whether it was new.
    pub fn save(&self, kind: BlobKind, id: BlobId, plain: &[u8]) -> Result<bool> {
        if let Some(e) = self.error.lock().unwrap().take() {
            return Err(e);
        }
        if !self.claim(&id)? {
            return Ok(false);
        }
        let sealed = self.repo.seal_blob(id, kind, plain, self.level);
        self.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_added
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes_stored
            .fetch_add(sealed.bytes.len() as u64, Ordering::Relaxed);
        let (builder, limit) = match kind {
            BlobKind::Data => (&self.data, DATA_PACK_SIZE),
            BlobKind::Tree => (&self.tree, TREE_PACK_SIZE),
        };
        let full = {
            let mut b = builder.lock().unwrap();
            b.add(sealed);
            (b.len() >= limit).then(|| {
                let next = match (kind, self.spare.try_recv()) {
                    (BlobKind::Data, Ok(buf)) => PackBuilder::with_buffer(kind, buf),
                    _ => PackBuilder::with_capacity(kind, limit + (1 << 20)),
                };
                std::mem::replace(&mut *b, next)
            })
        };
        if let Some(b) = full {
            self.send(b)?;
        }
        Ok(true)
    }

    fn send(&self, builder: PackBuilder) -> Result<()> {
        let pack = self.repo.finish_pack(builder);
        self.tx
            .as_ref()
            .expect("sender lives until finish")
            .send(pack)
            .map_err(|_| Error::Internal("pack uploader stopped".into()))
    }

    /// Flushes partial packs, waits for every upload, and writes the last index file.
    /// After this returns Ok, every blob saved is on the backend and in an index file.
    pub fn finish(mut self) -> Result<()> {
        for (b, kind) in [(&self.data, BlobKind::Data), (&self.tree, BlobKind::Tree)] {
            let builder = std::mem::replace(&mut *b.lock().unwrap(), PackBuilder::new(kind));
            if !builder.is_empty() {
                self.send(builder)?;
            }
        }
        drop(self.tx.take());
        for h in self.uploaders.drain(..) {
            if h.join().is_err() {
                return Err(Error::Internal("a pack uploader panicked".into()));
            }
        }
        if let Some(e) = self.error.lock().unwrap().take() {
            return Err(e);
        }
        let rest = std::mem::take(&mut *self.unindexed.lock().unwrap());
        if !rest.is_empty() {
            self.repo.write_index(rest)?;
        }
        Ok(())
    }
}
