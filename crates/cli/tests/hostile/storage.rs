//! A storage-only attacker's key files, second hostile pass: key files planted to spend the
//! opening's budget (once reported as a wrong password), and a FIFO, directory or symlink
//! among the key files (once fatal to every command).

use std::path::Path;

use crate::common::*;
use crate::craft::run_bounded;
use crate::repo::plant_key_file;

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
/// of a bare machine opens (the FIFO not waited on), and a wrong password names each as
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
    for args in [
        &["snapshots"][..],
        &restore,
        &backup,
        &["check"],
        &["key", "list"],
    ] {
        let mut bare = Env::local();
        bare.repo = env.repo.clone();
        let run = run_bounded(&bare, args, 1024, 60);
        assert!(!run.timed_out, "{args:?}: {:?}", run.elapsed);
        assert_eq!(code(&run.out), 0, "{args:?}: {}", stderr(&run.out));
    }
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
