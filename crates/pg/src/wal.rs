//! PostgreSQL's WAL archive in the repository (format-spec §14): `archive_command` pushes
//! each file PostgreSQL hands it, `restore_command` fetches them back.
//!
//! A file's bytes are stored as data blobs, like a backed-up file's (deduplicated,
//! compressed, encrypted, packed); a WAL record names them. From format version 4 a record
//! is a root record of namespace [`NAMESPACE`] (format-spec §15), before it a `wal/` file
//! of its own; either is named by a keyed hash of the cluster and the file's name, so a
//! fetch costs one request and a probe for a file never archived one failed request.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use strata::backend::FileKind;
use strata::{BlobId, BlobKind, Error, Repository, Result};
use strata::{BlobSaver, SaverShared};

/// One archived file (format-spec §14).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalRecord {
    /// Record format version (1).
    pub version: u32,
    /// The cluster's name in the config (`[postgres.NAME]`).
    pub cluster: String,
    /// The file's name as PostgreSQL gave it (`%f`).
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its data blobs, in order.
    pub content: Vec<BlobId>,
    /// When it was pushed (RFC 3339).
    pub time: String,
    /// The host that pushed it.
    pub host: String,
}

/// The root namespace of WAL records (format version 4 on).
pub const NAMESPACE: &str = "postgres.wal";

/// What a WAL record's root carries beside its blobs (its `content`) and the root's own
/// `time` and `host`.
#[derive(Serialize, Deserialize)]
struct Payload {
    version: u32,
    cluster: String,
    name: String,
    size: u64,
}

fn root_key(cluster: &str, name: &str) -> String {
    format!("{cluster}/{name}")
}

impl WalRecord {
    /// The record as a root record.
    fn to_root(&self) -> Result<strata::Root> {
        let payload = Payload {
            version: self.version,
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            size: self.size,
        };
        let mut buf = Vec::new();
        ciborium::into_writer(&payload, &mut buf).expect("CBOR into memory");
        let mut root = strata::Root::new(
            NAMESPACE,
            &root_key(&self.cluster, &self.name),
            self.content.clone(),
            buf,
        )?;
        root.time = self.time.clone();
        root.host = self.host.clone();
        Ok(root)
    }

    /// The record a root record of [`NAMESPACE`] holds.
    pub(crate) fn from_root(root: strata::Root) -> Result<WalRecord> {
        let object = || format!("root record {}/{}", root.namespace, root.key);
        let p: Payload = ciborium::from_reader(&root.payload[..])
            .map_err(|e| Error::corrupt(object(), format!("WAL payload: {e}")))?;
        if root_key(&p.cluster, &p.name) != root.key {
            return Err(Error::corrupt(
                object(),
                format!("holds {}/{} under another key", p.cluster, p.name),
            ));
        }
        Ok(WalRecord {
            version: p.version,
            cluster: p.cluster,
            name: p.name,
            size: p.size,
            content: root.blobs,
            time: root.time,
            host: root.host,
        })
    }
}

/// Stores a record where the repository's format keeps them.
fn save(repo: &Repository, rec: &WalRecord) -> Result<()> {
    if repo.has_roots() {
        return repo.write_root(&rec.to_root()?);
    }
    repo.files()
        .save_as(FileKind::Wal, &repo.wal_name(&rec.cluster, &rec.name), rec)
}

/// Removes a record (expiry: its blobs go at the next prune).
pub fn remove(repo: &Repository, rec: &WalRecord) -> Result<()> {
    if repo.has_roots() {
        return repo.remove_root(NAMESPACE, &root_key(&rec.cluster, &rec.name));
    }
    repo.files()
        .remove(FileKind::Wal, &repo.wal_name(&rec.cluster, &rec.name))
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pushed {
    /// The file is in the repository now.
    Stored,
    /// The same bytes were archived under that name before (PostgreSQL retries a push
    /// whose success it did not see).
    AlreadyArchived,
}

/// Whether `name` is a file PostgreSQL archives: a segment (24 hex digits, possibly
/// `.partial`), a timeline history file or a backup history file. Anything else (a path,
/// `..`) is refused before it can name a record.
pub fn valid_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli, 8);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest.len() == 33
            && hex(&rest[..24], 24)
            && &rest[24..25] == "."
            && hex(&rest[25..], 8);
    }
    hex(name, 24)
}

