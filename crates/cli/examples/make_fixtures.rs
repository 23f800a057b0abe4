//! Writes the fixture repositories of `crates/cli/tests/fixtures/`: one per format version
//! (1, 2, 3), made once by the release that wrote them and committed, so that every later
//! build is tested against bytes an older one wrote (as restic and rustic keep theirs).
//! Each holds two snapshots of a small tree with one node of every kind, a PostgreSQL base
//! backup snapshot and three archived WAL files; `manifest.json` beside it says what they
//! hold, so the test needs nothing of the code that made them.
//!
//! ```sh
//! cargo run --release -p strata-cli --example make_fixtures -- crates/cli/tests/fixtures
//! ```
//! Runs as root (a character device node); sources go under /tmp/strata-fixture, the path
//! the snapshots record.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;

#[path = "../tests/fixtures/describe.rs"]
mod describe;
use describe::describe;
use serde_json::{json, Value};
use strata::backup::{self, BackupOptions, Source};
use strata::{backend, ChunkerParams, Config, KdfCost, NoProgress, Repository};

/// The password of every fixture repository.
const PASSWORD: &str = "fixture";
/// Where the sources are: the snapshots record absolute paths.
const BASE: &str = "/tmp/strata-fixture";

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: make_fixtures DIR")?,
    );
    for version in 1..=3 {
        let dir = out.join(format!("v{version}"));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let manifest = make(&dir.join("repo"), version)?;
        fs::write(
            dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)? + "\n",
        )?;
        println!("{}: format {version}", dir.display());
    }
    Ok(())
}

/// Bytes that look random and are the same on every run (xorshift64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: u64) -> anyhow::Result<()> {
    let f = fs::File::options().write(true).open(path)?;
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))?;
    Ok(())
}

