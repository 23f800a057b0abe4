//! Format versions: repositories of format version 1 (CBOR maps for every blob entry) and
//! 2 (compact entries, format-spec §6.1) stay readable and are still written in their own
//! encoding; version 3 keeps small files in their tree node (§8); version 4's applications
//! keep root records (§15); new repositories get version 5, whose prunes write mark records
//! (§7.3). A tiny-file tree shows each step,
//! and fixture repositories written by earlier releases are read byte-exact.

#[macro_use]
mod common;
#[path = "fixtures/describe.rs"]
mod describe;

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
    let backend = open_backend(&env.repo);
    strata::Repository::init(
        backend,
        PASSWORD.as_bytes(),
        config,
        &strata::KdfCost::INSECURE_FOR_TESTS,
    )
    .unwrap();
}

/// Each format version's repository after the same two backups of tiny files, checked,
/// restored, pruned and rebuilt from pack headers; returns (index bytes, repository
/// bytes, blobs the first backup added).
fn round_trip(env: &Env, src: &Path) -> (u64, u64, u64) {
    let first = env.backup(&[src.to_str().unwrap()]);
    fs::write(src.join("d0/f0"), b"changed").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    env.assert_read_data_clean();
    let target = env.path("restored");
    let out = env
        .cmd()
        .args(["restore", "latest", "--verify", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let diffs = compare_trees(src, &restored(&target, src));
    assert!(diffs.is_empty(), "{diffs:?}");
    let sizes = (
        bytes_under(&env.path("repo/index")),
        bytes_under(&env.path("repo")),
        first["blobs_added"].as_u64().unwrap(),
    );
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
    env.assert_read_data_clean();
    fs::write(src.join("d0/f0"), noise(100, 0)).unwrap();
    sizes
}

#[test]
fn older_repositories_stay_readable_and_keep_their_encoding() {
    let (v1, v2, v3) = (&Env::local(), &Env::local(), &Env::local());
    init_version(v1, 1);
    init_version(v2, 2);
    init_version(v3, 3);
    let src = v1.path("src");
    tiny_files(&src);
    let (i1, r1, b1) = round_trip(v1, &src);
    let (i2, r2, b2) = round_trip(v2, &src);
    let (i3, r3, b3) = round_trip(v3, &src);
    for (env, version) in [(v1, 1), (v2, 2), (v3, 3)] {
        assert_eq!(
            open_repo(env).config().version,
            version,
            "written in its own encoding"
        );
    }
    eprintln!("index: {i1} -> {i2} -> {i3} bytes; repository: {r1} -> {r2} -> {r3}");
    // Per tiny file, version 1 stored two CBOR maps of ~86 bytes; version 2 about 36
    // bytes each, once compressed.
    assert!(i2 * 2 < i1, "{i1} -> {i2}");
    assert!(r2 * 10 < r1 * 8, "{r1} -> {r2}");
    // Versions 1 and 2 store a blob per file; version 3 keeps each file in its tree
    // node: a tree blob per directory and the root's ancestors, no blob entries to index.
    assert!(b1 >= 2000 && b2 >= 2000, "{b1} {b2}");
    assert!(b3 < 20, "{b3} blobs for 2,000 tiny files");
    assert!(i3 * 20 < i2, "{i2} -> {i3}");
    assert!(r3 * 10 < r2 * 7, "{r2} -> {r3}");
}

/// Files at the inline limit and around it, hard-linked, in every reader: restore,
/// cat, dump, diff and the unchanged backup that reuses the parent's bytes.
#[test]
fn small_files_live_in_their_tree_node_and_every_reader_finds_them() {
    let env = &Env::local();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let limit = strata::INLINE_LIMIT;
    let sizes = [0, 1, limit - 1, limit, limit + 1, 5000];
    for n in sizes {
        fs::write(src.join(format!("f{n}")), noise(n, n as u64)).unwrap();
    }
    fs::hard_link(src.join("f1"), src.join("f1-link")).unwrap();
    let first = env.backup(&[src.to_str().unwrap()]);
    // Blobs only for the two files above the limit, plus trees.
    let blobs = first["blobs_added"].as_u64().unwrap();
    let data = first["data_added"].as_u64().unwrap();
    assert_eq!(data, limit as u64 + 1 + 5000, "{first}");
    assert!(blobs <= 2 + 6, "{blobs}");
    let restored_at = env.restore_latest_verified("out");
    assert!(compare_trees(&src, &restored(&restored_at, &src)).is_empty());
    for n in sizes {
        let name = src.join(format!("f{n}"));
        let out = env
            .cmd()
            .args(["cat", "latest"])
            .arg(&name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out.stdout == noise(n, n as u64), "cat of {n} bytes");
    }
    let tarball = env.path("all.tar");
    let out = env
        .cmd()
        .args(["dump", "latest"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(&tarball, &out.stdout).unwrap();
    let untar = env.path("untar");
    fs::create_dir_all(&untar).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&untar)
        .status()
        .unwrap();
    assert!(tar.success());
    for n in sizes {
        let name = format!("f{n}");
        let got = walk(&untar)
            .into_iter()
            .find(|p| p.file_name().unwrap() == name.as_str())
            .unwrap();
        assert!(
            fs::read(got).unwrap() == noise(n, n as u64),
            "dump of {n} bytes"
        );
    }
    // Unchanged: reused from the parent's nodes without reading a byte.
    let again = env.backup(&[src.to_str().unwrap()]);
    assert_eq!(again["bytes_read"], 0, "{again}");
    assert_eq!(again["files_unchanged"], 7, "{again}");
    // Same size, other bytes: the inline content differs, and diff says so.
    let small = src.join(format!("f{}", limit - 1));
    let mtime = fs::metadata(&small).unwrap().modified().unwrap();
    fs::write(&small, noise(limit - 1, 99)).unwrap();
    fs::File::options()
        .write(true)
        .open(&small)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let third = env.backup(&[src.to_str().unwrap()]);
    assert_eq!(third["files_changed"], 1, "{third}");
    let (a, b) = (
        again["snapshot_id"].as_str().unwrap(),
        third["snapshot_id"].as_str().unwrap(),
    );
    let diff = env.json(&["diff", a, b]);
    let changes = diff["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{diff}");
    assert!(
        changes[0]["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/f{}", limit - 1)),
        "{diff}"
    );
    assert!(changes[0]["what"].to_string().contains("content"), "{diff}");
    let out = env.restore_latest_verified("out2");
    assert!(compare_trees(&src, &restored(&out, &src)).is_empty());
}

#[test]
fn a_build_refuses_a_format_version_it_does_not_know() {
    let env = &Env::local();
    init_version(env, 6);
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("version 6"), "{}", stderr(&out));
    // `init` makes the newest version.
    let env = &Env::local();
    env.init();
    assert_eq!(open_repo(env).config().version, 5);
}

/// Issue 25 item 22: standard input follows §8 like any file: 1 to 128 bytes inline in a
/// version 3 repository, more in blobs, and always blobs in version 2.
#[test]
fn standard_input_is_inlined_like_a_file() {
    let limit = strata::INLINE_LIMIT;
    for (version, n, inline) in [
        (3, 19, true),
        (3, limit, true),
        (3, limit + 1, false),
        (3, 0, true),
        (2, 19, false),
    ] {
        let env = &Env::local();
        if version == 3 {
            env.init();
        } else {
            init_version(env, version);
        }
        let bytes = noise(n, n as u64);
        let out = env
            .cmd()
            .args(["--json", "backup", "--stdin", "--stdin-filename", "in"])
            .write_stdin(bytes.clone())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let expect = if inline { 0 } else { n as u64 };
        assert_eq!(v["data_added"], expect, "v{version}, {n} bytes: {v}");
        assert_eq!(v["bytes_read"], n as u64, "{v}");
        let cat = env.cmd().args(["cat", "latest", "/in"]).output().unwrap();
        assert!(cat.status.success(), "{}", stderr(&cat));
        assert!(cat.stdout == bytes, "v{version}, {n} bytes read back");
        env.assert_read_data_clean();
    }
}

/// Copies a committed fixture repository (files only: git keeps no empty directory).
fn copy_fixture(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_fixture(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The repositories of format versions 1, 2 and 3 in tests/fixtures, written once by the
/// release of their time (examples/make_fixtures.rs): every build reads them byte-exact —
/// each node kind, odd names, modes, xattrs, hard links, a device — checks every byte,
/// finds the base backup and the archived WAL, then writes, forgets and prunes in them
/// without losing what the archive keeps.
#[test]
fn fixture_repositories_of_every_format_version_read_byte_exact() {
    for version in 1..=3 {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(fixture.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["format_version"], version);
        let env = &Env::local();
        copy_fixture(&fixture.join("repo"), Path::new(&env.repo));
        let run = |args: &[&str]| {
            env.cmd()
                .env("STRATA_PASSWORD", manifest["password"].as_str().unwrap())
                .args(args)
                .output()
                .unwrap()
        };
        let out = run(&["check", "--read-data"]);
        assert!(out.status.success(), "v{version}: {}", stderr(&out));

        let source = manifest["source"].as_str().unwrap();
        for snap in manifest["snapshots"].as_array().unwrap() {
            let target = env.path(&format!("t-{}", &snap["id"].as_str().unwrap()[..8]));
            let t = target.to_str().unwrap();
            let out = run(&[
                "restore",
                snap["id"].as_str().unwrap(),
                "--verify",
                "--target",
                t,
            ]);
            assert!(out.status.success(), "v{version}: {}", stderr(&out));
            let restored = describe::describe(&target.join(&source[1..])).unwrap();
            assert_eq!(
                restored, snap["files"],
                "v{version}, snapshot of {}",
                snap["time"]
            );
        }

        let lib = |cache: &str| {
            strata::Repository::open(
                open_backend(&env.repo),
                manifest["password"].as_str().unwrap().as_bytes(),
                &env.path(cache),
            )
            .unwrap()
        };
        let wal_intact = |repo: &strata::Repository| {
            for w in manifest["wal"].as_array().unwrap() {
                let name = w["name"].as_str().unwrap();
                let rec = strata_pg::wal::record(repo, "main", name)
                    .unwrap()
                    .expect(name);
                let bytes = strata_pg::wal::content(repo, &rec).unwrap();
                assert_eq!(
                    bytes.len() as u64,
                    w["size"].as_u64().unwrap(),
                    "v{version} {name}"
                );
                assert_eq!(
                    blake3::hash(&bytes).to_hex().as_str(),
                    w["blake3"],
                    "v{version} {name}"
                );
            }
        };
        let repo = lib("lib-cache");
        let bb = &manifest["base_backup"];
        let backups = strata_pg::base_backups(&repo, "main").unwrap();
        assert_eq!(backups.len(), 1, "v{version}");
        assert_eq!(backups[0].0.to_hex(), bb["snapshot"].as_str().unwrap());
        let pg = strata_pg::base_backup(&backups[0].1).unwrap();
        assert_eq!(pg.start_wal, bb["start_wal"].as_str().unwrap());
        assert_eq!(pg.stop_time, bb["stop_time"].as_str().unwrap());
        wal_intact(&repo);
        // WAL archived now goes where this format keeps it: `wal/`, no root records.
        let seg = env.path("000000010000000000000003");
        fs::write(&seg, noise(1 << 20, 9)).unwrap();
        strata_pg::wal::push(&repo, "main", &seg).unwrap();
        let store = open_backend(&env.repo);
        assert_eq!(store.list(strata::backend::FileKind::Wal).unwrap().len(), 4);
        assert!(store
            .list(strata::backend::FileKind::Root)
            .unwrap()
            .is_empty());
        let rec = strata_pg::wal::record(&repo, "main", "000000010000000000000003").unwrap();
        assert_eq!(
            strata_pg::wal::content(&repo, &rec.unwrap()).unwrap(),
            fs::read(&seg).unwrap()
        );

        // Written to in its own format: a backup, a forget of the first snapshot, a prune.
        let src = env.path("new");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), noise(100_000, version as u64)).unwrap();
        let out = run(&["backup", src.to_str().unwrap()]);
        assert!(out.status.success(), "v{version}: {}", stderr(&out));
        // Per lineage: the first snapshot of the set "files" goes, the base backup stays.
        let out = run(&["forget", "--keep-last", "1"]);
        assert!(out.status.success(), "v{version}: {}", stderr(&out));
        let out = run(&["--json", "snapshots"]);
        let left: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let left: Vec<&str> = left
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(left.len(), 3, "v{version}: {left:?}");
        assert!(!left.contains(&manifest["snapshots"][0]["id"].as_str().unwrap()));
        assert!(left.contains(&bb["snapshot"].as_str().unwrap()));
        let out = run(&["prune", "--grace", "0s"]);
        assert!(out.status.success(), "v{version}: {}", stderr(&out));
        let out = run(&["check", "--read-data"]);
        assert!(out.status.success(), "v{version}: {}", stderr(&out));
        let config = open_backend(&env.repo)
            .read(strata::backend::FileKind::Config, "config")
            .unwrap();
        assert_eq!(
            config,
            fs::read(fixture.join("repo/config")).unwrap(),
            "v{version}: the config is never rewritten"
        );
        wal_intact(&lib("lib-cache-2"));
    }
}
