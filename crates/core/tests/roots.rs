//! A toy application on the public API: a "notes" archive that keeps each note's text as
//! blobs under a root record of its own (format-spec §15). Prune keeps what its records
//! name and frees what they no longer do; check verifies its blobs and names a damaged
//! record. Nothing in the library knows what a note is.

use std::sync::Arc;

use strata::backend::{BackendRef, FileKind, MemBackend};
use strata::check::{self, Object, ReadData};
use strata::prune::{self, PruneOptions};
use strata::{ChunkerParams, Config, KdfCost, NoProgress, Repository, Root};

const NAMESPACE: &str = "toy.notes";

/// The toy application's own record, in the root's payload.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Note {
    title: String,
    pieces: usize,
}

fn repo(store: &BackendRef, cache: &std::path::Path) -> Repository {
    Repository::open(store.clone(), b"pw", cache).unwrap()
}

/// Stores a note: its pieces as blobs, then the record naming them (write order).
fn save_note(repo: &Repository, title: &str, pieces: &[&[u8]]) {
    let ids = repo.store_blobs(pieces).unwrap();
    let mut payload = Vec::new();
    let note = Note {
        title: title.into(),
        pieces: pieces.len(),
    };
    ciborium::into_writer(&note, &mut payload).unwrap();
    repo.write_root(&Root::new(NAMESPACE, title, ids, payload).unwrap())
        .unwrap();
}

