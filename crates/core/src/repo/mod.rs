//! The repository: objects on a backend, encrypted and named by content, plus the local
//! cache that mirrors them.

pub(crate) mod cache;
pub mod config;
pub mod index;
pub mod keys;
pub mod metadata;
pub mod pack;
pub mod packer;
pub mod root;
pub mod saver;
pub mod snapshot;
pub mod tree;

mod cold;
mod indexing;
mod keyring;
pub mod marks;
mod open;
mod retention;
pub mod rollback;
pub(crate) mod snapshots;
mod trees;

pub use keyring::Keys;
pub use snapshots::Snapshots;
pub use trees::Trees;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{BackendRef, FileInfo, FileKind, WriteOptions};
use crate::crypto::{KdfCost, MasterKey};
use crate::error::{Error, Missing, Result};
use crate::id::{content_address, BlobId, IndexId, KeyId, PackId, SnapshotId, TreeId};
use crate::repo::cache::{BlobIndex, BlobLocation, Cache, SetState, Transaction, UsedBlobs};
use config::{Config, FILE_VERSION, FORMAT_VERSION, OLDEST_VERSION};
use index::{IndexFile, IndexedPack, ObsoletePack};
use keys::KeyFile;
use open::open_config;
use pack::{open_blob, FinishedPack};
use snapshot::Snapshot;
use tree::Tree;

/// Receives warnings about damage that an operation skipped (the CLI prints them).
pub type WarningSink = Box<dyn Fn(&str) + Send + Sync>;

/// The packs the backend holds (kind and size), and those in a class other than STANDARD
/// with their class and write time (Unix seconds), as [`Repository::stored_packs_classed`]
/// lists them.
pub(crate) type StoredPacks = (
    HashMap<PackId, (pack::BlobKind, u64)>,
    Vec<(PackId, String, Option<i64>)>,
);

/// An open repository.
pub struct Repository {
    backend: BackendRef,
    /// Under Object Lock: the retention dates this process's writes got.
    written: Option<crate::backend::retaining::Written>,
    key: std::sync::Arc<MasterKey>,
    key_id: KeyId,
    config: Config,
    cache: Cache,
    /// Warnings not yet handed to a sink, and the sink once there is one.
    warnings: std::sync::Mutex<(Vec<String>, Option<WarningSink>, HashSet<String>)>,
    /// Whether the blob index is a partial view (format-spec §7.3): the index files of
    /// other writers since the last full read are not in it.
    partial: std::sync::atomic::AtomicBool,
    /// Set when a mark record asked for every index file to be read again in the middle
    /// of a run: nothing more is deduplicated (see [`Repository::extend_view`]).
    dedupe_off: std::sync::atomic::AtomicBool,
    /// Set once every index file listed has been read: snapshots listed after that may
    /// name index files written since, which the listing then reads too.
    synced: std::sync::atomic::AtomicBool,
}

/// The backend with the Object Lock layer the config asks for (every write retained).
fn lock_layer(
    backend: BackendRef,
    config: &Config,
) -> (BackendRef, Option<crate::backend::retaining::Written>) {
    match &config.object_lock {
        Some(l) => {
            let r = crate::backend::Retaining::new(backend, l.mode, l.period() + l.slack());
            let written = r.written();
            (std::sync::Arc::new(r), Some(written))
        }
        None => (backend, None),
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).expect("CBOR into memory");
    buf
}

fn aad(kind: FileKind) -> &'static [u8] {
    match kind {
        FileKind::Config => b"strata/config/v1",
        FileKind::Snapshot => b"strata/snapshot/v1",
        FileKind::Index => b"strata/index/v1",
        FileKind::Lock => b"strata/lock/v1",
        FileKind::Audit => b"strata/audit/v1",
        FileKind::Wal => b"strata/wal/v1",
        FileKind::Root => b"strata/root/v1",
        FileKind::Marks => b"strata/marks/v1",
        FileKind::Key | FileKind::Data | FileKind::Tree => b"",
    }
}