/// Whether a file of `size` bytes can be the WAL file `name`: a segment is a power of two
/// from 1 MiB to 1 GiB (PostgreSQL's `wal_segment_size`); other files may have any size.
pub fn plausible_size(name: &str, size: u64) -> bool {
    let segment = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
    !segment || (size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size))
}

fn check_name(cluster: &str, name: &str) -> Result<()> {
    check_cluster(cluster)?;
    check_file_name(name)
}

fn check_cluster(cluster: &str) -> Result<()> {
    if cluster.is_empty() || cluster.contains(['/', '\0']) {
        return Err(Error::BadInput {
            what: "postgres cluster name",
            reason: format!("{cluster:?} is not a cluster name"),
        });
    }
    Ok(())
}

fn check_file_name(name: &str) -> Result<()> {
    if !valid_name(name) {
        return Err(Error::BadInput {
            what: "WAL file name",
            reason: format!(
                "{name:?} is not a WAL segment, timeline history or backup history file name"
            ),
        });
    }
    Ok(())
}

/// The record of `name`, if archived; checked against the name it was found under.
pub fn record(repo: &Repository, cluster: &str, name: &str) -> Result<Option<WalRecord>> {
    check_name(cluster, name)?;
    let file = repo.wal_name(cluster, name);
    let found = if repo.has_roots() {
        repo.root(NAMESPACE, &root_key(cluster, name))?
            .map(WalRecord::from_root)
            .transpose()?
    } else {
        repo.files().load::<WalRecord>(FileKind::Wal, &file)?
    };
    let Some(rec) = found else {
        return Ok(None);
    };
    if rec.cluster != cluster || rec.name != name {
        return Err(Error::corrupt(
            format!("WAL record {file}"),
            format!(
                "holds {}/{} where {cluster}/{name} was expected",
                rec.cluster, rec.name
            ),
        ));
    }
    Ok(Some(rec))
}

/// The records of `names`, looked up at once: each is one request, so on an object store
/// a batch costs one round trip's time, not one per name.
pub fn records<S: AsRef<str> + Sync>(
    repo: &Repository,
    cluster: &str,
    names: &[S],
) -> Vec<Result<Option<WalRecord>>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| scope.spawn(move || record(repo, cluster, n.as_ref())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("WAL record lookup panicked".into())))
            })
            .collect()
    })
}

/// Archives the file at `path` for `cluster` (`archive_command`'s `%p`). When this returns
/// Ok, the file's packs, their index file and its record are on the backend, in that
/// order: PostgreSQL may delete the segment. The same bytes pushed again are a success;
/// other bytes under an archived name are an error, and the archive keeps the first.
pub fn push(repo: &Repository, cluster: &str, path: &Path) -> Result<Pushed> {
    push_many(repo, cluster, &[path])?
        .pop()
        .unwrap_or_else(|| Err(Error::Internal("push of one file gave no outcome".into())))
}

/// Archives several files as [`push`] does one, sharing packs, one index file and the
/// requests that cost: the WAL that PostgreSQL has ready after the file it asked for goes
/// along (see [`ready_after`]). One outcome per path, in order; an error that concerns
/// one file (unreadable, other content archived under its name) is its outcome alone, an
/// error writing packs or the index fails them all. Records are written only once the
/// packs and index are durable.
pub fn push_many(repo: &Repository, cluster: &str, paths: &[&Path]) -> Result<Vec<Result<Pushed>>> {
    let names: Vec<Result<String>> = paths
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            check_name(cluster, &name).map(|_| name)
        })
        .collect();
    let valid: Vec<&str> = names.iter().filter_map(|n| n.as_deref().ok()).collect();
    let mut found = records(repo, cluster, &valid).into_iter();
    let existing: Vec<Result<Option<WalRecord>>> = names
        .iter()
        .map(|n| match n {
            Ok(_) => found.next().unwrap_or(Ok(None)),
            Err(_) => Ok(None),
        })
        .collect();
    let shared = SaverShared::default();
    // Files in parallel, a few at a time (the rayon pool's width): each is read whole.
    let done: Vec<(Option<Result<Pushed>>, Option<WalRecord>)> =
        std::thread::scope(|scope| -> Result<_> {
            // zstd's fastest level above 1 costs twice the time for a few percent on WAL.
            let level = repo.config().compression_level.min(1);
            let saver = BlobSaver::new(repo, &shared, scope, 0).with_level(level);
            let done = paths
                .par_iter()
                .zip(names.par_iter())
                .zip(existing.into_par_iter())
                .map(|((path, name), old)| archive_one(repo, &saver, cluster, path, name, old))
                .collect::<Result<Vec<_>>>();
            // Packs, then their index file: durable before any record names them. On an
            // error too, what reached the backend is indexed.
            let finished = saver.finish();
            let done = done?;
            finished?;
            Ok(done)
        })?;
    let mut outcomes = Vec::new();
    let mut records = Vec::new();
    for (i, (outcome, rec)) in done.into_iter().enumerate() {
        outcomes.push(outcome);
        if let Some(rec) = rec {
            records.push((i, rec));
        }
    }
    // The records, at once: each is a write of its own (a PUT, or a file and its fsync).
    let written: Vec<(usize, Result<()>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .iter()
            .map(|(i, rec)| {
                let i = *i;
                scope.spawn(move || (i, save(repo, rec)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (usize::MAX, Err(Error::Internal("record".into()))))
            })
            .collect()
    });
    for (i, r) in written {
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = Some(r.map(|_| Pushed::Stored));
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal("record not written".into()))))
        .collect())
}

