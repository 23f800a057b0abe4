//! `strata pg basebackup|restore`: PostgreSQL base backups and point-in-time restores.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::json;
use strata::timespec;
use strata_pg::{self as postgres, Cluster};

use super::output::{self, Bar};
use super::{exit, Global};

#[derive(Args, Debug)]
pub struct PgArgs {
    #[command(subcommand)]
    cmd: PgCmd,
}

#[derive(Subcommand, Debug)]
enum PgCmd {
    /// Take a base backup: pg_backup_start, a backup of the data directory into the set
    /// postgres.NAME, pg_backup_stop (which waits until its WAL is archived). Needs
    /// data-directory and connection in [postgres.NAME], and archiving through `wal push`.
    Basebackup {
        /// The cluster, as `[postgres.NAME]` in the config file.
        name: String,
        /// How long to wait for the server to archive the backup's last WAL segment
        /// before failing (no snapshot is written then).
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
        wal_timeout: std::time::Duration,
    },
    /// Restore the cluster as of --at (default: the end of the WAL archive) into a new
    /// data directory, set up to recover when PostgreSQL starts there: the newest base
    /// backup consistent by then, its backup_label, recovery.signal, restore_command
    /// through `wal fetch`, recovery_target_timeline, recovery_target_time,
    /// recovery_target_action = promote, and archive_mode = off (a copy never archives
    /// into the cluster's archive unless --keep-archiving). Refuses when the WAL archive
    /// has a gap on the way.
    Restore {
        /// The cluster, as `[postgres.NAME]` in the config file.
        name: String,
        /// The instant to recover to: RFC 3339, "YYYY-MM-DD HH:MM[:SS]" (local time), or
        /// an age such as "2h" (ago).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The new data directory (absent or empty; with --delta, an existing one).
        #[arg(long)]
        target: PathBuf,
        /// The timeline to follow (default: the one archived most recently, which is the
        /// primary's, whatever restored copies archived).
        #[arg(long, value_name = "N")]
        timeline: Option<u32>,
        /// Leave archiving on in the restored cluster: for a failover, where it replaces
        /// the primary and goes on archiving as the cluster.
        #[arg(long)]
        keep_archiving: bool,
        /// The target is the data directory of a stopped cluster (or a directory a killed
        /// `--delta` run left): keep its files whose size, mtime and content match the base
        /// backup's, fetch the rest, remove what the backup does not hold. Refused while a
        /// server runs there (its postmaster.pid names a live process).
        #[arg(long)]
        delta: bool,
        /// Say which base backup and WAL would be used; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        recreate: super::restore::RecreateArgs,
    },
}

pub fn run(global: &Global, args: PgArgs) -> anyhow::Result<i32> {
    let name = match &args.cmd {
        PgCmd::Basebackup { name, .. } | PgCmd::Restore { name, .. } => name.clone(),
    };
    let Some(section) = global.file.postgres.get(&name) else {
        return Err(anyhow!("no [postgres.{name}] in the config file"));
    };
    match args.cmd {
        PgCmd::Basebackup { wal_timeout, .. } => basebackup(global, &name, section, wal_timeout),
        PgCmd::Restore {
            at,
            target,
            timeline,
            keep_archiving,
            delta,
            dry_run,
            recreate,
            ..
        } => {
            let at = at
                .map(|t| timespec::parse_instant(&t, timespec::now()))
                .transpose()
                .map_err(|e| exit::usage(format!("--at: {e}")))?;
            let asked = postgres::RestoreTarget { at, timeline };
            let recreate = recreate.recreate();
            restore(
                global,
                &name,
                asked,
                &target,
                keep_archiving,
                (recreate, delta),
                dry_run,
            )
        }
    }
}

/// `pg basebackup NAME`.
fn basebackup(
    global: &Global,
    name: &str,
    section: &super::config::PostgresConfig,
    wal_timeout: std::time::Duration,
) -> anyhow::Result<i32> {
    let data_directory = section
        .data_directory
        .clone()
        .ok_or_else(|| anyhow!("[postgres.{name}] has no data-directory"))?;
    let cluster = Cluster {
        name: name.to_string(),
        data_directory,
        connection: section.connection.clone().unwrap_or_default(),
    };
    let repo = global.open()?;
    let bar = Bar::new(global.show_progress(), true, "base backup").quiet(global.quiet);
    let stop = super::stop_on_signals()?;
    let report = postgres::basebackup(&repo, &cluster, wal_timeout, Some(&stop), &bar);
    bar.finish();
    let report = report?;
    let pg = postgres::base_backup(&report.snapshot).expect("recorded");
    if global.json {
        output::print_json(&json!({
            "snapshot_id": report.snapshot_id.to_hex(),
            "set": cluster.set(),
            "postgres": pg,
            "summary": report.snapshot.summary,
        }));
    } else if !global.quiet {
        println!(
            "base backup of {name}: snapshot {} in set {}, WAL {} to {}, consistent \
             from {} on",
            report.snapshot_id.short(),
            cluster.set(),
            pg.start_wal,
            pg.stop_wal,
            output::when(&pg.stop_time)
        );
    }
    Ok(exit::OK)
}

