//! Prune: reclaim the space of data no snapshot references, without stopping backups.
//!
//! Backups take no lock, so a backup that started before a prune may still reference blobs
//! the prune finds unused. Hence the deletion protocol (format-spec §10.1): an unused pack is
//! first *marked* in a new index file (its blobs leave the index, so later backups store
//! them afresh), and deleted by a later prune only once the grace period has passed and only
//! if no snapshot references it by then; a pack that gained references is put back in the
//! index instead. Only one prune runs at a time (the maintenance lock).

mod execute;
mod locked;
mod plan;

use std::collections::HashMap;

use crate::error::{Error, Missing, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::lock;
use crate::progress::Progress;
use crate::repo::index::ObsoletePack;
use crate::repo::pack::BlobKind;
use crate::repo::Repository;
use plan::{BlobUse, ClassedPack, PrunePlan, Rules};

/// How prune decides.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a partly used pack when more than this share of it is unused (0.0 ..= 1.0).
    pub max_unused: f64,
    /// How long a marked pack must stay before it may be deleted; longer than any backup.
    pub grace: chrono::Duration,
    /// Delete unused packs in this run (no grace): only when no backup can be running.
    pub instant_delete: bool,
    /// Plan and report only; change nothing.
    pub dry_run: bool,
    /// The minimum storage duration per storage class: an unused pack in one of these
    /// classes is deleted only once it has been stored this long (earlier deletion is
    /// billed as if it had stayed).
    pub min_storage: Vec<(String, chrono::Duration)>,
}

/// S3's minimum storage durations, per class.
pub const MIN_STORAGE_DAYS: &[(&str, i64)] = &[
    ("STANDARD_IA", 30),
    ("ONEZONE_IA", 30),
    ("GLACIER_IR", 90),
    ("GLACIER", 90),
    ("DEEP_ARCHIVE", 180),
];

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.10,
            grace: chrono::Duration::hours(24),
            instant_delete: false,
            dry_run: false,
            min_storage: MIN_STORAGE_DAYS
                .iter()
                .map(|(c, d)| (c.to_string(), chrono::Duration::days(*d)))
                .collect(),
        }
    }
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// Packs the index named.
    pub packs: usize,
    /// Packs found unused and marked.
    pub packs_marked: usize,
    /// Partly used packs whose used blobs were copied out.
    pub packs_repacked: usize,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Marked packs a snapshot needed again, put back into the index.
    pub packs_resurrected: usize,
    /// Marked packs still waiting out their grace period.
    pub packs_waiting: usize,
    /// Bytes deleted from the backend.
    pub bytes_freed: u64,
    /// Bytes of unused data in packs marked now (freed once they are deleted).
    pub bytes_marked: u64,
    /// Used bytes copied out of repacked packs.
    pub bytes_repacked: u64,
    /// Index files the new index superseded.
    pub index_files_replaced: usize,
    /// Temporary files of interrupted writes (local repositories) removed.
    pub temporaries_removed: usize,
    /// Their bytes.
    pub temporaries_bytes: u64,
    /// Partly used packs in archive storage, kept whole (repacking would need a thaw).
    pub packs_cold_not_repacked: usize,
    /// Unused packs kept until their class's minimum storage duration ends: pack, class,
    /// and when (RFC 3339).
    pub packs_held: Vec<(PackId, String, String)>,
    /// Their bytes.
    pub bytes_held: u64,
    /// Under Object Lock: deleted files purged for good, and those still held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<locked::LockReport>,
    /// Wall-clock time.
    pub duration_secs: f64,
}

impl PruneReport {
    /// What `plan` will do, before it is carried out.
    fn planned(plan: &PrunePlan, packs: usize, stored: &HashMap<PackId, (BlobKind, u64)>) -> Self {
        PruneReport {
            packs,
            packs_marked: plan.mark.len(),
            packs_resurrected: plan.revive.len(),
            packs_waiting: plan.carry.len() + plan.mark.len(),
            packs_repacked: plan.repack.len(),
            bytes_marked: plan.bytes_marked,
            bytes_repacked: plan.bytes_repacked,
            packs_cold_not_repacked: plan.cold_not_repacked.len(),
            bytes_held: plan
                .held
                .iter()
                .map(|(id, _, _)| stored.get(id).map_or(0, |s| s.1))
                .sum(),
            packs_held: plan
                .held
                .iter()
                .map(|(id, class, until)| (*id, class.clone(), until.to_rfc3339()))
                .collect(),
            ..Default::default()
        }
    }
}

