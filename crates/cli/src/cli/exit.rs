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

pub fn code_of(e: &Error) -> i32 {
    match e {
        Error::NoRepository(_) => NO_REPOSITORY,
        Error::WrongPassword { .. } => WRONG_PASSWORD,
        Error::Locked { .. } => LOCKED,
        Error::WithRemedy { error, .. } => code_of(error),
        Error::UnknownScheme { .. } | Error::EmptyLocation(_) | Error::BadLocation { .. } => USAGE,
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
