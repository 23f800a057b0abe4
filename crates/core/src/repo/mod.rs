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
    key: MasterKey,
    key_id: KeyId,
    config: Config,
    cache: Cache,
    /// Warnings not yet handed to a sink, and the sink once there is one.
    warnings: std::sync::Mutex<(Vec<String>, Option<WarningSink>, HashSet<String>)>,
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
        FileKind::Key | FileKind::Data | FileKind::Tree => b"",
    }
}

impl Repository {
    /// Creates a repository; refuses a location that already holds one. `cost` is the
    /// first key's Argon2id cost ([`KdfCost::DEFAULT`] outside tests).
    pub fn init(
        backend: BackendRef,
        password: &[u8],
        config: Config,
        cost: &KdfCost,
    ) -> Result<Config> {
        // What `open` would call a damaged config is never written.
        config.chunker.validate()?;
        if let Some(class) = &config.data_storage_class {
            crate::backend::check_storage_class(class)?;
        }
        if backend.exists()? {
            return Err(Error::RepositoryExists(backend.location()));
        }
        backend.create()?;
        if config.object_lock.is_some() {
            match backend
                .capabilities()
                .object_lock
                .map(|l| l.enabled())
                .transpose()?
            {
                Some(true) => {}
                Some(false) => {
                    return Err(Error::BadInput {
                        what: "object lock",
                        reason: format!(
                            "the bucket of {} does not have Object Lock enabled (it can only \
                             be turned on when a bucket is created: `aws s3api create-bucket \
                             --object-lock-enabled-for-bucket`)",
                            backend.location()
                        ),
                    })
                }
                None => {
                    return Err(Error::BadInput {
                        what: "object lock",
                        reason: format!(
                            "{} is not an S3 bucket: Object Lock needs one",
                            backend.location()
                        ),
                    })
                }
            }
        }
        let backend = lock_layer(backend, &config).0;
        // A location with repository files but no config is a repository that lost its
        // config, not an empty one: a second master key there would hide the first.
        let mut found = Vec::new();
        for kind in FileKind::ALL
            .into_iter()
            .filter(|k| !matches!(k, FileKind::Config | FileKind::Lock))
        {
            let n = backend.list(kind)?.len();
            if n > 0 {
                found.push(format!("{n} file(s) under {}/", kind.dir()));
            }
        }
        if !found.is_empty() {
            return Err(Error::NotEmpty {
                location: backend.location(),
                found: found.join(", "),
            });
        }
        let key = MasterKey::generate();
        let keyfile = KeyFile::create(&key, password, cost)?.encode();
        backend.write(
            FileKind::Key,
            &hex::encode(content_address(&keyfile)),
            &keyfile,
        )?;
        // The config comes last: its presence is what makes the location a repository.
        let sealed = key.seal(&encode(&config), aad(FileKind::Config));
        backend.write(FileKind::Config, "config", &sealed)?;
        Ok(config)
    }

    /// Opens a repository with a password; `cache_base` holds one cache per repository id.
    pub fn open(backend: BackendRef, password: &[u8], cache_base: &Path) -> Result<Self> {
        Self::open_with(backend, &mut || Ok(password.to_vec()), cache_base)
    }

    /// As [`Repository::open`], asking for the password only once the repository is known
    /// to exist (so a wrong URL is reported before anyone types a password).
    /// Long on purpose: the order of opening (config, password, key, cache, index) with
    /// the index listing fetched alongside is easier to check in one place.
    pub fn open_with(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
        cache_base: &Path,
    ) -> Result<Self> {
        Self::open_inner(backend, password, cache_base, true)
    }

    /// As [`Repository::open_with`] for commands that read snapshots and audit records
    /// only (`status`): the index is not brought up to date (no listing), so the handle is
    /// a [`metadata::MetadataRepository`], which offers no blob or pack lookup.
    pub fn open_metadata(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
        cache_base: &Path,
    ) -> Result<metadata::MetadataRepository> {
        Self::open_inner(backend, password, cache_base, false)
            .map(metadata::MetadataRepository::new)
    }

    fn open_inner(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
        cache_base: &Path,
        sync_index: bool,
    ) -> Result<Self> {
        // Reading the config doubles as the existence check: one request, not two.
        let sealed = match backend.read(FileKind::Config, "config") {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Err(Error::NoRepository(backend.location())),
            Err(e) => return Err(e),
        };
        // Ours before anything is kept there (see `private_dir`).
        crate::repo::cache::private_dir(cache_base)?;
        let key_cache = key_cache_path(cache_base, &backend.location());
        // The index listing needs no key, nor (on a machine that never opened this
        // repository: no key is cached for it) do the first index files: they are fetched
        // while the password is asked for and the key derived, instead of one round trip
        // after the other.
        let bare = !key_cache.exists();
        let (opened, early) = std::thread::scope(|s| {
            let early = s.spawn(|| sync_index.then(|| EarlyIndex::fetch(&backend, bare)));
            let opened = (|| -> Result<Repository> {
                let password = password()?;
                let (key, key_id, config) =
                    match cached_key(&backend, &key_cache, &password, &sealed)? {
                        Some(c) => c,
                        None => {
                            let (key, key_id, file) = Self::unlock(&backend, &password)?;
                            let config = open_config(&key, &sealed)
                                .ok_or_else(|| Error::corrupt("config", "authentication failed"))?;
                            remember_key(&key_cache, &key_id, file);
                            (key, key_id, config)
                        }
                    };
                Self::with_key(backend.clone(), key, key_id, config, cache_base)
            })();
            (opened, early.join().expect("index prefetch thread"))
        });
        let repo = opened?;
        if let Some(early) = early {
            repo.sync_index_from(early.ok())?;
        }
        Ok(repo)
    }

