//! The report: per set, its objectives and whether they hold, its backups over time, its
//! drills, and the repository's verification and storage, gathered for people to look at
//! (the program draws it as a page) or machines to read (JSON).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::audit::{Coverage, Drill};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::metrics::Samples;
use crate::objectives::Objectives;
use crate::repo::snapshot::{Lineage, Snapshot};
use crate::repo::Repository;
use crate::stats::{ClassUsage, MonthlyCost, SetGrowth};
use crate::status::SetStatus;

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When it was made (RFC 3339).
    pub generated: String,
    /// The repository's id.
    pub repository_id: String,
    /// Per set (or lineage).
    pub sets: Vec<SetReport>,
    /// How much of the repository verification covers.
    pub verification: Coverage,
    /// Objects and bytes by kind and storage class.
    pub storage: Vec<ClassUsage>,
    /// The estimated monthly cost (from the config's prices).
    pub monthly_cost: MonthlyCost,
}

/// One set in the report.
#[derive(Debug, Serialize)]
pub struct SetReport {
    /// The set's name (or the lineage's label).
    pub set: String,
    /// Its objectives' bounds, in seconds.
    pub rpo_secs: Option<i64>,
    /// The RTO.
    pub rto_secs: Option<i64>,
    /// The drill interval.
    pub drill_interval_secs: Option<i64>,
    /// Each objective judged, and the projected restore time.
    pub objectives: crate::objectives::Assessment,
    /// Whether every objective holds.
    pub objectives_hold: bool,
    /// Newer snapshot older than its RPO, or none where one is required.
    pub stale: bool,
    /// The newest snapshot's age in seconds.
    pub last_backup_age_secs: Option<f64>,
    /// Its snapshots, oldest first.
    pub backups: Vec<BackupPoint>,
    /// Its drills, oldest first.
    pub drills: Vec<Drill>,
    /// Its runs by result, from the metrics file (when there is one).
    pub runs: Option<Runs>,
    /// How it grows.
    pub growth: SetGrowth,
}

/// One snapshot of a set, as the charts draw it.
#[derive(Debug, Serialize)]
pub struct BackupPoint {
    /// The snapshot.
    pub id: SnapshotId,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Bytes of its files.
    pub total_bytes: u64,
    /// New data it added, before compression.
    pub bytes_added: u64,
    /// What it added to the repository.
    pub bytes_stored: u64,
    /// How long its backup took.
    pub duration_secs: f64,
    /// Its files.
    pub files: u64,
}

/// A set's backup runs by result, and the last one's exit code (from the metrics file).
#[derive(Debug, Default, Serialize)]
pub struct Runs {
    /// Runs that exited 0.
    pub succeeded: u64,
    /// Runs that wrote a snapshot but missed files (exit 3).
    pub partial: u64,
    /// Runs that failed.
    pub failed: u64,
    /// The last run's exit code.
    pub last_exit_code: Option<i32>,
}

/// What goes into a report besides the repository: the sets judged now, their objectives,
/// the drills of every lineage, the metrics file's samples and the prices.
pub struct Inputs<'a> {
    /// Each set's status with its objectives judged (`status::assess`).
    pub rows: Vec<SetStatus>,
    /// The sets' objectives, by name.
    pub objectives: &'a HashMap<String, Objectives>,
    /// Every snapshot.
    pub snapshots: &'a [(SnapshotId, Snapshot)],
    /// Every lineage's drills, oldest first.
    pub drills: &'a HashMap<Lineage, Vec<Drill>>,
    /// The metrics file, when there is one.
    pub metrics: Option<&'a Samples>,
    /// Prices per storage class and per thousand requests.
    pub prices: &'a BTreeMap<String, f64>,
    /// Verification coverage.
    pub coverage: Coverage,
}

/// Gathers the report: one listing per kind of object for the storage figures.
pub fn build(repo: &Repository, mut inputs: Inputs) -> Result<Report> {
    let now = crate::timespec::now();
    let storage = crate::stats::usage_by_class(repo)?;
    let requests = crate::stats::requests_30d(inputs.snapshots, now);
    let monthly_cost = crate::stats::monthly_cost(&storage, &requests, inputs.prices);
    let sets = std::mem::take(&mut inputs.rows)
        .into_iter()
        .map(|row| set_report(row, &inputs))
        .collect();
    Ok(Report {
        generated: now.to_rfc3339(),
        repository_id: repo.config().id.to_hex(),
        sets,
        verification: inputs.coverage.clone(),
        storage,
        monthly_cost,
    })
}

fn set_report(row: SetStatus, inputs: &Inputs) -> SetReport {
    let lineage = row
        .snapshot
        .as_ref()
        .map(|(_, s)| s.lineage())
        .unwrap_or_else(|| Lineage::Set(row.set.clone()));
    let mut line: Vec<&(SnapshotId, Snapshot)> = inputs
        .snapshots
        .iter()
        .filter(|(_, s)| s.lineage() == lineage)
        .collect();
    line.sort_by_key(|(_, s)| s.datetime());
    let obj = inputs.objectives.get(&row.set);
    let secs = |d: Option<chrono::Duration>| d.map(|d| d.num_seconds());
    SetReport {
        rpo_secs: secs(obj.and_then(|o| o.rpo)),
        rto_secs: secs(obj.and_then(|o| o.rto)),
        drill_interval_secs: secs(obj.and_then(|o| o.drill_interval)),
        objectives_hold: row.objectives.holds(),
        stale: row.stale,
        last_backup_age_secs: row.age_secs,
        backups: line.iter().map(|(id, s)| point(id, s)).collect(),
        drills: inputs.drills.get(&lineage).cloned().unwrap_or_default(),
        runs: inputs.metrics.map(|m| runs(m, &row.set)),
        growth: crate::stats::set_growth(&row.set, &line),
        objectives: row.objectives,
        set: row.set,
    }
}

fn point(id: &SnapshotId, s: &Snapshot) -> BackupPoint {
    let m = &s.summary;
    BackupPoint {
        id: *id,
        time: s.time.clone(),
        total_bytes: m.total_bytes,
        bytes_added: m.bytes_added,
        bytes_stored: m.bytes_stored,
        duration_secs: m.duration_secs,
        files: m.files_new + m.files_changed + m.files_unchanged,
    }
}

fn runs(m: &Samples, set: &str) -> Runs {
    let count = |result: &str| {
        m.get(
            "strata_backup_runs_total",
            &[("set", set), ("result", result)],
        )
        .unwrap_or(0.0) as u64
    };
    Runs {
        succeeded: count("success"),
        partial: count("partial"),
        failed: count("failure"),
        last_exit_code: m
            .get("strata_backup_last_exit_code", &[("set", set)])
            .map(|c| c as i32),
    }
}
