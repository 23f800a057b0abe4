//! Library errors and the exit codes they map to.

use std::io;
use std::path::PathBuf;

/// Exit codes, as restic's users expect them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const PARTIAL: i32 = 3;
    pub const NO_REPOSITORY: i32 = 10;
    pub const LOCKED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no repository at {0} (create one with `strata init`)")]
    NoRepository(String),

    #[error("a repository already exists at {0}")]
    RepositoryExists(String),

    /// No intact key opens with the password; `damaged` names key files that could not be
    /// tried (one of them may have been this password's).
    #[error("wrong password: no key in the repository opens with it{}",
        if damaged.is_empty() { String::new() }
        else { format!(" (damaged key files that could not be tried: {})", damaged.join("; ")) })]
    WrongPassword { damaged: Vec<String> },

    #[error(
        "{location} is not empty: it holds {found} but no config; refusing to create a \
             repository over it (if it is a repository whose config was lost, put the config \
             back from a copy; otherwise choose an empty location)"
    )]
    NotEmpty { location: String, found: String },

    #[error("repository is locked: {0}")]
    Locked(String),

    #[error("unsupported repository format version {0} (this strata reads version 1)")]
    UnsupportedVersion(u32),

    #[error("{object} not found in the repository")]
    NotFound { object: String },

    #[error("backend: {object}: {source}")]
    Backend {
        object: String,
        #[source]
        source: io::Error,
    },

    #[error("{object} is damaged: {reason}")]
    Corrupt { object: String, reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("local cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoRepository(_) => exit::NO_REPOSITORY,
            Error::WrongPassword { .. } => exit::WRONG_PASSWORD,
            Error::Locked(_) => exit::LOCKED,
            _ => exit::FAILURE,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
