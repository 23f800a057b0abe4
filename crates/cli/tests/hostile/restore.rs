//! See main.rs.

use std::fs;
use std::process::Output;

use crate::common::*;
use crate::craft::{self, file};

// ---- Item 12: a node's `size` is the length of its content, or the snapshot is damaged.

/// A snapshot whose one file `f` says `size` bytes: its content blobs hold `content`, or
/// (`inline`) its node does.
fn lying_size(env: &Env, size: u64, content: &[u8], inline: bool) {
    env.init();
    craft::snapshot(env, |c| {
        let mut n = file(c, "f", content);
        if inline {
            n.content.clear();
            n.data = Some(content.to_vec());
        }
        n.size = size;
        c.tree(vec![n])
    });
}

/// The restore fails naming the file and the lie, and leaves nothing under its name that
/// passes for the file.
fn restore_refuses_a_lying_size(size: u64, content: &[u8], inline: bool) {
    let env = &Env::local();
    lying_size(env, size, content, inline);
    let target = env.path("t");
    let b = craft::run_bounded(
        env,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--verify",
        ],
        1024,
        60,
    );
    let err = stderr(&b.out);
    assert!(!b.timed_out, "{err}");
    assert!(
        !b.out.status.success(),
        "restored a file of the wrong size: {err}"
    );
    assert!(err.contains("/f") && err.contains("size"), "{err}");
    assert!(!target.join("f").exists(), "left as if restored: {err}");
}

#[test]
fn restore_refuses_content_longer_than_the_size() {
    restore_refuses_a_lying_size(5, &noise(200, 1), false);
}

#[test]
fn restore_refuses_content_shorter_than_the_size() {
    restore_refuses_a_lying_size(200, &noise(5, 2), false);
}

#[test]
fn restore_refuses_inline_data_of_another_length() {
    restore_refuses_a_lying_size(5, &noise(200, 3), true);
}

/// The size right, the content not what its id says (a lie only a key holder can tell):
/// restore does not pass it off as the file either.
#[test]
fn restore_refuses_content_that_is_not_its_id() {
    let env = &Env::local();
    env.init();
    craft::snapshot(env, |c| {
        // Sized by another blob: the claimed one must be stored only as the lie.
        let mut n = file(c, "f", b"other");
        n.content = vec![c.data_as(b"hello", b"HELLO")];
        c.tree(vec![n])
    });
    let target = env.path("t");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/f"), "{err}");
    assert!(!target.join("f").exists(), "{err}");
}

/// Hostile pass: a directory node carrying inline bytes restored with exit 0, though
/// format-spec §8 calls it corrupt (and `check` did); so did inline bytes beside blobs.
#[test]
fn restore_refuses_inline_data_where_the_spec_forbids_it() {
    let env = &Env::local();
    env.init();
    craft::snapshot(env, |c| {
        let mut d = craft::dir("d", c.tree(vec![file(c, "inner", b"x")]));
        d.data = Some(b"smuggled".to_vec());
        let mut both = file(c, "both", b"hello");
        both.data = Some(b"hello".to_vec());
        c.tree(vec![d, both, file(c, "ok", b"fine")])
    });
    let target = env.path("t");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("inline data on a Dir node"), "{err}");
    assert!(err.contains("\"both\""), "{err}");
    assert_eq!(fs::read(target.join("ok")).unwrap(), b"fine");
    assert!(!target.join("both").exists(), "{err}");
}

#[test]
fn dump_refuses_a_lying_size() {
    let env = &Env::local();
    lying_size(env, 5, &noise(200, 4), false);
    for args in [&["dump", "latest", "/"][..], &["dump", "latest", "/f"]] {
        let out = env.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("/f") || err.contains("f in"),
            "{args:?}: {err}"
        );
        assert!(err.contains("size"), "{args:?}: {err}");
    }
}

#[test]
fn check_reports_a_lying_size() {
    let env = &Env::local();
    lying_size(env, 5, &noise(200, 5), false);
    let out = env.run(&["check"]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("\"f\"") && all.contains("size"), "{all}");
}

// ---- Item 4: what the restore writes, links and chmods is the inode it created.

/// A second name is linked through a descriptor of the first's inode: without privileges
/// too (no `AT_EMPTY_PATH`, the descriptor's /proc link).
#[test]
fn hard_links_restore_as_root_and_as_another_user() {
    for env in [Env::local(), Env::local().unprivileged()] {
        env.init();
        craft::snapshot(&env, |c| {
            let (mut a, mut b) = (file(c, "a", b"shared"), file(c, "b", b"shared"));
            for n in [&mut a, &mut b] {
                (n.device, n.inode, n.nlink) = (1, 7, 2);
            }
            c.tree(vec![a, b])
        });
        let target = env.path("t");
        env.ok(&[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--verify",
        ]);
        let (a, b) = (target.join("a"), target.join("b"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::read(&b).unwrap(), b"shared");
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&a), ino(&b), "run as {:?}", env.run_as);
    }
}

