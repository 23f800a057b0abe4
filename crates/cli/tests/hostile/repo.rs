//! Crafted indexes, key files, responses and vanished snapshots: a storage-only attacker
//! (no password), a hostile S3 endpoint, and a key holder's index files.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use crate::common::*;
use crate::craft::run_bounded;

/// An S3 "endpoint" on loopback whose every connection gets `answer` once the request's
/// headers are read, whatever was asked; returns its URL.
fn endpoint(answer: impl Fn(&mut std::net::TcpStream) + Copy + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // The request's headers, up to the blank line.
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                answer(&mut stream);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// An endpoint that answers every request with `head` and then `body`.
fn hostile_endpoint(head: &'static str, body: &'static [u8]) -> String {
    endpoint(move |stream| {
        stream.write_all(head.as_bytes()).ok();
        stream.write_all(body).ok();
    })
}

fn on_endpoint(url: &str) -> Env {
    let mut env = Env::local();
    env.repo = format!("s3:{url}/bucket/prefix");
    env.vars = vec![
        ("AWS_ACCESS_KEY_ID".into(), "k".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
        ("AWS_REGION".into(), "garage".into()),
    ];
    env
}

/// Item 10: an endpoint announcing a terabyte for `config` gets a clear error, not an
/// allocation of that size (once: SIGABRT, exit 134).
#[test]
fn an_endpoint_announcing_a_terabyte_is_refused_without_allocating_it() {
    let url = hostile_endpoint(
        "HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\nContent-Type: application/octet-stream\r\n\r\n",
        &[0u8; 4096],
    );
    let env = on_endpoint(&url);
    let run = run_bounded(&env, &["snapshots"], 512, 60);
    assert!(!run.timed_out, "still running after {:?}", run.elapsed);
    let err = stderr(&run.out);
    assert_eq!(code(&run.out), 1, "{err}");
    assert!(err.contains("larger than any config file can be"), "{err}");
}

/// Item 10, the packs: an endpoint announcing 1.9 GB for a tree pack of a few KB (within
/// the largest a pack may be) gets the read refused (more announced than the index's extent
/// asked for), not 1.9 GB allocated up front, under a 1 GiB address-space limit.
#[test]
fn an_endpoint_inflating_a_pack_is_refused_without_allocating_it() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("inflate-{}", std::process::id());
    let (_rt, _s3) = moto_bucket(&endpoint, &bucket);
    let mut env = Env::local();
    env.repo = format!("s3:{endpoint}/{bucket}/r");
    env.vars = vec![("AWS_REGION".into(), "us-east-1".into())];
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), noise(10_000, 1)).unwrap();
    env.init();
    env.backup(&[src.to_str().unwrap()]);
    let proxy = Proxy::start("s3-proxy", &endpoint, &["--inflate-packs", "1900000000"]);
    let mut bare = Env::local();
    bare.repo = format!("s3:{}/{bucket}/r", proxy.url_base);
    bare.vars = env.vars.clone();
    let run = run_bounded(&bare, &["ls", "latest"], 1024, 120);
    assert!(!run.timed_out, "still running after {:?}", run.elapsed);
    let err = stderr(&run.out);
    assert_eq!(code(&run.out), 1, "{err}");
    assert!(err.contains("sent where"), "{err}");
}

/// A zstd frame of 32 KiB or so that expands to `len` zero bytes.
fn zstd_bomb(len: usize) -> Vec<u8> {
    zstd::bulk::compress(&vec![0u8; len], 1).unwrap()
}

