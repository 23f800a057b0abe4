//! The PostgreSQL application's errors: its own, and the repository's it passes on.

use std::path::PathBuf;

use strata::Remedy;

/// What went wrong in a base backup, a restore or the WAL archive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository (or the file system under it) failed.
    #[error(transparent)]
    Repository(strata::Error),

    /// A PostgreSQL cluster refused or cannot serve what was asked (a base backup, a
    /// point-in-time restore): psql failed, archiving is off, no base backup fits.
    #[error("postgres cluster {cluster}: {reason}")]
    Postgres {
        /// The cluster's name in the config (`[postgres.NAME]`).
        cluster: String,
        /// What is wrong.
        reason: String,
    },

    /// The WAL archive lacks a file that a recovery needs: PostgreSQL could not replay
    /// past it.
    #[error(
        "postgres cluster {cluster}: the WAL archive has a gap: {missing} is missing, \
         {needed}"
    )]
    WalGap {
        /// The cluster's name in the config.
        cluster: String,
        /// The WAL file that is not archived.
        missing: String,
        /// Why it is needed, and what was archived after it.
        needed: String,
    },

    /// A base backup's record names a data directory that a restore cannot take: not an
    /// absolute path in normal form, or not a real directory inside the restored backup
    /// (a symlink or a file on the way). Only a key holder writes such a record, so the
    /// restore stops before anything reaches the target.
    #[error(
        "postgres cluster {cluster}: base backup {snapshot} names the data directory \
         {data_directory:?}, which {reason}; nothing was written to the target"
    )]
    UnsafeDataDirectory {
        /// The cluster's name in the config.
        cluster: String,
        /// The base backup's snapshot (short id).
        snapshot: String,
        /// The data directory its record names, as written there.
        data_directory: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An error with the remedy that fixes it.
    #[error("{error}")]
    WithRemedy {
        /// The error.
        error: Box<Error>,
        /// What fixes it.
        remedy: Remedy,
    },
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<strata::Error> for Error {
    /// The repository's error, or this crate's own passed back through a repository
    /// operation's callback.
    fn from(e: strata::Error) -> Self {
        match e {
            strata::Error::Caller(inner) => match inner.downcast::<Error>() {
                Ok(mine) => *mine,
                Err(other) => Error::Repository(strata::Error::Caller(other)),
            },
            e => Error::Repository(e),
        }
    }
}

impl Error {
    /// As a repository error, for a repository operation's callback to return: the
    /// repository's own as it was, this crate's passed through untouched.
    pub fn into_repository(self) -> strata::Error {
        match self {
            Error::Repository(e) => e,
            e => strata::Error::Caller(Box::new(e)),
        }
    }

    /// A file system operation on `path` failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Repository(strata::Error::io(path, source))
    }

    /// The same error, with the remedy that fixes it.
    pub fn with_remedy(self, remedy: Remedy) -> Self {
        Error::WithRemedy {
            error: Box::new(self),
            remedy,
        }
    }

    /// What fixes it, when something does.
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            Error::Repository(e) => e.remedy(),
            Error::WithRemedy { remedy, .. } => Some(*remedy),
            // Only a key holder writes such a record.
            Error::UnsafeDataDirectory { .. } => Some(Remedy::RemoveCraftedSnapshot),
            Error::Postgres { .. } | Error::WalGap { .. } => None,
        }
    }

    /// The repository's error inside, when it is one (its exit code is the repository's).
    pub fn repository(&self) -> Option<&strata::Error> {
        match self {
            Error::Repository(e) => Some(e),
            Error::WithRemedy { error, .. } => error.repository(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> Error {
        Error::Postgres {
            cluster: "main".into(),
            reason: "archiving is off".into(),
        }
    }

    /// This crate's error passes through a repository operation's callback and comes
    /// back as itself; the repository's stays the repository's.
    #[test]
    fn errors_round_trip_through_a_repository_callback() {
        let back = Error::from(pg().into_repository());
        assert!(matches!(back, Error::Postgres { ref cluster, .. } if cluster == "main"));
        let repo = Error::from(strata::Error::NoRepository("x".into()));
        assert!(matches!(
            repo.into_repository(),
            strata::Error::NoRepository(_)
        ));
        let foreign = strata::Error::Caller("not ours".into());
        assert!(matches!(
            Error::from(foreign),
            Error::Repository(strata::Error::Caller(_))
        ));
    }

    #[test]
    fn remedies_and_the_repository_error_inside() {
        assert_eq!(pg().remedy(), None);
        let wrapped = pg().with_remedy(Remedy::TakeBaseBackup);
        assert_eq!(wrapped.remedy(), Some(Remedy::TakeBaseBackup));
        assert_eq!(wrapped.to_string(), pg().to_string());
        assert!(wrapped.repository().is_none());
        let locked = Error::from(strata::Error::NoRepository("x".into()));
        assert_eq!(locked.remedy(), Some(Remedy::Init));
        let inner = locked.with_remedy(Remedy::Unlock);
        assert!(matches!(
            inner.repository(),
            Some(strata::Error::NoRepository(_))
        ));
        assert!(Error::io("/x", std::io::ErrorKind::NotFound.into())
            .repository()
            .is_some());
        let crafted = Error::UnsafeDataDirectory {
            cluster: "main".into(),
            snapshot: "0123abcd".into(),
            data_directory: "/../srv".into(),
            reason: "is not an absolute path in normal form".into(),
        };
        assert_eq!(crafted.remedy(), Some(Remedy::RemoveCraftedSnapshot));
        assert!(crafted.to_string().contains("\"/../srv\""), "{crafted}");
    }
}