/// Hostile pass: a directory the target already holds keeps its owner, mode and times (as
/// with tar's `--no-overwrite-dir`); only directories the restore creates get the
/// snapshot's. A key holder's snapshot that says 0777 cannot open a root restore's existing
/// directories (or the target) to everyone, and the restore says what it kept.
#[test]
fn existing_directories_keep_their_owner_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let env = &Env::local();
    env.init();
    craft::snapshot(env, |c| {
        let inner = c.tree(vec![file(c, "f", b"x")]);
        let (mut old, mut new) = (craft::dir("old", inner), craft::dir("new", inner));
        for d in [&mut old, &mut new] {
            (d.mode, d.uid, d.gid) = (0o777, 1234, 1234);
        }
        c.tree(vec![old, new])
    });
    let target = env.path("t");
    fs::create_dir_all(target.join("old")).unwrap();
    for d in [&target, &target.join("old")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before = (owner_and_mode(&target), owner_and_mode(&target.join("old")));
    assert_eq!(before.1 .2, 0o755);
    let (_, out) = restore_into(env, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(owner_and_mode(&target), before.0, "{err}");
    assert_eq!(owner_and_mode(&target.join("old")), before.1, "{err}");
    assert!(err.contains("1 existing directory kept"), "{err}");
    let (uid, gid, _) = before.1;
    let owner = if is_root() { (1234, 1234) } else { (uid, gid) };
    assert_eq!(
        owner_and_mode(&target.join("new")),
        (owner.0, owner.1, 0o777)
    );
    for d in ["old", "new"] {
        assert_eq!(fs::read(target.join(d).join("f")).unwrap(), b"x", "{d}");
    }
}

/// A damaged file's other names are damaged too: each is marked, none left staged or under
/// its own name.
#[test]
fn hard_links_of_a_damaged_file_are_marked_damaged() {
    let env = &Env::local();
    env.init();
    craft::snapshot(env, |c| {
        let (mut a, mut b) = (file(c, "a", b"short"), file(c, "b", b"short"));
        for n in [&mut a, &mut b] {
            (n.device, n.inode, n.nlink, n.size) = (1, 7, 2, 500);
        }
        c.tree(vec![a, b])
    });
    let (target, out) = restore_into(env, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let mut names: Vec<String> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.strata-damaged", "b.strata-damaged"]);
}

// ---- Item 3: owners, set-id bits, attributes and devices, as `tar` and `rsync` users
// know them.

/// `security.capability` v2 granting CAP_NET_RAW: as good as setuid root.
const CAP_NET_RAW: [u8; 20] = [
    0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// What a key holder puts in a snapshot for a root restore: a setuid and setgid root
/// program with a file capability and a user attribute, a file of another user's, and
/// (`device`) a world-writable disk owned by that user.
fn privileged_entries(env: &Env, device: bool) {
    env.init();
    craft::snapshot(env, |c| {
        let mut su = file(c, "su", b"#!/bin/sh\nid\n");
        (su.mode, su.uid, su.gid) = (0o6755, 0, 0);
        su.xattrs = vec![
            strata::Xattr {
                name: b"security.capability".to_vec(),
                value: CAP_NET_RAW.to_vec(),
            },
            strata::Xattr {
                name: b"user.note".to_vec(),
                value: b"x".to_vec(),
            },
        ];
        let mut theirs = file(c, "theirs", b"x");
        (theirs.uid, theirs.gid) = (1234, 1234);
        let mut entries = vec![su, theirs];
        if device {
            let mut disk = strata::Node::new(b"disk".to_vec(), strata::NodeKind::Blockdev);
            (disk.mode, disk.uid, disk.gid) = (0o666, 1234, 1234);
            disk.rdev = libc::makedev(7, 0);
            entries.push(disk);
        }
        c.tree(entries)
    });
}

fn owner_and_mode(p: &std::path::Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn restore_into(env: &Env, extra: &[&str]) -> (std::path::PathBuf, Output) {
    let target = env.path("t");
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    (target, out)
}

/// The default as root stays what it was: owners, set-id bits, capabilities, devices.
#[test]
fn a_root_restore_recreates_owners_setid_bits_and_devices_by_default() {
    if !is_root() {
        return not_run("needs root");
    }
    let env = &Env::local();
    privileged_entries(env, true);
    let (t, out) = restore_into(env, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(owner_and_mode(&t.join("su")), (0, 0, 0o6755));
    assert_eq!(owner_and_mode(&t.join("theirs")), (1234, 1234, 0o644));
    assert_eq!(owner_and_mode(&t.join("disk")), (1234, 1234, 0o666));
    let cap = xattr::get(t.join("su"), "security.capability").unwrap();
    assert_eq!(cap.as_deref(), Some(&CAP_NET_RAW[..]));
}

#[test]
fn no_owner_leaves_everything_the_restoring_users_without_setid_bits_or_capabilities() {
    if !is_root() {
        return not_run("needs root");
    }
    let env = &Env::local();
    privileged_entries(env, false);
    let (t, out) = restore_into(env, &["--no-owner", "--verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(owner_and_mode(&t.join("su")), (0, 0, 0o755));
    assert_eq!(owner_and_mode(&t.join("theirs")), (0, 0, 0o644));
    assert_eq!(
        xattr::get(t.join("su"), "security.capability").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(t.join("su"), "user.note").unwrap().unwrap(),
        b"x"
    );
}

#[test]
fn an_unprivileged_restore_drops_setid_bits() {
    let env = &Env::local().unprivileged();
    privileged_entries(env, false);
    let (t, out) = restore_into(env, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let me = env
        .run_as
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let (uid, _, mode) = owner_and_mode(&t.join("su"));
    assert_eq!((uid, mode), (me, 0o755));
}

#[test]
fn no_devices_skips_device_nodes_with_a_warning_and_no_xattrs_sets_none() {
    let env = &Env::local();
    privileged_entries(env, true);
    let (t, out) = restore_into(env, &["--no-devices", "--no-xattrs"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains("/disk"), "{err}");
    assert!(std::fs::symlink_metadata(t.join("disk")).is_err(), "{err}");
    assert_eq!(std::fs::read(t.join("theirs")).unwrap(), b"x");
    assert_eq!(xattr::list(t.join("su")).unwrap().count(), 0);
}

/// `dump` takes the same options; its default archive keeps everything (whoever extracts
/// it decides, as with tar).
#[test]
fn dump_leaves_out_owners_setid_bits_attributes_and_devices_when_asked() {
    let env = &Env::local();
    privileged_entries(env, true);
    let list = |extra: &[&str]| {
        let mut args = vec!["dump", "latest", "/"];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let tarball = env.path("dump.tar");
        fs::write(&tarball, &out.stdout).unwrap();
        let listing = std::process::Command::new("tar")
            .args(["-tvf", tarball.to_str().unwrap(), "--numeric-owner"])
            .output()
            .unwrap();
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            String::from_utf8_lossy(&listing.stdout).into_owned(),
            raw,
            stderr(&out),
        )
    };
    let (all, raw, _) = list(&[]);
    assert!(
        all.contains("-rwsr-sr-x 0/0") && all.contains("1234/1234"),
        "{all}"
    );
    assert!(
        all.contains("disk") && raw.contains("SCHILY.xattr.user.note"),
        "{all}"
    );
    let (bare, raw, err) = list(&["--no-owner", "--no-xattrs", "--no-devices"]);
    let me = nix::unistd::geteuid().as_raw();
    assert!(bare.contains(&format!("-rwxr-xr-x {me}/")), "{bare}");
    assert!(!bare.contains("1234") && !bare.contains("disk"), "{bare}");
    assert!(!raw.contains("SCHILY.xattr"), "{bare}");
    assert!(err.contains("warning") && err.contains("disk"), "{err}");
}

#[test]
fn drill_takes_the_same_options() {
    let env = &Env::local();
    privileged_entries(env, true);
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let out = env.run(&[
        "drill",
        "--target",
        scratch.to_str().unwrap(),
        "--no-owner",
        "--no-xattrs",
        "--no-devices",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains("disk"), "{err}");
}

#[test]
fn pg_restore_takes_the_same_options() {
    let env = &Env::local();
    let help = env.ok(&["pg", "restore", "--help"]);
    for opt in ["--no-owner", "--no-xattrs", "--no-devices"] {
        assert!(help.contains(opt), "{help}");
    }
}

// ---- Item 7: tree bombs. Shared subtrees are legitimate (identical directories dedupe
// to one tree); a tree that expands past what its snapshot's summary records, or deeper or
// longer than a path can be, is refused in bounded time and memory.

/// `levels` levels, each a directory whose two entries name the same subtree: 2^levels
/// paths from a repository of a few KB.
fn sharing_bomb(c: &craft::Crafter, levels: usize) -> strata::TreeId {
    let mut t = c.tree(vec![file(c, "f", b"x")]);
    for _ in 0..levels {
        t = c.tree(vec![craft::dir("a", t), craft::dir("b", t)]);
    }
    t
}

/// A chain of `depth` directories, one inside the other.
fn chain(c: &craft::Crafter, depth: usize) -> strata::TreeId {
    let mut t = c.tree(vec![file(c, "f", b"x")]);
    for _ in 0..depth {
        t = c.tree(vec![craft::dir("d", t)]);
    }
    t
}

/// Each command stops within `secs` and 1 GiB of address space, fails, and says why in
/// words containing one of `why`.
fn refused_in_bounds(env: &Env, commands: &[&[&str]], why: &[&str], secs: u64) {
    for args in commands {
        let b = craft::run_bounded(env, args, 1024, secs);
        let err = stderr(&b.out);
        assert!(!b.timed_out, "{args:?} still running after {:?}", b.elapsed);
        eprintln!(
            "{args:?}: {:?}: {}",
            b.elapsed,
            err.chars().take(400).collect::<String>()
        );
        assert!(!b.out.status.success(), "{args:?} succeeded: {err}");
        assert!(why.iter().any(|w| err.contains(w)), "{args:?}: {err}");
        // Said once, not once per entry.
        assert!(err.len() < 16_000, "{args:?}: {} bytes: {err}", err.len());
    }
}

/// `diff` from an empty snapshot to `crafted` and back: all of it added, then removed.
fn diff_commands(env: &Env, crafted: strata::SnapshotId) -> Vec<Vec<String>> {
    let empty = craft::snapshot(env, |c| c.tree(vec![])).to_hex();
    let crafted = crafted.to_hex();
    vec![
        vec!["diff".into(), empty.clone(), crafted.clone()],
        vec!["diff".into(), crafted, empty],
    ]
}

fn browsing_commands(env: &Env) -> Vec<Vec<String>> {
    let t = env.path("t").display().to_string();
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let s = scratch.display().to_string();
    [
        vec!["restore", "latest", "--target", &t],
        vec!["restore", "latest", "--target", &t, "--dry-run"],
        vec!["ls", "latest"],
        vec!["find", "f"],
        vec!["dump", "latest", "/"],
        vec!["drill", "--target", &s],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect()
}

/// Every reading command on the crafted snapshot, the only one, then `diff` with an empty
/// one (written only then: `latest` must be the crafted one before).
fn refused_all(env: &Env, crafted: strata::SnapshotId, why: &[&str], secs: u64) {
    let run = |cmds: Vec<Vec<String>>| {
        let args: Vec<Vec<&str>> = (cmds.iter())
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let args: Vec<&[&str]> = args.iter().map(Vec::as_slice).collect();
        refused_in_bounds(env, &args, why, secs);
    };
    run(browsing_commands(env));
    run(diff_commands(env, crafted));
}

#[test]
fn a_sharing_bomb_is_refused_as_expanding_past_its_summary() {
    let env = &Env::local();
    env.init();
    let bomb = craft::snapshot(env, |c| sharing_bomb(c, 40));
    refused_all(env, bomb, &["summary"], 20);
}

/// A path given below the root (`ls latest /a`, `--include`) walks only that subtree, and a
/// bomb there is refused in bounds too.
#[test]
fn a_sharing_bomb_below_a_given_path_is_refused_too() {
    let env = &Env::local();
    env.init();
    craft::snapshot(env, |c| sharing_bomb(c, 40));
    let t = env.path("t").display().to_string();
    refused_in_bounds(
        env,
        &[
            &["ls", "latest", "/a"],
            &["dump", "latest", "/a/b"],
            &["restore", "latest", "--include", "/a/b", "--target", &t],
        ],
        &["summary"],
        20,
    );
}

#[test]
fn a_chain_deeper_than_a_path_can_be_is_refused() {
    let env = &Env::local();
    env.init();
    // The summary does not give it away: the depth must.
    let summary = strata::Summary {
        files_new: 1,
        dirs: 60_000,
        ..Default::default()
    };
    let deep = craft::snapshot_with(env, summary, |c| chain(c, 50_000));
    // Restoring the 2047 levels kept costs the kernel depth² lookups: seconds, not more.
    refused_all(env, deep, &["deeper", "longer"], 60);
}

/// A legitimate snapshot shares subtrees too: it restores and lists whole.
#[test]
fn shared_subtrees_within_the_summary_restore_whole() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    for d in ["a", "b", "c/a", "c/b"] {
        fs::create_dir_all(src.join(d)).unwrap();
        fs::write(src.join(d).join("same"), "same content").unwrap();
    }
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("t");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    let restored = restored(&target, &src);
    assert_eq!(
        fs::read(restored.join("c/b/same")).unwrap(),
        b"same content"
    );
    let ls = env.ok(&["ls", "latest"]);
    assert_eq!(ls.matches("/same").count(), 4, "{ls}");
}

/// Through `mount`, a walk of the bomb (`find`) ends with an I/O error once the snapshot
/// expands past its summary, instead of listing 2^40 paths into the mount's memory.
#[test]
fn a_sharing_bomb_under_mount_ends_in_an_error() {
    let env = &Env::local();
    env.init();
    let bomb = craft::snapshot(env, |c| sharing_bomb(c, 40));
    bomb_under_mount(env, bomb, "summary");
}

/// The same with a summary recording 2^32 files: the mount's listings end at the sharing
/// bound.
#[test]
fn a_bomb_recording_its_expansion_under_mount_ends_in_an_error() {
    let env = &Env::local();
    env.init();
    let bomb = craft::snapshot_with(env, claiming(1 << 32), wide_bomb);
    bomb_under_mount(env, bomb, "sharing");
}

/// `find` over the mounted `bomb` fails with EIO in bounds, the mount's log saying `why`.
fn bomb_under_mount(env: &Env, bomb: strata::SnapshotId, why: &str) {
    use std::time::{Duration, Instant};
    if !std::path::Path::new("/dev/fuse").exists() {
        return not_run("no /dev/fuse");
    }
    let mp = env.path("mp");
    fs::create_dir_all(&mp).unwrap();
    let mut mount = env
        .std_cmd()
        .args(["mount", mp.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !mp.join("snapshots").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "not mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Into files: a pipe nobody reads yet would stop find once full.
    let (listed, errors) = (env.path("listed"), env.path("errors"));
    let mut find = std::process::Command::new("find")
        .arg(mp.join("snapshots").join(bomb.to_hex()))
        .stdout(fs::File::create(&listed).unwrap())
        .stderr(fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = find.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(60) {
            find.kill().unwrap();
            find.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    signal(&mount, nix::sys::signal::Signal::SIGINT);
    let unmounted = mount.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(mount.stderr.as_mut().unwrap(), &mut log).unwrap();
    let listed = fs::metadata(&listed).unwrap().len();
    let status = status.unwrap_or_else(|| panic!("find still running after 60 s: {listed} B"));
    let err = fs::read_to_string(&errors).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("Input/output error"), "{err}");
    assert!(log.contains(why), "{log}");
    // 82,432 paths at most (the sharing bound), each under the mount point.
    assert!(listed < 16 << 20, "{listed} bytes listed");
    assert!(unmounted.success(), "{log}");
}

/// `check` walks each snapshot again to name the paths a damaged blob costs: over a bomb,
/// that listing ends at the summary too.
#[test]
fn check_names_the_paths_of_damage_in_a_sharing_bomb_in_bounds() {
    let env = &Env::local();
    env.init();
    craft::snapshot(env, |c| sharing_bomb(c, 40));
    for (name, _) in env.objects("data") {
        env.flip_byte("data", &name, 20);
    }
    let b = craft::run_bounded(env, &["check", "--read-data"], 1024, 30);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&b.out.stdout),
        stderr(&b.out)
    );
    assert!(!b.timed_out, "still running after {:?}", b.elapsed);
    assert!(!b.out.status.success(), "{all}");
    assert!(all.len() < 1 << 20, "{} bytes of report", all.len());
}

/// `check` finds the bomb itself: each tree is read once, and its expansion computed per
/// tree, not walked path by path.
#[test]
fn check_reports_a_snapshot_that_expands_past_its_summary() {
    let env = &Env::local();
    env.init();
    let bomb = craft::snapshot(env, |c| sharing_bomb(c, 40));
    let deep = strata::Summary {
        files_new: 1,
        dirs: 60_000,
        ..Default::default()
    };
    craft::snapshot_with(env, deep, |c| chain(c, 50_000));
    let b = craft::run_bounded(env, &["check"], 1024, 60);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&b.out.stdout),
        stderr(&b.out)
    );
    assert!(!b.timed_out, "still running after {:?}", b.elapsed);
    assert!(!b.out.status.success(), "{all}");
    assert!(
        all.contains(&bomb.short()) && all.contains("summary"),
        "{all}"
    );
    assert!(all.contains("forget --snapshot"), "{all}");
    // The chain is as long as its summary says: only its depth is wrong, which check
    // leaves to the readers (they skip what lies too deep, naming it).
    assert_eq!(all.matches("summary records").count(), 1, "{all}");
}

// Issue 31, hostile pass 3, item 2: the summary is the writer's claim. A bomb whose summary
// records what it expands to (or more) must still end in bounds.

/// 64 directories per level over the same subtree, 5 levels, under `/a`: 64^5 paths from
/// 7 trees (the hostile pass's bomb).
fn wide_bomb(c: &craft::Crafter) -> strata::TreeId {
    let mut t = c.tree(vec![file(c, "f", b"x")]);
    for _ in 0..5 {
        t = c.tree(
            (0..64)
                .map(|i| craft::dir(&format!("d{i:02}"), t))
                .collect(),
        );
    }
    c.tree(vec![craft::dir("a", t)])
}

fn claiming(n: u64) -> strata::Summary {
    strata::Summary {
        files_new: n,
        dirs: n,
        ..Default::default()
    }
}

/// Every reader of the bomb, and a restore of one file of it and a find of no name.
fn refused_with_any_summary(env: &Env, bomb: strata::SnapshotId, why: &[&str]) {
    refused_all(env, bomb, why, 30);
    let t = env.path("t").display().to_string();
    let one = "/a/d00/d00/d00/d00/d00/f";
    refused_in_bounds(
        env,
        &[
            &["restore", &bomb.to_hex(), "--target", &t, "--include", one],
            &["find", "nosuchname"],
            &["ls", &bomb.to_hex(), "/a/d01"],
        ],
        why,
        30,
    );
}

/// Counts past what any snapshot holds (10^15) are damage at once.
#[test]
fn a_bomb_whose_summary_records_absurd_counts_is_refused() {
    let env = &Env::local();
    env.init();
    let bomb = craft::snapshot_with(env, claiming(10u64.pow(15)), wide_bomb);
    refused_with_any_summary(env, bomb, &["more than any snapshot"]);
    // `check` names it too.
    let b = craft::run_bounded(env, &["check"], 1024, 30);
    let err = stderr(&b.out);
    assert!(!b.out.status.success() && !b.timed_out, "{err}");
    let all = String::from_utf8_lossy(&b.out.stdout) + err.as_str();
    assert!(all.contains("more than any snapshot holds"), "{all}");
}

/// Counts within that maximum (2^32) but past the bomb's 64^5: the walk ends once it
/// repeats the few entries it read more often than sharing honestly does.
#[test]
fn a_bomb_whose_summary_records_its_expansion_is_refused() {
    let env = &Env::local();
    env.init();
    let bomb = craft::snapshot_with(env, claiming(1 << 32), wide_bomb);
    refused_with_any_summary(env, bomb, &["sharing"]);
}

/// One bomb costs only its own snapshot (hostile pass 7): `find` lists what the other
/// lineages hold and names the bomb's snapshot; `restore --all-sets` restores the other
/// sets and writes nothing of the bomb's (refused before its first batch, no journal
/// left); `check` names the bomb even though its summary records what it expands to.
#[test]
fn a_bomb_costs_only_its_own_snapshot() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "kept").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let bad = (Some("bad"), "/bomb");
    let bomb = craft::snapshot_of(env, bad, claiming(1 << 32), wide_bomb);
    let says_bomb = |err: &str| err.contains(&bomb.short()) && err.contains("sharing");

    let b = craft::run_bounded(env, &["find", "notes.txt"], 1024, 30);
    let (out, err) = (String::from_utf8_lossy(&b.out.stdout), stderr(&b.out));
    assert_eq!(b.out.status.code(), Some(1), "{err}");
    assert!(out.contains("notes.txt"), "{out}");
    assert!(says_bomb(&err), "{err}");

    let t = env.path("t");
    let args = [
        "restore",
        "latest",
        "--all-sets",
        "--target",
        t.to_str().unwrap(),
    ];
    let b = craft::run_bounded(env, &args, 1024, 30);
    let err = stderr(&b.out);
    assert_eq!(b.out.status.code(), Some(1), "{err}");
    assert!(says_bomb(&err), "{err}");
    assert_eq!(
        fs::read(restored(&t, &src).join("notes.txt")).unwrap(),
        b"kept"
    );
    // Only the good set's path: no `a` of the bomb, no journal or staged file.
    let top: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let first = src.components().nth(1).unwrap().as_os_str().to_owned();
    assert_eq!(top, [first], "{top:?}");

    // `diff --json` into the bomb ends in an error, its output still one JSON object.
    let good = env.ok(&["snapshots", "--json"]);
    let good: serde_json::Value = serde_json::from_str(&good).unwrap();
    let good = good
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| (s["set"].is_null()).then(|| s["id"].as_str().unwrap().to_string()))
        .unwrap();
    let b = craft::run_bounded(env, &["--json", "diff", &good, &bomb.to_hex()], 1024, 30);
    assert_eq!(b.out.status.code(), Some(1), "{}", stderr(&b.out));
    let v: serde_json::Value = serde_json::from_slice(&b.out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("sharing"), "{v}");
    assert!(v["changes"].is_array(), "{v}");

    let b = craft::run_bounded(env, &["check"], 1024, 30);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&b.out.stdout),
        stderr(&b.out)
    );
    assert!(!b.out.status.success(), "{all}");
    assert!(says_bomb(&all), "{all}");
    assert!(all.contains("--tree-sharing"), "{all}");
}

/// A restore of a bomb alone writes nothing: refused before the target is made.
#[test]
fn a_refused_bomb_leaves_no_target() {
    let env = &Env::local();
    env.init();
    craft::snapshot_with(env, claiming(1 << 32), wide_bomb);
    let t = env.path("t");
    let args = ["restore", "latest", "--target", t.to_str().unwrap()];
    let b = craft::run_bounded(env, &args, 1024, 30);
    assert_eq!(b.out.status.code(), Some(1), "{}", stderr(&b.out));
    assert!(!t.exists(), "{:?}", fs::read_dir(&t).map(|d| d.count()));
}

/// Hostile pass 8: a bomb of symlinks (which no summary counts) under 28 levels of two
/// directories over the same subtree, its summary recording the 2^29 directories
/// honestly: 5·10^11 entries from 29 trees. `check` names it, every reader refuses it in
/// bounds, and a restore writes nothing.
#[test]
fn a_bomb_of_symlinks_is_refused_and_checked() {
    let env = &Env::local();
    env.init();
    let summary = strata::Summary {
        dirs: 1 << 29,
        ..Default::default()
    };
    let bomb = craft::snapshot_with(env, summary, |c| {
        let links = (0..2_000).map(|i| craft::symlink(&format!("l{i}"), "x"));
        let mut t = c.tree(links.collect());
        for _ in 0..28 {
            t = c.tree(vec![craft::dir("a", t), craft::dir("b", t)]);
        }
        t
    });
    let b = craft::run_bounded(env, &["check"], 1024, 60);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&b.out.stdout),
        stderr(&b.out)
    );
    assert_eq!(b.out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&bomb.short()) && all.contains("sharing"),
        "{all}"
    );
    refused_all(env, bomb, &["sharing"], 60);
    assert!(!env.path("t").exists(), "the restore made its target");
}

