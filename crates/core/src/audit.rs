//! Audit records (`audit/<id>`, format-spec §9.1): what verification and restore drills
//! found, kept in the repository so that every machine with the password sees them.
//!
//! A check that reads packs writes one verification record holding the whole verification
//! state: every pack's last verification (time and result), merged from the records before
//! it, which it then deletes (after its own is durable). A pack found damaged stays damaged
//! in that state until a later read finds it whole (after a repair) or it is gone. A drill
//! writes one record per set; older drills of the set beyond the last few are deleted.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{AuditId, PackId, SnapshotId};
use crate::repo::snapshot::Lineage;
use crate::repo::Repository;

/// Drills kept per set (older ones are deleted when a new one is recorded).
const DRILLS_KEPT: usize = 12;
/// The window of "recently verified".
pub const RECENT_DAYS: i64 = 30;

/// One pack's last verification: when (Unix milliseconds) and whether it was whole.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackMark(pub PackId, pub i64, pub bool);

/// An audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audit {
    /// A check's verification state.
    Verification(Verification),
    /// A restore drill.
    Drill(Drill),
}

/// The verification state after a check that read packs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Record version (1).
    pub version: u32,
    /// When the check ran (RFC 3339).
    pub time: String,
    /// Where it ran.
    pub host: String,
    /// Every pack's last verification, this check's and those of the records it merged.
    pub packs: Vec<PackMark>,
    /// The verification records merged into this one (deleted once it is durable).
    #[serde(default)]
    pub supersedes: Vec<AuditId>,
    /// Packs this check read.
    pub packs_read: u64,
    /// Bytes it read.
    pub bytes_read: u64,
    /// Problems it found.
    pub problems: u64,
}

/// A restore drill: a snapshot (or a sample of its files) restored, verified and removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    /// Record version (1).
    pub version: u32,
    /// When the drill ran (RFC 3339).
    pub time: String,
    /// Where it ran.
    pub host: String,
    /// The set drilled (none for snapshots outside sets).
    pub set: Option<String>,
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// The share of the snapshot's files restored (1.0: all).
    pub sample: f64,
    /// Files restored and verified.
    pub files: u64,
    /// Bytes restored and verified.
    pub bytes: u64,
    /// Wall time of restore and verification.
    pub duration_secs: f64,
    /// Bytes of file content in the whole snapshot.
    pub snapshot_bytes: u64,
    /// The whole snapshot's restore time at this drill's throughput (the RTO estimate).
    pub projected_secs: f64,
    /// Files that could not be restored or did not verify.
    pub errors: u64,
    /// The set's verify command run in the restored copy, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyRun>,
    /// Bytes of the index files when it ran: what a bare machine reads before restoring.
    #[serde(default)]
    pub index_bytes: u64,
    /// The storage classes of the data packs the snapshot needs.
    #[serde(default)]
    pub data_classes: Vec<ClassBytes>,
}

/// A drill's verify command (`drill-verify`): the operator's own check of the restored
/// copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyRun {
    /// The command (`sh -c`).
    pub command: String,
    /// Its exit code; none when it was killed (timeout, signal) or could not start.
    pub exit_code: Option<i32>,
    /// How it ended, in words.
    pub outcome: String,
    /// The last lines of its output (standard output and error), at most
    /// [`VerifyRun::TAIL`] bytes.
    pub output_tail: String,
    /// How long it ran.
    pub duration_secs: f64,
}

impl VerifyRun {
    /// The most output a record keeps.
    pub const TAIL: usize = 4096;

