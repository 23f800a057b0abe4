#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn round_trip_of_every_file_kind_compares_clean_with_tar(env: &Env) {
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    let b = env.backup(&[src.to_str().unwrap()]);
    assert_eq!(b["errors"], 0);
    let target = env.path("restore");
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert!(out.contains("re-read and verified"), "{out}");
    // The summary counts what the source holds, each kind apart.
    let kinds: Vec<fs::FileType> = (common::walk(&src).iter())
        .map(|p| fs::symlink_metadata(p).unwrap().file_type())
        .collect();
    let (files, dirs) = (
        kinds.iter().filter(|t| t.is_file()).count(),
        kinds.iter().filter(|t| t.is_dir()).count(),
    );
    let others = kinds.len() - files - dirs;
    assert!(others > 0);
    let counts: Vec<usize> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(counts[0], files, "{out}");
    assert!(counts[1] > dirs, "the source's and its parents': {out}");
    assert_eq!(counts[2], others, "{out}");
    let diffs = compare_trees(&src, &restored(&target, &src));
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
}

#[test]
fn the_comparison_itself_notices_differences() {
    let env = &Env::local();
    // Guards the guard: a restore that lost metadata must not compare clean.
    let a = env.path("a");
    make_rich_tree(&a);
    let b = env.path("b");
    copy_tree(&a, &b);
    assert!(
        compare_trees(&a, &b).is_empty(),
        "{:?}",
        compare_trees(&a, &b)
    );
    set_mtime(&b.join("docs"), 1, 2);
    fs::write(b.join("docs/readme.txt"), "changed").unwrap();
    let diffs = compare_trees(&a, &b);
    assert!(
        diffs.iter().any(|d| d.contains("tar --compare")),
        "{diffs:?}"
    );
    assert!(
        diffs.iter().any(|d| d.starts_with("docs: mtime")),
        "{diffs:?}"
    );
}

fn restore_at_picks_the_newest_snapshot_not_after_the_instant(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let s = src.to_str().unwrap();
    for (v, t) in [
        ("v1", "2026-01-01T10:00:00Z"),
        ("v2", "2026-01-01T11:00:00Z"),
        ("v3", "2026-01-01T12:00:00Z"),
    ] {
        fs::write(src.join("state.txt"), v).unwrap();
        env.backup(&[s, "--time", t]);
    }
    let read = |at: &str| -> String {
        let target = env.path(&format!("r-{}", at.replace([':', ' '], "_")));
        env.ok(&["restore", "--at", at, "--target", target.to_str().unwrap()]);
        fs::read_to_string(restored(&target, &src).join("state.txt")).unwrap()
    };
    assert_eq!(read("2026-01-01T11:30:00Z"), "v2");
    assert_eq!(read("2026-01-01T11:00:00Z"), "v2");
    assert_eq!(read("2026-01-01T10:59:59Z"), "v1");
    // Local time (the tests run with TZ=UTC).
    assert_eq!(read("2026-01-01 12:00"), "v3");
    assert_eq!(read("2026-01-02T00:00:00+01:00"), "v3");
    // Older than every snapshot: an error that names the oldest.
    let out = env.run(&[
        "restore",
        "--at",
        "2026-01-01T09:00:00Z",
        "--target",
        env.path("none").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("oldest"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2026-01-01T10:00:00"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("none").exists());
}

fn restore_at_a_duration_ago_and_with_filters(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let s = src.to_str().unwrap();
    fs::write(src.join("f"), "three hours ago").unwrap();
    env.backup(&[s, "--time", "3h", "--host", "alpha"]);
    fs::write(src.join("f"), "ninety minutes ago, other host").unwrap();
    env.backup(&[s, "--time", "90m", "--host", "beta"]);
    fs::write(src.join("f"), "ten minutes ago").unwrap();
    env.backup(&[s, "--time", "10m", "--host", "alpha", "--tag", "hourly"]);
    let read = |args: &[&str]| -> String {
        let target = env.path(&format!(
            "r{}",
            args.join("_").replace([':', ' ', '/'], "_")
        ));
        let mut a = vec!["restore", "--target", target.to_str().unwrap()];
        a.extend_from_slice(args);
        env.ok(&a);
        fs::read_to_string(restored(&target, &src).join("f")).unwrap()
    };
    // Two hosts had a snapshot an hour ago: which one is the operator's choice.
    let out = env.run(&[
        "restore",
        "--target",
        env.path("x").to_str().unwrap(),
        "--at",
        "1h",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("host alpha") && stderr(&out).contains("host beta"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        read(&["--at", "1h", "--host", "beta"]),
        "ninety minutes ago, other host"
    );
    assert_eq!(read(&["--at", "1h", "--host", "alpha"]), "three hours ago");
    assert_eq!(read(&["--at", "1m", "--tag", "hourly"]), "ten minutes ago");
    assert_eq!(read(&["--at", "2h"]), "three hours ago");
}

fn partial_restore_with_include_and_exclude(env: &Env) {
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("partial");
    let inc = format!("{}/docs/nested", src.display());
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        &inc,
        "--exclude",
        "*.bin",
    ]);
    let root = restored(&target, &src);
    assert!(root.join("docs/nested/data.json").is_file());
    assert!(root.join("docs/nested/deeper").is_dir());
    assert!(!root.join("docs/nested/deeper/blob.bin").exists());
    assert!(!root.join("docs/readme.txt").exists());
    assert!(!root.join("secret").exists());
}

fn dry_run_reads_everything_and_writes_nothing(env: &Env) {
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("dry");
    let v = env.json(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!target.exists());
    // Every byte of file content went through decryption and verification.
    let expected: u64 = [3u64 << 20, 650, 16, 18, 6, 12, 100_000, 16 << 20]
        .iter()
        .sum();
    assert_eq!(v["bytes"].as_u64().unwrap(), expected);
}

fn restore_into_a_missing_nested_target_and_over_existing_files(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "new content").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("x/y/z");
    let root = restored(&target, &src);
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("a"), "stale content that is longer").unwrap();
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "new content");
    assert!(Path::new(&root).is_dir());

    // Hostile pass (issue 25): a directory of the operator's where the snapshot has a file
    // is an error for that file; the directory keeps its name, mode and content (its mode
    // was set to the file's 0644, and it was renamed .strata-damaged).
    fs::write(src.join("small"), "s").unwrap();
    fs::write(src.join("big"), noise(5000, 3)).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    for name in ["small", "big"] {
        fs::create_dir_all(root.join(name)).unwrap();
        fs::write(root.join(name).join("notes"), "mine").unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(0o750)).unwrap();
    }
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    for name in ["small", "big"] {
        let dir = root.join(name);
        assert!(stderr(&out).contains(name), "{}", stderr(&out));
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750, "{name}");
        assert_eq!(fs::read_to_string(dir.join("notes")).unwrap(), "mine");
        assert!(!root.join(format!("{name}.strata-damaged")).exists());
    }
}

