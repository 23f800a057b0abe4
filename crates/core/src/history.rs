//! Questions about the past, answered from trees alone (hot storage, cached locally; never
//! file data): every version of the paths that match a pattern across snapshots ([`find`]),
//! and what changed between two snapshots ([`diff`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::error::{Error, Missing, Result};
use crate::id::{SnapshotId, TreeId};
use crate::patterns::Patterns;
use crate::repo::snapshot::{Lineage, Snapshot, SnapshotFilter};
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::walk::safe_name;

/// A snapshot as a result names it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SnapshotRef {
    /// Its id.
    pub id: SnapshotId,
    /// Its time (RFC 3339).
    pub time: String,
    /// Its backup set, if any.
    pub set: Option<String>,
    /// The host it was taken on.
    pub host: String,
}

impl SnapshotRef {
    fn of(id: &SnapshotId, s: &Snapshot) -> Self {
        SnapshotRef {
            id: *id,
            time: s.time.clone(),
            set: s.set.clone(),
            host: s.host.clone(),
        }
    }
}

/// What `find` looks for.
#[derive(Clone, Debug, Default)]
pub struct FindOptions {
    /// Paths (absolute in the snapshot) matching any of these.
    pub patterns: Option<Patterns>,
    /// In the snapshots this accepts.
    pub filter: SnapshotFilter,
    /// Taken at or after this instant.
    pub since: Option<DateTime<FixedOffset>>,
    /// Taken at or before this instant.
    pub until: Option<DateTime<FixedOffset>>,
}

/// One version of a path: the same kind, content and metadata from its first to its last
/// snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// The path in the snapshots (shown lossily where it is not UTF-8).
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    /// What it is.
    pub kind: NodeKind,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (RFC 3339).
    pub mtime: String,
    /// The first snapshot holding this version.
    pub first: SnapshotRef,
    /// The last snapshot holding it.
    pub last: SnapshotRef,
    /// How many snapshots hold it.
    pub snapshots: usize,
    /// The lineage of those snapshots (its set, else `host:<host>:<paths>`): versions are
    /// told apart per lineage, as one host's file is not another's.
    pub lineage: String,
    #[serde(skip)]
    signature: u64,
}

fn lossy<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Everything a version is told apart by: kind, content, size and metadata.
fn signature(n: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        n.kind as u8,
        &n.content,
        &n.data,
        n.size,
        n.mode,
        n.uid,
        n.gid,
    )
        .hash(&mut h);
    (n.mtime.sec, n.mtime.nsec, &n.target, n.subtree).hash(&mut h);
    for x in &n.xattrs {
        (&x.name, &x.value).hash(&mut h);
    }
    h.finish()
}

/// A path that matched in some tree, with what versions are told apart by.
struct Match {
    path: Rc<Path>,
    signature: u64,
    kind: NodeKind,
    size: u64,
    mtime: crate::repo::tree::Timespec,
}

/// The matches below one directory, shared by every snapshot whose tree there is the same.
type Matches = Rc<Vec<Rc<Match>>>;

/// What [`find`] found: the versions, and the snapshots it could not search.
#[derive(Debug, Default)]
pub struct Found {
    /// Every version of every path that matched.
    pub versions: Vec<Version>,
    /// Each snapshot whose trees are damaged (or a tree bomb), with why: the others are
    /// searched all the same.
    pub refused: Vec<(SnapshotId, Error)>,
}

