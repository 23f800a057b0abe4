//! Restore drills: the runbook's monthly restore test, run and recorded.
//!
//! A drill restores a snapshot (or a random sample of its files) into a fresh directory,
//! reads every restored byte back against the snapshot, removes the directory and records
//! in the repository what it restored, how fast, and how long the whole snapshot would take
//! at that speed: the recovery-time estimate the runbook asks operators to keep current.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use crate::audit::{self, ClassBytes, Drill};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::patterns::Patterns;
use crate::progress::Progress;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::repo::Repository;
use crate::restore::{self, RestoreOptions};
use crate::scratch::Scratch;
use crate::walk::{Limits, TreeWalk, Visit};

/// How a drill runs.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// The share of the snapshot's files to restore, in (0, 1]; 1 restores all.
    pub sample: f64,
    /// Where the drill's temporary directory is made (and removed again).
    pub scratch: PathBuf,
    /// How data packs in archive storage are thawed (as a real restore would); without
    /// it their files count as errors.
    pub cold: Option<crate::thaw::ThawWait>,
    /// The operator's check of the restored copy, run in it once every byte verified.
    pub verify: Option<VerifyCommand>,
    /// What of owners, attributes and devices the restore recreates, as a real one would.
    pub recreate: restore::Recreate,
    /// Set by a signal: the drill is being stopped (its copy removed by whoever caught
    /// it), and records nothing.
    pub stop: Option<&'static std::sync::atomic::AtomicBool>,
}

