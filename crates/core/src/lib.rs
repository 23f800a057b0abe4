//! Strata: a content-addressed, deduplicating, encrypted snapshot engine.
//!
//! The layers, bottom up: a [`backend`] stores opaque files; a [`Repository`] turns them
//! into typed, encrypted, content-addressed objects (packs of blobs, an index, snapshots)
//! and keeps a rebuildable local cache of the index and trees; the operations —
//! [`backup`], [`restore`], [`check`], [`retention`] (forget), [`prune`], [`repair`] — each
//! take an open repository, an options value and a [`Progress`], and return a report that
//! serializes to the CLI's JSON. Failures are an [`Error`] to match on.
//!
//! The API is what this page lists. The repository format it reads and writes is specified
//! in `format-spec/` of the source tree.
//!
//! A repository in a directory, one backup, a restore and a check:
//!
//! ```
//! use strata::backup::{self, BackupOptions, Source};
//! use strata::check::{self, ReadData};
//! use strata::restore::{self, RestoreOptions};
//! use strata::{backend, ChunkerParams, Config, KdfCost, NoProgress, Repository};
//!
//! # fn main() -> strata::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let src = dir.path().join("src");
//! std::fs::create_dir_all(src.join("docs")).unwrap();
//! std::fs::write(src.join("docs/readme.txt"), "hello, strata\n").unwrap();
//!
//! // A repository is a backend (a directory here, or an S3 bucket) and a password. Tests
//! // may use a cheap key derivation; real repositories use KdfCost::DEFAULT.
//! let store = backend::open(dir.path().join("repo").to_str().unwrap())?;
//! let config = Config::new(ChunkerParams::default(), 3);
//! Repository::init(store.clone(), b"password", config, &KdfCost::INSECURE_FOR_TESTS)?;
//! let repo = Repository::open(store, b"password", &dir.path().join("cache"))?;
//!
//! let options = BackupOptions {
//!     source: Source::Paths(vec![src.clone()]),
//!     ..Default::default()
//! };
//! let report = backup::run(&repo, options, &NoProgress)?;
//! assert_eq!(report.snapshot.summary.files_new, 1);
//!
//! let target = dir.path().join("restored");
//! let options = RestoreOptions {
//!     target: target.clone(),
//!     verify: true,
//!     ..Default::default()
//! };
//! let restored = restore::run(&repo, &report.snapshot, &options, &NoProgress)?;
//! assert!(restored.errors.is_empty());
//! let copy = target.join(src.strip_prefix("/").unwrap()).join("docs/readme.txt");
//! assert_eq!(std::fs::read_to_string(copy).unwrap(), "hello, strata\n");
//!
//! let audit = check::run(&repo, ReadData::All, &NoProgress)?;
//! assert!(audit.problems.is_empty());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod audit;
pub mod backend;
pub mod backup;
pub mod check;
pub mod copy;
pub mod drill;
pub mod dump;
pub mod history;
pub mod hooks;
pub mod lock;
pub mod metrics;
pub mod mount;
pub mod objectives;
pub mod patterns;
pub mod prune;
pub mod repair;
pub mod report;
pub mod restore;
pub mod retention;
pub mod scratch;
pub mod sets;
pub mod stats;
pub mod status;
pub mod thaw;
pub mod timespec;
pub mod walk;

mod chunker;
mod crypto;
mod error;
mod files;
mod fuzz;
mod id;
mod progress;
mod remedy;
mod repo;
mod util;

pub use chunker::ChunkerParams;
pub use crypto::{KdfCost, KdfParams};
pub use error::{Error, Expansion, Missing, Result};
pub use id::{AuditId, BlobId, IndexId, KeyId, MarkId, PackId, SnapshotId, TreeId};
pub use patterns::Patterns;
pub use progress::{NoProgress, Progress};
pub use remedy::Remedy;
pub use repo::cache::{private_dir, private_dirs, safe_ancestors};
pub use repo::config::{Config, ObjectLock, INLINE_LIMIT};
pub use repo::keys::KeyFile;
pub use repo::marks::{IndexView, MarkRecord, PARTIAL_VIEW_MAX_AGE, RECORD_RETENTION};
pub use repo::metadata::MetadataRepository;
pub use repo::pack::BlobKind;
pub use repo::packer::{Packer, DATA_PACK_SIZE, TREE_PACK_SIZE};
pub use repo::root::{check_namespace, Root, MAX_ROOT_FILE, ROOT_VERSION};
pub use repo::saver::{BlobSaver, SaverShared, SaverStats};
pub use repo::snapshot::check_name;
pub use repo::snapshot::{
    select_at, select_per_lineage, Lineage, Repaired, Snapshot, SnapshotFilter, Summary,
};
pub use repo::tree::{Node, NodeKind, Timespec, Tree, Xattr};
pub use repo::{Files, Index, Keys, Repository, Snapshots, Trees, WarningSink};
pub use util::{hostname, is_root};
pub use util::{printable, printable_name};

/// Engine internals for this crate's own benchmarks, examples and tests (which build
/// repositories by hand, damage them, or time one layer alone). Not part of the API: no
/// documentation, no stability.
#[doc(hidden)]
pub mod internals {
    pub use crate::chunker::Chunker;
    pub use crate::crypto::MasterKey;
    pub use crate::fuzz::{target as fuzz_target, TARGETS as FUZZ_TARGETS};
    pub use crate::repo::cache::{BlobLocation, Cache};
    pub use crate::repo::index::{IndexFile, IndexedPack};
    pub use crate::repo::pack::{open_blob, BlobEntry, Compression, PackBuilder, SealedBlob};
    pub use crate::repo::saver::{BlobSaver, SaverShared};
    pub use crate::util::hostname;
}
