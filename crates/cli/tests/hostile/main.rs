//! The hostile-repository suite (issue 31): what a key holder, a storage-only attacker, a
//! hostile S3 endpoint and an unprivileged local user can try, one test per hole closed.
//! Each command fails with a clear error naming the object, within bounded time and memory
//! (`craft::run_bounded`), and writes nothing outside its target.
//!
//! - `craft`: a key holder's tools (trees and snapshots written through the library) and
//!   the bounded runner;
//! - `restore`: crafted trees against restore, dump, ls, find, diff, drill and mount;
//! - `local`: the local user and PostgreSQL restore (hooks, sockets, lock files, targets);
//! - `repo`: crafted indexes, key files, responses and vanished snapshots;
//! - `storage`: old snapshots deleted, key files planted to spend the opening's budget, and
//!   key files that are no regular files (second hostile pass).

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod craft;
mod local;
mod planted;
mod repo;
mod restore;
mod storage;
mod wal;
