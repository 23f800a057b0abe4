//! What a restore writes, chosen as the tree walk streams by and handed out in batches of
//! bounded memory (issue 31, item 7): a snapshot of ten million entries, honest or crafted,
//! is restored with the memory of one batch, the directories open above the walk (its
//! depth) and the first names of hard-linked files.
//!
//! A directory's metadata goes last, once everything below it is written: the walk is
//! depth first, so a directory is complete when the walk leaves it. Those still open when a
//! batch ends are carried (their node and inode) into the next.

use std::collections::HashMap;
use std::mem::size_of;
use std::path::{Path, PathBuf};

use super::target::Ident;
use super::{Fetch, FileSlot, Item, RestoreOptions};
use crate::id::BlobId;
use crate::repo::tree::{Node, NodeKind};

/// Estimated memory of the entries of one batch, by default.
pub(super) const BATCH_BYTES: usize = 16 << 20;

/// First names of hard-linked files remembered; later names of files beyond it are
/// restored as files of their own (with the same content), not linked.
pub(super) const LINKS_MAX: usize = 1 << 20;

/// And the bytes of their paths, at most: paths of 4 KB would make 2^20 of them 4 GB
/// (hostile pass 5).
const LINKS_BYTES: usize = 64 << 20;

/// A directory the walk is in.
struct OpenDir {
    path: PathBuf,
    /// It, or a directory above it, matched the include patterns.
    matched: bool,
    state: DirState,
}

enum DirState {
    /// Not restored yet: nothing below it was chosen so far.
    Pending(Box<Item>),
    /// Item `n` of the current batch.
    Batch(usize),
    /// Restored by an earlier batch.
    Carried(Box<Carried>),
}

/// A directory restored by an earlier batch, whose metadata is still to be applied.
pub(super) struct Carried {
    pub item: Item,
    /// The inode the restore made, `None` for one that was there (it keeps its metadata).
    pub own: Option<Ident>,
}

/// A directory the walk has left: its metadata goes once its batch is written.
pub(super) enum Closed {
    Batch(usize),
    Carried(Box<Carried>),
}

/// The first name of a hard-linked file.
#[derive(Clone)]
enum First {
    Batch(usize),
    Earlier(Earlier),
}

/// The first name of a hard-linked file restored by an earlier batch.
#[derive(Clone, Debug)]
pub(super) struct Earlier {
    /// Its path relative to the target.
    pub rel: PathBuf,
    /// Its inode, `None` if it was not restored exactly (its later names are damaged too).
    pub id: Option<Ident>,
}

/// One batch: the entries to write, parents first, and the directories closed meanwhile.
#[derive(Default)]
pub(super) struct Batch {
    pub items: Vec<Item>,
    pub closed: Vec<Closed>,
}

/// Chooses the entries as the walk visits them.
pub(super) struct Selector<'o> {
    opts: &'o RestoreOptions,
    stack: Vec<OpenDir>,
    links: HashMap<(u64, u64), First>,
    /// The bytes of the paths `links` holds, roughly.
    links_bytes: usize,
    /// Whether [`LINKS_MAX`] or [`LINKS_BYTES`] was met.
    pub links_full: bool,
    batch: Batch,
    bytes: usize,
    budget: usize,
    /// Devices skipped (`no_devices`) and sockets, snapshot paths.
    pub skipped: Vec<PathBuf>,
    pub sockets: Vec<PathBuf>,
}

impl<'o> Selector<'o> {
    pub fn new(opts: &'o RestoreOptions, budget: usize) -> Self {
        Selector {
            opts,
            stack: Vec::new(),
            links: HashMap::new(),
            links_bytes: 0,
            links_full: false,
            batch: Batch::default(),
            bytes: 0,
            budget: budget.max(1),
            skipped: Vec::new(),
            sockets: Vec::new(),
        }
    }

