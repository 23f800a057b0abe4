//! `stats`: what the repository holds, what it saves, and how each set grows.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::Result;
use crate::id::{SnapshotId, TreeId};
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::{select_per_lineage, Snapshot, SnapshotFilter};
use crate::repo::tree::NodeKind;
use crate::repo::Repository;

/// Snapshots per set the growth figures look back over.
pub const GROWTH_WINDOW: usize = 14;

/// The least time those snapshots must span for a daily rate: two snapshots a second
/// apart say nothing about a day.
pub const MIN_GROWTH_SPAN_SECS: i64 = 3600;

/// What the repository holds.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Bytes of files in the newest snapshot of each set (what restoring them all writes).
    pub restore_bytes: u64,
    /// Bytes of files over every snapshot (what restoring each one would write).
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct file chunks stored.
    pub unique_bytes: u64,
    /// Bytes those chunks take in packs, compressed and encrypted.
    pub unique_stored_bytes: u64,
    /// Bytes of every object of the repository.
    pub stored_bytes: u64,
    /// `logical_bytes / unique_bytes`: what deduplication saves.
    pub dedup_ratio: f64,
    /// `unique_bytes / unique_stored_bytes`: what compression saves.
    pub compression_ratio: f64,
    /// Objects and bytes by kind and storage class.
    pub classes: Vec<ClassUsage>,
    /// Per set (or `host:<host>`), growth over its recent snapshots.
    pub sets: Vec<SetGrowth>,
    /// The requests the last 30 days of backups made, estimated.
    pub requests_30d: RequestEstimate,
}

/// Requests backups make, estimated from their snapshots: per backup its snapshot, index
/// and tree pack writes and one data pack write per 16 MiB stored; four reads (the config,
/// and the key, index and snapshot listings). Checks, prunes and restores come on top.
#[derive(Debug, Default, Serialize)]
pub struct RequestEstimate {
    /// Backups counted.
    pub backups: usize,
    /// Writes (PUT).
    pub writes: u64,
    /// Reads and listings (GET, LIST).
    pub reads: u64,
}

/// The requests of the last 30 days of backups (as of `now`), estimated.
pub fn requests_30d(
    snapshots: &[(SnapshotId, Snapshot)],
    now: chrono::DateTime<chrono::FixedOffset>,
) -> RequestEstimate {
    requests_since(snapshots, now - chrono::Duration::days(30))
}

/// The estimated monthly cost of storage and requests.
#[derive(Debug, Default, Serialize)]
pub struct MonthlyCost {
    /// By item: a storage class, `PUT requests` or `GET requests`.
    pub items: BTreeMap<String, f64>,
    /// Storage classes used that `prices` has no price for.
    pub unpriced: Vec<String>,
}

impl MonthlyCost {
    /// The whole.
    pub fn total(&self) -> f64 {
        self.items.values().sum()
    }
}

/// The monthly cost of `classes` and `requests` at `prices`: per GB-month (10^9 bytes, as
/// providers bill) by storage class, and per thousand requests (`put-per-1000`,
/// `get-per-1000`).
pub fn monthly_cost(
    classes: &[ClassUsage],
    requests: &RequestEstimate,
    prices: &BTreeMap<String, f64>,
) -> MonthlyCost {
    let mut cost = MonthlyCost::default();
    for c in classes {
        match prices.get(&c.storage_class) {
            Some(p) => {
                *cost.items.entry(c.storage_class.clone()).or_default() += c.bytes as f64 / 1e9 * p
            }
            None if !prices.is_empty() && !cost.unpriced.contains(&c.storage_class) => {
                cost.unpriced.push(c.storage_class.clone())
            }
            None => {}
        }
    }
    for (key, n, label) in [
        ("put-per-1000", requests.writes, "PUT requests"),
        ("get-per-1000", requests.reads, "GET requests"),
    ] {
        if let Some(p) = prices.get(key) {
            *cost.items.entry(label.into()).or_default() += n as f64 / 1000.0 * p;
        }
    }
    cost
}

fn requests_since(
    snapshots: &[(SnapshotId, Snapshot)],
    since: chrono::DateTime<chrono::FixedOffset>,
) -> RequestEstimate {
    let pack = crate::repo::packer::DATA_PACK_SIZE as u64;
    let mut e = RequestEstimate::default();
    for (_, s) in snapshots {
        if s.datetime().is_none_or(|t| t < since) {
            continue;
        }
        let data = if s.summary.data_stored > 0 {
            s.summary.data_stored
        } else {
            s.summary.bytes_stored
        };
        e.backups += 1;
        e.writes += 3 + data.div_ceil(pack);
        e.reads += 4;
    }
    e
}

