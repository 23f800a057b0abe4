//! `copy`: snapshots of one repository into another (a second site, with its own password,
//! keys and storage classes), incrementally.
//!
//! Blob ids are keyed (format-spec §4), so the same plaintext has another id in another
//! repository: a copy reads what the destination lacks, names it under the destination's
//! key, and rewrites the trees above it. The ids found are remembered in the
//! destination's cache (a pure function of the plaintext, so never stale), which keeps a
//! copy's requests proportional to what is new. Each copied snapshot carries the extension
//! `copy` naming its source (format-spec §9.2): a rerun skips those already there.
//!
//! Write order holds as in a backup: the destination's packs, then their index files, then
//! its snapshots. A copy killed mid-way leaves indexed packs the rerun does not upload again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, FixedOffset};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, RepoId, SnapshotId, TreeId};
use crate::repo::cache::BlobLocation;
use crate::repo::pack::BlobKind;
use crate::repo::saver::{BlobSaver, SaverShared};
use crate::repo::tree::{NodeKind, Tree};
use crate::repo::Repository;
use crate::restore::{MAX_GAP, MAX_RANGE};
use crate::{Lineage, Progress, Snapshot};

mod roots;
pub use roots::{plan_roots, RootPlan, RootToCopy};

/// The snapshot extension naming where a copied snapshot came from.
pub const EXTENSION: &str = "copy";

/// The `copy` extension of a copied snapshot (format-spec §9.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopiedFrom {
    /// The source repository's id (its config's `id`), hex.
    pub repository: String,
    /// The source snapshot.
    pub snapshot: SnapshotId,
}

/// What a copy will do: the selected snapshots the destination lacks, oldest first, and
/// those it has already (source id, destination id).
#[derive(Debug)]
pub struct CopyPlan {
    /// To copy: source id and snapshot.
    pub copy: Vec<(SnapshotId, Snapshot)>,
    /// There already: source id, destination id (a copy of it, or its original when the
    /// source snapshot is itself a copy from the destination).
    pub present: Vec<(SnapshotId, SnapshotId)>,
    /// Left out as older than their lineage's last copy (see [`Selection::SinceLast`]).
    pub older: usize,
    /// Root records (format-spec §15) to copy beside them: none unless the caller plans
    /// them ([`plan_roots`]).
    pub roots: RootPlan,
}

/// Which of the selected snapshots a copy takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every one the destination lacks.
    Missing,
    /// Per lineage, those newer than the newest copied already: what an hourly copy wants,
    /// and what keeps the destination's own retention from being undone (a copy forgotten
    /// there is not copied again).
    SinceLast,
}

