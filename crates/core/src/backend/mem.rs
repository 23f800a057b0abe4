//! A repository in memory: for tests of the engine that need no disk and no server (as
//! restic's `mem` backend). It behaves as the other backends do (the conformance suite in
//! `tests/backend.rs` runs on all three); everything is gone when it is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Backend, Capabilities, FileInfo, FileKind, WriteOptions};
use crate::error::{Error, Result};

/// Files by (directory of their kind, path), so that a kind's files list as one range.
type Files = BTreeMap<(String, String), Arc<Vec<u8>>>;

/// A repository in memory, for tests: shared by its clones, gone when the last goes.
#[derive(Default)]
pub struct MemBackend {
    files: Mutex<Files>,
}

impl MemBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(kind: FileKind, name: &str) -> (String, String) {
        (kind.dir().to_string(), kind.path(name))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Arc<Vec<u8>>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&Self::key(kind, name))
            .cloned()
            .ok_or_else(|| Error::no_file(kind, name))
    }
}

impl Backend for MemBackend {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.get(FileKind::Config, "config").is_ok())
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let dir = kind.dir().to_string();
        Ok(files
            .range((dir.clone(), String::new())..)
            .take_while(|((d, _), _)| *d == dir)
            .map(|((_, path), data)| FileInfo {
                name: path.rsplit('/').next().unwrap_or(path).to_string(),
                size: data.len() as u64,
                storage_class: None,
                modified: None,
                not_regular: None,
            })
            // The config is the only file of its kind, under the empty directory name.
            .filter(|f| kind != FileKind::Config || f.name == "config")
            .collect())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let data = self.get(kind, name)?;
        if data.len() as u64 > kind.max_size() {
            return Err(super::too_large(kind, name, data.len() as u64));
        }
        Ok(data.to_vec())
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let data = self.get(kind, name)?;
        let end = offset.saturating_add(len);
        if end > data.len() as u64 {
            return Err(Error::corrupt(
                format!("{kind} {name}"),
                format!(
                    "short read: wanted {len} bytes at {offset}, got {}",
                    (data.len() as u64).saturating_sub(offset)
                ),
            ));
        }
        Ok(data[offset as usize..end as usize].to_vec())
    }

    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        if how.retention.is_some() {
            return Err(super::no_object_lock(self.location()));
        }
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::key(kind, name), Arc::new(data.to_vec()));
        Ok(())
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::key(kind, name));
        Ok(())
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities::plain()
    }
}
