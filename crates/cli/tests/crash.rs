//! Crash consistency: backup, forget, prune and key changes of the real binary are killed
//! (SIGKILL) at random moments, trial after trial, on one repository that lives on. After
//! each kill: the repository checks clean with `--read-data` (packs no index names are
//! leftovers, not damage), every snapshot restores byte for byte what its source held, no
//! snapshot disappears that the killed command was not removing, and the command run
//! again succeeds.
//!
//! `STRATA_TORTURE_TRIALS` sets the number of trials (20 here; `tools/torture` runs 200),
//! `STRATA_TORTURE_SEED` replays a run. Each run prints a `TORTURE crash` line that
//! `tools/torture` tabulates.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};

/// A source tree's content: relative path -> hash of the bytes.
type Manifest = BTreeMap<String, [u8; 32]>;

fn manifest(root: &Path) -> Manifest {
    let mut m = Manifest::new();
    for entry in walk(root) {
        if entry.is_file() {
            let rel = entry.strip_prefix(root).unwrap().display().to_string();
            m.insert(rel, *blake3::hash(&fs::read(&entry).unwrap()).as_bytes());
        }
    }
    m
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn key_ids(env: &Env) -> Vec<(String, bool)> {
    env.json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["current"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Changes the source a little, as an hour of a service does.
fn mutate(src: &Path, rng: &mut impl Rng, trial: u64) {
    let i = rng.gen_range(0..6);
    fs::write(
        src.join(format!("docs/{i}.txt")),
        format!("trial {trial}\n").repeat(300),
    )
    .unwrap();
    let len = rng.gen_range(1 << 20..3 << 20);
    fs::write(
        src.join(format!("data/t{}.bin", trial % 4)),
        noise(len, trial),
    )
    .unwrap();
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Backup,
    Forget,
    Prune,
    KeyAdd,
    KeyRemove,
}

fn args(op: Op, src: &str, key: &str) -> Vec<String> {
    let v: Vec<&str> = match op {
        Op::Backup => vec!["backup", "-q", src],
        Op::Forget => vec!["forget", "-q", "--keep-last", "3"],
        Op::Prune => vec!["prune", "-q", "--max-unused", "0", "--instant-delete"],
        Op::KeyAdd => vec!["key", "add", "-q"],
        Op::KeyRemove => vec!["key", "remove", "-q", key],
    };
    v.into_iter().map(String::from).collect()
}

/// Runs strata and kills it after `delay`; whether the kill came first.
fn run_killed(env: &Env, args: &[String], delay: Duration) -> bool {
    let mut child = env
        .std_cmd()
        .args(args)
        .env("STRATA_NEW_PASSWORD", "another password")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let killed = matches!(child.try_wait(), Ok(None)) && child.kill().is_ok();
    let status = child.wait().unwrap();
    if !killed {
        assert!(
            status.success(),
            "strata {args:?} failed unkilled: {status}"
        );
    }
    killed
}

/// Every snapshot restores to its manifest; returns how many were checked.
fn restore_all(env: &Env, src: &Path, expected: &HashMap<String, Manifest>) -> usize {
    let ids = snapshot_ids(env);
    for id in &ids {
        let want = expected
            .get(id)
            .unwrap_or_else(|| panic!("snapshot {id} is none a backup of this test wrote"));
        let target = env.path("restore-check");
        let _ = fs::remove_dir_all(&target);
        env.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        assert_eq!(&manifest(&restored(&target, src)), want, "snapshot {id}");
        fs::remove_dir_all(&target).unwrap();
    }
    ids.len()
}

fn commands_killed_at_random_moments_lose_nothing(env: &Env) {
    let trials: u64 = std::env::var("STRATA_TORTURE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("STRATA_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash trials: seed {seed} (STRATA_TORTURE_SEED={seed} replays this run)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::create_dir_all(src.join("data")).unwrap();
    mutate(&src, &mut rng, 0);
    let s = src.to_str().unwrap().to_string();
    let mut expected: HashMap<String, Manifest> = HashMap::new();
    let first = env.backup(&[&s]);
    expected.insert(
        first["snapshot_id"].as_str().unwrap().to_string(),
        manifest(&src),
    );

    let (mut killed, mut checked) = (0u64, 0usize);
    let mut durations: HashMap<String, u64> = HashMap::new();
    for trial in 1..=trials {
        let op = match rng.gen_range(0..10) {
            0..=4 => Op::Backup,
            5 => Op::Forget,
            6 | 7 => Op::Prune,
            8 => Op::KeyAdd,
            _ => Op::KeyRemove,
        };
        if op == Op::Backup {
            mutate(&src, &mut rng, trial);
        }
        let removable = key_ids(env).into_iter().find(|(_, current)| !current);
        if op == Op::KeyRemove && removable.is_none() {
            continue;
        }
        let key = removable.map(|(id, _)| id).unwrap_or_default();
        let before: HashSet<String> = snapshot_ids(env).into_iter().collect();
        let state = manifest(&src);
        let args = args(op, &s, &key);
        // Somewhere within the time the command took last time it ran to its end.
        let took = durations.get(&format!("{op:?}")).copied().unwrap_or(80);
        let delay = Duration::from_millis(rng.gen_range(0..took.max(2)));
        if run_killed(env, &args, delay) {
            killed += 1;
        }
        // The runbook's first step after a crash: clear what the dead process held.
        env.ok(&["unlock"]);
        let after: HashSet<String> = snapshot_ids(env).into_iter().collect();
        for new in after.difference(&before) {
            expected.insert(new.clone(), state.clone());
        }
        if op != Op::Forget {
            assert!(
                before.is_subset(&after),
                "trial {trial} ({op:?}, seed {seed}): snapshots vanished"
            );
        }
        let out = env.run(&["check", "--read-data"]);
        assert_eq!(
            code(&out),
            0,
            "trial {trial} ({op:?} killed after {delay:?}, seed {seed}): {}",
            String::from_utf8_lossy(&out.stdout)
        );
        checked += restore_all(env, &src, &expected);
        // The command again, to the end.
        let still_there = op != Op::KeyRemove || key_ids(env).iter().any(|(id, _)| *id == key);
        if still_there {
            let started = std::time::Instant::now();
            let rerun = env
                .std_cmd()
                .args(&args)
                .env("STRATA_NEW_PASSWORD", "x")
                .output();
            let rerun = rerun.unwrap();
            durations.insert(format!("{op:?}"), started.elapsed().as_millis() as u64);
            assert!(
                rerun.status.success(),
                "trial {trial}: {op:?} again failed: {}",
                stderr(&rerun)
            );
            let now: HashSet<String> = snapshot_ids(env).into_iter().collect();
            for new in now.difference(&after) {
                expected.insert(new.clone(), state.clone());
            }
        }
    }
    env.assert_read_data_clean();
    checked += restore_all(env, &src, &expected);
    let backend = if env.s3 { "s3" } else { "local" };
    eprintln!(
        "TORTURE crash backend={backend} trials={trials} killed={killed} \
         snapshots_checked={checked} seed={seed}"
    );
    assert!(
        killed >= trials / 4,
        "only {killed} of {trials} commands were killed in time"
    );
}

/// Bytes of the data packs in the repository.
fn data_bytes(env: &Env) -> u64 {
    env.objects("data").iter().map(|(_, n)| n).sum()
}

/// A first backup killed at a random moment, then run again: the rerun uploads what the
/// first run had not, plus at most the packs whose index write was under way. Size and
/// trials from `STRATA_TORTURE_RESUME_MIB` (128 here; 1024 in `tools/torture`, where the
/// excess must stay within 5% of the backup) and `STRATA_TORTURE_RESUME_TRIALS` (2).
fn a_killed_first_backup_resumes_without_uploading_again(env: &Env) {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (mib, trials) = (
        var("STRATA_TORTURE_RESUME_MIB", 128),
        var("STRATA_TORTURE_RESUME_TRIALS", 2),
    );
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..mib / 8 {
        fs::write(src.join(format!("f{i:04}")), noise(8 << 20, 9000 + i)).unwrap();
    }
    let s = src.to_str().unwrap();
    // The whole backup, uninterrupted, for its size and duration.
    let whole = Env::local();
    whole.init();
    let started = std::time::Instant::now();
    whole.backup(&[s]);
    let (total, took) = (data_bytes(&whole), started.elapsed());
    let mut rng = rand::rngs::StdRng::seed_from_u64(mib);
    let mut worst = 0f64;
    for trial in 0..trials {
        let env = if env.s3 {
            Env::s3().unwrap()
        } else {
            Env::local()
        };
        env.init();
        let delay = took.mul_f64(rng.gen_range(0.1..0.9));
        let killed = run_killed(&env, &["backup".into(), "-q".into(), s.into()], delay);
        let up = data_bytes(&env);
        env.backup(&[s]);
        let rerun = data_bytes(&env) - up;
        let not_yet = total.saturating_sub(up);
        let excess = rerun.saturating_sub(not_yet);
        worst = worst.max(excess as f64 / total as f64);
        // One pack per upload in flight (two), each at most 16 MiB and a chunk.
        assert!(
            excess <= 2 * (17 << 20),
            "trial {trial} (killed {killed} after {delay:?}): {up} of {total} bytes were up; \
             the rerun uploaded {rerun}, {excess} more than was missing"
        );
        if mib >= 1024 {
            assert!(
                excess * 20 <= total,
                "{excess} bytes uploaded twice of {total}"
            );
        }
        env.assert_read_data_clean();
    }
    let backend = if env.s3 { "s3" } else { "local" };
    eprintln!(
        "TORTURE resume backend={backend} mib={mib} trials={trials} worst_excess_pct={:.2}",
        worst * 100.0
    );
}

conformance!(
    commands_killed_at_random_moments_lose_nothing,
    a_killed_first_backup_resumes_without_uploading_again
);
