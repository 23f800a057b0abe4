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
mod retry;

use std::fmt;
use std::sync::Arc;

pub use local::LocalBackend;
pub use mem::MemBackend;
pub use retaining::Retaining;
pub use retry::Retrying;

use crate::error::Result;

pub use crate::files::FileKind;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThawTier {
    /// Minutes (GLACIER only).
    Expedited,
    /// Hours.
    #[default]
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

    /// The longest wait S3 documents before an object of `class` can be read at this
    /// tier (the end of [`ThawTier::expected_wait`]'s range): zero for classes read at
    /// once, `None` where the tier does not exist. What a recovery objective must allow.
    pub fn longest_wait(self, class: &str) -> Option<std::time::Duration> {
        const HOUR: u64 = 3600;
        if !lifecycle::ARCHIVE_CLASSES.contains(&class) {
            return Some(std::time::Duration::ZERO);
        }
        let secs = match (class, self) {
            ("DEEP_ARCHIVE", ThawTier::Expedited) => return None,
            ("DEEP_ARCHIVE", ThawTier::Standard) => 12 * HOUR,
            ("DEEP_ARCHIVE", ThawTier::Bulk) => 48 * HOUR,
            (_, ThawTier::Expedited) => 5 * 60,
            (_, ThawTier::Standard) => 5 * HOUR,
            (_, ThawTier::Bulk) => 12 * HOUR,
        };
        Some(std::time::Duration::from_secs(secs))
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
    /// What it is instead of a regular file, where a store can hold other things (a local
    /// directory: "a symlink", "a FIFO", "a directory", "a device"); `None` for a file.
    /// Listed all the same: reading it fails as damage, and `check` names it.
    pub not_regular: Option<&'static str>,
}

/// How a file is written, beyond its bytes. Part of every write, never state of the backend:
/// two backups sharing a backend (two sets of one `backup --all`) must not leak classes into
/// each other, and a wrapper that forwards writes forwards these with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions<'a> {
    /// The object store's storage class (data packs only; others ignore it).
    pub class: Option<&'a str>,
    /// An Object Lock retention. A store without Object Lock refuses the write rather than
    /// drop it.
    pub retention: Option<Retention>,
}

impl<'a> WriteOptions<'a> {
    /// A write in `class` (`None`: the store's default).
    pub fn in_class(class: Option<&'a str>) -> Self {
        WriteOptions {
            class,
            retention: None,
        }
    }
}

/// The error of a file over its kind's [`FileKind::max_size`]: damage, or someone with
/// write access to the storage trying to make readers allocate without bound.
pub fn too_large(kind: FileKind, name: &str, size: u64) -> crate::Error {
    crate::Error::corrupt(
        format!("{kind} {name}"),
        format!(
            "{size} bytes or more: larger than any {kind} file can be ({} bytes)",
            kind.max_size()
        ),
    )
}

impl FileInfo {
    /// The error of a file listed larger than its kind can be ([`too_large`]): refused from
    /// the listing, without a request for its bytes.
    pub fn oversized(&self, kind: FileKind) -> Option<crate::Error> {
        (self.size > kind.max_size()).then(|| too_large(kind, &self.name, self.size))
    }
}

/// Where repository files are stored: a flat namespace per [`FileKind`]. Files are
/// written whole and never changed; failures are [`crate::Error::Backend`] (retried by
/// [`Retrying`] when [transient](crate::Error::is_transient)) or [`crate::Error::NotFound`].
///
/// The trait holds what every store does. What only some stores do (thaw archived files,
/// lifecycle rules, Object Lock, versions) is a capability trait that
/// [`Backend::capabilities`] hands out; that method has no default, so a wrapper either
/// forwards its inner backend's capabilities or visibly offers none.
pub trait Backend: Send + Sync {
    /// Human-readable location, used in messages.
    fn location(&self) -> String;

    /// Prepares an empty location (directories, bucket check).
    fn create(&self) -> Result<()>;

    /// The files of one kind, with sizes.
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>>;