conformance!(
    round_trip_of_every_file_kind_compares_clean_with_tar,
    restore_at_picks_the_newest_snapshot_not_after_the_instant,
    restore_at_a_duration_ago_and_with_filters,
    partial_restore_with_include_and_exclude,
    dry_run_reads_everything_and_writes_nothing,
    restore_into_a_missing_nested_target_and_over_existing_files
);

/// Hostile pass (issue 25): SIGINT or SIGTERM mid-restore leaves no file that passes for
/// restored but is not: whatever moment the signal hits, each file in the target is
/// byte-exact or absent (a sparse file is sized before its data arrives), and the exit
/// is 130 with a message.
#[test]
fn an_interrupted_restore_leaves_only_complete_files() {
    use std::io::{Seek, SeekFrom, Write};
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut sparse = fs::File::create(src.join("sparse")).unwrap();
    for i in 0..48u64 {
        sparse.seek(SeekFrom::Start(i * (4 << 20))).unwrap();
        sparse.write_all(&noise(1 << 20, 1000 + i)).unwrap();
    }
    drop(sparse);
    for i in 0..48 {
        fs::write(src.join(format!("f{i:02}")), noise(1 << 20, i)).unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        let target = env.path(&format!("t-{signal}"));
        let child = env
            .std_cmd()
            .args(["restore", "latest", "--target", target.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let dir = restored(&target, &src);
        let started = std::time::Instant::now();
        while fs::read_dir(&dir).map_or(0, |d| d.count()) < 2
            && started.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        common::signal(&child, signal);
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 130, "{signal}: {}", stderr(&out));
        assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
        let mut complete = 0;
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name();
            let got = fs::read(entry.path()).unwrap();
            assert!(
                got == fs::read(src.join(&name)).unwrap(),
                "{signal}: {name:?} is in the target but not what was backed up"
            );
            complete += 1;
        }
        assert!(
            complete < 49,
            "{signal}: the restore finished before the signal"
        );
        // Run again, it completes.
        env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert!(compare_trees(&src, &dir).is_empty());
    }
}

