//! A key holder's tools: trees and snapshots written through the library, as another host
//! of the same repository could, and a runner that bounds a command's time and memory.

// Each module of the suite uses some of these.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use strata::internals::{BlobSaver, SaverShared};
use strata::{BlobId, BlobKind, Node, NodeKind, Snapshot, Summary, Tree, TreeId};

use crate::common::{open_repo, Env};

/// Saves blobs and trees of a crafted snapshot; `Crafter::snapshot` ends it.
pub struct Crafter<'s, 'r> {
    pub repo: &'r strata::Repository,
    saver: &'s BlobSaver<'s, 'r>,
}

impl Crafter<'_, '_> {
    /// Stores `plain` as a data blob under its own id.
    pub fn data(&self, plain: &[u8]) -> BlobId {
        let id = self.repo.blob_id(plain);
        self.saver.save(BlobKind::Data, id, plain).unwrap();
        id
    }

    /// Stores `plain` as a data blob under the id of `claimed` (a lie only a key holder
    /// can tell: the blob is validly sealed).
    pub fn data_as(&self, claimed: &[u8], plain: &[u8]) -> BlobId {
        let id = self.repo.blob_id(claimed);
        self.saver.save(BlobKind::Data, id, plain).unwrap();
        id
    }

    pub fn tree(&self, entries: Vec<Node>) -> TreeId {
        let mut t = Tree { entries };
        let bytes = t.encode();
        let id = self.repo.blob_id(&bytes);
        self.saver.save(BlobKind::Tree, id, &bytes).unwrap();
        id
    }
}

/// A regular file node of `content` (mode 0644, size its length).
pub fn file(c: &Crafter, name: &str, content: &[u8]) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.size = content.len() as u64;
    n.content = vec![c.data(content)];
    n
}

/// A directory node over `subtree` (mode 0755).
pub fn dir(name: &str, subtree: TreeId) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(subtree);
    n
}

/// Writes a snapshot whose root tree `build` returns, with `summary` as its claimed counts.
pub fn snapshot_with(
    env: &Env,
    summary: Summary,
    build: impl for<'s, 'r> FnOnce(&Crafter<'s, 'r>) -> TreeId,
) -> strata::SnapshotId {
    snapshot_of(env, (None, "/"), summary, build)
}

/// [`snapshot_with`] in backup set `set`, of the source `path`.
pub fn snapshot_of(
    env: &Env,
    (set, path): (Option<&str>, &str),
    summary: Summary,
    build: impl for<'s, 'r> FnOnce(&Crafter<'s, 'r>) -> TreeId,
) -> strata::SnapshotId {
    let repo = open_repo(env);
    let shared = SaverShared::default();
    let tx = repo.transaction().unwrap();
    let root = std::thread::scope(|scope| {
        let saver = BlobSaver::new(&repo, &shared, scope, 1);
        let root = build(&Crafter {
            repo: &repo,
            saver: &saver,
        });
        saver.finish().unwrap();
        root
    });
    tx.commit().unwrap();
    repo.snapshots()
        .write(&Snapshot {
            version: 1,
            time: "2026-01-01T00:00:00Z".into(),
            host: "h".into(),
            user: "u".into(),
            paths: vec![path.into()],
            tags: vec![],
            set: set.map(String::from),
            parent: None,
            tree: root,
            excludes: vec![],
            summary,
            program: "crafted".into(),
            repaired: None,
            extensions: Default::default(),
        })
        .unwrap()
}

/// `snapshot_with` and a default summary.
pub fn snapshot(
    env: &Env,
    build: impl for<'s, 'r> FnOnce(&Crafter<'s, 'r>) -> TreeId,
) -> strata::SnapshotId {
    snapshot_with(env, Summary::default(), build)
}

/// What a bounded run gave: its output, and whether it had to be killed at the deadline.
pub struct Bounded {
    pub out: Output,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs strata with `args` under an address-space limit of `mem_mib` MiB, killed after
/// `secs` seconds: a crafted input must fail fast and small, not slowly and big.
pub fn run_bounded(env: &Env, args: &[&str], mem_mib: u64, secs: u64) -> Bounded {
    run_bounded_to(env, args, (mem_mib, secs), Stdio::piped())
}

/// [`run_bounded`] with standard output to `stdout` (a file, for output too large to hold
/// in the test; then `out.stdout` is empty).
pub fn run_bounded_to(
    env: &Env,
    args: &[&str],
    (mem_mib, secs): (u64, u64),
    stdout: Stdio,
) -> Bounded {
    let mut cmd = env.std_cmd();
    // The limit is on address space: glibc's per-thread arenas reserve 64 MiB each, which
    // a restore's read threads multiply without using; two arenas measure what is used.
    cmd.env("MALLOC_ARENA_MAX", "2");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let limit = mem_mib << 20;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let (so, mut se) = (child.stdout.take(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut so) = so {
            so.read_to_end(&mut v).ok();
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        se.read_to_end(&mut v).ok();
        v
    });
    let deadline = start + Duration::from_secs(secs);
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            timed_out = true;
            child.kill().ok();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Bounded {
        out: Output {
            status,
            stdout: out_t.join().unwrap(),
            stderr: err_t.join().unwrap(),
        },
        timed_out,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL base backups a key holder crafts (local.rs: `pg restore` against them).
// ---------------------------------------------------------------------------------------

/// A symlink node `name` → `target` (mode 0777).
pub fn symlink(name: &str, target: &str) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::Symlink);
    n.mode = 0o777;
    n.target = Some(target.as_bytes().to_vec());
    n
}

/// A config naming cluster `main`; returns its path.
pub fn pg_config(env: &Env) -> String {
    let path = env.path("strata.toml");
    std::fs::write(&path, "[postgres.main]\n").unwrap();
    path.display().to_string()
}

/// The WAL segment size crafted base backups claim (PostgreSQL's smallest).
pub const PG_SEGMENT: u64 = 1 << 20;

/// Writes a base backup of cluster `main` (set `postgres.main`) whose record names
/// `data_directory` and whose root tree `build` returns, and archives the one WAL segment
/// it claims to need: all `pg restore main` plans from.
pub fn pg_base_backup(
    env: &Env,
    data_directory: &str,
    build: impl for<'s, 'r> FnOnce(&Crafter<'s, 'r>) -> TreeId,
) -> strata::SnapshotId {
    const SEG: &str = "000000010000000000000002";
    let first = snapshot(env, build);
    let repo = open_repo(env);
    let mut snap = repo.snapshots().get(&first).unwrap();
    snap.set = Some(strata_pg::set_of("main"));
    snap.tags = vec!["postgres".into()];
    let base = strata_pg::BaseBackup {
        cluster: "main".into(),
        data_directory: data_directory.into(),
        server_version: 150000,
        timeline: 1,
        segment_size: PG_SEGMENT,
        start_lsn: "0/200028".into(),
        stop_lsn: "0/200100".into(),
        start_wal: SEG.into(),
        stop_wal: SEG.into(),
        stop_time: "2026-01-01T00:00:00Z".into(),
        backup_label: "START WAL LOCATION: 0/200028 (file 000000010000000000000002)\n".into(),
        tablespace_map: None,
    };
    snap.set_extension(strata_pg::EXTENSION, &base).unwrap();
    let id = repo.snapshots().write(&snap).unwrap();
    repo.snapshots().remove(&first).unwrap();
    let wal = env.path("crafted-wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join(SEG), vec![0u8; PG_SEGMENT as usize]).unwrap();
    strata_pg::wal::push(&repo, "main", &wal.join(SEG)).unwrap();
    id
}
