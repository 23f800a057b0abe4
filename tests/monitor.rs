//! What runs tell the outside: the Prometheus metrics file (checked with the real
//! `promtool` and parsed back) and the sets' on-success / on-failure hooks.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use strata::metrics::Samples;

/// `promtool check metrics` on the file: Prometheus's own parser and linter.
fn promtool_accepts(file: &Path) {
    let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(file).unwrap())
        .output()
    else {
        // tools/test installs it; a bare `cargo test` on a machine without it says so.
        eprintln!("NOT RUN: promtool (Debian package prometheus) is missing");
        return;
    };
    assert!(
        out.status.success(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(file).unwrap()
    );
}

fn open_dir(p: &Path) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
}

fn metrics_and_hooks_follow_every_run(env: &Env) {
    // Unprivileged, so that a file can be unreadable.
    let env = &env.unprivileged();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(env, &app, &metrics, "last = 5");
    for d in [&app, &metrics] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out_dir = env.path("out");
    open_dir(&out_dir);
    let prom = out_dir.join("strata.prom");
    let hooks = out_dir.join("hooks.log");
    let text = fs::read_to_string(&config).unwrap();
    let text = text
        .replace(
            "[sets.critical]\n",
            &format!(
                "[sets.critical]\non-success = 'echo \"ok $STRATA_SET $STRATA_SNAPSHOT_ID \
                 $STRATA_EXIT_CODE $STRATA_FILES_NEW\" >> {hooks:?}'\n\
                 on-failure = 'echo \"fail $STRATA_SET $STRATA_EXIT_CODE\" >> {hooks:?}'\n"
            ),
        )
        .replace(
            "[sets.metrics]\n",
            &format!(
                "[sets.metrics]\non-failure = 'echo \"fail $STRATA_SET $STRATA_EXIT_CODE \
                 $STRATA_FILES_ERRORS\" >> {hooks:?}; exit 7'\n"
            ),
        );
    fs::write(&config, format!("metrics-file = {prom:?}\n{text}")).unwrap();
    let c = config.as_str();
    fs::write(app.join("a.txt"), "alpha").unwrap();
    fs::write(app.join("b.txt"), "beta").unwrap();
    fs::write(metrics.join("m.csv"), "1,2\n").unwrap();
    fs::write(metrics.join("locked"), "no").unwrap();
    fs::set_permissions(metrics.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    env.init();

    // One set reads everything, the other misses a file: exit 3, both recorded.
    let before = strata::timespec::now().timestamp() as f64;
    let out = env.run(&["--config", c, "--json", "backup", "--all"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("on-failure hook") && err.contains("exit status: 7"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let critical_id = v[0]["snapshot_id"].as_str().unwrap().to_string();
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    let get = |name: &str, labels: &[(&str, &str)]| s.get(name, labels);
    let set = |n: &'static str| [("set", n)];
    assert_eq!(
        get("strata_backup_last_exit_code", &set("critical")),
        Some(0.0)
    );
    assert_eq!(
        get("strata_backup_last_exit_code", &set("metrics")),
        Some(3.0)
    );
    let success = get(
        "strata_backup_last_success_timestamp_seconds",
        &set("critical"),
    )
    .unwrap();
    assert!(success >= before, "{success} < {before}");
    assert_eq!(
        get(
            "strata_backup_last_success_timestamp_seconds",
            &set("metrics")
        ),
        None,
        "a backup that missed a file is no success"
    );
    assert!(get(
        "strata_backup_last_snapshot_timestamp_seconds",
        &set("metrics")
    )
    .is_some());
    let files =
        |s: &'static str, state| get("strata_backup_last_files", &[("set", s), ("state", state)]);
    assert_eq!(files("critical", "new"), Some(2.0));
    assert_eq!(files("metrics", "errors"), Some(1.0));
    // The files' 9 bytes and the set's trees.
    assert!(get("strata_backup_last_added_bytes", &set("critical")).unwrap() >= 9.0);
    let runs = |s: &'static str, r| get("strata_backup_runs_total", &[("result", r), ("set", s)]);
    assert_eq!(runs("critical", "success"), Some(1.0));
    assert_eq!(runs("critical", "failure"), Some(0.0));
    assert_eq!(runs("metrics", "partial"), Some(1.0));
    assert_eq!(get("strata_snapshots", &set("critical")), Some(1.0));
    promtool_accepts(&prom);
    let mode = fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the collector must be able to read it");
    let log = fs::read_to_string(&hooks).unwrap();
    assert!(
        log.contains(&format!("ok critical {critical_id} 0 2\n")),
        "{log}"
    );
    assert!(log.contains("fail metrics 3 1\n"), "{log}");

    // A failed backup (a wrong password): its set's failure is counted and its hook told;
    // the last success stays; the other set's series are kept as they were.
    let out = env
        .cmd()
        .env("STRATA_PASSWORD", "not the password")
        .args(["--config", c, "backup", "critical"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        s.get("strata_backup_last_exit_code", &set("critical")),
        Some(12.0)
    );
    assert_eq!(
        s.get(
            "strata_backup_runs_total",
            &[("result", "failure"), ("set", "critical")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "strata_backup_last_success_timestamp_seconds",
            &set("critical")
        ),
        Some(success)
    );
    assert_eq!(
        s.get("strata_backup_last_exit_code", &set("metrics")),
        Some(3.0)
    );
    assert!(fs::read_to_string(&hooks)
        .unwrap()
        .contains("fail critical 12\n"));

    // forget, prune and check: their own series, and the repository's size.
    fs::write(app.join("a.txt"), "alpha 2").unwrap();
    env.ok(&["--config", c, "backup", "critical"]);
    env.ok(&[
        "--config",
        c,
        "forget",
        "critical",
        "--keep-last",
        "1",
        "--prune",
    ]);
    env.ok(&["--config", c, "check", "--read-data"]);
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        s.get("strata_forget_last_removed_snapshots", &[]),
        Some(1.0)
    );
    assert_eq!(s.get("strata_snapshots", &set("critical")), Some(1.0));
    assert_eq!(s.get("strata_snapshots", &set("metrics")), Some(1.0));
    assert!(s.get("strata_prune_last_timestamp_seconds", &[]).is_some());
    assert_eq!(s.get("strata_check_last_errors", &[]), Some(0.0));
    assert!(s.get("strata_check_last_read_bytes", &[]).unwrap() > 0.0);
    // Local repositories have no classes and count as STANDARD.
    let data = s
        .get(
            "strata_repository_bytes",
            &[("kind", "data"), ("storage_class", "STANDARD")],
        )
        .unwrap();
    let stored: u64 = env.objects("data").iter().map(|(_, n)| n).sum();
    assert_eq!(data, stored as f64);
    assert!(
        s.get("strata_repository_blobs", &[("kind", "data")])
            .unwrap()
            >= 3.0
    );
    promtool_accepts(&prom);
}

conformance!(metrics_and_hooks_follow_every_run);
