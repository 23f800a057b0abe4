//! Every decoder of repository bytes, as a function of arbitrary bytes: the targets of the
//! `cargo fuzz` harness in `fuzz/` (long runs, `tools/fuzz`) and of the property test that
//! feeds them random and mutated input in every `tools/test` run.
//!
//! A key holder can write any plaintext into a repository, so the decoders behind the
//! encryption are fed directly; the sealed paths are fed too, to check that they reject
//! before decoding. Each target must return, whatever the input: never panic, never
//! allocate from a length field it has not checked.

use crate::crypto::MasterKey;
use crate::id::{BlobId, PackId};
use crate::repo::config::Config;
use crate::repo::index::IndexFile;
use crate::repo::keys::KeyFile;
use crate::repo::pack::{self, BlobEntry, BlobKind, Compression};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::Tree;

/// A decoder under test: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("key_file", key_file),
    ("config", config),
    ("index", index),
    ("pack_header", pack_header),
    ("pack", pack),
    ("tree", tree),
    ("snapshot", snapshot),
    ("lock", lock),
    ("blob", blob),
    ("zstd_blob", zstd_blob),
    ("tree_walk", tree_walk),
];

/// One target by name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn cbor<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    ciborium::from_reader(data).ok()
}

fn fixed_key() -> MasterKey {
    MasterKey::from_secret([7; 32])
}

fn key_file(data: &[u8]) {
    if let Ok(kf) = KeyFile::decode(data, "fuzz") {
        // The password path: a crafted KDF must be refused, not run for hours.
        let _ = kf.kdf.check_bounds();
    }
}

fn config(data: &[u8]) {
    if let Some(c) = cbor::<Config>(data) {
        let _ = c.chunker.validate();
    }
}

fn index(data: &[u8]) {
    if let Some(f) = cbor::<IndexFile>(data) {
        for p in &f.packs {
            let _ = p.blobs.iter().map(|b| b.offset + u64::from(b.length)).max();
        }
        for m in f.obsolete {
            let _ = m.blob_ids();
        }
    }
}

/// A pack header's plaintext.
fn pack_header(data: &[u8]) {
    let _ = cbor::<Vec<BlobEntry>>(data);
}

/// A whole pack file: trailer, header length, sealed header.
fn pack(data: &[u8]) {
    let _ = pack::read_header(&fixed_key(), &PackId([0; 32]), data);
}

fn tree(data: &[u8]) {
    if let Ok(t) = Tree::decode(data, &BlobId([0; 32])) {
        for n in &t.entries {
            let _ = crate::walk::safe_name(n, &BlobId([0; 32]));
        }
    }
}

fn snapshot(data: &[u8]) {
    if let Some(s) = cbor::<Snapshot>(data) {
        let _ = s.datetime();
        let _ = s.lineage().cache_key();
    }
}

fn lock(data: &[u8]) {
    if let Some(l) = cbor::<crate::lock::LockFile>(data) {
        let _ = l.describe();
    }
}

/// The blob opener: an index entry (its first 6 bytes) and the sealed blob (the rest).
fn blob(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let entry = BlobEntry {
        id: BlobId([0; 32]),
        kind: if data[0] & 1 == 0 {
            BlobKind::Data
        } else {
            BlobKind::Tree
        },
        offset: 0,
        length: data.len() as u32 - 6,
        raw_length: u32::from_le_bytes(data[1..5].try_into().unwrap()),
        compression: if data[5] & 1 == 0 {
            Compression::None
        } else {
            Compression::Zstd
        },
    };
    let _ = pack::open_blob(&fixed_key(), &entry, &data[6..]);
}

/// Decompression behind the blob opener (which authentication keeps fuzzers from): the
/// claimed length (first 4 bytes) and a zstd frame (the rest).
fn zstd_blob(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let raw = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let _ = pack::decompress_checked(&data[4..], raw);
}

