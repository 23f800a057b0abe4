//! `copy` through the library: two repositories of their own keys in memory; what is read
//! and what is stored, run after run.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use strata::backend::{BackendRef, MemBackend};
use strata::backup::{self, BackupOptions, Source};
use strata::check::{self, ReadData};
use strata::copy::{self, CopiedFrom, CopyReport, Selection};
use strata::{ChunkerParams, Config, KdfCost, NoProgress, Repository, Snapshot, SnapshotId};

mod common;
use common::noise;

struct Sites {
    dir: tempfile::TempDir,
    src: BackendRef,
    dst: BackendRef,
}

impl Sites {
    fn new() -> Self {
        let make = |pw: &[u8]| -> BackendRef {
            let b: BackendRef = Arc::new(MemBackend::new());
            let config = Config::new(ChunkerParams::default(), 3);
            Repository::init(b.clone(), pw, config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
            b
        };
        Sites {
            dir: tempfile::tempdir().unwrap(),
            src: make(b"one"),
            dst: make(b"two"),
        }
    }

    fn open(&self, site: &BackendRef, pw: &[u8]) -> Repository {
        Repository::open(site.clone(), pw, &self.dir.path().join("cache")).unwrap()
    }

    fn src(&self) -> Repository {
        self.open(&self.src, b"one")
    }

    fn dst(&self) -> Repository {
        let backend = self.dst.clone();
        let cache = self.dir.path().join("cache");
        Repository::open_for_backup(backend, &mut || Ok(b"two".to_vec()), &cache).unwrap()
    }

    /// Backs up files (name, seed, size) into the source.
    fn backup(&self, host: &str, files: &[(&str, u64, usize)]) -> (SnapshotId, Snapshot) {
        let src = self.source_dir(host);
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        for (name, seed, size) in files {
            std::fs::write(src.join(name), noise(*size, *seed)).unwrap();
        }
        let opts = BackupOptions {
            source: Source::Paths(vec![src]),
            host: Some(host.into()),
            ..Default::default()
        };
        let r = backup::run(&self.src(), opts, &NoProgress).unwrap();
        (r.snapshot_id, r.snapshot)
    }

    fn source_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join("src").join(host)
    }

    fn copy(&self, selection: Selection) -> CopyReport {
        let (src, dst) = (self.src(), self.dst());
        let plan = copy::plan(&src, &dst, src.snapshots().list().unwrap(), selection).unwrap();
        copy::run(&src, &dst, plan, &NoProgress, &AtomicBool::new(false)).unwrap()
    }

    /// The file's content in the destination's newest snapshot of `host`.
    fn restored(&self, host: &str, name: &str) -> Vec<u8> {
        let dst = self.open(&self.dst, b"two");
        let (_, snap) = (dst.snapshots().list().unwrap().into_iter())
            .rfind(|(_, s)| s.host == host)
            .expect("a copy of the host's snapshot");
        let path = self.source_dir(host).join(name);
        let mut out = Vec::new();
        strata::restore::cat_file(&dst, &snap, &path, &mut out).unwrap();
        out
    }
}

