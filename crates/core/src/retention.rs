//! Retention policies: which snapshots `forget` keeps.
//!
//! A pure function over snapshot times and tags, so it can be tested like a table. Calendar
//! buckets are taken in the given time zone: an operator's "daily" means their days, across
//! DST shifts, month ends and ISO week boundaries alike.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike};

use crate::id::SnapshotId;
use crate::repo::snapshot::{Lineage, Snapshot};

/// How many snapshots to keep per period (format-spec does not apply: this is policy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest this many.
    pub last: u32,
    /// The newest of each of this many hours.
    pub hourly: u32,
    /// The newest of each of this many days.
    pub daily: u32,
    /// The newest of each of this many weeks.
    pub weekly: u32,
    /// The newest of each of this many months.
    pub monthly: u32,
    /// The newest of each of this many years.
    pub yearly: u32,
    /// Keep everything this much younger than the newest snapshot.
    pub within: Option<Duration>,
    /// Keep snapshots carrying any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether no rule keeps anything.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Item<'a, Tz: TimeZone> {
    /// When it was taken.
    pub time: DateTime<Tz>,
    /// Its tags.
    pub tags: &'a [String],
}

/// For each item (in input order), the rules that keep it; empty means forget it.
pub fn apply<Tz: TimeZone>(policy: &Policy, items: &[Item<'_, Tz>]) -> Vec<Vec<String>> {
    apply_at(policy, items, None)
}

/// As [`apply`]; `--keep-within` counts back from the newest snapshot, but never from later
/// than `now`: a snapshot dated in the future must not push every real one out of the window.
pub fn apply_at<Tz: TimeZone>(
    policy: &Policy,
    items: &[Item<'_, Tz>],
    now: Option<DateTime<Tz>>,
) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Newest first; the policy walks back in time.
    order.sort_by(|a, b| items[*b].time.cmp(&items[*a].time).then(a.cmp(b)));
    let mut reasons = vec![Vec::new(); items.len()];
    let newest = order.first().map(|i| items[*i].time.clone());

    type Key = fn(&DateTime<chrono::FixedOffset>) -> (i32, u32, u32, u32);
    let rules: [(&str, u32, Key); 5] = [
        ("hourly", policy.hourly, |t| {
            (t.year(), t.month(), t.day(), t.hour())
        }),
        ("daily", policy.daily, |t| (t.year(), t.month(), t.day(), 0)),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        ("monthly", policy.monthly, |t| (t.year(), t.month(), 0, 0)),
        ("yearly", policy.yearly, |t| (t.year(), 0, 0, 0)),
    ];
    for (name, limit, key) in rules {
        let mut kept = 0;
        let mut last_key = None;
        for &i in &order {
            if kept >= limit {
                break;
            }
            let k = key(&items[i].time.fixed_offset());
            if last_key != Some(k) {
                last_key = Some(k);
                kept += 1;
                reasons[i].push(format!("{name} {kept}"));
            }
        }
    }
    for (n, &i) in order.iter().take(policy.last as usize).enumerate() {
        reasons[i].push(format!("last {}", n + 1));
    }
    let anchor = match (newest, now) {
        (Some(n), Some(now)) => Some(if now < n { now } else { n }),
        (n, _) => n,
    };
    if let (Some(within), Some(anchor)) = (policy.within, anchor) {
        // A window reaching before any representable time keeps everything.
        let start = anchor.checked_sub_signed(within);
        for &i in &order {
            if start.as_ref().is_none_or(|s| items[i].time >= *s) {
                reasons[i].push("within".into());
            }
        }
    }
    for &i in &order {
        if let Some(t) = items[i].tags.iter().find(|t| policy.tags.contains(t)) {
            reasons[i].push(format!("tag {t}"));
        }
    }
    reasons
}

/// A group's verdict: what stays (with the rules that keep it) and what goes. Serialized
/// as `{group, keep: [{id, time, reasons}], remove: [{id, time}]}`.
#[derive(Debug)]
pub struct GroupPlan {
    /// The lineage.
    pub group: Lineage,
    /// Snapshots kept, with the rules that keep each.
    pub keep: Vec<(SnapshotId, Snapshot, Vec<String>)>,
    /// Snapshots removed.
    pub remove: Vec<(SnapshotId, Snapshot)>,
}

/// Applies a policy to each group of the snapshots (by set, else by host and paths), with
/// calendar buckets in local time.
pub fn plan(snapshots: Vec<(SnapshotId, Snapshot)>, policy: &Policy) -> Vec<GroupPlan> {
    let mut groups: std::collections::BTreeMap<Lineage, Vec<(SnapshotId, Snapshot)>> =
        Default::default();
    for (id, s) in snapshots {
        groups.entry(s.lineage()).or_default().push((id, s));
    }
    groups
        .into_iter()
        .map(|(group, snaps)| {
            let items: Vec<Item<chrono::Local>> = snaps
                .iter()
                .map(|(_, s)| Item {
                    time: s
                        .datetime()
                        .map(|t| t.with_timezone(&chrono::Local))
                        .unwrap_or_default(),
                    tags: &s.tags,
                })
                .collect();
            let verdicts = apply_at(policy, &items, Some(chrono::Local::now()));
            let mut plan = GroupPlan {
                group,
                keep: Vec::new(),
                remove: Vec::new(),
            };
            for ((id, s), reasons) in snaps.into_iter().zip(verdicts) {
                if reasons.is_empty() {
                    plan.remove.push((id, s));
                } else {
                    plan.keep.push((id, s, reasons));
                }
            }
            plan
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use chrono_tz::Europe::Berlin;

    fn kept<Tz: TimeZone>(policy: &Policy, times: &[DateTime<Tz>]) -> Vec<usize> {
        let items: Vec<Item<Tz>> = times
            .iter()
            .map(|t| Item {
                time: t.clone(),
                tags: &[],
            })
            .collect();
        apply(policy, &items)
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hours(from: &str, n: i64) -> Vec<DateTime<Utc>> {
        let start = utc(from);
        (0..n).map(|h| start + Duration::hours(h)).collect()
    }

    #[test]
    fn empty_policy_keeps_nothing_and_last_keeps_newest() {
        let t = hours("2026-01-01T00:00:00Z", 5);
        assert!(Policy::default().is_empty());
        assert!(kept(&Policy::default(), &t).is_empty());
        for rule in [
            Policy {
                last: 1,
                ..Default::default()
            },
            Policy {
                tags: vec!["keep".into()],
                ..Default::default()
            },
        ] {
            assert!(!rule.is_empty(), "{rule:?}");
        }
        assert_eq!(
            kept(
                &Policy {
                    last: 2,
                    ..Default::default()
                },
                &t
            ),
            vec![3, 4]
        );
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        let mut t = hours("2026-01-01T00:00:00Z", 3);
        t.push(utc("2026-01-01T02:30:00Z"));
        // 02:00 and 02:30 share an hour: the newer (index 3) wins; then hours 1 and 0.
        assert_eq!(
            kept(
                &Policy {
                    hourly: 3,
                    ..Default::default()
                },
                &t
            ),
            vec![0, 1, 3]
        );
    }

    #[test]
    fn daily_across_a_month_end_and_a_leap_day() {
        let t = vec![
            utc("2028-02-28T12:00:00Z"),
            utc("2028-02-29T12:00:00Z"), // leap day
            utc("2028-03-01T00:30:00Z"),
            utc("2028-03-01T23:00:00Z"),
        ];
        assert_eq!(
            kept(
                &Policy {
                    daily: 3,
                    ..Default::default()
                },
                &t
            ),
            vec![0, 1, 3]
        );
        assert_eq!(
            kept(
                &Policy {
                    monthly: 5,
                    ..Default::default()
                },
                &t
            ),
            vec![1, 3]
        );
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_end() {
        // 2026-12-31 (Thu) and 2027-01-03 (Sun) are both in ISO week 2026-W53;
        // 2027-01-04 (Mon) starts 2027-W01.
        let t = vec![
            utc("2026-12-27T12:00:00Z"), // Sun, W52
            utc("2026-12-31T12:00:00Z"),
            utc("2027-01-03T12:00:00Z"),
            utc("2027-01-04T12:00:00Z"),
        ];
        assert_eq!(
            kept(
                &Policy {
                    weekly: 10,
                    ..Default::default()
                },
                &t
            ),
            vec![0, 2, 3]
        );
        assert_eq!(
            kept(
                &Policy {
                    yearly: 10,
                    ..Default::default()
                },
                &t
            ),
            vec![1, 3]
        );
    }

    #[test]
    fn days_are_local_days_across_dst_shifts() {
        // Berlin leaves DST on 2026-10-25 at 03:00 local (01:00 UTC).
        let t: Vec<DateTime<chrono_tz::Tz>> = [
            "2026-10-24T21:30:00Z", // 23:30 local on the 24th (CEST, +2)
            "2026-10-24T22:30:00Z", // 00:30 local on the 25th
            "2026-10-25T22:30:00Z", // 23:30 local on the 25th (CET, +1)
            "2026-10-25T23:30:00Z", // 00:30 local on the 26th
        ]
        .iter()
        .map(|s| utc(s).with_timezone(&Berlin))
        .collect();
        assert_eq!(
            kept(
                &Policy {
                    daily: 10,
                    ..Default::default()
                },
                &t
            ),
            vec![0, 2, 3]
        );
        // In UTC the day boundaries fall elsewhere.
        let u: Vec<_> = t.iter().map(|x| x.with_timezone(&Utc)).collect();
        assert_eq!(
            kept(
                &Policy {
                    daily: 10,
                    ..Default::default()
                },
                &u
            ),
            vec![1, 3]
        );
        // The repeated hour (02:00-03:00 local twice) is one hourly bucket.
        let fold: Vec<_> = ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]
            .iter()
            .map(|s| utc(s).with_timezone(&Berlin))
            .collect();
        assert_eq!(
            kept(
                &Policy {
                    hourly: 10,
                    ..Default::default()
                },
                &fold
            ),
            vec![1]
        );
    }

    #[test]
    fn within_and_tags() {
        let t = hours("2026-01-01T00:00:00Z", 48);
        let p = Policy {
            within: Some(Duration::hours(5)),
            ..Default::default()
        };
        assert_eq!(kept(&p, &t), (42..48).collect::<Vec<_>>());
        let tags = [vec![], vec!["keep".to_string()], vec![]];
        let items: Vec<Item<Utc>> = t[..3]
            .iter()
            .zip(&tags)
            .map(|(t, g)| Item { time: *t, tags: g })
            .collect();
        let r = apply(
            &Policy {
                tags: vec!["keep".into()],
                ..Default::default()
            },
            &items,
        );
        assert_eq!(r[1], vec!["tag keep".to_string()]);
        assert!(r[0].is_empty() && r[2].is_empty());
    }

    #[test]
    fn within_is_anchored_no_later_than_now() {
        // 48 hourly snapshots and one dated a year ahead: the window still ends at `now`.
        let mut t = hours("2026-01-01T00:00:00Z", 48);
        t.push(utc("2027-01-01T00:00:00Z"));
        let items: Vec<Item<Utc>> = t
            .iter()
            .map(|t| Item {
                time: *t,
                tags: &[],
            })
            .collect();
        let p = Policy {
            within: Some(Duration::hours(5)),
            ..Default::default()
        };
        let now = utc("2026-01-02T23:30:00Z");
        let r = apply_at(&p, &items, Some(now));
        let kept: Vec<usize> = (0..r.len()).filter(|i| !r[*i].is_empty()).collect();
        assert_eq!(kept, (43..49).collect::<Vec<_>>());
        // Older backups stopping does not empty the window: it counts from the newest.
        let r = apply_at(&p, &items[..48], Some(utc("2026-03-01T00:00:00Z")));
        assert_eq!(r.iter().filter(|r| !r.is_empty()).count(), 6);
        // A window longer than time itself keeps everything instead of panicking.
        let huge = Policy {
            within: Some(Duration::days(365 * 300_000)),
            ..Default::default()
        };
        assert!(apply(&huge, &items).iter().all(|r| !r.is_empty()));
    }

    #[test]
    fn runbook_policy_over_a_year_of_hourly_snapshots() {
        // Hourly for 7 days plus daily for 30, weekly for 52, on a year of hourly snapshots.
        let t = hours("2026-01-01T00:00:00Z", 365 * 24);
        let p = Policy {
            hourly: 168,
            daily: 30,
            weekly: 52,
            ..Default::default()
        };
        let k = kept(&p, &t);
        let n = t.len();
        // The newest 168 hours are all kept.
        assert!((n - 168..n).all(|i| k.contains(&i)));
        // 30 days: the 23:00 snapshot of each of the last 30 days (the newest is in the hours).
        for d in 0..30 {
            assert!(k.contains(&(n - 1 - d * 24)));
        }
        // Weekly: the newest of each of the 52 newest ISO weeks. 2026 runs from W01 (Thu
        // 2026-01-01) to W53 (Thu 2026-12-31): the newest week's pick is the newest snapshot,
        // the 51 before it end on Sunday 23:00 (W02..W52); W01 falls outside the 52.
        let sundays: Vec<usize> = (0..n)
            .filter(|&i| t[i].weekday() == chrono::Weekday::Sun && t[i].hour() == 23)
            .collect();
        assert_eq!(sundays.len(), 52);
        let expected: std::collections::BTreeSet<usize> = (n - 168..n)
            .chain((0..30).map(|d| n - 1 - d * 24))
            .chain(sundays[1..].iter().copied())
            .collect();
        let got: std::collections::BTreeSet<usize> = k.into_iter().collect();
        assert_eq!(got, expected);
        // 168 hourly; 23 more daily (7 days lie in the hours); 47 more weekly (the Sundays
        // Dec 6, 13, 20 and 27 are daily picks already).
        assert_eq!(got.len(), 168 + 23 + 47);
    }
}

impl serde::Serialize for GroupPlan {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            id: String,
            time: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reasons: Option<&'a [String]>,
        }
        let keep: Vec<Entry> = self
            .keep
            .iter()
            .map(|(id, s, r)| Entry {
                id: id.to_hex(),
                time: &s.time,
                reasons: Some(r),
            })
            .collect();
        let remove: Vec<Entry> = self
            .remove
            .iter()
            .map(|(id, s)| Entry {
                id: id.to_hex(),
                time: &s.time,
                reasons: None,
            })
            .collect();
        let mut st = ser.serialize_struct("GroupPlan", 3)?;
        st.serialize_field("group", &self.group.to_string())?;
        st.serialize_field("keep", &keep)?;
        st.serialize_field("remove", &remove)?;
        st.end()
    }
}

/// One policy applied by [`forget`]: to a backup set's snapshots, or (no set) to every
/// snapshot the filter accepts, group by group.
#[derive(Clone, Debug)]
pub struct ForgetJob {
    /// The backup set, or none for every snapshot the filter accepts.
    pub set: Option<String>,
    /// The policy.
    pub policy: Policy,
}

/// Applies each job's policy to the snapshots `filter` accepts and, unless `dry_run`,
/// removes what no rule keeps (manifests only: the data stays until prune). A job without
/// any rule is refused before anything is removed.
pub fn forget(
    repo: &crate::repo::Repository,
    jobs: &[ForgetJob],
    filter: &crate::repo::snapshot::SnapshotFilter,
    dry_run: bool,
) -> crate::error::Result<Vec<GroupPlan>> {
    if let Some(job) = jobs.iter().find(|j| j.policy.is_empty()) {
        return Err(crate::error::Error::EmptyPolicy {
            set: job.set.clone(),
        });
    }
    let all = repo.snapshots().list()?;
    let mut plans = Vec::new();
    for job in jobs {
        let mut f = filter.clone();
        if let Some(set) = &job.set {
            f.sets = vec![set.clone()];
        }
        let snaps = all.iter().filter(|(_, s)| f.matches(s)).cloned().collect();
        plans.extend(plan(snaps, &job.policy));
    }
    // A rule that matches nothing must not cost a lineage every restore point; refused
    // before anything is removed.
    if let Some(p) = plans
        .iter()
        .find(|p| p.keep.is_empty() && !p.remove.is_empty())
    {
        return Err(crate::error::Error::KeepsNothing {
            lineage: p.group.to_string(),
            count: p.remove.len(),
        });
    }
    if !dry_run {
        let ids: Vec<_> = plans
            .iter()
            .flat_map(|p| p.remove.iter().map(|(id, _)| *id))
            .collect();
        repo.snapshots().forget(&ids)?;
    }
    Ok(plans)
}