impl Repository {
    /// The backend, with the layers the repository put over it.
    pub(crate) fn backend(&self) -> &BackendRef {
        &self.backend
    }

    /// The repository's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Fails unless the repository this handle opened is still where it was, the same
    /// repository, with the key file it was opened with ([`Error::WrongPassword`] when
    /// that was removed since). A long-lived handle (the WAL archive agent)
    /// calls this before each batch of writes: a repository moved away, or replaced by
    /// another, must make the write fail rather than land where nobody will look.
    pub fn ensure_present(&self) -> Result<()> {
        // The key file it was opened with: one request that tells both a repository gone
        // or replaced (another repository has other key files) and a key removed since
        // (`key remove`, `key passwd`), after which a long-lived process (the WAL agent)
        // must not go on serving that password.
        match self.backend.read(FileKind::Key, &self.key_id.to_hex()) {
            Ok(bytes) if content_address(&bytes) == self.key_id.0 => return Ok(()),
            Ok(_) => {
                return Err(Error::corrupt(
                    format!("key {}", self.key_id),
                    "does not match its name",
                ))
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let sealed = match self.backend.read(FileKind::Config, "config") {
            Ok(b) => b,
            Err(Error::NotFound { .. }) | Err(Error::NoRepository(_)) => {
                return Err(Error::NoRepository(self.backend.location()))
            }
            Err(e) => return Err(e),
        };
        match open_config(&self.key, &sealed) {
            Some(c) if c.id == self.config.id => Err(Error::WrongPassword { damaged: vec![] }),
            _ => Err(Error::BadInput {
                what: "repository",
                reason: format!(
                    "{} now holds another repository than the one opened (id {})",
                    self.backend.location(),
                    self.config.id.to_hex()
                ),
            }),
        }
    }

    /// Damage that an operation skipped instead of failing (a damaged snapshot or index
    /// file) is reported once per message: to the sink, or kept until one is set.
    pub(crate) fn warn(&self, msg: String) {
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if !w.2.insert(msg.clone()) {
            return;
        }
        match &w.1 {
            Some(sink) => sink(&msg),
            None => w.0.push(msg),
        }
    }

    /// Sends warnings to `sink` from now on, starting with those already raised.
    pub fn set_warning_sink(&self, sink: WarningSink) {
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        for msg in std::mem::take(&mut w.0) {
            sink(&msg);
        }
        w.1 = Some(sink);
    }

    /// Warnings raised so far and not handed to a sink.
    pub fn take_warnings(&self) -> Vec<String> {
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut w.0)
    }

    /// The key file that opened the repository.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    // ---- files on the backend ----

    /// The repository's files, by kind and name.
    pub fn files(&self) -> Files<'_> {
        Files(self)
    }

    /// Deletes one file from the backend.
    pub(crate) fn delete_file(&self, kind: FileKind, name: &str) -> Result<()> {
        self.backend.delete(kind, name)
    }

    /// How many uploads to keep in flight on this backend.
    pub(crate) fn upload_concurrency(&self) -> usize {
        self.backend.capabilities().upload_concurrency
    }

