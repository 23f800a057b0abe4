//! The config file: repository, password command, named sets for backup and forget.
#[macro_use]
mod common;

use std::fs;

use common::*;

fn write_config(env: &Env) -> std::path::PathBuf {
    let a = env.path("data/critical");
    let b = env.path("data/metrics");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("tasks.json"), "[1, 2, 3]").unwrap();
    fs::write(a.join("scratch.tmp"), "junk").unwrap();
    fs::write(b.join("m.csv"), "t,v\n1,2\n").unwrap();
    let cfg = env.path("strata.toml");
    fs::write(
        &cfg,
        format!(
            r#"
repository = "{repo}"
password-command = "echo '{PASSWORD}'"

[sets.critical]
paths = ["{a}"]
exclude = ["*.tmp"]
tags = ["critical"]
keep = {{ last = 2 }}

[sets.metrics]
paths = ["{b}"]
keep = {{ daily = 90 }}
data-storage-class = "STANDARD_IA"
"#,
            repo = env.repo,
            a = a.display(),
            b = b.display()
        ),
    )
    .unwrap();
    cfg
}

/// strata with only the config file: no repository or password in the environment.
fn with_config(env: &Env, cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    env.cmd()
        .env_remove("STRATA_REPOSITORY")
        .env_remove("STRATA_PASSWORD")
        .env("STRATA_CONFIG", cfg)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sets_from_the_config_file_for_backup_and_forget(env: &Env) {
    let cfg = write_config(env);
    ok(with_config(env, &cfg, &["init"]));
    let all: serde_json::Value =
        serde_json::from_str(&ok(with_config(env, &cfg, &["--json", "backup", "--all"]))).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let snaps: serde_json::Value =
        serde_json::from_str(&ok(with_config(env, &cfg, &["--json", "snapshots"]))).unwrap();
    let mut sets: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["set"].as_str().unwrap())
        .collect();
    sets.sort();
    assert_eq!(sets, ["critical", "metrics"]);
    let critical = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["set"] == "critical")
        .unwrap();
    assert_eq!(critical["tags"][0], "critical");
    // The set's excludes applied.
    let listing = ok(with_config(
        env,
        &cfg,
        &["ls", &critical["id"].as_str().unwrap()[..12]],
    ));
    assert!(
        listing.contains("tasks.json") && !listing.contains("scratch.tmp"),
        "{listing}"
    );

    // One set by name; a second run of it is incremental against its own parent.
    let one: serde_json::Value = serde_json::from_str(&ok(with_config(
        env,
        &cfg,
        &["--json", "backup", "critical"],
    )))
    .unwrap();
    assert_eq!(one["set"], "critical");
    assert_eq!(one["files_unchanged"], 1);
    assert_eq!(one["parent"], critical["id"]);
    // Flags override the file: tags replace the set's.
    let tagged: serde_json::Value = serde_json::from_str(&ok(with_config(
        env,
        &cfg,
        &["--json", "backup", "critical", "--tag", "manual"],
    )))
    .unwrap();
    let snaps: serde_json::Value = serde_json::from_str(&ok(with_config(
        env,
        &cfg,
        &["--json", "snapshots", "--tag", "manual"],
    )))
    .unwrap();
    assert_eq!(snaps[0]["id"], tagged["snapshot_id"]);

    // forget --all: critical keeps its last 2 of 3, metrics keeps its one.
    let plan: serde_json::Value =
        serde_json::from_str(&ok(with_config(env, &cfg, &["--json", "forget", "--all"]))).unwrap();
    let removed: usize = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["remove"].as_array().unwrap().len())
        .sum();
    assert_eq!(removed, 1);
    let left: serde_json::Value =
        serde_json::from_str(&ok(with_config(env, &cfg, &["--json", "snapshots"]))).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 3);
    // Command-line keep flags override a set's policy.
    ok(with_config(
        env,
        &cfg,
        &["forget", "critical", "--keep-last", "1"],
    ));
    let left: serde_json::Value =
        serde_json::from_str(&ok(with_config(env, &cfg, &["--json", "snapshots"]))).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 2);
    // Neither a set nor a path: a usage error that names the sets.
    let out = with_config(env, &cfg, &["backup", "nonexistent-set-or-path"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no backup set of that name"),
        "{}",
        stderr(&out)
    );
}

/// A set with a bad exclude pattern stops `backup --all` before any set is backed up, not
/// half-way through.
fn a_bad_pattern_in_any_set_is_refused_before_anything_is_written(env: &Env) {
    env.init();
    let cfg = write_config(env);
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(
        &cfg,
        format!("{text}\n[sets.zz]\npaths = [\"/tmp\"]\nexclude = [\"a[\"]\n"),
    )
    .unwrap();
    let out = with_config(env, &cfg, &["backup", "--all"]);
    // A bad pattern is a bad argument (README, exit codes).
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("excludes of set zz"),
        "{}",
        stderr(&out)
    );
    assert!(
        env.objects("snapshots").is_empty(),
        "a set was backed up first"
    );
}

/// Hostile pass 8: a relative set path named another tree from each cwd cron started in.
fn a_relative_set_path_is_refused(env: &Env) {
    env.init();
    let cfg = write_config(env);
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("{text}\n[sets.rel]\npaths = [\"src\"]\n")).unwrap();
    let out = with_config(env, &cfg, &["backup", "rel"]);
    // An invalid config file, as any other (README, exit codes).
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"src\" is relative"),
        "{}",
        stderr(&out)
    );
    assert!(env.objects("snapshots").is_empty());
}

fn invalid_config_files_are_named_with_line_and_key(env: &Env) {
    let cfg = env.path("bad.toml");
    fs::write(
        &cfg,
        "repository = \"/x\"\n[sets.a]\npaths = [\"/tmp\"]\nretain = { daily = 3 }\n",
    )
    .unwrap();
    let out = with_config(env, &cfg, &["snapshots"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("line 4") && err.contains("retain"),
        "{err}"
    );
    // An explicit config file that does not exist is an error too.
    let out = with_config(env, &env.path("missing.toml"), &["snapshots"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}

conformance!(
    a_bad_pattern_in_any_set_is_refused_before_anything_is_written,
    a_relative_set_path_is_refused,
    sets_from_the_config_file_for_backup_and_forget,
    invalid_config_files_are_named_with_line_and_key
);
