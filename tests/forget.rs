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

conformance!(
    forget_by_policy_per_group_with_dry_run,
    forget_refuses_without_a_rule
);
