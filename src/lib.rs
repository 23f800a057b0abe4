//! Strata: a content-addressed, deduplicating, encrypted snapshot engine.
//!
//! The layers, bottom up: [`backend`] stores opaque files; [`crypto`] and [`repo`] turn them
//! into typed, encrypted, content-addressed objects; [`cache`] mirrors the index locally;
//! [`backup`], [`restore`] and [`check`] are the operations the CLI calls.

pub mod backend;
pub mod backup;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod id;
pub mod lock;
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
