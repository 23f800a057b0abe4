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
    let c = two_sets_config(env, &a, &b, "last = 5");
    fs::create_dir_all(a.join("tasks")).unwrap();
    fs::write(a.join("tasks/t1"), "task one v1").unwrap();
    // Above the inline limit: check --set must find it in a data pack.
    fs::write(b.join("m"), "metric\n".repeat(40)).unwrap();
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
        "metric\n".repeat(40)
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
    let nothing = &[
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
    ];
    let out = env.run(nothing);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("nothing matched") && err.contains("set critical"),
        "{err}"
    );
    // Hostile pass 5 (F9): nor is an empty target left behind; one that was there stays.
    assert!(!t.exists(), "an empty target left");
    fs::create_dir(&t).unwrap();
    let out = env.run(nothing);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(t.is_dir(), "the operator's target went");
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
    // A backup of the app's tasks outside any set: --all-sets would restore it and set
    // critical into the same place, one over the other; refused, nothing written.
    let tasks = env.path("app").join("tasks");
    env.ok(&["backup", tasks.to_str().unwrap()]);
    let over = env.path("over");
    let out = env.run(&[
        "--config",
        &c,
        "restore",
        "--all-sets",
        "latest",
        "--target",
        over.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("critical")
            && err.contains("one inside the other")
            && err.contains("would overwrite each other"),
        "{err}"
    );
    assert!(!over.exists(), "nothing restored");

    // A set name mistyped, or given among paths, is said as such; nothing is backed up.
    let before = env.objects("snapshots").len();
    for (args, says) in [
        (
            &["critcal"][..],
            "no backup set of that name in the config file (sets: critical, metrics)",
        ),
        (
            &["critical", "metrcs"][..],
            "critical is a backup set, given among paths",
        ),
    ] {
        let out = env.run(&[&["--config", &c, "backup"][..], args].concat());
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{err}");
    }
    // Forget of a set the config lacks: a usage error naming the sets (hostile pass,
    // issue 26), nothing removed.
    let out = env.run(&["--config", &c, "forget", "critcal", "--keep-last", "1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sets: critical, metrics"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.objects("snapshots").len(), before);
    assert_eq!(env.objects("snapshots").len(), before);
    // A set named twice is backed up once.
    env.ok(&["--config", &c, "backup", "metrics", "metrics"]);
    assert_eq!(env.objects("snapshots").len(), before + 1);
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

/// Runbook scenario 3: 24 hourly snapshots of two sets (one on the hour, one at half past),
/// across the night the clocks go back in Berlin; every `--at` picks, per set, the newest
/// snapshot at or before the instant: on the hour, between, before the first, and in the
/// repeated local hour (which means its first occurrence).
fn point_in_time_picks_per_set_across_a_dst_fold(env: &Env) {
    let (a, b) = (env.path("app"), env.path("metrics"));
    let c = two_sets_config(env, &a, &b, "hourly = 48");
    env.init();
    for h in 0..24 {
        fs::write(a.join("hour"), format!("{h}")).unwrap();
        fs::write(b.join("hour"), format!("{h}")).unwrap();
        let (on, half) = (
            format!("2026-10-25T{h:02}:00:00Z"),
            format!("2026-10-25T{h:02}:30:00Z"),
        );
        env.ok(&["--config", &c, "backup", "critical", "--time", &on]);
        env.ok(&["--config", &c, "backup", "metrics", "--time", &half]);
    }
    // Each set's pick for an instant, as (set, UTC hour:minute) of the snapshot chosen.
    let picks = |at: &str| -> Result<Vec<(String, String)>, String> {
        let t = env.path("t");
        let _ = fs::remove_dir_all(&t);
        let out = env
            .std_cmd()
            .env("TZ", "Europe/Berlin")
            .args([
                "--config",
                &c,
                "--json",
                "restore",
                "--all-sets",
                "--dry-run",
                "--at",
                at,
            ])
            .args(["--target", t.to_str().unwrap()])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(stderr(&out));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = v.as_array().cloned().unwrap_or_else(|| vec![v]);
        Ok(list
            .iter()
            .map(|r| {
                let time = chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&chrono::Utc);
                (
                    r["set"].as_str().unwrap().to_string(),
                    time.format("%H:%M").to_string(),
                )
            })
            .collect())
    };
    let picks = |at: &str| {
        picks(at).map(|mut v| {
            v.sort();
            v
        })
    };
    let pair = |x: &str, y: &str| vec![("critical".into(), x.into()), ("metrics".into(), y.into())];
    assert_eq!(
        picks("2026-10-25T05:00:00Z").unwrap(),
        pair("05:00", "04:30")
    );
    assert_eq!(
        picks("2026-10-25T05:15:00Z").unwrap(),
        pair("05:00", "04:30")
    );
    assert_eq!(
        picks("2026-10-25T05:45:00+00:00").unwrap(),
        pair("05:00", "05:30")
    );
    // Before the first snapshot: an error naming the oldest.
    let err = picks("2026-10-24T23:59:00Z").unwrap_err();
    assert!(err.contains("no snapshot is as old as"), "{err}");
    // 02:40 Berlin time happens twice that night (00:40Z in summer time, 01:40Z after the
    // clocks went back): the first is taken.
    assert_eq!(picks("2026-10-25 02:40").unwrap(), pair("00:00", "00:30"));
    // 03:10 Berlin is after the fold: 02:10Z.
    assert_eq!(picks("2026-10-25 03:10").unwrap(), pair("02:00", "01:30"));
    // Only one set existed at 00:10Z.
    assert_eq!(
        picks("2026-10-25T00:10:00Z").unwrap(),
        vec![("critical".into(), "00:00".into())]
    );
}

/// Runbook scenario 2: a new machine with only the repository and the password lists the
/// snapshots and restores every set as of an instant; the result matches the sources then.
fn a_bare_machine_restores_the_whole_service_as_of_an_instant(env: &Env) {
    let c = two_sets(env);
    let (a, b) = (env.path("app"), env.path("metrics"));
    // The state the restore must reproduce: both sets as backed up by 11:45.
    let expect = env.path("expected");
    fs::create_dir_all(&expect).unwrap();
    for (src, name) in [(&a, "app"), (&b, "metrics")] {
        copy_tree(src, &expect.join(name));
    }
    fs::write(a.join("tasks/t1"), "changed after the instant").unwrap();
    env.ok(&[
        "--config",
        &c,
        "backup",
        "critical",
        "--time",
        "2026-03-01T12:00:00Z",
    ]);
    // The new machine: no cache, no config with sets, nothing but repository and password.
    fs::remove_dir_all(&env.cache).unwrap();
    let started = std::time::Instant::now();
    let list = env.ok(&["snapshots"]);
    assert!(list.contains("4 snapshot(s)"), "{list}");
    let t = env.path("rebuilt");
    let v = env.json(&[
        "restore",
        "--all-sets",
        "--at",
        "2026-03-01T11:45:00Z",
        "--target",
        t.to_str().unwrap(),
        "--verify",
    ]);
    eprintln!(
        "bare-machine restore of two sets took {:?}",
        started.elapsed()
    );
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    for (src, name) in [(&a, "app"), (&b, "metrics")] {
        let diffs = compare_trees(&expect.join(name), &restored(&t, src));
        assert!(diffs.is_empty(), "{name}: {diffs:#?}");
    }
}

/// `check --set`: the snapshots of one set are walked and only the data packs they use are
/// read, so damage in another set's data does not fail it; the damaged set's check does.
fn check_covers_one_set_when_asked(env: &Env) {
    let c = two_sets(env);
    let pack = pack_of_file_in_set(env, "metrics", &env.path("metrics").join("m"));
    let len = env.read_object("data", &pack).len();
    env.flip_byte("data", &pack, len / 4);
    let critical = env.run(&[
        "--config",
        &c,
        "--json",
        "check",
        "--read-data",
        "--set",
        "critical",
    ]);
    assert_eq!(
        code(&critical),
        0,
        "{}",
        String::from_utf8_lossy(&critical.stdout)
    );
    let metrics = env.run(&[
        "--config",
        &c,
        "--json",
        "check",
        "--read-data",
        "--set",
        "metrics",
    ]);
    assert_eq!(code(&metrics), 1);
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&critical.stdout).unwrap(),
        serde_json::from_slice(&metrics.stdout).unwrap(),
    );
    assert!(b.to_string().contains(&pack), "{b}");
    let all = env.objects("data").len() as u64;
    assert!(a["data_packs_read"].as_u64().unwrap() < all, "{a}");
    assert_eq!(b["snapshots"], 1, "{b}");
}

conformance!(
    sets_pick_per_set_and_refuse_to_guess,
    an_empty_restore_fails_and_errors_name_the_snapshot,
    output_into_a_closed_pipe_ends_quietly,
    point_in_time_picks_per_set_across_a_dst_fold,
    a_bare_machine_restores_the_whole_service_as_of_an_instant,
    check_covers_one_set_when_asked
);
