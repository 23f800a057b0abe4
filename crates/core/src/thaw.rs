//! `warm-up`: thaw the archived data packs a snapshot (or part of it) needs, before a
//! restore reads them.
//!
//! Metadata never leaves hot storage, so which packs a snapshot needs is known from its
//! trees and the index alone. One listing gives each pack's storage class; only the archived
//! ones are asked about (one HEAD each), and only those neither thawed nor thawing are
//! requested: running warm-up again, or after an interruption, requests nothing twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::lifecycle::ARCHIVE_CLASSES;
use crate::backend::{FileKind, ThawState, ThawTier};
use crate::error::{Error, Result};
use crate::id::{PackId, TreeId};
use crate::patterns::Patterns;
use crate::progress::Progress;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::walk::{Limits, TreeWalk, Visit};

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
    packs_of_tree(repo, &snapshot.tree, Limits::of(snapshot), includes)
}

/// The data packs of what `dump` of `node` reads: a file's, or those of a directory and
/// everything below it; `None` (the root) is the whole snapshot.
pub fn packs_below(
    repo: &Repository,
    snapshot: &Snapshot,
    node: Option<&Node>,
) -> Result<BTreeSet<PackId>> {
    match node {
        None => packs_of_tree(repo, &snapshot.tree, Limits::of(snapshot), None),
        Some(n) if n.kind == NodeKind::File => n
            .content
            .iter()
            .map(|id| Ok(repo.lookup_blob(id)?.pack))
            .collect(),
        Some(n) => match &n.subtree {
            Some(tree) => packs_of_tree(repo, tree, Limits::of(snapshot), None),
            None => Ok(BTreeSet::new()),
        },
    }
}