    /// Removes what interrupted writes left behind that is older than `older_than`;
    /// returns what went.
    pub(crate) fn remove_stale_temporaries(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Vec<FileInfo>> {
        match self.backend.capabilities().temporaries {
            Some(t) => t.remove_stale(older_than),
            None => Ok(Vec::new()),
        }
    }

    /// A handle that seals, stores and deletes repository files on its own, for work that
    /// outlives a borrow of the repository (a lock's refresher thread).
    pub(crate) fn file_store(&self) -> FileStore {
        FileStore {
            backend: self.backend.clone(),
            key: self.key.clone(),
        }
    }

    // ---- blobs ----

    /// A chunker over `reader` with this repository's parameters and secret seed.
    pub(crate) fn chunker<R: std::io::Read>(
        &self,
        reader: R,
        batch: usize,
    ) -> crate::chunker::Chunker<R> {
        crate::chunker::Chunker::new(reader, self.config.chunker, self.key.chunker_seed(), batch)
    }

    /// A blob compressed (at `level`, 0 for none) and encrypted, ready for a pack.
    pub(crate) fn seal_blob(
        &self,
        id: BlobId,
        kind: pack::BlobKind,
        plain: &[u8],
        level: i32,
    ) -> pack::SealedBlob {
        pack::SealedBlob::seal(&self.key, id, kind, plain, level)
    }

    /// A pack's bytes with its sealed header, ready to write.
    pub(crate) fn finish_pack(&self, builder: pack::PackBuilder) -> FinishedPack {
        builder.finish(&self.key, self.config.compact())
    }

    // ---- the local cache, by part ----

    /// The cached blob index.
    pub(crate) fn blob_index(&self) -> BlobIndex<'_> {
        self.cache.index()
    }

