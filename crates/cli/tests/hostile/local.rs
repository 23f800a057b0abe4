//! See main.rs. The local user and PostgreSQL restore (issue 31, items 1, 2, 5 and 6):
//! - a key holder's base backup whose record names a data directory leading out of the
//!   restore's staging area, and a staging swapped for a link before the move;
//! - secrets in the environment of hooks and psql;
//! - another user's WAL agent directory, listener, cache database and spooled WAL;
//! - links planted in another user's metrics directory.
//!
//! Tests that play a second Unix user (`NOBODY`) need root, as the suite runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::craft::{self, dir, file, pg_base_backup, symlink};

/// `pg restore main --target TARGET`, bounded in time and memory.
fn pg_restore(env: &Env, target: &Path) -> craft::Bounded {
    let cfg = craft::pg_config(env);
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
        err.contains("data directory")
            && err.contains(data_directory)
            && err.contains("strata forget --snapshot"),
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

/// A WAL segment of the smallest size PostgreSQL makes, named `name`, in `pg_wal`.
fn wal_segment(env: &Env, name: &str, seed: u64) -> PathBuf {
    let dir = env.path("pg_wal");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, noise(1 << 20, seed)).unwrap();
    path
}

/// Where the WAL agent of cluster `main` listens for this environment's repository.
fn agent_socket(env: &Env) -> PathBuf {
    let key = blake3::hash(env.repo.as_bytes()).to_hex();
    let name = format!("{}-{}", &key[..16], hex::encode("main"));
    env.cache.join("wal-agent").join(name)
}

/// A listener of uid `nobody` bound at `socket` that answers "stored" to every push,
/// killed on drop.
struct Impostor(std::process::Child);