    /// Takes the entry at `rel` (relative to the snapshot's root); returns whether the walk
    /// goes below it.
    pub fn visit(&mut self, rel: &Path, node: &Node) -> bool {
        let path = Path::new("/").join(rel);
        while self
            .stack
            .last()
            .is_some_and(|d| !path.starts_with(&d.path))
        {
            self.close();
        }
        if (self.opts.excludes.as_ref()).is_some_and(|g| g.is_match(&path)) {
            return false;
        }
        // The root is no entry of its own: `--include /` matches all below it.
        let matched = self.stack.last().is_some_and(|d| d.matched)
            || (self.opts.includes.as_ref())
                .is_none_or(|g| g.is_match(&path) || g.is_match(Path::new("/")));
        let item = Item {
            path: path.clone(),
            node: node.clone(),
            link_to: None,
            earlier: None,
        };
        if node.kind == NodeKind::Dir {
            let state = if matched {
                self.emit_parents();
                DirState::Batch(self.push(item))
            } else {
                DirState::Pending(Box::new(item))
            };
            self.stack.push(OpenDir {
                path,
                matched,
                state,
            });
        } else if matched {
            self.emit_parents();
            self.take(item);
        }
        true
    }

    /// Whether the batch is at its budget: to be written before the walk goes on.
    pub fn full(&self) -> bool {
        self.bytes >= self.budget
    }

    /// Whether the batch holds anything to write or finish.
    pub fn is_empty(&self) -> bool {
        self.batch.items.is_empty() && self.batch.closed.is_empty()
    }

    /// The batch to write now.
    pub fn take_batch(&mut self) -> Batch {
        self.bytes = 0;
        std::mem::take(&mut self.batch)
    }

    /// After `items` (the batch taken) were written: directories still open, and first
    /// names of hard-linked files, are remembered by what became of them. `own` is the
    /// inode of a directory the restore made, `exact` that of a file restored exactly.
    pub fn written(
        &mut self,
        items: &[Item],
        own: impl Fn(usize) -> Option<Ident>,
        exact: impl Fn(usize) -> Option<Ident>,
    ) {
        for dir in &mut self.stack {
            if let DirState::Batch(n) = dir.state {
                dir.state = DirState::Carried(Box::new(Carried {
                    item: items[n].clone(),
                    own: own(n),
                }));
            }
        }
        for first in self.links.values_mut() {
            if let First::Batch(n) = *first {
                *first = First::Earlier(Earlier {
                    rel: items[n].rel().to_path_buf(),
                    id: exact(n),
                });
            }
        }
    }

    /// After the walk: every directory still open is complete.
    pub fn end(&mut self) {
        while !self.stack.is_empty() {
            self.close();
        }
    }

    fn close(&mut self) {
        let Some(dir) = self.stack.pop() else {
            return;
        };
        match dir.state {
            DirState::Pending(_) => {}
            DirState::Batch(n) => self.batch.closed.push(Closed::Batch(n)),
            DirState::Carried(c) => {
                self.bytes += cost(&c.item);
                self.batch.closed.push(Closed::Carried(c));
            }
        }
    }

    /// Directories above the entry about to be taken that nothing chose before it.
    fn emit_parents(&mut self) {
        for i in 0..self.stack.len() {
            if matches!(self.stack[i].state, DirState::Pending(_)) {
                let n = self.batch.items.len();
                let DirState::Pending(item) =
                    std::mem::replace(&mut self.stack[i].state, DirState::Batch(n))
                else {
                    unreachable!("matched just above");
                };
                self.push(*item);
            }
        }
    }

    /// Takes a chosen entry other than a directory: skipped, provided, or linked.
    fn take(&mut self, mut item: Item) {
        let n = &item.node;
        if self.opts.recreate.skips(n) {
            return self.skipped.push(item.path);
        }
        if n.kind == NodeKind::Socket {
            return self.sockets.push(item.path);
        }
        if n.kind == NodeKind::File && self.opts.provided.contains(&item.path) {
            return;
        }
        if n.kind == NodeKind::File && n.nlink > 1 && n.inode != 0 {
            let key = (n.device, n.inode);
            match self.links.get(&key) {
                Some(First::Batch(first)) => item.link_to = Some(*first),
                Some(First::Earlier(e)) => item.earlier = Some(e.clone()),
                None if self.links.len() < LINKS_MAX && self.links_bytes < LINKS_BYTES => {
                    let n = self.batch.items.len();
                    self.links_bytes += item.path.as_os_str().len() + 64;
                    self.links.insert(key, First::Batch(n));
                }
                None => self.links_full = true,
            }
        }
        self.push(item);
    }

