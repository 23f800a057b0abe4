//! See main.rs.

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
