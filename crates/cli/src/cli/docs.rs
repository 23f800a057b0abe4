//! `completions` and `man`: the command line described for shells and for man.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::{exit, Cli};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Prints the shell's completion script, e.g. `strata completions bash >
/// /etc/bash_completion.d/strata`.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "strata", &mut std::io::stdout());
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write strata.1 and one page per command (strata-backup.1, ...) into.
    dir: PathBuf,
}

pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    let dir = &args.dir;
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{}: not a directory (man writes one page per command into it)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written into a private directory of their own, then renamed into place: a link
    // planted under a page's name (the directory may be shared) is replaced, not followed.
    let fresh = tempfile::Builder::new()
        .prefix(".strata-man-")
        .tempdir_in(dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), fresh.path())
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    for page in std::fs::read_dir(fresh.path())? {
        let page = page?;
        std::fs::rename(page.path(), dir.join(page.file_name()))
            .with_context(|| format!("writing {}", dir.join(page.file_name()).display()))?;
    }
    Ok(exit::OK)
}

/// `strata help [COMMAND] --help` means `strata help [COMMAND]` (clap's `help` takes no
/// options and would call `--help` an unknown command).
pub fn help_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first_word = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'));
    match first_word {
        Some(i) if args[i + 1] == "help" => {
            let (head, tail) = args.split_at(i + 2);
            let tail = tail.iter().filter(|a| *a != "--help" && *a != "-h");
            head.iter().chain(tail).cloned().collect()
        }
        _ => args,
    }
}
