//! Many hosts on one repository (format-spec §7.3): a backup on a warm cache lists mark
//! records instead of reading the index files other hosts wrote, so its cost does not
//! grow with the fleet; it never deduplicates against a pack a prune took out of the live
//! set; past its bound of new data it reads the others' files and finds what they stored;
//! a view too old, a repair, or a repository before version 5 make it read everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::backend::faulty::{Faulty, Op};
use strata::backend::{Backend, BackendRef, FileKind, MemBackend};
use strata::backup::{self, BackupOptions, Source};
use strata::check::{self, ReadData};
use strata::prune::{self, PruneOptions};
use strata::{ChunkerParams, Config, KdfCost, NoProgress, Repository, Snapshot, SnapshotId};

mod common;
use common::noise;

/// One repository in memory, counted, and hosts each with a cache and a source of its own.
struct Fleet {
    dir: tempfile::TempDir,
    store: Arc<Faulty>,
}

impl Fleet {
    fn new(version: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Faulty::new(Arc::new(MemBackend::new())));
        let mut config = Config::new(ChunkerParams::default(), 3);
        config.version = version;
        let backend: BackendRef = store.clone();
        Repository::init(backend, b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
        Fleet { dir, store }
    }

    fn cache(&self, host: &str) -> PathBuf {
        self.dir.path().join("caches").join(host)
    }

    /// The repository as `host`'s backup opens it, as a cron run would.
    fn open(&self, host: &str) -> Repository {
        let backend: BackendRef = self.store.clone();
        Repository::open_for_backup(backend, &mut || Ok(b"pw".to_vec()), &self.cache(host)).unwrap()
    }

    /// The repository with every index file read (an operator's prune or restore).
    fn open_full(&self, host: &str) -> Repository {
        let backend: BackendRef = self.store.clone();
        Repository::open(backend, b"pw", &self.cache(host)).unwrap()
    }

    /// `host` backs up its source holding `files` (name, seed, size); files it held
    /// before and does not name now are gone.
    fn backup(&self, host: &str, files: &[(&str, u64, usize)]) -> (SnapshotId, Snapshot) {
        self.backup_with(host, files, backup::EXTEND_VIEW_AFTER)
    }

    fn backup_with(
        &self,
        host: &str,
        files: &[(&str, u64, usize)],
        extend_view_after: u64,
    ) -> (SnapshotId, Snapshot) {
        let src = self.dir.path().join("src").join(host);
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        for (name, seed, size) in files {
            std::fs::write(src.join(name), noise(*size, *seed)).unwrap();
        }
        let repo = self.open(host);
        let opts = BackupOptions {
            source: Source::Paths(vec![src]),
            host: Some(host.into()),
            extend_view_after,
            ..Default::default()
        };
        let r = backup::run(&repo, opts, &NoProgress).unwrap();
        (r.snapshot_id, r.snapshot)
    }

    fn count(&self, op: Op, kind: FileKind) -> u64 {
        self.store.count(op, Some(kind))
    }

    /// Index reads and listings, and mark listings, that `f` made.
    fn cost(&self, f: impl FnOnce()) -> (u64, u64, u64) {
        let before = (
            self.count(Op::Read, FileKind::Index),
            self.count(Op::List, FileKind::Index),
            self.count(Op::List, FileKind::Marks),
        );
        f();
        (
            self.count(Op::Read, FileKind::Index) - before.0,
            self.count(Op::List, FileKind::Index) - before.1,
            self.count(Op::List, FileKind::Marks) - before.2,
        )
    }
}

/// The SQLite database of the one repository cache under `cache`.
fn cache_db(cache: &Path) -> rusqlite::Connection {
    let db = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("cache.sqlite"))
        .find(|p| p.exists())
        .expect("a repository cache");
    rusqlite::Connection::open(db).unwrap()
}

/// Sets when `host`'s cache last listed the mark records.
fn set_marks_listed(cache: &Path, when: chrono::DateTime<chrono::Utc>) {
    let conn = cache_db(cache);
    let n = conn
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'marks_listed'",
            [when.to_rfc3339()],
        )
        .unwrap();
    assert_eq!(n, 1, "the cache never listed mark records");
}

/// Makes `id` (of `size` bytes) the sentinel of `host`'s cache, as a full read that listed
/// it largest would.
fn set_sentinel(cache: &Path, id: &str, size: u64) {
    let conn = cache_db(cache);
    let n = conn
        .execute("UPDATE meta SET value = ?1 WHERE key = 'sentinel'", [id])
        .unwrap();
    assert_eq!(n, 1, "the cache has no sentinel");
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('sentinel_print', ?1)",
        [format!("{size}:")],
    )
    .unwrap();
}