/// Where a restore writes a regular file until it is complete (README, "Restore never
/// writes ...").
const STAGED: &str = ".strata-restore-";

/// Whether a file in `dir` is not yet what the snapshot holds: a staged one, or one under
/// its own name whose content differs from `src`'s.
fn caught_mid_file(dir: &Path, src: &Path) -> bool {
    fs::read_dir(dir).unwrap().flatten().any(|e| {
        let name = e.file_name();
        name.to_string_lossy().starts_with(STAGED)
            || fs::read(e.path()).ok() != fs::read(src.join(&name)).ok()
    })
}

/// Hostile pass: a restore killed outright (SIGKILL, the OOM killer, a power cut of the
/// process) leaves no file under its own name that is not whole: each is written under a
/// staged name and renamed once complete. The leftovers are recognisable by their name, and
/// the next restore into the target removes them and completes.
#[test]
fn a_killed_restore_leaves_no_partial_file_under_its_name() {
    use nix::sys::signal::{SIGCONT, SIGKILL, SIGSTOP};
    use std::os::unix::fs::MetadataExt;
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), noise(16 << 20, 70 + i)).unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("t");
    let mut child = env
        .std_cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = restored(&target, &src);
    // Stopped, looked at, and killed only while a file is being written.
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it was caught mid-file"
        );
        if fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            common::signal(&child, SIGSTOP);
            if caught_mid_file(&dir, &src) {
                common::signal(&child, SIGKILL);
                break;
            }
            common::signal(&child, SIGCONT);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    child.wait().unwrap();
    let mut staged = 0;
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(STAGED) {
            let meta = e.metadata().unwrap();
            assert!(meta.is_file(), "{name:?}");
            assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw(), "{name:?}");
            staged += 1;
            continue;
        }
        assert!(
            fs::read(e.path()).unwrap() == fs::read(src.join(&name)).unwrap(),
            "{name:?} is under its own name but not what was backed up"
        );
    }
    assert!(
        staged > 0,
        "the file being written left nothing recognisable"
    );
    // Run again, it completes and leaves nothing staged.
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(
        compare_trees(&src, &dir).is_empty(),
        "{:?}",
        compare_trees(&src, &dir)
    );
    let left: Vec<_> = common::walk(&target)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(STAGED))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 31, item 7: a restore streams the snapshot in batches of bounded memory. In
