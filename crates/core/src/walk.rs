//! Reading snapshot trees: the one depth-first traversal ([`TreeWalk`]) and path look-ups.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Expansion, Missing, Result};
use crate::id::{SnapshotId, TreeId};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::Repository;

/// Longest path a walk yields, in bytes: Linux's PATH_MAX less its NUL. No backup stores
/// a longer one (the kernel refuses it to the walker), and each level keeps its path:
/// capped, a crafted chain costs at most `MAX_DEPTH` × `MAX_PATH` bytes, not its depth
/// squared.
pub const MAX_PATH: usize = 4095;
/// Deepest directory level a walk enters: as deep as a path of `MAX_PATH` bytes goes
/// ("a/a/…"). A deeper entry is damage in its tree, skipped with its subtree.
pub const MAX_DEPTH: usize = 2048;
/// What a snapshot's walk may meet beyond its summary's counts: directories leading to
/// the backed-up paths are not counted there (nor a standard-input backup's).
const MARGIN: u64 = 4096;
/// Most files, and most directories, a snapshot's summary may record: 2^32, the most
/// inodes an ext4 file system has. Restoring it would take one item per entry (2^32 of
/// them: hundreds of GB of memory); a summary recording more is damage, not a backup.
pub const MAX_RECORDED: u64 = 1 << 32;
/// Files and directories any walk may meet, however few entries its trees hold.
pub const SHARING_FLOOR: u64 = 1 << 16;
/// How many times over a walk may meet the entries of the distinct trees it has read
/// (past `SHARING_FLOOR`): identical directories share one tree, but a backup holding a
/// directory 256 times over is rare, and a bomb repeats its few entries millions of times.
/// The bound holds whatever the summary claims: the writer cannot lie past the trees
/// the walk actually read. [`set_sharing`] raises it for a repository whose snapshots
/// honestly hold one directory many times over (hard-linked generations).
pub const SHARING: u64 = 256;

static SHARING_NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(SHARING);

/// Sets how many times over a walk of this process may meet the entries it read (the
/// CLI's `--tree-sharing`); at least [`SHARING`]. Memory and time of a walk grow with it.
pub fn set_sharing(times: u64) {
    SHARING_NOW.store(times.max(SHARING), std::sync::atomic::Ordering::Relaxed);
}

/// The sharing bound in force: [`SHARING`] unless [`set_sharing`] raised it.
pub fn sharing() -> u64 {
    SHARING_NOW.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many files and directories a snapshot's walk may meet: what its summary records
/// (at most `MAX_RECORDED`), and `MARGIN`, and at most `SHARING` times the entries of
/// the distinct trees read so far (`SHARING_FLOOR` at least). Shared subtrees are
/// legitimate (identical directories dedupe to one tree), but a tree that expands past
/// these is a tree bomb (2^40 paths from a repository of 68 KB): refused with
/// [`Error::TreeExpands`], after at most that many entries, whatever the walk builds per
/// entry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    snapshot: Option<SnapshotId>,
    tree: TreeId,
    files: (u64, u64),
    dirs: (u64, u64),
    /// The whole tree's expansion passed the sharing bound already ([`expansion`]): the
    /// walk need not judge it from the part read so far.
    shared_ok: bool,
}

/// What a walk has met so far: files, directories, and the distinct trees read with the
/// entries they hold.
#[derive(Debug, Default)]
pub struct Seen {
    met: Expanded,
    trees: HashSet<TreeId>,
    entries: u64,
}

/// Entries of a tree with every shared subtree counted each time it is met: its files and
/// directories (which a summary records), and every other kind (symlinks, FIFOs, sockets,
/// devices: no summary records them, but a bomb repeats them as well; hostile pass 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expanded {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Every other kind.
    pub others: u64,
}

impl Expanded {
    /// The entries of one tree, its subtrees not counted.
    pub fn of(tree: &Tree) -> Self {
        tree.entries.iter().fold(Self::default(), |mut e, n| {
            e.meet(n.kind);
            e
        })
    }

    /// Counts one entry of `kind`.
    pub fn meet(&mut self, kind: NodeKind) {
        let n = match kind {
            NodeKind::File => &mut self.files,
            NodeKind::Dir => &mut self.dirs,
            _ => &mut self.others,
        };
        *n = n.saturating_add(1);
    }

