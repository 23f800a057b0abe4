//! Reading snapshot trees: depth-first walks and path look-ups.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::TreeId;
use crate::repo::tree::{Node, NodeKind};
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

/// Calls `visit(path, node)` for every node below `root` in depth-first pre-order; paths are
/// relative to the root. `visit` returns whether to descend into a directory.
pub fn walk(
    repo: &Repository,
    root: &TreeId,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    walk_from(repo, root, &PathBuf::new(), visit)
}

fn walk_from(
    repo: &Repository,
    id: &TreeId,
    prefix: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    let tree = repo.load_tree(id)?;
    for node in &tree.entries {
        let path = prefix.join(safe_name(node, id)?);
        let descend = visit(&path, node)?;
        if descend && node.kind == NodeKind::Dir {
            if let Some(sub) = &node.subtree {
                walk_from(repo, sub, &path, visit)?;
            }
        }
    }
    Ok(())
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
    walk_tolerant_from(repo, root, &PathBuf::new(), visit, on_error)
}

fn walk_tolerant_from(
    repo: &Repository,
    id: &TreeId,
    prefix: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    on_error: &mut dyn FnMut(&TreeId, &Path, Error),
) -> Result<()> {
    let tree = match repo.load_tree(id) {
        Ok(t) => t,
        Err(e) => {
            on_error(id, prefix, e);
            return Ok(());
        }
    };
    for node in &tree.entries {
        let name = match safe_name(node, id) {
            Ok(n) => n,
            Err(e) => {
                on_error(id, prefix, e);
                continue;
            }
        };
        let path = prefix.join(name);
        let descend = visit(&path, node)?;
        if descend && node.kind == NodeKind::Dir {
            if let Some(sub) = &node.subtree {
                walk_tolerant_from(repo, sub, &path, visit, on_error)?;
            }
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
            tree_id = node.subtree.ok_or_else(|| Error::NotFound {
                object: format!("{} in the snapshot", path.display()),
            })?;
        }
        let tree = repo.load_tree(&tree_id)?;
        found = Some(
            tree.entries
                .into_iter()
                .find(|n| n.name == name.as_bytes())
                .ok_or_else(|| Error::NotFound {
                    object: format!("{} in the snapshot", path.display()),
                })?,
        );
    }
    Ok(found)
}
