//! `strata wal push|fetch`, PostgreSQL's archive_command and restore_command, without a
//! server: what PostgreSQL relies on (exit 0 means archived, retries are harmless, a probe
//! for a missing file fails cheaply and writes nothing) on both backends. The end-to-end
//! tests with a real PostgreSQL are in tests/postgres.rs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{code, noise, stderr, Env};

const SEG: &str = "000000010000000000000003";

/// A config with the cluster `main`; the repository and password come from the
/// environment.
fn config(env: &Env) -> String {
    let path = env.path("strata.toml");
    fs::write(&path, "[postgres.main]\n").unwrap();
    path.display().to_string()
}

fn segment(env: &Env, name: &str, seed: u64) -> std::path::PathBuf {
    let dir = env.path("pg_wal");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    // A WAL segment: mostly repeated records, partly fresh bytes.
    let mut bytes = noise(1 << 20, seed);
    bytes.extend(std::iter::repeat_n(7u8, 3 << 20));
    fs::write(&path, bytes).unwrap();
    path
}

/// `strata --config CFG wal ARGS`, whatever the exit code.
fn wal_run(env: &Env, cfg: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", cfg, "wal"];
    all.extend_from_slice(args);
    env.run(&all)
}

/// The same, asserting success.
fn wal_ok(env: &Env, cfg: &str, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg, "wal"];
    all.extend_from_slice(args);
    env.ok(&all)
}

/// The same, with `--json`.
fn wal_json(env: &Env, cfg: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--config", cfg, "wal"];
    all.extend_from_slice(args);
    env.json(&all)
}

/// strata with `args` and a password that opens nothing.
fn wrong_password(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd()
        .env("STRATA_PASSWORD", "wrong")
        .args(args)
        .output()
        .unwrap()
}

