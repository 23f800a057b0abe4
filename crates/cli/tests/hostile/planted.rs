//! A storage-only attacker's planted files: sparse giants in a pack's, an index file's or a
//! snapshot's place, and symlinks or FIFOs where files belong. Each costs a command seconds
//! and a bounded address space, is named, and costs only itself.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::craft::run_bounded;

/// `check --json` within bounds: its problems as (object, reason, remedy), and the run.
fn check_problems(env: &Env) -> (Vec<(String, String, String)>, crate::craft::Bounded) {
    let run = run_bounded(env, &["--json", "check"], 1024, 120);
    let out = String::from_utf8_lossy(&run.out.stdout).to_string();
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{}", stderr(&run.out)));
    let text = |p: &serde_json::Value, k: &str| p[k].as_str().unwrap_or_default().to_string();
    let problems = (report["problems"].as_array().unwrap().iter())
        .map(|p| (text(p, "object"), text(p, "reason"), text(p, "remedy")))
        .collect();
    (problems, run)
}

/// A repository with one small backup, and the source it came from.
fn backed_up() -> (Env, std::path::PathBuf) {
    let env = Env::local();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), noise(20_000, 7)).unwrap();
    std::fs::write(src.join("g"), b"small").unwrap();
    env.backup(&[src.to_str().unwrap()]);
    (env, src)
}

/// The same repository seen from a bare machine (a fresh cache).
fn bare(env: &Env) -> Env {
    let mut bare = Env::local();
    bare.repo = env.repo.clone();
    bare
}

/// `restore latest --verify`: whole and verified, but exit 1, since a snapshot that could
/// not be read may have been the newest (hostile pass 8).
fn restored_past_damage(env: &Env) -> std::path::PathBuf {
    let target = env.path("restored");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("could not be read"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{err}"
    );
    target
}

/// Makes `path` a sparse file of `len` bytes (its bytes so far kept).
fn grow(path: &Path, len: u64) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(len).unwrap();
}

/// `name` of 64 hex digits, distinct per `i`.
fn planted_name(i: u32) -> String {
    format!("{i:08x}{}", "ab".repeat(28))
}

fn repo_path(env: &Env, rel: &str) -> std::path::PathBuf {
    Path::new(&env.repo).join(rel)
}

/// Defect 1: a tree pack grown to 2 GiB (sparse; a pack's bound) made every command that
/// loads trees read 2 GiB. A pack is read as far as the index says it reaches: `ls` and
/// `restore` of a bare machine work within 1 GiB of address space, and `check` names the
/// pack's size.
#[test]
fn a_pack_grown_sparse_to_its_bound_is_read_only_as_far_as_indexed() {
    let (env, src) = backed_up();
    let (tree, size) = env.objects("tree")[0].clone();
    grow(
        &repo_path(&env, &format!("tree/{}/{tree}", &tree[..2])),
        2 << 30,
    );
    let bare = bare(&env);
    for args in [&["ls", "latest"][..], &["snapshots"][..]] {
        let run = run_bounded(&bare, args, 1024, 60);
        assert!(!run.timed_out, "{args:?}: {:?}", run.elapsed);
        assert_eq!(code(&run.out), 0, "{args:?}: {}", stderr(&run.out));
        assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    }
    let target = bare.path("restored");
    let run = run_bounded(
        &bare,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        1024,
        60,
    );
    assert_eq!(code(&run.out), 0, "{}", stderr(&run.out));
    assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
    let run = run_bounded(&bare, &["check"], 1024, 60);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.out.stdout),
        stderr(&run.out)
    );
    assert_eq!(code(&run.out), 1, "{out}");
    assert!(out.contains(&tree), "{out}");
    assert!(out.contains(&format!("the index says {size}")), "{out}");
}

