//! The cache is disposable: every command works after it is deleted.
#[macro_use]
mod common;

use std::fs;

use common::*;

fn every_command_works_after_the_cache_is_deleted(env: &Env) {
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    let s = src.to_str().unwrap();
    env.backup(&[s]);
    assert!(env.cache.exists());

    fs::remove_dir_all(&env.cache).unwrap();
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);

    fs::remove_dir_all(&env.cache).unwrap();
    assert!(env.ok(&["ls", "latest"]).contains("readme.txt"));

    fs::remove_dir_all(&env.cache).unwrap();
    assert_eq!(
        env.ok(&["cat", "latest", &format!("{s}/docs/nested/data.json")]),
        r#"{"k": [1, 2, 3]}"#
    );

    fs::remove_dir_all(&env.cache).unwrap();
    let target = env.path("r");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let diffs = compare_trees(&src, &restored(&target, &src));
    assert!(diffs.is_empty(), "{diffs:?}");

    fs::remove_dir_all(&env.cache).unwrap();
    env.assert_read_data_clean();

    // A backup on a fresh cache skips unchanged files by the parent snapshot's nodes and
    // stores no data again.
    fs::remove_dir_all(&env.cache).unwrap();
    let v = env.backup(&[s]);
    assert!(v["files_unchanged"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["bytes_read"], 0, "{v}");
    assert!(v["bytes_added"].as_u64().unwrap() < 4096, "{v}");
    // ...and the next one skips them by stat again, from the rebuilt cache.
    let v = env.backup(&[s]);
    assert_eq!(v["bytes_read"], 0);
    assert_eq!(v["files_new"], 0);

    fs::remove_dir_all(&env.cache).unwrap();
    assert_eq!(env.ok(&["key", "list"]).lines().count(), 1);
}

fn a_corrupt_cache_file_is_replaced(env: &Env) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    // Scribble over every cache database.
    for e in fs::read_dir(&env.cache).unwrap() {
        let dir = e.unwrap().path();
        for f in fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            fs::write(
                &f,
                b"this is not a sqlite database at all, not even close........",
            )
            .unwrap();
        }
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

conformance!(
    every_command_works_after_the_cache_is_deleted,
    a_corrupt_cache_file_is_replaced
);

/// Hostile pass 8: a `cp -a` copy of a repository has the same id, and with one cache for
/// both each took the other's new snapshots for ones rolled back (check and prune failed).
#[test]
fn a_copy_of_the_repository_has_a_cache_of_its_own() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), "x").unwrap();
    let s = src.to_str().unwrap();
    env.backup(&[s]);
    let copy = env.path("copy");
    let cp = std::process::Command::new("cp")
        .args(["-a", &env.repo, copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    fs::write(src.join("y"), "y").unwrap();
    let copy = copy.to_str().unwrap();
    env.ok(&["-r", copy, "backup", s]);
    env.backup(&[s]);
    for repo in [env.repo.as_str(), copy] {
        for cmd in [&["prune"][..], &["check"]] {
            let out = env.run(&[&["-r", repo][..], cmd].concat());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{repo} {cmd:?}: {err}");
            assert!(!err.contains("vanished"), "{repo} {cmd:?}: {err}");
        }
        assert_eq!(
            env.json(&["-r", repo, "snapshots"])
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
    // One cache per location, whatever the cwd the path is given from.
    let rel = (env.std_cmd())
        .current_dir(env.dir.path())
        .args(["-r", "copy", "snapshots"])
        .output()
        .unwrap();
    assert!(rel.status.success());
    let caches = fs::read_dir(&env.cache).unwrap().flatten();
    let named = caches
        .filter(|e| e.path().join("cache.sqlite").exists())
        .count();
    assert_eq!(named, 2);
}