/// One file of [`push_many`]: its outcome when settled now (archived before, or an
/// error of its own), else the record to write once the packs are durable. Errors of the
/// saver fail the whole batch.
fn archive_one(
    repo: &Repository,
    saver: &BlobSaver<'_, '_>,
    cluster: &str,
    path: &Path,
    name: &Result<String>,
    old: Result<Option<WalRecord>>,
) -> Result<(Option<Result<Pushed>>, Option<WalRecord>)> {
    let settled = |r: Result<Pushed>| Ok((Some(r), None));
    let name = match name {
        Ok(n) => n,
        Err(e) => return settled(Err(clone_err(e))),
    };
    let old = match old {
        Ok(o) => o,
        // A record that does not open or is filed under another's name holds nothing
        // the archive can use: the file pushed again takes its place (otherwise every
        // retry of PostgreSQL's would fail on it, and its WAL pile up on the server).
        Err(Error::Corrupt { .. }) => None,
        Err(e) => return settled(Err(e)),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return settled(Err(Error::io(path, e))),
    };
    // A truncated copy archived under a segment's name would be the one `wal fetch` hands
    // back, and the real segment could never be archived after it.
    if !plausible_size(name, bytes.len() as u64) {
        return settled(Err(Error::BadInput {
            what: "WAL file",
            reason: format!(
                "{} holds {} bytes: a WAL segment holds a power of two from 1 MiB to 1 GiB; \
                 not archived",
                path.display(),
                bytes.len()
            ),
        }));
    }
    let chunks = chunk(repo, &bytes);
    let content: Vec<BlobId> = chunks.iter().map(|(id, _)| *id).collect();
    let same = |old: &WalRecord| old.content == content && old.size == bytes.len() as u64;
    // Archived already: only if its data still reads, since PostgreSQL deletes the file
    // on success. Blobs the index no longer names (gone, and the index repaired since)
    // are stored again below.
    let old = match old {
        Some(o) if same(&o) => match readable(repo, &o, name) {
            Ok(true) => return settled(Ok(Pushed::AlreadyArchived)),
            Ok(false) => None,
            Err(e) => return settled(Err(e)),
        },
        o => o,
    };
    if let Some(old) = old {
        return settled(Err(Error::BadInput {
            what: "WAL file",
            reason: format!(
                "{name} is archived for {cluster} already, with other content ({} bytes \
                 pushed {} by {}); the archive keeps it",
                old.size, old.time, old.host
            ),
        }));
    }
    for (id, range) in &chunks {
        saver.save(BlobKind::Data, *id, &bytes[range.clone()])?;
    }
    Ok((
        None,
        Some(WalRecord {
            version: 1,
            cluster: cluster.to_string(),
            name: name.clone(),
            size: bytes.len() as u64,
            content,
            time: strata::timespec::now().to_rfc3339(),
            host: strata::hostname(),
        }),
    ))
}

