//! Snapshot manifests.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::id::{SnapshotId, TreeId};

/// A snapshot manifest (format-spec §9): what was backed up, when, from where, and the
/// root tree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(from = "SnapshotWire", into = "SnapshotWire")]
pub struct Snapshot {
    /// Manifest version (1).
    pub version: u32,
    /// RFC 3339 with nanoseconds and the writer's UTC offset.
    pub time: String,
    /// The host the backup ran on.
    pub host: String,
    /// The user it ran as.
    pub user: String,
    /// The source paths, absolute.
    pub paths: Vec<String>,
    /// Tags given at backup time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The backup set this snapshot belongs to, if any.
    pub set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The snapshot of the same lineage this backup compared against.
    pub parent: Option<SnapshotId>,
    /// The root tree.
    pub tree: TreeId,
    /// The exclude patterns in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// What the backup did.
    pub summary: Summary,
    /// The program and version that wrote it.
    pub program: String,
    /// Written by `repair snapshots`: the snapshot this one replaces and what it lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
    /// What applications add to their snapshots, by name (format-spec §9): each is the
    /// application's own CBOR value, kept and copied as it is.
    pub extensions: BTreeMap<String, ciborium::Value>,
}

/// A snapshot as stored: [`Snapshot`] with its extensions where a format version puts
/// them. Versions 1-3 had one application's field, `postgres`, at the top level; it is
/// read as the extension of that name, and written there into repositories of those
/// versions (see [`SnapshotWire::for_format`]), which their readers expect.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotWire {
    version: u32,
    time: String,
    host: String,
    user: String,
    paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<SnapshotId>,
    tree: TreeId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    excludes: Vec<String>,
    summary: Summary,
    program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repaired: Option<Repaired>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres: Option<ciborium::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    extensions: BTreeMap<String, ciborium::Value>,
}

/// The extension versions 1-3 kept as a top-level key of its own.
const LEGACY_EXTENSION: &str = "postgres";

impl SnapshotWire {
    /// How a repository of format `version` stores `snap`.
    pub(crate) fn for_format(snap: &Snapshot, version: u32) -> Self {
        let mut wire = SnapshotWire::from(snap.clone());
        if version < 4 {
            wire.postgres = wire.extensions.remove(LEGACY_EXTENSION);
        }
        wire
    }
}

impl From<SnapshotWire> for Snapshot {
    fn from(w: SnapshotWire) -> Self {
        let mut extensions = w.extensions;
        if let Some(v) = w.postgres {
            extensions.entry(LEGACY_EXTENSION.to_string()).or_insert(v);
        }
        Snapshot {
            version: w.version,
            time: w.time,
            host: w.host,
            user: w.user,
            paths: w.paths,
            tags: w.tags,
            set: w.set,
            parent: w.parent,
            tree: w.tree,
            excludes: w.excludes,
            summary: w.summary,
            program: w.program,
            repaired: w.repaired,
            extensions,
        }
    }
}

impl From<Snapshot> for SnapshotWire {
    fn from(s: Snapshot) -> Self {
        SnapshotWire {
            version: s.version,
            time: s.time,
            host: s.host,
            user: s.user,
            paths: s.paths,
            tags: s.tags,
            set: s.set,
            parent: s.parent,
            tree: s.tree,
            excludes: s.excludes,
            summary: s.summary,
            program: s.program,
            repaired: s.repaired,
            postgres: None,
            extensions: s.extensions,
        }
    }
}

impl Snapshot {
    /// The extension `name`, decoded; `None` where the snapshot has none. An extension
    /// that does not decode as `T` is damage (a key holder's crafted snapshot, say).
    pub fn extension<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> crate::Result<Option<T>> {
        let Some(v) = self.extensions.get(name) else {
            return Ok(None);
        };
        v.deserialized()
            .map(Some)
            .map_err(|e| crate::Error::Corrupt {
                object: format!("snapshot of {} (extension {name})", self.time),
                reason: e.to_string(),
            })
    }

