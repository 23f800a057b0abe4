//! Prune: reclaim the space of data no snapshot references, without stopping backups.
//!
//! Backups take no lock, so a backup that started before a prune may still reference blobs
//! the prune finds unused. Hence the deletion protocol (format-spec §10.1): an unused pack is
//! first *marked* in a new index file (its blobs leave the index, so later backups store
//! them afresh), and deleted by a later prune only once the grace period has passed and only
//! if no snapshot references it by then; a pack that gained references is put back in the
//! index instead. Only one prune runs at a time (the maintenance lock).

use std::collections::{HashMap, HashSet};

use crate::backend::FileKind;
use crate::backup::DATA_PACK_SIZE;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::lock;
use crate::progress::Progress;
use crate::repo::config::FORMAT_VERSION;
use crate::repo::index::{IndexFile, IndexedPack, ObsoletePack};
use crate::repo::pack::{open_blob, read_header, BlobKind, PackBuilder, SealedBlob};
use crate::repo::{pack_file_kind, Repository};

/// Packs listed per index file written by prune.
const PACKS_PER_INDEX_FILE: usize = 4096;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a partly used pack when more than this share of it is unused (0.0 ..= 1.0).
    pub max_unused: f64,
    /// How long a marked pack must stay before it may be deleted; longer than any backup.
    pub grace: chrono::Duration,
    /// Delete unused packs in this run (no grace): only when no backup can be running.
    pub instant_delete: bool,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.10,
            grace: chrono::Duration::hours(24),
            instant_delete: false,
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    pub packs: usize,
    pub packs_marked: usize,
    pub packs_repacked: usize,
    pub packs_deleted: usize,
    pub packs_resurrected: usize,
    pub packs_waiting: usize,
    pub bytes_freed: u64,
    /// Bytes of unused data in packs marked now (freed once they are deleted).
    pub bytes_marked: u64,
    pub bytes_repacked: u64,
    pub index_files_replaced: usize,
    /// Temporary files of interrupted writes (local repositories) removed.
    pub temporaries_removed: usize,
    pub temporaries_bytes: u64,
    pub duration_secs: f64,
}

