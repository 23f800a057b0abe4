//! Shared test harness: a repository in a temp dir, the `strata` binary, and a generator
//! for source trees holding every kind of file Strata must restore faithfully.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

pub const PASSWORD: &str = "correct horse battery staple";
/// The uid tests run the binary as when the suite runs as root, so that permission errors
/// (an unreadable file) can happen at all.
pub const NOBODY: u32 = 65534;

pub struct Env {
    pub dir: tempfile::TempDir,
    /// Repository URL: a local directory or an S3 URL on the test Garage.
    pub repo: String,
    pub cache: PathBuf,
    /// Run the binary as this uid/gid (set only when the suite runs as root and asks).
    pub run_as: Option<u32>,
    pub s3: bool,
    /// Environment variables every command gets on top (a second server's credentials).
    pub vars: Vec<(String, String)>,
}

/// Generates one test per backend for each scenario function `fn(&Env)`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name(&super::common::Env::local()) } )*
        }
        mod s3 {
            $( #[test] fn $name() {
                if let Some(env) = super::common::Env::s3() { super::$name(&env) }
            } )*
        }
    };
}

impl Drop for Env {
    fn drop(&mut self) {
        for beside in ["own-cache", "lib-cache"] {
            let _ = fs::remove_dir_all(self.dir.path().with_extension(beside));
        }
    }
}