/// Reclaims space: marks packs no snapshot uses, repacks partly used ones, deletes marked
/// packs once their grace period is over. Takes the exclusive lock; backups may run
/// meanwhile on other hosts only with a grace period (see format-spec §7).
pub fn run(repo: &Repository, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
    let started = std::time::Instant::now();
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock::acquire(repo, "prune")?)
    };
    let now = crate::timespec::now();
    progress.message("reading index");
    let (superseded, marks) = read_index(repo)?;
    progress.message("marking used blobs");
    mark_used(repo, &marks)?;
    if !opts.dry_run {
        refuse_if_vanished(repo)?;
    }

    let usage = repo.used_blobs().pack_usage()?;
    let (stored, classed) = repo.stored_packs_classed()?;
    let classes: HashMap<PackId, String> = classed
        .iter()
        .map(|(id, class, _)| (*id, class.clone()))
        .collect();
    let classed = classed_packs(classed, &opts.min_storage, now);
    let rules = Rules {
        max_unused: opts.max_unused,
        grace: opts.grace,
        instant_delete: opts.instant_delete,
    };
    let marks: Vec<ObsoletePack> = marks.into_values().collect();
    let plan = PrunePlan::new(
        &usage,
        &stored,
        &classed,
        marks,
        now,
        &rules,
        &SnapshotUse { repo },
    )?;

    let mut report = PruneReport::planned(&plan, usage.len(), &stored);
    if opts.dry_run {
        let gone: Vec<&(PackId, BlobKind)> = plan.gone(&rules).collect();
        report.packs_deleted = gone.len();
        report.bytes_freed = gone
            .into_iter()
            .map(|(id, _)| stored.get(id).map_or(0, |s| s.1))
            .sum::<u64>()
            .saturating_sub(report.bytes_repacked);
    } else {
        execute::execute(
            &execute::Inputs {
                repo,
                usage: &usage,
                stored: &stored,
                classes: &classes,
                superseded: &superseded,
                now,
                rules: &rules,
                progress,
            },
            plan,
            &mut report,
        )?;
    }
    // After the deletions above, so that what they hid is counted as held.
    if repo.object_lock().is_some() {
        report.object_lock = Some(locked::purge_hidden(repo, opts.dry_run, progress)?);
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses while a snapshot this host had seen stands vanished with no forget recorded
/// (format-spec §16.3, after the listing `mark_used` made): its data, which no snapshot
/// listed references any more, may be all that is left of it.
fn refuse_if_vanished(repo: &Repository) -> Result<()> {
    let vanished = repo.snapshots().vanished()?;
    if vanished.is_empty() {
        return Ok(());
    }
    Err(Error::SnapshotsVanished {
        ids: vanished.iter().map(|v| v.id.to_hex()).collect(),
    })
}

/// The packs whose class bills a minimum storage duration (or that are archived), with
/// when that duration ends; a pack of unknown write time counts as written `now`.
fn classed_packs(
    listed: Vec<(PackId, String, Option<i64>)>,
    min_storage: &[(String, chrono::Duration)],
    now: chrono::DateTime<chrono::FixedOffset>,
) -> HashMap<PackId, ClassedPack> {
    use crate::backend::lifecycle::ARCHIVE_CLASSES;
    listed
        .into_iter()
        .filter_map(|(id, class, modified)| {
            let min = min_storage
                .iter()
                .find(|(c, _)| *c == class)
                .map(|(_, d)| *d);
            let archived = ARCHIVE_CLASSES.contains(&class.as_str());
            if min.is_none() && !archived {
                return None;
            }
            let written = modified
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map_or(now, |t| t.fixed_offset());
            let deletable_from = written + min.unwrap_or_default();
            Some((
                id,
                ClassedPack {
                    class,
                    archived,
                    deletable_from,
                },
            ))
        })
        .collect()
}

/// The whole index, fresh from the repository, into the cache; returns the index files
/// read (the new index supersedes them) and the marks of earlier prunes, one per pack.
fn read_index(repo: &Repository) -> Result<(Vec<IndexId>, HashMap<PackId, ObsoletePack>)> {
    let read = repo.rebuild_index()?;
    // Prune rewrites the index from what it reads: a damaged file must be repaired first,
    // or the packs only it names would look unused.
    if let Some((_, e)) = read.damaged.into_iter().next() {
        return Err(match e {
            Error::Corrupt { object, reason } => Error::Corrupt {
                object,
                reason: format!("{reason}; prune waits until the index is repaired"),
            }
            .with_remedy(crate::Remedy::RepairIndex),
            e => e,
        });
    }
    Ok((read.read, read.marks))
}

/// Every blob some snapshot or WAL record reaches, into the cache's mark table. By tree, not by
/// [`crate::walk::TreeWalk`]: prune must keep whatever a snapshot reaches, entries with
/// names a restore would refuse included, and each tree once across all snapshots.
fn mark_used(repo: &Repository, marks: &HashMap<PackId, ObsoletePack>) -> Result<()> {
    let used = repo.used_blobs();
    used.reset()?;
    for (_, snap) in repo.snapshots().all_intact()? {
        let mut stack = vec![snap.tree];
        while let Some(tid) = stack.pop() {
            if !used.add(&tid)? {
                continue;
            }
            let tree = match repo.trees().load(&tid) {
                Ok(t) => t,
                // A tree a running backup deduplicated against a pack an earlier prune marked.
                Err(Error::NotFound { .. }) => load_marked_tree(repo, marks, &tid)?,
                Err(e) => return Err(e),
            };
            for node in &tree.entries {
                if let Some(sub) = node.subtree {
                    stack.push(sub);
                }
                for id in &node.content {
                    used.add(id)?;
                }
            }
        }
    }
    // Applications' root records keep their blobs as snapshots do (format-spec §15): a
    // record written after this listing deduplicated against packs in the index, which
    // the deletion protocol revives as it does for a snapshot written meanwhile.
    for id in repo.root_blobs()? {
        used.add(&id)?;
    }
    Ok(())
}

/// The plan's view of the snapshots: the used-blob marks in the cache, and pack headers.
struct SnapshotUse<'a> {
    repo: &'a Repository,
}