    /// The index: where each blob is stored.
    pub fn index(&self) -> Index<'_> {
        Index(self)
    }

    /// The cached state of one lineage (its last snapshot and file cache).
    pub(crate) fn set_state<'a>(&'a self, lineage_key: &'a str) -> SetState<'a> {
        self.cache.set_state(lineage_key)
    }

    /// Prune's set of used blobs.
    pub(crate) fn audit_cache(&self) -> crate::repo::cache::AuditCache<'_> {
        self.cache.audits()
    }

    pub(crate) fn used_blobs(&self) -> UsedBlobs<'_> {
        self.cache.used_blobs()
    }

    /// Caches trees already read and verified.
    /// The ids `copy` found here for blobs of repository `source` (kept in the cache).
    pub(crate) fn copied_ids(
        &self,
        source: &crate::id::RepoId,
        ids: &[BlobId],
    ) -> Result<Vec<Option<BlobId>>> {
        self.cache.copied_ids(source, ids)
    }

    /// Remembers ids `copy` found here for blobs of repository `source`.
    pub(crate) fn put_copied_ids(
        &self,
        source: &crate::id::RepoId,
        pairs: &[(BlobId, BlobId)],
    ) -> Result<()> {
        self.cache.put_copied_ids(source, pairs)
    }

    /// A value of the cache's own bookkeeping (`copy` keeps what it copied last there).
    pub(crate) fn cache_meta(&self, key: &str) -> Result<Option<String>> {
        self.cache.meta_get(key)
    }

    /// Sets a value of the cache's own bookkeeping.
    pub(crate) fn set_cache_meta(&self, key: &str, value: &str) -> Result<()> {
        self.cache.meta_put(key, value)
    }

    /// Root records of repository `source` that `copy` copied here (see
    /// [`crate::repo::cache::Cache::copied_roots`]).
    pub(crate) fn copied_roots(
        &self,
        source: &crate::id::RepoId,
    ) -> Result<HashSet<(String, i64)>> {
        self.cache.copied_roots(source)
    }

    /// Remembers a root record of `source` as copied here.
    pub(crate) fn put_copied_root(
        &self,
        source: &crate::id::RepoId,
        name: &str,
        stamp: i64,
    ) -> Result<()> {
        self.cache.put_copied_root(source, name, stamp)
    }

    pub(crate) fn cache_trees(&self, trees: &[(BlobId, Vec<u8>)]) -> Result<()> {
        self.cache.trees().put(trees)
    }

    /// A cache transaction that rolls back unless committed.
    #[doc(hidden)]
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        self.cache.transaction()
    }

    /// Commits what a long operation cached so far, if a while has passed since the last
    /// time, and goes on.
    pub(crate) fn checkpoint_if_due(&self) -> Result<()> {
        self.cache.checkpoint_if_due()
    }

    /// Commits what a long operation cached so far and goes on.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.cache.checkpoint()
    }

    // ---- packs ----

    /// A whole pack, as far as the index says it reaches: a reader needs no more, and a
    /// file grown past that (a storage attacker's sparse 2 GiB in its place) is not read
    /// beyond it (`check` names the size mismatch). A pack the index does not size (marked
    /// or unnamed) is read whole, within its kind's bound.
    pub(crate) fn read_pack(&self, kind: pack::BlobKind, id: &PackId) -> Result<Vec<u8>> {
        let file_kind = pack_file_kind(kind);
        match self.cache.index().pack_size(id)? {
            // A key holder's claim: bounded like the file it claims to describe.
            Some(size) if size > file_kind.max_size() => {
                Err(crate::backend::too_large(file_kind, &id.to_hex(), size))
            }
            Some(size) => self.read_pack_range(kind, id, 0, size),
            None => self.backend.read(file_kind, &id.to_hex()),
        }
    }

    /// `len` bytes of a pack file from `offset` on.
    pub(crate) fn read_pack_range(
        &self,
        kind: pack::BlobKind,
        id: &PackId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        self.backend
            .read_range(pack_file_kind(kind), &id.to_hex(), offset, len)
    }

    /// The entries of a pack's own header, from the pack's bytes.
    pub(crate) fn pack_header(&self, id: &PackId, bytes: &[u8]) -> Result<Vec<pack::BlobEntry>> {
        pack::read_header(&self.key, id, bytes)
    }

    pub(crate) fn delete_pack(&self, kind: pack::BlobKind, id: &PackId) -> Result<()> {
        self.backend.delete(pack_file_kind(kind), &id.to_hex())
    }

    /// The keyed id of a blob's plaintext.
    pub fn blob_id(&self, plain: &[u8]) -> BlobId {
        self.key.blob_id(plain)
    }

    /// The ids of the blobs a backup would cut `reader`'s content into (without storing
    /// any): what tells whether a file on disk is the one a tree node records.
    pub fn content_ids(&self, reader: impl std::io::Read) -> std::io::Result<Vec<BlobId>> {
        let mut chunker = self.chunker(reader, 1 << 20);
        let mut ids = Vec::new();
        while let Some(batch) = chunker.next_batch()? {
            ids.extend((0..batch.chunks.len()).map(|i| self.blob_id(batch.chunk(i))));
        }
        Ok(ids)
    }

    /// How many reads to keep in flight on this backend (at least one per core).
    pub(crate) fn read_concurrency(&self) -> usize {
        self.backend
            .capabilities()
            .read_concurrency
            .max(rayon::current_num_threads())
    }

    /// Runs `f` on a pool sized for this backend's reads (several in flight on S3).
    pub fn with_read_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        crate::util::with_read_pool(self.backend.as_ref(), f)
    }

    // ---- encrypted files ----

    /// Seals and stores a CBOR value; its name is the hash of the stored bytes.
    #[doc(hidden)]
    pub fn save_file<T: Serialize>(&self, kind: FileKind, value: &T) -> Result<[u8; 32]> {
        let (id, sealed) = seal_file(&self.key, kind, value);
        within_bound(kind, &sealed)?;
        self.backend.write(kind, &hex::encode(id), &sealed)?;
        Ok(id)
    }

    /// After a snapshot or root record is written: the repository is still where it was.
    /// An object store takes writes into a prefix whose repository was deleted (a local
    /// directory refuses them): without this, a backup into a deleted bucket prefix would
    /// report a snapshot no one can ever read (exit 0 where the README promises 10).
    pub(crate) fn still_there(&self) -> Result<()> {
        match self.backend.exists()? {
            true => Ok(()),
            false => Err(Error::NoRepository(self.backend.location())),
        }
    }

    /// Seals `plain` as a file of `kind` as it stands (no encoding) and stores it under its
    /// content address: what any key holder can write, for tests that craft hostile files.
    #[doc(hidden)]
    pub fn save_raw(&self, kind: FileKind, plain: &[u8]) -> Result<String> {
        let sealed = self.key.seal(plain, aad(kind));
        let name = hex::encode(content_address(&sealed));
        self.backend.write(kind, &name, &sealed)?;
        Ok(name)
    }

    /// The name format 1-3 files a PostgreSQL cluster's WAL record under (`wal/`, format-spec
    /// §14.1); version 4 keeps them as root records.
    pub fn wal_name(&self, cluster: &str, name: &str) -> String {
        hex::encode(self.key.wal_name(cluster, name))
    }

    /// Seals and stores an index file, in the compact encoding where the format has it.
    /// Returns its name and its size as stored.
    fn save_index(&self, file: &IndexFile) -> Result<([u8; 32], u64)> {
        if !self.config.compact() {
            let (id, sealed) = seal_file(&self.key, FileKind::Index, file);
            within_bound(FileKind::Index, &sealed)?;
            self.backend
                .write(FileKind::Index, &hex::encode(id), &sealed)?;
            return Ok((id, sealed.len() as u64));
        }
        let plain = pack::compact::compress(&encode(&index::CompactIndex::from(file)));
        let sealed = self.key.seal(&plain, aad(FileKind::Index));
        within_bound(FileKind::Index, &sealed)?;
        let id = content_address(&sealed);
        self.backend
            .write(FileKind::Index, &hex::encode(id), &sealed)?;
        // The newest file this cache knows to exist: what its next partial view checks.
        if self.config.partial_views() {
            let index = self.cache.index();
            index.set_sentinel(Some(&IndexId(id)))?;
            let tail = &sealed[sealed.len().saturating_sub(marks::SENTINEL_PRINT)..];
            index.set_sentinel_print(sealed.len() as u64, tail)?;
        }
        Ok((id, sealed.len() as u64))
    }

    /// Reads a file, checks it against its name, decrypts and decodes it.
    pub(crate) fn load_file<T: DeserializeOwned>(&self, kind: FileKind, name: &str) -> Result<T> {
        let sealed = self.backend.read(kind, name)?;
        self.open_file(kind, name, &sealed)
    }

    /// A sealed file already read: decrypted and decoded.
    fn open_file<T: DeserializeOwned>(
        &self,
        kind: FileKind,
        name: &str,
        sealed: &[u8],
    ) -> Result<T> {
        let mut plain = self.open_sealed(kind, name, sealed)?;
        if plain.starts_with(&pack::compact::ZSTD_MAGIC) {
            plain = pack::compact::decompress(&plain)
                .map_err(|e| Error::corrupt(format!("{kind} {name}"), e))?;
        }
        ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(format!("{kind} {name}"), format!("CBOR: {e}")))
    }

    fn open_sealed(&self, kind: FileKind, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let object = || format!("{kind} {name}");
        if hex::encode(content_address(sealed)) != name {
            return Err(Error::corrupt(object(), "content does not match its name"));
        }
        self.key
            .open(sealed, aad(kind))
            .ok_or_else(|| Error::corrupt(object(), "authentication failed"))
    }
}

