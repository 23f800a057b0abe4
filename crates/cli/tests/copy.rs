//! `strata copy`: snapshots into a second repository of other keys and another password,
//! incrementally; Garage to moto (two S3 implementations), killed and resumed.

mod common;

use std::fs;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const OTHER: &str = "the second site's own password";

/// `strata copy ARGS --to DST` with the destination's password in STRATA_TO_PASSWORD.
fn copy(env: &Env, dst: &str, args: &[&str]) -> Output {
    env.cmd()
        .env("STRATA_TO_PASSWORD", OTHER)
        .args(["copy", "--to", dst])
        .args(args)
        .output()
        .unwrap()
}

fn copy_json(env: &Env, dst: &str, args: &[&str]) -> serde_json::Value {
    let out = copy(env, dst, &[&["--json"], args].concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// strata on the destination, as its own operator (its password, its cache).
fn on_dst(env: &Env, dst: &str, args: &[&str]) -> Output {
    env.cmd()
        .env("STRATA_REPOSITORY", dst)
        .env("STRATA_PASSWORD", OTHER)
        .env("STRATA_CACHE_DIR", env.path("dst-cache"))
        .args(args)
        .output()
        .unwrap()
}

fn dst_snapshots(env: &Env, dst: &str) -> Vec<serde_json::Value> {
    let out = on_dst(env, dst, &["--json", "snapshots"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

/// Restores the destination's latest snapshot on a bare machine (an empty cache) and
/// compares it with `src`; then the destination checks clean, every byte read.
fn assert_destination_restores(env: &Env, dst: &str, src: &std::path::Path, filter: &[&str]) {
    let target = env.path(&format!("dst-restore-{}", hex_id()));
    let out = env
        .cmd()
        .env("STRATA_REPOSITORY", dst)
        .env("STRATA_PASSWORD", OTHER)
        .env("STRATA_CACHE_DIR", env.path(&format!("bare-{}", hex_id())))
        .args([
            "restore",
            "latest",
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ])
        .args(filter)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let diffs = compare_trees(src, &restored(&target, src));
    assert!(diffs.is_empty(), "{diffs:?}");
    let out = on_dst(env, dst, &["check", "--read-data"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{said}{}", stderr(&out));
    assert!(said.contains("no errors found"), "{said}");
}

#[test]
fn copies_incrementally_into_a_repository_of_other_keys() {
    let env = Env::local();
    env.init();
    let dst = env.path("second-site").display().to_string();
    assert_eq!(code(&on_dst(&env, &dst, &["init"])), 0);
    let src = env.path("src");
    make_rich_tree(&src);
    fs::write(src.join("big"), noise(3 << 20, 1)).unwrap();
    env.backup(&[src.to_str().unwrap()]);

    let first = copy_json(&env, &dst, &[]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 1, "{first}");
    assert!(first["bytes_read"].as_u64().unwrap() >= 3 << 20, "{first}");
    assert_destination_restores(&env, &dst, &src, &[]);

    // Nothing new: nothing read, nothing added.
    let again = copy_json(&env, &dst, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["present"], 1, "{again}");
    assert_eq!(again["blobs_read"], 0, "{again}");

    // An hour later, one new file: only its chunks are read, the rest is known.
    fs::write(src.join("new"), noise(200_000, 2)).unwrap();
    let added = env.backup(&[src.to_str().unwrap()])["data_added"]
        .as_u64()
        .unwrap();
    let hourly = copy_json(&env, &dst, &[]);
    assert_eq!(hourly["copied"].as_array().unwrap().len(), 1, "{hourly}");
    assert_eq!(hourly["bytes_read"], added, "{hourly}");
    assert_eq!(hourly["present"], 1, "{hourly}");
    assert_destination_restores(&env, &dst, &src, &[]);

    // The destination's own retention holds: a copy forgotten there is not copied again,
    // unless asked for with --all.
    let out = on_dst(&env, &dst, &["forget", "--keep-last", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after_forget = copy_json(&env, &dst, &[]);
    assert_eq!(
        after_forget["copied"].as_array().unwrap().len(),
        0,
        "{after_forget}"
    );
    assert_eq!(after_forget["older"], 1, "{after_forget}");
    let all = copy_json(&env, &dst, &["--all"]);
    assert_eq!(all["copied"].as_array().unwrap().len(), 1, "{all}");

    // Back the other way (failing back from the second site): the copies' originals are
    // there, nothing is copied twice.
    let back = {
        let mut c = env.cmd();
        c.env("STRATA_REPOSITORY", &dst)
            .env("STRATA_PASSWORD", OTHER)
            .env("STRATA_TO_PASSWORD", PASSWORD)
            .env("STRATA_CACHE_DIR", env.path("dst-cache"))
            .args(["--json", "copy", "--all", "--to", &env.repo]);
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(back["copied"].as_array().unwrap().len(), 0, "{back}");
    assert_eq!(back["present"], 2, "{back}");

    // A damaged source snapshot is not copied, and the copy says so and fails.
    fs::write(src.join("third"), noise(1000, 3)).unwrap();
    let third = env.backup(&[src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.flip_byte("snapshots", &third, 40);
    let out = env
        .cmd()
        .env("STRATA_TO_PASSWORD", OTHER)
        .env("STRATA_CACHE_DIR", env.path("another-machine"))
        .args(["copy", "--to", &dst])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(&third[..8]), "{}", stderr(&out));

    // The copies keep their source's time, host and paths, and name their source.
    let snaps = dst_snapshots(&env, &dst);
    let ours: Vec<serde_json::Value> = env.json(&["snapshots"]).as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2);
    for (a, b) in snaps.iter().zip(&ours) {
        assert_eq!(a["time"], b["time"]);
        assert_eq!(a["host"], b["host"]);
        assert_eq!(a["paths"], b["paths"]);
    }
}

#[test]
fn copying_into_the_source_itself_is_refused() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), noise(1 << 20, 3)).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let dst = env.path("twin").display().to_string();
    copy_tree(std::path::Path::new(&env.repo), std::path::Path::new(&dst));
    // A byte-for-byte replica is the same repository (same id): refused, as is the source.
    for to in [&dst, &env.repo] {
        let out = env
            .cmd()
            .env("STRATA_TO_PASSWORD", PASSWORD)
            .args(["copy", "--to", to])
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("the source's repository id")
                && stderr(&out).contains("a copy of its files"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn chooses_snapshots_by_id_host_and_time() {
    let env = Env::local();
    env.init();
    let dst = env.path("second-site").display().to_string();
    assert_eq!(code(&on_dst(&env, &dst, &["init"])), 0);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for (i, host) in ["a", "b", "a"].iter().enumerate() {
        fs::write(src.join("f"), noise(10_000, i as u64)).unwrap();
        let s = env.backup(&["--host", host, src.to_str().unwrap()]);
        ids.push(s["snapshot_id"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let t1 = env.json(&["snapshots"])[1]["time"]
        .as_str()
        .unwrap()
        .to_string();

    // A dry run says and writes nothing.
    let out = copy(&env, &dst, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 snapshot(s) to copy"));
    assert!(dst_snapshots(&env, &dst).is_empty());

    // Per host, the snapshot newest at t1: a's first, b's.
    let r = copy_json(&env, &dst, &["--at", &t1]);
    assert_eq!(r["copied"].as_array().unwrap().len(), 2, "{r}");
    let copied: Vec<&str> = r["copied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert!(
        copied.contains(&ids[0].as_str()) && copied.contains(&ids[1].as_str()),
        "{r}"
    );

    // By id (a prefix); then the rest of host a: only the third is new.
    let r = copy_json(&env, &dst, &[&ids[2][..8]]);
    assert_eq!(r["copied"][0][0], ids[2].as_str(), "{r}");
    let r = copy_json(&env, &dst, &["--host", "a"]);
    assert_eq!(
        (r["copied"].as_array().unwrap().len(), &r["present"]),
        (0, &2.into()),
        "{r}"
    );

    // Typos: an id or a set that names nothing fails and copies nothing.
    // (An unknown set is a usage error, 2, as the README's table says.)
    for (args, want) in [(&["deadbeef"][..], 1), (&["--set", "nosuchset"][..], 2)] {
        let out = copy(&env, &dst, args);
        assert_eq!(code(&out), want, "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty());
    }
    assert_eq!(dst_snapshots(&env, &dst).len(), 3);
}

#[test]
fn the_destination_must_exist_and_open_with_its_own_password() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.backup(&[src.to_str().unwrap()]);

    // Nothing but init creates a repository.
    let missing = env.path("nowhere");
    let out = copy(&env, missing.to_str().unwrap(), &[]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(!missing.exists());

    // A wrong destination password.
    let dst = env.path("second-site").display().to_string();
    assert_eq!(code(&on_dst(&env, &dst, &["init"])), 0);
    let out = env
        .cmd()
        .env("STRATA_TO_PASSWORD", "wrong")
        .args(["copy", "--to", &dst])
        .output()
        .unwrap();
    assert_eq!(code(&out), 12, "{}", stderr(&out));

    // No destination password: the source's is never tried, even where it would open
    // the destination.
    let same = env.path("same-password").display().to_string();
    let out = env
        .cmd()
        .env("STRATA_REPOSITORY", &same)
        .args(["init"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env
        .std_cmd()
        .args(["copy", "--to", &same])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("STRATA_TO_PASSWORD"),
        "{}",
        stderr(&out)
    );

    // The password from a file and from a command.
    let file = env.path("to-password");
    fs::write(&file, format!("{OTHER}\n")).unwrap();
    let out = env
        .cmd()
        .args([
            "copy",
            "--to",
            &dst,
            "--to-password-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env
        .cmd()
        .args(["copy", "--to", &dst, "--json", "--to-password-command"])
        .arg(format!("cat {}", file.display()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["present"], 1, "{r}");
}

/// Garage (the source) to moto (the destination, another S3 implementation) through a
/// proxy that counts the destination's requests.
#[test]
fn garage_to_moto_resumes_after_a_kill_and_an_unchanged_copy_costs_a_handful() {
    let Some(env) = Env::s3() else {
        return;
    };
    let Some(moto) = moto() else {
        return;
    };
    let bucket = format!("copy-{}", &hex_id()[..12]);
    let (rt, s3) = moto_bucket(&moto, &bucket);
    let proxy = Proxy::start("s3-proxy", &moto, &[]);
    let dst = format!("s3:{}/{bucket}/site2", proxy.url_base);
    env.init();
    assert_eq!(code(&on_dst(&env, &dst, &["init"])), 0);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), noise(8 << 20, 10 + i)).unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);

    // Killed once its first packs are indexed at the destination.
    let mut child = env
        .std_cmd()
        .env("STRATA_TO_PASSWORD", OTHER)
        .args(["copy", "--to", &dst, "-q"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let indexed = || {
        let listed = rt
            .block_on(
                s3.list_objects_v2()
                    .bucket(&bucket)
                    .prefix("site2/index/")
                    .send(),
            )
            .unwrap();
        listed.key_count().unwrap_or(0) > 0
    };
    while !indexed() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it was killed"
        );
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert!(
        dst_snapshots(&env, &dst).is_empty(),
        "a killed copy wrote a snapshot"
    );

    // The rerun, beside a backup of the source and a prune of the destination: it sends
    // only what the killed run did not.
    let src2 = env.path("src2");
    fs::create_dir_all(&src2).unwrap();
    fs::write(src2.join("later"), noise(100_000, 99)).unwrap();
    let backup = env
        .std_cmd()
        .args(["backup", "-q", "--host", "other", src2.to_str().unwrap()])
        .spawn()
        .unwrap();
    let prune = env
        .std_cmd()
        .env("STRATA_REPOSITORY", &dst)
        .env("STRATA_PASSWORD", OTHER)
        .env("STRATA_CACHE_DIR", env.path("dst-pruner"))
        .args(["prune", "-q"])
        .spawn()
        .unwrap();
    let rerun = copy_json(&env, &dst, &["--host", &strata::hostname()]);
    assert!(backup.wait_with_output().unwrap().status.success());
    assert!(prune.wait_with_output().unwrap().status.success());
    let total = 5 * (8u64 << 20);
    assert_eq!(rerun["copied"].as_array().unwrap().len(), 1, "{rerun}");
    assert!(
        rerun["bytes_added"].as_u64().unwrap() < total,
        "the rerun sent everything again: {rerun}"
    );
    assert_destination_restores(&env, &dst, &src, &[]);

    // The other host's snapshot; then nothing new: a handful of requests on each side.
    copy_json(&env, &dst, &[]);
    let (garage_before, moto_before) = (garage_requests(), proxy_requests(&proxy));
    let unchanged = copy_json(&env, &dst, &[]);
    let garage = garage_requests() - garage_before;
    let moto = proxy_requests(&proxy) - moto_before;
    eprintln!("an unchanged copy: {garage} requests at the source, {moto} at the destination");
    assert_eq!(
        unchanged["copied"].as_array().unwrap().len(),
        0,
        "{unchanged}"
    );
    assert!(
        garage <= 6 && moto <= 6,
        "source {garage}, destination {moto}"
    );
    assert_destination_restores(&env, &dst, &src2, &["--host", "other"]);
}

fn proxy_requests(proxy: &Proxy) -> u64 {
    proxy_get(proxy, "/_proxy/requests").trim().parse().unwrap()
}

/// Every S3 request the test Garage has answered.
fn garage_requests() -> u64 {
    let admin = std::env::var("STRATA_TEST_GARAGE_ADMIN").expect("STRATA_TEST_GARAGE_ADMIN");
    garage_by_operation_at(&admin).values().sum()
}
