//! Mark records (format-spec §7.3): the packs an operation took out of the live set. A
//! backup on a warm cache reads these instead of every other writer's index file, so that
//! its cost does not grow with the number of hosts sharing the repository.

use chrono::{DateTime, Duration, FixedOffset};
use serde::{Deserialize, Serialize};

use super::*;
use crate::id::{IndexId, KeyId, MarkId};

/// Index files of at most this many bytes (as stored) a backup may merge into a later
/// one of its own and delete without a mark record (format-spec §10); readers choose a
/// larger file as their sentinel where one is listed (§7.3).
pub(crate) const MERGEABLE_INDEX_BYTES: u64 = 256 << 10;

/// How many of the sentinel's last bytes its check compares: its authentication tag.
pub(crate) const SENTINEL_PRINT: usize = 16;

/// What the sentinel's check found (format-spec §7.3).
#[derive(Debug)]
pub(crate) enum Sentinel {
    /// No sentinel yet.
    None,
    /// There, with the bytes it had.
    Holds,
    /// Not there.
    Gone(IndexId),
    /// There, with other bytes: junk under its name, or another file.
    Altered(IndexId),
}

/// The oldest the last listing of `marks/` may be for a backup to go on from a partial
/// view; older, it reads every index file again (format-spec §7.3).
pub const PARTIAL_VIEW_MAX_AGE: Duration = Duration::days(6);

/// How long prune keeps a mark record: a day beyond [`PARTIAL_VIEW_MAX_AGE`], for clocks
/// that disagree.
pub const RECORD_RETENTION: Duration = Duration::days(7);

/// One mark record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkRecord {
    /// Always 1.
    pub version: u32,
    /// When it was written (RFC 3339).
    pub time: String,
    /// The host that wrote it.
    pub host: String,
    /// The packs the operation takes out of the live set.
    pub packs: Vec<PackId>,
    /// Readers with a partial view must read every index file again (a repair of the
    /// index, which cannot name the packs of index files it could not read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reread: bool,
    /// The index files the operation replaces (it deletes them once its own are
    /// durable): a partial view whose sentinel file vanished finds it here, or else reads
    /// every index file (format-spec §7.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<IndexId>,
    /// Key files removed (`key remove`, `key passwd`): a reader that opened the repository
    /// with a cached copy of one of them lists the key files before it goes on
    /// (format-spec §3.1, §12).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyId>,
    /// The snapshots a forget removed: hosts that saw them do not take their absence for
    /// a rollback (format-spec §16.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<crate::id::SnapshotId>,
}

/// What the mark records one listing found new ask of the run that read them.
#[derive(Debug, Default)]
pub(crate) struct RecordsRead {
    /// Read every index file again (a repair of the index, or a record that did not open).
    pub reread: bool,
    /// Key files removed since the last listing.
    pub removed_keys: Vec<KeyId>,
}

impl MarkRecord {
    /// A record written now by this host, naming nothing yet.
    fn empty() -> Self {
        MarkRecord {
            version: 1,
            time: crate::timespec::now().to_rfc3339(),
            host: crate::util::hostname(),
            packs: Vec::new(),
            reread: false,
            superseded: Vec::new(),
            keys: Vec::new(),
            forgotten: Vec::new(),
        }
    }

    /// When it was written; one whose time does not parse counts as written now (it is
    /// kept, and its packs avoided, the longest).
    pub fn written(&self, now: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(&self.time).unwrap_or(now)
    }
}

/// How a run sees the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexView {
    /// Not at all (`status`: snapshots and audit records only).
    None,
    /// Every index file read: what restores, checks and prunes need.
    Full,
    /// Where the format allows (version 5, a warm cache listed recently): the index files
    /// read before and written since, less the packs of every mark record. What a backup
    /// needs to deduplicate safely.
    Partial,
}

impl Repository {
    /// Writes a mark record naming `packs`, durably, before the index files that mark or
    /// drop them (format-spec §7.3: a reader listing `marks/` after those files exist must
    /// find it). Nothing in repositories before version 5, nor when `packs` is empty.
    pub(crate) fn write_mark_record(
        &self,
        packs: &[PackId],
        reread: bool,
        superseded: &[IndexId],
    ) -> Result<Option<MarkId>> {
        if packs.is_empty() && !reread && superseded.is_empty() {
            return Ok(None);
        }
        let mut packs = packs.to_vec();
        packs.sort();
        packs.dedup();
        self.save_mark_record(MarkRecord {
            packs,
            reread,
            superseded: superseded.to_vec(),
            ..MarkRecord::empty()
        })
    }

    /// Writes a record naming key files about to be removed, durably, before they go: a
    /// host that opens the repository with a cached copy of one learns it from the listing
    /// of `marks/` it makes anyway, instead of listing `keys/` every run (format-spec §3.1).
    pub(crate) fn write_key_record(&self, removed: &[KeyId]) -> Result<Option<MarkId>> {
        self.save_mark_record(MarkRecord {
            keys: removed.to_vec(),
            ..MarkRecord::empty()
        })
    }