/// Hostile pass 8: `cat` and `dump` of a file naming one 128 KiB blob 20,000 times (a
/// file of zeros backs up so, honestly) hold one range at a time, not every repeat: 2.5
/// GiB out under 1 GiB of address space.
#[test]
fn a_chunk_repeated_is_read_in_bounded_memory() {
    let env = &Env::local();
    env.init();
    let chunk = noise(128 << 10, 5);
    let repeats = 20_000u64;
    craft::snapshot(env, |c| {
        let mut n = file(c, "big", &chunk);
        n.content = vec![n.content[0]; repeats as usize];
        n.size = repeats * chunk.len() as u64;
        c.tree(vec![n])
    });
    for args in [&["cat", "latest", "/big"][..], &["dump", "latest", "/"]] {
        let out = env.path("out");
        let to = std::process::Stdio::from(fs::File::create(&out).unwrap());
        let b = craft::run_bounded_to(env, args, (1024, 120), to);
        assert!(!b.timed_out, "{args:?}: {:?}", b.elapsed);
        assert!(b.out.status.success(), "{args:?}: {}", stderr(&b.out));
        let len = fs::metadata(&out).unwrap().len();
        assert!(len >= repeats * chunk.len() as u64, "{args:?}: {len} bytes");
    }
}

/// Honest sharing, 200 copies of a directory of 1000 distinct files (200,200 paths from
/// 1,200 entries), restores and lists whole.
#[test]
fn a_snapshot_sharing_a_directory_200_times_reads_whole() {
    let env = &Env::local();
    env.init();
    let summary = strata::Summary {
        files_new: 200_000,
        dirs: 200,
        ..Default::default()
    };
    craft::snapshot_with(env, summary, |c| {
        let files = (0..1000).map(|i| {
            let mut n = strata::Node::new(format!("f{i}").into_bytes(), strata::NodeKind::File);
            n.mode = 0o644;
            n
        });
        let t = c.tree(files.collect());
        c.tree((0..200).map(|i| craft::dir(&format!("d{i}"), t)).collect())
    });
    let b = craft::run_bounded(env, &["ls", "latest"], 1024, 60);
    assert!(b.out.status.success(), "{}", stderr(&b.out));
    let listed = String::from_utf8_lossy(&b.out.stdout).lines().count();
    assert!(listed >= 200_200, "{listed} lines");
    let t = env.path("t").display().to_string();
    let args = ["restore", "latest", "--target", &t, "--dry-run"];
    let b = craft::run_bounded(env, &args, 1024, 60);
    assert!(b.out.status.success(), "{}", stderr(&b.out));
}

