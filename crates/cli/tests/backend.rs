//! One conformance suite for every backend: local directory, memory and S3 (Garage). What
//! the engine relies on from a backend is written down here, once, and holds for all.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use strata::backend::{self, Backend, BackendRef, FileKind, MemBackend};
use strata::Error;
use strata::Missing;

fn names(b: &dyn Backend, kind: FileKind) -> BTreeSet<(String, u64)> {
    b.list(kind)
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect()
}

fn conformance(b: &dyn Backend) {
    assert!(!b.exists().unwrap(), "a fresh location holds no repository");
    b.create().unwrap();
    for kind in FileKind::ALL {
        assert!(
            names(b, kind).is_empty(),
            "{kind} listed on an empty location"
        );
    }

    // Files of every kind, packs fanned out by their first two hex digits.
    let pack = "ab".to_string() + &"0".repeat(62);
    let other = "cd".to_string() + &"1".repeat(62);
    b.write(FileKind::Data, &pack, &noise(100_000, 1)).unwrap();
    b.write(FileKind::Data, &other, b"").unwrap();
    b.write(FileKind::Tree, &pack, b"tree").unwrap();
    b.write(FileKind::Index, "0123", b"index").unwrap();
    b.write(FileKind::Snapshot, "4567", b"snapshot").unwrap();
    assert!(!b.exists().unwrap(), "no config, no repository");
    b.write(FileKind::Config, "config", b"config").unwrap();
    assert!(b.exists().unwrap());

    // Listings name each file once with its size, and only files of that kind.
    assert_eq!(
        names(b, FileKind::Data),
        BTreeSet::from([(pack.clone(), 100_000), (other.clone(), 0)])
    );
    assert_eq!(
        names(b, FileKind::Tree),
        BTreeSet::from([(pack.clone(), 4)])
    );
    assert_eq!(
        names(b, FileKind::Index),
        BTreeSet::from([("0123".into(), 5)])
    );
    assert_eq!(
        names(b, FileKind::Snapshot),
        BTreeSet::from([("4567".into(), 8)])
    );
    assert!(names(b, FileKind::Key).is_empty());

    // Whole and ranged reads return exactly what was written.
    assert_eq!(b.read(FileKind::Data, &pack).unwrap(), noise(100_000, 1));
    assert_eq!(b.read(FileKind::Data, &other).unwrap(), b"");
    assert_eq!(b.read(FileKind::Config, "config").unwrap(), b"config");
    assert_eq!(
        b.read_range(FileKind::Data, &pack, 99_000, 1_000).unwrap(),
        noise(100_000, 1)[99_000..]
    );
    assert_eq!(
        b.read_range(FileKind::Data, &pack, 0, 1).unwrap(),
        noise(100_000, 1)[..1]
    );
    // A range past the end is an error, never fewer bytes passed off as the range.
    if let Ok(bytes) = b.read_range(FileKind::Data, &pack, 99_990, 100) {
        panic!("a range past the end gave {} bytes", bytes.len());
    }

    // A missing file is NotFound, for every kind of read, and says which file.
    let missing = "ef".to_string() + &"2".repeat(62);
    let not_found = |kind, name: &str| Missing::File {
        kind,
        name: name.to_string(),
    };
    for result in [
        b.read(FileKind::Data, &missing),
        b.read_range(FileKind::Data, &missing, 0, 10),
    ] {
        match result {
            Err(Error::NotFound { what }) => assert_eq!(what, not_found(FileKind::Data, &missing)),
            other => panic!("{:?}", other.map(|b| b.len())),
        }
    }
    match b.read(FileKind::Snapshot, "89ab") {
        Err(Error::NotFound { what }) => assert_eq!(what, not_found(FileKind::Snapshot, "89ab")),
        other => panic!("{:?}", other.map(|b| b.len())),
    }

    // Writing a name again replaces it whole (names are content addresses, so in practice
    // with the same bytes).
    b.write(FileKind::Index, "0123", b"index again").unwrap();
    assert_eq!(b.read(FileKind::Index, "0123").unwrap(), b"index again");
    assert_eq!(
        names(b, FileKind::Index),
        BTreeSet::from([("0123".into(), 11)])
    );

    // Deleting removes a file from reads and listings; deleting what is gone is no error
    // (a prune that is run again after being cut off must get through).
    b.delete(FileKind::Data, &pack).unwrap();
    assert!(matches!(
        b.read(FileKind::Data, &pack),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        names(b, FileKind::Data),
        BTreeSet::from([(other.clone(), 0)])
    );
    b.delete(FileKind::Data, &pack).unwrap();
    // Kinds are separate: the tree pack of the same name is still there.
    assert_eq!(b.read(FileKind::Tree, &pack).unwrap(), b"tree");

    // Many files of one kind are all listed (S3 pages listings at 1,000 keys).
    for i in 0..1_050u32 {
        b.write(FileKind::Lock, &format!("{i:08x}"), &i.to_le_bytes())
            .unwrap();
    }
    let locks = names(b, FileKind::Lock);
    assert_eq!(locks.len(), 1_050);
    assert!(locks.iter().all(|(_, size)| *size == 4));
    // Deleting many at once (S3: a thousand per request) takes exactly those named, of
    // that kind; a name that is gone is no error.
    let doomed: Vec<String> = (0..1_020u32)
        .map(|i| format!("{i:08x}"))
        .chain(["gone".to_string()])
        .collect();
    b.delete_many(FileKind::Lock, &doomed).unwrap();
    let left = names(b, FileKind::Lock);
    assert_eq!(left.len(), 30);
    assert!(left.iter().all(|(n, _)| !doomed.contains(n)));
    assert_eq!(b.read(FileKind::Tree, &pack).unwrap(), b"tree");

    // A large file (over S3's multipart threshold below) round-trips.
    let big = noise(7 << 20, 9);
    b.write(FileKind::Data, &missing, &big).unwrap();
    assert_eq!(b.read(FileKind::Data, &missing).unwrap(), big);
    assert_eq!(
        b.read_range(FileKind::Data, &missing, 6 << 20, 1 << 20)
            .unwrap(),
        big[6 << 20..]
    );
}

#[test]
fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&backend::LocalBackend::new(dir.path().join("repo")));
}

