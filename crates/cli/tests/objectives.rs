//! Recovery objectives: per-set RPO, RTO and drill interval judged by `status`, drills that
//! run the operator's verify command, the alert rules of docs/prometheus tested with the
//! real `promtool` on metrics files Strata writes here, and the report rendered by a real
//! Chromium.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A tool the test needs: under `tools/test` (which installs it) a missing one fails the
/// test by name; elsewhere it is said and the test does not run.
fn tool(name: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("STRATA_TEST_S3_REQUIRED").is_some() {
            panic!("{name} (Debian package {package}) is missing; tools/test installs it");
        }
        not_run(&format!("{name} (Debian package {package}) is missing"));
    }
    found
}

struct Scene {
    config: PathBuf,
    prom: PathBuf,
    hooks: PathBuf,
    verify_env: PathBuf,
}

/// Three sets: `critical` (hourly, RPO 2h, RTO 1h, a verify that checks its JSON and
/// records its environment), `full` (GLACIER, RTO 4h, a verify that fails) and `stale`
/// (RPO 1h, last backed up 3 hours ago); plus `broken`, whose path is missing.
fn scene(env: &Env) -> Scene {
    let d = env.path("");
    for s in ["critical", "full", "stale"] {
        fs::create_dir_all(d.join(s)).unwrap();
    }
    fs::write(d.join("critical/tasks.json"), r#"{"queue": [1, 2]}"#).unwrap();
    fs::write(d.join("full/os.img"), noise(300_000, 1)).unwrap();
    fs::write(d.join("stale/m.txt"), "metrics").unwrap();
    let (prom, hooks, verify_env) = (
        d.join("strata.prom"),
        d.join("hooks.log"),
        d.join("verify.env"),
    );
    let config = d.join("strata.toml");
    let critical = d.join("critical");
    let json = critical.join("tasks.json");
    fs::write(
        &config,
        format!(
            "metrics-file = {prom:?}\n\
             [sets.critical]\npaths = [{critical:?}]\nkeep = {{ hourly = 48 }}\nrpo = \"2h\"\n\
             rto = \"1h\"\n\
             drill-verify = 'env > {verify_env:?} && python3 -m json.tool \"./{json}\" > /dev/null'\n\
             [sets.full]\npaths = [{full:?}]\nkeep = {{ weekly = 4 }}\nrto = \"4h\"\n\
             data-storage-class = \"GLACIER\"\n\
             drill-verify = 'echo smoke test failed: 3 of 40; exit 3'\n\
             on-failure = 'echo \"$STRATA_OPERATION $STRATA_SET $STRATA_EXIT_CODE \
             $STRATA_DRILL_VERIFY_EXIT_CODE $STRATA_ERROR\" >> {hooks:?}'\n\
             [sets.stale]\npaths = [{stale:?}]\nkeep = {{ hourly = 24 }}\nrpo = \"1h\"\n\
             [sets.broken]\npaths = [{broken:?}]\nkeep = {{ daily = 7 }}\n",
            full = d.join("full"),
            stale = d.join("stale"),
            broken = d.join("missing"),
            json = json.strip_prefix("/").unwrap().display(),
        ),
    )
    .unwrap();
    Scene {
        config,
        prom,
        hooks,
        verify_env,
    }
}

fn status_json(env: &Env, config: &Path) -> (i32, Value) {
    let out = env.run(&["--config", config.to_str().unwrap(), "--json", "status"]);
    (code(&out), serde_json::from_slice(&out.stdout).unwrap())
}

fn set<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["set"] == name)
        .unwrap_or_else(|| panic!("no set {name} in {status}"))
}

