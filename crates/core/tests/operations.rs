//! The operations through the library on the in-memory backend, where the CLI's tests
//! cannot reach cheaply: prune's repack and its report, repairs after a lost pack, which
//! packs a `check --read-data` subset reads, drills and the audit records they leave for a
//! metadata-only reader. (Each asserts what a mutant of that code would change.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::backend::{BackendRef, FileKind, MemBackend};
use strata::backup::{self, BackupOptions, Source};
use strata::check::{self, ReadData};
use strata::drill::{self, DrillOptions};
use strata::prune::{self, PruneOptions};
use strata::repair;
use strata::restore::{self, RestoreOptions};
use strata::{ChunkerParams, Config, KdfCost, NoProgress, Repository, Snapshot, SnapshotId};

mod common;
use common::noise;

struct Fixture {
    dir: tempfile::TempDir,
    store: BackendRef,
    repo: Repository,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = Arc::new(MemBackend::new());
        let config = Config::new(ChunkerParams::default(), 3);
        Repository::init(store.clone(), b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
        let repo = Repository::open(store.clone(), b"pw", &dir.path().join("cache")).unwrap();
        Fixture { dir, store, repo }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A backup of `src` holding `files` (name, seed, size).
    fn backup(&self, src: &str, files: &[(&str, u64, usize)]) -> (SnapshotId, Snapshot) {
        let src = self.path(src);
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        for (name, seed, size) in files {
            std::fs::write(src.join(name), noise(*size, *seed)).unwrap();
        }
        let opts = BackupOptions {
            source: Source::Paths(vec![src]),
            ..Default::default()
        };
        let r = backup::run(&self.repo, opts, &NoProgress).unwrap();
        (r.snapshot_id, r.snapshot)
    }

    fn packs(&self) -> Vec<String> {
        let mut p: Vec<_> = (self.store.list(FileKind::Data).unwrap().into_iter())
            .map(|f| f.name)
            .collect();
        p.sort();
        p
    }

    /// Restores `snap` and returns where `src`'s files landed.
    fn restore(&self, snap: &Snapshot, src: &str, to: &str) -> PathBuf {
        let target = self.path(to);
        let opts = RestoreOptions {
            target: target.clone(),
            verify: true,
            ..Default::default()
        };
        let r = restore::run(&self.repo, snap, &opts, &NoProgress).unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        target.join(self.path(src).strip_prefix("/").unwrap())
    }
}

fn same(path: &Path, seed: u64, size: usize) -> bool {
    std::fs::read(path).is_ok_and(|b| b == noise(size, seed))
}

/// Two files share one pack; the snapshot that alone held one of them goes. Prune copies
/// the other's blobs into a new pack (keeping them readable) and deletes the old; the
/// report says so, a dry run and a run with a grace period say what they plan.
#[test]
fn prune_repacks_what_is_still_used_and_reports_it() {
    let f = Fixture::new();
    let (first, snap) = f.backup("src", &[("kept", 1, 300_000), ("gone", 2, 300_000)]);
    // What the saver counted: random bytes do not compress, trees are no data.
    let s = &snap.summary;
    assert_eq!(s.data_added, 600_000, "{s:?}");
    assert!(s.data_stored >= 600_000 && s.data_stored < 610_000, "{s:?}");
    assert!(
        s.bytes_added > s.data_added && s.bytes_stored > s.data_stored,
        "{s:?}"
    );
    let (_, second) = f.backup("src", &[("kept", 1, 300_000)]);
    assert_eq!(f.packs().len(), 1, "both files in one pack");
    let old = f.packs();
    f.repo.snapshots().remove(&first).unwrap();

    let dry = PruneOptions {
        max_unused: 0.0,
        dry_run: true,
        instant_delete: true,
        ..Default::default()
    };
    let planned = prune::run(&f.repo, &dry, &NoProgress).unwrap();
    // One data pack and a tree pack per backup; the first's tree pack goes whole.
    assert_eq!(planned.packs, 3, "{planned:?}");
    assert_eq!(planned.packs_repacked, 1, "{planned:?}");
    assert_eq!(planned.packs_deleted, 2, "{planned:?}");
    assert!(planned.bytes_repacked >= 300_000, "{planned:?}");
    assert!(planned.bytes_freed >= 300_000, "{planned:?}");
    assert_eq!(f.packs(), old, "a dry run changed packs");

    // With a grace period the old pack is marked, not deleted yet.
    let graced = PruneOptions {
        max_unused: 0.0,
        ..Default::default()
    };
    let marked = prune::run(&f.repo, &graced, &NoProgress).unwrap();
    assert_eq!(marked.packs_repacked, 1, "{marked:?}");
    assert_eq!(marked.packs_marked, 1, "{marked:?}");
    assert_eq!(marked.packs_waiting, 2, "{marked:?}");
    assert_eq!(marked.packs_deleted, 0, "{marked:?}");
    assert!(marked.bytes_marked > 0, "{marked:?}");
    assert_eq!(f.packs().len(), 2, "the copy beside the old pack");

    let now = PruneOptions {
        instant_delete: true,
        ..Default::default()
    };
    let done = prune::run(&f.repo, &now, &NoProgress).unwrap();
    // The old data pack and the tree pack marked before.
    assert_eq!(done.packs_deleted, 2, "{done:?}");
    let left = f.packs();
    assert_eq!(left.len(), 1);
    assert_ne!(left, old);
    let audit = check::run(&f.repo, ReadData::All, &NoProgress).unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    let at = f.restore(&second, "src", "restored");
    assert!(same(&at.join("kept"), 1, 300_000));
    assert!(!at.join("gone").exists());
}

/// A pack lost: `repair_index` drops its blobs, `repair_snapshots` writes a snapshot
/// without the file they held (a dry run writes nothing), and that snapshot restores the
/// rest.
#[test]
fn repairs_after_a_lost_pack_keep_what_is_left() {
    let f = Fixture::new();
    f.backup("src", &[("a", 1, 200_000)]);
    let before = f.packs();
    let (damaged, _) = f.backup("src", &[("a", 1, 200_000), ("b", 2, 200_000)]);
    let lost: Vec<_> = f
        .packs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(lost.len(), 1);
    f.store.delete(FileKind::Data, &lost[0]).unwrap();

    // Another host that saw the damaged snapshot takes its replacement for no rollback.
    let other = Repository::open(f.store.clone(), b"pw", &f.path("other-cache")).unwrap();
    assert_eq!(other.snapshots().list().unwrap().len(), 2);

    let index = repair::repair_index(&f.repo, false, &NoProgress).unwrap();
    assert_eq!(index.packs_missing, lost);
    let dry = repair::repair_snapshots(&f.repo, false, true, &NoProgress).unwrap();
    assert_eq!(dry.repaired.len(), 1);
    assert!(dry.repaired[0].new.is_none());
    assert_eq!(f.repo.snapshots().list().unwrap().len(), 2);

    let done = repair::repair_snapshots(&f.repo, true, false, &NoProgress).unwrap();
    assert_eq!(done.snapshots, 2);
    assert_eq!(done.repaired.len(), 1, "{done:?}");
    let r = &done.repaired[0];
    assert_eq!(r.original, damaged.to_hex());
    assert!(
        r.lost.len() == 1 && r.lost[0].ends_with("/b"),
        "{:?}",
        r.lost
    );
    assert_eq!(done.removed, [damaged.to_hex()]);
    assert_eq!(other.snapshots().list().unwrap().len(), 2);
    assert_eq!(other.snapshots().vanished().unwrap(), []);
    let snaps = f.repo.snapshots().list().unwrap();
    assert_eq!(snaps.len(), 2);
    let (_, fixed) = snaps
        .iter()
        .find(|(id, _)| Some(id.to_hex()) == r.new)
        .expect("the new snapshot");
    assert_eq!(fixed.repaired.as_ref().unwrap().from, damaged);
    assert!(fixed.tags.iter().any(|t| t == "repaired"));
    let at = f.restore(fixed, "src", "restored");
    assert!(same(&at.join("a"), 1, 200_000));
    assert!(!at.join("b").exists());
    let audit = check::run(&f.repo, ReadData::All, &NoProgress).unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    // Run again: nothing left to repair.
    let again = repair::repair_snapshots(&f.repo, true, false, &NoProgress).unwrap();
    assert!(again.repaired.is_empty(), "{again:?}");
}

/// A pack damaged in place (same size): only a read of its bytes finds it; of the two
/// halves of a subset read, exactly one does.
#[test]
fn read_data_reads_the_packs_its_subset_names() {
    let f = Fixture::new();
    f.backup("src", &[("a", 1, 100_000)]);
    f.backup("other", &[("b", 2, 100_000)]);
    let packs = f.packs();
    assert_eq!(packs.len(), 2);
    let victim = &packs[0];
    let mut bytes = f.store.read(FileKind::Data, victim).unwrap();
    bytes[100] ^= 1;
    f.store.write(FileKind::Data, victim, &bytes).unwrap();

    let found = |read: ReadData| {
        let r = check::run(&f.repo, read, &NoProgress).unwrap();
        (
            r.problems.iter().any(|p| {
                format!("{:?}", p.object).contains(victim.as_str())
                    || p.reason.contains(victim.as_str())
            }),
            r.data_packs_read,
        )
    };
    assert_eq!(found(ReadData::None), (false, 0));
    assert_eq!(found(ReadData::All), (true, 2));
    let halves = [
        found(ReadData::Subset { n: 1, m: 2 }),
        found(ReadData::Subset { n: 2, m: 2 }),
    ];
    assert_eq!(
        halves.iter().filter(|(hit, _)| *hit).count(),
        1,
        "{halves:?}"
    );
    assert_eq!(
        halves.iter().map(|(_, n)| n).sum::<usize>(),
        2,
        "{halves:?}"
    );
}

/// A full drill restores every byte into a scratch directory it removes again; a sample
/// restores fewer files; both leave records a metadata-only reader sees.
#[test]
fn drills_restore_all_or_a_sample_and_leave_records() {
    let f = Fixture::new();
    let files: Vec<(String, u64, usize)> = (0..40).map(|i| (format!("f{i}"), i, 5_000)).collect();
    let refs: Vec<(&str, u64, usize)> =
        files.iter().map(|(n, s, z)| (n.as_str(), *s, *z)).collect();
    let (id, snap) = f.backup("src", &refs);
    let scratch = f.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let run_verified = |sample, verify: Option<&str>| {
        let opts = DrillOptions {
            sample,
            scratch: scratch.clone(),
            cold: None,
            verify: verify.map(|c| drill::VerifyCommand {
                command: c.into(),
                timeout: std::time::Duration::from_secs(60),
            }),
            recreate: Default::default(),
            stop: None,
        };
        drill::run(&f.repo, &id, &snap, &opts, &NoProgress).unwrap()
    };
    let run = |sample| run_verified(sample, None);
    let full = run(1.0);
    assert!(full.errors.is_empty(), "{:?}", full.errors);
    assert!(full.drill.passed() && full.drill.verify.is_none());
    // What a bare machine reads first, and the classes of the packs it needs.
    assert!(full.drill.index_bytes > 0);
    let classes = &full.drill.data_classes;
    assert_eq!(classes.len(), 1, "{classes:?}");
    assert_eq!(classes[0].class, "STANDARD");
    assert!(
        classes[0].packs > 0 && classes[0].bytes > 100_000,
        "{classes:?}"
    );
    // The operator's check runs in the restored copy; its failure fails the drill.
    let ok = run_verified(1.0, Some("find . -name f39 | grep -q ."));
    let v = ok.drill.verify.as_ref().unwrap();
    assert_eq!((v.exit_code, ok.drill.passed()), (Some(0), true), "{v:?}");
    let bad = run_verified(1.0, Some("echo missing >&2; exit 7"));
    let v = bad.drill.verify.as_ref().unwrap();
    assert_eq!((v.exit_code, bad.drill.passed()), (Some(7), false));
    assert_eq!(v.output_tail, "missing\n");
    assert_eq!(bad.drill.errors, 0, "the bytes were fine");
    assert_eq!(full.drill.files, 40);
    assert_eq!(full.drill.bytes, 200_000);
    assert_eq!(full.drill.snapshot_bytes, 200_000);
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "left behind"
    );
    let part = run(0.25);
    assert!(
        part.drill.files > 0 && part.drill.files < 40,
        "{}",
        part.drill.files
    );
    assert_eq!(part.drill.bytes, part.drill.files * 5_000);
    assert_eq!(part.drill.snapshot_bytes, 200_000);
    assert!(drill::run(
        &f.repo,
        &id,
        &snap,
        &DrillOptions {
            sample: 0.0,
            scratch: scratch.clone(),
            cold: None,
            verify: None,
            recreate: Default::default(),
            stop: None,
        },
        &NoProgress
    )
    .is_err());

