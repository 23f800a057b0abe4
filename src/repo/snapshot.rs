//! Snapshot manifests.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::id::{SnapshotId, TreeId};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: u32,
    /// RFC 3339 with nanoseconds and the writer's UTC offset.
    pub time: String,
    pub host: String,
    pub user: String,
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    pub tree: TreeId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    pub summary: Summary,
    pub program: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    /// Bytes read from source files (unchanged files are not read).
    pub bytes_read: u64,
    /// Plaintext bytes of blobs this snapshot added to the repository.
    pub bytes_added: u64,
    /// Bytes those blobs take in packs after compression and encryption.
    pub bytes_stored: u64,
    pub blobs_added: u64,
    pub errors: u64,
    pub duration_secs: f64,
}

impl Snapshot {
    pub fn datetime(&self) -> Option<DateTime<FixedOffset>> {
        DateTime::parse_from_rfc3339(&self.time).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            };
            let mut buf = Vec::new();
            ciborium::into_writer(&s, &mut buf).unwrap();
            let back: Snapshot = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
