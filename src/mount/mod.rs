//! `mount`: the repository as a read-only file system (FUSE).
//!
//! ```text
//! snapshots/<id>/...           every snapshot, its tree as it was backed up
//! sets/<set>/<time>  -> ../../snapshots/<id>      one link per snapshot of a set
//! sets/<set>/latest  -> ../../snapshots/<id>
//! hosts/<host>/latest -> ../../snapshots/<id>     for snapshots without a set
//! at/<time>/<set>    -> ../../snapshots/<id>      every set as of <time>
//! ```
//!
//! `at/` lists the instants of the snapshots, and takes any other time `--at` takes
//! (`at/2026-03-01 14:30`, `at/2026-03-01T14:30:00+01:00`, `at/2h` from the mount's
//! start): in it, each set (or host, for snapshots without one) links to its newest
//! snapshot at or before that time.
//!
//! Directory listings and attributes come from tree blobs only; file reads go through
//! a reader that fetches pack ranges ahead of the file being read, several in flight.
//! Inodes are handed out as paths are first looked up; the files of a hard-link group in
//! one snapshot share one.

mod read;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyXattr,
    Request,
};

use crate::error::Result;
use crate::id::SnapshotId;
use crate::repo::snapshot::{select_per_lineage, Lineage, Snapshot, SnapshotFilter};
use crate::repo::tree::{Node, NodeKind, Timespec};
use crate::repo::Repository;
use crate::walk::safe_name;

/// Snapshots do not change under a mount: the kernel may cache what it was told.
const TTL: Duration = Duration::from_secs(3600);

/// A directory's entries: names and inodes.
type Entries = Vec<(Vec<u8>, u64)>;

enum Inode {
    /// A directory of the layout, with its entries.
    Dir(Entries),
    /// A link of the layout.
    Link(Vec<u8>),
    /// A node of a snapshot's tree; `group` is the snapshot's own inode (for hard links).
    Node { node: Box<Node>, group: u64 },
}

/// The file system over one open repository.
pub struct SnapshotFs {
    repo: Arc<Repository>,
    reader: read::Reader,
    /// The snapshots shown, oldest first.
    snapshots: Vec<(SnapshotId, Snapshot)>,
    filter: SnapshotFilter,
    /// When the mount began: what relative times under `at/` count from.
    now: DateTime<FixedOffset>,
    inodes: Vec<Inode>,
    /// `at/`, and the instants looked up in it that it does not list.
    at_dir: u64,
    at_lookups: HashMap<Vec<u8>, u64>,
    /// A tree directory's entries, once listed.
    children: HashMap<u64, Entries>,
    /// The inode of each multiply linked file, by (snapshot, device, inode).
    links: HashMap<(u64, u64, u64), u64>,
    /// Seconds of the newest snapshot: the time of the layout's own directories.
    epoch: SystemTime,
}

