//! A storage-only attacker's deletions and key files, second hostile pass: old snapshots
//! deleted (once watched only when younger than 6 days, and prune then freed their data),
//! key files planted to spend the opening's budget (once reported as a wrong password),
//! and a FIFO, directory or symlink among the key files (once fatal to every command).

use std::path::Path;

use crate::common::*;
use crate::craft::run_bounded;
use crate::repo::plant_key_file;

/// Backs up `src` (its file `f` holding `seed`'s noise) as of `time`; returns the id.
fn backup_at(env: &Env, src: &Path, seed: u64, time: &str) -> String {
    std::fs::write(src.join("f"), noise(20_000, seed)).unwrap();
    let s = env.backup(&["--time", time, src.to_str().unwrap()]);
    s["snapshot_id"].as_str().unwrap().to_string()
}

/// Three snapshots 8 to 10 days old, seen here, moved out of `snapshots/`: the alarm on
/// every listing and in `check`; prune refuses, naming them, and deletes nothing. One put
/// back ends its alarm, the others forgotten by id end theirs, and prune proceeds.
#[test]
fn old_snapshots_deleted_behind_the_repositorys_back_stop_prune() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let old: Vec<String> = (8..=10)
        .map(|d| backup_at(&env, &src, d, &format!("{d}d")))
        .collect();
    backup_at(&env, &src, 1, "1m");
    env.ok(&["snapshots"]);
    let dir = Path::new(&env.repo).join("snapshots");
    for id in &old {
        std::fs::rename(dir.join(id), env.path(id)).unwrap();
    }
    let alarm = "vanished from the repository without a forget recorded";
    let target = env.path("t");
    let restore = ["restore", "latest", "--target", target.to_str().unwrap()];
    for args in [&["snapshots"][..], &["status"][..], &restore[..]] {
        let err = stderr(&env.run(args));
        assert!(err.contains(alarm), "{args:?}: {err}");
        assert!(old.iter().all(|id| err.contains(id)), "{args:?}: {err}");
    }
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let packs = env.objects("data");
    let out = env.run(&["prune", "--instant-delete"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("refusing to prune"), "{err}");
    assert!(old.iter().all(|id| err.contains(id)), "{err}");
    assert!(err.contains("strata forget --snapshot"), "{err}");
    assert_eq!(env.objects("data"), packs, "prune deleted data");
    // One back, two accepted as lost: nothing stands, and prune frees their data.
    std::fs::rename(env.path(&old[0]), dir.join(&old[0])).unwrap();
    env.ok(&["forget", "--snapshot", &old[1], "--snapshot", &old[2][..12]]);
    let out = env.run(&["snapshots"]);
    assert!(!stderr(&out).contains(alarm), "{}", stderr(&out));
    let out = env.run(&["prune", "--instant-delete"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(env.objects("data").len() < packs.len());
    env.assert_read_data_clean();
}

/// Sets the stored time (mtime) of key file `name` in the local repository of `env` to
/// 2020: a storage-only attacker who writes the directory can set it back.
fn backdate_key(env: &Env, name: &str) {
    let path = Path::new(&env.repo).join("keys").join(name);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_580_000_000);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(at).unwrap();
}

/// Eight planted key files of 512 MiB·passes, stored "before" the real one, spend the
/// whole budget: a bare machine is told so (exit 1, the remedy `--key-hint`), not that
/// its password is wrong (exit 12); with the hint it opens.
#[test]
fn key_files_planted_to_spend_the_budget_are_not_blamed_on_the_password() {
    let env = Env::local();
    env.init();
    let real = env.objects("keys")[0].0.clone();
    for salt in 1..=8 {
        backdate_key(&env, &plant_key_file(&env, 256 << 10, 2, salt));
    }
    let mut bare = Env::local();
    bare.repo = env.repo.clone();
    let run = run_bounded(&bare, &["snapshots"], 1536, 120);
    let err = stderr(&run.out);
    assert!(!run.timed_out, "{:?}", run.elapsed);
    assert_eq!(code(&run.out), 1, "{err}");
    assert!(!err.contains("wrong password"), "{err}");
    assert!(err.contains("8 tried, 1 not tried"), "{err}");
    assert!(err.contains("--key-hint"), "{err}");
    let out = bare.run(&["--key-hint", &real[..8], "snapshots"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// A FIFO, a directory and a symlink under a key file's name in `keys/`: every command
/// of a bare machine opens (the FIFO not waited on), `check` names each as a stray file,
/// and a wrong password names each as
/// damaged, as a junk file is.
#[test]
fn a_fifo_directory_or_symlink_among_the_key_files_is_skipped_and_named() {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    let keys = Path::new(&env.repo).join("keys");
    let victim = env.path("victim");
    std::fs::write(&victim, b"not a key").unwrap();
    let names: Vec<String> = (1..=3u8).map(|i| hex::encode([i; 32])).collect();
    nix::unistd::mkfifo(&keys.join(&names[0]), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::fs::create_dir(keys.join(&names[1])).unwrap();
    std::os::unix::fs::symlink(&victim, keys.join(&names[2])).unwrap();
    let target = env.path("t");
    let restore = ["restore", "latest", "--target", target.to_str().unwrap()];
    let backup = ["backup", src.to_str().unwrap()];
    for args in [&["snapshots"][..], &restore, &backup, &["key", "list"]] {
        let mut bare = Env::local();
        bare.repo = env.repo.clone();
        let run = run_bounded(&bare, args, 1024, 60);
        assert!(!run.timed_out, "{args:?}: {:?}", run.elapsed);
        assert_eq!(code(&run.out), 0, "{args:?}: {}", stderr(&run.out));
    }
    // `check` reports each as a problem of its own (exit 1), with the remedy.
    let mut bare = Env::local();
    bare.repo = env.repo.clone();
    let run = run_bounded(&bare, &["check"], 1024, 60);
    assert!(!run.timed_out, "check: {:?}", run.elapsed);
    // The report's problems go to stdout, its remedies with them.
    let err = String::from_utf8_lossy(&run.out.stdout).to_string() + &stderr(&run.out);
    assert_eq!(code(&run.out), 1, "{err}");
    for (name, what) in names.iter().zip(["a FIFO", "a directory", "a symlink"]) {
        assert!(
            err.contains(&format!("keys/{name}: {what}, not a repository file")),
            "{err}"
        );
    }
    assert!(err.contains("move it out of the repository"), "{err}");
    let mut wrong = Env::local();
    wrong.repo = env.repo.clone();
    wrong.vars = vec![("STRATA_PASSWORD".into(), "wrong".into())];
    let run = run_bounded(&wrong, &["snapshots"], 1024, 60);
    let err = stderr(&run.out);
    assert_eq!(code(&run.out), 12, "{err}");
    for (name, what) in names.iter().zip(["a FIFO", "a directory", "a symlink"]) {
        assert!(
            err.contains(name.as_str()) && err.contains(what),
            "{what}: {err}"
        );
    }
}
