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
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    child.wait().unwrap()
}

fn no_fuse() -> bool {
    let missing = !Path::new("/dev/fuse").exists();
    if missing {
        eprintln!("NOT RUN: no /dev/fuse");
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

    let status = unmount(child);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(read.unwrap(), "changed");
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