    /// Both counts, added (saturating).
    pub fn plus(self, o: Self) -> Self {
        Expanded {
            files: self.files.saturating_add(o.files),
            dirs: self.dirs.saturating_add(o.dirs),
            others: self.others.saturating_add(o.others),
        }
    }

    /// Every entry.
    pub fn all(&self) -> u64 {
        self.files
            .saturating_add(self.dirs)
            .saturating_add(self.others)
    }
}

impl Seen {
    /// Notes that the walk read `tree`, holding `entries` entries (once per tree).
    pub fn read(&mut self, tree: &TreeId, entries: usize) {
        if self.trees.insert(*tree) {
            self.entries = self.entries.saturating_add(entries as u64);
        }
    }
}

impl Limits {
    /// The limits of `snapshot`'s tree: (recorded, allowed) for files and directories.
    pub fn of(snapshot: &Snapshot) -> Self {
        let s = &snapshot.summary;
        let files = (s.files_new)
            .saturating_add(s.files_changed)
            .saturating_add(s.files_unchanged);
        Self::recorded(snapshot.tree, files, s.dirs)
    }

    /// The limits of a tree whose snapshot records `files` and `dirs` (the fuzz target's
    /// way in, without a snapshot).
    pub(crate) fn recorded(tree: TreeId, files: u64, dirs: u64) -> Self {
        let allow = |n: u64| (n, n.saturating_add(MARGIN));
        Limits {
            snapshot: None,
            tree,
            files: allow(files),
            dirs: allow(dirs),
            shared_ok: false,
        }
    }

    /// The same limits, naming `snapshot` when they refuse it.
    pub fn named(self, snapshot: SnapshotId) -> Self {
        Limits {
            snapshot: Some(snapshot),
            ..self
        }
    }

    /// Counts `kind` against the limits, and `seen`'s distinct entries.
    pub fn count(&self, kind: NodeKind, seen: &mut Seen) -> Result<()> {
        seen.met.meet(kind);
        self.check_totals(seen.met.files, seen.met.dirs)?;
        match self.shared_ok {
            true => Ok(()),
            false => self.check_sharing(seen.met.all(), seen.entries),
        }
    }

    /// Refuses `met` entries (of any kind) from `entries` distinct entries read: more than
    /// [`sharing`] times over (past [`SHARING_FLOOR`]).
    fn check_sharing(&self, met: u64, entries: u64) -> Result<()> {
        let limit = SHARING_FLOOR.max(entries.saturating_mul(sharing()));
        match met > limit {
            true => Err(self.refused(Expansion::Sharing { entries, limit })),
            false => Ok(()),
        }
    }

    /// Refuses a whole tree that expands to `e` from `entries` distinct entries: past the
    /// summary, or past the sharing bound.
    pub fn check_expansion(&self, e: Expanded, entries: u64) -> Result<()> {
        self.check_totals(e.files, e.dirs)?;
        self.check_sharing(e.all(), entries)
    }

    /// Refuses `files` and `dirs` (counted already) past the summary's counts, and a
    /// summary recording more than `MAX_RECORDED`.
    pub fn check_totals(&self, files: u64, dirs: u64) -> Result<()> {
        let sides = [
            (files, self.files, "files"),
            (dirs, self.dirs, "directories"),
        ];
        if let Some((_, (recorded, _), what)) = sides.iter().find(|s| s.1 .0 > MAX_RECORDED) {
            return Err(self.refused(Expansion::Recorded {
                what,
                recorded: *recorded,
            }));
        }
        match sides.into_iter().find(|(n, (_, limit), _)| n > limit) {
            Some((_, (recorded, limit), what)) => Err(self.refused(Expansion::PastSummary {
                what,
                recorded,
                limit,
            })),
            None => Ok(()),
        }
    }

    fn refused(&self, why: Expansion) -> Error {
        Error::TreeExpands {
            snapshot: self.snapshot,
            tree: self.tree,
            why,
        }
    }
}