/// Splits `selected` (snapshots of `src`) into those `dst` has (a copy, or the original of
/// a copy) and the rest.
pub fn plan(
    src: &Repository,
    dst: &Repository,
    mut selected: Vec<(SnapshotId, Snapshot)>,
    selection: Selection,
) -> Result<CopyPlan> {
    let (source, dest) = (src.config().id.to_hex(), dst.config().id.to_hex());
    let dst_snapshots = dst.snapshots().list()?;
    let dst_ids: HashSet<SnapshotId> = dst_snapshots.iter().map(|(id, _)| *id).collect();
    let mut copies: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    // Per lineage, the newest copied: remembered by the destination's cache too, so that
    // a lineage whose copies its own retention all forgot is not copied back whole.
    let mut last: HashMap<Lineage, DateTime<FixedOffset>> = HashMap::new();
    // A copy dated ahead of now (a clock ahead once, or a key holder's) is not the last:
    // it would leave out every honest snapshot until then, with exit 0 (hostile pass 9).
    let ahead = crate::timespec::now() + chrono::Duration::minutes(5);
    let past = |t: DateTime<FixedOffset>| (t <= ahead).then_some(t);
    for (_, snap) in &selected {
        let lineage = snap.lineage();
        if let Some(t) = remembered_last(dst, &source, &lineage)?.and_then(past) {
            let newest = last.entry(lineage).or_insert(t);
            *newest = (*newest).max(t);
        }
    }
    for (id, snap) in &dst_snapshots {
        // A copy's extension that does not decode is another tool's business: not ours.
        if let Ok(Some(from)) = snap.extension::<CopiedFrom>(EXTENSION) {
            if from.repository == source {
                copies.insert(from.snapshot, *id);
                if let Some(t) = snap.datetime().and_then(past) {
                    let newest = last.entry(snap.lineage()).or_insert(t);
                    *newest = (*newest).max(t);
                }
            }
        }
    }
    // A source snapshot copied from the destination has its original there.
    for (id, snap) in &selected {
        if let Ok(Some(from)) = snap.extension::<CopiedFrom>(EXTENSION) {
            if from.repository == dest && dst_ids.contains(&from.snapshot) {
                copies.insert(*id, from.snapshot);
            }
        }
    }
    selected.sort_by(|a, b| a.1.datetime().cmp(&b.1.datetime()).then(a.0.cmp(&b.0)));
    let (present, missing): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|(id, _)| copies.contains_key(id));
    // Older than the last copy, strictly: one taken at the same instant is not older.
    let newer = |s: &Snapshot| match (last.get(&s.lineage()), s.datetime()) {
        (Some(l), Some(t)) => t >= *l,
        _ => true,
    };
    let (copy, older): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|(_, s)| selection == Selection::Missing || newer(s));
    Ok(CopyPlan {
        present: present.iter().map(|(id, _)| (*id, copies[id])).collect(),
        older: older.len(),
        copy,
        roots: RootPlan::default(),
    })
}

/// What a copy did.
#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// Each snapshot copied: (source id, destination id).
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Selected snapshots the destination had already.
    pub present: usize,
    /// Selected snapshots left out as older than their lineage's last copy.
    pub older: usize,
    /// Source blobs read.
    pub blobs_read: u64,
    /// Their plaintext bytes.
    pub bytes_read: u64,
    /// Blobs the destination did not have, stored.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
    /// Their bytes as stored (compressed and sealed).
    pub bytes_stored: u64,
    /// Snapshots not copied because the source could not give all of them (a missing or
    /// damaged pack or tree), with why: the others are copied all the same.
    pub failed: Vec<(SnapshotId, String)>,
    /// Root records copied.
    pub roots_copied: usize,
    /// Root records copied before, or there already.
    pub roots_present: usize,
    /// Root records not copied (namespace/key, or file name where it could not be read),
    /// with why.
    pub roots_failed: Vec<(String, String)>,
}

/// Copies the plan's snapshots from `src` into `dst` (opened for writing as a backup
/// would: [`Repository::open_for_backup`]). `stop` ends the run early with
/// [`Error::Interrupted`]: what reached the destination is indexed, no snapshot written.
pub fn run(
    src: &Repository,
    dst: &Repository,
    plan: CopyPlan,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<CopyReport> {
    let ids = IdMap::new(src, dst);
    let shared = SaverShared::default();
    let read = Counter::default();
    let (outcome, stats) = std::thread::scope(|scope| -> Result<_> {
        let saver = BlobSaver::new(dst, &shared, scope, dst.upload_concurrency());
        let outcome = copy_all(src, &plan, &ids, &saver, &read, progress, stop);
        let stats = (
            saver.stats.blobs_added.load(Ordering::Relaxed),
            saver.stats.bytes_added.load(Ordering::Relaxed),
            saver.stats.bytes_stored.load(Ordering::Relaxed),
        );
        // Packs, then their index: on an error too, what reached the destination is
        // indexed, and the rerun does not send it again.
        let finished = saver.finish();
        let outcome = outcome.map_err(|e| shared.account(e))?;
        finished?;
        Ok((outcome, stats))
    })?;
    let (trees, lost) = outcome;
    // Under Object Lock, what the copies reuse is retained as long as they are, before
    // they name it (write order: packs, index, retention, snapshot).
    dst.extend_retention(&shared.reused.lock().unwrap())?;
    let mut report = CopyReport {
        present: plan.present.len(),
        older: plan.older,
        roots_present: plan.roots.present,
        blobs_read: read.blobs.load(Ordering::Relaxed),
        bytes_read: read.bytes.load(Ordering::Relaxed),
        blobs_added: stats.0,
        bytes_added: stats.1,
        bytes_stored: stats.2,
        ..Default::default()
    };
    for ((id, snap), root) in plan.copy.into_iter().zip(trees) {
        match root {
            Ok(root) => {
                let copy = copied_snapshot(src.config().id, id, snap, root)?;
                report.copied.push((id, dst.snapshots().write(&copy)?));
                remember_last(dst, &src.config().id.to_hex(), &copy)?;
            }
            Err(e) => report.failed.push((id, e.to_string())),
        }
    }
    (report.roots_copied, report.roots_failed) =
        roots::write_roots(src, dst, plan.roots, &ids, &lost)?;
    Ok(report)
}

/// The cache's key for the newest copy of `lineage` from `source`.
fn last_key(source: &str, lineage: &Lineage) -> String {
    format!("copied_last/{source}/{}", lineage.label())
}

/// The newest snapshot time copied from `source` for `lineage`, as the cache remembers it.
fn remembered_last(
    dst: &Repository,
    source: &str,
    lineage: &Lineage,
) -> Result<Option<DateTime<FixedOffset>>> {
    Ok((dst.cache_meta(&last_key(source, lineage))?)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok()))
}

