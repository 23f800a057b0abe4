//! A repository opened for its metadata only (`status`): snapshots, audit records, the
//! bucket's lifecycle rules. Its index is not brought up to date on opening (no listing of
//! index files), so it offers no blob or pack lookup: the compiler rejects one, where a
//! flag on [`Repository`] would have let it answer from a stale index.

use super::Repository;
use crate::error::Result;

/// A repository open for its metadata only; see [`Repository::open_metadata`].
///
/// A blob lookup does not compile on it (the index behind it may be stale):
///
/// ```compile_fail
/// fn size(repo: &strata::MetadataRepository, id: &strata::BlobId) -> u32 {
///     repo.index().lookup(id).unwrap().entry.raw_length
/// }
/// ```
///
/// whereas on a [`Repository`] it does:
///
/// ```
/// fn size(repo: &strata::Repository, id: &strata::BlobId) -> u32 {
///     repo.index().lookup(id).unwrap().entry.raw_length
/// }
/// ```
pub struct MetadataRepository {
    repo: Repository,
}

impl MetadataRepository {
    /// The metadata view of a repository opened with [`IndexView::None`](crate::IndexView).
    pub fn new(repo: Repository) -> Self {
        MetadataRepository { repo }
    }

    /// The snapshots (their manifests need no index).
    pub fn snapshots(&self) -> super::Snapshots<'_> {
        self.repo.snapshots()
    }

    /// The repository underneath, for the crate's own reads of metadata (the audit
    /// records: `audit.rs`).
    pub(crate) fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The bucket's lifecycle rules that would harm the repository, asked of the store at
    /// most once per `fresh_for` (as [`Repository::lifecycle_dangers`]).
    pub fn lifecycle_dangers(
        &self,
        fresh_for: Option<std::time::Duration>,
    ) -> Result<Option<Vec<crate::backend::lifecycle::Danger>>> {
        self.repo.lifecycle_dangers(fresh_for)
    }

    /// Sends the warnings about damage skipped to `sink` (as [`Repository::set_warning_sink`]).
    pub fn set_warning_sink(&self, sink: super::WarningSink) {
        self.repo.set_warning_sink(sink)
    }

    /// The repository's config.
    pub fn config(&self) -> &crate::Config {
        self.repo.config()
    }
}
