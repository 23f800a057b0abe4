//! `repair roots`: a root record that cannot be read blocks prune and forget for good,
//! since the blobs it keeps are unknown. When its application cannot store it again (a
//! WAL segment PostgreSQL has deleted), it has to go; its application's own check then
//! says what is missing (for WAL: a gap, fixed by a new base backup).

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::files::is_file_name;
use crate::repo::root::LegacyWal;
use crate::repo::Repository;

/// A record that could not be read.
#[derive(Debug, serde::Serialize)]
pub struct DamagedRecord {
    /// Its kind: `root record`, or `WAL record` (format 1-3).
    pub kind: String,
    /// Its file name.
    pub file: String,
    /// Why it cannot be read.
    pub reason: String,
}

/// What `repair_roots` removed (or, dry, would remove).
#[derive(Debug, Default, serde::Serialize)]
pub struct RootRepair {
    /// Records read.
    pub records: usize,
    /// The damaged ones.
    pub damaged: Vec<DamagedRecord>,
    /// Whether nothing was removed.
    pub dry_run: bool,
}

/// Removes every root record (WAL record in formats 1-3) that cannot be read: damaged,
/// larger than a record can be, or filed under another record's name. A record read
/// damaged is read again just before its removal: one stored again meanwhile stays.
pub fn repair_roots(repo: &Repository, dry_run: bool) -> Result<RootRepair> {
    let kind = match repo.has_roots() {
        true => FileKind::Root,
        false => FileKind::Wal,
    };
    let mut report = RootRepair {
        dry_run,
        ..Default::default()
    };
    for f in repo.files().list(kind)? {
        if !is_file_name(&f.name) {
            continue;
        }
        report.records += 1;
        let Some(reason) = damage(repo, kind, &f.name)? else {
            continue;
        };
        if !dry_run {
            if damage(repo, kind, &f.name)?.is_none() {
                continue;
            }
            repo.files().remove(kind, &f.name)?;
        }
        report.damaged.push(DamagedRecord {
            kind: kind.to_string(),
            file: f.name,
            reason,
        });
    }
    Ok(report)
}

/// Why the record in `file` cannot be read, or `None` if it can (or is gone). An error
/// other than damage (the backend failing) is an error: nothing is removed for it.
fn damage(repo: &Repository, kind: FileKind, file: &str) -> Result<Option<String>> {
    let read = match kind {
        FileKind::Root => repo.checked_root(file).map(|_| ()),
        _ => repo
            .files()
            .load::<LegacyWal>(FileKind::Wal, file)
            .map(|_| ()),
    };
    match read {
        Ok(()) => Ok(None),
        Err(Error::Corrupt { reason, .. }) => Ok(Some(reason)),
        Err(e) => Err(e),
    }
}
