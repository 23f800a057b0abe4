//! Root records (format-spec §15): what applications keep in a repository beside snapshots.
//!
//! A root is a sealed record of an application (its namespace, its own key, an opaque
//! payload) that names the blobs it keeps alive. Prune keeps every root's blobs and check
//! verifies them without knowing what they mean; the PostgreSQL WAL archive is one such
//! application, and the next needs no change here.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Root record version.
pub const ROOT_VERSION: u32 = 1;

/// The largest root record file read: about a million blobs. A WAL record is a few hundred
/// bytes; a bigger file is damage (whoever holds the bucket could otherwise make every
/// check and prune read gigabytes into memory).
pub const MAX_ROOT_FILE: u64 = FileKind::Root.max_size();

/// A root record: an application's record that keeps `blobs` alive.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Root {
    /// Record version ([`ROOT_VERSION`]).
    pub version: u32,
    /// The application's namespace (`postgres.wal`): lower-case letters, digits, `.`, `-`
    /// and `_`.
    pub namespace: String,
    /// The application's name for this record, unique in its namespace.
    pub key: String,
    /// The blobs this record keeps alive, in the application's order.
    pub blobs: Vec<BlobId>,
    /// When it was written (RFC 3339).
    pub time: String,
    /// The host that wrote it.
    pub host: String,
    /// The application's own bytes, opaque to the repository.
    #[serde(with = "serde_bytes", default)]
    pub payload: Vec<u8>,
}

impl Root {
    /// A record of `namespace`/`key` written now by this host.
    pub fn new(namespace: &str, key: &str, blobs: Vec<BlobId>, payload: Vec<u8>) -> Result<Root> {
        check_namespace(namespace)?;
        Ok(Root {
            version: ROOT_VERSION,
            namespace: namespace.to_string(),
            key: key.to_string(),
            blobs,
            time: crate::timespec::now().to_rfc3339(),
            host: crate::util::hostname(),
            payload,
        })
    }
}

/// Refuses a namespace that is empty, longer than 64 bytes or has other characters than
/// lower-case ASCII letters, digits, `.`, `-` and `_`.
pub fn check_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    Err(Error::BadInput {
        what: "root namespace",
        reason: format!(
            "{namespace:?}: 1-64 characters of a-z, 0-9, '.', '-' and '_' make a namespace"
        ),
    })
}

/// A WAL record of format versions 1-3 (`wal/`, format-spec §14.1) as far as the
/// repository reads it: the blobs it keeps alive.
#[derive(Deserialize)]
pub(crate) struct LegacyWal {
    pub cluster: String,
    pub name: String,
    pub content: Vec<BlobId>,
}

impl Repository {
    /// Whether this repository's format has root records (version 4 on).
    pub fn has_roots(&self) -> bool {
        self.config().roots()
    }

    pub(crate) fn root_file(&self, namespace: &str, key: &str) -> String {
        hex::encode(self.key.root_name(namespace, key))
    }

    fn need_roots(&self) -> Result<()> {
        if self.has_roots() {
            return Ok(());
        }
        Err(Error::BadInput {
            what: "root record",
            reason: format!(
                "this repository is of format version {}; root records need version 4 \
                 (readers of older versions would not keep their blobs)",
                self.config().version
            ),
        })
    }

    /// Stores a root record (a record of the same namespace and key is replaced). Write
    /// order: every blob it names must already be in a durable pack and index file, which
    /// is checked here against the index.
    pub fn write_root(&self, root: &Root) -> Result<()> {
        self.need_roots()?;
        check_namespace(&root.namespace)?;
        for id in &root.blobs {
            self.lookup_blob(id)?;
        }
        let file = self.root_file(&root.namespace, &root.key);
        self.files().save_as(FileKind::Root, &file, root)?;
        // PostgreSQL deletes a segment whose push succeeded.
        self.still_there()
    }

    /// The root record of `namespace`/`key`, if there is one (one request).
    pub fn root(&self, namespace: &str, key: &str) -> Result<Option<Root>> {
        if !self.has_roots() {
            return Ok(None);
        }
        let file = self.root_file(namespace, key);
        let Some(root) = self.files().load::<Root>(FileKind::Root, &file)? else {
            return Ok(None);
        };
        // A record copied under another record's name (by whoever holds the bucket) must
        // not stand in for it.
        if root.namespace != namespace || root.key != key {
            return Err(Error::corrupt(
                format!("root record {file}"),
                format!(
                    "holds {}/{} where {namespace}/{key} was expected",
                    root.namespace, root.key
                ),
            ));
        }
        Ok(Some(root))
    }

