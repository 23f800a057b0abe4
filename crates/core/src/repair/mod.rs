//! Repairs after loss: an index that matches the packs that exist, snapshots without
//! the files that cannot be restored, and no root record that cannot be read.
//!
//! Both write new state first and remove the old only once the new is durable, like prune
//! (format-spec §10). `repair index` takes the maintenance lock, since it rewrites the index
//! as prune does; `repair snapshots` only adds trees, packs, index files and snapshots, as a
//! backup does.

use std::collections::{HashMap, HashSet};

use crate::backend::FileKind;
use crate::backup::{BlobSaver, SaverShared};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId, TreeId};
use crate::lock;
use crate::progress::Progress;
use crate::repo::index::{IndexFile, IndexedPack, ObsoletePack};
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::{Repaired, Snapshot};
use crate::repo::tree::{NodeKind, Tree};
use crate::repo::Repository;
use crate::walk::safe_name;

mod roots;
pub use roots::{repair_roots, DamagedRecord, RootRepair};

/// What `repair index` did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexRepair {
    /// Packs the new index names.
    pub packs: usize,
    /// Packs indexed from their own headers (named by no intact index file).
    pub packs_from_headers: usize,
    /// Packs an index named that are gone; their blobs left the index.
    pub packs_missing: Vec<String>,
    /// Packs on the backend whose header cannot be read (left for prune to mark).
    pub packs_unreadable: Vec<String>,
    /// Index entries dropped because their pack is gone.
    pub blobs_dropped: usize,
    /// Index files that could not be read, with why.
    pub index_files_damaged: Vec<String>,
    /// Index files the new index superseded.
    pub index_files_replaced: usize,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Rebuilds the index from the packs that exist: what an intact index file says of a pack