#[test]
fn a_warm_backup_reads_no_index_file_of_other_hosts() {
    let fleet = Fleet::new(5);
    let hosts: Vec<String> = (0..6).map(|h| format!("host{h}")).collect();
    for (i, h) in hosts.iter().enumerate() {
        fleet.backup(h, &[("shared", 1, 200_000), ("own", 10 + i as u64, 50_000)]);
    }
    // An hour later: each host changed one file; the others' new index files stay unread.
    for (i, h) in hosts.iter().enumerate() {
        let cost = fleet.cost(|| {
            fleet.backup(
                h,
                &[("shared", 1, 200_000), ("own", 100 + i as u64, 50_000)],
            );
        });
        // One ranged read of an index file: that its own last one is still there.
        assert_eq!(
            cost,
            (1, 0, 1),
            "{h}: (index reads, index lists, mark lists)"
        );
    }
    // Its snapshots restore and check clean from a full view.
    let repo = fleet.open_full("admin");
    let report = check::run(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn before_version_5_every_backup_reads_the_others_index_files() {
    let fleet = Fleet::new(4);
    for h in ["a", "b", "c"] {
        fleet.backup(h, &[("f", 1, 10_000)]);
    }
    fleet.backup("b", &[("f", 2, 10_000)]);
    fleet.backup("c", &[("f", 3, 10_000)]);
    let (reads, lists, marks) = fleet.cost(|| {
        fleet.backup("a", &[("f", 4, 10_000)]);
    });
    assert_eq!(
        (reads, lists, marks),
        (4, 1, 0),
        "all b and c wrote since a's last run"
    );
    assert!(fleet.store.list(FileKind::Marks).unwrap().is_empty());
}

/// The hole a partial view would open without mark records: a pack this host knows, that a
/// prune elsewhere marked, must be stored afresh, not deduplicated against.
#[test]
fn a_pack_another_host_pruned_is_not_deduplicated_against() {
    let fleet = Fleet::new(5);
    let (first, _) = fleet.backup("a", &[("y", 7, 300_000)]);
    fleet.backup("a", &[("z", 8, 1_000)]);
    // The admin host forgets a's first snapshot and prunes: y's pack is marked.
    let admin = fleet.open_full("admin");
    admin.snapshots().remove(&first).unwrap();
    let marked = prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(marked.packs_marked >= 1, "{marked:?}");
    assert_eq!(fleet.store.list(FileKind::Marks).unwrap().len(), 1);

    let (_, snap) = fleet.backup("a", &[("y", 7, 300_000)]);
    assert_eq!(
        snap.summary.data_added, 300_000,
        "deduplicated against a marked pack"
    );
    // Stored again once, then found in its new pack: not stored on every run after.
    let (_, snap) = fleet.backup("a", &[("y", 7, 300_000), ("w", 9, 1_000)]);
    assert_eq!(
        snap.summary.data_added, 1_000,
        "stored again on the next run"
    );
    // The mark settles (the pack deleted): the new snapshot does not need it.
    let now = PruneOptions {
        instant_delete: true,
        ..Default::default()
    };
    let done = prune::run(&admin, &now, &NoProgress).unwrap();
    assert!(done.packs_deleted >= 1, "{done:?}");
    let report = check::run(&fleet.open_full("admin"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn past_its_bound_a_backup_finds_what_other_hosts_stored() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("small", 1, 1_000)]);
    fleet.backup("b", &[("m1", 21, 3_000_000), ("m2", 22, 3_000_000)]);
    // Within the default bound: stored again, nothing of b's read.
    let (reads, _, _) = fleet.cost(|| {
        let (_, s) = fleet.backup("a", &[("small", 1, 1_000), ("m1", 21, 3_000_000)]);
        assert_eq!(s.summary.data_added, 3_000_000);
    });
    assert_eq!(reads, 1, "its sentinel's check only");
    // Past a 1 MB bound: b's index files are read and the rest of m2 found there.
    let (reads, lists, _) = fleet.cost(|| {
        let (_, s) = fleet.backup_with("a", &[("m2", 22, 3_000_000)], 1_000_000);
        assert!(s.summary.data_added < 1_500_000, "{:?}", s.summary);
    });
    assert_eq!(
        (reads, lists),
        (2, 1),
        "the sentinel, b's one index file, one listing"
    );
}

#[test]
fn an_old_view_or_a_repair_makes_a_backup_read_everything() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("f", 1, 10_000)]);
    fleet.backup("b", &[("g", 2, 10_000)]);
    // Listed marks 6 days ago and more: the records since may be gone.
    set_marks_listed(
        &fleet.cache("a"),
        chrono::Utc::now() - chrono::Duration::days(6) - chrono::Duration::minutes(1),
    );
    let (reads, lists, marks) = fleet.cost(|| {
        fleet.backup("a", &[("f", 3, 10_000)]);
    });
    assert_eq!((reads, lists, marks), (1, 1, 1), "b's file read");
    // Younger: partial again (the sentinel's check only).
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("a", &[("f", 4, 10_000)]);
    });
    assert_eq!((reads, lists), (1, 0));

    // A repair of the index cannot name what it could not read: everything again.
    fleet.backup("b", &[("g", 5, 10_000)]);
    let admin = fleet.open_full("admin");
    strata::repair::repair_index(&admin, false, &NoProgress).unwrap();
    let records = fleet.store.list(FileKind::Marks).unwrap().len();
    assert_eq!(records, 1);
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("a", &[("f", 6, 10_000)]);
    });
    assert!(reads >= 1 && lists == 1, "({reads}, {lists})");
}

