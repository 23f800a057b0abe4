//! Object Lock: every file written carries a retention date.
//!
//! A layer over a backend, installed by the repository when its config asks for Object
//! Lock, so that no write path can forget the retention: packs, index files, snapshots,
//! keys, the config, audit records. Lock files are exempt: they are deleted minutes after
//! they are written and protect nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, BackendRef, FileInfo, FileKind, LockMode, ObjectVersion, Purge, Retention};
use super::{ThawState, ThawTier};
use crate::error::Result;

/// Retention dates this process gave, by file: a backup need not extend what it wrote.
pub(crate) type Written = Arc<Mutex<HashMap<(FileKind, String), i64>>>;

/// A backend whose writes are retained for `period` from the moment of each write.
pub struct Retaining {
    inner: BackendRef,
    mode: LockMode,
    period: Duration,
    written: Written,
}

impl Retaining {
    /// Wraps `inner`; its bucket must have Object Lock enabled.
    pub fn new(inner: BackendRef, mode: LockMode, period: Duration) -> Self {
        Retaining {
            inner,
            mode,
            period,
            written: Written::default(),
        }
    }

    /// The retention a write now gets.
    pub fn retention_from_now(&self) -> Retention {
        Retention {
            mode: self.mode,
            until: chrono::Utc::now().timestamp() + self.period.as_secs() as i64,
        }
    }

    pub(crate) fn written(&self) -> Written {
        self.written.clone()
    }

    fn retained(&self, kind: FileKind, name: &str, data: &[u8], class: Option<&str>) -> Result<()> {
        if kind == FileKind::Lock {
            return self.inner.write_in_class(kind, name, data, class);
        }
        let r = self.retention_from_now();
        self.inner
            .write_retained(kind, name, data, class, Some(r))?;
        self.written
            .lock()
            .unwrap()
            .insert((kind, name.to_string()), r.until);
        Ok(())
    }
}

impl Backend for Retaining {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.inner.list(kind)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.retained(kind, name, data, None)
    }
    fn write_in_class(
        &self,
        kind: FileKind,
        name: &str,
        data: &[u8],
        class: Option<&str>,
    ) -> Result<()> {
        self.retained(kind, name, data, class)
    }
    fn write_retained(
        &self,
        kind: FileKind,
        name: &str,
        data: &[u8],
        class: Option<&str>,
        retention: Option<Retention>,
    ) -> Result<()> {
        self.inner
            .write_retained(kind, name, data, class, retention)
    }
    /// In a versioned bucket this leaves a delete marker: the file leaves the repository
    /// at once, its locked version stays until prune purges it after its date.
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<Vec<FileInfo>> {
        self.inner.remove_stale_temporaries(older_than)
    }
    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }
    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }
    fn request_count(&self) -> Option<u64> {
        self.inner.request_count()
    }
    fn thaw_state(&self, kind: FileKind, name: &str) -> Result<ThawState> {
        self.inner.thaw_state(kind, name)
    }
    fn thaw(&self, kind: FileKind, name: &str, days: u32, tier: ThawTier) -> Result<()> {
        self.inner.thaw(kind, name, days, tier)
    }
    fn lifecycle(&self) -> Result<Option<(String, Vec<super::lifecycle::LifecycleRule>)>> {
        self.inner.lifecycle()
    }
    fn object_lock_enabled(&self) -> Result<Option<bool>> {
        self.inner.object_lock_enabled()
    }
    fn retain(&self, kind: FileKind, name: &str, retention: Retention) -> Result<()> {
        self.inner.retain(kind, name, retention)
    }
    fn retention(&self, kind: FileKind, name: &str) -> Result<Option<i64>> {
        self.inner.retention(kind, name)
    }
    fn versions(&self, kind: FileKind) -> Result<Vec<ObjectVersion>> {
        self.inner.versions(kind)
    }
    fn purge_version(&self, kind: FileKind, name: &str, version_id: &str) -> Result<Purge> {
        self.inner.purge_version(kind, name, version_id)
    }
}
