//! PostgreSQL's WAL archive in the repository (format-spec §14): `archive_command` pushes
//! each file PostgreSQL hands it, `restore_command` fetches them back.
//!
//! A file's bytes are stored as data blobs, like a backed-up file's (deduplicated,
//! compressed, encrypted, packed); a WAL record names them. The record's name is a keyed
//! hash of the cluster and the file's name, so a fetch costs one request and a probe for a
//! file never archived one failed request: no listing.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::FileKind;
use crate::backup::saver::{BlobSaver, SaverShared};
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::pack::BlobKind;
use crate::repo::Repository;

/// The bytes a chunker batch holds (as a backup's).
const BATCH_SIZE: usize = 1 << 20;

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

fn check_name(cluster: &str, name: &str) -> Result<()> {
    if cluster.is_empty() || cluster.contains(['/', '\0']) {
        return Err(Error::BadInput {
            what: "postgres cluster name",
            reason: format!("{cluster:?} is not a cluster name"),
        });
    }
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
    let Some(rec) = repo.load_named::<WalRecord>(FileKind::Wal, &file)? else {
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

/// Archives the file at `path` for `cluster` (`archive_command`'s `%p`). When this returns
/// Ok, the file's packs, their index file and its record are on the backend, in that
/// order: PostgreSQL may delete the segment. The same bytes pushed again are a success;
/// other bytes under an archived name are an error, and the archive keeps the first.
pub fn push(repo: &Repository, cluster: &str, path: &Path) -> Result<Pushed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    check_name(cluster, &name)?;
    let bytes = {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut b = Vec::new();
        f.read_to_end(&mut b).map_err(|e| Error::io(path, e))?;
        b
    };
    let chunks = chunk(repo, &bytes, path)?;
    let content: Vec<BlobId> = chunks.iter().map(|(id, _)| *id).collect();
    if let Some(old) = record(repo, cluster, &name)? {
        if old.content == content && old.size == bytes.len() as u64 {
            return Ok(Pushed::AlreadyArchived);
        }
        return Err(Error::BadInput {
            what: "WAL file",
            reason: format!(
                "{name} is archived for {cluster} already, with other content ({} bytes \
                 pushed {} by {}); the archive keeps it",
                old.size, old.time, old.host
            ),
        });
    }
    let shared = SaverShared::default();
    std::thread::scope(|scope| -> Result<()> {
        let saver = BlobSaver::new(repo, &shared, scope, 0);
        for (id, range) in &chunks {
            saver.save(BlobKind::Data, *id, &bytes[range.clone()])?;
        }
        // Packs, then their index file: durable before the record names them.
        saver.finish()
    })?;
    let rec = WalRecord {
        version: 1,
        cluster: cluster.to_string(),
        name: name.clone(),
        size: bytes.len() as u64,
        content,
        time: crate::timespec::now().to_rfc3339(),
        host: crate::util::hostname(),
    };
    repo.save_named(FileKind::Wal, &repo.wal_name(cluster, &name), &rec)?;
    Ok(Pushed::Stored)
}

/// The chunks of `bytes`: their ids and where they lie.
fn chunk(
    repo: &Repository,
    bytes: &[u8],
    path: &Path,
) -> Result<Vec<(BlobId, std::ops::Range<usize>)>> {
    let mut chunker = repo.chunker(bytes, BATCH_SIZE);
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(batch) = chunker.next_batch().map_err(|e| Error::io(path, e))? {
        for i in 0..batch.chunks.len() {
            let c = batch.chunk(i);
            out.push((repo.blob_id(c), at..at + c.len()));
            at += c.len();
        }
    }
    Ok(out)
}

/// Writes the archived file `name` of `cluster` to `dest` (`restore_command`'s `%p`), through
/// a temporary file renamed into place, so a failed fetch never leaves a partial segment
/// where PostgreSQL would read it. Returns false if it was never archived.
pub fn fetch(repo: &Repository, cluster: &str, name: &str, dest: &Path) -> Result<bool> {
    let Some(rec) = record(repo, cluster, name)? else {
        return Ok(false);
    };
    let node = node_of(&rec);
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut reader = crate::restore::ContentReader::new(repo, &node)?;
    let copied = std::io::copy(&mut reader, tmp.as_file_mut())
        .map_err(|e| reader.error.take().unwrap_or_else(|| Error::io(dest, e)))?;
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

/// A file node standing for the record's content, for the readers of file content.
fn node_of(rec: &WalRecord) -> crate::repo::tree::Node {
    let mut node = crate::repo::tree::Node::new(
        rec.name.as_bytes().to_vec(),
        crate::repo::tree::NodeKind::File,
    );
    node.content = rec.content.clone();
    node.size = rec.size;
    node
}

/// The archived file's bytes (a timeline history file, say: small).
pub fn content(repo: &Repository, rec: &WalRecord) -> Result<Vec<u8>> {
    let node = node_of(rec);
    let mut reader = crate::restore::ContentReader::new(repo, &node)?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| {
        reader
            .error
            .take()
            .unwrap_or_else(|| Error::io(&rec.name, e))
    })?;
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
/// out when PostgreSQL asks for it; records are never rewritten with other content, so
/// whatever the spool holds under a name is that name's archived file.
pub struct Spool {
    dir: std::path::PathBuf,
}

impl Spool {
    /// The spool of `cluster` in the repository at `url`, under the cache base directory.
    pub fn new(cache_base: &Path, url: &str, cluster: &str) -> Result<Spool> {
        check_name(cluster, "00000001.history")?;
        let key = blake3::hash(url.as_bytes()).to_hex();
        let dir = cache_base
            .join("wal-spool")
            .join(&key[..32])
            .join(hex::encode(cluster.as_bytes()));
        crate::cache::private_dir(&dir)?;
        Ok(Spool { dir })
    }

    /// Moves the spooled file `name` to `dest`, complete or not at all; false if the
    /// spool does not hold it.
    pub fn take(&self, name: &str, dest: &Path) -> Result<bool> {
        if !valid_name(name) {
            return Err(Error::BadInput {
                what: "WAL file name",
                reason: format!(
                    "{name:?} is not a WAL segment, timeline history or backup history file name"
                ),
            });
        }
        let src = self.dir.join(name);
        if !src.exists() {
            return Ok(false);
        }
        match std::fs::rename(&src, dest) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            // Another file system (pg_wal elsewhere than the cache): copy, then rename.
            Err(_) => {}
        }
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut from = match File::open(&src) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&src, e)),
        };
        std::io::copy(&mut from, tmp.as_file_mut()).map_err(|e| Error::io(dest, e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(dest, e))?;
        tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
        let _ = std::fs::remove_file(&src);
        Ok(true)
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
    /// the spool locked and returns at once. Stale files (older than an hour) go first.
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
        if let Ok(d) = std::fs::read_dir(&self.dir) {
            for e in d.filter_map(|e| e.ok()) {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > SPOOL_MAX_AGE);
                if stale && e.file_name() != ".lock" {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let Some(mut seg) =
            crate::postgres::Segment::parse(after.get(..24).unwrap_or(""), segment_size)
        else {
            return Ok(0);
        };
        let mut fetched = 0;
        for _ in 0..count {
            seg.no += 1;
            let name = seg.name(segment_size);
            let path = self.dir.join(&name);
            if path.exists() {
                continue;
            }
            if !fetch(repo, cluster, &name, &path)? {
                break;
            }
            fetched += 1;
        }
        Ok(fetched)
    }
}

/// Every WAL record in the repository (prune and check: their blobs are in use).
pub fn all_records(repo: &Repository) -> Result<Vec<(String, WalRecord)>> {
    let mut out = Vec::new();
    for f in repo.list_files(FileKind::Wal)? {
        if let Some(rec) = repo.load_named::<WalRecord>(FileKind::Wal, &f.name)? {
            out.push((f.name, rec));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