    fn push(&mut self, item: Item) -> usize {
        self.bytes += cost(&item);
        self.batch.items.push(item);
        self.batch.items.len() - 1
    }
}

/// What an entry costs while its batch is written, roughly: the item, its file slot and
/// directory inode, its blobs' fetches and the heap its node holds.
fn cost(item: &Item) -> usize {
    const FIXED: usize = size_of::<Item>() + size_of::<FileSlot>() + 64;
    const PER_BLOB: usize = size_of::<BlobId>() + size_of::<Fetch>() + 2 * size_of::<u64>();
    let n = &item.node;
    let xattrs: usize = n
        .xattrs
        .iter()
        .map(|x| x.name.len() + x.value.len() + 48)
        .sum();
    FIXED
        + item.path.as_os_str().len()
        + n.name.len()
        + n.content.len() * PER_BLOB
        + n.data.as_ref().map_or(0, Vec::len)
        + n.target.as_ref().map_or(0, Vec::len)
        + n.user.as_ref().map_or(0, String::len)
        + n.group.as_ref().map_or(0, String::len)
        + xattrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::Patterns;

    fn node(name: &str, kind: NodeKind) -> Node {
        Node::new(name.as_bytes().to_vec(), kind)
    }

    fn linked(name: &str, inode: u64) -> Node {
        let mut n = node(name, NodeKind::File);
        (n.nlink, n.inode, n.device) = (2, inode, 1);
        n
    }

    /// Feeds `entries` (paths and nodes, depth first) to a selector with `budget`, writing
    /// each batch as it fills; returns the batches as the paths they hold and close.
    fn batches(
        opts: &RestoreOptions,
        budget: usize,
        entries: &[(&str, Node)],
    ) -> Vec<(Vec<String>, Vec<String>)> {
        let mut sel = Selector::new(opts, budget);
        let mut out = Vec::new();
        let write = |sel: &mut Selector, out: &mut Vec<_>| {
            let batch = sel.take_batch();
            let name = |i: &Item| i.path.display().to_string();
            let closed = (batch.closed.iter())
                .map(|c| match c {
                    Closed::Batch(n) => name(&batch.items[*n]),
                    Closed::Carried(c) => format!("{} (carried)", name(&c.item)),
                })
                .collect();
            let items = (batch.items.iter())
                .map(|i| match (&i.link_to, &i.earlier) {
                    (Some(n), _) => format!("{} -> {}", name(i), name(&batch.items[*n])),
                    (_, Some(e)) => format!("{} => {}", name(i), e.rel.display()),
                    _ => name(i),
                })
                .collect();
            let id = |n: usize| Some(Ident::for_test(n as u64));
            sel.written(&batch.items, id, id);
            out.push((items, closed));
        };
        for (path, node) in entries {
            sel.visit(Path::new(path), node);
            if sel.full() {
                write(&mut sel, &mut out);
            }
        }
        sel.end();
        if !sel.is_empty() {
            write(&mut sel, &mut out);
        }
        out
    }

    fn tree() -> Vec<(&'static str, Node)> {
        vec![
            ("a", node("a", NodeKind::Dir)),
            ("a/one", linked("one", 7)),
            ("a/b", node("b", NodeKind::Dir)),
            ("a/b/two", linked("two", 7)),
            ("c", node("c", NodeKind::Dir)),
            ("c/three", linked("three", 7)),
        ]
    }

    #[test]
    fn one_batch_closes_directories_deepest_first_and_links_by_index() {
        let got = batches(&RestoreOptions::default(), usize::MAX, &tree());
        assert_eq!(got.len(), 1);
        let (items, closed) = &got[0];
        assert_eq!(
            items,
            &[
                "/a",
                "/a/one",
                "/a/b",
                "/a/b/two -> /a/one",
                "/c",
                "/c/three -> /a/one"
            ]
        );
        assert_eq!(closed, &["/a/b", "/a", "/c"]);
    }

    #[test]
    fn batches_of_one_entry_carry_open_directories_and_link_to_earlier_names() {
        let got = batches(&RestoreOptions::default(), 1, &tree());
        let items: Vec<String> = got.iter().flat_map(|b| b.0.clone()).collect();
        assert_eq!(
            items,
            &[
                "/a",
                "/a/one",
                "/a/b",
                "/a/b/two => a/one",
                "/c",
                "/c/three => a/one"
            ]
        );
        assert!(got.iter().all(|b| b.0.len() <= 1), "{got:?}");
        let closed: Vec<String> = got.iter().flat_map(|b| b.1.clone()).collect();
        assert_eq!(closed, &["/a/b (carried)", "/a (carried)", "/c (carried)"]);
    }

    #[test]
    fn an_include_deep_down_brings_its_parents_once_and_nothing_else() {
        let opts = RestoreOptions {
            includes: Patterns::new(&["/a/b/two".into()]).unwrap(),
            ..Default::default()
        };
        for budget in [1, usize::MAX] {
            let got = batches(&opts, budget, &tree());
            let items: Vec<String> = got.iter().flat_map(|b| b.0.clone()).collect();
            assert_eq!(items, &["/a", "/a/b", "/a/b/two"], "budget {budget}");
            let closed: Vec<String> = (got.iter().flat_map(|b| b.1.clone()))
                .map(|c| c.replace(" (carried)", ""))
                .collect();
            assert_eq!(closed, &["/a/b", "/a"], "budget {budget}");
        }
    }

    /// Hostile pass 6 (nit): `--include /` matched nothing, the root being no entry.
    #[test]
    fn an_include_of_the_root_takes_everything() {
        let all = batches(&RestoreOptions::default(), usize::MAX, &tree());
        let opts = RestoreOptions {
            includes: Patterns::new(&["/".into()]).unwrap(),
            ..Default::default()
        };
        let got = batches(&opts, usize::MAX, &tree());
        assert!(!got[0].0.is_empty());
        assert_eq!(got[0].0, all[0].0);
    }

    #[test]
    fn excluded_subtrees_skipped_devices_and_sockets_are_not_written() {
        let mut opts = RestoreOptions {
            excludes: Patterns::new(&["/c".into()]).unwrap(),
            ..Default::default()
        };
        opts.recreate.no_devices = true;
        let mut entries = tree();
        entries.push(("disk", node("disk", NodeKind::Blockdev)));
        entries.push(("sock", node("sock", NodeKind::Socket)));
        let mut sel = Selector::new(&opts, usize::MAX);
        // The walk does not go below an entry whose visit says so.
        for (path, node) in entries.iter().filter(|e| e.0 != "c/three") {
            let descend = sel.visit(Path::new(path), node);
            assert_eq!(descend, *path != "c", "{path}");
        }
        sel.end();
        let batch = sel.take_batch();
        let paths: Vec<_> = batch.items.iter().map(|i| i.path.clone()).collect();
        assert!(!paths.iter().any(|p| p.starts_with("/c")), "{paths:?}");
        assert_eq!(sel.skipped, [PathBuf::from("/disk")]);
        assert_eq!(sel.sockets, [PathBuf::from("/sock")]);
    }

    #[test]
    fn a_batch_is_full_at_its_budget() {
        let opts = RestoreOptions::default();
        let item = Item {
            path: "/f".into(),
            node: node("f", NodeKind::File),
            link_to: None,
            earlier: None,
        };
        let mut sel = Selector::new(&opts, 3 * cost(&item));
        for i in 0..3 {
            assert!(!sel.full(), "after {i}");
            sel.visit(Path::new("f"), &node("f", NodeKind::File));
        }
        assert!(sel.full());
        assert_eq!(sel.take_batch().items.len(), 3);
        assert!(!sel.full() && sel.is_empty());
    }
}
