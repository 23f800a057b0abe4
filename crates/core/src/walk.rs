//! Reading snapshot trees: the one depth-first traversal ([`TreeWalk`]) and path look-ups.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Missing, Result};
use crate::id::TreeId;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::Repository;

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
        }
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
            let frame = self.stack.last_mut()?;
            let Some(node) = frame.entries.next() else {
                self.stack.pop();
                continue;
            };
            let tree = frame.tree;
            let path = match safe_name(&node, &tree) {
                Ok(name) => frame.dir.join(name),
                Err(error) => {
                    return Some(Visit::Damaged {
                        tree,
                        dir: frame.dir.clone(),
                        error,
                    })
                }
            };
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
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    drive(repo, root, visit, &mut |_, _, e| Err(e))
}

/// As [`walk`], but a tree that cannot be read, or an entry whose name could escape its
/// directory, is reported to `on_error(tree, directory, error)` and skipped, so damage costs
/// only its own subtree. Errors from `visit` still end the walk.
pub fn walk_tolerant(
    repo: &Repository,
    root: &TreeId,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    on_error: &mut dyn FnMut(&TreeId, &Path, Error),
) -> Result<()> {
    drive(repo, root, visit, &mut |tree, dir, e| {
        on_error(tree, dir, e);
        Ok(())
    })
}

/// A [`TreeWalk`] with callbacks; `on_damage` ends the walk by returning an error.
fn drive(
    repo: &Repository,
    root: &TreeId,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    on_damage: &mut dyn FnMut(&TreeId, &Path, Error) -> Result<()>,
) -> Result<()> {
    let mut walk = TreeWalk::new(repo, root);
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