    /// Writes a record naming snapshots about to be forgotten, durably, before they go.
    pub(crate) fn write_forget_record(
        &self,
        forgotten: &[crate::id::SnapshotId],
    ) -> Result<Option<MarkId>> {
        self.save_mark_record(MarkRecord {
            forgotten: forgotten.to_vec(),
            ..MarkRecord::empty()
        })
    }

    fn save_mark_record(&self, record: MarkRecord) -> Result<Option<MarkId>> {
        if !self.config.partial_views() {
            return Ok(None);
        }
        let id = MarkId(self.save_file(FileKind::Marks, &record)?);
        self.cache.index().add_mark_record(&id, &record)?;
        Ok(Some(id))
    }

    /// Lists `marks/`, reads the records the cache has not (all of them after the blob
    /// index was rebuilt), and takes their packs out of what backups deduplicate against.
    /// Records the listing no longer has are forgotten; the packs they named stay out (a
    /// view read before their prune may still name them) until the next rebuild.
    /// Remembers when it listed: the start of the listing, so that a record written during
    /// it counts as unread next time.
    pub(crate) fn apply_mark_records(&self) -> Result<RecordsRead> {
        let mut read = RecordsRead::default();
        if !self.config.partial_views() {
            return Ok(read);
        }
        let listed_at = crate::timespec::now();
        let listed: Vec<MarkId> = (self.backend.list(FileKind::Marks)?.into_iter())
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let index = self.cache.index();
        let known = index.mark_records()?;
        let new: Vec<MarkId> = listed
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        for (id, loaded) in self.load_many::<MarkRecord, _>(FileKind::Marks, &new) {
            match loaded {
                Ok(record) => {
                    read.reread |= record.reread;
                    read.removed_keys.extend_from_slice(&record.keys);
                    index.add_mark_record(&id, &record)?;
                }
                // A record that cannot be read names packs we cannot know: only a view of
                // every index file is safe then. Not remembered, so read again next time
                // (prune deletes it once past the retention).
                Err(e @ Error::Corrupt { .. }) => {
                    self.warn(format!(
                        "{e}; every index file is read instead of the mark records"
                    ));
                    read.reread = true;
                }
                // Deleted since the listing: past its retention, its packs long settled.
                Err(Error::NotFound { .. }) => {}
                // Each record read so far is remembered with its packs dropped; the rest
                // are read next time.
                Err(e) => return Err(e),
            }
        }
        index.keep_mark_records(&listed)?;
        index.set_marks_listed(listed_at)?;
        Ok(read)
    }

    /// Whether this run may go on from a partial view: the format has mark records, the
    /// cache has read index files before and listed `marks/` less than
    /// [`PARTIAL_VIEW_MAX_AGE`] ago.
    pub(crate) fn partial_view_fresh(&self) -> Result<bool> {
        if !self.config.partial_views() {
            return Ok(false);
        }
        let index = self.cache.index();
        let Some(listed) = index.marks_listed()? else {
            return Ok(false);
        };
        let age = crate::timespec::now() - listed;
        Ok(!index.files()?.is_empty() && age < PARTIAL_VIEW_MAX_AGE && age > -Duration::days(1))
    }

    /// Whether a partial view may go on after its mark records were read: the sentinel,
    /// the index file this cache wrote or listed last, is still there, or a record read
    /// says which operation superseded it (then the newest index file listed now takes its
    /// place). A sentinel gone with no record for it means a record was deleted or the
    /// repository rolled back: only every index file tells then. One ranged read, one more
    /// listing after a prune.
    pub(crate) fn sentinel_holds(&self) -> Result<bool> {
        let probe = self.probe_sentinel()?;
        self.sentinel_verdict(probe)
    }

    /// The sentinel's ranged read alone (it needs no mark record read, so it can be in
    /// flight beside the listing of `marks/`): its last bytes, compared with those it had.
    pub(crate) fn probe_sentinel(&self) -> Result<Sentinel> {
        let index = self.cache.index();
        let Some(s) = index.sentinel()? else {
            return Ok(Sentinel::None);
        };
        let name = s.to_hex();
        let read = match index.sentinel_print()? {
            // An empty tail: chosen from a listing, its bytes are learnt at this first check.
            Some((size, tail)) => {
                let learn = tail.is_empty();
                let len = if learn { SENTINEL_PRINT } else { tail.len() } as u64;
                let at = size.saturating_sub(len);
                (self
                    .backend
                    .read_range(FileKind::Index, &name, at, size - at))
                .and_then(|b| {
                    if !learn {
                        return Ok(b == tail);
                    }
                    let whole = b.len() as u64 == size - at;
                    if whole {
                        index.set_sentinel_print(size, &b)?;
                    }
                    Ok(whole)
                })
            }
            // Chosen by a cache of an earlier version: there or not, no more.
            None => (self.backend.read_range(FileKind::Index, &name, 0, 1)).map(|_| true),
        };
        match read {
            Ok(true) => Ok(Sentinel::Holds),
            // Shorter than it was: a short read.
            Ok(false) | Err(Error::Corrupt { .. }) => Ok(Sentinel::Altered(s)),
            Err(Error::NotFound { .. }) => Ok(Sentinel::Gone(s)),
            Err(e) => Err(e),
        }
    }