/// Remembers `copy` as copied, if it is the newest of its lineage so far.
fn remember_last(dst: &Repository, source: &str, copy: &Snapshot) -> Result<()> {
    let (lineage, Some(t)) = (copy.lineage(), copy.datetime()) else {
        return Ok(());
    };
    if remembered_last(dst, source, &lineage)?.is_some_and(|l| l >= t) {
        return Ok(());
    }
    dst.set_cache_meta(&last_key(source, &lineage), &t.to_rfc3339())
}

/// The destination's snapshot: the source's, on the rewritten tree, naming its source. Its
/// `parent` is the source's own history and means nothing here.
fn copied_snapshot(
    source: RepoId,
    id: SnapshotId,
    mut snap: Snapshot,
    root: TreeId,
) -> Result<Snapshot> {
    snap.tree = root;
    snap.parent = None;
    snap.set_extension(
        EXTENSION,
        &CopiedFrom {
            repository: source.to_hex(),
            snapshot: id,
        },
    )?;
    Ok(snap)
}

#[derive(Default)]
struct Counter {
    blobs: AtomicU64,
    bytes: AtomicU64,
}

/// The three passes: what the destination lacks, that data, then the trees above it.
/// Returns each snapshot's new root, in the plan's order, or why the source could not
/// give it whole, and the blobs the source could not give; an error of the destination
/// (or a stop) ends the run.
fn copy_all(
    src: &Repository,
    plan: &CopyPlan,
    ids: &IdMap<'_>,
    saver: &BlobSaver<'_, '_>,
    read: &Counter,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<(Vec<Result<TreeId>>, Lost)> {
    let roots: Vec<TreeId> = plan.copy.iter().map(|(_, s)| s.tree).collect();
    progress.message("finding what the destination lacks");
    let (mut lacking, unreadable) = lacking_blobs(src, &roots, ids, saver)?;
    lacking.extend(not_there(&roots::root_blobs(&plan.roots), ids, saver)?);
    lacking.sort();
    lacking.dedup();
    progress.message("copying data");
    let lost = copy_blobs(src, lacking, ids, saver, read, progress, stop)?;
    progress.message("writing trees");
    let mut done = HashMap::new();
    let mut out = Vec::with_capacity(roots.len());
    for (root, unreadable) in roots.iter().zip(unreadable) {
        out.push(match unreadable {
            Some(e) => Err(e),
            None => copy_tree(src, *root, ids, saver, &lost, &mut done)?,
        });
    }
    Ok((out, lost))
}

/// Of `blobs` (source ids), those the destination lacks or whose id there is not known.
fn not_there(blobs: &[BlobId], ids: &IdMap<'_>, saver: &BlobSaver<'_, '_>) -> Result<Vec<BlobId>> {
    let mut out = Vec::new();
    for (b, dest) in blobs.iter().zip(ids.get(blobs)?) {
        let present = match dest {
            Some(d) => saver.is_known(&d)?,
            None => false,
        };
        if !present {
            out.push(*b);
        }
    }
    Ok(out)
}

/// The source's data blobs under `roots` that the destination lacks (or whose id there
/// is not known yet), and for each root the source's error that keeps it from being
/// walked. The walk keeps its own stack: a tree's depth comes from outside.
#[allow(clippy::type_complexity)]
fn lacking_blobs(
    src: &Repository,
    roots: &[TreeId],
    ids: &IdMap<'_>,
    saver: &BlobSaver<'_, '_>,
) -> Result<(Vec<BlobId>, Vec<Option<Error>>)> {
    let mut seen: HashSet<TreeId> = HashSet::new();
    let mut wanted: HashSet<BlobId> = HashSet::new();
    let mut unreadable = Vec::with_capacity(roots.len());
    for root in roots {
        let mut stack = vec![*root];
        let mut failed = None;
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let tree = match src.trees().load(&id) {
                Ok(t) => t,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let mut content = Vec::new();
            for node in tree.entries {
                match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(sub)) => stack.push(sub),
                    (NodeKind::File, _) => content.extend(node.content),
                    _ => {}
                }
            }
            content.retain(|b| !wanted.contains(b));
            wanted.extend(not_there(&content, ids, saver)?);
        }
        unreadable.push(failed);
    }
    Ok((wanted.into_iter().collect(), unreadable))
}

