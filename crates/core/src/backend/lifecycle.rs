//! Bucket lifecycle rules, as far as a repository is concerned.
//!
//! On a deduplicating repository an expiration rule deletes packs that newer snapshots still
//! use, and moving metadata (keys, snapshots, index files, trees, locks, audit records) to
//! an archive class makes every listing and restore fail until it is thawed. Retention is
//! `forget` and `prune`'s job; only data packs may go to colder classes.

use serde::{Deserialize, Serialize};

use crate::backend::FileKind;

/// One lifecycle rule of a bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LifecycleRule {
    /// The rule's id (empty if it has none).
    pub id: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// The key prefix it is limited to ("" for the whole bucket).
    pub prefix: String,
    /// Whether it is limited by object tags too (Strata sets none, so it never applies).
    pub tagged: bool,
    /// When it expires (deletes) current objects: "after N days" or "on DATE".
    pub expiration: Option<String>,
    /// Its transitions: when, and to which class.
    pub transitions: Vec<(String, String)>,
}

/// Classes whose objects cannot be read until they are restored (thawed).
pub const ARCHIVE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

/// A rule that would harm the repository, and what to do instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Danger {
    /// The rule's id.
    pub rule: String,
    /// What it would do to the repository.
    pub harm: String,
    /// Whether it destroys data or blocks reads of metadata (refused by `init`), rather
    /// than only making data packs need a thaw before a restore.
    pub severe: bool,
    /// The archive class it moves data packs to (what a restore must then thaw).
    #[serde(default)]
    pub archives_data_to: Option<String>,
}

impl std::fmt::Display for Danger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lifecycle rule {:?} {}", self.rule, self.harm)
    }
}

/// What to do instead, for messages.
pub const FIX: &str = "keep expiration out of the repository's prefix (forget and prune do \
    retention) and limit transitions to its data/ prefix (README: S3 lifecycle rules)";

/// The rules of `rules` that would harm a repository under `prefix` (with its trailing `/`,
/// or "" for a whole bucket).
pub fn dangers(rules: &[LifecycleRule], prefix: &str) -> Vec<Danger> {
    let data = format!("{prefix}{}/", FileKind::Data.dir());
    // Every other kind is metadata; `config` sits at the prefix itself.
    let metadata: Vec<String> = FileKind::ALL
        .iter()
        .filter(|k| **k != FileKind::Data)
        .map(|k| match k {
            FileKind::Config => format!("{prefix}config"),
            k => format!("{prefix}{}/", k.dir()),
        })
        .collect();
    let overlaps = |rule: &str, path: &str| path.starts_with(rule) || rule.starts_with(path);
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| r.enabled && !r.tagged) {
        if !overlaps(&r.prefix, prefix) {
            continue;
        }
        if let Some(when) = &r.expiration {
            out.push(Danger {
                rule: r.id.clone(),
                harm: format!(
                    "deletes repository objects {when}: packs that newer snapshots still use \
                     would go with them"
                ),
                severe: true,
                archives_data_to: None,
            });
        }
        for (when, class) in &r.transitions {
            if !ARCHIVE_CLASSES.contains(&class.as_str()) {
                continue;
            }
            let hit: Vec<&str> = metadata
                .iter()
                .filter(|m| overlaps(&r.prefix, m))
                .map(|m| m.strip_prefix(prefix).unwrap_or(m))
                .collect();
            if !hit.is_empty() {
                out.push(Danger {
                    rule: r.id.clone(),
                    harm: format!(
                        "moves metadata ({}) to {class} {when}: listing, check and restore \
                         would fail until each object is thawed",
                        hit.join(", ")
                    ),
                    severe: true,
                    archives_data_to: None,
                });
            } else if overlaps(&r.prefix, &data) {
                out.push(Danger {
                    rule: r.id.clone(),
                    harm: format!(
                        "moves data packs to {class} {when}: they must be thawed before a \
                         restore can read them"
                    ),
                    severe: false,
                    archives_data_to: Some(class.clone()),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, prefix: &str) -> LifecycleRule {
        LifecycleRule {
            id: id.into(),
            enabled: true,
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// The runbook's own rules on a whole bucket: the expiration and the metadata going to
    /// Glacier are named; the move to STANDARD_IA is harmless.
    #[test]
    fn the_runbooks_rules_are_named() {
        let mut ia = rule("transition-to-ia", "");
        ia.transitions = vec![("after 30 days".into(), "STANDARD_IA".into())];
        let mut glacier = rule("transition-to-glacier", "");
        glacier.transitions = vec![("after 90 days".into(), "GLACIER".into())];
        let mut expire = rule("delete-old-backups", "");
        expire.expiration = Some("after 365 days".into());
        let d = dangers(&[ia, glacier, expire], "strata/");
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].rule, "transition-to-glacier");
        assert!(
            d[0].harm.contains("snapshots/") && d[0].harm.contains("config"),
            "{}",
            d[0]
        );
        assert!(d.iter().all(|d| d.severe));
        assert_eq!(d[1].rule, "delete-old-backups");
    }

    #[test]
    fn rules_elsewhere_in_the_bucket_or_on_data_only_are_fine_or_mild() {
        let mut other = rule("logs", "logs/");
        other.expiration = Some("after 7 days".into());
        let mut data = rule("cold-data", "strata/data/");
        data.transitions = vec![("after 90 days".into(), "DEEP_ARCHIVE".into())];
        let mut off = rule("disabled", "");
        off.expiration = Some("after 1 days".into());
        off.enabled = false;
        let mut tagged = rule("tagged", "");
        tagged.expiration = Some("after 1 days".into());
        tagged.tagged = true;
        let d = dangers(&[other, data, off, tagged], "strata/");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(!d[0].severe);
        assert!(d[0].harm.contains("thawed"));
        // A rule on a parent prefix reaches the repository.
        let mut parent = rule("all-backups", "str");
        parent.expiration = Some("on 2027-01-01".into());
        assert_eq!(dangers(&[parent], "strata/").len(), 1);
    }
}
