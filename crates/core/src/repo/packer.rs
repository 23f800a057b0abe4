//! The one way packs are written: sealed blobs go into open packs (one per blob kind and
//! storage class), and full packs go up on a pool of uploader threads while the next ones
//! fill. Backup, the WAL archive, `store_blobs`, repair and prune's repack all write
//! through it; what each does with a pack once it is on the backend (index it at once,
//! collect it for a new index) is the caller's.
//!
//! Write order: the callback hears of a pack only once it is on the backend, so an index
//! file written from the callback never names a pack that is not there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::index::IndexedPack;
use super::pack::{BlobKind, FinishedPack, PackBuilder, SealedBlob};
use super::Repository;
use crate::error::{Error, Result};

/// Data packs are closed at about this size: big enough for few objects and requests,
/// small enough that a restore's range reads and a prune's repacking stay cheap.
pub const DATA_PACK_SIZE: usize = 16 << 20;
/// Tree packs are smaller: every listing and restore reads them whole.
pub const TREE_PACK_SIZE: usize = 4 << 20;

/// A pack on its way to an uploader: its storage class, whether it is one of the last.
type Job = (FinishedPack, Option<String>, bool);

/// Open packs and the uploader pool.
pub struct Packer<'s, 'r> {
    repo: &'r Repository,
    /// Open packs per storage class (`None`: the repository's), data and tree apart so
    /// that a tree never waits on a data blob's copy.
    data: Mutex<HashMap<Option<String>, PackBuilder>>,
    tree: Mutex<HashMap<Option<String>, PackBuilder>>,
    tx: Option<Sender<Job>>,
    /// Buffers of uploaded data packs, for the next ones.
    spare: Receiver<Vec<u8>>,
    uploaders: Vec<ScopedJoinHandle<'s, ()>>,
    /// The first upload (or callback) error; later adds return it.
    error: Arc<Mutex<Option<Error>>>,
}