/// Packs named per index file that replaces others (prune, repair).
pub const PACKS_PER_INDEX_FILE: usize = 4096;

/// Blob entries (of packs and marks) per index file that replaces others: such a file
/// closes once it holds this many, so that a pack of tiny files, times 4096, does not
/// make a file past the index bound (format-spec §1). About 100 bytes each in the map
/// form, 50 in the compact one: ~105 MB at most, well below 256 MiB.
pub const ENTRIES_PER_INDEX_FILE: usize = 1 << 20;

/// Seals, stores and deletes repository files with its own handles on the backend and
/// key; see [`Repository::file_store`].
#[derive(Clone)]
pub(crate) struct FileStore {
    backend: BackendRef,
    key: std::sync::Arc<MasterKey>,
}

impl FileStore {
    /// Seals and stores a CBOR value; returns its name.
    pub fn save<T: Serialize>(&self, kind: FileKind, value: &T) -> Result<String> {
        let (id, sealed) = seal_file(&self.key, kind, value);
        within_bound(kind, &sealed)?;
        let name = hex::encode(id);
        self.backend.write(kind, &name, &sealed)?;
        Ok(name)
    }

    pub fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.backend.delete(kind, name)
    }
}

pub(crate) fn pack_file_kind(kind: pack::BlobKind) -> FileKind {
    match kind {
        pack::BlobKind::Data => FileKind::Data,
        pack::BlobKind::Tree => FileKind::Tree,
    }
}

