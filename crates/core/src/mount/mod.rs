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
    /// A tree node's number once its snapshot's nodes were all forgotten: free to take.
    Gone,
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
    /// Those looked up (not listed), each with its name and the links it holds: dropped
    /// once the kernel forgets it, or any number of time names would each cost an inode
    /// for as long as the mount lasts (hostile pass 7).
    at_made: HashMap<u64, (Vec<u8>, Vec<u64>)>,
    /// A tree directory's entries, once listed.
    children: HashMap<u64, Entries>,
    /// The inode of each multiply linked file, by (snapshot, device, inode).
    links: HashMap<(u64, u64, u64), u64>,
    /// Per snapshot (its top inode): what its summary allows, and the files and
    /// directories listed so far. A tree bomb ends in EIO, not in an inode table of 2^40.
    budgets: HashMap<u64, Budget>,
    /// How many times the kernel was handed each tree node (by its inode) and has not
    /// forgotten it yet, and per snapshot (its top inode) how many of its nodes it holds:
    /// a snapshot none of whose nodes the kernel holds any more is dropped whole (see
    /// [`SnapshotFs::evict`]), so what a mount keeps is what the kernel keeps, not every
    /// entry ever listed (hostile pass 6: three crafted snapshots walked took 4 GB).
    lookups: HashMap<u64, u64>,
    held: HashMap<u64, u64>,
    /// The tree nodes made for each snapshot, and the numbers of those dropped.
    members: HashMap<u64, Vec<u64>>,
    free: Vec<u64>,
    /// Seconds of the newest snapshot: the time of the layout's own directories.
    epoch: SystemTime,
    /// The inode of each layout path (`sets/<set>/latest`, `snapshots/<id>`, ...), kept
    /// across refreshes.
    stable: HashMap<Vec<u8>, u64>,
    /// When the snapshots were last listed.
    refreshed: std::time::Instant,
}

/// The `SystemTime` fuser turns into `t` for the kernel. fuser sends a time before 1970
/// as minus the whole seconds before the epoch plus the fraction (`-1.5 s` as `-1` and
/// `500000000`, which is -0.5 s): so such a time is handed over as `-sec` whole seconds and
/// `nsec` before the epoch, which it turns into `sec` and `nsec`, the tree's own floored
/// form. One no `SystemTime` holds (a crafted tree) is the epoch.
fn fuse_time(t: &Timespec) -> SystemTime {
    let at = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(t.sec as u64, 0))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    let nanos = Duration::from_nanos(u64::from(t.nsec));
    let at = match at {
        Some(a) if t.sec >= 0 => a.checked_add(nanos),
        Some(a) => a.checked_sub(nanos),
        None => None,
    };
    at.unwrap_or(UNIX_EPOCH)
}

/// What one snapshot's listings may still add (issue 31, item 7).
struct Budget {
    limits: crate::walk::Limits,
    /// Files and directories listed so far, and the trees listed.
    seen: crate::walk::Seen,
    /// Whether the refusal was said (once: every later listing fails too).
    told: bool,
}

impl Budget {
    fn count(&mut self, repo: &Repository, node: &Node) -> Result<()> {
        let counted = self.limits.count(node.kind, &mut self.seen);
        if let Err(e) = &counted {
            if !std::mem::replace(&mut self.told, true) {
                repo.warn(e.to_string());
            }
        }
        counted
    }
}

/// How often a mount lists the snapshots again, when asked for the layout.
const REFRESH: Duration = Duration::from_secs(5);

/// The directory node of a snapshot's top: its root tree, at the snapshot's time.
fn top_node(id: &SnapshotId, snap: &Snapshot) -> Node {
    let mut top = Node::new(id.to_hex().into_bytes(), NodeKind::Dir);
    top.mode = 0o755;
    top.subtree = Some(snap.tree);
    if let Some(t) = snap.datetime() {
        top.mtime = Timespec {
            sec: t.timestamp(),
            nsec: t.timestamp_subsec_nanos(),
        };
    }
    top
}