#[test]
fn memory() {
    conformance(&MemBackend::new());
}

#[test]
fn s3() {
    let Some(env) = Env::s3() else {
        return;
    };
    let opts = backend::BackendOptions {
        s3_multipart_threshold: Some(5 << 20),
        ..Default::default()
    };
    let b: BackendRef = strata_s3::schemes().open(&env.repo, &opts).unwrap();
    // The S3 backend itself (the core alone would not know the scheme).
    assert!(b.capabilities().cold_storage.is_some(), "{}", b.location());
    conformance(b.as_ref());
}

/// The fault injector without faults passes every operation through, and counts them.
#[test]
fn the_fault_injector_without_faults_conforms_and_counts() {
    use strata::backend::faulty::{Faulty, Op};
    let counting = Faulty::new(Arc::new(MemBackend::new()));
    conformance(&counting);
    // Once empty, once with 1,050 locks, once after deleting 1,020 of them.
    assert_eq!(counting.count(Op::List, Some(FileKind::Lock)), 3);
    assert!(counting.count(Op::Write, None) > 1_050);
    assert!(counting.count(Op::Read, Some(FileKind::Data)) >= 6);
    // Two deletes, then one each for the 1,021 names of `delete_many` (a store without a
    // batch delete).
    assert_eq!(counting.count(Op::Delete, None), 2 + 1_021);
}

/// Hostile pass (issue 25): root backing up into another user's local repository (the
/// postgres user's, say) gives what it writes to that user, who can still open, read and
/// write it: the WAL archiving that user runs is not stopped.
#[test]
fn root_writing_into_a_users_repository_leaves_it_theirs() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (as CI runs it) to act as two users"
    );
    let user = Env::local().unprivileged();
    user.init();
    let src = user.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(3 << 20, 1)).unwrap();
    let out = user
        .own_cmd()
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for path in walk(std::path::Path::new(&user.repo)) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), NOBODY, "{} is not the owner's", path.display());
    }
    // The owner reads root's snapshot and writes after it.
    user.ok(&["check", "--read-data"]);
    user.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(user.json(&["snapshots"]).as_array().unwrap().len(), 2);
}