/// The first snapshot's tree: one node of every kind, odd names, modes and an xattr.
fn first_tree(src: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(src.join("sub/deeper"))?;
    let files: [(&str, Vec<u8>, u32); 7] = [
        ("hello.txt", b"hello, strata\n".to_vec(), 0o644),
        ("empty", Vec::new(), 0o644),
        ("noise.bin", noise(48 << 10, 1), 0o644),
        (
            "text.log",
            b"a line of a log that repeats\n".repeat(4000),
            0o640,
        ),
        ("sub/deeper/file", b"deep\n".to_vec(), 0o600),
        ("run.sh", b"#!/bin/sh\necho run\n".to_vec(), 0o755),
        ("odd name\nwith newline", b"odd\n".to_vec(), 0o644),
    ];
    for (name, data, mode) in files {
        let p = src.join(name);
        fs::write(&p, data)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        set_mtime(&p, 1_764_547_200)?;
    }
    let bad: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"not-utf8-\xff");
    fs::write(src.join(bad), b"bytes\n")?;
    symlink("../hello.txt", src.join("sub/link"))?;
    fs::write(src.join("hard1"), b"linked twice\n")?;
    fs::hard_link(src.join("hard1"), src.join("sub/hard2"))?;
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    nix::sys::stat::mknod(
        &src.join("null-device"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .context("mknod (run as root)")?;
    xattr::set(src.join("hello.txt"), "user.fixture", b"\x00\x01value")?;
    Ok(())
}

fn at(rfc3339: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    Some(chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap())
}

fn make(repo_dir: &Path, version: u32) -> anyhow::Result<Value> {
    let base = Path::new(BASE);
    if base.exists() {
        fs::remove_dir_all(base)?;
    }
    let src = base.join("src");
    first_tree(&src)?;

    let mut config = Config::new(ChunkerParams::default(), 3);
    config.version = version;
    let store = backend::open(repo_dir.to_str().unwrap())?;
    Repository::init(
        store.clone(),
        PASSWORD.as_bytes(),
        config,
        &KdfCost::INSECURE_FOR_TESTS,
    )?;
    let cache = tempfile::tempdir()?;
    let repo = Repository::open(store, PASSWORD.as_bytes(), cache.path())?;
    let run = |source: PathBuf, time: &str, set: Option<&str>| {
        backup::run(
            &repo,
            BackupOptions {
                source: Source::Paths(vec![source]),
                host: Some("fixture-host".into()),
                time: at(time),
                set: set.map(String::from),
                ..Default::default()
            },
            &NoProgress,
        )
    };
    let first = run(src.clone(), "2026-12-01T00:00:00Z", Some("files"))?;
    let first_files = describe(&src)?;

    // The second: a file grows, one goes.
    let mut log = fs::read(src.join("text.log"))?;
    log.extend_from_slice(b"one line more\n");
    fs::write(src.join("text.log"), log)?;
    set_mtime(&src.join("text.log"), 1_764_633_600)?;
    fs::remove_file(src.join("empty"))?;
    let second = run(src.clone(), "2026-12-02T00:00:00Z", Some("files"))?;
    let second_files = describe(&src)?;

    let (base_backup, wal) = postgres(&repo, base)?;
    Ok(json!({
        "format_version": version,
        "password": PASSWORD,
        "written_by": concat!("strata ", env!("CARGO_PKG_VERSION"), " (make_fixtures)"),
        "source": src,
        "snapshots": [
            {"id": first.snapshot_id.to_hex(), "time": "2026-12-01T00:00:00Z", "files": first_files},
            {"id": second.snapshot_id.to_hex(), "time": "2026-12-02T00:00:00Z", "files": second_files},
        ],
        "base_backup": base_backup,
        "wal": wal,
    }))
}

/// A fake data directory backed up as a base backup of cluster `main`, and three WAL files
/// archived for it.
fn postgres(repo: &Repository, base: &Path) -> anyhow::Result<(Value, Value)> {
    let data = base.join("pgdata");
    fs::create_dir_all(data.join("base/1"))?;
    fs::create_dir_all(data.join("global"))?;
    fs::write(data.join("PG_VERSION"), "15\n")?;
    fs::write(data.join("base/1/1259"), noise(16 << 10, 2))?;
    fs::write(data.join("global/pg_control"), noise(8 << 10, 3))?;
    let label = "START WAL LOCATION: 0/1000028 (file 000000010000000000000001)\n\
                 CHECKPOINT LOCATION: 0/1000060\nBACKUP METHOD: streamed\n\
                 BACKUP FROM: primary\nSTART TIME: 2026-12-03 00:00:00 UTC\n\
                 LABEL: strata\nSTART TIMELINE: 1\n";
    let bb = strata_pg::BaseBackup {
        cluster: "main".into(),
        data_directory: data.to_str().unwrap().into(),
        server_version: 150010,
        timeline: 1,
        segment_size: 1 << 20,
        start_lsn: "0/1000028".into(),
        stop_lsn: "0/1000138".into(),
        start_wal: "000000010000000000000001".into(),
        stop_wal: "000000010000000000000001".into(),
        stop_time: "2026-12-03T00:00:01+00:00".into(),
        backup_label: label.into(),
        tablespace_map: None,
    };
    let set_postgres = bb.clone();
    let report = backup::run(
        repo,
        BackupOptions {
            source: Source::Paths(vec![data.clone()]),
            host: Some("fixture-host".into()),
            time: at("2026-12-03T00:00:00Z"),
            set: Some(strata_pg::set_of("main")),
            tags: vec!["postgres".into()],
            before_snapshot: Some(Box::new(move |s| {
                s.set_extension(strata_pg::EXTENSION, &set_postgres)
            })),
            ..Default::default()
        },
        &NoProgress,
    )?;

    let wal_dir = base.join("wal");
    fs::create_dir_all(&wal_dir)?;
    let mut wal = Vec::new();
    for (name, data) in [
        ("000000010000000000000001", segment(4)),
        ("000000010000000000000002", segment(5)),
        (
            "00000002.history",
            b"1\t0/2000000\tno recovery target specified\n".to_vec(),
        ),
    ] {
        let path = wal_dir.join(name);
        fs::write(&path, &data)?;
        strata_pg::wal::push(repo, "main", &path)?;
        wal.push(json!({"name": name, "size": data.len(), "blake3": blake3::hash(&data).to_hex().to_string()}));
    }
    let base_backup = json!({
        "snapshot": report.snapshot_id.to_hex(),
        "cluster": "main",
        "start_wal": bb.start_wal,
        "stop_time": bb.stop_time,
        "files": describe(&data)?,
    });
    Ok((base_backup, Value::Array(wal)))
}

/// A 1 MiB segment: a little noise, then zeros (as a quiet server's WAL is).
fn segment(seed: u64) -> Vec<u8> {
    let mut s = noise(2 << 10, seed);
    s.resize(1 << 20, 0);
    s
}