#[test]
fn prune_deletes_mark_records_past_their_retention() {
    let fleet = Fleet::new(5);
    let (first, _) = fleet.backup("a", &[("y", 1, 100_000)]);
    fleet.backup("a", &[("z", 2, 100_000)]);
    let admin = fleet.open_full("admin");
    admin.snapshots().remove(&first).unwrap();
    prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    let young = fleet.store.list(FileKind::Marks).unwrap();
    assert_eq!(young.len(), 1);
    // A record a week and an hour old, as an earlier prune would have left it.
    let old = strata::MarkRecord {
        version: 1,
        time: (chrono::Utc::now() - strata::RECORD_RETENTION - chrono::Duration::hours(1))
            .to_rfc3339(),
        host: "elsewhere".into(),
        packs: vec![strata::PackId([9; 32])],
        reread: false,
        superseded: Vec::new(),
        keys: Vec::new(),
        forgotten: Vec::new(),
    };
    admin.save_file(FileKind::Marks, &old).unwrap();
    assert_eq!(fleet.store.list(FileKind::Marks).unwrap().len(), 2);
    let report = prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    // The old one went; the young one stays, beside this run's record: nothing new left
    // the live set (carried marks were named by their own run's), but its index replaced
    // the files the first run wrote, and the record says so.
    let left: Vec<String> = (fleet.store.list(FileKind::Marks).unwrap().into_iter())
        .map(|f| f.name)
        .collect();
    assert_eq!(left.len(), 2, "{report:?}");
    assert!(left.contains(&young[0].name), "{report:?}");
    let new = left.iter().find(|n| **n != young[0].name).unwrap();
    let record: strata::MarkRecord = admin.files().load(FileKind::Marks, new).unwrap().unwrap();
    assert!(
        record.packs.is_empty() && !record.superseded.is_empty(),
        "{record:?}"
    );
}

/// Whoever holds the bucket cannot stop backups with a record that does not open: the
/// backup reads every index file instead, and says so.
#[test]
fn a_damaged_mark_record_costs_a_full_read_not_the_backup() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("f", 1, 10_000)]);
    fleet.backup("b", &[("g", 2, 10_000)]);
    let junk = b"not a sealed record".to_vec();
    let name = hex::encode(blake3::hash(&junk).as_bytes());
    fleet.store.write(FileKind::Marks, &name, &junk).unwrap();
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("a", &[("f", 3, 10_000)]);
    });
    assert_eq!(
        (reads, lists),
        (2, 1),
        "b's file read, as without a partial view (and the sentinel's ranged read, in \
         flight beside the listing of the records)"
    );
    // `check` names it, with what to do; the record of a real prune passes.
    let admin = fleet.open_full("admin");
    prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    let report = check::run(&admin, ReadData::None, &NoProgress).unwrap();
    assert_eq!(report.mark_records, 1, "{report:?}");
    let problems: Vec<String> = (report.problems.iter())
        .map(|p| format!("{}: {}", p.object, p.reason))
        .collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&format!("mark record {name}")),
        "{problems:?}"
    );
    assert_eq!(report.problems[0].remedy, strata::Remedy::RemoveMarkRecord);
}

/// A store that runs `hook` (another host's backup finishing) just before its first
/// listing of snapshots, the moment a reader's view of the index is most likely older
/// than the snapshots it is about to see.
struct BackupBeforeListing {
    inner: BackendRef,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Backend for BackupBeforeListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> strata::Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> strata::Result<Vec<strata::backend::FileInfo>> {
        if kind == FileKind::Snapshot {
            if let Some(hook) = self.hook.lock().unwrap().take() {
                hook();
            }
        }
        self.inner.list(kind)
    }
    fn read(&self, kind: FileKind, name: &str) -> strata::Result<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, at: u64, len: u64) -> strata::Result<Vec<u8>> {
        self.inner.read_range(kind, name, at, len)
    }
    fn put(
        &self,
        kind: FileKind,
        name: &str,
        data: &[u8],
        how: &strata::backend::WriteOptions,
    ) -> strata::Result<()> {
        self.inner.put(kind, name, data, how)
    }
    fn delete(&self, kind: FileKind, name: &str) -> strata::Result<()> {
        self.inner.delete(kind, name)
    }
    fn capabilities(&self) -> strata::backend::Capabilities<'_> {
        self.inner.capabilities()
    }
}

