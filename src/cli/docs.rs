//! `completions` and `man`: the command line described for shells and for man.

use std::path::PathBuf;

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
    std::fs::create_dir_all(&args.dir)?;
    clap_mangen::generate_to(Cli::command(), &args.dir)?;
    Ok(exit::OK)
}
