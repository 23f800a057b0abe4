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
        not_run("promtool (Debian package prometheus) is missing");
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
    // Above the inline limit, so that the repository has data packs to measure.
    fs::write(app.join("a.txt"), "alpha\n".repeat(100)).unwrap();
    fs::write(app.join("b.txt"), "beta\n".repeat(100)).unwrap();
    fs::write(metrics.join("m.csv"), "1,2\n".repeat(100)).unwrap();
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
    fs::write(app.join("a.txt"), "alpha 2\n".repeat(100)).unwrap();
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

/// `check --read-data-budget` reads the packs verified least recently, never verified
/// first, and records it in the repository: twenty runs at 5% verify every pack, a damaged
/// pack stays damaged in the record until it is read whole again, and another machine
/// (no cache) sees the same state.
fn budgeted_checks_cover_every_pack_and_remember_damage(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // One data pack per backup, forty of about the same size.
    for i in 0..40 {
        fs::write(src.join(format!("f{i}")), noise(20_000, i)).unwrap();
        env.backup(&[src.to_str().unwrap()]);
    }
    let data = env.objects("data");
    assert_eq!(data.len(), 40);
    let mut read = 0;
    for run in 0..20 {
        let v = env.json(&["check", "--read-data-budget", "5%"]);
        read += v["data_packs_read"].as_u64().unwrap();
        assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
        if run == 0 {
            // 5% of forty packs of about the same size: two or three of them.
            let never = v["verification"]["never_verified"].as_u64().unwrap();
            assert!((37..=38).contains(&never), "{v}");
        }
    }
    assert!((40..=60).contains(&read), "{read} pack reads for 40 packs");
    let v = env.json(&["check"]);
    assert_eq!(v["verification"]["never_verified"], 0, "{v}");
    assert_eq!(
        v["verification"]["verified_recently"],
        v["verification"]["packs"]
    );
    // A pack damaged on the store: the budget that reads it finds it, and later checks
    // that do not read it still say so.
    let (victim, len) = data[7].clone();
    env.flip_byte("data", &victim, len as usize / 2);
    let mut found = false;
    for _ in 0..20 {
        let out = env.run(&["--json", "check", "--read-data-budget", "5%"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !v["problems"].as_array().unwrap().is_empty() {
            assert_eq!(code(&out), 1);
            found = true;
            break;
        }
    }
    assert!(found, "twenty budgeted checks never read the damaged pack");
    fs::remove_dir_all(&env.cache).unwrap();
    let v = env.json(&["status", "--all"]);
    let damaged = v["verification"]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    assert_eq!(damaged[0], victim.as_str());
    // Known damage keeps every later check failing, whether or not it reads the pack.
    for args in [
        vec!["--json", "check", "--read-data-budget", "1B"],
        vec!["--json", "check"],
    ] {
        let out = env.run(&args);
        assert_eq!(code(&out), 1, "{args:?} passed over known damage");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["verification"]["damaged"].as_array().unwrap().len(),
            1,
            "{v}"
        );
        let problems = v["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p["object"] == format!("pack {victim}")
                    && p["reason"].as_str().unwrap().contains("earlier check")),
            "{v}"
        );
    }
    // Mended (the byte flipped back): the read that finds it whole clears it.
    env.flip_byte("data", &victim, len as usize / 2);
    env.assert_read_data_clean();
    env.ok(&["check"]);
}
/// `drill` restores the newest snapshot of each set (or a sample of its files), verifies
/// it, leaves nothing behind, and records it; `status` shows it and the sets' freshness and
/// exits 1 when a set is older than its max-age.
fn drills_and_status(env: &Env) {
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(env, &app, &metrics, "hourly = 24");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("[sets.metrics]\n", "[sets.metrics]\nmax-age = \"10m\"\n"),
    )
    .unwrap();
    let c = config.as_str();
    for i in 0..50 {
        fs::write(app.join(format!("f{i}")), noise(10_000, i)).unwrap();
    }
    fs::write(metrics.join("m"), "1").unwrap();
    env.init();
    // critical now; metrics an hour ago, past its 10-minute max-age.
    env.ok(&["--config", c, "backup", "critical"]);
    env.ok(&["--config", c, "backup", "metrics", "--time", "1h"]);
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let v = env.json(&[
        "--config",
        c,
        "drill",
        "critical",
        "--target",
        scratch.to_str().unwrap(),
    ]);
    let d = &v[0]["report"]["drill"];
    assert_eq!(d["files"], 50, "{v}");
    assert_eq!(d["bytes"], 500_000, "{v}");
    assert_eq!(d["errors"], 0, "{v}");
    assert_eq!(d["snapshot_bytes"], 500_000, "{v}");
    assert!(d["projected_secs"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "the drill left files"
    );
    let v = env.json(&[
        "--config",
        c,
        "drill",
        "critical",
        "--sample",
        "10%",
        "--target",
        scratch.to_str().unwrap(),
    ]);
    assert_eq!(v[0]["report"]["drill"]["files"], 5, "{v}");
    // From a machine without the cache: the records are in the repository.
    fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["--config", c, "--json", "status"]);
    assert_eq!(code(&out), 1, "metrics is stale: {}", stderr(&out));
    assert!(stderr(&out).contains("stale: metrics"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets = v["sets"].as_array().unwrap();
    let critical = sets.iter().find(|s| s["set"] == "critical").unwrap();
    assert_eq!(critical["stale"], false);
    assert_eq!(critical["max_age_secs"], 7200, "twice the hourly interval");
    assert_eq!(critical["last_drill"]["sample"], 0.1, "{v}");
    assert_eq!(critical["snapshot"]["files"], 50);
    let m = sets.iter().find(|s| s["set"] == "metrics").unwrap();
    assert_eq!(m["stale"], true);
    assert!(m["last_drill"].is_null());
    // Fresh enough when the operator allows more.
    let out = env.run(&["--config", c, "status", "--max-age", "2h"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("last drill"));
    // A damaged file in the snapshot fails the drill (exit 1) and says which.
    let pack = pack_of_file_in_set(env, "critical", &app.join("f3"));
    let len = env.read_object("data", &pack).len();
    env.flip_byte("data", &pack, len / 2);
    let out = env.run(&[
        "--config",
        c,
        "drill",
        "critical",
        "--target",
        scratch.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: set critical"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "the drill left files"
    );
}

/// `stats`: logical against unique bytes (deduplication), plaintext against stored
/// (compression), bytes and cost by storage class from the config's prices, and a set's
/// sudden growth flagged, in its output and in the metrics (also from the backup itself).
fn stats_report_savings_costs_and_anomalies(env: &Env) {
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(env, &app, &metrics, "hourly = 24");
    let prom = env.path("strata.prom");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!(
            "metrics-file = {prom:?}\n{text}[prices]\nSTANDARD = 0.023\n\
                 put-per-1000 = 0.005\nget-per-1000 = 0.0004\n"
        ),
    )
    .unwrap();
    let c = config.as_str();
    env.init();
    // Compressible and incompressible data; then an hour adding 8 MiB at once.
    fs::write(app.join("log.txt"), "the same line again\n".repeat(50_000)).unwrap();
    fs::write(app.join("blob"), noise(1 << 20, 1)).unwrap();
    for h in 0..6 {
        fs::write(app.join("counter"), noise(30_000, 100 + h)).unwrap();
        env.ok(&[
            "--config",
            c,
            "backup",
            "critical",
            "--time",
            &format!("2026-03-01T{h:02}:00:00Z"),
        ]);
    }
    let v = env.json(&["--config", c, "stats"]);
    let g = &v["sets"][0];
    assert_eq!(g["set"], "critical", "{v}");
    assert_eq!(g["anomaly"], false, "{v}");
    assert_eq!(g["snapshots"], 6);
    let newest = 1_000_000 + (1 << 20) + 30_000;
    assert_eq!(g["latest_bytes"], newest, "{v}");
    assert_eq!(v["restore_bytes"], newest);
    assert_eq!(v["logical_bytes"], 6 * newest);
    assert!(v["dedup_ratio"].as_f64().unwrap() > 4.0, "{v}");
    assert!(v["compression_ratio"].as_f64().unwrap() > 1.5, "{v}");
    let data: u64 = env.objects("data").iter().map(|(_, n)| n).sum();
    let classes = v["classes"].as_array().unwrap();
    let data_class = classes.iter().find(|c| c["kind"] == "data").unwrap();
    assert_eq!(data_class["bytes"], data);
    assert_eq!(data_class["storage_class"], "STANDARD");
    let stored = v["stored_bytes"].as_f64().unwrap();
    let cost = v["monthly_cost"]["STANDARD"].as_f64().unwrap();
    assert!((cost - stored / 1e9 * 0.023).abs() < 1e-12, "{v}");

    fs::write(app.join("dump"), noise(8 << 20, 7)).unwrap();
    env.ok(&[
        "--config",
        c,
        "backup",
        "critical",
        "--time",
        "2026-03-01T06:00:00Z",
    ]);
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        s.get("strata_backup_size_anomaly", &[("set", "critical")]),
        Some(1.0)
    );
    let out = env.ok(&["--config", c, "stats", "critical"]);
    assert!(
        out.contains("critical: 7 snapshots") && out.contains("ANOMALY"),
        "{out}"
    );
    assert!(out.contains("monthly cost"), "{out}");
    // Requests are estimated from the last 30 days' backups (those above are older).
    env.ok(&["--config", c, "backup", "critical"]);
    let v = env.json(&["--config", c, "stats"]);
    let r = &v["requests_30d"];
    assert_eq!(r["backups"], 1, "{v}");
    let writes = r["writes"].as_f64().unwrap();
    assert!(writes >= 3.0, "{v}");
    let put = v["monthly_cost"]["PUT requests"].as_f64().unwrap();
    assert!((put - writes / 1000.0 * 0.005).abs() < 1e-12, "{v}");
    promtool_accepts(&prom);
}

/// `backup --all`: a set that fails does not keep the others from their backups; the run
/// exits with the failure, names the set, and the metrics and JSON say which failed.
fn one_failing_set_does_not_stop_the_others(env: &Env) {
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(env, &app, &metrics, "last = 5");
    // critical's second source lies below a symlink inside its first: refused when that set
    // runs, after the repository is open.
    let real = env.path("real");
    fs::create_dir_all(real.join("sub")).unwrap();
    std::os::unix::fs::symlink(&real, app.join("link")).unwrap();
    let below = app.join("link/sub");
    let prom = env.path("strata.prom");
    let text = fs::read_to_string(&config).unwrap().replace(
        &format!("paths = [{app:?}]"),
        &format!("paths = [{app:?}, {below:?}]"),
    );
    fs::write(&config, format!("metrics-file = {prom:?}\n{text}")).unwrap();
    fs::write(metrics.join("m"), "1").unwrap();
    env.init();
    let out = env.run(&["--config", &config, "--json", "backup", "--all"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: set critical"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["set"], "critical", "{v}");
    assert_eq!(v[0]["exit_code"], 1, "{v}");
    assert!(
        v[1]["snapshot_id"].is_string(),
        "metrics was backed up: {v}"
    );
    let snaps = env.json(&["snapshots", "--set", "metrics"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        s.get("strata_backup_last_exit_code", &[("set", "critical")]),
        Some(1.0)
    );
    assert_eq!(
        s.get("strata_backup_last_exit_code", &[("set", "metrics")]),
        Some(0.0)
    );
}

/// A set whose path does not exist (a typo, an unmounted disk) fails alone: the healthy
/// set is backed up, the broken one's on-failure hook runs, and the metrics count it.
fn a_set_with_a_missing_path_fails_alone(env: &Env) {
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(env, &app, &metrics, "last = 5");
    let prom = env.path("strata.prom");
    let hooks = env.path("hooks.log");
    let gone = env.path("no-such-dir");
    let text = fs::read_to_string(&config).unwrap().replace(
        &format!("paths = [{app:?}]"),
        &format!(
            "paths = [{gone:?}]\non-failure = 'echo \"fail $STRATA_SET $STRATA_EXIT_CODE\" >> {hooks:?}'"
        ),
    );
    fs::write(&config, format!("metrics-file = {prom:?}\n{text}")).unwrap();
    fs::write(metrics.join("m"), "1").unwrap();
    env.init();
    let out = env.run(&["--config", &config, "backup", "--all"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-dir"), "{}", stderr(&out));
    let snaps = env.json(&["snapshots", "--set", "metrics"]);
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "the healthy set was not backed up"
    );
    let log = fs::read_to_string(&hooks).unwrap_or_default();
    assert!(
        log.contains("fail critical 1"),
        "on-failure did not run: {log:?}"
    );
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        s.get("strata_backup_last_exit_code", &[("set", "critical")]),
        Some(1.0)
    );
    assert_eq!(
        s.get("strata_backup_last_exit_code", &[("set", "metrics")]),
        Some(0.0)
    );
    // Named alone, the broken set fails before the repository is touched.
    let out = env.run(&["--config", &config, "backup", "critical"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

conformance!(
    a_set_with_a_missing_path_fails_alone,
    one_failing_set_does_not_stop_the_others,
    metrics_and_hooks_follow_every_run,
    budgeted_checks_cover_every_pack_and_remember_damage,
    drills_and_status,
    stats_report_savings_costs_and_anomalies
);

/// A drill stopped by SIGTERM removes what it restored (decrypted data must not outlive
/// it), records nothing and exits 130.
#[test]
fn a_drill_stopped_by_a_signal_leaves_nothing() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..64 {
        fs::write(src.join(format!("f{i}")), noise(1 << 20, i)).unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let child = env
        .std_cmd()
        .args(["drill", "--target", scratch.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let restoring = || {
        fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .any(|e| fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()))
    };
    while !restoring() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(restoring(), "the drill never started restoring");
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "the interrupted drill left its restore behind"
    );
    let v = env.json(&["status", "--all"]);
    assert!(v["sets"][0]["last_drill"].is_null(), "{v}");
}

/// Hostile pass (r09): a drill killed outright (SIGKILL) leaves its decrypted copy; the next
/// drill on that disk removes it once it is a minute old and no live drill holds it, and
/// says so. A live drill's (locked, or its pid running), a young one, another user's and a
/// symlink by the name are kept.
#[test]
fn a_drill_killed_outright_leaves_its_copy_to_the_next() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..64 {
        fs::write(src.join(format!("f{i}")), noise(1 << 20, i)).unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let child = env
        .std_cmd()
        .args(["drill", "--target", scratch.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dead = child.id();
    let copies = || -> Vec<std::path::PathBuf> {
        (fs::read_dir(&scratch).unwrap().flatten())
            // Restored data, not just the marker a drill writes first.
            .filter(|e| {
                fs::read_dir(e.path())
                    .is_ok_and(|d| d.flatten().any(|f| f.file_name() != ".strata-scratch"))
            })
            .map(|e| e.path())
            .collect()
    };
    let started = std::time::Instant::now();
    while copies().is_empty() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    common::signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait_with_output().unwrap();
    let left = copies();
    assert_eq!(left.len(), 1, "the killed drill left no copy: {left:?}");
    let left = &left[0];
    assert!(!common::walk(left).is_empty());
    let planted = |what: &str, pid: u32| {
        let p = scratch.join(format!(".strata-drill-{pid}-{what}"));
        fs::create_dir_all(p.join("sub")).unwrap();
        fs::write(p.join("sub/secret"), "plaintext").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        p
    };
    let me = std::process::id();
    let (young, held, running) = (
        planted("young", dead),
        planted("held", dead),
        planted("running", me),
    );
    let other = planted("other", dead);
    if is_root() {
        for p in common::walk(&other).iter().chain([&other]) {
            std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep"), "kept").unwrap();
    let link = scratch.join(format!(".strata-drill-{dead}-link"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in [left, &held, &running, &other] {
        fs::File::open(p).unwrap().set_modified(hour_ago).unwrap();
    }
    let lock = fs::File::open(&held).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let out = env.run(&["drill", "--target", scratch.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!left.exists(), "the killed drill's copy is still there");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains(&left.display().to_string()) && l.contains("removed")),
        "{err}"
    );
    // One too young to judge is named, not kept silently.
    assert!(
        err.lines()
            .any(|l| l.contains(&young.display().to_string())),
        "{err}"
    );
    for p in [&young, &held, &running] {
        assert!(p.join("sub/secret").exists(), "{} removed", p.display());
    }
    if is_root() {
        assert!(other.join("sub/secret").exists(), "another user's removed");
    }
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "kept");
}

/// Hostile pass (r23): in a shared (1777) metrics directory another user creates the lock
/// file first and holds it. Root replaces it and writes its metrics at once; a user who
/// cannot remove another's lock file is told at once whose it is, and waits for nothing.
#[test]
fn another_users_lock_file_does_not_stop_the_metrics() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        not_run("another user's lock file needs root to plant (run tools/test)");
        return;
    }
    let env = Env::local();
    env.init();
    let nobody = env.unprivileged();
    nobody.init();
    let src = nobody.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "data").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let shared = nobody.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let prom = shared.join("strata.prom");
    let lock = shared.join(".strata.prom.lock");
    fs::write(&lock, "").unwrap();
    std::os::unix::fs::lchown(&lock, Some(NOBODY), Some(NOBODY)).unwrap();
    // Held on nobody's behalf: a lock belongs to the open file, not to a user.
    let held = fs::File::open(&lock).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let backup = |env: &Env| {
        let started = std::time::Instant::now();
        let out = env.run(&[
            "--metrics-file",
            prom.to_str().unwrap(),
            "backup",
            src.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        (stderr(&out), started.elapsed())
    };
    let (err, took) = backup(&env);
    assert!(
        took < std::time::Duration::from_secs(8),
        "waited {took:?}: {err}"
    );
    assert!(!err.contains("metrics"), "{err}");
    assert!(fs::read_to_string(&prom)
        .unwrap()
        .contains("strata_backup_last_exit_code"));
    let m = fs::symlink_metadata(&lock).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    drop(held);

    // Root's lock file is not nobody's to use or remove: refused, naming its owner.
    let (err, took) = backup(&nobody);
    assert!(
        took < std::time::Duration::from_secs(8),
        "waited {took:?}: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: metrics file") && l.contains("owned by root")),
        "{err}"
    );
    assert_eq!(fs::symlink_metadata(&lock).unwrap().uid(), 0);
}

/// A drill onto a full disk fails: exit 1, and what it records (in the repository and the
/// metrics) is a failure, never a speed or a restore time.
#[test]
fn a_drill_onto_a_full_disk_records_a_failure_not_a_speed() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), noise(1 << 20, i)).unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    let Some(disk) = SmallDisk::mount(env.path("small"), "2m") else {
        panic!("this test needs root to mount a small tmpfs (run it under tools/test)");
    };
    let prom = env.path("strata.prom");
    // A good drill first: its speed must not stand for the failed one's.
    env.ok(&["--metrics-file", prom.to_str().unwrap(), "drill"]);
    let out = env.run(&[
        "--json",
        "--metrics-file",
        prom.to_str().unwrap(),
        "drill",
        "--target",
        disk.0.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v[0]["report"];
    assert!(r["drill"]["errors"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(r["throughput"], 0.0, "{v}");
    assert_eq!(r["drill"]["projected_secs"], 0.0, "{v}");
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    let set = v[0]["set"].as_str().unwrap();
    assert!(s.get("strata_drill_last_errors", &[("set", set)]).unwrap() > 0.0);
    for name in [
        "strata_drill_last_throughput_bytes_per_second",
        "strata_drill_last_projected_restore_seconds",
    ] {
        assert_eq!(
            s.get(name, &[("set", set)]),
            None,
            "{name} after a failed drill"
        );
    }
    promtool_accepts(&prom);
    let out = env.ok(&["status", "--all"]);
    assert!(out.contains("FAILED"), "{out}");
    assert_eq!(fs::read_dir(&disk.0).unwrap().count(), 0);
}

/// Hostile pass 6: a second SIGTERM while a hook that ignores the first runs ended strata
/// at once and left the hook's group running for ever. It ends the hook too now.
#[test]
fn a_second_signal_during_a_hook_ends_the_hook_too() {
    let env = Env::local();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(&env, &app, &metrics, "last = 5");
    let pid_file = env.path("hook.pid");
    let hook = format!("trap '' TERM; echo $$ > {pid_file:?}; exec sleep 400");
    let text = fs::read_to_string(&config).unwrap().replace(
        "[sets.critical]\n",
        &format!("[sets.critical]\non-success = {hook:?}\n"),
    );
    fs::write(&config, text).unwrap();
    fs::write(app.join("a"), "data").unwrap();
    env.init();
    let child = env
        .std_cmd()
        .args(["--config", &config, "backup", "critical"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let hook_pid = wait_for_pid(&pid_file);
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(300));
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    // The snapshot was saved: the backup's own code, not 130 ("none written"; pass 7).
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Killed, not running on.
    let waited = std::time::Instant::now();
    while running(hook_pid) && waited.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!running(hook_pid), "the hook outlived strata");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

/// SIGTERM while a set's hook runs (issue 25, item 7): the hook's process group gets it
/// too (no orphan, no five-minute wait), the saved snapshot stays, and the exit code and
/// the metrics agree that the backup succeeded.
#[test]
fn a_signal_during_a_hook_reaches_the_hook() {
    let env = Env::local();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(&env, &app, &metrics, "last = 5");
    let prom = env.path("strata.prom");
    let pid_file = env.path("hook.pid");
    let text = fs::read_to_string(&config).unwrap().replace(
        "[sets.critical]\n",
        &format!("[sets.critical]\non-success = 'echo $$ > {pid_file:?}; exec sleep 400'\n"),
    );
    fs::write(&config, format!("metrics-file = {prom:?}\n{text}")).unwrap();
    fs::write(app.join("a"), "data").unwrap();
    env.init();
    let child = env
        .std_cmd()
        .args(["--config", &config, "backup", "critical"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let hook_pid = wait_for_pid(&pid_file);
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let signalled = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        signalled.elapsed() < std::time::Duration::from_secs(20),
        "strata took {:?} to stop",
        signalled.elapsed()
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("was ended: the run was interrupted"), "{err}");
    // Neither the hook's shell nor its sleep survives.
    let hook = nix::unistd::Pid::from_raw(hook_pid);
    assert!(
        nix::sys::signal::killpg(hook, None).is_err(),
        "the hook's process group outlived strata"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        s.get("strata_backup_last_exit_code", &[("set", "critical")]),
        Some(0.0)
    );
}

/// Two lineages on one host, outside any set (issue 25, item 17): each has its own label,
/// its own drill series in the metrics and its own last drill in `status`.
#[test]
fn lineages_sharing_a_host_keep_their_own_drills() {
    let env = Env::local();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    for (dir, size) in [(&a, 3000), (&b, 5000)] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("f"), noise(size, 7)).unwrap();
    }
    let sa = env.backup(&[a.to_str().unwrap(), "--host", "vm"]);
    let sb = env.backup(&[b.to_str().unwrap(), "--host", "vm"]);
    let prom = env.path("strata.prom");
    env.ok(&["--metrics-file", prom.to_str().unwrap(), "drill"]);
    let v = env.json(&["status", "--all"]);
    let sets = v["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{v}");
    let labels: Vec<&str> = sets.iter().map(|s| s["set"].as_str().unwrap()).collect();
    let (la, lb) = (
        format!("host:vm:{}", a.display()),
        format!("host:vm:{}", b.display()),
    );
    assert!(
        labels.contains(&la.as_str()) && labels.contains(&lb.as_str()),
        "{v}"
    );
    for s in sets {
        assert_eq!(s["last_drill"]["snapshot"], s["snapshot"]["id"], "{v}");
    }
    let ids: Vec<&str> = sets
        .iter()
        .map(|s| s["last_drill"]["snapshot"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&sa["snapshot_id"].as_str().unwrap()), "{v}");
    assert!(ids.contains(&sb["snapshot_id"].as_str().unwrap()), "{v}");
    let s = Samples::parse(&fs::read_to_string(&prom).unwrap());
    let bytes = |l: &str| s.get("strata_drill_last_bytes", &[("set", l)]);
    assert_eq!(bytes(&la), Some(3000.0));
    assert_eq!(bytes(&lb), Some(5000.0));
    promtool_accepts(&prom);
}

/// Hostile pass (issue 25): a backup interrupted by SIGTERM still runs its on-failure
/// hook (given a short while), which sees exit code 130: the alert is not lost.
#[test]
fn an_interrupted_backup_still_runs_its_failure_hook() {
    let env = Env::local();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(&env, &app, &metrics, "last = 5");
    let said = env.path("hook.said");
    let text = fs::read_to_string(&config).unwrap().replace(
        "[sets.critical]\n",
        &format!("[sets.critical]\non-failure = 'sleep 0.5; echo $STRATA_EXIT_CODE > {said:?}'\n"),
    );
    fs::write(&config, text).unwrap();
    for i in 0..64 {
        fs::write(app.join(format!("f{i}")), noise(4 << 20, i)).unwrap();
    }
    env.init();
    let child = env
        .std_cmd()
        .args(["--config", &config, "backup", "critical"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while env.objects("data").is_empty() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let said = fs::read_to_string(&said).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(said.trim(), "130");
}

/// Hostile pass (issue 28): SIGTERM while the backup is still opening the repository (a
/// slow password command) is an interrupted run like any other: exit 130, the on-failure
/// hook told so, nothing written; and one at the very start of any command exits 130, not
/// the signal's 143.
#[test]
fn a_backup_stopped_while_opening_is_an_interrupted_run() {
    let env = Env::local();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(&env, &app, &metrics, "last = 5");
    let said = env.path("hook.said");
    let text = fs::read_to_string(&config).unwrap().replace(
        "[sets.critical]\n",
        &format!("[sets.critical]\non-failure = 'echo $STRATA_EXIT_CODE > {said:?}'\n"),
    );
    let pw = env.path("pw");
    fs::write(&pw, format!("{}\n", common::PASSWORD)).unwrap();
    fs::write(
        &config,
        format!(
            "password-command = \"sleep 2; cat {}\"\n{text}",
            pw.display()
        ),
    )
    .unwrap();
    fs::write(app.join("f"), "x").unwrap();
    env.init();
    let snapshots = env.objects("snapshots").len();
    let child = env
        .std_cmd()
        .env_remove("STRATA_PASSWORD")
        .args(["--config", &config, "backup", "critical"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let said = fs::read_to_string(&said).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(said.trim(), "130");
    assert_eq!(env.objects("snapshots").len(), snapshots);
    // Early, before the command has done anything (but past the exec and the loader,
    // which no handler can cover): 130 too, or done already.
    for _ in 0..5 {
        let child = env
            .std_cmd()
            .args(["snapshots"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        common::signal(&child, nix::sys::signal::Signal::SIGTERM);
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(130) | Some(0)),
            "{:?}",
            out.status
        );
    }
}
