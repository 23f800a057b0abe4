//! `warm-up`: thaw the archived data packs a snapshot (or part of it) needs, before a
//! restore reads them.
//!
//! Metadata never leaves hot storage, so which packs a snapshot needs is known from its
//! trees and the index alone. One listing gives each pack's storage class; only the archived
//! ones are asked about (one HEAD each), and only those neither thawed nor thawing are
//! requested: running warm-up again, or after an interruption, requests nothing twice.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::backend::lifecycle::ARCHIVE_CLASSES;
use crate::backend::{FileKind, ThawState, ThawTier};
use crate::error::Result;
use crate::id::PackId;
use crate::patterns::Patterns;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::repo::Repository;
use crate::walk::{TreeWalk, Visit};

/// How a warm-up asks.
#[derive(Clone, Copy, Debug)]
pub struct WarmUpOptions {
    /// The restore tier.
    pub tier: ThawTier,
    /// How long the thawed copies stay readable.
    pub days: u32,
}

/// What a warm-up found and asked for.
#[derive(Debug, Default, Serialize)]
pub struct WarmUpReport {
    /// Data packs the selection needs, and their bytes.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Of them, in classes read at once.
    pub hot: usize,
    /// Thaws requested now, and the bytes they cover.
    pub requested: usize,
    /// The bytes of the packs requested now.
    pub requested_bytes: u64,
    /// Archived packs whose thaw was already under way.
    pub thawing: usize,
    /// Archived packs already readable.
    pub thawed: usize,
    /// The wait S3 documents for the tier, per archive class among the packs requested.
    pub expected_wait: Vec<(String, String)>,
}

impl WarmUpReport {
    /// Whether every pack can be read now.
    pub fn ready(&self) -> bool {
        self.requested == 0 && self.thawing == 0
    }
}

/// The data packs the files of `snapshot` (those `includes` accepts, or all) are in.
pub fn packs_needed(
    repo: &Repository,
    snapshot: &Snapshot,
    includes: Option<&Patterns>,
) -> Result<BTreeSet<PackId>> {
    let mut packs = BTreeSet::new();
    for visit in TreeWalk::new(repo, &snapshot.tree) {
        let Visit::Node { path, node, .. } = visit else {
            continue;
        };
        if node.kind != NodeKind::File {
            continue;
        }
        let path = std::path::Path::new("/").join(path);
        // A path is picked when it or a directory above it matches, as restore picks it.
        if includes.is_some_and(|p| !path.ancestors().any(|a| p.is_match(a))) {
            continue;
        }
        for id in &node.content {
            packs.insert(repo.lookup_blob(id)?.pack);
        }
    }
    Ok(packs)
}

/// Requests thaws of the archived ones among `packs`.
pub fn warm_up(
    repo: &Repository,
    packs: &BTreeSet<PackId>,
    opts: WarmUpOptions,
) -> Result<WarmUpReport> {
    let listed: HashMap<String, (u64, Option<String>)> = repo
        .list_files(FileKind::Data)?
        .into_iter()
        .map(|f| (f.name, (f.size, f.storage_class)))
        .collect();
    let mut report = WarmUpReport::default();
    let mut waits: BTreeSet<(String, String)> = BTreeSet::new();
    for pack in packs {
        let name = pack.to_hex();
        let (size, class) = listed.get(&name).cloned().unwrap_or_default();
        report.packs += 1;
        report.bytes += size;
        let class = class.unwrap_or_default();
        if !ARCHIVE_CLASSES.contains(&class.as_str()) {
            report.hot += 1;
            continue;
        }
        match repo.thaw_state(FileKind::Data, &name)? {
            ThawState::Hot => report.hot += 1,
            ThawState::Thawed => report.thawed += 1,
            ThawState::Thawing => report.thawing += 1,
            ThawState::Archived => {
                let wait =
                    opts.tier
                        .expected_wait(&class)
                        .ok_or_else(|| crate::Error::BadInput {
                            what: "thaw tier",
                            reason: format!(
                                "{class} has no {:?} tier: use standard or bulk",
                                opts.tier
                            ),
                        })?;
                repo.thaw(FileKind::Data, &name, opts.days, opts.tier)?;
                report.requested += 1;
                report.requested_bytes += size;
                waits.insert((class.clone(), wait.to_string()));
            }
        }
    }
    report.expected_wait = waits.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_archive_has_no_expedited_tier_and_the_waits_are_s3s() {
        assert_eq!(ThawTier::Expedited.expected_wait("DEEP_ARCHIVE"), None);
        assert_eq!(
            ThawTier::Standard.expected_wait("DEEP_ARCHIVE"),
            Some("within 12 hours")
        );
        assert_eq!(
            ThawTier::Expedited.expected_wait("GLACIER"),
            Some("1-5 minutes")
        );
        assert_eq!(ThawTier::Bulk.expected_wait("GLACIER"), Some("5-12 hours"));
        let done = WarmUpReport {
            packs: 2,
            thawed: 2,
            ..Default::default()
        };
        assert!(done.ready());
        let pending = WarmUpReport {
            thawing: 1,
            ..Default::default()
        };
        assert!(!pending.ready());
    }
}