/// Hostile pass: a Unix socket in a snapshot is named as not restored (it was counted as
/// restored, and `--verify` passed, with nothing there).
#[test]
fn a_socket_is_named_as_not_restored() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let target = env.path("t");
    let out = env.run(&[
        "restore",
        "latest",
        "--verify",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sock: a socket, not restored"),
        "{}",
        stderr(&out)
    );
    assert!(restored(&target, &src).join("f").is_file());
    assert!(fs::symlink_metadata(restored(&target, &src).join("sock")).is_err());
}

// Issue 31, item 7 (hostile pass 4): within every bound (the summary, the sharing), 80 KB of
// trees name two million entries. A restore holds one batch of them at a time, not all:
// about 1 KB per entry made this one need two gigabytes.
/// 8192 files in each of 256 directories from a few trees, within every bound; with
/// `long`, each directory's name is 250 bytes and the files lie one more such level down
/// (paths of ~520 bytes). The snapshot's id, and how many files it holds.
fn two_million_entries(env: &Env, long: bool) -> (strata::SnapshotId, u64) {
    let (files, dirs) = (8192u64, 256u64);
    let summary = strata::Summary {
        files_new: files * dirs,
        dirs: if long { 2 * dirs + 1 } else { dirs + 1 },
        ..Default::default()
    };
    let pad = |s: String| match long {
        true => format!("{s}{}", "x".repeat(250 - s.len())),
        false => s,
    };
    let id = craft::snapshot_with(env, summary, |c| {
        let empty = |i: u64| {
            let mut n = strata::Node::new(
                format!("an-empty-file-{i:05}").into_bytes(),
                strata::NodeKind::File,
            );
            n.mode = 0o644;
            n
        };
        let mut leaf = c.tree((0..files).map(empty).collect());
        if long {
            leaf = c.tree(vec![craft::dir(&pad("e".into()), leaf)]);
        }
        c.tree(
            (0..dirs)
                .map(|i| craft::dir(&pad(format!("d{i:03}")), leaf))
                .collect(),
        )
    });
    (id, files * dirs)
}

