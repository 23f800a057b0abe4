//! Rollback watch (format-spec §16.3): each host remembers the snapshots it has seen (the
//! cache's manifests) and raises an alarm when one vanishes with no forget recorded, by
//! this host (its forgets leave the cache first) or by any other (a mark record names the
//! snapshot). A storage-only attacker can delete a snapshot file but cannot forge a record,
//! so a rolled-back set is noticed by every host that saw what was removed, whatever the
//! snapshots' times, as long as the host lists the snapshots more often than records are
//! kept.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::*;
use crate::repo::snapshot::Snapshot;

/// A snapshot this host had seen that vanished without a forget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vanished {
    /// The snapshot's id.
    pub id: SnapshotId,
    /// Its lineage (a set, or host and paths).
    pub lineage: String,
    /// Its time (RFC 3339).
    pub time: String,
    /// Its label in the metrics (a set, or `host:<host>`).
    #[serde(default)]
    pub set: String,
}

impl std::fmt::Display for Vanished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "snapshot {} of {} ({}), which this host had seen, vanished from the repository \
             without a forget recorded: the repository may have been rolled back",
            self.id, self.lineage, self.time
        )
    }
}

const META_KEY: &str = "vanished_snapshots";

/// When the snapshots were last listed (and compared), RFC 3339.
const LISTED_KEY: &str = "snapshots_listed";

/// The snapshots this host knows were forgotten (its own forgets, and those mark records
/// named when they vanished), with when: a JSON map of id to RFC 3339 time.
const FORGOTTEN_KEY: &str = "forgotten_snapshots";

/// How long this host remembers a forgotten snapshot: well past the prune that frees its
/// data (which is what would make a copy put back restore something).
const FORGOTTEN_KEPT_DAYS: i64 = 90;

