//! The WAL archive's own check, registered with the repository's (`strata::check::AppCheck`):
//! the repository verified that every record opens and names blobs that are there; this
//! checks what the records mean (format-spec §14).

use std::collections::HashMap;

use strata::backend::FileKind;
use strata::check::{problem, AppCheck, AppFindings, Object, Problem};
use strata::{Remedy, Repository, Root, Snapshot, SnapshotId};

use crate::wal::{self, WalRecord};
use crate::{base_backup, chain_gap, divergence, Segment};

/// The check of PostgreSQL WAL archives.
#[derive(Debug, Default)]
pub struct WalCheck;

impl AppCheck for WalCheck {
    fn namespace(&self) -> &str {
        wal::NAMESPACE
    }

    fn counted(&self) -> &str {
        "wal_records"
    }

    fn check(
        &self,
        repo: &Repository,
        roots: Vec<(Object, Root)>,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> strata::Result<AppFindings> {
        let mut problems = Vec::new();
        let records = match repo.has_roots() {
            true => from_roots(roots, &mut problems),
            false => legacy_records(repo)?,
        };
        let mut audit = Audit {
            repo,
            problems,
            records: records.len(),
        };
        audit.chains(&records, snapshots);
        Ok(AppFindings {
            records: audit.records,
            problems: audit.problems,
        })
    }
}

/// The WAL records the roots hold; a root that holds none is a problem.
fn from_roots(roots: Vec<(Object, Root)>, problems: &mut Vec<Problem>) -> Vec<(Object, WalRecord)> {
    let mut out = Vec::new();
    for (object, root) in roots {
        match WalRecord::from_root(root) {
            Ok(rec) => out.push((object, rec)),
            Err(e) => problems.push(problem(object, e.to_string(), Remedy::NewBaseBackup)),
        }
    }
    out
}

/// The WAL records of a repository of format 1-3 (`wal/`): the repository's check reported
/// the ones that do not open.
fn legacy_records(repo: &Repository) -> strata::Result<Vec<(Object, WalRecord)>> {
    let mut out = Vec::new();
    for f in repo.files().list(FileKind::Wal)? {
        let mut name = [0u8; 32];
        if hex::decode_to_slice(&f.name, &mut name).is_err() {
            continue;
        }
        if let Ok(Some(rec)) = repo.files().load::<WalRecord>(FileKind::Wal, &f.name) {
            out.push((Object::Wal(name), rec));
        }
    }
    Ok(out)
}

struct Audit<'a> {
    repo: &'a Repository,
    problems: Vec<Problem>,
    records: usize,
}

impl Audit<'_> {
    /// Every WAL record is of a plausible size, every base backup's WAL is archived without
    /// a gap, and no timeline diverged.
    fn chains(&mut self, records: &[(Object, WalRecord)], snapshots: &[(SnapshotId, Snapshot)]) {
        let mut names: HashMap<&str, Vec<String>> = HashMap::new();
        let mut times: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        let mut histories = Vec::new();
        for (object, rec) in records {
            if !wal::plausible_size(&rec.name, rec.size) {
                self.problems.push(problem(
                    *object,
                    format!(
                        "segment {} holds {} bytes, not a WAL segment's size: a fetch would \
                         hand PostgreSQL a truncated file",
                        rec.name, rec.size
                    ),
                    Remedy::NewBaseBackup,
                ));
            }
            if rec.name.ends_with(".history") {
                histories.push((*object, rec));
            }
            times
                .entry(&rec.cluster)
                .or_default()
                .push((rec.name.clone(), rec.time.clone()));
            names
                .entry(&rec.cluster)
                .or_default()
                .push(rec.name.clone());
        }
        let mut sizes = HashMap::new();
        for (id, snap) in snapshots {
            let Some(base) = &base_backup(snap) else {
                continue;
            };
            sizes.insert(base.cluster.clone(), base.segment_size);
            let archived = names.get(base.cluster.as_str()).map(Vec::as_slice);
            if let Some(reason) = chain_gap(base, archived.unwrap_or(&[])) {
                self.problems.push(problem(
                    Object::Snapshot(*id),
                    reason,
                    Remedy::FixArchivingThenBaseBackup,
                ));
            }
        }
        self.diverged_timelines(&histories, &times, &sizes);
    }

    /// A parent timeline archived past the point where a child branched off it, after
    /// the child began: a restored copy (or an old primary) archived under the cluster's
    /// name beside the primary.
    fn diverged_timelines(
        &mut self,
        histories: &[(Object, &WalRecord)],
        times: &HashMap<&str, Vec<(String, String)>>,
        sizes: &HashMap<String, u64>,
    ) {
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        for (object, rec) in histories {
            let (Some(&size), Some(began)) = (sizes.get(&rec.cluster), parse(&rec.time)) else {
                continue;
            };
            let Some(child) = rec
                .name
                .get(..8)
                .and_then(|t| u32::from_str_radix(t, 16).ok())
            else {
                continue;
            };
            // A history that cannot be read whole (its blobs adding up to another size, or
            // too large to be one) leaves the timelines unknown: said, never guessed.
            let text = match wal::content(self.repo, rec) {
                Ok(text) => text,
                Err(e) => {
                    let reason = format!("{}: timeline history: {e}", rec.cluster);
                    self.problems
                        .push(problem(*object, reason, Remedy::NewBaseBackup));
                    continue;
                }
            };
            let segments: Vec<_> = times
                .get(rec.cluster.as_str())
                .into_iter()
                .flatten()
                .filter_map(|(n, t)| Some((Segment::parse(n, size)?, parse(t)?)))
                .collect();
            let text = String::from_utf8_lossy(&text);
            if let Some(reason) = divergence(child, &text, began, &segments, size) {
                self.problems.push(problem(
                    *object,
                    format!("{}: {reason}", rec.cluster),
                    Remedy::StopSecondArchiver,
                ));
            }
        }
    }
}