/// Backs up the scene's sets (stale three hours ago), as cron would.
fn back_up(env: &Env, s: &Scene) {
    let c = s.config.to_str().unwrap();
    env.init();
    let out = env.run(&["--config", c, "backup", "critical", "full"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("set full: data in GLACIER takes up to 5h to thaw"),
        "a backup of a set whose RTO its class cannot meet says so: {}",
        stderr(&out)
    );
    let three_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    env.ok(&["--config", c, "backup", "stale", "--time", &three_hours_ago]);
    assert_ne!(code(&env.run(&["--config", c, "backup", "broken"])), 0);
}

#[test]
fn status_judges_each_objective_and_drills_run_the_verify_command() {
    let env = Env::local();
    let s = scene(&env);
    let c = s.config.to_str().unwrap();
    back_up(&env, &s);

    // Before any drill: RTOs unknown (never assumed met), drills overdue; GLACIER's thaw
    // rules its RTO out already.
    let (rc, st) = status_json(&env, &s.config);
    assert_eq!(rc, 1);
    let critical = &set(&st, "critical")["objectives"];
    assert_eq!(critical["rpo"]["state"], "holds", "{critical}");
    assert_eq!(critical["rto"]["state"], "unknown", "{critical}");
    assert_eq!(critical["drill"]["state"], "fails", "{critical}");
    let full = &set(&st, "full")["objectives"];
    assert_eq!(full["rto"]["state"], "fails");
    assert!(
        full["rto"]["reason"]
            .as_str()
            .unwrap()
            .contains("GLACIER_IR"),
        "the fix is named: {full}"
    );
    let stale = set(&st, "stale");
    assert_eq!(
        (
            stale["stale"].as_bool(),
            stale["objectives"]["rpo"]["state"].as_str()
        ),
        (Some(true), Some("fails"))
    );
    assert!(
        stale["objectives"]["rto"].is_null(),
        "no RTO set, none judged"
    );

    // `drill --due`: every set with a drill interval and no passing drill.
    let out = env.run(&["--config", c, "drill", "--due"]);
    assert_eq!(
        code(&out),
        1,
        "full's verify fails the drill: {}",
        stderr(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("set critical: drill verify"), "{text}");
    assert!(
        text.contains("set full: drill FAILED: its verify command exited 3"),
        "{text}"
    );
    assert!(
        !text.contains("set stale"),
        "stale has no drill interval: {text}"
    );
    assert!(
        stderr(&out).contains("smoke test failed: 3 of 40"),
        "the output tail: {}",
        stderr(&out)
    );
    // The verify ran in the restored copy, told where, without the repository's password.
    let venv = fs::read_to_string(&s.verify_env).unwrap();
    assert!(
        venv.contains("STRATA_DRILL_DIR=") && venv.contains("STRATA_SET=critical"),
        "{venv}"
    );
    assert!(!venv.contains("STRATA_PASSWORD"), "{venv}");
    // ... and the drill's on-failure hook heard of full's failure.
    let hooks = fs::read_to_string(&s.hooks).unwrap();
    assert!(
        hooks.starts_with("drill full 1 3 drill failed: its verify command exited 3"),
        "{hooks}"
    );

    let (rc, st) = status_json(&env, &s.config);
    assert_eq!(rc, 1, "full and stale still fail");
    let critical = set(&st, "critical");
    assert_eq!(critical["objectives_hold"], true, "{critical}");
    let p = &critical["objectives"]["projection"];
    assert!(
        p["throughput"].as_f64().unwrap() > 0.0 && p["index_secs"].as_f64().is_some(),
        "{p}"
    );
    assert!(
        p["verify_secs"].as_f64().unwrap() > 0.0,
        "the smoke test's time counts: {p}"
    );
    let verify = &critical["last_drill"]["verify"];
    assert_eq!(verify["exit_code"], 0, "{verify}");
    let full = set(&st, "full");
    assert_eq!(full["objectives"]["drill"]["state"], "fails");
    assert_eq!(full["last_drill"]["verify"]["exit_code"], 3);
    assert!(full["last_drill"]["verify"]["output_tail"]
        .as_str()
        .unwrap()
        .contains("3 of 40"));
    // A local directory has no storage classes: the drill found its packs hot.
    assert_eq!(full["last_drill"]["data_classes"][0]["class"], "STANDARD");

    // Only what is due is drilled again.
    let out = env.run(&["--config", c, "drill", "--due"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("set full") && !text.contains("set critical"),
        "{text}"
    );

    // The metrics file says the same.
    let m = strata::metrics::Samples::parse(&fs::read_to_string(&s.prom).unwrap());
    let met = |set: &str, o: &str| m.get("strata_objective_met", &[("set", set), ("objective", o)]);
    assert_eq!(met("critical", "rto"), Some(1.0));
    assert_eq!(met("full", "rto"), Some(0.0));
    assert_eq!(met("full", "drill"), Some(0.0));
    assert_eq!(
        m.get("strata_drill_last_passed", &[("set", "full")]),
        Some(0.0)
    );
    assert_eq!(
        m.get("strata_drill_last_verify_exit_code", &[("set", "full")]),
        Some(3.0)
    );
    assert_eq!(
        m.get("strata_objective_rto_seconds", &[("set", "critical")]),
        Some(3600.0)
    );
    assert!(m
        .get("strata_rto_projected_seconds", &[("set", "critical")])
        .is_some());

    // A run of failed drills never erases the last passing one: the projection stays.
    let text = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, text.replace("python3 -m json.tool", "false")).unwrap();
    for _ in 0..13 {
        assert_eq!(code(&env.run(&["--config", c, "drill", "critical"])), 1);
    }
    let (_, st) = status_json(&env, &s.config);
    let critical = set(&st, "critical");
    assert_eq!(
        critical["objectives"]["rto"]["state"], "fails",
        "{critical}"
    );
    assert!(
        critical["objectives"]["projection"]["throughput"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let drills = env.objects("audit").len();
    assert!(drills <= 2 * 12 + 1, "drills are still pruned: {drills}");

    // A set taken out of the config, with no snapshot, leaves the metrics file (its
    // failed-backup alert would fire forever); the rpo of a set never drilled is there.
    let m = |prom: &Path| strata::metrics::Samples::parse(&fs::read_to_string(prom).unwrap());
    let failed = |s: &strata::metrics::Samples, set: &str| {
        s.get("strata_backup_last_exit_code", &[("set", set)])
    };
    assert!(failed(&m(&s.prom), "broken").unwrap() > 0.0);
    let text = fs::read_to_string(&s.config).unwrap();
    let cut = text.find("[sets.broken]").unwrap();
    fs::write(&s.config, &text[..cut]).unwrap();
    // Quiet: no table, only what does not hold.
    let out = env.run(&["--config", c, "-q", "status"]);
    assert_eq!(code(&out), 1);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("objectives not met:"),
        "{}",
        stderr(&out)
    );
    let after = m(&s.prom);
    assert_eq!(
        failed(&after, "broken"),
        None,
        "the removed set's series stayed"
    );
    assert_eq!(failed(&after, "critical"), Some(0.0));
    assert_eq!(
        after.get("strata_objective_rpo_seconds", &[("set", "stale")]),
        Some(3600.0)
    );
}

#[test]
fn objectives_in_the_config_are_checked_at_load() {
    let env = Env::local();
    let config = env.path("bad.toml");
    for (bad, says) in [
        ("rto = \"soon\"", "rto soon"),
        ("drill-interval = \"monthly\"", "drill-interval monthly"),
        ("drill-verify-timeout = \"x\"", "drill-verify-timeout"),
        ("thaw-tier = \"fast\"", "thaw-tier"),
        ("rpo = \"1h\"\nmax-age = \"2h\"", "duplicate"),
    ] {
        fs::write(&config, format!("[sets.a]\npaths = [\"/srv\"]\n{bad}\n")).unwrap();
        let out = env.run(&["--config", config.to_str().unwrap(), "status"]);
        assert_eq!(code(&out), 1, "{bad}");
        assert!(stderr(&out).contains(says), "{bad}: {}", stderr(&out));
    }
    // `max-age` is still read, as the RPO.
    fs::write(&config, "[sets.a]\npaths = [\"/srv\"]\nmax-age = \"90m\"\n").unwrap();
    env.init();
    let (_, st) = status_json(&env, &config);
    assert_eq!(set(&st, "a")["max_age_secs"], 5400);
    // `init` names an RTO that a DEEP_ARCHIVE thaw cannot meet.
    let env = Env::local();
    fs::write(
        &config,
        "[sets.a]\npaths = [\"/srv\"]\nrto = \"24h\"\ndata-storage-class = \"DEEP_ARCHIVE\"\nthaw-tier = \"bulk\"\n",
    )
    .unwrap();
    let out = env.run(&["--config", config.to_str().unwrap(), "init"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out)
            .contains("set a: data in DEEP_ARCHIVE takes up to 2d to thaw at the bulk tier"),
        "{}",
        stderr(&out)
    );
}

/// The rules file without its annotations (promtool compares them whole; the expressions
/// and labels are what the tests pin down).
fn rules_without_annotations(rules: &str) -> String {
    let mut out = String::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(d) = skip_deeper_than {
            if indent > d || line.trim().is_empty() {
                continue;
            }
            skip_deeper_than = None;
        }
        if line.trim() == "annotations:" {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The metrics file as promtool input series: constant series for 35 hours on host `h1`,
/// samples every 2 minutes (within the 5-minute lookback), every timestamp made relative to `t0` (promtool's clock starts at 0).
fn series_of(prom: &str, t0: f64) -> String {
    let samples = strata::metrics::Samples::parse(prom);
    let mut out = String::new();
    for line in samples.render().lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let mut v: f64 = value.parse().unwrap();
        if series.contains("_timestamp_seconds") {
            v -= t0;
        }
        let series = match series.split_once('{') {
            Some((name, rest)) => format!("{name}{{instance=\"h1\",job=\"node\",{rest}"),
            None => format!("{series}{{instance=\"h1\",job=\"node\"}}"),
        };
        out.push_str(&format!(
            "      - series: '{series}'\n        values: '{v}+0x1050'\n"
        ));
    }
    out
}

/// An expected alert with `labels` on host h1.
fn alert(labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    l.extend(["instance: h1".to_string(), "job: node".to_string()]);
    format!("          - exp_labels: {{{}}}\n", l.join(", "))
}

#[test]
fn alert_rules_fire_on_metrics_files_strata_wrote() {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/prometheus/strata.rules.yml");
    if !tool("promtool", "prometheus") {
        return;
    }
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let env = Env::local();
    let s = scene(&env);
    back_up(&env, &s);
    let c = s.config.to_str().unwrap();
    env.run(&["--config", c, "drill"]);
    env.ok(&["--config", c, "check"]);
    env.run(&["--config", c, "status"]);
    let t0 = chrono::Utc::now().timestamp() as f64;
    let prom = fs::read_to_string(&s.prom).unwrap();

    let dir = env.path("promtool");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("rules.yml"),
        rules_without_annotations(&fs::read_to_string(&rules).unwrap()),
    )
    .unwrap();
    let page = |set| vec![("severity", "page"), ("set", set)];
    let ticket = |set| vec![("severity", "ticket"), ("set", set)];
    // What fires when: at 30 minutes, only what is wrong now; past an hour stale's RPO,
    // past 2 hours critical's and the file's staleness; past a day the low verification.
    let cases = [
        ("30m", "StrataBackupMissedRPO", vec![]),
        ("90m", "StrataBackupMissedRPO", vec![alert(&page("stale"))]),
        (
            "150m",
            "StrataBackupMissedRPO",
            vec![alert(&page("critical")), alert(&page("stale"))],
        ),
        ("30m", "StrataMetricsStale", vec![]),
        (
            "150m",
            "StrataMetricsStale",
            vec![alert(&[("severity", "page")])],
        ),
        ("30m", "StrataBackupFailed", vec![alert(&ticket("broken"))]),
        // broken has no snapshot: its drill failed before it began.
        (
            "30m",
            "StrataDrillFailed",
            vec![alert(&page("broken")), alert(&page("full"))],
        ),
        ("30m", "StrataDrillOverdue", vec![]),
        ("90m", "StrataDrillOverdue", vec![alert(&ticket("full"))]),
        (
            "30m",
            "StrataRTOAtRisk",
            vec![alert(&[
                ("severity", "ticket"),
                ("set", "full"),
                ("objective", "rto"),
            ])],
        ),
        ("30m", "StrataCheckErrors", vec![]),
        ("30m", "StrataSizeAnomaly", vec![]),
        ("30m", "StrataVerificationLow", vec![]),
        (
            "25h",
            "StrataVerificationLow",
            vec![alert(&[("severity", "ticket")])],
        ),
        ("30m", "StrataMetricsAbsent", vec![]),
    ];
    let mut tests = String::new();
    for (at, name, alerts) in &cases {
        tests.push_str(&format!(
            "      - eval_time: {at}\n        alertname: {name}\n        exp_alerts:"
        ));
        if alerts.is_empty() {
            tests.push_str(" []\n");
        } else {
            tests.push('\n');
            for a in alerts {
                tests.push_str(a);
            }
        }
    }
    let test = format!(
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 2m\n    input_series:\n{}    alert_rule_test:\n{tests}",
        series_of(&prom, t0)
    );
    fs::write(dir.join("test.yml"), &test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the screenshot of the rendered report is kept: `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Renders `page` in headless Chromium: the DOM it built, and the URLs the page itself
/// asked the network for (Chromium's own background requests have no origin and are
/// left out).
fn render(page: &Path, screenshot: Option<&Path>, scratch: &Path) -> (String, Vec<String>) {
    let net_log = scratch.join(format!("net-{}.json", hex_id()));
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
    ])
    .arg(format!(
        "--user-data-dir={}",
        scratch.join("profile").display()
    ))
    .arg(format!("--log-net-log={}", net_log.display()))
    .arg("--window-size=1280,4000");
    match screenshot {
        Some(s) => cmd.arg(format!("--screenshot={}", s.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log: Value = serde_json::from_slice(&fs::read(&net_log).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let fetched = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start && e["params"]["url"].is_string())
        .filter(|e| e["params"]["initiator"] != "not an origin")
        .map(|e| e["params"]["url"].as_str().unwrap().to_string())
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), fetched)
}

/// The `<section>` of set `name` in the DOM.
fn section<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!(
            "<section class=\"set\" id=\"set-{}\"",
            hex::encode(name)
        ))
        .unwrap_or_else(|| panic!("no section for {name}"));
    let end = dom[start..].find("</section>").unwrap();
    &dom[start..start + end]
}

#[test]
fn the_report_renders_in_chromium_and_fetches_nothing() {
    if !tool("chromium", "chromium") {
        return;
    }
    let env = Env::local();
    let d = env.path("");
    let (critical, metrics) = (d.join("critical"), d.join("metrics"));
    fs::create_dir_all(&critical).unwrap();
    fs::create_dir_all(&metrics).unwrap();
    fs::write(metrics.join("m.txt"), "m").unwrap();
    let config = d.join("strata.toml");
    fs::write(
        &config,
        format!(
            "metrics-file = {:?}\n[prices]\nSTANDARD = 0.023\n\
             [sets.critical]\npaths = [{critical:?}]\nkeep = {{ hourly = 48 }}\nrpo = \"2h\"\n\
             rto = \"1h\"\ndrill-verify = 'test -d \"$STRATA_DRILL_DIR\"'\n\
             [sets.metrics]\npaths = [{metrics:?}]\nkeep = {{ daily = 7 }}\nrpo = \"1h\"\n\
             rto = \"4h\"\ndrill-verify = 'echo \"<b>smoke</b> failed\"; exit 1'\n",
            d.join("strata.prom")
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    env.init();
    // 48 hourly snapshots of critical, growing; metrics last backed up 3 hours ago.
    let now = chrono::Utc::now();
    for h in (1..=48i64).rev() {
        fs::write(
            critical.join(format!("f{h}.bin")),
            noise(2000 + 300 * h as usize, h as u64),
        )
        .unwrap();
        let t = (now - chrono::Duration::hours(h)).to_rfc3339();
        env.ok(&["--config", c, "backup", "critical", "--time", &t, "-q"]);
    }
    let t = (now - chrono::Duration::hours(3)).to_rfc3339();
    env.ok(&["--config", c, "backup", "metrics", "--time", &t, "-q"]);
    assert_eq!(
        code(&env.run(&["--config", c, "drill"])),
        1,
        "metrics' verify fails"
    );
    let html = d.join("report.html");
    env.ok(&["--config", c, "report", "--html", html.to_str().unwrap()]);
    assert_eq!(
        fs::metadata(&html).unwrap().permissions().mode() & 0o777,
        0o644
    );

    let (dom, fetched) = render(&html, None, &d);
    assert!(fetched.is_empty(), "the page fetched {fetched:?}");
    assert!(
        dom.contains("Content-Security-Policy"),
        "fetching is forbidden"
    );
    for tag in ["<script", "<img", "<link", "<iframe", "src=", "url("] {
        assert!(!dom.contains(tag), "{tag} in the page");
    }
    let crit = section(&dom, "critical");
    assert!(crit.contains("data-stale=\"false\""));
    for o in ["rpo", "rto", "drill"] {
        assert!(
            crit.contains(&format!("data-objective=\"{o}\" data-state=\"holds\"")),
            "{o}: {crit}"
        );
    }
    assert!(crit.contains("48 snapshot(s)"), "{crit}");
    assert_eq!(
        crit.matches("<svg").count(),
        3,
        "size, added, duration charts"
    );
    assert!(crit.contains("data-passed=\"true\""));
    let met = section(&dom, "metrics");
    assert!(
        met.contains("data-stale=\"true\"") && met.contains(">STALE<"),
        "{met}"
    );
    assert!(
        met.contains("data-objective=\"rpo\" data-state=\"fails\""),
        "{met}"
    );
    assert!(
        met.contains("data-objective=\"rto\" data-state=\"fails\""),
        "{met}"
    );
    assert!(
        met.contains("data-passed=\"false\"") && met.contains("FAILED"),
        "{met}"
    );
    // The verify's output is shown as text, never as markup.
    assert!(met.contains("&lt;b&gt;smoke&lt;/b&gt; failed"), "{met}");
    assert!(dom.contains("id=\"cost\""), "the monthly cost");
    assert!(dom.contains("id=\"verification\""));

    // The detector is no blind eye: a page that loads an image is caught.
    let control = d.join("control.html");
    fs::write(
        &control,
        "<html><body><img src=\"http://127.0.0.1:9/x.png\"></body></html>",
    )
    .unwrap();
    let (_, fetched) = render(&control, None, &d);
    assert_eq!(fetched, ["http://127.0.0.1:9/x.png"]);

    // For the closing note: the page as a 1280-pixel-wide window shows it.
    let shot = target_dir().join("report-screenshot.png");
    let _ = fs::remove_file(&shot);
    render(&html, Some(&shot), &d);
    assert!(fs::metadata(&shot).unwrap().len() > 10_000);

    // The same data as JSON.
    let v = env.json(&["--config", c, "report"]);
    let sets = v["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0]["backups"].as_array().unwrap().len(), 48);
    assert_eq!(sets[1]["drills"][0]["verify"]["exit_code"], 1);

    // `--html -` is standard output (the same page), and not beside --json.
    let out = env.run(&["--config", c, "report", "--html", "-"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("id=\"cost\""));
    assert!(!d.join("-").exists());
    let out = env.run(&["--config", c, "--json", "report", "--html", "-"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

/// A drill that fails before it restores anything (no snapshot, a target that is a file,
/// a wrong password) is a failed drill for the metrics and the hook; SIGTERM while the
/// on-failure hook runs ends the hook with strata, after the failure was printed.
#[test]
fn drills_that_cannot_start_or_are_stopped_in_their_hook_are_told() {
    let env = Env::local();
    env.init();
    let d = env.path("");
    let (kb, prom, hooks) = (d.join("kb"), d.join("m.prom"), d.join("hooks.log"));
    fs::create_dir_all(&kb).unwrap();
    fs::write(kb.join("a.json"), "{}").unwrap();
    let (slow, pid, late) = (d.join("slow"), d.join("hook.pid"), d.join("late"));
    let config = d.join("strata.toml");
    fs::write(
        &config,
        format!(
            "metrics-file = {prom:?}\n[sets.kb]\npaths = [{kb:?}]\nkeep = {{ daily = 7 }}\n\
             drill-verify = 'echo verify says no; exit 5'\n\
             on-failure = 'echo \"$STRATA_SET $STRATA_EXIT_CODE $STRATA_ERROR\" >> {hooks:?}; \
             if [ -f {slow:?} ]; then echo $$ > {pid:?}; sleep 20; touch {late:?}; fi'\n"
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let passed = || {
        strata::metrics::Samples::parse(&fs::read_to_string(&prom).unwrap())
            .get("strata_drill_last_passed", &[("set", "kb")])
    };
    let last_hook = || {
        let log = fs::read_to_string(&hooks).unwrap_or_default();
        log.lines().last().unwrap_or_default().to_string()
    };

    assert_eq!(code(&env.run(&["--config", c, "drill", "kb"])), 1);
    assert_eq!(last_hook(), "kb 1 drill failed: no snapshot to drill");
    assert_eq!(passed(), Some(0.0));

    env.ok(&["--config", c, "backup", "kb", "-q"]);
    fs::write(&prom, "").unwrap();
    let file = d.join("not-a-dir");
    fs::write(&file, "").unwrap();
    let out = env.run(&[
        "--config",
        c,
        "drill",
        "kb",
        "--target",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        last_hook().starts_with("kb 1 drill failed: "),
        "{}",
        last_hook()
    );
    assert_eq!(passed(), Some(0.0));

    let out = env
        .cmd()
        .env("STRATA_PASSWORD", "wrong")
        .args(["--config", c, "drill"])
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    let hook = last_hook();
    assert!(
        hook.starts_with(&format!("kb {} drill failed: ", code(&out))),
        "{hook}"
    );

    // SIGTERM while the hook runs: strata and the hook end together, soon.
    fs::write(&slow, "").unwrap();
    let child = env
        .std_cmd()
        .args(["--config", c, "drill", "kb"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // The shell writes its pid a moment after it creates the file.
    let read_pid = || fs::read_to_string(&pid).ok()?.trim().parse::<i32>().ok();
    while read_pid().is_none() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let hook_pid = read_pid().expect("the hook never started");
    let stopped = std::time::Instant::now();
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(stopped.elapsed().as_secs() < 10, "{:?}", stopped.elapsed());
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("verify says no"),
        "the failure was not printed: {}",
        stderr(&out)
    );
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(hook_pid), None).is_ok();
    assert!(!alive, "the hook outlived strata");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!late.exists());
}
