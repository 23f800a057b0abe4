//! Recovery objectives per set: how much data a loss may cost (RPO), how long a recovery
//! may take (RTO), how often a restore must be proven by a drill; and whether each holds
//! now, with the reason in words. Pure functions over what the repository records (the
//! newest snapshot, the drills); the program prints them, writes them as metrics and
//! draws them in the report.
//!
//! The projected restore time of a bare machine is the last passing drill's measured
//! throughput applied to the set's current size and to the index a bare machine reads
//! first, plus the longest thaw S3 documents for the archive classes its data is in (at
//! the set's thaw tier), plus the drill's own verify (smoke test) time. An objective
//! without the evidence to judge it is unknown, never assumed met.

use std::time::Duration as StdDuration;

use chrono::Duration;
use serde::Serialize;

use crate::audit::Drill;
use crate::backend::ThawTier;
use crate::repo::snapshot::Snapshot;

/// How often a set with recovery objectives must pass a drill unless it says otherwise:
/// the runbook's monthly recovery test.
pub const DEFAULT_DRILL_INTERVAL: Duration = Duration::days(31);

/// How far ahead of now a snapshot may be dated (clocks differ a little) before its age
/// stops counting for the RPO.
const FUTURE_SLACK_SECS: f64 = 300.0;

/// A set's objectives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objectives {
    /// The oldest its newest snapshot may be (the freshness bound); none: no bound.
    pub rpo: Option<Duration>,
    /// The longest a bare-machine restore of its newest snapshot may take.
    pub rto: Option<Duration>,
    /// The longest since its last passing drill; none: drills are not required.
    pub drill_interval: Option<Duration>,
    /// The thaw tier a restore of its archived data would use.
    pub thaw_tier: ThawTier,
    /// Storage classes its data packs are written in or moved to (by the set's class, the
    /// repository's, lifecycle rules), besides those its last drill found.
    pub classes: Vec<String>,
    /// A set that must have a snapshot (one the configuration defines): none fails the RPO.
    pub required: bool,
    /// The set's drill-verify command: only a drill that ran it (and passed) proves the
    /// set restores, whatever another host's config or an older one drilled.
    pub verify_command: Option<String>,
}

impl Objectives {
    /// Whether `d` proves the set restores: it passed, running the set's verify command.
    pub fn proven_by(&self, d: &Drill) -> bool {
        d.passed()
            && self
                .verify_command
                .as_ref()
                .is_none_or(|c| d.verify.as_ref().is_some_and(|v| &v.command == c))
    }
}

/// Whether an objective holds now, and why (or why not) in words.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    /// It holds.
    Holds(String),
    /// It does not.
    Fails(String),
    /// Nothing recorded can tell: not assumed met.
    Unknown(String),
}

impl Verdict {
    /// Whether it holds.
    pub fn holds(&self) -> bool {
        matches!(self, Verdict::Holds(_))
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Holds(r) | Verdict::Fails(r) | Verdict::Unknown(r) => r,
        }
    }

    /// `holds`, `fails` or `unknown`.
    pub fn state(&self) -> &'static str {
        match self {
            Verdict::Holds(_) => "holds",
            Verdict::Fails(_) => "fails",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// A bare-machine restore's projected time, part by part.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Projection {
    /// Restoring the newest snapshot's bytes at the drill's throughput.
    pub restore_secs: f64,
    /// Reading the index first, at the same throughput.
    pub index_secs: f64,
    /// The longest documented thaw of the archive classes its data is in.
    pub thaw_secs: f64,
    /// The drill's verify (smoke test) time.
    pub verify_secs: f64,
    /// The bytes projected: the newest snapshot's.
    pub bytes: u64,
    /// The throughput (bytes per second) of the drill it is based on.
    pub throughput: f64,
    /// When that drill ran.
    pub drill_time: String,
    /// The archive class whose thaw is counted, if any.
    pub thaw_class: Option<String>,
}

impl Projection {
    /// The whole projected time.
    pub fn total_secs(&self) -> f64 {
        self.restore_secs + self.index_secs + self.thaw_secs + self.verify_secs
    }
}

/// Each objective's verdict (none where the set has no such objective).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Assessment {
    /// The newest snapshot's age against the RPO.
    pub rpo: Option<Verdict>,
    /// The projected restore time against the RTO.
    pub rto: Option<Verdict>,
    /// The last passing drill's age against the drill interval.
    pub drill: Option<Verdict>,
    /// The projected restore time, when a passing drill measured a throughput.
    pub projection: Option<Projection>,
}

impl Assessment {
    /// Whether every objective the set has holds (an unknown one does not).
    pub fn holds(&self) -> bool {
        self.verdicts().all(|(_, v)| v.holds())
    }

