//! Backup sets: named collections of paths, each with its exclusions, retention policy,
//! storage class, freshness bound and hooks. What an operator's configuration declares
//! (the `strata` CLI reads them from `[sets.NAME]` in its TOML file), as library types: a
//! set's policy, freshness and the environment of its hooks are decided here.

use std::path::PathBuf;

use serde::Deserialize;

use crate::backup::BackupReport;
use crate::error::{Error, Result};
use crate::objectives::Objectives;
use crate::retention::Policy;

/// A backup set.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupSet {
    /// What it backs up.
    pub paths: Vec<PathBuf>,
    /// Exclude patterns (gitignore-like).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files of exclude patterns.
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    /// Tags of its snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What `forget` keeps.
    #[serde(default)]
    pub keep: Keep,
    /// The storage class of its data packs (else the repository's).
    pub data_storage_class: Option<String>,
    /// The host name its snapshots carry (else this machine's).
    pub host: Option<String>,
    /// Stay on the file system of each path.
    #[serde(default)]
    pub one_file_system: bool,
    /// The recovery point objective: the set is stale when its newest snapshot is older
    /// than this (default: twice its smallest keep interval). `max-age` is its old name.
    #[serde(alias = "max-age")]
    pub rpo: Option<String>,
    /// The recovery time objective: the longest a bare-machine restore of its newest
    /// snapshot may take.
    pub rto: Option<String>,
    /// The longest since its last passing drill (default 31 days when it has an `rto` or
    /// a `drill-verify`; else drills are not required).
    pub drill_interval: Option<String>,
    /// Run (`sh -c`) in the restored copy by each drill of the set; a failure fails the
    /// drill.
    pub drill_verify: Option<String>,
    /// How long `drill-verify` may run (default 1h).
    pub drill_verify_timeout: Option<String>,
    /// The thaw tier a restore of its archived data would use (for the RTO projection;
    /// default standard).
    pub thaw_tier: Option<crate::backend::ThawTier>,
    /// Run (`sh -c`) after a backup of the set that exits 0, with [`hook_env`] in the
    /// environment.
    pub on_success: Option<String>,
    /// Run after a backup of the set that does not exit 0 (3 included).
    pub on_failure: Option<String>,
}

/// What `forget` keeps of a set: `keep-*` rules.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    /// The newest this many.
    #[serde(default)]
    pub last: u32,
    /// The newest of each of this many hours.
    #[serde(default)]
    pub hourly: u32,
    /// The newest of each of this many days.
    #[serde(default)]
    pub daily: u32,
    /// The newest of each of this many weeks.
    #[serde(default)]
    pub weekly: u32,
    /// The newest of each of this many months.
    #[serde(default)]
    pub monthly: u32,
    /// The newest of each of this many years.
    #[serde(default)]
    pub yearly: u32,
    /// Everything younger than this (`7d`), counted back from the newest.
    pub within: Option<String>,
    /// Snapshots with any of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Keep {
    /// The rules as a retention policy.
    pub fn policy(&self) -> Result<Policy> {
        let within = self
            .within
            .as_deref()
            .map(|d| {
                crate::timespec::parse_duration(d).map_err(|e| Error::BadInput {
                    what: "keep.within",
                    reason: format!("keep.within {d}: {e}"),
                })
            })
            .transpose()?;
        Ok(Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within,
            tags: self.tags.clone(),
        })
    }
}

