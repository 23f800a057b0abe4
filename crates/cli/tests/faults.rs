//! The engine against a backend that fails: at every write of a backup and every write or
//! delete of a prune, one operation fails. Whatever fails, the repository stays consistent
//! (check finds nothing), every snapshot that exists restores exactly, and a rerun once the
//! backend is healthy again completes. Library-level, on the in-memory backend wrapped in
//! the fault injector, so each of the many runs takes milliseconds.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::noise;
use strata::backend::faulty::{Fault, Faulty, Op};
use strata::backend::{BackendRef, FileKind, MemBackend};
use strata::backup::{self, BackupOptions, Source};
use strata::prune::{self, PruneOptions};
use strata::restore::{self, RestoreOptions};
use strata::ChunkerParams;
use strata::Config;
use strata::KdfCost;
use strata::NoProgress;
use strata::Repository;

const PASSWORD: &[u8] = b"faults";

/// A repository in memory, behind a fault injector; caches and sources in `dir`.
struct Lab {
    dir: tempfile::TempDir,
    backend: Arc<Faulty>,
    hosts: std::cell::Cell<u32>,
}

impl Lab {
    fn new() -> Lab {
        let mem: BackendRef = Arc::new(MemBackend::new());
        let backend = Arc::new(Faulty::new(mem));
        let config = Config::new(ChunkerParams::default(), 3);
        Repository::init(
            backend.clone(),
            PASSWORD,
            config,
            &KdfCost::INSECURE_FOR_TESTS,
        )
        .unwrap();
        Lab {
            dir: tempfile::tempdir().unwrap(),
            backend,
            hosts: Default::default(),
        }
    }

    /// The repository as a host with a cache of its own sees it.
    fn open(&self, host: &str) -> Repository {
        Repository::open(
            self.backend.clone(),
            PASSWORD,
            &self.dir.path().join(format!("cache-{host}")),
        )
        .unwrap()
    }

