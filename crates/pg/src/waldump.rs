//! Commit times in archived WAL, read by PostgreSQL's own `pg_waldump`: recovery to an
//! instant stops at the first transaction that committed (or aborted) after it, and fails
//! when the WAL it replays holds none. The archive time of a segment says nothing about
//! that; the records in it do.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, FixedOffset, NaiveDateTime};

use crate::{Error, Result};

/// `pg_waldump` of the server's major version (it reads no other version's WAL): from
/// `STRATA_PG_WALDUMP`, Debian's `/usr/lib/postgresql/<major>/bin`, or `PATH`.
pub fn find(cluster: &str, server_version: u32) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_PG_WALDUMP") {
        return Ok(PathBuf::from(p));
    }
    let major = server_version / 10000;
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_waldump"));
    if debian.is_file() {
        return Ok(debian);
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("pg_waldump"))
            .find(|p| p.is_file())
    }) {
        return Ok(p);
    }
    Err(Error::Postgres {
        cluster: cluster.to_string(),
        reason: format!(
            "pg_waldump of PostgreSQL {major} is needed to tell whether the WAL reaches the \
             instant asked (install the server package of PostgreSQL {major}, or name it in \
             STRATA_PG_WALDUMP)"
        ),
    })
}

/// The times of the transaction ends (commits and aborts, the records recovery can stop
/// at) in the segment file `segment`, oldest first. The file must bear its segment name;
/// a record running on into the next segment, which is not there, ends the dump.
pub fn commit_times(tool: &Path, segment: &Path) -> Result<Vec<DateTime<FixedOffset>>> {
    // The tool STRATA_PG_WALDUMP names needs no secret of this process (see psql).
    let out = strata::hooks::without_secrets(&mut Command::new(tool))
        .args(["--rmgr", "Transaction"])
        .arg(segment)
        // The times are printed in the local zone, named by its abbreviation: UTC is the
        // one zone whose name we can read back.
        .env("TZ", "UTC")
        .output()
        .map_err(|e| Error::io(tool, e))?;
    let times = parse(&String::from_utf8_lossy(&out.stdout));
    if times.is_empty() && !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // A segment with no complete record after its start is a dump that "fails" at once.
        if !err.contains("could not find a valid record") && !err.contains("invalid record") {
            return Err(Error::Postgres {
                cluster: String::new(),
                reason: format!("{} {}: {}", tool.display(), segment.display(), err.trim()),
            });
        }
    }
    Ok(times)
}

/// The times in `pg_waldump` lines such as
/// `rmgr: Transaction … desc: COMMIT 2026-12-05 05:00:00.123456 UTC; …`.
fn parse(text: &str) -> Vec<DateTime<FixedOffset>> {
    text.lines()
        .filter_map(|line| {
            let desc = line.split_once("desc: ")?.1;
            let (kind, rest) = desc.split_once(' ')?;
            if !matches!(
                kind,
                "COMMIT" | "ABORT" | "COMMIT_PREPARED" | "ABORT_PREPARED"
            ) {
                return None;
            }
            let stamp = rest.split(" UTC").next()?;
            let t = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f").ok()?;
            Some(t.and_utc().fixed_offset())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_abort_times_are_read_from_dump_lines() {
        let text = "\
rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/01706E28, prev 0/01706DF0, desc: COMMIT 2026-12-05 05:00:00.123456 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/01706E50, prev 0/01706E28, desc: ABORT 2026-12-05 05:00:01.5 UTC
rmgr: Transaction len (rec/tot):    469/   469, tx:        737, lsn: 0/01706E80, prev 0/01706E50, desc: COMMIT 2026-12-05 05:00:02.000001 UTC; inval msgs: catcache 80
rmgr: Transaction len (rec/tot):     48/    48, tx:          0, lsn: 0/01707000, prev 0/01706E80, desc: RUNNING_XACTS nextXid 738
rmgr: Transaction len (rec/tot):     48/    48, tx:        738, lsn: 0/01707030, prev 0/01707000, desc: COMMIT garbage UTC
";
        let t = parse(text);
        let s: Vec<String> = t.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            s,
            [
                "2026-12-05T05:00:00.123456+00:00",
                "2026-12-05T05:00:01.500+00:00",
                "2026-12-05T05:00:02.000001+00:00"
            ]
        );
    }
}
