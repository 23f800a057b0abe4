//! Object Lock: every file written carries a retention date.
//!
//! A layer over a backend, installed by the repository when its config asks for Object
//! Lock, so that no write path can forget the retention: packs, index files, snapshots,
//! keys, the config, audit records. Lock files are exempt: they are deleted minutes after
//! they are written and protect nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::WriteOptions;
use super::{Backend, BackendRef, Capabilities, FileInfo, FileKind, LockMode, Retention};
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

    fn retained(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        // Lock files are exempt (see above), and a retention asked for explicitly wins.
        if kind == FileKind::Lock || how.retention.is_some() {
            return self.inner.put(kind, name, data, how);
        }
        let r = self.retention_from_now();
        let how = WriteOptions {
            retention: Some(r),
            ..*how
        };
        self.inner.put(kind, name, data, &how)?;
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
    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        self.retained(kind, name, data, how)
    }
    /// In a versioned bucket this leaves a delete marker: the file leaves the repository
    /// at once, its locked version stays until prune purges it after its date.
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        self.inner.delete_many(kind, names)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    #[test]
    fn deletions_reach_the_backend_below() {
        let mem: BackendRef = Arc::new(MemBackend::new());
        for name in ["i1", "i2", "i3"] {
            mem.write(FileKind::Index, name, b"x").unwrap();
        }
        let r = Retaining::new(mem.clone(), LockMode::Governance, Duration::from_secs(60));
        r.delete(FileKind::Index, "i2").unwrap();
        r.delete_many(FileKind::Index, &["i1".into(), "i3".into()])
            .unwrap();
        assert!(mem.list(FileKind::Index).unwrap().is_empty());
    }
}