/// Counts the whole tree below `limits`' root once per distinct tree (a shared subtree
/// counted each time it is met, never path by path) and refuses it as its walk would,
/// before anything is done with it: a restore refuses a bomb before writing its first
/// batch (hostile pass 7). Returns the limits marked so that the walk no longer judges
/// sharing by the part read so far. A tree that cannot be read counts nothing (its walk
/// reports it), unless the repository is gone. Memory: one count per distinct tree, and
/// the subtree ids of the trees on the current path.
pub fn expansion(repo: &Repository, limits: Limits) -> Result<Limits> {
    expansion_with(&mut |id| repo.trees().load(id), limits)
}

/// A tree as its expansion sees it: its own entries by kind, how many, and its subtrees.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Its own entries, its subtrees' not counted.
    pub own: Expanded,
    /// How many entries it holds.
    pub entries: u64,
    /// The subtree of each directory entry, in order.
    pub subtrees: Box<[TreeId]>,
}

impl Shape {
    /// The shape of `tree`.
    pub fn of(tree: &Tree) -> Self {
        Shape {
            own: Expanded::of(tree),
            entries: tree.entries.len() as u64,
            subtrees: tree.entries.iter().filter_map(|n| n.subtree).collect(),
        }
    }
}

/// The expansions of trees (every shared subtree counted each time it is met), one count
/// per distinct tree, kept across roots: never path by path, whatever the sharing. The
/// one count `restore`, the other walks and `check` share.
#[derive(Default)]
pub struct Expansions {
    totals: HashMap<TreeId, Expanded>,
}

/// A tree being counted, with the next of its subtrees to enter.
struct Open {
    tree: TreeId,
    shape: Shape,
    next: usize,
}

impl Open {
    /// Puts `tree` on the path, if it loads.
    fn enter(
        load: &mut dyn FnMut(&TreeId) -> Result<Option<Shape>>,
        tree: TreeId,
        stack: &mut Vec<Open>,
        on_path: &mut HashSet<TreeId>,
    ) -> Result<()> {
        if let Some(shape) = load(&tree)? {
            on_path.insert(tree);
            stack.push(Open {
                tree,
                shape,
                next: 0,
            });
        }
        Ok(())
    }
}

impl Expansions {
    /// The expansion of `root`, saturating. `load` gives a tree's shape, or `None` for
    /// one that counts nothing (it could not be read); `done` judges each tree's total as
    /// it is complete, and its error ends the count. A tree on the current path (a cycle,
    /// which only a forged id could make) and a level deeper than the walk enters count
    /// nothing. Post-order on an explicit stack: a 50,000-deep chain needs no deep
    /// recursion; memory is one count per tree and the subtree ids on the current path.
    pub fn of(
        &mut self,
        root: TreeId,
        load: &mut dyn FnMut(&TreeId) -> Result<Option<Shape>>,
        done: &mut dyn FnMut(Expanded) -> Result<()>,
    ) -> Result<Expanded> {
        let mut stack: Vec<Open> = Vec::new();
        let mut on_path: HashSet<TreeId> = HashSet::new();
        if !self.totals.contains_key(&root) {
            Open::enter(load, root, &mut stack, &mut on_path)?;
        }
        while let Some(top) = stack.last_mut() {
            if let Some(&sub) = top.shape.subtrees.get(top.next) {
                top.next += 1;
                let deep = stack.len() >= MAX_DEPTH;
                if !(self.totals.contains_key(&sub) || on_path.contains(&sub) || deep) {
                    Open::enter(load, sub, &mut stack, &mut on_path)?;
                }
                continue;
            }
            let open = stack.pop().expect("the loop's top");
            on_path.remove(&open.tree);
            let total = (open.shape.subtrees.iter()).fold(open.shape.own, |t, s| {
                t.plus(self.totals.get(s).copied().unwrap_or_default())
            });
            done(total)?;
            self.totals.insert(open.tree, total);
        }
        Ok(self.totals.get(&root).copied().unwrap_or_default())
    }
}