#[test]
fn a_restore_of_two_million_entries_holds_a_batch_not_all() {
    let env = &Env::local();
    env.init();
    let (id, files) = two_million_entries(env, false);
    let t = env.path("t").display().to_string();
    let b = craft::run_bounded(
        env,
        &["restore", &id.to_hex(), "--target", &t, "--dry-run"],
        1024,
        120,
    );
    let err = stderr(&b.out);
    assert!(
        !b.timed_out && b.out.status.success(),
        "{:?}: {err}",
        b.elapsed
    );
    let out = String::from_utf8_lossy(&b.out.stdout);
    assert!(out.contains(&files.to_string()), "{out}");
}

// Hostile pass 5 (E3): `diff` collected every change before printing one; two crafted
// snapshots of two million deep paths took 7.9 GB. Each change is printed as met now: the
// diff's memory is that of the trees on the way down. (Collected, these 2M changes of
// ~520-byte paths need over 1.2 GB: the limit below failed the old code.)
#[test]
fn a_diff_of_two_million_changes_prints_them_as_it_goes() {
    let env = &Env::local();
    env.init();
    let empty = craft::snapshot(env, |c| c.tree(vec![]));
    let (id, files) = two_million_entries(env, true);
    for json in [false, true] {
        let listing = env.path(if json { "diff.json" } else { "diff.txt" });
        let mut args = vec!["diff", "--quiet"];
        if json {
            args[1] = "--json";
        }
        let (a, b) = (empty.to_hex(), id.to_hex());
        args.extend([a.as_str(), b.as_str()]);
        let to = std::fs::File::create(&listing).unwrap();
        let run = craft::run_bounded_to(env, &args, (1024, 180), to.into());
        let err = stderr(&run.out);
        assert!(
            !run.timed_out && run.out.status.success(),
            "{:?}: {err}",
            run.elapsed
        );
        let text = fs::read_to_string(&listing).unwrap();
        if json {
            // Parsed in pieces: as one value, 2M changes would weigh gigabytes here.
            let (changes, totals) = text.rsplit_once("\n  ]").unwrap();
            let totals: serde_json::Value =
                serde_json::from_str(&format!("{{{}", &totals[1..])).unwrap();
            assert_eq!(totals["added"], files + 512, "{totals}");
            let mut lines = changes.lines();
            assert_eq!(lines.next(), Some("{"));
            assert_eq!(lines.next(), Some("  \"changes\": ["));
            let mut n = 0u64;
            for line in lines {
                let c: serde_json::Value =
                    serde_json::from_str(line.trim().trim_end_matches(',')).unwrap();
                assert_eq!(c["change"], "added", "{c}");
                n += 1;
            }
            assert_eq!(n, files + 512);
        } else {
            assert_eq!(text.lines().count() as u64, files + 512);
            assert!(
                text.lines().all(|l| l.starts_with("+ /d")),
                "{}",
                &text[..200]
            );
        }
    }
}