impl Env {
    pub fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo").display().to_string();
        let cache = dir.path().join("cache");
        Env {
            dir,
            repo,
            cache,
            run_as: None,
            s3: false,
            vars: Vec::new(),
        }
    }

    /// A repository under a fresh prefix of the test bucket, or `None` (said loudly) when no
    /// S3 server is configured. Under `tools/test` a missing server is a failure.
    pub fn s3() -> Option<Self> {
        let (Ok(endpoint), Ok(bucket)) = (
            std::env::var("STRATA_TEST_S3_ENDPOINT"),
            std::env::var("STRATA_TEST_S3_BUCKET"),
        ) else {
            if std::env::var_os("STRATA_TEST_S3_REQUIRED").is_some() {
                panic!("STRATA_TEST_S3_REQUIRED is set but the S3 endpoint is not");
            }
            not_run("the S3 variant needs a Garage server (run tools/test)");
            return None;
        };
        let mut env = Self::local();
        let prefix: String = hex_id();
        env.repo = format!("s3:{endpoint}/{bucket}/{prefix}");
        env.s3 = true;
        Some(env)
    }

    /// A fresh environment on the same kind of backend whose commands run unprivileged even
    /// under root (so that permission errors can happen at all).
    pub fn unprivileged(&self) -> Self {
        let mut env = if self.s3 {
            Self::s3().unwrap()
        } else {
            Self::local()
        };
        if nix::unistd::geteuid().is_root() {
            env.run_as = Some(NOBODY);
            // Sticky, as /tmp: a cache below a directory others may rename in is refused.
            fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        }
        env
    }

    /// The binary to run: for an unprivileged run a world-executable copy inside the test's
    /// directory, since the build directory may sit where that user cannot reach (/root).
    fn binary(&self) -> PathBuf {
        let built = assert_cmd::cargo::cargo_bin("strata");
        if self.run_as.is_none() {
            return built;
        }
        let copy = self.dir.path().join("strata-bin");
        if !copy.exists() {
            fs::copy(&built, &copy).unwrap();
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
        }
        copy
    }

    /// `check --read-data` succeeds and finds nothing.
    pub fn assert_read_data_clean(&self) {
        let out = self.ok(&["check", "--read-data"]);
        assert!(out.contains("no errors found"), "{out}");
    }

    /// Restores the latest snapshot into `self.path(dir)` with `--verify` (which re-reads
    /// every restored file against the snapshot) and returns that directory.
    pub fn restore_latest_verified(&self, dir: &str) -> PathBuf {
        let target = self.path(dir);
        self.ok(&[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--verify",
        ]);
        target
    }

    /// The repository's backend, for tests that inspect or damage stored objects.
    pub fn backend(&self) -> strata::backend::BackendRef {
        open_backend(&self.repo)
    }

    /// Names of the stored objects of one kind (`data`, `tree`, `snapshots`, `index`, `keys`).
    pub fn objects(&self, kind: &str) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .backend()
            .list(file_kind(kind))
            .unwrap()
            .into_iter()
            .map(|f| (f.name, f.size))
            .collect();
        v.sort();
        v
    }

    pub fn read_object_config(&self) -> Vec<u8> {
        self.backend()
            .read(strata::backend::FileKind::Config, "config")
            .unwrap()
    }

    pub fn read_object(&self, kind: &str, name: &str) -> Vec<u8> {
        self.backend().read(file_kind(kind), name).unwrap()
    }

    /// Replaces an object's bytes (tests only: the repository never overwrites).
    pub fn overwrite_object(&self, kind: &str, name: &str, data: &[u8]) {
        let b = self.backend();
        b.delete(file_kind(kind), name).unwrap();
        b.write(file_kind(kind), name, data).unwrap();
    }

    pub fn flip_byte(&self, kind: &str, name: &str, at: usize) {
        let mut bytes = self.read_object(kind, name);
        bytes[at] ^= 0x01;
        self.overwrite_object(kind, name, &bytes);
    }

    pub fn truncate_object(&self, kind: &str, name: &str, len: usize) {
        let mut bytes = self.read_object(kind, name);
        bytes.truncate(len);
        self.overwrite_object(kind, name, &bytes);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_cmd())
    }

    /// The `strata` command with this environment, for tests that spawn it in the background.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut std_cmd = self.cmd_with_cache(&self.cache);
        if let Some(uid) = self.run_as {
            std_cmd.uid(uid).gid(uid);
        }
        std_cmd
    }

    /// The command as the test process's user (root in CI) with a cache of its own,
    /// whoever this environment runs as: a second user of the same repository.
    pub fn own_cmd(&self) -> assert_cmd::Command {
        // Beside the test's directory, not in it: that directory may be another user's
        // (postgres'), and a cache below it is refused.
        let cache = self.dir.path().with_extension("own-cache");
        assert_cmd::Command::from_std(self.cmd_with_cache(&cache))
    }

    fn cmd_with_cache(&self, cache: &Path) -> std::process::Command {
        let mut std_cmd = std::process::Command::new(self.binary());
        std_cmd
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("STRATA_REPOSITORY", &self.repo)
            .env("STRATA_PASSWORD", PASSWORD)
            .env("STRATA_CACHE_DIR", cache)
            .env("STRATA_TEST_FAST_KDF", "1")
            .env("TZ", "UTC")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in std::env::vars_os() {
            // The batch size too: `tools/torture` runs the restore tests in batches of one.
            if k.to_string_lossy().starts_with("AWS_") || k == "STRATA_RESTORE_BATCH_BYTES" {
                std_cmd.env(k, v);
            }
        }
        std_cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        std_cmd
    }

    /// Runs strata with arguments and returns the output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        // A fresh copy of the binary (unprivileged runs) may be busy for a moment: a
        // process another test thread forks meanwhile holds its write descriptor until it
        // executes.
        for _ in 0..200 {
            match self.cmd().args(args).output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                out => return out.unwrap(),
            }
        }
        panic!("{} stayed busy", self.binary().display());
    }

    /// Runs strata, asserting success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn init(&self) -> &Self {
        self.ok(&["init"]);
        self
    }

    /// Backs up and returns the JSON summary.
    pub fn backup(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["backup"];
        a.extend_from_slice(args);
        self.json(&a)
    }
}

pub fn file_kind(kind: &str) -> strata::backend::FileKind {
    use strata::backend::FileKind;
    match kind {
        "data" => FileKind::Data,
        "tree" => FileKind::Tree,
        "snapshots" => FileKind::Snapshot,
        "index" => FileKind::Index,
        "keys" => FileKind::Key,
        "locks" => FileKind::Lock,
        "wal" => FileKind::Wal,
        "roots" => FileKind::Root,
        "audit" => FileKind::Audit,
        "marks" => FileKind::Marks,
        other => panic!("unknown kind {other}"),
    }
}