fn expansion_with(load: &mut dyn FnMut(&TreeId) -> Result<Tree>, limits: Limits) -> Result<Limits> {
    let mut entries = 0u64;
    // A tree that could not be read is not counted: its walk keeps judging sharing by what
    // it has read, should it be read then (hostile pass 8: a bomb below a tree that failed
    // here, then loaded, met the summary's bound only).
    let mut whole = true;
    let mut shape = |id: &TreeId| match load(id) {
        Ok(tree) => {
            entries = entries.saturating_add(tree.entries.len() as u64);
            Ok(Some(Shape::of(&tree)))
        }
        Err(e @ Error::NoRepository(_)) => Err(e),
        Err(_) => {
            whole = false;
            Ok(None)
        }
    };
    // A subtree holds no more than its snapshot: refused as soon as one is over.
    let mut judge = |t: Expanded| limits.check_totals(t.files, t.dirs);
    let total = Expansions::default().of(limits.tree, &mut shape, &mut judge)?;
    limits.check_expansion(total, entries)?;
    Ok(Limits {
        shared_ok: whole,
        ..limits
    })
}

/// Refuses an entry at `path`, `depth` levels down, that no file system could hold.
pub fn check_depth(tree: &TreeId, path: &Path, node: &Node, depth: usize) -> Result<()> {
    let reason = if path.as_os_str().len() > MAX_PATH {
        format!("a path longer than {MAX_PATH} bytes (PATH_MAX)")
    } else if node.kind == NodeKind::Dir && depth >= MAX_DEPTH {
        format!("a directory deeper than {MAX_DEPTH} levels")
    } else {
        return Ok(());
    };
    let shown: String = path.to_string_lossy().chars().take(64).collect();
    Err(Error::corrupt(
        format!("tree {tree}"),
        format!("entry {shown}…: {reason}: skipped with what it holds"),
    ))
}

/// Inline bytes only on a file, and never beside content blobs (format-spec §8: such a
/// node is corrupt, whatever a reader would make of it).
fn check_inline(tree: &TreeId, node: &Node) -> Result<()> {
    if node.data.is_none() || (node.kind == NodeKind::File && node.content.is_empty()) {
        return Ok(());
    }
    Err(Error::corrupt(
        format!("tree {tree}"),
        format!(
            "entry {:?}: inline data on a {:?} node or beside content blobs",
            String::from_utf8_lossy(&node.name),
            node.kind
        ),
    ))
}

/// A name from a tree, refused if it could escape its directory.
pub fn safe_name<'n>(node: &'n Node, tree: &TreeId) -> Result<&'n OsStr> {
    let n = &node.name;
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
        return Err(Error::corrupt(
            format!("tree {tree}"),
            format!("invalid entry name {:?}", String::from_utf8_lossy(n)),
        ));
    }
    Ok(OsStr::from_bytes(n))
}

/// Loads a tree by id: [`Trees::load`](crate::Trees::load), or a caller's own (prune also reads
/// trees from packs an earlier prune marked).
pub type TreeLoader<'a> = Box<dyn FnMut(&TreeId) -> Result<Tree> + 'a>;

/// What a [`TreeWalk`] meets.
pub enum Visit {
    /// A node, with its path relative to the walk's root and the tree that holds it.
    Node {
        /// The path relative to the walk's root.
        path: PathBuf,
        /// The node.
        node: Node,
        /// The tree that holds it.
        tree: TreeId,
    },
    /// A tree that cannot be read (its subtree is skipped), or an entry of `tree` whose
    /// name could escape its directory (that entry is skipped).
    Damaged {
        /// The tree.
        tree: TreeId,
        /// Its path relative to the walk's root.
        dir: PathBuf,
        /// Why.
        error: Error,
    },
}

/// Every node below a root, depth-first pre-order, each with its path: the one traversal
/// that listing, restore, check and prune share. After a directory's node, the walk goes
/// into it unless [`TreeWalk::skip_subtree`] is called first. Memory: one tree per level.
pub struct TreeWalk<'a> {
    load: TreeLoader<'a>,
    stack: Vec<Frame>,
    /// The directory just yielded, entered on the next step.
    enter: Option<(PathBuf, TreeId)>,
    /// The snapshot's counts, and the files and directories met so far.
    limits: Option<(Limits, Seen)>,
}

struct Frame {
    tree: TreeId,
    dir: PathBuf,
    entries: std::vec::IntoIter<Node>,
}

