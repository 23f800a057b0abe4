#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn unchanged_rerun_adds_nothing_and_a_change_adds_only_its_chunks(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..50 {
        fs::write(
            src.join(format!("docs/{i}.json")),
            format!("{{\"doc\": {i}, \"pad\": \"{}\"}}", "x".repeat(i * 10)),
        )
        .unwrap();
    }
    let db = src.join("db.pages");
    fs::write(&db, noise(8 << 20, 11)).unwrap();
    let s = src.to_str().unwrap();
    let before = fs::read(&db).unwrap();

    let first = env.backup(&[s]);
    assert_eq!(first["files_new"], 51);
    assert!(first["bytes_added"].as_u64().unwrap() >= 8 << 20);
    assert!(first["parent"].is_null());

    let second = env.backup(&[s]);
    assert_eq!(second["files_unchanged"], 51, "{second}");
    assert_eq!(second["files_new"], 0);
    assert_eq!(second["bytes_read"], 0, "unchanged files must not be read");
    // Only the trees of the directories above the source (whose mtimes other tests change)
    // may be new; the source's own tree is identical.
    assert!(second["bytes_added"].as_u64().unwrap() < 2048, "{second}");
    let tree_of = |snap: &serde_json::Value| {
        let repo = open_repo(env);
        let (_, snap) = repo
            .snapshots()
            .find(snap["snapshot_id"].as_str().unwrap())
            .unwrap();
        strata::walk::lookup(&repo, &snap.tree, &src)
            .unwrap()
            .unwrap()
            .subtree
            .unwrap()
    };
    assert_eq!(tree_of(&first), tree_of(&second));
    assert_eq!(second["parent"], first["snapshot_id"]);

    // Rewrite one 4 KiB page in the middle of the database file.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.write_all_at(&noise(4096, 99), 4 << 20).unwrap();
    }
    let third = env.backup(&[s]);
    assert_eq!(third["files_changed"], 1);
    assert_eq!(third["files_unchanged"], 50);
    assert_eq!(third["bytes_read"].as_u64().unwrap(), 8 << 20);
    let added = third["bytes_added"].as_u64().unwrap();
    // The chunk(s) around the page (max chunk 256 KiB; a boundary shift touches two) plus
    // two small trees: far below the file's 8 MiB.
    assert!((4096..600 << 10).contains(&added), "added {added} bytes");

    // All three restore to what they were: the first two the old database, the third the
    // new one; the documents in each.
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 3);
    let after = fs::read(&db).unwrap();
    for (snap, want) in [(&first, &before), (&second, &before), (&third, &after)] {
        let id = snap["snapshot_id"].as_str().unwrap();
        let target = env.path(&format!("r-{}", &id[..8]));
        env.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        let back = restored(&target, &src);
        assert!(fs::read(back.join("db.pages")).unwrap() == *want, "{id}");
        for i in [0, 49] {
            let doc = format!("docs/{i}.json");
            assert_eq!(
                fs::read(back.join(&doc)).unwrap(),
                fs::read(src.join(&doc)).unwrap()
            );
        }
    }
}

fn identical_content_in_new_files_is_stored_once(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = noise(2 << 20, 5);
    fs::write(src.join("a"), &data).unwrap();
    let first = env.backup(&[src.to_str().unwrap()]);
    fs::write(src.join("copy-of-a"), &data).unwrap();
    let second = env.backup(&[src.to_str().unwrap()]);
    assert_eq!(second["files_new"], 1);
    assert_eq!(second["bytes_read"].as_u64().unwrap(), 2 << 20);
    // Only the changed directory trees are new: a few KiB of names and chunk ids (two lists
    // of ~64 ids), nothing near the 2 MiB of content.
    assert!(
        second["bytes_added"].as_u64().unwrap() < 16 << 10,
        "{second}"
    );
    assert!(first["bytes_added"].as_u64().unwrap() >= 2 << 20);
}

