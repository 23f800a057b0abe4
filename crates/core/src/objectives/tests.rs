use super::*;
use crate::audit::{ClassBytes, VerifyRun};
use crate::id::SnapshotId;

fn now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap()
}

fn snapshot(total_bytes: u64) -> Snapshot {
    let mut s = Snapshot {
        paths: vec![],
        set: Some("kb".into()),
        ..Snapshot::sample("2026-12-06T11:30:00Z")
    };
    s.summary.total_bytes = total_bytes;
    s
}

/// A drill `days_ago` that restored `bytes` in `secs` (and read an index of a tenth of
/// them), with a verify that exited `verify`.
fn drill(days_ago: i64, bytes: u64, secs: f64, verify: Option<i32>) -> Drill {
    Drill {
        version: 1,
        time: (now() - Duration::days(days_ago)).to_rfc3339(),
        host: "h".into(),
        set: Some("kb".into()),
        snapshot: SnapshotId([1; 32]),
        sample: 1.0,
        files: 10,
        bytes,
        duration_secs: secs,
        snapshot_bytes: bytes,
        projected_secs: secs,
        errors: 0,
        verify: verify.map(|c| VerifyRun {
            command: "jq empty *.json".into(),
            exit_code: Some(c),
            outcome: format!("exited {c}"),
            output_tail: String::new(),
            duration_secs: 30.0,
        }),
        index_bytes: bytes / 10,
        data_classes: vec![],
    }
}

fn objectives(rto_hours: i64, class: &str) -> Objectives {
    Objectives {
        rpo: Some(Duration::hours(2)),
        rto: Some(Duration::hours(rto_hours)),
        drill_interval: Some(DEFAULT_DRILL_INTERVAL),
        thaw_tier: ThawTier::Standard,
        classes: vec![class.into()],
        required: true,
        verify_command: None,
    }
}

/// The RPO verdict for a newest snapshot `age` seconds old (negative: in the future).
fn rpo_at(obj: &Objectives, age: f64) -> Verdict {
    assess(
        obj,
        &Evidence {
            newest: None,
            age_secs: Some(age),
            drills: &[],
            now: now(),
        },
    )
    .rpo
    .unwrap()
}

fn judge(obj: &Objectives, newest: Option<&Snapshot>, drills: &[Drill]) -> Assessment {
    assess(
        obj,
        &Evidence {
            newest,
            age_secs: newest.map(|_| 1800.0),
            drills,
            now: now(),
        },
    )
}

#[test]
fn the_projection_adds_restore_index_thaw_and_verify() {
    // 1 MB/s; 3,600 MB now, 100 MB of index, a 30 s verify: 3,730 s.
    let mut d = drill(3, 1_000_000_000, 1000.0, Some(0));
    d.index_bytes = 100_000_000;
    let s = snapshot(3_600_000_000);
    let a = judge(&objectives(1, "STANDARD"), Some(&s), &[d.clone()]);
    let p = a.projection.clone().unwrap();
    assert_eq!(
        (p.restore_secs, p.index_secs, p.thaw_secs, p.verify_secs),
        (3600.0, 100.0, 0.0, 30.0)
    );
    assert_eq!(p.total_secs(), 3730.0);
    let rto = a.rto.unwrap();
    assert!(!rto.holds());
    assert!(
        rto.reason()
            .starts_with("projected restore 1h 2m over the RTO 1h"),
        "{}",
        rto.reason()
    );
    let a = judge(&objectives(2, "STANDARD"), Some(&s), &[d]);
    assert!(a.holds(), "{a:?}");
    assert!(a.rto.unwrap().reason().contains("within the RTO 2h"));
}

#[test]
fn glacier_data_cannot_meet_a_four_hour_rto_drill_or_none() {
    let obj = objectives(4, "GLACIER");
    for drills in [vec![], vec![drill(1, 1000, 1.0, None)]] {
        let a = judge(&obj, Some(&snapshot(1000)), &drills);
        let rto = a.rto.unwrap();
        assert_eq!(rto.state(), "fails", "{rto:?}");
        assert!(rto.reason().contains("GLACIER takes up to 5h"), "{rto:?}");
        assert!(rto.reason().contains("GLACIER_IR"), "the fix: {rto:?}");
    }
    // Expedited thaws meet it (5 minutes); GLACIER_IR needs none.
    let mut fast = obj.clone();
    fast.thaw_tier = ThawTier::Expedited;
    let a = judge(&fast, Some(&snapshot(1000)), &[drill(1, 1000, 1.0, None)]);
    assert!(a.holds(), "{a:?}");
    let p = a.projection.unwrap();
    assert_eq!(p.thaw_secs, 300.0);
    // 1 s of restore, 0.1 s of index, 5 minutes of thaw.
    assert!((p.total_secs() - 301.1).abs() < 1e-9, "{p:?}");
    assert_eq!(
        unreachable_rto(&objectives(4, "GLACIER_IR"), Duration::hours(4), None),
        None
    );
    // DEEP_ARCHIVE has no expedited tier at all.
    let mut deep = fast.clone();
    deep.classes = vec!["DEEP_ARCHIVE".into()];
    let why = unreachable_rto(&deep, Duration::hours(100), None).unwrap();
    assert!(
        why.contains("cannot be thawed at the expedited tier"),
        "{why}"
    );
    // A bulk thaw of GLACIER (12 h) fits a day.
    let mut bulk = obj.clone();
    bulk.thaw_tier = ThawTier::Bulk;
    assert!(unreachable_rto(&bulk, Duration::hours(24), None).is_none());
    assert!(unreachable_rto(&bulk, Duration::hours(11), None).is_some());
}

