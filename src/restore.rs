//! Restoring a snapshot: structure first, then contents pack by pack, then metadata.
//!
//! Contents are planned per pack so that each pack is read once, in few range reads, and
//! packs are processed in parallel. Metadata comes last and bottom-up, so writing a file
//! cannot disturb its directory's restored mtime.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use globset::GlobSet;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::progress::Progress;
use crate::repo::pack::{open_blob, BlobEntry};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::{in_pack, pack_file_kind, Repository};
use crate::util;
use crate::walk;

/// Blobs of one pack closer than this are fetched in one range read.
const MAX_GAP: u64 = 256 << 10;
/// Largest single range read: a whole data pack (16 MiB of blobs plus its header) fits, so a
/// pack costs one request, and each reader thread holds at most this much.
const MAX_RANGE: u64 = 17 << 20;

#[derive(Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub includes: Option<GlobSet>,
    pub excludes: Option<GlobSet>,
    pub verify: bool,
    pub dry_run: bool,
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    pub verified_files: u64,
    pub errors: Vec<String>,
}

struct Item {
    /// Path in the snapshot, e.g. `/srv/data/a.json`.
    path: PathBuf,
    node: Node,
    /// For the second and later names of a hard-linked file: the item holding the content.
    link_to: Option<usize>,
}

/// One blob to fetch and where its plaintext goes.
struct Fetch {
    entry: BlobEntry,
    targets: Vec<(usize, u64)>,
}