/// Source blobs that could not be read, with why.
type Lost = HashMap<BlobId, String>;

/// Reads `blobs` from the source a pack at a time (neighbours in one range read, packs in
/// parallel), names each under the destination's key and stores what it lacks. Returns
/// the blobs the source could not give: the snapshots needing them are not copied.
fn copy_blobs(
    src: &Repository,
    blobs: Vec<BlobId>,
    ids: &IdMap<'_>,
    saver: &BlobSaver<'_, '_>,
    read: &Counter,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Lost> {
    let mut lost = Lost::new();
    let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    for id in blobs {
        match src.lookup_blob(&id) {
            Ok(loc) => by_pack.entry(loc.pack).or_default().push((id, loc)),
            Err(e) => {
                lost.insert(id, e.to_string());
            }
        }
    }
    progress.set_total(
        by_pack
            .values()
            .flatten()
            .map(|(_, l)| l.entry.raw_length as u64)
            .sum(),
    );
    let packs: Vec<_> = by_pack.into_iter().collect();
    let lost = Mutex::new(lost);
    src.with_read_pool(|| {
        packs.par_iter().try_for_each(|(pack, blobs)| {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted { packs: 0, bytes: 0 });
            }
            copy_pack(src, pack, blobs, ids, saver, read, progress, &lost)
        })
    })?;
    Ok(lost.into_inner().unwrap())
}