#[test]
fn a_copy_reads_only_what_the_destination_lacks() {
    let sites = Sites::new();
    let (first, _) = sites.backup("a", &[("f", 1, 300_000), ("g", 2, 100_000)]);
    let r = sites.copy(Selection::SinceLast);
    assert_eq!(r.copied.len(), 1);
    assert_eq!(r.bytes_read, 400_000, "{r:?}");
    assert!(r.bytes_added >= 400_000, "the data and its trees: {r:?}");
    assert!(
        r.blobs_read >= 2 && r.blobs_added > r.blobs_read,
        "data, then trees: {r:?}"
    );
    assert!(
        r.bytes_stored > 0 && r.bytes_stored < r.bytes_added + 4096,
        "{r:?}"
    );
    assert_eq!(sites.restored("a", "f"), noise(300_000, 1));

    // The copy names its source, keeps its time and host, and has no parent there.
    let dst = sites.open(&sites.dst, b"two");
    let (_, copy) = dst.snapshots().list().unwrap().pop().unwrap();
    let from: CopiedFrom = copy.extension(copy::EXTENSION).unwrap().unwrap();
    assert_eq!(from.snapshot, first);
    assert_eq!(from.repository, sites.src().config().id.to_hex());
    assert_eq!(copy.parent, None);

    // Nothing new: nothing read. One file changed: its bytes only.
    let again = sites.copy(Selection::SinceLast);
    assert_eq!(
        (again.copied.len(), again.present, again.blobs_read),
        (0, 1, 0)
    );
    sites.backup("a", &[("f", 1, 300_000), ("g", 3, 100_000)]);
    let hourly = sites.copy(Selection::SinceLast);
    assert_eq!(hourly.copied.len(), 1);
    assert_eq!(hourly.bytes_read, 100_000, "{hourly:?}");
    assert_eq!(sites.restored("a", "g"), noise(100_000, 3));

    let report = check::run(&dst, ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.snapshots, 2);
}

#[test]
fn the_destinations_ids_are_remembered_between_runs() {
    let sites = Sites::new();
    sites.backup("a", &[("f", 1, 200_000)]);
    sites.copy(Selection::SinceLast);
    // Another host stores the same file: known at the destination by the ids found in
    // the first run, so nothing is read.
    sites.backup("b", &[("f", 1, 200_000)]);
    let r = sites.copy(Selection::SinceLast);
    assert_eq!(r.copied.len(), 1);
    assert_eq!(r.bytes_read, 0, "{r:?}");
    assert_eq!(sites.restored("b", "f"), noise(200_000, 1));

    // A destination that lost the data (its index rebuilt without a pack) is sent it
    // again: the id is remembered, but what exists is always asked of the index.
    let dst = sites.open(&sites.dst, b"two");
    for f in sites.dst.list(strata::backend::FileKind::Data).unwrap() {
        sites
            .dst
            .delete(strata::backend::FileKind::Data, &f.name)
            .unwrap();
    }
    strata::repair::repair_index(&dst, false, &NoProgress).unwrap();
    sites.backup("c", &[("f", 1, 200_000)]);
    let r = sites.copy(Selection::SinceLast);
    assert_eq!(r.bytes_read, 200_000, "{r:?}");
    assert_eq!(sites.restored("c", "f"), noise(200_000, 1));
}

#[test]
fn since_the_last_copy_leaves_out_what_the_destination_forgot() {
    let sites = Sites::new();
    sites.backup("a", &[("f", 1, 10_000)]);
    std::thread::sleep(std::time::Duration::from_millis(10));
    sites.backup("a", &[("f", 2, 10_000)]);
    assert_eq!(sites.copy(Selection::SinceLast).copied.len(), 2);
    // The destination's retention forgets the older copy.
    let dst = sites.open(&sites.dst, b"two");
    let (older, _) = dst.snapshots().list().unwrap().remove(0);
    dst.snapshots().remove(&older).unwrap();
    let since = sites.copy(Selection::SinceLast);
    assert_eq!((since.copied.len(), since.older, since.present), (0, 1, 1));
    let all = sites.copy(Selection::Missing);
    assert_eq!((all.copied.len(), all.older), (1, 0));

    // A snapshot of the same lineage taken at the same instant as the last copy is not
    // older: it is copied.
    let src = sites.src();
    let (_, mut twin) = src.snapshots().list().unwrap().pop().unwrap();
    twin.tags.push("twin".into());
    src.snapshots().write(&twin).unwrap();
    let tie = sites.copy(Selection::SinceLast);
    assert_eq!(
        (tie.copied.len(), tie.older, tie.present),
        (1, 0, 2),
        "{tie:?}"
    );

    // Every copy of the lineage forgotten there: the older one is still not copied back
    // (the cache remembers the newest copied); those of the last copy's instant are, as
    // any snapshot taken at that instant would be.
    let dst = sites.open(&sites.dst, b"two");
    for (id, _) in dst.snapshots().list().unwrap() {
        dst.snapshots().remove(&id).unwrap();
    }
    let none = sites.copy(Selection::SinceLast);
    assert_eq!((none.copied.len(), none.older), (2, 1), "{none:?}");
}

