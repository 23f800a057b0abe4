//! Remedies as values: what fixes a problem that `check` found or an error said. The
//! library names no command; a program words each remedy its own way (the `strata` CLI
//! names its commands), and a library caller may act on it.

/// What to do about a problem or an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    /// Create a repository at the location.
    Init,
    /// Remove the maintenance lock: its process is gone.
    Unlock,
    /// Thaw the archived packs before reading them.
    WarmUp,
    /// Rebuild the index from the headers of the packs that exist.
    RepairIndex,
    /// Data is gone: rebuild the index (so that the next backup stores what is lost
    /// again), then write snapshots without the files that cannot come back.
    RepairIndexThenSnapshots,
    /// No index places a blob: rebuild the index unless that was done since the loss;
    /// what stays lost is stored again by a backup of the same files, and snapshots can
    /// be written without what cannot come back.
    IndexUnindexedPacks,
    /// A pack read damaged: read it again; if the damage stays, move it out of the
    /// repository (keep a copy), then as [`Remedy::RepairIndexThenSnapshots`].
    RereadPack,
    /// A snapshot cannot be read: remove it (once a copy is kept).
    ForgetSnapshot,
    /// WAL a base backup needs is missing and cannot be made again: make sure archiving
    /// works, then take a new base backup, from which recovery no longer needs it.
    FixArchivingThenBaseBackup,
    /// A cluster has no base backup yet: take one.
    TakeBaseBackup,
    /// An archived WAL file cannot be read: take a new base backup of the cluster.
    NewBaseBackup,
    /// Two servers archive as one cluster: stop the one that should not, choose the
    /// timeline to recover, and take a new base backup for a clean line.
    StopSecondArchiver,
    /// An application's record cannot be read or names data that is gone: store it again
    /// from its source.
    StoreRecordAgain,
    /// A mark record cannot be read: move it out of the repository (keep a copy). Until
    /// then every backup reads the whole index instead of trusting its partial view.
    RemoveMarkRecord,
    /// A snapshot this host had seen vanished with no forget recorded: whoever can write
    /// the storage may have rolled the repository back. Find out who removed it (the
    /// bucket's access logs, another host's cache) before trusting `latest`; put the file
    /// back from a copy, or accept the loss by forgetting the snapshot by id (prune waits
    /// until one or the other).
    InvestigateRollback,
    /// Trying key files spent its budget on others (planted ones, most likely): name the
    /// key file to try first (its id, shown by a host that opens the repository; else
    /// the oldest key file the storage lists), then remove the key files nobody knows.
    HintKey,
    /// A snapshot reads, but what it records is unsafe to act on (a base backup whose data
    /// directory leads out of the restore): only a key holder writes that. Remove the
    /// snapshot and find the host that wrote it; other snapshots restore as usual.
    RemoveCraftedSnapshot,
    /// A snapshot's tree expands past what its own summary records, or the summary
    /// records more than any snapshot holds (a tree bomb, written by a faulty or hostile
    /// client): forget it by its id; restore and the listings refuse it.
    ForgetExpandingSnapshot,
    /// A snapshot's tree repeats the entries it holds more times over than the sharing
    /// bound allows: honest where one directory is held many times (hard-linked
    /// generations, rsnapshot), a tree bomb where another host wrote it. Rerun with a
    /// larger `--tree-sharing` if the snapshot is this site's own.
    RaiseTreeSharing,
    /// A symlink, FIFO, directory or device sits where a repository file belongs (only
    /// someone with access to the storage puts one there): readers refuse it. Move it out
    /// of the repository; what it pointed to, and who made it, may be worth knowing.
    RemoveStrayFile,
    /// The store did not answer in time, or could not be reached, after its client's own
    /// tries: see that the endpoint is up and reachable (its address, the region, the
    /// network), or give it longer, then run the command again.
    CheckEndpoint,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn errors_carry_their_remedy() {
        let locked = |stale| Error::Locked {
            holders: "prune by a@b".into(),
            stale,
        };
        assert_eq!(Error::NoRepository("x".into()).remedy(), Some(Remedy::Init));
        assert_eq!(locked(true).remedy(), Some(Remedy::Unlock));
        // A live lock is waited for, never removed.
        assert_eq!(locked(false).remedy(), None);
        let e = Error::corrupt("index 01", "bad").with_remedy(Remedy::RepairIndex);
        assert_eq!(e.remedy(), Some(Remedy::RepairIndex));
        assert_eq!(e.to_string(), Error::corrupt("index 01", "bad").to_string());
        assert_eq!(Error::Internal("x".into()).remedy(), None);
    }

    /// The library's messages name no command of any program that uses it: remedies are
    /// values the program words (issue 26).
    #[test]
    fn no_library_message_names_a_command() {
        let mut offenders = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Up to the unit tests: what they assert is not a message.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for (i, line) in code.lines().enumerate() {
                    let line = line.trim_start();
                    if !line.starts_with("//") && line.contains("`strata ") {
                        offenders.push(format!("{}:{}: {line}", path.display(), i + 1));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
