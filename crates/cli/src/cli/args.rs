//! Arguments and words several commands share.

use clap::Args;
use strata::{Snapshot, SnapshotFilter};

use super::output;

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Only snapshots of this backup set (repeatable).
    #[arg(long = "set", id = "filter_set", value_name = "SET")]
    pub sets: Vec<String>,
}

impl FilterArgs {
    /// The filter, once every `--set` is known to the config file or to a snapshot: a
    /// misspelled set must not read as a set without snapshots (exit 2, as `status`).
    pub fn filter(
        &self,
        global: &super::Global,
        repo: &strata::Repository,
    ) -> anyhow::Result<SnapshotFilter> {
        if self.sets.iter().any(|s| !global.file.sets.contains_key(s)) {
            super::watch::check_known(global, &repo.snapshots().list()?, &self.sets)?;
        }
        Ok(SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
            sets: self.sets.clone(),
        })
    }
}

/// Which snapshot a command looked in, for its errors: id, time and set.
pub fn in_snapshot(id: &strata::SnapshotId, s: &Snapshot) -> String {
    format!(
        "in snapshot {} ({}{})",
        id.short(),
        output::when(&s.time),
        s.set
            .as_ref()
            .map(|set| format!(", set {set}"))
            .unwrap_or_default()
    )
}