impl<'a> TreeWalk<'a> {
    /// A walk of the tree `root` of `repo`.
    pub fn new(repo: &'a Repository, root: &TreeId) -> Self {
        Self::with_loader(Box::new(move |id| repo.trees().load(id)), root)
    }

    /// A walk that loads trees through `load` (tests damage them on the way).
    pub fn with_loader(load: TreeLoader<'a>, root: &TreeId) -> Self {
        TreeWalk {
            load,
            stack: Vec::new(),
            enter: Some((PathBuf::new(), *root)),
            limits: None,
        }
    }

    /// Ends the walk with [`Error::TreeExpands`] (as damage of the tree holding the entry
    /// too many) once it meets more than `limits` allow.
    pub fn limited(mut self, limits: Limits) -> Self {
        self.limits = Some((limits, Seen::default()));
        self
    }

    /// Does not go into the directory whose node was yielded last.
    pub fn skip_subtree(&mut self) {
        self.enter = None;
    }
}

impl Iterator for TreeWalk<'_> {
    type Item = Visit;

    fn next(&mut self) -> Option<Visit> {
        if let Some((dir, id)) = self.enter.take() {
            match (self.load)(&id) {
                Ok(tree) => {
                    if let Some((_, seen)) = &mut self.limits {
                        seen.read(&id, tree.entries.len());
                    }
                    self.stack.push(Frame {
                        tree: id,
                        dir,
                        entries: tree.entries.into_iter(),
                    })
                }
                Err(error) => {
                    return Some(Visit::Damaged {
                        tree: id,
                        dir,
                        error,
                    })
                }
            }
        }
        loop {
            let depth = self.stack.len();
            let frame = self.stack.last_mut()?;
            let Some(node) = frame.entries.next() else {
                self.stack.pop();
                continue;
            };
            let tree = frame.tree;
            let checked = safe_name(&node, &tree)
                .map(|name| frame.dir.join(name))
                .and_then(|path| check_depth(&tree, &path, &node, depth).map(|()| path))
                .and_then(|path| check_inline(&tree, &node).map(|()| path));
            let path = match checked {
                Ok(path) => path,
                Err(error) => {
                    return Some(Visit::Damaged {
                        tree,
                        dir: frame.dir.clone(),
                        error,
                    })
                }
            };
            if let Some((limits, seen)) = &mut self.limits {
                if let Err(error) = limits.count(node.kind, seen) {
                    // The whole snapshot is refused: nothing more of it is walked.
                    let dir = self.stack.pop().map(|f| f.dir).unwrap_or_default();
                    self.stack.clear();
                    return Some(Visit::Damaged { tree, dir, error });
                }
            }
            if node.kind == NodeKind::Dir {
                self.enter = node.subtree.map(|sub| (path.clone(), sub));
            }
            return Some(Visit::Node { path, node, tree });
        }
    }
}

/// Calls `visit(path, node)` for every node below `root` in depth-first pre-order; paths are
/// relative to the root. `visit` returns whether to descend into a directory. The first
/// damaged tree or entry name ends the walk with its error.
pub fn walk(
    repo: &Repository,
    root: &TreeId,
    limits: Limits,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    drive(
        TreeWalk::new(repo, root).limited(limits),
        visit,
        &mut |_, _, e| Err(e),
    )
}

/// As [`walk`], but a tree that cannot be read, or an entry whose name could escape its
/// directory (or lies too deep), is reported to `on_error(tree, directory, error)` and
/// skipped, so damage costs only its own subtree. Errors from `visit` still end the walk,
/// and so does [`Error::TreeExpands`] (after its `on_error`).
pub fn walk_tolerant(
    repo: &Repository,
    root: &TreeId,
    limits: Limits,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    on_error: &mut dyn FnMut(&TreeId, &Path, Error),
) -> Result<()> {
    let walk = TreeWalk::new(repo, root).limited(limits);
    drive(walk, visit, &mut |tree, dir, e| {
        on_error(tree, dir, e);
        Ok(())
    })
}

/// A [`TreeWalk`] with callbacks; `on_damage` ends the walk by returning an error.
fn drive(
    mut walk: TreeWalk<'_>,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    on_damage: &mut dyn FnMut(&TreeId, &Path, Error) -> Result<()>,
) -> Result<()> {
    while let Some(v) = walk.next() {
        match v {
            Visit::Node { path, node, .. } => {
                if !visit(&path, &node)? {
                    walk.skip_subtree();
                }
            }
            Visit::Damaged { tree, dir, error } => on_damage(&tree, &dir, error)?,
        }
    }
    Ok(())
}

