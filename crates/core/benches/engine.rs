//! Throughput of the backup pipeline's stages.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::internals::Chunker;
use strata::internals::MasterKey;
use strata::internals::{open_blob, PackBuilder, SealedBlob};
use strata::BlobKind;
use strata::ChunkerParams;
use strata::{Node, NodeKind, Tree};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{{\"id\": {i}, \"pattern\": \"route-{}\", \"w\": {}}}\n",
                i % 97,
                i * 7
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = noise(32 << 20, 1);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_64k", |b| {
        b.iter(|| {
            let mut ch = Chunker::new(&data[..], ChunkerParams::default(), 12345, 4 << 20);
            let mut n = 0;
            while let Some(batch) = ch.next_batch().unwrap() {
                n += batch.chunks.len();
            }
            n
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let data = noise(64 << 10, 2);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("keyed_blake3_64k", |b| b.iter(|| key.blob_id(&data)));
    g.finish();
}

fn seal(c: &mut Criterion) {
    let key = MasterKey::generate();
    let mut g = c.benchmark_group("compress_encrypt");
    for (name, data) in [
        ("random", noise(64 << 10, 3)),
        ("json", json_like(64 << 10)),
    ] {
        let id = key.blob_id(&data);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("seal", name), &data, |b, d| {
            b.iter(|| SealedBlob::seal(&key, id, BlobKind::Data, d, 3))
        });
        let sealed = SealedBlob::seal(&key, id, BlobKind::Data, &data, 3);
        let mut pb = PackBuilder::new(BlobKind::Data);
        pb.add(sealed);
        let pack = pb.finish(&key, true);
        let e = pack.entries[0];
        g.bench_with_input(BenchmarkId::new("open", name), &pack, |b, p| {
            b.iter(|| open_blob(&key, &e, &p.bytes[..e.length as usize]).unwrap())
        });
    }
    g.finish();
}

fn pack_writing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let blobs: Vec<SealedBlob> = (0..256)
        .map(|i| {
            let d = noise(64 << 10, i);
            SealedBlob::seal(&key, key.blob_id(&d), BlobKind::Data, &d, 0)
        })
        .collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(256 * (64 << 10)));
    g.sample_size(20);
    g.bench_function("build_16m", |b| {
        b.iter(|| {
            let mut pb = PackBuilder::new(BlobKind::Data);
            for s in &blobs {
                pb.add(SealedBlob {
                    id: s.id,
                    kind: s.kind,
                    raw_length: s.raw_length,
                    compression: s.compression,
                    bytes: s.bytes.clone(),
                });
            }
            pb.finish(&key, true).bytes.len()
        })
    });
    g.finish();
}

fn index_lookups(c: &mut Criterion) {
    use strata::internals::{BlobEntry, Compression};
    use strata::internals::{IndexFile, IndexedPack};
    use strata::{IndexId, PackId};
    let dir = tempfile::tempdir().unwrap();
    let cache = strata::internals::Cache::open(dir.path()).unwrap();
    let key = MasterKey::generate();
    let ids: Vec<_> = (0..100_000u32)
        .map(|i| key.blob_id(&i.to_le_bytes()))
        .collect();
    let packs = ids
        .chunks(256)
        .enumerate()
        .map(|(p, chunk)| IndexedPack {
            id: PackId([p as u8; 32]),
            kind: BlobKind::Data,
            size: 0,
            blobs: chunk
                .iter()
                .enumerate()
                .map(|(i, id)| BlobEntry {
                    id: *id,
                    kind: BlobKind::Data,
                    offset: i as u64 * 100,
                    length: 100,
                    raw_length: 60,
                    compression: Compression::None,
                })
                .collect(),
        })
        .collect();
    let tx = cache.transaction().unwrap();
    cache
        .index()
        .add_file(
            &IndexId([0; 32]),
            &IndexFile {
                version: 1,
                supersedes: vec![],
                packs,
                obsolete: vec![],
            },
        )
        .unwrap();
    tx.commit().unwrap();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("lookup_1000_of_100k", |b| {
        b.iter(|| {
            ids.iter()
                .step_by(100)
                .filter(|id| cache.index().contains(id).unwrap())
                .count()
        })
    });
    g.finish();
}

fn trees(c: &mut Criterion) {
    let mut tree = Tree {
        entries: (0..1000)
            .map(|i| {
                let mut n = Node::new(format!("file-{i:05}.json").into_bytes(), NodeKind::File);
                n.mode = 0o644;
                n.size = 1234;
                n.content = vec![strata::BlobId([i as u8; 32])];
                n
            })
            .collect(),
    };
    let bytes = tree.encode();
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encode_1000_entries", |b| b.iter(|| tree.encode().len()));
    g.bench_function("decode_1000_entries", |b| {
        b.iter(|| {
            Tree::decode(&bytes, &strata::BlobId([0; 32]))
                .unwrap()
                .entries
                .len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    chunking,
    hashing,
    seal,
    pack_writing,
    index_lookups,
    trees
);
criterion_main!(benches);
