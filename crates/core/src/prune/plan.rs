//! What a prune will do, decided without I/O: from how much of each pack the snapshots
//! use, what the backend stores, and the marks of earlier prunes (format-spec §10.1).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset};

use crate::error::Result;
use crate::id::{BlobId, PackId};
use crate::repo::cache::PackUsage;
use crate::repo::index::ObsoletePack;
use crate::repo::pack::BlobKind;

/// What the snapshots use, asked only about the blobs of marks that are due.
pub trait BlobUse {
    /// True when some snapshot references `blob` and no live pack holds it: a pack
    /// holding it must not go.
    fn needed(&self, blob: &BlobId) -> Result<bool>;
    /// The blobs a mark's pack holds (an unnamed pack's come from its own header).
    fn blobs_of(&self, mark: &ObsoletePack) -> Result<Vec<BlobId>>;
}

/// The rules of one prune.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Repack a pack when more than this share of it is unused (0.0 ..= 1.0).
    pub max_unused: f64,
    /// How long a mark waits before its pack may be deleted.
    pub grace: chrono::Duration,
    /// Delete at once what would be marked (no backup may be running).
    pub instant_delete: bool,
}

/// A pack in a storage class with a minimum storage duration (an archive class, or an
/// infrequent-access one): deleting it earlier is billed as keeping it, and an archived
/// one cannot be read to be repacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassedPack {
    /// Its storage class.
    pub class: String,
    /// In archive storage (not readable without a thaw).
    pub archived: bool,
    /// When its minimum storage duration ends.
    pub deletable_from: DateTime<FixedOffset>,
}

/// When `id` is in a class whose minimum storage duration has not ended by `now`: its end.
fn held_until(
    classed: &HashMap<PackId, ClassedPack>,
    id: &PackId,
    now: DateTime<FixedOffset>,
) -> Option<DateTime<FixedOffset>> {
    classed
        .get(id)
        .map(|c| c.deletable_from)
        .filter(|until| *until > now)
}

/// A pack to mark now: unused by every snapshot, or named by no index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMark {
    pub id: PackId,
    pub kind: BlobKind,
    /// Named by the index (its entries go into the mark), or found only on the backend.
    pub indexed: bool,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct PrunePlan {
    /// Live packs that stay as they are, in the order of the usage list.
    pub keep: Vec<PackId>,
    /// Partly used packs: their used blobs are copied into new packs, then they are marked
    /// (deleted at once with `instant_delete`).
    pub repack: Vec<(PackId, BlobKind)>,
    /// Packs marked by this prune (not with `instant_delete`: those are in `delete`).
    pub mark: Vec<NewMark>,
    /// Earlier marks still waiting out their grace period.
    pub carry: Vec<ObsoletePack>,
    /// Packs to delete once the new index is written.
    pub delete: Vec<(PackId, BlobKind)>,
    /// Marked packs some snapshot needs again: back into the index.
    pub revive: Vec<(PackId, BlobKind)>,
    /// Bytes in packs newly found unused (freed once they are deleted).
    pub bytes_marked: u64,
    /// Used bytes copied out of repacked packs.
    pub bytes_repacked: u64,
    /// Partly used packs in archive storage: kept whole, since repacking needs a thaw.
    pub cold_not_repacked: Vec<PackId>,
    /// Unused packs whose deletion waits for their class's minimum storage duration (they
    /// stay marked): the pack, its class, and the end of the duration.
    pub held: Vec<(PackId, String, DateTime<FixedOffset>)>,
}

