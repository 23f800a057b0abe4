//! Object Lock: the retention of what a new snapshot reuses.

use super::*;

impl Repository {
    /// The repository's Object Lock settings, if it has any.
    pub fn object_lock(&self) -> Option<&config::ObjectLock> {
        self.config.object_lock.as_ref()
    }

    /// Under Object Lock, makes sure `packs`, every index file, the config and this key
    /// stay retained at least as long as a snapshot written now: a kept snapshot must
    /// never point at a file that can be deleted. A file whose date is known to be late
    /// enough costs nothing; the others are extended to the period plus its slack from
    /// now. Returns how many files were extended. Call before the snapshot is written.
    pub fn extend_retention(&self, packs: &HashSet<(pack::BlobKind, PackId)>) -> Result<usize> {
        use rayon::prelude::*;
        let (Some(lock), Some(written)) = (self.object_lock(), &self.written) else {
            return Ok(0);
        };
        let period = lock.period_secs as i64;
        let now = chrono::Utc::now().timestamp();
        let needed = now + period;
        let target = crate::backend::Retention {
            mode: lock.mode,
            until: needed + lock.slack().as_secs() as i64,
        };
        let mut files: Vec<(FileKind, String)> = packs
            .iter()
            .map(|(k, id)| (pack_file_kind(*k), id.to_hex()))
            .collect();
        files.extend(
            self.cache
                .index()
                .files()?
                .into_iter()
                .map(|id| (FileKind::Index, id.to_hex())),
        );
        files.push((FileKind::Config, "config".to_string()));
        files.push((FileKind::Key, self.key_id.to_hex()));
        let written = written.lock().unwrap().clone();
        // What this process wrote is remembered for the next runs too.
        let dates: Vec<(&str, String, i64)> = written
            .iter()
            .map(|((kind, name), until)| (kind.dir(), name.clone(), *until))
            .collect();
        self.cache.retention_put(&dates)?;
        let mut due = Vec::new();
        for (kind, name) in files {
            let known = match written.get(&(kind, name.clone())) {
                Some(u) => Some(*u),
                None => self.cache.retention_get(kind.dir(), &name)?,
            };
            if known.is_none_or(|u| u < needed) {
                due.push((kind, name));
            }
        }
        let caps = self.backend.capabilities();
        let Some(locking) = caps.object_lock else {
            return Err(crate::backend::no_object_lock(self.backend.location()));
        };
        let extended: Vec<Result<(FileKind, String, i64)>> = self.with_read_pool(|| {
            due.into_par_iter()
                .map(|(kind, name)| match locking.retain(kind, &name, target) {
                    Ok(()) => Ok((kind, name, target.until)),
                    // Compliance mode refuses to shorten: another host extended further.
                    Err(e) => match locking.retention(kind, &name) {
                        Ok(Some(u)) if u >= needed => Ok((kind, name, u)),
                        _ => Err(e),
                    },
                })
                .collect()
        });
        let mut dates = Vec::new();
        let mut first_error = None;
        for r in extended {
            match r {
                Ok((kind, name, until)) => dates.push((kind.dir(), name, until)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // What was extended is remembered even when something else failed.
        self.cache.retention_put(&dates)?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(dates.len()),
        }
    }
}