/// that is there with its indexed size is kept; packs no intact index names are read by
/// their headers; what is gone leaves the index, so the next backup stores it again.
pub fn repair_index(
    repo: &Repository,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<IndexRepair> {
    let _lock = if dry_run {
        None
    } else {
        Some(lock::acquire(repo, "repair index")?)
    };
    let mut report = IndexRepair {
        dry_run,
        ..Default::default()
    };
    progress.message("listing packs");
    let stored = repo.stored_packs()?;
    progress.message("reading index");
    let mut found = read_intact_index(repo, &stored, &mut report)?;
    progress.message("reading pack headers");
    index_unnamed(repo, &stored, &mut found, &mut report)?;
    report.packs = found.live.len();
    if dry_run {
        return Ok(report);
    }
    // New index files first; the ones they replace go only once these are durable.
    progress.message("writing index");
    let mut packs: Vec<IndexedPack> = found.live.into_values().collect();
    packs.sort_by_key(|p| p.id);
    let mut obsolete: Vec<ObsoletePack> = found.marks.into_values().collect();
    obsolete.sort_by_key(|m| m.id);
    // Backups on a partial view must learn which packs left (format-spec §7.3); those
    // of index files it could not read it cannot name, so they read everything again.
    let lost: Vec<PackId> = (report.packs_missing.iter())
        .filter_map(|p| p.parse().ok())
        .collect();
    repo.write_mark_record(&lost, true, &found.read)?;
    repo.replace_index(&mut packs.into_iter().map(Ok), obsolete, &found.read)?;
    report.index_files_replaced = found.read.len();
    repo.sync_index()?;
    Ok(report)
}

/// What the intact index files say about the packs that exist.
struct Found {
    /// Every index file listed (the new index replaces them all).
    read: Vec<IndexId>,
    live: HashMap<PackId, IndexedPack>,
    marks: HashMap<PackId, ObsoletePack>,
}

/// Keeps what intact index files say of packs that are there with their indexed size;
/// packs that are gone are reported, with the blobs that leave the index.
fn read_intact_index(
    repo: &Repository,
    stored: &HashMap<PackId, (BlobKind, u64)>,
    report: &mut IndexRepair,
) -> Result<Found> {
    let mut found = Found {
        read: Vec::new(),
        live: HashMap::new(),
        marks: HashMap::new(),
    };
    // Packs an index names but the backend lacks, with their blob counts.
    let mut missing: HashMap<PackId, usize> = HashMap::new();
    for f in repo.files().list(FileKind::Index)? {
        let Ok(id) = f.name.parse::<IndexId>() else {
            continue;
        };
        found.read.push(id);
        let file = match repo.load_file::<IndexFile>(FileKind::Index, &f.name) {
            Ok(file) => file,
            Err(e @ Error::Corrupt { .. }) => {
                report.index_files_damaged.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in file.packs {
            match stored.get(&p.id) {
                Some((_, size)) if *size == p.size => match found.live.get_mut(&p.id) {
                    Some(listed) => listed.absorb(p),
                    None => {
                        found.live.insert(p.id, p);
                    }
                },
                // Another size than indexed: read by its own header, as unnamed.
                Some(_) => {}
                None => {
                    missing.insert(p.id, p.blobs.len());
                }
            }
        }
        for m in file.obsolete {
            if stored.contains_key(&m.id) {
                crate::repo::index::add_mark(&mut found.marks, m);
            }
        }
    }
    // A pack named again by some index is live: its mark lapsed.
    found.marks.retain(|id, _| !found.live.contains_key(id));
    report.blobs_dropped = missing.values().sum();
    let mut missing: Vec<String> = missing.keys().map(|id| id.to_hex()).collect();
    missing.sort();
    report.packs_missing = missing;
    Ok(found)
}

/// Packs no intact index names (nor marks): indexed from their own headers.
fn index_unnamed(
    repo: &Repository,
    stored: &HashMap<PackId, (BlobKind, u64)>,
    found: &mut Found,
    report: &mut IndexRepair,
) -> Result<()> {
    let mut unnamed: Vec<(PackId, BlobKind, u64)> = stored
        .iter()
        .filter(|(id, _)| !found.live.contains_key(*id) && !found.marks.contains_key(*id))
        .map(|(id, (k, s))| (*id, *k, *s))
        .collect();
    unnamed.sort_by_key(|u| u.0);
    for (id, kind, size) in unnamed {
        match repo.read_pack_header(kind, &id, size) {
            Ok(entries) => {
                report.packs_from_headers += 1;
                found.live.insert(
                    id,
                    IndexedPack {
                        id,
                        kind,
                        size,
                        blobs: entries,
                    },
                );
            }
            Err(Error::NotFound { .. }) => {}
            Err(e @ Error::Corrupt { .. }) => report.packs_unreadable.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A snapshot `repair snapshots` rewrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairedSnapshot {
    /// The damaged snapshot's id.
    pub original: String,
    /// The new snapshot (absent in a dry run).
    pub new: Option<String>,
    /// Its time.
    pub time: String,
    /// Paths (in the snapshot) of the files and directory contents left out.
    pub lost: Vec<String>,
}

/// What `repair snapshots` did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct SnapshotRepair {
    /// Snapshots examined.
    pub snapshots: usize,
    /// Snapshots rewritten without what was lost.
    pub repaired: Vec<RepairedSnapshot>,
    /// Damaged snapshots an earlier run already rewrote (kept without `--forget`): not
    /// rewritten again; `new` names the existing copy.
    pub already_repaired: Vec<RepairedSnapshot>,
    /// Damaged snapshot files (removed with `forget`).
    pub damaged: Vec<String>,
    /// Snapshots removed (`--forget`): unreadable, or nothing left.
    pub removed: Vec<String>,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Writes, for each snapshot that references data the repository no longer has, a new
/// snapshot without those files (the list of what was left out is in it). The originals
/// stay unless `forget`, which also removes snapshot files that cannot be read at all.
/// Write order: trees, their index, then snapshots, then removals.
pub fn repair_snapshots(
    repo: &Repository,
    forget: bool,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<SnapshotRepair> {
    let stored: HashSet<PackId> = repo.stored_packs()?.into_keys().collect();
    // A blob the index places in a pack that is gone would be deduplicated against by the
    // rewrite and stay lost: the index must match the packs first.
    if let Some((p, _, _)) = repo
        .blob_index()
        .packs()?
        .into_iter()
        .find(|(p, _, _)| !stored.contains(p))
    {
        return Err(Error::RepairIndexFirst(p));
    }
    let (snapshots, damaged) = repo.snapshots().with_damage()?;
    let mut report = SnapshotRepair {
        snapshots: snapshots.len(),
        dry_run,
        damaged: damaged.iter().map(|(id, e)| format!("{id}: {e}")).collect(),
        ..Default::default()
    };
    let blob_ok = |id: &BlobId| -> Result<bool> {
        Ok(repo
            .blob_index()
            .lookup(id)?
            .is_some_and(|loc| stored.contains(&loc.pack)))
    };

    // A damaged snapshot kept by an earlier run (no --forget) has its copy already.
    let copies: HashMap<SnapshotId, (SnapshotId, &Repaired)> = snapshots
        .iter()
        .filter_map(|(id, s)| s.repaired.as_ref().map(|r| (r.from, (*id, r))))
        .collect();
    let (earlier, snapshots): (Vec<_>, Vec<_>) = snapshots
        .iter()
        .partition(|(id, _)| copies.contains_key(id));
    report.already_repaired = earlier
        .iter()
        .map(|(id, snap)| RepairedSnapshot {
            original: id.to_hex(),
            new: Some(copies[id].0.to_hex()),
            time: snap.time.clone(),
            lost: copies[id].1.lost.clone(),
        })
        .collect();

    let fixed = rewrite_trees(repo, &snapshots, &blob_ok, dry_run, progress)?;
    let mut replaced = Vec::new();
    for (id, snap, lost, root) in fixed {
        report
            .repaired
            .push(replace(repo, id, snap, lost, root, dry_run)?);
        replaced.push(id);
    }
    if forget && !dry_run {
        // Each replacement is durable (above, or since the earlier run): the originals go
        // by a forget, whose record tells the other hosts that saw them it was no
        // rollback (format-spec §16.3).
        let ids: Vec<_> = (replaced.into_iter())
            .chain(earlier.iter().map(|(id, _)| *id))
            .chain(damaged.iter().map(|(id, _)| *id))
            .collect();
        repo.snapshots().forget(&ids)?;
        report.removed.extend(ids.iter().map(|id| id.to_hex()));
    }
    Ok(report)
}

/// New trees without what is lost, for each snapshot that lost something; durable and
/// indexed when this returns (unless a dry run, which writes nothing).
fn rewrite_trees(
    repo: &Repository,
    snapshots: &[&(SnapshotId, Snapshot)],
    blob_ok: &dyn Fn(&BlobId) -> Result<bool>,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Vec<Fixed>> {
    let tx = repo.transaction()?;
    let shared = SaverShared::default();
    let fixed = std::thread::scope(|scope| -> Result<Vec<Fixed>> {
        let saver = BlobSaver::new(repo, &shared, scope, repo.upload_concurrency());
        let mut fixed = Vec::new();
        let mut done: HashMap<TreeId, Rewritten> = HashMap::new();
        for (id, snap) in snapshots.iter().copied() {
            progress.message(&format!("snapshot {}", id.short()));
            let (new_root, lost) =
                rewrite_tree(repo, &saver, blob_ok, &snap.tree, &mut done, dry_run)?;
            if let Some(root) = new_root {
                fixed.push((*id, snap.clone(), lost, root));
            }
        }
        if !dry_run {
            // Trees first, then their index: the snapshots below may only name durable data.
            saver.finish()?;
        }
        Ok(fixed)
    })?;
    tx.commit()?;
    Ok(fixed)
}

/// The bytes of lost paths a repaired snapshot records: the snapshot must stay far below
/// its kind's bound (format-spec §1), however much was lost. The report lists them all.
const LOST_RECORDED_BYTES: usize = 1 << 20;

/// `lost` as a repaired snapshot records it: the first paths up to
/// [`LOST_RECORDED_BYTES`], then a line saying how many more there were.
fn recorded_lost(mut lost: Vec<String>) -> Vec<String> {
    let mut bytes = 0;
    let Some(cut) = lost.iter().position(|p| {
        bytes += p.len();
        bytes > LOST_RECORDED_BYTES
    }) else {
        return lost;
    };
    let more = lost.len() - cut;
    lost.truncate(cut);
    lost.push(format!(
        "… and {more} more (not recorded: see the repair's report)"
    ));
    lost
}

/// Writes the replacement of snapshot `id` (its trees are durable).
fn replace(
    repo: &Repository,
    id: SnapshotId,
    mut snap: Snapshot,
    lost: Vec<String>,
    root: TreeId,
    dry_run: bool,
) -> Result<RepairedSnapshot> {
    let mut entry = RepairedSnapshot {
        original: id.to_hex(),
        new: None,
        time: snap.time.clone(),
        lost: lost.clone(),
    };
    if dry_run {
        return Ok(entry);
    }
    snap.tree = root;
    snap.repaired = Some(Repaired {
        from: id,
        lost: recorded_lost(lost),
    });
    if !snap.tags.iter().any(|t| t == "repaired") {
        snap.tags.push("repaired".into());
    }
    let new = repo.snapshots().write(&snap)?;
    entry.new = Some(new.to_hex());
    Ok(entry)
}

/// A snapshot to replace: its id and manifest, the paths it lost, its new root tree.
type Fixed = (SnapshotId, Snapshot, Vec<String>, TreeId);

/// What rewriting one tree gives: its replacement (`None` when nothing is missing) and the
/// paths left out, relative to it (`/a/b.txt`).
type Rewritten = (Option<TreeId>, Vec<String>);

/// The tree without what cannot be restored. A directory whose tree is lost is kept, empty,
/// and named in the lost list; so is a file missing a blob. Identical trees (in this
/// snapshot or another) are rewritten once.
fn rewrite_tree(
    repo: &Repository,
    saver: &BlobSaver<'_, '_>,
    blob_ok: &dyn Fn(&BlobId) -> Result<bool>,
    id: &TreeId,
    done: &mut HashMap<TreeId, Rewritten>,
    dry_run: bool,
) -> Result<Rewritten> {
    if let Some(r) = done.get(id) {
        return Ok(r.clone());
    }
    let tree = if blob_ok(id)? {
        repo.trees().load(id).ok()
    } else {
        None
    };
    let result = match tree {
        None => {
            let new = save_tree(repo, saver, Tree::default(), dry_run)?;
            (Some(new), vec!["/ (directory contents)".to_string()])
        }
        Some(tree) => {
            let mut changed = false;
            let mut lost = Vec::new();
            let mut entries = Vec::with_capacity(tree.entries.len());
            for mut node in tree.entries {
                let Ok(name) = safe_name(&node, id) else {
                    lost.push(format!(
                        "/{} (invalid name)",
                        String::from_utf8_lossy(&node.name).escape_debug()
                    ));
                    changed = true;
                    continue;
                };
                let rel = format!("/{}", name.to_string_lossy());
                match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(sub)) => {
                        let (new, sub_lost) =
                            rewrite_tree(repo, saver, blob_ok, &sub, done, dry_run)?;
                        if let Some(new) = new {
                            node.subtree = Some(new);
                            changed = true;
                            lost.extend(sub_lost.into_iter().map(|l| format!("{rel}{l}")));
                        }
                    }
                    (NodeKind::File, _) => {
                        let mut whole = true;
                        for b in &node.content {
                            if !blob_ok(b)? {
                                whole = false;
                                break;
                            }
                        }
                        if !whole {
                            lost.push(rel);
                            changed = true;
                            continue;
                        }
                    }
                    _ => {}
                }
                entries.push(node);
            }
            if changed {
                (
                    Some(save_tree(repo, saver, Tree { entries }, dry_run)?),
                    lost,
                )
            } else {
                (None, Vec::new())
            }
        }
    };
    done.insert(*id, result.clone());
    Ok(result)
}

fn save_tree(
    repo: &Repository,
    saver: &BlobSaver<'_, '_>,
    mut tree: Tree,
    dry_run: bool,
) -> Result<TreeId> {
    let bytes = tree.encode();
    let id = repo.blob_id(&bytes);
    if !dry_run {
        saver.save(BlobKind::Tree, id, &bytes)?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repair that lost more than the snapshot can hold records the first paths and how
    /// many more; one that lost little records them all.
    #[test]
    fn the_lost_paths_a_snapshot_records_are_bounded() {
        let few: Vec<String> = (0..3).map(|i| format!("/f{i}")).collect();
        assert_eq!(recorded_lost(few.clone()), few);
        let path = format!("/{}", "x".repeat(999));
        let many = vec![path.clone(); 5000];
        let kept = recorded_lost(many);
        let listed = LOST_RECORDED_BYTES / 1000;
        assert_eq!(kept.len(), listed + 1);
        assert!(kept[..listed].iter().all(|p| *p == path));
        assert_eq!(
            kept[listed],
            format!(
                "… and {} more (not recorded: see the repair's report)",
                5000 - listed
            )
        );
        let bytes: usize = kept.iter().map(String::len).sum();
        assert!(bytes <= LOST_RECORDED_BYTES + 100, "{bytes}");
    }
}
