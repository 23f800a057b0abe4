//! Carrying out a [`PrunePlan`]: new packs first, then the new index, then deletions
//! (format-spec §10.1). Every state a reader can see on the way is complete.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset};

use super::plan::{PrunePlan, Rules};
use super::PruneReport;
use crate::error::Result;
use crate::id::{BlobId, IndexId, PackId};
use crate::progress::Progress;
use crate::repo::cache::PackUsage;
use crate::repo::index::{IndexedPack, ObsoletePack};
use crate::repo::pack::{BlobKind, SealedBlob};
use crate::repo::packer::Packer;
use crate::repo::{sealed_in, Repository};

/// What the plan was made from, and what executing it needs besides.
pub(super) struct Inputs<'a> {
    pub repo: &'a Repository,
    pub usage: &'a [PackUsage],
    pub stored: &'a HashMap<PackId, (BlobKind, u64)>,
    /// Storage classes of the packs not in the store's default one.
    pub classes: &'a HashMap<PackId, String>,
    /// The index files read; the new index replaces them.
    pub superseded: &'a [IndexId],
    pub now: DateTime<FixedOffset>,
    pub rules: &'a Rules,
    pub progress: &'a dyn Progress,
}

pub(super) fn execute(inp: &Inputs<'_>, plan: PrunePlan, report: &mut PruneReport) -> Result<()> {
    let repo = inp.repo;
    let marked = inp.now.to_rfc3339();
    let mut delete = plan.delete;
    // 1. Repack: the used blobs of wasteful packs into new packs, uploaded first.
    inp.progress.message("repacking");
    let (new_packs, repacked) = repack(repo, &plan.repack, inp.classes)?;
    let bytes_added: u64 = new_packs.iter().map(|p| p.size).sum();
    let carried: Vec<PackId> = plan.carry.iter().map(|m| m.id).collect();
    let mut obsolete: Vec<ObsoletePack> = plan.carry;
    for (id, kind, entries) in repacked {
        // Its used blobs now live in new packs, but a running backup may still reference
        // one of its unused blobs: like any unused pack it is marked (§10.1 step 3), one
        // grace period, readable through the mark until then.
        if inp.rules.instant_delete {
            delete.push((id, kind));
        } else {
            report.packs_waiting += 1;
            obsolete.push(ObsoletePack {
                id,
                kind,
                marked: marked.clone(),
                blobs: Vec::new(),
                entries,
            });
        }
    }
    for m in &plan.mark {
        obsolete.push(ObsoletePack {
            id: m.id,
            kind: m.kind,
            marked: marked.clone(),
            blobs: Vec::new(),
            entries: if m.indexed {
                repo.blob_index().pack_blobs(&m.id)?
            } else {
                Vec::new()
            },
        });
    }
    let mut packs = revive(repo, &plan.revive)?;
    packs.extend(new_packs);

    // 2. The mark record naming every pack leaving the live set (format-spec §7.3), then
    //    the new index: revived, new and kept packs, and the marks. The record comes
    //    first so that a backup which lists mark records after the new index files exist
    //    finds it; both are written before anything is deleted.
    inp.progress.message("writing index");
    // Marks carried from earlier runs were named by their records then.
    let carried: HashSet<PackId> = carried.into_iter().collect();
    let leaving: Vec<PackId> = (obsolete.iter().map(|m| m.id))
        .chain(delete.iter().map(|(id, _)| *id))
        .filter(|id| !carried.contains(id))
        .collect();
    repo.write_mark_record(&leaving, false, inp.superseded)?;
    // The marks date from now, not from the start of the run: a backup that listed the
    // records before this one was durable may run a grace period from here, and the
    // grace must be counted from after it (format-spec §10.1).
    let marked_now = crate::timespec::now().to_rfc3339();
    for m in obsolete.iter_mut().filter(|m| !carried.contains(&m.id)) {
        m.marked = marked_now.clone();
    }
    write_index(inp, packs, &plan.keep, obsolete)?;
    // 3. The new index is durable and the files it replaces are gone: now the packs.
    report.index_files_replaced = inp.superseded.len();
    inp.progress.message("deleting packs");
    let mut bytes_deleted = 0u64;
    for (id, kind) in &delete {
        bytes_deleted += inp.stored.get(id).map_or(0, |s| s.1);
        repo.delete_pack(*kind, id)?;
    }
    report.bytes_freed = bytes_deleted.saturating_sub(bytes_added);
    report.packs_deleted = delete.len();
    // Temporaries of writes killed or failed (a full disk): older than the grace period, no
    // write can still be going on, here or on another host.
    let stale_after = if inp.rules.instant_delete {
        std::time::Duration::ZERO
    } else {
        inp.rules.grace.to_std().unwrap_or_default()
    };
    for t in repo.remove_stale_temporaries(stale_after)? {
        report.temporaries_removed += 1;
        report.temporaries_bytes += t.size;
    }
    report.bytes_freed += report.temporaries_bytes;
    repo.sync_index()?;
    // The index that settled their marks is durable: records past their retention go.
    repo.delete_old_mark_records()?;
    Ok(())
}