    // What a monitor opening the repository for metadata only sees.
    check::run(&f.repo, ReadData::All, &NoProgress).unwrap();
    // (The cache the full repository keeps: coverage is over the packs it knows.)
    let meta = Repository::open_metadata(
        f.store.clone(),
        &mut || Ok(b"pw".to_vec()),
        &f.path("cache"),
    )
    .unwrap();
    let records = meta.audit_records().unwrap();
    assert!(records.len() >= 3, "{records:?}");
    let coverage = meta
        .coverage(&records, chrono::Local::now().fixed_offset())
        .unwrap();
    // One data pack and one tree pack, both read by the check.
    assert_eq!(
        (coverage.packs, coverage.verified_recently),
        (2, 2),
        "{coverage:?}"
    );
    assert!(coverage.last_check.is_some(), "{coverage:?}");
    // A directory has no bucket lifecycle rules to ask about.
    assert!(meta.lifecycle_dangers(None).unwrap().is_none());
}

/// A set keeps its last 12 drills, and always its last passing one: a run of failures
/// must not erase the evidence its drill interval and RTO are judged by. Other sets' drills
/// are neither counted nor touched.
#[test]
fn drill_records_keep_the_last_passing_one() {
    use strata::audit::{self, Audit, Drill, VerifyRun};
    let f = Fixture::new();
    let drill = |set: &str, minute: u32, passed: bool| Drill {
        version: 1,
        time: format!("2026-12-06T10:{minute:02}:00Z"),
        host: "h".into(),
        set: Some(set.into()),
        snapshot: strata::SnapshotId([1; 32]),
        sample: 1.0,
        files: 1,
        bytes: 1,
        duration_secs: 1.0,
        snapshot_bytes: 1,
        projected_secs: 1.0,
        errors: 0,
        verify: Some(VerifyRun {
            command: "smoke".into(),
            exit_code: Some(if passed { 0 } else { 1 }),
            outcome: String::new(),
            output_tail: String::new(),
            duration_secs: 0.5,
        }),
        index_bytes: 0,
        data_classes: vec![],
    };
    audit::record_drill(&f.repo, drill("other", 0, true)).unwrap();
    audit::record_drill(&f.repo, drill("kb", 1, true)).unwrap();
    for minute in 2..20 {
        audit::record_drill(&f.repo, drill("kb", minute, false)).unwrap();
    }
    let kb: Vec<Drill> = audit::load(&f.repo)
        .unwrap()
        .into_iter()
        .filter_map(|(_, a)| match a {
            Audit::Drill(d) if d.set.as_deref() == Some("kb") => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(kb.len(), 12, "{kb:?}");
    assert_eq!(kb.iter().filter(|d| d.passed()).count(), 1);
    assert!(
        kb.iter().any(|d| d.time.ends_with("10:19:00Z")),
        "the newest stays"
    );
    assert!(
        !kb.iter().any(|d| d.time.ends_with("10:08:00Z")),
        "old failures go"
    );
    let by = audit::drills_by_lineage(&audit::load(&f.repo).unwrap(), |_| None);
    assert_eq!(by.len(), 2, "the other set's drill stays");
    let line = &by[&strata::Lineage::Set("kb".into())];
    assert!(line.first().unwrap().passed(), "oldest first");
    assert!(line.windows(2).all(|w| w[0].time <= w[1].time));
    // A new passing drill no longer needs the old one kept.
    audit::record_drill(&f.repo, drill("kb", 30, true)).unwrap();
    let records = audit::load(&f.repo).unwrap();
    let line = &audit::drills_by_lineage(&records, |_| None)[&strata::Lineage::Set("kb".into())];
    assert_eq!(line.len(), 12);
    assert_eq!(line.iter().filter(|d| d.passed()).count(), 1, "{line:?}");
}

/// The warnings about damage skipped go where the metadata reader says.
#[test]
fn a_metadata_reader_hears_of_a_damaged_snapshot() {
    let f = Fixture::new();
    f.backup("src", &[("a", 1, 1_000)]);
    let (bad, _) = f.backup("src", &[("a", 1, 1_000), ("b", 2, 10)]);
    f.store
        .write(FileKind::Snapshot, &bad.to_hex(), b"junk")
        .unwrap();
    let meta = Repository::open_metadata(
        f.store.clone(),
        &mut || Ok(b"pw".to_vec()),
        &f.path("meta-cache"),
    )
    .unwrap();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heard.clone();
    meta.set_warning_sink(Box::new(move |m| h.lock().unwrap().push(m.to_string())));
    assert_eq!(meta.snapshots().list().unwrap().len(), 1);
    let heard = heard.lock().unwrap();
    assert!(
        heard.iter().any(|m| m.contains(&bad.to_hex()[..8])),
        "{heard:?}"
    );
}

/// Issue 31 (hostile pass): an object store takes writes into a prefix whose repository
/// was deleted mid-backup; the backup then reported a snapshot nobody could read, exit 0.
/// Now the snapshot's write is followed by a look at the config: gone means no repository.
#[test]
fn a_backup_into_a_repository_deleted_meanwhile_fails_as_no_repository() {
    let f = Fixture::new();
    let (_, snap) = f.backup("src", &[("a", 1, 10_000)]);
    f.store.delete(FileKind::Config, "config").unwrap();
    let e = f.repo.snapshots().write(&snap).unwrap_err();
    assert!(
        matches!(e, strata::Error::NoRepository(_)),
        "{e} should say there is no repository"
    );
}
