//! `mount` on the real kernel FUSE (`/dev/fuse`): two snapshots read back through the mount
//! match their sources (`tar --compare` and metadata), the layout's links lead to them, and
//! the mount goes on SIGINT; a missing or non-empty mountpoint is a clear error.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn mounted_snapshots_read_back_as_their_sources(env: &Env) {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("NOT RUN: no /dev/fuse");
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
    fs::create_dir_all(&mp).unwrap();
    let mut child = env
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

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
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

conformance!(mounted_snapshots_read_back_as_their_sources);