fn read_note(repo: &Repository, title: &str) -> Option<Vec<u8>> {
    let root = repo.root(NAMESPACE, title).unwrap()?;
    let note: Note = ciborium::from_reader(&root.payload[..]).unwrap();
    assert_eq!(note.pieces, root.blobs.len());
    Some(
        root.blobs
            .iter()
            .flat_map(|id| repo.index().read(id).unwrap())
            .collect(),
    )
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn prune_now(repo: &Repository) -> prune::PruneReport {
    let opts = PruneOptions {
        instant_delete: true,
        max_unused: 0.0,
        ..Default::default()
    };
    prune::run(repo, &opts, &NoProgress).unwrap()
}

#[test]
fn a_toy_application_keeps_its_blobs_through_prune_and_check_verifies_them() {
    let dir = tempfile::tempdir().unwrap();
    let store: BackendRef = Arc::new(MemBackend::new());
    let config = Config::new(ChunkerParams::default(), 3);
    Repository::init(store.clone(), b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    let repo = repo(&store, &dir.path().join("cache"));
    assert!(repo.has_roots());

    let (a, b) = (noise(300_000, 1), noise(200_000, 2));
    save_note(&repo, "kept", &[&a, b"a small piece"]);
    save_note(&repo, "dropped", &[&b]);
    assert_eq!(repo.roots(Some(NAMESPACE)).unwrap().len(), 2);
    assert!(repo.roots(Some("toy.other")).unwrap().is_empty());
    let found: Vec<Option<String>> = repo
        .roots_of(NAMESPACE, &["dropped", "never", "kept"])
        .into_iter()
        .map(|r| r.unwrap().map(|root| root.key))
        .collect();
    assert_eq!(found, [Some("dropped".into()), None, Some("kept".into())]);

    // No snapshot names any of it: only the records keep it.
    prune_now(&repo);
    let mut want = a.clone();
    want.extend_from_slice(b"a small piece");
    assert_eq!(read_note(&repo, "kept").unwrap(), want);
    assert_eq!(read_note(&repo, "dropped").unwrap(), b);

    // A record removed: its blobs go at the next prune, the other's stay.
    let gone = repo.root(NAMESPACE, "dropped").unwrap().unwrap().blobs;
    repo.remove_root(NAMESPACE, "dropped").unwrap();
    let report = prune_now(&repo);
    assert!(
        report.packs_deleted + report.packs_repacked > 0,
        "{report:?}"
    );
    let repo = self::repo(&store, &dir.path().join("cache-2"));
    assert!(repo.index().read(&gone[0]).is_err(), "freed");
    assert_eq!(read_note(&repo, "kept").unwrap(), want);
    assert_eq!(read_note(&repo, "dropped"), None);
    let checked = check::run(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(checked.roots, 1);

    // A lost pack under a record: check names the blobs, as it does a snapshot's.
    for f in store.list(FileKind::Data).unwrap() {
        store.delete(FileKind::Data, &f.name).unwrap();
    }
    let repo = self::repo(&store, &dir.path().join("cache-3"));
    let checked = check::run(&repo, ReadData::None, &NoProgress).unwrap();
    assert!(
        checked
            .problems
            .iter()
            .any(|p| matches!(p.object, Object::Pack(_) | Object::Blob(_))),
        "{:?}",
        checked.problems
    );
}

#[test]
fn a_record_under_another_records_name_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store: BackendRef = Arc::new(MemBackend::new());
    let config = Config::new(ChunkerParams::default(), 3);
    Repository::init(store.clone(), b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    let repo = repo(&store, &dir.path().join("cache"));
    save_note(&repo, "one", &[b"first"]);
    save_note(&repo, "two", &[b"second"]);
    // Whoever holds the bucket copies one record over the other's name.
    let files = store.list(FileKind::Root).unwrap();
    let (x, y) = (&files[0].name, &files[1].name);
    let bytes = store.read(FileKind::Root, x).unwrap();
    store.write(FileKind::Root, y, &bytes).unwrap();
    assert!(repo.root(NAMESPACE, "one").is_err() || repo.root(NAMESPACE, "two").is_err());
    let checked = check::run(&repo, ReadData::None, &NoProgress).unwrap();
    assert!(
        checked
            .problems
            .iter()
            .any(|p| matches!(p.object, Object::Root(_)) && p.reason.contains("another name")),
        "{:?}",
        checked.problems
    );
    // Hostile pass (issue 26): a file that is no repository file (its name is not 64 hex
    // digits) neither blocks prune nor counts; an oversized one is damage, not read.
    store.delete(FileKind::Root, x).unwrap();
    store.delete(FileKind::Root, y).unwrap();
    save_note(&repo, "three", &[b"third"]);
    store.write(FileKind::Root, "notahash", b"junk").unwrap();
    // Nor does another spelling of a real record's name (upper-case hex): check skipped
    // it, and prune read it and failed for good.
    let three = store.list(FileKind::Root).unwrap();
    let three = three.iter().find(|f| f.name != "notahash").unwrap();
    let upper = three.name.to_ascii_uppercase();
    store
        .write(FileKind::Root, &upper, b"not the record")
        .unwrap();
    let checked = check::run(&repo, ReadData::None, &NoProgress).unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(repo.roots(Some(NAMESPACE)).unwrap().len(), 1);
    prune_now(&repo);
    assert_eq!(read_note(&repo, "three").unwrap(), b"third");
    let big = format!("{:064x}", 7);
    store
        .write(
            FileKind::Root,
            &big,
            &vec![0; strata::MAX_ROOT_FILE as usize + 1],
        )
        .unwrap();
    let checked = check::run(&repo, ReadData::None, &NoProgress).unwrap();
    assert!(
        checked
            .problems
            .iter()
            .any(|p| p.reason.contains("more than a root record")),
        "{:?}",
        checked.problems
    );
    let e = prune::run(&repo, &PruneOptions::default(), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("more than a root record"), "{e}");

    // The library refuses a namespace of the wrong shape, and root records in a repository
    // of an older format.
    assert!(Root::new("Toy/Notes", "k", vec![], vec![]).is_err());
    let old_store: BackendRef = Arc::new(MemBackend::new());
    let mut old = Config::new(ChunkerParams::default(), 3);
    old.version = 3;
    Repository::init(old_store.clone(), b"pw", old, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    let old_repo = self::repo(&old_store, &dir.path().join("old-cache"));
    let e = old_repo
        .write_root(&Root::new(NAMESPACE, "k", vec![], vec![]).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("version 4"), "{e}");
}

/// The toy application's own check: a note must hold as many pieces as its record says.
struct NoteCheck;

impl check::AppCheck for NoteCheck {
    fn namespace(&self) -> &str {
        NAMESPACE
    }

    fn counted(&self) -> &str {
        "notes"
    }

    fn check(
        &self,
        _repo: &Repository,
        roots: Vec<(Object, Root)>,
        _snapshots: &[(strata::SnapshotId, strata::Snapshot)],
    ) -> strata::Result<check::AppFindings> {
        let mut found = check::AppFindings::default();
        for (object, root) in roots {
            assert_eq!(root.namespace, NAMESPACE, "given only its own namespace");
            found.records += 1;
            let note: Note = ciborium::from_reader(&root.payload[..]).unwrap();
            if note.pieces != root.blobs.len() {
                found.problems.push(check::problem(
                    object,
                    format!("{} says {} pieces", note.title, note.pieces),
                    strata::Remedy::StoreRecordAgain,
                ));
            }
        }
        Ok(found)
    }
}

#[test]
fn an_application_registers_its_own_check_of_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let store: BackendRef = Arc::new(MemBackend::new());
    let config = Config::new(ChunkerParams::default(), 3);
    Repository::init(store.clone(), b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    let repo = repo(&store, &dir.path().join("cache"));
    save_note(&repo, "good", &[b"one", b"two"]);
    // A record of another application, which this check never sees.
    repo.write_root(&Root::new("toy.other", "x", vec![], vec![]).unwrap())
        .unwrap();
    // A record whose payload disagrees with its blobs.
    let ids = repo.store_blobs(&[b"lonely"]).unwrap();
    let mut payload = Vec::new();
    let lie = Note {
        title: "bad".into(),
        pieces: 3,
    };
    ciborium::into_writer(&lie, &mut payload).unwrap();
    repo.write_root(&Root::new(NAMESPACE, "bad", ids, payload).unwrap())
        .unwrap();

    let opts = check::CheckOptions {
        apps: vec![Arc::new(NoteCheck)],
        ..Default::default()
    };
    let report = check::run_with(&repo, &opts, &NoProgress).unwrap();
    assert_eq!(report.roots, 3);
    assert_eq!(
        report.records.get("notes"),
        Some(&2),
        "{:?}",
        report.records
    );
    let reasons: Vec<_> = report.problems.iter().map(|p| &p.reason).collect();
    assert_eq!(reasons, ["bad says 3 pieces"], "{:?}", report.problems);
    assert!(matches!(report.problems[0].object, Object::Root(_)));
    // Without the application's check, the repository sees nothing wrong.
    let plain = check::run(&repo, ReadData::None, &NoProgress).unwrap();
    assert!(
        plain.problems.is_empty() && plain.records.is_empty(),
        "{plain:?}"
    );
}

/// `repair_roots` removes what cannot be read (damaged, oversized, filed under another
/// record's name) and nothing else; a dry run removes nothing; prune then runs.
#[test]
fn repair_roots_removes_only_the_records_that_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let store: BackendRef = Arc::new(MemBackend::new());
    Repository::init(
        store.clone(),
        b"pw",
        Config::new(ChunkerParams::default(), 3),
        &KdfCost::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let repo = repo(&store, &dir.path().join("cache"));
    for title in ["good", "flipped", "copied"] {
        save_note(&repo, title, &[title.as_bytes()]);
    }
    let name = |title: &str| {
        let before: Vec<_> = store.list(FileKind::Root).unwrap();
        repo.remove_root(NAMESPACE, title).unwrap();
        let after: Vec<String> = store
            .list(FileKind::Root)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        let gone = before
            .into_iter()
            .find(|f| !after.contains(&f.name))
            .unwrap()
            .name;
        save_note(&repo, title, &[title.as_bytes()]);
        gone
    };
    let (good, flipped, copied) = (name("good"), name("flipped"), name("copied"));
    let mut b = store.read(FileKind::Root, &flipped).unwrap();
    b[40] ^= 1;
    store.write(FileKind::Root, &flipped, &b).unwrap();
    let other = store.read(FileKind::Root, &good).unwrap();
    store.write(FileKind::Root, &copied, &other).unwrap();
    assert!(prune::run(&repo, &PruneOptions::default(), &NoProgress).is_err());

    let dry = strata::repair::repair_roots(&repo, true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.records, 3);
    let mut found: Vec<_> = dry.damaged.iter().map(|d| d.file.clone()).collect();
    found.sort();
    let mut want = vec![flipped.clone(), copied.clone()];
    want.sort();
    assert_eq!(found, want);
    assert!(dry
        .damaged
        .iter()
        .all(|d| d.kind == "root record" && !d.reason.is_empty()));
    assert_eq!(
        store.list(FileKind::Root).unwrap().len(),
        3,
        "a dry run removed"
    );

    let done = strata::repair::repair_roots(&repo, false).unwrap();
    assert!(!done.dry_run);
    assert_eq!(done.damaged.len(), 2);
    let left: Vec<String> = store
        .list(FileKind::Root)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(left, [good]);
    assert_eq!(read_note(&repo, "good").unwrap(), b"good");
    prune_now(&repo);
    let again = strata::repair::repair_roots(&repo, false).unwrap();
    assert_eq!((again.records, again.damaged.len()), (1, 0));
}