impl SnapshotFs {
    /// The layout for the snapshots `filter` accepts.
    pub fn new(repo: Repository, filter: &SnapshotFilter) -> Result<Self> {
        let repo = Arc::new(repo);
        let mut fs = SnapshotFs {
            reader: read::Reader::new(repo.clone())?,
            repo,
            snapshots: Vec::new(),
            filter: filter.clone(),
            now: crate::timespec::now(),
            inodes: Vec::new(),
            at_dir: 0,
            at_lookups: HashMap::new(),
            at_made: HashMap::new(),
            children: HashMap::new(),
            links: HashMap::new(),
            budgets: HashMap::new(),
            lookups: HashMap::new(),
            held: HashMap::new(),
            members: HashMap::new(),
            free: Vec::new(),
            epoch: UNIX_EPOCH,
            stable: HashMap::new(),
            refreshed: std::time::Instant::now(),
        };
        let root = fs.add(Inode::Dir(Vec::new()));
        debug_assert_eq!(root, fuser::FUSE_ROOT_ID);
        fs.snapshots = fs.listed()?;
        fs.lay_out();
        Ok(fs)
    }

    /// The snapshots the filter accepts, oldest first.
    fn listed(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut snapshots: Vec<(SnapshotId, Snapshot)> = self
            .repo
            .snapshots()
            .list()?
            .into_iter()
            .filter(|(_, s)| self.filter.matches(s))
            .collect();
        snapshots.sort_by_key(|(_, s)| s.datetime());
        Ok(snapshots)
    }

    /// Lists the snapshots again (at most every [`REFRESH`]) and, when they changed, lays
    /// the layout out anew: backups made while mounted appear, forgotten ones go.
    fn refresh(&mut self) {
        if self.refreshed.elapsed() < REFRESH {
            return;
        }
        self.refreshed = std::time::Instant::now();
        match self.listed() {
            Ok(now) => {
                let ids =
                    |v: &[(SnapshotId, Snapshot)]| v.iter().map(|(id, _)| *id).collect::<Vec<_>>();
                if ids(&now) != ids(&self.snapshots) {
                    self.snapshots = now;
                    self.at_lookups.clear();
                    self.lay_out();
                }
            }
            Err(e) => self.repo.warn(format!("listing the snapshots again: {e}")),
        }
    }

    /// The inode a layout path keeps across refreshes (the kernel caches what a name
    /// resolves to): its content replaced by `inode`.
    fn place(&mut self, key: Vec<u8>, inode: Inode) -> u64 {
        match self.stable.get(&key) {
            Some(&ino) => {
                self.inodes[ino as usize - 1] = inode;
                ino
            }
            None => {
                let ino = self.add(inode);
                self.stable.insert(key, ino);
                ino
            }
        }
    }