fn stdin_backup_and_cat(env: &Env) {
    env.init();
    let dump = noise(1 << 20, 8);
    let out = env
        .cmd()
        .args([
            "--json",
            "backup",
            "--stdin",
            "--stdin-filename",
            "db.sql",
            "--tag",
            "pg",
        ])
        .write_stdin(dump.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bytes_read"].as_u64().unwrap(), 1 << 20);
    let cat = env
        .cmd()
        .args(["cat", "latest", "/db.sql"])
        .output()
        .unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, dump);
    let snaps = env.json(&["snapshots", "--tag", "pg"]);
    assert_eq!(snaps[0]["paths"][0], "/db.sql");
}

fn an_unreadable_file_is_a_warning_the_snapshot_is_still_written_exit_3(env: &Env) {
    let env = &env.unprivileged();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok.txt"), "readable").unwrap();
    fs::write(src.join("locked.txt"), "not for you").unwrap();
    fs::set_permissions(src.join("locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("locked.txt"), "{}", stderr(&out));
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("ok.txt"));
    assert!(!listing.contains("locked.txt"));
}

/// A file name with a newline and an escape sequence, in a warning: escaped, so it can
/// neither forge a line of output nor drive the terminal.
fn hostile_names_in_messages_are_escaped(env: &Env) {
    let env = &env.unprivileged();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let name = "evil\nerror: forged\x1b[31m.txt";
    fs::write(src.join(name), "x").unwrap();
    fs::set_permissions(src.join(name), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("evil\\nerror: forged\\x1b[31m.txt"), "{err}");
    assert!(!err.contains('\x1b'), "raw escape in {err:?}");
    assert!(
        !err.lines().any(|l| l.starts_with("error: forged")),
        "a forged line: {err}"
    );
}

fn a_missing_source_path_is_an_error_and_writes_nothing(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let out = env.run(&[
        "backup",
        src.to_str().unwrap(),
        env.path("does-not-exist").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("does-not-exist"), "{}", stderr(&out));
    assert!(env.objects("snapshots").is_empty());
    assert!(env.objects("data").is_empty());
    assert!(env.objects("index").is_empty());
}

fn excludes_and_snapshot_filters(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("keep.txt"), "k").unwrap();
    fs::write(src.join("scratch.tmp"), "t").unwrap();
    fs::write(src.join("cache/big"), "c").unwrap();
    let excl = env.path("excludes");
    fs::write(&excl, "# comment\ncache\n").unwrap();
    let s = src.to_str().unwrap();
    env.backup(&[
        s,
        "--exclude",
        "*.tmp",
        "--exclude-file",
        excl.to_str().unwrap(),
        "--host",
        "h1",
        "--tag",
        "a",
    ]);
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("keep.txt"));
    assert!(!listing.contains("scratch.tmp"));
    assert!(!listing.contains("cache"));
    env.backup(&[s, "--host", "h2", "--tag", "b"]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    let h1 = env.json(&["snapshots", "--host", "h1"]);
    assert_eq!(h1.as_array().unwrap().len(), 1);
    assert_eq!(h1[0]["tags"][0], "a");
    assert_eq!(env.json(&["snapshots", "--tag", "b"])[0]["host"], "h2");
    assert_eq!(
        env.json(&["snapshots", "--path", s])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.json(&["snapshots", "--path", "/elsewhere"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let table = env.ok(&["snapshots"]);
    assert!(
        table.contains("h1") && table.contains("h2") && table.contains("2 snapshot(s)"),
        "{table}"
    );
}

fn several_paths_and_the_summary_output(env: &Env) {
    env.init();
    let a = env.path("a");
    let b = env.path("b/inner");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("1"), "one").unwrap();
    fs::write(b.join("2"), "two").unwrap();
    let out = env.ok(&["backup", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(
        out.contains("files: 2 new, 0 changed, 0 unchanged"),
        "{out}"
    );
    assert!(out.contains("snapshot ") && out.contains(" saved"), "{out}");
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains(&format!("{}/1", a.display())));
    assert!(listing.contains(&format!("{}/2", b.display())));
    // Siblings of the sources are not in the snapshot.
    assert!(!listing.contains("/repo"));
    let cat = env.ok(&["cat", "latest", &format!("{}/2", b.display())]);
    assert_eq!(cat, "two");
}

fn verbose_lists_new_and_changed_files(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "1").unwrap();
    fs::write(src.join("b"), "2").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("a"), "changed").unwrap();
    fs::write(src.join("c"), "3").unwrap();
    let out = env.run(&["-v", "backup", src.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        err.contains(&format!("changed  {}/a", src.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("new      {}/c", src.display())),
        "{err}"
    );
    assert!(!err.contains("/b"), "{err}");
}

/// Memory is bounded by batch and pack sizes, not by the file: a 1 GiB file of fresh data
/// must back up with far less than 1 GiB resident.
#[test]
fn memory_stays_bounded_for_a_large_file() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let st = std::process::Command::new("head")
        .args(["-c", "1G", "/dev/urandom"])
        .stdout(fs::File::create(src.join("big")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let before = max_child_rss_kib();
    let v = env.backup(&[src.to_str().unwrap()]);
    assert_eq!(v["bytes_read"].as_u64().unwrap(), 1 << 30);
    let rss = max_child_rss_kib();
    // The largest child so far is this backup unless an earlier one was larger.
    assert!(rss >= before);
    assert!(rss < 400 * 1024, "peak RSS {rss} KiB for a 1 GiB file");
}

fn two_backups_at_once_share_repository_and_cache(env: &Env) {
    env.init();
    let mut children = Vec::new();
    for name in ["one", "two"] {
        let src = env.path(name);
        fs::create_dir_all(&src).unwrap();
        for i in 0..20u64 {
            fs::write(
                src.join(format!("f{i}")),
                noise(2 << 20, i + name.len() as u64 * 100),
            )
            .unwrap();
        }
        let mut cmd = env.std_cmd();
        cmd.args(["backup", "-q", src.to_str().unwrap()]);
        children.push(cmd.spawn().unwrap());
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    env.assert_read_data_clean();
    for name in ["one", "two"] {
        let target = env.path(&format!("r-{name}"));
        let src = env.path(name);
        env.ok(&[
            "restore",
            "latest",
            "--path",
            &src.display().to_string(),
            "--target",
            target.to_str().unwrap(),
        ]);
        assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
        let other = env.path(if name == "one" { "two" } else { "one" });
        assert!(!restored(&target, &other).exists());
    }
}

/// Sources for a backup long enough to interrupt: 160 MiB of noise in 40 files.
fn big_source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        fs::write(src.join(format!("f{i}")), noise(4 << 20, 500 + i)).unwrap();
    }
    src
}

/// Starts a backup of `src` with two uploads in flight and sends it `signal` once `packs`
/// data packs are in the repository; returns its output.
fn interrupt_backup(
    env: &Env,
    src: &std::path::Path,
    packs: usize,
    signal: nix::sys::signal::Signal,
) -> std::process::Output {
    let child = env
        .std_cmd()
        .args(["backup", "--uploads", "2", src.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Polling, not sleeping: how long the packs take depends on the machine and its load.
    let started = std::time::Instant::now();
    while env.objects("data").len() < packs && started.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    common::signal(&child, signal);
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the backup finished before it could be interrupted"
    );
    out
}

/// Packs on the backend that no index names (check counts them, as harmless leftovers).
fn unreferenced_packs(env: &Env) -> u64 {
    env.json(&["check"])["unreferenced_packs"].as_u64().unwrap()
}

/// kill -9 in the middle of a first backup: the repository stays consistent, and the rerun
/// reuses what was uploaded. Every pack is indexed as soon as it is up, so at most the packs
/// whose index write was under way (one per upload in flight) are left over.
fn a_killed_backup_leaves_a_consistent_repository(env: &Env) {
    env.init();
    let src = big_source(env);
    interrupt_backup(env, &src, 4, nix::sys::signal::Signal::SIGKILL);
    assert!(env.objects("snapshots").is_empty());
    // Only unreferenced leftovers: the repository checks clean and the rerun completes.
    assert!(env.ok(&["check"]).contains("no errors found"));
    let orphans = unreferenced_packs(env);
    assert!(orphans <= 2, "{orphans} packs uploaded and not indexed");
    let up: u64 = env.objects("data").iter().map(|(_, n)| n).sum();
    let v = env.backup(&[src.to_str().unwrap()]);
    assert_eq!(v["files_new"], 40, "{v}");
    let total: u64 = 40 * (4 << 20);
    let added = v["bytes_added"].as_u64().unwrap();
    assert!(
        added + up >= total && added <= total - up + 2 * (17 << 20),
        "{up} bytes were up before the rerun, which added {added} of {total}"
    );
    assert_eq!(unreferenced_packs(env), orphans, "the rerun left none");
    env.assert_read_data_clean();
    env.restore_latest_verified("r");
}

/// SIGTERM (and SIGINT, the same handler) mid-backup: it stops within seconds, uploads and
/// indexes the pack in flight, writes no snapshot and says what it saved (exit 130); the
/// rerun uploads only the rest.
fn sigterm_saves_what_was_uploaded_and_the_rerun_goes_on_from_there(env: &Env) {
    env.init();
    let src = big_source(env);
    let out = interrupt_backup(env, &src, 2, nix::sys::signal::Signal::SIGTERM);
    let err = stderr(&out);
    assert_eq!(code(&out), 130, "{err}");
    assert!(
        err.contains("interrupted") && err.contains("saved and indexed"),
        "{err}"
    );
    assert!(env.objects("snapshots").is_empty());
    assert_eq!(unreferenced_packs(env), 0, "every uploaded pack is indexed");
    let up: u64 = env.objects("data").iter().map(|(_, n)| n).sum();
    let total: u64 = 40 * (4 << 20);
    // It stopped then, not once it had read everything (issue 32: behaviour, no clock;
    // on S3 the listing that times the signal is slower, and half was up in one run).
    assert!(up < total, "{up} of {total} bytes up when it stopped");
    let v = env.backup(&[src.to_str().unwrap()]);
    let added = v["bytes_added"].as_u64().unwrap();
    // Pack bytes carry a little overhead over the plaintext they hold.
    assert!(
        added <= total - up + (1 << 20),
        "{up} bytes were up before the rerun, which added {added} of {total}"
    );
    assert_eq!(unreferenced_packs(env), 0);
    env.restore_latest_verified("r");
}

/// A host whose cache is gone (a new machine, a wiped cache) does not read unchanged files
/// again: the parent snapshot's nodes tell, fetched by tree pack.
fn an_empty_cache_backup_skips_unchanged_files_by_the_parent_snapshot(env: &Env) {
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    let s = src.to_str().unwrap();
    let first = env.backup(&[s]);
    let files = first["files_new"].as_u64().unwrap();
    fs::remove_dir_all(&env.cache).unwrap();
    fs::write(
        src.join("docs/readme.txt"),
        "changed while the cache was gone",
    )
    .unwrap();
    let v = env.backup(&[s]);
    assert_eq!(
        v["files_changed"].as_u64().unwrap() + v["files_new"].as_u64().unwrap(),
        1,
        "{v}"
    );
    assert_eq!(v["files_unchanged"].as_u64().unwrap(), files - 1, "{v}");
    assert_eq!(
        v["bytes_read"].as_u64().unwrap(),
        32,
        "only the changed file is read: {v}"
    );
    // The file cache is filled again: the next run skips by it.
    let again = env.backup(&[s]);
    assert_eq!(again["files_unchanged"].as_u64().unwrap(), files, "{again}");
    env.restore_latest_verified("r");
    assert!(compare_trees(&src, &restored(&env.path("r"), &src)).is_empty());
    // Issue 32, mutant 6: the same number of bytes rewritten, the old mtime put back, the
    // cache gone again: the change (its ctime) is still seen, not the parent's content kept.
    let secret = src.join("secret");
    let mtime = fs::symlink_metadata(&secret).unwrap().modified().unwrap();
    fs::remove_dir_all(&env.cache).unwrap();
    fs::write(&secret, b"S3CR3T").unwrap();
    let since = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    set_mtime(&secret, since.as_secs() as i64, since.subsec_nanos() as i64);
    let v = env.backup(&[s]);
    assert_eq!(v["bytes_read"], 6, "read again: {v}");
    let back = restored(&env.restore_latest_verified("r2"), &src);
    assert_eq!(fs::read(back.join("secret")).unwrap(), b"S3CR3T");
}

/// The summary tells file data from metadata (trees), counts the files the parent had and
/// this snapshot lacks (deleted, in a deleted directory, or now excluded), and the bytes of
/// all its files; the text output says the same.
fn the_summary_separates_data_from_metadata_and_counts_removed_files(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b/c")).unwrap();
    for (name, len) in [
        ("a/f1", 1000),
        ("a/f2", 2000),
        ("b/c/f3", 3000),
        ("b/f4", 4000),
    ] {
        fs::write(src.join(name), noise(len, len as u64)).unwrap();
    }
    let s = src.to_str().unwrap();
    let v = env.backup(&[s]);
    assert_eq!(v["total_bytes"], 10_000, "{v}");
    assert_eq!(v["data_added"], 10_000, "{v}");
    let trees = v["bytes_added"].as_u64().unwrap() - 10_000;
    assert!(trees > 0, "the trees are metadata: {v}");
    assert!(v["data_stored"].as_u64().unwrap() < v["bytes_stored"].as_u64().unwrap());
    assert_eq!(v["files_removed"], 0);
    fs::remove_file(src.join("a/f1")).unwrap();
    fs::remove_dir_all(src.join("b")).unwrap();
    let v = env.backup(&[s]);
    assert_eq!(v["files_removed"], 3, "{v}");
    assert_eq!(v["total_bytes"], 2000, "{v}");
    assert_eq!(v["data_added"], 0, "{v}");
    let out = env.ok(&["backup", s, "--exclude", "f2"]);
    assert!(out.contains("0 unchanged, 1 removed"), "{out}");
    assert!(out.contains("new file data 0 B"), "{out}");
    // Without the file cache the parent snapshot's trees tell what went.
    fs::remove_dir_all(&env.cache).unwrap();
    fs::write(src.join("a/f5"), "new").unwrap();
    let v = env.backup(&[s, "--exclude", "f2"]);
    assert_eq!(v["files_removed"], 0, "{v}");
    fs::remove_dir_all(&env.cache).unwrap();
    fs::remove_file(src.join("a/f5")).unwrap();
    let v = env.backup(&[s, "--exclude", "f2"]);
    assert_eq!(v["files_removed"], 1, "{v}");
}

/// A backup reports what its scan found (files and bytes, complete) beside what it has
/// done, so a progress bar has a total: every byte of a run, read or unchanged, advances it.
#[test]
fn progress_has_a_total_from_the_scan() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    #[derive(Default)]
    struct Seen {
        found: Mutex<Option<(u64, u64, bool)>>,
        done: AtomicU64,
        files: AtomicU64,
    }
    impl strata::Progress for Seen {
        fn found(&self, files: u64, bytes: u64, complete: bool) {
            *self.found.lock().unwrap() = Some((files, bytes, complete));
        }
        fn advance(&self, n: u64) {
            self.done.fetch_add(n, Ordering::Relaxed);
        }
        fn file_done(&self, _: &std::path::Path) {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
    }
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    for i in 0..30 {
        let d = src.join(format!("d{}", i % 4));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), noise(5_000 + i, i as u64)).unwrap();
    }
    let total: u64 = (0..30).map(|i| 5_000 + i as u64).sum();
    let repo = open_repo(env);
    for run in 0..2 {
        let seen = Seen::default();
        let opts = strata::backup::BackupOptions {
            source: strata::backup::Source::Paths(vec![src.clone()]),
            ..Default::default()
        };
        strata::backup::run(&repo, opts, &seen).unwrap();
        assert_eq!(
            *seen.found.lock().unwrap(),
            Some((30, total, true)),
            "run {run}"
        );
        assert_eq!(seen.files.load(Ordering::Relaxed), 30, "run {run}");
        // Read the first time, skipped as unchanged the second: the same bytes either way.
        assert_eq!(seen.done.load(Ordering::Relaxed), total, "run {run}");
    }
}

conformance!(
    the_summary_separates_data_from_metadata_and_counts_removed_files,
    an_empty_cache_backup_skips_unchanged_files_by_the_parent_snapshot,
    a_killed_backup_leaves_a_consistent_repository,
    sigterm_saves_what_was_uploaded_and_the_rerun_goes_on_from_there,
    unchanged_rerun_adds_nothing_and_a_change_adds_only_its_chunks,
    identical_content_in_new_files_is_stored_once,
    stdin_backup_and_cat,
    an_unreadable_file_is_a_warning_the_snapshot_is_still_written_exit_3,
    hostile_names_in_messages_are_escaped,
    a_missing_source_path_is_an_error_and_writes_nothing,
    excludes_and_snapshot_filters,
    several_paths_and_the_summary_output,
    verbose_lists_new_and_changed_files,
    two_backups_at_once_share_repository_and_cache
);

/// One run's storage class never leaks into the next run on the same repository (the sets
/// of `backup --all`): a set without a class gets the repository's.
#[test]
fn a_sets_storage_class_does_not_leak_into_the_next_set() {
    use strata::backup::{self, BackupOptions, Source};
    let env = &Env::local();
    env.ok(&["init", "--data-storage-class", "STANDARD_IA"]);
    // The storage class each data-pack write asks for.
    let data_writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let tree_writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let (seen, trees) = (data_writes.clone(), tree_writes.clone());
    let recording = Intercept {
        inner: open_backend(&env.repo),
        observe: Box::new(move |call| match call {
            Call::Write(strata::backend::FileKind::Data, class) => {
                seen.lock().unwrap().push(class.map(String::from))
            }
            Call::Write(strata::backend::FileKind::Tree, class) => {
                trees.lock().unwrap().push(class.map(String::from))
            }
            _ => {}
        }),
    };
    let repo = strata::Repository::open(
        std::sync::Arc::new(recording),
        PASSWORD.as_bytes(),
        &env.path("lib-cache"),
    )
    .unwrap();
    let mut classes = Vec::new();
    for (set, class, seed) in [
        ("weekly", Some("GLACIER_IR"), 1),
        ("critical", None, 2),
        ("weekly", Some("GLACIER_IR"), 3),
    ] {
        let src = env.path(&format!("src-{seed}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), noise(200_000, seed)).unwrap();
        backup::run(
            &repo,
            BackupOptions {
                source: Source::Paths(vec![src]),
                set: Some(set.into()),
                data_storage_class: class.map(String::from),
                ..Default::default()
            },
            &strata::NoProgress,
        )
        .unwrap();
        let writes = std::mem::take(&mut *data_writes.lock().unwrap());
        assert!(!writes.is_empty());
        classes.push(writes);
    }
    let want = |c: &str| Some(c.to_string());
    assert!(
        classes[0].iter().all(|c| *c == want("GLACIER_IR")),
        "{:?}",
        classes[0]
    );
    assert!(
        classes[1].iter().all(|c| *c == want("STANDARD_IA")),
        "{:?}",
        classes[1]
    );
    assert!(
        classes[2].iter().all(|c| *c == want("GLACIER_IR")),
        "{:?}",
        classes[2]
    );
    // A pack under 128 KiB stays in the default class (the cold classes bill 128 KiB per
    // object), as do tree packs, which every listing reads.
    let src = env.path("small");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(20_000, 9)).unwrap();
    backup::run(
        &repo,
        BackupOptions {
            source: Source::Paths(vec![src]),
            set: Some("weekly".into()),
            data_storage_class: Some("GLACIER_IR".into()),
            ..Default::default()
        },
        &strata::NoProgress,
    )
    .unwrap();
    let writes = std::mem::take(&mut *data_writes.lock().unwrap());
    assert_eq!(writes, vec![None], "a small pack went cold");
    assert!(
        tree_writes.lock().unwrap().iter().all(|c| c.is_none()),
        "a tree pack went cold"
    );
}

/// Storage classes S3 does not have are refused before anything is written, naming the
/// valid ones: on init, on backup (a bad argument, exit 2, as the README's table says),
/// and in a set of the config file.
#[test]
fn unknown_storage_classes_are_refused() {
    let env = &Env::local();
    let out = env.run(&["init", "--data-storage-class", "GLACIER_DEEP"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("DEEP_ARCHIVE"), "{}", stderr(&out));
    assert!(!std::path::Path::new(&env.repo).join("config").exists());
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let out = env.run(&[
        "backup",
        src.to_str().unwrap(),
        "--data-storage-class",
        "BOGUS",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("\"BOGUS\" is not an S3 storage class"),
        "{}",
        stderr(&out)
    );
    let config = env.path("c.toml");
    fs::write(
        &config,
        format!("[sets.a]\npaths = [{src:?}]\ndata-storage-class = \"cold\"\n"),
    )
    .unwrap();
    // A set of the config file fails as a set does (1), its metrics and hooks told.
    let out = env.run(&["--config", config.to_str().unwrap(), "backup", "a"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("set \"a\"") && stderr(&out).contains("STANDARD_IA"),
        "{}",
        stderr(&out)
    );
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
}

/// Hostile pass 5: backing up `app/current/app.conf`, `current` a symlink (a deploy's
/// layout), recorded `current` as a directory with the link's own mode (0777) and owner: a
/// restore as root made a world-writable directory holding root's 0600 file. The directory
/// the link leads to is recorded instead.
#[test]
fn a_symlink_on_the_way_to_a_source_path_is_recorded_as_its_directory() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::local();
    env.init();
    let app = env.path("app");
    fs::create_dir_all(app.join("release-1")).unwrap();
    fs::set_permissions(app.join("release-1"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(app.join("release-1/app.conf"), "secret").unwrap();
    fs::set_permissions(
        app.join("release-1/app.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("release-1", app.join("current")).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(app.join("current"), Some(65534), Some(65534)).unwrap();
    }
    let conf = app.join("current/app.conf");
    env.backup(&[conf.to_str().unwrap()]);
    let target = env.path("t");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let current = restored(&target, &app).join("current");
    let m = fs::symlink_metadata(&current).unwrap();
    let real = fs::metadata(app.join("release-1")).unwrap();
    assert!(m.is_dir());
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o750, real.uid()),
        "the link's mode and owner, not its directory's"
    );
    assert_eq!(fs::read(current.join("app.conf")).unwrap(), b"secret");
}

/// Hostile pass 9: a backup that stores none of its source's files exited 0 and became
/// `latest` (status green, forget dropping the real snapshots). A source that is a symlink
/// is stored as the link with a warning, exit 3; excludes matching the source itself are
/// refused before anything is written.
#[test]
fn a_backup_that_would_hold_nothing_of_its_source_is_not_a_success() {
    let env = Env::local();
    env.init();
    let real = env.path("app-v2");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("data"), "d").unwrap();
    let link = env.path("app");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = env.run(&["backup", link.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("a symlink (to"), "{}", stderr(&out));
    assert_eq!(
        env.objects("snapshots").len(),
        1,
        "the link is stored all the same"
    );
    let real = real.to_str().unwrap();
    let out = env.run(&["backup", real, "--exclude", real]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("itself"), "{}", stderr(&out));
    assert_eq!(env.objects("snapshots").len(), 1);
    // A pattern matching only what is below the source is an ordinary exclude.
    env.ok(&["backup", real, "--exclude", "data"]);
}