    /// Sets the extension `name` to `value`.
    pub fn set_extension<T: Serialize>(&mut self, name: &str, value: &T) -> crate::Result<()> {
        let v = ciborium::Value::serialized(value)
            .map_err(|e| crate::Error::Internal(format!("extension {name}: {e}")))?;
        self.extensions.insert(name.to_string(), v);
        Ok(())
    }
}

/// What `repair snapshots` records in a snapshot it rewrote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Repaired {
    /// The damaged snapshot this one replaces.
    pub from: SnapshotId,
    /// Paths (in the snapshot) of files and directory contents that could not be kept.
    pub lost: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
/// Counters of one backup run.
pub struct Summary {
    /// Files the parent snapshot did not have.
    pub files_new: u64,
    /// Files read again because their stat changed.
    pub files_changed: u64,
    /// Files skipped by stat.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes read from source files (unchanged files are not read).
    pub bytes_read: u64,
    /// Plaintext bytes of blobs this snapshot added to the repository.
    pub bytes_added: u64,
    /// Bytes those blobs take in packs after compression and encryption.
    pub bytes_stored: u64,
    /// New blobs.
    pub blobs_added: u64,
    /// Files or directories that could not be read (the snapshot lacks them).
    pub errors: u64,
    /// Wall-clock time of the run.
    pub duration_secs: f64,
    /// Of `bytes_added`, file content (the rest is trees: metadata).
    #[serde(default)]
    pub data_added: u64,
    /// Of `bytes_stored`, file content.
    #[serde(default)]
    pub data_stored: u64,
    /// Files the parent snapshot had and this one does not (deleted, or now excluded).
    #[serde(default)]
    pub files_removed: u64,
    /// Bytes of all the snapshot's files (what a restore writes).
    #[serde(default)]
    pub total_bytes: u64,
}

impl Snapshot {
    /// The snapshot's time, if it parses.
    pub fn datetime(&self) -> Option<DateTime<FixedOffset>> {
        DateTime::parse_from_rfc3339(&self.time).ok()
    }

    /// The line of snapshots this one continues.
    pub fn lineage(&self) -> Lineage {
        Lineage::of(self.set.as_deref(), &self.host, &self.paths)
    }
}

/// The line of snapshots a snapshot continues: its backup set, else its host and paths. A
/// backup's parent is the newest snapshot of its lineage, and retention keeps per lineage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lineage {
    /// A named backup set.
    Set(String),
    /// Snapshots without a set: by host and source paths.
    HostPaths {
        /// The host.
        host: String,
        /// The source paths.
        paths: Vec<String>,
    },
}

impl Lineage {
    /// The lineage of a backup of `paths` on `host`, in `set` if it has one.
    pub fn of(set: Option<&str>, host: &str, paths: &[String]) -> Self {
        match set {
            Some(set) => Lineage::Set(set.to_string()),
            None => Lineage::HostPaths {
                host: host.to_string(),
                paths: paths.to_vec(),
            },
        }
    }

    /// The name metrics, status and drills give it: the set's name, else
    /// `host:<host>:<path>,<path>…` (several lineages may share a host).
    pub fn label(&self) -> String {
        match self {
            Lineage::Set(set) => set.clone(),
            Lineage::HostPaths { host, paths } => format!("host:{host}:{}", paths.join(",")),
        }
    }

    /// The key the local cache keeps this lineage's state under (its file cache and last
    /// snapshot); caches written before keep working.
    pub fn cache_key(&self) -> String {
        match self {
            Lineage::Set(set) => format!("set:{set}"),
            Lineage::HostPaths { host, paths } => format!("host:{host}\0{}", paths.join("\0")),
        }
    }
}