type Repacked = (PackId, BlobKind, Vec<crate::repo::pack::BlobEntry>);

/// Copies the used blobs of `packs` into new packs, each verified before it is copied
/// (prune never spreads damage), in the storage class of the pack it comes from (a set's
/// class stays its own). New packs go up while the next fill, several at once. Returns the
/// new packs and, per repacked pack, its entries (for its mark).
fn repack(
    repo: &Repository,
    packs: &[(PackId, BlobKind)],
    classes: &HashMap<PackId, String>,
) -> Result<(Vec<IndexedPack>, Vec<Repacked>)> {
    let used = repo.used_blobs();
    let written = std::sync::Mutex::new(Vec::new());
    let mut repacked = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        // The new packs are collected here, not indexed: prune's new index names them.
        let packer = Packer::new(repo, scope, 0, |pack, _| {
            written.lock().unwrap().push(pack);
            Ok(())
        });
        let copied = copy_used(repo, packs, classes, &used, &packer, &mut repacked);
        // Every upload waited for, on an error too (their packs go at the next prune).
        let finished = packer.finish();
        copied?;
        finished
    })?;
    Ok((written.into_inner().unwrap(), repacked))
}

/// Adds the used blobs of `packs` to the packer, each verified first and once only.
fn copy_used(
    repo: &Repository,
    packs: &[(PackId, BlobKind)],
    classes: &HashMap<PackId, String>,
    used: &crate::repo::cache::UsedBlobs<'_>,
    packer: &Packer<'_, '_>,
    repacked: &mut Vec<Repacked>,
) -> Result<()> {
    let mut copied: HashSet<BlobId> = HashSet::new();
    for (id, kind) in packs {
        let bytes = repo.read_pack(*kind, id)?;
        let entries = repo.blob_index().pack_blobs(id)?;
        let class = classes.get(id).map(String::as_str);
        for e in entries.iter().copied() {
            if !used.contains(&e.id)? || !copied.insert(e.id) {
                continue;
            }
            repo.open_blob_in(id, &bytes, 0, &e)?;
            let sealed = sealed_in(id, &bytes, 0, &e)?;
            let blob = SealedBlob {
                id: e.id,
                kind: e.kind,
                raw_length: e.raw_length,
                compression: e.compression,
                bytes: sealed.to_vec(),
            };
            packer.add(blob, class)?;
        }
        repacked.push((*id, *kind, entries));
    }
    Ok(())
}

/// Marked packs a snapshot needs again, by their own headers.
fn revive(repo: &Repository, packs: &[(PackId, BlobKind)]) -> Result<Vec<IndexedPack>> {
    let mut out = Vec::new();
    for (id, kind) in packs {
        let bytes = repo.read_pack(*kind, id)?;
        let entries = repo.pack_header(id, &bytes)?;
        out.push(IndexedPack {
            id: *id,
            kind: *kind,
            size: bytes.len() as u64,
            blobs: entries,
        });
    }
    Ok(out)
}

/// The new index: `packs`, then the kept packs (their entries read from the cache one
/// index file at a time), and the marks; it supersedes every index file prune read.
fn write_index(
    inp: &Inputs<'_>,
    packs: Vec<IndexedPack>,
    keep: &[PackId],
    obsolete: Vec<ObsoletePack>,
) -> Result<()> {
    let repo = inp.repo;
    let sizes: HashMap<PackId, (BlobKind, u64)> =
        inp.usage.iter().map(|u| (u.id, (u.kind, u.size))).collect();
    let kept = keep.iter().map(|id| {
        let (kind, size) = sizes[id];
        Ok(IndexedPack {
            id: *id,
            kind,
            size,
            blobs: repo.blob_index().pack_blobs(id)?,
        })
    });
    let mut all = packs.into_iter().rev().map(Ok).chain(kept);
    repo.replace_index(&mut all, obsolete, inp.superseded)?;
    Ok(())
}
