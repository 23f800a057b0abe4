//! The repository config: format version and the parameters every writer must share.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::id::RepoId;

/// The format version new repositories get: 5, mark records (format-spec §7.3) that let
/// backups deduplicate without reading every host's index files, on top of version 4's root
/// records of applications (§15) and snapshot extensions (§9), version 3's files inside
/// their tree node (§8) and version 2's compact metadata (§6.1).
pub const FORMAT_VERSION: u32 = 5;
/// The largest file a version 3 writer stores in its tree node rather than as a blob.
///
/// A blob costs about 140 bytes once (seal, pack header and index entries, its id in the
/// tree); inline bytes cost their length again in every new version of the directory's
/// tree. Up to 128 bytes, inlining wins unless the directory's tree is rewritten more than
/// about three times while the file stays the same.
pub const INLINE_LIMIT: usize = 128;
/// The oldest format version this build reads and writes.
pub const OLDEST_VERSION: u32 = 1;
/// The `version` field of snapshots and index files, unchanged since format version 1.
pub const FILE_VERSION: u32 = 1;

/// The repository's config file (format-spec §4): fixed at `init`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Format version.
    pub version: u32,
    /// The repository's random id.
    pub id: RepoId,
    /// How files are cut into chunks.
    pub chunker: ChunkerParams,
    /// zstd level for blobs; 0 disables compression.
    pub compression_level: i32,
    /// Storage class for data packs on object stores; metadata is always standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_storage_class: Option<String>,
    /// S3 Object Lock: how long every file written is retained (format-spec §13.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// The repository's Object Lock settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectLock {
    /// Governance or compliance.
    pub mode: crate::backend::LockMode,
    /// Each file is retained this long from its write (and reused ones as long from the
    /// backup that reuses them).
    pub period_secs: u64,
}

impl ObjectLock {
    /// The retention period.
    pub fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.period_secs)
    }

    /// What writes and extensions add beyond the period (a quarter of it), so that hourly
    /// backups extend a reused file about once a quarter period, not every hour.
    pub fn slack(&self) -> std::time::Duration {
        std::time::Duration::from_secs((self.period_secs / 4).max(1))
    }
}

impl Config {
    /// Whether index files and pack headers are written in the compact encoding.
    pub fn compact(&self) -> bool {
        self.version >= 2
    }

    /// Whether files of at most [`INLINE_LIMIT`] bytes are written into their tree node.
    pub fn inline(&self) -> bool {
        self.version >= 3
    }

    /// Whether applications keep root records (`roots/`) and snapshots carry their
    /// extensions in `extensions`.
    pub fn roots(&self) -> bool {
        self.version >= 4
    }

    /// Whether operations that take packs out of the live set write mark records
    /// (format-spec §7.3), so that backups may deduplicate from a partial view.
    pub fn partial_views(&self) -> bool {
        self.version >= 5
    }

    /// A config for a new repository, with a fresh id.
    pub fn new(chunker: ChunkerParams, compression_level: i32) -> Self {
        use rand::RngCore;
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Config {
            version: FORMAT_VERSION,
            id: RepoId(id),
            chunker,
            compression_level,
            data_storage_class: None,
            object_lock: None,
        }
    }
}