impl Repository {
    /// The alarms still standing, as the last listing left them.
    pub(crate) fn vanished_snapshots(&self) -> Result<Vec<Vanished>> {
        Ok((self.cache.meta_get(META_KEY)?)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// After a listing (`listed`: every id it found, `readable`: their manifests): drops
    /// the cached manifests of snapshots no longer listed and raises an alarm for each that
    /// no forget explains (format-spec §16.3), which stands until the snapshot is listed
    /// again or a mark record names it. Each standing alarm is a warning of this run.
    pub(crate) fn watch_for_rollback(
        &self,
        listed: &HashSet<SnapshotId>,
        readable: &[(SnapshotId, Snapshot)],
    ) -> Result<Vec<Vanished>> {
        let now = crate::timespec::now();
        let seen_lately = self.listed_lately(now)?;
        let gone = self.drop_unlisted(listed)?;
        let gone_ids: Vec<SnapshotId> = gone.iter().map(|(id, _)| *id).collect();
        let mut alarms: Vec<Vanished> = (self.vanished_snapshots()?.into_iter())
            .filter(|v| !listed.contains(&v.id))
            .collect();
        for v in self.suspects(gone, readable, seen_lately, now) {
            if !alarms.iter().any(|a| a.id == v.id) {
                alarms.push(v);
            }
        }
        if !alarms.is_empty() || !gone_ids.is_empty() {
            let forgotten = self.forgotten_by_records()?;
            alarms.retain(|v| !forgotten.contains(&v.id));
            let named: Vec<SnapshotId> = (gone_ids.into_iter())
                .filter(|id| forgotten.contains(id))
                .collect();
            self.remember_forgotten(&named)?;
        }
        if alarms != self.vanished_snapshots()? {
            let json = serde_json::to_string(&alarms).expect("alarms encode");
            self.cache.meta_put(META_KEY, &json)?;
        }
        // The listing began moments before `now`: well within the day of margin below.
        self.cache.meta_put(LISTED_KEY, &now.to_rfc3339())?;
        for v in &alarms {
            self.warn(v.to_string());
        }
        Ok(alarms)
    }

    /// Whether this host's last listing of the snapshots is recent enough that every
    /// record a forget wrote since is still kept: less than [`marks::PARTIAL_VIEW_MAX_AGE`]
    /// ago, a day short of [`marks::RECORD_RETENTION`] for clocks that disagree (and not
    /// more than a day ahead, a clock set back).
    fn listed_lately(&self, now: chrono::DateTime<chrono::FixedOffset>) -> Result<bool> {
        let last = (self.cache.meta_get(LISTED_KEY)?)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
        Ok(last.is_some_and(|t| {
            now - t < marks::PARTIAL_VIEW_MAX_AGE && t - now < chrono::Duration::days(1)
        }))
    }

    /// The cached manifests of snapshots `listed` no longer has, taken out of the cache.
    /// One missing from it is looked for in a listing made now: another process of this
    /// host sharing the cache may have cached a snapshot written after `listed` was
    /// taken (hostile pass 10: a backup beside a forget raised false rollback alarms).
    fn drop_unlisted(&self, listed: &HashSet<SnapshotId>) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut gone = Vec::new();
        let mut missing: Vec<SnapshotId> = (self.cache.snapshots().ids()?.into_iter())
            .filter(|id| !listed.contains(id))
            .collect();
        if !missing.is_empty() {
            let now: HashSet<SnapshotId> = (self.backend.list(FileKind::Snapshot)?.into_iter())
                .filter_map(|f| f.name.parse().ok())
                .collect();
            missing.retain(|id| !now.contains(id));
        }
        for id in missing {
            let manifest = (self.cache.snapshots().get(&id)?)
                .and_then(|bytes| ciborium::from_reader::<Snapshot, _>(&bytes[..]).ok());
            gone.extend(manifest.map(|s| (id, s)));
            self.cache.snapshots().remove(&id)?;
        }
        Ok(gone)
    }

    /// Of the snapshots gone, those whose removal would have left a record still there.
    /// With mark records (version 5) every forget names what it removes before it deletes
    /// it, and a record is kept [`marks::RECORD_RETENTION`]. Every manifest in the cache
    /// was there at this host's last listing or later, so when that listing is recent
    /// (`seen_lately`) any forget since left a record still kept: every snapshot gone is
    /// suspect, whatever its time. Otherwise only one younger than the records' retention
    /// (less a day for clocks) is: no record of its forget can have been deleted yet.
    /// Without records, only the newest of a lineage, with nothing as new listed, is.
    fn suspects(
        &self,
        gone: Vec<(SnapshotId, Snapshot)>,
        readable: &[(SnapshotId, Snapshot)],
        seen_lately: bool,
        now: chrono::DateTime<chrono::FixedOffset>,
    ) -> Vec<Vanished> {
        if self.config.partial_views() {
            let young = now - marks::PARTIAL_VIEW_MAX_AGE;
            return (gone.iter())
                .filter(|(_, s)| seen_lately || s.datetime().is_some_and(|t| t > young))
                .map(vanished_of)
                .collect();
        }
        self.suspects_without_records(gone, readable)
    }

    /// [`Repository::suspects`] in versions without mark records.
    fn suspects_without_records(
        &self,
        gone: Vec<(SnapshotId, Snapshot)>,
        readable: &[(SnapshotId, Snapshot)],
    ) -> Vec<Vanished> {
        let newest_listed = newest_per_lineage(readable.iter());
        let newest_gone: HashSet<SnapshotId> = (newest_per_lineage(gone.iter()).into_values())
            .map(|(id, _, _)| id)
            .collect();
        (gone.iter())
            .filter(|(id, s)| {
                newest_gone.contains(id)
                    && (newest_listed.get(&s.lineage().label()))
                        .is_none_or(|(_, _, t)| *t < s.datetime())
            })
            .map(vanished_of)
            .collect()
    }

    /// Ends the alarms of `ids` (forgotten now, their record written).
    pub(crate) fn dismiss_vanished(&self, ids: &[SnapshotId]) -> Result<()> {
        let before = self.vanished_snapshots()?;
        let left: Vec<&Vanished> = before.iter().filter(|v| !ids.contains(&v.id)).collect();
        if left.len() != before.len() {
            let json = serde_json::to_string(&left).expect("alarms encode");
            self.cache.meta_put(META_KEY, &json)?;
        }
        self.remember_forgotten(ids)
    }

    /// The snapshots this host knows were forgotten, with when (for
    /// [`FORGOTTEN_KEPT_DAYS`]). A listing that finds one again refuses it: its file was
    /// put back by someone with access to the storage (hostile pass 8: a forgotten
    /// snapshot copied back was `latest` again, and check passed it).
    pub(crate) fn known_forgotten(&self) -> Result<HashMap<SnapshotId, String>> {
        let map: HashMap<String, String> = (self.cache.meta_get(FORGOTTEN_KEY)?)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Ok((map.into_iter())
            .filter_map(|(id, t)| Some((id.parse().ok()?, t)))
            .collect())
    }

    fn remember_forgotten(&self, ids: &[SnapshotId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = crate::timespec::now();
        let oldest = now - chrono::Duration::days(FORGOTTEN_KEPT_DAYS);
        let mut known = self.known_forgotten()?;
        known.retain(|_, t| chrono::DateTime::parse_from_rfc3339(t).is_ok_and(|t| t > oldest));
        for id in ids {
            known.entry(*id).or_insert_with(|| now.to_rfc3339());
        }
        let map: HashMap<String, &String> = known.iter().map(|(id, t)| (id.to_hex(), t)).collect();
        let json = serde_json::to_string(&map).expect("ids encode");
        self.cache.meta_put(FORGOTTEN_KEY, &json)
    }

    /// Every snapshot a mark record names as forgotten (a listing of `marks/` and a read
    /// of each record: paid only when a newest snapshot vanished).
    pub(crate) fn forgotten_by_records(&self) -> Result<HashSet<SnapshotId>> {
        let all = self.forgotten_by_records_with_time()?;
        Ok(all.into_iter().map(|(id, _)| id).collect())
    }

    /// [`Repository::forgotten_by_records`], each with when its record was written.
    pub(crate) fn forgotten_by_records_with_time(
        &self,
    ) -> Result<Vec<(SnapshotId, chrono::DateTime<chrono::FixedOffset>)>> {
        if !self.config.partial_views() {
            return Ok(Vec::new());
        }
        let ids: Vec<crate::id::MarkId> = (self.backend.list(FileKind::Marks)?.into_iter())
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let records = self.load_many::<marks::MarkRecord, _>(FileKind::Marks, &ids);
        Ok(forgotten_in(&records))
    }
}

/// The snapshots `records` name as forgotten, each with when its record was written.
pub(crate) fn forgotten_in<I>(
    records: &[(I, Result<marks::MarkRecord>)],
) -> Vec<(SnapshotId, chrono::DateTime<chrono::FixedOffset>)> {
    let now = crate::timespec::now();
    // A record that cannot be read vouches for nothing.
    (records.iter())
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|r| r.forgotten.iter().map(move |id| (*id, r.written(now))))
        .collect()
}

fn vanished_of((id, s): &(SnapshotId, Snapshot)) -> Vanished {
    Vanished {
        id: *id,
        lineage: s.lineage().label(),
        time: s.time.clone(),
        set: crate::metrics::set_label(s),
    }
}

type Newest = (
    SnapshotId,
    String,
    Option<chrono::DateTime<chrono::FixedOffset>>,
);

/// Per lineage label, the newest snapshot: its id, time as written and as parsed (ties
/// broken by id, as listings order them).
fn newest_per_lineage<'a>(
    snaps: impl Iterator<Item = &'a (SnapshotId, Snapshot)>,
) -> HashMap<String, Newest> {
    let mut out: HashMap<String, Newest> = HashMap::new();
    for (id, s) in snaps {
        let label = s.lineage().label();
        match out.get(&label) {
            Some((oid, _, ot)) if (*ot, *oid) >= (s.datetime(), *id) => {}
            _ => {
                out.insert(label, (*id, s.time.clone(), s.datetime()));
            }
        }
    }
    out
}