/// Item 8: four small index files whose frames expand to 1 GiB each (a key holder's) cost
/// `check` and a bare `snapshots` an error naming each, not gigabytes.
#[test]
fn index_files_that_expand_a_thousandfold_are_refused_small() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(5_000, 2)).unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let repo = open_repo(&env);
    let bomb = zstd_bomb(1 << 30);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let names: Vec<String> = (0..4u8)
        .map(|i| {
            let mut frame = bomb.clone();
            // Four distinct files: a skippable frame after the bomb changes the bytes only.
            frame.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, i]);
            repo.save_raw(strata::backend::FileKind::Index, &frame)
                .unwrap()
        })
        .collect();
    drop(repo);
    let fresh = env.path("fresh-cache");
    let mut bare = Env::local();
    bare.repo = env.repo.clone();
    bare.cache = fresh;
    for args in [&["check"][..], &["snapshots"][..]] {
        let run = run_bounded(&bare, args, 1536, 60);
        assert!(
            !run.timed_out,
            "{args:?} still running after {:?}",
            run.elapsed
        );
        let err = stderr(&run.out);
        assert!(!err.contains("out of memory"), "{args:?}: {err}");
        assert!(!err.contains("memory allocation"), "{args:?}: {err}");
        if args[0] == "check" {
            let out = format!("{}{err}", String::from_utf8_lossy(&run.out.stdout));
            assert_eq!(code(&run.out), 1, "{out}");
            assert!(out.contains("expands past"), "{out}");
            assert!(names.iter().any(|n| out.contains(n.as_str())), "{out}");
        }
    }
}

/// A key file as a storage-only attacker writes it (no password): plain CBOR under its
/// content address, with Argon2id parameters of their choosing.
pub fn plant_key_file(env: &Env, memory_kib: u32, iterations: u32, salt: u8) -> String {
    let mut kdf = strata::KdfParams::generate(&strata::KdfCost::INSECURE_FOR_TESTS);
    kdf.memory_kib = memory_kib;
    kdf.iterations = iterations;
    kdf.salt = vec![salt; 16];
    let kf = strata::KeyFile {
        version: 1,
        created: "2026-01-01T00:00:00Z".into(),
        host: "h".into(),
        user: "u".into(),
        kdf,
        wrapped: vec![0; 72],
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&kf, &mut bytes).unwrap();
    let name = hex::encode(blake3::hash(&bytes).as_bytes());
    env.backend()
        .write(strata::backend::FileKind::Key, &name, &bytes)
        .unwrap();
    name
}

/// Item 9: junk key files at and past the policy's limits (4 GiB × 100 passes was once
/// accepted and tried in name order) cost a bare machine's opening neither seconds nor
/// gigabytes; those past the policy are named.
#[test]
fn junk_key_files_cost_a_bare_opening_little_and_are_named() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let huge = plant_key_file(&env, 4 << 20, 100, 1);
    for salt in 2..8 {
        plant_key_file(&env, 256 << 10, 2, salt);
    }
    let mut bare = Env::local();
    bare.repo = env.repo.clone();
    let run = run_bounded(&bare, &["snapshots"], 1024, 60);
    assert_eq!(code(&run.out), 0, "{}", stderr(&run.out));
    assert!(
        run.elapsed < std::time::Duration::from_secs(5),
        "{:?}",
        run.elapsed
    );
    // A wrong password tries what the budget allows and names what it refused.
    bare.vars = vec![("STRATA_PASSWORD".into(), "wrong".into())];
    let mut bare2 = Env::local();
    bare2.repo = env.repo.clone();
    bare2.vars = bare.vars.clone();
    let run = run_bounded(&bare2, &["snapshots"], 1024, 60);
    let err = stderr(&run.out);
    assert!(!run.timed_out, "{:?}", run.elapsed);
    assert!(
        err.contains(&huge) && err.contains("key-file policy"),
        "{err}"
    );
}