    /// The root records of `keys` in `namespace`, looked up at once (one request each, all
    /// in flight together).
    pub fn roots_of<S: AsRef<str> + Sync>(
        &self,
        namespace: &str,
        keys: &[S],
    ) -> Vec<Result<Option<Root>>> {
        self.with_read_pool(|| {
            keys.par_iter()
                .map(|k| self.root(namespace, k.as_ref()))
                .collect()
        })
    }

    /// Every root record of `namespace` (of all namespaces when `None`), each checked
    /// against the name it was read under.
    pub fn roots(&self, namespace: Option<&str>) -> Result<Vec<Root>> {
        if !self.has_roots() {
            return Ok(Vec::new());
        }
        // Names that are not 64 hex digits are no repository files (format-spec §1).
        let files: Vec<_> = self
            .files()
            .list(FileKind::Root)?
            .into_iter()
            .filter(|f| crate::files::is_file_name(&f.name))
            .collect();
        let read: Vec<Result<Option<Root>>> = self.with_read_pool(|| {
            files
                .par_iter()
                .map(|f| match f.size > MAX_ROOT_FILE {
                    true => Err(Error::corrupt(
                        format!("root record {}", f.name),
                        format!("{} bytes: more than a root record can be", f.size),
                    )),
                    false => self.checked_root(&f.name),
                })
                .collect()
        });
        let mut out = Vec::new();
        for r in read {
            let r = r.map_err(|e| match e {
                Error::Corrupt { .. } => e.with_remedy(crate::Remedy::StoreRecordAgain),
                e => e,
            });
            if let Some(root) = r? {
                if namespace.is_none_or(|n| n == root.namespace) {
                    out.push(root);
                }
            }
        }
        Ok(out)
    }

    /// The root record stored under `file`, checked against its name.
    pub(crate) fn checked_root(&self, file: &str) -> Result<Option<Root>> {
        let Some(root) = self.files().load::<Root>(FileKind::Root, file)? else {
            return Ok(None);
        };
        if self.root_file(&root.namespace, &root.key) != file {
            return Err(Error::corrupt(
                format!("root record {file}"),
                format!("holds {}/{} under another name", root.namespace, root.key),
            ));
        }
        Ok(Some(root))
    }

    /// Removes the root record of `namespace`/`key`; its blobs go at the next prune unless
    /// something else keeps them.
    pub fn remove_root(&self, namespace: &str, key: &str) -> Result<()> {
        self.need_roots()?;
        self.files()
            .remove(FileKind::Root, &self.root_file(namespace, key))
    }

    /// The blobs every root keeps alive (prune): root records, or in repositories of
    /// format 1-3 the WAL records of `wal/` (version 4 never writes there). A record that
    /// cannot be read is an error: its blobs would otherwise be freed.
    pub(crate) fn root_blobs(&self) -> Result<Vec<BlobId>> {
        if self.has_roots() {
            return Ok(self
                .roots(None)?
                .into_iter()
                .flat_map(|r| r.blobs)
                .collect());
        }
        let mut out = Vec::new();
        for f in self.files().list(FileKind::Wal)? {
            if let Some(legacy) = self.files().load::<LegacyWal>(FileKind::Wal, &f.name)? {
                out.extend(legacy.content);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn namespaces_are_plain_names() {
        for ok in ["postgres.wal", "etcd", "mysql-binlog_2"] {
            check_namespace(ok).unwrap();
        }
        for bad in ["", "Postgres", "a/b", "a\0b", "ä", &"x".repeat(65)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn roots_round_trip(namespace in "[a-z.]{1,20}", key in "\\PC{0,40}",
                            blobs in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
                            payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let root = Root {
                version: ROOT_VERSION,
                namespace,
                key,
                blobs: blobs.into_iter().map(BlobId).collect(),
                time: "2026-12-05T10:00:00+00:00".into(),
                host: "h".into(),
                payload,
            };
            let mut buf = Vec::new();
            ciborium::into_writer(&root, &mut buf).unwrap();
            let back: Root = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, root);
        }
    }
}
