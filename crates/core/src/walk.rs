//! Reading snapshot trees: the one depth-first traversal ([`TreeWalk`]) and path look-ups.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Missing, Result};
use crate::id::TreeId;
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

/// How many files and directories a snapshot's walk may meet: what its summary records,
/// and `MARGIN`. Shared subtrees are legitimate (identical directories dedupe to one
/// tree), but a tree that expands past its own snapshot's counts is a tree bomb (2^40
/// paths from a repository of 68 KB): refused with [`Error::TreeExpands`], after at most
/// that many entries, whatever the walk builds per entry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    tree: TreeId,
    files: (u64, u64),
    dirs: (u64, u64),
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
            tree,
            files: allow(files),
            dirs: allow(dirs),
        }
    }

    /// Counts `kind` against the limits: `seen` holds the files and directories met.
    pub fn count(&self, kind: NodeKind, seen: &mut (u64, u64)) -> Result<()> {
        match kind {
            NodeKind::File => seen.0 += 1,
            NodeKind::Dir => seen.1 += 1,
            _ => return Ok(()),
        }
        self.check_totals(seen.0, seen.1)
    }

    /// Refuses `files` and `dirs` (counted already) past the limits.
    pub fn check_totals(&self, files: u64, dirs: u64) -> Result<()> {
        let sides = [
            (files, self.files, "files"),
            (dirs, self.dirs, "directories"),
        ];
        match sides.into_iter().find(|(n, (_, limit), _)| n > limit) {
            Some((_, (recorded, limit), what)) => Err(Error::TreeExpands {
                tree: self.tree,
                what,
                recorded,
                limit,
            }),
            None => Ok(()),
        }
    }
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
    limits: Option<(Limits, (u64, u64))>,
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
        self.limits = Some((limits, (0, 0)));
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
                Ok(tree) => self.stack.push(Frame {
                    tree: id,
                    dir,
                    entries: tree.entries.into_iter(),
                }),
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