pub fn run(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let items = select(repo, snapshot, opts)?;
    let mut report = RestoreReport::default();
    let errors = Mutex::new(Vec::new());
    let dest = |item: &Item| {
        opts.target
            .join(item.path.strip_prefix("/").unwrap_or(&item.path))
    };

    if !opts.dry_run {
        fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    }
    for item in &items {
        match item.node.kind {
            NodeKind::Dir => report.dirs += 1,
            NodeKind::File => report.files += 1,
            _ => report.other += 1,
        }
    }
    if !opts.dry_run {
        let make = |item: &Item| {
            if let Err(e) = create(item, &dest(item), &items, &dest) {
                errors.lock().unwrap().push(e.to_string());
            }
        };
        // Directories in order (parents first); then every other entry in parallel, since
        // allocating an inode is most of a small file's cost; hard links last, as they need
        // their first name in place.
        items
            .iter()
            .filter(|i| i.node.kind == NodeKind::Dir)
            .for_each(make);
        items
            .par_iter()
            .filter(|i| i.node.kind != NodeKind::Dir && i.link_to.is_none())
            .for_each(make);
        items
            .iter()
            .filter(|i| i.node.kind != NodeKind::Dir && i.link_to.is_some())
            .for_each(make);
    }

    // Plan: pack -> blobs -> (file, offset) targets.
    let mut plan: HashMap<PackId, HashMap<BlobId, Fetch>> = HashMap::new();
    let mut total = 0u64;
    for (idx, item) in items.iter().enumerate() {
        if item.node.kind != NodeKind::File || item.link_to.is_some() {
            continue;
        }
        let mut offset = 0u64;
        for id in &item.node.content {
            let loc = repo.lookup_blob(id)?;
            plan.entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| Fetch {
                    entry: loc.entry,
                    targets: Vec::new(),
                })
                .targets
                .push((idx, offset));
            offset += loc.entry.raw_length as u64;
            total += loc.entry.raw_length as u64;
        }
    }
    progress.set_total(total);
    let written = AtomicU64::new(0);
    let mut packs: Vec<(PackId, Vec<Fetch>)> = plan
        .into_iter()
        .map(|(p, blobs)| {
            let mut v: Vec<Fetch> = blobs.into_values().collect();
            v.sort_by_key(|f| f.entry.offset);
            (p, v)
        })
        .collect();
    // In the order of the files they fill: a backup writes a file's chunks into consecutive
    // packs, and rayon splits this list in halves, so the threads work on different files
    // instead of queueing on one file's inode lock.
    packs.sort_by_key(|(p, fetches)| {
        (
            fetches
                .iter()
                .filter_map(|f| f.targets.first())
                .min()
                .copied(),
            *p,
        )
    });
    crate::util::with_read_pool(repo.backend().as_ref(), || {
        packs.par_iter().for_each(|(pack, fetches)| {
            if let Err(e) = restore_pack(
                repo, pack, fetches, &items, &dest, opts, progress, &written, &errors,
            ) {
                errors.lock().unwrap().push(e.to_string());
            }
        })
    });
    report.bytes = written.load(Ordering::Relaxed);

    if !opts.dry_run {
        // Children before parents: setting a file's metadata never touches its directory,
        // but creating a file does, so directories come last.
        let apply = |item: &Item| {
            if let Err(e) = set_metadata(&item.node, &dest(item)) {
                errors.lock().unwrap().push(e.to_string());
            }
        };
        items
            .par_iter()
            .filter(|i| i.node.kind != NodeKind::Dir)
            .for_each(apply);
        items
            .iter()
            .rev()
            .filter(|i| i.node.kind == NodeKind::Dir)
            .for_each(apply);
        if opts.verify {
            for item in &items {
                if item.node.kind == NodeKind::File && item.link_to.is_none() {
                    match verify_file(repo, &item.node, &dest(item)) {
                        Ok(()) => report.verified_files += 1,
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
            }
        }
    }
    report.errors = errors.into_inner().unwrap();
    Ok(report)
}

/// The snapshot's items that pass the include and exclude patterns, parents first.
fn select(repo: &Repository, snapshot: &Snapshot, opts: &RestoreOptions) -> Result<Vec<Item>> {
    // Pass 1: everything not excluded, with whether it (or a directory above it) matched.
    let mut all: Vec<(Item, bool)> = Vec::new();
    let mut stack: Vec<(PathBuf, bool)> = Vec::new();
    walk::walk(repo, &snapshot.tree, &mut |rel, node| {
        let path = Path::new("/").join(rel);
        while stack.last().is_some_and(|(dir, _)| !path.starts_with(dir)) {
            stack.pop();
        }
        if opts.excludes.as_ref().is_some_and(|g| g.is_match(&path)) {
            return Ok(false);
        }
        let matched = stack.last().is_some_and(|s| s.1)
            || opts.includes.as_ref().is_none_or(|g| g.is_match(&path));
        if node.kind == NodeKind::Dir {
            stack.push((path.clone(), matched));
        }
        all.push((
            Item {
                path,
                node: node.clone(),
                link_to: None,
            },
            matched,
        ));
        Ok(true)
    })?;
    // Pass 2, bottom-up: keep matches and the directories leading to them.
    let mut needed: std::collections::HashSet<PathBuf> = Default::default();
    let mut keep = vec![false; all.len()];
    for (i, (item, matched)) in all.iter().enumerate().rev() {
        if *matched || needed.contains(&item.path) {
            keep[i] = true;
            if let Some(parent) = item.path.parent() {
                needed.insert(parent.to_path_buf());
            }
        }
    }
    // Pass 3: the first kept name of a hard-linked file holds the content.
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut out = Vec::new();
    for ((mut item, _), k) in all.into_iter().zip(keep) {
        if !k {
            continue;
        }
        let n = &item.node;
        if n.kind == NodeKind::File && n.nlink > 1 && n.inode != 0 {
            match links.get(&(n.device, n.inode)) {
                Some(first) => item.link_to = Some(*first),
                None => {
                    links.insert((n.device, n.inode), out.len());
                }
            }
        }
        out.push(item);
    }
    Ok(out)
}

fn create(
    item: &Item,
    dest: &Path,
    items: &[Item],
    dest_of: &dyn Fn(&Item) -> PathBuf,
) -> Result<()> {
    let io = |e| Error::io(dest, e);
    let node = &item.node;
    if node.kind != NodeKind::Dir {
        // Replace whatever is in the way, but never a directory with contents.
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => fs::remove_dir(dest).map_err(io)?,
            Ok(_) => fs::remove_file(dest).map_err(io)?,
            Err(_) => {}
        }
    }
    match node.kind {
        NodeKind::Dir => fs::create_dir_all(dest).map_err(io)?,
        NodeKind::File => match item.link_to {
            Some(first) => fs::hard_link(dest_of(&items[first]), dest).map_err(io)?,
            None => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dest)
                    .map_err(io)?;
                // Sets the size up front: unwritten (zero) ranges of sparse files stay holes.
                f.set_len(node.size).map_err(io)?;
            }
        },
        NodeKind::Symlink => {
            let target = node.target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(OsStr::from_bytes(target), dest).map_err(io)?;
        }
        NodeKind::Fifo => {
            nix::unistd::mkfifo(dest, nix::sys::stat::Mode::from_bits_truncate(node.mode))
                .map_err(|e| io(e.into()))?;
        }
        NodeKind::Chardev | NodeKind::Blockdev => {
            let kind = if node.kind == NodeKind::Chardev {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                dest,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(node.mode),
                node.rdev as _,
            )
            .map_err(|e| io(e.into()))?;
        }
        NodeKind::Socket => {}
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn restore_pack(
    repo: &Repository,
    pack: &PackId,
    fetches: &[Fetch],
    items: &[Item],
    dest: &(dyn Fn(&Item) -> PathBuf + Sync),
    opts: &RestoreOptions,
    progress: &dyn Progress,
    written: &AtomicU64,
    errors: &Mutex<Vec<String>>,
) -> Result<()> {
    let mut i = 0;
    while i < fetches.len() {
        // Coalesce neighbouring blobs into one range read.
        let start = fetches[i].entry.offset;
        let mut end = start + fetches[i].entry.length as u64;
        let mut j = i + 1;
        while j < fetches.len() {
            let e = &fetches[j].entry;
            if e.offset > end + MAX_GAP || e.offset + e.length as u64 - start > MAX_RANGE {
                break;
            }
            end = end.max(e.offset + e.length as u64);
            j += 1;
        }
        let kind = pack_file_kind(fetches[i].entry.kind);
        let bytes = repo
            .backend()
            .read_range(kind, &pack.to_hex(), start, end - start)?;
        for f in &fetches[i..j] {
            let lo = (f.entry.offset - start) as usize;
            let sealed = &bytes[lo..lo + f.entry.length as usize];
            // One damaged blob must not cost the rest of the pack: report it and go on.
            if let Err(e) =
                restore_blob(repo, pack, f, sealed, items, dest, opts, progress, written)
            {
                errors.lock().unwrap().push(e.to_string());
            }
        }
        i = j;
    }
    Ok(())
}