impl BackupSet {
    /// How old the set's newest snapshot may be: `rpo` (or `max-age`), else twice the
    /// smallest keep interval (hourly: 2h, daily: 2d, weekly: 14d, monthly: 62d, yearly:
    /// 732d), else none.
    pub fn max_age(&self) -> Result<Option<chrono::Duration>> {
        if let Some(d) = &self.rpo {
            return duration("rpo", d).map(Some);
        }
        let k = &self.keep;
        let hours = [
            (k.hourly, 1),
            (k.daily, 24),
            (k.weekly, 24 * 7),
            (k.monthly, 24 * 31),
            (k.yearly, 24 * 366),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, h)| h);
        Ok(hours.map(|h| chrono::Duration::hours(2 * h)))
    }

    /// The set's objectives: its RPO (`given`, a caller's override, else its own bound),
    /// RTO and drill interval; `classes` are the storage classes its data packs are
    /// written in or moved to besides its own `data-storage-class`. A set declared must
    /// have a snapshot.
    pub fn objectives(
        &self,
        given: Option<chrono::Duration>,
        classes: &[String],
    ) -> Result<Objectives> {
        let rto = self
            .rto
            .as_deref()
            .map(|d| duration("rto", d))
            .transpose()?;
        let drill_interval = match &self.drill_interval {
            Some(d) => Some(duration("drill-interval", d)?),
            None if rto.is_some() || self.drill_verify.is_some() => {
                Some(crate::objectives::DEFAULT_DRILL_INTERVAL)
            }
            None => None,
        };
        let mut all: Vec<String> = self.data_storage_class.iter().cloned().collect();
        all.extend(
            classes
                .iter()
                .filter(|c| !all.contains(c))
                .cloned()
                .collect::<Vec<_>>(),
        );
        Ok(Objectives {
            rpo: match given {
                Some(d) => Some(d),
                None => self.max_age()?,
            },
            rto,
            drill_interval,
            thaw_tier: self.thaw_tier.unwrap_or_default(),
            classes: all,
            required: true,
            verify_command: self.drill_verify.clone(),
        })
    }

    /// The set's verify command for drills, with its timeout.
    pub fn drill_verify(&self) -> Result<Option<crate::drill::VerifyCommand>> {
        let timeout = match &self.drill_verify_timeout {
            Some(d) => duration("drill-verify-timeout", d)?
                .to_std()
                .unwrap_or(crate::drill::VERIFY_TIMEOUT),
            None => crate::drill::VERIFY_TIMEOUT,
        };
        let Some(command) = &self.drill_verify else {
            return Ok(None);
        };
        Ok(Some(crate::drill::VerifyCommand {
            command: command.clone(),
            timeout,
        }))
    }

    /// Why the set's RTO cannot hold whatever a drill measures (its data's storage class
    /// thaws too slowly), with the fix; `classes` as for [`BackupSet::objectives`].
    pub fn unreachable_rto(&self, classes: &[String]) -> Result<Option<String>> {
        let obj = self.objectives(None, classes)?;
        Ok(obj
            .rto
            .and_then(|rto| crate::objectives::unreachable_rto(&obj, rto, None)))
    }

    /// Refuses a set that could not be backed up or kept as declared: a name that could
    /// forge a line of output or a directory of `mount`, no paths, a keep rule, bound or
    /// storage class that does not parse.
    pub fn validate(&self, name: &str) -> Result<()> {
        crate::check_name("set name", name)?;
        let bad = |reason: String| Error::BadInput {
            what: "backup set",
            reason: format!("set {name:?}: {reason}"),
        };
        if self.paths.is_empty() {
            return Err(bad("no paths".into()));
        }
        // Relative ones would name another directory from each cwd cron starts in.
        let files = self.paths.iter().chain(&self.exclude_file);
        if let Some(p) = files.into_iter().find(|p| !p.is_absolute()) {
            return Err(bad(format!(
                "path {p:?} is relative: give it from / (a run from another directory \
                 would back up another tree)"
            )));
        }
        self.keep.policy().map_err(|e| bad(e.to_string()))?;
        self.objectives(None, &[]).map_err(|e| bad(e.to_string()))?;
        self.drill_verify().map_err(|e| bad(e.to_string()))?;
        if let Some(class) = &self.data_storage_class {
            crate::backend::check_storage_class(class).map_err(|e| bad(e.to_string()))?;
        }
        Ok(())
    }
}

/// A bound of the config: a duration over zero (a zero RPO, RTO, interval or timeout
/// could never hold).
fn duration(what: &'static str, d: &str) -> Result<chrono::Duration> {
    let bad = |reason: String| Error::BadInput {
        what,
        reason: format!("{what} {d}: {reason}"),
    };
    let parsed = crate::timespec::parse_duration(d).map_err(|e| bad(e.to_string()))?;
    if parsed <= chrono::Duration::zero() {
        return Err(bad("must be longer than zero".into()));
    }
    Ok(parsed)
}

/// The environment a set's hook sees after a backup that exited with `code` after
/// `duration` seconds: the snapshot's summary when one was written, the error when there
/// was one.
pub fn hook_env(
    set: &str,
    code: i32,
    duration: f64,
    report: Option<&BackupReport>,
    error: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STRATA_OPERATION", "backup".to_string()),
        ("STRATA_SET", set.to_string()),
        ("STRATA_EXIT_CODE", code.to_string()),
        ("STRATA_DURATION_SECONDS", format!("{duration:.3}")),
    ];
    if let Some(r) = report {
        let s = &r.snapshot.summary;
        env.extend([
            ("STRATA_SNAPSHOT_ID", r.snapshot_id.to_hex()),
            ("STRATA_FILES_NEW", s.files_new.to_string()),
            ("STRATA_FILES_CHANGED", s.files_changed.to_string()),
            ("STRATA_FILES_UNCHANGED", s.files_unchanged.to_string()),
            ("STRATA_FILES_ERRORS", r.warnings.len().to_string()),
            ("STRATA_BYTES_READ", s.bytes_read.to_string()),
            ("STRATA_BYTES_ADDED", s.bytes_added.to_string()),
            ("STRATA_BYTES_STORED", s.bytes_stored.to_string()),
        ]);
    }
    if let Some(e) = error {
        env.push(("STRATA_ERROR", e.to_string()));
    }
    env
}

/// The environment a set's `on-failure` hook sees after a drill that failed: the drill's
/// snapshot, why it failed and its verify command's exit code.
pub fn drill_hook_env(set: &str, drill: &crate::audit::Drill) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STRATA_OPERATION", "drill".to_string()),
        ("STRATA_SET", set.to_string()),
        ("STRATA_EXIT_CODE", "1".to_string()),
        (
            "STRATA_DURATION_SECONDS",
            format!("{:.3}", drill.duration_secs),
        ),
        ("STRATA_SNAPSHOT_ID", drill.snapshot.to_hex()),
        ("STRATA_ERROR", format!("drill failed: {}", drill.failure())),
    ];
    if let Some(code) = drill.verify.as_ref().and_then(|v| v.exit_code) {
        env.push(("STRATA_DRILL_VERIFY_EXIT_CODE", code.to_string()));
    }
    env
}