/// batches of one entry each, everything comes back as from one batch: a directory's
/// metadata once all below it is written (a read-only directory's files too), hard links
/// whose names fall in different batches, the counts, and an include deep down.
#[test]
fn a_restore_in_batches_of_one_entry_is_exact() {
    let mut env = Env::local();
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    fs::create_dir_all(src.join("ro/sub")).unwrap();
    fs::write(src.join("ro/sub/f"), "in a read-only directory").unwrap();
    fs::hard_link(src.join("hard-a"), src.join("ro/sub/hard-c")).unwrap();
    for (dir, n) in [("ro/sub", 1), ("ro", 2)] {
        fs::set_permissions(src.join(dir), fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&src.join(dir), 1_600_000_000 + n, n);
    }
    env.backup(&[src.to_str().unwrap()]);
    let restore = |env: &Env, to: &str, more: &[&str]| {
        let target = env.path(to);
        let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
        args.extend(more);
        (env.ok(&args), target)
    };
    let (whole, _) = restore(&env, "whole", &["--verify"]);
    env.vars
        .push(("STRATA_RESTORE_BATCH_BYTES".into(), "1".into()));
    let (batched, target) = restore(&env, "batched", &["--verify"]);
    let diffs = compare_trees(&src, &restored(&target, &src));
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    let numbers = |s: &str| -> Vec<u64> {
        s.split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').parse().ok())
            .collect()
    };
    assert_eq!(
        numbers(&whole)[..4],
        numbers(&batched)[..4],
        "{whole}\n{batched}"
    );
    let (_, one) = restore(&env, "one", &["--include", "**/ro/sub/hard-c"]);
    let one = restored(&one, &src);
    assert_eq!(
        fs::read(one.join("ro/sub/hard-c")).unwrap(),
        fs::read(src.join("hard-a")).unwrap()
    );
    assert!(!one.join("docs").exists() && !one.join("ro/sub/f").exists());
    assert_eq!(mtime_of(&one.join("ro")), mtime_of(&src.join("ro")));
    for dir in ["ro/sub", "ro"] {
        fs::set_permissions(src.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Hostile pass 5 (E5, E6): a restore killed after some batches had finished their
/// directories, then run again "to finish": those directories kept the second run's
/// times (it rewrote their files), and a user's second run could not write into the
/// read-only ones it had finished (every later run failed, Permission denied). The
/// journal names them: the second run finishes them again, as one run would have.
#[test]
fn a_killed_restore_run_again_finishes_the_directories_its_batches_had_finished() {
    use nix::sys::signal::Signal;
    killed_and_finished(&Env::local(), Signal::SIGKILL);
    killed_and_finished(&Env::local(), Signal::SIGTERM);
    killed_and_finished(&Env::local().unprivileged(), Signal::SIGTERM);
}

fn killed_and_finished(env: &Env, sig: nix::sys::signal::Signal) {
    env.init();
    let src = env.path("src");
    let dirs: Vec<String> = (0..20).map(|d| format!("d{d:02}")).collect();
    for (n, d) in dirs.iter().enumerate() {
        fs::create_dir_all(src.join(d)).unwrap();
        for f in 0..100 {
            fs::write(src.join(d).join(format!("f{f:03}")), format!("{d} {f}")).unwrap();
        }
        fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&src.join(d), 1_500_000_000 + n as i64, 0);
    }
    // A user's restore makes everything that user's: so is the source.
    if let Some(uid) = env.run_as {
        let mut all = vec![src.clone()];
        for d in &dirs {
            all.push(src.join(d));
            all.extend(
                fs::read_dir(src.join(d))
                    .unwrap()
                    .map(|e| e.unwrap().path()),
            );
        }
        for p in all {
            std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
        }
    }
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path(&format!("t-{sig}"));
    let first = restored(&target, &src).join(&dirs[0]);
    // One entry per batch: the first directory is finished long before the last.
    let child = env
        .std_cmd()
        .env("STRATA_RESTORE_BATCH_BYTES", "1")
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let finished =
        |p: &Path| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o555);
    let started = std::time::Instant::now();
    while !finished(&first) {
        assert!(
            started.elapsed().as_secs() < 60,
            "{} never finished",
            first.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    common::signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "finished before the {sig}: {}",
        stderr(&out)
    );
    let last = restored(&target, &src).join(dirs.last().unwrap());
    assert!(!finished(&last), "finished before the {sig}");
    let again = env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let diffs = compare_trees(&src, &restored(&target, &src));
    assert!(
        diffs.is_empty(),
        "after {sig}:\n{}\n{again}",
        diffs.join("\n")
    );
    for d in &dirs {
        fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Hostile pass 5 (E8): a hard link that cannot be made (past ext4's link limit there; a
/// directory of the operator's holding its name here) was two errors per name, the second
/// a misleading "replaced during the restore" from giving it metadata. One error now.
#[test]
fn a_hard_link_not_made_is_one_error() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "linked").unwrap();
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("t");
    let held = restored(&target, &src).join("b/inner");
    fs::create_dir_all(&held).unwrap();
    fs::write(held.join("f"), "the operator's").unwrap();
    for d in [held.as_path(), held.parent().unwrap()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let mut d = held.parent().unwrap().parent().unwrap();
    while d.starts_with(&target) {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        d = d.parent().unwrap();
    }
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("1 error(s); 1 file(s) not restored exactly"),
        "{err}"
    );
    assert!(!err.contains("replaced"), "{err}");
    assert_eq!(fs::read(held.join("f")).unwrap(), b"the operator's");
    assert_eq!(
        fs::read(restored(&target, &src).join("a")).unwrap(),
        b"linked"
    );
}

/// Issue 32, mutant 4: `--dry-run` promises "read + verify all": a flipped byte in a pack
/// makes it fail, naming the file, and still writes nothing.
#[test]
fn a_dry_run_decrypts_and_fails_on_a_flipped_byte() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(200_000, 7)).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("dry");
    let args = [
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--dry-run",
    ];
    env.ok(&args);
    let data = env.path("repo/data");
    let pack = walk(&data).into_iter().find(|p| p.is_file()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&pack, bytes).unwrap();
    let out = env.run(&args);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("/f"), "{}", stderr(&out));
    assert!(!target.exists());
}