/// Every version of every path that matches, across the snapshots selected, oldest
/// snapshot first; a version spans the snapshots in which its path is unchanged. A subtree
/// unchanged between snapshots (same tree id at the same path) is searched once, and its
/// matches are shared, not copied.
pub fn find(repo: &Repository, opts: &FindOptions) -> Result<Found> {
    let mut snapshots: Vec<(DateTime<FixedOffset>, SnapshotId, Snapshot)> = repo
        .snapshots()
        .list()?
        .into_iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .filter_map(|(id, s)| Some((s.datetime()?, id, s)))
        .filter(|(t, _, _)| {
            opts.since.is_none_or(|x| *t >= x) && opts.until.is_none_or(|x| *t <= x)
        })
        .collect();
    snapshots.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut memo: HashMap<(TreeId, PathBuf), Matches> = HashMap::new();
    let mut versions: HashMap<(Lineage, Rc<Path>), Vec<Version>> = HashMap::new();
    let mut refused = Vec::new();
    for (_, id, snap) in &snapshots {
        let here = SnapshotRef::of(id, snap);
        let lineage = snap.lineage();
        let mut budget = Budget::of(crate::walk::Limits::of(snap).named(*id));
        let root = (&snap.tree, Path::new("/"), 1);
        // One damaged snapshot (a key holder's bomb, say) costs only its own versions
        // (hostile pass 7: it failed the search of every lineage).
        let matches = match search(repo, opts, root, &mut memo, &mut budget) {
            Ok(m) => m,
            Err(
                e @ (Error::TreeExpands { .. } | Error::Corrupt { .. } | Error::NotFound { .. }),
            ) => {
                refused.push((*id, e));
                continue;
            }
            Err(e) => return Err(e),
        };
        for m in matches.iter() {
            let list = versions
                .entry((lineage.clone(), m.path.clone()))
                .or_default();
            match list.last_mut() {
                Some(v) if v.signature == m.signature => {
                    v.last = here.clone();
                    v.snapshots += 1;
                }
                _ => list.push(Version {
                    path: m.path.to_path_buf(),
                    kind: m.kind,
                    size: m.size,
                    mtime: DateTime::from_timestamp(m.mtime.sec, m.mtime.nsec)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    first: here.clone(),
                    last: here.clone(),
                    snapshots: 1,
                    lineage: lineage.label(),
                    signature: m.signature,
                }),
            }
        }
    }
    let mut versions: Vec<Version> = versions.into_values().flatten().collect();
    versions.sort_by(|a, b| {
        (a.path.as_os_str().as_bytes(), &a.lineage, &a.first.time).cmp(&(
            b.path.as_os_str().as_bytes(),
            &b.lineage,
            &b.first.time,
        ))
    });
    Ok(Found { versions, refused })
}

/// What one snapshot's walk may still meet (issue 31, item 7): the files and directories
/// its summary records, met so far.
struct Budget {
    limits: crate::walk::Limits,
    seen: crate::walk::Seen,
}

impl Budget {
    fn of(limits: crate::walk::Limits) -> Self {
        Budget {
            limits,
            seen: Default::default(),
        }
    }

    /// Counts `node`, at `path` `depth` levels down in `tree`: an error once the snapshot
    /// expands past its summary, or the entry lies deeper than a path can.
    fn meet(&mut self, tree: &TreeId, path: &Path, node: &Node, depth: usize) -> Result<()> {
        crate::walk::check_depth(tree, path, node, depth)?;
        self.limits.count(node.kind, &mut self.seen)
    }
}

/// The matches below `dir` (tree `tree`, whose entries lie `depth` levels down). A subtree met again (the
/// memo) counts again: a tree bomb multiplies matches without new trees.
fn search(
    repo: &Repository,
    opts: &FindOptions,
    (tree, dir, depth): (&TreeId, &Path, usize),
    memo: &mut HashMap<(TreeId, PathBuf), Matches>,
    budget: &mut Budget,
) -> Result<Matches> {
    if let Some(m) = memo.get(&(*tree, dir.to_path_buf())) {
        for hit in m.iter() {
            budget.limits.count(hit.kind, &mut budget.seen)?;
        }
        return Ok(m.clone());
    }
    let mut out = Vec::new();
    let entries = repo.trees().load(tree)?.entries;
    budget.seen.read(tree, entries.len());
    for node in entries {
        // A name that could escape its directory names no path: skipped, as restore does.
        let Ok(name) = safe_name(&node, tree) else {
            continue;
        };
        let path = dir.join(name);
        // Deeper than a path can be: an error, not a stack overflow.
        budget.meet(tree, &path, &node, depth)?;
        if opts.patterns.as_ref().is_none_or(|p| p.is_match(&path)) {
            out.push(Rc::new(Match {
                path: Rc::from(path.as_path()),
                signature: signature(&node),
                kind: node.kind,
                size: node.size,
                mtime: node.mtime,
            }));
        }
        if let Some(sub) = node.subtree {
            let below = search(repo, opts, (&sub, &path, depth + 1), memo, budget)?;
            out.extend(below.iter().cloned());
        }
    }
    let out = Rc::new(out);
    memo.insert((*tree, dir.to_path_buf()), out.clone());
    Ok(out)
}

