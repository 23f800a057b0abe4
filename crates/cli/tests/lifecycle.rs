//! Bucket lifecycle rules that would destroy a repository, on a real S3 implementation that
//! models them (moto, which `tools/test` starts beside Garage): the runbook's own rules are
//! refused by `init` and named by `check` and `status`; rules limited to data packs are not.

#[macro_use]
mod common;

use std::fs;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, Transition, TransitionStorageClass,
};
use common::*;

fn rule(id: &str, prefix: &str) -> aws_sdk_s3::types::builders::LifecycleRuleBuilder {
    LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
}

fn transition(days: i32, class: TransitionStorageClass) -> Transition {
    Transition::builder()
        .days(days)
        .storage_class(class)
        .build()
}

/// The runbook's lifecycle JSON: everything to STANDARD_IA after 30 days, to GLACIER after
/// 90, expired after 365.
fn runbook_rules() -> Vec<LifecycleRule> {
    vec![
        rule("transition-to-ia", "")
            .transitions(transition(30, TransitionStorageClass::StandardIa))
            .build()
            .unwrap(),
        rule("transition-to-glacier", "")
            .transitions(transition(90, TransitionStorageClass::Glacier))
            .build()
            .unwrap(),
        rule("delete-old-backups", "")
            .expiration(LifecycleExpiration::builder().days(365).build())
            .build()
            .unwrap(),
    ]
}

/// What the README recommends: only data packs move, and only to classes read at once.
fn safe_rules(prefix: &str) -> Vec<LifecycleRule> {
    vec![rule("strata-data-to-ia", &format!("{prefix}data/"))
        .transitions(transition(30, TransitionStorageClass::StandardIa))
        .transitions(transition(90, TransitionStorageClass::GlacierIr))
        .build()
        .unwrap()]
}

fn put_rules(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    rules: Vec<LifecycleRule>,
) {
    let conf = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .unwrap();
    rt.block_on(
        s3.put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(conf)
            .send(),
    )
    .unwrap();
}

#[test]
fn lifecycle_rules_that_would_destroy_a_repository_are_refused_and_named() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("lifecycle-{}", std::process::id());
    let (rt, s3) = moto_bucket(&endpoint, &bucket);
    put_rules(&rt, &s3, &bucket, runbook_rules());

    let env = &Env::local();
    let repo = format!("s3:{endpoint}/{bucket}/strata");
    let strata = |args: &[&str]| on_moto(env, &repo, args);
    // init refuses, naming the rules that expire objects and archive metadata.
    let out = strata(&["init"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("delete-old-backups") && err.contains("365 days"),
        "{err}"
    );
    assert!(
        err.contains("transition-to-glacier") && err.contains("snapshots/"),
        "{err}"
    );
    assert!(
        !err.contains("transition-to-ia"),
        "STANDARD_IA is read at once: {err}"
    );
    let listed = rt
        .block_on(s3.list_objects_v2().bucket(&bucket).send())
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "init wrote nothing");

    // The README's rules: data packs only, to classes read at once. Accepted and quiet.
    put_rules(&rt, &s3, &bucket, safe_rules("strata/"));
    let out = strata(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("lifecycle"), "{}", stderr(&out));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(200_000, 1)).unwrap();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = strata(&["--json", "check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lifecycle"].as_array().unwrap().len(), 0, "{v}");

    // Someone pastes the runbook's rules afterwards: check and status say so, with the fix.
    put_rules(&rt, &s3, &bucket, runbook_rules());
    let out = strata(&["--json", "check"]);
    assert!(
        out.status.success(),
        "a warning, not damage: {}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lifecycle"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        stderr(&out).contains("forget and prune do retention"),
        "{}",
        stderr(&out)
    );
    // status asks the store at most once a day: a fresh cache sees the new rules.
    fs::remove_dir_all(&env.cache).unwrap();
    let out = strata(&["status", "--all"]);
    assert!(
        stderr(&out).contains("delete-old-backups"),
        "{}",
        stderr(&out)
    );

    // Data packs to GLACIER: a warning at init (they need a thaw before a restore).
    let bucket2 = format!("{bucket}-cold");
    rt.block_on(s3.create_bucket().bucket(&bucket2).send())
        .unwrap();
    put_rules(
        &rt,
        &s3,
        &bucket2,
        vec![rule("cold-data", "strata/data/")
            .transitions(transition(90, TransitionStorageClass::Glacier))
            .build()
            .unwrap()],
    );
    let out = on_moto(env, &format!("s3:{endpoint}/{bucket2}/strata"), &["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("thawed"), "{}", stderr(&out));
}