    /// A whole file. One over [`FileKind::max_size`] fails ([`too_large`]) before more
    /// than that is held in memory.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;

    /// `len` bytes of a file from `offset` on; fewer only at its end.
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Stores a file durably, as `how` says. Names are content addresses, so writing an
    /// existing name again is harmless; implementations must never expose a partially
    /// written file.
    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()>;

    /// Removes a file; removing one that is gone is not an error.
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;

    /// Removes several files, as [`Backend::delete`] does each; stores that can (S3's
    /// `DeleteObjects`) in one request per thousand. Stops at the first failure; some of
    /// the others may be gone by then.
    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        names.iter().try_for_each(|name| self.delete(kind, name))
    }

    /// What this store offers beyond files. No default: see the trait's documentation.
    fn capabilities(&self) -> Capabilities<'_>;

    /// Whether a repository appears to exist here (its config is present). Stores answer
    /// this more cheaply than the whole read this default makes.
    fn exists(&self) -> Result<bool> {
        match self.read(FileKind::Config, "config") {
            Ok(_) => Ok(true),
            Err(crate::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`Backend::put`] in the store's default class, without retention (shorthand: not
    /// for wrappers to override).
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.put(kind, name, data, &WriteOptions::default())
    }
}

/// What a store offers beyond reading and writing files. A capability that is `None` is
/// one the store does not have; the repository then refuses what needs it (thawing an
/// archived pack, an Object Lock retention) instead of acting as if it were there.
#[derive(Clone, Copy)]
pub struct Capabilities<'a> {
    /// How many uploads to keep in flight.
    pub upload_concurrency: usize,
    /// How many whole-pack or range reads to keep in flight (restore, check --read-data).
    /// Local disks gain nothing past one per core; object stores hide latency with more.
    pub read_concurrency: usize,
    /// Requests made so far, where the store counts them.
    pub request_count: Option<u64>,
    /// Archive storage classes, and thawing files out of them.
    pub cold_storage: Option<&'a dyn ColdStorage>,
    /// The bucket's lifecycle rules.
    pub lifecycle: Option<&'a dyn Lifecycle>,
    /// Object Lock retention of what is written.
    pub object_lock: Option<&'a dyn ObjectLock>,
    /// Versions of files (a versioned bucket), and deleting them for good.
    pub versions: Option<&'a dyn Versions>,
    /// Leftovers of interrupted writes that the store keeps until they are removed
    /// (temporary files, multipart uploads).
    pub temporaries: Option<&'a dyn Temporaries>,
    /// Whether a listing may name entries that are no regular files (symlinks, FIFOs,
    /// directories: a local directory). An object store holds objects only, and `check`
    /// spends no listings looking for them there.
    pub special_files: bool,
}

impl Capabilities<'_> {
    /// A store of files and nothing more: two uploads, one read per core.
    pub fn plain() -> Self {
        Capabilities {
            upload_concurrency: 2,
            read_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            request_count: None,
            cold_storage: None,
            lifecycle: None,
            object_lock: None,
            versions: None,
            temporaries: None,
            special_files: false,
        }
    }
}

/// Archive storage classes (S3 GLACIER, DEEP_ARCHIVE): files that must be thawed before
/// they can be read.
pub trait ColdStorage: Send + Sync {
    /// Whether a file can be read now or must be thawed first (one HEAD on S3).
    fn thaw_state(&self, kind: FileKind, name: &str) -> Result<ThawState>;

    /// Asks for a readable copy of an archived file for `days` days; a thaw already in
    /// progress is not an error.
    fn thaw(&self, kind: FileKind, name: &str, days: u32, tier: ThawTier) -> Result<()>;
}

/// A bucket's lifecycle rules, which may delete or archive what the repository needs.
pub trait Lifecycle: Send + Sync {
    /// The rules, and the repository's key prefix in the bucket.
    fn rules(&self) -> Result<(String, Vec<lifecycle::LifecycleRule>)>;
}

/// Object Lock: versions that cannot be deleted before a date. Retentions of new files go
/// with their writes ([`WriteOptions::retention`]).
pub trait ObjectLock: Send + Sync {
    /// Whether the bucket has Object Lock enabled.
    fn enabled(&self) -> Result<bool>;

