//! Snapshots: written, listed (damage reported, not fatal), found by id, prefix or instant.

use super::*;

/// The repository's snapshot manifests: `repo.snapshots()`.
pub struct Snapshots<'r>(&'r Repository);

impl Repository {
    /// The snapshots.
    pub fn snapshots(&self) -> Snapshots<'_> {
        Snapshots(self)
    }
}

impl Snapshots<'_> {
    /// Stores a snapshot manifest (after its packs and index are durable: write order,
    /// format-spec §7).
    pub fn write(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let repo = self.0;
        let wire = snapshot::SnapshotWire::for_format(snap, repo.config.version);
        let id = SnapshotId(repo.save_file(FileKind::Snapshot, &wire)?);
        repo.still_there()?;
        repo.cache.snapshots().put(&id, &encode(snap))?;
        Ok(id)
    }

    /// All snapshots, oldest first; manifests come from the cache when it has them. A
    /// damaged snapshot file is skipped with a warning (`check` reports it).
    pub fn list(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (snaps, damaged) = self.with_damage()?;
        for (id, e) in damaged {
            self.0.warn(format!("skipped snapshot {id}: {e}"));
        }
        Ok(snaps)
    }

    /// One snapshot's manifest by id: from the cache, else one read (no listing).
    pub fn get(&self, id: &SnapshotId) -> Result<Snapshot> {
        let repo = self.0;
        if let Some(s) = repo
            .cache
            .snapshots()
            .get(id)?
            .and_then(|bytes| ciborium::from_reader::<Snapshot, _>(&bytes[..]).ok())
        {
            return Ok(s);
        }
        let s: Snapshot = repo.load_file(FileKind::Snapshot, &id.to_hex())?;
        repo.cache.snapshots().put(id, &encode(&s))?;
        Ok(s)
    }

    /// Every snapshot, or an error naming the first damaged one: for operations that must
    /// see all of them (prune would otherwise delete what a damaged one references).
    pub(crate) fn all_intact(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (snaps, damaged) = self.with_damage()?;
        match damaged.into_iter().next() {
            None => Ok(snaps),
            Some((id, e)) => Err(Error::corrupt(
                format!("snapshot {id}"),
                format!("{e}; stopping, since what it references cannot be known"),
            )
            .with_remedy(crate::Remedy::ForgetSnapshot)),
        }
    }

    /// The snapshot files that cannot be read, with why (`forget --snapshot` removes them
    /// by id like any other).
    pub fn damaged(&self) -> Result<Vec<(SnapshotId, Error)>> {
        Ok(self.with_damage()?.1)
    }

    /// Every readable snapshot, and the damaged ones with their errors (not warned about:
    /// the caller says what they cost it).
    #[allow(clippy::type_complexity)]
    pub fn with_damage(&self) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>)> {
        let repo = self.0;
        let listed_at = crate::timespec::now();
        let files = repo.backend.list(FileKind::Snapshot)?;
        let listed: HashSet<SnapshotId> =
            (files.iter()).filter_map(|f| f.name.parse().ok()).collect();
        let mut out = Vec::with_capacity(listed.len());
        let mut damaged = Vec::new();
        let mut missing = Vec::new();
        // Too large to be one: damaged from its listed size, never read (format-spec §1).
        let mut oversized: HashMap<SnapshotId, Error> = (files.iter())
            .filter_map(|f| Some((f.name.parse().ok()?, f.oversized(FileKind::Snapshot)?)))
            .collect();
        for id in listed.iter().copied() {
            let cached = repo
                .cache
                .snapshots()
                .get(&id)?
                .and_then(|bytes| ciborium::from_reader::<Snapshot, _>(&bytes[..]).ok());
            match (cached, oversized.remove(&id)) {
                (Some(s), _) => out.push((id, s)),
                (None, Some(e)) => damaged.push((id, e)),
                (None, None) => missing.push(id),
            }
        }
        for (id, loaded) in repo.load_many::<Snapshot, _>(FileKind::Snapshot, &missing) {
            match loaded {
                Ok(s) => {
                    repo.cache.snapshots().put(&id, &encode(&s))?;
                    out.push((id, s));
                }
                Err(e @ Error::Corrupt { .. }) => damaged.push((id, e)),
                // Forgotten since the listing: not there, not damaged.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // A snapshot new to this listing may have been written after the index was read
        // (a backup finishing meanwhile): its index files are written before it, so
        // reading the index files new since then makes every listed snapshot whole.
        if !missing.is_empty() && repo.synced.load(std::sync::atomic::Ordering::SeqCst) {
            repo.sync_index()?;
        }
        out.sort_by(|a, b| {
            a.1.datetime()
                .cmp(&b.1.datetime())
                .then_with(|| a.0.cmp(&b.0))
        });
        let forgotten = repo.known_forgotten()?;
        out.retain(|(id, _)| match forgotten.get(id) {
            // Seen gone (by another process of this host) only after this listing began:
            // a forget racing it, not a file put back (hostile pass 10).
            Some(when) if !super::rollback::seen_gone_before(when, listed_at) => true,
            None => true,
            Some(when) => {
                damaged.push((*id, put_back(id, when)));
                false
            }
        });
        damaged.sort_by_key(|d| d.0);
        repo.watch_for_rollback(&listed, &out)?;
        Ok((out, damaged))
    }

    /// Resolves `latest`, a full id or a unique prefix.
    pub fn find(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        self.find_in(spec, &snapshot::SnapshotFilter::default())
    }

    /// As [`Snapshots::find`]; `latest` means the newest that passes the filter,
    /// which must leave one lineage (see [`snapshot::select_at`]).
    pub fn find_in(
        &self,
        spec: &str,
        filter: &snapshot::SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        let (all, damaged) = self.with_damage()?;
        let spec_l = spec.to_ascii_lowercase();
        let named = |id: &SnapshotId| spec != "latest" && id.to_hex().starts_with(&spec_l);
        let (mut asked, others): (Vec<_>, Vec<_>) = damaged.into_iter().partition(|d| named(&d.0));
        for (id, e) in others {
            self.0.warn(format!("skipped snapshot {id}: {e}"));
        }
        if spec == "latest" {
            return snapshot::select_at(all, None, filter);
        }
        let mut hits: Vec<_> = all.into_iter().filter(|(id, _)| named(id)).collect();
        match (hits.len(), asked.len()) {
            (1, 0) => Ok(hits.pop().unwrap()),
            // The one asked for is there but cannot be read: damaged, not missing.
            (0, 1) => Err(asked.pop().unwrap().1),
            (0, 0) => Err(Error::not_found(Missing::Snapshot(spec.to_string()))),
            (n, m) => Err(Error::Ambiguous {
                what: "snapshot",
                prefix: spec.to_string(),
                matches: n + m,
            }),
        }
    }

    /// Deletes a snapshot manifest. The data it referenced stays until prune. Out of the
    /// cache first: a manifest the cache still holds once its file is gone is one this host
    /// did not forget (a rollback alarm, format-spec §16.3).
    pub fn remove(&self, id: &SnapshotId) -> Result<()> {
        self.0.cache.snapshots().remove(id)?;
        self.0.backend.delete(FileKind::Snapshot, &id.to_hex())
    }

    /// Forgets `ids`: they are first named in a mark record, durably, so that other hosts
    /// that saw them do not take their absence for a rollback (format-spec §16.3); then
    /// each manifest is deleted.
    pub fn forget(&self, ids: &[SnapshotId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.0.write_forget_record(ids)?;
        for id in ids {
            match self.remove(id) {
                // Gone already (a vanished snapshot the operator accounts for).
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.0.dismiss_vanished(ids)
    }

    /// The rollback alarms standing after the last listing (format-spec §16.3).
    pub fn vanished(&self) -> Result<Vec<super::rollback::Vanished>> {
        self.0.vanished_snapshots()
    }
}

/// A snapshot this host saw forgotten (`when`), listed again: not a snapshot to restore.
fn put_back(id: &SnapshotId, when: &str) -> Error {
    Error::corrupt(format!("snapshot {id}"), put_back_reason(when))
}

/// Why a snapshot forgotten at `when` and listed again is not used.
pub(crate) fn put_back_reason(when: &str) -> String {
    format!(
        "it was forgotten ({when}) and its file is back: a forget stopped before removing \
         it, or someone with access to the storage put it there; it is not used (forget it \
         again to remove the file)"
    )
}