/// One pack's blobs copied; what the source cannot give is added to `lost` (an error of
/// the destination ends the run).
#[allow(clippy::too_many_arguments)]
fn copy_pack(
    src: &Repository,
    pack: &PackId,
    blobs: &[(BlobId, BlobLocation)],
    ids: &IdMap<'_>,
    saver: &BlobSaver<'_, '_>,
    read: &Counter,
    progress: &dyn Progress,
    lost: &Mutex<Lost>,
) -> Result<()> {
    let mut blobs: Vec<_> = blobs.iter().collect();
    blobs.sort_by_key(|(_, l)| l.entry.offset);
    let mut found = Vec::with_capacity(blobs.len());
    for run in ranges(&blobs) {
        let start = run[0].1.entry.offset;
        let end = run
            .iter()
            .map(|(_, l)| l.entry.offset + l.entry.length as u64)
            .max()
            .expect("a run has a blob");
        let bytes = match src.read_pack_range(run[0].1.entry.kind, pack, start, end - start) {
            Ok(b) => b,
            Err(e @ Error::NoRepository(_)) => return Err(e),
            Err(e) => {
                let mut lost = lost.lock().unwrap();
                lost.extend(run.iter().map(|(id, _)| (*id, e.to_string())));
                continue;
            }
        };
        for (id, loc) in run {
            // Opening checks the plaintext against its id in the source.
            let plain = match src.open_blob_in(pack, &bytes, start, &loc.entry) {
                Ok(p) => p,
                Err(e) => {
                    lost.lock().unwrap().insert(*id, e.to_string());
                    continue;
                }
            };
            read.blobs.fetch_add(1, Ordering::Relaxed);
            read.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
            let dest = ids.name(&plain);
            saver.save(BlobKind::Data, dest, &plain)?;
            progress.advance(plain.len() as u64);
            found.push((*id, dest));
        }
    }
    ids.remember(&found)
}

/// Runs of neighbouring blobs (sorted by offset) that one range read covers.
fn ranges<'a, 'b>(
    blobs: &'b [&'a (BlobId, BlobLocation)],
) -> Vec<&'b [&'a (BlobId, BlobLocation)]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blobs.len() {
        let start = blobs[i].1.entry.offset;
        let mut end = start + blobs[i].1.entry.length as u64;
        let mut j = i + 1;
        while let Some((_, l)) = blobs.get(j) {
            let e = &l.entry;
            if e.offset > end + MAX_GAP || e.offset + e.length as u64 - start > MAX_RANGE {
                break;
            }
            end = end.max(e.offset + e.length as u64);
            j += 1;
        }
        out.push(&blobs[i..j]);
        i = j;
    }
    out
}

/// The destination's tree for the source's tree `root`, saved with every tree below it,
/// children first (no recursion: the depth comes from outside). Every data blob below must
/// have its destination id known by now.
/// The outer result is the destination's error (ending the run), the inner the source's
/// (this snapshot is not copied).
fn copy_tree(
    src: &Repository,
    root: TreeId,
    ids: &IdMap<'_>,
    saver: &BlobSaver<'_, '_>,
    lost: &Lost,
    done: &mut HashMap<TreeId, TreeId>,
) -> Result<Result<TreeId>> {
    // (tree, whether its subtrees are done)
    let mut stack = vec![(root, false)];
    while let Some((id, children_done)) = stack.pop() {
        if done.contains_key(&id) {
            continue;
        }
        let mut tree = match src.trees().load(&id) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if !children_done {
            stack.push((id, true));
            stack.extend(tree.entries.iter().filter_map(|n| {
                match n.kind {
                    NodeKind::Dir => n
                        .subtree
                        .filter(|s| !done.contains_key(s))
                        .map(|s| (s, false)),
                    _ => None,
                }
            }));
            continue;
        }
        for node in &mut tree.entries {
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        node.subtree = Some(*done.get(&sub).ok_or_else(|| {
                            Error::Internal(format!("tree {sub} was not copied before {id}"))
                        })?);
                    }
                }
                NodeKind::File if !node.content.is_empty() => {
                    let mapped = ids.get(&node.content)?;
                    let mut content = Vec::with_capacity(mapped.len());
                    for (d, s) in mapped.into_iter().zip(&node.content) {
                        match (d, lost.get(s)) {
                            (Some(d), _) => content.push(d),
                            (None, Some(why)) => {
                                return Ok(Err(Error::corrupt(
                                    format!(
                                        "{} in the source",
                                        String::from_utf8_lossy(&node.name)
                                    ),
                                    why.clone(),
                                )))
                            }
                            (None, None) => {
                                return Err(Error::Internal(format!("blob {s} was not copied")))
                            }
                        }
                    }
                    node.content = content;
                }
                _ => {}
            }
        }
        done.insert(id, save_tree(ids.dst, saver, tree)?);
    }
    Ok(Ok(done.get(&root).copied().ok_or_else(|| {
        Error::Internal(format!("tree {root} was not copied"))
    })?))
}

