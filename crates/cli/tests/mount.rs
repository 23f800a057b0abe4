//! `mount` on the real kernel FUSE (`/dev/fuse`): two snapshots read back through the mount
//! match their sources (`tar --compare` and metadata), the layout's links lead to them, and
//! the mount goes on SIGINT; a missing or non-empty mountpoint is a clear error.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// `strata mount MP` with `args` in the background, once the layout is there.
fn mount(env: &Env, mp: &Path, args: &[&str]) -> std::process::Child {
    fs::create_dir_all(mp).unwrap();
    let child = env
        .std_cmd()
        .args(args)
        .args(["mount", mp.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !mp.join("snapshots").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "not mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// SIGINT, as Ctrl-C: the mount must go and the command end well.
fn unmount(mut child: std::process::Child) -> std::process::ExitStatus {
    common::signal(&child, nix::sys::signal::Signal::SIGINT);
    child.wait().unwrap()
}

fn no_fuse() -> bool {
    let missing = !Path::new("/dev/fuse").exists();
    if missing {
        not_run("no /dev/fuse");
    }
    missing
}

fn mounted_snapshots_read_back_as_their_sources(env: &Env) {
    if no_fuse() {
        return;
    }
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    let old = add_file_from_1960(&src);
    let first = env.backup(&[src.to_str().unwrap(), "--host", "h1"]);
    let then = env.path("then");
    copy_tree(&src, &then);
    fs::write(src.join("docs/readme.txt"), "changed").unwrap();
    fs::remove_file(src.join("empty-file")).unwrap();
    let second = env.backup(&[src.to_str().unwrap(), "--host", "h1"]);

    let mp = env.path("mnt");
    let child = mount(env, &mp, &[]);
    let inside = |id: &serde_json::Value| {
        restored(
            &mp.join("snapshots")
                .join(id["snapshot_id"].as_str().unwrap()),
            &src,
        )
    };
    let mut failures = Vec::new();
    for (id, source) in [(&first, &then), (&second, &src)] {
        let diffs: Vec<String> = compare_trees(source, &inside(id))
            .into_iter()
            // Holes are not a property a FUSE file can show.
            .filter(|d| !d.contains("sparse file restored"))
            .collect();
        failures.extend(diffs);
    }
    let latest = fs::read_link(mp.join("hosts/h1/latest")).unwrap();
    let via_link = mp.join("hosts/h1").join(&latest);
    let latest_readme = restored(&via_link, &src).join("docs/readme.txt");
    let read = fs::read_to_string(&latest_readme);
    let old_time = mtime_of(&restored(&via_link, &src).join("from-1960.txt"));

    let status = unmount(child);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(read.unwrap(), "changed");
    assert_eq!(
        old_time,
        mtime_of(&old),
        "a time before 1970 through the mount"
    );
    assert!(status.success(), "{status}");
    assert_eq!(fs::read_dir(&mp).unwrap().count(), 0, "unmounted");

    // Mountpoints that cannot be used say why.
    let out = env.run(&["mount", env.path("missing").to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    let out = env.run(&["mount", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

/// `at/<time>/<set>` links each set to its newest snapshot at or before that time, for the
/// instants listed and for any other time; a large file read through it (fetched ahead,
/// several ranges in flight) is the file backed up.
fn the_at_directory_shows_every_set_as_of_a_time(env: &Env) {
    if no_fuse() {
        return;
    }
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let c = &two_sets_config(env, &app, &metrics, "hourly = 24");
    env.init();
    let big = noise(40 << 20, 3);
    fs::write(app.join("big"), &big).unwrap();
    fs::write(metrics.join("m"), "metric 10").unwrap();
    let mut ids = std::collections::HashMap::new();
    for (set, time) in [
        ("critical", "2026-03-01T10:00:00Z"),
        ("metrics", "2026-03-01T10:00:00Z"),
        ("critical", "2026-03-01T11:00:00Z"),
        ("metrics", "2026-03-01T11:30:00Z"),
    ] {
        fs::write(app.join("note"), format!("{set} {time}")).unwrap();
        let v = env.json(&["--config", c, "backup", set, "--time", time]);
        let id = v["snapshot_id"].as_str().unwrap().to_string();
        ids.insert((set, &time[11..16]), format!("../../snapshots/{id}"));
    }
    let mp = env.path("mnt");
    let child = mount(env, &mp, &["--config", c]);
    let link =
        |p: &str| fs::read_link(mp.join("at").join(p)).map(|l| l.to_str().unwrap().to_string());
    let listed: Vec<String> = fs::read_dir(mp.join("at"))
        .map(|d| {
            let mut n: Vec<String> = d
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        })
        .unwrap_or_default();
    let checks = [
        // Listed instants.
        (
            link("2026-03-01T10:00:00Z/critical"),
            &ids[&("critical", "10:00")],
        ),
        (
            link("2026-03-01T11:00:00Z/metrics"),
            &ids[&("metrics", "10:00")],
        ),
        // Any time, in any form --at takes.
        (
            link("2026-03-01T11:45:00+01:00/critical"),
            &ids[&("critical", "10:00")],
        ),
        (
            link("2026-03-01T11:45:00Z/critical"),
            &ids[&("critical", "11:00")],
        ),
        (
            link("2026-03-01T11:45:00Z/metrics"),
            &ids[&("metrics", "11:30")],
        ),
    ];
    let before_first = fs::metadata(mp.join("at/2026-03-01T09:00:00Z")).is_err();
    let not_a_time = fs::metadata(mp.join("at/yesterday-ish")).is_err();
    let through = mp.join("at/2026-03-01T11:00:00Z/critical");
    let read_big = fs::read(restored(&through, &app).join("big"));
    let status = unmount(child);
    assert_eq!(
        listed,
        [
            "2026-03-01T10:00:00Z",
            "2026-03-01T11:00:00Z",
            "2026-03-01T11:30:00Z"
        ]
    );
    for (got, want) in checks {
        assert_eq!(&got.unwrap(), want);
    }
    assert!(
        before_first,
        "an instant before every snapshot has no entry"
    );
    assert!(not_a_time, "a name that is no time has no entry");
    assert!(
        read_big.unwrap() == big,
        "the large file differs through the mount"
    );
    assert!(status.success(), "{status}");
}

conformance!(
    mounted_snapshots_read_back_as_their_sources,
    the_at_directory_shows_every_set_as_of_a_time
);

/// Issue 25, item 20: what an unlucky operator meets with a mount. A file whose pack is lost
/// reads as EIO (not "no such file"); a backup made while mounted appears; SIGTERM with a
/// file open leaves no dead mount; `fusermount3 -u` from outside ends the process.
/// Hostile pass 7: root's mount followed a mountpoint symlink another user planted, then on
/// SIGTERM detached whatever that link pointed at by then. Refused now; one of this
/// user's own is followed, and the real directory mounted and unmounted.
#[test]
fn a_mountpoint_through_another_users_symlink_is_refused() {
    if no_fuse() {
        return;
    }
    if !is_root() {
        return not_run("another user's symlink needs root to plant");
    }
    let env = &Env::local();
    env.init();
    let real = env.path("real");
    fs::create_dir(&real).unwrap();
    let planted = env.path("planted");
    plant_symlink(&real, &planted, NOBODY);
    let out = env.run(&["mount", planted.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("symlink owned by uid"),
        "{}",
        stderr(&out)
    );
    let mine = env.path("mine");
    std::os::unix::fs::symlink(&real, &mine).unwrap();
    let child = mount(env, &mine, &[]);
    assert!(real.join("snapshots").exists());
    // Re-pointed meanwhile: the unmount still takes the real directory's mount only.
    fs::remove_file(&mine).unwrap();
    std::os::unix::fs::symlink(env.path("elsewhere"), &mine).unwrap();
    assert!(unmount(child).success());
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0, "unmounted");
}

/// Hostile pass 10: below a directory another user owns, that user swapped the mountpoint
/// for a link between root's checks and the kernel's mount by path (1 run in 40): root's
/// mount landed, dead, on a root directory of their choice. Refused before anything.
#[test]
fn a_mountpoint_below_another_users_directory_is_refused_to_root() {
    if !is_root() {
        return not_run("another user's directory needs root to make");
    }
    let env = &Env::local();
    env.init();
    let theirs = env.path("theirs");
    fs::create_dir_all(theirs.join("mp")).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), None).unwrap();
    let out = env.run(&["mount", theirs.join("mp").to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another user could change"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(theirs.join("mp")).unwrap().count(), 0);
}

/// Hostile pass 8: a parent of the mountpoint swapped for a link to another directory
/// while the repository opens (here by the password command, where another user would
/// race it) does not move root's mount: the kernel mounts the directory resolved and
/// held, and the unmount takes that mount.
#[test]
fn a_parent_swapped_while_the_repository_opens_does_not_move_the_mount() {
    if no_fuse() {
        return;
    }
    if !is_root() {
        return not_run("mounting through the held directory is root's way");
    }
    let env = &Env::local();
    env.init();
    let (parent, moved, victim) = (env.path("d"), env.path("d.old"), env.path("rootonly"));
    fs::create_dir_all(parent.join("mp")).unwrap();
    fs::create_dir_all(victim.join("mp")).unwrap();
    let swap = format!(
        "mv {0} {1} && ln -s {2} {0} && echo '{PASSWORD}'",
        parent.display(),
        moved.display(),
        victim.display()
    );
    let child = env
        .std_cmd()
        .env_remove("STRATA_PASSWORD")
        .args(["--password-command", &swap, "mount"])
        .arg(parent.join("mp"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !moved.join("mp/snapshots").exists() && !victim.join("mp/snapshots").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "not mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (wrong, right) = (victim.join("mp/snapshots"), moved.join("mp/snapshots"));
    let (wrong, right) = (wrong.exists(), right.exists());
    // Renamed once more while mounted, a link in its place: the unmount still finds it.
    let again = env.path("d.again");
    fs::rename(&moved, &again).unwrap();
    std::os::unix::fs::symlink(&victim, &moved).unwrap();
    // Unmounted before any assertion, so that a failure leaves no mount behind.
    let status = unmount(child);
    assert!(!wrong, "mounted over the link's target");
    assert!(right && status.success());
    assert_eq!(
        fs::read_dir(again.join("mp")).unwrap().count(),
        0,
        "unmounted"
    );
}

/// Hostile pass 6: a mount kept every entry it had listed until unmounted (three crafted
/// snapshots walked: 4 GB). A snapshot whose entries the kernel has all forgotten (here
/// after `drop_caches`) is dropped: walking three snapshots one after another costs about
/// what one does.
#[test]
fn a_mount_keeps_what_the_kernel_holds_not_every_walk() {
    if no_fuse() {
        return;
    }
    if !is_root() {
        return not_run("dropping the kernel's caches needs root");
    }
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for d in 0..50 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            fs::File::create(dir.join(format!("an-empty-file-{f:04}"))).unwrap();
        }
    }
    let ids: Vec<String> = (0..3)
        .map(|_| {
            env.backup(&[src.to_str().unwrap()])["snapshot_id"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    let mp = env.path("mnt");
    let child = mount(env, &mp, &[]);
    let rss = || -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let forget = || {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    };
    let before = rss();
    let mut after = Vec::new();
    for id in &ids {
        let mut n = 0;
        for d in fs::read_dir(restored(&mp.join("snapshots").join(id), &src)).unwrap() {
            for f in fs::read_dir(d.unwrap().path()).unwrap() {
                fs::symlink_metadata(f.unwrap().path()).unwrap();
                n += 1;
            }
        }
        assert_eq!(n, 50_000);
        forget();
        after.push(rss());
    }
    // Hostile pass 7: any number of `at/` names resolve (any instant), each was kept.
    let mut at_rounds = Vec::new();
    for round in 0..3u64 {
        for n in 0..30_000u64 {
            let name = format!("2099-01-01T00:00:00.{:09}Z", round * 100_000 + n);
            assert!(mp.join("at").join(name).is_dir());
        }
        forget();
        at_rounds.push(rss());
    }
    let status = unmount(child);
    assert!(status.success());
    let one = after[0].saturating_sub(before);
    let three = after[2].saturating_sub(before);
    assert!(
        one > 10 << 20,
        "one walk cost {one} bytes: too little to tell"
    );
    assert!(
        three < one * 2,
        "one walk: +{one} bytes, three: +{three} ({after:?} from {before})"
    );
    let first = at_rounds[0].saturating_sub(after[2]);
    let last = at_rounds[2].saturating_sub(after[2]);
    assert!(
        last < first.max(4 << 20) * 2,
        "at/ names: +{first} bytes after one round, +{last} after three ({at_rounds:?})"
    );
}

#[test]
fn a_mount_survives_what_operators_do_to_it() {
    if no_fuse() {
        panic!("this test needs /dev/fuse (run it under tools/test)");
    }
    let env = Env::local();
    let (app, metrics) = (env.path("app"), env.path("metrics"));
    let c = &two_sets_config(&env, &app, &metrics, "last = 5");
    env.init();
    fs::write(app.join("lost"), noise(300_000, 5)).unwrap();
    fs::write(metrics.join("kept"), "kept").unwrap();
    env.ok(&["--config", c, "backup", "critical"]);
    env.ok(&["--config", c, "backup", "metrics"]);
    let pack = pack_of_file_in_set(&env, "critical", &app.join("lost"));
    fs::remove_file(
        Path::new(&env.repo)
            .join("data")
            .join(&pack[..2])
            .join(&pack),
    )
    .unwrap();

    let mp = env.path("mnt");
    let child = mount(&env, &mp, &["--config", c]);
    let in_set = |set: &str, file: &Path| restored(&mp.join("sets").join(set).join("latest"), file);
    let lost = fs::read(in_set("critical", &app).join("lost"));
    // A backup made while mounted: listed within the refresh interval.
    fs::write(metrics.join("new"), "new").unwrap();
    let v = env.json(&["--config", c, "backup", "metrics"]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let appeared = loop {
        let listed = fs::read_dir(mp.join("snapshots"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_str() == Some(id.as_str()));
        if listed || started.elapsed() > Duration::from_secs(30) {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let latest_new = fs::read_to_string(in_set("metrics", &metrics).join("new"));
    // SIGTERM while a file is open there.
    let open = fs::File::open(in_set("metrics", &metrics).join("kept")).unwrap();
    let status = {
        common::signal(&child, nix::sys::signal::Signal::SIGTERM);
        let mut child = child;
        child.wait().unwrap()
    };
    let after = fs::read_dir(&mp).map(|d| d.count());
    drop(open);
    let err = lost.expect_err("a file whose pack is lost read whole");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(appeared, "a snapshot made while mounted never appeared");
    assert_eq!(
        latest_new.unwrap(),
        "new",
        "sets/metrics/latest did not move on"
    );
    assert!(status.success(), "{status}");
    assert_eq!(after.unwrap(), 0, "a dead mount was left behind");

    // Unmounted from outside: the process ends by itself.
    let mut child = mount(&env, &mp, &["--config", c]);
    let bin = if which("fusermount3") {
        "fusermount3"
    } else {
        "fusermount"
    };
    let out = std::process::Command::new(bin)
        .args(["-u"])
        .arg(&mp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "strata mount still running after fusermount -u"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");

    // Killed with SIGKILL: the dead mount stays (nothing can help that), and the next
    // mount says how to remove it (hostile pass).
    let mut child = mount(&env, &mp, &["--config", c]);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env.run(&["--config", c, "mount", mp.to_str().unwrap()]);
    let cleared = std::process::Command::new(bin)
        .args(["-u", "-z"])
        .arg(&mp)
        .status();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("-u"), "{}", stderr(&out));
    assert!(cleared.unwrap().success());
}

fn which(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
