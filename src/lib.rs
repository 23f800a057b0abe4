//! Strata: a content-addressed, deduplicating, encrypted snapshot engine.
//!
//! The layers, bottom up: [`backend`] stores opaque files; [`crypto`] and [`repo`] turn them
//! into typed, encrypted, content-addressed objects; [`cache`] mirrors the index locally;
//! [`backup`], [`restore`] and [`check`] are the operations the CLI calls.
//!
//! A repository in a directory, one backup, a restore and a check:
//!
//! ```
//! use strata::backup::{self, BackupOptions, Source};
//! use strata::check::{self, ReadData};
//! use strata::chunker::ChunkerParams;
//! use strata::crypto::KdfCost;
//! use strata::progress::NoProgress;
//! use strata::repo::config::Config;
//! use strata::restore::{self, RestoreOptions};
//! use strata::{backend, Repository};
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

pub mod backend;
pub mod backup;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod id;
pub mod lock;
pub mod patterns;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod timespec;
pub mod util;
pub mod walk;

pub use error::{Error, Result};
pub use repo::Repository;
