//! See main.rs. The local user and PostgreSQL restore: a key holder's base backup whose
//! record names a data directory that leads out of the restore's staging area.

use std::fs;
use std::path::{Path, PathBuf};

#[allow(unused_imports)]
use crate::common::*;
use crate::craft::{self, dir, file, pg_base_backup, symlink};

/// A config naming cluster `main`; returns its path.
fn pg_config(env: &Env) -> String {
    let path = env.path("strata.toml");
    fs::write(&path, "[postgres.main]\n").unwrap();
    path.display().to_string()
}

/// `pg restore main --target TARGET`, bounded in time and memory.
fn pg_restore(env: &Env, target: &Path) -> craft::Bounded {
    let cfg = pg_config(env);
    let args = [
        "--config",
        &cfg,
        "pg",
        "restore",
        "main",
        "--target",
        target.to_str().unwrap(),
    ];
    craft::run_bounded(env, &args, 2048, 120)
}

/// A directory holding one file `keep`, as a bystander of the host has it.
fn bystander(path: PathBuf) -> PathBuf {
    fs::create_dir_all(&path).unwrap();
    fs::write(path.join("keep"), "the host's own\n").unwrap();
    path
}

/// `dir` still holds exactly the file `keep`, untouched.
fn untouched(dir: &Path) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} is gone: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["keep"], "{} was written into", dir.display());
    assert_eq!(
        fs::read_to_string(dir.join("keep")).unwrap(),
        "the host's own\n"
    );
}

/// The restore failed saying why, and left no target behind: absent, or an empty real
/// directory, and no staging beside it.
fn refused(run: &craft::Bounded, target: &Path, data_directory: &str) {
    let err = stderr(&run.out);
    assert!(!run.timed_out, "pg restore hung ({:?}): {err}", run.elapsed);
    assert_ne!(
        code(&run.out),
        0,
        "pg restore took the crafted data directory {data_directory}: {err}"
    );
    assert!(
        err.contains("data directory") && err.contains(data_directory),
        "no clear error: {err}"
    );
    match fs::symlink_metadata(target) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        Ok(m) => {
            assert!(m.is_dir(), "the target became a symlink or file");
            assert_eq!(fs::read_dir(target).unwrap().count(), 0);
        }
    }
    let parent = target.parent().unwrap();
    let stagings = fs::read_dir(parent)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".strata-pg-restore-")
        })
        .count();
    assert_eq!(stagings, 0, "a staging was left beside the target");
}

/// Item 1: a data directory `/x` whose `x` is a symlink node (to a directory of the
/// host), and `/y/sub` whose `y` is one (to the parent of a real directory `sub`): the
/// restore would have written backup_label and recovery.signal through the link and
/// moved the host's directory into the target. Refused, nothing outside the target
/// written or moved.
#[test]
fn a_data_directory_through_a_symlink_node_is_refused() {
    // `/x`: x → cron.d; `/y/sub`: y → outside, which holds a real directory `sub`.
    for (data_directory, link, to) in [("/x", "x", "cron.d"), ("/y/sub", "y", "outside")] {
        let env = Env::local();
        env.init();
        let cron = bystander(env.path("cron.d"));
        let sub = bystander(env.path("outside/sub"));
        let to = env.path(to);
        pg_base_backup(&env, data_directory, |c| {
            let data = c.tree(vec![file(c, "PG_VERSION", b"15\n")]);
            c.tree(vec![dir("data", data), symlink(link, to.to_str().unwrap())])
        });
        let target = env.path("target");
        let run = pg_restore(&env, &target);
        refused(&run, &target, data_directory);
        untouched(&cron);
        untouched(&sub);
    }
}

/// Item 1: `/../../…/srv/other` climbs out of the staging area: a directory of the host
/// would have been moved into the target. Refused, the directory stays where it is; so
/// is any path not in normal form (`..`, `.`, `//`, the root itself).
#[test]
fn a_data_directory_that_climbs_out_is_refused() {
    for case in 0..5 {
        let env = Env::local();
        env.init();
        let other = bystander(env.path("srv/other"));
        let climb = format!(
            "{}{}",
            "/..".repeat(other.components().count() + 4),
            other.display()
        );
        let data_directory = match case {
            0 => climb.as_str(),
            1 => "/data/../data",
            2 => "/data/./",
            3 => "//data",
            _ => "/",
        };
        pg_base_backup(&env, data_directory, |c| {
            let data = c.tree(vec![file(c, "PG_VERSION", b"15\n")]);
            c.tree(vec![dir("data", data)])
        });
        let target = env.path("target");
        let run = pg_restore(&env, &target);
        refused(&run, &target, data_directory);
        untouched(&other);
    }
}

/// What a secret looks like in these tests' environments: none may reach a child.
const SECRET: &str = "s3cret-that-no-child-sees";

/// The repository's password variables and the cloud's secrets, as a host's environment
/// may hold them beside the password the tests open the repository with.
fn secret_vars() -> Vec<(&'static str, String)> {
    [
        "STRATA_PASSWORD_COMMAND",
        "STRATA_NEW_PASSWORD",
        "STRATA_TO_PASSWORD",
        "STRATA_TO_PASSWORD_FILE",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ]
    .into_iter()
    .map(|k| (k, format!("{SECRET}-{k}")))
    .collect()
}

/// `env` as a child wrote it holds none of the secrets, nor the repository's password.
fn no_secret_in(seen: &str) {
    assert!(
        !seen.contains(SECRET),
        "a secret reached the child:\n{seen}"
    );
    assert!(
        !seen.contains(PASSWORD),
        "the password reached the child:\n{seen}"
    );
    for line in seen.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(
            !name.starts_with("STRATA_PASSWORD") && !name.starts_with("AWS_"),
            "{line}"
        );
    }
}

/// Item 2: an `on-success` hook (`env > file`) sees the run it follows (what the README
/// says hooks get, and PATH), not the repository's password nor the cloud's secrets.
#[test]
fn a_hook_sees_no_secret() {
    let env = Env::local();
    env.init();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("a.txt"), "alpha\n").unwrap();
    let seen = env.path("hook.env");
    let cfg = env.path("hooks.toml");
    fs::write(
        &cfg,
        format!("[sets.docs]\npaths = [{app:?}]\non-success = 'env > {seen:?}'\n"),
    )
    .unwrap();
    let out = env
        .cmd()
        .envs(secret_vars())
        .args(["--config", cfg.to_str().unwrap(), "backup", "docs"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let seen = fs::read_to_string(&seen).expect("the hook did not run");
    no_secret_in(&seen);
    for kept in [
        "STRATA_SET=docs",
        "STRATA_EXIT_CODE=0",
        "STRATA_SNAPSHOT_ID=",
        "PATH=",
    ] {
        assert!(seen.contains(kept), "{kept} missing:\n{seen}");
    }
}
