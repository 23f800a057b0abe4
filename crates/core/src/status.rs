//! Freshness of backup sets: whether each set's newest snapshot is within the age its
//! policy allows (its RPO), and how its last restore drill went. A pure function over
//! what the repository holds; the program says it in its words.

use std::collections::HashMap;

use crate::audit::Drill;
use crate::id::SnapshotId;
use crate::objectives::{self, Assessment, Evidence, Objectives};
use crate::repo::snapshot::{Lineage, Snapshot};

/// One set's state at an instant.
#[derive(Clone, Debug)]
pub struct SetStatus {
    /// The set (or lineage) name.
    pub set: String,
    /// Its newest snapshot.
    pub snapshot: Option<(SnapshotId, Snapshot)>,
    /// That snapshot's age in seconds.
    pub age_secs: Option<f64>,
    /// The bound it is held against (its RPO).
    pub max_age: Option<chrono::Duration>,
    /// Older than the bound, or missing where one is required.
    pub stale: bool,
    /// The last restore drill of its lineage.
    pub last_drill: Option<Drill>,
    /// Its objectives, judged.
    pub objectives: Assessment,
}

/// Each set's status at `now`, from its newest snapshot (`picks`), its objectives (sets
/// without have none and are not required) and the drills per lineage (oldest first).
pub fn assess(
    picks: Vec<(String, Option<(SnapshotId, Snapshot)>)>,
    objectives: &HashMap<String, Objectives>,
    drills: &HashMap<Lineage, Vec<Drill>>,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> Vec<SetStatus> {
    picks
        .into_iter()
        .map(|(set, snapshot)| {
            let obj = objectives.get(&set).cloned().unwrap_or_default();
            let age_secs = snapshot
                .as_ref()
                .and_then(|(_, s)| s.datetime())
                .map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
            let history: &[Drill] = snapshot
                .as_ref()
                .and_then(|(_, s)| drills.get(&s.lineage()))
                .or_else(|| drills.get(&Lineage::Set(set.clone())))
                .map_or(&[], Vec::as_slice);
            let judged = objectives::assess(
                &obj,
                &Evidence {
                    newest: snapshot.as_ref().map(|(_, s)| s),
                    age_secs,
                    drills: history,
                    now,
                },
            );
            SetStatus {
                set,
                age_secs,
                max_age: obj.rpo,
                stale: judged.rpo.as_ref().is_some_and(|v| !v.holds()),
                last_drill: history.last().cloned(),
                snapshot,
                objectives: judged,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(time: &str, set: &str) -> (SnapshotId, Snapshot) {
        let s = Snapshot {
            set: Some(set.into()),
            ..Snapshot::sample(time)
        };
        (SnapshotId([7; 32]), s)
    }

    #[test]
    fn a_set_is_stale_past_its_bound_or_when_a_required_one_has_none() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z").unwrap();
        let hour = Some(chrono::Duration::hours(1));
        let bound = Objectives {
            rpo: hour,
            required: true,
            ..Default::default()
        };
        let freshness: HashMap<String, Objectives> = ["fresh", "old", "edge", "none"]
            .into_iter()
            .map(|s| (s.to_string(), bound.clone()))
            .collect();
        let picks = vec![
            (
                "fresh".to_string(),
                Some(snap("2026-12-05T11:30:00Z", "fresh")),
            ),
            ("old".to_string(), Some(snap("2026-12-05T10:59:59Z", "old"))),
            (
                "edge".to_string(),
                Some(snap("2026-12-05T11:00:00Z", "edge")),
            ),
            ("none".to_string(), None),
            (
                "unbounded".to_string(),
                Some(snap("2020-01-01T00:00:00Z", "u")),
            ),
            ("optional".to_string(), None),
        ];
        let out = assess(picks, &freshness, &HashMap::new(), now);
        let stale: Vec<(&str, bool)> = out.iter().map(|s| (s.set.as_str(), s.stale)).collect();
        assert_eq!(
            stale,
            [
                ("fresh", false),
                ("old", true),
                ("edge", false),
                ("none", true),
                ("unbounded", false),
                ("optional", false)
            ]
        );
        assert_eq!(out[0].age_secs, Some(1800.0));
        assert_eq!(out[0].max_age, hour);
        assert_eq!(out[3].age_secs, None);
        assert!(out.iter().all(|s| s.last_drill.is_none()));
    }
}