    /// The objectives with their verdicts: `rpo`, `rto`, `drill`.
    pub fn verdicts(&self) -> impl Iterator<Item = (&'static str, &Verdict)> {
        [
            ("rpo", &self.rpo),
            ("rto", &self.rto),
            ("drill", &self.drill),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
    }
}

/// A set's recovery at an instant: its newest snapshot and that snapshot's age, and its
/// drills (oldest first).
pub struct Evidence<'a> {
    /// The newest snapshot.
    pub newest: Option<&'a Snapshot>,
    /// Its age in seconds.
    pub age_secs: Option<f64>,
    /// The set's drills, oldest first.
    pub drills: &'a [Drill],
    /// The instant judged.
    pub now: chrono::DateTime<chrono::FixedOffset>,
}

/// Judges each objective of `obj` on `ev`.
pub fn assess(obj: &Objectives, ev: &Evidence) -> Assessment {
    let last_passed = ev.drills.iter().rev().find(|d| d.passed());
    let projection = last_passed
        .filter(|d| d.throughput() > 0.0)
        .and_then(|d| project(obj, ev.newest, d).ok());
    Assessment {
        rpo: rpo(obj, ev),
        rto: obj.rto.map(|rto| rto_verdict(obj, rto, ev, last_passed)),
        drill: obj.drill_interval.map(|i| drill_verdict(i, obj, ev)),
        projection,
    }
}

fn rpo(obj: &Objectives, ev: &Evidence) -> Option<Verdict> {
    match (ev.age_secs, obj.rpo) {
        (None, _) if obj.required => Some(Verdict::Fails("no snapshot".into())),
        (None, Some(_)) => Some(Verdict::Unknown("no snapshot".into())),
        // A clock ahead (another host's, or a --time in the future) must not make the
        // set look fresh for as long as the skew lasts.
        (Some(age), Some(_)) if age < -FUTURE_SLACK_SECS => Some(Verdict::Fails(format!(
            "newest snapshot dated {} in the future: a clock is wrong; its age says nothing",
            secs(-age)
        ))),
        (Some(age), Some(rpo)) => {
            let words = format!("newest snapshot {} old", secs(age.max(0.0)));
            Some(if age > rpo.num_seconds() as f64 {
                Verdict::Fails(format!("{words}, over the RPO {}", dur(rpo)))
            } else {
                Verdict::Holds(format!("{words}, within the RPO {}", dur(rpo)))
            })
        }
        (_, None) => None,
    }
}

fn rto_verdict(
    obj: &Objectives,
    rto: Duration,
    ev: &Evidence,
    last_passed: Option<&Drill>,
) -> Verdict {
    // Classes alone can rule it out, drill or none.
    if let Some(why) = unreachable_rto(obj, rto, last_passed) {
        return Verdict::Fails(why);
    }
    let Some(last) = ev.drills.last() else {
        return Verdict::Unknown(format!(
            "no drill has measured a restore yet (RTO {}): run strata drill",
            dur(rto)
        ));
    };
    if !last.passed() {
        return Verdict::Fails(format!(
            "the last drill ({}) failed: {}",
            at(&last.time),
            last.failure()
        ));
    }
    if last.throughput() <= 0.0 {
        return Verdict::Unknown(format!(
            "the last drill ({}) restored {} bytes: too little to measure a speed; drill a \
             larger sample",
            at(&last.time),
            last.bytes
        ));
    }
    match project(obj, ev.newest, last) {
        Err(why) => Verdict::Fails(why),
        Ok(p) if p.total_secs() > rto.num_seconds() as f64 => Verdict::Fails(format!(
            "projected restore {} over the RTO {} ({})",
            secs(p.total_secs()),
            dur(rto),
            parts(&p)
        )),
        Ok(p) => Verdict::Holds(format!(
            "projected restore {} within the RTO {} ({})",
            secs(p.total_secs()),
            dur(rto),
            parts(&p)
        )),
    }
}

fn parts(p: &Projection) -> String {
    let mut out = format!(
        "restore {} at {}/s, index {}",
        secs(p.restore_secs),
        bytesize::ByteSize(p.throughput as u64).display().si(),
        secs(p.index_secs)
    );
    if let Some(class) = &p.thaw_class {
        out.push_str(&format!(", thaw of {class} {}", secs(p.thaw_secs)));
    }
    if p.verify_secs > 0.0 {
        out.push_str(&format!(", verify {}", secs(p.verify_secs)));
    }
    out
}

