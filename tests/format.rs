//! Format versions: a repository of format version 1 (CBOR maps for every blob entry)
//! stays readable and is still written in its own encoding; new repositories get the
//! compact encoding of version 2 (format-spec §6.1), which a tiny-file tree shows.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;

use common::*;

/// 2,000 files of 100 random bytes in 4 directories: a mail spool in miniature.
fn tiny_files(root: &Path) {
    for d in 0..4 {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..500u64 {
            fs::write(dir.join(format!("f{f}")), noise(100, d * 1000 + f)).unwrap();
        }
    }
}

fn bytes_under(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A repository of format `version`, made through the library (`init` makes only the
/// newest).
fn init_version(env: &Env, version: u32) {
    let mut config = strata::Config::new(strata::ChunkerParams::default(), 3);
    config.version = version;
    let backend = strata::backend::open(&env.repo).unwrap();
    strata::Repository::init(
        backend,
        PASSWORD.as_bytes(),
        config,
        &strata::KdfCost::INSECURE_FOR_TESTS,
    )
    .unwrap();
}

#[test]
fn a_version_1_repository_stays_readable_and_keeps_its_encoding() {
    let old = &Env::local();
    init_version(old, 1);
    let new = &Env::local();
    assert!(new.cmd().arg("init").output().unwrap().status.success());
    let src = old.path("src");
    tiny_files(&src);
    for env in [old, new] {
        let out = env.cmd().args(["backup"]).arg(&src).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        fs::write(src.join("d0/f0"), b"changed").unwrap();
        let out = env.cmd().args(["backup"]).arg(&src).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.cmd().args(["check", "--read-data"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let target = env.path("restored");
        let out = env
            .cmd()
            .args(["restore", "latest", "--verify", "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let diffs = compare_trees(&src, &restored(&target, &src));
        assert!(diffs.is_empty(), "{diffs:?}");
        // Prune rewrites the index and repacks; an index rebuilt from pack headers alone
        // must agree with it.
        let out = env
            .cmd()
            .args(["forget", "--keep-last", "1", "--prune", "--instant-delete"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        fs::remove_dir_all(env.path("repo/index")).unwrap();
        fs::create_dir_all(env.path("repo/index")).unwrap();
        let out = env.cmd().args(["repair", "index"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.cmd().args(["check", "--read-data"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        fs::write(src.join("d0/f0"), noise(100, 0)).unwrap();
    }
    assert_eq!(
        open_repo(old).config().version,
        1,
        "written in its own encoding"
    );
    assert_eq!(open_repo(new).config().version, 2);
    // Per tiny file, version 1 stored two CBOR maps of ~86 bytes; version 2 about 36
    // bytes each, once compressed.
    let (old_index, new_index) = (
        bytes_under(&old.path("repo/index")),
        bytes_under(&new.path("repo/index")),
    );
    let (old_all, new_all) = (
        bytes_under(&old.path("repo")),
        bytes_under(&new.path("repo")),
    );
    eprintln!("index: {old_index} -> {new_index} bytes; repository: {old_all} -> {new_all}");
    assert!(new_index * 2 < old_index, "{old_index} -> {new_index}");
    assert!(new_all * 10 < old_all * 8, "{old_all} -> {new_all}");
}

#[test]
fn a_build_refuses_a_format_version_it_does_not_know() {
    let env = &Env::local();
    init_version(env, 3);
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("version 3"), "{}", stderr(&out));
}