    /// The repository open with `key`, once its config is one this build can work with.
    fn with_key(
        backend: BackendRef,
        key: MasterKey,
        key_id: KeyId,
        config: Config,
        cache_base: &Path,
    ) -> Result<Self> {
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&config.version) {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                oldest: config::OLDEST_VERSION,
                newest: config::FORMAT_VERSION,
            });
        }
        config
            .chunker
            .validate()
            .map_err(|e| Error::corrupt("config", e.to_string()))?;
        let cache = Cache::open(&cache_base.join(config.id.to_hex()))?;
        // Trees are cached as they are read; bounded here, once per process, so that the
        // cache of a long-lived repository does not grow without end.
        cache.trees().bound(crate::repo::cache::TREE_CACHE_BYTES)?;
        let (backend, written) = lock_layer(backend, &config);
        Ok(Repository {
            backend,
            written,
            key,
            key_id,
            config,
            cache,
            warnings: Default::default(),
        })
    }

    fn unlock(backend: &BackendRef, password: &[u8]) -> Result<(MasterKey, KeyId, Vec<u8>)> {
        let mut keys = backend.list(FileKind::Key)?;
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        // A damaged key file is named as damaged, never mistaken for a wrong password.
        let mut damaged = Vec::new();
        let mut intact = 0usize;
        for info in keys {
            let Ok(id) = info.name.parse::<KeyId>() else {
                continue; // not a key file name: ignored, as the format says
            };
            let bytes = backend.read(FileKind::Key, &info.name)?;
            if content_address(&bytes) != id.0 {
                damaged.push(format!(
                    "key {}: content does not match its name",
                    info.name
                ));
                continue;
            }
            let kf = match KeyFile::decode(&bytes, &info.name) {
                Ok(kf) => kf,
                Err(e) => {
                    damaged.push(e.to_string());
                    continue;
                }
            };
            match kf.open(password) {
                Ok(Some(key)) => return Ok((key, id, bytes)),
                Ok(None) => intact += 1,
                Err(e) => damaged.push(format!("key {}: {e}", info.name)),
            }
        }
        if intact == 0 && !damaged.is_empty() {
            return Err(Error::corrupt(
                "every key file",
                format!("none is intact: {}", damaged.join("; ")),
            ));
        }
        Err(Error::WrongPassword { damaged })
    }

    /// The backend, with the layers the repository put over it.
    pub(crate) fn backend(&self) -> &BackendRef {
        &self.backend
    }

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

    /// The repository's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Fails unless the repository this handle opened is still where it was: its config
    /// there, and the same repository's. A long-lived handle (the WAL archive agent)
    /// calls this before each batch of writes: a repository moved away, or replaced by
    /// another, must make the write fail rather than land where nobody will look.
    pub fn ensure_present(&self) -> Result<()> {
        let sealed = match self.backend.read(FileKind::Config, "config") {
            Ok(b) => b,
            Err(Error::NotFound { .. }) | Err(Error::NoRepository(_)) => {
                return Err(Error::NoRepository(self.backend.location()))
            }
            Err(e) => return Err(e),
        };
        match open_config(&self.key, &sealed) {
            Some(c) if c.id == self.config.id => Ok(()),
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

    /// The files of one kind on the backend, with their sizes.
    pub fn list_files(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.backend.list(kind)
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
    pub(crate) fn index(&self) -> BlobIndex<'_> {
        self.cache.index()
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

    /// A whole pack file.
    pub(crate) fn read_pack(&self, kind: pack::BlobKind, id: &PackId) -> Result<Vec<u8>> {
        self.backend.read(pack_file_kind(kind), &id.to_hex())
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
    fn cold_storage(&self) -> Result<&dyn crate::backend::ColdStorage> {
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
        self.backend.write(kind, &hex::encode(id), &sealed)?;
        Ok(id)
    }

    /// Seals and stores a file under a name of the caller's choosing rather than its
    /// content address (WAL records, format-spec §14): the name must say what the file is,
    /// and readers check the decrypted content against it.
    pub fn save_named<T: Serialize>(&self, kind: FileKind, name: &str, value: &T) -> Result<()> {
        let sealed = self.key.seal(&encode(value), aad(kind));
        self.backend.write(kind, name, &sealed)
    }

    /// A file [`Repository::save_named`] stored, decrypted and decoded; `None` if there is
    /// none by that name (one request either way).
    pub fn load_named<T: DeserializeOwned>(&self, kind: FileKind, name: &str) -> Result<Option<T>> {
        let sealed = match self.backend.read(kind, name) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let object = || format!("{kind} {name}");
        let plain = self
            .key
            .open(&sealed, aad(kind))
            .ok_or_else(|| Error::corrupt(object(), "authentication failed"))?;
        ciborium::from_reader(&plain[..])
            .map(Some)
            .map_err(|e| Error::corrupt(object(), format!("CBOR: {e}")))
    }

    /// Deletes a file [`Repository::save_named`] stored.
    pub fn remove_named(&self, kind: FileKind, name: &str) -> Result<()> {
        self.backend.delete(kind, name)
    }

    /// The name format 1-3 files a PostgreSQL cluster's WAL record under (`wal/`, format-spec
    /// §14.1); version 4 keeps them as root records.
    pub fn wal_name(&self, cluster: &str, name: &str) -> String {
        hex::encode(self.key.wal_name(cluster, name))
    }

    /// Seals and stores an index file, in the compact encoding where the format has it.
    fn save_index(&self, file: &IndexFile) -> Result<[u8; 32]> {
        if !self.config.compact() {
            return self.save_file(FileKind::Index, file);
        }
        let plain = pack::compact::compress(&encode(&index::CompactIndex::from(file)));
        let sealed = self.key.seal(&plain, aad(FileKind::Index));
        let id = content_address(&sealed);
        self.backend
            .write(FileKind::Index, &hex::encode(id), &sealed)?;
        Ok(id)
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

    // ---- index ----

    /// Brings the cached blob index in line with the repository's index files: reads new
    /// ones, and rebuilds from scratch if one the cache knows has gone (prune removed it).
    pub(crate) fn sync_index(&self) -> Result<()> {
        self.sync_index_from(None)
    }

    /// As [`Repository::sync_index`], starting from what `open` fetched early.
    fn sync_index_from(&self, mut early: Option<EarlyIndex>) -> Result<()> {
        // A prune running meanwhile deletes index files between our listing and reading
        // (after writing the ones that replace them): list again and read what is there now.
        for _ in 0..3 {
            match self.sync_index_once(early.take()) {
                Err(Error::NotFound {
                    what:
                        Missing::File {
                            kind: FileKind::Index,
                            ..
                        },
                }) => continue,
                r => return r,
            }
        }
        self.sync_index_once(None)
    }

    fn sync_index_once(&self, early: Option<EarlyIndex>) -> Result<()> {
        let (listed, mut sealed) = match early {
            Some(e) => (e.listed, e.sealed),
            None => (self.backend.list(FileKind::Index)?, HashMap::new()),
        };
        let listed: HashSet<IndexId> = listed
            .into_iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let known: HashSet<IndexId> = self.cache.index().files()?.into_iter().collect();
        let stale = known.iter().any(|id| !listed.contains(id));
        let tx = self.cache.transaction()?;
        let result = (|| {
            if stale {
                self.cache.index().clear()?;
            }
            let mut damaged = Vec::new();
            let new: Vec<IndexId> = listed
                .iter()
                .filter(|id| stale || !known.contains(id))
                .copied()
                .collect();
            let (ready, to_load): (Vec<IndexId>, Vec<IndexId>) =
                new.iter().partition(|id| sealed.contains_key(id));
            let ready = ready.into_iter().map(|id| {
                let bytes = sealed.remove(&id).unwrap_or_default();
                (
                    id,
                    self.open_file::<IndexFile>(FileKind::Index, &id.to_hex(), &bytes),
                )
            });
            let loader = self.cache.index().loader()?;
            for (id, loaded) in ready.chain(self.load_index_files(&to_load)) {
                match loaded {
                    Ok(file) => loader.add_file(&id, &file)?,
                    // One damaged index file must not stop every operation: its packs are
                    // found from their own headers once the intact ones are known.
                    Err(e @ Error::Corrupt { .. }) => damaged.push((id, e)),
                    Err(e) => return Err(e),
                }
            }
            loader.finish()?;
            let ids: Vec<IndexId> = damaged.iter().map(|(id, _)| *id).collect();
            let n = self.index_from_headers(&ids)?;
            match damaged.as_slice() {
                [] => {}
                [(_, e)] => self.warn(format!(
                    "{e}; skipped it and read the headers of {n} pack(s) no intact index \
                     names instead (a repair of the index writes a new one)"
                )),
                [(_, e), ..] => self.warn(format!(
                    "{} index files are damaged (the first: {e}); skipped them and read the \
                     headers of {n} pack(s) no intact index names instead (a repair of the \
                     index writes a new one)",
                    damaged.len()
                )),
            }
            Ok(())
        })();
        result?;
        tx.commit()
    }

    /// Index files, decoded a batch at a time as the caller consumes them: a rebuild holds
    /// one batch of decoded entries, not the whole index (10^6 blobs are ~64 MB decoded).
    fn load_index_files<'a>(
        &'a self,
        ids: &'a [IndexId],
    ) -> impl Iterator<Item = (IndexId, Result<IndexFile>)> + 'a {
        let batch = self.backend.capabilities().read_concurrency.max(1) * 4;
        ids.chunks(batch)
            .flat_map(move |chunk| self.load_many::<IndexFile, _>(FileKind::Index, chunk))
    }

    /// Loads sealed files of one kind, several requests in flight (a bare machine reads
    /// every index file and snapshot manifest: one round trip each, one after the other,
    /// would dominate its time on an object store). Batches keep memory bounded.
    pub(crate) fn load_many<T, I>(&self, kind: FileKind, ids: &[I]) -> Vec<(I, Result<T>)>
    where
        T: DeserializeOwned + Send,
        I: Copy + Send + Sync + std::fmt::Display,
    {
        use rayon::prelude::*;
        let batch = self.backend.capabilities().read_concurrency.max(1) * 4;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(batch) {
            let loaded: Vec<(I, Result<T>)> =
                crate::util::with_read_pool(self.backend.as_ref(), || {
                    chunk
                        .par_iter()
                        .map(|id| (*id, self.load_file::<T>(kind, &id.to_string())))
                        .collect()
                });
            out.extend(loaded);
        }
        out
    }

    /// Stands in for damaged index files: every pack on the backend that no intact index
    /// file names (nor marks) is read by its header and made readable in the cache, under
    /// the first damaged file's id, and each damaged id is recorded so that it is not read
    /// again. Once for all of them: a listing of every pack per damaged file made 20,000
    /// junk files cost a minute. Readable, not live: like a marked pack, backups do not
    /// deduplicate against it (nothing in the repository names it yet). Returns the number
    /// of packs so found.
    fn index_from_headers(&self, damaged: &[IndexId]) -> Result<usize> {
        let Some((first, rest)) = damaged.split_first() else {
            return Ok(0);
        };
        let mut known: HashSet<PackId> = self
            .cache
            .index()
            .packs()?
            .into_iter()
            .map(|p| p.0)
            .collect();
        known.extend(self.cache.index().marked_packs()?.into_iter().map(|p| p.0));
        let now = crate::timespec::now().to_rfc3339();
        let mut unknown: Vec<(PackId, (pack::BlobKind, u64))> = self
            .stored_packs()?
            .into_iter()
            .filter(|(id, _)| !known.contains(id))
            .collect();
        unknown.sort_by_key(|u| u.0);
        let mut found = Vec::new();
        for (id, (kind, size)) in unknown {
            match self.read_pack_header(kind, &id, size) {
                Ok(entries) => found.push(ObsoletePack {
                    id,
                    kind,
                    marked: now.clone(),
                    blobs: Vec::new(),
                    entries,
                }),
                Err(e) => self.warn(format!("{e} (its blobs cannot be found)")),
            }
        }
        let n = found.len();
        let stand_in = |obsolete| IndexFile {
            version: FILE_VERSION,
            supersedes: Vec::new(),
            packs: Vec::new(),
            obsolete,
        };
        self.cache.index().add_file(first, &stand_in(found))?;
        for id in rest {
            self.cache.index().add_file(id, &stand_in(Vec::new()))?;
        }
        Ok(n)
    }

    /// A pack's header, read from its end (one range read for any usual header size).
    pub(crate) fn read_pack_header(
        &self,
        kind: pack::BlobKind,
        id: &PackId,
        size: u64,
    ) -> Result<Vec<pack::BlobEntry>> {
        const TAIL: u64 = 64 << 10;
        let take = size.min(TAIL);
        let mut tail = self.read_pack_range(kind, id, size - take, take)?;
        if tail.len() >= pack::TRAILER_LEN {
            let t = &tail[tail.len() - pack::TRAILER_LEN..];
            let hlen = u32::from_le_bytes(t.try_into().expect("4 bytes")) as u64;
            let need = hlen + pack::TRAILER_LEN as u64;
            if need > take && need <= size {
                tail = self.read_pack_range(kind, id, size - need, need)?;
            }
        }
        pack::read_header(&self.key, id, &tail)
    }

    /// Reads every index file, verifying each, and rebuilds the cached blob index from them
    /// unless it holds exactly these files already (its rows came from the same immutable
    /// files: re-inserting 10^6 of them was most of a prune's time); returns what was read,
    /// the files that could not be (their packs are then found by their headers) and the
    /// marks of earlier prunes.
    pub(crate) fn rebuild_index(&self) -> Result<IndexRead> {
        let read = self.rebuild_index_once()?;
        // A prune running meanwhile replaces index files between our listing and reading:
        // a file that vanished is no damage, so list again and read what is there now.
        if read
            .damaged
            .iter()
            .any(|(_, e)| matches!(e, Error::NotFound { .. }))
        {
            return self.rebuild_index_once();
        }
        Ok(read)
    }

    fn rebuild_index_once(&self) -> Result<IndexRead> {
        let listed: Vec<IndexId> = self
            .backend
            .list(FileKind::Index)?
            .into_iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let mut out = IndexRead::default();
        let known: HashSet<IndexId> = self.cache.index().files()?.into_iter().collect();
        let in_sync = known == listed.iter().copied().collect::<HashSet<_>>();
        let tx = self.cache.transaction()?;
        let rebuilt = (|| {
            if !in_sync {
                self.cache.index().clear()?;
            }
            let loader = self.cache.index().loader()?;
            for (id, loaded) in self.load_index_files(&listed) {
                match loaded {
                    Ok(file) => {
                        if !in_sync {
                            loader.add_file(&id, &file)?;
                        }
                        for m in file.obsolete {
                            index::add_mark(&mut out.marks, m);
                        }
                        out.read.push(id);
                    }
                    Err(e) => out.damaged.push((id, e)),
                }
            }
            loader.finish()?;
            // As in sync_index: the packs a damaged file named are found by their headers,
            // so that what they hold is not also reported as lost.
            let corrupt: Vec<IndexId> = (out.damaged.iter())
                .filter(|(_, e)| matches!(e, Error::Corrupt { .. }))
                .map(|(id, _)| *id)
                .collect();
            self.index_from_headers(&corrupt)?;
            Ok(())
        })();
        rebuilt?;
        tx.commit()?;
        Ok(out)
    }

    /// Every pack file the backend holds, with its kind and size.
    pub(crate) fn stored_packs(&self) -> Result<HashMap<PackId, (pack::BlobKind, u64)>> {
        Ok(self.stored_packs_classed()?.0)
    }

    /// As [`Repository::stored_packs`], with the storage class and write time of each
    /// pack the listing gives a class other than STANDARD.
    pub(crate) fn stored_packs_classed(&self) -> Result<StoredPacks> {
        let mut stored = HashMap::new();
        let mut classed = Vec::new();
        for kind in [pack::BlobKind::Data, pack::BlobKind::Tree] {
            for f in self.backend.list(pack_file_kind(kind))? {
                if let Ok(id) = f.name.parse::<PackId>() {
                    stored.insert(id, (kind, f.size));
                    if let Some(class) = f.storage_class.filter(|c| c != "STANDARD") {
                        classed.push((id, class, f.modified));
                    }
                }
            }
        }
        Ok((stored, classed))
    }

    /// Writes a new index that replaces `supersedes`: files of at most
    /// [`PACKS_PER_INDEX_FILE`] packs, the first also carrying the marks (at least one file
    /// is written). The replaced files are deleted only after every new one is durable.
    /// Returns the number of files written.
    pub(crate) fn replace_index(
        &self,
        packs: &mut dyn Iterator<Item = Result<IndexedPack>>,
        obsolete: Vec<ObsoletePack>,
        supersedes: &[IndexId],
    ) -> Result<usize> {
        let mut first = Some((obsolete, supersedes.to_vec()));
        let mut written = 0;
        loop {
            let pending = (&mut *packs)
                .take(PACKS_PER_INDEX_FILE)
                .collect::<Result<Vec<IndexedPack>>>()?;
            if pending.is_empty() && first.is_none() {
                break;
            }
            let (obsolete, supersedes) = first.take().unwrap_or_default();
            let file = IndexFile {
                version: FILE_VERSION,
                supersedes,
                packs: pending,
                obsolete,
            };
            self.save_index(&file)?;
            written += 1;
        }
        for id in supersedes {
            self.backend.delete(FileKind::Index, &id.to_hex())?;
        }
        Ok(written)
    }

    pub(crate) fn write_index(&self, packs: Vec<IndexedPack>) -> Result<IndexId> {
        self.write_index_superseding(packs, &[])
    }

    /// An index file naming `packs` that includes, and so may replace, the index files
    /// `supersedes` (format-spec §7).
    pub(crate) fn write_index_superseding(
        &self,
        packs: Vec<IndexedPack>,
        supersedes: &[IndexId],
    ) -> Result<IndexId> {
        let file = IndexFile {
            version: FILE_VERSION,
            supersedes: supersedes.to_vec(),
            packs,
            obsolete: Vec::new(),
        };
        let id = IndexId(self.save_index(&file)?);
        self.cache.index().add_file(&id, &file)?;
        Ok(id)
    }

    /// Deletes an index file that a durable one supersedes. The cache forgets the file but
    /// keeps its entries (the superseding file has them), so the next open does not take
    /// the deletion for a prune's and rebuild the whole index.
    pub(crate) fn delete_index_file(&self, id: &IndexId) -> Result<()> {
        self.backend.delete(FileKind::Index, &id.to_hex())?;
        self.cache.index().forget_file(id)
    }

    /// Uploads a finished pack; the caller must get it into an index file afterwards.
    /// Data packs go to `class`, else to the repository's data storage class.
    pub(crate) fn write_pack(
        &self,
        pack: &FinishedPack,
        class: Option<&str>,
    ) -> Result<IndexedPack> {
        let kind = match pack.kind {
            pack::BlobKind::Data => FileKind::Data,
            pack::BlobKind::Tree => FileKind::Tree,
        };
        // Only data packs go cold (trees are read by every listing and restore), and only
        // those big enough not to be billed as 128 KiB each.
        let class = match pack.kind {
            pack::BlobKind::Data if pack.bytes.len() >= crate::backend::MIN_CLASSED_OBJECT => {
                class.or(self.config.data_storage_class.as_deref())
            }
            _ => None,
        };
        self.backend.put(
            kind,
            &pack.id.to_hex(),
            &pack.bytes,
            &WriteOptions::in_class(class),
        )?;
        Ok(IndexedPack {
            id: pack.id,
            kind: pack.kind,
            size: pack.bytes.len() as u64,
            blobs: pack.entries.clone(),
        })
    }

    /// Where a blob is stored; not found if the index does not name it.
    #[doc(hidden)]
    pub fn lookup_blob(&self, id: &BlobId) -> Result<BlobLocation> {
        self.cache
            .index()
            .lookup(id)?
            .ok_or_else(|| Error::not_found(Missing::Blob(*id)))
    }

    /// Reads, decrypts and verifies one blob with a range read.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.lookup_blob(id)?;
        let sealed = self.read_pack_range(
            loc.entry.kind,
            &loc.pack,
            loc.entry.offset,
            loc.entry.length as u64,
        )?;
        self.open_blob_in(&loc.pack, &sealed, loc.entry.offset, &loc.entry)
    }

    /// A blob's plaintext from `buf`, bytes of pack `pack` from offset `at` on (the whole
    /// pack, or one range read of it): cut out, decrypted, decompressed and checked against
    /// its id. Restore, check, prune and tree fetches all open blobs here; errors name the
    /// blob and its pack.
    pub(crate) fn open_blob_in(
        &self,
        pack: &PackId,
        buf: &[u8],
        at: u64,
        entry: &pack::BlobEntry,
    ) -> Result<Vec<u8>> {
        let sealed = sealed_in(pack, buf, at, entry)?;
        open_blob(&self.key, entry, sealed).map_err(|e| in_pack(e, pack))
    }

    /// A tree, from the cache or else from the repository.
    ///
    /// A miss never fetches one tree blob: it fetches whole tree packs, several in flight,
    /// level by level down the missing tree's subtree (breadth first), and caches every tree
    /// in them. A walk of a snapshot on an empty cache (a bare machine) thus costs about one
    /// request per tree pack instead of one round trip per directory.
    pub fn load_tree(&self, id: &TreeId) -> Result<Tree> {
        let bytes = match self.cache.trees().get(id)? {
            Some(b) => b,
            None => {
                self.fetch_trees_below(id)?;
                self.cache.trees().get(id)?.ok_or_else(|| {
                    Error::not_found(Missing::Tree {
                        id: *id,
                        in_pack: true,
                    })
                })?
            }
        };
        Tree::decode(&bytes, id)
    }

    /// Caches `root` and the trees below it that are not cached yet, by whole tree packs.
    /// Only the root's own failure is an error: a tree below that cannot be had is left for
    /// its own `load_tree` to report.
    fn fetch_trees_below(&self, root: &TreeId) -> Result<()> {
        let mut fresh: HashSet<TreeId> = HashSet::new();
        let mut seen: HashSet<TreeId> = HashSet::from([*root]);
        let mut level = vec![*root];
        let mut first = true;
        while !level.is_empty() {
            let mut packs: HashSet<PackId> = HashSet::new();
            for id in &level {
                if fresh.contains(id) || self.cache.trees().contains(id)? {
                    continue;
                }
                match self.cache.index().lookup(id)? {
                    Some(loc) => {
                        packs.insert(loc.pack);
                    }
                    None if first => {
                        return Err(Error::not_found(Missing::Tree {
                            id: *id,
                            in_pack: false,
                        }))
                    }
                    None => {}
                }
            }
            let packs: Vec<PackId> = packs.into_iter().collect();
            let fetched: Vec<Result<Vec<TreeId>>> =
                crate::util::with_read_pool(self.backend.as_ref(), || {
                    use rayon::prelude::*;
                    packs.par_iter().map(|p| self.fetch_tree_pack(p)).collect()
                });
            for r in fetched {
                match r {
                    Ok(ids) => fresh.extend(ids),
                    Err(e) if first && !fresh.contains(root) => return Err(e),
                    Err(_) => {}
                }
            }
            if first && !fresh.contains(root) && !self.cache.trees().contains(root)? {
                return Err(Error::corrupt(
                    format!("tree {root}"),
                    "not in the pack the index names",
                ));
            }
            // Only what this call brought in is walked further down: a tree cached before
            // had its own chance, and any miss below it starts a fetch of its own.
            let mut next = Vec::new();
            for id in &level {
                if !fresh.contains(id) {
                    continue;
                }
                let Some(bytes) = self.cache.trees().get(id)? else {
                    continue;
                };
                let Ok(tree) = Tree::decode(&bytes, id) else {
                    continue;
                };
                for node in tree.entries {
                    if let Some(sub) = node.subtree {
                        if seen.insert(sub) {
                            next.push(sub);
                        }
                    }
                }
            }
            level = next;
            first = false;
        }
        Ok(())
    }

    /// Reads a tree pack whole, verifies each tree in it and caches them; returns their ids.
    fn fetch_tree_pack(&self, pack: &PackId) -> Result<Vec<TreeId>> {
        let bytes = self.read_pack(pack::BlobKind::Tree, pack)?;
        let trees = self.trees_of_pack(pack, &bytes)?;
        let ids = trees.iter().map(|(id, _)| *id).collect();
        self.cache.trees().put(&trees)?;
        Ok(ids)
    }

    /// The verified plaintext of every tree in a pack's bytes: by its header, or by the
    /// index when the header is damaged. Damaged blobs are left out.
    fn trees_of_pack(&self, pack: &PackId, bytes: &[u8]) -> Result<Vec<(TreeId, Vec<u8>)>> {
        let entries = match pack::read_header(&self.key, pack, bytes) {
            Ok(e) => e,
            Err(_) => self.cache.index().pack_blobs(pack)?,
        };
        Ok(entries
            .iter()
            .filter(|e| e.kind == pack::BlobKind::Tree)
            .filter_map(|e| self.open_blob_in(pack, bytes, 0, e).ok().map(|p| (e.id, p)))
            .collect())
    }

    // ---- snapshots ----

    /// Stores a snapshot manifest (after its packs and index are durable: write order,
    /// format-spec §7).
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let wire = snapshot::SnapshotWire::for_format(snap, self.config.version);
        let id = SnapshotId(self.save_file(FileKind::Snapshot, &wire)?);
        self.cache.snapshots().put(&id, &encode(snap))?;
        Ok(id)
    }

    /// All snapshots, oldest first; manifests come from the cache when it has them. A
    /// damaged snapshot file is skipped with a warning (`check` reports it).
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (snaps, damaged) = self.snapshots_and_damage()?;
        for (id, e) in damaged {
            self.warn(format!("skipped snapshot {id}: {e}"));
        }
        Ok(snaps)
    }

    /// One snapshot's manifest by id: from the cache, else one read (no listing).
    pub fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        if let Some(s) = self
            .cache
            .snapshots()
            .get(id)?
            .and_then(|bytes| ciborium::from_reader::<Snapshot, _>(&bytes[..]).ok())
        {
            return Ok(s);
        }
        let s: Snapshot = self.load_file(FileKind::Snapshot, &id.to_hex())?;
        self.cache.snapshots().put(id, &encode(&s))?;
        Ok(s)
    }

    /// Every snapshot, or an error naming the first damaged one: for operations that must
    /// see all of them (prune would otherwise delete what a damaged one references).
    pub(crate) fn all_snapshots_intact(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (snaps, damaged) = self.snapshots_and_damage()?;
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
    pub fn damaged_snapshots(&self) -> Result<Vec<(SnapshotId, Error)>> {
        Ok(self.snapshots_and_damage()?.1)
    }

    /// Every readable snapshot, and the damaged ones with their errors.
    #[allow(clippy::type_complexity)]
    pub(crate) fn snapshots_and_damage(
        &self,
    ) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>)> {
        let listed: HashSet<SnapshotId> = self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        for id in self.cache.snapshots().ids()? {
            if !listed.contains(&id) {
                self.cache.snapshots().remove(&id)?;
            }
        }
        let mut out = Vec::with_capacity(listed.len());
        let mut damaged = Vec::new();
        let mut missing = Vec::new();
        for id in listed {
            let cached = self
                .cache
                .snapshots()
                .get(&id)?
                .and_then(|bytes| ciborium::from_reader::<Snapshot, _>(&bytes[..]).ok());
            match cached {
                Some(s) => out.push((id, s)),
                None => missing.push(id),
            }
        }
        for (id, loaded) in self.load_many::<Snapshot, _>(FileKind::Snapshot, &missing) {
            match loaded {
                Ok(s) => {
                    self.cache.snapshots().put(&id, &encode(&s))?;
                    out.push((id, s));
                }
                Err(e @ Error::Corrupt { .. }) => damaged.push((id, e)),
                // Forgotten since the listing: not there, not damaged.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            a.1.datetime()
                .cmp(&b.1.datetime())
                .then_with(|| a.0.cmp(&b.0))
        });
        damaged.sort_by_key(|d| d.0);
        Ok((out, damaged))
    }

    /// Resolves `latest`, a full id or a unique prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        self.find_snapshot_in(spec, &snapshot::SnapshotFilter::default())
    }

    /// As [`Repository::find_snapshot`]; `latest` means the newest that passes the filter,
    /// which must leave one lineage (see [`snapshot::select_at`]).
    pub fn find_snapshot_in(
        &self,
        spec: &str,
        filter: &snapshot::SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        let all = self.snapshots()?;
        if spec == "latest" {
            return snapshot::select_at(all, None, filter);
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut hits: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_l))
            .collect();
        match hits.len() {
            1 => Ok(hits.pop().unwrap()),
            0 => Err(Error::not_found(Missing::Snapshot(spec.to_string()))),
            n => Err(Error::Ambiguous {
                what: "snapshot",
                prefix: spec.to_string(),
                matches: n,
            }),
        }
    }

    /// Deletes a snapshot manifest. The data it referenced stays until prune.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.backend.delete(FileKind::Snapshot, &id.to_hex())?;
        self.cache.snapshots().remove(id)
    }

    // ---- keys ----

    /// Every key file, unreadable ones left out.
    pub fn list_keys(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for info in self.backend.list(FileKind::Key)? {
            let bytes = self.backend.read(FileKind::Key, &info.name)?;
            let id = info
                .name
                .parse()
                .map_err(|_| Error::corrupt(format!("key {}", info.name), "bad name"))?;
            out.push((id, KeyFile::decode(&bytes, &info.name)?));
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        Ok(out)
    }

    /// Adds a key file for `password` to the repository's master key.
    pub fn add_key(&self, password: &[u8], cost: &KdfCost) -> Result<KeyId> {
        let bytes = KeyFile::create(&self.key, password, cost)?.encode();
        let id = KeyId(content_address(&bytes));
        self.backend.write(FileKind::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// The key whose id starts with `prefix` (hex, any case).
    pub fn find_key(&self, prefix: &str) -> Result<KeyId> {
        let prefix = prefix.to_ascii_lowercase();
        let hits: Vec<KeyId> = self
            .list_keys()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.to_hex().starts_with(&prefix))
            .collect();
        match hits[..] {
            [one] => Ok(one),
            [] => Err(Error::not_found(Missing::Key(prefix))),
            _ => Err(Error::Ambiguous {
                what: "key",
                prefix,
                matches: hits.len(),
            }),
        }
    }

    /// Removes another password's key; never the one in use, never the last.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::KeyInUse);
        }
        self.remove_key_file(id)
    }

    /// Replaces the password in use: the new key is durable before the old one goes.
    /// Returns the new key's id.
    pub fn change_password(&self, password: &[u8], cost: &KdfCost) -> Result<KeyId> {
        let new = self.add_key(password, cost)?;
        self.remove_key_file(&self.key_id)?;
        Ok(new)
    }

    fn remove_key_file(&self, id: &KeyId) -> Result<()> {
        let keys = self.list_keys()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::not_found(Missing::Key(id.to_hex())));
        }
        if keys.len() == 1 {
            return Err(Error::LastKey);
        }
        self.backend.delete(FileKind::Key, &id.to_hex())
    }
}