/// Objects of one kind in one storage class.
#[derive(Debug, Serialize)]
pub struct ClassUsage {
    /// `data`, `tree`, `index`, `snapshots`, `keys` or `audit`.
    pub kind: &'static str,
    /// The S3 storage class (`STANDARD` where the store has none).
    pub storage_class: String,
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// How one set grows.
#[derive(Debug, Serialize)]
pub struct SetGrowth {
    /// The set, or `host:<host>` for snapshots outside sets.
    pub set: String,
    /// Its snapshots.
    pub snapshots: usize,
    /// Bytes of files in its newest snapshot.
    pub latest_bytes: u64,
    /// Bytes its snapshots added per day, over the last [`GROWTH_WINDOW`] snapshots;
    /// `None` (too little history) when they span less than [`MIN_GROWTH_SPAN_SECS`].
    pub added_per_day: Option<f64>,
    /// What its newest snapshot added.
    pub last_added: u64,
    /// The least and most the snapshots before it (in the window) added.
    pub recent_range: Option<(u64, u64)>,
    /// The newest snapshot added far more than the recent range: more than its maximum
    /// plus twice its width, and over 1 MiB more than the maximum.
    pub anomaly: bool,
}

/// The repository's statistics; `sets` narrows the growth section (empty: every set).
pub fn run(repo: &Repository, sets: &[String]) -> Result<Stats> {
    let snapshots = repo.snapshots().list()?;
    let mut sizes: HashMap<TreeId, u64> = HashMap::new();
    let mut logical = 0;
    for (_, s) in &snapshots {
        logical += tree_bytes(repo, &s.tree, &mut sizes)?;
    }
    let newest = select_per_lineage(snapshots.clone(), None, &SnapshotFilter::default());
    let mut restore_bytes = 0;
    for (_, _, s) in &newest {
        restore_bytes += tree_bytes(repo, &s.tree, &mut sizes)?;
    }
    let (unique, unique_stored) = repo.blob_index().byte_totals(BlobKind::Data)?;
    let classes = usage_by_class(repo)?;
    let stored_bytes = classes.iter().map(|c| c.bytes).sum();
    let mut growth = Vec::new();
    for (_, _, latest) in &newest {
        let label = latest.lineage().label();
        if !sets.is_empty() && !sets.contains(&label) {
            continue;
        }
        let lineage = latest.lineage();
        let mut line: Vec<&(SnapshotId, Snapshot)> = snapshots
            .iter()
            .filter(|(_, s)| s.lineage() == lineage)
            .collect();
        line.sort_by_key(|(_, s)| s.datetime());
        let mut g = set_growth(&label, &line);
        g.latest_bytes = tree_bytes(repo, &latest.tree, &mut sizes)?;
        growth.push(g);
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let requests_30d = requests_30d(&snapshots, crate::timespec::now());
    Ok(Stats {
        restore_bytes,
        logical_bytes: logical,
        unique_bytes: unique,
        unique_stored_bytes: unique_stored,
        stored_bytes,
        dedup_ratio: ratio(logical, unique),
        compression_ratio: ratio(unique, unique_stored),
        classes,
        sets: growth,
        requests_30d,
    })
}

/// Objects and bytes by kind and storage class: one listing per kind.
pub fn usage_by_class(repo: &Repository) -> Result<Vec<ClassUsage>> {
    let mut classes: BTreeMap<(&'static str, String), (u64, u64)> = BTreeMap::new();
    for kind in [
        FileKind::Data,
        FileKind::Tree,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
        FileKind::Audit,
        FileKind::Root,
        FileKind::Wal,
    ] {
        for f in repo.files().list(kind)? {
            let class = f.storage_class.unwrap_or_else(|| "STANDARD".into());
            let e = classes.entry((kind.dir(), class)).or_default();
            e.0 += 1;
            e.1 += f.size;
        }
    }
    Ok(classes
        .into_iter()
        .map(|((kind, storage_class), (objects, bytes))| ClassUsage {
            kind,
            storage_class,
            objects,
            bytes,
        })
        .collect())
}

/// Growth figures of one lineage's snapshots, oldest first (`latest_bytes` is left 0:
/// it needs the tree).
pub fn set_growth(label: &str, line: &[&(SnapshotId, Snapshot)]) -> SetGrowth {
    let window = &line[line.len().saturating_sub(GROWTH_WINDOW)..];
    let added: Vec<u64> = window.iter().map(|(_, s)| s.summary.bytes_added).collect();
    let last_added = added.last().copied().unwrap_or(0);
    let before = &added[..added.len().saturating_sub(1)];
    let recent_range = (before.len() >= 3).then(|| {
        (
            *before.iter().min().expect("three"),
            *before.iter().max().expect("three"),
        )
    });
    let anomaly = recent_range
        .is_some_and(|(lo, hi)| last_added > hi + 2 * (hi - lo) && last_added - hi > 1 << 20);
    let span = match (window.first(), window.last()) {
        (Some((_, a)), Some((_, b))) => match (a.datetime(), b.datetime()) {
            (Some(a), Some(b)) => (b - a).num_seconds(),
            _ => 0,
        },
        _ => 0,
    };
    // The first snapshot's additions predate the window's span.
    let spread: u64 = added.iter().skip(1).sum();
    SetGrowth {
        set: label.to_string(),
        snapshots: line.len(),
        latest_bytes: 0,
        added_per_day: (span >= MIN_GROWTH_SPAN_SECS)
            .then(|| spread as f64 * 86_400.0 / span as f64),
        last_added,
        recent_range,
        anomaly,
    }
}

/// Bytes of the files below a tree, each subtree counted once per tree id.
fn tree_bytes(repo: &Repository, id: &TreeId, memo: &mut HashMap<TreeId, u64>) -> Result<u64> {
    if let Some(n) = memo.get(id) {
        return Ok(*n);
    }
    let mut n = 0;
    for node in repo.trees().load(id)?.entries {
        match (node.kind, node.subtree) {
            (NodeKind::File, _) => n += node.size,
            (NodeKind::Dir, Some(sub)) => n += tree_bytes(repo, &sub, memo)?,
            _ => {}
        }
    }
    memo.insert(*id, n);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(hour: u32, added: u64) -> (SnapshotId, Snapshot) {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 1,
            "time": format!("2026-03-01T{hour:02}:00:00Z"),
            "host": "h", "user": "u", "paths": ["/x"],
            "tree": "0000000000000000000000000000000000000000000000000000000000000000",
            "program": "test",
            "summary": {"files_new": 0, "files_changed": 0, "files_unchanged": 0, "dirs": 0,
                        "bytes_read": 0, "bytes_added": 0, "bytes_stored": 0, "blobs_added": 0,
                        "errors": 0, "duration_secs": 0.0}
        }))
        .unwrap();
        s.summary.bytes_added = added;
        (SnapshotId([hour as u8; 32]), s)
    }

