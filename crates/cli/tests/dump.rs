//! `dump`: a file as it is, a directory as a tar archive that GNU tar extracts to what
//! `restore` writes (compared with `tar --compare` and by metadata), on both backends.

#[macro_use]
mod common;

use std::fs;

use common::*;

fn dump_to_file(env: &Env, args: &[&str], file: &std::path::Path) {
    let out = env.std_cmd().args(args).output().unwrap();
    assert!(out.status.success(), "dump {args:?}: {}", stderr(&out));
    fs::write(file, &out.stdout).unwrap();
}

fn a_dumped_directory_extracts_with_gnu_tar_as_restore_writes_it(env: &Env) {
    env.init();
    let src = env.path("src");
    make_rich_tree(&src);
    let old = add_file_from_1960(&src);
    env.backup(&[src.to_str().unwrap()]);

    let tarball = env.path("dump.tar");
    dump_to_file(env, &["dump", "latest", src.to_str().unwrap()], &tarball);
    let out = env.path("extracted");
    fs::create_dir_all(&out).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-xpf"])
        .arg(&tarball)
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let root = out.join(src.file_name().unwrap());
    assert_eq!(
        mtime_of(&root.join("from-1960.txt")),
        mtime_of(&old),
        "a time before 1970 extracted off by its fraction"
    );
    // Everything but allocation: the archive holds sparse files dense.
    let diffs: Vec<String> = compare_trees(&src, &root)
        .into_iter()
        .filter(|d| !d.contains("sparse file restored"))
        .collect();
    assert!(diffs.is_empty(), "{diffs:#?}");

    // A single file is written as it is.
    let file = env.path("one");
    dump_to_file(
        env,
        &[
            "dump",
            "latest",
            src.join("docs/readme.txt").to_str().unwrap(),
        ],
        &file,
    );
    assert_eq!(
        fs::read(&file).unwrap(),
        fs::read(src.join("docs/readme.txt")).unwrap()
    );

    // The whole snapshot: paths from the root down.
    let all = env.path("all.tar");
    dump_to_file(env, &["dump", "latest", "/"], &all);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&all)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    let rel = src.strip_prefix("/").unwrap().join("docs/nested/data.json");
    assert!(names.lines().any(|l| l == rel.to_str().unwrap()), "{names}");
}

conformance!(a_dumped_directory_extracts_with_gnu_tar_as_restore_writes_it);
