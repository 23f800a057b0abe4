//! Backup sets in the commands that pick snapshots: `latest` and `--at` choose per set, a
//! choice spanning sets is refused with the sets listed, `--set` narrows, `--all-sets`
//! restores the whole service as of one moment; an empty restore is a failure, errors name
//! the snapshot they looked in, and output into a closed pipe ends quietly.

#[macro_use]
mod common;

use std::fs;
use std::io::Read;

use common::*;

/// Two sets, `critical` (two snapshots) and `metrics` (one, newer), in one repository, with
/// a config naming them; returns the config path.
fn two_sets(env: &Env) -> String {
    let (a, b) = (env.path("app"), env.path("metrics"));
    fs::create_dir_all(a.join("tasks")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("tasks/t1"), "task one v1").unwrap();
    fs::write(b.join("m"), "metric").unwrap();
    let config = env.path("strata.toml");
    fs::write(
        &config,
        format!(
            "[sets.critical]\npaths = [{a:?}]\nkeep = {{ last = 5 }}\n\
             [sets.metrics]\npaths = [{b:?}]\nkeep = {{ last = 5 }}\n"
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap().to_string();
    env.init();
    env.ok(&[
        "--config",
        &c,
        "backup",
        "critical",
        "--time",
        "2026-03-01T10:00:00Z",
    ]);
    fs::write(a.join("tasks/t1"), "task one v2").unwrap();
    env.ok(&[
        "--config",
        &c,
        "backup",
        "critical",
        "--time",
        "2026-03-01T11:00:00Z",
    ]);
    env.ok(&[
        "--config",
        &c,
        "backup",
        "metrics",
        "--time",
        "2026-03-01T11:30:00Z",
    ]);
    c
}

fn sets_pick_per_set_and_refuse_to_guess(env: &Env) {
    let c = two_sets(env);
    let a = env.path("app");
    let t = env.path("t");
    let ts = t.to_str().unwrap();
    // `latest` spans two sets: refused, with both named.
    let out = env.run(&["--config", &c, "restore", "latest", "--target", ts]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("set critical") && err.contains("set metrics"),
        "{err}"
    );
    assert!(err.contains("--set") && err.contains("--all-sets"), "{err}");
    assert!(!t.exists(), "nothing restored");
    for cmd in ["ls", "cat"] {
        let out = env.run(&[
            "--config",
            &c,
            cmd,
            "latest",
            a.join("tasks/t1").to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 1, "{cmd}");
        assert!(
            stderr(&out).contains("2 lineages"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    // --set narrows; --at picks that set's newest at or before the instant.
    let got = env.ok(&[
        "--config",
        &c,
        "cat",
        "latest",
        "--set",
        "critical",
        a.join("tasks/t1").to_str().unwrap(),
    ]);
    assert_eq!(got, "task one v2");
    let at10 = env.path("at10");
    env.ok(&[
        "--config",
        &c,
        "restore",
        "--at",
        "2026-03-01T10:30:00Z",
        "--set",
        "critical",
        "--target",
        at10.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(restored(&at10, &a).join("tasks/t1")).unwrap(),
        "task one v1"
    );
    // --all-sets: each set's newest at or before the instant, into one target.
    let all = env.path("all");
    let v = env.json(&[
        "--config",
        &c,
        "restore",
        "--all-sets",
        "--at",
        "2026-03-01T11:45:00Z",
        "--target",
        all.to_str().unwrap(),
    ]);
    let sets: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["set"].as_str().unwrap())
        .collect();
    assert_eq!(sets, ["critical", "metrics"], "{v}");
    assert_eq!(
        fs::read_to_string(restored(&all, &a).join("tasks/t1")).unwrap(),
        "task one v2"
    );
    assert_eq!(
        fs::read_to_string(restored(&all, &env.path("metrics")).join("m")).unwrap(),
        "metric"
    );
    // Before metrics' first snapshot, --all-sets restores only what existed then.
    let early = env.path("early");
    let v = env.json(&[
        "--config",
        &c,
        "restore",
        "--all-sets",
        "--at",
        "2026-03-01T11:10:00Z",
        "--target",
        early.to_str().unwrap(),
    ]);
    assert_eq!(v["set"], "critical", "{v}");
    // `snapshots` shows and filters by set.
    let list = env.ok(&["--config", &c, "snapshots", "--set", "metrics"]);
    assert!(list.contains("1 snapshot(s)"), "{list}");
    let row = list.lines().nth(1).unwrap();
    assert_eq!(row.split_whitespace().nth(4), Some("metrics"), "{list}");
    // --latest N: the newest N of each set.
    let list = env.ok(&["--config", &c, "snapshots", "--latest", "1"]);
    assert!(list.contains("2 snapshot(s)"), "{list}");
    assert!(
        list.contains("11:00:00") && !list.contains("10:00:00"),
        "{list}"
    );
}

fn an_empty_restore_fails_and_errors_name_the_snapshot(env: &Env) {
    let c = two_sets(env);
    let t = env.path("t");
    let out = env.run(&[
        "--config",
        &c,
        "restore",
        "latest",
        "--set",
        "critical",
        "--include",
        "*/nothing/*",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("nothing matched") && err.contains("set critical"),
        "{err}"
    );
    // A path not in the snapshot: the error says which snapshot was searched.
    let out = env.run(&[
        "--config",
        &c,
        "ls",
        "latest",
        "--set",
        "metrics",
        "/no/such/path",
    ]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("does not exist in the snapshot") && err.contains("set metrics"),
        "{err}"
    );
}

/// `strata ls … | head -c 1`: the reader goes away, strata ends by SIGPIPE as filters do,
/// without a panic or an error message.
fn output_into_a_closed_pipe_ends_quietly(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        fs::write(src.join(format!("f{i:05}")), "x").unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    for args in [
        &["ls", "latest"][..],
        &["snapshots"][..],
        &["--json", "ls", "latest"][..],
    ] {
        let mut child = env
            .std_cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The pipe's reading end is closed here.
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
        assert_ne!(out.status.code(), Some(101), "{args:?}");
    }
}

conformance!(
    sets_pick_per_set_and_refuse_to_guess,
    an_empty_restore_fails_and_errors_name_the_snapshot,
    output_into_a_closed_pipe_ends_quietly
);