/// Item 13: an empty password, from wherever it comes, creates nothing and opens nothing;
/// `key list` shows each key's Argon2id cost, and a test-cheap key as weak.
#[test]
fn an_empty_password_is_refused_everywhere_and_key_costs_are_shown() {
    let env = Env::local();
    let empty = env.path("empty");
    std::fs::write(&empty, b"").unwrap();
    let repo_dir = std::path::PathBuf::from(&env.repo);
    let out = env
        .cmd()
        .env("STRATA_PASSWORD", "")
        .arg("init")
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("STRATA_PASSWORD is empty"),
        "{}",
        stderr(&out)
    );
    let blank = env.path("blank");
    std::fs::write(&blank, b"   \n").unwrap();
    for file in [
        empty.to_str().unwrap(),
        "/dev/null",
        blank.to_str().unwrap(),
    ] {
        let out = env
            .cmd()
            .env_remove("STRATA_PASSWORD")
            .args(["init", "--password-file", file])
            .output()
            .unwrap();
        assert_ne!(code(&out), 0);
        assert!(
            stderr(&out).contains("password file is empty"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!repo_dir.exists(), "a repository was created");
    env.init();
    for new in ["", " "] {
        let out = env
            .cmd()
            .env("STRATA_NEW_PASSWORD", new)
            .args(["key", "add"])
            .output()
            .unwrap();
        assert_ne!(code(&out), 0);
    }
    let out = env.run(&["backup", "--uploads", "100000", "/nonexistent"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = env
        .cmd()
        .env_remove("STRATA_PASSWORD")
        .args(["snapshots", "--password-file", "/dev/null"])
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["kdf"]["memory_kib"], 64, "{keys}");
    let listed = env.ok(&["key", "list"]);
    assert!(listed.contains("m=64 KiB t=1 p=1  WEAK"), "{listed}");
}

/// Item 11: a storage-only attacker moves the newest snapshot file out of `snapshots/`.
/// Every host that saw it says so on `snapshots`, `restore latest`, `status` and `check`
/// (a problem, exit 1) and in the metrics, also after the next backup (hostile pass: a
/// newer snapshot once ended the alarm), until it is back or the operator forgets it by
/// id; forgets, on this host or another, raise nothing.
#[test]
fn a_rolled_back_set_is_noticed_by_the_hosts_that_saw_it() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let backup = |seed: u64| {
        std::fs::write(src.join("f"), noise(1000, seed)).unwrap();
        env.backup(&[src.to_str().unwrap()])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (_old, newest) = (backup(1), backup(2));
    let other_host = |args: &[&str]| env.own_cmd().args(args).output().unwrap();
    other_host(&["snapshots"]);
    let snapshots_dir = std::path::Path::new(&env.repo).join("snapshots");
    std::fs::rename(snapshots_dir.join(&newest), env.path("stolen")).unwrap();
    let alarm = "vanished from the repository without a forget recorded";
    backup(3);
    for args in [
        &["snapshots"][..],
        &["status"][..],
        &[
            "restore",
            "latest",
            "--target",
            env.path("t").to_str().unwrap(),
        ][..],
    ] {
        let out = env.run(args);
        assert!(stderr(&out).contains(alarm), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&newest), "{args:?}: {}", stderr(&out));
    }
    assert!(stderr(&other_host(&["snapshots"])).contains(&newest));
    let metrics = env.path("strata.prom");
    let out = env.run(&["--metrics-file", metrics.to_str().unwrap(), "check"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains(&format!("snapshot {newest}")), "{said}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("strata_snapshots_vanished{set=\"host:"),
        "{prom}"
    );
    // Put back, the alarm ends.
    std::fs::rename(env.path("stolen"), snapshots_dir.join(&newest)).unwrap();
    let out = env.run(&["snapshots"]);
    assert!(!stderr(&out).contains(alarm), "{}", stderr(&out));
    // Gone again and accounted for by the operator: forgotten by id, for every host.
    std::fs::rename(snapshots_dir.join(&newest), env.path("stolen")).unwrap();
    assert!(stderr(&env.run(&["snapshots"])).contains(alarm));
    env.ok(&["forget", "--snapshot", &newest[..12]]);
    assert!(!stderr(&env.run(&["snapshots"])).contains(alarm));
    assert!(!stderr(&other_host(&["snapshots"])).contains(alarm));
    // Forgets, here or by another host, raise nothing.
    let fourth = backup(4);
    env.ok(&["forget", "--snapshot", &fourth]);
    assert!(!stderr(&env.run(&["snapshots"])).contains(alarm));
    let fifth = backup(5);
    let out = other_host(&["forget", "--snapshot", &fifth]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains(alarm), "{}", stderr(&out));
}

/// Item 9, the hint: `--key-hint` (or STRATA_KEY_HINT) tries the named key file first; a
/// hint that matches nothing changes nothing.
#[test]
fn a_key_hint_opens_with_the_named_key_first() {
    let env = Env::local();
    env.init();
    let keys = env.json(&["key", "list"]);
    let id = keys[0]["id"].as_str().unwrap().to_string();
    let mut bare = Env::local();
    bare.repo = env.repo.clone();
    let out = bare.run(&["--key-hint", &id[..10], "snapshots"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = bare
        .cmd()
        .env("STRATA_KEY_HINT", "ffff")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// Hostile pass: an endpoint whose listings never end (the same continuation token, page
/// after page) gets a clear error, not requests for ever.
#[test]
fn an_endpoint_paging_for_ever_is_refused() {
    let Some(endpoint) = moto() else { return };
    let bucket = format!("loop-{}", std::process::id());
    let (_rt, _s3) = moto_bucket(&endpoint, &bucket);
    let mut env = Env::local();
    env.repo = format!("s3:{endpoint}/{bucket}/r");
    env.vars = vec![("AWS_REGION".into(), "us-east-1".into())];
    env.init();
    let proxy = Proxy::start("s3-proxy", &endpoint, &["--loop-listings"]);
    let mut bare = Env::local();
    bare.repo = format!("s3:{}/{bucket}/r", proxy.url_base);
    bare.vars = env.vars.clone();
    let run = run_bounded(&bare, &["snapshots"], 1024, 60);
    assert!(!run.timed_out, "still running after {:?}", run.elapsed);
    let err = stderr(&run.out);
    assert_eq!(code(&run.out), 1, "{err}");
    // Each page names the same keys again: refused on the second page.
    assert!(err.contains("not in order, or again"), "{err}");
}

/// An S3 "endpoint" that answers every request with `status` and a chunked body that
/// never ends (a megabyte of XML-ish bytes per chunk, until the client hangs up).
fn endless_endpoint(status: &'static str) -> String {
    endpoint(move |stream| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).ok();
        stream.write_all(b"10\r\n<Error><Code>X</C\r\n").ok();
        let chunk = vec![b'x'; 1 << 20];
        loop {
            let ok = stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .is_ok()
                && stream.write_all(&chunk).is_ok()
                && stream.write_all(b"\r\n").is_ok();
            if !ok {
                break;
            }
        }
    })
}

/// Hostile pass: an endless error body, or an endless 200 reply to a listing, is cut at a
/// sane size (it grew a process to 12 GB, then SIGABRT): a clear error, small and soon.
#[test]
fn endless_replies_the_sdk_reads_whole_are_cut_short() {
    for status in ["404 Not Found", "500 Internal Server Error", "200 OK"] {
        let env = on_endpoint(&endless_endpoint(status));
        let run = run_bounded(&env, &["snapshots"], 1024, 120);
        let err = stderr(&run.out);
        assert!(
            !run.timed_out,
            "{status}: still running after {:?}",
            run.elapsed
        );
        assert!(
            matches!(code(&run.out), 1 | 10),
            "{status}: exit {}: {err}",
            code(&run.out)
        );
        assert!(!err.contains("memory allocation"), "{status}: {err}");
    }
}

/// An endpoint that takes each request and never answers (the connection stays open).
fn hung_endpoint() -> String {
    endpoint(|_| std::thread::sleep(std::time::Duration::from_secs(3600)))
}

/// An endpoint that answers 200 with a megabyte announced, then trickles a byte every
/// half second.
fn trickling_endpoint() -> String {
    endpoint(|stream| {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\
                    Content-Type: application/octet-stream\r\n\r\n";
        stream.write_all(head.as_bytes()).ok();
        while stream.write_all(b"x").is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    })
}

/// The `host:port` of an endpoint's URL, as an error names it.
fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Hostile pass 2: an endpoint that takes the request and never answers, or answers and
/// then trickles a byte now and then, ends `snapshots`, `check` and `restore` with a short
/// error naming it and saying it timed out, soon: a request waits 3 × --s3-timeout in all
/// (here 1s), and nothing tries a time-out again (the SDK's 6 tries inside strata's 6 once
/// kept a command going for over 15 minutes).
#[test]
fn a_hung_or_trickling_endpoint_ends_the_command_soon_and_says_so() {
    for (what, url) in [
        ("hung", hung_endpoint()),
        ("trickling", trickling_endpoint()),
    ] {
        let mut env = on_endpoint(&url);
        env.vars.push(("STRATA_S3_TIMEOUT".into(), "1s".into()));
        let target = env.path("target");
        let restore = ["restore", "latest", "--target", target.to_str().unwrap()];
        for args in [&["snapshots"][..], &["check"][..], &restore[..]] {
            let run = run_bounded(&env, args, 1024, 40);
            let err = stderr(&run.out);
            assert!(!run.timed_out, "{what} {args:?}: still running: {err}");
            assert!(
                run.elapsed.as_secs() < 10,
                "{what} {args:?}: {:?}",
                run.elapsed
            );
            assert_eq!(code(&run.out), 1, "{what} {args:?}: {err}");
            assert!(err.contains("timed out"), "{what} {args:?}: {err}");
            assert!(err.contains(host_of(&url)), "{what} {args:?}: {err}");
            assert!(err.contains("--s3-timeout"), "{what} {args:?}: {err}");
            assert!(
                err.len() < 600,
                "{what} {args:?}: {} bytes: {err}",
                err.len()
            );
        }
    }
}

/// Hostile pass 2: a redirect to another host (S3's answer for a bucket in another
/// region), or an error reply with a huge message and markup, is a message of a few
/// lines naming the operation, the endpoint and the status (once: the SDK's debug dump of
/// the whole reply), with the fix where there is one; exit 1.
#[test]
fn odd_replies_are_short_clear_errors() {
    let redirect = "<Error><Code>PermanentRedirect</Code><Message>The bucket you are \
                    attempting to access must be addressed using the specified \
                    endpoint.</Message><Endpoint>s3.eu-west-1.amazonaws.com</Endpoint></Error>";
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-1\r\n\
             Content-Type: application/xml\r\nConnection: close\r\n\r\n",
            redirect.to_string(),
            &["HTTP 301", "redirect", "AWS_REGION", "eu-west-1"],
        ),
        (
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.example/\r\n\
             Content-Type: application/xml\r\nConnection: close\r\n\r\n",
            redirect.replace("PermanentRedirect", "TemporaryRedirect"),
            &["HTTP 307", "redirect", "AWS_REGION"],
        ),
        (
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
             Connection: close\r\n\r\n",
            format!(
                "<Error><Code>InternalError</Code><Message>{}\x1b[2J</Message></Error>",
                "sorry ".repeat(5000)
            ),
            &["HTTP 500"],
        ),
        (
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
             Connection: close\r\n\r\n",
            format!(
                "<Error><Code>SlowDown</Code><Message>{}</Message></Error>",
                "slower ".repeat(5000)
            ),
            &["HTTP 503", "SlowDown", "slower slower"],
        ),
    ];
    for (head, body, says) in cases {
        let body: &'static [u8] = Box::leak(body.into_bytes().into_boxed_slice());
        let url = hostile_endpoint(head, body);
        let env = on_endpoint(&url);
        let run = run_bounded(&env, &["snapshots"], 1024, 60);
        let err = stderr(&run.out);
        assert!(!run.timed_out, "{head}: still running: {err}");
        assert_eq!(code(&run.out), 1, "{head}: {err}");
        assert!(err.len() < 600, "{head}: {} bytes: {err}", err.len());
        assert!(err.contains(host_of(&url)), "{head}: {err}");
        for said in says {
            assert!(err.contains(said), "{head}: no {said:?} in {err}");
        }
        assert!(!err.contains("\x1b") && !err.contains("\\x1b"), "{err}");
    }
}