/// A repository file's sealed bytes and the content address that names it: the one way
/// config, snapshots, index and lock files are sealed (a lock's refresher, on a thread of
/// its own, seals through [`FileStore`]).
/// A writer never stores what its readers would refuse as damage (format-spec §1): a file
/// past its kind's bound fails here, before anything is written.
fn within_bound(kind: FileKind, sealed: &[u8]) -> Result<()> {
    if sealed.len() as u64 <= kind.max_size() {
        return Ok(());
    }
    Err(Error::BadInput {
        what: "repository file",
        reason: format!(
            "a {kind} of {} bytes would be larger than readers accept ({} bytes)",
            sealed.len(),
            kind.max_size()
        ),
    })
}

pub(crate) fn seal_file<T: Serialize>(
    key: &MasterKey,
    kind: FileKind,
    value: &T,
) -> ([u8; 32], Vec<u8>) {
    let sealed = key.seal(&encode(value), aad(kind));
    (content_address(&sealed), sealed)
}

/// The sealed bytes of `entry` in `buf`, bytes of pack `pack` from offset `at` on.
pub(crate) fn sealed_in<'b>(
    pack: &PackId,
    buf: &'b [u8],
    at: u64,
    entry: &pack::BlobEntry,
) -> Result<&'b [u8]> {
    entry
        .offset
        .checked_sub(at)
        .and_then(|lo| Some((lo, lo.checked_add(entry.length as u64)?)))
        .and_then(|(lo, hi)| buf.get(usize::try_from(lo).ok()?..usize::try_from(hi).ok()?))
        .ok_or_else(|| {
            Error::corrupt(
                format!("blob {} in pack {pack}", entry.id),
                "beyond the end of the pack",
            )
        })
}

/// Adds the pack's name to a blob error, so a report names the file on the backend.
pub(crate) fn in_pack(e: Error, pack: &PackId) -> Error {
    match e {
        Error::Corrupt { object, reason } => Error::Corrupt {
            object: format!("{object} in pack {pack}"),
            reason,
        },
        e => e,
    }
}

/// A fresh repository over `store` (64 KiB chunks, zstd `level`, a cheap KDF), opened with
/// its cache in `dir`: the unit tests' fixture.
#[cfg(test)]
pub(crate) fn for_tests(store: BackendRef, level: i32, dir: &std::path::Path) -> Repository {
    let config = crate::Config::new(crate::ChunkerParams::with_average(64 << 10), level);
    Repository::init(
        store.clone(),
        b"pw",
        config,
        &crate::KdfCost::INSECURE_FOR_TESTS,
    )
    .unwrap();
    Repository::open(store, b"pw", &dir.join("cache")).unwrap()
}

/// The repository's files by kind and name (`repo.files()`): listed, and sealed files an
/// application names itself.
pub struct Files<'r>(&'r Repository);

