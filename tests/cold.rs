//! Data packs in archive storage (GLACIER), on moto, which models them: listings and
//! metadata work without a thaw, a restore that meets an archived pack names it and the fix,
//! and `warm-up` requests exactly the packs a snapshot needs, once.

#[macro_use]
mod common;

use std::fs;

use common::*;

#[test]
fn archived_data_packs_are_thawed_by_warm_up_then_restored() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("cold-{}", std::process::id());
    let (rt, s3) = moto_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = format!("s3:{endpoint}/{bucket}/strata");
    let strata = |args: &[&str]| on_moto(env, &repo, args);
    let out = strata(&["init", "--data-storage-class", "GLACIER"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let src = env.path("src");
    fs::create_dir_all(src.join("cold")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    // Two files of their own packs each (over the 128 KiB floor, so they go cold).
    fs::write(src.join("cold/a"), noise(400_000, 1)).unwrap();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(src.join("other/b"), noise(400_000, 2)).unwrap();
    let out = strata(&["--json", "backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = rt
        .block_on(
            s3.list_objects_v2()
                .bucket(&bucket)
                .prefix("strata/data/")
                .send(),
        )
        .unwrap();
    let classes: Vec<&str> = listed
        .contents()
        .iter()
        .filter_map(|o| o.storage_class().map(|c| c.as_str()))
        .collect();
    assert_eq!(classes, ["GLACIER", "GLACIER"], "data packs go cold");

    // Metadata stays hot: listing and browsing need no thaw.
    let out = strata(&["ls", "latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("other/b"));

    // A restore meets the archived packs: it says which and what to do, and fails.
    let target = env.path("restored");
    let out = strata(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("archive storage"), "{}", stderr(&out));
    assert!(stderr(&out).contains("strata warm-up"), "{}", stderr(&out));

    // warm-up of one path requests its pack only; exit 4 while the thaw is pending.
    let include = format!("{}/cold", src.display());
    let out = strata(&["--json", "warm-up", "latest", "--include", &include]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["packs"], 1, "{v}");
    assert_eq!(v["report"]["requested"], 1, "{v}");
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    // The whole snapshot: the other pack is requested, the first is not asked for again
    // (moto thaws at once, so it counts as thawed).
    let out = strata(&["--json", "warm-up", "latest"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["packs"], 2, "{v}");
    assert_eq!(v["report"]["requested"], 1, "{v}");
    assert_eq!(v["report"]["thawed"], 1, "{v}");
    assert!(
        v["report"]["expected_wait"][0][1]
            .as_str()
            .unwrap()
            .contains("hours"),
        "{v}"
    );
    let out = strata(&["warm-up", "latest"]);
    assert_eq!(code(&out), 0, "all readable now: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 requested now"));

    // Requests of a warm-up with nothing left to ask for, and of the restore after it,
    // counted by the S3 backend itself (moto keeps no metrics).
    let backend = strata::backend::open(&repo).unwrap();
    let lib =
        strata::Repository::open(backend.clone(), PASSWORD.as_bytes(), &env.path("lib-cache"))
            .unwrap();
    let (_, snap) = lib.find_snapshot("latest").unwrap();
    let packs = strata::thaw::packs_needed(&lib, &snap, None).unwrap();
    let before = backend.request_count().unwrap();
    let opts = strata::thaw::WarmUpOptions {
        tier: strata::backend::ThawTier::Standard,
        days: 1,
    };
    let r = strata::thaw::warm_up(&lib, &packs, opts).unwrap();
    let requests = backend.request_count().unwrap() - before;
    eprintln!("warm-up of {} archived packs: {requests} requests", r.packs);
    // One listing, one HEAD per archived pack, no request for a thawed one.
    assert_eq!(requests, 1 + packs.len() as u64);
    let before = backend.request_count().unwrap();
    strata::restore::run(
        &lib,
        &snap,
        &strata::restore::RestoreOptions {
            target: env.path("restored-lib"),
            ..Default::default()
        },
        &strata::NoProgress,
    )
    .unwrap();
    let requests = backend.request_count().unwrap() - before;
    eprintln!("restore of the thawed snapshot: {requests} requests");
    assert!(requests <= packs.len() as u64 + 2, "{requests} requests");
    let out = strata(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = restored(&target, &src);
    assert!(fs::read(back.join("cold/a")).unwrap() == noise(400_000, 1));
    assert!(fs::read(back.join("other/b")).unwrap() == noise(400_000, 2));
}