/// Whether the data of `rec`, archived already, still reads whole: `false` when the
/// index no longer names some of it (a lost pack, the index repaired since), so that it
/// is stored again; an error when the index names data that does not read (a pack gone
/// or damaged under an index not yet repaired), which storing again cannot mend.
fn readable(repo: &Repository, rec: &WalRecord, name: &str) -> Result<bool> {
    for id in &rec.content {
        match repo.index().read(id) {
            Ok(_) => {}
            Err(Error::NotFound {
                what: strata::Missing::Blob(_),
                ..
            }) => return Ok(false),
            Err(e) => {
                return Err(Error::corrupt(
                    format!("WAL record of {}/{name}", rec.cluster),
                    format!("archived, but its data does not read: {e}"),
                )
                .with_remedy(strata::Remedy::RepairIndex))
            }
        }
    }
    Ok(true)
}

/// A name error again, for its file's outcome (errors are not Clone).
fn clone_err(e: &Error) -> Error {
    match e {
        Error::BadInput { what, reason } => Error::BadInput {
            what,
            reason: reason.clone(),
        },
        other => Error::Internal(other.to_string()),
    }
}

/// The WAL files PostgreSQL has ready to archive beside `path` (`archive_status/*.ready`
/// in its directory), other than `path` itself, oldest first, at most `limit`: they will
/// be asked for next, and archiving them with it saves the per-command cost.
pub fn ready_after(path: &Path, limit: usize) -> Vec<std::path::PathBuf> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let me = path.file_name();
    let Ok(entries) = std::fs::read_dir(dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            valid_name(&n).then_some(n)
        })
        .filter(|n| Some(std::ffi::OsStr::new(n)) != me)
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .take(limit)
        .collect()
}

/// WAL files are cut into pieces of this size (the last one shorter), not by content:
/// PostgreSQL writes each once, start to end, so content-defined cuts would find nothing
/// more to share (a segment's zero-filled tail is shared either way) and cost a sixth of
/// the CPU a push takes.
pub const PIECE: usize = 1 << 20;

/// The pieces of `bytes`: their ids and where they lie.
fn chunk(repo: &Repository, bytes: &[u8]) -> Vec<(BlobId, std::ops::Range<usize>)> {
    (0..bytes.len())
        .step_by(PIECE)
        .map(|at| {
            let range = at..(at + PIECE).min(bytes.len());
            (repo.blob_id(&bytes[range.clone()]), range)
        })
        .collect()
}

