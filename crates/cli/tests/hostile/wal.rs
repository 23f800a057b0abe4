//! See main.rs. A key holder's WAL records (hostile pass 9): content naming one blob far
//! more often than the size the record states, as a timeline history that `check` and
//! `pg restore` read whole, and as a segment `wal fetch` writes into `pg_wal`.

use std::fs;

use crate::common::*;
use crate::craft::{self, pg_base_backup, run_bounded};

/// Stores `pieces` as data blobs; returns their ids.
fn store(env: &Env, pieces: &[Vec<u8>]) -> Vec<strata::BlobId> {
    let mut ids = Vec::new();
    craft::snapshot(env, |c| {
        ids = pieces.iter().map(|p| c.data(p)).collect();
        c.tree(vec![])
    });
    ids
}

/// Writes (or rewrites) the WAL record `name` of cluster `main` stating `size` bytes,
/// its content `blobs`, as a key holder can.
fn write_record(env: &Env, name: &str, size: u64, blobs: Vec<strata::BlobId>) {
    let payload = ciborium::Value::Map(vec![
        ("version".into(), 1.into()),
        ("cluster".into(), "main".into()),
        ("name".into(), name.into()),
        ("size".into(), size.into()),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&payload, &mut bytes).unwrap();
    let key = format!("main/{name}");
    let mut root = strata::Root::new(strata_pg::wal::NAMESPACE, &key, blobs, bytes).unwrap();
    root.time = "2026-01-01T01:00:00Z".into();
    root.host = "keyholder".into();
    open_repo(env).write_root(&root).unwrap();
}

/// A record stating `size` bytes whose content is one 1 MiB blob of zeros named
/// `repeats` times (a few MB of repository).
fn repeating_record(env: &Env, name: &str, size: u64, repeats: usize) {
    let zero = store(env, &[vec![0u8; 1 << 20]])[0];
    write_record(env, name, size, vec![zero; repeats]);
}

/// A history file stating 64 bytes whose blobs add up to 100 GiB: `check` grew to 9 GB in
/// 25 s and `pg restore` until killed. Both now refuse it before reading, in bounds.
#[test]
fn a_history_naming_one_blob_endlessly_is_refused_small() {
    let env = Env::local();
    env.init();
    pg_base_backup(&env, "/data", |c| c.tree(vec![]));
    repeating_record(&env, "00000002.history", 64, 100_000);
    let run = run_bounded(&env, &["check"], 1024, 60);
    assert!(!run.timed_out, "check ran {:?}", run.elapsed);
    assert_eq!(code(&run.out), 1, "{}", stderr(&run.out));
    let said = String::from_utf8_lossy(&run.out.stdout);
    assert!(said.contains("timeline history"), "{said}");
    assert!(said.contains("for a size of 64"), "{said}");
    let cfg = craft::pg_config(&env);
    let target = env.path("target");
    let args = ["--config", &cfg, "pg", "restore", "main", "--dry-run"];
    let run = run_bounded(
        &env,
        &[&args[..], &["--target", target.to_str().unwrap()]].concat(),
        1024,
        60,
    );
    assert!(!run.timed_out, "pg restore ran {:?}", run.elapsed);
    assert_eq!(code(&run.out), 1, "{}", stderr(&run.out));
    assert!(
        stderr(&run.out).contains("00000002.history"),
        "{}",
        stderr(&run.out)
    );
}

/// A segment stating 1 MiB named as 200 MiB of zeros: `wal fetch` wrote until the file
/// system was full. Now it writes nothing and leaves nothing.
#[test]
fn a_segment_running_past_its_size_is_not_fetched() {
    let env = Env::local();
    env.init();
    const SEG: &str = "000000010000000000000007";
    repeating_record(&env, SEG, 1 << 20, 200);
    // pg_wal on a disk of 8 MiB: what was written of it before the size was compared
    // filled it.
    let pg_wal = env.path("pg_wal");
    let Some(_disk) = SmallDisk::mount(pg_wal.clone(), "8m") else {
        return;
    };
    let dest = pg_wal.join("RECOVERYXLOG");
    let cfg = craft::pg_config(&env);
    let args = [
        "--config",
        &cfg,
        "wal",
        "fetch",
        "main",
        SEG,
        dest.to_str().unwrap(),
    ];
    let run = run_bounded(&env, &args, 1024, 60);
    assert!(!run.timed_out);
    assert_ne!(code(&run.out), 0, "{}", stderr(&run.out));
    assert!(
        stderr(&run.out).contains("for a size of 1048576"),
        "{}",
        stderr(&run.out)
    );
    let left: Vec<_> = fs::read_dir(&pg_wal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // One whose blobs add up to its size is fetched, byte for byte.
    const GOOD: &str = "000000010000000000000008";
    repeating_record(&env, GOOD, 1 << 20, 1);
    env.ok(&[
        "--config",
        &cfg,
        "wal",
        "fetch",
        "main",
        GOOD,
        dest.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&dest).unwrap(), vec![0u8; 1 << 20]);
}

/// A key holder of the source rewrote a record the second site had: the next hourly copy
/// replaced it there, without the second site's password (hostile pass 9). The copy now
/// keeps the destination's record, says so and exits 1.
#[test]
fn a_copy_never_replaces_a_record_at_the_second_site() {
    let env = Env::local();
    env.init();
    let cfg = craft::pg_config(&env);
    let second = env.path("second");
    let second = second.to_str().unwrap();
    let other = "second site's own password";
    let init = (env.cmd())
        .env("STRATA_PASSWORD", other)
        .args(["-r", second, "init"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let copy = || {
        (env.cmd())
            .env("STRATA_TO_PASSWORD", other)
            .args(["copy", "--to", second])
            .output()
            .unwrap()
    };
    const SEG: &str = "000000010000000000000002.partial";
    let (a, b) = (noise(1 << 20, 1), noise(1 << 20, 2));
    write_record(&env, SEG, 1 << 20, store(&env, std::slice::from_ref(&a)));
    let first = copy();
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    // Rewritten a moment later (another listing time): content B under the same name.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_record(&env, SEG, 1 << 20, store(&env, &[b]));
    let again = copy();
    assert_eq!(code(&again), 1, "{}", stderr(&again));
    assert!(stderr(&again).contains("it is kept"), "{}", stderr(&again));
    let out = env.path("fetched");
    let fetched = (env.cmd())
        .env("STRATA_PASSWORD", other)
        .args(["--config", &cfg, "-r", second, "wal", "fetch", "main", SEG])
        .arg(&out)
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert!(
        fs::read(&out).unwrap() == a,
        "the second site's record was replaced"
    );
}