    /// Sets a later retention on a file's current version.
    fn retain(&self, kind: FileKind, name: &str, retention: Retention) -> Result<()>;

    /// The retention date (Unix seconds) of a file's current version, if it has one.
    fn retention(&self, kind: FileKind, name: &str) -> Result<Option<i64>>;
}

/// A versioned bucket's old versions and delete markers.
pub trait Versions: Send + Sync {
    /// Every version of the files of one kind, delete markers included.
    fn versions(&self, kind: FileKind) -> Result<Vec<ObjectVersion>>;

    /// Deletes one version for good (a delete marker included); Object Lock may refuse.
    fn purge_version(&self, kind: FileKind, name: &str, version_id: &str) -> Result<Purge>;
}

/// Leftovers of interrupted writes.
pub trait Temporaries: Send + Sync {
    /// Removes those older than `older_than`; returns what it removed.
    fn remove_stale(&self, older_than: std::time::Duration) -> Result<Vec<FileInfo>>;
}

/// The error of a retention asked of a store without Object Lock.
pub(crate) fn no_object_lock(location: String) -> crate::Error {
    crate::Error::BadInput {
        what: "object lock",
        reason: format!("{location} has no Object Lock (S3 buckets only)"),
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
    /// S3: how long a request waits on the endpoint, for a reply and for each window of a
    /// body's flow (default 60 s).
    pub s3_timeout: Option<std::time::Duration>,
}

/// Opens a backend from a repository URL: what a [`Schemes`] entry registers.
pub type Opener = fn(&str, &BackendOptions) -> Result<BackendRef>;

/// The URL schemes this process can open, each with its opener; a URL with none of them
/// is a local directory (`local:` forces one).
#[derive(Clone)]
pub struct Schemes {
    entries: Vec<(&'static str, Opener)>,
}

impl Schemes {
    /// Local directories only.
    pub fn local() -> Self {
        Schemes {
            entries: Vec::new(),
        }
    }

    /// Adds (or replaces) the opener of URLs that start with `scheme:`.
    pub fn with(mut self, scheme: &'static str, open: Opener) -> Self {
        self.entries.retain(|(s, _)| *s != scheme);
        self.entries.push((scheme, open));
        self
    }

    /// Opens the backend named by `url`, behind the retry layer. A URL that looks like
    /// another scheme's (`gs://bucket`) is refused rather than made a local directory.
    pub fn open(&self, url: &str, opts: &BackendOptions) -> Result<BackendRef> {
        if let Some(scheme) = self.unknown_scheme(url) {
            return Err(crate::Error::UnknownScheme {
                url: url.to_string(),
                scheme: scheme.to_string(),
            });
        }
        let inner = match self.scheme_of(url) {
            Some(open) => open(url, opts)?,
            None => {
                let path = url.strip_prefix("local:").unwrap_or(url);
                // An unset variable in a script (`-r "$REPO"`) must not make the working
                // directory a repository.
                if path.is_empty() {
                    return Err(crate::Error::EmptyLocation(url.to_string()));
                }
                Arc::new(LocalBackend::new(path))
            }
        };
        Ok(Arc::new(Retrying::new(inner)))
    }

    fn scheme_of(&self, url: &str) -> Option<Opener> {
        let scheme = url.split_once(':').map(|(s, _)| s)?;
        self.entries
            .iter()
            .find(|(s, _)| *s == scheme)
            .map(|(_, open)| *open)
    }

    /// The scheme a URL names but this process cannot open: `gs` of `gs://bucket`, `s3` of
    /// `s3:…` where S3 is not linked. A directory whose name looks like `word:…` is
    /// reached as `./word:…` or `local:word:…`.
    fn unknown_scheme<'u>(&self, url: &'u str) -> Option<&'u str> {
        let (scheme, _) = url.split_once(':')?;
        let plausible = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
        (plausible && self.scheme_of(url).is_none() && scheme != "local").then_some(scheme)
    }
}