/// The node at `path` (absolute in the snapshot, e.g. `/srv/data/file`); `None` for `/`.
pub fn lookup(repo: &Repository, root: &TreeId, path: &Path) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found: Option<Node> = None;
    for comp in path.components() {
        let name = match comp {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n,
            _ => return Err(Error::NotAbsolute(path.to_path_buf())),
        };
        if let Some(node) = &found {
            tree_id = node
                .subtree
                .ok_or_else(|| Error::not_found(Missing::Path(path.to_path_buf())))?;
        }
        let tree = repo.trees().load(&tree_id)?;
        found = Some(
            tree.entries
                .into_iter()
                .find(|n| n.name == name.as_bytes())
                .ok_or_else(|| Error::not_found(Missing::Path(path.to_path_buf())))?,
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn node(kind: NodeKind, data: Option<&[u8]>, blobs: usize) -> Node {
        let mut n = Node::new(b"n".to_vec(), kind);
        n.data = data.map(<[u8]>::to_vec);
        n.content = vec![BlobId([7; 32]); blobs];
        n
    }

    fn tid(i: u32) -> TreeId {
        let mut b = [0; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        BlobId(b)
    }

    /// A root (tree 0) of `shared` directories over one tree of 1000 files (tree 1), then
    /// `distinct` directories over a tree of 1000 files each.
    fn dirs(shared: u32, distinct: u32) -> impl FnMut(&TreeId) -> Result<Tree> + Clone {
        move |t: &TreeId| {
            let dir = |name: String, sub: u32| {
                let mut d = Node::new(name.into_bytes(), NodeKind::Dir);
                d.subtree = Some(tid(sub));
                d
            };
            let entries = if *t == tid(0) {
                let shared = (0..shared).map(|i| dir(format!("s{i}"), 1));
                shared
                    .chain((0..distinct).map(|i| dir(format!("d{i}"), i + 2)))
                    .collect()
            } else {
                let file = |i: u32| Node::new(format!("f{i}").into_bytes(), NodeKind::File);
                (0..1000).map(file).collect()
            };
            Ok(Tree { entries })
        }
    }

    /// Walks a root of `dirs` directories, each over a tree of 1000 files: its own tree
    /// each (`shared` false) or all the same one. Returns the nodes met and the error.
    fn walk_dirs(dirs: u32, shared: bool) -> (u64, Option<Error>) {
        let (s, d) = if shared { (dirs, 0) } else { (0, dirs) };
        let limits = Limits::recorded(tid(0), u64::from(dirs) * 1000, u64::from(dirs));
        walk_with(Box::new(self::dirs(s, d)), limits)
    }

    fn walk_with(load: TreeLoader<'static>, limits: Limits) -> (u64, Option<Error>) {
        let (mut nodes, mut error) = (0, None);
        for v in TreeWalk::with_loader(load, &tid(0)).limited(limits) {
            match v {
                Visit::Node { .. } => nodes += 1,
                Visit::Damaged { error: e, .. } => error = Some(e),
            }
        }
        (nodes, error)
    }

    /// The whole tree is judged before it is walked, each distinct tree read once: a
    /// bomb is refused as the walk would refuse it, an honest tree passes.
    #[test]
    fn expansion_judges_the_whole_tree_reading_each_tree_once() {
        let _one = SHARING_SET.lock().unwrap_or_else(|p| p.into_inner());
        let count = |shared: u32, recorded: u64| {
            let mut load = dirs(shared, 0);
            let mut loads = 0;
            let mut counted = |t: &TreeId| {
                loads += 1;
                load(t)
            };
            let limits = Limits::recorded(tid(0), recorded, u64::from(shared));
            let r = expansion_with(&mut counted, limits.named(SnapshotId([9; 32])));
            (r, loads)
        };
        let (r, loads) = count(250, 250_000);
        assert!(r.unwrap().shared_ok);
        assert_eq!(loads, 2);
        let (r, loads) = count(400, 400_000);
        let e = r.unwrap_err();
        let Error::TreeExpands { why, snapshot, .. } = &e else {
            panic!("{e}")
        };
        let entries = 400 + 1000;
        assert_eq!(
            *why,
            Expansion::Sharing {
                entries,
                limit: entries * SHARING
            }
        );
        assert_eq!(*snapshot, Some(SnapshotId([9; 32])));
        assert!(e.to_string().starts_with("snapshot 09090909 (tree "), "{e}");
        assert_eq!(loads, 2);
        let (r, _) = count(250, 1000);
        let e = r.unwrap_err();
        assert!(matches!(
            e,
            Error::TreeExpands {
                why: Expansion::PastSummary { .. },
                ..
            }
        ));
    }

    /// A chain of 64 levels, each tree naming the next twice: 2^64 paths from 128
    /// entries, counted (saturating) in 64 loads and refused; a cycle counts nothing.
    #[test]
    fn expansion_of_a_bomb_or_a_cycle_ends() {
        let mut loads = 0;
        let mut load = |t: &TreeId| {
            loads += 1;
            let level = u32::from_le_bytes(t.0[..4].try_into().unwrap());
            let next = |name: &[u8]| {
                let mut d = Node::new(name.to_vec(), NodeKind::Dir);
                // The last level names the root again: a cycle.
                d.subtree = Some(tid((level + 1) % 64));
                d
            };
            Ok(Tree {
                entries: vec![next(b"a"), next(b"b")],
            })
        };
        let limits = Limits::recorded(tid(0), MAX_RECORDED, MAX_RECORDED);
        let e = expansion_with(&mut load, limits).unwrap_err();
        assert!(matches!(e, Error::TreeExpands { .. }), "{e}");
        assert_eq!(loads, 64);
    }

    /// Hostile pass 8: a bomb of symlinks (no summary counts them) under 22 levels of two
    /// directories naming the same subtree: every kind counts, so the count refuses it
    /// from 23 trees, and so does the walk within the sharing bound.
    #[test]
    fn a_bomb_of_symlinks_is_refused() {
        let _one = SHARING_SET.lock().unwrap_or_else(|p| p.into_inner());
        let mut load = |t: &TreeId| {
            let level = u32::from_le_bytes(t.0[..4].try_into().unwrap());
            let entries = match level {
                22 => (0..60_000)
                    .map(|i| Node::new(format!("l{i}").into_bytes(), NodeKind::Symlink))
                    .collect(),
                _ => [b"a", b"b"]
                    .map(|name| {
                        let mut d = Node::new(name.to_vec(), NodeKind::Dir);
                        d.subtree = Some(tid(level + 1));
                        d
                    })
                    .to_vec(),
            };
            Ok(Tree { entries })
        };
        // The summary records the directories honestly.
        let limits = Limits::recorded(tid(0), 0, 1 << 23);
        let e = expansion_with(&mut load, limits).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TreeExpands {
                    why: Expansion::Sharing { .. },
                    ..
                }
            ),
            "{e}"
        );
        let (nodes, error) = walk_with(Box::new(load), limits);
        assert!(
            matches!(error, Some(Error::TreeExpands { .. })),
            "{error:?}"
        );
        assert!(nodes <= 256 * 60_100, "{nodes} met");
    }

    /// Hostile pass 8: a tree the count could not read (a hostile endpoint failing it
    /// once) leaves the walk judging sharing by what it has read, should it load then.
    #[test]
    fn a_tree_the_count_missed_leaves_the_walk_judging_sharing() {
        let _one = SHARING_SET.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = dirs(700, 1000);
        let mut failed = false;
        let mut once = |t: &TreeId| match *t == tid(1) && !std::mem::replace(&mut failed, true) {
            true => Err(Error::corrupt("tree", "not now")),
            false => all(t),
        };
        let limits = Limits::recorded(tid(0), 1_700_000, 1700);
        let counted = expansion_with(&mut once, limits).unwrap();
        assert!(!counted.shared_ok);
        let (_, error) = walk_with(Box::new(dirs(700, 1000)), counted);
        assert!(
            matches!(error, Some(Error::TreeExpands { .. })),
            "{error:?}"
        );
    }

    /// A tree repeating one directory 700 times before its thousand distinct ones: the
    /// walk alone refuses it at the repeats (judged by the part read so far); judged
    /// whole first, it walks whole.
    #[test]
    fn a_tree_judged_whole_is_not_refused_by_its_first_part() {
        let _one = SHARING_SET.lock().unwrap_or_else(|p| p.into_inner());
        let limits = Limits::recorded(tid(0), 1_700_000, 1700);
        let (_, error) = walk_with(Box::new(dirs(700, 1000)), limits);
        assert!(
            matches!(error, Some(Error::TreeExpands { .. })),
            "{error:?}"
        );
        let whole = expansion_with(&mut dirs(700, 1000), limits).unwrap();
        let (nodes, error) = walk_with(Box::new(dirs(700, 1000)), whole);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(nodes, 1_701_700);
    }

    /// An honest snapshot of a million distinct files walks whole; so does one sharing a
    /// directory 250 times.
    #[test]
    fn a_million_files_or_honest_sharing_walk_whole() {
        let (nodes, error) = walk_dirs(1000, false);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(nodes, 1_001_000);
        let (nodes, error) = walk_dirs(250, true);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(nodes, 250_250);
    }

    /// The tests that depend on the process-wide sharing bound, one at a time.
    static SHARING_SET: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Past 256 times over the entries read, the walk ends, whatever the summary says.
    #[test]
    fn sharing_past_256_times_is_refused() {
        let _one = SHARING_SET.lock().unwrap_or_else(|p| p.into_inner());
        let (nodes, error) = walk_dirs(400, true);
        let Some(Error::TreeExpands { why, .. }) = error else {
            panic!("{error:?}");
        };
        let entries = 400 + 1000;
        let limit = entries * SHARING;
        assert_eq!(why, Expansion::Sharing { entries, limit });
        assert_eq!(nodes, limit);
    }

    /// Hostile pass 4: 600 hard-linked generations of one directory (rsnapshot) are one
    /// shared tree, honestly; `--tree-sharing` raises the bound for such a repository, and
    /// never below the default.
    #[test]
    fn a_raised_sharing_bound_walks_honest_generations() {
        let _one = SHARING_SET.lock().unwrap_or_else(|p| p.into_inner());
        set_sharing(1024);
        let (nodes, error) = walk_dirs(400, true);
        set_sharing(1);
        assert_eq!(sharing(), SHARING, "never below the default");
        assert!(error.is_none(), "{error:?}");
        assert_eq!(nodes, 400 * 1000 + 400);
    }

    /// A summary recording more than any snapshot holds is refused at its first entry.
    #[test]
    fn a_summary_past_the_maximum_is_refused() {
        let limits = Limits::recorded(tid(0), 1, MAX_RECORDED + 1);
        let e = limits
            .count(NodeKind::File, &mut Seen::default())
            .unwrap_err();
        assert!(
            e.to_string().contains("more than any snapshot holds"),
            "{e}"
        );
        let at_max = Limits::recorded(tid(0), MAX_RECORDED, MAX_RECORDED);
        assert!(at_max.count(NodeKind::File, &mut Seen::default()).is_ok());
    }

    /// Inline bytes belong to a file without blobs only (a key holder's tree may put
    /// them anywhere).
    #[test]
    fn inline_data_is_refused_off_a_plain_file() {
        let tree: TreeId = BlobId([1; 32]);
        let ok = |n: &Node| check_inline(&tree, n).is_ok();
        assert!(ok(&node(NodeKind::File, Some(b"x"), 0)));
        assert!(ok(&node(NodeKind::File, None, 2)));
        assert!(ok(&node(NodeKind::Dir, None, 0)));
        assert!(!ok(&node(NodeKind::File, Some(b"x"), 1)), "beside blobs");
        for kind in [NodeKind::Dir, NodeKind::Symlink, NodeKind::Fifo] {
            assert!(!ok(&node(kind, Some(b"x"), 0)), "{kind:?}");
        }
        let e = check_inline(&tree, &node(NodeKind::Dir, Some(b""), 0)).unwrap_err();
        assert!(e.to_string().contains("inline data on a Dir node"), "{e}");
    }
}