impl PrunePlan {
    /// `usage`: the live packs (those an index names) with their used bytes; `stored`:
    /// every pack the backend holds, with its kind and size; `classed`: those of them in
    /// classes with a minimum storage duration; `marks`: the earlier marks, one per pack.
    pub fn new(
        usage: &[PackUsage],
        stored: &HashMap<PackId, (BlobKind, u64)>,
        classed: &HashMap<PackId, ClassedPack>,
        marks: Vec<ObsoletePack>,
        now: DateTime<FixedOffset>,
        rules: &Rules,
        blob_use: &dyn BlobUse,
    ) -> Result<PrunePlan> {
        let mut plan = PrunePlan::default();
        let live: HashSet<PackId> = usage.iter().map(|u| u.id).collect();
        plan.classify(usage, rules, classed);
        plan.mark_unnamed(stored, &live, &marks);
        // Earlier marks: due ones go unless a snapshot needs them again.
        let mut due = Vec::new();
        for m in marks {
            if live.contains(&m.id) {
                continue; // named again by some index (a backup indexed it): the mark lapses
            }
            let at = DateTime::parse_from_rfc3339(&m.marked).unwrap_or(now);
            if rules.instant_delete || now - at >= rules.grace {
                due.push(m);
            } else {
                plan.carry.push(m);
            }
        }
        if rules.instant_delete {
            // Nothing waits: what would be marked is due now. An indexed pack with no used
            // blob has nothing to revive; an unnamed one is asked like any mark.
            for m in std::mem::take(&mut plan.mark) {
                if let Some(until) = held_until(classed, &m.id, now) {
                    plan.held.push((m.id, classed[&m.id].class.clone(), until));
                    plan.mark.push(m);
                } else if m.indexed {
                    plan.delete.push((m.id, m.kind));
                } else {
                    due.push(ObsoletePack {
                        id: m.id,
                        kind: m.kind,
                        marked: now.to_rfc3339(),
                        blobs: Vec::new(),
                        entries: Vec::new(),
                    });
                }
            }
        }
        for m in due {
            // Unused, but its class bills it until its minimum storage duration ends; an
            // archived pack no index names cannot have its header read to be asked about.
            let unreadable =
                classed.get(&m.id).is_some_and(|c| c.archived) && m.blob_ids().is_empty();
            if let Some(until) = held_until(classed, &m.id, now).or(unreadable.then_some(now)) {
                plan.held.push((m.id, classed[&m.id].class.clone(), until));
                plan.carry.push(m);
                continue;
            }
            let mut needed = false;
            for b in blob_use.blobs_of(&m)? {
                if blob_use.needed(&b)? {
                    needed = true;
                    break;
                }
            }
            let to = if needed {
                &mut plan.revive
            } else {
                &mut plan.delete
            };
            to.push((m.id, m.kind));
        }
        Ok(plan)
    }

    /// Live packs: kept, repacked when wasteful, marked when unused.
    fn classify(
        &mut self,
        usage: &[PackUsage],
        rules: &Rules,
        classed: &HashMap<PackId, ClassedPack>,
    ) {
        for u in usage {
            if u.used == 0 {
                self.bytes_marked += u.size;
                self.mark.push(NewMark {
                    id: u.id,
                    kind: u.kind,
                    indexed: true,
                    size: u.size,
                });
            } else if u.indexed.saturating_sub(u.used) as f64 > rules.max_unused * u.size as f64
                && classed.get(&u.id).is_some_and(|c| c.archived)
            {
                self.cold_not_repacked.push(u.id);
                self.keep.push(u.id);
            } else if u.indexed.saturating_sub(u.used) as f64 > rules.max_unused * u.size as f64 {
                // Header and trailer are not waste: only unused blobs count.
                self.repack.push((u.id, u.kind));
                self.bytes_repacked += u.used;
            } else {
                self.keep.push(u.id);
            }
        }
    }

    /// A pack no index names (an interrupted backup's, or a running backup's not yet
    /// indexed one) is marked too: deleted only if still unnamed after the grace period.
    fn mark_unnamed(
        &mut self,
        stored: &HashMap<PackId, (BlobKind, u64)>,
        live: &HashSet<PackId>,
        marks: &[ObsoletePack],
    ) {
        let marked: HashSet<PackId> = marks.iter().map(|m| m.id).collect();
        let mut unnamed: Vec<NewMark> = stored
            .iter()
            .filter(|(id, _)| !live.contains(id) && !marked.contains(id))
            .map(|(id, (kind, size))| NewMark {
                id: *id,
                kind: *kind,
                indexed: false,
                size: *size,
            })
            .collect();
        unnamed.sort_by_key(|m| m.id);
        self.bytes_marked += unnamed.iter().map(|m| m.size).sum::<u64>();
        self.mark.extend(unnamed);
    }