fn pushes_fetches_and_refuses_other_content(env: &Env) {
    env.init();
    let cfg = config(env);
    let seg = segment(env, SEG, 1);
    let p = seg.to_str().unwrap();
    let out = wal_json(env, &cfg, &["push", "main", p]);
    assert_eq!(out["result"], "stored", "{out}");
    // PostgreSQL retries a push whose exit it did not see: the same bytes are a success.
    let out = wal_json(env, &cfg, &["push", "main", p]);
    assert_eq!(out["result"], "already_archived", "{out}");

    let dest = env.path("fetched");
    wal_ok(env, &cfg, &["fetch", "main", SEG, dest.to_str().unwrap()]);
    assert!(fs::read(&dest).unwrap() == fs::read(&seg).unwrap());

    // Other bytes under an archived name: refused, and the archive keeps the first.
    let first = fs::read(&seg).unwrap();
    let other = segment(env, SEG, 2);
    let out = wal_run(env, &cfg, &["push", "main", other.to_str().unwrap()]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("other content"), "{}", stderr(&out));
    fs::remove_file(&dest).unwrap();
    wal_ok(env, &cfg, &["fetch", "main", SEG, dest.to_str().unwrap()]);
    assert!(fs::read(&dest).unwrap() == first);

    // A name never archived: exit 1, nothing written where PostgreSQL would read it.
    let missing = env.path("missing");
    let out = wal_run(
        env,
        &cfg,
        &[
            "fetch",
            "main",
            "000000010000000000000004",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not archived"), "{}", stderr(&out));
    assert!(!missing.exists());
    assert!(fs::read_dir(env.dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));

    // Another cluster's archive is another namespace.
    fs::write(&cfg, "[postgres.main]\n[postgres.other]\n").unwrap();
    let out = wal_run(
        env,
        &cfg,
        &["fetch", "other", SEG, missing.to_str().unwrap()],
    );
    assert_eq!(code(&out), 1);

    // Archived WAL is what snapshots are to prune: kept.
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune", "--instant-delete"]);
    fs::remove_file(&dest).unwrap();
    wal_ok(env, &cfg, &["fetch", "main", SEG, dest.to_str().unwrap()]);
    assert!(fs::read(&dest).unwrap() == first);
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["wal_records"], 1, "{check}");
    env.assert_read_data_clean();
}

fn refuses_what_is_not_a_wal_file(env: &Env) {
    env.init();
    let cfg = config(env);
    for name in ["postgresql.conf", "0000000100000000000000", "..history"] {
        let path = env.path(name);
        fs::write(&path, b"x").unwrap();
        let out = wal_run(env, &cfg, &["push", "main", path.to_str().unwrap()]);
        assert_ne!(code(&out), 0, "{name}");
        assert!(stderr(&out).contains("not a WAL"), "{}", stderr(&out));
    }
    let dest = env.path("d");
    for name in ["../../etc/passwd", "..", "000000010000000000000001/x"] {
        let out = wal_run(env, &cfg, &["fetch", "main", name, dest.to_str().unwrap()]);
        assert_ne!(code(&out), 0, "{name}");
        assert!(stderr(&out).contains("not a WAL"), "{}", stderr(&out));
    }
    // A cluster the config does not name: refused before anything is written, so a typo
    // cannot start a second archive.
    let seg = segment(env, SEG, 3);
    let out = wal_run(env, &cfg, &["push", "mian", seg.to_str().unwrap()]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("no [postgres.mian]"),
        "{}",
        stderr(&out)
    );
    assert!(env.objects("roots").is_empty());
    // Hostile pass (issue 25): a truncated segment is not archived (it would be what fetch
    // hands back, and the real one could never follow); the real one then is.
    let junk = env.path("junk").join(SEG);
    fs::create_dir_all(junk.parent().unwrap()).unwrap();
    for size in [4, (1 << 20) - 1, 3 << 20] {
        fs::write(&junk, noise(size, 4)).unwrap();
        let out = wal_run(env, &cfg, &["push", "main", junk.to_str().unwrap()]);
        assert_eq!(code(&out), 1, "{size}: {}", stderr(&out));
        assert!(stderr(&out).contains("not archived"), "{}", stderr(&out));
    }
    assert!(env.objects("roots").is_empty());
    wal_ok(env, &cfg, &["push", "main", seg.to_str().unwrap()]);
}

fn a_push_that_cannot_reach_the_repository_fails(env: &Env) {
    // No repository there: exit 10, and the segment stays for PostgreSQL to retry.
    let cfg = config(env);
    let seg = segment(env, SEG, 4);
    let before = fs::read(&seg).unwrap();
    let out = wal_run(env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(fs::read(&seg).unwrap() == before);
    // A wrong password: exit 12.
    env.init();
    let out = wrong_password(
        env,
        &[
            "--config",
            &cfg,
            "wal",
            "push",
            "main",
            seg.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 12, "{}", stderr(&out));
}

/// Recovery fetches one file per command: after a fetch, the next segments come ahead in
/// the background, and fetching them then needs one request (the config, no password).
fn a_fetch_prefetches_the_next_segments(env: &Env) {
    env.init();
    let cfg = config(env);
    let names: Vec<String> = (1..=5)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    let mut originals = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let p = segment(env, n, 10 + i as u64);
        wal_ok(env, &cfg, &["push", "main", p.to_str().unwrap()]);
        originals.push(fs::read(&p).unwrap());
    }
    let dest = env.path("restored");
    fs::create_dir_all(&dest).unwrap();
    let d = |n: &str| dest.join(n).to_str().unwrap().to_string();
    wal_ok(env, &cfg, &["fetch", "main", &names[0], &d(&names[0])]);
    assert!(fs::read(dest.join(&names[0])).unwrap() == originals[0]);
    let spooled = |n: &str| common::walk(&env.cache).iter().any(|p| p.ends_with(n));
    let t = std::time::Instant::now();
    while !spooled(&names[4]) && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(spooled(&names[4]), "{:?}", common::walk(&env.cache));
    // Files in the cache are private.
    for p in common::walk(&env.cache) {
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        let private = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode & 0o777 & !private, 0, "{} is {mode:o}", p.display());
    }
    for (n, original) in names.iter().zip(&originals).skip(1) {
        let out = wrong_password(env, &["--config", &cfg, "wal", "fetch", "main", n, &d(n)]);
        assert_eq!(code(&out), 0, "{n}: {}", stderr(&out));
        assert!(fs::read(dest.join(n)).unwrap() == *original, "{n}");
    }
    // Taken from the spool, not left there; what was not fetched ahead needs the
    // repository again.
    assert!(!spooled(&names[2]));
    let next = "000000010000000000000006";
    let out = wrong_password(
        env,
        &["--config", &cfg, "wal", "fetch", "main", next, &d("x")],
    );
    // (126, not 12: any failure of a fetch must stop recovery.)
    assert_eq!(code(&out), 126, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

/// The first push starts an agent that keeps the repository open; the next push hands it
/// the file, and it archives what else PostgreSQL has ready (archive_status/*.ready) along
/// with it, so the pushes for those answer at once.
fn pushes_go_through_an_agent_that_archives_ready_wal_along(env: &Env) {
    env.init();
    let cfg = config(env);
    let names: Vec<String> = (1..=6)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    let status = env.path("pg_wal/archive_status");
    fs::create_dir_all(&status).unwrap();
    let mut paths = Vec::new();
    for (i, n) in names.iter().enumerate() {
        paths.push(segment(env, n, 20 + i as u64));
        fs::write(status.join(format!("{n}.ready")), b"").unwrap();
    }
    let push = |i: usize| {
        let out = wal_json(env, &cfg, &["push", "main", paths[i].to_str().unwrap()]);
        out["result"].as_str().unwrap().to_string()
    };
    let done = |i: usize| {
        fs::rename(
            status.join(format!("{}.ready", names[i])),
            status.join(format!("{}.done", names[i])),
        )
        .unwrap()
    };
    assert_eq!(push(0), "stored");
    done(0);
    let agent = || {
        use std::os::unix::fs::FileTypeExt;
        common::walk(&env.cache)
            .into_iter()
            .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
    };
    let t = std::time::Instant::now();
    while agent().is_none() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let socket = agent().expect("no agent started");
    assert_eq!(push(1), "stored");
    done(1);
    // The rest went along.
    assert_eq!(env.objects("roots").len(), 6);
    assert_eq!(push(2), "already_archived");
    // Other content under a name the agent archived: refused, the archive keeps the first.
    let first = fs::read(&paths[3]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&paths[3], noise(1 << 20, 99)).unwrap();
    let out = wal_run(env, &cfg, &["push", "main", paths[3].to_str().unwrap()]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("other content"), "{}", stderr(&out));
    // No agent (gone, or its socket with it): the push runs by itself.
    fs::remove_file(&socket).unwrap();
    assert_eq!(push(4), "already_archived");
    for (i, n) in names.iter().enumerate() {
        let dest = env.path(&format!("back-{n}"));
        wal_ok(env, &cfg, &["fetch", "main", n, dest.to_str().unwrap()]);
        let want = if i == 3 {
            first.clone()
        } else {
            fs::read(&paths[i]).unwrap()
        };
        assert!(fs::read(&dest).unwrap() == want, "{n}");
    }
    env.assert_read_data_clean();
}

/// The agents serving this test's cache (their environment names it), by pid.
fn agents_of(env: &Env) -> Vec<i32> {
    let mine = format!("STRATA_CACHE_DIR={}", env.cache.display());
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let has = |hay: &[u8], needle: &[u8]| hay.split(|b| *b == 0).any(|w| w == needle);
            has(&cmd, b"agent") && has(&environ, mine.as_bytes())
        })
        .collect()
}

/// An agent killed (SIGKILL) while it archives: the push waiting on it does the work
/// itself, every push succeeds, and the archive holds every file whole.
fn a_killed_agent_loses_nothing(env: &Env) {
    env.init();
    let cfg = config(env);
    let status = env.path("pg_wal/archive_status");
    fs::create_dir_all(&status).unwrap();
    let mut paths = Vec::new();
    for i in 1..=12u64 {
        let n = format!("0000000100000000000000{i:02X}");
        paths.push(segment(env, &n, 40 + i));
        fs::write(status.join(format!("{n}.ready")), b"").unwrap();
    }
    let push = |p: &std::path::Path| {
        let out = wal_run(env, &cfg, &["push", "main", p.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}: {}", p.display(), stderr(&out));
        let n = p.file_name().unwrap().to_str().unwrap();
        fs::rename(
            status.join(format!("{n}.ready")),
            status.join(format!("{n}.done")),
        )
        .unwrap();
    };
    push(&paths[0]);
    let t = std::time::Instant::now();
    while agents_of(env).is_empty() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut killed = 0;
    for (i, p) in paths.iter().enumerate().skip(1) {
        std::thread::scope(|scope| {
            if i % 4 == 1 {
                // Mid-batch or just after it: either way the push must end archived.
                scope.spawn(|| {
                    std::thread::sleep(std::time::Duration::from_millis(15 * i as u64));
                    for pid in agents_of(env) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        killed += 1;
                    }
                });
            }
            push(p);
        });
    }
    assert!(killed > 0, "no agent was there to kill");
    assert_eq!(env.objects("roots").len(), paths.len());
    for p in &paths {
        let n = p.file_name().unwrap().to_str().unwrap();
        let dest = env.path(&format!("back-{n}"));
        wal_ok(env, &cfg, &["fetch", "main", n, dest.to_str().unwrap()]);
        assert!(fs::read(&dest).unwrap() == fs::read(p).unwrap(), "{n}");
    }
    env.assert_read_data_clean();
}

/// Starts the archive agent with a first push and waits until it serves.
fn start_agent(env: &Env, cfg: &str) {
    let first = segment(env, "000000010000000000000001", 61);
    wal_ok(env, cfg, &["push", "main", first.to_str().unwrap()]);
    let t = std::time::Instant::now();
    while agents_of(env).is_empty() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!agents_of(env).is_empty(), "no agent started");
    // Bound, not just started: a push now goes through it.
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// A push with a wrong password fails with 12 while an agent (opened with the right
/// one) serves: the push proves its password to the agent.
fn a_push_through_the_agent_checks_the_password(env: &Env) {
    env.init();
    let cfg = config(env);
    start_agent(env, &cfg);
    let seg = segment(env, SEG, 62);
    let args = [
        "--config",
        &cfg,
        "wal",
        "push",
        "main",
        seg.to_str().unwrap(),
    ];
    let before = env.objects("roots").len();
    let out = wrong_password(env, &args);
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    // (Records are named by a keyed hash: their count, not their names, tells.)
    assert_eq!(
        env.objects("roots").len(),
        before,
        "a push with a wrong password archived {SEG}"
    );
    wal_ok(env, &cfg, &["push", "main", seg.to_str().unwrap()]);
}

/// Hostile pass (issue 28): after `key passwd`, a push with the old password is refused
/// (12) although an agent opened with it still runs, and a push with the new one is
/// archived although the agent runs with the old one (it hands over and goes).
fn the_agent_follows_a_password_change(env: &Env) {
    const NEW: &str = "the new password";
    env.init();
    let cfg = config(env);
    start_agent(env, &cfg);
    let new = env.path("new-password");
    fs::write(&new, format!("{NEW}\n")).unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        new.to_str().unwrap(),
    ]);
    let push = |seg: &std::path::Path, password: &str| {
        let out = (env.cmd())
            .env("STRATA_PASSWORD", password)
            .args([
                "--config",
                &cfg,
                "wal",
                "push",
                "main",
                seg.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        (code(&out), stderr(&out))
    };
    let old = common::PASSWORD;
    let seg2 = segment(env, "000000010000000000000002", 71);
    let (rc, err) = push(&seg2, old);
    assert_eq!(rc, 12, "the old password archived through the agent: {err}");
    assert_eq!(push(&seg2, NEW).0, 0);
    // Now an agent opened with the new password may serve: the old one is still refused.
    let seg3 = segment(env, "000000010000000000000003", 72);
    let (rc, err) = push(&seg3, old);
    assert_eq!(rc, 12, "{err}");
    assert_eq!(push(&seg3, NEW).0, 0);
}

conformance!(
    the_agent_follows_a_password_change,
    a_push_through_the_agent_checks_the_password,
    a_killed_agent_loses_nothing,
    pushes_go_through_an_agent_that_archives_ready_wal_along,
    a_fetch_prefetches_the_next_segments,
    pushes_fetches_and_refuses_other_content,
    refuses_what_is_not_a_wal_file,
    a_push_that_cannot_reach_the_repository_fails,
);

/// An unreachable S3 endpoint fails the push (non-zero) instead of hanging or claiming it.
#[test]
fn a_push_to_an_unreachable_object_store_fails() {
    let env = Env::local();
    let cfg = config(&env);
    let seg = segment(&env, SEG, 5);
    let out = env
        .cmd()
        .env("STRATA_REPOSITORY", "s3:http://127.0.0.1:9/bucket/repo")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_REGION", "garage")
        .args([
            "--config",
            &cfg,
            "wal",
            "push",
            "main",
            seg.to_str().unwrap(),
        ])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    assert!(seg.exists());
}

/// A repository moved away while the archive agent has it open: the next push fails
/// (PostgreSQL keeps the segment and retries), nothing re-creates the repository, and
/// once it is back the push succeeds and `check` finds no gap. The same without an agent,
/// and for a backup whose repository goes away mid-run.
#[test]
fn a_vanished_repository_is_never_recreated() {
    let env = Env::local();
    env.init();
    let cfg = config(&env);
    start_agent(&env, &cfg);
    let repo = std::path::PathBuf::from(&env.repo);
    let away = env.path("repo.away");
    fs::rename(&repo, &away).unwrap();
    let seg = segment(&env, "000000010000000000000002", 63);
    let out = wal_run(&env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    assert_ne!(code(&out), 0, "a push into a vanished repository succeeded");
    assert!(!repo.exists(), "the agent re-created {}", repo.display());
    let out = env
        .cmd()
        .env("STRATA_WAL_AGENT", "off")
        .args([
            "--config",
            &cfg,
            "wal",
            "push",
            "main",
            seg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(!repo.exists());
    fs::rename(&away, &repo).unwrap();
    wal_ok(&env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    assert_eq!(env.objects("roots").len(), 2);
    env.assert_read_data_clean();

    // A backup from standard input: the repository goes away after its first pack.
    use std::io::Write;
    let mut child = env
        .std_cmd()
        .args(["backup", "--stdin", "--stdin-filename", "big"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let packs = || env.objects("data").len();
    let before = packs();
    let t = std::time::Instant::now();
    let mut seed = 100;
    while packs() == before && t.elapsed() < std::time::Duration::from_secs(60) {
        stdin.write_all(&noise(4 << 20, seed)).unwrap();
        seed += 1;
    }
    assert!(packs() > before, "no pack was written");
    fs::rename(&repo, &away).unwrap();
    // The rest: the backup may fail (and stop reading) before all of it is sent.
    for i in 0..16 {
        if stdin.write_all(&noise(4 << 20, 500 + i)).is_err() {
            break;
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!repo.exists(), "the backup re-created {}", repo.display());
}

/// A cache directory someone else made first (under a shared parent such as /tmp), with
/// a socket of theirs in the agent's place answering "stored": the push refuses the
/// directory, says so, and archives the file itself (issue 31); it never takes that
/// answer.
#[test]
fn a_cache_directory_of_another_user_is_refused() {
    if !common::is_root() {
        panic!("this test needs root to play a second Unix user (run it under tools/test)");
    }
    let env = Env::local();
    env.init();
    let cfg = config(&env);
    // The other user's directory, inside the cache, with a socket of theirs in it.
    let agent_dir = env.cache.join("wal-agent");
    fs::create_dir_all(&agent_dir).unwrap();
    fs::set_permissions(&agent_dir, fs::Permissions::from_mode(0o777)).unwrap();
    nix::unistd::chown(
        &agent_dir,
        Some(nix::unistd::Uid::from_raw(common::NOBODY)),
        Some(nix::unistd::Gid::from_raw(common::NOBODY)),
    )
    .unwrap();
    let seg = segment(&env, SEG, 64);
    let out = wal_run(&env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("owned by uid"), "{}", stderr(&out));
    assert_eq!(env.objects("roots").len(), 1, "archived by the push itself");
    // The cache itself owned by someone else: every command refuses it.
    fs::remove_dir(&agent_dir).unwrap();
    nix::unistd::chown(
        &env.cache,
        Some(nix::unistd::Uid::from_raw(common::NOBODY)),
        None,
    )
    .unwrap();
    let out = env.run(&["snapshots"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("owned by uid"), "{}", stderr(&out));
    // A plain directory is called one, not a symlink (hostile pass).
    assert!(
        stderr(&out).contains("is a directory owned"),
        "{}",
        stderr(&out)
    );
}

/// A socket in the agent's place served by another user (the directory is ours, yet the
/// socket's other end is not): SO_PEERCRED tells, and the push archives the file itself
/// (issue 31) instead of asking.
#[test]
fn an_agent_socket_served_by_another_user_is_refused() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    if !common::is_root() {
        panic!("this test needs root to play a second Unix user (run it under tools/test)");
    }
    let env = Env::local();
    env.init();
    let cfg = config(&env);
    start_agent(&env, &cfg);
    let socket = common::walk(&env.cache)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("wal-agent/"))
        .expect("the agent's socket");
    for pid in agents_of(&env) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = fs::remove_file(&socket);
    // nobody binds the name (the directory opened for a moment, then ours again) and
    // answers "stored" to anything.
    let dir = socket.parent().unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(env.cache.as_path(), fs::Permissions::from_mode(0o711)).unwrap();
    let script = "import socket, os, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen()\n\
        print('ready', flush=True)\n\
        c, _ = s.accept()\n\
        try: c.recv(4096); c.sendall(b'stored\\n')\n\
        except OSError: pass\n";
    let mut impostor = std::process::Command::new("python3")
        .args(["-c", script, socket.to_str().unwrap()])
        .uid(common::NOBODY)
        .gid(common::NOBODY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(impostor.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    let seg = segment(&env, SEG, 65);
    let before = env.objects("roots").len();
    let out = wal_run(&env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not by this user"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.objects("roots").len(),
        before + 1,
        "the push took the impostor's word instead of archiving"
    );
}

/// Hostile pass (issue 26): a damaged record (flipped by whoever holds the bucket, or
/// another record copied over its name) no longer blocks its segment for good: pushed
/// again, the file takes its place, and fetch gives it back byte-exact.
#[test]
fn a_damaged_record_is_replaced_by_the_segment_pushed_again() {
    let env = &Env::local();
    env.init();
    let cfg = config(env);
    let seg = segment(env, SEG, 7);
    let other = segment(env, "000000010000000000000004", 8);
    let p = seg.to_str().unwrap();
    wal_ok(env, &cfg, &["push", "main", p]);
    wal_ok(env, &cfg, &["push", "main", other.to_str().unwrap()]);
    let roots = std::path::Path::new(&env.repo).join("roots");
    let names: Vec<_> = fs::read_dir(&roots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 2);
    for damage in ["flip", "copy"] {
        // Which of the two is SEG's does not matter: both are pushed again.
        match damage {
            "flip" => {
                let mut b = fs::read(&names[0]).unwrap();
                b[40] ^= 1;
                fs::write(&names[0], b).unwrap();
            }
            _ => {
                fs::copy(&names[1], &names[0]).unwrap();
            }
        }
        let out = env.run(&["check"]);
        assert_eq!(
            code(&out),
            1,
            "{damage}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Without the agent: one that archived a file answers its re-push from memory.
        for s in [&seg, &other] {
            let out = env
                .cmd()
                .env("STRATA_WAL_AGENT", "off")
                .args(["--config", &cfg, "wal", "push", "main", s.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{damage}: {}", stderr(&out));
        }
        env.assert_read_data_clean();
        for s in [&seg, &other] {
            let name = s.file_name().unwrap().to_str().unwrap();
            let dest = env.path(&format!("fetched-{damage}-{name}"));
            wal_ok(env, &cfg, &["fetch", "main", name, dest.to_str().unwrap()]);
            assert_eq!(
                fs::read(&dest).unwrap(),
                fs::read(s).unwrap(),
                "{damage} {name}"
            );
        }
    }
}

/// Hostile pass (issue 26): PostgreSQL takes any exit code up to 125 from restore_command
/// for "not in the archive" and ends recovery there, promoting a copy without the commits
/// after it. Only a file never archived exits 1; every other failure exits 126, which
/// stops recovery instead.
#[test]
fn a_fetch_fails_other_than_not_archived_with_126() {
    let env = &Env::local();
    let cfg = config(env);
    let dest = env.path("dest");
    let d = dest.to_str().unwrap();
    let fetch = |extra: &[&str], password: &str| {
        let mut args = vec!["--config", cfg.as_str()];
        args.extend_from_slice(extra);
        let out = env
            .cmd()
            .env("STRATA_PASSWORD", password)
            .env("STRATA_WAL_AGENT", "off")
            .args(&args)
            .output()
            .unwrap();
        assert!(!dest.exists(), "{extra:?}: wrote {d}");
        out
    };
    let pw = common::PASSWORD.to_string();
    let no_repo = fetch(&["wal", "fetch", "main", SEG, d], &pw);
    assert_eq!(code(&no_repo), 126, "{}", stderr(&no_repo));
    env.init();
    let seg = segment(env, SEG, 9);
    wal_ok(env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    for (what, args, password) in [
        (
            "wrong password",
            vec!["wal", "fetch", "main", SEG, d],
            "wrong",
        ),
        (
            "cluster typo",
            vec!["wal", "fetch", "mian", SEG, d],
            pw.as_str(),
        ),
        ("missing argument", vec!["wal", "fetch", "main", SEG], &pw),
        (
            "unknown option",
            vec!["wal", "fetch", "--bogus", "main", SEG, d],
            &pw,
        ),
        ("misspelt command", vec!["wal", "fech", "main", SEG, d], &pw),
    ] {
        let out = fetch(&args, password);
        assert_eq!(code(&out), 126, "{what}: {}", stderr(&out));
    }
    // A config file that does not parse.
    let bad = env.path("bad.toml");
    fs::write(&bad, "[postgres.main\n").unwrap();
    let out = env
        .cmd()
        .args([
            "--config",
            bad.to_str().unwrap(),
            "wal",
            "fetch",
            "main",
            SEG,
            d,
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 126, "{}", stderr(&out));
    // The record damaged by whoever holds the bucket.
    let roots: Vec<_> = fs::read_dir(std::path::Path::new(&env.repo).join("roots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(roots.len(), 1);
    let mut b = fs::read(&roots[0]).unwrap();
    b[40] ^= 1;
    fs::write(&roots[0], b).unwrap();
    let out = fetch(&["wal", "fetch", "main", SEG, d], &pw);
    assert_eq!(code(&out), 126, "{}", stderr(&out));
    // Still exit 1 for a file never archived: the end of the archive.
    let out = fetch(
        &["wal", "fetch", "main", "000000010000000000000009", d],
        &pw,
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

/// Hostile pass (issue 26): the agent remembers what it archived, but a record gone since
/// (removed, damaged, or the repository replaced by an older copy) must not be answered
/// "archived" from memory: PostgreSQL would delete a segment the archive lacks. The
/// re-push stores it again.
#[test]
fn the_agent_answers_a_re_push_only_while_the_record_is_there() {
    let env = &Env::local();
    env.init();
    let cfg = config(env);
    start_agent(env, &cfg);
    let roots = std::path::Path::new(&env.repo).join("roots");
    let listing = || -> std::collections::BTreeSet<_> {
        fs::read_dir(&roots)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let before = listing();
    let seg = segment(env, SEG, 63);
    let push = || wal_json(env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    assert_eq!(push()["result"], "stored");
    let agents = agents_of(env);
    assert!(!agents.is_empty(), "no agent: nothing was tested");
    let new: Vec<_> = listing().difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    // Served from memory, with the record there.
    assert_eq!(push()["result"], "already_archived");
    for damage in ["removed", "flipped"] {
        match damage {
            "removed" => fs::remove_file(&new[0]).unwrap(),
            _ => {
                let mut b = fs::read(&new[0]).unwrap();
                b[40] ^= 1;
                fs::write(&new[0], b).unwrap();
            }
        }
        let out = push();
        assert_eq!(out["result"], "stored", "{damage}: {out}");
        assert_eq!(agents_of(env), agents, "{damage}: not the same agent");
        let dest = env.path(&format!("back-{damage}"));
        wal_ok(env, &cfg, &["fetch", "main", SEG, dest.to_str().unwrap()]);
        assert!(
            fs::read(&dest).unwrap() == fs::read(&seg).unwrap(),
            "{damage}"
        );
    }
    env.assert_read_data_clean();
}

/// Hostile pass (issue 26): a WAL record damaged for good (PostgreSQL deleted the segment,
/// so it cannot be pushed again) blocked prune forever. The error says what to do;
/// `repair roots` removes what cannot be read, and only that.
#[test]
fn repair_roots_removes_a_record_that_cannot_be_read() {
    let env = &Env::local();
    env.init();
    let cfg = config(env);
    let seg = segment(env, SEG, 70);
    let other = segment(env, "000000010000000000000004", 71);
    wal_ok(env, &cfg, &["push", "main", seg.to_str().unwrap()]);
    let roots = std::path::Path::new(&env.repo).join("roots");
    let damaged = fs::read_dir(&roots)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    wal_ok(env, &cfg, &["push", "main", other.to_str().unwrap()]);
    let mut b = fs::read(&damaged).unwrap();
    b[40] ^= 1;
    fs::write(&damaged, &b).unwrap();

    let out = env.run(&["prune"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("repair roots"), "{err}");
    let name = damaged.file_name().unwrap().to_str().unwrap();
    assert_eq!(err.matches(name).count(), 1, "{err}");

    let dry = env.json(&["repair", "roots", "--dry-run"]);
    assert_eq!(dry["records"], 2, "{dry}");
    assert_eq!(dry["damaged"][0]["file"], name, "{dry}");
    assert!(damaged.exists());
    let done = env.json(&["repair", "roots"]);
    assert_eq!(done["damaged"].as_array().unwrap().len(), 1, "{done}");
    assert!(!damaged.exists());
    let again = env.json(&["repair", "roots"]);
    assert_eq!(again["records"], 1, "{again}");
    assert!(again["damaged"].as_array().unwrap().is_empty(), "{again}");

    env.ok(&["prune"]);
    env.assert_read_data_clean();
    let dest = env.path("back");
    wal_ok(
        env,
        &cfg,
        &[
            "fetch",
            "main",
            "000000010000000000000004",
            dest.to_str().unwrap(),
        ],
    );
    assert!(fs::read(&dest).unwrap() == fs::read(&other).unwrap());
}

/// Hostile pass (issue 26): the spool of fetched-ahead WAL belonged to a location, not to
/// a repository, and handed over whatever it held. A new repository at the same path got
/// the old one's segments (PostgreSQL then ended recovery, promoting a copy without the
/// new cluster's commits), and a damaged spooled file went to PostgreSQL as it was.
#[test]
fn the_spool_hands_over_only_intact_files_of_this_repository() {
    let env = &Env::local();
    env.init();
    let cfg = config(env);
    let names: Vec<String> = (1..=5)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    let push_all = |seed: u64| -> Vec<Vec<u8>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = segment(env, n, seed + i as u64);
                wal_ok(env, &cfg, &["push", "main", p.to_str().unwrap()]);
                fs::read(&p).unwrap()
            })
            .collect()
    };
    let first = push_all(100);
    let dest = env.path("restored");
    fs::create_dir_all(&dest).unwrap();
    let fetch = |n: &str| {
        let d = dest.join(n);
        let _ = fs::remove_file(&d);
        wal_ok(env, &cfg, &["fetch", "main", n, d.to_str().unwrap()]);
        fs::read(&d).unwrap()
    };
    let spooled = |n: &str| {
        common::walk(&env.cache)
            .into_iter()
            .find(|p| p.ends_with(n))
    };
    let wait_for = |n: &str| {
        let t = std::time::Instant::now();
        while spooled(n).is_none() && t.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        spooled(n).unwrap_or_else(|| panic!("{n} was not fetched ahead"))
    };
    assert!(fetch(&names[0]) == first[0]);
    wait_for(&names[4]);
    // Damaged in the spool: fetched from the repository instead.
    let third = wait_for(&names[2]);
    let mut b = fs::read(&third).unwrap();
    b[10] ^= 1;
    fs::write(&third, b).unwrap();
    assert!(
        fetch(&names[2]) == first[2],
        "the damaged spooled copy was handed over"
    );
    assert!(spooled(&names[2]).is_none());

    // Another repository at the same path, other WAL under the same names.
    fs::remove_dir_all(&env.repo).unwrap();
    env.init();
    let second = push_all(200);
    for i in [1, 3, 4] {
        assert!(
            fetch(&names[i]) == second[i],
            "{}: the old repository's spooled copy was handed over",
            names[i]
        );
    }
}

/// Hostile pass (issue 26): a push of a file archived already said "archived" even when
/// its data was gone (PostgreSQL then deletes the segment). Now it fails while the index
/// names data that does not read, saying to repair the index; after that the push
/// stores the file again.
#[test]
fn a_re_push_stores_again_what_lost_its_data() {
    let env = &Env::local();
    env.init();
    let cfg = config(env);
    let seg = segment(env, SEG, 80);
    let p = seg.to_str().unwrap();
    let push = || {
        env.cmd()
            .env("STRATA_WAL_AGENT", "off")
            .args(["--config", &cfg, "--json", "wal", "push", "main", p])
            .output()
            .unwrap()
    };
    assert!(push().status.success());
    for (pack, _) in env.objects("data") {
        let dir = std::path::Path::new(&env.repo)
            .join("data")
            .join(&pack[..2]);
        fs::remove_file(dir.join(&pack)).unwrap();
    }
    let out = push();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("repair index"), "{}", stderr(&out));
    env.ok(&["repair", "index"]);
    let out = push();
    assert!(out.status.success(), "{}", stderr(&out));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["result"], "stored", "{said}");
    let dest = env.path("back");
    wal_ok(env, &cfg, &["fetch", "main", SEG, dest.to_str().unwrap()]);
    assert!(fs::read(&dest).unwrap() == fs::read(&seg).unwrap());
    env.assert_read_data_clean();
}