/// Set, host and path names come from snapshots (a key holder's): shown with control
/// characters escaped, so that one in an error or a report forges no line.
impl std::fmt::Display for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Lineage::Set(set) => format!("set {set}"),
            Lineage::HostPaths { host, paths } => format!("host {host}, paths {}", paths.join(" ")),
        };
        f.write_str(&crate::util::printable(&text))
    }
}

/// Which snapshots a command considers; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Taken on one of these hosts.
    pub hosts: Vec<String>,
    /// Carrying all these tags.
    pub tags: Vec<String>,
    /// Covering all these source paths.
    pub paths: Vec<String>,
    /// Of one of these sets.
    pub sets: Vec<String>,
}

impl SnapshotFilter {
    /// What it asks for, as the flags say it (`--set web --host a`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (flag, values) in [
            ("--set", &self.sets),
            ("--host", &self.hosts),
            ("--tag", &self.tags),
            ("--path", &self.paths),
        ] {
            parts.extend(values.iter().map(|v| format!("{flag} {v:?}")));
        }
        parts.join(" ")
    }

    /// Whether it accepts every snapshot.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.tags.is_empty()
            && self.paths.is_empty()
            && self.sets.is_empty()
    }

    /// Whether the filter accepts `s`.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.contains(p))
            // A set's name, or a lineage's label (`host:<host>:<paths>`), as status,
            // drill and the metrics name a lineage without a set.
            && (self.sets.is_empty() || self.sets.contains(&s.lineage().label()))
    }
}

/// Per lineage (set, else host and paths), the newest snapshot the filter accepts taken at
/// or before `at` (any time when `None`), oldest lineage first. Lineages whose snapshots
/// are all younger than `at` have no entry.
pub fn select_per_lineage(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    at: Option<DateTime<FixedOffset>>,
    filter: &SnapshotFilter,
) -> Vec<(Lineage, SnapshotId, Snapshot)> {
    let mut newest: std::collections::BTreeMap<
        Lineage,
        (DateTime<FixedOffset>, SnapshotId, Snapshot),
    > = Default::default();
    for (id, s) in snapshots.into_iter().filter(|(_, s)| filter.matches(s)) {
        let Some(t) = s.datetime() else { continue };
        if at.is_some_and(|at| t > at) {
            continue;
        }
        let lineage = s.lineage();
        let newer = newest
            .get(&lineage)
            .is_none_or(|(nt, nid, _)| (t, id) > (*nt, *nid));
        if newer {
            newest.insert(lineage, (t, id, s));
        }
    }
    let mut out: Vec<_> = newest
        .into_iter()
        .map(|(l, (t, id, s))| (t, l, id, s))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    out.into_iter().map(|(_, l, id, s)| (l, id, s)).collect()
}

/// The newest snapshot taken at or before `at` (any time when `None`) among those the
/// filter accepts, which must all be of one lineage: a choice across sets or hosts is the
/// caller's to make, and the error lists the lineages to choose from. When every candidate
/// is younger than `at`, the error names the oldest.
pub fn select_at(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    at: Option<DateTime<FixedOffset>>,
    filter: &SnapshotFilter,
) -> crate::error::Result<(SnapshotId, Snapshot)> {
    let snapshots_given = snapshots.len();
    let oldest = snapshots
        .iter()
        .filter(|(_, s)| filter.matches(s))
        .filter_map(|(id, s)| Some((s.datetime()?, *id)))
        .min();
    let mut picks = select_per_lineage(snapshots, at, filter);
    match picks.len() {
        1 => {
            let (_, id, s) = picks.pop().expect("one");
            Ok((id, s))
        }
        0 => match at {
            Some(at) => Err(crate::error::Error::NoSnapshotAt {
                at: at.to_rfc3339(),
                oldest: oldest.map(|(t, id)| (id.short(), t.to_rfc3339())),
            }),
            // Say whether the repository is empty or the filter (a mistyped set) matched
            // nothing.
            None if snapshots_given == 0 => Err(crate::error::Error::not_found(
                crate::error::Missing::Object("any snapshot (the repository has none)".into()),
            )),
            None => Err(crate::error::Error::not_found(
                crate::error::Missing::Object(format!(
                    "a snapshot matching {} (the repository has {snapshots_given} \
                     snapshot(s), none of them matches)",
                    filter.describe()
                )),
            )),
        },
        _ => Err(crate::error::Error::SeveralLineages {
            lineages: picks
                .iter()
                .map(|(l, id, s)| format!("{l} (would be {} of {})", id.short(), s.time))
                .collect(),
        }),
    }
}

