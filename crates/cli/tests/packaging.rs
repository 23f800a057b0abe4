//! What packagers install: the systemd units in docs/systemd (`systemd-analyze verify`
//! accepts them, and every command they run works against a real repository with the
//! config they name), shell completions and man pages.

#[macro_use]
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn units() -> Vec<PathBuf> {
    let dir = workspace().join("docs/systemd");
    let mut units: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "timer")
        })
        .collect();
    units.sort();
    units
}

/// The units, with the built binary for /usr/local/bin/strata, in `dir`; templates get an
/// instance for the set `critical`. Returns the unit files to verify.
fn install(dir: &Path) -> Vec<PathBuf> {
    let binary = assert_cmd::cargo::cargo_bin("strata");
    let mut out = Vec::new();
    for unit in units() {
        let text = fs::read_to_string(&unit)
            .unwrap()
            .replace("/usr/local/bin/strata", binary.to_str().unwrap());
        let name = unit.file_name().unwrap().to_str().unwrap().to_string();
        fs::write(dir.join(&name), text).unwrap();
        let instance = name.replace("@.", "@critical.");
        if instance != name {
            std::os::unix::fs::symlink(dir.join(&name), dir.join(&instance)).unwrap();
        }
        out.push(dir.join(instance));
    }
    out
}

fn verify(units: &[PathBuf]) -> Option<std::process::Output> {
    std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(units)
        .output()
        .ok()
}

#[test]
fn systemd_analyze_accepts_the_units() {
    let dir = tempfile::tempdir().unwrap();
    let units = install(dir.path());
    assert!(units.len() >= 6, "{units:?}");
    let Some(out) = verify(&units) else {
        not_run("systemd-analyze (Debian package systemd) is missing");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And it is a check that can fail: a unit whose command cannot run is refused.
    let bad = dir.path().join("bad.service");
    fs::write(
        &bad,
        "[Service]\nType=oneshot\nExecStart=/nonexistent/strata backup\n",
    )
    .unwrap();
    assert!(!verify(&[bad]).unwrap().status.success());
}

/// Each ExecStart line, with the instance `critical`, as the unit runs it.
fn exec_lines() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for unit in units() {
        for line in fs::read_to_string(&unit).unwrap().lines() {
            if let Some(cmd) = line.strip_prefix("ExecStart=") {
                let args: Vec<String> = cmd
                    .split_whitespace()
                    .skip(1)
                    .map(|a| a.replace("%i", "critical").replace("%%", "%"))
                    .collect();
                out.push(args);
            }
        }
    }
    out
}

#[test]
fn the_units_commands_work_with_the_config_they_name() {
    let env = &Env::local();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let config = two_sets_config(env, &app, &metrics, "hourly = 24");
    fs::write(app.join("f"), noise(100_000, 1)).unwrap();
    env.init();
    // The drill drills every set: each needs a snapshot.
    env.ok(&["--config", &config, "backup", "metrics"]);
    let lines = exec_lines();
    assert!(lines.len() >= 4, "{lines:?}");
    for args in lines {
        // Their scratch directory, here one of the test's own.
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.replace("/var/tmp", env.path("").to_str().unwrap()))
            .collect();
        let out = env
            .cmd()
            .env("STRATA_CONFIG", &config)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
}

#[test]
fn completions_are_valid_scripts_and_man_pages_cover_every_command() {
    let env = &Env::local();
    let out = env.cmd().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["backup", "restore", "drill", "status", "--read-data-budget"] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completions"
        );
    }
    // bash parses it (syntax only).
    let file = env.path("strata.bash");
    fs::write(&file, &script).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = env.cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = env.cmd().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");

    let dir = env.path("man");
    env.ok(&["man", dir.to_str().unwrap()]);
    let page = fs::read_to_string(dir.join("strata.1")).unwrap();
    assert!(page.contains(".TH strata"), "{page}");
    for cmd in ["backup", "restore", "check", "drill", "status", "mount"] {
        let sub = fs::read_to_string(dir.join(format!("strata-{cmd}.1"))).unwrap();
        assert!(sub.contains(".TH"), "strata-{cmd}.1");
    }
    let check = fs::read_to_string(dir.join("strata-check.1")).unwrap();
    assert!(check.contains("read\\-data\\-budget"), "{check}");
}