/// A check whose index was read before another host's backup finished reports no damage
/// for that backup's snapshot (it was listed before the index was read, or not at all).
#[test]
fn a_check_beside_a_finishing_backup_reports_no_damage() {
    let fleet = std::sync::Arc::new(Fleet::new(5));
    fleet.backup("a", &[("x", 1, 10_000)]);
    let checker = fleet.open_full("checker");
    let other = fleet.clone();
    let racing: BackendRef = Arc::new(BackupBeforeListing {
        inner: fleet.store.clone(),
        hook: std::sync::Mutex::new(Some(Box::new(move || {
            other.backup("b", &[("y", 2, 50_000)]);
        }))),
    });
    drop(checker);
    let checker =
        Repository::open(racing, b"pw", &fleet.cache("checker")).expect("open beside the race");
    let report = check::run(&checker, ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // A restore likewise: the newest snapshot, listed after the index was read, opens.
    let other = fleet.clone();
    let racing: BackendRef = Arc::new(BackupBeforeListing {
        inner: fleet.store.clone(),
        hook: std::sync::Mutex::new(Some(Box::new(move || {
            other.backup("c", &[("z", 3, 50_000)]);
        }))),
    });
    let reader = Repository::open(racing, b"pw", &fleet.cache("reader")).unwrap();
    let (_, newest) = reader.snapshots().list().unwrap().pop().unwrap();
    assert_eq!(newest.host, "c");
    let tree = reader
        .trees()
        .load(&newest.tree)
        .expect("the newest snapshot's tree");
    assert!(!tree.entries.is_empty());
}

/// A record is remembered only with its packs dropped: a run that fails while reading the
/// records (a dropped connection) leaves none counted as read whose packs are still used.
#[test]
fn a_run_that_fails_among_the_records_leaves_no_record_half_applied() {
    use strata::backend::faulty::Fault;
    let fleet = Fleet::new(5);
    let (s1, _) = fleet.backup("a", &[("y", 7, 200_000)]);
    let (s2, _) = fleet.backup("a", &[("z", 8, 200_000)]);
    fleet.backup("a", &[("w", 9, 1_000)]);
    let admin = fleet.open_full("admin");
    for s in [s1, s2] {
        admin.snapshots().remove(&s).unwrap();
        prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    }
    assert_eq!(fleet.store.list(FileKind::Marks).unwrap().len(), 2);
    fleet
        .store
        .inject(Op::Read, Some(FileKind::Marks), 2, Fault::Fail);
    let backend: BackendRef = fleet.store.clone();
    let opened =
        Repository::open_for_backup(backend, &mut || Ok(b"pw".to_vec()), &fleet.cache("a"));
    assert!(opened.is_err(), "the second record's read failed");
    let (_, snap) = fleet.backup("a", &[("y", 7, 200_000), ("z", 8, 200_000)]);
    assert_eq!(snap.summary.data_added, 400_000, "{:?}", snap.summary);
}

/// A storage-only attacker deletes the prune's mark record before the host lists it: the
/// host's sentinel index file is gone with no record saying why, so it reads every index
/// file and stores the data again rather than trusting a pack the prune marked.
#[test]
fn a_deleted_mark_record_costs_a_full_read_not_the_data() {
    let fleet = Fleet::new(5);
    let (first, _) = fleet.backup("a", &[("y", 7, 300_000)]);
    fleet.backup("a", &[("z", 8, 1_000)]);
    let admin = fleet.open_full("admin");
    admin.snapshots().remove(&first).unwrap();
    let marked = prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(marked.packs_marked >= 1, "{marked:?}");
    for f in fleet.store.list(FileKind::Marks).unwrap() {
        fleet.store.delete(FileKind::Marks, &f.name).unwrap();
    }
    let (reads, _, _) = fleet.cost(|| {
        let (_, snap) = fleet.backup("a", &[("y", 7, 300_000)]);
        assert_eq!(
            snap.summary.data_added, 300_000,
            "deduplicated against a marked pack"
        );
    });
    assert!(
        reads >= 2,
        "the sentinel's check and the prune's index file: {reads}"
    );
    let now = PruneOptions {
        instant_delete: true,
        ..Default::default()
    };
    prune::run(&admin, &now, &NoProgress).unwrap();
    let report = check::run(&fleet.open_full("check"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The repository rolled back (a bucket restored from an older copy, a replayed disk
/// snapshot): what the host stored since is gone, its newest index file with it. The host
/// notices and stores that data again instead of writing a snapshot that needs it.
#[test]
fn a_rolled_back_repository_is_read_again() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("x", 1, 50_000)]);
    let before: std::collections::HashSet<(FileKind, String)> = [
        FileKind::Index,
        FileKind::Data,
        FileKind::Tree,
        FileKind::Snapshot,
    ]
    .into_iter()
    .flat_map(|k| {
        let names: Vec<String> = fleet
            .store
            .list(k)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        names.into_iter().map(move |n| (k, n))
    })
    .collect();
    fleet.backup("a", &[("x", 1, 50_000), ("y", 2, 200_000)]);
    for kind in [
        FileKind::Index,
        FileKind::Data,
        FileKind::Tree,
        FileKind::Snapshot,
    ] {
        for f in fleet.store.list(kind).unwrap() {
            if !before.contains(&(kind, f.name.clone())) {
                fleet.store.delete(kind, &f.name).unwrap();
            }
        }
    }
    let (_, snap) = fleet.backup("a", &[("x", 1, 50_000), ("y", 2, 200_000)]);
    assert_eq!(
        snap.summary.data_added, 200_000,
        "deduplicated against rolled-back data"
    );
    let report = check::run(&fleet.open_full("check"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A long backup merges its checkpoint index files into one: a record names them before
/// they go, so that a host keeping one as its sentinel is not alarmed into a full read.
#[test]
fn merged_checkpoints_are_named_by_a_record() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("big", 1, 40 << 20)]);
    let records = fleet.store.list(FileKind::Marks).unwrap();
    assert_eq!(records.len(), 1, "one record for the merge");
    let admin = fleet.open_full("admin");
    let record: strata::MarkRecord = (admin.files())
        .load(FileKind::Marks, &records[0].name)
        .unwrap()
        .unwrap();
    assert!(record.packs.is_empty());
    assert!(!record.superseded.is_empty());
    let listed: Vec<String> = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .map(|f| f.name)
        .collect();
    for gone in &record.superseded {
        assert!(!listed.contains(&gone.to_hex()), "{gone} still there");
    }
}

/// Every request of `f`, by operation and kind of file.
fn requests(fleet: &Fleet, f: impl FnOnce()) -> Vec<(Op, FileKind, u64)> {
    let all = |fleet: &Fleet| -> Vec<(Op, FileKind, u64)> {
        let ops = [Op::List, Op::Read, Op::Write, Op::Delete];
        (ops.into_iter())
            .flat_map(|op| FileKind::ALL.into_iter().map(move |k| (op, k)))
            .map(|(op, k)| (op, k, fleet.store.count(op, Some(k))))
            .collect()
    };
    let before = all(fleet);
    f();
    (all(fleet).into_iter().zip(before))
        .map(|((op, k, n), (_, _, m))| (op, k, n - m))
        .filter(|(_, _, n)| *n > 0)
        .collect()
}

/// An hourly backup on a warm cache reads neither the config nor the key files (both
/// are in its cache: the config never changes, and a removed key file is named by a
/// record): the listing of the records and the sentinel's ranged read, then the packs,
/// the index file and the snapshot. Six requests, however many hosts.
#[test]
fn an_hourly_backup_costs_six_requests() {
    let fleet = Fleet::new(5);
    for host in ["a", "b", "c"] {
        fleet.backup(host, &[("f", 1, 10_000), (host, 2, 10_000)]);
    }
    fleet.backup("a", &[("f", 1, 10_000), ("a", 3, 10_000)]);
    for host in ["b", "c"] {
        fleet.backup(host, &[("f", 1, 10_000), (host, 4, 10_000)]);
    }
    let seen = requests(&fleet, || {
        fleet.backup("a", &[("f", 1, 10_000), ("a", 5, 10_000)]);
    });
    let expected = vec![
        (Op::List, FileKind::Marks, 1),
        (Op::Read, FileKind::Index, 1),
        (Op::Write, FileKind::Data, 1),
        (Op::Write, FileKind::Tree, 1),
        (Op::Write, FileKind::Index, 1),
        (Op::Write, FileKind::Snapshot, 1),
    ];
    let mut seen = seen;
    seen.sort_by_key(|(op, k, _)| (format!("{op:?}"), k.dir()));
    let mut expected = expected;
    expected.sort_by_key(|(op, k, _)| (format!("{op:?}"), k.dir()));
    assert_eq!(seen, expected);
}

/// A key file removed on one host stops working on another that opens the repository
/// from its cached copy: the removal's record says so, and the key files are listed.
#[test]
fn a_removed_key_stops_working_where_it_is_cached() {
    let fleet = Fleet::new(5);
    let admin = fleet.open_full("admin");
    let second = admin
        .keys()
        .add(b"second", &KdfCost::INSECURE_FOR_TESTS)
        .unwrap();
    let open_with = |pw: &'static [u8]| {
        let backend: BackendRef = fleet.store.clone();
        Repository::open_for_backup(backend, &mut || Ok(pw.to_vec()), &fleet.cache("h"))
    };
    // Twice: the second run opens from the cache, warm.
    for _ in 0..2 {
        let repo = open_with(b"second").unwrap();
        backup::run(
            &repo,
            BackupOptions {
                source: Source::Paths(vec![fleet.dir.path().join("caches")]),
                host: Some("h".into()),
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
    }
    let warm = requests(&fleet, || drop(open_with(b"second").unwrap()));
    assert!(
        !warm.iter().any(|(_, k, _)| *k == FileKind::Key),
        "{warm:?}"
    );
    admin.keys().remove(&second).unwrap();
    assert_eq!(fleet.store.list(FileKind::Marks).unwrap().len(), 1);
    match open_with(b"second") {
        Err(strata::Error::WrongPassword { .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a removed key still opens the repository"),
    }
    // The other password, cached nowhere here, still opens it.
    open_with(b"pw").unwrap();
}

/// A repository deleted since the cache last opened it is reported as gone, whether its
/// files vanished all at once or its config alone is left out; nothing is written.
#[test]
fn a_vanished_repository_is_no_repository_to_a_warm_cache() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("f", 1, 10_000)]);
    fleet.backup("a", &[("f", 2, 10_000)]);
    for kind in FileKind::ALL {
        for f in fleet.store.list(kind).unwrap() {
            fleet.store.delete(kind, &f.name).unwrap();
        }
    }
    let backend: BackendRef = fleet.store.clone();
    let writes = fleet.store.count(Op::Write, None);
    match Repository::open_for_backup(backend, &mut || Ok(b"pw".to_vec()), &fleet.cache("a")) {
        Err(strata::Error::NoRepository(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a repository that is gone"),
    }
    assert_eq!(fleet.store.count(Op::Write, None), writes);
}

/// Another repository created where the cached one was (deleted, `init` again) is not
/// taken for it: the cached config does not match, and the opening starts afresh.
#[test]
fn a_repository_created_again_in_place_is_opened_afresh() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("f", 1, 10_000)]);
    fleet.backup("a", &[("f", 2, 10_000)]);
    for kind in FileKind::ALL {
        for f in fleet.store.list(kind).unwrap() {
            fleet.store.delete(kind, &f.name).unwrap();
        }
    }
    let backend: BackendRef = fleet.store.clone();
    let config = Config::new(ChunkerParams::default(), 3);
    Repository::init(backend, b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    let (_, snap) = fleet.backup("a", &[("f", 2, 10_000)]);
    assert_eq!(snap.summary.data_added, 10_000, "nothing deduplicated");
    let report = check::run(&fleet.open_full("check"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Hourly backups of a host merge the small index files its earlier runs wrote once there
/// would be eight: between prunes a bare machine reads a few files per host, not one per
/// backup. The merge writes no record (every other host would have to read it): one
/// deletion, no more. A host whose sentinel was one of them (a small file, chosen when no
/// larger one was listed) reads every index file again, and nothing is lost.
#[test]
fn a_host_merges_its_own_small_index_files() {
    let fleet = Fleet::new(5);
    fleet.backup("b", &[("g", 100, 10_000)]);
    let names = |fleet: &Fleet| -> Vec<(String, u64)> {
        (fleet.store.list(FileKind::Index).unwrap().into_iter())
            .map(|f| (f.name, f.size))
            .collect()
    };
    let b_file = names(&fleet);
    for hour in 0..7 {
        fleet.backup("a", &[("f", hour, 10_000)]);
    }
    let before = names(&fleet);
    assert_eq!(before.len(), 8);
    // b's sentinel is one of a's files.
    let (a_file, size) = before.iter().find(|n| !b_file.contains(n)).unwrap();
    set_sentinel(&fleet.cache("b"), a_file, *size);
    let merge = requests(&fleet, || {
        fleet.backup("a", &[("f", 7, 10_000)]);
    });
    let after = names(&fleet);
    assert_eq!(after.len(), 2, "b's file and a's merged one: {after:?}");
    assert!(after.contains(&b_file[0]));
    assert!(
        !merge
            .iter()
            .any(|(op, k, _)| *op == Op::Write && *k == FileKind::Marks),
        "no record: {merge:?}"
    );
    assert!(
        merge.contains(&(Op::Delete, FileKind::Index, 7)),
        "{merge:?}"
    );
    // b reads every index file again: the sentinel's check, a listing, both files.
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("b", &[("g", 101, 10_000)]);
    });
    assert_eq!((reads, lists), (3, 1));
    // Every snapshot restores from the merged index: check reads all of it.
    let report = check::run(&fleet.open_full("check"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.snapshots, 10);
    // Sixteen more runs: still no more than eight small files of a's.
    for hour in 8..24 {
        fleet.backup("a", &[("f", hour, 10_000)]);
    }
    let listed = names(&fleet).len();
    assert!((2..=9).contains(&listed), "{listed} index files");
}

/// After a full read a host keeps the largest index file listed as its sentinel, not a
/// small one its writer may merge away.
#[test]
fn the_sentinel_chosen_from_a_listing_is_the_largest_file() {
    let fleet = Fleet::new(5);
    fleet.backup("big", &[("f", 1, 3_000_000)]);
    for hour in 0..3 {
        fleet.backup("small", &[("g", 10 + hour, 1_000)]);
    }
    let largest = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .max_by_key(|f| f.size)
        .unwrap();
    // A host's first (bare) backup that stores nothing new: its sentinel is chosen from
    // the listing, and survives the small host's merges.
    fleet.backup("c", &[("f", 1, 3_000_000)]);
    for hour in 3..12 {
        fleet.backup("small", &[("g", 10 + hour, 1_000)]);
    }
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("c", &[("f", 1, 3_000_000)]);
    });
    assert_eq!(
        (reads, lists),
        (1, 0),
        "the largest file, {}, still checks",
        largest.name
    );
}

/// Index files a prune replaced are not merged again by a host that read its record:
/// the prune's marks stand, and what the prune deleted is named by no index file.
#[test]
fn a_host_merges_none_of_the_files_a_prune_replaced() {
    let fleet = Fleet::new(5);
    let mut first = None;
    for hour in 0..5 {
        let (id, _) = fleet.backup("a", &[(format!("f{hour}").as_str(), hour, 10_000)]);
        first.get_or_insert(id);
    }
    let admin = fleet.open_full("admin");
    admin.snapshots().remove(&first.unwrap()).unwrap();
    prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    let pruned: Vec<String> = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .map(|f| f.name)
        .collect();
    assert_eq!(pruned.len(), 1);
    for hour in 5..13 {
        fleet.backup("a", &[(format!("f{hour}").as_str(), hour, 10_000)]);
    }
    let listed: Vec<String> = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .map(|f| f.name)
        .collect();
    assert!(
        listed.contains(&pruned[0]),
        "the prune's file stays: {listed:?}"
    );
    assert!(listed.len() <= 8, "{listed:?}");
    let report = check::run(&fleet.open_full("check"), ReadData::All, &NoProgress).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Sets a value of `host`'s cache bookkeeping, as time passing would have.
fn set_meta(cache: &Path, key: &str, value: &str) {
    let conn = cache_db(cache);
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        [key, value],
    )
    .unwrap();
}

/// A key removal whose record was lost still stops the key: at once when the record was
/// damaged (it may have named the key), within a day when it was deleted (the warm
/// opening lists the key files once a day).
#[test]
fn a_removed_key_stops_working_even_without_its_record() {
    for damaged in [true, false] {
        let fleet = Fleet::new(5);
        let admin = fleet.open_full("admin");
        let second = admin
            .keys()
            .add(b"second", &KdfCost::INSECURE_FOR_TESTS)
            .unwrap();
        let open_with = |pw: &'static [u8]| {
            let backend: BackendRef = fleet.store.clone();
            Repository::open_for_backup(backend, &mut || Ok(pw.to_vec()), &fleet.cache("h"))
        };
        let src = fleet.dir.path().join("src-h");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), noise(1_000, 1)).unwrap();
        for _ in 0..2 {
            let opts = BackupOptions {
                source: Source::Paths(vec![src.clone()]),
                host: Some("h".into()),
                ..Default::default()
            };
            backup::run(&open_with(b"second").unwrap(), opts, &NoProgress).unwrap();
        }
        admin.keys().remove(&second).unwrap();
        let record = fleet.store.list(FileKind::Marks).unwrap().remove(0).name;
        match damaged {
            true => fleet
                .store
                .write(FileKind::Marks, &record, b"junk")
                .unwrap(),
            false => fleet.store.delete(FileKind::Marks, &record).unwrap(),
        }
        if !damaged {
            // Within the day: the warm opening does not know yet.
            let warm = requests(&fleet, || drop(open_with(b"second").unwrap()));
            assert!(
                !warm.iter().any(|(_, k, _)| *k == FileKind::Key),
                "{warm:?}"
            );
            let yesterday = chrono::Utc::now() - chrono::Duration::hours(25);
            set_meta(&fleet.cache("h"), "keys_listed", &yesterday.to_rfc3339());
        }
        match open_with(b"second") {
            Err(strata::Error::WrongPassword { .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a removed key still opens the repository (damaged: {damaged})"),
        }
    }
}

/// Junk written under the sentinel's name (by whoever holds the bucket, after rolling
/// it back) does not pass for it: the check compares its last bytes, and the backup reads
/// every index file instead of trusting its view.
#[test]
fn junk_under_the_sentinels_name_costs_a_full_read() {
    let fleet = Fleet::new(5);
    fleet.backup("b", &[("g", 1, 10_000)]);
    fleet.backup("a", &[("f", 2, 10_000)]);
    let before: Vec<String> = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .map(|f| f.name)
        .collect();
    fleet.backup("a", &[("f", 3, 10_000)]);
    let sentinel = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .map(|f| f.name)
        .find(|n| !before.contains(n))
        .expect("the index file a wrote last");
    // As long as the real file: only its bytes can tell.
    let size = fleet.store.read(FileKind::Index, &sentinel).unwrap().len();
    let junk = vec![7u8; size];
    fleet
        .store
        .write(FileKind::Index, &sentinel, &junk)
        .unwrap();
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("a", &[("f", 4, 10_000)]);
    });
    assert!(
        lists >= 1 && reads >= 2,
        "no full read: {reads} reads, {lists} listings"
    );
    // An unchanged sentinel costs its one ranged read.
    let (reads, lists, _) = fleet.cost(|| {
        fleet.backup("a", &[("f", 5, 10_000)]);
    });
    assert_eq!((reads, lists), (1, 0));
}

