//! The PostgreSQL application through its library, without a server: base backups are
//! snapshots carrying the extension, WAL records are pushed from files. Its `forget`
//! expires the WAL that only the base backups it removed needed, and its check (registered
//! with the repository's) finds a gap in what a base backup needs.

use std::path::Path;
use std::sync::Arc;

use strata::backend::{BackendRef, MemBackend};
use strata::backup::{self, BackupOptions, Source};
use strata::check::{self, CheckOptions, ReadData};
use strata::retention::{ForgetJob, Policy};
use strata::{ChunkerParams, Config, KdfCost, NoProgress, Remedy, Repository, SnapshotFilter};
use strata_pg::{wal, BaseBackup, WalCheck};

const MIB: u64 = 1 << 20;

fn repo_on(store: BackendRef, version: u32, dir: &Path) -> Repository {
    let mut config = Config::new(ChunkerParams::default(), 1);
    config.version = version;
    Repository::init(store.clone(), b"pw", config, &KdfCost::INSECURE_FOR_TESTS).unwrap();
    Repository::open(store, b"pw", &dir.join("cache")).unwrap()
}

fn name(no: u64) -> String {
    format!("00000001{:08X}{:08X}", no >> 8, no & 0xff)
}

/// A base backup of `cluster` starting in segment `no`, taken at `time`.
fn base_backup(repo: &Repository, dir: &Path, cluster: &str, no: u64, time: &str) {
    let data = dir.join(format!("pgdata-{cluster}-{no}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let bb = BaseBackup {
        cluster: cluster.into(),
        data_directory: data.to_str().unwrap().into(),
        server_version: 150010,
        timeline: 1,
        segment_size: MIB,
        start_lsn: format!("0/{:X}", no * MIB + 0x28),
        stop_lsn: format!("0/{:X}", no * MIB + 0x138),
        start_wal: name(no),
        stop_wal: name(no),
        stop_time: time.into(),
        backup_label: "LABEL: test\n".into(),
        tablespace_map: None,
    };
    backup::run(
        repo,
        BackupOptions {
            source: Source::Paths(vec![data]),
            time: Some(chrono::DateTime::parse_from_rfc3339(time).unwrap()),
            set: Some(strata_pg::set_of(cluster)),
            before_snapshot: Some(Box::new(move |s| {
                s.set_extension(strata_pg::EXTENSION, &bb)
            })),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
}

fn push(repo: &Repository, dir: &Path, cluster: &str, file: &str, bytes: &[u8]) {
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    wal::push(repo, cluster, &path).unwrap();
}

fn segment(seed: u8) -> Vec<u8> {
    let mut s = vec![seed; 4096];
    s.resize(MIB as usize, 0);
    s
}

fn archived(repo: &Repository, cluster: &str) -> Vec<String> {
    let mut names: Vec<String> = wal::all_records(repo)
        .unwrap()
        .into_iter()
        .filter(|r| r.cluster == cluster)
        .map(|r| r.name)
        .collect();
    names.sort();
    names
}

fn keep_last(set: &str, n: u32) -> ForgetJob {
    ForgetJob {
        set: Some(set.into()),
        policy: Policy {
            last: n,
            ..Default::default()
        },
    }
}

/// Two base backups (segments 1 and 3) and WAL 1-4 of `main`, WAL 1 of `other`.
fn archive(version: u32, dir: &Path) -> Repository {
    archive_on(Arc::new(MemBackend::new()), version, dir)
}

fn archive_on(store: BackendRef, version: u32, dir: &Path) -> Repository {
    let repo = repo_on(store, version, dir);
    for no in 1..=4 {
        push(&repo, dir, "main", &name(no), &segment(no as u8));
    }
    push(
        &repo,
        dir,
        "main",
        "00000002.history",
        b"1\t0/2000000\tno target\n",
    );
    push(&repo, dir, "other", &name(1), &segment(9));
    base_backup(&repo, dir, "main", 1, "2026-12-01T00:00:00+00:00");
    base_backup(&repo, dir, "main", 3, "2026-12-02T00:00:00+00:00");
    base_backup(&repo, dir, "other", 1, "2026-12-02T00:00:00+00:00");
    repo
}

#[test]
fn forget_expires_the_wal_only_forgotten_base_backups_needed() {
    for version in [3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(version, dir.path());
        let all = archived(&repo, "main");
        assert_eq!(all.len(), 5, "{all:?}");

        // A dry run says what would go and removes nothing.
        let jobs = [keep_last("postgres.main", 1)];
        let dry = strata_pg::forget(&repo, &jobs, &SnapshotFilter::default(), true).unwrap();
        assert_eq!(dry.wal.len(), 1);
        assert_eq!(dry.wal[0].removed, [name(1), name(2)], "v{version}");
        assert_eq!(dry.wal[0].kept_from.as_deref(), Some(name(3).as_str()));
        assert_eq!(archived(&repo, "main"), all);
        assert_eq!(repo.snapshots().list().unwrap().len(), 3);

        let done = strata_pg::forget(&repo, &jobs, &SnapshotFilter::default(), false).unwrap();
        assert_eq!(done.plans.iter().map(|p| p.remove.len()).sum::<usize>(), 1);
        assert_eq!(done.wal[0].removed, [name(1), name(2)]);
        // The history file stays whatever its age; the other cluster is untouched.
        assert_eq!(
            archived(&repo, "main"),
            [name(3), name(4), "00000002.history".to_string()]
        );
        assert_eq!(archived(&repo, "other"), [name(1)]);
        // What is kept fetches byte-exact; what went is not archived.
        let dest = dir.path().join("fetched");
        assert!(wal::fetch(&repo, "main", &name(3), &dest).unwrap());
        assert!(std::fs::read(&dest).unwrap() == segment(3));
        std::fs::remove_file(&dest).unwrap();
        assert!(!wal::fetch(&repo, "main", &name(1), &dest).unwrap());
        assert!(!dest.exists());

        // A forget of every set expires the clusters' WAL too.
        let again = archive(version, &dir.path().join("again"));
        let every = ForgetJob {
            set: None,
            policy: Policy {
                last: 1,
                ..Default::default()
            },
        };
        let done = strata_pg::forget(&again, &[every], &SnapshotFilter::default(), false).unwrap();
        assert_eq!(done.wal.len(), 2, "v{version}: {:?}", done.wal);
        assert_eq!(done.wal[0].removed, [name(1), name(2)], "v{version}");
        assert_eq!(archived(&again, "other"), [name(1)]);

        // A set that holds no base backups expires no WAL.
        let plain = strata_pg::forget(
            &repo,
            &[keep_last("documents", 1)],
            &SnapshotFilter::default(),
            false,
        )
        .unwrap();
        assert!(plain.wal.is_empty(), "{:?}", plain.wal);
    }
}

#[test]
fn sets_name_their_cluster() {
    assert_eq!(strata_pg::cluster_of("postgres.main"), Some("main"));
    assert_eq!(strata_pg::cluster_of(&strata_pg::set_of("a")), Some("a"));
    assert_eq!(strata_pg::cluster_of("postgres."), None);
    assert_eq!(strata_pg::cluster_of("documents"), None);
}

#[test]
fn the_registered_check_finds_a_gap_in_what_a_base_backup_needs() {
    for version in [3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(version, dir.path());
        let opts = CheckOptions {
            apps: vec![Arc::new(WalCheck)],
            ..Default::default()
        };
        let clean = check::run_with(&repo, &opts, &NoProgress).unwrap();
        assert!(
            clean.problems.is_empty(),
            "v{version}: {:?}",
            clean.problems
        );
        assert_eq!(clean.records.get("wal_records"), Some(&6), "v{version}");

        // The segment the second base backup starts in goes missing.
        let rec = wal::record(&repo, "main", &name(3)).unwrap().unwrap();
        wal::remove(&repo, &rec).unwrap();
        let report = check::run_with(&repo, &opts, &NoProgress).unwrap();
        assert_eq!(report.records.get("wal_records"), Some(&5));
        let gaps: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.remedy == Remedy::FixArchivingThenBaseBackup)
            .collect();
        // Both base backups' chains to the archive's end pass through it.
        assert_eq!(gaps.len(), 2, "v{version}: {:?}", report.problems);
        assert!(gaps.iter().all(|g| g.reason.contains(&name(3))), "{gaps:?}");
        assert!(gaps
            .iter()
            .any(|g| g.reason.contains("cannot be restored at all")));
        // The repository's own check, without the application, sees no gap.
        let plain = check::run(&repo, ReadData::None, &NoProgress).unwrap();
        assert!(plain.problems.is_empty(), "{:?}", plain.problems);
    }
}

/// Hostile pass (issue 26): `repair snapshots` rewrites a damaged base backup without the
/// files it lost, extension and all; PostgreSQL cannot start from what is left. A restore
/// passes over it, says so, and with nothing intact left fails naming the remedy.
#[test]
fn a_restore_passes_over_a_base_backup_repair_rewrote() {
    let dir = tempfile::tempdir().unwrap();
    let repo = archive(4, dir.path());
    let plan = |repo: &Repository| {
        // Timeline 1 named: the archive's history file would add a note of its own.
        let target = strata_pg::RestoreTarget {
            timeline: Some(1),
            ..Default::default()
        };
        strata_pg::plan_restore(repo, "main", target)
    };
    let newest = plan(&repo).unwrap();
    assert_eq!(newest.base.start_wal, name(3));
    assert!(newest.notes.is_empty(), "{:?}", newest.notes);
    let mark_repaired = |id: strata::SnapshotId| {
        let mut snap = repo.snapshots().get(&id).unwrap();
        snap.repaired = Some(strata::Repaired {
            from: id,
            lost: vec!["/base/1/1259".into()],
        });
        let new = repo.snapshots().write(&snap).unwrap();
        repo.snapshots().remove(&id).unwrap();
        new
    };
    let repaired = mark_repaired(newest.snapshot);
    let older = plan(&repo).unwrap();
    assert_eq!(older.base.start_wal, name(1));
    assert_ne!(older.snapshot, repaired);
    assert_eq!(older.notes.len(), 1, "{:?}", older.notes);
    assert!(
        older.notes[0].contains(&repaired.short()),
        "{:?}",
        older.notes
    );
    assert!(older.notes[0].contains("1 file(s)"), "{:?}", older.notes);

    mark_repaired(older.snapshot);
    let e = plan(&repo).unwrap_err();
    assert_eq!(e.remedy(), Some(Remedy::TakeBaseBackup), "{e}");
    assert!(e.to_string().contains("no intact base backup"), "{e}");
}

/// Hostile pass (issue 26): a WAL record that cannot be read failed the forget only after
/// it had removed snapshots, which it then did not report. It fails first now.
#[test]
fn a_record_that_cannot_be_read_fails_the_forget_before_it_removes_anything() {
    for version in [3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = Arc::new(MemBackend::new());
        let repo = archive_on(store.clone(), version, dir.path());
        let kind = match version {
            4 => strata::backend::FileKind::Root,
            _ => strata::backend::FileKind::Wal,
        };
        let victim = store.list(kind).unwrap()[0].name.clone();
        store.write(kind, &victim, b"damaged").unwrap();
        let jobs = [keep_last("postgres.main", 1)];
        let e = strata_pg::forget(&repo, &jobs, &SnapshotFilter::default(), false).unwrap_err();
        assert!(e.to_string().contains("damaged"), "v{version}: {e}");
        // The repository's own check finds it, in either format, with no application.
        let plain = check::run(&repo, ReadData::None, &NoProgress).unwrap();
        let found: Vec<_> = plain
            .problems
            .iter()
            .filter(|p| p.object.to_string().ends_with(&victim))
            .collect();
        assert_eq!(found.len(), 1, "v{version}: {:?}", plain.problems);
        assert_eq!(found[0].remedy, Remedy::StoreRecordAgain);
        assert_eq!(repo.snapshots().list().unwrap().len(), 3, "v{version}");
        // A forget of another set does not read WAL records at all.
        strata_pg::forget(
            &repo,
            &[keep_last("documents", 1)],
            &SnapshotFilter::default(),
            false,
        )
        .unwrap();
    }
}

/// Hostile pass (issue 26): with `keep last 1`, a base backup that `repair snapshots`
/// rewrote (newest) was kept and the only intact one forgotten, its WAL with it; a
/// restore then had nothing to start from. The newest intact one is kept too.
#[test]
fn forget_keeps_the_newest_intact_base_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = archive_on(Arc::new(MemBackend::new()), 4, dir.path());
    let target = strata_pg::RestoreTarget {
        timeline: Some(1),
        ..Default::default()
    };
    let newest = strata_pg::plan_restore(&repo, "main", target)
        .unwrap()
        .snapshot;
    let mut snap = repo.snapshots().get(&newest).unwrap();
    snap.repaired = Some(strata::Repaired {
        from: newest,
        lost: vec!["/base/1/1259".into()],
    });
    repo.snapshots().write(&snap).unwrap();
    repo.snapshots().remove(&newest).unwrap();

    let jobs = [keep_last("postgres.main", 1)];
    let done = strata_pg::forget(&repo, &jobs, &SnapshotFilter::default(), false).unwrap();
    let main = done
        .plans
        .iter()
        .find(|p| p.group == strata::Lineage::Set("postgres.main".into()))
        .unwrap();
    assert!(main.remove.is_empty(), "{:?}", main.remove);
    assert_eq!(main.keep.len(), 2);
    assert!(main
        .keep
        .iter()
        .any(|(_, _, why)| why.iter().any(|w| w.contains("intact"))));
    // The WAL the intact one needs stays, and a restore can use it.
    assert_eq!(done.wal[0].kept_from.as_deref(), Some(name(1).as_str()));
    assert!(done.wal[0].removed.is_empty());
    let plan = strata_pg::plan_restore(&repo, "main", target).unwrap();
    assert_eq!(plan.base.start_wal, name(1));
}

/// An instant before the first base backup is consistent: no base backup fits, and the
/// error says from when one does (no repaired one is involved, so no remedy).
#[test]
fn a_restore_before_the_first_base_backup_says_when_one_begins() {
    let dir = tempfile::tempdir().unwrap();
    let repo = archive_on(Arc::new(MemBackend::new()), 4, dir.path());
    let target = strata_pg::RestoreTarget {
        at: Some(chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00+00:00").unwrap()),
        timeline: Some(1),
    };
    let e = strata_pg::plan_restore(&repo, "main", target).unwrap_err();
    assert!(
        e.to_string()
            .contains("the earliest one is consistent from"),
        "{e}"
    );
    assert_eq!(e.remedy(), None);
}