impl Files<'_> {
    /// The files of one kind on the backend, with their sizes.
    pub fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.0.backend.list(kind)
    }

    /// Seals and stores a file under a name of the caller's choosing rather than its
    /// content address (WAL records, format-spec §14): the name must say what the file is,
    /// and readers check the decrypted content against it.
    pub fn save_as<T: Serialize>(&self, kind: FileKind, name: &str, value: &T) -> Result<()> {
        let sealed = self.0.key.seal(&encode(value), aad(kind));
        within_bound(kind, &sealed)?;
        self.0.backend.write(kind, name, &sealed)
    }

    /// A file [`Files::save_as`] stored, decrypted and decoded; `None` if there is
    /// none by that name (one request either way).
    pub fn load<T: DeserializeOwned>(&self, kind: FileKind, name: &str) -> Result<Option<T>> {
        let sealed = match self.0.backend.read(kind, name) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let object = || format!("{kind} {name}");
        let plain = (self.0.key)
            .open(&sealed, aad(kind))
            .ok_or_else(|| Error::corrupt(object(), "authentication failed"))?;
        ciborium::from_reader(&plain[..])
            .map(Some)
            .map_err(|e| Error::corrupt(object(), format!("CBOR: {e}")))
    }

    /// Deletes a file [`Files::save_as`] stored.
    pub fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.0.backend.delete(kind, name)
    }
}

/// The index (`repo.index()`): where each blob is stored, and its bytes.
pub struct Index<'r>(&'r Repository);

#[cfg(test)]
mod tests {
    use super::*;
    use pack::{BlobEntry, BlobKind, Compression};

    fn entry(offset: u64, length: u32) -> BlobEntry {
        BlobEntry {
            id: BlobId([7; 32]),
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: 0,
            compression: Compression::None,
        }
    }

    #[test]
    fn blobs_are_cut_only_from_inside_the_bytes_read() {
        let pack = PackId([1; 32]);
        let buf: Vec<u8> = (0..100).collect();
        // The whole pack, and a range read starting at 40.
        assert_eq!(
            sealed_in(&pack, &buf, 0, &entry(10, 5)).unwrap(),
            &buf[10..15]
        );
        assert_eq!(
            sealed_in(&pack, &buf, 40, &entry(50, 5)).unwrap(),
            &buf[10..15]
        );
        assert_eq!(
            sealed_in(&pack, &buf, 0, &entry(95, 5)).unwrap(),
            &buf[95..]
        );
        // Hostile or stale entries: past the end, before the read, overflowing.
        for (at, e) in [
            (0, entry(96, 5)),
            (40, entry(39, 1)),
            (0, entry(u64::MAX, 2)),
            (0, entry(u64::MAX - 1, u32::MAX)),
        ] {
            let err = sealed_in(&pack, &buf, at, &e).unwrap_err();
            assert!(err.to_string().contains("beyond the end"), "{err}");
        }
    }

    /// Defect 1 of the planted-file pass: a pack grown (sparse) to its kind's bound is read
    /// only as far as the index says it reaches; one cut short fails as damage.
    #[test]
    fn a_pack_is_read_as_far_as_the_index_says_it_reaches() {
        use crate::backup::{BlobSaver, SaverShared};
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef =
            std::sync::Arc::new(crate::backend::LocalBackend::new(dir.path().join("repo")));
        let repo = for_tests(store, 0, dir.path());
        let shared = SaverShared::default();
        std::thread::scope(|scope| {
            let saver = BlobSaver::new(&repo, &shared, scope, 1);
            let tree = crate::util::pseudo_random(3000, 5);
            saver
                .save(BlobKind::Tree, repo.blob_id(&tree), &tree)
                .unwrap();
            saver.finish().unwrap();
        });
        let (id, _, size) = repo.blob_index().packs().unwrap()[0];
        let whole = repo.read_pack(BlobKind::Tree, &id).unwrap();
        assert_eq!(whole.len() as u64, size);
        let path = dir
            .path()
            .join("repo")
            .join(FileKind::Tree.path(&id.to_hex()));
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(FileKind::Tree.max_size()).unwrap();
        assert_eq!(repo.read_pack(BlobKind::Tree, &id).unwrap(), whole);
        file.set_len(size - 1).unwrap();
        let e = repo.read_pack(BlobKind::Tree, &id).unwrap_err();
        assert!(e.to_string().contains("short read"), "{e}");
    }

