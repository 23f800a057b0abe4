//! `strata wal push|fetch`: PostgreSQL's archive_command and restore_command.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::json;

use strata::wal::{Spool, PREFETCH};

use super::{exit, output, Global};

#[derive(Args, Debug)]
pub struct WalArgs {
    #[command(subcommand)]
    cmd: WalCmd,
}

#[derive(Subcommand, Debug)]
enum WalCmd {
    /// Archive one WAL file (archive_command = 'strata --config FILE wal push NAME %p').
    /// Exit 0 only once the file is in the repository: PostgreSQL then deletes it. The
    /// same file pushed again exits 0; other content under an archived name fails.
    Push {
        /// The cluster, as `[postgres.NAME]` in the config file.
        name: String,
        /// The file (PostgreSQL's %p).
        path: PathBuf,
    },
    /// Write an archived WAL file to DEST (restore_command = 'strata --config FILE wal
    /// fetch NAME %f %p'). Exit 1, without writing anything, when it was never archived.
    /// The next segments are fetched ahead in the background, into the cache.
    Fetch {
        /// The cluster, as `[postgres.NAME]` in the config file.
        name: String,
        /// The file's name (PostgreSQL's %f).
        file: String,
        /// Where to write it (PostgreSQL's %p).
        dest: PathBuf,
    },
    /// Fetch the segments after FILE into the cache for `wal fetch` (started by it).
    #[command(hide = true)]
    Prefetch { name: String, file: String },
}

pub fn run(global: &Global, args: WalArgs) -> anyhow::Result<i32> {
    let name = match &args.cmd {
        WalCmd::Push { name, .. } | WalCmd::Fetch { name, .. } | WalCmd::Prefetch { name, .. } => {
            name
        }
    };
    // A typo must not start a second archive beside the real one.
    if !global.file.postgres.contains_key(name) {
        return Err(anyhow!(
            "no [postgres.{name}] in the config file{}",
            match &global.config {
                Some(c) => format!(" {}", c.display()),
                None => " (give one with --config)".to_string(),
            }
        ));
    }
    if let WalCmd::Fetch { name, file, dest } = &args.cmd {
        // Fetched ahead: no need to open the repository at all.
        let spool = Spool::new(&global.cache_base()?, global.repo_url()?, name)?;
        if spool.take(file, dest)? {
            if spool.ahead(file) < PREFETCH / 2 {
                prefetch(global, name, file);
            }
            return Ok(exit::OK);
        }
    }
    let repo = global.open()?;
    match args.cmd {
        WalCmd::Push { name, path } => {
            let pushed = strata::wal::push(&repo, &name, &path)?;
            if global.json {
                output::print_json(&json!({"cluster": name, "path": path, "result": pushed}));
            }
            Ok(exit::OK)
        }
        WalCmd::Fetch { name, file, dest } => {
            if strata::wal::fetch(&repo, &name, &file, &dest)? {
                prefetch(global, &name, &file);
                Ok(exit::OK)
            } else {
                if !global.quiet {
                    eprintln!("{file} is not archived for {name}");
                }
                Ok(exit::FAILURE)
            }
        }
        WalCmd::Prefetch { name, file } => {
            let spool = Spool::new(&global.cache_base()?, global.repo_url()?, &name)?;
            // The segment size the cluster's base backups record (PostgreSQL's default
            // without one).
            let size = strata::postgres::base_backups(&repo, &name)?
                .last()
                .and_then(|(_, s)| s.postgres.as_ref().map(|p| p.segment_size))
                .unwrap_or(16 << 20);
            spool.fill(&repo, &name, &file, size, PREFETCH)?;
            Ok(exit::OK)
        }
    }
}

/// Starts `wal prefetch` in the background for the segments after `file`, with this
/// command's repository, config and cache; PostgreSQL does not wait for it. Only a
/// segment has a next one.
fn prefetch(global: &Global, name: &str, file: &str) {
    if file.len() != 24 {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = &global.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(r) = &global.repo {
        cmd.arg("--repo").arg(r);
    }
    if let Some(d) = &global.cache_dir {
        cmd.arg("--cache-dir").arg(d);
    }
    cmd.args(["--quiet", "wal", "prefetch", name, file])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Not waited for: it ends on its own, and a failure only costs the fetches it would
    // have saved.
    let _ = cmd.spawn();
}