impl BlobUse for SnapshotUse<'_> {
    fn needed(&self, blob: &BlobId) -> Result<bool> {
        Ok(self.repo.used_blobs().contains(blob)? && !self.repo.blob_index().contains(blob)?)
    }

    fn blobs_of(&self, mark: &ObsoletePack) -> Result<Vec<BlobId>> {
        let ids = mark.blob_ids();
        if !ids.is_empty() {
            return Ok(ids);
        }
        // An unnamed pack: its own header says what it holds.
        let repo = self.repo;
        match repo.read_pack(mark.kind, &mark.id) {
            Ok(bytes) => Ok(repo
                .pack_header(&mark.id, &bytes)
                .map(|h| h.into_iter().map(|e| e.id).collect())
                .unwrap_or_default()),
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// Reads a tree from a pack that an earlier prune marked (so it is not in the index).
fn load_marked_tree(
    repo: &Repository,
    marks: &HashMap<PackId, ObsoletePack>,
    tid: &BlobId,
) -> Result<crate::repo::tree::Tree> {
    let not_found = || {
        Error::not_found(Missing::Tree {
            id: *tid,
            in_pack: false,
        })
    };
    let m = marks
        .values()
        .find(|m| m.blob_ids().contains(tid))
        .ok_or_else(not_found)?;
    let bytes = repo.read_pack(m.kind, &m.id)?;
    let entry = repo
        .pack_header(&m.id, &bytes)?
        .into_iter()
        .find(|e| e.id == *tid)
        .ok_or_else(not_found)?;
    let plain = repo.open_blob_in(&m.id, &bytes, 0, &entry)?;
    crate::repo::tree::Tree::decode(&plain, tid)
}