impl SnapshotFs {
    /// The layout for the snapshots `filter` accepts.
    pub fn new(repo: Repository, filter: &SnapshotFilter) -> Result<Self> {
        let mut snapshots: Vec<(SnapshotId, Snapshot)> = repo
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect();
        snapshots.sort_by_key(|(_, s)| s.datetime());
        let repo = Arc::new(repo);
        let mut fs = SnapshotFs {
            reader: read::Reader::new(repo.clone())?,
            repo,
            snapshots: snapshots.clone(),
            filter: filter.clone(),
            now: crate::timespec::now(),
            inodes: Vec::new(),
            at_dir: 0,
            at_lookups: HashMap::new(),
            children: HashMap::new(),
            links: HashMap::new(),
            epoch: UNIX_EPOCH,
        };
        let root = fs.add(Inode::Dir(Vec::new()));
        debug_assert_eq!(root, fuser::FUSE_ROOT_ID);
        let mut by_id = Vec::new();
        let mut sets: BTreeMap<String, Entries> = BTreeMap::new();
        let mut hosts: BTreeMap<String, Entries> = BTreeMap::new();
        for (id, snap) in &snapshots {
            let mut top = Node::new(id.to_hex().into_bytes(), NodeKind::Dir);
            top.mode = 0o755;
            top.subtree = Some(snap.tree);
            if let Some(t) = snap.datetime() {
                top.mtime = Timespec {
                    sec: t.timestamp(),
                    nsec: t.timestamp_subsec_nanos(),
                };
                fs.epoch = fs
                    .epoch
                    .max(UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64));
            }
            let ino = fs.inodes.len() as u64 + 1;
            fs.add(Inode::Node {
                node: Box::new(top),
                group: ino,
            });
            by_id.push((id.to_hex().into_bytes(), ino));
            let target = format!("../../snapshots/{}", id.to_hex()).into_bytes();
            let name = snap
                .datetime()
                .map(instant_name)
                .unwrap_or_else(|| snap.time.clone());
            let (dir, key) = match &snap.set {
                Some(set) => (&mut sets, set.clone()),
                None => (&mut hosts, snap.host.clone()),
            };
            let entries = dir.entry(key).or_default();
            if snap.set.is_some() {
                let link = fs.add(Inode::Link(target.clone()));
                entries.retain(|(n, _)| *n != name.as_bytes());
                entries.push((name.into_bytes(), link));
            }
            // Oldest first: the last one written is the newest.
            let latest = fs.add(Inode::Link(target));
            entries.retain(|(n, _)| n != b"latest");
            entries.push((b"latest".to_vec(), latest));
        }
        let snapshots_dir = fs.add(Inode::Dir(by_id));
        let group = |fs: &mut SnapshotFs, dirs: BTreeMap<String, Entries>| {
            let entries: Entries = dirs
                .into_iter()
                .map(|(name, entries)| {
                    (entry_name(&name).into_bytes(), fs.add(Inode::Dir(entries)))
                })
                .collect();
            fs.add(Inode::Dir(entries))
        };
        let sets_dir = group(&mut fs, sets);
        let hosts_dir = group(&mut fs, hosts);
        let mut instants: Vec<DateTime<FixedOffset>> =
            snapshots.iter().filter_map(|(_, s)| s.datetime()).collect();
        instants.dedup_by_key(|t| t.timestamp());
        let at_entries = instants
            .into_iter()
            .map(|t| (instant_name(t).into_bytes(), fs.at(t)))
            .collect();
        fs.at_dir = fs.add(Inode::Dir(at_entries));
        fs.inodes[0] = Inode::Dir(vec![
            (b"snapshots".to_vec(), snapshots_dir),
            (b"sets".to_vec(), sets_dir),
            (b"hosts".to_vec(), hosts_dir),
            (b"at".to_vec(), fs.at_dir),
        ]);
        Ok(fs)
    }

    /// A directory of links, one per lineage, to its newest snapshot at or before `t`.
    fn at(&mut self, t: DateTime<FixedOffset>) -> u64 {
        let picks = select_per_lineage(self.snapshots.clone(), Some(t), &self.filter);
        let mut entries: Entries = Vec::new();
        for (lineage, id, _) in picks {
            let mut name = match lineage {
                Lineage::Set(set) => entry_name(&set),
                Lineage::HostPaths { host, .. } => format!("host-{}", entry_name(&host)),
            };
            // Several path lineages of one host: numbered after the first.
            let base = name.clone();
            let mut n = 1;
            while entries.iter().any(|(e, _)| *e == name.as_bytes()) {
                n += 1;
                name = format!("{base}-{n}");
            }
            let link = self.add(Inode::Link(
                format!("../../snapshots/{}", id.to_hex()).into_bytes(),
            ));
            entries.push((name.into_bytes(), link));
        }
        self.add(Inode::Dir(entries))
    }

    /// `at/<name>` for a name `at/` does not list: any time `--at` takes.
    fn at_lookup(&mut self, name: &[u8]) -> Option<u64> {
        if let Some(ino) = self.at_lookups.get(name) {
            return Some(*ino);
        }
        let t = crate::timespec::parse_instant(std::str::from_utf8(name).ok()?, self.now).ok()?;
        // Before the first snapshot there is nothing to show: no such entry.
        if !self
            .snapshots
            .iter()
            .any(|(_, s)| s.datetime().is_some_and(|st| st <= t) && self.filter.matches(s))
        {
            return None;
        }
        let ino = self.at(t);
        self.at_lookups.insert(name.to_vec(), ino);
        Some(ino)
    }

    fn add(&mut self, inode: Inode) -> u64 {
        self.inodes.push(inode);
        self.inodes.len() as u64
    }

    fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(ino.checked_sub(1)? as usize)
    }

    /// A directory's entries, listing a tree the first time.
    fn entries(&mut self, ino: u64) -> Result<Option<Entries>> {
        let (tree, group) = match self.get(ino) {
            Some(Inode::Dir(e)) => return Ok(Some(e.clone())),
            Some(Inode::Node { node, group }) if node.kind == NodeKind::Dir => {
                (node.subtree, *group)
            }
            _ => return Ok(None),
        };
        if let Some(c) = self.children.get(&ino) {
            return Ok(Some(c.clone()));
        }
        let mut out = Vec::new();
        if let Some(tree) = tree {
            for node in self.repo.load_tree(&tree)?.entries {
                // Names that could escape their directory are not shown, as restore
                // does not write them.
                if safe_name(&node, &tree).is_err() {
                    continue;
                }
                let name = node.name.clone();
                let key = (group, node.device, node.inode);
                let shared = (node.kind == NodeKind::File && node.nlink > 1)
                    .then(|| self.links.get(&key).copied())
                    .flatten();
                let child = match shared {
                    Some(i) => i,
                    None => {
                        let multi = node.kind == NodeKind::File && node.nlink > 1;
                        let i = self.add(Inode::Node {
                            node: Box::new(node),
                            group,
                        });
                        if multi {
                            self.links.insert(key, i);
                        }
                        i
                    }
                };
                out.push((name, child));
            }
        }
        self.children.insert(ino, out.clone());
        Ok(Some(out))
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let base = |kind, perm, size: u64| FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.epoch,
            mtime: self.epoch,
            ctime: self.epoch,
            crtime: self.epoch,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Some(match self.get(ino)? {
            Inode::Dir(_) => base(FileType::Directory, 0o555, 0),
            Inode::Link(t) => base(FileType::Symlink, 0o777, t.len() as u64),
            Inode::Node { node: n, .. } => {
                let kind = match n.kind {
                    NodeKind::File => FileType::RegularFile,
                    NodeKind::Dir => FileType::Directory,
                    NodeKind::Symlink => FileType::Symlink,
                    NodeKind::Fifo => FileType::NamedPipe,
                    NodeKind::Socket => FileType::Socket,
                    NodeKind::Chardev => FileType::CharDevice,
                    NodeKind::Blockdev => FileType::BlockDevice,
                };
                let size = match n.kind {
                    NodeKind::Symlink => n.target.as_ref().map_or(0, |t| t.len() as u64),
                    _ => n.size,
                };
                let time = |t: &Timespec| UNIX_EPOCH + Duration::new(t.sec.max(0) as u64, t.nsec);
                FileAttr {
                    mtime: time(&n.mtime),
                    ctime: time(&n.ctime),
                    atime: time(&n.mtime),
                    perm: (n.mode & 0o7777) as u16,
                    uid: n.uid,
                    gid: n.gid,
                    rdev: n.rdev as u32,
                    nlink: if n.kind == NodeKind::Dir {
                        2
                    } else {
                        n.nlink.max(1) as u32
                    },
                    ..base(kind, 0, size)
                }
            }
        })
    }

    fn node(&self, ino: u64) -> Option<Node> {
        match self.get(ino)? {
            Inode::Node { node, .. } => Some((**node).clone()),
            _ => None,
        }
    }
}

