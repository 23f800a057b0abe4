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