/// A limited tree walk over crafted shapes: the input describes up to 32 trees, each of up
/// to 8 entries naming later trees (any DAG: chains, diamonds, 8^31 paths from 32 trees)
/// or files, and the counts a snapshot's summary records. Whatever the shape, the walk
/// ends, having yielded no more than the counts allow (issue 31, item 7).
fn tree_walk(data: &[u8]) {
    use crate::repo::tree::{Node, NodeKind};
    use crate::walk::{Limits, TreeWalk};
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let n = usize::from(next() % 32) + 1;
    let id = |i: usize| BlobId([i as u8; 32]);
    let mut trees = Vec::with_capacity(n);
    for i in 0..n {
        let mut entries = Vec::new();
        for k in 0..next() % 9 {
            let b = next();
            let name = vec![b'a' + k];
            entries.push(if b & 1 == 1 && i + 1 < n {
                let mut dir = Node::new(name, NodeKind::Dir);
                dir.subtree = Some(id(i + 1 + usize::from(b >> 1) % (n - i - 1)));
                dir
            } else {
                Node::new(name, NodeKind::File)
            });
        }
        trees.push(Tree { entries });
    }
    let (files, dirs) = (u64::from(next()) * 16, u64::from(next()) * 16);
    let limits = Limits::recorded(id(0), files, dirs);
    let load = Box::new(move |t: &BlobId| {
        (trees.get(usize::from(t.0[0])).cloned())
            .ok_or_else(|| crate::Error::corrupt("tree", "no such tree"))
    });
    // Every node counts against the limits; the last visit may be the refusal.
    let bound = files + dirs + 2 * 4096 + 1;
    let visits = TreeWalk::with_loader(load, &id(0)).limited(limits).count() as u64;
    assert!(visits <= bound, "{visits} visits for limits {files}/{dirs}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 32 trees of 8 directories each naming the next: 8^31 paths, refused after the
    /// summary's counts and the margin.
    fn bomb() -> Vec<u8> {
        let mut bomb = vec![31u8];
        for _ in 0..32 {
            bomb.push(8);
            bomb.extend([1u8; 8]);
        }
        bomb.extend([0, 0]);
        bomb
    }

    /// Every input of the committed corpus (`fuzz/corpus/<target>/`, what the fuzzer
    /// found worth keeping, crashes it once found included) goes through its target again
    /// in every run: cheap, and a regression there is caught without a fuzzing session
    /// (issue 32).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let mut fed = 0;
        for (name, run) in TARGETS {
            let dir = corpus.join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                run(&std::fs::read(&path).unwrap());
                fed += 1;
            }
        }
        // The corpus holds thousands; none found means it moved.
        assert!(
            fed > 1000,
            "only {fed} corpus inputs under {}",
            corpus.display()
        );
    }

    #[test]
    fn the_tree_walk_target_ends_on_a_bomb() {
        let started = std::time::Instant::now();
        tree_walk(&bomb());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    /// Valid encodings to mutate: what strata itself writes.
    fn seeds() -> Vec<Vec<u8>> {
        let key = fixed_key();
        let kf = KeyFile::create(&key, b"pw", &crate::crypto::KdfCost::INSECURE_FOR_TESTS)
            .unwrap()
            .encode();
        let mut cfg = Vec::new();
        ciborium::into_writer(
            &Config::new(crate::chunker::ChunkerParams::default(), 3),
            &mut cfg,
        )
        .unwrap();
        let mut tree = Tree::default();
        tree.entries.push(crate::repo::tree::Node::new(
            b"a".to_vec(),
            crate::repo::tree::NodeKind::File,
        ));
        vec![kf, cfg, tree.encode(), bomb()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_decoder_panics_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for (_, f) in TARGETS {
                f(&data);
            }
        }

        #[test]
        fn no_decoder_panics_on_mutated_encodings(
            which in 0usize..3,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut data = seeds()[which].clone();
            for (at, byte) in flips {
                let n = data.len();
                data[at % n] = byte;
            }
            data.truncate(cut % (data.len() + 1));
            for (_, f) in TARGETS {
                f(&data);
            }
        }
    }

    #[test]
    fn a_blob_claiming_gigabytes_is_refused_before_allocating() {
        // A tiny frame whose entry claims 4 GiB.
        let frame = zstd::bulk::compress(b"x", 3).unwrap();
        let mut data = u32::MAX.to_le_bytes().to_vec();
        data.extend_from_slice(&frame);
        zstd_blob(&data);
        assert!(pack::decompress_checked(&frame, u32::MAX as usize).is_err());
        // A bomb: 64 MiB of zeros from a few hundred bytes, claimed as 20 MiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 10_000);
        assert!(pack::decompress_checked(&bomb, 20 << 20).is_err());
    }
}
