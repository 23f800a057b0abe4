//! Storage backends: where repository files live.
//!
//! A backend moves opaque bytes under a (kind, name) pair. Encryption, compression and
//! format all live above this trait, so a backend can be tested, wrapped (retries, fault
//! injection, request counting) and swapped without touching the rest.

pub mod faulty;
pub mod lifecycle;
mod local;
mod mem;
pub(crate) mod retaining;
mod s3;

use std::fmt;
use std::sync::Arc;

pub use local::LocalBackend;
pub use mem::MemBackend;
pub use retaining::Retaining;
pub use s3::S3Backend;

use crate::error::Result;

/// The kinds of files in a repository; each has its own directory or prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The one `config` file.
    Config,
    /// Key files, one per password.
    Key,
    /// Snapshot manifests.
    Snapshot,
    /// Index files.
    Index,
    /// Packs of data blobs.
    Data,
    /// Packs of tree blobs.
    Tree,
    /// Lock files.
    Lock,
    /// Audit records: what verification and restore drills found.
    Audit,
    /// PostgreSQL WAL archive records, one per archived file, named by what they archive.
    Wal,
}

impl FileKind {
    /// Every kind, `config` first.
    pub const ALL: [FileKind; 9] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Data,
        FileKind::Tree,
        FileKind::Lock,
        FileKind::Audit,
        FileKind::Wal,
    ];

    /// The directory (or key prefix) files of this kind live under.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Data => "data",
            FileKind::Tree => "tree",
            FileKind::Lock => "locks",
            FileKind::Audit => "audit",
            FileKind::Wal => "wal",
        }
    }

    /// Packs are spread over 256 sub-directories by the first two hex digits of their name.
    pub fn fanned_out(self) -> bool {
        matches!(self, FileKind::Data | FileKind::Tree)
    }

    /// Relative path of a file of this kind, with `/` separators.
    pub fn path(self, name: &str) -> String {
        match self {
            FileKind::Config => "config".to_string(),
            k if k.fanned_out() => format!("{}/{}/{}", k.dir(), &name[..2.min(name.len())], name),
            k => format!("{}/{}", k.dir(), name),
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Snapshot => "snapshot",
            FileKind::Index => "index",
            FileKind::Data => "data pack",
            FileKind::Tree => "tree pack",
            FileKind::Lock => "lock",
            FileKind::Audit => "audit record",
            FileKind::Wal => "WAL record",
        })
    }
}

/// Whether an object can be read now, as far as archive storage goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThawState {
    /// In a class read at once.
    Hot,
    /// Archived, no restore asked for (or its copy expired).
    Archived,
    /// Archived, a restore is in progress.
    Thawing,
    /// Archived, with a restored copy that can be read until it expires.
    Thawed,
}

/// How fast (and dear) a thaw is: S3's restore tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThawTier {
    /// Minutes (GLACIER only).
    Expedited,
    /// Hours.
    Standard,
    /// Many hours, cheapest.
    Bulk,
}

impl ThawTier {
    /// The wait S3 documents for this tier in `class`; `None` where it does not exist.
    pub fn expected_wait(self, class: &str) -> Option<&'static str> {
        match (class, self) {
            ("DEEP_ARCHIVE", ThawTier::Expedited) => None,
            ("DEEP_ARCHIVE", ThawTier::Standard) => Some("within 12 hours"),
            ("DEEP_ARCHIVE", ThawTier::Bulk) => Some("within 48 hours"),
            (_, ThawTier::Expedited) => Some("1-5 minutes"),
            (_, ThawTier::Standard) => Some("3-5 hours"),
            (_, ThawTier::Bulk) => Some("5-12 hours"),
        }
    }
}

/// S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Credentials with `s3:BypassGovernanceRetention` may still delete or shorten.
    Governance,
    /// No one, the account's root included, can delete a version before its date.
    Compliance,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        })
    }
}

/// An Object Lock retention: the object's versions cannot be deleted before `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// How strict.
    pub mode: LockMode,
    /// Unix seconds.
    pub until: i64,
}

/// One version of an object in a versioned bucket, as a version listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The file's name.
    pub name: String,
    /// The store's version id.
    pub version_id: String,
    /// A delete marker (what a DELETE without version leaves in a versioned bucket).
    pub delete_marker: bool,
    /// The newest version of its key: a delete marker here hides the object.
    pub latest: bool,
    /// Its bytes (0 for a delete marker).
    pub size: u64,
    /// When it was written (Unix seconds).
    pub modified: i64,
}

/// What deleting one version came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Gone for good.
    Deleted,
    /// Refused by Object Lock: retained until then (Unix seconds), where the store says.
    Held(Option<i64>),
}

/// The S3 storage classes a repository may put data packs in.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
];

/// Objects smaller than this go to the default class whatever the setting: the
/// infrequent-access and archive classes bill each object as at least 128 KiB.
pub const MIN_CLASSED_OBJECT: usize = 128 << 10;

/// Refuses a storage class S3 does not have, naming those it does.
pub fn check_storage_class(class: &str) -> crate::Result<()> {
    if STORAGE_CLASSES.contains(&class) {
        return Ok(());
    }
    Err(crate::Error::BadInput {
        what: "storage class",
        reason: format!(
            "{class:?} is not an S3 storage class (one of {})",
            STORAGE_CLASSES.join(", ")
        ),
    })
}

/// Listing entry: a file's name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's name (a content address in hex, or `config`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its S3 storage class as the listing gives it; `None` where there are none (a
    /// local directory).
    pub storage_class: Option<String>,
    /// When it was written (Unix seconds), where the listing says (object stores: the
    /// minimum storage duration of a class runs from there).
    pub modified: Option<i64>,
}

