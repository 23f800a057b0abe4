//! Object Lock: what deleting leaves behind, and when it can go.
//!
//! In a bucket with Object Lock (always versioned), deleting a file (forget's snapshot
//! manifests, prune's packs and superseded index files) leaves a delete marker: the file
//! leaves the repository at once, but its version stays stored, and cannot be deleted,
//! until its retention date. Prune purges such hidden versions once their date has passed;
//! until then it reports them as held. Versions of files that are still there (the current
//! version of a live file) are never touched: the repository's history is theirs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::{FileKind, ObjectVersion, Purge};
use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;

/// What purging found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockReport {
    /// Hidden versions deleted for good now, and their bytes.
    pub purged: usize,
    /// Their bytes.
    pub purged_bytes: u64,
    /// Deleted files whose versions Object Lock still holds, and their bytes.
    pub held: usize,
    /// Their bytes.
    pub held_bytes: u64,
    /// The earliest and the latest retention date among them (RFC 3339).
    pub held_from: Option<String>,
    /// The latest.
    pub held_until: Option<String>,
}

impl LockReport {
    fn hold(&mut self, bytes: u64, until: i64) {
        self.held += 1;
        self.held_bytes += bytes;
        let at = chrono::DateTime::from_timestamp(until, 0)
            .unwrap_or_default()
            .to_rfc3339();
        if self.held_from.as_ref().is_none_or(|f| at < *f) {
            self.held_from = Some(at.clone());
        }
        if self.held_until.as_ref().is_none_or(|u| at > *u) {
            self.held_until = Some(at);
        }
    }
}

/// Purges the hidden versions of deleted files whose retention has passed (`dry_run`:
/// only counts what would go).
pub(super) fn purge_hidden(
    repo: &Repository,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<LockReport> {
    let mut report = LockReport::default();
    let Some(lock) = repo.object_lock() else {
        return Ok(report);
    };
    progress.message("purging deleted files whose retention has passed");
    let now = chrono::Utc::now().timestamp();
    let caps = repo.backend().capabilities();
    let Some(backend) = caps.versions else {
        // Object Lock without versions: nothing to purge but what deletes removed.
        return Ok(report);
    };
    for kind in FileKind::ALL {
        let mut by_name: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
        for v in backend.versions(kind)? {
            by_name.entry(v.name.clone()).or_default().push(v);
        }
        for (name, versions) in by_name {
            // Only files whose newest version is a delete marker: deleted ones.
            if !versions.iter().any(|v| v.latest && v.delete_marker) {
                continue;
            }
            let mut left = 0;
            for v in versions.iter().filter(|v| !v.delete_marker) {
                // Retained at least a period and its slack from its write (longer when a
                // backup reused it): no request for what cannot have expired yet. Lock
                // files are not retained.
                let earliest = v.modified + (lock.period() + lock.slack()).as_secs() as i64;
                if kind != FileKind::Lock && earliest > now {
                    report.hold(v.size, earliest);
                    left += 1;
                    continue;
                }
                if dry_run {
                    report.purged += 1;
                    report.purged_bytes += v.size;
                    continue;
                }
                match backend.purge_version(kind, &name, &v.version_id)? {
                    Purge::Deleted => {
                        report.purged += 1;
                        report.purged_bytes += v.size;
                    }
                    Purge::Held(until) => {
                        report.hold(v.size, until.unwrap_or(earliest));
                        left += 1;
                    }
                }
            }
            // The delete markers go last, once nothing is left for them to hide: removing
            // one earlier would bring the file back.
            if left == 0 && !dry_run {
                for m in versions.iter().filter(|v| v.delete_marker) {
                    backend.purge_version(kind, &name, &m.version_id)?;
                }
            }
        }
    }
    Ok(report)
}