/// Defect 2: 16 sparse 1 GiB files in `index/` and 500 sparse 64 MiB ones in `snapshots/`
/// (each within the old bounds) made `check` take 38 s and `snapshots` 87 s. Past the
/// bounds now, each is damage named from its size without a read, and the healthy
/// snapshot lists, checks (but for the planted files) and restores.
#[test]
fn giant_index_files_and_snapshots_are_refused_from_their_size() {
    let (env, src) = backed_up();
    for i in 0..16 {
        grow(
            &repo_path(&env, &format!("index/{}", planted_name(i))),
            1 << 30,
        );
    }
    for i in 0..500 {
        grow(
            &repo_path(&env, &format!("snapshots/{}", planted_name(i))),
            64 << 20,
        );
    }
    let bare = bare(&env);
    let run = run_bounded(&bare, &["snapshots"], 1024, 120);
    let err = stderr(&run.out);
    assert!(!run.timed_out, "{:?}", run.elapsed);
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    assert!(
        err.contains("larger than any snapshot file can be"),
        "{err}"
    );
    assert!(err.contains("larger than any index file can be"), "{err}");
    let (problems, run) = check_problems(&bare);
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    assert_eq!(code(&run.out), 1);
    for (i, kind) in [(15, "index"), (499, "snapshot")] {
        let object = format!("{kind} {}", planted_name(i));
        let found = problems.iter().find(|p| p.0 == object);
        let (_, reason, _) = found.unwrap_or_else(|| panic!("{object}: {problems:?}"));
        assert!(reason.contains("larger than"), "{reason}");
    }
    assert_eq!(problems.len(), 516, "{problems:?}");
    let listed = bare.json(&["snapshots"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let target = restored_past_damage(&bare);
    assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
}

/// Defect 3: a symlink or a FIFO in the place of a pack no index names, of an index file,
/// a snapshot or a key file passed `check`. Each is a problem naming its path, and the
/// check finishes (a FIFO is never opened, so never waited on).
#[test]
fn symlinks_and_fifos_in_a_files_place_are_problems_of_check() {
    let (env, src) = backed_up();
    let fifo = |rel: &str| {
        nix::unistd::mkfifo(&repo_path(&env, rel), nix::sys::stat::Mode::S_IRWXU).unwrap()
    };
    let link = |rel: &str| std::os::unix::fs::symlink("/etc/passwd", repo_path(&env, rel)).unwrap();
    let planted = [
        format!("data/00/{}", "00".repeat(32)),
        format!("tree/11/{}", "11".repeat(32)),
        format!("index/{}", "22".repeat(32)),
        format!("snapshots/{}", "33".repeat(32)),
        format!("keys/{}", "44".repeat(32)),
        format!("data/55/{}", "55".repeat(32)),
        format!("tree/66/{}", "66".repeat(32)),
        format!("keys/{}", "77".repeat(32)),
    ];
    for (i, rel) in planted.iter().enumerate() {
        if i < 5 {
            fifo(rel);
        } else {
            link(rel);
        }
    }
    let (problems, run) = check_problems(&env);
    assert!(!run.timed_out, "{:?}", run.elapsed);
    assert_eq!(code(&run.out), 1, "{problems:?}");
    for (i, rel) in planted.iter().enumerate() {
        let name = rel.rsplit('/').next().unwrap();
        // Index files and snapshots are read, and named as such; the rest by their path.
        let object = match rel.split('/').next().unwrap() {
            "index" => format!("index {name}"),
            "snapshots" => format!("snapshot {name}"),
            _ => format!("file {rel}"),
        };
        let found = problems.iter().find(|p| p.0 == object);
        let (_, reason, remedy) = found.unwrap_or_else(|| panic!("{object}: {problems:?}"));
        let what = if i < 5 { "a FIFO" } else { "a symlink" };
        assert!(
            reason.contains(&format!("{what}, not a repository file")),
            "{reason}"
        );
        if object.starts_with("file") {
            assert_eq!(remedy, "remove_stray_file");
        }
    }
    assert_eq!(problems.len(), planted.len(), "{problems:?}");
    // What they sit beside still restores.
    let target = restored_past_damage(&env);
    assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
}