/// Refuses a host or set name that could not name a directory of its own (`mount` shows
/// `hosts/<host>` and `sets/<set>`) or a line of output: empty, `.` or `..`, with a `/`,
/// a control character, or longer than 255 bytes.
pub fn check_name(what: &'static str, name: &str) -> crate::error::Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it is . or .."
    } else if name.contains('/') {
        "it holds a /"
    } else if name.chars().any(char::is_control) {
        "it holds a control character"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(crate::Error::BadInput {
        what,
        reason: format!("{what} {name:?}: {reason}"),
    })
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `/d` by `u` on `h` at `time`, of no set, for unit tests to adjust.
    pub(crate) fn sample(time: &str) -> Snapshot {
        Snapshot {
            version: 1,
            time: time.into(),
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/d".into()],
            tags: vec![],
            set: None,
            parent: None,
            tree: crate::id::BlobId([0; 32]),
            excludes: vec![],
            summary: Summary::default(),
            program: String::new(),
            repaired: None,
            extensions: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hostile pass 3: a key holder's set or host name with a newline or an escape forged
    /// lines of the "several lineages" error and of `forget`'s report.
    #[test]
    fn a_lineage_shows_control_characters_escaped() {
        let set = Lineage::of(Some("evil\nstrata_check_last_errors 0"), "h", &[]);
        assert_eq!(set.to_string(), "set evil\\nstrata_check_last_errors 0");
        let host = Lineage::of(None, "h\x1b[31m", &["/y\r".into()]);
        assert_eq!(host.to_string(), "host h\\x1b[31m, paths /y\\r");
    }

    fn snap(time: &str, host: &str) -> Snapshot {
        Snapshot {
            host: host.into(),
            ..Snapshot::sample(time)
        }
    }

    #[test]
    fn select_at_picks_newest_not_after() {
        let all = vec![
            (SnapshotId([1; 32]), snap("2026-01-01T10:00:00Z", "a")),
            (SnapshotId([2; 32]), snap("2026-01-01T11:00:00+00:00", "a")),
            (SnapshotId([3; 32]), snap("2026-01-01T13:30:00+02:00", "a")),
            (SnapshotId([4; 32]), snap("2026-01-01T11:45:00Z", "b")),
        ];
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap());
        let f = SnapshotFilter::default();
        assert_eq!(
            select_at(all.clone(), at("2026-01-01T11:00:00Z"), &f)
                .unwrap()
                .0,
            SnapshotId([2; 32])
        );
        assert_eq!(
            select_at(all.clone(), at("2026-01-01T11:40:00Z"), &f)
                .unwrap()
                .0,
            SnapshotId([3; 32])
        );
        let only_a = SnapshotFilter {
            hosts: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(
            select_at(all.clone(), at("2026-01-01T12:00:00Z"), &only_a)
                .unwrap()
                .0,
            SnapshotId([3; 32])
        );
        // Both hosts have a snapshot by noon: one is not for this function to choose.
        let err = select_at(all.clone(), at("2026-01-01T12:00:00Z"), &f).unwrap_err();
        assert!(
            matches!(&err, crate::error::Error::SeveralLineages { lineages } if lineages.len() == 2),
            "{err}"
        );
        let per: Vec<SnapshotId> = select_per_lineage(all.clone(), at("2026-01-01T12:00:00Z"), &f)
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        assert_eq!(per, [SnapshotId([3; 32]), SnapshotId([4; 32])]);
        let err = select_at(all, at("2026-01-01T09:00:00Z"), &f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("01010101"), "{err}");
    }

    proptest! {
        #[test]
        fn cbor_round_trip(host in ".{0,20}", tags in proptest::collection::vec("[a-z]{1,8}", 0..3),
                           files in any::<u64>(), parent in proptest::option::of(any::<[u8; 32]>())) {
            let s = Snapshot {
                version: 1,
                time: "2026-11-25T18:00:00.123456789+01:00".into(),
                host,
                user: "root".into(),
                paths: vec!["/srv".into()],
                tags,
                set: Some("critical".into()),
                parent: parent.map(SnapshotId),
                tree: crate::id::BlobId([9; 32]),
                excludes: vec![],
                summary: Summary { files_new: files, duration_secs: 1.5, ..Default::default() },
                program: "strata 0.1.0".into(),
                repaired: parent.map(|p| Repaired { from: SnapshotId(p), lost: vec!["/srv/a b".into()] }),
                extensions: BTreeMap::new(),
            };
            let mut s = s;
            if parent.is_some() {
                let pg = ciborium::Value::Map(vec![(
                    ciborium::Value::Text("timeline".into()),
                    ciborium::Value::Integer(((files % 7) + 1).into()),
                )]);
                s.extensions.insert("postgres".into(), pg);
                s.set_extension("toy.app", &vec![files, 1, 2]).unwrap();
                prop_assert_eq!(s.extension::<Vec<u64>>("toy.app").unwrap(), Some(vec![files, 1, 2]));
            }
            // Every format version's encoding reads back as the same snapshot.
            for version in [3, 4] {
                let mut buf = Vec::new();
                ciborium::into_writer(&SnapshotWire::for_format(&s, version), &mut buf).unwrap();
                let back: Snapshot = ciborium::from_reader(&buf[..]).unwrap();
                prop_assert_eq!(&back, &s);
                let raw: ciborium::Value = ciborium::from_reader(&buf[..]).unwrap();
                let top: Vec<String> = raw.as_map().unwrap().iter().filter_map(|(k, _)| k.as_text().map(String::from)).collect();
                // Versions 1-3 keep the legacy extension at the top, version 4 in the map.
                prop_assert_eq!(top.contains(&"postgres".to_string()), parent.is_some() && version == 3);
                prop_assert_eq!(top.contains(&"extensions".to_string()), parent.is_some());
            }
            let mut buf = Vec::new();
            ciborium::into_writer(&s, &mut buf).unwrap();
            let back: Snapshot = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}

#[cfg(test)]
mod lineage_tests {
    use super::*;

    #[test]
    fn cache_keys_stay_as_caches_have_them_and_lineages_tell_apart() {
        let set = Lineage::Set("critical".into());
        let hp = Lineage::HostPaths {
            host: "db1".into(),
            paths: vec!["/srv/a".into(), "/srv/b".into()],
        };
        // Caches written by earlier versions key their state so: changing it would make
        // every host re-read every file once.
        assert_eq!(set.cache_key(), "set:critical");
        assert_eq!(hp.cache_key(), "host:db1\0/srv/a\0/srv/b");
        assert_eq!(hp.label(), "host:db1:/srv/a,/srv/b");
        assert_eq!(Lineage::Set("critical".into()).label(), "critical");
        assert_eq!(set.to_string(), "set critical");
        assert_eq!(hp.to_string(), "host db1, paths /srv/a /srv/b");
        // Paths are a list, not a joined string: ["/a b"] and ["/a", "b"] differ.
        let one = Lineage::HostPaths {
            host: "h".into(),
            paths: vec!["/a b".into()],
        };
        let two = Lineage::HostPaths {
            host: "h".into(),
            paths: vec!["/a".into(), "b".into()],
        };
        assert_ne!(one, two);
    }
}