impl Impostor {
    fn listen(socket: &Path) -> Self {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let script = "import socket, os, sys\n\
            s = socket.socket(socket.AF_UNIX)\n\
            s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen()\n\
            print('ready', flush=True)\n\
            while True:\n    c, _ = s.accept()\n    try: c.recv(4096); c.sendall(b'stored\\n')\n    \
            except OSError: pass\n    c.close()\n";
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script, socket.to_str().unwrap()])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the impostor did not listen");
        Impostor(child)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wal push` of `seg` exits 0, warns about `why`, and the archive really holds the file.
fn pushed_past_the_impostor(env: &Env, cfg: &str, seg: &Path, why: &str) {
    let out = env.run(&[
        "--config",
        cfg,
        "wal",
        "push",
        "main",
        seg.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "the push failed instead of archiving: {err}");
    assert!(err.contains(why), "no clear warning: {err}");
    let name = seg.file_name().unwrap().to_str().unwrap();
    let back = env.path(&format!("fetched-{name}"));
    env.ok(&[
        "--config",
        cfg,
        "wal",
        "fetch",
        "main",
        name,
        back.to_str().unwrap(),
    ]);
    assert!(
        fs::read(&back).unwrap() == fs::read(seg).unwrap(),
        "exit 0 on the impostor's word: {name} is not archived"
    );
}

/// Item 5: the WAL agent's directory made by another user (nobody), with a listener of
/// theirs in the socket's place answering "stored" to anything; then the directory ours
/// again but their listener still bound there. The push refuses both (a warning saying
/// why) and archives the file itself: PostgreSQL deletes a segment only once it is in
/// the archive.
#[test]
fn a_wal_agent_of_another_user_is_not_believed() {
    assert!(
        is_root(),
        "this test plays a second Unix user: run it as root"
    );
    let env = Env::local();
    env.init();
    let cfg = craft::pg_config(&env);
    let socket = agent_socket(&env);
    let agent_dir = socket.parent().unwrap();
    fs::create_dir_all(agent_dir).unwrap();
    // nobody reaches its directory through ours (as through a shared parent).
    for d in [env.dir.path(), env.cache.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o711)).unwrap();
    }
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(agent_dir, nobody, Some(nix::unistd::Gid::from_raw(NOBODY))).unwrap();
    let _impostor = Impostor::listen(&socket);
    let first = wal_segment(&env, "000000010000000000000002", 1);
    pushed_past_the_impostor(&env, &cfg, &first, "owned by uid 65534");
    // The directory ours again (0700), the impostor's socket still in it.
    nix::unistd::chown(agent_dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    fs::set_permissions(agent_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let second = wal_segment(&env, "000000010000000000000003", 2);
    pushed_past_the_impostor(&env, &cfg, &second, "not by this user");
    // The agent that push started takes the name back (the directory is ours): the
    // next push goes through an agent of ours, without a warning.
    let ours = || {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(&socket).is_ok_and(|m| m.uid() == 0)
    };
    let t = std::time::Instant::now();
    while !ours() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ours(), "the impostor still holds the agent's socket");
    let third = wal_segment(&env, "000000010000000000000004", 3);
    pushed_past_the_impostor(&env, &cfg, &third, "");
    let out = env.run(&[
        "--config",
        &cfg,
        "wal",
        "push",
        "main",
        third.to_str().unwrap(),
    ]);
    assert_eq!(stderr(&out), "", "warned with an agent of ours");
}

/// Item 6: node_exporter's textfile directory is another user's (nobody's), who plants
/// symlinks as the metrics lock file and as the metrics file, pointing into a directory
/// of root's: a backup as root creates and changes nothing there.
#[test]
fn metrics_written_into_another_users_directory_follow_no_link() {
    assert!(
        is_root(),
        "this test plays a second Unix user: run it as root"
    );
    let env = Env::local();
    env.init();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("a.txt"), "alpha\n").unwrap();
    let textfile = env.path("textfile");
    fs::create_dir_all(&textfile).unwrap();
    let nobody = nix::unistd::Uid::from_raw(NOBODY);
    nix::unistd::chown(&textfile, Some(nobody), None).unwrap();
    let cron = bystander(env.path("cron.d"));
    std::os::unix::fs::symlink(cron.join("planted"), textfile.join(".strata.prom.lock")).unwrap();
    std::os::unix::fs::symlink(cron.join("keep"), textfile.join("strata.prom")).unwrap();
    let cfg = env.path("metrics.toml");
    let prom = textfile.join("strata.prom");
    fs::write(
        &cfg,
        format!("metrics-file = {prom:?}\n[sets.docs]\npaths = [{app:?}]\n"),
    )
    .unwrap();
    let out = env.run(&["--config", cfg.to_str().unwrap(), "backup", "docs"]);
    untouched(&cron);
    // Hostile pass 5: the planted lock is removed and made anew, not left to silence the
    // metrics; the link in the file's place is replaced.
    let lock = fs::symlink_metadata(textfile.join(".strata.prom.lock")).unwrap();
    assert!(lock.is_file(), "{}", stderr(&out));
    assert!(
        fs::symlink_metadata(&prom).unwrap().is_file(),
        "{}",
        stderr(&out)
    );
    // The lock planted no more: the link in the metrics file's place is replaced, not
    // followed.
    fs::remove_file(textfile.join(".strata.prom.lock")).unwrap();
    fs::remove_file(&prom).unwrap();
    std::os::unix::fs::symlink(cron.join("keep"), &prom).unwrap();
    env.run(&["--config", cfg.to_str().unwrap(), "backup", "docs"]);
    untouched(&cron);
}

/// Item 5, the tree cache: the cache database is another user's (planted while the
/// directory was open to their group, say) and holds a forged tree under the id of the
/// snapshot's root: its trees are used without their ids checked, so the cache must not
/// be. `ls` lists what the repository holds.
#[test]
fn a_cache_database_of_another_user_is_not_trusted() {
    assert!(
        is_root(),
        "this test plays a second Unix user: run it as root"
    );
    let env = Env::local();
    env.init();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("real.txt"), "real\n").unwrap();
    env.ok(&["backup", app.to_str().unwrap()]);
    assert!(env.ok(&["ls", "latest"]).contains("real.txt"));
    let (_, snap) = open_repo(&env).snapshots().find("latest").unwrap();
    let forged = strata::Tree {
        entries: vec![symlink("forged-entry", "anywhere")],
    }
    .encode();
    let db = walk(&env.cache)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "cache.sqlite"))
        .expect("no cache database");
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        n = c.execute('UPDATE trees SET data = ? WHERE id = ?', \
            (bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]))).rowcount\n\
        c.commit(); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()\n\
        sys.exit(0 if n == 1 else 1)\n";
    let st = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, db.to_str().unwrap()])
        .args([hex::encode(&forged), hex::encode(snap.tree.0)])
        .status()
        .unwrap();
    assert!(st.success(), "the root tree is not in the cache to forge");
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    for f in walk(db.parent().unwrap()) {
        if f.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("cache.sqlite"))
        {
            nix::unistd::chown(&f, nobody, None).unwrap();
        }
    }
    let listed = env.ok(&["ls", "latest"]);
    assert!(
        !listed.contains("forged-entry"),
        "the planted cache was trusted: {listed}"
    );
    assert!(listed.contains("real.txt"), "{listed}");
}

/// Item 2: `pg basebackup` runs psql without the repository's password variables and the
/// cloud's secrets; libpq's own (PGPASSWORD) and PATH stay. psql is the real one, behind
/// a shim first on PATH that writes down the environment it was started with (no server
/// need answer for that).
#[test]
fn psql_sees_no_secret() {
    let env = Env::local();
    env.init();
    let shims = env.path("shims");
    fs::create_dir_all(&shims).unwrap();
    let seen = env.path("psql.env");
    fs::write(
        shims.join("psql"),
        format!("#!/bin/sh\nenv > {seen:?}\nexec /usr/bin/psql \"$@\"\n"),
    )
    .unwrap();
    fs::set_permissions(shims.join("psql"), fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = env.path("pg.toml");
    let (data, sock) = (env.path("data"), env.path("sock"));
    fs::create_dir_all(&data).unwrap();
    fs::write(
        &cfg,
        format!(
            "[postgres.main]\ndata-directory = {data:?}\nconnection = \"host={} port=5432 \
             user=postgres dbname=postgres\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap());
    let out = env
        .cmd()
        .envs(secret_vars())
        .env("PATH", path)
        .env("PGPASSWORD", "libpq-keeps-this")
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "pg",
            "basebackup",
            "main",
        ])
        .output()
        .unwrap();
    let seen =
        fs::read_to_string(&seen).unwrap_or_else(|_| panic!("psql did not run: {}", stderr(&out)));
    no_secret_in(&seen);
    for kept in ["PGPASSWORD=libpq-keeps-this", "PATH="] {
        assert!(seen.contains(kept), "{kept} missing:\n{seen}");
    }
}

/// Swaps the staging directory beside the target for a link to `to` the first time the
/// restore warns of a tablespace link it removed: a moment after the data directory was
/// found and checked, before it is moved into place.
struct SwapStaging {
    parent: PathBuf,
    to: PathBuf,
    done: std::sync::atomic::AtomicBool,
}

impl strata::Progress for SwapStaging {
    fn warning(&self, msg: &str) {
        use std::sync::atomic::Ordering;
        if !msg.contains("tablespace link") || self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let staging = fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(".strata-pg-restore-"))
            .expect("no staging");
        fs::rename(&staging, self.parent.join("moved-staging")).unwrap();
        std::os::unix::fs::symlink(&self.to, &staging).unwrap();
    }
}

/// Item 1, the last step: whoever owns the target's parent (the cluster's owner, for a
/// target in /var/lib/postgresql) may swap the staging directory for a link while the
/// restore finishes. What is moved into the target must be the directory found and
/// checked, not what the path leads to then. The swap is made from the restore's own
/// warning (a tablespace link the backup holds is removed), so it falls between the
/// check and the move every time.
#[test]
fn a_staging_swapped_for_a_link_moves_nothing_else_into_the_target() {
    let env = Env::local();
    env.init();
    let decoy = env.path("decoy");
    let victim = bystander(decoy.join("data"));
    pg_base_backup(&env, "/data", |c| {
        let tblspc = c.tree(vec![symlink("16384", "/srv/tablespace")]);
        let data = c.tree(vec![
            file(c, "PG_VERSION", b"15\n"),
            dir("pg_tblspc", tblspc),
        ]);
        c.tree(vec![dir("data", data)])
    });
    let repo = open_repo(&env);
    let plan = strata_pg::plan_restore(&repo, "main", Default::default()).unwrap();
    let target = env.path("target");
    let swap = SwapStaging {
        parent: env.dir.path().to_path_buf(),
        to: decoy,
        done: false.into(),
    };
    let err = strata_pg::restore(
        &repo,
        &plan,
        &target,
        "false",
        false,
        None,
        Default::default(),
        &swap,
    )
    .unwrap_err()
    .to_string();
    assert!(swap.done.into_inner(), "no tablespace link was removed");
    untouched(&victim);
    // Hostile pass 3, item 3: the run fails, naming where its staging went, emptied.
    assert!(err.contains("moved-staging"), "{err}");
    let moved = env.dir.path().join("moved-staging");
    assert_eq!(fs::read_dir(&moved).unwrap().count(), 0, "{err}");
    assert_eq!(
        fs::read_to_string(target.join("PG_VERSION")).unwrap(),
        "15\n"
    );
    assert!(target.join("recovery.signal").is_file());
}

/// Item 5, the WAL spool: `wal fetch` hands PostgreSQL a segment prefetched into the
/// cache if its hash beside it matches. A segment and hash another user planted there
/// (owned by them: the directory was open to their group before it was narrowed) are
/// not handed over: the fetch gives what the archive holds.
#[test]
fn a_spooled_segment_of_another_user_is_not_handed_over() {
    assert!(
        is_root(),
        "this test plays a second Unix user: run it as root"
    );
    let env = Env::local();
    env.init();
    let cfg = craft::pg_config(&env);
    let name = "000000010000000000000002";
    let real = wal_segment(&env, name, 7);
    env.ok(&[
        "--config",
        &cfg,
        "wal",
        "push",
        "main",
        real.to_str().unwrap(),
    ]);
    let mut key = blake3::Hasher::new();
    key.update(env.repo.as_bytes())
        .update(&[0])
        .update(&env.read_object_config());
    let spool = env
        .cache
        .join("wal-spool")
        .join(&key.finalize().to_hex()[..32])
        .join(hex::encode("main"));
    fs::create_dir_all(&spool).unwrap();
    let forged = noise(1 << 20, 666);
    fs::write(spool.join(name), &forged).unwrap();
    let hash = spool.join(format!("{name}.b3"));
    fs::write(&hash, blake3::hash(&forged).to_hex().as_bytes()).unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    for f in [spool.join(name), hash] {
        nix::unistd::chown(&f, nobody, None).unwrap();
    }
    let dest = env.path("fetched");
    env.ok(&[
        "--config",
        &cfg,
        "wal",
        "fetch",
        "main",
        name,
        dest.to_str().unwrap(),
    ]);
    let got = fs::read(&dest).unwrap();
    assert!(
        got != forged,
        "the planted segment was handed to PostgreSQL"
    );
    assert!(got == fs::read(&real).unwrap(), "not the archived segment");
}

/// Item 1: a base backup whose `pg_tblspc` is a symlink node to a directory of the host
/// holding links of its own. The restore removes tablespace links; it must not do so
/// through the link (root removed the host's links), and the copy gets a real, empty
/// `pg_tblspc` of its own, as it gets its own `pg_wal`.
#[test]
fn a_pg_tblspc_symlink_node_leads_nowhere() {
    let env = Env::local();
    env.init();
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink("/srv/tablespace", elsewhere.join("16384")).unwrap();
    pg_base_backup(&env, "/data", |c| {
        let data = c.tree(vec![
            file(c, "PG_VERSION", b"15\n"),
            symlink("pg_tblspc", elsewhere.to_str().unwrap()),
        ]);
        c.tree(vec![dir("data", data)])
    });
    let target = env.path("target");
    let run = pg_restore(&env, &target);
    assert_eq!(code(&run.out), 0, "{}", stderr(&run.out));
    assert!(
        fs::symlink_metadata(elsewhere.join("16384")).is_ok(),
        "the host's link was removed through pg_tblspc"
    );
    let tblspc = fs::symlink_metadata(target.join("pg_tblspc")).unwrap();
    assert!(tblspc.is_dir(), "pg_tblspc is still a link");
    assert_eq!(fs::read_dir(target.join("pg_tblspc")).unwrap().count(), 0);
}

/// `path` made a symlink to `to` owned by `NOBODY` (as another user would plant it).
fn nobodys_link(to: &Path, path: &Path) {
    std::os::unix::fs::symlink(to, path).unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::fchownat(
        None,
        path,
        nobody,
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Hostile pass: a restore target reached through another user's link, in the middle of
/// the path or at the end of a chain that starts with root's, is refused (only a link at
/// the very end was); nothing lands where it points.
#[test]
fn a_target_through_another_users_link_anywhere_is_refused() {
    assert!(is_root(), "the suite runs as root (tools/test)");
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"secret").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let victim = env.path("victim");
    fs::create_dir(&victim).unwrap();
    let theirs = env.path("nob");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    nobodys_link(&victim, &theirs.join("x"));
    nobodys_link(&victim, &theirs.join("y"));
    std::os::unix::fs::symlink(theirs.join("y"), env.path("rl")).unwrap();
    for target in [theirs.join("x/restore"), env.path("rl"), env.path("rl/sub")] {
        let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_ne!(code(&out), 0, "{}", target.display());
        assert!(
            stderr(&out).contains("owned by uid 65534"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "written through a link"
    );
    // A link of root's own is the operator's: followed.
    std::os::unix::fs::symlink(&victim, env.path("mine")).unwrap();
    env.ok(&[
        "restore",
        "latest",
        "--target",
        env.path("mine/r").to_str().unwrap(),
    ]);
    assert!(victim.join("r").is_dir());
}

/// Hostile pass: `strata man DIR` into a directory another user can write replaces a
/// link planted under a page's name instead of writing through it.
#[test]
fn man_pages_replace_a_planted_link() {
    assert!(is_root(), "the suite runs as root (tools/test)");
    let env = Env::local();
    let victim = env.path("victim");
    fs::write(&victim, b"ORIGINAL").unwrap();
    let man = env.path("man");
    fs::create_dir(&man).unwrap();
    std::os::unix::fs::chown(&man, Some(NOBODY), Some(NOBODY)).unwrap();
    nobodys_link(&victim, &man.join("strata.1"));
    env.ok(&["man", man.to_str().unwrap()]);
    assert_eq!(fs::read(&victim).unwrap(), b"ORIGINAL");
    let page = fs::symlink_metadata(man.join("strata.1")).unwrap();
    assert!(page.is_file(), "strata.1 is still a link");
    assert!(man.join("strata-backup.1").is_file());
}

// ---- Hostile pass 3, item 3: the sweeps of killed runs' directories (drill,
// `pg restore`) removed any 0700 directory of the running user with the right name, and
// a drill whose directory was moved away exited 0, leaving the decrypted copy.

/// A pid no process has (one that just ended).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// `parent` made another user's (as a cluster owner's /var/lib/postgresql/15 is), holding
/// root's private directory renamed by that user to `name`, an hour old.
fn renamed_root_dir(parent: &Path, name: &str) -> PathBuf {
    fs::create_dir_all(parent).unwrap();
    std::os::unix::fs::chown(parent, Some(NOBODY), Some(NOBODY)).unwrap();
    let victim = parent.join(name);
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("sub/precious"), "root's own\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::open(&victim)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    victim
}

#[test]
fn the_drill_sweep_leaves_a_directory_merely_named_like_a_copy() {
    assert!(
        is_root(),
        "this test plays a second Unix user: run it as root"
    );
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "data").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let scratch = env.path("evetarget");
    let victim = renamed_root_dir(&scratch, &format!(".strata-drill-{}-AAAAAA", dead_pid()));
    let out = env.run(&["drill", "--target", scratch.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(victim.join("sub/precious")).unwrap_or_default(),
        "root's own\n",
        "the sweep removed root's directory: {}",
        stderr(&out)
    );
    // Named, not kept silently.
    assert!(stderr(&out).contains("no marker"), "{}", stderr(&out));
}

#[test]
fn the_pg_restore_sweep_leaves_a_directory_merely_named_like_a_staging() {
    assert!(
        is_root(),
        "this test plays a second Unix user: run it as root"
    );
    let env = Env::local();
    env.init();
    pg_base_backup(&env, "/data", |c| {
        let data = c.tree(vec![file(c, "PG_VERSION", b"15\n")]);
        c.tree(vec![dir("data", data)])
    });
    let parent = env.path("pg15");
    let name = format!(".strata-pg-restore-{}-xyz", dead_pid());
    let victim = renamed_root_dir(&parent, &name);
    let run = pg_restore(&env, &parent.join("main"));
    assert_eq!(code(&run.out), 0, "{}", stderr(&run.out));
    assert_eq!(
        fs::read_to_string(victim.join("sub/precious")).unwrap_or_default(),
        "root's own\n",
        "the sweep removed root's directory: {}",
        stderr(&run.out)
    );
}

/// The other user moves the running drill's directory away and plants a symlink at its
/// name (here the set's verify command does it, at a known moment). The drill fails,
/// naming where the directory went, and removes the decrypted copy there all the same.
#[test]
fn a_drill_whose_directory_is_moved_away_fails_and_leaves_no_copy() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("secret"), "plaintext").unwrap();
    let scratch = env.path("scratch");
    let elsewhere = bystander(env.path("elsewhere"));
    let cfg = env.path("strata.toml");
    fs::write(
        &cfg,
        format!(
            "[sets.s]\npaths = [{src:?}]\nkeep = {{ daily = 7 }}\n\
             drill-verify = 'mv \"$STRATA_DRILL_DIR\" {moved:?} && ln -s {elsewhere:?} \
             \"$STRATA_DRILL_DIR\"'\n",
            moved = scratch.join("moved-by-eve"),
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    env.ok(&["--config", c, "backup", "s"]);
    fs::create_dir_all(&scratch).unwrap();
    let out = env.run(&[
        "--config",
        c,
        "drill",
        "s",
        "--target",
        scratch.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("moved-by-eve"), "{err}");
    let left = common_files(&scratch.join("moved-by-eve"));
    assert!(left.is_empty(), "the decrypted copy is left: {left:?}");
    untouched(&elsewhere);
}

/// The regular files below `dir` (none if it is gone).
fn common_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| p.is_file()).collect()
}