    /// Packs deleted by this plan, repacked ones included with `instant_delete`.
    pub fn gone(&self, rules: &Rules) -> impl Iterator<Item = &(PackId, BlobKind)> {
        let repacked = if rules.instant_delete {
            &self.repack[..]
        } else {
            &[]
        };
        self.delete.iter().chain(repacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }

    fn blob(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    fn usage(n: u8, size: u64, used: u64) -> PackUsage {
        PackUsage {
            id: pack(n),
            kind: BlobKind::Data,
            size,
            used,
            indexed: size - 100,
        }
    }

    fn mark(n: u8, hours_ago: i64, blobs: &[u8]) -> ObsoletePack {
        ObsoletePack {
            id: pack(n),
            kind: BlobKind::Data,
            marked: (now() - chrono::Duration::hours(hours_ago)).to_rfc3339(),
            blobs: blobs.iter().map(|b| blob(*b)).collect(),
            entries: Vec::new(),
        }
    }

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").unwrap()
    }

    fn rules() -> Rules {
        Rules {
            max_unused: 0.10,
            grace: chrono::Duration::hours(24),
            instant_delete: false,
        }
    }

    /// Snapshots need `needed`; unnamed packs hold what `headers` says.
    struct Use {
        needed: HashSet<BlobId>,
        headers: HashMap<PackId, Vec<BlobId>>,
    }

    impl BlobUse for Use {
        fn needed(&self, blob: &BlobId) -> Result<bool> {
            Ok(self.needed.contains(blob))
        }
        fn blobs_of(&self, m: &ObsoletePack) -> Result<Vec<BlobId>> {
            Ok(match m.blob_ids() {
                ids if !ids.is_empty() => ids,
                _ => self.headers.get(&m.id).cloned().unwrap_or_default(),
            })
        }
    }

    fn nothing_needed() -> Use {
        Use {
            needed: HashSet::new(),
            headers: HashMap::new(),
        }
    }

    fn stored(packs: &[u8]) -> HashMap<PackId, (BlobKind, u64)> {
        packs
            .iter()
            .map(|n| (pack(*n), (BlobKind::Data, 1000)))
            .collect()
    }

    #[test]
    fn used_packs_stay_unused_ones_are_marked_wasteful_ones_repacked() {
        let usage = [usage(1, 1000, 900), usage(2, 1000, 0), usage(3, 1000, 300)];
        let plan = PrunePlan::new(
            &usage,
            &stored(&[1, 2, 3]),
            &HashMap::new(),
            vec![],
            now(),
            &rules(),
            &nothing_needed(),
        )
        .unwrap();
        assert_eq!(plan.keep, vec![pack(1)]);
        assert_eq!(plan.repack, vec![(pack(3), BlobKind::Data)]);
        assert_eq!(plan.bytes_repacked, 300);
        assert_eq!(plan.mark.len(), 1);
        assert!(plan.mark[0].indexed && plan.mark[0].id == pack(2));
        assert_eq!(plan.bytes_marked, 1000);
        assert!(plan.delete.is_empty() && plan.revive.is_empty() && plan.carry.is_empty());
    }

    #[test]
    fn a_pack_no_index_names_is_marked_not_deleted() {
        let plan = PrunePlan::new(
            &[usage(1, 1000, 900)],
            &stored(&[1, 9]),
            &HashMap::new(),
            vec![],
            now(),
            &rules(),
            &nothing_needed(),
        )
        .unwrap();
        assert_eq!(plan.mark.len(), 1);
        assert!(!plan.mark[0].indexed && plan.mark[0].id == pack(9));
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn marks_wait_out_the_grace_period_then_go_unless_needed_again() {
        let marks = vec![
            mark(5, 1, &[50]),
            mark(6, 25, &[60]),
            mark(7, 25, &[70, 71]),
        ];
        let blob_use = Use {
            needed: HashSet::from([blob(71)]),
            headers: HashMap::new(),
        };
        let plan = PrunePlan::new(
            &[usage(1, 1000, 900)],
            &stored(&[1, 5, 6, 7]),
            &HashMap::new(),
            marks,
            now(),
            &rules(),
            &blob_use,
        )
        .unwrap();
        assert_eq!(
            plan.carry.iter().map(|m| m.id).collect::<Vec<_>>(),
            [pack(5)]
        );
        assert_eq!(plan.delete, vec![(pack(6), BlobKind::Data)]);
        assert_eq!(plan.revive, vec![(pack(7), BlobKind::Data)]);
        // Marked packs are on the backend but are not marked again.
        assert!(plan.mark.is_empty());
    }

    #[test]
    fn a_mark_whose_pack_an_index_names_again_lapses() {
        let plan = PrunePlan::new(
            &[usage(5, 1000, 900)],
            &stored(&[5]),
            &HashMap::new(),
            vec![mark(5, 48, &[50])],
            now(),
            &rules(),
            &nothing_needed(),
        )
        .unwrap();
        assert_eq!(plan.keep, vec![pack(5)]);
        assert!(plan.delete.is_empty() && plan.carry.is_empty() && plan.revive.is_empty());
    }

    #[test]
    fn an_unnamed_packs_blobs_come_from_its_header() {
        let mut m = mark(8, 30, &[]);
        m.blobs.clear();
        let blob_use = Use {
            needed: HashSet::from([blob(80)]),
            headers: HashMap::from([(pack(8), vec![blob(80)])]),
        };
        let plan = PrunePlan::new(
            &[],
            &stored(&[8]),
            &HashMap::new(),
            vec![m],
            now(),
            &rules(),
            &blob_use,
        )
        .unwrap();
        assert_eq!(plan.revive, vec![(pack(8), BlobKind::Data)]);
    }

    #[test]
    fn instant_delete_deletes_what_it_would_mark_and_every_mark() {
        let rules = Rules {
            instant_delete: true,
            ..rules()
        };
        let plan = PrunePlan::new(
            &[usage(1, 1000, 0), usage(3, 1000, 300)],
            &stored(&[1, 3, 9]),
            &HashMap::new(),
            vec![mark(5, 1, &[50])],
            now(),
            &rules,
            &nothing_needed(),
        )
        .unwrap();
        assert!(plan.mark.is_empty() && plan.carry.is_empty());
        let mut gone: Vec<PackId> = plan.gone(&rules).map(|(id, _)| *id).collect();
        gone.sort();
        assert_eq!(gone, vec![pack(1), pack(3), pack(5), pack(9)]);
    }

    #[test]
    fn archived_packs_are_never_repacked_and_unused_ones_wait_for_their_minimum_duration() {
        let classed = |n: u8, days_left: i64| {
            (
                pack(n),
                ClassedPack {
                    class: "GLACIER".into(),
                    archived: true,
                    deletable_from: now() + chrono::Duration::days(days_left),
                },
            )
        };
        // 1: wasteful but cold; 2: unused, 80 days to go; 5: marked long ago, 10 days to
        // go; 6: marked long ago, its 90 days are over.
        let classes = HashMap::from([
            classed(1, 0),
            classed(2, 80),
            classed(5, 10),
            classed(6, -1),
        ]);
        let plan = PrunePlan::new(
            &[usage(1, 1000, 300), usage(2, 1000, 0)],
            &stored(&[1, 2, 5, 6]),
            &classes,
            vec![mark(5, 48, &[50]), mark(6, 48, &[60])],
            now(),
            &rules(),
            &nothing_needed(),
        )
        .unwrap();
        assert!(plan.repack.is_empty());
        assert_eq!(plan.cold_not_repacked, vec![pack(1)]);
        assert_eq!(plan.keep, vec![pack(1)]);
        // 2 is marked as usual (the grace period runs first).
        assert_eq!(plan.mark.len(), 1);
        assert_eq!(plan.delete, vec![(pack(6), BlobKind::Data)]);
        assert_eq!(
            plan.carry.iter().map(|m| m.id).collect::<Vec<_>>(),
            [pack(5)]
        );
        assert_eq!(
            plan.held,
            vec![(
                pack(5),
                "GLACIER".to_string(),
                now() + chrono::Duration::days(10)
            )]
        );
        // With instant delete, an unused pack within its duration stays marked, held.
        let instant = Rules {
            instant_delete: true,
            ..rules()
        };
        let plan = PrunePlan::new(
            &[usage(2, 1000, 0)],
            &stored(&[2]),
            &classes,
            vec![],
            now(),
            &instant,
            &nothing_needed(),
        )
        .unwrap();
        assert!(plan.delete.is_empty());
        assert_eq!(plan.mark.len(), 1);
        assert_eq!(plan.held.len(), 1);
    }
}
