//! Exit codes, as restic's users expect them, and which library error gives which.

use strata::Error;

pub const OK: i32 = 0;
pub const FAILURE: i32 = 1;
/// The snapshot was written, but some source files could not be read.
pub const PARTIAL: i32 = 3;
pub const NO_REPOSITORY: i32 = 10;
pub const LOCKED: i32 = 11;
pub const WRONG_PASSWORD: i32 = 12;
/// `warm-up`: thaws were requested or are under way; run it again to follow them.
pub const PENDING: i32 = 4;
/// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED: i32 = 130;
/// `wal fetch` failed for any reason but "never archived" (an unreadable record, a wrong
/// password, a vanished repository, a bad config, a crash). PostgreSQL reads every exit
/// code up to 125 as "not in the archive" and would end recovery there, promoting a copy
/// that lacks the commits after it; above 125 it stops recovery instead, to be run again.
pub const FETCH_FAILED: i32 = 126;

/// The code a panic ends the process with: 101 as Rust's, or [`FETCH_FAILED`] while
/// serving `wal fetch` (see there).
static PANIC_CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(101);

pub fn panic_code() -> i32 {
    PANIC_CODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// From here on, every failure of this process is [`FETCH_FAILED`].
pub fn serving_fetch() {
    PANIC_CODE.store(FETCH_FAILED, std::sync::atomic::Ordering::Relaxed);
}

/// What [`Error::BadInput`] calls the inputs that are command-line arguments (or the
/// config file's equivalents): a malformed one is a usage error, as clap's own.
const ARGUMENTS: &[&str] = &["pattern", "host name", "storage class"];

pub fn code_of(e: &Error) -> i32 {
    match e {
        Error::NoRepository(_) => NO_REPOSITORY,
        Error::WrongPassword { .. } => WRONG_PASSWORD,
        Error::Locked { .. } => LOCKED,
        Error::WithRemedy { error, .. } => code_of(error),
        Error::UnknownScheme { .. } | Error::EmptyLocation(_) | Error::BadLocation { .. } => USAGE,
        Error::InvalidStdinName(_) => USAGE,
        Error::BadInput { what, .. } if ARGUMENTS.contains(what) => USAGE,
        Error::Interrupted { .. } | Error::RestoreInterrupted { .. } => INTERRUPTED,
        _ => FAILURE,
    }
}

/// A malformed argument found after clap's parsing (a time, a duration, a pattern, a set
/// name): exit 2, as clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A [`Usage`] error saying `what`.
pub fn usage(what: impl std::fmt::Display) -> anyhow::Error {
    Usage(what.to_string()).into()
}

/// Exit code of a malformed argument.
pub const USAGE: i32 = 2;

/// The exit code of an error from anywhere in a command: its library error's, else 1.
pub fn code_of_anyhow(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<Usage>()) {
        return USAGE;
    }
    // An error of the PostgreSQL crate that wraps the repository's has the repository's code.
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<Error>().or_else(|| {
                c.downcast_ref::<strata_pg::Error>()
                    .and_then(strata_pg::Error::repository)
            })
        })
        .map(code_of)
        .unwrap_or(FAILURE)
}

/// The code for a run of several parts: a failure outranks a part that missed files (3),
/// which outranks success.
pub fn worse(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        OK => (0, c),
        PARTIAL => (1, c),
        _ => (2, c),
    };
    rank(a).max(rank(b)).1
}