/// How a path differs between two snapshots.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// In both, different.
    Changed,
}

/// One path that differs.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The path (shown lossily where it is not UTF-8).
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    /// Added, removed or changed.
    pub change: ChangeKind,
    /// For a change: what differs (`kind`, `content`, `size`, `mode`, `owner`, `mtime`,
    /// `target`, `xattrs`).
    pub what: Vec<&'static str>,
    /// Size in the first snapshot (0 when added).
    pub size_before: u64,
    /// Size in the second (0 when removed).
    pub size_after: u64,
}

/// What changed from one snapshot to another, in numbers (each change itself goes to
/// the caller's sink as the walk meets it: a diff holds no list of them).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DiffTotals {
    /// Paths added, removed and changed.
    pub added: usize,
    /// See `added`.
    pub removed: usize,
    /// See `added`.
    pub changed: usize,
    /// Bytes of files added, and the growth of changed files.
    pub bytes_added: u64,
    /// Bytes of files removed, and the shrinkage of changed files.
    pub bytes_removed: u64,
}

impl DiffTotals {
    fn count(&mut self, c: &Change) {
        match c.change {
            ChangeKind::Added => self.added += 1,
            ChangeKind::Removed => self.removed += 1,
            ChangeKind::Changed => self.changed += 1,
        }
        self.bytes_added += c.size_after.saturating_sub(c.size_before);
        self.bytes_removed += c.size_before.saturating_sub(c.size_after);
    }
}