/// Whether a snapshot this host saw forgotten at `when` (RFC 3339) was seen gone before a
/// listing that began at `listed_at`: only then is its file in that listing one put back.
pub(crate) fn seen_gone_before(
    when: &str,
    listed_at: chrono::DateTime<chrono::FixedOffset>,
) -> bool {
    chrono::DateTime::parse_from_rfc3339(when).is_ok_and(|t| t < listed_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    /// A snapshot of set `set` taken `hours` ago.
    fn ago(hours: i64, set: &str) -> Snapshot {
        let time = crate::timespec::now() - chrono::Duration::hours(hours);
        Snapshot {
            set: Some(set.into()),
            ..Snapshot::sample(&time.to_rfc3339())
        }
    }

    /// The alarms one listing leaves, by id.
    fn alarms(repo: &Repository) -> Vec<SnapshotId> {
        repo.snapshots().list().unwrap();
        let v = repo.snapshots().vanished().unwrap();
        v.iter().map(|v| v.id).collect()
    }

    /// `ids`, sorted.
    fn sorted(mut ids: Vec<SnapshotId>) -> Vec<SnapshotId> {
        ids.sort();
        ids
    }

    #[test]
    fn a_snapshot_gone_without_a_record_is_an_alarm_until_accounted_for() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let w = |s: Snapshot| repo.snapshots().write(&s).unwrap();
        let ancient = w(ago(24 * 10, "a"));
        let week = w(ago(24 * 7, "a"));
        let first = w(ago(3, "a"));
        let second = w(ago(2, "a"));
        w(ago(1, "a"));
        assert!(alarms(&repo).is_empty());
        // Older than a record lives, but listed here moments ago: a forget since would
        // have left a record still kept (hostile pass: snapshots past 6 days were not
        // watched, and prune then deleted their data).
        store.delete(FileKind::Snapshot, &ancient.to_hex()).unwrap();
        store.delete(FileKind::Snapshot, &week.to_hex()).unwrap();
        assert_eq!(sorted(alarms(&repo)), sorted(vec![ancient, week]));
        repo.snapshots().forget(&[ancient, week]).unwrap();
        assert!(alarms(&repo).is_empty());
        store.delete(FileKind::Snapshot, &first.to_hex()).unwrap();
        assert_eq!(alarms(&repo), vec![first]);
        let v = &repo.snapshots().vanished().unwrap()[0];
        assert_eq!((v.lineage.as_str(), v.set.as_str()), ("a", "a"));
        let said = v.to_string();
        assert!(
            said.starts_with(&format!("snapshot {first} of a (")),
            "{said}"
        );
        assert!(
            said.ends_with("the repository may have been rolled back"),
            "{said}"
        );
        // Another host's forget leaves a record: nothing for `second`.
        let other = Repository::open(store.clone(), b"pw", &dir.path().join("other")).unwrap();
        other.snapshots().forget(&[second]).unwrap();
        assert_eq!(alarms(&repo), vec![first]);
        // A newer snapshot does not end it (a rollback, then the next hourly backup).
        w(ago(0, "a"));
        assert_eq!(alarms(&repo), vec![first]);
        // Accounted for by a forget of its id: a record, and no alarm anywhere.
        repo.snapshots().forget(&[first]).unwrap();
        assert!(alarms(&repo).is_empty());
        assert!(other.forgotten_by_records().unwrap().contains(&first));
        // Two gone at once: two alarms.
        let (x, y) = (w(ago(0, "b")), w(ago(0, "c")));
        assert!(alarms(&repo).is_empty());
        store.delete(FileKind::Snapshot, &x.to_hex()).unwrap();
        store.delete(FileKind::Snapshot, &y.to_hex()).unwrap();
        assert_eq!(sorted(alarms(&repo)), sorted(vec![x, y]));
    }

    /// A host whose last listing is older than the records' retention (less a day) cannot
    /// tell an old snapshot forgotten meanwhile, its record pruned since, from one deleted
    /// behind its back: it watches only the young ones then, and all once it lists again.
    /// Hostile pass 10: another process of this host (a backup) cached a snapshot written
    /// after this process listed; taken for one gone, it raised a rollback alarm. And a
    /// forget this host saw done after a listing began is no file put back in it.
    #[test]
    fn what_other_processes_of_this_host_did_meanwhile_is_no_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let old = repo.snapshots().write(&ago(2, "a")).unwrap();
        let listing: HashSet<SnapshotId> = [old].into();
        let newer = repo.snapshots().write(&ago(1, "a")).unwrap();
        assert!(repo.watch_for_rollback(&listing, &[]).unwrap().is_empty());
        // Truly gone, it is an alarm all the same.
        store.delete(FileKind::Snapshot, &newer.to_hex()).unwrap();
        assert_eq!(repo.watch_for_rollback(&listing, &[]).unwrap().len(), 1);
        let before = crate::timespec::now() - chrono::Duration::seconds(1);
        let after = crate::timespec::now() + chrono::Duration::seconds(1);
        let now = crate::timespec::now().to_rfc3339();
        assert!(seen_gone_before(&now, after));
        assert!(!seen_gone_before(&now, before));
        assert!(!seen_gone_before("not a time", after));
    }

    #[test]
    fn after_a_week_without_listing_only_young_snapshots_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let w = |s: Snapshot| repo.snapshots().write(&s).unwrap();
        let (ancient, week, young) = (w(ago(24 * 10, "a")), w(ago(24 * 7, "a")), w(ago(3, "a")));
        assert!(alarms(&repo).is_empty());
        let listed_at = |days: i64| {
            let t = crate::timespec::now() - chrono::Duration::days(days);
            repo.cache.meta_put(LISTED_KEY, &t.to_rfc3339()).unwrap();
        };
        listed_at(6);
        for id in [ancient, young] {
            store.delete(FileKind::Snapshot, &id.to_hex()).unwrap();
        }
        assert_eq!(alarms(&repo), vec![young]);
        // Listed just now: the week-old one is watched again.
        store.delete(FileKind::Snapshot, &week.to_hex()).unwrap();
        assert_eq!(sorted(alarms(&repo)), sorted(vec![young, week]));
        // A last listing more than a day ahead of the clock vouches for nothing.
        let later = w(ago(24 * 8, "b"));
        assert_eq!(alarms(&repo).len(), 2);
        let ahead = crate::timespec::now() + chrono::Duration::hours(25);
        repo.cache
            .meta_put(LISTED_KEY, &ahead.to_rfc3339())
            .unwrap();
        store.delete(FileKind::Snapshot, &later.to_hex()).unwrap();
        assert_eq!(alarms(&repo).len(), 2);
        listed_at(5);
        let last = w(ago(24 * 8, "c"));
        store.delete(FileKind::Snapshot, &last.to_hex()).unwrap();
        assert!(alarms(&repo).contains(&last));
    }

    #[test]
    fn without_records_only_a_lineages_newest_with_nothing_as_new_listed_is_suspect() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let gone = |ids: &[&(SnapshotId, Snapshot)]| ids.iter().map(|&p| p.clone()).collect();
        let a1 = (SnapshotId([1; 32]), ago(3, "a"));
        let a2 = (SnapshotId([2; 32]), ago(2, "a"));
        let b1 = (SnapshotId([3; 32]), ago(5, "b"));
        let b2 = (SnapshotId([4; 32]), ago(4, "b"));
        // Offsets compare as instants: 12:30Z is newer than 12:00Z though it sorts first.
        let mut c1 = (SnapshotId([5; 32]), ago(1, "c"));
        c1.1.time = "2026-01-01T12:00:00Z".into();
        let mut c2 = (SnapshotId([6; 32]), ago(1, "c"));
        c2.1.time = "2026-01-01T11:30:00-01:00".into();
        let suspects = |gone, readable: &[(SnapshotId, Snapshot)]| -> Vec<SnapshotId> {
            repo.suspects_without_records(gone, readable)
                .into_iter()
                .map(|v| v.id)
                .collect()
        };
        assert_eq!(suspects(gone(&[&a1, &a2]), &[]), vec![a2.0]);
        assert_eq!(
            suspects(gone(&[&a2]), std::slice::from_ref(&a1)),
            vec![a2.0]
        );
        assert!(suspects(gone(&[&a1]), std::slice::from_ref(&a2)).is_empty());
        assert!(suspects(gone(&[&b1]), &[b2.clone(), a1.clone()]).is_empty());
        assert_eq!(
            suspects(gone(&[&c2]), std::slice::from_ref(&c1)),
            vec![c2.0]
        );
        assert!(suspects(gone(&[&c1]), std::slice::from_ref(&c2)).is_empty());
    }
}
