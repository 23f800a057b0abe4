//! Library errors: what went wrong, by kind, with the object or path it concerns.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::files::FileKind;
use crate::id::{BlobId, TreeId};

/// What a [`Error::NotFound`] did not find.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// A repository file, as the backend names it.
    File {
        /// The file's kind (its directory).
        kind: FileKind,
        /// Its name on the backend.
        name: String,
    },
    /// Something else the backend was asked for (a bucket, a listing), in its words.
    Object(String),
    /// A blob no index file names.
    Blob(BlobId),
    /// A tree no index names (`in_pack` false), or absent from the pack the index names.
    Tree {
        /// The tree's id.
        id: TreeId,
        /// Whether the index named a pack that then lacked it.
        in_pack: bool,
    },
    /// A snapshot by id prefix; `latest` when none matches the filters.
    Snapshot(String),
    /// A key by id prefix.
    Key(String),
    /// A path inside a snapshot.
    Path(PathBuf),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::File { kind, name } => write!(f, "{kind} {name}"),
            Missing::Object(what) => f.write_str(what),
            Missing::Blob(id) => write!(f, "blob {id} (in the index)"),
            Missing::Tree { id, in_pack: false } => write!(f, "tree {id} (in the index)"),
            Missing::Tree { id, in_pack: true } => write!(f, "tree {id} (in its pack)"),
            Missing::Snapshot(s) if s == "latest" => {
                f.write_str("a snapshot (the repository has none matching)")
            }
            Missing::Snapshot(s) => write!(f, "snapshot {s}"),
            Missing::Key(k) => write!(f, "key {k}"),
            Missing::Path(p) => write!(f, "{} in the snapshot", p.display()),
        }
    }
}

/// Which bound of a walk (format-spec §16.5) a snapshot's tree passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// More `what` (files or directories) than its summary records, and the margin.
    PastSummary {
        /// `files` or `directories`.
        what: &'static str,
        /// What the summary records.
        recorded: u64,
        /// What the walk allowed (the record and a margin).
        limit: u64,
    },
    /// A summary recording more `what` than any snapshot holds.
    Recorded {
        /// `files` or `directories`.
        what: &'static str,
        /// What the summary records.
        recorded: u64,
    },
    /// More files and directories than sharing honestly makes of the entries read.
    Sharing {
        /// The entries of the distinct trees read.
        entries: u64,
        /// The files and directories allowed from them.
        limit: u64,
    },
}

impl fmt::Display for Expansion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expansion::PastSummary {
                what,
                recorded,
                limit,
            } => write!(
                f,
                "its tree holds more than {limit} {what}, where its summary records {recorded}"
            ),
            Expansion::Recorded { what, recorded } => write!(
                f,
                "its summary records {recorded} {what}, more than any snapshot holds ({})",
                crate::walk::MAX_RECORDED
            ),
            Expansion::Sharing { entries, limit } => write!(
                f,
                "its tree repeats the {entries} entries read into more than {limit} files and \
                 directories ({} times over, more than sharing identical directories usually \
                 gives)",
                crate::walk::sharing()
            ),
        }
    }
}