    /// The repository as a new machine sees it (nothing cached).
    fn fresh(&self) -> Repository {
        self.hosts.set(self.hosts.get() + 1);
        self.open(&format!("fresh-{}", self.hosts.get()))
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn backup(&self, repo: &Repository) -> strata::Result<backup::BackupReport> {
        backup::run(
            repo,
            BackupOptions {
                source: Source::Paths(vec![self.src()]),
                host: Some("lab".into()),
                ..Default::default()
            },
            &NoProgress,
        )
    }

    /// Restores `snap` (verified) into `target` under the lab; returns the report and
    /// where the source directory landed.
    fn restore(
        &self,
        repo: &Repository,
        snap: &strata::Snapshot,
        target: &str,
    ) -> (restore::RestoreReport, PathBuf) {
        let target = self.dir.path().join(target);
        let report = restore::run(
            repo,
            snap,
            &RestoreOptions {
                target: target.clone(),
                verify: true,
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        (report, target.join(self.src().strip_prefix("/").unwrap()))
    }

    /// Check finds nothing wrong, and every snapshot restores to exactly what its files
    /// held (`expected`: file name -> content, per snapshot time).
    fn assert_sound(&self, expected: &[(String, Files)]) {
        let repo = self.fresh();
        let report = strata::check::run(&repo, strata::check::ReadData::All, &NoProgress).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let snapshots = repo.snapshots().list().unwrap();
        for (id, snap) in &snapshots {
            let Some((_, files)) = expected.iter().find(|(t, _)| *t == snap.time) else {
                panic!("snapshot {id} at {} is none the test wrote", snap.time);
            };
            let target = format!("restore-{}", id.short());
            let (r, root) = self.restore(&repo, snap, &target);
            assert!(r.errors.is_empty(), "snapshot {id}: {:?}", r.errors);
            for (name, content) in files {
                assert_eq!(&fs::read(root.join(name)).unwrap(), content, "{name}");
            }
            fs::remove_dir_all(self.dir.path().join(&target)).unwrap();
        }
    }
}

/// Files by name, with their content.
type Files = Vec<(String, Vec<u8>)>;

/// Writes the source files; returns them.
fn write_files(src: &Path, seed: u64) -> Files {
    fs::create_dir_all(src.join("sub")).unwrap();
    let files = vec![
        ("a.bin".to_string(), noise(300_000, seed)),
        (
            "sub/b.txt".to_string(),
            "log line\n".repeat(2_000 + seed as usize).into_bytes(),
        ),
        ("c.bin".to_string(), noise(200_000, 7)),
    ];
    for (name, content) in &files {
        fs::write(src.join(name), content).unwrap();
    }
    files
}

const KINDS: [FileKind; 4] = [
    FileKind::Data,
    FileKind::Tree,
    FileKind::Index,
    FileKind::Snapshot,
];

#[test]
fn a_backup_that_fails_at_any_write_leaves_the_repository_sound() {
    let mut runs = 0;
    for kind in KINDS {
        for fault in [Fault::Fail, Fault::FailAfterWrite] {
            for nth in 1.. {
                let lab = Lab::new();
                let first = write_files(&lab.src(), 1);
                let repo = lab.open("a");
                let t1 = lab.backup(&repo).unwrap().snapshot.time;
                let second = write_files(&lab.src(), 2);
                lab.backend
                    .inject(Op::Write, Some(kind), nth, fault.clone());
                let outcome = lab.backup(&repo);
                if lab.backend.armed() == 1 {
                    // Fewer writes of this kind than `nth`: every boundary was tried.
                    outcome.unwrap();
                    break;
                }
                runs += 1;
                // A write that failed fails the backup; one whose answer was lost after
                // the snapshot itself was stored may leave that snapshot behind.
                let mut expected = vec![(t1.clone(), first.clone())];
                match outcome {
                    Err(_) => {}
                    Ok(r) => panic!("{kind} write {nth} ({fault:?}) failed, yet {r:?}"),
                }
                if let Some((_, s)) = repo
                    .snapshots()
                    .list()
                    .unwrap()
                    .into_iter()
                    .find(|(_, s)| s.time != t1)
                {
                    assert!(
                        matches!(fault, Fault::FailAfterWrite) && kind == FileKind::Snapshot,
                        "a snapshot was written by a backup whose {kind} write {nth} failed"
                    );
                    expected.push((s.time, second.clone()));
                }
                lab.assert_sound(&expected);
                // Healthy again: the rerun (from the same host, same cache) completes.
                lab.backend.heal();
                let t3 = lab.backup(&repo).unwrap().snapshot.time;
                expected.push((t3, second.clone()));
                lab.assert_sound(&expected);
            }
        }
    }
    assert!(runs >= 8, "only {runs} fault runs");
}

#[test]
fn a_prune_that_fails_at_any_write_or_delete_loses_nothing() {
    let mut runs = 0;
    for op in [Op::Write, Op::Delete] {
        for kind in [FileKind::Data, FileKind::Tree, FileKind::Index] {
            for nth in 1.. {
                let lab = Lab::new();
                write_files(&lab.src(), 1);
                let repo = lab.open("a");
                let old = lab.backup(&repo).unwrap();
                let files = write_files(&lab.src(), 2);
                let kept = lab.backup(&repo).unwrap();
                repo.snapshots().remove(&old.snapshot_id).unwrap();
                drop(repo);
                // Repack everything partly used, and delete at once: the most writes and
                // deletes a prune makes.
                let opts = PruneOptions {
                    max_unused: 0.0,
                    instant_delete: true,
                    ..Default::default()
                };
                lab.backend.inject(op, Some(kind), nth, Fault::Fail);
                let outcome = prune::run(&lab.open("a"), &opts, &NoProgress);
                if lab.backend.armed() == 1 {
                    outcome.unwrap();
                    break;
                }
                runs += 1;
                assert!(
                    outcome.is_err(),
                    "{op:?} {kind} {nth} failed, yet prune succeeded"
                );
                let expected = vec![(kept.snapshot.time.clone(), files.clone())];
                lab.assert_sound(&expected);
                lab.backend.heal();
                prune::run(&lab.open("a"), &opts, &NoProgress).unwrap();
                lab.assert_sound(&expected);
            }
        }
    }
    assert!(runs >= 6, "only {runs} fault runs");
}

#[test]
fn reads_cut_off_are_retried_blob_by_blob_and_a_lasting_outage_fails_loudly() {
    let lab = Lab::new();
    let files = write_files(&lab.src(), 1);
    let repo = lab.open("a");
    let snap = lab.backup(&repo).unwrap().snapshot;
    let restore_into = |name: &str| lab.restore(&repo, &snap, name);

    // One read cut off mid-way: the blobs it held are read again on their own.
    lab.backend
        .inject(Op::Read, Some(FileKind::Data), 1, Fault::CutAfter(1000));
    let (r, root) = restore_into("cut-once");
    assert_eq!(lab.backend.armed(), 0, "the cut happened");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.files as usize, files.len(), "{r:?}");
    let total: usize = files.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(r.bytes as usize, total, "{r:?}");
    for (name, content) in &files {
        assert_eq!(&fs::read(root.join(name)).unwrap(), content);
    }

    // Every data read failing: each file is named, and none is left looking complete.
    lab.backend
        .inject_from(Op::Read, Some(FileKind::Data), 1, Fault::Fail);
    let (r, root) = restore_into("outage");
    assert_eq!(r.damaged_files.len(), files.len(), "{r:?}");
    // The summary counts only what was restored exactly.
    assert_eq!((r.files, r.bytes), (0, 0), "{r:?}");
    for (name, _) in &files {
        assert!(!root.join(name).exists(), "{name} left in place");
        let mut marked = root.join(name).into_os_string();
        marked.push(".strata-damaged");
        assert!(Path::new(&marked).exists(), "{name} not marked");
    }

    // Back online: the same target restores whole.
    lab.backend.heal();
    let (r, root) = restore_into("outage");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for (name, content) in &files {
        assert_eq!(&fs::read(root.join(name)).unwrap(), content);
    }
}

#[test]
fn init_refuses_a_chunker_that_open_would_call_damaged() {
    use strata::backend::Backend;
    let mem = Arc::new(MemBackend::new());
    let config = Config::new(ChunkerParams::with_average(16), 3);
    let err =
        Repository::init(mem.clone(), PASSWORD, config, &KdfCost::INSECURE_FOR_TESTS).unwrap_err();
    assert!(
        matches!(
            err,
            strata::Error::BadInput {
                what: "chunker parameters",
                ..
            }
        ),
        "{err}"
    );
    assert!(!mem.exists().unwrap(), "a config was written");
    assert!(
        mem.list(FileKind::Key).unwrap().is_empty(),
        "a key was written"
    );
}

#[test]
fn the_tree_walk_goes_depth_first_and_skips_what_it_is_told_to() {
    use strata::walk::{TreeWalk, Visit};
    let lab = Lab::new();
    write_files(&lab.src(), 1);
    fs::create_dir_all(lab.src().join("sub/deeper")).unwrap();
    fs::write(lab.src().join("sub/deeper/d.txt"), b"d").unwrap();
    let repo = lab.open("a");
    let snap = lab.backup(&repo).unwrap().snapshot;
    let src = lab.src();
    let rel = src.strip_prefix("/").unwrap();
    let paths = |skip: Option<&str>| -> Vec<String> {
        let mut walk = TreeWalk::new(&repo, &snap.tree);
        let mut out = Vec::new();
        while let Some(v) = walk.next() {
            let Visit::Node { path, .. } = v else {
                panic!("damage in a sound snapshot");
            };
            let Ok(inside) = path.strip_prefix(rel) else {
                continue; // the directories above the source
            };
            let p = inside.display().to_string();
            if skip == Some(p.as_str()) {
                walk.skip_subtree();
            }
            out.push(p);
        }
        out
    };
    let all = paths(None);
    let expected = [
        "",
        "a.bin",
        "c.bin",
        "sub",
        "sub/b.txt",
        "sub/deeper",
        "sub/deeper/d.txt",
    ];
    assert_eq!(all, expected, "sorted names, parents before children");
    let skipped = paths(Some("sub"));
    assert_eq!(skipped, ["", "a.bin", "c.bin", "sub"]);
}

#[test]
fn cat_writes_a_file_in_order_with_a_read_per_pack_not_per_chunk() {
    let counting = Arc::new(Faulty::new(Arc::new(MemBackend::new())));
    let config = Config::new(ChunkerParams::default(), 3);
    Repository::init(
        counting.clone(),
        PASSWORD,
        config,
        &KdfCost::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = noise(2 << 20, 5);
    fs::write(src.join("big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    let repo = Repository::open(counting.clone(), PASSWORD, &dir.path().join("cache")).unwrap();
    let report = backup::run(
        &repo,
        BackupOptions {
            source: Source::Paths(vec![src.clone()]),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let snap = report.snapshot;
    let before = counting.count(Op::Read, Some(FileKind::Data));
    let mut out = Vec::new();
    let n = restore::cat_file(&repo, &snap, &src.join("big.bin"), &mut out).unwrap();
    assert_eq!(n, big.len() as u64);
    assert!(out == big, "cat gave other bytes");
    assert_eq!(
        counting.count(Op::Read, Some(FileKind::Data)) - before,
        1,
        "the file's {} chunks sit in one pack: one read",
        out.len() / (32 << 10)
    );
    for (path, what) in [
        (src.clone(), "a directory"),
        (src.join("link"), "a symlink"),
    ] {
        let err = restore::cat_file(&repo, &snap, &path, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, strata::Error::NotAFile { what: w, .. } if *w == what),
            "{err}"
        );
    }
}

/// Check and prune on repositories the test damages through the backend itself: check
/// names the damaged object, the files it hits and the fix; prune refuses to rewrite an
/// index it cannot read.
#[test]
fn check_and_prune_on_damaged_repositories() {
    use strata::backend::Backend;
    use strata::check::{self, Object, ReadData};
    let lab = Lab::new();
    write_files(&lab.src(), 1);
    let repo = lab.open("a");
    lab.backup(&repo).unwrap();
    let data = lab.backend.list(FileKind::Data).unwrap();
    assert_eq!(data.len(), 1, "one data pack");
    let pack = data[0].name.clone();
    let original = lab.backend.read(FileKind::Data, &pack).unwrap();

    // One flipped byte in the middle of the data pack: structure is fine, the data is not.
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    lab.backend.write(FileKind::Data, &pack, &flipped).unwrap();
    let structure = check::run(&lab.fresh(), ReadData::None, &NoProgress).unwrap();
    assert!(structure.problems.is_empty(), "{:?}", structure.problems);
    let full = check::run(&lab.fresh(), ReadData::All, &NoProgress).unwrap();
    let p = full
        .problems
        .iter()
        .find(|p| matches!(p.object, Object::Pack(id) if id.to_hex() == pack))
        .unwrap_or_else(|| panic!("the pack is not named: {:?}", full.problems));
    assert!(
        p.hits
            .iter()
            .any(|h| h.contains(".bin") || h.contains(".txt")),
        "no file named: {:?}",
        p.hits
    );
    assert_eq!(p.remedy, strata::Remedy::RereadPack);

    // The pack gone altogether: a structure check already says so, and how to go on.
    lab.backend.delete(FileKind::Data, &pack).unwrap();
    let gone = check::run(&lab.fresh(), ReadData::None, &NoProgress).unwrap();
    let p = gone
        .problems
        .iter()
        .find(|p| matches!(p.object, Object::Pack(_)))
        .unwrap_or_else(|| panic!("{:?}", gone.problems));
    assert!(
        p.reason.contains("missing from the backend"),
        "{}",
        p.reason
    );
    assert_eq!(p.remedy, strata::Remedy::RepairIndexThenSnapshots);
    lab.backend.write(FileKind::Data, &pack, &original).unwrap();

    // A damaged index file: prune stops before it rewrites anything.
    let index = lab.backend.list(FileKind::Index).unwrap();
    let name = &index[0].name;
    let mut bytes = lab.backend.read(FileKind::Index, name).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    lab.backend.write(FileKind::Index, name, &bytes).unwrap();
    let err = prune::run(&lab.fresh(), &PruneOptions::default(), &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("until the index is repaired"),
        "{err}"
    );
    assert_eq!(err.remedy(), Some(strata::Remedy::RepairIndex));
    assert_eq!(
        lab.backend.read(FileKind::Index, name).unwrap(),
        bytes,
        "prune touched the index"
    );
}

/// Source files for several data packs (16 MiB each); returns them.
fn write_big_files(src: &Path) -> Files {
    fs::create_dir_all(src).unwrap();
    let files: Files = (0..4)
        .map(|i| (format!("big{i}.bin"), noise(12 << 20, 100 + i)))
        .collect();
    for (name, content) in &files {
        fs::write(src.join(name), content).unwrap();
    }
    files
}

/// Bytes of data packs the repository holds.
fn data_bytes(lab: &Lab) -> u64 {
    use strata::backend::Backend;
    let listed = lab.backend.list(FileKind::Data).unwrap();
    listed.iter().map(|f| f.size).sum()
}

/// A backup killed at any write (every write after it fails, so nothing more reaches the
/// repository, as when the process dies) is resumed from another host: the rerun uploads
/// what the first run had not, plus at most the one pack whose index write was under way.
#[test]
fn a_backup_killed_at_any_write_is_resumed_elsewhere_without_uploading_again() {
    // A pack closes once it holds 16 MiB, so it may hold one chunk more.
    const PACK: u64 = 17 << 20;
    let one_uploader = |lab: &Lab, repo: &Repository| {
        backup::run(
            repo,
            BackupOptions {
                source: Source::Paths(vec![lab.src()]),
                host: Some("lab".into()),
                uploaders: 1,
                ..Default::default()
            },
            &NoProgress,
        )
    };
    let clean = Lab::new();
    write_big_files(&clean.src());
    let repo = clean.open("a");
    let writes_before = clean.backend.count(Op::Write, None);
    one_uploader(&clean, &repo).unwrap();
    let writes = clean.backend.count(Op::Write, None) - writes_before;
    let total = data_bytes(&clean);
    assert!(total > 2 * PACK, "{total} bytes: too few packs to test");

    let mut kills = 0;
    for k in 1..=writes {
        let lab = Lab::new();
        let files = write_big_files(&lab.src());
        let repo = lab.open("a");
        lab.backend.inject_from(Op::Write, None, k, Fault::Fail);
        let outcome = one_uploader(&lab, &repo);
        if lab.backend.armed() == 1 {
            // This run made fewer writes than the clean one (its last packs happened to be
            // indexed together): every boundary it has was tried.
            outcome.unwrap();
            continue;
        }
        assert!(
            outcome.is_err(),
            "killed at write {k}, yet the backup succeeded"
        );
        drop(repo);
        lab.backend.heal();
        let uploaded = data_bytes(&lab);
        let not_yet = total.saturating_sub(uploaded);
        // Another host, with a cache of its own, runs the next backup.
        let repo = lab.open("b");
        let t = one_uploader(&lab, &repo).unwrap().snapshot.time;
        let rerun = data_bytes(&lab) - uploaded;
        assert!(
            rerun <= not_yet + PACK,
            "killed at write {k} of {writes}: {uploaded} bytes were up, {not_yet} were not, \
             and the rerun uploaded {rerun}"
        );
        lab.assert_sound(&[(t, files)]);
        kills += 1;
    }
    assert!(kills >= 6, "only {kills} kills");
}

/// A backup asked to stop (SIGTERM in the CLI) uploads the pack in flight, indexes all it
/// uploaded, writes no snapshot and says what it saved; the rerun uploads only the rest.
#[test]
fn a_backup_asked_to_stop_saves_what_it_uploaded() {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct StopAfter<'a>(&'a AtomicBool, &'a Faulty);
    impl strata::Progress for StopAfter<'_> {
        fn advance(&self, _: u64) {
            if self.1.count(Op::Write, Some(FileKind::Data)) >= 2 {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let lab = Lab::new();
    let files = write_big_files(&lab.src());
    let repo = lab.open("a");
    let stop = AtomicBool::new(false);
    let outcome = backup::run(
        &repo,
        BackupOptions {
            source: Source::Paths(vec![lab.src()]),
            host: Some("lab".into()),
            uploaders: 1,
            cancel: Some(&stop),
            ..Default::default()
        },
        &StopAfter(&stop, &lab.backend),
    );
    let (packs, bytes) = match outcome {
        Err(strata::Error::Interrupted { packs, bytes }) => (packs, bytes),
        other => panic!("{other:?}"),
    };
    assert!(packs >= 2, "{packs} packs saved");
    assert!(repo.snapshots().list().unwrap().is_empty(), "no snapshot");
    let uploaded = data_bytes(&lab);
    assert!(
        bytes >= uploaded,
        "saved {bytes}, data packs hold {uploaded}"
    );
    // Everything uploaded is in the index: a new host finds it there.
    let repo = lab.open("b");
    let before = lab.backend.count(Op::Write, Some(FileKind::Data));
    let report = lab.backup(&repo).unwrap();
    let files_total: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    assert!(
        report.snapshot.summary.bytes_added <= files_total - (uploaded * 9 / 10),
        "the rerun added {} of {files_total} bytes though {uploaded} were saved",
        report.snapshot.summary.bytes_added
    );
    assert!(lab.backend.count(Op::Write, Some(FileKind::Data)) > before);
    lab.assert_sound(&[(report.snapshot.time, files)]);
}

/// A password change that fails at its write or at its delete (the two operations it
/// makes, in that order): the repository opens with the old password or the new one, never
/// with neither, and the change done again completes.
#[test]
fn a_password_change_that_fails_anywhere_locks_nobody_out() {
    for (op, fault) in [
        (Op::Write, Fault::Fail),
        (Op::Write, Fault::FailAfterWrite),
        (Op::Delete, Fault::Fail),
        (Op::Delete, Fault::FailAfterWrite),
    ] {
        let lab = Lab::new();
        let repo = lab.open("a");
        lab.backend
            .inject(op, Some(FileKind::Key), 1, fault.clone());
        assert!(
            repo.keys()
                .change_password(b"new", &KdfCost::INSECURE_FOR_TESTS)
                .is_err(),
            "{op:?} {fault:?}"
        );
        lab.backend.heal();
        let opens = |pw: &[u8]| {
            Repository::open(lab.backend.clone(), pw, &lab.dir.path().join("c2")).is_ok()
        };
        assert!(
            opens(PASSWORD) || opens(b"new"),
            "{op:?} {fault:?}: locked out"
        );
        // Done again with whichever password opens it, the change completes.
        let (pw, again): (&[u8], bool) = if opens(PASSWORD) {
            (PASSWORD, true)
        } else {
            (b"new", false)
        };
        let repo = Repository::open(lab.backend.clone(), pw, &lab.dir.path().join("c3")).unwrap();
        if again {
            repo.keys()
                .change_password(b"new", &KdfCost::INSECURE_FOR_TESTS)
                .unwrap();
        }
        assert!(opens(b"new"));
    }
}

/// A forget that fails at any of its snapshot deletions removes some snapshots and keeps
/// the rest whole; done again it completes.
#[test]
fn a_forget_that_fails_at_any_delete_leaves_the_rest_whole() {
    use strata::retention::{self, ForgetJob, Policy};
    for nth in 1..=3 {
        let lab = Lab::new();
        let repo = lab.open("a");
        let mut expected = Vec::new();
        for seed in 1..=4 {
            let files = write_files(&lab.src(), seed);
            expected.push((lab.backup(&repo).unwrap().snapshot.time, files));
        }
        let job = ForgetJob {
            set: None,
            policy: Policy {
                last: 1,
                ..Default::default()
            },
        };
        lab.backend
            .inject(Op::Delete, Some(FileKind::Snapshot), nth, Fault::Fail);
        let filter = strata::SnapshotFilter::default();
        assert!(retention::forget(&repo, std::slice::from_ref(&job), &filter, false).is_err());
        lab.backend.heal();
        let left: Vec<String> = lab
            .fresh()
            .snapshots()
            .list()
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.time)
            .collect();
        assert_eq!(left.len(), 4 - (nth as usize - 1), "delete {nth} failed");
        lab.assert_sound(
            &expected
                .iter()
                .filter(|(t, _)| left.contains(t))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let repo = lab.fresh();
        retention::forget(&repo, &[job], &filter, false).unwrap();
        assert_eq!(repo.snapshots().list().unwrap().len(), 1);
        lab.assert_sound(&expected[3..]);
    }
}

/// Hostile pass (issue 25): every damaged index file made the opening host list every
/// pack again (20,000 junk files in a local repository: a minute per fresh cache) and say a
/// warning of its own. Now: one listing, one warning with the count, and every file
/// remembered so that the next opening reads none of them again.
#[test]
fn many_damaged_index_files_cost_one_listing_and_one_warning() {
    use strata::backend::Backend;
    let lab = Lab::new();
    let files = write_files(&lab.src(), 3);
    let snap = lab.backup(&lab.open("a")).unwrap().snapshot;
    for i in 0..40u64 {
        let name = hex::encode(blake3::hash(&i.to_le_bytes()).as_bytes());
        lab.backend.write(FileKind::Index, &name, b"junk").unwrap();
    }
    let (lists, reads) = (
        lab.backend.count(Op::List, Some(FileKind::Data)),
        lab.backend.count(Op::Read, Some(FileKind::Index)),
    );
    let repo = lab.fresh();
    assert_eq!(lab.backend.count(Op::List, Some(FileKind::Data)) - lists, 1);
    assert_eq!(
        lab.backend.count(Op::Read, Some(FileKind::Index)) - reads,
        41
    );
    let warnings = repo.take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("40 index files cannot be read"),
        "{warnings:?}"
    );
    let (r, root) = lab.restore(&repo, &snap, "r");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for (name, content) in &files {
        assert_eq!(&fs::read(root.join(name)).unwrap(), content);
    }
    // The same cache again: nothing read, nothing said.
    drop(repo);
    let reads = lab.backend.count(Op::Read, Some(FileKind::Index));
    let repo = lab.open(&format!("fresh-{}", lab.hosts.get()));
    assert_eq!(lab.backend.count(Op::Read, Some(FileKind::Index)), reads);
    assert!(repo.take_warnings().is_empty());
}