    /// Whether it exited 0.
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Data packs of one storage class that a drilled snapshot needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassBytes {
    /// The storage class (`STANDARD` where the store names none).
    pub class: String,
    /// Packs of the class.
    pub packs: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Drill {
    /// Bytes per second restored and verified; 0 for a drill with errors, which measured
    /// no speed worth reporting.
    pub fn throughput(&self) -> f64 {
        if self.errors == 0 && self.duration_secs > 0.0 {
            self.bytes as f64 / self.duration_secs
        } else {
            0.0
        }
    }

    /// Whether every file restored and verified and the verify command (if any) passed.
    pub fn passed(&self) -> bool {
        self.errors == 0 && self.verify.as_ref().is_none_or(VerifyRun::passed)
    }

    /// Why it failed, in words (empty for a drill that passed).
    pub fn failure(&self) -> String {
        let mut why = Vec::new();
        if self.errors > 0 {
            why.push(format!("{} file(s) did not restore or verify", self.errors));
        }
        if let Some(v) = self.verify.as_ref().filter(|v| !v.passed()) {
            why.push(format!("its verify command {}", v.outcome));
        }
        why.join("; ")
    }
}

/// What `status` reads of a repository opened for metadata only.
impl crate::MetadataRepository {
    /// The audit records (checks, drills), oldest first.
    pub fn audit_records(&self) -> Result<Vec<(AuditId, Audit)>> {
        load(self.repository())
    }

    /// How much of the repository verification covers at `now`, over the packs the cache
    /// last knew of (the index is not synced for metadata: it may lag behind).
    pub fn coverage(
        &self,
        records: &[(AuditId, Audit)],
        now: DateTime<FixedOffset>,
    ) -> Result<Coverage> {
        repository_coverage(self.repository(), records, now)
    }
}

/// Every audit record, from the cache where it has them (one listing).
pub fn load(repo: &Repository) -> Result<Vec<(AuditId, Audit)>> {
    let listed: Vec<AuditId> = repo
        .files()
        .list(FileKind::Audit)?
        .into_iter()
        .filter_map(|f| f.name.parse().ok())
        .collect();
    let cache = repo.audit_cache();
    let present: HashSet<AuditId> = listed.iter().copied().collect();
    for id in cache.ids()? {
        if !present.contains(&id) {
            cache.remove(&id)?;
        }
    }
    let mut out = Vec::new();
    for id in listed {
        let audit = match cache.get(&id)? {
            Some(bytes) => ciborium::from_reader(&bytes[..])
                .map_err(|e| Error::corrupt(format!("cached audit record {id}"), e.to_string()))?,
            None => match repo.load_file::<Audit>(FileKind::Audit, &id.to_hex()) {
                Ok(a) => {
                    let mut buf = Vec::new();
                    ciborium::into_writer(&a, &mut buf).expect("CBOR into memory");
                    cache.put(&id, &buf)?;
                    a
                }
                // A damaged record is skipped: verification state is advisory, and the
                // next check writes it whole again.
                Err(e) => {
                    repo.warn(format!("skipped audit record {id}: {e}"));
                    continue;
                }
            },
        };
        out.push((id, audit));
    }
    Ok(out)
}

/// Every pack's last verification, merged from the verification records.
pub fn verification_state(records: &[(AuditId, Audit)]) -> HashMap<PackId, (i64, bool)> {
    let mut state: HashMap<PackId, (i64, bool)> = HashMap::new();
    for (_, a) in records {
        if let Audit::Verification(v) = a {
            for PackMark(pack, time, ok) in &v.packs {
                let e = state.entry(*pack).or_insert((*time, *ok));
                if *time >= e.0 {
                    *e = (*time, *ok);
                }
            }
        }
    }
    state
}

/// How much of the repository's packs verification has covered.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// Packs in the repository.
    pub packs: u64,
    /// Of them, verified in the last [`RECENT_DAYS`] days.
    pub verified_recently: u64,
    /// Of them, never verified.
    pub never_verified: u64,
    /// Of them, damaged when last read.
    pub damaged: Vec<PackId>,
    /// Age of the oldest last verification among packs verified at all, in seconds.
    pub oldest_verification_secs: Option<f64>,
    /// When a check last recorded a verification.
    pub last_check: Option<String>,
}

impl Coverage {
    /// Share of the packs verified in the last [`RECENT_DAYS`] days (1 for no packs).
    pub fn fraction_recent(&self) -> f64 {
        if self.packs == 0 {
            1.0
        } else {
            self.verified_recently as f64 / self.packs as f64
        }
    }
}

/// Coverage of `packs` (those stored now) by the verification state, as of `now`.
pub fn coverage(
    records: &[(AuditId, Audit)],
    packs: impl IntoIterator<Item = PackId>,
    now: DateTime<FixedOffset>,
) -> Coverage {
    let state = verification_state(records);
    let now = now.timestamp_millis();
    let recent = now - RECENT_DAYS * 86_400_000;
    let mut c = Coverage {
        last_check: records
            .iter()
            .filter_map(|(_, a)| match a {
                Audit::Verification(v) => Some(v.time.clone()),
                _ => None,
            })
            .max_by_key(|t| DateTime::parse_from_rfc3339(t).ok()),
        ..Default::default()
    };
    let mut oldest: Option<i64> = None;
    for pack in packs {
        c.packs += 1;
        match state.get(&pack) {
            None => c.never_verified += 1,
            Some((time, ok)) => {
                if *time >= recent {
                    c.verified_recently += 1;
                }
                if !ok {
                    c.damaged.push(pack);
                }
                oldest = Some(oldest.map_or(*time, |o| o.min(*time)));
            }
        }
    }
    c.oldest_verification_secs = oldest.map(|o| (now - o).max(0) as f64 / 1000.0);
    c
}

/// Coverage of the packs the index cache names and those the records name (no listing:
/// as current as the cache, or on a machine without one, as the last check).
pub fn repository_coverage(
    repo: &Repository,
    records: &[(AuditId, Audit)],
    now: DateTime<FixedOffset>,
) -> Result<Coverage> {
    let mut packs: HashSet<PackId> = repo
        .blob_index()
        .packs()?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    packs.extend(verification_state(records).into_keys());
    Ok(coverage(records, packs, now))
}

/// Records a check's pack reads: one new verification record holding the whole state
/// (this check's marks over those of `records`, the records [`load`] found, limited to
/// `stored` packs), which it returns; the records it merges are deleted once it is durable.
pub fn record_verification(
    repo: &Repository,
    records: &[(AuditId, Audit)],
    marks: &[PackMark],
    stored: &HashSet<PackId>,
    summary: (u64, u64, u64),
) -> Result<(AuditId, Audit)> {
    let mut state = verification_state(records);
    for PackMark(pack, time, ok) in marks {
        state.insert(*pack, (*time, *ok));
    }
    let mut packs: Vec<PackMark> = state
        .into_iter()
        .filter(|(p, _)| stored.contains(p))
        .map(|(p, (t, ok))| PackMark(p, t, ok))
        .collect();
    packs.sort_by_key(|m| m.0);
    let supersedes: Vec<AuditId> = records
        .iter()
        .filter(|(_, a)| matches!(a, Audit::Verification(_)))
        .map(|(id, _)| *id)
        .collect();
    let (packs_read, bytes_read, problems) = summary;
    let record = Audit::Verification(Verification {
        version: 1,
        time: crate::timespec::now().to_rfc3339(),
        host: crate::util::hostname(),
        packs,
        supersedes: supersedes.clone(),
        packs_read,
        bytes_read,
        problems,
    });
    let id = save(repo, &record)?;
    // Deletion only after the new state is durable: a crash in between leaves both,
    // and readers merge them.
    for old in supersedes {
        delete(repo, &old)?;
    }
    Ok((id, record))
}

/// Records a drill; the set's drills beyond the newest twelve are deleted.
pub fn record_drill(repo: &Repository, drill: Drill) -> Result<AuditId> {
    let (set, passed) = (drill.set.clone(), drill.passed());
    let id = save(repo, &Audit::Drill(drill))?;
    for old in drills_beyond_kept(&load(repo)?, &set, &id, passed) {
        delete(repo, &old)?;
    }
    Ok(id)
}

/// The drill records of `set` to delete once drill `id` (which `passed` or not) is
/// recorded: all but the newest [`DRILLS_KEPT`], the new one counted in. The newest
/// passing drill stays whatever follows it: the drill interval and the RTO projection are
/// judged by it, and a run of failures must not erase the evidence.
fn drills_beyond_kept(
    records: &[(AuditId, Audit)],
    set: &Option<String>,
    id: &AuditId,
    passed: bool,
) -> Vec<AuditId> {
    let mut older: Vec<(DateTime<FixedOffset>, AuditId, bool)> = records
        .iter()
        .filter_map(|(i, a)| match a {
            Audit::Drill(d) if d.set == *set && i != id => {
                Some((DateTime::parse_from_rfc3339(&d.time).ok()?, *i, d.passed()))
            }
            _ => None,
        })
        .collect();
    older.sort();
    let keep = match passed {
        true => None,
        false => older.iter().rev().find(|(_, _, p)| *p).map(|(_, i, _)| *i),
    };
    older.retain(|(_, i, _)| Some(*i) != keep);
    let excess = (older.len() + 1 + usize::from(keep.is_some())).saturating_sub(DRILLS_KEPT);
    older.into_iter().take(excess).map(|(_, i, _)| i).collect()
}

/// Every lineage's drills, oldest first: a set's by its name, another lineage's by the
/// snapshot drilled (`lineage_of` says whose it is; a drill of a snapshot it does not know
/// counts for no lineage).
pub fn drills_by_lineage(
    records: &[(AuditId, Audit)],
    lineage_of: impl Fn(&SnapshotId) -> Option<Lineage>,
) -> HashMap<Lineage, Vec<Drill>> {
    let mut out: HashMap<Lineage, Vec<Drill>> = HashMap::new();
    for (_, a) in records {
        let Audit::Drill(d) = a else {
            continue;
        };
        let lineage = d.set.clone().map(Lineage::Set);
        if let Some(lineage) = lineage.or_else(|| lineage_of(&d.snapshot)) {
            out.entry(lineage).or_default().push(d.clone());
        }
    }
    for drills in out.values_mut() {
        drills.sort_by_key(|d| DateTime::parse_from_rfc3339(&d.time).ok());
    }
    out
}

/// The newest drill of each lineage: a set's by its name, another lineage's by the
/// snapshot drilled (`lineage_of` says whose it is; a drill of a snapshot it does not know
/// counts for no lineage).
pub fn last_drills(
    records: &[(AuditId, Audit)],
    lineage_of: impl Fn(&SnapshotId) -> Option<Lineage>,
) -> HashMap<Lineage, Drill> {
    let mut out: HashMap<Lineage, Drill> = HashMap::new();
    for (_, a) in records {
        let Audit::Drill(d) = a else {
            continue;
        };
        let Some(lineage) = d
            .set
            .clone()
            .map(Lineage::Set)
            .or_else(|| lineage_of(&d.snapshot))
        else {
            continue;
        };
        let newer = out.get(&lineage).is_none_or(|o| {
            DateTime::parse_from_rfc3339(&d.time).ok() > DateTime::parse_from_rfc3339(&o.time).ok()
        });
        if newer {
            out.insert(lineage, d.clone());
        }
    }
    out
}

fn save(repo: &Repository, record: &Audit) -> Result<AuditId> {
    let id = AuditId(repo.save_file(FileKind::Audit, record)?);
    let mut buf = Vec::new();
    ciborium::into_writer(record, &mut buf).expect("CBOR into memory");
    repo.audit_cache().put(&id, &buf)?;
    Ok(id)
}

fn delete(repo: &Repository, id: &AuditId) -> Result<()> {
    match repo.delete_file(FileKind::Audit, &id.to_hex()) {
        Ok(()) | Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    repo.audit_cache().remove(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drill_record(set: &str, hour: u32, passed: bool) -> Audit {
        Audit::Drill(Drill {
            version: 1,
            time: format!("2026-12-01T{hour:02}:00:00Z"),
            host: "h".into(),
            set: Some(set.into()),
            snapshot: SnapshotId([0; 32]),
            sample: 1.0,
            files: 1,
            bytes: 1,
            duration_secs: 1.0,
            snapshot_bytes: 1,
            projected_secs: 1.0,
            errors: u64::from(!passed),
            verify: None,
            index_bytes: 0,
            data_classes: vec![],
        })
    }

    /// Twelve drills of a set are kept, the new one counted, and always its newest
    /// passing one; other sets' drills and the new record itself are never deleted.
    #[test]
    fn drills_beyond_twelve_go_but_the_last_passing_one_stays() {
        let id = |n: u8| AuditId([n; 32]);
        let mut records: Vec<(AuditId, Audit)> = (0..14u8)
            .map(|n| (id(n), drill_record("kb", u32::from(n), n == 1)))
            .collect();
        records.push((id(100), drill_record("other", 0, false)));
        // The new, failing drill (id 14) is in the listing too.
        records.push((id(14), drill_record("kb", 20, false)));
        let set = Some("kb".to_string());
        let mut gone = drills_beyond_kept(&records, &set, &id(14), false);
        gone.sort();
        // 14 older + the new = 15; 12 kept: the new, the passing 1 and the newest ten.
        assert_eq!(gone, vec![id(0), id(2), id(3)]);
        // A passing new drill protects nothing older.
        let mut gone = drills_beyond_kept(&records, &set, &id(14), true);
        gone.sort();
        assert_eq!(gone, vec![id(0), id(1), id(2)]);
        // Few drills: nothing goes.
        assert!(drills_beyond_kept(&records[..3], &set, &id(14), false).is_empty());
    }

    /// Drills are grouped by set, set-less ones by the lineage of their snapshot (none for
    /// a snapshot nobody knows), each group oldest first.
    #[test]
    fn drills_are_grouped_by_lineage_oldest_first() {
        let mut late = drill_record("kb", 9, true);
        let mut orphan = drill_record("kb", 3, true);
        if let (Audit::Drill(l), Audit::Drill(o)) = (&mut late, &mut orphan) {
            l.set = None;
            l.snapshot = SnapshotId([7; 32]);
            o.set = None;
            o.snapshot = SnapshotId([8; 32]);
        }
        let records = vec![
            (AuditId([1; 32]), drill_record("kb", 5, false)),
            (AuditId([2; 32]), drill_record("kb", 2, true)),
            (AuditId([3; 32]), late),
            (AuditId([4; 32]), orphan),
        ];
        let host = Lineage::Set("host".into());
        let by = drills_by_lineage(&records, |id| (id.0[0] == 7).then(|| host.clone()));
        assert_eq!(by.len(), 2);
        let kb: Vec<bool> = by[&Lineage::Set("kb".into())]
            .iter()
            .map(|d| d.passed())
            .collect();
        assert_eq!(kb, vec![true, false], "oldest first");
        assert_eq!(by[&host].len(), 1);
    }

    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }

    fn verification(time: &str, packs: Vec<PackMark>) -> Audit {
        Audit::Verification(Verification {
            version: 1,
            time: time.into(),
            host: "h".into(),
            packs,
            supersedes: vec![],
            packs_read: 0,
            bytes_read: 0,
            problems: 0,
        })
    }

    #[test]
    fn the_newest_mark_wins_and_damage_stays_until_read_whole() {
        let records = vec![
            (
                AuditId([1; 32]),
                verification(
                    "2026-01-01T00:00:00Z",
                    vec![PackMark(pack(1), 100, false), PackMark(pack(2), 100, true)],
                ),
            ),
            (
                AuditId([2; 32]),
                verification(
                    "2026-01-02T00:00:00Z",
                    vec![PackMark(pack(2), 50, false), PackMark(pack(3), 200, true)],
                ),
            ),
        ];
        let state = verification_state(&records);
        assert_eq!(state[&pack(1)], (100, false));
        assert_eq!(state[&pack(2)], (100, true), "an older mark does not win");
        let now = DateTime::parse_from_rfc3339("1970-01-01T00:00:00.300Z").unwrap();
        let c = coverage(&records, [pack(1), pack(2), pack(3), pack(4)], now);
        assert_eq!(c.packs, 4);
        assert_eq!(c.never_verified, 1);
        assert_eq!(c.damaged, vec![pack(1)]);
        assert_eq!(c.verified_recently, 3);
        assert_eq!(c.oldest_verification_secs, Some(0.2));
        assert_eq!(c.last_check.as_deref(), Some("2026-01-02T00:00:00Z"));
    }

    proptest! {
        #[test]
        fn records_round_trip_through_cbor(
            marks in proptest::collection::vec((any::<[u8; 32]>(), any::<i64>(), any::<bool>()), 0..20),
            files in any::<u64>(),
            set in proptest::option::of("[a-z]{1,8}"),
            verify in proptest::option::of((proptest::option::of(any::<i32>()), "[ -~]{0,40}", 0.0f64..1e6)),
            classes in proptest::collection::vec(("[A-Z_]{1,12}", any::<u64>(), any::<u64>()), 0..3),
            index_bytes in any::<u64>(),
        ) {
            let v = Audit::Verification(Verification {
                version: 1,
                time: "2026-11-26T10:00:00+00:00".into(),
                host: "h".into(),
                packs: marks.iter().map(|(p, t, ok)| PackMark(PackId(*p), *t, *ok)).collect(),
                supersedes: vec![AuditId([7; 32])],
                packs_read: 3,
                bytes_read: 4,
                problems: 0,
            });
            let d = Audit::Drill(Drill {
                version: 1,
                time: "2026-11-26T10:00:00+00:00".into(),
                host: "h".into(),
                set,
                snapshot: SnapshotId([9; 32]),
                sample: 0.02,
                files,
                bytes: 5,
                duration_secs: 1.5,
                snapshot_bytes: 100,
                projected_secs: 30.0,
                errors: 0,
                verify: verify.map(|(exit_code, tail, duration_secs)| VerifyRun {
                    command: "jq empty *.json".into(),
                    exit_code,
                    outcome: "exited".into(),
                    output_tail: tail,
                    duration_secs,
                }),
                index_bytes,
                data_classes: classes
                    .into_iter()
                    .map(|(class, packs, bytes)| ClassBytes { class, packs, bytes })
                    .collect(),
            });
            for a in [v, d] {
                let mut buf = Vec::new();
                ciborium::into_writer(&a, &mut buf).unwrap();
                let back: Audit = ciborium::from_reader(&buf[..]).unwrap();
                prop_assert_eq!(back, a);
            }
        }
    }
}