/// What went wrong, by kind, so that callers can match what happened (the CLI maps kinds to
/// exit codes). New kinds may come: match with a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository (no config file) at the location given.
    #[error("no repository at {0}")]
    NoRepository(String),

    /// A repository URL of a scheme no backend of this process opens (`gs://bucket`).
    #[error(
        "{url:?}: no backend for {scheme:?} URLs (s3:… or a directory; local:PATH for \
             a directory whose name looks like a URL)"
    )]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },

    /// A repository URL naming no location (`""`, `local:`).
    #[error("{0:?} names no repository location")]
    EmptyLocation(String),

    /// `init` at a location that already holds a repository.
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),

    /// No intact key opens with the password; `damaged` names key files that could not be
    /// tried (one of them may have been this password's).
    #[error("wrong password: no key in the repository opens with it{}",
        if damaged.is_empty() { String::new() }
        else { format!(" (damaged key files that could not be tried: {})", damaged.join("; ")) })]
    WrongPassword {
        /// Key files that could not be read or decoded, with why.
        damaged: Vec<String>,
    },

    /// Trying key files stopped at the work budget (format-spec §3.1) with some not tried:
    /// none of those tried opens with the password, which says nothing of the rest. So
    /// many key files are most likely planted by whoever can write the storage.
    #[error(
        "no key file opened within the {budget_mib} MiB·passes of Argon2id work that trying \
         key files may spend: {tried} tried, {untried} not tried; the password may well be \
         right: that many key files were most likely planted by whoever can write the \
         storage{}",
        if damaged.is_empty() { String::new() }
        else { format!(" (damaged key files that could not be tried: {})", damaged.join("; ")) }
    )]
    KeyBudgetSpent {
        /// Key files tried.
        tried: usize,
        /// Key files left untried.
        untried: usize,
        /// The budget, in MiB·passes.
        budget_mib: u64,
        /// Key files that could not be read or decoded, with why.
        damaged: Vec<String>,
    },

    /// Prune while snapshots this host had seen are gone with no forget recorded (format-spec
    /// §16.3): their data may be all that is left of them.
    #[error(
        "refusing to prune: {} snapshot(s) this host had seen vanished from the repository \
         without a forget recorded ({}): their data may be all that is left of them, and \
         prune deletes nothing while that stands",
        ids.len(), ids.join(", ")
    )]
    SnapshotsVanished {
        /// The vanished snapshots' ids (hex).
        ids: Vec<String>,
    },

    /// `init` at a location that holds files but no config.
    #[error(
        "{location} is not empty: it holds {found} but no config; refusing to create a \
             repository over it (if it is a repository whose config was lost, put the config \
             back from a copy; otherwise choose an empty location)"
    )]
    NotEmpty {
        /// The location given.
        location: String,
        /// What was found there.
        found: String,
    },

    /// An error with what fixes it (a damaged index file stops a prune until the index
    /// is repaired).
    #[error("{error}")]
    WithRemedy {
        /// What went wrong.
        error: Box<Error>,
        /// What fixes it.
        remedy: crate::Remedy,
    },

    /// Another process holds a lock that this operation cannot share.
    #[error("repository is locked: {holders}")]
    Locked {
        /// The holders, described.
        holders: String,
        /// Whether one of them is stale (its process gone, or not refreshed in time).
        stale: bool,
    },

    /// A repository written in a format version this build does not read.
    #[error(
        "unsupported repository format version {found} (this strata reads versions {oldest} \
         to {newest})"
    )]
    UnsupportedVersion {
        /// The repository's version.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest.
        newest: u32,
    },

    /// Something asked for is not in the repository.
    #[error("{}", match what {
        Missing::Path(p) => format!("{} does not exist in the snapshot", p.display()),
        what => format!("{what} not found in the repository"),
    })]
    NotFound {
        /// What was not found.
        what: Missing,
    },

    /// The backend failed on an object; see [`Error::is_transient`].
    #[error("backend: {object}: {source}")]
    Backend {
        /// The object (file, bucket, listing) the request was about.
        object: String,
        /// The failure.
        #[source]
        source: io::Error,
    },

    /// An object's bytes are not what its name or the index says.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// The damaged object (`pack <id>`, `index <id>`, `blob <id> in pack <id>`, …).
        object: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file's content is not as long as its node's `size` (format-spec §8: it MUST be):
    /// a snapshot written by a faulty or hostile client. Its content is not used.
    #[error(
        "{file}: content of {content} bytes for a size of {size}: the snapshot is damaged \
         (written by a faulty or hostile client); its content is not used"
    )]
    SizeMismatch {
        /// The file, as the snapshot names it.
        file: String,
        /// What its node says.
        size: u64,
        /// What its content (inline bytes, or blobs by the index's lengths) gives.
        content: u64,
    },

    /// A snapshot's tree expands past the files or directories its own summary records,
    /// or past what sharing honestly gives, or its summary records more than any snapshot
    /// holds: shared subtrees multiplying without end (a tree bomb). Nothing more of it is
    /// read.
    #[error(
        "{} is damaged: {why}; refused (a tree bomb: shared subtrees multiplying)",
        match snapshot {
            Some(id) => format!("snapshot {} (tree {tree})", id.short()),
            None => format!("the snapshot of tree {tree}"),
        }
    )]
    TreeExpands {
        /// The snapshot, where the walk knew it.
        snapshot: Option<crate::id::SnapshotId>,
        /// The snapshot's root tree.
        tree: TreeId,
        /// Which bound it passed.
        why: Expansion,
    },

    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },

    /// The local cache's database failed (it is rebuilt from the repository when deleted).
    #[error("local cache {}: {source}", path.display())]
    Cache {
        /// The cache's database file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: rusqlite::Error,
    },

    /// A repository URL that names no backend location.
    #[error("{url}: {reason} (use s3://bucket/prefix or s3:https://host:port/bucket/prefix)")]
    BadLocation {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An S3 location without credentials in the environment.
    #[error(
        "{url}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
         AWS_PROFILE) ({reason})"
    )]
    NoCredentials {
        /// The location as given.
        url: String,
        /// Why the credentials could not be loaded.
        reason: String,
    },

    /// The password could not be read (from a file, a command or the terminal).
    #[error("cannot read the password: {0}")]
    Password(String),

    /// A key file whose key derivation this build does not know.
    #[error("key derivation {0:?} is not supported")]
    UnsupportedKdf(String),

    /// An id prefix that names more than one snapshot or key.
    #[error("{what} prefix {prefix} is ambiguous ({matches} {what}s match)")]
    Ambiguous {
        /// "snapshot" or "key".
        what: &'static str,
        /// The prefix given.
        prefix: String,
        /// How many ids start with it.
        matches: usize,
    },

    /// Removing the only key would leave the repository unreadable.
    #[error("refusing to remove the last key: the repository would be unreadable")]
    LastKey,

    /// The key that opened the repository cannot be removed through it.
    #[error(
        "refusing to remove the key in use; open the repository with another password (or \
         use `key passwd`)"
    )]
    KeyInUse,

    /// A backup with no source.
    #[error("nothing to back up: give at least one path")]
    NothingToBackUp,

    /// A source path below another source path, through something that is not a directory
    /// (the outer backup stores that as it is, without what is below it).
    #[error(
        "{} lies below {}, which is not a directory but a {what}: the backup of {} stores it \
         as such, without what is below it; back up the link's target instead",
        path.display(), through.display(), outer.display()
    )]
    SourceBelowNonDirectory {
        /// The inner source path.
        path: PathBuf,
        /// The non-directory it lies below.
        through: PathBuf,
        /// What that is ("symlink", "file", …).
        what: &'static str,
        /// The outer source path.
        outer: PathBuf,
    },

    /// A name for data from standard input that is not a relative path of normal parts.
    #[error(
        "invalid --stdin-filename {0:?}: give a name such as db.sql or pg/db.sql (no empty \
         name, no '.' or '..' components, no NUL, no part over 255 bytes)"
    )]
    InvalidStdinName(String),

    /// A path inside a snapshot given with `..` or relative.
    #[error("{}: use an absolute path without ..", .0.display())]
    NotAbsolute(PathBuf),

    /// The index names a pack that is gone; a repair that rewrites snapshots must not
    /// deduplicate against it.
    #[error("the index names pack {0}, which is gone: the index must be repaired first")]
    RepairIndexFirst(crate::id::PackId),

    /// A value given by the caller (a time, a duration, a subset, chunker parameters) that
    /// does not parse or is out of range.
    #[error("{reason}")]
    BadInput {
        /// What the value was for.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// No snapshot (of those the filters accept) is as old as the instant asked for.
    #[error("{}", match oldest {
        Some((id, time)) => format!(
            "no snapshot is as old as {at}: the oldest matching one is {id} from {time}"),
        None => "no snapshot matches the filters".to_string(),
    })]
    NoSnapshotAt {
        /// The instant asked for.
        at: String,
        /// The oldest candidate: short id and time.
        oldest: Option<(String, String)>,
    },

    /// `latest` or a time picks one snapshot per lineage, and the filters left several
    /// lineages (backup sets, or hosts and paths) where one snapshot is needed.
    #[error(
        "the snapshots selected belong to {} lineages: {}; pick one with --set NAME (or \
         --host and --path), or name a snapshot by id; restore --all-sets restores each",
        lineages.len(), lineages.join("; ")
    )]
    SeveralLineages {
        /// Each lineage, with the snapshot it would give.
        lineages: Vec<String>,
    },

    /// A path in a snapshot that is not a regular file where one is needed (`cat`).
    #[error("{} is {what} in the snapshot, not a regular file", path.display())]
    NotAFile {
        /// The path in the snapshot.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },

    /// A forget whose rules keep none of a lineage's snapshots (a `--keep-tag` that no
    /// snapshot carries, mistyped) would remove them all.
    #[error(
        "the keep rules keep none of the {count} snapshot(s) of {lineage}: refusing to forget \
         them all (a --keep-tag that no snapshot carries?); to remove them, name them with \
         --snapshot"
    )]
    KeepsNothing {
        /// The lineage, as shown.
        lineage: String,
        /// Its snapshots.
        count: usize,
    },

    /// A forget without any keep rule would remove every snapshot.
    #[error("no --keep-* rule given{}: refusing to forget every snapshot",
        set.as_ref().map(|n| format!(" and set {n} has no keep policy")).unwrap_or_default())]
    EmptyPolicy {
        /// The set whose policy is empty, if one was named.
        set: Option<String>,
    },

    /// A backup (or copy) stopped on request before its snapshot. What it uploaded is
    /// indexed, so the next run does not upload it again.
    #[error(
        "interrupted: no snapshot written; {packs} packs ({}) of this run are saved and \
         indexed, and the next run continues from there without uploading them again",
        bytesize::ByteSize(*bytes)
    )]
    Interrupted {
        /// Packs this run uploaded and indexed.
        packs: u64,
        /// Their bytes.
        bytes: u64,
    },

    /// Another restore into the same target runs (it holds its journal there): the message
    /// names it and says to wait for it.
    #[error("{0}")]
    RestoreRunning(String),

    /// A restore stopped by a signal (or its caller): what was complete stays.
    #[error(
        "interrupted: the restore stopped; {removed} partly written file(s) were removed, the \
         files restored completely stay; restore again to finish"
    )]
    RestoreInterrupted {
        /// Files created but not complete, removed.
        removed: usize,
    },

    /// A wait for thaws ended before they were done: stopped on request, or longer than S3
    /// documents for any archive class at the tier (an endpoint saying "thawing" for ever).
    #[error("{packs} archived pack(s) not thawed: {why}")]
    ThawNotDone {
        /// Packs still thawing.
        packs: usize,
        /// Why the wait ended.
        why: String,
    },

    /// An object in an archive storage class (GLACIER, DEEP_ARCHIVE) cannot be read until a
    /// restore (thaw) of it has finished.
    #[error(
        "{object} is in archive storage: it can be read once a thaw of the packs a snapshot \
         needs is done"
    )]
    Archived {
        /// The object.
        object: String,
    },

    /// A caller's callback (a backup's `before_snapshot`) failed with the caller's own
    /// error, passed back unchanged.
    #[error("{0}")]
    Caller(Box<dyn std::error::Error + Send + Sync>),

    /// A bug or a broken invariant inside strata, never the user's doing.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Worth another try: the backend may well answer the next attempt (a connection cut
    /// mid-response). Everything else is permanent, a time-out too: the backend's client
    /// has waited its limit and tried again already (S3), and trying that again multiplied
    /// a hung endpoint's cost.
    pub fn is_transient(&self) -> bool {
        use io::ErrorKind::*;
        matches!(
            self,
            Error::Backend { source, .. } if matches!(
                source.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | Interrupted
            )
        )
    }

    /// This error, with what fixes it.
    pub fn with_remedy(self, remedy: crate::Remedy) -> Self {
        Error::WithRemedy {
            error: Box::new(self),
            remedy,
        }
    }

    /// What fixes this error, where something does.
    pub fn remedy(&self) -> Option<crate::Remedy> {
        use crate::Remedy;
        match self {
            Error::NoRepository(_) => Some(Remedy::Init),
            Error::Locked { stale: true, .. } => Some(Remedy::Unlock),
            Error::RepairIndexFirst(_) => Some(Remedy::RepairIndex),
            Error::Archived { .. } => Some(Remedy::WarmUp),
            Error::TreeExpands {
                why: Expansion::Sharing { .. },
                ..
            } => Some(Remedy::RaiseTreeSharing),
            Error::TreeExpands { .. } => Some(Remedy::ForgetExpandingSnapshot),
            Error::KeyBudgetSpent { .. } => Some(Remedy::HintKey),
            Error::SnapshotsVanished { .. } => Some(Remedy::InvestigateRollback),
            Error::WithRemedy { remedy, .. } => Some(*remedy),
            _ => None,
        }
    }

    /// [`Error::NotFound`] of `what`.
    pub fn not_found(what: Missing) -> Self {
        Error::NotFound { what }
    }

    /// A repository file the backend does not have.
    pub fn no_file(kind: FileKind, name: &str) -> Self {
        Self::not_found(Missing::File {
            kind,
            name: name.to_string(),
        })
    }

    /// [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// [`Error::Corrupt`]: `object` is damaged for `reason`.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