#[test]
fn copying_back_copies_nothing_twice() {
    let sites = Sites::new();
    sites.backup("a", &[("f", 1, 10_000)]);
    sites.copy(Selection::Missing);
    let (src, dst) = (sites.src(), sites.dst());
    // From the destination back to the source: the originals are there.
    let back = copy::plan(
        &dst,
        &src,
        dst.snapshots().list().unwrap(),
        Selection::Missing,
    )
    .unwrap();
    assert_eq!((back.copy.len(), back.present.len()), (0, 1));
    // Once the original is gone from the source, copying back restores it.
    let (original, _) = src.snapshots().list().unwrap().pop().unwrap();
    src.snapshots().remove(&original).unwrap();
    let listed = dst.snapshots().list().unwrap();
    let back = copy::plan(&dst, &src, listed, Selection::Missing).unwrap();
    assert_eq!((back.copy.len(), back.present.len()), (1, 0));
}

#[test]
fn a_stopped_copy_writes_no_snapshot_and_the_rerun_resumes() {
    let sites = Sites::new();
    sites.backup("a", &[("f", 1, 300_000)]);
    let (src, dst) = (sites.src(), sites.dst());
    let plan = copy::plan(
        &src,
        &dst,
        src.snapshots().list().unwrap(),
        Selection::Missing,
    )
    .unwrap();
    let stopped = copy::run(&src, &dst, plan, &NoProgress, &AtomicBool::new(true));
    assert!(
        matches!(stopped, Err(strata::Error::Interrupted { .. })),
        "{stopped:?}"
    );
    assert!(sites
        .open(&sites.dst, b"two")
        .snapshots()
        .list()
        .unwrap()
        .is_empty());
    let r = sites.copy(Selection::Missing);
    assert_eq!(r.copied.len(), 1);
    assert_eq!(sites.restored("a", "f"), noise(300_000, 1));
}

