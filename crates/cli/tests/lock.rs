//! S3 Object Lock on moto, which models it: every file Strata writes is retained, a backup
//! extends what it reuses, credentials without s3:DeleteObject still back up, nobody can
//! delete a retained version, and prune reclaims space only once retention has passed.

#[macro_use]
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

/// A bucket with Object Lock enabled.
fn lock_bucket(endpoint: &str, name: &str) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    let (rt, s3) = moto_client(endpoint);
    rt.block_on(
        s3.create_bucket()
            .bucket(name)
            .object_lock_enabled_for_bucket(true)
            .send(),
    )
    .unwrap();
    (rt, s3)
}

/// Keys under `prefix` with their retention date (Unix seconds), by HEAD.
fn retained(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<(String, Option<i64>)> {
    let listed = rt
        .block_on(s3.list_objects_v2().bucket(bucket).prefix(prefix).send())
        .unwrap();
    listed
        .contents()
        .iter()
        .map(|o| {
            let key = o.key().unwrap().to_string();
            let head = rt
                .block_on(s3.head_object().bucket(bucket).key(&key).send())
                .unwrap();
            (key, head.object_lock_retain_until_date().map(|t| t.secs()))
        })
        .collect()
}

#[test]
fn init_refuses_a_bucket_without_object_lock() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("nolock-{}", std::process::id());
    let _ = moto_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = format!("s3:{endpoint}/{bucket}/strata");
    let out = on_moto(env, &repo, &["init", "--object-lock", "30"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not have Object Lock enabled"),
        "{}",
        stderr(&out)
    );
    // Nothing was written: a plain init works.
    let out = on_moto(env, &repo, &["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A local directory has no Object Lock at all.
    let out = env
        .cmd()
        .args(["init", "--object-lock", "30"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("Object Lock"), "{}", stderr(&out));
}

#[test]
fn locked_history_survives_backup_credentials_and_prune_waits_for_retention() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("lock-{}", std::process::id());
    let (rt, s3) = lock_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = format!("s3:{endpoint}/{bucket}/strata");
    let strata = |args: &[&str]| on_moto(env, &repo, args);
    let period = 12i64;
    let out = strata(&["init", "--object-lock", "12s", "--lock-mode", "compliance"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), noise(200_000, 1)).unwrap();
    let started = chrono::Utc::now().timestamp();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Every file but the (deleted) locks carries a retention of the period from its write.
    let files = retained(&rt, &s3, &bucket, "strata/");
    assert!(files.len() >= 6, "{files:?}");
    for (key, until) in &files {
        let until = until.unwrap_or_else(|| panic!("{key} is not retained"));
        assert!(until >= started + period - 1, "{key} until {until}");
    }
    let pack_a = files
        .iter()
        .find(|(k, _)| k.starts_with("strata/data/"))
        .unwrap()
        .clone();

    // Backup-only credentials (a proxy refuses every DELETE, as IAM without
    // s3:DeleteObject would): backups work, forget and prune fail, nothing is lost.
    let proxy = Proxy::start("s3-proxy", &endpoint, &["--refuse-delete"]);
    let append_only = format!("s3:{}/{bucket}/strata", proxy.url_base);
    fs::write(src.join("b"), noise(200_000, 2)).unwrap();
    // Past the quarter period of slack that writes get: now the reused files need more.
    std::thread::sleep(Duration::from_secs(4));
    let before_reuse = chrono::Utc::now().timestamp();
    let out = on_moto(
        env,
        &append_only,
        &["--json", "backup", src.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("reusing backup extended {} files", v["retention_extended"]);
    // a's pack, the index file naming it, the config, the key.
    assert_eq!(v["retention_extended"], 4, "{v}");
    // Written or extended with a quarter period to spare: the next hourly run (here: the
    // next second) extends nothing.
    let out = on_moto(
        env,
        &append_only,
        &["--json", "backup", src.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["retention_extended"].is_null(), "{v}");
    // a's pack was reused: its retention now covers the new snapshot's.
    let head = rt
        .block_on(s3.head_object().bucket(&bucket).key(&pack_a.0).send())
        .unwrap();
    let extended = head.object_lock_retain_until_date().unwrap().secs();
    assert!(
        extended >= before_reuse + period && extended > pack_a.1.unwrap(),
        "{} -> {extended}",
        pack_a.1.unwrap()
    );
    for args in [
        &["forget", "--keep-last", "1"][..],
        &["prune", "--instant-delete"][..],
    ] {
        let out = on_moto(env, &append_only, args);
        assert_ne!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("access denied"), "{}", stderr(&out));
    }
    let out = strata(&["--json", "snapshots"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    // The refused prune could not remove its lock file either: the operator is told to
    // unlock (its process is gone).
    let out = strata(&["prune"]);
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert!(stderr(&out).contains("strata unlock"), "{}", stderr(&out));
    let out = strata(&["unlock"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Full credentials cannot delete a retained version of any kind either.
    for prefix in [
        "strata/snapshots/",
        "strata/index/",
        "strata/data/",
        "strata/keys/",
    ] {
        let versions = rt
            .block_on(
                s3.list_object_versions()
                    .bucket(&bucket)
                    .prefix(prefix)
                    .send(),
            )
            .unwrap();
        let v = &versions.versions()[0];
        let err = rt
            .block_on(
                s3.delete_object()
                    .bucket(&bucket)
                    .key(v.key().unwrap())
                    .version_id(v.version_id().unwrap())
                    .send(),
            )
            .expect_err("a retained version cannot be deleted");
        assert!(format!("{err:?}").contains("AccessDenied"), "{err:?}");
    }
    let out = strata(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The maintenance host forgets: the manifest leaves at once, its version is held.
    let out = strata(&["forget", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::remove_file(src.join("a")).unwrap();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = strata(&["forget", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = strata(&["--json", "prune", "--instant-delete"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let held = v["object_lock"]["held"].as_u64().unwrap();
    assert!(
        held >= 3,
        "manifests, index files and a's pack are held: {v}"
    );
    let until =
        chrono::DateTime::parse_from_rfc3339(v["object_lock"]["held_until"].as_str().unwrap())
            .unwrap()
            .timestamp();
    let out = strata(&["prune", "--instant-delete"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("held by object lock until"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Once retention has passed, prune reclaims the space for good.
    let deadline = Instant::now() + Duration::from_secs(60);
    while chrono::Utc::now().timestamp() <= until {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = strata(&["--json", "prune", "--instant-delete"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["object_lock"]["purged"].as_u64().unwrap() >= held, "{v}");
    // What is held now is only what this prune deleted itself (the index files it
    // replaced), written after everything that was held before expired.
    if let Some(from) = v["object_lock"]["held_from"].as_str() {
        let from = chrono::DateTime::parse_from_rfc3339(from)
            .unwrap()
            .timestamp();
        assert!(from > until, "{v}");
    }
    let versions = rt
        .block_on(
            s3.list_object_versions()
                .bucket(&bucket)
                .prefix("strata/")
                .send(),
        )
        .unwrap();
    // This prune's own: the index files it replaced and its lock.
    let hidden_index = |key: Option<&str>| {
        let key = key.unwrap();
        key.starts_with("strata/index/") || key.starts_with("strata/locks/")
    };
    assert!(
        versions
            .delete_markers()
            .iter()
            .all(|m| hidden_index(m.key())),
        "{versions:?}"
    );
    assert!(
        versions
            .versions()
            .iter()
            .all(|v| v.is_latest() == Some(true) || hidden_index(v.key())),
        "only live files and what this prune deleted are left: {versions:?}"
    );
    assert!(
        !versions
            .versions()
            .iter()
            .any(|v| v.key() == Some(pack_a.0.as_str())),
        "a's pack is gone"
    );
    let out = strata(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("restored");
    let out = strata(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(restored(&target, &src).join("b")).unwrap() == noise(200_000, 2));
}