    /// [`Repository::sentinel_holds`] once the probe is back and the records are read.
    pub(crate) fn sentinel_verdict(&self, probe: Sentinel) -> Result<bool> {
        let index = self.cache.index();
        let why = match probe {
            Sentinel::Holds => return Ok(true),
            Sentinel::None => None,
            Sentinel::Gone(s) if index.superseded(&s)? => None,
            // Small: its writer may have merged it into a later file of its own, which
            // needs no record. Read every index file again, without alarm.
            Sentinel::Gone(_)
                if index
                    .sentinel_print()?
                    .is_some_and(|(size, _)| size <= MERGEABLE_INDEX_BYTES) =>
            {
                index.clear()?;
                return Ok(false);
            }
            Sentinel::Gone(s) => Some(format!(
                "index file {} is gone and no mark record says which prune replaced it (a \
                 record deleted, or the repository rolled back)",
                s.short()
            )),
            Sentinel::Altered(s) => Some(format!(
                "index file {} no longer holds what it held (rewritten by whoever holds the \
                 bucket, or the repository rolled back)",
                s.short()
            )),
        };
        if let Some(why) = why {
            self.warn(format!("{why}: every index file is read"));
            // From scratch: files under names the cache knows may hold other bytes now,
            // and what it read from them before may name packs that are gone.
            index.clear()?;
            return Ok(false);
        }
        let listed = self.backend.list(FileKind::Index)?;
        self.choose_sentinel(&listed)
    }

    /// Makes the largest index file of `listed` the sentinel, with its listed size (its last
    /// bytes are learnt at its first check: no request here, where a restore may be all
    /// the cache ever does); false if there is none.
    pub(crate) fn choose_sentinel(&self, listed: &[crate::backend::FileInfo]) -> Result<bool> {
        let index = self.cache.index();
        // The largest: small files may be merged away by the host that wrote them
        // without a record (format-spec §10); the newest among equals.
        let chosen = (listed.iter())
            .filter_map(|f| Some((f.size, f.modified, f.name.parse::<IndexId>().ok()?)))
            .max();
        let Some((size, _, id)) = chosen else {
            index.set_sentinel(None)?;
            return Ok(false);
        };
        index.set_sentinel(Some(&id))?;
        index.set_sentinel_print(size, &[])?;
        Ok(true)
    }

    /// Before each backup job on a partial view: the mark records are listed again when
    /// the last listing is over an hour old (one process backing up several sets in turn
    /// can run for longer than a prune's grace period, §10.1).
    pub(crate) fn refresh_partial_view(&self) -> Result<()> {
        if !self.partial_view() {
            return Ok(());
        }
        let listed = self.cache.index().marks_listed()?;
        let stale = listed.is_none_or(|t| crate::timespec::now() - t > Duration::hours(1));
        if stale && (self.apply_mark_records()?.reread || !self.sentinel_holds()?) {
            self.stop_deduplicating()?;
        }
        Ok(())
    }

    /// A record asked for every index file to be read again in the middle of a run (a
    /// repair dropped packs no record can name): nothing more is deduplicated in this run,
    /// and the next one reads every index file.
    pub(crate) fn stop_deduplicating(&self) -> Result<()> {
        self.dedupe_off
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cache.index().forget_marks_listed()
    }

    /// Deletes the mark records older than [`RECORD_RETENTION`] (prune, once its index
    /// files are durable); a record that could not be read goes by the listing's time.
    /// Returns how many went.
    pub(crate) fn delete_old_mark_records(&self) -> Result<usize> {
        if !self.config.partial_views() {
            return Ok(0);
        }
        let now = crate::timespec::now();
        let index = self.cache.index();
        let read: HashMap<MarkId, String> = index.mark_record_times()?.into_iter().collect();
        let mut deleted = 0;
        for f in self.backend.list(FileKind::Marks)? {
            let Ok(id) = f.name.parse::<MarkId>() else {
                continue;
            };
            // Not remembered (the cache was rebuilt since): read for its time only, not
            // taken as applied.
            let listed = (f.modified)
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map(|t| t.fixed_offset());
            let written = match read.get(&id) {
                Some(t) => DateTime::parse_from_rfc3339(t).ok().or(listed),
                None => match self.load_file::<MarkRecord>(FileKind::Marks, &f.name) {
                    Ok(r) => DateTime::parse_from_rfc3339(&r.time).ok().or(listed),
                    Err(Error::Corrupt { .. }) => listed,
                    Err(Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            if written.is_some_and(|w| now - w > RECORD_RETENTION) {
                match self.delete_file(FileKind::Marks, &f.name) {
                    Ok(()) | Err(Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(e),
                }
                index.forget_mark_record(&id)?;
            }
        }
        Ok(deleted)
    }
}