/// What differs between snapshot `a` and snapshot `b`, below `path` (the whole snapshots
/// when `None`), each change handed to `sink` as the walk meets it: a directory before
/// its entries, the entries of a directory in byte order of their names. Subtrees with
/// equal ids are skipped without being read. Memory stays that of the trees on the way
/// down, whatever the number of changes (two crafted snapshots of 2M deep paths took
/// 7.9 GB when the changes were collected; hostile pass 5). An error from `sink` ends
/// the walk and is returned.
pub fn diff(
    repo: &Repository,
    (a, b): (&Snapshot, &Snapshot),
    path: Option<&Path>,
    sink: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<DiffTotals> {
    let base = path.unwrap_or(Path::new("/")).to_path_buf();
    // The node at `base` (`None` where a snapshot lacks it), or for `/` a directory node
    // holding the root tree.
    let start = |s: &Snapshot| -> Result<Option<Node>> {
        match crate::walk::lookup(repo, &s.tree, &base) {
            Ok(Some(n)) => Ok(Some(n)),
            Ok(None) => {
                let mut root = Node::new(Vec::new(), NodeKind::Dir);
                root.subtree = Some(s.tree);
                Ok(Some(root))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (na, nb) = (start(a)?, start(b)?);
    if na.is_none() && nb.is_none() {
        return Err(Error::not_found(Missing::Path(base)));
    }
    // The root is no entry of its own; any other path given is compared itself too (a
    // file's change is the whole answer).
    let is_root = base
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir));
    let mut differ = Differ {
        repo,
        totals: DiffTotals::default(),
        sink,
        budgets: [a, b].map(|s| Budget::of(crate::walk::Limits::of(s))),
    };
    let depth = base.components().count().saturating_sub(1);
    differ.compare(&base, (na.as_ref(), nb.as_ref()), is_root, depth)?;
    Ok(differ.totals)
}

/// A diff's walk of two trees at once, each counted against its own snapshot's limits.
struct Differ<'r> {
    repo: &'r Repository,
    totals: DiffTotals,
    sink: &'r mut dyn FnMut(Change) -> Result<()>,
    /// The first snapshot's, then the second's.
    budgets: [Budget; 2],
}

/// Which snapshot a node is of, as an index into [`Differ::budgets`].
const FIRST: usize = 0;
const SECOND: usize = 1;

impl Differ<'_> {
    fn compare(
        &mut self,
        path: &Path,
        (a, b): (Option<&Node>, Option<&Node>),
        is_base: bool,
        depth: usize,
    ) -> Result<()> {
        match (a, b) {
            (None, None) => {}
            (Some(n), None) => self.whole(path, n, ChangeKind::Removed, is_base, depth)?,
            (None, Some(n)) => self.whole(path, n, ChangeKind::Added, is_base, depth)?,
            (Some(x), Some(y)) if x.kind != y.kind => {
                self.whole(path, x, ChangeKind::Removed, false, depth)?;
                self.whole(path, y, ChangeKind::Added, false, depth)?;
            }
            (Some(x), Some(y)) => {
                let what = differences(x, y);
                if !what.is_empty() && !is_base {
                    self.record(path, ChangeKind::Changed, what, (x.size, y.size))?;
                }
                if x.subtree != y.subtree {
                    let ea = self.entries(x, path, FIRST, depth)?;
                    let eb = self.entries(y, path, SECOND, depth)?;
                    let mut names: Vec<&Vec<u8>> = ea.keys().chain(eb.keys()).collect();
                    names.sort();
                    names.dedup();
                    for name in names {
                        let child = path.join(std::ffi::OsStr::from_bytes(name));
                        let pair = (ea.get(name), eb.get(name));
                        self.compare(&child, pair, false, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A directory's entries by name (none for anything else), each counted against
    /// snapshot `side`'s limits; names that could escape their directory are left out, as
    /// restore leaves them out.
    fn entries(
        &mut self,
        n: &Node,
        dir: &Path,
        side: usize,
        depth: usize,
    ) -> Result<BTreeMap<Vec<u8>, Node>> {
        let Some(tree) = n.subtree else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        let entries = self.repo.trees().load(&tree)?.entries;
        self.budgets[side].seen.read(&tree, entries.len());
        for e in entries {
            let Ok(name) = safe_name(&e, &tree) else {
                continue;
            };
            self.budgets[side].meet(&tree, &dir.join(name), &e, depth + 1)?;
            out.insert(e.name.clone(), e);
        }
        Ok(out)
    }

    /// Counts a change and hands it to the sink.
    fn record(
        &mut self,
        path: &Path,
        change: ChangeKind,
        what: Vec<&'static str>,
        (size_before, size_after): (u64, u64),
    ) -> Result<()> {
        let c = Change {
            path: path.to_path_buf(),
            change,
            what,
            size_before,
            size_after,
        };
        self.totals.count(&c);
        (self.sink)(c)
    }

    /// A node added or removed, with everything below it.
    fn whole(
        &mut self,
        path: &Path,
        n: &Node,
        change: ChangeKind,
        is_base: bool,
        depth: usize,
    ) -> Result<()> {
        if !is_base {
            let (before, after) = match change {
                ChangeKind::Removed => (n.size, 0),
                _ => (0, n.size),
            };
            self.record(path, change, Vec::new(), (before, after))?;
        }
        let side = match change {
            ChangeKind::Removed => FIRST,
            _ => SECOND,
        };
        for (name, child) in self.entries(n, path, side, depth)? {
            let p = path.join(std::ffi::OsStr::from_bytes(&name));
            self.whole(&p, &child, change, false, depth + 1)?;
        }
        Ok(())
    }
}

/// What differs between two nodes of the same kind (a directory's entries are compared
/// on their own).
fn differences(x: &Node, y: &Node) -> Vec<&'static str> {
    let mut what = Vec::new();
    if x.content != y.content || x.data != y.data {
        what.push("content");
    }
    if x.size != y.size {
        what.push("size");
    }
    if x.mode != y.mode {
        what.push("mode");
    }
    if (x.uid, x.gid) != (y.uid, y.gid) {
        what.push("owner");
    }
    if x.mtime != y.mtime && x.kind != NodeKind::Dir {
        what.push("mtime");
    }
    if x.target != y.target {
        what.push("target");
    }
    if x.xattrs != y.xattrs {
        what.push("xattrs");
    }
    what
}