/// Writes the archived file `name` of `cluster` to `dest` (`restore_command`'s `%p`), through
/// a temporary file renamed into place, so a failed fetch never leaves a partial segment
/// where PostgreSQL would read it. Returns false if it was never archived.
pub fn fetch(repo: &Repository, cluster: &str, name: &str, dest: &Path) -> Result<bool> {
    let Some(rec) = record(repo, cluster, name)? else {
        return Ok(false);
    };
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let copied =
        strata::restore::copy_blobs(repo, &rec.content, rec.size, tmp.as_file_mut(), dest)?;
    if copied != rec.size {
        return Err(Error::corrupt(
            format!("WAL record of {cluster}/{name}"),
            format!("{copied} bytes for a size of {}", rec.size),
        ));
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(dest, e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(true)
}

/// The most [`content`] holds in memory: a timeline history file is a few lines.
pub const MAX_CONTENT: u64 = 16 << 20;

/// The archived file's bytes (a timeline history file, say: small, and refused past
/// [`MAX_CONTENT`] before anything is read).
pub fn content(repo: &Repository, rec: &WalRecord) -> Result<Vec<u8>> {
    if rec.size > MAX_CONTENT {
        return Err(Error::corrupt(
            format!("WAL record of {}/{}", rec.cluster, rec.name),
            format!(
                "a size of {} bytes: more than a file read whole may be",
                rec.size
            ),
        ));
    }
    let mut out = Vec::new();
    strata::restore::copy_blobs(repo, &rec.content, rec.size, &mut out, &rec.name)?;
    if out.len() as u64 != rec.size {
        return Err(Error::corrupt(
            format!("WAL record of {}/{}", rec.cluster, rec.name),
            format!("{} bytes for a size of {}", out.len(), rec.size),
        ));
    }
    Ok(out)
}

/// How many WAL files a prefetch fetches ahead of the one PostgreSQL asked for.
pub const PREFETCH: usize = 8;

/// Spool files older than this are stale: a recovery long over left them.
const SPOOL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where `wal fetch` finds files fetched ahead of PostgreSQL's requests, in the local
/// cache (0700). Recovery asks for one file per `restore_command`, each a process that
/// would otherwise open the repository and wait for its requests in turn; a prefetch in
/// the background fetches the next ones while PostgreSQL replays. A spooled file is moved
/// out when PostgreSQL asks for it.
///
/// A spool belongs to one repository, not to a location: its directory is named by the
/// location and the bytes of the repository's `config` file, which a new repository at the
/// same location does not share (the spool of the old one would hand over another
/// cluster's WAL, and PostgreSQL would end recovery there). Each file is handed over only
/// if it still has the hash taken when it was fetched (`NAME.b3` beside it); a damaged or
/// unhashed one is dropped and fetched from the repository.
pub struct Spool {
    dir: std::path::PathBuf,
}

impl Spool {
    /// The spool of `cluster` in the repository at `url` whose `config` file holds
    /// `config`, under the cache base directory.
    pub fn new(cache_base: &Path, url: &str, config: &[u8], cluster: &str) -> Result<Spool> {
        check_cluster(cluster)?;
        let mut key = blake3::Hasher::new();
        key.update(url.as_bytes()).update(&[0]).update(config);
        let key = key.finalize().to_hex();
        let dir = cache_base
            .join("wal-spool")
            .join(&key[..32])
            .join(hex::encode(cluster.as_bytes()));
        strata::private_dirs(cache_base, &dir)?;
        Ok(Spool { dir })
    }

    fn hash_file(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.b3"))
    }

    /// Writes the spooled file `name` to `dest`, complete or not at all, and drops it
    /// from the spool; false if the spool does not hold it intact.
    pub fn take(&self, name: &str, dest: &Path) -> Result<bool> {
        check_file_name(name)?;
        let src = self.dir.join(name);
        let (Some(bytes), Some(want)) = (read_own(&src), read_own(&self.hash_file(name))) else {
            // Missing, or not this user's own: fetched from the repository instead.
            return Ok(false);
        };
        if blake3::hash(&bytes).to_hex().as_bytes() != want.as_slice() {
            self.discard(name);
            return Ok(false);
        }
        // Moved when it can be (the spool's files were synced when fetched): a copy and
        // its fsync cost more than the replay of a segment.
        match std::fs::rename(&src, dest) {
            Ok(()) => {
                self.discard(name);
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            // Another file system (pg_wal elsewhere than the cache): written from the
            // bytes checked.
            Err(_) => {}
        }
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        tmp.as_file_mut()
            .write_all(&bytes)
            .map_err(|e| Error::io(dest, e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(dest, e))?;
        tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
        self.discard(name);
        Ok(true)
    }

    /// Drops the spooled file `name`, if any (fetched from the repository meanwhile).
    pub fn discard(&self, name: &str) {
        if check_file_name(name).is_ok() {
            let _ = std::fs::remove_file(self.dir.join(name));
            let _ = std::fs::remove_file(self.hash_file(name));
        }
    }

    /// How many spooled files come after `name` (a prefetch is due when few do).
    pub fn ahead(&self, name: &str) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        valid_name(&n) && *n > *name
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Fetches up to `count` segments following `after` (on its timeline) into the spool,
    /// stopping at the first one not archived. One prefetch at a time: a second one finds
    /// the spool locked and returns at once. Stale files (older than an hour) go first,
    /// in every spool of the cache (a recovery long over, or another repository's).
    pub fn fill(
        &self,
        repo: &Repository,
        cluster: &str,
        after: &str,
        segment_size: u64,
        count: usize,
    ) -> Result<usize> {
        let lock_path = self.dir.join(".lock");
        use std::os::unix::fs::OpenOptionsExt;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        // Released when `lock` closes, whatever way this returns.
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(0);
        }
        if let Some(all) = self.dir.parent().and_then(Path::parent) {
            remove_stale(all, 2);
        }
        let Some(mut seg) = crate::Segment::parse(after.get(..24).unwrap_or(""), segment_size)
        else {
            return Ok(0);
        };
        let mut fetched = 0;
        for _ in 0..count {
            seg.no += 1;
            let name = seg.name(segment_size);
            let path = self.dir.join(&name);
            if path.exists() && self.hash_file(&name).exists() {
                continue;
            }
            if !fetch(repo, cluster, &name, &path)? {
                break;
            }
            self.hash(&name, &path)?;
            fetched += 1;
        }
        Ok(fetched)
    }

    /// Records the hash of the whole spooled file at `path`; `take` hands over nothing
    /// unhashed.
    fn hash(&self, name: &str, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let hash = self.hash_file(name);
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        tmp.as_file_mut()
            .write_all(blake3::hash(&bytes).to_hex().as_bytes())
            .map_err(|e| Error::io(&hash, e))?;
        tmp.persist(&hash).map_err(|e| Error::io(&hash, e.error))?;
        Ok(())
    }
}

/// The bytes of `path` if it is a regular file of this user's, read without following a
/// link. The spool's files are handed to PostgreSQL on their hash alone, which another
/// user who could write the directory once (before it was narrowed) could have planted
/// with them.
fn read_own(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Removes the files older than [`SPOOL_MAX_AGE`] up to `depth` directory levels below
/// `dir` (and directories left empty), never following a symlink.
fn remove_stale(dir: &Path, depth: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.is_dir() && depth > 0 {
            remove_stale(&e.path(), depth - 1);
            let _ = std::fs::remove_dir(e.path());
            continue;
        }
        let stale = m
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > SPOOL_MAX_AGE);
        if m.is_file() && stale && e.file_name() != ".lock" {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Every WAL record in the repository.
pub fn all_records(repo: &Repository) -> Result<Vec<WalRecord>> {
    if repo.has_roots() {
        return repo
            .roots(Some(NAMESPACE))?
            .into_iter()
            .map(WalRecord::from_root)
            .collect();
    }
    let mut out = Vec::new();
    for f in repo.files().list(FileKind::Wal)? {
        if let Some(rec) = repo.files().load::<WalRecord>(FileKind::Wal, &f.name)? {
            out.push(rec);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hostile pass (issue 25): a segment's size is a power of two from 1 MiB to 1 GiB;
    /// history, backup history and partial files may have any size.
    #[test]
    fn only_segment_sizes_pass_for_segments() {
        let seg = "000000010000000000000009";
        for size in [1 << 20, 16 << 20, 1 << 30] {
            assert!(plausible_size(seg, size), "{size}");
        }
        for size in [
            0,
            4,
            (1 << 20) - 1,
            512 << 10,
            3 << 20,
            (16 << 20) + 1,
            2 << 30,
        ] {
            assert!(!plausible_size(seg, size), "{size}");
        }
        for name in [
            "00000002.history",
            "000000010000000000000009.partial",
            "000000010000000000000009.00000028.backup",
        ] {
            assert!(plausible_size(name, 4), "{name}");
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(cluster in "[a-z]{1,12}", seg in "[0-9A-F]{24}", size in any::<u64>(),
                              content in proptest::collection::vec(any::<[u8; 32]>(), 0..20)) {
            let rec = WalRecord {
                version: 1,
                cluster,
                name: seg,
                size,
                content: content.into_iter().map(BlobId).collect(),
                time: "2026-11-27T03:00:00+00:00".into(),
                host: "db1".into(),
            };
            let mut buf = Vec::new();
            ciborium::into_writer(&rec, &mut buf).unwrap();
            let back: WalRecord = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, rec);
        }
    }

    #[test]
    fn wal_files_are_cut_in_fixed_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store: strata::backend::BackendRef =
            std::sync::Arc::new(strata::backend::MemBackend::default());
        let config = strata::Config::new(strata::ChunkerParams::with_average(64 << 10), 0);
        let cost = strata::KdfCost::INSECURE_FOR_TESTS;
        Repository::init(store.clone(), b"pw", config, &cost).unwrap();
        let repo = Repository::open(store, b"pw", &dir.path().join("cache")).unwrap();
        let bytes: Vec<u8> = (0..PIECE * 5 / 2).map(|i| (i % 251) as u8).collect();
        let pieces = chunk(&repo, &bytes);
        let ranges: Vec<_> = pieces.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(
            ranges,
            vec![0..PIECE, PIECE..2 * PIECE, 2 * PIECE..bytes.len()]
        );
        assert_eq!(pieces[0].0, repo.blob_id(&bytes[..PIECE]));
        assert!(chunk(&repo, &[]).is_empty());
    }

    #[test]
    fn only_names_postgresql_archives_are_valid() {
        for ok in [
            "000000010000000000000001",
            "00000002000000A1000000FF",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../000000010000000000000001",
            "00000001000000000000001",
            "0000000100000000000000010",
            "00000001000000000000000G",
            "000000010000000000000001/x",
            "x.history",
            "000000010000000000000002.0000002.backup",
            "000000010000000000000001\n",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
