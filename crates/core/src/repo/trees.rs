//! Trees, read through the cache and fetched a pack at a time.

use super::*;

/// The repository's trees (directories), read through the cache: `repo.trees()`.
pub struct Trees<'r>(&'r Repository);

impl Repository {
    /// The trees.
    pub fn trees(&self) -> Trees<'_> {
        Trees(self)
    }
}

impl Trees<'_> {
    /// A tree, from the cache or else from the repository.
    ///
    /// A miss never fetches one tree blob: it fetches whole tree packs, several in flight,
    /// level by level down the missing tree's subtree (breadth first), and caches every tree
    /// in them. A walk of a snapshot on an empty cache (a bare machine) thus costs about one
    /// request per tree pack instead of one round trip per directory.
    pub fn load(&self, id: &TreeId) -> Result<Tree> {
        let repo = self.0;
        let bytes = match repo.cache.trees().get(id)? {
            Some(b) => b,
            None => {
                repo.fetch_trees_below(id)?;
                repo.cache.trees().get(id)?.ok_or_else(|| {
                    Error::not_found(Missing::Tree {
                        id: *id,
                        in_pack: true,
                    })
                })?
            }
        };
        Tree::decode(&bytes, id)
    }
}

impl Repository {
    /// Caches `root` and the trees below it that are not cached yet, by whole tree packs.
    /// Only the root's own failure is an error: a tree below that cannot be had is left for
    /// its own `Trees::load` to report.
    pub(super) fn fetch_trees_below(&self, root: &TreeId) -> Result<()> {
        let mut fresh: HashSet<TreeId> = HashSet::new();
        let mut seen: HashSet<TreeId> = HashSet::from([*root]);
        let mut level = vec![*root];
        let mut first = true;
        while !level.is_empty() {
            let mut packs: HashSet<PackId> = HashSet::new();
            for id in &level {
                if fresh.contains(id) || self.cache.trees().contains(id)? {
                    continue;
                }
                match self.cache.index().lookup(id)? {
                    Some(loc) => {
                        packs.insert(loc.pack);
                    }
                    None if first => {
                        return Err(Error::not_found(Missing::Tree {
                            id: *id,
                            in_pack: false,
                        }))
                    }
                    None => {}
                }
            }
            let packs: Vec<PackId> = packs.into_iter().collect();
            let fetched: Vec<Result<Vec<TreeId>>> =
                crate::util::with_read_pool(self.backend.as_ref(), || {
                    use rayon::prelude::*;
                    packs.par_iter().map(|p| self.fetch_tree_pack(p)).collect()
                });
            for r in fetched {
                match r {
                    Ok(ids) => fresh.extend(ids),
                    Err(e) if first && !fresh.contains(root) => return Err(e),
                    Err(_) => {}
                }
            }
            if first && !fresh.contains(root) && !self.cache.trees().contains(root)? {
                return Err(Error::corrupt(
                    format!("tree {root}"),
                    "not in the pack the index names",
                ));
            }
            // Only what this call brought in is walked further down: a tree cached before
            // had its own chance, and any miss below it starts a fetch of its own.
            let mut next = Vec::new();
            for id in &level {
                if !fresh.contains(id) {
                    continue;
                }
                let Some(bytes) = self.cache.trees().get(id)? else {
                    continue;
                };
                let Ok(tree) = Tree::decode(&bytes, id) else {
                    continue;
                };
                for node in tree.entries {
                    if let Some(sub) = node.subtree {
                        if seen.insert(sub) {
                            next.push(sub);
                        }
                    }
                }
            }
            level = next;
            first = false;
        }
        Ok(())
    }

    /// Reads a tree pack whole, verifies each tree in it and caches them; returns their ids.
    pub(super) fn fetch_tree_pack(&self, pack: &PackId) -> Result<Vec<TreeId>> {
        let bytes = self.read_pack(pack::BlobKind::Tree, pack)?;
        let trees = self.trees_of_pack(pack, &bytes)?;
        let ids = trees.iter().map(|(id, _)| *id).collect();
        self.cache.trees().put(&trees)?;
        Ok(ids)
    }

    /// The verified plaintext of every tree in a pack's bytes: by its header, or by the
    /// index when the header is damaged. Damaged blobs are left out.
    pub(super) fn trees_of_pack(
        &self,
        pack: &PackId,
        bytes: &[u8],
    ) -> Result<Vec<(TreeId, Vec<u8>)>> {
        let entries = match pack::read_header(&self.key, pack, bytes) {
            Ok(e) => e,
            Err(_) => self.cache.index().pack_blobs(pack)?,
        };
        Ok(entries
            .iter()
            .filter(|e| e.kind == pack::BlobKind::Tree)
            .filter_map(|e| self.open_blob_in(pack, bytes, 0, e).ok().map(|p| (e.id, p)))
            .collect())
    }
}