pub fn hex_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = TimeSpec::new(sec, nsec);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Builds a tree with every kind of entry a restore must reproduce.
pub fn make_rich_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("docs/readme.txt"), "hello strata\n".repeat(50)).unwrap();
    fs::write(root.join("docs/nested/data.json"), br#"{"k": [1, 2, 3]}"#).unwrap();
    fs::write(root.join("docs/nested/deeper/blob.bin"), noise(3 << 20, 1)).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::write(root.join("secret"), b"s3cr3t").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    // Non-UTF-8 file name.
    fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")),
        b"latin-1 name",
    )
    .unwrap();
    // Symlinks: relative, absolute-looking and dangling.
    std::os::unix::fs::symlink("docs/readme.txt", root.join("link-to-readme")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    // Hard links.
    fs::write(root.join("hard-a"), noise(100_000, 2)).unwrap();
    fs::hard_link(root.join("hard-a"), root.join("docs/hard-b")).unwrap();
    // A sparse file: 16 MiB with two small data islands.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(root.join("sparse.img")).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&noise(4096, 3), 1 << 20).unwrap();
        f.write_all_at(b"tail", (16 << 20) - 4).unwrap();
    }
    // A FIFO.
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    // User extended attributes.
    xattr::set(root.join("docs/readme.txt"), "user.origin", b"test-suite").unwrap();
    xattr::set(root.join("docs"), "user.dir-attr", b"\x00\x01binary").unwrap();
    // Owner and group, when we may set them.
    if is_root() {
        std::os::unix::fs::lchown(root.join("secret"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link-to-readme"), Some(4321), Some(8765)).unwrap();
    }
    // Nanosecond times on files, symlinks and directories, set bottom-up last.
    let mut n = 0i64;
    for rel in [
        "docs/nested/deeper/blob.bin",
        "docs/nested/data.json",
        "docs/readme.txt",
        "link-to-readme",
        "dangling",
        "secret",
        "sparse.img",
        "fifo",
        "docs/nested/deeper",
        "docs/nested",
        "empty-dir",
        "docs",
    ] {
        n += 1;
        set_mtime(&root.join(rel), 1_700_000_000 + n * 3600, 123_456_789 + n);
    }
}

/// A file of `root` modified before 1970 with a fractional second (issue 25, item 18):
/// 1960-06-15 12:00:00.5 UTC less one day's seconds, as `sec`/`nsec` (sec floored).
pub fn add_file_from_1960(root: &Path) -> PathBuf {
    let p = root.join("from-1960.txt");
    fs::write(&p, "old").unwrap();
    set_mtime(&p, -301_233_601, 500_000_000);
    p
}

/// The modification time of `p` (not following a link) as seconds and nanoseconds.
pub fn mtime_of(p: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

/// Compares two trees with GNU tar (`--compare` of an archive of `src` against `dst`), and
/// then what tar does not compare: directory and symlink mtimes in nanoseconds, xattrs,
/// sparseness and hard links. Returns every difference found.
pub fn compare_trees(src: &Path, dst: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let tar = src.parent().unwrap().join(format!(
        "compare-{}.tar",
        src.file_name().unwrap().to_string_lossy()
    ));
    let st = std::process::Command::new("tar")
        .args([
            "--create",
            "--format=posix",
            "--sparse",
            "--xattrs",
            "--numeric-owner",
            "--file",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar --create failed");
    let out = std::process::Command::new("tar")
        .args(["--compare", "--xattrs", "--numeric-owner", "--file"])
        .arg(&tar)
        .arg("-C")
        .arg(dst)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !text.trim().is_empty() {
        diffs.push(format!("tar --compare: {text}"));
    }
    fs::remove_file(&tar).unwrap();

    let mut inodes_src = std::collections::HashMap::new();
    let mut inodes_dst = std::collections::HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let s = src.join(&rel);
        let d = dst.join(&rel);
        let (ms, md) = match (fs::symlink_metadata(&s), fs::symlink_metadata(&d)) {
            (Ok(a), Ok(b)) => (a, b),
            (_, Err(e)) => {
                diffs.push(format!("{}: missing in restore: {e}", rel.display()));
                continue;
            }
            (Err(e), _) => panic!("{e}"),
        };
        if (ms.mtime(), ms.mtime_nsec()) != (md.mtime(), md.mtime_nsec())
            && !rel.as_os_str().is_empty()
        {
            diffs.push(format!(
                "{}: mtime {}.{:09} != {}.{:09}",
                rel.display(),
                ms.mtime(),
                ms.mtime_nsec(),
                md.mtime(),
                md.mtime_nsec()
            ));
        }
        if ms.mode() != md.mode() {
            diffs.push(format!(
                "{}: mode {:o} != {:o}",
                rel.display(),
                ms.mode(),
                md.mode()
            ));
        }
        if (ms.uid(), ms.gid()) != (md.uid(), md.gid()) && is_root() {
            diffs.push(format!("{}: owner differs", rel.display()));
        }
        if !ms.file_type().is_symlink() {
            let xs: Vec<_> = xattr::list(&s).map(|l| l.collect()).unwrap_or_default();
            for name in xs {
                let a = xattr::get(&s, &name).unwrap();
                let b = xattr::get(&d, &name).ok().flatten();
                if a != b {
                    diffs.push(format!("{}: xattr {:?} differs", rel.display(), name));
                }
            }
        }
        if ms.is_file() {
            // Holes stay holes: the restore allocates no more than the source (plus a block).
            if ms.blocks() * 512 < ms.size() && md.blocks() > ms.blocks() + 8 {
                diffs.push(format!(
                    "{}: sparse file restored with {} blocks, source has {}",
                    rel.display(),
                    md.blocks(),
                    ms.blocks()
                ));
            }
            if ms.nlink() > 1 {
                inodes_src
                    .entry(ms.ino())
                    .or_insert_with(Vec::new)
                    .push(rel.clone());
                inodes_dst
                    .entry(md.ino())
                    .or_insert_with(Vec::new)
                    .push(rel.clone());
            }
        }
        if ms.is_dir() {
            for e in fs::read_dir(&s).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    let mut groups_src: Vec<Vec<PathBuf>> = inodes_src
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    let mut groups_dst: Vec<Vec<PathBuf>> = inodes_dst
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups_src.sort();
    groups_dst.sort();
    if groups_src != groups_dst {
        diffs.push(format!(
            "hard links differ: {groups_src:?} != {groups_dst:?}"
        ));
    }
    diffs
}

/// Where a source directory lands inside a restore target.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// Opens the test repository through the library, as the binary would.
pub fn open_repo(env: &Env) -> strata::Repository {
    let backend = open_backend(&env.repo);
    // Beside the test's directory: it may be another user's (see `Env::own_cmd`).
    let cache = env.dir.path().with_extension("lib-cache");
    strata::Repository::open(backend, PASSWORD.as_bytes(), &cache).unwrap()
}

/// Peak resident set size of the largest child process waited for so far, in KiB.
pub fn max_child_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init().ru_maxrss
    }
}

/// A call an [`Intercept`] backend sees before passing it on.
pub enum Call<'a> {
    List(strata::backend::FileKind),
    Read(strata::backend::FileKind),
    /// A write and the storage class it asks for.
    Write(strata::backend::FileKind, Option<&'a str>),
}

/// A real backend with an observer called before each listing, read (whole or by range) and write: for
/// tests that record what the engine asks for or put another process's work in between.
pub struct Intercept {
    pub inner: strata::backend::BackendRef,
    pub observe: Box<dyn Fn(Call) + Send + Sync>,
}

impl strata::backend::Backend for Intercept {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> strata::Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> strata::Result<()> {
        self.inner.create()
    }
    fn list(
        &self,
        kind: strata::backend::FileKind,
    ) -> strata::Result<Vec<strata::backend::FileInfo>> {
        (self.observe)(Call::List(kind));
        self.inner.list(kind)
    }
    fn read(&self, kind: strata::backend::FileKind, name: &str) -> strata::Result<Vec<u8>> {
        (self.observe)(Call::Read(kind));
        self.inner.read(kind, name)
    }
    fn read_range(
        &self,
        kind: strata::backend::FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> strata::Result<Vec<u8>> {
        // Packs are read by the index's extent: for the observer, a read like any other.
        (self.observe)(Call::Read(kind));
        self.inner.read_range(kind, name, offset, len)
    }
    fn put(
        &self,
        kind: strata::backend::FileKind,
        name: &str,
        data: &[u8],
        how: &strata::backend::WriteOptions,
    ) -> strata::Result<()> {
        (self.observe)(Call::Write(kind, how.class));
        self.inner.put(kind, name, data, how)
    }
    fn capabilities(&self) -> strata::backend::Capabilities<'_> {
        self.inner.capabilities()
    }
    fn delete(&self, kind: strata::backend::FileKind, name: &str) -> strata::Result<()> {
        self.inner.delete(kind, name)
    }
}

/// Every path below `root`, `root` included (directories followed, breadth first).
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            for e in fs::read_dir(&out[i]).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

/// Writes a prune lock as `host`'s process `pid` would have, last refreshed at `at`.
pub fn plant_lock(repo: &strata::Repository, host: &str, pid: u32, at: &str) {
    repo.save_file(
        strata::backend::FileKind::Lock,
        &strata::lock::LockFile {
            version: 1,
            operation: "prune".into(),
            host: host.into(),
            user: "root".into(),
            pid,
            created: at.into(),
            refreshed: at.into(),
        },
    )
    .unwrap();
}

/// A config file with two backup sets, `critical` backing up `app` and `metrics` backing
/// up `metrics` (both created), each with the retention `keep` (a TOML inline table's
/// inside, e.g. `last = 5`); returns the config's path.
pub fn two_sets_config(env: &Env, app: &Path, metrics: &Path, keep: &str) -> String {
    fs::create_dir_all(app).unwrap();
    fs::create_dir_all(metrics).unwrap();
    let config = env.path("strata.toml");
    fs::write(
        &config,
        format!(
            "[sets.critical]\npaths = [{app:?}]\nkeep = {{ {keep} }}\n\
             [sets.metrics]\npaths = [{metrics:?}]\nkeep = {{ {keep} }}\n"
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_string()
}

/// `cp -a from to`: a reference copy of a tree, metadata and all.
pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// The data pack holding the first chunk of `file` in the newest snapshot of `set`.
pub fn pack_of_file_in_set(env: &Env, set: &str, file: &Path) -> String {
    let repo = open_repo(env);
    let (_, snap) = repo
        .snapshots()
        .find_in(
            "latest",
            &strata::SnapshotFilter {
                sets: vec![set.into()],
                ..Default::default()
            },
        )
        .unwrap();
    let node = strata::walk::lookup(&repo, &snap.tree, file)
        .unwrap()
        .unwrap();
    repo.index().lookup(&node.content[0]).unwrap().pack.to_hex()
}

/// The moto endpoint, when tools/test started one (required when the S3 tests are).
pub fn moto() -> Option<String> {
    match std::env::var("STRATA_TEST_MOTO_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var_os("STRATA_TEST_S3_REQUIRED").is_some() => {
            panic!("STRATA_TEST_MOTO_ENDPOINT is not set: run the suite through tools/test")
        }
        Err(_) => {
            not_run("no moto server (tools/test starts one)");
            None
        }
    }
}

pub fn moto_client(endpoint: &str) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conf = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .load(),
    );
    let s3 = aws_sdk_s3::config::Builder::from(&conf)
        .force_path_style(true)
        .build();
    (rt, aws_sdk_s3::Client::from_conf(s3))
}

/// A new bucket `name` on moto, with the client that made it.
pub fn moto_bucket(endpoint: &str, name: &str) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    let (rt, s3) = moto_client(endpoint);
    rt.block_on(s3.create_bucket().bucket(name).send()).unwrap();
    (rt, s3)
}

/// strata with `args` on the repository at `repo` (on moto, which lives in us-east-1).
pub fn on_moto(env: &Env, repo: &str, args: &[&str]) -> Output {
    env.cmd()
        .env("STRATA_REPOSITORY", repo)
        .env("AWS_REGION", "us-east-1")
        .args(args)
        .output()
        .unwrap()
}

/// One of the proxies in tools/ (latency-proxy, s3-proxy) in front of the S3 server at
/// `endpoint`, stopped on drop.
/// The body of a GET of `path` that the proxy answers itself (`/_proxy/...`).
pub fn proxy_get(proxy: &Proxy, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = proxy.url_base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (_, body) = reply.split_once("\r\n\r\n").unwrap();
    body.to_string()
}

pub struct Proxy {
    child: std::process::Child,
    /// `http://HOST:PORT` of the proxy.
    pub url_base: String,
}

impl Proxy {
    pub fn start(tool: &str, endpoint: &str, args: &[&str]) -> Self {
        use std::io::BufRead;
        let upstream = endpoint.trim_start_matches("http://").to_string();
        let tool = workspace().join("tools").join(tool);
        let mut child = std::process::Command::new("python3")
            .arg(tool)
            .args(["--upstream", &upstream])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("proxy said {line:?}"))
            .to_string();
        Proxy {
            child,
            url_base: format!("http://{addr}"),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tmpfs mounted for one test (root only: the suite runs as root in CI), unmounted
/// whatever the outcome.
pub struct SmallDisk(pub std::path::PathBuf);

impl SmallDisk {
    pub fn mount(path: std::path::PathBuf, size: &str) -> Option<Self> {
        fs::create_dir_all(&path).unwrap();
        if !is_root() {
            not_run("a full-disk test needs root to mount a small tmpfs");
            return None;
        }
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", path.display());
        Some(SmallDisk(path))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Sends `signal` to a spawned command (a strata being interrupted).
#[allow(dead_code)]
pub fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// Says that a test (or part of one) cannot run here for want of `what`. Under `tools/test`
/// (`STRATA_TEST_REQUIRE_ALL`) that is a failure naming it: CI must never count a test
/// that did not run as passed. Under a plain `cargo test` it is said on stderr and, when
/// `STRATA_TEST_NOT_RUN_LOG` names a file, counted there.
pub fn not_run(what: &str) {
    if let Some(log) = std::env::var_os("STRATA_TEST_NOT_RUN_LOG") {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(f, "{what}").unwrap();
    }
    if std::env::var_os("STRATA_TEST_REQUIRE_ALL").is_some() {
        panic!("NOT RUN under tools/test, which requires every test to run: {what}");
    }
    eprintln!("NOT RUN: {what}");
}

/// The pid a hook or command wrote to `pid_file` (`echo $$ > FILE`), once it has.
pub fn wait_for_pid(pid_file: &Path) -> i32 {
    let started = std::time::Instant::now();
    loop {
        if let Some(pid) = fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            return pid;
        }
        assert!(started.elapsed().as_secs() < 60, "the command never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (a zombie, killed and not yet reaped by whoever adopted it,
/// does not).
pub fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A symlink `link` → `target` owned by `uid`, as another user plants one (root only).
pub fn plant_symlink(target: &Path, link: &Path, uid: u32) {
    std::os::unix::fs::symlink(target, link).unwrap();
    nix::unistd::fchownat(
        None,
        link,
        Some(nix::unistd::Uid::from_raw(uid)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The workspace's root directory (tools/, docs/, format-spec/).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Opens a repository URL's backend as the `strata` binary does (local directories and S3).
pub fn open_backend(url: &str) -> strata::backend::BackendRef {
    strata_s3::schemes()
        .open(url, &strata::backend::BackendOptions::default())
        .unwrap()
}

/// One Garage node's S3 request counters by operation, from its admin endpoint
/// (`http://HOST:PORT`); none for a node that does not answer (down).
pub fn garage_by_operation_at(admin: &str) -> std::collections::BTreeMap<String, u64> {
    use std::io::{Read, Write};
    let mut out = std::collections::BTreeMap::new();
    let addr = admin.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return out;
    };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    for l in body
        .lines()
        .filter(|l| l.starts_with("api_s3_request_counter{"))
    {
        let op = l
            .split("api_endpoint=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let n = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(op), Some(n)) = (op, n) {
            *out.entry(op.to_string()).or_default() += n as u64;
        }
    }
    out
}
