//! Sources that fight back: a tree 2,000 directories deep, a directory of many entries, symlink
//! loops, names no terminal should see, and files and directories that change, vanish or
//! turn into each other while the backup walks them. Every backup writes its snapshot (exit
//! 0, or 3 naming what it could not read), the repository checks clean, and what was stable
//! restores exactly.
//!
//! `STRATA_TORTURE_BIG_DIR` sets the entries of the big directory (20,000 here; 200,000 in
//! `tools/torture`, which also reports its time and memory from the `TORTURE` lines).

#[macro_use]
mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

/// Backs up `src`; returns the exit code and the JSON summary (on 0 or 3).
fn backup(env: &Env, src: &Path) -> (i32, serde_json::Value) {
    let out = env.run(&["--json", "backup", src.to_str().unwrap()]);
    let c = code(&out);
    assert!(c == 0 || c == 3, "exit {c}: {}", stderr(&out));
    (c, serde_json::from_slice(&out.stdout).unwrap())
}

fn restore_latest(env: &Env, dir: &str) -> std::path::PathBuf {
    let t = env.path(dir);
    let out = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    t
}

/// `name` opened relative to `dir` (paths this deep are beyond PATH_MAX as a whole).
fn open_at(dir: &fs::File, name: &str, flags: nix::fcntl::OFlag) -> fs::File {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, mode).unwrap();
    fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory `depth` levels of `d` below `root`.
fn descend(root: &Path, depth: usize, create: bool) -> fs::File {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let mut dir = fs::File::open(root).unwrap();
    for _ in 0..depth {
        if create {
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o755);
            nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), "d", mode).unwrap();
        }
        dir = open_at(&dir, "d", OFlag::O_DIRECTORY | OFlag::O_RDONLY);
    }
    dir
}

#[test]
fn a_tree_2000_directories_deep_round_trips() {
    use nix::fcntl::OFlag;
    use std::io::{Read, Write};
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let bottom = descend(&src, 2000, true);
    open_at(&bottom, "leaf.txt", OFlag::O_CREAT | OFlag::O_WRONLY)
        .write_all(b"at the bottom\n")
        .unwrap();
    let (c, v) = backup(env, &src);
    assert_eq!(c, 0);
    // The source and the 2,000 below it.
    assert_eq!(v["dirs"].as_u64().unwrap(), 2001);
    env.assert_read_data_clean();
    let t = restore_latest(env, "r");
    let bottom = descend(&restored(&t, &src), 2000, false);
    let mut leaf = String::new();
    open_at(&bottom, "leaf.txt", OFlag::O_RDONLY)
        .read_to_string(&mut leaf)
        .unwrap();
    assert_eq!(leaf, "at the bottom\n");
    // Restored: the levels descended, and the leaf read back.
    eprintln!("TORTURE hostile case=depth-2000 handled={}", 2000 + 1);
}

#[test]
fn a_directory_of_many_entries_backs_up_and_restores() {
    let n: usize = std::env::var("STRATA_TORTURE_BIG_DIR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..n {
        fs::write(src.join(format!("big/{i:07}")), i.to_string()).unwrap();
    }
    let started = std::time::Instant::now();
    let (c, v) = backup(env, &src);
    let took = started.elapsed();
    let rss = max_child_rss_kib();
    assert_eq!(c, 0);
    assert_eq!(v["files_new"].as_u64().unwrap(), n as u64);
    let t = restore_latest(env, "r");
    let back = restored(&t, &src).join("big");
    let back_n = fs::read_dir(&back).unwrap().count();
    assert_eq!(back_n, n);
    assert_eq!(fs::read_to_string(back.join("0012345")).unwrap(), "12345");
    eprintln!(
        "TORTURE hostile case=dir-{n}-entries handled={back_n} backup_secs={:.2} \
         peak_rss_kib={rss}",
        took.as_secs_f64()
    );
}

#[test]
fn symlink_loops_and_hostile_names_are_stored_as_they_are() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("loop")).unwrap();
    std::os::unix::fs::symlink("b", src.join("loop/a")).unwrap();
    std::os::unix::fs::symlink("a", src.join("loop/b")).unwrap();
    std::os::unix::fs::symlink("..", src.join("loop/up")).unwrap();
    std::os::unix::fs::symlink(".", src.join("loop/self")).unwrap();
    let names: [&[u8]; 4] = [
        b"new\nline",
        b"\x1b[31mred",
        b"bad\xff\xfeutf8",
        b" lead and trail ",
    ];
    for name in names {
        let p = src.join(std::ffi::OsStr::from_bytes(name));
        fs::write(&p, name).unwrap();
    }
    let (c, _) = backup(env, &src);
    assert_eq!(c, 0);
    env.assert_read_data_clean();
    let root = restored(&restore_latest(env, "r"), &src);
    let mut handled = 0;
    for (link, to) in [("a", "b"), ("b", "a"), ("up", ".."), ("self", ".")] {
        assert_eq!(
            fs::read_link(root.join("loop").join(link)).unwrap(),
            Path::new(to)
        );
        handled += 1;
    }
    for name in names {
        let p = root.join(std::ffi::OsStr::from_bytes(name));
        assert_eq!(fs::read(&p).unwrap(), name);
        handled += 1;
    }
    eprintln!("TORTURE hostile case=symlink-loops-and-names handled={handled}");
}

/// Files growing, shrinking, vanishing and appearing, and a directory turning into a file
/// and back, all while backups run: each writes its snapshot and the repository stays sound.
#[test]
fn a_tree_changing_under_the_backup_never_breaks_it() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("churn")).unwrap();
    fs::create_dir_all(src.join("stable")).unwrap();
    for i in 0..20u64 {
        fs::write(src.join(format!("stable/{i}")), noise(50_000, i)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, src) = (stop.clone(), src.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let f = src.join(format!("churn/f{}", i % 8));
                match i % 4 {
                    0 => fs::write(&f, noise(200_000, i)).unwrap_or(()),
                    1 => fs::write(&f, b"short").unwrap_or(()),
                    2 => {
                        let _ = fs::remove_file(&f);
                    }
                    _ => {
                        use std::io::Write;
                        if let Ok(mut h) = fs::OpenOptions::new().append(true).open(&f) {
                            let _ = h.write_all(&noise(100_000, i));
                        }
                    }
                }
                // A directory that becomes a file and back.
                let d = src.join("churn/shape");
                if i % 2 == 0 {
                    let _ = fs::remove_file(&d);
                    let _ = fs::create_dir(&d);
                    let _ = fs::write(d.join("inner"), b"inner");
                } else {
                    let _ = fs::remove_dir_all(&d);
                    let _ = fs::write(&d, b"now a file");
                }
                i += 1;
            }
        })
    };
    let mut runs = 0;
    for _ in 0..8 {
        let (c, v) = backup(env, &src);
        assert!(
            v["snapshot_id"].is_string(),
            "exit {c} wrote no snapshot: {v}"
        );
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    env.assert_read_data_clean();
    let root = restored(&restore_latest(env, "r"), &src);
    for i in 0..20u64 {
        assert_eq!(
            fs::read(root.join(format!("stable/{i}"))).unwrap(),
            noise(50_000, i)
        );
    }
    eprintln!("TORTURE hostile case=tree-changing-under-backup handled={runs}");
}