    #[test]
    fn a_jump_far_above_the_recent_range_is_an_anomaly() {
        let mib = 1 << 20;
        let steady: Vec<_> = (0..6).map(|h| snap(h, 10 * mib + h as u64 * mib)).collect();
        let refs: Vec<&(SnapshotId, Snapshot)> = steady.iter().collect();
        let g = set_growth("s", &refs);
        assert!(!g.anomaly);
        assert_eq!(g.recent_range, Some((10 * mib, 14 * mib)));
        // 15 MiB per hour over 5 hours after the first: 24 hours' worth a day.
        let expect = (11 + 12 + 13 + 14 + 15) as f64 * mib as f64 * 24.0 / 5.0;
        assert!((g.added_per_day.unwrap() - expect).abs() < 1.0);
        let mut jump = steady.clone();
        jump.push(snap(6, 40 * mib));
        let refs: Vec<&(SnapshotId, Snapshot)> = jump.iter().collect();
        assert!(set_growth("s", &refs).anomaly);
        // A small absolute jump on a quiet set is no alarm.
        let quiet: Vec<_> = (0..6)
            .map(|h| snap(h, 100))
            .chain([snap(6, 5000)])
            .collect();
        let refs: Vec<&(SnapshotId, Snapshot)> = quiet.iter().collect();
        assert!(!set_growth("s", &refs).anomaly);
    }

    /// Issue 25 item 21: no daily rate from snapshots less than an hour apart.
    #[test]
    fn a_rate_needs_an_hour_of_history() {
        let mut two = [snap(0, 5), snap(0, 7 << 20)];
        two[1].1.time = "2026-03-01T00:00:01Z".into();
        let refs: Vec<&(SnapshotId, Snapshot)> = two.iter().collect();
        assert_eq!(set_growth("s", &refs).added_per_day, None);
        two[1].1.time = "2026-03-01T00:59:59Z".into();
        let refs: Vec<&(SnapshotId, Snapshot)> = two.iter().collect();
        assert_eq!(set_growth("s", &refs).added_per_day, None);
        two[1].1.time = "2026-03-01T01:00:00Z".into();
        let refs: Vec<&(SnapshotId, Snapshot)> = two.iter().collect();
        let rate = set_growth("s", &refs).added_per_day.unwrap();
        assert!((rate - (7 << 20) as f64 * 24.0).abs() < 1.0, "{rate}");
        let one = [snap(3, 9)];
        let refs: Vec<&(SnapshotId, Snapshot)> = one.iter().collect();
        assert_eq!(set_growth("s", &refs).added_per_day, None);
    }
}