/// A long-lived handle (the WAL agent's) checks before each write that its repository is
/// still there, the same one, and still has the key file it was opened with.
#[test]
fn a_long_lived_handle_notices_a_removed_key_and_a_replaced_repository() {
    let fleet = Fleet::new(5);
    let admin = fleet.open_full("admin");
    let second = admin
        .keys()
        .add(b"second", &KdfCost::INSECURE_FOR_TESTS)
        .unwrap();
    let backend: BackendRef = fleet.store.clone();
    let held = Repository::open(backend, b"second", &fleet.cache("held")).unwrap();
    held.ensure_present().unwrap();
    // Its key file damaged: said so.
    fleet
        .store
        .write(FileKind::Key, &second.to_hex(), b"junk")
        .unwrap();
    assert!(matches!(
        held.ensure_present(),
        Err(strata::Error::Corrupt { .. })
    ));
    // Removed: the password no longer opens it.
    fleet.store.delete(FileKind::Key, &second.to_hex()).unwrap();
    match held.ensure_present() {
        Err(strata::Error::WrongPassword { .. }) => {}
        other => panic!("{other:?}"),
    }
    // Another repository in its place (deleted, created again): not this one.
    for kind in FileKind::ALL {
        for f in fleet.store.list(kind).unwrap() {
            fleet.store.delete(kind, &f.name).unwrap();
        }
    }
    assert!(matches!(
        held.ensure_present(),
        Err(strata::Error::NoRepository(_))
    ));
    let backend: BackendRef = fleet.store.clone();
    let config = Config::new(ChunkerParams::default(), 3);
    Repository::init(backend, b"second", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    match held.ensure_present() {
        Err(strata::Error::BadInput { reason, .. }) => {
            assert!(reason.contains("another repository"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The admin's handle, whose key file is still there, goes on.
    drop(admin);
}

/// A sentinel chosen from a listing (after a full read that wrote nothing) has its last
/// bytes learnt at its first check; junk of the same size under its name is caught after.
#[test]
fn a_sentinel_chosen_from_a_listing_is_checked_by_its_bytes_too() {
    let fleet = Fleet::new(5);
    fleet.backup("big", &[("f", 1, 3_000_000)]);
    fleet.backup("c", &[("g", 2, 1_000)]);
    let largest = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .max_by_key(|f| f.size)
        .unwrap();
    // As a full read that wrote nothing leaves it: the largest file, its bytes unknown.
    set_sentinel(&fleet.cache("c"), &largest.name, largest.size);
    // Its first check learns its bytes; the second compares them.
    for _ in 0..2 {
        let (reads, lists, _) = fleet.cost(|| drop(fleet.open("c")));
        assert_eq!((reads, lists), (1, 0));
    }
    let junk = vec![7u8; largest.size as usize];
    fleet
        .store
        .write(FileKind::Index, &largest.name, &junk)
        .unwrap();
    let (reads, lists, _) = fleet.cost(|| drop(fleet.open("c")));
    assert!(
        lists >= 1 && reads >= 2,
        "no full read: {reads} reads, {lists} listings"
    );
}

/// A record asking for every index file to be read again (a repair's) is obeyed although
/// the sentinel still stands.
#[test]
fn a_record_asking_for_a_full_read_gets_one() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("f", 1, 10_000)]);
    fleet.backup("a", &[("f", 2, 10_000)]);
    let admin = fleet.open_full("admin");
    let record = strata::MarkRecord {
        version: 1,
        time: chrono::Utc::now().to_rfc3339(),
        host: "repair".into(),
        packs: Vec::new(),
        reread: true,
        superseded: Vec::new(),
        keys: Vec::new(),
        forgotten: Vec::new(),
    };
    admin.save_file(FileKind::Marks, &record).unwrap();
    let (_, lists, _) = fleet.cost(|| drop(fleet.open("a")));
    assert_eq!(lists, 1, "every index file listed and read");
}

/// A warm index whose key copy does not open (written by an earlier version, or damaged):
/// the opening reads the key files, and the partial view still stands on its sentinel's
/// check.
#[test]
fn a_warm_index_without_its_key_copy_keeps_its_partial_view() {
    let fleet = Fleet::new(5);
    fleet.backup("b", &[("g", 1, 10_000)]);
    fleet.backup("a", &[("f", 2, 10_000)]);
    fleet.backup("a", &[("f", 3, 10_000)]);
    for copy in std::fs::read_dir(fleet.cache("a").join("keys")).unwrap() {
        std::fs::write(copy.unwrap().path(), b"an older cache's format").unwrap();
    }
    let (reads, lists, _) = fleet.cost(|| drop(fleet.open("a")));
    assert_eq!(
        (reads, lists),
        (1, 0),
        "the sentinel's check, no index listing"
    );
}

/// A sentinel a prune replaced moves to the largest file listed, with no alarm and no
/// full read; a small one gone with no record (its writer may have merged it) costs a
/// quiet full read; a large one gone so is an alarm.
#[test]
fn a_vanished_sentinel_alarms_only_when_nothing_explains_it() {
    let fleet = Fleet::new(5);
    fleet.backup("a", &[("f", 1, 10_000)]);
    fleet.backup("a", &[("f", 2, 10_000)]);
    let admin = fleet.open_full("admin");
    prune::run(&admin, &PruneOptions::default(), &NoProgress).unwrap();
    let mut warnings = Vec::new();
    let (reads, lists, _) = fleet.cost(|| warnings = fleet.open("a").take_warnings());
    assert_eq!(
        (reads, lists),
        (1, 1),
        "the sentinel's check, one listing for the next"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    // The prune's file (small) deleted with no record.
    let pruned = fleet.store.list(FileKind::Index).unwrap().remove(0);
    fleet.store.delete(FileKind::Index, &pruned.name).unwrap();
    fleet.backup("a", &[("f", 3, 10_000)]);
    let (_, lists, _) = fleet.cost(|| warnings = fleet.open("a").take_warnings());
    assert_eq!(lists, 0, "its own new file is its sentinel again");
    let own = fleet.store.list(FileKind::Index).unwrap().remove(0);
    // Said to be large (1 MiB) and gone with no record: an alarm, and a full read.
    set_sentinel(&fleet.cache("a"), &own.name, 1 << 20);
    fleet.store.delete(FileKind::Index, &own.name).unwrap();
    let (_, lists, _) = fleet.cost(|| warnings = fleet.open("a").take_warnings());
    assert_eq!(lists, 1);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("is gone and no mark record")),
        "{warnings:?}"
    );
    // Small and gone so: the same full read, without the alarm.
    fleet.backup("a", &[("f", 4, 10_000)]);
    let own = (fleet.store.list(FileKind::Index).unwrap().into_iter())
        .find(|f| f.size <= 256 << 10)
        .unwrap();
    set_sentinel(&fleet.cache("a"), &own.name, own.size);
    fleet.store.delete(FileKind::Index, &own.name).unwrap();
    let (_, lists, _) = fleet.cost(|| warnings = fleet.open("a").take_warnings());
    assert_eq!(lists, 1);
    assert!(warnings.is_empty(), "{warnings:?}");
}