/// The environment of the on-failure hook after a drill that failed before it restored
/// anything (the repository unreachable, no snapshot, a target it cannot write).
pub fn drill_error_env(set: &str, code: i32, error: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STRATA_OPERATION", "drill".to_string()),
        ("STRATA_SET", set.to_string()),
        ("STRATA_EXIT_CODE", code.to_string()),
        ("STRATA_ERROR", format!("drill failed: {error}")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keep: Keep, max_age: Option<&str>) -> BackupSet {
        BackupSet {
            paths: vec!["/srv".into()],
            keep,
            rpo: max_age.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn the_bound_is_max_age_else_twice_the_smallest_keep_interval() {
        let hours = |s: &BackupSet| s.max_age().unwrap().map(|d| d.num_hours());
        let keep = |hourly, daily, weekly| Keep {
            hourly,
            daily,
            weekly,
            ..Default::default()
        };
        assert_eq!(hours(&set(keep(24, 7, 0), None)), Some(2));
        assert_eq!(hours(&set(keep(0, 7, 4), None)), Some(48));
        assert_eq!(hours(&set(keep(0, 0, 4), None)), Some(336));
        let monthly = Keep {
            monthly: 12,
            ..Default::default()
        };
        assert_eq!(hours(&set(monthly, None)), Some(2 * 24 * 31));
        assert_eq!(
            hours(&set(
                Keep {
                    yearly: 1,
                    ..Default::default()
                },
                None
            )),
            Some(2 * 24 * 366)
        );
        assert_eq!(hours(&set(keep(0, 0, 0), None)), None);
        assert_eq!(hours(&set(keep(24, 0, 0), Some("90m"))), Some(1));
        assert!(set(keep(0, 0, 0), Some("soon")).max_age().is_err());
        // A caller's bound wins; a declared set is required either way.
        let f = set(keep(24, 0, 0), None)
            .objectives(Some(chrono::Duration::hours(5)), &[])
            .unwrap();
        assert_eq!((f.rpo.map(|d| d.num_hours()), f.required), (Some(5), true));
        let f = set(keep(24, 0, 0), None).objectives(None, &[]).unwrap();
        assert_eq!(f.rpo.map(|d| d.num_hours()), Some(2));
        // No objective but freshness: no drills required.
        assert_eq!((f.rto, f.drill_interval), (None, None));
    }

    #[test]
    fn a_set_that_cannot_be_kept_as_declared_is_refused() {
        let ok = set(
            Keep {
                daily: 7,
                ..Default::default()
            },
            None,
        );
        ok.validate("docs").unwrap();
        assert!(ok.validate("a\nb").is_err());
        let empty = BackupSet::default();
        assert!(empty
            .validate("e")
            .unwrap_err()
            .to_string()
            .contains("no paths"));
        let relative = BackupSet {
            paths: vec!["/srv".into(), "src".into()],
            ..Default::default()
        };
        let e = relative.validate("r").unwrap_err().to_string();
        assert!(e.contains("\"src\" is relative"), "{e}");
        let within = set(
            Keep {
                within: Some("a while".into()),
                ..Default::default()
            },
            None,
        );
        assert!(within
            .validate("w")
            .unwrap_err()
            .to_string()
            .contains("keep.within"));
        assert!(set(Keep::default(), Some("x")).validate("m").is_err());
        // A zero bound could never hold.
        let zero = |f: fn(&mut BackupSet)| {
            let mut s = ok.clone();
            f(&mut s);
            s.validate("z").unwrap_err().to_string()
        };
        assert!(zero(|s| s.rpo = Some("0s".into())).contains("longer than zero"));
        assert!(zero(|s| s.rto = Some("0m".into())).contains("rto 0m"));
        assert!(zero(|s| s.drill_interval = Some("0d".into())).contains("drill-interval"));
        assert!(zero(|s| s.drill_verify_timeout = Some("0s".into())).contains("timeout"));
        let mut class = ok.clone();
        class.data_storage_class = Some("glacier ir".into());
        assert!(class.validate("c").is_err());
        let policy = Keep {
            hourly: 3,
            within: Some("2d".into()),
            ..Default::default()
        }
        .policy()
        .unwrap();
        assert_eq!(
            (policy.hourly, policy.within.map(|d| d.num_hours())),
            (3, Some(48))
        );
    }

    #[test]
    fn hooks_see_the_run_and_its_error() {
        let env = hook_env("docs", 1, 2.5, None, Some("disk full"));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("STRATA_SET"), Some("docs"));
        assert_eq!(get("STRATA_EXIT_CODE"), Some("1"));
        assert_eq!(get("STRATA_DURATION_SECONDS"), Some("2.500"));
        assert_eq!(get("STRATA_ERROR"), Some("disk full"));
        assert_eq!(get("STRATA_SNAPSHOT_ID"), None);
    }
}