    /// A repository with one data pack of ten blobs, its index file replaced by `split`'s
    /// files (each saved as an index file of its own).
    fn split_index(
        dir: &std::path::Path,
        split: impl Fn(&IndexFile) -> Vec<IndexFile>,
    ) -> Repository {
        use crate::backup::{BlobSaver, SaverShared};
        let store: BackendRef = std::sync::Arc::new(crate::backend::MemBackend::default());
        let repo = for_tests(store, 0, dir);
        let shared = SaverShared::default();
        std::thread::scope(|scope| {
            let saver = BlobSaver::new(&repo, &shared, scope, 1);
            for i in 0..10 {
                let b = crate::util::pseudo_random(1000, 2 * i + 1);
                saver.save(BlobKind::Data, repo.blob_id(&b), &b).unwrap();
            }
            saver.finish().unwrap();
        });
        for f in repo.files().list(FileKind::Index).unwrap() {
            let file: IndexFile = repo.load_file(FileKind::Index, &f.name).unwrap();
            for part in split(&file) {
                repo.save_index(&part).unwrap();
            }
            repo.backend.delete(FileKind::Index, &f.name).unwrap();
        }
        repo
    }

    /// §7.2: a pack listed in two files with different entries keeps the union of them
    /// through `repair index`.
    #[test]
    fn repair_index_keeps_every_listing_of_a_pack() {
        let dir = tempfile::tempdir().unwrap();
        let halves = |f: &IndexFile| {
            let p = &f.packs[0];
            let (a, b) = p.blobs.split_at(p.blobs.len() / 2);
            [a, b]
                .map(|half| IndexFile {
                    packs: vec![IndexedPack {
                        blobs: half.to_vec(),
                        ..p.clone()
                    }],
                    ..f.clone()
                })
                .to_vec()
        };
        let repo = split_index(dir.path(), halves);
        crate::repair::repair_index(&repo, false, &crate::progress::NoProgress).unwrap();
        let files = repo.files().list(FileKind::Index).unwrap();
        assert_eq!(files.len(), 1);
        let file: IndexFile = repo.load_file(FileKind::Index, &files[0].name).unwrap();
        assert_eq!(file.packs.len(), 1);
        assert_eq!(file.packs[0].blobs.len(), 10);
        assert!(file.packs[0].blobs.is_sorted_by_key(|e| e.offset));
    }

    /// §7.2: marks of one pack in several files: the latest `marked` wins, whatever the
    /// order the files are read in, and the entries are the union.
    #[test]
    fn the_latest_mark_of_a_pack_wins() {
        for latest_first in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let marks = |f: &IndexFile| {
                let p = &f.packs[0];
                let (a, b) = p.blobs.split_at(3);
                let times = if latest_first {
                    ["2026-12-01T04:00:00Z", "2026-12-01T06:00:00+05:00"]
                } else {
                    ["2026-12-01T06:00:00+05:00", "2026-12-01T04:00:00Z"]
                };
                [(a, times[0]), (b, times[1])]
                    .map(|(half, t)| IndexFile {
                        packs: vec![],
                        obsolete: vec![index::ObsoletePack {
                            id: p.id,
                            kind: p.kind,
                            marked: t.into(),
                            blobs: vec![],
                            entries: half.to_vec(),
                        }],
                        ..f.clone()
                    })
                    .to_vec()
            };
            let repo = split_index(dir.path(), marks);
            let read = repo.rebuild_index().unwrap();
            assert_eq!(read.marks.len(), 1);
            let mark = read.marks.values().next().unwrap();
            // 06:00+05:00 is 01:00 UTC: earlier than 04:00Z though it sorts after it as text.
            assert_eq!(mark.marked, "2026-12-01T04:00:00Z", "{latest_first}");
            assert_eq!(mark.entries.len(), 10);
        }
    }
}