/// `pg restore NAME`.
fn restore(
    global: &Global,
    name: &str,
    asked: postgres::RestoreTarget,
    target: &std::path::Path,
    keep_archiving: bool,
    how: (strata::restore::Recreate, bool),
    dry_run: bool,
) -> anyhow::Result<i32> {
    let repo = global.open()?;
    let plan = postgres::plan_restore(&repo, name, asked)?;
    let target = std::path::absolute(target)?;
    if dry_run {
        if global.json {
            output::print_json(&plan);
        } else {
            describe(name, &plan);
        }
        return Ok(exit::OK);
    }
    let bar = Bar::new(global.show_progress(), true, "restore").quiet(global.quiet);
    let report = postgres::restore(
        &repo,
        &plan,
        &target,
        &restore_command(global, name)?,
        keep_archiving,
        Some(super::stop_on_signals()?),
        how,
        &bar,
    );
    bar.finish();
    let postgres::Restored { report, delta } = report?;
    super::restore::warn_skipped(global, &report.skipped_devices);
    if global.json {
        output::print_json(&json!({
            "plan": plan, "target": target, "restore": report, "delta": delta,
        }));
    } else if !global.quiet {
        describe(name, &plan);
        if let Some(d) = &delta {
            println!(
                "delta: kept {} files ({}), rewrote {} ({} fetched), removed {} ({})",
                d.kept_files,
                output::bytes(d.kept_bytes),
                d.rewritten_files,
                output::bytes(d.bytes_fetched),
                d.removed_files,
                output::bytes(d.removed_bytes)
            );
        }
        println!(
            "restored {} files ({}) to {}; start PostgreSQL there to recover{}",
            report.files,
            output::bytes(report.bytes),
            target.display(),
            if keep_archiving {
                " (it archives as the cluster once promoted: stop the old primary first)"
            } else {
                " (archive_mode is off there: it archives nothing as the cluster)"
            }
        );
    }
    Ok(exit::OK)
}

fn describe(name: &str, plan: &postgres::RestorePlan) {
    println!(
        "{name}: base backup {} (consistent from {} on), then {} archived WAL segment(s) \
         on timeline {} up to {}; recovery to {}",
        plan.snapshot.short(),
        output::when(&plan.base.stop_time),
        plan.wal.segments,
        plan.wal.timeline,
        plan.wal.last.as_deref().unwrap_or("-"),
        plan.target_time
            .as_deref()
            .unwrap_or("the end of the archive")
    );
    for n in &plan.notes {
        println!("note: {n}");
    }
}

/// The restore_command PostgreSQL runs (through `sh -c`): this strata, with the same
/// config and repository, so that it finds the archive and its password without this
/// process's environment.
fn restore_command(global: &Global, name: &str) -> anyhow::Result<String> {
    let utf8 = |p: std::path::PathBuf| {
        p.into_os_string()
            .into_string()
            .map_err(|p| anyhow::anyhow!("{p:?}: PostgreSQL's restore_command needs a UTF-8 path"))
    };
    let mut words = vec![utf8(std::env::current_exe()?)?];
    if let Some(c) = &global.config {
        words.push("--config".into());
        words.push(utf8(std::path::absolute(c)?)?);
    }
    if let Some(r) = &global.repo {
        words.push("--repo".into());
        words.push(r.clone());
    }
    words.extend(["wal".into(), "fetch".into(), name.to_string()]);
    let cmd = command_line(&words);
    if global.file.password_file.is_none() && global.file.password_command.is_none() {
        eprintln!(
            "warning: the config names no password-file or password-command: PostgreSQL's \
             restore_command will need STRATA_PASSWORD_FILE in the server's environment"
        );
    }
    Ok(cmd)
}

/// `words` as a restore_command: each word single-quoted for `sh -c`, with PostgreSQL's
/// own escape for `%` (which it would otherwise expand), then `%f %p`.
fn command_line(words: &[String]) -> String {
    let quoted = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''").replace('%', "%%")))
        .collect::<Vec<_>>();
    format!("{} %f %p", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restore_command_quotes_for_the_shell_and_for_postgresql() {
        let words = ["/opt/my strata".to_string(), "it's 100%d".to_string()];
        assert_eq!(
            super::command_line(&words),
            r"'/opt/my strata' 'it'\''s 100%%d' %f %p"
        );
    }
}