/// Writes only the non-zero blocks of `data`: the file was sized in advance, so the
/// skipped zero blocks stay holes.
fn write_sparse(file: &fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: u64 = 4096;
    let mut pos = 0usize;
    while pos < data.len() {
        // Block boundaries follow the file, not the chunk.
        let abs = offset + pos as u64;
        let end = ((abs / BLOCK + 1) * BLOCK - offset).min(data.len() as u64) as usize;
        let start = pos;
        let mut stop = end;
        if data[start..end].iter().all(|b| *b == 0) {
            pos = end;
            continue;
        }
        // Extend the run over following non-zero blocks, so data is written in few calls.
        while stop < data.len() {
            let next = (stop + BLOCK as usize).min(data.len());
            if data[stop..next].iter().all(|b| *b == 0) {
                break;
            }
            stop = next;
        }
        file.write_all_at(&data[start..stop], offset + start as u64)?;
        pos = stop;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn restore_blob(
    repo: &Repository,
    pack: &PackId,
    f: &Fetch,
    sealed: &[u8],
    items: &[Item],
    dest: &(dyn Fn(&Item) -> PathBuf + Sync),
    opts: &RestoreOptions,
    progress: &dyn Progress,
    written: &AtomicU64,
) -> Result<()> {
    let plain = open_blob(repo.key(), &f.entry, sealed).map_err(|e| {
        let files: Vec<String> = f
            .targets
            .iter()
            .map(|(idx, _)| items[*idx].path.display().to_string())
            .collect();
        match in_pack(e, pack) {
            Error::Corrupt { object, reason } => Error::Corrupt {
                object,
                reason: format!("{reason}; affects {}", files.join(", ")),
            },
            e => e,
        }
    })?;
    for (idx, offset) in &f.targets {
        let item = &items[*idx];
        written.fetch_add(plain.len() as u64, Ordering::Relaxed);
        progress.advance(plain.len() as u64);
        if opts.dry_run {
            continue;
        }
        let path = dest(item);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let result = if item.node.sparse {
            write_sparse(&file, &plain, *offset)
        } else {
            file.write_all_at(&plain, *offset)
        };
        result.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn set_metadata(node: &Node, dest: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::io(dest, e);
    if node.kind == NodeKind::Socket {
        return Ok(());
    }
    if util::is_root() {
        std::os::unix::fs::lchown(dest, Some(node.uid), Some(node.gid)).map_err(io)?;
    }
    if node.kind != NodeKind::Symlink {
        fs::set_permissions(dest, fs::Permissions::from_mode(node.mode)).map_err(io)?;
    }
    for x in &node.xattrs {
        let name = OsStr::from_bytes(&x.name);
        if let Err(e) = xattr::set(dest, name, &x.value) {
            // Only user attributes are portable; others need privileges or file systems
            // the target may not have.
            if x.name.starts_with(b"user.") {
                return Err(io(e));
            }
        }
    }
    let t = TimeSpec::new(node.mtime.sec, node.mtime.nsec as _);
    utimensat(None, dest, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|e| io(e.into()))?;
    Ok(())
}

/// Re-reads a restored file and checks every chunk against its id.
fn verify_file(repo: &Repository, node: &Node, dest: &Path) -> Result<()> {
    let mut f = fs::File::open(dest).map_err(|e| Error::io(dest, e))?;
    let mut buf = Vec::new();
    for id in &node.content {
        let len = repo.lookup_blob(id)?.entry.raw_length as usize;
        buf.resize(len, 0);
        f.read_exact(&mut buf).map_err(|e| Error::io(dest, e))?;
        if repo.key().blob_id(&buf) != *id {
            return Err(Error::corrupt(
                dest.display().to_string(),
                "restored content differs from the snapshot",
            ));
        }
    }
    let mut rest = [0u8; 1];
    if f.read(&mut rest).map_err(|e| Error::io(dest, e))? != 0 {
        return Err(Error::corrupt(
            dest.display().to_string(),
            "restored file is longer than in the snapshot",
        ));
    }
    Ok(())
}
