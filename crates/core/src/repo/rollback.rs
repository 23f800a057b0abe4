//! Rollback watch (format-spec §16.3): each host remembers the snapshots it has seen (the
//! cache's manifests) and raises an alarm when the newest of a lineage vanishes with no
//! forget recorded, by this host (its forgets leave the cache first) or by any other (a
//! mark record names the snapshot). A storage-only attacker can delete a snapshot file
//! but cannot forge a record, so a rolled-back set is noticed by every host that saw it.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::*;
use crate::repo::snapshot::Snapshot;

/// A snapshot that was the newest of its lineage here and vanished without a forget.
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
            "snapshot {} of {} ({}), the newest this host had seen of it, vanished from the \
             repository without a forget recorded: the repository may have been rolled back",
            self.id, self.lineage, self.time
        )
    }
}

const META_KEY: &str = "vanished_snapshots";

impl Repository {
    /// The alarms still standing, as the last listing left them.
    pub(crate) fn vanished_snapshots(&self) -> Result<Vec<Vanished>> {
        Ok((self.cache.meta_get(META_KEY)?)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// After a listing (`listed`: every id it found, `readable`: their manifests): drops
    /// the cached manifests of snapshots no longer listed, raises an alarm for any that was
    /// the newest of its lineage, unless a mark record names it as forgotten, and keeps
    /// alarms until a newer snapshot of the lineage (or the snapshot itself) is listed.
    /// Each standing alarm is a warning of this run.
    pub(crate) fn watch_for_rollback(
        &self,
        listed: &HashSet<SnapshotId>,
        readable: &[(SnapshotId, Snapshot)],
    ) -> Result<Vec<Vanished>> {
        let mut gone = Vec::new();
        for id in self.cache.snapshots().ids()? {
            if listed.contains(&id) {
                continue;
            }
            let manifest = (self.cache.snapshots().get(&id)?)
                .and_then(|bytes| ciborium::from_reader::<Snapshot, _>(&bytes[..]).ok());
            gone.extend(manifest.map(|s| (id, s)));
            self.cache.snapshots().remove(&id)?;
        }
        let newest = newest_per_lineage(readable.iter());
        let standing = |v: &Vanished| {
            let time = chrono::DateTime::parse_from_rfc3339(&v.time).ok();
            !listed.contains(&v.id) && newest.get(&v.lineage).is_none_or(|(_, _, t)| *t < time)
        };
        let sets: HashMap<SnapshotId, String> = (gone.iter())
            .map(|(id, s)| (*id, crate::metrics::set_label(s)))
            .collect();
        let mut fresh: Vec<Vanished> = newest_per_lineage(gone.iter())
            .into_iter()
            .map(|(lineage, (id, time, _))| Vanished {
                id,
                lineage,
                time,
                set: sets[&id].clone(),
            })
            .filter(|v| standing(v))
            .collect();
        if !fresh.is_empty() {
            let forgotten = self.forgotten_by_records()?;
            fresh.retain(|v| !forgotten.contains(&v.id));
        }
        let before = self.vanished_snapshots()?;
        let mut alarms: Vec<Vanished> = before.iter().filter(|v| standing(v)).cloned().collect();
        for v in fresh {
            if !alarms.contains(&v) {
                alarms.push(v);
            }
        }
        if alarms != before {
            let json = serde_json::to_string(&alarms).expect("alarms encode");
            self.cache.meta_put(META_KEY, &json)?;
        }
        for v in &alarms {
            self.warn(v.to_string());
        }
        Ok(alarms)
    }

    /// Every snapshot a mark record names as forgotten (a listing of `marks/` and a read
    /// of each record: paid only when a newest snapshot vanished).
    fn forgotten_by_records(&self) -> Result<HashSet<SnapshotId>> {
        if !self.config.partial_views() {
            return Ok(HashSet::new());
        }
        let ids: Vec<crate::id::MarkId> = (self.backend.list(FileKind::Marks)?.into_iter())
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let mut out = HashSet::new();
        for (_, record) in self.load_many::<marks::MarkRecord, _>(FileKind::Marks, &ids) {
            // A record that cannot be read vouches for nothing.
            if let Ok(record) = record {
                out.extend(record.forgotten);
            }
        }
        Ok(out)
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

/// The snapshots of `ids` that are the newest of their lineage among `all`, or not among
/// them (damaged: their lineage cannot be known).
pub(crate) fn newest_among(all: &[(SnapshotId, Snapshot)], ids: &[SnapshotId]) -> Vec<SnapshotId> {
    let readable: HashSet<SnapshotId> = all.iter().map(|(id, _)| *id).collect();
    let newest: HashSet<SnapshotId> = newest_per_lineage(all.iter())
        .into_values()
        .map(|(id, _, _)| id)
        .collect();
    (ids.iter())
        .filter(|id| newest.contains(id) || !readable.contains(id))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    fn at(time: &str, set: Option<&str>) -> Snapshot {
        Snapshot {
            set: set.map(Into::into),
            ..Snapshot::sample(time)
        }
    }

    /// The alarms one listing leaves, by id.
    fn alarms(repo: &Repository) -> Vec<SnapshotId> {
        repo.snapshots().list().unwrap();
        let v = repo.snapshots().vanished().unwrap();
        v.iter().map(|v| v.id).collect()
    }

    #[test]
    fn only_a_lineages_newest_gone_unforgotten_raises_an_alarm_until_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let w = |s: Snapshot| repo.snapshots().write(&s).unwrap();
        let old = w(at("2026-01-01T10:00:00Z", Some("a")));
        w(at("2026-01-01T12:00:00Z", Some("a")));
        // 12:30Z: newer, though it sorts before `mid` as text.
        let newest = w(at("2026-01-01T11:30:00-01:00", Some("a")));
        let b = w(at("2026-01-01T09:00:00Z", Some("b")));
        assert!(alarms(&repo).is_empty());
        // An older one gone (another host's retention): nothing.
        store.delete(FileKind::Snapshot, &old.to_hex()).unwrap();
        assert!(alarms(&repo).is_empty());
        store.delete(FileKind::Snapshot, &newest.to_hex()).unwrap();
        assert_eq!(alarms(&repo), vec![newest]);
        // It stays, listing after listing.
        assert_eq!(alarms(&repo), vec![newest]);
        let v = &repo.snapshots().vanished().unwrap()[0];
        assert_eq!((v.lineage.as_str(), v.set.as_str()), ("a", "a"));
        // The other set's newest, forgotten here: nothing.
        repo.snapshots().forget(&[b]).unwrap();
        assert_eq!(alarms(&repo), vec![newest]);
        // A newer snapshot of the set ends it.
        w(at("2026-01-01T13:00:00Z", Some("a")));
        assert!(alarms(&repo).is_empty());
    }

    #[test]
    fn a_forget_recorded_by_another_host_raises_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let w = |s: Snapshot| repo.snapshots().write(&s).unwrap();
        w(at("2026-01-01T10:00:00Z", None));
        let newest = w(at("2026-01-01T11:00:00Z", None));
        assert!(alarms(&repo).is_empty());
        let other = Repository::open(store.clone(), b"pw", &dir.path().join("other")).unwrap();
        other.snapshots().forget(&[newest]).unwrap();
        let records = store.list(FileKind::Marks).unwrap();
        assert_eq!(records.len(), 1, "one record names the newest");
        assert!(alarms(&repo).is_empty());
        // Without the record, the same loss is an alarm.
        let again = w(at("2026-01-01T12:00:00Z", None));
        assert!(alarms(&repo).is_empty());
        store.delete(FileKind::Snapshot, &again.to_hex()).unwrap();
        assert_eq!(alarms(&repo), vec![again]);
        // A forget of an older snapshot writes no record.
        let older = w(at("2026-01-01T13:00:00Z", None));
        w(at("2026-01-01T14:00:00Z", None));
        other.snapshots().forget(&[older]).unwrap();
        assert_eq!(store.list(FileKind::Marks).unwrap().len(), 1);
    }
}