#[test]
fn classes_the_last_drill_found_count_though_the_config_says_standard() {
    let mut d = drill(1, 1000, 1.0, None);
    d.data_classes = vec![ClassBytes {
        class: "DEEP_ARCHIVE".into(),
        packs: 1,
        bytes: 10,
    }];
    let a = judge(&objectives(24, "STANDARD"), Some(&snapshot(1000)), &[d]);
    let rto = a.rto.unwrap();
    assert!(rto.reason().contains("thaw of DEEP_ARCHIVE 12h"), "{rto:?}");
    assert!(rto.holds(), "12h of thaw fits 24h: {rto:?}");
    let a = judge(
        &objectives(6, "STANDARD"),
        Some(&snapshot(1000)),
        &[{
            let mut d = drill(1, 1000, 1.0, None);
            d.data_classes = vec![ClassBytes {
                class: "GLACIER".into(),
                packs: 1,
                bytes: 10,
            }];
            d
        }],
    );
    assert!(a.rto.unwrap().holds(), "5h fits 6h");
}

#[test]
fn without_a_drill_the_rto_is_unknown_and_the_drill_overdue() {
    let a = judge(&objectives(4, "STANDARD"), Some(&snapshot(1000)), &[]);
    let rto = a.rto.clone().unwrap();
    assert_eq!(rto.state(), "unknown");
    assert!(rto.reason().contains("no drill"), "{rto:?}");
    assert!(!a.holds(), "unknown is never assumed met");
    assert_eq!(a.drill.unwrap().state(), "fails");
    assert!(a.projection.is_none());
    assert!(a.rpo.unwrap().holds());
}

#[test]
fn a_failed_verify_fails_the_drill_and_the_rto() {
    let passed = drill(5, 1000, 1.0, Some(0));
    let failed = drill(1, 1000, 1.0, Some(4));
    let a = judge(
        &objectives(4, "STANDARD"),
        Some(&snapshot(1000)),
        &[passed.clone(), failed],
    );
    for v in [a.rto.as_ref().unwrap(), a.drill.as_ref().unwrap()] {
        assert_eq!(v.state(), "fails");
        assert!(
            v.reason()
                .ends_with(") failed: its verify command exited 4"),
            "{v:?}"
        );
    }
    // The projection still comes from the last passing drill.
    assert_eq!(a.projection.unwrap().drill_time, passed.time);
    // Files that did not verify fail it too.
    let mut bad = drill(0, 1000, 1.0, None);
    bad.errors = 2;
    let a = judge(
        &objectives(4, "STANDARD"),
        Some(&snapshot(1000)),
        &[passed, bad],
    );
    assert!(a.drill.unwrap().reason().contains("2 file(s)"));
}

#[test]
fn the_last_passing_drill_must_be_within_the_interval() {
    let obj = objectives(4, "STANDARD");
    let a = judge(&obj, Some(&snapshot(1000)), &[drill(40, 1000, 1.0, None)]);
    let d = a.drill.unwrap();
    assert_eq!(d.state(), "fails");
    assert!(d.reason().contains("over the interval 31d"), "{d:?}");
    let a = judge(&obj, Some(&snapshot(1000)), &[drill(30, 1000, 1.0, None)]);
    assert!(a.drill.unwrap().holds());
    let mut none = obj.clone();
    none.drill_interval = None;
    none.rto = None;
    let a = judge(&none, Some(&snapshot(1000)), &[]);
    assert!(a.holds());
    assert_eq!((a.drill, a.rto), (None, None));
}

#[test]
fn the_rpo_holds_to_its_bound_and_a_required_set_needs_a_snapshot() {
    let obj = objectives(4, "STANDARD");
    let at = |age: f64| rpo_at(&obj, age);
    assert!(at(7200.0).holds());
    assert!(!at(7201.0).holds());
    let none = judge(&obj, None, &[]);
    assert_eq!(none.rpo.unwrap(), Verdict::Fails("no snapshot".into()));
    let mut optional = obj.clone();
    optional.required = false;
    assert_eq!(judge(&optional, None, &[]).rpo.unwrap().state(), "unknown");
}

