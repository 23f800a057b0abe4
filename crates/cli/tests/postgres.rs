//! Point-in-time recovery of a real PostgreSQL (Debian's `postgresql`) through the
//! repository: `archive_command = strata wal push`, `strata pg basebackup`, `strata pg
//! restore --at`, and the restored server started to show exactly the rows of the instant
//! asked for. Throwaway clusters run as the `postgres` user when the suite runs as root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{code, stderr, Env};

/// The newest installed server's programs (initdb, pg_ctl).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (tools/test installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().expect("no initdb under /usr/lib/postgresql")
}

/// The postgres user's uid and gid, when running as root (PostgreSQL refuses root).
fn pg_user() -> Option<(u32, u32)> {
    if !common::is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("no postgres user (Debian's postgresql package creates it)");
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// One throwaway cluster: its data directory, socket directory and log.
struct Cluster<'e> {
    env: &'e Env,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    running: bool,
}

impl<'e> Cluster<'e> {
    /// A command as the cluster's user, with the test's strata environment (the
    /// archive_command and restore_command inherit it from the server).
    fn command(env: &Env, program: &Path) -> Command {
        let base = env.std_cmd();
        let mut cmd = Command::new(program);
        cmd.env_clear();
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.env("LC_ALL", "C.UTF-8");
        if let Some((uid, gid)) = pg_user() {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// A new cluster `name` with WAL archived to the repository by `archive_command`.
    fn init(env: &'e Env, name: &str, archive_command: &str) -> Self {
        let c = Self::at(env, name);
        let out = Self::command(env, &pg_bin().join("initdb"))
            .args([
                "-D",
                c.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", stderr(&out));
        let mut conf = fs::read_to_string(c.data.join("postgresql.conf")).unwrap();
        conf += &format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '{}'\n",
            archive_command.replace('\'', "''")
        );
        fs::write(c.data.join("postgresql.conf"), conf).unwrap();
        c
    }

    /// The cluster whose data directory is (or will be) `name` under the test directory.
    fn at(env: &'e Env, name: &str) -> Self {
        let sock = env.path(&format!("sock-{name}"));
        fs::create_dir_all(&sock).unwrap();
        chown_to_pg(&sock);
        Cluster {
            env,
            data: env.path(name),
            sock,
            log: env.path(&format!("{name}.log")),
            running: false,
        }
    }

    fn start(&mut self, extra: &str) {
        let opts = format!(
            "-c port=5432 -c listen_addresses='' -c unix_socket_directories='{}' {extra}",
            self.sock.display()
        );
        let out = Self::command(self.env, &pg_bin().join("pg_ctl"))
            .args([
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
            ])
            .args(["-o", &opts, "-w", "-t", "120", "start"])
            .output()
            .unwrap();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{log}",
            stderr(&out)
        );
        self.running = true;
    }

    fn stop(&mut self) {
        if self.running {
            let _ = Self::command(self.env, &pg_bin().join("pg_ctl"))
                .args([
                    "-D",
                    self.data.to_str().unwrap(),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ])
                .output();
            self.running = false;
        }
    }

    fn conninfo(&self) -> String {
        format!(
            "host={} port=5432 user=postgres dbname=postgres",
            self.sock.display()
        )
    }

    /// The rows `sql` returns, as psql prints them unaligned.
    fn sql(&self, sql: &str) -> String {
        let out = Self::command(self.env, Path::new("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.conninfo(),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Ends the current WAL segment and waits until it is archived.
    fn switch_and_archive(&self) -> String {
        let seg = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.sql("SELECT pg_switch_wal()");
        for _ in 0..1200 {
            let (done, failed) = {
                let r = self.sql(
                    "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver",
                );
                let (a, f) = r.split_once('|').unwrap();
                (a >= seg.as_str(), f.to_string())
            };
            if done {
                return seg;
            }
            let _ = failed;
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{seg} not archived in 120 s: {}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Recovery ends with a promotion: waits until the server leaves recovery.
    fn wait_promoted(&self) {
        for _ in 0..600 {
            if self.sql("SELECT pg_is_in_recovery()") == "f" {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "still in recovery after 60 s: {}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The values of column `i` in table `t`.
    fn rows(&self) -> Vec<i32> {
        self.sql("SELECT i FROM t ORDER BY i")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_to_pg(path: &Path) {
    if let Some((uid, gid)) = pg_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A test environment whose strata runs as the postgres user (so that the server's
/// archive_command and the tests' own commands share the cache and the repository files),
/// and the config naming cluster `main`.
fn pg_env(env: Env) -> (Env, String) {
    let mut env = env;
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    chown_to_pg(env.dir.path());
    if let Some((uid, _)) = pg_user() {
        env.run_as = Some(uid);
    }
    let cfg = env.path("strata.toml");
    let sock = env.path("sock-data");
    fs::write(
        &cfg,
        format!(
            "[postgres.main]\ndata-directory = \"{}\"\nconnection = \"host={} port=5432 \
             user=postgres dbname=postgres\"\nkeep = {{ last = 1 }}\n",
            env.path("data").display(),
            sock.display()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    (env, cfg)
}

fn strata_bin(env: &Env) -> String {
    env.std_cmd().get_program().to_string_lossy().into_owned()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Restores `main` as of `at` (the end of the archive with `None`) into a new data
/// directory, starts a server there without archiving, and returns the rows it has.
fn restore_and_read(env: &Env, cfg: &str, at: Option<&str>, name: &str) -> (Vec<i32>, String) {
    let target = env.path(name);
    let mut args = vec!["--config", cfg, "pg", "restore", "main", "--target"];
    let t = target.to_str().unwrap().to_string();
    args.push(&t);
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    let plan = env.json(&args);
    let snapshot = plan["plan"]["snapshot"].as_str().unwrap().to_string();
    assert!(target.join("recovery.signal").exists());
    assert!(target.join("backup_label").exists());
    let mut c = Cluster::at(env, name);
    c.start("-c archive_mode=off");
    c.wait_promoted();
    let rows = c.rows();
    c.stop();
    (rows, snapshot)
}

/// A started cluster `data` archiving through `wal push`, with the empty table `t`.
fn archiving_primary<'e>(env: &'e Env, cfg: &str) -> Cluster<'e> {
    let push = format!("{} --config {cfg} wal push main %p", strata_bin(env));
    let mut db = Cluster::init(env, "data", &push);
    db.start("");
    db.sql("CREATE TABLE t (i int, at timestamptz DEFAULT clock_timestamp())");
    db
}

/// `strata --config CFG ARGS` fails (exit 1) saying `why`; returns what it said.
fn refused(env: &Env, cfg: &str, args: &[&str], why: &str) -> String {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{args:?}: {err}");
    assert!(err.contains(why), "{args:?}: {err}");
    err
}

fn insert(c: &Cluster, i: i32) {
    c.sql(&format!("INSERT INTO t (i) VALUES ({i})"));
}

/// Between two inserts, an instant clearly after the first's commit and before the second.
fn instant_between() -> String {
    std::thread::sleep(Duration::from_millis(1100));
    let t = now();
    std::thread::sleep(Duration::from_millis(1100));
    t
}

fn point_in_time_recovery_to_three_instants(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let mut db = archiving_primary(&env, &cfg);
    insert(&db, 1);
    db.switch_and_archive();
    let before_any_backup = now();

    let b1 = env.json(&["--config", &cfg, "pg", "basebackup", "main"]);
    let b1_id = b1["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(b1["set"], "postgres.main");
    assert_eq!(b1["postgres"]["timeline"], 1, "{b1}");
    insert(&db, 2);
    db.switch_and_archive();
    let between_2_and_3 = instant_between();
    insert(&db, 3);
    db.switch_and_archive();

    // A second base backup: the data directory deduplicates against the first.
    let b2 = env.json(&["--config", &cfg, "pg", "basebackup", "main"]);
    let b2_id = b2["snapshot_id"].as_str().unwrap().to_string();
    let added = b2["summary"]["data_added"].as_u64().unwrap();
    let total = b2["summary"]["total_bytes"].as_u64().unwrap();
    assert!(
        added < total / 2,
        "second base backup added {added} of {total} bytes"
    );
    insert(&db, 4);
    db.switch_and_archive();
    let between_4_and_5 = instant_between();
    insert(&db, 5);
    db.switch_and_archive();

    // Before the first base backup was consistent: nothing can give that instant.
    refused(
        &env,
        &cfg,
        &[
            "pg",
            "restore",
            "main",
            "--at",
            &before_any_backup,
            "--target",
            env.path("r0").to_str().unwrap(),
        ],
        "no base backup is consistent",
    );
    assert!(!env.path("r0").exists());

    // Never over a data directory: the live one is refused, untouched.
    refused(
        &env,
        &cfg,
        &[
            "pg",
            "restore",
            "main",
            "--target",
            db.data.to_str().unwrap(),
        ],
        "not empty",
    );
    assert!(!db.data.join("recovery.signal").exists());
    assert_eq!(db.rows(), vec![1, 2, 3, 4, 5]);
    // Nor onto a symlink (to an empty directory): refused before anything is restored.
    let empty = env.path("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let link = env.path("link-to-empty");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    refused(
        &env,
        &cfg,
        &["pg", "restore", "main", "--target", link.to_str().unwrap()],
        "is a symlink",
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert!(
        !std::fs::read_dir(env.path("")).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with(".strata-pg-restore-")),
        "a refused restore left its staging directory"
    );

    // Between inserts 2 and 3: the first base backup, replayed to the instant.
    let (rows, used) = restore_and_read(&env, &cfg, Some(&between_2_and_3), "r1");
    assert_eq!(rows, vec![1, 2]);
    assert_eq!(used, b1_id);
    // Between 4 and 5: the second.
    let (rows, used) = restore_and_read(&env, &cfg, Some(&between_4_and_5), "r2");
    assert_eq!(rows, vec![1, 2, 3, 4]);
    assert_eq!(used, b2_id);
    // The end of the archive.
    let (rows, used) = restore_and_read(&env, &cfg, None, "r3");
    assert_eq!(rows, vec![1, 2, 3, 4, 5]);
    assert_eq!(used, b2_id);

    // Later than the archive reaches: refused, as PostgreSQL would stop short of it.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    refused(
        &env,
        &cfg,
        &[
            "pg",
            "restore",
            "main",
            "--at",
            &future,
            "--target",
            env.path("r4").to_str().unwrap(),
        ],
        "WAL archive ends at",
    );

    // Retention: the policy keeps the newest base backup; the WAL only the first one
    // needed goes with it, and prune reclaims it. The second one still restores. The dry
    // run says exactly what the real one removes (it counted the forgotten base backup).
    let dry = env.json(&["--config", &cfg, "forget", "postgres.main", "--dry-run"]);
    let out = env.json(&[
        "--config",
        &cfg,
        "forget",
        "postgres.main",
        "--prune",
        "--instant-delete",
    ]);
    assert_eq!(dry["wal"][0]["removed"], out["wal"][0]["removed"], "{dry}");
    assert_eq!(
        dry["wal"][0]["kept_from"], out["wal"][0]["kept_from"],
        "{dry}"
    );
    let removed: Vec<String> = out["wal"][0]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let b2_start = b2["postgres"]["start_wal"].as_str().unwrap();
    assert!(!removed.is_empty(), "{out}");
    assert!(
        removed.iter().all(|n| n.as_str() < b2_start),
        "{removed:?} vs {b2_start}"
    );
    assert_eq!(out["wal"][0]["kept_from"], b2_start);
    let gone = env.path("gone");
    let out = env.run(&[
        "--config",
        &cfg,
        "wal",
        "fetch",
        "main",
        &removed[0],
        gone.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    refused(
        &env,
        &cfg,
        &[
            "pg",
            "restore",
            "main",
            "--at",
            &between_2_and_3,
            "--target",
            env.path("r6").to_str().unwrap(),
        ],
        "no base backup is consistent",
    );
    let (rows, used) = restore_and_read(&env, &cfg, Some(&between_4_and_5), "r7");
    assert_eq!(rows, vec![1, 2, 3, 4]);
    assert_eq!(used, b2_id);
    env.assert_read_data_clean();

    // A hole in the archive: a segment after one that is missing. Restoring past it is
    // refused, naming the missing file; the instants before it still restore.
    let last = db.switch_and_archive();
    db.stop();
    let no = u64::from_str_radix(&last[16..], 16).unwrap();
    let missing = format!("{}{:08X}", &last[..16], no + 1);
    let after = format!("{}{:08X}", &last[..16], no + 2);
    let stray = env.path("stray");
    fs::create_dir_all(&stray).unwrap();
    chown_to_pg(&stray);
    fs::write(stray.join(&after), vec![0u8; 1 << 20]).unwrap();
    env.ok(&[
        "--config",
        &cfg,
        "wal",
        "push",
        "main",
        stray.join(&after).to_str().unwrap(),
    ]);
    let out = env.run(&[
        "--config",
        &cfg,
        "pg",
        "restore",
        "main",
        "--dry-run",
        "--target",
        env.path("r5").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("gap") && err.contains(&missing) && err.contains(&after),
        "{err}"
    );
    env.ok(&[
        "--config",
        &cfg,
        "pg",
        "restore",
        "main",
        "--dry-run",
        "--at",
        &between_4_and_5,
        "--target",
        env.path("r5").to_str().unwrap(),
    ]);
    // check names the gap, against the base backup it hits.
    let out = env.run(&["check"]);
    assert_ne!(code(&out), 0);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        all.contains("gap") && all.contains(&missing) && all.contains(&b2_id[..8]),
        "{all}"
    );
}

/// After a point-in-time recovery the promoted server archives a new timeline (its
/// `.history` file first) into the same archive; the next recovery to the end follows that
/// timeline, as PostgreSQL does, and not the old one past the branch point.
fn recovery_follows_a_promoted_timeline(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let mut db = archiving_primary(&env, &cfg);
    insert(&db, 1);
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    insert(&db, 2);
    db.switch_and_archive();
    let branch = instant_between();
    insert(&db, 3);
    db.switch_and_archive();
    db.stop();

    // Recovered to between 2 and 3, promoted, and archiving again as the cluster (a
    // failover: the old primary is gone).
    let t = env.path("r1");
    env.ok(&[
        "--config",
        &cfg,
        "pg",
        "restore",
        "main",
        "--at",
        &branch,
        "--keep-archiving",
        "--target",
        t.to_str().unwrap(),
    ]);
    let mut r1 = Cluster::at(&env, "r1");
    r1.start("");
    r1.wait_promoted();
    assert_eq!(r1.rows(), vec![1, 2]);
    assert_eq!(
        r1.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    insert(&r1, 10);
    let last = r1.switch_and_archive();
    assert!(last.starts_with("00000002"), "{last}");
    r1.stop();

    let plan = env.json(&[
        "--config",
        &cfg,
        "pg",
        "restore",
        "main",
        "--dry-run",
        "--target",
        env.path("r2").to_str().unwrap(),
    ]);
    assert_eq!(plan["wal"]["timeline"], 2, "{plan}");
    assert_eq!(plan["wal"]["last"], last.as_str(), "{plan}");
    let (rows, _) = restore_and_read(&env, &cfg, None, "r2");
    assert_eq!(rows, vec![1, 2, 10]);
    // Both timelines' WAL are whole, as check sees them.
    env.assert_read_data_clean();
}

/// `pg restore main ARGS --target <name>` (JSON); the plan.
fn pg_restore(env: &Env, cfg: &str, args: &[&str], name: &str) -> serde_json::Value {
    let target = env.path(name);
    let mut all = vec!["--config", cfg, "pg", "restore", "main"];
    all.extend_from_slice(args);
    let t = target.to_str().unwrap().to_string();
    all.extend(["--target", &t]);
    let out = env.json(&all);
    if args.contains(&"--dry-run") {
        out
    } else {
        out["plan"].clone()
    }
}

/// Starts the restored copy `name` as the README shows (no options of our own), waits for
/// its promotion, and returns it running.
fn start_copy<'e>(env: &'e Env, name: &str) -> Cluster<'e> {
    let mut c = Cluster::at(env, name);
    c.start("");
    c.wait_promoted();
    c
}

/// Issue 25, item 2: a copy restored to test a recovery, started as the README shows, must
/// not archive into the cluster's archive (its new timeline would be the one the next
/// restore follows); a copy kept archiving on purpose while the primary lives is a
/// diverged timeline that check reports, and restore follows the primary's line unless
/// --timeline says otherwise.
fn a_restored_copy_never_takes_over_the_archive(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let db = archiving_primary(&env, &cfg);
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    insert(&db, 1);
    db.switch_and_archive();
    let branch = instant_between();
    insert(&db, 2);
    db.switch_and_archive();

    let plan = pg_restore(&env, &cfg, &["--at", &branch], "r1");
    let conf = fs::read_to_string(env.path("r1/postgresql.auto.conf")).unwrap();
    assert!(conf.contains("archive_mode = off"), "{conf}");
    assert!(conf.contains("recovery_target_timeline = '1'"), "{conf}");
    assert_eq!(plan["wal"]["timeline"], 1);
    let mut r1 = start_copy(&env, "r1");
    assert_eq!(r1.rows(), vec![1]);
    insert(&r1, 10);
    r1.sql("SELECT pg_switch_wal()");
    r1.stop();
    // Nothing of the copy's reached the archive: no timeline 2 there.
    let out = env.run(&[
        "--config",
        &cfg,
        "wal",
        "fetch",
        "main",
        "00000002.history",
        env.path("h").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    insert(&db, 3);
    let live = db.switch_and_archive();
    let plan = pg_restore(&env, &cfg, &["--dry-run"], "r2");
    assert_eq!(plan["wal"]["timeline"], 1, "{plan}");
    assert_eq!(plan["wal"]["last"], live.as_str(), "{plan}");
    let out = env.ok(&["check"]);
    assert!(out.contains("no errors found"), "{out}");

    // A copy that archives (--keep-archiving) while the primary goes on: two lines in the
    // archive. The default follows the one archived last (the primary's).
    pg_restore(&env, &cfg, &["--at", &branch, "--keep-archiving"], "r3");
    let conf = fs::read_to_string(env.path("r3/postgresql.auto.conf")).unwrap();
    assert!(!conf.contains("archive_mode = off"), "{conf}");
    let r3 = start_copy(&env, "r3");
    insert(&r3, 20);
    let copy_last = r3.switch_and_archive();
    assert!(copy_last.starts_with("00000002"), "{copy_last}");
    drop(r3);
    insert(&db, 4);
    let live = db.switch_and_archive();
    let plan = pg_restore(&env, &cfg, &["--dry-run"], "r4");
    assert_eq!(plan["wal"]["timeline"], 1, "{plan}");
    assert_eq!(plan["wal"]["last"], live.as_str(), "{plan}");
    assert_eq!(plan["other_timelines"], serde_json::json!([2]), "{plan}");
    assert!(
        plan["notes"][0].as_str().unwrap().contains("--timeline"),
        "{plan}"
    );
    let (rows, _) = restore_and_read(&env, &cfg, None, "r5");
    assert_eq!(rows, vec![1, 2, 3, 4]);
    // --timeline 2 follows the copy's line; an unknown one is refused.
    let plan = pg_restore(&env, &cfg, &["--dry-run", "--timeline", "2"], "r6");
    assert_eq!(plan["wal"]["timeline"], 2, "{plan}");
    assert_eq!(plan["wal"]["last"], copy_last.as_str(), "{plan}");
    pg_restore(&env, &cfg, &["--timeline", "2"], "r6");
    let mut r6 = start_copy(&env, "r6");
    assert_eq!(r6.rows(), vec![1, 20]);
    r6.stop();
    refused(
        &env,
        &cfg,
        &[
            "pg",
            "restore",
            "main",
            "--timeline",
            "7",
            "--target",
            env.path("r7").to_str().unwrap(),
        ],
        "cannot follow timeline 7",
    );
    // check names the divergence.
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("timeline 1 goes on after timeline 2 branched off")
            && text.contains("two servers archive")
            && text.contains("archive_mode = off"),
        "{text}"
    );
}

/// Issue 25, item 3: an instant after the last commit, in WAL archived after it. Recovery
/// to the instant would never find a transaction to stop at; the restore says so and
/// recovers to the end of the archive, which is the same state, and the copy starts.
fn an_instant_after_the_last_commit_still_restores(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let db = archiving_primary(&env, &cfg);
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    insert(&db, 1);
    db.switch_and_archive();
    let between = instant_between();
    insert(&db, 2);
    let quiet = instant_between();
    db.switch_and_archive();
    // Before the last commit: PostgreSQL stops at it, as asked.
    let plan = pg_restore(&env, &cfg, &["--dry-run", "--at", &between], "r0");
    assert!(plan["target_time"].is_string(), "{plan}");
    assert_eq!(plan["notes"], serde_json::json!([]), "{plan}");
    let (rows, _) = restore_and_read(&env, &cfg, Some(&between), "r1");
    assert_eq!(rows, vec![1]);
    // After it: no target time (it could not be reached), a note, and the copy starts.
    let plan = pg_restore(&env, &cfg, &["--dry-run", "--at", &quiet], "r0");
    assert!(plan["target_time"].is_null(), "{plan}");
    let note = plan["notes"][0].as_str().unwrap();
    assert!(
        note.contains("no transaction in the archived WAL ended after"),
        "{note}"
    );
    let (rows, _) = restore_and_read(&env, &cfg, Some(&quiet), "r2");
    assert_eq!(rows, vec![1, 2]);
}

/// Issue 25, item 8: a base backup whose WAL is not archived (archiving fails) says what it
/// waits for, gives up after --wal-timeout with exit 1 and no snapshot, and leaves no
/// backup running in the server.
fn a_base_backup_waits_for_archiving_and_gives_up(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let flag = env.path("archiving-broken");
    let script = env.path("archive.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -e {} ] && exit 1\nexec {} --config {cfg} wal push main \"$1\"\n",
            flag.display(),
            strata_bin(&env)
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut db = Cluster::init(&env, "data", &format!("{} %p", script.display()));
    db.start("");
    fs::write(&flag, "").unwrap();
    let began = std::time::Instant::now();
    let out = env.run(&[
        "--config",
        &cfg,
        "pg",
        "basebackup",
        "main",
        "--wal-timeout",
        "6s",
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    assert!(
        err.contains("waiting for PostgreSQL to archive")
            && err.contains("archiving fails")
            && err.contains("was not archived within 6s"),
        "{err}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().map(Vec::len), Some(0));
    let stuck = db.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%backup_st%' \
         AND pid <> pg_backend_pid()",
    );
    assert_eq!(stuck, "0");
    // SIGTERM while it waits: exit 130 with a message, no snapshot (hostile pass: it was
    // killed with 143 and said nothing).
    let child = env
        .std_cmd()
        .args([
            "--config",
            &cfg,
            "pg",
            "basebackup",
            "main",
            "--wal-timeout",
            "60s",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    common::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(env.json(&["snapshots"]).as_array().map(Vec::len), Some(0));
    // Archiving repaired: the next one succeeds.
    fs::remove_file(&flag).unwrap();
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    db.stop();
}

/// `Env` is not Clone: a fresh one on the same kind of backend.
fn clone_env(env: &Env) -> Env {
    if env.s3 {
        Env::s3().unwrap()
    } else {
        Env::local()
    }
}

/// archive_command killed with SIGKILL at points all through its push, every other
/// attempt: PostgreSQL retries, every segment ends up archived once, and the archive
/// restores to the end.
fn killed_pushes_leave_no_hole(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let bin = strata_bin(&env);
    let script = env.path("archive.sh");
    let count = env.path("attempts");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}\n\
             if [ $((n % 2)) -eq 0 ] && [ $n -lt 24 ]; then\n\
               {bin} --config {cfg} wal push main \"$1\" & pid=$!\n\
               sleep $(echo \"0.000 0.015 0.030 0.050 0.070 0.100 0.140 0.200 0.280 0.400 0.600 0.900\" | cut -d' ' -f$((n/2+1)))\n\
               kill -9 $pid 2>/dev/null; wait $pid; exit 1\n\
             fi\n\
             exec {bin} --config {cfg} wal push main \"$1\"\n",
            count = count.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut db = Cluster::init(&env, "data", &format!("{} %p", script.display()));
    db.start("");
    db.sql("CREATE TABLE t (i int, at timestamptz DEFAULT clock_timestamp())");
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    for i in 1..=6 {
        insert(&db, i);
        // Enough WAL that a push takes a while to kill.
        db.sql("CREATE TABLE IF NOT EXISTS filler AS SELECT g FROM generate_series(1, 1) g");
        db.sql("INSERT INTO filler SELECT g FROM generate_series(1, 50000) g");
        db.switch_and_archive();
    }
    let attempts: u32 = fs::read_to_string(&count).unwrap().trim().parse().unwrap();
    assert!(attempts >= 12, "only {attempts} archive attempts");
    db.stop();
    let (rows, _) = restore_and_read(&env, &cfg, None, "restored");
    assert_eq!(rows, vec![1, 2, 3, 4, 5, 6]);
    env.assert_read_data_clean();
}

fn a_base_backup_needs_archiving(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let mut db = Cluster::init(&env, "data", "false");
    fs::write(db.data.join("postgresql.auto.conf"), "archive_mode = off\n").unwrap();
    db.start("");
    let out = env.run(&["--config", &cfg, "pg", "basebackup", "main"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("archive_mode is off"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.json(&["snapshots"]).as_array().map(Vec::len), Some(0));
    // No base backup at all: a restore says so.
    refused(
        &env,
        &cfg,
        &[
            "pg",
            "restore",
            "main",
            "--target",
            env.path("r").to_str().unwrap(),
        ],
        "no base backup",
    );
    db.stop();
}

/// Hostile pass (issue 25): links in the primary's data directory (a `pg_wal` on another
/// disk, a `postgresql.auto.conf` pointing at a file outside) are not followed by `pg
/// restore`: the recovery settings go into a file of the target's own, the outside file
/// keeps its bytes and owner, and the copy gets a `pg_wal` of its own instead of writing
/// into the primary's.
/// Watches `dir` and exchanges `name` with `with` as soon as something is renamed to
/// `name` there; returns whether it did (not when the directory arrived without its
/// `recovery.signal`: the restore would write after the rename, through the swap).
fn swap_on_arrival(dir: &Path, name: &'static str, with: &Path) -> std::thread::JoinHandle<bool> {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::empty()).unwrap();
    inotify::add_watch(&fd, dir, inotify::WatchFlags::MOVED_TO).unwrap();
    let (dir, with) = (dir.to_path_buf(), with.to_path_buf());
    std::thread::spawn(move || {
        let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
        let mut events = inotify::Reader::new(&fd, &mut buf);
        while let Ok(e) = events.next() {
            if e.file_name()
                .is_some_and(|n| n.to_bytes() == name.as_bytes())
            {
                // What a restore writes must all be there when the directory arrives.
                if !dir.join(name).join("recovery.signal").exists() {
                    return false;
                }
                return rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    dir.join(name),
                    rustix::fs::CWD,
                    &with,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .is_ok();
            }
        }
        false
    })
}

fn a_restore_writes_nothing_through_links(env: &Env) {
    use std::os::unix::fs::MetadataExt;
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let mut db = archiving_primary(&env, &cfg);
    db.stop();
    let real_wal = env.path("real-wal");
    fs::rename(db.data.join("pg_wal"), &real_wal).unwrap();
    std::os::unix::fs::symlink(&real_wal, db.data.join("pg_wal")).unwrap();
    let victim = env.path("victim.conf");
    fs::write(&victim, "# not postgres's\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(db.data.join("postgresql.auto.conf")).unwrap();
    std::os::unix::fs::symlink(&victim, db.data.join("postgresql.auto.conf")).unwrap();
    db.start("");
    insert(&db, 1);
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    insert(&db, 2);
    db.switch_and_archive();
    db.stop();
    let primary_wal: Vec<_> = common::walk(&real_wal);
    // What runs killed with SIGKILL left beside the target: removed when old and unlocked;
    // a live run's (locked), a young one (perhaps not locked yet) and, with root running
    // the tests, another user's are kept.
    // Named and marked as a run names and marks them, by a process that is gone.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let dead = ended.id();
    ended.wait().unwrap();
    let stagings = ["dead", "live", "young", "root"]
        .map(|n| env.path(&format!(".strata-pg-restore-{dead}-{n}")));
    for s in &stagings {
        fs::create_dir_all(s.join("var/lib/postgresql")).unwrap();
        fs::write(s.join("var/lib/postgresql/PG_VERSION"), "15\n").unwrap();
        let name = s.file_name().unwrap().to_str().unwrap();
        fs::write(s.join(strata::scratch::MARKER), format!("{name}\n")).unwrap();
    }
    for s in &stagings[..3] {
        for p in common::walk(s) {
            chown_to_pg(&p);
        }
        // As made: a directory of another mode is someone else's idea, and kept.
        fs::set_permissions(s, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for s in [&stagings[0], &stagings[1], &stagings[3]] {
        fs::File::open(s).unwrap().set_modified(hour_ago).unwrap();
    }
    let live = fs::File::open(&stagings[1]).unwrap();
    rustix::fs::flock(&live, rustix::fs::FlockOperation::LockExclusive).unwrap();
    // The data directory's owner swaps it for a symlink the moment it lands in place
    // (attacker pass: root then wrote the recovery files wherever the link pointed).
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let link = env.path("race.lnk");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let swapper = swap_on_arrival(env.dir.path(), "race", &link);
    pg_restore(&env, &cfg, &[], "race");
    assert!(
        swapper.join().unwrap(),
        "not swapped, or arrived without recovery.signal"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "written through the swap"
    );
    assert!(link.join("recovery.signal").exists() && link.join("backup_label").exists());

    let (rows, _) = restore_and_read(&env, &cfg, None, "r1");
    assert_eq!(rows, vec![1, 2]);
    assert!(!stagings[0].exists(), "the dead run's staging is left");
    assert!(stagings[1].join("var/lib/postgresql/PG_VERSION").exists());
    assert!(stagings[2].join("var/lib/postgresql/PG_VERSION").exists());
    if pg_user().is_some() {
        assert!(stagings[3].join("var/lib/postgresql/PG_VERSION").exists());
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "# not postgres's\n");
    assert_eq!(
        fs::metadata(&victim).unwrap().uid(),
        nix::unistd::getuid().as_raw()
    );
    let copy = env.path("r1");
    assert!(fs::symlink_metadata(copy.join("pg_wal")).unwrap().is_dir());
    let conf = fs::symlink_metadata(copy.join("postgresql.auto.conf")).unwrap();
    assert!(conf.is_file());
    assert!(fs::read_to_string(copy.join("postgresql.auto.conf"))
        .unwrap()
        .contains("restore_command"));
    assert_eq!(
        common::walk(&real_wal),
        primary_wal,
        "the copy wrote into the primary's pg_wal"
    );
}

/// Issue 28: `strata copy` takes the WAL archive (root records) with the base backups, so
/// a second site of its own keys and password recovers the database to an instant once
/// the first is gone; the next hourly copy sends only the WAL archived since.
fn a_second_site_recovers_to_an_instant(env: &Env) {
    const OTHER: &str = "the second site's own password";
    let (mut env, cfg) = pg_env(clone_env(env));
    env.init();
    let site2 = format!("{}-site2", env.repo);
    let out = (env.cmd())
        .env("STRATA_REPOSITORY", &site2)
        .env("STRATA_PASSWORD", OTHER)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let copy = |env: &Env| -> serde_json::Value {
        let out = (env.cmd())
            .env("STRATA_TO_PASSWORD", OTHER)
            .args(["--config", &cfg, "--json", "copy", "--to", &site2])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut db = archiving_primary(&env, &cfg);
    env.ok(&["--config", &cfg, "pg", "basebackup", "main"]);
    insert(&db, 1);
    db.switch_and_archive();
    let first = copy(&env);
    assert_eq!(first["copied"].as_array().unwrap().len(), 1, "{first}");
    let archived = first["roots_copied"].as_u64().unwrap();
    assert!(archived >= 2, "{first}");
    let between = instant_between();
    insert(&db, 2);
    db.switch_and_archive();
    db.stop();
    drop(db);
    let hourly = copy(&env);
    assert_eq!(hourly["copied"].as_array().unwrap().len(), 0, "{hourly}");
    assert_eq!(
        hourly["roots_present"].as_u64().unwrap(),
        archived,
        "{hourly}"
    );
    assert!(hourly["roots_copied"].as_u64().unwrap() >= 1, "{hourly}");
    // The first site is gone: from here on, only the second, on a bare machine.
    env.repo = site2.clone();
    env.vars.push(("STRATA_PASSWORD".into(), OTHER.into()));
    env.cache = env.path("site2-cache");
    let (rows, _) = restore_and_read(&env, &cfg, Some(&between), "r1");
    assert_eq!(rows, vec![1]);
    let (rows, _) = restore_and_read(&env, &cfg, None, "r2");
    assert_eq!(rows, vec![1, 2]);
}

/// `pg restore main --delta --target DIR` (JSON), as the test process's user (root in CI:
/// the one who could be made to chown a file outside); the output.
fn delta_restore(env: &Env, cfg: &str, target: &Path) -> serde_json::Value {
    let t = target.to_str().unwrap();
    let args = [
        "--config", cfg, "--json", "pg", "restore", "main", "--delta", "--target", t,
    ];
    let out = env.own_cmd().args(args).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A primary with the table `t` (rows 1, 2: one before the base backup, one after) and a
/// 20,000-row table `big`, stopped; returns it, the backup's total bytes and its data
/// directory's relation files of `t` and `big`.
fn backed_up_and_stopped<'e>(env: &'e Env, cfg: &str) -> (Cluster<'e>, u64, [String; 2]) {
    let mut db = archiving_primary(env, cfg);
    db.sql("CREATE TABLE big AS SELECT g, md5(g::text) AS m FROM generate_series(1, 20000) g");
    insert(&db, 1);
    let b = env.json(&["--config", cfg, "pg", "basebackup", "main"]);
    let total = b["summary"]["total_bytes"].as_u64().unwrap();
    insert(&db, 2);
    db.switch_and_archive();
    let files = ["t", "big"].map(|t| db.sql(&format!("SELECT pg_relation_filepath('{t}')")));
    db.stop();
    (db, total, files)
}

/// Starts the data directory `name` (restored, recovering), waits for its promotion and
/// returns t's rows and big's count.
fn rows_after_recovery(env: &Env, name: &str) -> (Vec<i32>, String) {
    let c = start_copy(env, name);
    let rows = (c.rows(), c.sql("SELECT count(*) FROM big"));
    drop(c);
    rows
}

/// Issue 29, item 1: `pg restore --delta` into the stopped cluster's own data directory
/// keeps the files that are the backup's, fetches the few that differ, removes what the
/// backup does not hold, replaces links rather than writing through them, never reuses
/// a file linked from elsewhere; a running cluster is refused untouched.
fn a_delta_restore_fetches_only_what_differs(env: &Env) {
    use std::os::unix::fs::MetadataExt;
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let (mut db, total, [t_file, big_file]) = backed_up_and_stopped(&env, &cfg);
    db.start("");
    let data = db.data.to_str().unwrap().to_string();
    refused(
        &env,
        &cfg,
        &["pg", "restore", "main", "--delta", "--target", &data],
        "is in use: its postmaster (pid",
    );
    assert!(!db.data.join("recovery.signal").exists());
    assert_eq!(db.rows(), vec![1, 2]);
    db.stop();
    pg_restore(&env, &cfg, &[], "full");
    let full = rows_after_recovery(&env, "full");
    assert_eq!(full, (vec![1, 2], "20000".to_string()));

    // Lost, changed, planted: big's file gone, t's changed, a stray file, a relation
    // file turned into a link to a file outside, another hard-linked from outside.
    fs::remove_file(db.data.join(&big_file)).unwrap();
    let mut t_bytes = fs::read(db.data.join(&t_file)).unwrap();
    t_bytes[100] ^= 0xff;
    fs::write(db.data.join(&t_file), &t_bytes).unwrap();
    fs::write(db.data.join("base/stray"), "not postgres's").unwrap();
    let relations: Vec<PathBuf> = common::walk(&db.data.join("global"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u32>()
                .is_ok()
        })
        .collect();
    let (linked, hard) = (&relations[0], &relations[1]);
    let victim = env.path("victim");
    fs::write(&victim, "outside").unwrap();
    fs::remove_file(linked).unwrap();
    std::os::unix::fs::symlink(&victim, linked).unwrap();
    let outside = env.path("second-name");
    fs::hard_link(hard, &outside).unwrap();
    let hard_mtime = fs::metadata(hard).unwrap().modified().unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&outside, Some(0), Some(0)).ok();
    fs::File::open(&outside)
        .unwrap()
        .set_modified(hard_mtime)
        .unwrap();
    let outside_bytes = fs::read(&outside).unwrap();
    let outside_owner = fs::metadata(&outside).unwrap().uid();

    let out = delta_restore(&env, &cfg, &db.data);
    let d = &out["delta"];
    let n = |k: &str| d[k].as_u64().unwrap();
    let all = n("kept_files") + n("rewritten_files");
    assert!(n("kept_files") * 10 >= all * 9, "{d}");
    assert!(n("rewritten_files") >= 5, "{d}");
    assert!(n("removed_files") >= 1, "{d}");
    assert!(n("bytes_fetched") < total / 4, "{d} of {total}");
    assert_eq!(
        n("bytes_fetched"),
        out["restore"]["bytes"].as_u64().unwrap()
    );
    assert!(!db.data.join("base/stray").exists());
    assert!(fs::symlink_metadata(linked).unwrap().is_file());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "outside");
    assert_eq!(fs::metadata(hard).unwrap().nlink(), 1);
    assert_eq!(fs::read(&outside).unwrap(), outside_bytes);
    let m = fs::metadata(&outside).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o777, m.nlink()),
        (outside_owner, 0o600, 1)
    );
    assert_eq!(rows_after_recovery(&env, "data"), full);
}

/// A `--delta` run killed with SIGKILL once it has begun moving files leaves a
/// directory PostgreSQL refuses to start from (or the finished one); a rerun completes it.
fn a_killed_delta_restore_is_completed_by_a_rerun(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let (db, _, [t_file, _]) = backed_up_and_stopped(&env, &cfg);
    let pg_control = db.data.join("global/pg_control");
    let data = db.data.to_str().unwrap().to_string();
    let mut landed = false;
    for _ in 0..10 {
        fs::write(db.data.join(&t_file), b"changed").unwrap();
        let mut child = env
            .std_cmd()
            .args([
                "--config", &cfg, "pg", "restore", "main", "--delta", "--target", &data,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while pg_control.exists() && child.try_wait().unwrap().is_none() {
            std::thread::yield_now();
        }
        common::signal(&child, nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        if status.code().is_none() {
            landed = true;
            break;
        }
        assert!(status.success(), "{status:?}");
    }
    assert!(landed, "never killed while moving");
    if !pg_control.exists() {
        // Neither the old directory nor the new: PostgreSQL must refuse it.
        let out = Cluster::command(&env, &pg_bin().join("pg_ctl"))
            .args(["-D", &data, "-l", env.path("refused.log").to_str().unwrap()])
            .args(["-w", "-t", "30", "start"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "PostgreSQL started from a half-moved directory"
        );
        let log = fs::read_to_string(env.path("refused.log")).unwrap_or_default();
        assert!(log.contains("pg_control"), "{log}");
    } else {
        assert!(db.data.join("recovery.signal").exists(), "a mix in place");
    }
    env.ok(&[
        "--config", &cfg, "pg", "restore", "main", "--delta", "--target", &data,
    ]);
    let (rows, count) = rows_after_recovery(&env, "data");
    assert_eq!((rows, count.as_str()), (vec![1, 2], "20000"));
}

/// Issue 32, mutant 7: a base backup's own segment missing from the archive (its stop
/// segment, with nothing archived after it) is a gap, not the end of the archive: without
/// it PostgreSQL never reaches a consistent state. Only a hole after the stop was tested.
fn a_segment_missing_inside_a_base_backup_is_refused(env: &Env) {
    let (env, cfg) = pg_env(clone_env(env));
    env.init();
    let mut db = archiving_primary(&env, &cfg);
    insert(&db, 1);
    let b = env.json(&["--config", &cfg, "pg", "basebackup", "main"]);
    db.stop();
    let stop_wal = b["postgres"]["stop_wal"].as_str().unwrap().to_string();
    let restore = [
        "--config",
        &cfg,
        "pg",
        "restore",
        "main",
        "--dry-run",
        "--target",
    ];
    let target = env.path("r").display().to_string();
    let args = [&restore[..], &[target.as_str()]].concat();
    env.ok(&args);
    // The stop segment and whatever was archived after it go.
    let repo = common::open_repo(&env);
    let no = u64::from_str_radix(&stop_wal[16..], 16).unwrap();
    for n in no..no + 8 {
        let name = format!("{}{n:08X}", &stop_wal[..16]);
        let _ = repo.remove_root("postgres.wal", &format!("main/{name}"));
    }
    let out = env.run(&args);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("gap") || err.contains("missing"), "{err}");
    assert!(err.contains(&stop_wal), "{err}");
}

conformance!(
    a_segment_missing_inside_a_base_backup_is_refused,
    a_delta_restore_fetches_only_what_differs,
    a_killed_delta_restore_is_completed_by_a_rerun,
    a_second_site_recovers_to_an_instant,
    a_restore_writes_nothing_through_links,
    a_restored_copy_never_takes_over_the_archive,
    an_instant_after_the_last_commit_still_restores,
    a_base_backup_waits_for_archiving_and_gives_up,
    recovery_follows_a_promoted_timeline,
    point_in_time_recovery_to_three_instants,
    killed_pushes_leave_no_hole,
    a_base_backup_needs_archiving,
);