/// A pack the source lost costs the snapshots that need it, not the copy: the others are
/// copied, and the report names what was not.
#[test]
fn a_lost_source_pack_costs_only_the_snapshots_it_holds() {
    let sites = Sites::new();
    let (first, _) = sites.backup("a", &[("f", 1, 200_000)]);
    let src = sites.src();
    let node_pack = {
        let snap = src.snapshots().get(&first).unwrap();
        let path = sites.source_dir("a").join("f");
        let node = strata::walk::lookup(&src, &snap.tree, &path)
            .unwrap()
            .unwrap();
        src.index().lookup(&node.content[0]).unwrap().pack
    };
    let (second, _) = sites.backup("b", &[("g", 2, 100_000)]);
    sites
        .src
        .delete(strata::backend::FileKind::Data, &node_pack.to_hex())
        .unwrap();
    let r = sites.copy(Selection::Missing);
    assert_eq!(r.copied.len(), 1, "{r:?}");
    assert_eq!(r.copied[0].0, second);
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(r.failed[0].0, first);
    assert_eq!(sites.restored("b", "g"), noise(100_000, 2));
    let dst = sites.open(&sites.dst, b"two");
    let report = check::run(&dst, ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

impl Sites {
    /// A copy that takes root records too, as the hourly `strata copy` does.
    fn copy_with_roots(&self, selection: Selection) -> CopyReport {
        let (src, dst) = (self.src(), self.dst());
        let mut plan = copy::plan(&src, &dst, src.snapshots().list().unwrap(), selection).unwrap();
        plan.roots = copy::plan_roots(&src, &dst, selection).unwrap();
        copy::run(&src, &dst, plan, &NoProgress, &AtomicBool::new(false)).unwrap()
    }

    /// Stores a root record of `key` holding `blobs` (seeds) in the source.
    fn root(&self, key: &str, seeds: &[u64]) {
        let src = self.src();
        let data: Vec<Vec<u8>> = seeds.iter().map(|s| noise(50_000, *s)).collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let ids = src.store_blobs(&refs).unwrap();
        let root = strata::Root::new("test.ns", key, ids, key.as_bytes().to_vec()).unwrap();
        src.write_root(&root).unwrap();
    }
}

/// Root records (the WAL archive's) go with the snapshots: their blobs under the
/// destination's key, the record under the destination's name for it, readable there with
/// the same content. An hourly copy reads only the new ones; one the destination removed
/// is not copied back unless asked (`--all`); one the source cannot give is named.
#[test]
fn root_records_are_copied_once_and_read_back_whole() {
    let sites = Sites::new();
    sites.backup("a", &[("f", 1, 10_000)]);
    sites.root("seg1", &[11, 12]);
    sites.root("seg2", &[12, 13]);
    let r = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!((r.roots_copied, r.roots_present), (2, 0), "{r:?}");
    assert!(r.roots_failed.is_empty());
    assert_eq!(
        r.bytes_read,
        10_000 + 3 * 50_000,
        "blob 12 read once: {r:?}"
    );
    let dst = sites.open(&sites.dst, b"two");
    for (key, seeds) in [("seg1", [11, 12]), ("seg2", [12, 13])] {
        let root = dst
            .root("test.ns", key)
            .unwrap()
            .expect("the copied record");
        assert_eq!(root.payload, key.as_bytes());
        let content: Vec<Vec<u8>> = (root.blobs.iter())
            .map(|b| dst.index().read(b).unwrap())
            .collect();
        assert_eq!(content, seeds.map(|s| noise(50_000, s)));
    }
    // Nothing new: no record read, nothing copied. A new one: that one.
    let again = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!(
        (again.roots_copied, again.roots_present, again.bytes_read),
        (0, 2, 0)
    );
    sites.root("seg3", &[14]);
    let hourly = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!((hourly.roots_copied, hourly.roots_present), (1, 2));
    assert_eq!(hourly.bytes_read, 50_000);
    // Removed at the destination (its own retention): not copied back, but by --all.
    dst.remove_root("test.ns", "seg1").unwrap();
    let kept = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!(kept.roots_copied, 0);
    assert!(sites.dst().root("test.ns", "seg1").unwrap().is_none());
    let all = sites.copy_with_roots(Selection::Missing);
    assert_eq!((all.roots_copied, all.roots_present), (1, 2), "{all:?}");
    assert!(sites.dst().root("test.ns", "seg1").unwrap().is_some());
    let report = check::run(&sites.open(&sites.dst, b"two"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A root record whose data the source lost is not copied, and said; the others are.
#[test]
fn a_root_record_the_source_cannot_give_is_named() {
    let sites = Sites::new();
    sites.root("whole", &[21]);
    sites.root("broken", &[22]);
    let src = sites.src();
    let broken = src.root("test.ns", "broken").unwrap().unwrap();
    let pack = src.index().lookup(&broken.blobs[0]).unwrap().pack;
    sites
        .src
        .delete(strata::backend::FileKind::Data, &pack.to_hex())
        .unwrap();
    let r = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!(r.roots_copied, 1, "{r:?}");
    assert_eq!(r.roots_failed.len(), 1, "{r:?}");
    assert!(r.roots_failed[0].0.contains("broken"), "{r:?}");
    assert!(sites.dst().root("test.ns", "whole").unwrap().is_some());
    assert!(sites.dst().root("test.ns", "broken").unwrap().is_none());
}

/// What is remembered of the last copy is per lineage: a lineage never copied is copied
/// whole, however recent another lineage's last copy.
#[test]
fn the_last_copy_is_remembered_per_lineage() {
    let sites = Sites::new();
    let (b, _) = sites.backup("b", &[("g", 1, 1_000)]);
    std::thread::sleep(std::time::Duration::from_millis(10));
    sites.backup("a", &[("f", 2, 1_000)]);
    let (src, dst) = (sites.src(), sites.dst());
    let only_a: Vec<_> = (src.snapshots().list().unwrap().into_iter())
        .filter(|(_, s)| s.host == "a")
        .collect();
    let plan = copy::plan(&src, &dst, only_a, Selection::SinceLast).unwrap();
    copy::run(&src, &dst, plan, &NoProgress, &AtomicBool::new(false)).unwrap();
    let rest = sites.copy(Selection::SinceLast);
    assert_eq!(rest.copied.len(), 1, "{rest:?}");
    assert_eq!(rest.copied[0].0, b);
}

/// A destination of a format before root records cannot take them: each is named, the
/// snapshots are copied all the same.
#[test]
fn root_records_into_a_destination_without_them_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let make = |pw: &[u8], version: u32| -> BackendRef {
        let b: BackendRef = Arc::new(MemBackend::new());
        let mut config = Config::new(ChunkerParams::default(), 3);
        config.version = version;
        Repository::init(b.clone(), pw, config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
        b
    };
    let sites = Sites {
        dir,
        src: make(b"one", 5),
        dst: make(b"two", 3),
    };
    sites.backup("a", &[("f", 1, 1_000)]);
    sites.root("seg", &[31]);
    let r = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!((r.copied.len(), r.roots_copied), (1, 0), "{r:?}");
    assert_eq!(r.roots_failed.len(), 1, "{r:?}");
    assert!(r.roots_failed[0].1.contains("format version 3"), "{r:?}");
}

/// A record the destination has but the cache forgot it copied (its bookkeeping lost) is
/// found there, not copied again.
#[test]
fn a_root_record_the_cache_forgot_is_found_at_the_destination() {
    let sites = Sites::new();
    sites.root("one", &[41]);
    sites.root("two", &[42]);
    assert_eq!(sites.copy_with_roots(Selection::SinceLast).roots_copied, 2);
    // The cache forgets one of the two.
    let db = std::fs::read_dir(sites.dir.path().join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("cache.sqlite"))
        .filter(|p| p.exists())
        .find(|p| {
            let conn = rusqlite::Connection::open(p).unwrap();
            conn.query_row("SELECT count(*) FROM copied_roots", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                > 0
        })
        .expect("the destination's cache");
    let conn = rusqlite::Connection::open(db).unwrap();
    let forgotten: String = conn
        .query_row("SELECT name FROM copied_roots LIMIT 1", [], |r| r.get(0))
        .unwrap();
    conn.execute("DELETE FROM copied_roots WHERE name = ?1", [&forgotten])
        .unwrap();
    let again = sites.copy_with_roots(Selection::SinceLast);
    assert_eq!(
        (again.roots_copied, again.roots_present),
        (0, 2),
        "{again:?}"
    );
    assert_eq!(again.bytes_read, 0);
}

/// Hostile pass 9: one snapshot dated ahead (a clock ahead once, or a key holder's) was
/// taken for the lineage's last copy, and every honest snapshot after it was left out as
/// older, with the copy reporting success. A copy dated ahead of now is not the last.
#[test]
fn a_copy_dated_ahead_does_not_stop_its_lineage() {
    let sites = Sites::new();
    std::fs::create_dir_all(sites.source_dir("a")).unwrap();
    let ahead = BackupOptions {
        source: Source::Paths(vec![sites.source_dir("a")]),
        host: Some("a".into()),
        time: Some(chrono::DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z").unwrap()),
        ..Default::default()
    };
    backup::run(&sites.src(), ahead, &NoProgress).unwrap();
    assert_eq!(sites.copy(Selection::SinceLast).copied.len(), 1);
    let (honest, _) = sites.backup("a", &[("f", 1, 1_000)]);
    let r = sites.copy(Selection::SinceLast);
    assert_eq!((r.copied.len(), r.older), (1, 0), "{r:?}");
    assert_eq!(r.copied[0].0, honest);
}