/// Opens the backend named by a repository URL, with default options.
pub fn open(url: &str) -> Result<BackendRef> {
    open_with(url, &BackendOptions::default())
}

/// Opens the backend named by a repository URL with this crate's schemes (local
/// directories); a program that links other backends opens through its own [`Schemes`].
pub fn open_with(url: &str, opts: &BackendOptions) -> Result<BackendRef> {
    Schemes::local().open(url, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(_: &str, _: &BackendOptions) -> Result<BackendRef> {
        Ok(Arc::new(MemBackend::new()))
    }

    #[test]
    fn schemes_open_what_they_register_and_refuse_what_they_do_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let schemes = Schemes::local().with("mem", fake);
        let opts = BackendOptions::default();
        assert_eq!(schemes.open("mem:x", &opts).unwrap().location(), "memory");
        // Registered again: the later opener wins.
        let again = schemes
            .clone()
            .with("mem", |_, _| Err(crate::Error::Internal("second".into())));
        assert!(again.open("mem:x", &opts).is_err());
        let local = dir.path().join("a:b");
        let opened = schemes.open(local.to_str().unwrap(), &opts).unwrap();
        assert!(
            schemes.open("a:b", &opts).is_err(),
            "a relative name like a scheme"
        );
        assert_eq!(opened.location(), local.display().to_string());
        let forced = format!("local:{}", dir.path().join("gs://x").display());
        assert!(schemes.open(&forced, &opts).is_ok());
        for url in [
            "gs://bucket/x",
            "B2://b",
            "file:///tmp/x",
            "s3:http://h:1/b",
        ] {
            match schemes.open(url, &opts) {
                Err(crate::Error::UnknownScheme { scheme, .. }) => {
                    assert_eq!(scheme, url.split(':').next().unwrap())
                }
                other => panic!("{url}: {:?}", other.map(|b| b.location())),
            }
        }
        // Not a scheme: a path with "://" further on, or one that starts with a digit.
        for path in ["./x://y", "9p://z", "/abs/a:b"] {
            assert!(schemes.open(path, &opts).is_ok(), "{path}");
        }
        assert!(Schemes::local().open("mem:x", &opts).is_err());
    }

    /// Only the required methods: what the trait's defaults give a wrapper.
    struct Plain(MemBackend);

    impl Backend for Plain {
        fn location(&self) -> String {
            self.0.location()
        }
        fn create(&self) -> Result<()> {
            self.0.create()
        }
        fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
            self.0.list(kind)
        }
        fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.0.read(kind, name)
        }
        fn read_range(&self, kind: FileKind, name: &str, o: u64, l: u64) -> Result<Vec<u8>> {
            self.0.read_range(kind, name, o, l)
        }
        fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
            self.0.put(kind, name, data, how)
        }
        fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
            self.0.delete(kind, name)
        }
        fn capabilities(&self) -> Capabilities<'_> {
            Capabilities::plain()
        }
    }

    #[test]
    fn the_defaults_are_generic_and_values_say_what_they_are() {
        let b = Plain(MemBackend::new());
        assert!(!b.exists().unwrap());
        b.write(FileKind::Config, "config", b"c").unwrap();
        assert!(b.exists().unwrap());
        let retained = WriteOptions {
            retention: Some(Retention {
                mode: LockMode::Compliance,
                until: 1,
            }),
            ..WriteOptions::default()
        };
        assert!(
            b.put(FileKind::Data, "ab", b"x", &retained).is_err(),
            "no Object Lock here"
        );
        assert_eq!(
            WriteOptions::in_class(Some("GLACIER")).class,
            Some("GLACIER")
        );
        check_storage_class("STANDARD_IA").unwrap();
        assert!(check_storage_class("GLACIAR").is_err());
        assert_eq!(MIN_CLASSED_OBJECT, 131_072);
        assert_eq!(FileKind::Root.to_string(), "root record");
        assert_eq!(FileKind::Data.to_string(), "data pack");
        assert_eq!(LockMode::Compliance.to_string(), "COMPLIANCE");
    }
}
