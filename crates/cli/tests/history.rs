//! `find` and `diff`, and the runbook's first recovery scenario with them: a subtree
//! damaged in the source, its last good version found, and exactly that subtree restored.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

/// Hour `h` of 2026-03-01, as --time and --at take it.
fn hour(h: u32) -> String {
    format!("2026-03-01T{h:02}:00:00Z")
}

fn find_collapses_versions_to_their_changes(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("tasks")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    let s = src.to_str().unwrap();
    for h in 0..24 {
        // queue.json changes at hours 5 and 12; unrelated files change every hour.
        let version = match h {
            0..5 => "v1",
            5..12 => "v2",
            _ => "v3",
        };
        // Written only when it changes, as a service writes its state.
        if matches!(h, 0 | 5 | 12) {
            fs::write(src.join("tasks/queue.json"), version).unwrap();
        }
        fs::write(src.join("other/log"), format!("hour {h}")).unwrap();
        env.backup(&[s, "--time", &hour(h)]);
    }
    let v = env.json(&["find", "queue.json"]);
    let versions = v.as_array().unwrap();
    assert_eq!(versions.len(), 3, "{v}");
    let spans: Vec<(u64, u64, &str, &str)> = versions
        .iter()
        .map(|x| {
            (
                x["size"].as_u64().unwrap(),
                x["snapshots"].as_u64().unwrap(),
                x["first"]["time"].as_str().unwrap(),
                x["last"]["time"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans[0].1, 5);
    assert_eq!(spans[1].1, 7);
    assert_eq!(spans[2].1, 12);
    assert!(
        spans[1].2.starts_with("2026-03-01T05:00:00")
            && spans[1].3.starts_with("2026-03-01T11:00:00"),
        "{v}"
    );
    assert!(versions
        .iter()
        .all(|x| x["path"].as_str().unwrap().ends_with("tasks/queue.json")));
    // Within a window, only the versions seen there.
    let v = env.json(&[
        "find",
        "queue.json",
        "--since",
        &hour(6),
        "--until",
        &hour(13),
    ]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    // Patterns with a slash match whole paths; nothing matched is a failure.
    let v = env.json(&["find", "*/tasks/*"]);
    assert_eq!(v.as_array().unwrap().len(), 3);
    let out = env.run(&["find", "no-such-name"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("nothing matched"), "{}", stderr(&out));
}

fn diff_names_every_kind_of_change(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("keep/deep")).unwrap();
    fs::create_dir_all(src.join("gone/inner")).unwrap();
    fs::write(src.join("keep/deep/same"), "unchanged").unwrap();
    fs::write(src.join("keep/content"), "before").unwrap();
    fs::write(src.join("keep/mode"), "m").unwrap();
    fs::write(src.join("gone/inner/a"), "12345").unwrap();
    std::os::unix::fs::symlink("old-target", src.join("keep/link")).unwrap();
    let s = src.to_str().unwrap();
    let a = env.backup(&[s]);
    fs::write(src.join("keep/content"), "after, longer").unwrap();
    fs::set_permissions(src.join("keep/mode"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("keep/link")).unwrap();
    std::os::unix::fs::symlink("new-target", src.join("keep/link")).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("keep/new"), "added!").unwrap();
    let b = env.backup(&[s]);
    let (ia, ib) = (
        a["snapshot_id"].as_str().unwrap(),
        b["snapshot_id"].as_str().unwrap(),
    );
    let v = env.json(&["diff", ia, ib]);
    let change = |suffix: &str| {
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(suffix))
            .cloned()
            .unwrap_or_else(|| panic!("no change for {suffix}: {v}"))
    };
    assert_eq!(change("keep/new")["change"], "added");
    assert_eq!(change("gone")["change"], "removed");
    assert_eq!(change("gone/inner/a")["change"], "removed");
    let c = change("keep/content");
    assert_eq!(c["change"], "changed");
    assert!(
        c["what"].as_array().unwrap().contains(&"content".into()),
        "{c}"
    );
    assert!(change("keep/mode")["what"]
        .as_array()
        .unwrap()
        .contains(&"mode".into()));
    assert!(change("keep/link")["what"]
        .as_array()
        .unwrap()
        .contains(&"target".into()));
    assert!(
        !v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"].as_str().unwrap().contains("deep")),
        "an unchanged subtree is not listed: {v}"
    );
    assert_eq!(v["added"], 1);
    assert_eq!(v["removed"], 3, "{v}");
    assert_eq!(v["bytes_added"], 6 + 7, "{v}");
    assert_eq!(v["bytes_removed"], 5, "{v}");
    // Below one path only.
    let below = format!("{s}/keep");
    let v = env.json(&["diff", ia, ib, &below]);
    assert_eq!(v["removed"], 0, "{v}");
    assert_eq!(v["added"], 1, "{v}");
    let text = env.ok(&["diff", ia, ib]);
    assert!(
        text.contains("+ ") && text.contains("- ") && text.contains("M "),
        "{text}"
    );
    // One file (issue 25, item 15): its own change is the answer.
    let v = env.json(&["diff", ia, ib, &format!("{s}/keep/content")]);
    assert_eq!(v["changed"], 1, "{v}");
    assert_eq!(v["changes"][0]["path"], format!("{s}/keep/content"), "{v}");
    let text = env.ok(&["diff", ia, ib, &format!("{s}/keep/content")]);
    assert!(text.contains("M ") && text.contains("1 changed"), "{text}");
    // A path removed in the second: shown as removed, with what was below it.
    let v = env.json(&["diff", ia, ib, &format!("{s}/gone")]);
    assert_eq!(v["removed"], 3, "{v}");
    assert_eq!(v["changes"][0]["path"], format!("{s}/gone"), "{v}");
    assert_eq!(v["changes"][0]["change"], "removed", "{v}");
    // Added, the other way round; in neither: an error naming it.
    let v = env.json(&["diff", ib, ia, &format!("{s}/gone/inner/a")]);
    assert_eq!(v["added"], 1, "{v}");
    let out = env.run(&["diff", ia, ib, &format!("{s}/never")]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("never"), "{}", stderr(&out));
}

/// One path backed up from two hosts in turn (issue 25, item 16): two histories, one per
/// host, each a single version, not six versions without hosts.
fn find_keeps_lineages_apart(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("hostname");
    let s = src.to_str().unwrap();
    for round in 0..3 {
        for host in ["alpha", "beta"] {
            fs::write(&file, host).unwrap();
            set_mtime(&file, 1_700_000_000, 0);
            env.backup(&[
                s,
                "--host",
                host,
                "--time",
                &hour(round * 2 + (host == "beta") as u32),
            ]);
        }
    }
    let v = env.json(&["find", "hostname"]);
    let versions = v.as_array().unwrap();
    assert_eq!(versions.len(), 2, "{v}");
    let mut hosts: Vec<&str> = versions
        .iter()
        .map(|x| {
            assert_eq!(x["snapshots"], 3, "{x}");
            assert_eq!(x["first"]["host"], x["last"]["host"], "{x}");
            x["first"]["host"].as_str().unwrap()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["alpha", "beta"]);
    let text = env.ok(&["find", "hostname"]);
    assert!(
        text.contains("host:alpha:") && text.contains("host:beta:"),
        "{text}"
    );
    // An empty pattern is refused, not a match for everything.
    let out = env.run(&["find", ""]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("empty pattern"), "{}", stderr(&out));
}

/// Runbook scenario 1: a subtree of the critical set is damaged in the source; `find`
/// names its last good version; `restore --set critical --at T --include` brings back
/// exactly that subtree, byte for byte, and nothing else.
fn a_damaged_subtree_is_found_and_restored_from_its_last_good_version(env: &Env) {
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let c = &two_sets_config(env, &app, &metrics, "hourly = 24");
    fs::create_dir_all(app.join("tasks")).unwrap();
    fs::create_dir_all(app.join("config")).unwrap();
    env.init();
    let good: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("task-{i}.json"), noise(10_000 + i, i as u64)))
        .collect();
    for h in 0..6 {
        if h == 0 {
            for (name, content) in &good {
                fs::write(app.join("tasks").join(name), content).unwrap();
            }
        } else if h == 4 {
            // Damaged at hour 4: hours 4 and 5 back up the damage.
            for (name, _) in &good {
                fs::write(app.join("tasks").join(name), b"\0\0corrupt").unwrap();
            }
        }
        fs::write(app.join("config/app.toml"), format!("hour = {h}")).unwrap();
        fs::write(metrics.join("m"), format!("metric {h}")).unwrap();
        env.ok(&["--config", c, "backup", "--all", "--time", &hour(h)]);
    }
    // Which versions of task-0.json are there, and until when was it good?
    let v = env.json(&["--config", c, "find", "--set", "critical", "task-0.json"]);
    let versions = v.as_array().unwrap();
    assert_eq!(versions.len(), 2, "{v}");
    let last_good = versions[0]["last"]["time"].as_str().unwrap().to_string();
    assert!(last_good.starts_with("2026-03-01T03:00:00"), "{v}");
    // Restore that subtree as of then, into a fresh target.
    let t = env.path("recovered");
    let include = format!("{}/tasks", app.display());
    env.ok(&[
        "--config",
        c,
        "restore",
        "--set",
        "critical",
        "--at",
        &last_good,
        "--include",
        &include,
        "--target",
        t.to_str().unwrap(),
    ]);
    let root = restored(&t, &app);
    for (name, content) in &good {
        assert_eq!(
            &fs::read(root.join("tasks").join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    assert!(!root.join("config").exists(), "only the subtree asked for");
    assert!(!restored(&t, &metrics).exists(), "only the set asked for");
}

conformance!(
    find_keeps_lineages_apart,
    find_collapses_versions_to_their_changes,
    diff_names_every_kind_of_change,
    a_damaged_subtree_is_found_and_restored_from_its_last_good_version
);