    /// The layout of `self.snapshots` (written over the previous one, inodes kept).
    fn lay_out(&mut self) {
        let snapshots = self.snapshots.clone();
        let mut by_id = Vec::new();
        let mut sets: BTreeMap<String, Entries> = BTreeMap::new();
        let mut hosts: BTreeMap<String, Entries> = BTreeMap::new();
        for (id, snap) in &snapshots {
            let hex = id.to_hex();
            let key = format!("snapshots/{hex}").into_bytes();
            let ino = match self.stable.get(&key) {
                // A snapshot's own directory never changes: its listed children stay.
                Some(&ino) => ino,
                None => {
                    let ino = self.inodes.len() as u64 + 1;
                    let limits = crate::walk::Limits::of(snap);
                    let budget = Budget {
                        limits,
                        seen: Default::default(),
                        told: false,
                    };
                    self.budgets.insert(ino, budget);
                    self.place(
                        key,
                        Inode::Node {
                            node: Box::new(top_node(id, snap)),
                            group: ino,
                        },
                    )
                }
            };
            if let Some(t) = snap.datetime() {
                self.epoch = self
                    .epoch
                    .max(UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64));
            }
            by_id.push((hex.clone().into_bytes(), ino));
            let target = format!("../../snapshots/{hex}").into_bytes();
            let name = snap
                .datetime()
                .map(instant_name)
                .unwrap_or_else(|| snap.time.clone());
            let (dir, top, key) = match &snap.set {
                Some(set) => (&mut sets, "sets", entry_name(set)),
                None => (&mut hosts, "hosts", entry_name(&snap.host)),
            };
            let entries = dir.entry(key.clone()).or_default();
            if snap.set.is_some() {
                let link = self.place(
                    format!("{top}/{key}/{name}").into_bytes(),
                    Inode::Link(target.clone()),
                );
                entries.retain(|(n, _)| *n != name.as_bytes());
                entries.push((name.into_bytes(), link));
            }
            // Oldest first: the last one written is the newest.
            let latest = self.place(
                format!("{top}/{key}/latest").into_bytes(),
                Inode::Link(target),
            );
            entries.retain(|(n, _)| n != b"latest");
            entries.push((b"latest".to_vec(), latest));
        }
        let snapshots_dir = self.place(b"snapshots".to_vec(), Inode::Dir(by_id));
        let sets_dir = self.group("sets", sets);
        let hosts_dir = self.group("hosts", hosts);
        let at_entries = self.at_entries(&snapshots);
        self.at_dir = self.place(b"at".to_vec(), Inode::Dir(at_entries));
        self.inodes[0] = Inode::Dir(vec![
            (b"snapshots".to_vec(), snapshots_dir),
            (b"sets".to_vec(), sets_dir),
            (b"hosts".to_vec(), hosts_dir),
            (b"at".to_vec(), self.at_dir),
        ]);
    }

    /// The entries of `at/`: one per distinct snapshot instant, each keeping its inode.
    fn at_entries(&mut self, snapshots: &[(SnapshotId, Snapshot)]) -> Entries {
        let mut instants: Vec<DateTime<FixedOffset>> =
            snapshots.iter().filter_map(|(_, s)| s.datetime()).collect();
        instants.dedup_by_key(|t| t.timestamp());
        let mut at_entries = Vec::new();
        for t in instants {
            let name = instant_name(t).into_bytes();
            let key = [b"at/".as_slice(), &name].concat();
            let ino = match self.stable.get(&key) {
                Some(&ino) => ino,
                None => {
                    let ino = self.at(t);
                    self.stable.insert(key, ino);
                    ino
                }
            };
            at_entries.push((name, ino));
        }
        at_entries
    }

    /// `sets/` or `hosts/`: a directory per set (or host) of the links `dirs` gives.
    fn group(&mut self, top: &str, dirs: BTreeMap<String, Entries>) -> u64 {
        let entries: Entries = dirs
            .into_iter()
            .map(|(name, entries)| {
                let ino = self.place(format!("{top}/{name}").into_bytes(), Inode::Dir(entries));
                (name.into_bytes(), ino)
            })
            .collect();
        self.place(top.as_bytes().to_vec(), Inode::Dir(entries))
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
        let links = match self.get(ino) {
            Some(Inode::Dir(entries)) => entries.iter().map(|(_, i)| *i).collect(),
            _ => Vec::new(),
        };
        self.at_made.insert(ino, (name.to_vec(), links));
        Some(ino)
    }

    fn add(&mut self, inode: Inode) -> u64 {
        self.inodes.push(inode);
        self.inodes.len() as u64
    }

    /// A tree node of snapshot `group`: under a number dropped before, if there is one.
    fn add_node(&mut self, node: Node, group: u64) -> u64 {
        let inode = Inode::Node {
            node: Box::new(node),
            group,
        };
        let ino = match self.free.pop() {
            Some(ino) => {
                self.inodes[ino as usize - 1] = inode;
                ino
            }
            None => self.add(inode),
        };
        self.members.entry(group).or_default().push(ino);
        ino
    }

    /// The kernel was handed `ino` once more (a lookup's reply).
    fn looked_up(&mut self, ino: u64) {
        if self.at_made.contains_key(&ino) {
            *self.lookups.entry(ino).or_insert(0) += 1;
            return;
        }
        let Some(Inode::Node { group, .. }) = self.get(ino) else {
            return;
        };
        // A snapshot's top is the layout's, kept.
        let group = *group;
        if group == ino {
            return;
        }
        let n = self.lookups.entry(ino).or_insert(0);
        *n += 1;
        if *n == 1 {
            *self.held.entry(group).or_insert(0) += 1;
        }
    }

    /// The kernel forgot `ino` `times` times: once it holds none of a snapshot's nodes,
    /// the snapshot's listed tree is dropped.
    fn forgotten(&mut self, ino: u64, times: u64) {
        let Some(n) = self.lookups.get_mut(&ino) else {
            return;
        };
        *n = n.saturating_sub(times);
        if *n > 0 {
            return;
        }
        self.lookups.remove(&ino);
        if let Some((name, links)) = self.at_made.remove(&ino) {
            if self.at_lookups.get(&name) == Some(&ino) {
                self.at_lookups.remove(&name);
            }
            // Its links go with it: the kernel holds none of them without it.
            for i in std::iter::once(ino).chain(links) {
                self.inodes[i as usize - 1] = Inode::Gone;
                self.free.push(i);
            }
            return;
        }
        let Some(Inode::Node { group, .. }) = self.get(ino) else {
            return;
        };
        let group = *group;
        let held = self.held.entry(group).or_insert(1);
        *held -= 1;
        if *held == 0 {
            self.evict(group);
        }
    }

    /// Drops what was listed of snapshot `group` (the kernel holds none of it): its nodes,
    /// their listings and open-file state, its hard links; its listings count afresh.
    fn evict(&mut self, group: u64) {
        self.held.remove(&group);
        self.children.remove(&group);
        for ino in self.members.remove(&group).unwrap_or_default() {
            self.inodes[ino as usize - 1] = Inode::Gone;
            self.children.remove(&ino);
            self.lookups.remove(&ino);
            self.reader.forget(ino);
            self.free.push(ino);
        }
        self.links.retain(|(g, _, _), _| *g != group);
        if let Some(b) = self.budgets.get_mut(&group) {
            b.seen = Default::default();
            b.told = false;
        }
    }

    fn get(&self, ino: u64) -> Option<&Inode> {
        let inode = self.inodes.get(ino.checked_sub(1)? as usize)?;
        (!matches!(inode, Inode::Gone)).then_some(inode)
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
            let entries = self.repo.trees().load(&tree)?.entries;
            if let Some(budget) = self.budgets.get_mut(&group) {
                budget.seen.read(&tree, entries.len());
            }
            for node in entries {
                // Names that could escape their directory are not shown, as restore
                // does not write them.
                if safe_name(&node, &tree).is_err() {
                    continue;
                }
                if let Some(budget) = self.budgets.get_mut(&group) {
                    budget.count(&self.repo, &node)?;
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
                        let i = self.add_node(node, group);
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
            Inode::Gone => return None,
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
                let time = fuse_time;
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

/// A path that is not there is ENOENT; anything else that fails, a pack or tree lost
/// included, is an I/O error: the file exists, its data cannot be had.
fn errno(e: &crate::error::Error) -> i32 {
    match e {
        crate::error::Error::NotFound {
            what: crate::error::Missing::Path(_),
        } => libc::ENOENT,
        _ => libc::EIO,
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if matches!(self.get(parent), Some(Inode::Dir(_))) {
            self.refresh();
        }
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
                        Some(a) => {
                            self.looked_up(ino);
                            reply.entry(&TTL, &a, 0)
                        }
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

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.forgotten(ino, nlookup);
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
        if offset == 0 && matches!(self.get(ino), Some(Inode::Dir(_))) {
            self.refresh();
        }
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
    use super::*;

    #[test]
    fn times_reach_the_kernel_as_the_tree_has_them() {
        // As fuser converts (ll/reply.rs, time_from_system_time).
        let sent = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (
                -(e.duration().as_secs() as i64),
                e.duration().subsec_nanos(),
            ),
        };
        for (sec, nsec) in [
            (-301_233_601, 500_000_000),
            (-1, 1),
            (-2, 0),
            (0, 7),
            (5, 999_999_999),
        ] {
            assert_eq!(sent(fuse_time(&Timespec { sec, nsec })), (sec, nsec));
        }
        // Beyond what a SystemTime holds: no panic.
        let _ = fuse_time(&Timespec {
            sec: i64::MAX,
            nsec: 999_999_999,
        });
        let _ = fuse_time(&Timespec {
            sec: i64::MIN,
            nsec: 999_999_999,
        });
    }

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