/// Where repository files are stored: a flat namespace per [`FileKind`]. Files are
/// written whole and never changed; implementations retry what is worth retrying and
/// report the rest as [`crate::Error::Backend`] or [`crate::Error::NotFound`].
pub trait Backend: Send + Sync {
    /// Human-readable location, used in messages.
    fn location(&self) -> String;

    /// Whether a repository appears to exist here (its config is present).
    fn exists(&self) -> Result<bool>;

    /// Prepares an empty location (directories, bucket check).
    fn create(&self) -> Result<()>;

    /// The files of one kind, with sizes.
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>>;

    /// A whole file.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;

    /// `len` bytes of a file from `offset` on; fewer only at its end.
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Stores a file durably. Names are content addresses, so writing an existing name again
    /// is harmless; implementations must never expose a partially written file.
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;

    /// Removes a file; removing one that is gone is not an error.
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;

    /// Removes temporaries of interrupted writes older than `older_than` (local directories
    /// only: an object store's PUT leaves none); returns what it removed.
    fn remove_stale_temporaries(&self, _older_than: std::time::Duration) -> Result<Vec<FileInfo>> {
        Ok(Vec::new())
    }

    /// As [`Backend::write`], in a storage class (object stores; others ignore it). The
    /// class is an argument of each write, never state of the backend: two backups sharing
    /// a backend (two sets of one `backup --all`) must not leak classes into each other.
    fn write_in_class(
        &self,
        kind: FileKind,
        name: &str,
        data: &[u8],
        _class: Option<&str>,
    ) -> Result<()> {
        self.write(kind, name, data)
    }

    /// How many uploads to keep in flight.
    fn upload_concurrency(&self) -> usize {
        2
    }

    /// How many whole-pack or range reads to keep in flight (restore, check --read-data).
    /// Local disks gain nothing past one per core; object stores hide latency with more.
    fn read_concurrency(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Requests made so far, where the backend counts them.
    fn request_count(&self) -> Option<u64> {
        None
    }

    /// Whether a file can be read now or must be thawed first (one HEAD on S3).
    fn thaw_state(&self, _kind: FileKind, _name: &str) -> crate::Result<ThawState> {
        Ok(ThawState::Hot)
    }

    /// Asks for a readable copy of an archived file for `days` days; a thaw already in
    /// progress is not an error.
    fn thaw(&self, _kind: FileKind, _name: &str, _days: u32, _tier: ThawTier) -> crate::Result<()> {
        Ok(())
    }

    /// The bucket's lifecycle rules and the repository's key prefix in it; `None` where
    /// the store has no lifecycle (a local directory).
    fn lifecycle(&self) -> crate::Result<Option<(String, Vec<lifecycle::LifecycleRule>)>> {
        Ok(None)
    }

    /// Whether the bucket has Object Lock enabled; `None` where the store has no such
    /// thing (a local directory).
    fn object_lock_enabled(&self) -> crate::Result<Option<bool>> {
        Ok(None)
    }

    /// As [`Backend::write_in_class`], with an Object Lock retention. A store without
    /// Object Lock refuses a retention rather than drop it.
    fn write_retained(
        &self,
        kind: FileKind,
        name: &str,
        data: &[u8],
        class: Option<&str>,
        retention: Option<Retention>,
    ) -> Result<()> {
        if retention.is_some() {
            return Err(no_object_lock(self));
        }
        self.write_in_class(kind, name, data, class)
    }

    /// Sets a later retention on a file's current version.
    fn retain(&self, _kind: FileKind, _name: &str, _retention: Retention) -> Result<()> {
        Err(no_object_lock(self))
    }

    /// The retention date (Unix seconds) of a file's current version, if it has one.
    fn retention(&self, _kind: FileKind, _name: &str) -> Result<Option<i64>> {
        Ok(None)
    }

    /// Every version of the files of one kind, delete markers included (versioned
    /// buckets); empty where the store keeps no versions.
    fn versions(&self, _kind: FileKind) -> Result<Vec<ObjectVersion>> {
        Ok(Vec::new())
    }

    /// Deletes one version for good (a delete marker included); Object Lock may refuse.
    fn purge_version(&self, _kind: FileKind, _name: &str, _version_id: &str) -> Result<Purge> {
        Err(no_object_lock(self))
    }
}

fn no_object_lock<B: Backend + ?Sized>(b: &B) -> crate::Error {
    crate::Error::BadInput {
        what: "object lock",
        reason: format!("{} has no Object Lock (S3 buckets only)", b.location()),
    }
}

/// A shared backend.
pub type BackendRef = Arc<dyn Backend>;

/// How a backend is set up, beyond its URL. Options of one process, never read from the
/// environment by the library.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// S3: objects larger than this go up in parts (default 64 MiB, at least 5 MiB).
    pub s3_multipart_threshold: Option<u64>,
}

/// Opens the backend named by a repository URL, with default options.
pub fn open(url: &str) -> Result<BackendRef> {
    open_with(url, &BackendOptions::default())
}

/// Opens the backend named by a repository URL.
pub fn open_with(url: &str, opts: &BackendOptions) -> Result<BackendRef> {
    if url.starts_with("s3:") {
        return Ok(Arc::new(s3::S3Backend::open(url, opts)?));
    }
    let path = url.strip_prefix("local:").unwrap_or(url);
    Ok(Arc::new(LocalBackend::new(path)))
}