/// Packs named per index file that replaces others (prune, repair).
pub const PACKS_PER_INDEX_FILE: usize = 4096;

/// What [`Repository::rebuild_index`] read.
#[derive(Debug, Default)]
pub(crate) struct IndexRead {
    /// The index files read.
    pub read: Vec<IndexId>,
    /// Index files that could not be read, and why.
    pub damaged: Vec<(IndexId, Error)>,
    /// The marks of earlier prunes, one per pack.
    pub marks: HashMap<PackId, index::ObsoletePack>,
}

/// The index listing, and some index files still sealed, fetched before the key is known.
struct EarlyIndex {
    listed: Vec<FileInfo>,
    sealed: HashMap<IndexId, Vec<u8>>,
}

impl EarlyIndex {
    /// The listing; with `files`, also the first batch of index files (memory stays
    /// bounded: the rest are read as usual, once the key is known).
    fn fetch(backend: &BackendRef, files: bool) -> Result<Self> {
        use rayon::prelude::*;
        let listed = backend.list(FileKind::Index)?;
        let mut sealed = HashMap::new();
        if files {
            let first: Vec<IndexId> = listed
                .iter()
                .filter_map(|f| f.name.parse().ok())
                .take(backend.capabilities().read_concurrency.max(1) * 4)
                .collect();
            sealed = crate::util::with_read_pool(backend.as_ref(), || {
                first
                    .par_iter()
                    .filter_map(|id| {
                        let bytes = backend.read(FileKind::Index, &id.to_hex()).ok()?;
                        Some((*id, bytes))
                    })
                    .collect()
            });
        }
        Ok(EarlyIndex { listed, sealed })
    }
}

