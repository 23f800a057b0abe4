//! Archive storage and bucket lifecycle rules, through the backend's capabilities.

use super::*;

impl Repository {
    /// Whether a file can be read now or must be thawed first.
    pub(crate) fn thaw_state(
        &self,
        kind: FileKind,
        name: &str,
    ) -> Result<crate::backend::ThawState> {
        self.cold_storage()?.thaw_state(kind, name)
    }

    /// Asks the store for a readable copy of an archived file.
    pub(crate) fn thaw(
        &self,
        kind: FileKind,
        name: &str,
        days: u32,
        tier: crate::backend::ThawTier,
    ) -> Result<()> {
        self.cold_storage()?.thaw(kind, name, days, tier)
    }

    /// Thawing is asked of archived files only (their listing names an archive class): a
    /// store that lists one but offers no way to thaw it is refused, never taken as hot.
    pub(super) fn cold_storage(&self) -> Result<&dyn crate::backend::ColdStorage> {
        self.backend
            .capabilities()
            .cold_storage
            .ok_or_else(|| Error::BadInput {
                what: "cold storage",
                reason: format!(
                    "{} lists archived files but cannot thaw them (its backend offers no \
                     cold-storage capability)",
                    self.backend.location()
                ),
            })
    }

    /// Lifecycle rules of the bucket that would harm this repository (`None` where the
    /// store has none). With `fresh_for`, a result this machine found that recently is
    /// taken from the cache instead of asking the store again.
    pub fn lifecycle_dangers(
        &self,
        fresh_for: Option<std::time::Duration>,
    ) -> Result<Option<Vec<crate::backend::lifecycle::Danger>>> {
        const KEY: &str = "lifecycle";
        let now = crate::timespec::now().timestamp();
        if let Some(fresh) = fresh_for {
            let cached = self.cache.meta_get(KEY)?.and_then(|v| {
                let (at, json) = v.split_once(' ')?;
                let at: i64 = at.parse().ok()?;
                (now - at < fresh.as_secs() as i64)
                    .then(|| serde_json::from_str(json).ok())
                    .flatten()
            });
            if let Some(c) = cached {
                return Ok(c);
            }
        }
        let found = self
            .backend
            .capabilities()
            .lifecycle
            .map(|l| l.rules())
            .transpose()?
            .map(|(prefix, rules)| crate::backend::lifecycle::dangers(&rules, &prefix));
        if let Ok(json) = serde_json::to_string(&found) {
            self.cache.meta_put(KEY, &format!("{now} {json}"))?;
        }
        Ok(found)
    }
}
