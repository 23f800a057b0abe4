//! `forget`: retention policies applied per group, dry runs, and what stays restorable.
#[macro_use]
mod common;

use std::fs;

use common::*;

fn ids(v: &serde_json::Value, key: &str) -> Vec<String> {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
        })
        .collect()
}

fn forget_by_policy_per_group_with_dry_run(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let s = src.to_str().unwrap();
    // Ten days, two snapshots a day (the tests run with TZ=UTC), on host a; one on host b.
    for day in 1..=10 {
        for hour in [6, 18] {
            fs::write(src.join("state"), format!("day {day} hour {hour}")).unwrap();
            env.backup(&[
                s,
                "--host",
                "a",
                "--time",
                &format!("2026-03-{day:02}T{hour:02}:00:00Z"),
            ]);
        }
    }
    env.backup(&[
        s,
        "--host",
        "b",
        "--time",
        "2026-03-01T00:00:00Z",
        "--tag",
        "golden",
    ]);
    assert_eq!(env.objects("snapshots").len(), 21);

    let dry = env.json(&[
        "forget",
        "--keep-daily",
        "3",
        "--keep-tag",
        "golden",
        "--dry-run",
    ]);
    assert_eq!(
        env.objects("snapshots").len(),
        21,
        "a dry run removes nothing"
    );
    assert_eq!(ids(&dry, "keep").len(), 4);
    assert_eq!(ids(&dry, "remove").len(), 17);
    let groups = dry["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let a = groups
        .iter()
        .find(|g| g["group"].as_str().unwrap().starts_with("host a"))
        .unwrap();
    let kept_times: Vec<&str> = a["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["time"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept_times,
        [
            "2026-03-08T18:00:00+00:00",
            "2026-03-09T18:00:00+00:00",
            "2026-03-10T18:00:00+00:00"
        ]
    );
    assert_eq!(a["keep"][2]["reasons"][0], "daily 1");

    let real = env.json(&["forget", "--keep-daily", "3", "--keep-tag", "golden"]);
    assert_eq!(ids(&real, "keep"), ids(&dry, "keep"));
    let left: Vec<String> = env
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected = ids(&dry, "keep");
    expected.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, expected);

    // What is kept still restores, and the repository checks clean.
    let target = env.path("r");
    env.ok(&[
        "restore",
        "--at",
        "2026-03-09T20:00:00Z",
        "--host",
        "a",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(restored(&target, &src).join("state")).unwrap(),
        "day 9 hour 18"
    );
    env.assert_read_data_clean();
}

fn forget_refuses_without_a_rule(env: &Env) {
    env.init();
    let out = env.run(&["forget"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("no --keep-* rule"),
        "{}",
        stderr(&out)
    );
}

/// An hourly `forget` prints a line per group, not every kept snapshot (cron mails it);
/// `-v` lists them, a dry run lists what would go; `prune --dry-run` tells what it would
/// delete, repack and mark apart.
fn forget_summarizes_per_group_and_prune_dry_run_says_what_it_would_do(env: &Env) {
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let c = &two_sets_config(env, &app, &metrics, "last = 2");
    env.init();
    for h in 0..5 {
        std::fs::write(app.join("f"), common::noise(50_000, h)).unwrap();
        env.ok(&[
            "--config",
            c,
            "backup",
            "critical",
            "--time",
            &format!("2026-03-01T{h:02}:00:00Z"),
        ]);
    }
    let dry = env.ok(&["--config", c, "forget", "critical", "--dry-run"]);
    assert!(
        dry.contains("set critical: keep 2 (last 2), would remove 3"),
        "{dry}"
    );
    assert_eq!(dry.matches("  remove  ").count(), 3, "{dry}");
    assert!(!dry.contains("  keep  "), "{dry}");
    let verbose = env.ok(&["--config", c, "forget", "critical", "--dry-run", "-v"]);
    assert_eq!(verbose.matches("  keep  ").count(), 2, "{verbose}");
    let done = env.ok(&["--config", c, "forget", "critical"]);
    assert!(
        done.contains("set critical: keep 2 (last 2), removed 3"),
        "{done}"
    );
    assert_eq!(
        done.lines().filter(|l| l.starts_with("  ")).count(),
        0,
        "{done}"
    );
    let plan = env.ok(&["prune", "--dry-run"]);
    assert!(plan.contains("dry run: of "), "{plan}");
    for part in ["would delete", "repack", "unused ("] {
        assert!(plan.contains(part), "{part}: {plan}");
    }
    let v = env.json(&["prune", "--dry-run"]);
    assert!(
        v["bytes_marked"].as_u64().unwrap() + v["bytes_repacked"].as_u64().unwrap() > 0,
        "{v}"
    );
}

/// `forget --snapshot ID`: exactly the snapshots named (a unique prefix will do), no
/// policy, with a dry run and `--prune`; an unknown id is an error and removes nothing.
fn forget_named_snapshots(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        fs::write(src.join("f"), noise(50_000, i)).unwrap();
        let v = env.backup(&[src.to_str().unwrap()]);
        ids.push(v["snapshot_id"].as_str().unwrap().to_string());
    }
    let out = env.run(&["forget", "--snapshot", &ids[0], "--keep-last", "1"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = env.run(&["forget", "--snapshot", "0000000000"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v = env.json(&["forget", "--dry-run", "--snapshot", &ids[0][..12]]);
    assert_eq!(v["removed"][0], ids[0].as_str(), "{v}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
    let v = env.json(&[
        "forget",
        "--snapshot",
        &ids[0][..12],
        "--snapshot",
        &ids[1],
        "--prune",
        "--instant-delete",
    ]);
    assert_eq!(v["removed"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["prune"]["packs_deleted"].as_u64().unwrap() > 0, "{v}");
    let left = env.json(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], ids[2].as_str());
    env.assert_read_data_clean();
}

conformance!(
    forget_by_policy_per_group_with_dry_run,
    forget_named_snapshots,
    forget_refuses_without_a_rule,
    forget_summarizes_per_group_and_prune_dry_run_says_what_it_would_do
);

/// Hostile pass 5 (F8): `--keep-tag critcal`, a typo, kept nothing and forgot every
/// snapshot (exit 0), where `--keep-last 0` is refused. A rule set that keeps none of a
/// lineage's snapshots is refused before anything goes, dry run or not.
#[test]
fn a_keep_tag_no_snapshot_carries_forgets_nothing() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("f"), format!("v{i}")).unwrap();
        env.backup(&["--tag", "critical", src.to_str().unwrap()]);
    }
    for dry in [true, false] {
        let mut args = vec!["forget", "--keep-tag", "critcal", "--prune"];
        if dry {
            args.push("--dry-run");
        }
        let out = env.run(&args);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("keep none of the 3 snapshot(s)"), "{err}");
    }
    let listed = env.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    // The right tag keeps them all.
    env.ok(&["forget", "--keep-tag", "critical"]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
}

/// Hostile pass 8: a forgotten snapshot's file put back by someone with access to the
/// storage (before prune, its data is still there) is not `latest` again: the listing
/// refuses it, naming why, and `check` reports it.
#[test]
fn a_forgotten_snapshot_put_back_is_refused() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("state"), "good").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    fs::write(src.join("state"), "ENCRYPTED-BY-RANSOMWARE").unwrap();
    let bad = env.backup(&[src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = env.path("repo/snapshots").join(&bad);
    let saved = fs::read(&file).unwrap();
    env.ok(&["forget", "--snapshot", &bad]);
    fs::write(&file, saved).unwrap();
    let out = env.run(&["snapshots", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stdout(&out).contains(&bad),
        "listed again: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("its file is back"),
        "{}",
        stderr(&out)
    );
    let state = src.join("state");
    let out = env.run(&["cat", "latest", state.to_str().unwrap()]);
    assert_eq!(stdout(&out), "good", "{}", stderr(&out));
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains(&bad[..8]) && all.contains("its file is back"),
        "{all}"
    );
}