fn save_tree(dst: &Repository, saver: &BlobSaver<'_, '_>, mut tree: Tree) -> Result<TreeId> {
    let bytes = tree.encode();
    let id = dst.blob_id(&bytes);
    saver.save(BlobKind::Tree, id, &bytes)?;
    Ok(id)
}

/// Source blob ids to destination ones, as found in this run or an earlier one (kept in
/// the destination's cache, keyed by the source repository).
struct IdMap<'r> {
    dst: &'r Repository,
    source: RepoId,
    /// Found in this run, not yet in the cache.
    fresh: Mutex<HashMap<BlobId, BlobId>>,
}

impl<'r> IdMap<'r> {
    fn new(src: &Repository, dst: &'r Repository) -> Self {
        IdMap {
            dst,
            source: src.config().id,
            fresh: Mutex::default(),
        }
    }

    /// The destination's id for each source blob, where known.
    fn get(&self, ids: &[BlobId]) -> Result<Vec<Option<BlobId>>> {
        let fresh = self.fresh.lock().unwrap();
        if ids.iter().all(|id| fresh.contains_key(id)) {
            return Ok(ids.iter().map(|id| fresh.get(id).copied()).collect());
        }
        let cached = self.dst.copied_ids(&self.source, ids)?;
        Ok(ids
            .iter()
            .zip(cached)
            .map(|(id, c)| fresh.get(id).copied().or(c))
            .collect())
    }

    fn name(&self, plain: &[u8]) -> BlobId {
        self.dst.blob_id(plain)
    }

    fn remember(&self, pairs: &[(BlobId, BlobId)]) -> Result<()> {
        self.fresh.lock().unwrap().extend(pairs.iter().copied());
        self.dst.put_copied_ids(&self.source, pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::{BlobEntry, Compression};

    fn at(offset: u64, length: u32) -> (BlobId, BlobLocation) {
        let entry = BlobEntry {
            id: BlobId([offset as u8; 32]),
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: length,
            compression: Compression::None,
        };
        (
            entry.id,
            BlobLocation {
                pack: PackId([1; 32]),
                entry,
            },
        )
    }

    fn runs(blobs: &[(BlobId, BlobLocation)]) -> Vec<Vec<u64>> {
        let refs: Vec<&(BlobId, BlobLocation)> = blobs.iter().collect();
        (ranges(&refs).into_iter())
            .map(|r| r.iter().map(|(_, l)| l.entry.offset).collect())
            .collect()
    }

    /// Neighbours come in one read; a gap past MAX_GAP, or a span past MAX_RANGE, starts
    /// another (a pack's blobs cost a request per run, not per blob).
    #[test]
    fn neighbouring_blobs_are_read_together_and_far_ones_apart() {
        let near = [at(0, 100), at(100, 100), at(200 + MAX_GAP, 100)];
        assert_eq!(runs(&near), vec![vec![0, 100, 200 + MAX_GAP]]);
        let gap = [at(0, 100), at(101 + MAX_GAP, 100)];
        assert_eq!(runs(&gap), vec![vec![0], vec![101 + MAX_GAP]]);
        let grown = [at(0, 100), at(100, 100), at(201 + MAX_GAP, 100)];
        assert_eq!(runs(&grown), vec![vec![0, 100], vec![201 + MAX_GAP]]);
        let later = [at(1000, 100), at(1101 + MAX_GAP, 100)];
        assert_eq!(runs(&later), vec![vec![1000], vec![1101 + MAX_GAP]]);
        let half = (MAX_RANGE / 2) as u32;
        let h = half as u64;
        let long = [at(1000, half), at(1000 + h, half), at(1000 + 2 * h, 2)];
        assert_eq!(runs(&long), vec![vec![1000, 1000 + h], vec![1000 + 2 * h]]);
        let exact = [
            at(0, half),
            at(half as u64, (MAX_RANGE - half as u64) as u32),
        ];
        assert_eq!(runs(&exact).len(), 1);
    }
}
