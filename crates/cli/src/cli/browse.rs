//! Read-only commands: snapshots, ls, cat.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::exit;
use anyhow::Context;
use clap::Args;
use serde_json::json;
use strata::walk;
use strata::Snapshot;
use strata::{Node, NodeKind};

pub use super::args::{in_snapshot, FilterArgs};

use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the newest N of each lineage (set, else host and paths).
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
}

pub fn snapshot_json(id: &str, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id,
        "time": s.time,
        "host": s.host,
        "user": s.user,
        "paths": s.paths,
        "tags": s.tags,
        "set": s.set,
        "parent": s.parent.map(|p| p.to_hex()),
        "tree": s.tree.to_hex(),
        "summary": s.summary,
    })
}

pub fn snapshots(global: &Global, args: SnapshotsArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let f = args.filter.filter(global, &repo)?;
    let mut list: Vec<_> = repo
        .snapshots()
        .list()?
        .into_iter()
        .filter(|(_, s)| f.matches(s))
        .collect();
    if let Some(n) = args.latest {
        // Newest last in the listing: keep each lineage's last n.
        let mut seen: std::collections::HashMap<strata::Lineage, usize> = Default::default();
        list.reverse();
        list.retain(|(_, s)| {
            let count = seen.entry(s.lineage()).or_default();
            *count += 1;
            *count <= n
        });
        list.reverse();
    }
    if global.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| snapshot_json(&id.to_hex(), s))
            .collect();
        output::print_json(&serde_json::Value::Array(v));
        return Ok(exit::OK);
    }
    println!(
        "{:<8}  {:<25}  {:<10}  {:<12}  {:<12}  {:>10}  paths",
        "id", "time", "set", "host", "tags", "added"
    );
    for (id, s) in &list {
        println!(
            "{:<8}  {:<25}  {:<10}  {:<12}  {:<12}  {:>10}  {}",
            id.short(),
            output::when(&s.time),
            output::plain(s.set.as_deref().unwrap_or("-")),
            output::plain(&s.host),
            output::plain(&s.tags.join(",")),
            output::bytes(s.summary.bytes_stored),
            output::plain(&s.paths.join(" "))
        );
    }
    if !global.quiet {
        println!("{} snapshot(s)", list.len());
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id, unique id prefix, or "latest" (the newest of the one lineage the
    /// filters leave).
    snapshot: String,
    /// Only below this path of the snapshot.
    path: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::Dir => 'd',
        NodeKind::File => '-',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
    }
}

fn node_json(path: &Path, n: &Node) -> serde_json::Value {
    json!({
        "path": path.to_string_lossy(),
        "type": format!("{:?}", n.kind).to_lowercase(),
        "mode": n.mode,
        "size": n.size,
        "uid": n.uid,
        "gid": n.gid,
        "mtime": {"sec": n.mtime.sec, "nsec": n.mtime.nsec},
        "target": n.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
    })
}

/// Appends a name as [`strata::printable_name`] shows it (`\n`, `\x1b`, `\x9b`, `\\`,
/// `\u{202e}`), so a hostile file name can neither forge lines nor drive the terminal.
pub fn escape_into(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(strata::printable_name(name).as_bytes());
}