/// Issue 32, mutant 2: offsets past 4 GiB. A sparse file of 5 GiB with data at its start
/// and past 4 GiB (costing little disk) restores with each piece where it was: a 32-bit
/// offset would put the second over the first.
#[test]
fn a_file_past_4_gib_restores_its_data_in_place() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let (first, far) = (noise(1 << 20, 41), noise(1 << 20, 42));
    let at = (4u64 << 30) + 123;
    let len = 5u64 << 30;
    let mut f = fs::File::create(src.join("big")).unwrap();
    f.write_all(&first).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&far).unwrap();
    f.set_len(len).unwrap();
    drop(f);
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("t");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let mut r = fs::File::open(restored(&target, &src).join("big")).unwrap();
    assert_eq!(r.metadata().unwrap().len(), len);
    let mut piece = |offset: u64| {
        let mut buf = vec![0u8; 1 << 20];
        r.seek(SeekFrom::Start(offset)).unwrap();
        r.read_exact(&mut buf).unwrap();
        buf
    };
    assert!(piece(0) == first, "the first MiB");
    assert!(piece(at) == far, "the MiB past 4 GiB");
    assert!(piece(2 << 30).iter().all(|b| *b == 0), "the hole between");
}

/// Issue 32, mutant 3: character and block devices come back with their device numbers
/// (not 0), as root; a Unix socket is skipped and named, as tar skips it.
#[test]
fn devices_come_back_with_their_numbers_and_sockets_are_skipped() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !is_root() {
        return not_run("device nodes need root to make");
    }
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o640);
    let char_dev = nix::sys::stat::makedev(1, 3);
    let block_dev = nix::sys::stat::makedev(7, 201);
    use nix::sys::stat::{mknod, SFlag};
    mknod(&src.join("chr"), SFlag::S_IFCHR, mode, char_dev).unwrap();
    mknod(&src.join("blk"), SFlag::S_IFBLK, mode, block_dev).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("t");
    let out = env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let back = restored(&target, &src);
    let chr = fs::symlink_metadata(back.join("chr")).unwrap();
    let blk = fs::symlink_metadata(back.join("blk")).unwrap();
    assert!(
        chr.file_type().is_char_device() && chr.rdev() == char_dev,
        "{out}"
    );
    assert!(
        blk.file_type().is_block_device() && blk.rdev() == block_dev,
        "{out}"
    );
    assert_eq!(chr.mode() & 0o7777, 0o640);
    assert!(fs::symlink_metadata(back.join("sock")).is_err());
}

/// Hostile pass 6: a snapshot holding a file under a restore journal's name put it at the
/// target's top, where the next restore took it for a killed restore's journal (a key
/// holder's way to have root re-own an existing private directory). Restore's own names
/// are not restored, at any depth; the rest of the snapshot is.
#[test]
fn restores_own_names_are_never_restored() {
    let env = Env::local();
    env.init();
    let journal = ".strata-restore-0123456789abcdef.lock";
    let forged = format!("P1\0T{}\0D1 2 3 private\0", "0".repeat(64));
    let out = env
        .cmd()
        .args(["backup", "--stdin", "--stdin-filename", journal])
        .write_stdin(forged)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("t");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(journal) && err.contains("restore's own"),
        "{err}"
    );
    assert!(!target.join(journal).exists());
    // Deeper down too, and the rest comes back.
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/.strata-restore-x"), "x").unwrap();
    fs::write(src.join("d/kept"), "kept").unwrap();
    let id = env.backup(&[src.to_str().unwrap()])["snapshot_id"].clone();
    let t2 = env.path("t2");
    let out = env.run(&[
        "restore",
        id.as_str().unwrap(),
        "--target",
        t2.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("d/.strata-restore-x"),
        "{}",
        stderr(&out)
    );
    let back = restored(&env.path("t2"), &src);
    assert_eq!(fs::read(back.join("d/kept")).unwrap(), b"kept");
    assert!(!back.join("d/.strata-restore-x").exists());
}

/// Hostile pass 8: the newest snapshot of a lineage damaged (read on a host without its
/// manifest cached): `restore latest` restores the newest readable one but says a newer
/// one may have been skipped, and exits 1, not 0.
#[test]
fn a_latest_restore_past_a_damaged_snapshot_does_not_exit_0() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "v1").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    fs::write(src.join("f"), "v2").unwrap();
    let newest = env.backup(&[src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.flip_byte("snapshots", &newest, 30);
    let t = env.path("t");
    let out = env
        .own_cmd()
        .args(["restore", "latest", "--target", t.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("could not be read"), "{err}");
    assert_eq!(fs::read(restored(&t, &src).join("f")).unwrap(), b"v1");
}
