mod common;

use std::fs;
use std::path::PathBuf;

use common::*;

fn repo_with_data(env: &Env) -> PathBuf {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("db")).unwrap();
    fs::write(src.join("db/pages.bin"), noise(3 << 20, 21)).unwrap();
    fs::write(src.join("notes.txt"), "small file").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    fs::write(src.join("later.txt"), "added later").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    src
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// The data pack holding the most bytes (the one with the big file's chunks).
fn biggest_data_pack(env: &Env) -> PathBuf {
    env.repo_files("data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn check_and_read_data_are_clean_on_a_good_repository() {
    let env = Env::new();
    repo_with_data(&env);
    let out = env.ok(&["check"]);
    assert!(out.contains("no errors found"), "{out}");
    let out = env.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors found"), "{out}");
    let v = env.json(&["check", "--read-data"]);
    assert_eq!(v["packs_read"], v["packs"]);
    assert_eq!(v["snapshots"], 2);
    assert!(v["problems"].as_array().unwrap().is_empty());
    // The subsets together read every pack exactly once.
    let total: u64 = (1..=3)
        .map(|n| {
            env.json(&["check", "--read-data-subset", &format!("{n}/3")])["packs_read"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, v["packs"].as_u64().unwrap());
    assert_eq!(
        env.json(&["check", "--read-data-subset", "100%"])["packs_read"],
        v["packs"]
    );
}

#[test]
fn a_flipped_byte_in_a_data_pack_is_found_and_named_with_the_file_it_hits() {
    let env = Env::new();
    let src = repo_with_data(&env);
    let pack = biggest_data_pack(&env);
    let pack_id = pack.file_name().unwrap().to_string_lossy().into_owned();
    flip_byte(&pack, 1000);
    // Structure alone cannot see it: the pack is there with the right size.
    assert_eq!(code(&env.run(&["check"])), 0);
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&pack_id), "{text}");
    let file = format!("{}/db/pages.bin", src.display());
    assert!(
        text.contains(&file),
        "the report must name the file hit: {text}"
    );
    // Both snapshots hold that file, and both are named.
    assert_eq!(text.matches(&file).count(), 2, "{text}");
    assert!(!text.contains("notes.txt"), "{text}");
    // A restore of the file fails loudly, naming the blob's pack and the file.
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        env.path("r").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&pack_id) && stderr(&out).contains("pages.bin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_truncated_pack_is_found_by_the_structure_check() {
    let env = Env::new();
    repo_with_data(&env);
    let pack = biggest_data_pack(&env);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&pack.file_name().unwrap().to_string_lossy().into_owned()),
        "{text}"
    );
    assert!(text.contains("pages.bin"), "{text}");
}

#[test]
fn a_damaged_tree_pack_names_the_directories_it_hits() {
    let env = Env::new();
    repo_with_data(&env);
    // Damage every tree pack: each snapshot's root tree is then unreadable.
    for p in env.repo_files("tree") {
        flip_byte(&p, 50);
    }
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tree "), "{text}");
    assert!(text.contains("hits snapshot"), "{text}");
}

#[test]
fn a_tampered_snapshot_or_index_file_is_named() {
    let env = Env::new();
    repo_with_data(&env);
    let snap = env.repo_files("snapshots").pop().unwrap();
    let name = snap.file_name().unwrap().to_string_lossy().into_owned();
    let len = fs::metadata(&snap).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    // A fresh cache has to read it.
    fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));

    let env = Env::new();
    repo_with_data(&env);
    let index = env.repo_files("index").pop().unwrap();
    flip_byte(&index, 40);
    fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&index.file_name().unwrap().to_string_lossy().into_owned()),
        "{}",
        stderr(&out)
    );
}