/// Damage is the reading command's to report, except a tree that expands past its
/// snapshot's counts: nothing is read of that one.
fn packs_of_tree(
    repo: &Repository,
    tree: &TreeId,
    limits: Limits,
    includes: Option<&Patterns>,
) -> Result<BTreeSet<PackId>> {
    let mut packs = BTreeSet::new();
    for visit in TreeWalk::new(repo, tree).limited(limits) {
        let (path, node) = match visit {
            Visit::Node { path, node, .. } => (path, node),
            Visit::Damaged {
                error: e @ Error::TreeExpands { .. },
                ..
            } => return Err(e),
            Visit::Damaged { .. } => continue,
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

/// How a read that meets archived packs gets them: it requests thaws of those not yet
/// thawing, then polls (HEAD, backing off) and reads each pack as soon as it is readable.
#[derive(Clone, Copy, Debug)]
pub struct ThawWait {
    /// How the thaws are requested.
    pub request: WarmUpOptions,
    /// The first pause between polls; it doubles up to `max_poll`.
    pub first_poll: Duration,
    /// The longest pause between polls.
    pub max_poll: Duration,
    /// How long the wait goes on before it gives up with an error.
    pub give_up: Duration,
}

impl ThawWait {
    /// Polls from `first_poll` on, doubling up to 15 minutes (thaws take minutes to hours;
    /// each poll is one HEAD per pack still thawing).
    pub fn new(request: WarmUpOptions, first_poll: Duration) -> Self {
        ThawWait {
            request,
            first_poll,
            max_poll: first_poll.max(Duration::from_secs(15 * 60)),
            give_up: longest_wait(request.tier) * 2,
        }
    }
}

/// The longest wait S3 documents for a thaw at `tier`, over every archive class: twice
/// that, and an endpoint still saying "thawing" is not believed (hostile pass 9: a
/// restore waited for ever).
fn longest_wait(tier: ThawTier) -> Duration {
    let classes = ARCHIVE_CLASSES.iter();
    let waits = classes.filter_map(|c| tier.longest_wait(c));
    waits.max().unwrap_or(Duration::from_secs(3600))
}

/// Sleeps `pause`, looking at `stop` each second; false if it was set.
fn pause_unless_stopped(pause: Duration, stop: Option<&AtomicBool>) -> bool {
    let until = Instant::now() + pause;
    loop {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
}

/// What waiting for thaws cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitReport {
    /// Archived packs the read met.
    pub packs: usize,
    /// Thaws requested (the others were under way already, or done).
    pub requested: usize,
    /// HEAD requests made to follow the thaws.
    pub polls: u64,
    /// Seconds spent waiting.
    pub waited_seconds: f64,
}

impl WaitReport {
    /// Adds a later wait's counts (a restore waits once per batch that meets archived packs).
    pub fn add(&mut self, later: &WaitReport) {
        self.packs += later.packs;
        self.requested += later.requested;
        self.polls += later.polls;
        self.waited_seconds += later.waited_seconds;
    }
}

/// Thaws `packs` and hands them to `ready` in batches, each as soon as it can be read.
/// A pack thawing already (an earlier, interrupted run) is not requested again. Returns
/// when every pack was handed over; on an error, the packs not handed over are in it.
pub fn thaw_then_read(
    repo: &Repository,
    packs: &[PackId],
    wait: &ThawWait,
    stop: Option<&AtomicBool>,
    progress: &dyn Progress,
    mut ready: impl FnMut(&[PackId]),
) -> std::result::Result<WaitReport, Box<(crate::Error, Vec<PackId>)>> {
    let started = Instant::now();
    let mut report = WaitReport {
        packs: packs.len(),
        ..Default::default()
    };
    // One look: HEAD, and a thaw request where none is under way (never asked for, or a
    // thawed copy that expired before it was read). True when the pack can be read.
    let look = |pack: &PackId, report: &mut WaitReport| -> Result<bool> {
        let name = pack.to_hex();
        Ok(match repo.thaw_state(FileKind::Data, &name)? {
            ThawState::Hot | ThawState::Thawed => true,
            ThawState::Thawing => false,
            ThawState::Archived => {
                repo.thaw(FileKind::Data, &name, wait.request.days, wait.request.tier)?;
                report.requested += 1;
                false
            }
        })
    };
    let mut pending = packs.to_vec();
    let mut pause = wait.first_poll;
    for round in 0.. {
        if round > 0 {
            progress.waiting(&format!(
                "waiting for {} archived pack(s) to thaw ({} requested now); next look in {}",
                pending.len(),
                report.requested,
                humantime::format_duration(Duration::from_secs(pause.as_secs().max(1)))
            ));
            let not_done = |why: String| Error::ThawNotDone {
                packs: pending.len(),
                why,
            };
            if !pause_unless_stopped(pause, stop) {
                let e = not_done("the wait was stopped".into());
                return Err(Box::new((e, pending)));
            }
            if started.elapsed() > wait.give_up {
                let e = not_done(format!(
                    "still thawing after {} (--thaw-timeout; by default twice the longest \
                     S3 documents for the tier): the endpoint may be wrong, or the thaw \
                     slow; run again to wait on",
                    humantime::format_duration(Duration::from_secs(wait.give_up.as_secs()))
                ));
                return Err(Box::new((e, pending)));
            }
            pause = (pause * 2).min(wait.max_poll);
        }
        let (mut now, mut still) = (Vec::new(), Vec::new());
        for (i, pack) in pending.iter().enumerate() {
            // The first round finds out and requests; the later ones are the polls.
            report.polls += u64::from(round > 0);
            match look(pack, &mut report) {
                Ok(true) => now.push(*pack),
                Ok(false) => still.push(*pack),
                Err(e) => {
                    ready(&now);
                    still.extend_from_slice(&pending[i..]);
                    return Err(Box::new((e, still)));
                }
            }
        }
        ready(&now);
        if still.is_empty() {
            break;
        }
        pending = still;
    }
    report.waited_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Thaws the archived ones among `packs` and waits until every one is readable: for a
/// reader that cannot take packs out of order (a tar stream). One listing finds them.
pub fn wait_until_readable(
    repo: &Repository,
    packs: &BTreeSet<PackId>,
    wait: &ThawWait,
    progress: &dyn Progress,
) -> Result<Option<WaitReport>> {
    let listed = listed_data(repo)?;
    let archived: Vec<PackId> = packs
        .iter()
        .filter(|p| {
            listed
                .get(&p.to_hex())
                .is_some_and(|(_, c)| archived_class(c))
        })
        .copied()
        .collect();
    if archived.is_empty() {
        return Ok(None);
    }
    thaw_then_read(repo, &archived, wait, None, progress, |_| {})
        .map(Some)
        .map_err(|failed| failed.0)
}

/// Requests thaws of the archived ones among `packs`.
pub fn warm_up(
    repo: &Repository,
    packs: &BTreeSet<PackId>,
    opts: WarmUpOptions,
) -> Result<WarmUpReport> {
    survey(repo, packs, opts.tier, Some(opts.days))
}

/// What thawing `packs` would cost and how long it would take at `tier`, requesting
/// nothing: what `--no-warm-up` reports instead of waiting.
pub fn cost(repo: &Repository, packs: &BTreeSet<PackId>, tier: ThawTier) -> Result<WarmUpReport> {
    survey(repo, packs, tier, None)
}

/// Every data pack's size and storage class, by name: one listing.
fn listed_data(repo: &Repository) -> Result<HashMap<String, (u64, Option<String>)>> {
    Ok(repo
        .files()
        .list(FileKind::Data)?
        .into_iter()
        .map(|f| (f.name, (f.size, f.storage_class)))
        .collect())
}

/// Packs and bytes of `packs` per storage class (`STANDARD` where the store names none):
/// one listing.
pub fn classes_of(
    repo: &Repository,
    packs: &BTreeSet<PackId>,
) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
    let listed = listed_data(repo)?;
    let mut out: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for pack in packs {
        let (size, class) = listed.get(&pack.to_hex()).cloned().unwrap_or_default();
        let e = out
            .entry(class.unwrap_or_else(|| "STANDARD".into()))
            .or_default();
        e.0 += 1;
        e.1 += size;
    }
    Ok(out)
}

fn archived_class(class: &Option<String>) -> bool {
    class
        .as_deref()
        .is_some_and(|c| ARCHIVE_CLASSES.contains(&c))
}

/// Finds the archived packs among `packs` and, with `request` (days), requests their
/// thaws at `tier`; without, `requested` counts the packs that would be requested.
fn survey(
    repo: &Repository,
    packs: &BTreeSet<PackId>,
    tier: ThawTier,
    request: Option<u32>,
) -> Result<WarmUpReport> {
    let listed = listed_data(repo)?;
    let mut report = WarmUpReport::default();
    let mut waits: BTreeSet<(String, String)> = BTreeSet::new();
    for pack in packs {
        let name = pack.to_hex();
        let (size, class) = listed.get(&name).cloned().unwrap_or_default();
        report.packs += 1;
        report.bytes += size;
        if !archived_class(&class) {
            report.hot += 1;
            continue;
        }
        let class = class.unwrap_or_default();
        match repo.thaw_state(FileKind::Data, &name)? {
            ThawState::Hot => report.hot += 1,
            ThawState::Thawed => report.thawed += 1,
            ThawState::Thawing => report.thawing += 1,
            ThawState::Archived => {
                let wait = tier.expected_wait(&class);
                if let Some(days) = request {
                    if wait.is_none() {
                        return Err(crate::Error::BadInput {
                            what: "thaw tier",
                            reason: format!("{class} has no {tier:?} tier: use standard or bulk"),
                        });
                    }
                    repo.thaw(FileKind::Data, &name, days, tier)?;
                }
                report.requested += 1;
                report.requested_bytes += size;
                let wait = wait.unwrap_or("not offered at this tier");
                waits.insert((class, wait.to_string()));
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
