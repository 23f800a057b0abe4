//! Exit codes and messages for bad input.
#[macro_use]
mod common;

use std::fs;

use common::*;

fn init_prints_the_id_and_refuses_an_existing_repository(env: &Env) {
    let v = env.json(&["init"]);
    assert_eq!(v["id"].as_str().unwrap().len(), 64);
    let out = env.run(&["init"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(env.backend().exists().unwrap());
}

fn wrong_password_exits_12(env: &Env) {
    env.init();
    let out = env
        .cmd()
        .env("STRATA_PASSWORD", "not the password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

fn no_repository_exits_10(env: &Env) {
    for args in [
        &["snapshots"][..],
        &["check"],
        &["restore", "latest", "--target", "/tmp/x"],
        &["backup", "/etc/hostname"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 10, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no repository"), "{}", stderr(&out));
    }
}

fn password_from_a_file_and_none_at_all(env: &Env) {
    env.init();
    let pw = env.path("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .cmd()
        .env_remove("STRATA_PASSWORD")
        .args(["--password-file", pw.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env
        .cmd()
        .env_remove("STRATA_PASSWORD")
        .env("STRATA_PASSWORD_FILE", &pw)
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env
        .cmd()
        .env_remove("STRATA_PASSWORD")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("no password given"),
        "{}",
        stderr(&out)
    );
}

fn unknown_snapshots_and_paths_are_clear_errors(env: &Env) {
    env.init();
    let out = env.run(&["ls", "latest"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("has none"), "{}", stderr(&out));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let out = env.run(&["ls", "deadbeef"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("snapshot deadbeef not found"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["cat", "latest", "/no/such/file"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("/no/such/file"), "{}", stderr(&out));
}

fn keys_add_list_remove_passwd(env: &Env) {
    env.init();
    let out = env
        .cmd()
        .env("STRATA_NEW_PASSWORD", "second")
        .args(["key", "add"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // Both passwords open the repository.
    let second = env
        .cmd()
        .env("STRATA_PASSWORD", "second")
        .args(["--json", "key", "list"])
        .output()
        .unwrap();
    assert!(second.status.success());
    // The key in use cannot be removed; the other can.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run(&["key", "remove", &current[..12]]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("key in use"), "{}", stderr(&out));
    // A prefix both keys share names neither.
    let out = env.run(&["key", "remove", ""]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("ambiguous (2 keys match)"),
        "{}",
        stderr(&out)
    );
    env.ok(&["key", "remove", &other[..12]]);
    let out = env
        .cmd()
        .env("STRATA_PASSWORD", "second")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 12);
    // passwd: the new password works, the old one no longer does.
    let out = env
        .cmd()
        .env("STRATA_NEW_PASSWORD", "third")
        .args(["key", "passwd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(code(&env.run(&["snapshots"])), 12);
    let out = env
        .cmd()
        .env("STRATA_PASSWORD", "third")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
}

conformance!(
    init_prints_the_id_and_refuses_an_existing_repository,
    wrong_password_exits_12,
    no_repository_exits_10,
    password_from_a_file_and_none_at_all,
    unknown_snapshots_and_paths_are_clear_errors,
    keys_add_list_remove_passwd
);

/// Host names that could not name a directory (`mount`'s hosts/) or a line are refused
/// before anything is written; set names from the config file too.
#[test]
fn host_and_set_names_are_checked() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    for bad in ["evil/../../x", "", "..", ".", "a\nb"] {
        let out = env.run(&["backup", "--host", bad, src.to_str().unwrap()]);
        assert_eq!(code(&out), 2, "--host {bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("host name"), "{}", stderr(&out));
    }
    // Issue 31: malformed arguments are usage errors (2), as the README's table says.
    let s = src.to_str().unwrap();
    for args in [
        &["backup", "--exclude", "[", s][..],
        &["prune", "--max-unused", "abc"],
        &["prune", "--max-unused", "110%"],
        &["prune", "--min-storage", "GLACIER"],
        // Hostile pass 3: these exited 1, and a huge timeout panicked (101).
        &["prune", "--min-storage", "GLACIER=abc"],
        &["prune", "--min-storage", "GLACIER=-1d"],
        &["prune", "--min-storage", "FOO=1d"],
        &["backup", "--data-storage-class", "FOO", s],
        &["--s3-timeout", "99999999999999d", "snapshots"],
        &["--s3-timeout", "2days", "snapshots"],
        &["backup", "--exclude", "", s],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    assert!(env.objects("snapshots").is_empty());
    let cfg = env.path("strata.toml");
    std::fs::write(&cfg, format!("[sets.\"a/b\"]\npaths = [{src:?}]\n")).unwrap();
    let out = env.run(&["--config", cfg.to_str().unwrap(), "backup", "--all"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("set name"), "{}", stderr(&out));
    assert!(env.objects("snapshots").is_empty());
    // Refused when the config is read, by every command: a name with a newline would
    // forge a line of `status` (hostile pass).
    std::fs::write(&cfg, format!("[sets.\"ok\\nSTALE\"]\npaths = [{src:?}]\n")).unwrap();
    let out = env.run(&["--config", cfg.to_str().unwrap(), "status"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("set name"), "{}", stderr(&out));
    env.ok(&["backup", "--host", "vm-1.example", src.to_str().unwrap()]);
    // `--include "$UNSET"` restored a whole snapshot in place (hostile pass 3).
    let target = env.path("in-place");
    std::fs::create_dir_all(&target).unwrap();
    let t = target.to_str().unwrap();
    let out = env.run(&["restore", "latest", "--target", t, "--include", ""]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("empty pattern"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing restored"
    );
}

/// A set name that neither the config file nor any snapshot knows is an error, not a set
/// with no snapshot (a typo in a monitoring command must not read as healthy).
#[test]
fn unknown_sets_are_errors() {
    let env = Env::local();
    env.init();
    let app = env.path("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("f"), "x").unwrap();
    let cfg = env.path("strata.toml");
    std::fs::write(&cfg, format!("[sets.critical]\npaths = [{app:?}]\n")).unwrap();
    let cfg = cfg.to_str().unwrap();
    env.ok(&["--config", cfg, "backup", "critical"]);
    let target = env.path("r");
    let target = target.to_str().unwrap();
    for args in [
        vec!["status", "critcal", "--max-age", "1s"],
        vec!["stats", "nosuchset"],
        vec!["drill", "critcal"],
        // Issue 31: `--set` of every command that picks snapshots once read a typo as a
        // set without snapshots (exit 0 with an empty list, or 1 "no snapshot").
        vec!["snapshots", "--set", "critcal"],
        vec!["restore", "latest", "--set", "critcal", "--target", target],
        vec!["ls", "latest", "--set", "critcal"],
        vec!["find", "f", "--set", "critcal"],
        vec!["forget", "--keep-last", "1", "--set", "critcal"],
        vec!["check", "--set", "critcal"],
        vec!["diff", "latest", "latest", "--set", "critcal"],
    ] {
        let mut all = vec!["--config", cfg];
        all.extend(&args);
        let out = env.run(&all);
        // 2, a usage error: status's 1 means a stale set.
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no set named") && stderr(&out).contains("critical"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    env.ok(&["--config", cfg, "status", "critical"]);
    env.ok(&["--config", cfg, "stats", "critical"]);
    env.ok(&["--config", cfg, "snapshots", "--set", "critical"]);
    env.ok(&["--config", cfg, "ls", "latest", "--set", "critical"]);
    // A set the config names but no snapshot has yet is known: an empty list.
    std::fs::write(
        cfg,
        format!("[sets.critical]\npaths = [{app:?}]\n[sets.new]\npaths = [{app:?}]\n"),
    )
    .unwrap();
    env.ok(&["--config", cfg, "snapshots", "--set", "new"]);

    // A lineage without a set is named by its label, as "known:" lists it (hostile pass 3:
    // offered, accepted, then matched nothing: status said "no snapshot", exit 0).
    env.ok(&["backup", "--host", "vm", app.to_str().unwrap()]);
    let label = format!("host:vm:{}", app.display());
    let v = env.json(&["snapshots", "--set", &label]);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let out = env.run(&["status", &label, "--max-age", "1h"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("no snapshot"), "{said}");
    env.ok(&["ls", "latest", "--set", &label]);
    env.ok(&["drill", &label]);
}

/// Issue 25 item 21: `help --help` helps; `man` onto a file names it; an I/O error's
/// "(os error N)" is said once.
#[test]
fn small_messages_say_what_they_mean() {
    let env = &Env::local();
    for args in [&["help", "--help"][..], &["help", "backup", "-h"]] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: strata"),
            "{args:?}"
        );
    }
    let file = env.path("a-file");
    fs::write(&file, "x").unwrap();
    let out = env.cmd().arg("man").arg(&file).output().unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("a-file"), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));

    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let out = env.run(&["backup", &format!("{}/gone", src.display())]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("(os error 2)").count(),
        1,
        "{}",
        stderr(&out)
    );
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        &format!("{}/x", file.display()),
    ]);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.matches("(os error").count() <= 1, "{err}");
}

/// Hostile pass (issue 25): a malformed value exits 2 as the README's table says, not 1
/// (which `status` uses for a stale set), and names the flag.
#[test]
fn malformed_values_are_usage_errors() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    let s = src.to_str().unwrap();
    env.backup(&[s]);
    let t = env.path("t");
    let t = t.to_str().unwrap();
    for (args, flag) in [
        (vec!["restore", "--at", "yesterday", "--target", t], "--at"),
        (
            vec!["restore", "--at", "2026-12-05 08:3", "--target", t],
            "--at",
        ),
        (vec!["backup", "--time", "garbage", s], "--time"),
        (vec!["drill", "--sample", "abc"], "--sample"),
        (vec!["drill", "--sample", "0%"], "--sample"),
        (vec!["find", "["], "["),
        (vec!["status", "--max-age", "bogus"], "--max-age"),
        (vec!["forget", "--keep-within", "soon"], "--keep-within"),
        (
            vec!["restore", "latest", "--include", "[", "--target", t],
            "[",
        ),
        (vec!["check", "--read-data-subset", "9/4"], "9/4"),
        (vec!["-r", "gs://bucket/x", "init"], "\"gs\""),
        (vec!["-r", "B2://bucket", "snapshots"], "\"B2\""),
        (vec!["-r", "s3://", "snapshots"], "no bucket"),
        (vec!["-r", "s3:", "snapshots"], "s3:"),
    ] {
        let out = env.run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    // A URL of a scheme no backend serves was a local directory named "gs:"; a directory
    // that only looks like one is still reachable.
    assert!(!std::path::Path::new("gs:").exists());
    let odd = env.path("gs:");
    let out = env.run(&["-r", &format!("local:{}//x", odd.display()), "init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Hostile pass (issue 26): an empty location (an unset variable in a script) made the
    // working directory a repository's layout, then said there was no repository.
    let cwd = env.path("cwd");
    fs::create_dir_all(&cwd).unwrap();
    for url in ["", "local:"] {
        let out = env
            .cmd()
            .current_dir(&cwd)
            .args(["-r", url, "init"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{url:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("names no repository location"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read_dir(&cwd).unwrap().count(), 0, "nothing written");
}

/// Hostile pass (issue 25): "latest" that nothing matches says whether the repository is
/// empty or the filter (a mistyped set) matched none of its snapshots.
#[test]
fn no_matching_snapshot_says_why() {
    let env = &Env::local();
    env.init();
    let t = env.path("t");
    let t = t.to_str().unwrap();
    let out = env.run(&["restore", "latest", "--target", t]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("the repository has none"),
        "{}",
        stderr(&out)
    );
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    // A set nothing knows is a usage error naming the sets there are (issue 31: was 1).
    let out = env.run(&["restore", "latest", "--set", "oen", "--target", t]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("no set named oen"), "{err}");
    // A known filter that matches nothing still says what the repository holds.
    let out = env.run(&["restore", "latest", "--host", "nohost", "--target", t]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("1 snapshot(s)"), "{err}");
}

/// Hostile pass (issue 25): a default config path this user cannot read (another user's
/// HOME, as `setpriv` leaves it) is a warning, not a failure of a command that did not ask
/// for it; one given with --config still fails.
#[test]
fn an_unreadable_default_config_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        common::is_root(),
        "this test needs root to play a second user"
    );
    let env = &Env::local().unprivileged();
    env.init();
    let dir = env.path("").join(".config/strata");
    fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    fs::write(&cfg, "").unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be read"), "{}", stderr(&out));
    let out = env.run(&["--config", cfg.to_str().unwrap(), "snapshots"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

/// Hostile pass 9: a password file that is a FIFO nobody writes to held the command for
/// ever; an empty `--snapshot` id was "ambiguous" (exit 1), not a usage error.
#[test]
fn a_fifo_password_file_and_an_empty_snapshot_id_end_at_once() {
    let env = Env::local();
    env.init();
    let fifo = env.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let started = std::time::Instant::now();
    let out = (env.cmd())
        .env_remove("STRATA_PASSWORD")
        .args(["--password-file", fifo.to_str().unwrap(), "snapshots"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let out = env.run(&["forget", "--snapshot", ""]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
