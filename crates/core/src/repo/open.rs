//! Opening a repository: init, the password, the key file (and the one cached from last
//! time), the config, the cache.

use super::indexing::EarlyIndex;
use serde::{Deserialize, Serialize};

use super::marks::IndexView;
use super::*;
use zeroize::Zeroizing;

impl Repository {
    /// Creates a repository; refuses a location that already holds one. `cost` is the
    /// first key's Argon2id cost ([`KdfCost::DEFAULT`] outside tests).
    pub fn init(
        backend: BackendRef,
        password: &[u8],
        config: Config,
        cost: &KdfCost,
    ) -> Result<Config> {
        // Before anything is created: a repository no password protects is never made.
        if password.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::BadInput {
                what: "password",
                reason: "an empty password protects nothing: refusing it".into(),
            });
        }
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
        Self::open_hinted(backend, password, cache_base, IndexView::Full, None)
    }

    /// As [`Repository::open_with`] for a backup: where the format and the cache allow,
    /// the index is a partial view (format-spec §7.3), brought up to date by listing mark
    /// records instead of reading every index file other hosts wrote since the last run.
    pub fn open_for_backup(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
        cache_base: &Path,
    ) -> Result<Self> {
        Self::open_hinted(backend, password, cache_base, IndexView::Partial, None)
    }

    /// As [`Repository::open_with`] for commands that read snapshots and audit records
    /// only (`status`): the index is not brought up to date (no listing), so the handle is
    /// a [`metadata::MetadataRepository`], which offers no blob or pack lookup.
    pub fn open_metadata(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
        cache_base: &Path,
    ) -> Result<metadata::MetadataRepository> {
        Self::open_hinted(backend, password, cache_base, IndexView::None, None)
            .map(metadata::MetadataRepository::new)
    }

    /// As [`Repository::open_with`] (`view` full), [`Repository::open_for_backup`]
    /// (partial) or [`Repository::open_metadata`] (none, then wrapped by
    /// [`metadata::MetadataRepository::new`]), trying first the key files whose id starts
    /// with `key_hint`: a bare machine facing many key files, some of them junk.
    pub fn open_hinted(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
        cache_base: &Path,
        view: IndexView,
        key_hint: Option<&str>,
    ) -> Result<Self> {
        // Asked once, whichever way the repository is opened in the end; every copy is
        // wiped when dropped.
        let mut asked: Option<Zeroizing<Vec<u8>>> = None;
        let mut password = || -> Result<Zeroizing<Vec<u8>>> {
            if asked.is_none() {
                asked = Some(Zeroizing::new(password()?));
            }
            Ok(asked.clone().expect("asked above"))
        };
        if view == IndexView::Partial {
            if let Some(repo) = Self::open_warm(&backend, &mut password, cache_base)? {
                return Ok(repo);
            }
        }
        Self::open_cold(backend, &mut password, cache_base, view, key_hint)
    }

    /// An hourly backup's opening (format-spec §7.3, §12): the key file and the config come
    /// from the cache, and the run costs two requests in flight together, the listing of
    /// `marks/` and the sentinel's ranged read. `None` where the cache cannot vouch for
    /// what it holds (no copy, another password, a view too old, a key file a record says
    /// was removed, a config that changed): then [`Repository::open_cold`] reads it all.
    fn open_warm(
        backend: &BackendRef,
        password: &mut dyn FnMut() -> Result<Zeroizing<Vec<u8>>>,
        cache_base: &Path,
    ) -> Result<Option<Self>> {
        let key_cache = key_cache_path(cache_base, &backend.location());
        // What opens the repository is taken from here unchecked by the store: only from
        // directories that are this user's alone.
        if let Some(keys) = key_cache.parent() {
            crate::repo::cache::private_dirs(cache_base, keys)?;
        }
        let Some(cached) = CachedOpening::load(&key_cache) else {
            return Ok(None);
        };
        let Some((key, key_id, config)) = cached.open(&password()?, &cached.2) else {
            return Ok(None);
        };
        let repo = Self::with_key(backend.clone(), key, key_id, config, cache_base)?;
        if !repo.partial_view_fresh()? {
            return Ok(None);
        }
        let keys_due = repo.key_listing_due()?;
        // None needs another: one round trip for all.
        let (records, probe, keys) = std::thread::scope(|s| {
            let probe = s.spawn(|| repo.probe_sentinel());
            let keys = keys_due.then(|| s.spawn(|| backend.list(FileKind::Key)));
            let records = repo.apply_mark_records();
            let keys = keys.map(|k| k.join().expect("key listing thread"));
            (records, probe.join().expect("sentinel probe thread"), keys)
        });
        let (records, probe) = (records?, probe?);
        // The key files say whether this password's is still there: when a record names
        // it, when one did not open (it may have), and once a day whatever the records
        // say, so that a removal whose record was lost (deleted by whoever holds the
        // bucket, or pruned early by a clock ahead) stops working within the day.
        let keys = match keys {
            Some(listed) => Some(listed?),
            None if records.reread || records.removed_keys.contains(&repo.key_id) => {
                Some(backend.list(FileKind::Key)?)
            }
            None => None,
        };
        if let Some(keys) = keys {
            if !keys.iter().any(|f| f.name == repo.key_id.to_hex()) {
                let _ = std::fs::remove_file(&key_cache);
                return Ok(None);
            }
            repo.keys_listed()?;
        }
        if !records.reread && matches!(probe, super::marks::Sentinel::Holds) {
            repo.partial
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok(Some(repo));
        }
        // The sentinel gone (after every prune, or with the whole repository) or a repair
        // asking for every index file: first make sure this is still the repository the
        // cache knows.
        match backend.read(FileKind::Config, "config") {
            Ok(sealed) if sealed == cached.2.as_slice() => {}
            Ok(_) => return Ok(None),
            Err(Error::NotFound { .. }) => return Err(Error::NoRepository(backend.location())),
            Err(e) => return Err(e),
        }
        if records.reread || !repo.sentinel_verdict(probe)? {
            repo.sync_index()?;
        } else {
            repo.partial
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(Some(repo))
    }

    /// Opening that reads the config and checks the key files: what every command but an
    /// hourly backup on a warm cache does.
    fn open_cold(
        backend: BackendRef,
        password: &mut dyn FnMut() -> Result<Zeroizing<Vec<u8>>>,
        cache_base: &Path,
        view: IndexView,
        key_hint: Option<&str>,
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
        if let Some(keys) = key_cache.parent() {
            crate::repo::cache::private_dirs(cache_base, keys)?;
        }
        // The index listing needs no key, nor (on a machine that never opened this
        // repository: no key is cached for it) do the first index files: they are fetched
        // while the password is asked for and the key derived, instead of one round trip
        // after the other.
        let bare = !key_cache.exists();
        // A partial view lists no index files unless the cache turns out too old for it,
        // which is known only once it is open.
        let early_listing = view == IndexView::Full || (view == IndexView::Partial && bare);
        let (opened, early) = std::thread::scope(|s| {
            let early = s.spawn(|| early_listing.then(|| EarlyIndex::fetch(&backend, bare)));
            let opened = (|| -> Result<Repository> {
                let password = password()?;
                let (key, key_id, config) =
                    match cached_key(&backend, &key_cache, &password, &sealed)? {
                        Some(c) => c,
                        None => {
                            let (key, key_id, file) = Self::unlock(&backend, &password, key_hint)?;
                            let config = open_config(&key, &sealed)
                                .ok_or_else(|| Error::corrupt("config", "authentication failed"))?;
                            remember_key(&key_cache, &key_id, file, &sealed);
                            (key, key_id, config)
                        }
                    };
                let repo = Self::with_key(backend.clone(), key, key_id, config, cache_base)?;
                repo.keys_listed()?;
                Ok(repo)
            })();
            (opened, early.join().expect("index prefetch thread"))
        });
        let repo = opened?;
        match view {
            IndexView::None => {}
            IndexView::Partial if early.is_none() && repo.partial_view_fresh()? => {
                // A record of a repair asks for every index file to be read again, as does
                // a vanished sentinel no record explains.
                if repo.apply_mark_records()?.reread || !repo.sentinel_holds()? {
                    repo.sync_index()?;
                } else {
                    repo.partial
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            IndexView::Partial => {
                // A full view now, and the listing the next run's partial view starts from.
                repo.sync_index_from(early.and_then(|e| e.ok()))?;
                repo.apply_mark_records()?;
            }
            IndexView::Full => repo.sync_index_from(early.and_then(|e| e.ok()))?,
        }
        Ok(repo)
    }

    /// Whether a warm opening lists the key files this time: a day after the last.
    fn key_listing_due(&self) -> Result<bool> {
        let last = (self.cache.meta_get("keys_listed")?)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
        let now = crate::timespec::now();
        Ok(last
            .is_none_or(|t| now - t > KEY_LISTING_INTERVAL || t - now > chrono::Duration::days(1)))
    }

    /// Remembers that the key files were listed and this key file was among them.
    fn keys_listed(&self) -> Result<()> {
        (self.cache).meta_put("keys_listed", &crate::timespec::now().to_rfc3339())
    }

    /// The repository open with `key`, once its config is one this build can work with.
    pub(super) fn with_key(
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
        let cache = Cache::open(&cache_dir(cache_base, &config, &backend.location()))?;
        // Trees are cached as they are read; bounded here, once per process, so that the
        // cache of a long-lived repository does not grow without end.
        cache.trees().bound(crate::repo::cache::TREE_CACHE_BYTES)?;
        let (backend, written) = lock_layer(backend, &config);
        Ok(Repository {
            backend,
            written,
            key: std::sync::Arc::new(key),
            key_id,
            config,
            cache,
            warnings: Default::default(),
            partial: Default::default(),
            dedupe_off: Default::default(),
            synced: Default::default(),
        })
    }

    /// The master key from the key file `password` opens. Key files are tried oldest
    /// stored first and within [`UNLOCK_WORK_BUDGET`] in all: junk key files planted by
    /// whoever can write the store (no password needed) cost a bare machine seconds, not
    /// minutes, and a budget they spend is said as such, not as a wrong password.
    pub(super) fn unlock(
        backend: &BackendRef,
        password: &[u8],
        hint: Option<&str>,
    ) -> Result<(MasterKey, KeyId, Vec<u8>)> {
        Self::unlock_within(backend, password, hint, UNLOCK_WORK_BUDGET)
    }

    fn unlock_within(
        backend: &BackendRef,
        password: &[u8],
        hint: Option<&str>,
        budget: u64,
    ) -> Result<(MasterKey, KeyId, Vec<u8>)> {
        let (mut candidates, mut damaged) = read_key_files(backend)?;
        // The hinted key files first, then the oldest stored (format-spec §3.1): the key
        // files there were when junk was planted go before it, as an object store's times
        // are its own. Not the cheapest: junk a little cheaper than the real key went
        // first, enough of it to spend the budget. Then the cheapest, then by name.
        let hint = hint.map(str::to_ascii_lowercase);
        let unhinted = |id: &KeyId| !hint.as_ref().is_some_and(|h| id.to_hex().starts_with(h));
        candidates.sort_by_key(|c| (unhinted(&c.0), c.3.unwrap_or(i64::MAX), c.2.kdf.work(), c.0));
        let mut intact = 0usize;
        let mut spent = 0u64;
        let total = candidates.len();
        for (tried, (id, bytes, kf, _)) in candidates.into_iter().enumerate() {
            spent += kf.kdf.work();
            if spent > budget {
                return Err(Error::KeyBudgetSpent {
                    tried,
                    untried: total - tried,
                    budget_mib: budget >> 10,
                    damaged,
                });
            }
            match kf.open(password) {
                Ok(Some(key)) => return Ok((key, id, bytes)),
                Ok(None) => intact += 1,
                Err(e) => damaged.push(format!("key {id}: {e}")),
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
}

/// The Argon2id work (KiB·passes) opening may spend trying key files: 4 GiB·passes, ~90
/// key files of the default cost, a few seconds.
pub const UNLOCK_WORK_BUDGET: u64 = 4 << 20;

/// A key file is a few hundred bytes; anything much bigger is not one.
const KEY_FILE_MAX: usize = 16 << 10;

/// A key file worth trying: its id, bytes, decoding and when it was stored.
type Candidate = (KeyId, Vec<u8>, KeyFile, Option<i64>);

/// The key files worth trying, and why the others are not.
fn read_key_files(backend: &BackendRef) -> Result<(Vec<Candidate>, Vec<String>)> {
    let mut keys = backend.list(FileKind::Key)?;
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    // A damaged key file is named as damaged, never mistaken for a wrong password.
    let mut damaged = Vec::new();
    let mut candidates = Vec::new();
    for info in keys {
        let Ok(id) = info.name.parse::<KeyId>() else {
            continue; // not a key file name: ignored, as the format says
        };
        if info.size > KEY_FILE_MAX as u64 {
            damaged.push(format!(
                "key {}: {} bytes, not a key file",
                info.name, info.size
            ));
            continue;
        }
        let bytes = match backend.read(FileKind::Key, &info.name) {
            Ok(bytes) => bytes,
            // A FIFO, directory or symlink in its place is damage, as junk bytes are.
            Err(e @ Error::Corrupt { .. }) => {
                damaged.push(e.to_string());
                continue;
            }
            // Removed since the listing (a password changed meanwhile).
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if content_address(&bytes) != id.0 {
            damaged.push(format!(
                "key {}: content does not match its name",
                info.name
            ));
            continue;
        }
        match KeyFile::decode(&bytes, &info.name) {
            Ok(kf) => match kf.kdf.check_bounds() {
                Ok(()) => candidates.push((id, bytes, kf, info.modified)),
                Err(e) => damaged.push(format!("key {}: {e}", info.name)),
            },
            Err(e) => damaged.push(e.to_string()),
        }
    }
    Ok((candidates, damaged))
}

/// The config, decrypted with `key`; `None` if the key does not open it.
pub(super) fn open_config(key: &MasterKey, sealed: &[u8]) -> Option<Config> {
    let plain = key.open(sealed, aad(FileKind::Config))?;
    ciborium::from_reader(&plain[..]).ok()
}

/// What the cache keeps of the last opening of a repository (format-spec §12): the key file
/// that opened it and its sealed config (written once, at `init`), so that a warm run needs
/// neither. Private, like the rest of the cache: a key file is only as strong as its
/// password.
#[derive(Serialize, Deserialize)]
struct CachedOpening(String, serde_bytes::ByteBuf, serde_bytes::ByteBuf);

/// How often a warm opening lists the key files although no record names its own: the
/// longest a removed key keeps working where its removal's record was lost.
const KEY_LISTING_INTERVAL: chrono::Duration = chrono::Duration::hours(24);

/// A cached opening is a key file and a config: a few KB. Anything bigger is not ours.
const CACHED_OPENING_MAX: u64 = 1 << 20;

impl CachedOpening {
    /// The cached opening at `path`, if it is a regular file of this user's of a sane size:
    /// a symlink, a FIFO or a huge file planted there (by whoever could write the directory
    /// before it was made private) is not read.
    fn load(path: &Path) -> Option<Self> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        let mine = meta.uid() == nix::unistd::geteuid().as_raw();
        if !meta.is_file() || !mine || meta.len() > CACHED_OPENING_MAX {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(CACHED_OPENING_MAX).read_to_end(&mut bytes).ok()?;
        ciborium::from_reader(&bytes[..]).ok()
    }

    /// The key, its id and the config `sealed_config` holds, if `password` opens the key.
    fn open(&self, password: &[u8], sealed_config: &[u8]) -> Option<(MasterKey, KeyId, Config)> {
        let kf = KeyFile::decode(&self.1, &self.0).ok()?;
        let key = kf.open(password).ok()??;
        let config = open_config(&key, sealed_config)?;
        Some((key, self.0.parse::<KeyId>().ok()?, config))
    }
}

/// The key file that opened this repository last time, if the password still opens it and
/// the repository still has it (a key removed there must stop working here too: one
/// listing checks). Saves listing and reading every key file.
pub(super) fn cached_key(
    backend: &BackendRef,
    key_cache: &Path,
    password: &[u8],
    sealed_config: &[u8],
) -> Result<Option<(MasterKey, KeyId, Config)>> {
    let cached = CachedOpening::load(key_cache).and_then(|c| c.open(password, sealed_config));
    let Some(c) = cached else { return Ok(None) };
    let listed = backend.list(FileKind::Key)?;
    Ok(listed.iter().any(|f| f.name == c.1.to_hex()).then_some(c))
}

/// Keeps the key file that opened the repository, and its config, for next time. Only a
/// speed-up: failing to write it changes nothing.
pub(super) fn remember_key(key_cache: &Path, key_id: &KeyId, file: Vec<u8>, sealed_config: &[u8]) {
    let mut buf = Vec::new();
    let cached = CachedOpening(
        key_id.to_hex(),
        serde_bytes::ByteBuf::from(file),
        serde_bytes::ByteBuf::from(sealed_config.to_vec()),
    );
    ciborium::into_writer(&cached, &mut buf).expect("CBOR into memory");
    if let Some(dir) = key_cache.parent() {
        let _ = crate::repo::cache::private_dir(dir).and_then(|_| replace_private(key_cache, &buf));
    }
}

/// Writes `path` whole as a new 0600 file renamed into place: whatever was there (a
/// symlink, a FIFO) is replaced, never followed or opened.
fn replace_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| Error::io(path, e))
}

/// A repository's cache directory, by id and location: a copy (`cp -a`, a synced bucket)
/// has the same id and snapshots of its own, and a cache shared by the two took each
/// one's snapshots for the other's rolled back (hostile pass 8). A cache made before the
/// location counted is taken by the first location to open it; a repository moved to
/// another location starts a cache afresh.
fn cache_dir(cache_base: &Path, config: &Config, location: &str) -> std::path::PathBuf {
    let id = config.id.to_hex();
    let place = blake3::hash(location.as_bytes()).to_hex();
    let dir = cache_base.join(format!("{id}-{}", &place[..16]));
    let legacy = cache_base.join(&id);
    let mine = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw())
    };
    if std::fs::symlink_metadata(&dir).is_err() && mine(&legacy) {
        // Never over a cache another process made meanwhile; a failure leaves a cache
        // to rebuild, nothing lost.
        let flags = rustix::fs::RenameFlags::NOREPLACE;
        let _ = rustix::fs::renameat_with(rustix::fs::CWD, &legacy, rustix::fs::CWD, &dir, flags);
    }
    dir
}

/// Where the key file that last opened a repository is kept, by repository location.
pub(super) fn key_cache_path(cache_base: &Path, location: &str) -> std::path::PathBuf {
    let h = blake3::hash(location.as_bytes());
    cache_base.join("keys").join(&h.to_hex()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    #[test]
    fn copies_at_two_locations_have_caches_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store, 0, dir.path());
        let base = dir.path().join("base");
        let legacy = base.join(repo.config.id.to_hex());
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("cache.sqlite"), b"old").unwrap();
        // The first location takes the cache made before locations counted.
        let a = cache_dir(&base, &repo.config, "/srv/a");
        assert_eq!(std::fs::read(a.join("cache.sqlite")).unwrap(), b"old");
        assert!(!legacy.exists());
        assert_eq!(cache_dir(&base, &repo.config, "/srv/a"), a);
        let b = cache_dir(&base, &repo.config, "/srv/b");
        assert_ne!(a, b);
        assert!(!b.exists(), "a second location starts afresh");
        // A legacy cache made again is never renamed over one in use.
        std::fs::create_dir_all(&legacy).unwrap();
        assert_eq!(cache_dir(&base, &repo.config, "/srv/a"), a);
        assert!(legacy.exists() && a.join("cache.sqlite").exists());
    }

    #[test]
    fn key_files_are_tried_cheapest_first_and_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        let repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        // Two more passwords: one at 128 KiB (twice the first's work), one at 64 KiB.
        let dear = KdfCost {
            memory_kib: 128,
            ..KdfCost::INSECURE_FOR_TESTS
        };
        let dear_id = repo.keys().add(b"dear", &dear).unwrap();
        repo.keys()
            .add(b"cheap", &KdfCost::INSECURE_FOR_TESTS)
            .unwrap();
        // 64 + 64 KiB·passes: the two cheap keys fit, the dear one does not.
        let opened = |pw: &[u8], budget| Repository::unlock_within(&store, pw, None, budget);
        assert!(opened(b"cheap", 128).is_ok());
        assert!(opened(b"pw", 128).is_ok());
        match opened(b"dear", 128) {
            Err(Error::KeyBudgetSpent {
                tried: 2,
                untried: 1,
                budget_mib: 0,
                damaged,
            }) => assert!(damaged.is_empty(), "{damaged:?}"),
            other => panic!("{:?}", other.map(|k| k.1)),
        }
        assert!(opened(b"dear", 256).is_ok());
        // Hinted, the dear key goes first and fits the budget alone.
        let hint = dear_id.to_hex()[..8].to_ascii_uppercase();
        let hinted = Repository::unlock_within(&store, b"dear", Some(&hint), 128);
        assert_eq!(hinted.unwrap().1, dear_id);
        assert!(matches!(
            opened(b"none", 256),
            Err(Error::WrongPassword { damaged }) if damaged.is_empty()
        ));
    }

    /// Junk key files of the same cost as the real one, named to sort before it and
    /// enough to use up the budget, do not lock it out: the oldest stored goes first.
    #[test]
    fn among_keys_of_one_cost_the_oldest_stored_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef =
            std::sync::Arc::new(crate::backend::LocalBackend::new(dir.path().join("r")));
        let _repo = crate::repo::for_tests(store.clone(), 0, dir.path());
        let real = store.list(FileKind::Key).unwrap()[0].name.clone();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let keys_dir = dir.path().join("r/keys");
        std::fs::File::options()
            .write(true)
            .open(keys_dir.join(&real))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut junk = 0;
        for salt in 0u8..=255 {
            let kf = KeyFile {
                version: 1,
                created: "x".into(),
                host: "h".into(),
                user: "u".into(),
                kdf: crate::KdfParams {
                    salt: vec![salt; 16],
                    ..crate::KdfParams::generate(&KdfCost::INSECURE_FOR_TESTS)
                },
                wrapped: vec![0; 72],
            };
            let bytes = kf.encode();
            let name = hex::encode(content_address(&bytes));
            if name < real {
                store.write(FileKind::Key, &name, &bytes).unwrap();
                junk += 1;
            }
            if junk == 3 {
                break;
            }
        }
        assert_eq!(junk, 3);
        // A budget for two: the real key must be among them.
        let opened = Repository::unlock_within(&store, b"pw", None, 128).unwrap();
        assert_eq!(opened.1.to_hex(), real);
    }

    /// A key file as a storage-only attacker plants it (no password) at `memory_kib`,
    /// stored `age` ago; returns its name.
    fn plant(store: &BackendRef, dir: &Path, memory_kib: u32, salt: u8, age: u64) -> String {
        let kf = KeyFile {
            version: 1,
            created: "x".into(),
            host: "h".into(),
            user: "u".into(),
            kdf: crate::KdfParams {
                memory_kib,
                salt: vec![salt; 16],
                ..crate::KdfParams::generate(&KdfCost::INSECURE_FOR_TESTS)
            },
            wrapped: vec![0; 72],
        };
        let bytes = kf.encode();
        let name = hex::encode(content_address(&bytes));
        store.write(FileKind::Key, &name, &bytes).unwrap();
        stored_ago(dir, &name, age);
        name
    }

    /// Sets the stored time of key file `name` under `dir`/keys to `secs` ago.
    fn stored_ago(dir: &Path, name: &str, secs: u64) {
        let at = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
        let path = dir.join("keys").join(name);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(at).unwrap();
    }

    /// Hostile pass: key files cheaper than the real one (m=47000 against 47104 KiB) went
    /// first and spent the budget, and the error blamed the password. The oldest stored
    /// goes first (on S3 a writer cannot set that time); where junk is older still (a
    /// directory's mtimes can be set back), the spent budget is said, not a wrong password.
    #[test]
    fn planted_cheaper_key_files_neither_go_first_nor_pass_for_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let store: BackendRef = std::sync::Arc::new(crate::backend::LocalBackend::new(&root));
        crate::repo::for_tests(store.clone(), 0, dir.path());
        let real = store.list(FileKind::Key).unwrap()[0].name.clone();
        stored_ago(&root, &real, 3600);
        let junk: Vec<String> = (1..=3).map(|i| plant(&store, &root, 32, i, 0)).collect();
        // A budget for the real key (64 KiB) and one of the junk (32 KiB) only.
        let opened = Repository::unlock_within(&store, b"pw", None, 96);
        assert_eq!(opened.map(|k| k.1.to_hex()).ok(), Some(real.clone()));
        for name in &junk {
            stored_ago(&root, name, 7200);
        }
        let err = Repository::unlock_within(&store, b"pw", None, 96)
            .map(|k| k.1)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::KeyBudgetSpent {
                    tried: 3,
                    untried: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.remedy(), Some(crate::Remedy::HintKey));
        let said = err.to_string();
        assert!(
            said.contains("3 tried, 1 not tried") && said.contains("planted"),
            "{said}"
        );
        // Tried in full, the same key files say: wrong password.
        assert!(matches!(
            Repository::unlock_within(&store, b"nope", None, 1 << 20),
            Err(Error::WrongPassword { .. })
        ));
    }

    /// Hostile pass: a FIFO, a directory or a symlink in a key file's place made every
    /// opening fail; like junk bytes, each is named and skipped (the FIFO not waited on).
    #[test]
    fn a_key_file_that_is_no_regular_file_is_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let store: BackendRef = std::sync::Arc::new(crate::backend::LocalBackend::new(&root));
        crate::repo::for_tests(store.clone(), 0, dir.path());
        let real = store.list(FileKind::Key).unwrap()[0].name.clone();
        let keys = root.join("keys");
        let name = |i: u8| hex::encode([i; 32]);
        nix::unistd::mkfifo(&keys.join(name(1)), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir(keys.join(name(2))).unwrap();
        std::os::unix::fs::symlink(keys.join(&real), keys.join(name(3))).unwrap();
        let (candidates, damaged) = read_key_files(&store).unwrap();
        assert_eq!(candidates.len(), 1, "the real key");
        for (i, what) in [(1, "a FIFO"), (2, "a directory"), (3, "a symlink")] {
            assert!(
                (damaged.iter()).any(|d| d.contains(&name(i)) && d.contains(what)),
                "{what}: {damaged:?}"
            );
        }
        let opened = Repository::unlock(&store, b"pw", None).unwrap();
        assert_eq!(opened.1.to_hex(), real);
    }

    /// A key file is a few hundred bytes: one past 16 KiB is named and never read; one of
    /// exactly 16 KiB is read (and named for what it holds).
    #[test]
    fn a_key_file_past_16_kib_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store: BackendRef = std::sync::Arc::new(MemBackend::default());
        crate::repo::for_tests(store.clone(), 0, dir.path());
        for len in [KEY_FILE_MAX, KEY_FILE_MAX + 1] {
            let junk = vec![0xff; len];
            let name = hex::encode(content_address(&junk));
            store.write(FileKind::Key, &name, &junk).unwrap();
        }
        let (candidates, damaged) = read_key_files(&store).unwrap();
        assert_eq!(candidates.len(), 1, "the real key");
        assert_eq!(damaged.len(), 2, "{damaged:?}");
        let too_big = format!("{} bytes, not a key file", KEY_FILE_MAX + 1);
        assert_eq!(
            damaged.iter().filter(|d| d.ends_with(&too_big)).count(),
            1,
            "{damaged:?}"
        );
        let unread = damaged
            .iter()
            .filter(|d| d.contains("not a key file"))
            .count();
        assert_eq!(unread, 1, "{damaged:?}");
    }
}