/// A set's `drill-verify`: a shell command run in the restored copy.
#[derive(Clone, Debug)]
pub struct VerifyCommand {
    /// The command (`sh -c`).
    pub command: String,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

/// How long a verify command may run unless the set says otherwise.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a drill found, with the record it wrote.
#[derive(Debug, serde::Serialize)]
pub struct DrillReport {
    /// The record (also stored in the repository).
    pub drill: Drill,
    /// Bytes per second restored and verified.
    pub throughput: f64,
    /// What went wrong, file by file.
    pub errors: Vec<String>,
    /// What was left out as asked (devices), which does not fail the drill.
    pub warnings: Vec<String>,
}

/// The paths a drill restores (`None`: all) and the snapshot's size. A sample needs the
/// file list; a full drill only the total, which snapshots written since it was recorded
/// carry in their summary.
fn scope(
    repo: &Repository,
    snapshot: &Snapshot,
    share: f64,
) -> Result<(Option<crate::Patterns>, u64)> {
    if share >= 1.0 && snapshot.summary.total_bytes != 0 {
        return Ok((None, snapshot.summary.total_bytes));
    }
    // Without a list of every file: a crafted snapshot of millions made a drill hold them
    // all (hostile pass 5: 7.5 GB for 2M entries).
    if share >= 1.0 {
        return Ok((None, bytes_of(repo, snapshot)));
    }
    let (files, bytes) = files_of(repo, snapshot);
    let includes = (share < 1.0).then(|| sample(&files, share)).transpose()?;
    Ok((includes.flatten(), bytes))
}

/// Restores `snapshot` (or a sample of its files) below `opts.scratch`, verifies every
/// byte, removes it again and records the drill in the repository.
pub fn run(
    repo: &Repository,
    id: &SnapshotId,
    snapshot: &Snapshot,
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    if !(opts.sample > 0.0 && opts.sample <= 1.0) {
        return Err(Error::BadInput {
            what: "drill sample",
            reason: format!("{} is not a share in (0, 1]", opts.sample),
        });
    }
    let (includes, snapshot_bytes) = scope(repo, snapshot, opts.sample)?;
    crate::scratch::remove_abandoned(&opts.scratch, PREFIX, None, KILLED_COPY, progress);
    // Locked and marked while it lives: a killed drill's copy is told from a live one's,
    // and from a directory merely named like one.
    let dir = Scratch::new(&opts.scratch, PREFIX)?;
    let started = Instant::now();
    // A signal stops the restore too: its handler removes the copy, which a restore still
    // making directories (batch after batch) would fill again.
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = std::sync::atomic::AtomicBool::new(false);
    let restored = std::thread::scope(|s| {
        if let Some(stop) = opts.stop {
            s.spawn(|| {
                use std::sync::atomic::Ordering::SeqCst;
                while !finished.load(SeqCst) {
                    if stop.load(SeqCst) {
                        return cancel.store(true, SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let restored = restore::run(
            repo,
            snapshot,
            &RestoreOptions {
                target: dir.path().to_path_buf(),
                includes,
                verify: true,
                cold: opts.cold,
                recreate: opts.recreate,
                private: true,
                cancel: Some(cancel.clone()),
                ..Default::default()
            },
            progress,
        );
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        restored
    })?;
    let duration_secs = started.elapsed().as_secs_f64();
    // The operator's check runs on a copy that verified byte by byte; on one that did not,
    // the drill has failed already.
    // A directory moved or replaced meanwhile is not the copy the restore verified.
    let moved = dir.in_place().err();
    let verify = match &opts.verify {
        Some(v)
            if restored.errors.is_empty()
                && restored.damaged_files.is_empty()
                && moved.is_none() =>
        {
            Some(verify::run(v, dir.path(), id, snapshot))
        }
        _ => None,
    };
    // Removed before the record is written: a drill leaves nothing behind. A copy that
    // cannot be removed (an immutable file, a verify's child still writing) fails the drill.
    // Moved or replaced: its content is removed through the descriptor all the same, and
    // the drill fails naming where the directory went.
    let kept = dir.remove().err();
    let mut errors: Vec<String> = restored.errors.iter().map(|e| e.to_string()).collect();
    errors.extend(moved.filter(|_| kept.is_none()));
    errors.extend(kept);
    errors.extend(
        restored
            .damaged_files
            .iter()
            .map(|p| format!("{}: does not verify", p.display())),
    );
    let mut drill = Drill {
        version: 1,
        time: crate::timespec::now().to_rfc3339(),
        host: crate::util::hostname(),
        set: snapshot.set.clone(),
        snapshot: *id,
        sample: opts.sample,
        files: restored.files,
        bytes: restored.bytes,
        duration_secs,
        snapshot_bytes,
        projected_secs: 0.0,
        errors: errors.len() as u64,
        verify,
        index_bytes: index_bytes(repo)?,
        data_classes: data_classes(repo, snapshot)?,
    };
    // A failed drill measured nothing but its failure: no speed, no restore time (a
    // restore into a full disk is fast and worthless).
    let throughput = drill.throughput();
    drill.projected_secs = if errors.is_empty() && throughput > 0.0 {
        snapshot_bytes as f64 / throughput
    } else if errors.is_empty() {
        duration_secs
    } else {
        0.0
    };
    // A stopped drill measured nothing: no record, no failure to alert on.
    if opts
        .stop
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    {
        return Err(Error::RestoreInterrupted { removed: 0 });
    }
    audit::record_drill(repo, drill.clone())?;
    let warnings = (restored.skipped_devices.iter())
        .map(|p| format!("{}: device not restored (no_devices)", p.display()))
        .collect();
    Ok(DrillReport {
        drill,
        throughput,
        errors,
        warnings,
    })
}

/// Bytes of the index files: what a bare machine reads before it can restore.
fn index_bytes(repo: &Repository) -> Result<u64> {
    let listed = repo.files().list(crate::backend::FileKind::Index)?;
    Ok(listed.iter().map(|f| f.size).sum())
}

/// The storage classes of the data packs `snapshot` needs: what a bare-machine restore
/// would have to thaw (one listing; the trees and index are cached by the restore).
fn data_classes(repo: &Repository, snapshot: &Snapshot) -> Result<Vec<ClassBytes>> {
    let packs = crate::thaw::packs_needed(repo, snapshot, None)?;
    Ok(crate::thaw::classes_of(repo, &packs)?
        .into_iter()
        .map(|(class, (packs, bytes))| ClassBytes {
            class,
            packs,
            bytes,
        })
        .collect())
}

/// How drills name their temporary directories: `.strata-drill-<pid>-<random>`, so that
/// whoever stops one (a signal handler) can find and remove what it restored.
pub const PREFIX: &str = ".strata-drill-";

/// How the sweep names a killed drill's directory.
const KILLED_COPY: &str = "the decrypted copy of a drill that was killed";

/// This process's drills' directories' prefix.
pub fn scratch_prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

/// Removes what this process's drills left in `scratch` (their temporary directories),
/// for a drill stopped by a signal: decrypted data must not outlive it. Only directories
/// holding a drill's marker are removed. Returns the directories removed.
pub fn remove_scratch(scratch: &Path) -> Vec<PathBuf> {
    verify::stop();
    let prefix = scratch_prefix();
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return removed;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        // The restore may still be creating files in it: again until it is gone (once
        // the directory itself is unlinked nothing can be created below it).
        if (0..10).any(|_| crate::scratch::remove_own(scratch, &e.file_name()).is_ok()) {
            removed.push(e.path());
        }
    }
    removed
}

/// The snapshot's regular files (absolute paths, UTF-8 ones: a sample is a set of
/// patterns) and the bytes of all its files.
/// The bytes of the snapshot's regular files, walked.
fn bytes_of(repo: &Repository, snapshot: &Snapshot) -> u64 {
    let walk = TreeWalk::new(repo, &snapshot.tree).limited(Limits::of(snapshot));
    walk.filter_map(|visit| match visit {
        Visit::Node { node, .. } if node.kind == NodeKind::File => Some(node.size),
        _ => None,
    })
    .fold(0u64, u64::saturating_add)
}

fn files_of(repo: &Repository, snapshot: &Snapshot) -> (Vec<PathBuf>, u64) {
    let mut files = Vec::new();
    let mut bytes = 0;
    for visit in TreeWalk::new(repo, &snapshot.tree).limited(Limits::of(snapshot)) {
        if let Visit::Node { path, node, .. } = visit {
            if node.kind == NodeKind::File {
                bytes += node.size;
                files.push(Path::new("/").join(path));
            }
        }
    }
    (files, bytes)
}

/// Include patterns for a random `share` of `files` (at least one, when there are any).
fn sample(files: &[PathBuf], share: f64) -> Result<Option<Patterns>> {
    let n = ((files.len() as f64 * share).ceil() as usize).clamp(1, files.len().max(1));
    let mut rng = rand::thread_rng();
    let patterns: Vec<String> = files
        .choose_multiple(&mut rng, n)
        .filter_map(|p| p.to_str().map(globset::escape))
        .collect();
    if patterns.is_empty() {
        // Nothing to sample: a pattern nothing matches, so the restore is empty.
        return Patterns::new(&["/.strata-drill-nothing".to_string()]);
    }
    Patterns::new(&patterns)
}

mod verify;