#[test]
fn a_drill_that_restored_nothing_measured_no_speed() {
    let mut d = drill(1, 0, 0.01, Some(0));
    d.snapshot_bytes = 2_000_000;
    let a = judge(&objectives(1, "STANDARD"), Some(&snapshot(2_000_000)), &[d]);
    let rto = a.rto.unwrap();
    assert_eq!(rto.state(), "unknown", "{rto:?}");
    assert!(rto.reason().contains("restored 0 bytes"), "{rto:?}");
    assert!(a.projection.is_none());
}

#[test]
fn a_snapshot_from_the_future_does_not_hold_the_rpo() {
    let obj = objectives(4, "STANDARD");
    let at = |age: f64| rpo_at(&obj, age);
    let v = at(-86_400.0 * 30.0);
    assert_eq!(v.state(), "fails");
    assert!(v.reason().contains("30d in the future"), "{v:?}");
    // A little skew is tolerated, and read as no age at all.
    let v = at(-60.0);
    assert!(v.holds(), "{v:?}");
    assert!(v.reason().starts_with("newest snapshot 0s old"), "{v:?}");
    assert!(!at(-301.0).holds());
}

#[test]
fn with_a_verify_command_only_drills_that_ran_it_prove_the_set() {
    let mut obj = objectives(4, "STANDARD");
    obj.verify_command = Some("jq empty *.json".into());
    let a = judge(
        &obj,
        Some(&snapshot(1 << 30)),
        &[drill(3, 1 << 30, 60.0, None)],
    );
    let v = a.drill.unwrap();
    assert!(!v.holds(), "{v:?}");
    assert!(
        v.reason().contains("drill-verify \"jq empty *.json\""),
        "{v:?}"
    );
    // Its speed still counts for the RTO.
    assert!(a.rto.unwrap().holds());
    // A drill that ran another command proves nothing either; one that ran it does.
    let mut other = drill(2, 1 << 30, 60.0, Some(0));
    other.verify.as_mut().unwrap().command = "true".into();
    assert!(!judge(&obj, None, &[other.clone()]).drill.unwrap().holds());
    let ran = drill(20, 1 << 30, 60.0, Some(0));
    assert!(judge(&obj, None, &[ran, other]).drill.unwrap().holds());
}

/// The bounds themselves hold: a projection of exactly the RTO, a drill exactly the
/// interval old, a thaw exactly the RTO, a snapshot exactly the tolerated skew ahead.
#[test]
fn each_objective_holds_at_its_bound() {
    // 1024 B/s; an index of 102 bytes (0.099609375 s): 3600 s in all, exactly.
    let d = drill(1, 1024, 1.0, None);
    let a = judge(
        &objectives(1, "STANDARD"),
        Some(&snapshot(3600 * 1024 - 102)),
        &[d],
    );
    assert_eq!(a.projection.as_ref().unwrap().total_secs(), 3600.0);
    assert!(a.rto.as_ref().unwrap().holds(), "{:?}", a.rto);
    let interval = judge(
        &objectives(4, "STANDARD"),
        None,
        &[drill(31, 1 << 30, 60.0, None)],
    );
    assert!(interval.drill.unwrap().holds());
    let mut glacier = objectives(5, "GLACIER");
    assert_eq!(unreachable_rto(&glacier, Duration::hours(5), None), None);
    glacier.rto = Some(Duration::hours(5) - Duration::seconds(1));
    assert!(unreachable_rto(&glacier, glacier.rto.unwrap(), None).is_some());
    assert!(rpo_at(&objectives(4, "STANDARD"), -FUTURE_SLACK_SECS).holds());
}

/// What the reasons say: the verify's time only when there was one, a thaw only for a
/// class that waits, the snapshot's size when the newest has one (else the drill's), and
/// the failed drill's time.
#[test]
fn reasons_name_only_what_counts() {
    let obj = objectives(4, "STANDARD");
    let with = judge(
        &obj,
        Some(&snapshot(1 << 30)),
        &[drill(1, 1 << 30, 60.0, Some(0))],
    );
    assert!(with.rto.unwrap().reason().contains(", verify 30s"));
    let without = judge(
        &obj,
        Some(&snapshot(1 << 30)),
        &[drill(1, 1 << 30, 60.0, None)],
    );
    let reason = without.rto.unwrap().reason().to_string();
    assert!(
        !reason.contains("verify") && !reason.contains("thaw"),
        "{reason}"
    );
    assert_eq!(without.projection.as_ref().unwrap().thaw_class, None);
    let mut d = drill(1, 1 << 20, 1.0, None);
    d.snapshot_bytes = 7 << 20;
    let p = project(&obj, Some(&snapshot(0)), &d).unwrap();
    assert_eq!(
        p.bytes,
        7 << 20,
        "an empty newest snapshot says nothing of the size"
    );
    let failed = judge(&obj, None, &[drill(2, 1 << 30, 60.0, Some(1))]);
    let reason = failed.drill.unwrap().reason().to_string();
    assert!(reason.contains("(2026-12-04 12:00:00 +00:00)"), "{reason}");
}