fn errno(e: &crate::error::Error) -> i32 {
    match e {
        crate::error::Error::NotFound { .. } => libc::ENOENT,
        _ => libc::EIO,
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.entries(parent) {
            Ok(Some(entries)) => {
                let found = entries
                    .iter()
                    .find(|(n, _)| n.as_slice() == name.as_bytes())
                    .map(|(_, ino)| *ino)
                    .or_else(|| {
                        (parent == self.at_dir)
                            .then(|| self.at_lookup(name.as_bytes()))
                            .flatten()
                    });
                match found {
                    Some(ino) => match self.attr(ino) {
                        Some(a) => reply.entry(&TTL, &a, 0),
                        None => reply.error(libc::ENOENT),
                    },
                    None => reply.error(libc::ENOENT),
                }
            }
            Ok(None) => reply.error(libc::ENOTDIR),
            Err(e) => {
                self.repo.warn(format!("listing a directory: {e}"));
                reply.error(errno(&e))
            }
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.get(ino) {
            Some(Inode::Link(t)) => reply.data(t),
            Some(Inode::Node { node, .. }) if node.kind == NodeKind::Symlink => {
                reply.data(node.target.as_deref().unwrap_or_default())
            }
            _ => reply.error(libc::EINVAL),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(node) = self.node(ino).filter(|n| n.kind == NodeKind::File) else {
            reply.error(libc::EISDIR);
            return;
        };
        match self
            .reader
            .read(ino, &node, offset.max(0) as u64, size as usize)
        {
            Ok(data) => reply.data(&data),
            Err(e) => {
                self.repo.warn(format!("reading a file: {e}"));
                reply.error(errno(&e))
            }
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.entries(ino) {
            Ok(Some(e)) => e,
            Ok(None) => return reply.error(libc::ENOTDIR),
            Err(e) => return reply.error(errno(&e)),
        };
        let all = [(b".".to_vec(), ino), (b"..".to_vec(), ino)]
            .into_iter()
            .chain(entries);
        for (i, (name, child)) in all.enumerate().skip(offset.max(0) as usize) {
            let kind = self.attr(child).map_or(FileType::RegularFile, |a| a.kind);
            if reply.add(child, (i + 1) as i64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let mut names = Vec::new();
        if let Some(n) = self.node(ino) {
            for x in &n.xattrs {
                names.extend_from_slice(&x.name);
                names.push(0);
            }
        }
        xattr_reply(&names, size, reply);
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let value = self.node(ino).and_then(|n| {
            n.xattrs
                .into_iter()
                .find(|x| x.name == name.as_bytes())
                .map(|x| x.value)
        });
        match value {
            Some(v) => xattr_reply(&v, size, reply),
            None => reply.error(libc::ENODATA),
        }
    }
}

/// The size asked about (`size` 0), the data, or ERANGE when it does not fit.
fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() <= size as usize {
        reply.data(data);
    } else {
        reply.error(libc::ERANGE);
    }
}

/// How the layout names an instant: UTC, to the second.
fn instant_name(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A set's or host's name as one directory entry. Names come from snapshots, which a key
/// holder may have crafted: a `/`, a control character, or nothing but dots could not be
/// one entry, so such characters (and `%`, the escape) are shown %-escaped.
fn entry_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '/' || c == '%' || c.is_control() {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    if out.chars().all(|c| c == '.') {
        // "", "." and "..": each dot escaped, the empty name as "%".
        out = if out.is_empty() {
            "%".to_string()
        } else {
            out.replace('.', "%2E")
        };
    }
    out
}

#[cfg(test)]
mod names {
    #[test]
    fn every_name_is_one_entry() {
        for (name, shown) in [
            ("vm", "vm"),
            ("evil/../../x", "evil%2F..%2F..%2Fx"),
            ("", "%"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("a\nb", "a%0Ab"),
            ("50%", "50%25"),
        ] {
            assert_eq!(super::entry_name(name), shown);
        }
    }
}