fn drill_verdict(interval: Duration, obj: &Objectives, ev: &Evidence) -> Verdict {
    if let Some(last) = ev.drills.last().filter(|d| !d.passed()) {
        return Verdict::Fails(format!(
            "the last drill ({}) failed: {}",
            at(&last.time),
            last.failure()
        ));
    }
    let Some(d) = ev.drills.iter().rev().find(|d| obj.proven_by(d)) else {
        return Verdict::Fails(match (&obj.verify_command, ev.drills.is_empty()) {
            (Some(c), false) => format!(
                "no passing drill has run the set's drill-verify {c:?} (one is due every {})",
                dur(interval)
            ),
            _ => format!(
                "no drill has passed yet (one is due every {})",
                dur(interval)
            ),
        });
    };
    let age = chrono::DateTime::parse_from_rfc3339(&d.time)
        .map(|t| (ev.now - t).num_seconds() as f64)
        .unwrap_or(f64::INFINITY);
    if age > interval.num_seconds() as f64 {
        Verdict::Fails(format!(
            "last passing drill {} ago, over the interval {}",
            secs(age),
            dur(interval)
        ))
    } else {
        Verdict::Holds(format!(
            "last passing drill {} ago, within the interval {}",
            secs(age),
            dur(interval)
        ))
    }
}

/// The projected restore time of `newest` (else of what `drill` restored) at `drill`'s
/// throughput; an error names a class that cannot be thawed at the set's tier.
pub fn project(
    obj: &Objectives,
    newest: Option<&Snapshot>,
    drill: &Drill,
) -> Result<Projection, String> {
    let bytes = newest
        .map(|s| s.summary.total_bytes)
        .filter(|b| *b > 0)
        .unwrap_or(drill.snapshot_bytes);
    let throughput = drill.throughput();
    if throughput <= 0.0 {
        return Err("the drill measured no speed".into());
    }
    let at_speed = |b: u64| b as f64 / throughput;
    let (thaw_secs, thaw_class) = thaw(obj, Some(drill))?;
    Ok(Projection {
        restore_secs: at_speed(bytes),
        index_secs: at_speed(drill.index_bytes),
        thaw_secs: thaw_secs.as_secs_f64(),
        verify_secs: drill.verify.as_ref().map_or(0.0, |v| v.duration_secs),
        bytes,
        throughput,
        drill_time: drill.time.clone(),
        thaw_class,
    })
}

/// The longest thaw among the classes of `obj` and those `drill` found, with the class;
/// an error for a class the tier does not offer.
fn thaw(obj: &Objectives, drill: Option<&Drill>) -> Result<(StdDuration, Option<String>), String> {
    let found = drill.into_iter().flat_map(|d| d.data_classes.iter());
    let mut worst = (StdDuration::ZERO, None);
    for class in obj.classes.iter().chain(found.map(|c| &c.class)) {
        let wait = obj.thaw_tier.longest_wait(class).ok_or_else(|| {
            format!(
                "data in {class} cannot be thawed at the {} tier",
                tier(obj.thaw_tier)
            )
        })?;
        if wait > worst.0 {
            worst = (wait, Some(class.clone()));
        }
    }
    Ok(worst)
}

/// Why the RTO cannot hold whatever a drill measures: data in an archive class whose
/// documented thaw alone is longer, with the fix; none when the classes allow it.
pub fn unreachable_rto(obj: &Objectives, rto: Duration, drill: Option<&Drill>) -> Option<String> {
    let fix = "keep its data in a class read at once (data-storage-class = \"GLACIER_IR\"), \
               thaw faster (thaw-tier = \"expedited\": GLACIER only, minutes, dearer) or set \
               an RTO it can meet";
    match thaw(obj, drill) {
        Err(why) => Some(format!("{why}: the RTO {} cannot hold; {fix}", dur(rto))),
        Ok((wait, Some(class))) if wait.as_secs() as i64 > rto.num_seconds() => Some(format!(
            "data in {class} takes up to {} to thaw at the {} tier, over the RTO {}; {fix}",
            secs(wait.as_secs_f64()),
            tier(obj.thaw_tier),
            dur(rto)
        )),
        Ok(_) => None,
    }
}

/// A record's time to the second, in its own offset.
fn at(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn tier(t: ThawTier) -> &'static str {
    match t {
        ThawTier::Expedited => "expedited",
        ThawTier::Standard => "standard",
        ThawTier::Bulk => "bulk",
    }
}

fn dur(d: Duration) -> String {
    secs(d.num_seconds() as f64)
}

/// Seconds in words (`1d 2h`, `4h 5m`, `3m 20s`): days at most, to the second below an
/// hour and to the minute above.
fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "ever".into();
    }
    let s = s.max(0.0).round() as u64;
    let s = if s >= 3600 { s - s % 60 } else { s };
    let parts: Vec<String> = [
        (s / 86400, 'd'),
        (s / 3600 % 24, 'h'),
        (s / 60 % 60, 'm'),
        (s % 60, 's'),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, unit)| format!("{n}{unit}"))
    .collect();
    match parts.is_empty() {
        true => "0s".into(),
        false => parts.join(" "),
    }
}

#[cfg(test)]
mod tests;