/// Seals, stores and deletes repository files with its own handles on the backend and
/// key; see [`Repository::file_store`].
#[derive(Clone)]
pub(crate) struct FileStore {
    backend: BackendRef,
    key: MasterKey,
}

impl FileStore {
    /// Seals and stores a CBOR value; returns its name.
    pub fn save<T: Serialize>(&self, kind: FileKind, value: &T) -> Result<String> {
        let (id, sealed) = seal_file(&self.key, kind, value);
        let name = hex::encode(id);
        self.backend.write(kind, &name, &sealed)?;
        Ok(name)
    }

    pub fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.backend.delete(kind, name)
    }
}

/// The config, decrypted with `key`; `None` if the key does not open it.
fn open_config(key: &MasterKey, sealed: &[u8]) -> Option<Config> {
    let plain = key.open(sealed, aad(FileKind::Config))?;
    ciborium::from_reader(&plain[..]).ok()
}

/// The key file that opened this repository last time, if the password still opens it and
/// the repository still has it (a key removed there must stop working here too: one
/// listing checks). Saves listing and reading every key file.
fn cached_key(
    backend: &BackendRef,
    key_cache: &Path,
    password: &[u8],
    sealed_config: &[u8],
) -> Result<Option<(MasterKey, KeyId, Config)>> {
    let cached = std::fs::read(key_cache).ok().and_then(|bytes| {
        let (name, file): (String, serde_bytes::ByteBuf) =
            ciborium::from_reader(&bytes[..]).ok()?;
        let kf = KeyFile::decode(&file, &name).ok()?;
        let key = kf.open(password).ok()??;
        let config = open_config(&key, sealed_config)?;
        Some((key, name.parse::<KeyId>().ok()?, config))
    });
    let Some(c) = cached else { return Ok(None) };
    let listed = backend.list(FileKind::Key)?;
    Ok(listed.iter().any(|f| f.name == c.1.to_hex()).then_some(c))
}

/// Keeps the key file that opened the repository for next time. Only a speed-up: failing
/// to write it changes nothing. Private, like the rest of the cache (a key file is only as
/// strong as its password).
fn remember_key(key_cache: &Path, key_id: &KeyId, file: Vec<u8>) {
    let mut buf = Vec::new();
    ciborium::into_writer(
        &(key_id.to_hex(), serde_bytes::ByteBuf::from(file)),
        &mut buf,
    )
    .expect("CBOR into memory");
    if let Some(dir) = key_cache.parent() {
        let _ = crate::repo::cache::private_dir(dir).and_then(|_| {
            use std::io::Write;
            let mut f = crate::repo::cache::private_file(key_cache)?;
            f.set_len(0)
                .and_then(|_| f.write_all(&buf))
                .map_err(|e| Error::io(key_cache, e))
        });
    }
}

/// Where the key file that last opened a repository is kept, by repository location.
fn key_cache_path(cache_base: &Path, location: &str) -> std::path::PathBuf {
    let h = blake3::hash(location.as_bytes());
    cache_base.join("keys").join(&h.to_hex()[..32])
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
        for f in repo.list_files(FileKind::Index).unwrap() {
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
        let files = repo.list_files(FileKind::Index).unwrap();
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