pub fn ls(global: &Global, args: LsArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let (id, snap) = repo
        .snapshots()
        .find_in(&args.snapshot, &args.filter.filter(global, &repo)?)?;
    let base = args.path.clone().unwrap_or_else(|| PathBuf::from("/"));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut json_items = Vec::new();
    let mut emit = |path: &Path, n: &Node, out: &mut dyn Write| -> anyhow::Result<()> {
        if global.json {
            json_items.push(node_json(path, n));
        } else {
            let mut line = format!(
                "{}{:04o} {:>6} {:>6} {:>12} ",
                kind_char(n.kind),
                n.mode,
                n.uid,
                n.gid,
                n.size
            )
            .into_bytes();
            escape_into(&mut line, path.as_os_str().as_bytes());
            if let Some(t) = &n.target {
                line.extend_from_slice(b" -> ");
                escape_into(&mut line, t);
            }
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(())
    };
    let found = walk::lookup(&repo, &snap.tree, &base).with_context(|| in_snapshot(&id, &snap))?;
    let root = match found {
        None => Some(snap.tree),
        Some(node) => {
            emit(&base, &node, &mut out)?;
            node.subtree
        }
    };
    if let Some(root) = root {
        let mut err = None;
        walk::walk(&repo, &root, walk::Limits::of(&snap), &mut |rel, n| {
            if let Err(e) = emit(&base.join(rel), n, &mut out) {
                err.get_or_insert(e);
            }
            Ok(true)
        })
        .with_context(|| in_snapshot(&id, &snap))?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    if global.json {
        output::print_json(&serde_json::Value::Array(json_items));
    }
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// Snapshot id, unique id prefix, or "latest" (the newest of the one lineage the
    /// filters leave).
    snapshot: String,
    /// Absolute path of a file in the snapshot.
    path: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn cat(global: &Global, args: CatArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let (id, snap) = repo
        .snapshots()
        .find_in(&args.snapshot, &args.filter.filter(global, &repo)?)?;
    let mut out = std::io::stdout().lock();
    strata::restore::cat_file(&repo, &snap, &args.path, &mut out)
        .with_context(|| in_snapshot(&id, &snap))?;
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot id, unique id prefix, or "latest" (the newest of the one lineage the
    /// filters leave).
    snapshot: String,
    /// Absolute path in the snapshot: a file is written as it is, a directory (or `/`) as
    /// a tar archive with full metadata.
    path: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    cold: super::restore::ColdArgs,
    #[command(flatten)]
    recreate: super::restore::RecreateArgs,
}

pub fn dump(global: &Global, args: DumpArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let (id, snap) = repo
        .snapshots()
        .find_in(&args.snapshot, &args.filter.filter(global, &repo)?)?;
    let node =
        walk::lookup(&repo, &snap.tree, &args.path).with_context(|| in_snapshot(&id, &snap))?;
    // A tar stream cannot wait for one pack midway: every archived pack it needs is thawed
    // before the first byte goes out.
    let packs = || strata::thaw::packs_below(&repo, &snap, node.as_ref());
    if let Some(code) = args.cold.refuse_if_cold(global, &repo, packs)? {
        return Ok(code);
    }
    if let Some(wait) = args.cold.wait() {
        let packs = packs().with_context(|| in_snapshot(&id, &snap))?;
        let bar = Bar::new(global.show_progress(), false, "thaw").quiet(global.quiet);
        strata::thaw::wait_until_readable(&repo, &packs, &wait, &bar)?;
        bar.finish();
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match node {
        Some(n) if n.kind == NodeKind::File => {
            strata::restore::cat_file(&repo, &snap, &args.path, &mut out)?;
        }
        _ => {
            let recreate = args.recreate.recreate();
            let report = strata::dump::tar(&repo, &snap, &args.path, recreate, &mut out)
                .with_context(|| in_snapshot(&id, &snap))?;
            super::restore::warn_skipped(global, &report.skipped_devices);
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An empty directory to mount on; unmounted on SIGINT or SIGTERM.
    mountpoint: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn mount(global: &Global, args: MountArgs) -> anyhow::Result<i32> {
    let given = &args.mountpoint;
    // Resolved as a restore target is: a symlink on the way followed only if this user or
    // root made it, and from then on the real path, so that neither the mount nor the
    // unmount goes where another user's link points (hostile pass 7: root mounted over,
    // then detached, a mount of that user's choice).
    // As root, nowhere another user could swap a parent between the checks and the
    // kernel's mount by path (hostile pass 10: root mounted over, and left dead, a root
    // directory that user picked).
    if strata::is_root() {
        strata::safe_ancestors(given).context("mountpoint")?;
    }
    let held = strata::restore::open_trusted_existing(given).map_err(|e| mountpoint(given, e))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", held.as_raw_fd()))
        .with_context(|| format!("mountpoint {}", given.display()))?;
    let mp = &real;
    let meta = std::fs::metadata(mp).map_err(|e| mountpoint(mp, e))?;
    if !meta.is_dir() {
        anyhow::bail!("mountpoint {} is not a directory", mp.display());
    }
    if std::fs::read_dir(mp)?.next().is_some() {
        anyhow::bail!(
            "mountpoint {} is not empty (or already mounted): give an empty directory",
            mp.display()
        );
    }
    let repo = global.open()?;
    let filter = args.filter.filter(global, &repo)?;
    let fs = strata::mount::SnapshotFs::new(repo, &filter)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    super::signals_taken_over();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let options = [
        fuser::MountOption::RO,
        fuser::MountOption::FSName("strata".into()),
        fuser::MountOption::Subtype("strata".into()),
    ];
    // As root the kernel mounts on the directory held, through its descriptor, not on a
    // path that another user could re-point by swapping a parent while the repository
    // opens (hostile pass 8: root mounted over a directory of that user's choice).
    let on = match strata::is_root() {
        true => Path::new(&format!("/proc/self/fd/{}", held.as_raw_fd())).to_path_buf(),
        false => mp.clone(),
    };
    let session = fuser::spawn_mount2(fs, &on, &options)
        .with_context(|| format!("mounting on {}", mp.display()))?;
    // The held directory's path now (renamed meanwhile, perhaps), where the mount is:
    // the unmount checks it still is this mount's.
    let at = match strata::is_root() {
        true => std::fs::read_link(&on).unwrap_or_else(|_| mp.clone()),
        false => mp.clone(),
    };
    let mounted = std::fs::symlink_metadata(&at).map(|m| m.dev()).ok();
    if mounted == Some(meta.dev()) {
        drop(session);
        anyhow::bail!(
            "mountpoint {}: the mount is not where it was asked",
            mp.display()
        );
    }
    let mp = &at;
    if !global.quiet {
        eprintln!(
            "mounted on {} (read-only); Ctrl-C or SIGTERM unmounts",
            mp.display()
        );
    }
    // Until a signal, or an unmount from outside (`fusermount3 -u`, `umount`), which ends
    // the session's loop.
    let mut outside = false;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if session.guard.is_finished() {
            outside = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The held directory's path again: renamed meanwhile, the mount is still there
    // (hostile pass 8: a parent renamed left a dead mount, and a remedy through the link
    // put in its place).
    let now = match strata::is_root() {
        true => std::fs::read_link(&on).unwrap_or_else(|_| mp.clone()),
        false => mp.clone(),
    };
    let mp = &now;
    let detached = outside || detach(mp, mounted);
    drop(session);
    drop(held);
    if !global.quiet {
        if detached {
            eprintln!("unmounted {}", mp.display());
        } else {
            eprintln!(
                "could not unmount {}: run `fusermount3 -u -z {}`",
                mp.display(),
                mp.display()
            );
        }
    }
    Ok(if detached { exit::OK } else { exit::FAILURE })
}

/// The error for a mountpoint that cannot be used: a dead mount of a killed process (kill
/// -9) left there says how to remove it.
fn mountpoint(mp: &Path, e: std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::ENOTCONN) => anyhow::anyhow!(
            "mountpoint {}: {e}: a dead mount of a killed process is left there; \
             `fusermount3 -u {0}` (or `umount -l {0}`) removes it",
            mp.display()
        ),
        _ => anyhow::anyhow!("mountpoint {}: {e}", mp.display()),
    }
}

/// Unmounts `mp` lazily: a file still open there (a shell's cwd, a reader) must not leave
/// a dead mount ("Transport endpoint is not connected") once this process is gone. The
/// kernel's umount2 as root, else the setuid fusermount. Only this mount: what is at `mp`
/// must still be a directory of the file system mounted (`mounted`, its device), and a
/// symlink put there is not followed.
fn detach(mp: &std::path::Path, mounted: Option<u64>) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let ours = std::fs::symlink_metadata(mp).is_ok_and(|m| m.is_dir() && Some(m.dev()) == mounted);
    if !ours {
        return false;
    }
    if let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; umount2 reads it and nothing else.
        let flags = libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW;
        if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
            return true;
        }
    }
    ["fusermount3", "fusermount"].iter().any(|bin| {
        std::process::Command::new(bin)
            .args(["-u", "-z", "--"])
            .arg(mp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
