use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::json;
use strata::backup::{self, BackupOptions, Source};
use strata::error::exit;
use strata::timespec;

use super::output::{self, Bar};
use super::Global;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Leave out paths matching this glob (repeatable).
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (# starts a comment).
    #[arg(long = "exclude-file")]
    exclude_files: Vec<PathBuf>,
    /// Do not cross file-system boundaries.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Snapshot time instead of now (RFC 3339, "YYYY-MM-DD HH:MM[:SS]", or a duration ago).
    #[arg(long)]
    time: Option<String>,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// Uploads in flight (default: 4 for S3, 2 for a local directory).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    uploads: usize,
    /// Storage class for this backup's data packs (S3), overriding the repository's.
    #[arg(long)]
    data_storage_class: Option<String>,
    /// File name for --stdin.
    #[arg(long, default_value = "stdin", requires = "stdin")]
    stdin_filename: String,
}

pub fn globset(patterns: &[String]) -> anyhow::Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).with_context(|| format!("bad pattern {p:?}"))?);
        // A pattern without a slash matches a name at any depth (as in .gitignore).
        if !p.contains('/') {
            b.add(Glob::new(&format!("**/{p}")).with_context(|| format!("bad pattern {p:?}"))?);
        }
    }
    Ok(Some(b.build()?))
}

pub fn run(g: &Global, a: BackupArgs) -> anyhow::Result<i32> {
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading exclude file {}", f.display()))?;
        patterns.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    let excludes = globset(&patterns)?;
    let time = a
        .time
        .as_deref()
        .map(|t| timespec::parse_instant(t, timespec::now()))
        .transpose()
        .map_err(|e| anyhow!("--time: {e}"))?;
    if !a.stdin && a.paths.is_empty() {
        return Err(anyhow!("nothing to back up: give paths, or --stdin"));
    }
    // Missing sources are refused before the repository is touched.
    for p in &a.paths {
        std::fs::symlink_metadata(p)
            .map_err(|e| strata::Error::io(p, e))
            .context("source path")?;
    }
    let repo = g.open()?;
    let source = if a.stdin {
        Source::Stdin {
            reader: Box::new(std::io::stdin()),
            name: a.stdin_filename.clone(),
        }
    } else {
        Source::Paths(a.paths.clone())
    };
    let bar = Bar::new(g.show_progress(), true, "backup").verbose(g.verbose > 0);
    let report = backup::run(
        &repo,
        BackupOptions {
            source,
            host: a.host,
            tags: a.tags,
            set: None,
            excludes,
            exclude_patterns: patterns,
            one_file_system: a.one_file_system,
            time,
            uploaders: a.uploads,
            data_storage_class: a.data_storage_class,
        },
        &bar,
    )?;
    bar.finish();
    let s = &report.snapshot.summary;
    if g.json {
        output::print_json(&json!({
            "snapshot_id": report.snapshot_id.to_hex(),
            "time": report.snapshot.time,
            "parent": report.snapshot.parent.map(|p| p.to_hex()),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "dirs": s.dirs,
            "bytes_read": s.bytes_read,
            "bytes_added": s.bytes_added,
            "bytes_stored": s.bytes_stored,
            "blobs_added": s.blobs_added,
            "errors": s.errors,
            "duration_secs": s.duration_secs,
            "warnings": report.warnings,
        }));
    } else if !g.quiet {
        println!(
            "files: {} new, {} changed, {} unchanged; dirs: {}",
            s.files_new, s.files_changed, s.files_unchanged, s.dirs
        );
        println!(
            "read {}, added {} ({} stored after compression) in {:.2}s",
            output::bytes(s.bytes_read),
            output::bytes(s.bytes_added),
            output::bytes(s.bytes_stored),
            s.duration_secs
        );
        println!("snapshot {} saved", report.snapshot_id.to_hex());
    }
    if !report.warnings.is_empty() {
        eprintln!(
            "warning: {} path(s) could not be read; the snapshot was saved without them",
            report.warnings.len()
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}
