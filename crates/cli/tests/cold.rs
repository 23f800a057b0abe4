//! Data packs in archive storage (GLACIER), on moto, which models them: listings and
//! metadata work without a thaw, a restore that meets an archived pack names it and the fix,
//! and `warm-up` requests exactly the packs a snapshot needs, once.

#[macro_use]
mod common;

use std::fs;
use std::sync::Arc;

use common::*;

/// A new repository in `bucket` at `url_base` (moto, or a proxy in front of it) whose data
/// packs go to GLACIER.
fn glacier_repo(env: &Env, url_base: &str, bucket: &str) -> String {
    let repo = format!("s3:{url_base}/{bucket}/strata");
    let out = on_moto(env, &repo, &["init", "--data-storage-class", "GLACIER"]);
    assert!(out.status.success(), "{}", stderr(&out));
    repo
}

#[test]
fn archived_data_packs_are_thawed_by_warm_up_then_restored() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("cold-{}", std::process::id());
    let (rt, s3) = moto_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = glacier_repo(env, &endpoint, &bucket);
    let strata = |args: &[&str]| on_moto(env, &repo, args);
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

    // A restore told not to thaw stops before writing anything and says what a thaw
    // would take; exit 4, as warm-up's "pending".
    let target = env.path("restored");
    let out = strata(&[
        "restore",
        "latest",
        "--no-warm-up",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 of the 2 data packs needed are in archive storage"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("GLACIER at the Standard tier: 3-5 hours"));
    assert!(stderr(&out).contains("strata warm-up"), "{}", stderr(&out));
    assert!(!target.exists(), "nothing written");
    // The library without a thaw policy names the files it could not restore.
    let backend = open_backend(&repo);
    let lib =
        strata::Repository::open(backend.clone(), PASSWORD.as_bytes(), &env.path("lib-cache"))
            .unwrap();
    let (_, snap) = lib.snapshots().find("latest").unwrap();
    let r = strata::restore::run(
        &lib,
        &snap,
        &strata::restore::RestoreOptions {
            target: env.path("no-thaw"),
            ..Default::default()
        },
        &strata::NoProgress,
    )
    .unwrap();
    assert_eq!(r.archived_packs, 2);
    assert_eq!(r.damaged_files.len(), 2, "{:?}", r.errors);
    assert!(
        r.errors[0].cause.contains("archive storage"),
        "{:?}",
        r.errors
    );

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
    let packs = strata::thaw::packs_needed(&lib, &snap, None).unwrap();
    let before = backend.capabilities().request_count.unwrap();
    let opts = strata::thaw::WarmUpOptions {
        tier: strata::backend::ThawTier::Standard,
        days: 1,
    };
    let r = strata::thaw::warm_up(&lib, &packs, opts).unwrap();
    let requests = backend.capabilities().request_count.unwrap() - before;
    eprintln!("warm-up of {} archived packs: {requests} requests", r.packs);
    // One listing, one HEAD per archived pack, no request for a thawed one.
    assert_eq!(requests, 1 + packs.len() as u64);
    let before = backend.capabilities().request_count.unwrap();
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
    let requests = backend.capabilities().request_count.unwrap() - before;
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

/// A library handle on `repo` with its own cache, and its backend (to count requests).
fn open_lib(
    repo: &str,
    cache: &std::path::Path,
) -> (strata::Repository, strata::backend::BackendRef) {
    let backend = open_backend(repo);
    let lib = strata::Repository::open(backend.clone(), PASSWORD.as_bytes(), cache).unwrap();
    (lib, backend)
}

fn thaw_wait(poll_ms: u64) -> strata::thaw::ThawWait {
    strata::thaw::ThawWait::new(
        strata::thaw::WarmUpOptions {
            tier: strata::backend::ThawTier::Standard,
            days: 1,
        },
        std::time::Duration::from_millis(poll_ms),
    )
}

#[test]
fn restore_dump_check_and_drill_thaw_what_they_need_and_wait() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("thaw-{}", std::process::id());
    let (rt, s3) = moto_bucket(&endpoint, &bucket);
    // Every thaw takes three looks: two HEADs answer "ongoing", as S3 does for hours.
    let proxy = Proxy::start("s3-proxy", &endpoint, &["--thaw-polls", "2"]);
    let env = &Env::local();
    let repo = glacier_repo(env, &proxy.url_base, &bucket);
    let strata = |args: &[&str]| on_moto(env, &repo, args);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let backup = |name: &str, seed: u64| {
        fs::write(src.join(name), noise(300_000, seed)).unwrap();
        let out = strata(&["backup", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    backup("a", 1);
    backup("b", 2);

    // restore: the hot part first, then each archived pack once it thaws; counted.
    let (lib, backend) = open_lib(&repo, &env.path("lib-cache"));
    let (_, snap) = lib.snapshots().find("latest").unwrap();
    let before = backend.capabilities().request_count.unwrap();
    let r = strata::restore::run(
        &lib,
        &snap,
        &strata::restore::RestoreOptions {
            target: env.path("r1"),
            cold: Some(thaw_wait(10)),
            verify: true,
            ..Default::default()
        },
        &strata::NoProgress,
    )
    .unwrap();
    let requests = backend.capabilities().request_count.unwrap() - before;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.verified_files, 2);
    let t = r.thaw.expect("the restore waited");
    assert_eq!((t.packs, t.requested), (2, 2), "{t:?}");
    // Each pack: two looks answered "thawing", the third "thawed".
    assert_eq!(t.polls, 6, "{t:?}");
    eprintln!("restore of a cold snapshot (2 archived packs): {requests} requests, {t:?}");
    // The tree pack (hot) and, per data pack: the GET that met the archive, a HEAD, the
    // thaw request, three looks, and the GET of the thawed pack.
    assert_eq!(requests, 1 + 2 * 7, "{requests} requests");
    let back = restored(&env.path("r1"), &src);
    assert!(fs::read(back.join("a")).unwrap() == noise(300_000, 1));

    // An interrupted wait resumes without requesting the thaw again.
    backup("c", 3);
    let target = env.path("r2");
    let mut child = env
        .std_cmd()
        .env("STRATA_REPOSITORY", &repo)
        .env("AWS_REGION", "us-east-1")
        .args(["restore", "latest", "--thaw-poll", "1h", "--target"])
        .arg(&target)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pack_c = {
        let (lib, _) = open_lib(&repo, &env.path("lib-cache-pack"));
        let (_, snap) = lib.snapshots().find("latest").unwrap();
        let node = strata::walk::lookup(&lib, &snap.tree, &src.join("c"))
            .unwrap()
            .unwrap();
        lib.index().lookup(&node.content[0]).unwrap().pack.to_hex()
    };
    let key = format!("strata/data/{}/{pack_c}", &pack_c[..2]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let head = rt
            .block_on(s3.head_object().bucket(&bucket).key(&key).send())
            .unwrap();
        if head.restore().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no thaw requested");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (lib, _) = open_lib(&repo, &env.path("lib-cache-2"));
    let (_, snap) = lib.snapshots().find("latest").unwrap();
    let r = strata::restore::run(
        &lib,
        &snap,
        &strata::restore::RestoreOptions {
            target: target.clone(),
            cold: Some(thaw_wait(10)),
            ..Default::default()
        },
        &strata::NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let t = r.thaw.expect("waited");
    assert_eq!((t.packs, t.requested), (1, 0), "not requested twice: {t:?}");

    // dump: everything thawed before the first byte of the tar stream.
    backup("d", 4);
    let out = strata(&["dump", "latest", "/", "--thaw-poll", "10ms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without a terminal each look is a line, for the log of a long wait.
    assert!(
        stderr(&out).contains("waiting for 1 archived pack(s) to thaw (1 requested now)"),
        "{}",
        stderr(&out)
    );
    let listing = tar_list(&out.stdout);
    assert!(listing.iter().any(|l| l.ends_with("/d")), "{listing:?}");

    // check --read-data: reads the hot packs, then each archived one once thawed.
    backup("e", 5);
    let out = strata(&["--json", "check", "--read-data", "--thaw-poll", "10ms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["thaw"]["requested"], 1, "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["data_packs_read"], 5, "{v}");
    // A budgeted check never pays for a thaw: the archived pack is left unread.
    backup("f", 6);
    let out = strata(&["--json", "check", "--read-data-budget", "100%"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["archived_not_read"], 1, "{v}");
    assert!(v["thaw"].is_null(), "{v}");

    // drill: a real restore, so it thaws as one would.
    let out = strata(&["--json", "drill", "--thaw-poll", "10ms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.to_string().contains("\"errors\":[]"), "{v}");
}

/// The member names of a tar stream, by GNU tar.
/// A restore in several batches (issue 31, item 7) requests every thaw it needs when its
/// first batch meets an archived pack, not one batch's at a time: on S3 each wait is
/// hours, so the restore waits about one thaw, not one per batch. None is requested twice.
#[test]
fn a_restore_in_batches_requests_all_its_thaws_at_once() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("thaw-batches-{}", std::process::id());
    let (_rt, _s3) = moto_bucket(&endpoint, &bucket);
    let proxy = Proxy::start("s3-proxy", &endpoint, &["--thaw-polls", "2"]);
    let env = &Env::local();
    let repo = glacier_repo(env, &proxy.url_base, &bucket);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (name, seed) in [("a", 1), ("b", 2), ("c", 3)] {
        fs::write(src.join(name), noise(300_000, seed)).unwrap();
        let out = on_moto(env, &repo, &["backup", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (lib, _) = open_lib(&repo, &env.path("lib-cache"));
    let (_, snap) = lib.snapshots().find("latest").unwrap();
    let r = strata::restore::run(
        &lib,
        &snap,
        &strata::restore::RestoreOptions {
            target: env.path("r"),
            cold: Some(thaw_wait(10)),
            verify: true,
            batch_bytes: Some(1),
            ..Default::default()
        },
        &strata::NoProgress,
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.verified_files, 3);
    let t = r.thaw.expect("the restore waited");
    assert_eq!((t.packs, t.requested), (3, 3), "{t:?}");
    // All three asked for before the first was read, not one batch's at a time.
    let events = proxy_get(&proxy, "/_proxy/events");
    let events: Vec<&str> = events.lines().collect();
    let first_read = events.iter().position(|e| e.starts_with("read "));
    let thaws: Vec<usize> = (events.iter().enumerate())
        .filter(|(_, e)| e.starts_with("thaw "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(thaws.len(), 3, "{events:#?}");
    assert!(thaws.iter().all(|t| Some(*t) < first_read), "{events:#?}");
    let back = restored(&env.path("r"), &src);
    assert!(fs::read(back.join("c")).unwrap() == noise(300_000, 3));
}

fn tar_list(tar: &[u8]) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("tar")
        .args(["-t", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim_end_matches('/')))
        .collect()
}

#[test]
fn prune_keeps_cold_packs_whole_and_unused_ones_until_their_minimum_duration() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("cold-prune-{}", std::process::id());
    let (rt, s3) = moto_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = glacier_repo(env, &endpoint, &bucket);
    let strata = |args: &[&str]| on_moto(env, &repo, args);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // x and y share one pack; z has its own.
    fs::write(src.join("x"), noise(300_000, 1)).unwrap();
    fs::write(src.join("y"), noise(300_000, 2)).unwrap();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::remove_file(src.join("y")).unwrap();
    fs::write(src.join("z"), noise(300_000, 3)).unwrap();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::remove_file(src.join("z")).unwrap();
    let out = strata(&["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Only the newest snapshot (x) stays: the x+y pack is half unused, z's pack unused.
    let out = strata(&["forget", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data_objects = || {
        rt.block_on(
            s3.list_objects_v2()
                .bucket(&bucket)
                .prefix("strata/data/")
                .send(),
        )
        .unwrap()
        .key_count()
        .unwrap_or(0)
    };
    assert_eq!(data_objects(), 2);

    let out = strata(&["--json", "prune", "--instant-delete"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs_repacked"], 0, "{v}");
    assert_eq!(v["packs_cold_not_repacked"], 1, "{v}");
    // The forgotten snapshots' tree packs (hot) go; no data pack does.
    assert!(v["bytes_freed"].as_u64().unwrap() < 10_000, "{v}");
    let held = v["packs_held"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{v}");
    assert_eq!(held[0][1], "GLACIER");
    // Written just now: held for 90 days from now.
    let until = chrono::DateTime::parse_from_rfc3339(held[0][2].as_str().unwrap()).unwrap();
    let days = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "{until}");
    assert_eq!(data_objects(), 2, "nothing deleted");
    // The human report says why.
    let out = strata(&["prune", "--instant-delete"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept until their minimum storage duration"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = strata(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // An operator who accepts the early-deletion fee says so per class.
    let out = strata(&[
        "--json",
        "prune",
        "--instant-delete",
        "--min-storage",
        "GLACIER=0s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs_deleted"], 1, "{v}");
    assert_eq!(data_objects(), 1);
    let out = strata(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = strata(&["prune", "--min-storage", "GLACIER"]);
    assert_eq!(code(&out), 2, "a bad argument");
    assert!(stderr(&out).contains("CLASS=DURATION"), "{}", stderr(&out));
}

/// A wrapper that passes on every file operation of the S3 backend but none of its
/// capabilities: what a wrapper written against the narrow trait gets by forgetting them.
struct FilesOnly(strata::backend::BackendRef);

impl strata::backend::Backend for FilesOnly {
    fn location(&self) -> String {
        self.0.location()
    }
    fn create(&self) -> strata::Result<()> {
        self.0.create()
    }
    fn list(
        &self,
        kind: strata::backend::FileKind,
    ) -> strata::Result<Vec<strata::backend::FileInfo>> {
        self.0.list(kind)
    }
    fn read(&self, kind: strata::backend::FileKind, name: &str) -> strata::Result<Vec<u8>> {
        self.0.read(kind, name)
    }
    fn read_range(
        &self,
        kind: strata::backend::FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> strata::Result<Vec<u8>> {
        self.0.read_range(kind, name, offset, len)
    }
    fn put(
        &self,
        kind: strata::backend::FileKind,
        name: &str,
        data: &[u8],
        how: &strata::backend::WriteOptions,
    ) -> strata::Result<()> {
        self.0.put(kind, name, data, how)
    }
    fn delete(&self, kind: strata::backend::FileKind, name: &str) -> strata::Result<()> {
        self.0.delete(kind, name)
    }
    fn capabilities(&self) -> strata::backend::Capabilities<'_> {
        strata::backend::Capabilities::plain()
    }
}

#[test]
fn a_wrapper_without_the_cold_storage_capability_cannot_make_archived_packs_hot() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("forgetful-{}", std::process::id());
    let _client = moto_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = glacier_repo(env, &endpoint, &bucket);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), noise(400_000, 3)).unwrap();
    let out = on_moto(env, &repo, &["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let warm_up = |backend: strata::backend::BackendRef, cache: &str| {
        let lib = strata::Repository::open(backend, PASSWORD.as_bytes(), &env.path(cache))?;
        let (_, snap) = lib.snapshots().find("latest")?;
        let packs = strata::thaw::packs_needed(&lib, &snap, None)?;
        strata::thaw::cost(&lib, &packs, strata::backend::ThawTier::Standard)
    };
    let s3 = open_backend(&repo);
    // Through the wrapper the pack is neither called hot nor thawed: the survey is refused,
    // naming what is missing.
    let e = warm_up(Arc::new(FilesOnly(s3.clone())), "cache-a").unwrap_err();
    assert!(e.to_string().contains("cold-storage capability"), "{e}");
    // The backend itself knows the pack is archived.
    let report = warm_up(s3, "cache-b").unwrap();
    assert_eq!((report.packs, report.hot, report.requested), (1, 0, 1));
}

/// Prune's repack writes the blobs it keeps in the storage class of the pack they come
/// from: a set backed up to STANDARD_IA stays there, in a repository whose own class is
/// the default (repacked packs went to the repository's class before).
#[test]
fn a_repack_keeps_the_class_of_the_packs_it_copies() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("repack-{}", std::process::id());
    let (rt, s3) = moto_bucket(&endpoint, &bucket);
    let env = &Env::local();
    let repo = format!("s3:{endpoint}/{bucket}/strata");
    let strata = |args: &[&str]| on_moto(env, &repo, args);
    let out = strata(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Two files in one pack; the second goes, and with it the first snapshot.
    fs::write(src.join("kept"), noise(400_000, 5)).unwrap();
    fs::write(src.join("gone"), noise(400_000, 6)).unwrap();
    let s = src.to_str().unwrap();
    let ia = ["--data-storage-class", "STANDARD_IA"];
    let out = strata(&[&["backup", s][..], &ia].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    fs::remove_file(src.join("gone")).unwrap();
    let out = strata(&[&["backup", s][..], &ia].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = strata(&["forget", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let classes = || -> Vec<(String, String)> {
        let listed = rt
            .block_on(
                s3.list_objects_v2()
                    .bucket(&bucket)
                    .prefix("strata/data/")
                    .send(),
            )
            .unwrap();
        listed
            .contents()
            .iter()
            .map(|o| {
                let class = o.storage_class().map_or("STANDARD", |c| c.as_str());
                (o.key().unwrap().to_string(), class.to_string())
            })
            .collect()
    };
    let before = classes();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, "STANDARD_IA");
    let out = strata(&["--json", "prune", "--max-unused", "0%", "--instant-delete"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs_repacked"], 1, "{v}");
    let after = classes();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, before[0].0, "a new pack");
    assert_eq!(
        after[0].1, "STANDARD_IA",
        "the class of the pack it came from"
    );
    let out = strata(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Hostile pass 9: an endpoint saying "thawing" for ever held a restore for ever, and its
/// first SIGTERM went unheeded for minutes (the poll's sleep did not look at it). The wait
/// ends at the first signal (exit 130) and past `--thaw-timeout` (exit 1, named).
#[test]
fn a_thaw_that_never_ends_gives_up_and_a_signal_stops_it() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("thaw-never-{}", std::process::id());
    let (_rt, _s3) = moto_bucket(&endpoint, &bucket);
    let proxy = Proxy::start("s3-proxy", &endpoint, &["--thaw-polls", "1000000"]);
    let env = &Env::local();
    let repo = glacier_repo(env, &proxy.url_base, &bucket);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), noise(300_000, 1)).unwrap();
    let out = on_moto(env, &repo, &["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("r");
    let restore = ["restore", "latest", "--thaw-poll", "1s", "--target"];
    let restore = [&restore[..], &[target.to_str().unwrap()]].concat();
    let started = std::time::Instant::now();
    let out = on_moto(
        env,
        &repo,
        &[&restore[..], &["--thaw-timeout", "3s"]].concat(),
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not thawed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--thaw-timeout"), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // Without a time-out: waiting, until SIGTERM.
    let mut child = (env.std_cmd())
        .env("STRATA_REPOSITORY", &repo)
        .env("AWS_REGION", "us-east-1")
        .args(&restore)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the restore did not wait"
    );
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let signalled = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < std::time::Duration::from_secs(30),
            "SIGTERM did not stop the wait"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
}