impl<'s, 'r: 's> Packer<'s, 'r> {
    /// A packer whose uploads run on `scope`, `uploaders` at once (0: as many as the
    /// backend likes), each pack handed to `on_uploaded` once it is on the backend (with
    /// whether it is one of the last, flushed by [`Packer::finish`] rather than filled).
    pub fn new<'e>(
        repo: &'r Repository,
        scope: &'s Scope<'s, 'e>,
        uploaders: usize,
        on_uploaded: impl Fn(IndexedPack, bool) -> Result<()> + Send + Sync + 'r,
    ) -> Self
    where
        'r: 'e,
    {
        let on_uploaded = Arc::new(on_uploaded);
        let uploaders = match uploaders {
            0 => repo.upload_concurrency(),
            n => n,
        }
        .max(1);
        // A finished pack is handed straight to an idle uploader (or its sender waits): peak
        // memory is the open packs plus one per uploader. Filling packs is slower than
        // writing them, so a queue would only hold memory.
        let (tx, rx) = bounded::<Job>(0);
        let (spare_tx, spare) = bounded::<Vec<u8>>(uploaders + 2);
        let error = Arc::new(Mutex::new(None));
        let uploaders = (0..uploaders)
            .map(|_| {
                let (rx, spare_tx, error) = (rx.clone(), spare_tx.clone(), error.clone());
                let on_uploaded = on_uploaded.clone();
                scope.spawn(move || {
                    for (pack, class, last) in rx {
                        let result = repo.write_pack(&pack, class.as_deref());
                        if pack.kind == BlobKind::Data {
                            // Full means enough spares already: then this one is freed.
                            let _ = spare_tx.try_send(pack.bytes);
                        }
                        // Only a pack that is on the backend is ever handed on.
                        if let Err(e) = result.and_then(|p| on_uploaded(p, last)) {
                            error.lock().unwrap().get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        Packer {
            repo,
            data: Mutex::default(),
            tree: Mutex::default(),
            tx: Some(tx),
            spare,
            uploaders,
            error,
        }
    }

    /// The first upload error so far, taken.
    pub fn failed(&self) -> Option<Error> {
        self.error.lock().unwrap().take()
    }

    /// Adds a sealed blob to the open pack of its kind and `class`; a pack that is full
    /// goes to an uploader (waiting for an idle one).
    pub fn add(&self, blob: SealedBlob, class: Option<&str>) -> Result<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let kind = blob.kind;
        let (open, limit) = match kind {
            BlobKind::Data => (&self.data, DATA_PACK_SIZE),
            BlobKind::Tree => (&self.tree, TREE_PACK_SIZE),
        };
        let full = {
            let mut open = open.lock().unwrap();
            let b = open
                .entry(class.map(str::to_string))
                .or_insert_with(|| self.builder(kind));
            b.add(blob);
            (b.len() >= limit).then(|| std::mem::replace(b, self.builder(kind)))
        };
        match full {
            Some(b) => self.send(b, class.map(str::to_string), false),
            None => Ok(()),
        }
    }

    /// An empty pack, in a spare buffer when one is free.
    fn builder(&self, kind: BlobKind) -> PackBuilder {
        match (kind, self.spare.try_recv()) {
            (BlobKind::Data, Ok(buf)) => PackBuilder::with_buffer(kind, buf),
            (BlobKind::Data, Err(_)) => {
                PackBuilder::with_capacity(kind, DATA_PACK_SIZE + (1 << 20))
            }
            (BlobKind::Tree, _) => PackBuilder::new(kind),
        }
    }

    fn send(&self, builder: PackBuilder, class: Option<String>, last: bool) -> Result<()> {
        let pack = self.repo.finish_pack(builder);
        self.tx
            .as_ref()
            .expect("sender lives until finish")
            .send((pack, class, last))
            .map_err(|_| Error::Internal("pack uploaders stopped".into()))
    }

    /// Sends the open packs up and waits for every upload. Ok means every blob added is in
    /// a pack on the backend that the callback took; on an error, the packs that did reach
    /// the backend were handed to the callback all the same.
    pub fn finish(mut self) -> Result<()> {
        let mut first_error = None;
        for open in [&self.data, &self.tree] {
            let open = std::mem::take(&mut *open.lock().unwrap());
            for (class, b) in open.into_iter().filter(|(_, b)| !b.is_empty()) {
                if let Err(e) = self.send(b, class, true) {
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(self.tx.take());
        for h in self.uploaders.drain(..) {
            if h.join().is_err() {
                first_error.get_or_insert(Error::Internal("a pack uploader panicked".into()));
            }
        }
        match first_error.or_else(|| self.failed()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::backend::faulty::{Fault, Faulty, Op};
    use crate::backend::{BackendRef, FileKind, MemBackend};
    use crate::id::BlobId;

    fn blob(repo: &Repository, seed: u64) -> (BlobId, SealedBlob) {
        let plain = crate::util::pseudo_random(1 << 20, seed);
        let id = repo.blob_id(&plain);
        (id, repo.seal_blob(id, BlobKind::Data, &plain, 0))
    }

    /// Uploads every blob added through `packer`, returning the packs the callback got
    /// and the error of `finish`.
    fn pack(
        repo: &Repository,
        blobs: Vec<(SealedBlob, Option<&str>)>,
    ) -> (Vec<(IndexedPack, bool)>, Result<()>) {
        let got = Mutex::new(Vec::new());
        let result = std::thread::scope(|scope| {
            let packer = Packer::new(repo, scope, 2, |p, last| {
                got.lock().unwrap().push((p, last));
                Ok(())
            });
            let added: Result<()> = blobs.into_iter().try_for_each(|(b, c)| packer.add(b, c));
            let finished = packer.finish();
            added.and(finished)
        });
        (got.into_inner().unwrap(), result)
    }

    #[test]
    fn packs_fill_per_class_and_go_up_before_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = Arc::new(MemBackend::default());
        let repo = super::super::for_tests(store.clone(), 0, dir.path());
        // 20 MiB of incompressible blobs in the default class (more than a pack), 2 MiB
        // in another.
        let mut cold = HashSet::new();
        let mut blobs = Vec::new();
        for seed in 0..22 {
            let (id, b) = blob(&repo, seed);
            let class = (seed >= 20).then_some("GLACIER");
            if class.is_some() {
                cold.insert(id);
            }
            blobs.push((b, class));
        }
        let (packs, result) = pack(&repo, blobs);
        result.unwrap();
        // One full pack went up while blobs were still added, then the two open ones.
        let filled = packs.iter().filter(|(_, last)| !last).count();
        assert_eq!((filled, packs.len()), (1, 3), "{:?}", packs.len());
        let total: usize = packs.iter().map(|(p, _)| p.blobs.len()).sum();
        assert_eq!(total, 22);
        // No pack mixes classes, and every pack the callback got is on the backend.
        for (p, _) in &packs {
            let cold_here = p.blobs.iter().filter(|b| cold.contains(&b.id)).count();
            assert!(
                cold_here == 0 || cold_here == p.blobs.len(),
                "mixed classes"
            );
            assert!(store.read(FileKind::Data, &p.id.to_hex()).is_ok());
            assert!(p.size >= p.blobs.iter().map(|b| u64::from(b.length)).sum::<u64>());
        }
        assert!(packs.iter().any(|(p, _)| p.blobs.len() == 2));
    }

    /// Tree blobs share packs up to the tree pack size (4 MiB), not one pack each.
    #[test]
    fn small_tree_blobs_share_a_pack() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = Arc::new(MemBackend::default());
        let repo = super::super::for_tests(store, 0, dir.path());
        let blobs = (0..50)
            .map(|seed| {
                let plain = crate::util::pseudo_random(20_000, seed);
                let id = repo.blob_id(&plain);
                (repo.seal_blob(id, BlobKind::Tree, &plain, 0), None)
            })
            .collect();
        let (packs, result) = pack(&repo, blobs);
        result.unwrap();
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].0.blobs.len(), 50);
    }

    #[test]
    fn an_upload_that_fails_fails_the_next_add_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Arc::new(Faulty::new(Arc::new(MemBackend::default())));
        let store: BackendRef = faulty.clone();
        let repo = super::super::for_tests(store, 0, dir.path());
        faulty.inject_from(Op::Write, Some(FileKind::Data), 1, Fault::Fail);
        let blobs = (0..40).map(|s| (blob(&repo, s).1, None)).collect();
        let (packs, result) = pack(&repo, blobs);
        assert!(result.is_err(), "an upload failed");
        assert!(packs.is_empty(), "no pack that failed is handed on");

        // A callback's error is the packer's error too.
        faulty.heal();
        let result = std::thread::scope(|scope| {
            let packer = Packer::new(&repo, scope, 1, |_, _| Err(Error::Internal("no".into())));
            packer.add(blob(&repo, 99).1, None).unwrap();
            packer.finish()
        });
        assert!(matches!(result, Err(Error::Internal(m)) if m == "no"));
    }
}