pub fn run(repo: &Repository, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
    let started = std::time::Instant::now();
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock::acquire(repo, "prune")?)
    };
    let now = crate::timespec::now();
    let mut report = PruneReport::default();

    // 1. The whole index, fresh from the repository, with the marks of earlier prunes.
    progress.message("reading index");
    let mut superseded: Vec<IndexId> = Vec::new();
    let mut marks: HashMap<PackId, ObsoletePack> = HashMap::new();
    repo.cache().begin()?;
    repo.cache().clear_index()?;
    for f in repo.backend().list(FileKind::Index)? {
        let Ok(id) = f.name.parse::<IndexId>() else {
            continue;
        };
        // Prune rewrites the index from what it reads: a damaged file must be repaired
        // first, or the packs only it names would look unused.
        let file: IndexFile = repo
            .load_file(FileKind::Index, &f.name)
            .map_err(|e| match e {
                Error::Corrupt { object, reason } => Error::Corrupt {
                    object,
                    reason: format!("{reason}; run `strata repair index` before pruning"),
                },
                e => e,
            })?;
        repo.cache().add_index_file(&id, &file)?;
        for o in file.obsolete {
            marks.entry(o.id).or_insert(o);
        }
        superseded.push(id);
    }
    repo.cache().commit()?;

    // 2. Every blob some snapshot reaches, into the cache's temporary mark table.
    progress.message("marking used blobs");
    let cache = repo.cache();
    cache.used_reset()?;
    for (_, snap) in repo.all_snapshots_intact()? {
        let mut stack = vec![snap.tree];
        while let Some(tid) = stack.pop() {
            if !cache.used_add(&tid)? {
                continue;
            }
            let tree = match repo.load_tree(&tid) {
                Ok(t) => t,
                // A tree a running backup deduplicated against a pack an earlier prune marked.
                Err(Error::NotFound { .. }) => load_marked_tree(repo, &marks, &tid)?,
                Err(e) => return Err(e),
            };
            for node in &tree.entries {
                if let Some(sub) = node.subtree {
                    stack.push(sub);
                }
                for id in &node.content {
                    cache.used_add(id)?;
                }
            }
        }
    }

    // 3. Decide per live pack: keep, repack, or mark.
    let usage = cache.pack_usage()?;
    report.packs = usage.len();
    let live: HashSet<PackId> = usage.iter().map(|u| u.id).collect();
    let mut keep: Vec<PackId> = Vec::new();
    let mut repack: Vec<(PackId, BlobKind)> = Vec::new();
    let mut new_marks: Vec<ObsoletePack> = Vec::new();
    for u in &usage {
        let (id, kind, size, used) = (&u.id, &u.kind, &u.size, &u.used);
        if *used == 0 {
            report.bytes_marked += size;
            new_marks.push(ObsoletePack {
                id: *id,
                kind: *kind,
                marked: now.to_rfc3339(),
                blobs: Vec::new(),
                entries: cache.pack_blobs(id)?,
            });
        } else if u.indexed.saturating_sub(*used) as f64 > opts.max_unused * *size as f64 {
            // Header and trailer are not waste: only unused blobs count.
            repack.push((*id, *kind));
            report.bytes_repacked += used;
        } else {
            keep.push(*id);
        }
    }
    // A pack no index names (an interrupted backup's, or a running backup's not yet indexed
    // one) is marked too: it is deleted only if still unnamed after the grace period.
    let mut stored: HashMap<PackId, u64> = HashMap::new();
    for kind in [FileKind::Data, FileKind::Tree] {
        for f in repo.backend().list(kind)? {
            let Ok(id) = f.name.parse::<PackId>() else {
                continue;
            };
            stored.insert(id, f.size);
            if !live.contains(&id) && !marks.contains_key(&id) {
                report.bytes_marked += f.size;
                new_marks.push(ObsoletePack {
                    id,
                    kind: if kind == FileKind::Data {
                        BlobKind::Data
                    } else {
                        BlobKind::Tree
                    },
                    marked: now.to_rfc3339(),
                    blobs: Vec::new(),
                    entries: Vec::new(),
                });
            }
        }
    }

    // 4. Earlier marks: delete when due and still unreferenced, revive when referenced.
    let mut delete: Vec<(PackId, BlobKind)> = Vec::new();
    let mut revived: Vec<IndexedPack> = Vec::new();
    let mut carried: Vec<ObsoletePack> = Vec::new();
    let mut due_marks: Vec<ObsoletePack> = Vec::new();
    for (id, m) in marks {
        if live.contains(&id) {
            continue; // named again by some index (a backup indexed it): the mark lapses
        }
        let marked = chrono::DateTime::parse_from_rfc3339(&m.marked).unwrap_or(now);
        if opts.instant_delete || now - marked >= opts.grace {
            due_marks.push(m);
        } else {
            carried.push(m);
        }
    }
    if opts.instant_delete {
        due_marks.append(&mut new_marks);
    }
    for m in due_marks {
        let blobs = if !m.entries.is_empty() || !m.blobs.is_empty() {
            m.blob_ids()
        } else {
            // An unnamed pack: its own header says what it holds.
            match repo.backend().read(pack_file_kind(m.kind), &m.id.to_hex()) {
                Ok(bytes) => read_header(repo.key(), &m.id, &bytes)
                    .map(|h| h.into_iter().map(|e| e.id).collect())
                    .unwrap_or_default(),
                Err(Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        let mut referenced = false;
        for b in &blobs {
            if cache.used_contains(b)? && !cache.has_blob(b)? {
                referenced = true;
                break;
            }
        }
        if referenced {
            let bytes = repo
                .backend()
                .read(pack_file_kind(m.kind), &m.id.to_hex())?;
            let entries = read_header(repo.key(), &m.id, &bytes)?;
            revived.push(IndexedPack {
                id: m.id,
                kind: m.kind,
                size: bytes.len() as u64,
                blobs: entries,
            });
        } else {
            delete.push((m.id, m.kind));
        }
    }
    report.packs_marked = new_marks.len();
    report.packs_resurrected = revived.len();
    report.packs_waiting = carried.len() + new_marks.len();
    report.packs_repacked = repack.len();

    if opts.dry_run {
        let gone: Vec<&(PackId, BlobKind)> = if opts.instant_delete {
            delete.iter().chain(repack.iter()).collect()
        } else {
            delete.iter().collect()
        };
        report.packs_deleted = gone.len();
        report.bytes_freed = gone
            .into_iter()
            .map(|(id, _)| stored.get(id).copied().unwrap_or(0))
            .sum::<u64>()
            .saturating_sub(report.bytes_repacked);
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // 5. Repack: copy the used blobs of wasteful packs into new packs (uploaded first).
    progress.message("repacking");
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let mut copied: HashSet<BlobId> = HashSet::new();
    let mut repacked_marks: Vec<ObsoletePack> = Vec::new();
    for (id, kind) in &repack {
        let bytes = repo.backend().read(pack_file_kind(*kind), &id.to_hex())?;
        let entries = cache.pack_blobs(id)?;
        for e in entries.iter().copied() {
            if !cache.used_contains(&e.id)? || !copied.insert(e.id) {
                continue;
            }
            let sealed = bytes
                .get(e.offset as usize..(e.offset + e.length as u64) as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {id}"), "blob beyond the end"))?;
            // Verified before it is copied: prune never spreads damage.
            open_blob(repo.key(), &e, sealed)?;
            let b = builders
                .entry(*kind)
                .or_insert_with(|| PackBuilder::new(*kind));
            b.add(SealedBlob {
                id: e.id,
                kind: e.kind,
                raw_length: e.raw_length,
                compression: e.compression,
                bytes: sealed.to_vec(),
            });
            if b.len() >= DATA_PACK_SIZE {
                let full = std::mem::replace(b, PackBuilder::new(*kind));
                new_packs.push(repo.write_pack(&full.finish(repo.key()), None)?);
            }
        }
        // Its used blobs now live in new packs, but a running backup may still reference
        // one of its unused blobs: like any unused pack it is marked, not deleted at once.
        if opts.instant_delete {
            delete.push((*id, *kind));
        } else {
            repacked_marks.push(ObsoletePack {
                id: *id,
                kind: *kind,
                marked: now.to_rfc3339(),
                blobs: Vec::new(),
                entries,
            });
        }
    }
    for (_, b) in builders {
        if !b.is_empty() {
            new_packs.push(repo.write_pack(&b.finish(repo.key()), None)?);
        }
    }
    let bytes_added: u64 = new_packs.iter().map(|p| p.size).sum();

    // 6. The new index: kept + revived + repacked packs, and the marks. Written before
    //    anything is deleted, so every state a reader can see is complete.
    progress.message("writing index");
    let mut obsolete: Vec<ObsoletePack> = carried;
    obsolete.extend(
        new_marks
            .into_iter()
            .filter(|m| !delete.iter().any(|(d, _)| *d == m.id)),
    );
    // Repacked packs are marked like unused ones (§10.1 step 3): one grace period, then
    // gone, and readable through the mark until then.
    report.packs_waiting += repacked_marks.len();
    obsolete.extend(repacked_marks);
    let mut packs: Vec<IndexedPack> = revived;
    packs.extend(new_packs);
    let mut files_written = 0usize;
    let mut pending: Vec<IndexedPack> = Vec::new();
    let flush = |packs: Vec<IndexedPack>,
                 obsolete: Vec<ObsoletePack>,
                 supersedes: Vec<IndexId>|
     -> Result<()> {
        let file = IndexFile {
            version: FORMAT_VERSION,
            supersedes,
            packs,
            obsolete,
        };
        repo.save_file(FileKind::Index, &file)?;
        Ok(())
    };
    let mut keep_iter = keep.into_iter();
    loop {
        while pending.len() < PACKS_PER_INDEX_FILE {
            if let Some(p) = packs.pop() {
                pending.push(p);
            } else if let Some(id) = keep_iter.next() {
                let (kind, size) = usage
                    .iter()
                    .find(|u| u.id == id)
                    .map(|u| (u.kind, u.size))
                    .expect("kept packs come from the usage list");
                pending.push(IndexedPack {
                    id,
                    kind,
                    size,
                    blobs: cache.pack_blobs(&id)?,
                });
            } else {
                break;
            }
        }
        if pending.is_empty() && files_written > 0 {
            break;
        }
        let first = files_written == 0;
        flush(
            std::mem::take(&mut pending),
            if first {
                std::mem::take(&mut obsolete)
            } else {
                Vec::new()
            },
            if first {
                superseded.clone()
            } else {
                Vec::new()
            },
        )?;
        files_written += 1;
    }
    // The new index files are durable: the ones they replace can go, then the packs.
    for id in &superseded {
        repo.backend().delete(FileKind::Index, &id.to_hex())?;
    }
    report.index_files_replaced = superseded.len();
    progress.message("deleting packs");
    let mut bytes_deleted = 0u64;
    for (id, kind) in &delete {
        bytes_deleted += stored.get(id).copied().unwrap_or(0);
        repo.backend().delete(pack_file_kind(*kind), &id.to_hex())?;
    }
    report.bytes_freed = bytes_deleted.saturating_sub(bytes_added);
    report.packs_deleted = delete.len();
    // Temporaries of writes killed or failed (a full disk): older than the grace period, no
    // write can still be going on, here or on another host.
    let stale_after = if opts.instant_delete {
        std::time::Duration::ZERO
    } else {
        opts.grace.to_std().unwrap_or_default()
    };
    for t in repo.backend().remove_stale_temporaries(stale_after)? {
        report.temporaries_removed += 1;
        report.temporaries_bytes += t.size;
    }
    report.bytes_freed += report.temporaries_bytes;
    repo.sync_index()?;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads a tree from a pack that an earlier prune marked (so it is not in the index).
fn load_marked_tree(
    repo: &Repository,
    marks: &HashMap<PackId, ObsoletePack>,
    tid: &BlobId,
) -> Result<crate::repo::tree::Tree> {
    let not_found = || Error::NotFound {
        object: format!("tree {tid} (in the index or a marked pack)"),
    };
    let m = marks
        .values()
        .find(|m| m.blob_ids().contains(tid))
        .ok_or_else(not_found)?;
    let bytes = repo
        .backend()
        .read(pack_file_kind(m.kind), &m.id.to_hex())?;
    let entry = read_header(repo.key(), &m.id, &bytes)?
        .into_iter()
        .find(|e| e.id == *tid)
        .ok_or_else(not_found)?;
    let sealed = bytes
        .get(entry.offset as usize..(entry.offset + entry.length as u64) as usize)
        .ok_or_else(not_found)?;
    let plain = open_blob(repo.key(), &entry, sealed)?;
    crate::repo::tree::Tree::decode(&plain).map_err(|e| Error::corrupt(format!("tree {tid}"), e))
}
