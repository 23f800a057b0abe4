//! Integrity audits: structure (every reference resolves) and, on request, data (every byte
//! of the chosen packs re-read, decrypted and re-hashed).
//!
//! A problem names the damaged object and then every snapshot and path it hits, so an
//! operator knows what a damaged pack costs before deciding what to do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rand::Rng;
use rayon::prelude::*;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId, TreeId};
use crate::progress::Progress;
use crate::remedy::Remedy;
use crate::repo::pack::BlobKind;
use crate::repo::root::Root;
use crate::repo::snapshot::{Snapshot, SnapshotFilter};
use crate::repo::Repository;
use crate::walk::{safe_name, TreeWalk, Visit};
use crate::walk::{Expansions, Shape};

/// Which data packs a check reads and verifies byte by byte (tree packs are always read).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    #[default]
    None,
    /// Every data pack.
    All,
    /// Packs whose first id byte modulo `m` is `n - 1` (so n = 1..=m covers everything).
    Subset {
        /// Which part, 1-based.
        n: u32,
        /// Of how many parts.
        m: u32,
    },
    /// About this share of packs, chosen at random.
    Percent(f64),
    /// The packs verified least recently (never verified first), up to a budget; the
    /// verification state in the repository's audit records says which those are.
    Budget(Budget),
}

/// `P%` with P in (0, 100]; `None` when `s` is no percentage at all.
fn percentage(s: &str) -> std::result::Result<Option<f64>, String> {
    let Some(p) = s.strip_suffix('%') else {
        return Ok(None);
    };
    let v: f64 = p
        .trim()
        .parse()
        .map_err(|_| format!("bad percentage {s:?}"))?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(format!("percentage {s} must be in (0, 100]"));
    }
    Ok(Some(v))
}

/// How much a budgeted check reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// This percentage of the data packs' bytes.
    Percent(f64),
    /// This many bytes.
    Bytes(u64),
}

impl Budget {
    /// Parses `P%` or a size (`500MiB`, `2GB`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadInput {
            what: "check budget",
            reason,
        };
        if let Some(v) = percentage(s).map_err(bad)? {
            return Ok(Budget::Percent(v));
        }
        let b: bytesize::ByteSize = s
            .trim()
            .parse()
            .map_err(|e| bad(format!("{s:?} is neither P% nor a size: {e}")))?;
        if b.as_u64() == 0 {
            return Err(bad("a budget of 0 bytes reads nothing".into()));
        }
        Ok(Budget::Bytes(b.as_u64()))
    }

    /// The bytes this budget allows out of `total`.
    fn of(self, total: u64) -> u64 {
        match self {
            Budget::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
            Budget::Bytes(b) => b,
        }
    }
}

/// The packs a budget reads: never verified first, then the least recently verified, until
/// the budget is spent (at least one).
fn budgeted(
    candidates: &[(PackId, u64)],
    state: &HashMap<PackId, (i64, bool)>,
    budget: Budget,
) -> Vec<PackId> {
    let total: u64 = candidates.iter().map(|(_, size)| size).sum();
    let allowed = budget.of(total);
    let mut order: Vec<&(PackId, u64)> = candidates.iter().collect();
    order.sort_by_key(|(id, _)| (state.get(id).map(|(t, _)| *t), *id));
    let mut spent = 0;
    let mut out = Vec::new();
    for (id, size) in order {
        if spent >= allowed && !out.is_empty() {
            break;
        }
        spent += size;
        out.push(*id);
    }
    out
}

impl ReadData {
    /// Parses `N/M` or `P%`.
    pub fn parse_subset(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadInput {
            what: "check subset",
            reason,
        };
        if let Some(v) = percentage(s).map_err(bad)? {
            return Ok(ReadData::Percent(v));
        }
        let (n, m) = s
            .split_once('/')
            .ok_or_else(|| bad(format!("subset {s:?} is neither N/M nor P%")))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad subset {s:?}")))?;
        let m: u32 = m
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad subset {s:?}")))?;
        if m == 0 || n == 0 || n > m || m > 256 {
            return Err(bad(format!("subset {s}: need 1 <= N <= M <= 256")));
        }
        Ok(ReadData::Subset { n, m })
    }

    fn selects(&self, id: &PackId) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, m } => u32::from(id.0[0]) % m == n - 1,
            ReadData::Percent(p) => rand::thread_rng().gen::<f64>() * 100.0 < p,
            // Chosen by `budgeted` from the verification state instead.
            ReadData::Budget(_) => false,
        }
    }
}

/// What a problem is about. Shown (and serialized) as `pack <id>`, `blob <id>`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// An index file.
    Index(IndexId),
    /// A pack file.
    Pack(PackId),
    /// A data blob.
    Blob(BlobId),
    /// A tree.
    Tree(TreeId),
    /// A snapshot manifest.
    Snapshot(SnapshotId),
    /// A PostgreSQL WAL record of format 1-3 (by its file name).
    Wal([u8; 32]),
    /// An application's root record (by its file name).
    Root([u8; 32]),
    /// A mark record (format-spec §7.3).
    Mark(crate::id::MarkId),
    /// A file of a kind by its name, where no other object fits: a symlink, FIFO,
    /// directory or device in a repository file's place that no index or listing reads.
    File(FileKind, [u8; 32]),
}

impl Object {
    /// The name of the repository file this object is, if it is one.
    fn file_name(&self) -> Option<[u8; 32]> {
        match *self {
            Object::Index(id) => Some(id.0),
            Object::Pack(id) => Some(id.0),
            Object::Snapshot(id) => Some(id.0),
            Object::Mark(id) => Some(id.0),
            Object::Wal(name) | Object::Root(name) | Object::File(_, name) => Some(name),
            Object::Blob(_) | Object::Tree(_) => None,
        }
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Index(id) => write!(f, "index {id}"),
            Object::Pack(id) => write!(f, "pack {id}"),
            Object::Blob(id) => write!(f, "blob {id}"),
            Object::Tree(id) => write!(f, "tree {id}"),
            Object::Snapshot(id) => write!(f, "snapshot {id}"),
            Object::Wal(name) => write!(f, "WAL record {}", hex::encode(name)),
            Object::Root(name) => write!(f, "root record {}", hex::encode(name)),
            Object::Mark(id) => write!(f, "mark record {id}"),
            Object::File(kind, name) => write!(f, "file {}", kind.path(&hex::encode(name))),
        }
    }
}

impl serde::Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One piece of damage a check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The damaged or missing object.
    pub object: Object,
    /// What is wrong with it.
    pub reason: String,
    /// `snapshot <id> <time>: <path>` for everything the damage reaches.
    pub hits: Vec<String>,
    /// What to do about it.
    pub remedy: Remedy,
}

/// Why a blob or tree is reported: no index file places it.
const NOT_INDEXED: &str = "not in any index file";

/// Why an indexed pack is reported: it is not on the backend.
const MISSING: &str = "missing from the backend";

/// What a check looked at and found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Applications' root records checked (format-spec §15).
    pub roots: usize,
    /// Mark records checked (format-spec §7.3).
    pub mark_records: usize,
    /// Records each application's check read, by what it calls them (`wal_records`).
    #[serde(flatten)]
    pub records: BTreeMap<String, usize>,
    /// Packs the index names.
    pub packs: usize,
    /// Packs read whole: every tree pack (the structure check reads them), and the data
    /// packs `--read-data` chose.
    pub packs_read: usize,
    /// Of those, tree packs.
    pub tree_packs_read: usize,
    /// Of those, data packs.
    pub data_packs_read: usize,
    /// Bytes read from the backend.
    pub bytes_read: u64,
    /// Packs on the backend that no index names (left by an interrupted backup: harmless,
    /// prune removes them).
    pub unreferenced_packs: usize,
    /// Packs prune marked unused that a live index still names (a prune or a backup in
    /// progress, or one that raced the other): harmless, the next prune settles them.
    pub marked_and_live_packs: usize,
    /// The damage found; empty when the repository is sound.
    pub problems: Vec<Problem>,
    /// How much of the repository verification has covered, after this check's reads
    /// were recorded (none when recording failed).
    pub verification: Option<crate::audit::Coverage>,
    /// Lifecycle rules of the bucket that would harm the repository.
    pub lifecycle: Vec<crate::backend::lifecycle::Danger>,
    /// Data packs chosen for reading that are in archive storage and were not read (no
    /// thaw allowed, or a budgeted check, which never pays for one).
    pub archived_not_read: usize,
    /// What thawing archived packs cost, when the check waited for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thaw: Option<crate::thaw::WaitReport>,
}

/// Audits the repository: index against packs, every snapshot's trees against the index,
/// and the data packs `read_data` selects byte by byte. Damage is reported, not an error.
pub fn run(repo: &Repository, read_data: ReadData, progress: &dyn Progress) -> Result<CheckReport> {
    let opts = CheckOptions {
        read_data,
        ..Default::default()
    };
    run_with(repo, &opts, progress)
}

/// What a check covers.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Which data packs to read byte by byte.
    pub read_data: ReadData,
    /// Only the snapshots this accepts are walked, and only the data packs they use are
    /// read (the index, the pack listing and the tree packs are checked whole).
    pub filter: SnapshotFilter,
    /// How data packs in archive storage are thawed for reading (not for a budget).
    pub cold: Option<crate::thaw::ThawWait>,
    /// The applications whose records are audited beside the repository's (when the
    /// check covers every snapshot).
    pub apps: Vec<Arc<dyn AppCheck>>,
}

/// An application's own audit of its root records, run after the repository verified that
/// every root opens and names blobs that are there: the PostgreSQL application checks
/// that its WAL archive has no gap, and the core needs no change for the next one.
pub trait AppCheck: Send + Sync {
    /// The root namespace whose records this check is given.
    fn namespace(&self) -> &str;

    /// What the report calls the records it read (`wal_records`).
    fn counted(&self) -> &str;

    /// Audits `roots` (the namespace's root records, with the object a problem names;
    /// none in a repository of format 1-3, whose records the application reads itself)
    /// against the snapshots checked.
    fn check(
        &self,
        repo: &Repository,
        roots: Vec<(Object, Root)>,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> Result<AppFindings>;
}

impl std::fmt::Debug for dyn AppCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppCheck({})", self.namespace())
    }
}

/// What an application's check found.
#[derive(Debug, Default)]
pub struct AppFindings {
    /// Records it read.
    pub records: usize,
    /// The damage it found.
    pub problems: Vec<Problem>,
}

/// As [`run`], for the snapshots `opts.filter` accepts (say, one backup set's).
pub fn run_with(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let narrowed = !opts.filter.is_empty();
    let mut audit = Audit {
        repo,
        listed_at: crate::timespec::now(),
        progress,
        report: CheckReport::default(),
        problems: Vec::new(),
        damaged: HashMap::new(),
        used_packs: narrowed.then(HashSet::new),
        read: Vec::new(),
        records: None,
        pruned: HashSet::new(),
        local: None,
        marks: None,
    };
    match repo.lifecycle_dangers(None) {
        Ok(d) => audit.report.lifecycle = d.unwrap_or_default(),
        Err(e) => repo.warn(format!("could not read the bucket's lifecycle rules: {e}")),
    }
    // Snapshots listed before the index is read: the index files of each are durable
    // before it (write order), so a backup finishing meanwhile is no false damage.
    // One too large to be a snapshot is damage from its listed size, never read.
    let (mut listed, mut oversized) = (Vec::new(), Vec::new());
    audit.listed_at = crate::timespec::now();
    for f in repo.files().list(FileKind::Snapshot)? {
        match (
            f.name.parse::<SnapshotId>(),
            f.oversized(FileKind::Snapshot),
        ) {
            (Ok(id), None) => listed.push(id),
            (Ok(id), Some(e)) => oversized.push((id, Err(e))),
            (Err(_), _) => {}
        }
    }
    let packs = audit.index_and_packs()?;
    let mut snapshot_files = audit.tree_packs(&packs, &listed)?;
    snapshot_files.extend(oversized);
    let snapshots = audit.snapshots(snapshot_files, &opts.filter);
    audit.walk(&snapshots, &packs)?;
    if !narrowed {
        audit.applications(&opts.apps, &packs, &snapshots)?;
        audit.mark_records()?;
    }
    audit.read_data(&packs, opts.read_data, opts.cold.as_ref());
    // The local cache failing (a full disk) is this host's trouble, not the repository's:
    // the check fails, naming it, and records nothing (hostile pass 8: a healthy tree
    // pack was recorded damaged for every host to see, with a fix that lost a snapshot).
    if let Some(e) = audit.local.take() {
        return Err(e);
    }
    audit.stray_files()?;
    // A repository that went away meanwhile is no repository, not a clean or damaged one.
    if !repo.backend().exists()? {
        return Err(Error::NoRepository(repo.backend().location()));
    }
    audit.record(&packs);
    audit.finish(&snapshots)
}

/// A check in progress: what it found so far.
struct Audit<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    report: CheckReport,
    problems: Vec<Problem>,
    /// Damaged or lost blobs and trees, each with the object (as its problem names it)
    /// that it is lost with.
    damaged: HashMap<BlobId, Object>,
    /// When the check covers some snapshots only: the data packs they use.
    used_packs: Option<HashSet<PackId>>,
    /// Every pack read whole, for the verification record.
    read: Vec<PackId>,
    /// The audit records, once read (a budget reads them to choose packs).
    records: Option<Vec<(crate::id::AuditId, crate::audit::Audit)>>,
    /// Packs not found when read that the index, re-read, no longer names: a prune
    /// deleted them meanwhile. Neither lost nor verified.
    pruned: HashSet<PackId>,
    /// A failure of this host met while reading packs (the local cache): the check ends
    /// with it instead of a verdict.
    local: Option<Error>,
    /// The mark records, once listed and read.
    marks: Option<Vec<(crate::id::MarkId, Result<crate::MarkRecord>)>>,
    /// Before the snapshots were listed: a forget this host saw done later may have
    /// removed a file after the listing, which is not a file put back.
    listed_at: chrono::DateTime<chrono::FixedOffset>,
}

/// The packs as the index and the backend see them.
struct Packs {
    indexed: Vec<(PackId, BlobKind, u64)>,
    /// Indexed but missing, or of the wrong size.
    missing: HashSet<PackId>,
    /// Marked by prune and deleted since (their blobs no longer resolve).
    marked_gone: HashSet<PackId>,
}

type SnapshotFiles = Vec<(SnapshotId, Result<Snapshot>)>;

/// Damaged index files, the packs the index names, the pack files listed (by name), and
/// those of them that are no regular file (with what they are).
type IndexAndListing = (
    Vec<(IndexId, Error)>,
    Vec<(PackId, BlobKind, u64)>,
    HashMap<String, u64>,
    Vec<(FileKind, String, &'static str)>,
);

/// A problem with no snapshot hit yet (the check adds what it reaches).
pub fn problem(object: Object, reason: String, remedy: Remedy) -> Problem {
    // An error's message names its object already; the problem names it once.
    let reason = match reason.strip_prefix(&object.to_string()) {
        Some(rest) => rest
            .strip_prefix(" is ")
            .or_else(|| rest.strip_prefix(": "))
            .unwrap_or(rest)
            .trim_start()
            .to_string(),
        None => reason,
    };
    Problem {
        object,
        reason,
        hits: Vec::new(),
        remedy,
    }
}

/// The problem of a file that is no regular file (`what` says what it is).
fn stray(kind: FileKind, name: [u8; 32], what: &str) -> Problem {
    problem(
        Object::File(kind, name),
        format!("{what}, not a repository file"),
        Remedy::RemoveStrayFile,
    )
}

/// The remedy of a pack that could not be read: gone, or damaged.
fn pack_remedy(e: &Error) -> Remedy {
    match e {
        Error::NotFound { .. } => Remedy::RepairIndexThenSnapshots,
        _ => Remedy::RereadPack,
    }
}

impl Audit<'_> {
    /// Index files, each verified (the cache is rebuilt from them), and every pack the
    /// index names present with the right size.
    fn index_and_packs(&mut self) -> Result<Packs> {
        let repo = self.repo;
        let (bad_index, indexed, mut listed, strays) = self.index_and_listing()?;
        let strays: HashMap<String, (FileKind, &str)> = (strays.into_iter())
            .map(|(kind, name, what)| (name, (kind, what)))
            .collect();
        for (id, e) in bad_index {
            // The reason without the object (the problem names it): alike damage to many
            // files is then said once.
            let reason = match e {
                Error::Corrupt { reason, .. } => format!("damaged: {reason}"),
                e => e.to_string(),
            };
            self.problems
                .push(problem(Object::Index(id), reason, Remedy::RepairIndex));
        }
        self.report.packs = indexed.len();
        // Not listed: lost, unless a prune deleted it after this check read the index (its
        // new index, written first, no longer names it; hostile pass 9: a check racing
        // prunes and backups called such packs missing).
        let unlisted = (indexed.iter())
            .filter(|(id, _, _)| !listed.contains_key(&id.to_hex()))
            .map(|(id, _, _)| *id)
            .collect::<HashSet<_>>();
        let mut lost = match unlisted.is_empty() {
            true => unlisted,
            false => self.still_indexed(unlisted),
        };
        // Or one a backup wrote after the listing and before its index file was read
        // (packs are durable before the index names them): listed again, it is there.
        if !lost.is_empty() {
            for kind in [FileKind::Data, FileKind::Tree] {
                for f in repo.files().list(kind)? {
                    if f.name.parse().is_ok_and(|id: PackId| lost.remove(&id)) {
                        listed.insert(f.name, f.size);
                    }
                }
            }
        }
        let mut missing = HashSet::new();
        for (id, _, size) in &indexed {
            let name = id.to_hex();
            let reason = match listed.remove(&name) {
                None if !lost.contains(id) => {
                    self.pruned.insert(*id);
                    None
                }
                None => Some((MISSING.to_string(), Remedy::RepairIndexThenSnapshots)),
                Some(_) if strays.contains_key(&name) => Some((
                    format!("{}, not a repository file", strays[&name].1),
                    Remedy::RereadPack,
                )),
                Some(s) if s != *size => Some((
                    format!("size {s} but the index says {size}"),
                    Remedy::RereadPack,
                )),
                Some(_) => None,
            };
            if let Some((reason, remedy)) = reason {
                missing.insert(*id);
                for b in repo.blob_index().pack_blobs(id)? {
                    self.damaged.insert(b.id, Object::Pack(*id));
                }
                self.problems
                    .push(problem(Object::Pack(*id), reason, remedy));
            }
        }
        // Packs prune marked stay readable until deleted: blobs resolve through them (§7).
        // A pack both marked and named by a live index (a check between a prune's new
        // index and its removal of the old ones, or a backup that raced it) is no damage:
        // the next prune lets the mark lapse.
        let live: HashSet<PackId> = indexed.iter().map(|(id, _, _)| *id).collect();
        let mut marked_gone = HashSet::new();
        for (id, _) in repo.blob_index().marked_packs()? {
            if live.contains(&id) {
                self.report.marked_and_live_packs += 1;
            } else if listed.remove(&id.to_hex()).is_none() {
                marked_gone.insert(id);
            }
        }
        // A pack no index names (an interrupted backup's) is harmless, one that is no file
        // at all is damage (a marked one's place included: prune reads those).
        for (name, &(kind, what)) in &strays {
            match name.parse::<PackId>() {
                Ok(id) if !live.contains(&id) => self.problems.push(stray(kind, id.0, what)),
                _ => {}
            }
        }
        self.report.unreferenced_packs = listed.len();
        Ok(Packs {
            indexed,
            missing,
            marked_gone,
        })
    }

    /// The index (rebuilt) and the pack listing. A prune that replaced the index and
    /// deleted packs between the two would look like lost packs: then both run again.
    fn index_and_listing(&self) -> Result<IndexAndListing> {
        let repo = self.repo;
        let mut attempt = 0;
        loop {
            self.progress.message("index and packs");
            // Both at once: on an object store each is a round trip or more.
            let (bad, (data, tree)) = rayon::join(
                || repo.rebuild_index(),
                || {
                    rayon::join(
                        || repo.files().list(FileKind::Data),
                        || repo.files().list(FileKind::Tree),
                    )
                },
            );
            let bad = bad?.damaged;
            let indexed = repo.blob_index().packs()?;
            let mut listed: HashMap<String, u64> = HashMap::new();
            let mut strays = Vec::new();
            let files = (data?.into_iter().map(|f| (FileKind::Data, f)))
                .chain(tree?.into_iter().map(|f| (FileKind::Tree, f)));
            for (kind, f) in files {
                if let Some(what) = f.not_regular {
                    strays.push((kind, f.name.clone(), what));
                }
                listed.insert(f.name, f.size);
            }
            let all_there = indexed
                .iter()
                .all(|(id, _, _)| listed.contains_key(&id.to_hex()));
            if all_there || attempt == 1 {
                return Ok((bad, indexed, listed, strays));
            }
            let read: HashSet<IndexId> = repo.blob_index().files()?.into_iter().collect();
            let now: HashSet<IndexId> = repo
                .files()
                .list(FileKind::Index)?
                .into_iter()
                .filter_map(|f| f.name.parse().ok())
                .collect();
            if read == now {
                return Ok((bad, indexed, listed, strays));
            }
            attempt += 1;
        }
    }

    /// Tree packs: each read whole, once, concurrently; every tree in it is verified
    /// (content against the index, each blob against its id) and cached, so the walk
    /// makes no requests. The snapshot manifests come meanwhile.
    fn tree_packs(&mut self, packs: &Packs, snapshots: &[SnapshotId]) -> Result<SnapshotFiles> {
        let repo = self.repo;
        self.progress.message("tree packs");
        let tree_packs: Vec<PackId> = packs
            .indexed
            .iter()
            .filter(|(id, kind, _)| *kind == BlobKind::Tree && !packs.missing.contains(id))
            .map(|(id, _, _)| *id)
            .collect();
        let (findings, snapshot_files) = rayon::join(
            || read_packs(repo, &tree_packs, BlobKind::Tree, self.progress, None),
            || -> Result<SnapshotFiles> {
                Ok(repo.load_many::<Snapshot, _>(FileKind::Snapshot, snapshots))
            },
        );
        self.add_findings(findings);
        let read: Vec<PackId> = (tree_packs.into_iter())
            .filter(|id| !self.pruned.contains(id))
            .collect();
        self.report.packs_read += read.len();
        self.report.tree_packs_read = read.len();
        self.read.extend(read);
        snapshot_files
    }

    /// A symlink, FIFO, directory or device in the place of a file of the other kinds is
    /// damage too, named here unless a read of it named it already (a snapshot, an index
    /// file). Listings say what each is without opening it: a FIFO never blocks a check.
    fn stray_files(&mut self) -> Result<()> {
        // Eight listings that an object store could never answer with such an entry.
        if !self.repo.backend().capabilities().special_files {
            return Ok(());
        }
        const KINDS: [FileKind; 8] = [
            FileKind::Key,
            FileKind::Snapshot,
            FileKind::Index,
            FileKind::Lock,
            FileKind::Audit,
            FileKind::Root,
            FileKind::Wal,
            FileKind::Marks,
        ];
        let named: HashSet<[u8; 32]> = (self.problems.iter())
            .filter_map(|p| p.object.file_name())
            .collect();
        for kind in KINDS {
            for f in self.repo.files().list(kind)? {
                let (Some(what), Ok(name)) = (f.not_regular, hex::decode(&f.name)) else {
                    continue;
                };
                match <[u8; 32]>::try_from(name) {
                    Ok(name) if !named.contains(&name) => {
                        self.problems.push(stray(kind, name, what));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn add_findings(&mut self, found: PackFindings) {
        if self.local.is_none() {
            self.local = found.local;
        }
        self.problems.extend(found.problems);
        for (blob, pack) in found.bad {
            self.damaged.entry(blob).or_insert(Object::Pack(pack));
        }
        self.report.bytes_read += found.bytes;
        if found.gone.is_empty() {
            return;
        }
        let lost = self.still_indexed(found.gone.iter().map(|(id, _)| *id).collect());
        for (id, p) in found.gone {
            if !lost.contains(&id) {
                self.pruned.insert(id);
                continue;
            }
            for b in self.repo.blob_index().pack_blobs(&id).unwrap_or_default() {
                self.damaged.entry(b.id).or_insert(Object::Pack(id));
            }
            self.problems.push(p);
        }
    }

    /// Of packs not found when read, those the index as it is now still names: lost. A
    /// prune writes its new index (and marks) before it deletes packs, so one it deleted
    /// since this check read the index is gone from the index re-read (check during a
    /// prune reports nothing false). If the index cannot be re-read, all count as lost.
    fn still_indexed(&self, gone: HashSet<PackId>) -> HashSet<PackId> {
        let repo = self.repo;
        // Synced, not compared with the files this check read: another process sharing
        // the cache (the prune itself) may have brought it up to date already.
        let now = repo.sync_index().and_then(|()| repo.blob_index().packs());
        match now {
            Ok(packs) => {
                let live: HashSet<PackId> = packs.into_iter().map(|(id, _, _)| id).collect();
                gone.into_iter().filter(|id| live.contains(id)).collect()
            }
            Err(e) => {
                repo.warn(format!("re-reading the index for packs not found: {e}"));
                gone
            }
        }
    }

    /// The snapshots that could be read, oldest first.
    fn snapshots(
        &mut self,
        files: SnapshotFiles,
        filter: &SnapshotFilter,
    ) -> Vec<(SnapshotId, Snapshot)> {
        let mut readable = Vec::new();
        let mut listed = HashSet::new();
        let forgotten = self.forgotten();
        for (id, loaded) in files {
            match loaded {
                // Forgotten since the listing: not damage.
                Err(Error::NotFound { .. }) => continue,
                Ok(_) if forgotten.contains_key(&id) => self.problems.push(problem(
                    Object::Snapshot(id),
                    crate::repo::snapshots::put_back_reason(&forgotten[&id]),
                    Remedy::ForgetSnapshot,
                )),
                Ok(s) => readable.push((id, s)),
                Err(e) => self.problems.push(problem(
                    Object::Snapshot(id),
                    e.to_string(),
                    Remedy::ForgetSnapshot,
                )),
            }
            listed.insert(id);
        }
        self.rollback_alarms(&listed, &readable);
        let mut snapshots: Vec<_> = (readable.into_iter())
            .filter(|(_, s)| filter.matches(s))
            .collect();
        snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        self.report.snapshots = snapshots.len();
        snapshots
    }

    /// The snapshots forgotten, with when as far as known: those this host saw forgotten,
    /// and those a mark record written over an hour ago names (a host with a fresh cache
    /// knows only these; a forget writes its record before it deletes, so a younger
    /// record may be a forget under way).
    fn forgotten(&mut self) -> HashMap<SnapshotId, String> {
        let mut known = self.repo.known_forgotten().unwrap_or_default();
        known.retain(|_, t| crate::repo::rollback::seen_gone_before(t, self.listed_at));
        let settled = crate::timespec::now() - chrono::Duration::hours(1);
        match self.read_marks() {
            Ok(()) => {
                let records = self.marks.as_deref().unwrap_or_default();
                let named = crate::repo::rollback::forgotten_in(records);
                for (id, t) in named.into_iter().filter(|(_, t)| *t < settled) {
                    known.entry(id).or_insert_with(|| t.to_rfc3339());
                }
            }
            Err(e) => self
                .repo
                .warn(format!("could not read the mark records: {e}")),
        }
        known
    }

    /// A snapshot seen here gone without a recorded forget is a problem of the repository
    /// (format-spec §16.3), whatever the filter.
    fn rollback_alarms(
        &mut self,
        listed: &HashSet<SnapshotId>,
        readable: &[(SnapshotId, Snapshot)],
    ) {
        match self.repo.watch_for_rollback(listed, readable) {
            Ok(alarms) => self.problems.extend(alarms.into_iter().map(|v| {
                problem(
                    Object::Snapshot(v.id),
                    format!(
                        "a snapshot of {} ({}) this host had seen vanished without a forget \
                         recorded",
                        v.lineage, v.time
                    ),
                    Remedy::InvestigateRollback,
                )
            })),
            Err(e) => self.repo.warn(format!(
                "could not compare with the snapshots seen before: {e}"
            )),
        }
    }

    /// Every tree the snapshots reach, and every blob they name is indexed. By tree, not by
    /// `TreeWalk`: each tree once across all snapshots, and a bad name is a problem to
    /// report while what the entry names is still checked.
    fn walk(&mut self, snapshots: &[(SnapshotId, Snapshot)], packs: &Packs) -> Result<()> {
        self.progress.message("snapshots and trees");
        let mut seen: HashSet<TreeId> = HashSet::new();
        let mut shapes: HashMap<TreeId, Shape> = HashMap::new();
        for (_, snap) in snapshots {
            let mut stack = vec![snap.tree];
            while let Some(tid) = stack.pop() {
                // A damaged tree is reported with its pack.
                if !seen.insert(tid) || self.damaged.contains_key(&tid) {
                    continue;
                }
                let tree = match self.repo.trees().load(&tid) {
                    Ok(t) => t,
                    Err(e) => {
                        self.damaged.insert(tid, Object::Tree(tid));
                        self.problems.push(problem(
                            Object::Tree(tid),
                            e.to_string(),
                            Remedy::RepairIndexThenSnapshots,
                        ));
                        continue;
                    }
                };
                shapes.insert(tid, Shape::of(&tree));
                for node in &tree.entries {
                    if let Err(e) = safe_name(node, &tid) {
                        self.problems.push(problem(
                            Object::Tree(tid),
                            e.to_string(),
                            Remedy::RepairIndexThenSnapshots,
                        ));
                    }
                    if let Some(e) = inline_mismatch(node) {
                        self.problems.push(problem(
                            Object::Tree(tid),
                            e,
                            Remedy::RepairIndexThenSnapshots,
                        ));
                    }
                    stack.extend(node.subtree);
                    let mut len = Some(0u64);
                    for id in &node.content {
                        let raw = self.check_blob(id, packs)?;
                        len = len.zip(raw).map(|(a, b)| a + b);
                    }
                    // A blob not indexed is a problem of its own; the size is judged only
                    // when every length is known.
                    if let Some(e) = len.and_then(|len| size_mismatch(node, len)) {
                        self.problems.push(problem(
                            Object::Tree(tid),
                            e,
                            Remedy::RepairIndexThenSnapshots,
                        ));
                    }
                }
            }
        }
        self.report.trees = seen.len();
        self.expanding(snapshots, &shapes);
        Ok(())
    }

    /// Snapshots whose tree expands past what their summary records (issue 31, item 7):
    /// counted per tree from the shapes the walk kept, never path by path.
    fn expanding(&mut self, snapshots: &[(SnapshotId, Snapshot)], shapes: &HashMap<TreeId, Shape>) {
        let mut expansions = Expansions::default();
        let mut load = |t: &TreeId| Ok(shapes.get(t).cloned());
        for (id, snap) in snapshots {
            let e = (expansions.of(snap.tree, &mut load, &mut |_| Ok(())))
                .expect("shapes load without error");
            let limits = crate::walk::Limits::of(snap).named(*id);
            // The sharing bound needs the snapshot's own distinct entries: counted only
            // where it could matter (hostile pass 7: a bomb recording its expansion in
            // its summary passed check).
            let over = match e.all() > crate::walk::SHARING_FLOOR {
                true => limits.check_expansion(e, distinct_entries(shapes, snap.tree)),
                false => limits.check_totals(e.files, e.dirs),
            }
            .err();
            if let Some(e) = over {
                let remedy = e.remedy().unwrap_or(Remedy::ForgetExpandingSnapshot);
                self.problems
                    .push(problem(Object::Snapshot(*id), e.to_string(), remedy));
            }
        }
    }

    /// Every root record opens, is filed under its name and names blobs that resolve to
    /// packs that are there (format-spec §15); so does every WAL record of format 1-3
    /// (§14.1). Returns the root records that opened, for the applications' own checks.
    fn walk_roots(&mut self, packs: &Packs) -> Result<Vec<(Object, Root)>> {
        let mut roots = Vec::new();
        // Each format has one of the two (version 4 never writes `wal/`): one listing.
        let kind = match self.repo.has_roots() {
            true => FileKind::Root,
            false => FileKind::Wal,
        };
        for f in self.repo.files().list(kind)? {
            let mut name = [0u8; 32];
            if !crate::files::is_file_name(&f.name)
                || hex::decode_to_slice(&f.name, &mut name).is_err()
            {
                continue;
            }
            if kind == FileKind::Wal {
                self.legacy_wal_record(name, &f.name, packs)?;
                continue;
            }
            if f.size > crate::repo::root::MAX_ROOT_FILE {
                self.problems.push(problem(
                    Object::Root(name),
                    format!("{} bytes: more than a root record can be", f.size),
                    Remedy::StoreRecordAgain,
                ));
                continue;
            }
            if let Some(root) = self.root_record(name, packs)? {
                roots.push((Object::Root(name), root));
            }
        }
        Ok(roots)
    }

    /// Every mark record opens (format-spec §7.3): one that does not makes each backup on
    /// a partial view read the whole index, run after run, until it is removed.
    fn mark_records(&mut self) -> Result<()> {
        self.read_marks()?;
        let mut found = Vec::new();
        for (id, record) in self.marks.as_deref().unwrap_or_default() {
            match record {
                Ok(_) => self.report.mark_records += 1,
                // Deleted since the listing (past its retention).
                Err(Error::NotFound { .. }) => {}
                Err(e) => found.push(problem(
                    Object::Mark(*id),
                    e.to_string(),
                    Remedy::RemoveMarkRecord,
                )),
            }
        }
        self.problems.extend(found);
        Ok(())
    }

    /// Lists and reads the mark records once (several in flight): the snapshots they name
    /// as forgotten and the records' own check both use them.
    fn read_marks(&mut self) -> Result<()> {
        if self.marks.is_some() || !self.repo.config().partial_views() {
            return Ok(());
        }
        let ids: Vec<crate::id::MarkId> = (self.repo.files().list(FileKind::Marks)?.into_iter())
            .filter_map(|f| f.name.parse().ok())
            .collect();
        self.marks = Some(self.repo.load_many(FileKind::Marks, &ids));
        Ok(())
    }

    /// One root record checked.
    fn root_record(&mut self, name: [u8; 32], packs: &Packs) -> Result<Option<Root>> {
        let root = match self.repo.checked_root(&hex::encode(name)) {
            Ok(Some(root)) => root,
            // Deleted since the listing.
            Ok(None) => return Ok(None),
            // Of an application unknown, since it does not open.
            Err(e) => {
                self.problems.push(problem(
                    Object::Root(name),
                    e.to_string(),
                    Remedy::StoreRecordAgain,
                ));
                return Ok(None);
            }
        };
        self.report.roots += 1;
        for id in &root.blobs {
            self.check_blob(id, packs)?;
        }
        Ok(Some(root))
    }

    /// One WAL record of format 1-3 checked: it opens, is filed under its name, and its
    /// blobs resolve (what it means is the PostgreSQL application's check).
    fn legacy_wal_record(&mut self, name: [u8; 32], file: &str, packs: &Packs) -> Result<()> {
        let object = Object::Wal(name);
        let rec = match self
            .repo
            .files()
            .load::<crate::repo::root::LegacyWal>(FileKind::Wal, file)
        {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.problems
                    .push(problem(object, e.to_string(), Remedy::StoreRecordAgain));
                return Ok(());
            }
        };
        if self.repo.wal_name(&rec.cluster, &rec.name) != file {
            self.problems.push(problem(
                object,
                format!(
                    "holds {}/{}, which is filed elsewhere",
                    rec.cluster, rec.name
                ),
                Remedy::StoreRecordAgain,
            ));
        }
        for id in &rec.content {
            self.check_blob(id, packs)?;
        }
        Ok(())
    }

    /// The applications' own checks of their records (the WAL chain of a PostgreSQL
    /// archive), each given the root records of its namespace.
    fn applications(
        &mut self,
        apps: &[Arc<dyn AppCheck>],
        packs: &Packs,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> Result<()> {
        let mut roots = self.walk_roots(packs)?;
        for app in apps {
            let (mine, rest) = roots
                .into_iter()
                .partition(|(_, r)| r.namespace == app.namespace());
            roots = rest;
            let found = app.check(self.repo, mine, snapshots)?;
            *self
                .report
                .records
                .entry(app.counted().to_string())
                .or_default() += found.records;
            self.problems.extend(found.problems);
        }
        Ok(())
    }

    /// A blob a tree names must resolve to a pack that is there.
    /// Returns the blob's plaintext length when the index names a pack that is there.
    fn check_blob(&mut self, id: &BlobId, packs: &Packs) -> Result<Option<u64>> {
        if self.damaged.contains_key(id) {
            return Ok(None);
        }
        let (reason, remedy) = match self.repo.blob_index().lookup(id)? {
            None => (NOT_INDEXED.to_string(), Remedy::IndexUnindexedPacks),
            Some(loc) if packs.marked_gone.contains(&loc.pack) => (
                format!(
                    "only in pack {}, which prune marked unused and which is gone",
                    loc.pack
                ),
                Remedy::RepairIndexThenSnapshots,
            ),
            Some(loc) => {
                if let Some(used) = &mut self.used_packs {
                    used.insert(loc.pack);
                }
                return Ok(Some(u64::from(loc.entry.raw_length)));
            }
        };
        self.damaged.insert(*id, Object::Blob(*id));
        self.problems
            .push(problem(Object::Blob(*id), reason, remedy));
        Ok(None)
    }

    /// Re-reads, decrypts and re-hashes the chosen data packs (tree packs were read whole
    /// already).
    fn read_data(
        &mut self,
        packs: &Packs,
        read_data: ReadData,
        cold: Option<&crate::thaw::ThawWait>,
    ) {
        let chosen = self.choose(packs, read_data);
        if chosen.is_empty() {
            return;
        }
        self.progress.message("reading data");
        let budgeted = matches!(read_data, ReadData::Budget(_));
        let cold = cold.filter(|_| !budgeted);
        let archived = Mutex::new(Vec::new());
        let findings = read_packs(
            self.repo,
            &chosen,
            BlobKind::Data,
            self.progress,
            Some(&archived),
        );
        self.add_findings(findings);
        let archived: HashSet<PackId> = archived.into_inner().unwrap().into_iter().collect();
        let mut read: Vec<PackId> = chosen
            .into_iter()
            .filter(|p| !archived.contains(p))
            .collect();
        let mut archived: Vec<PackId> = archived.into_iter().collect();
        archived.sort_unstable();
        if let (Some(wait), false) = (cold, archived.is_empty()) {
            read.extend(self.thaw_and_read(&archived, wait));
        } else if !archived.is_empty() {
            self.report.archived_not_read = archived.len();
            self.repo.warn(format!(
                "{} data pack(s) chosen for reading are in archive storage and were not read{}",
                archived.len(),
                if cold.is_none() && !budgeted {
                    ""
                } else {
                    " (a budgeted check never pays for a thaw)"
                }
            ));
        }
        read.retain(|p| !self.pruned.contains(p));
        self.report.packs_read += read.len();
        self.report.data_packs_read = read.len();
        self.read.extend(read);
    }

    /// The data packs `read_data` selects among those the check covers.
    fn choose(&mut self, packs: &Packs, read_data: ReadData) -> Vec<PackId> {
        let candidates: Vec<(PackId, u64)> = packs
            .indexed
            .iter()
            .filter(|(id, kind, _)| {
                *kind == BlobKind::Data
                    && !packs.missing.contains(id)
                    && self.used_packs.as_ref().is_none_or(|u| u.contains(id))
            })
            .map(|(id, _, size)| (*id, *size))
            .collect();
        let ReadData::Budget(budget) = read_data else {
            return candidates
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| read_data.selects(id))
                .collect();
        };
        let records = match crate::audit::load(self.repo) {
            Ok(r) => r,
            Err(e) => {
                // Without the state every pack counts as never verified.
                self.repo
                    .warn(format!("reading the verification state: {e}"));
                Vec::new()
            }
        };
        let state = crate::audit::verification_state(&records);
        self.records = Some(records);
        budgeted(&candidates, &state, budget)
    }

    /// Thaws `archived` packs and reads each batch as it thaws; returns the packs read.
    /// Those a failed thaw left are problems.
    fn thaw_and_read(&mut self, archived: &[PackId], wait: &crate::thaw::ThawWait) -> Vec<PackId> {
        let (mut found, mut read) = (Vec::new(), Vec::new());
        let waited =
            crate::thaw::thaw_then_read(self.repo, archived, wait, None, self.progress, |batch| {
                found.push(read_packs(
                    self.repo,
                    batch,
                    BlobKind::Data,
                    self.progress,
                    None,
                ));
                read.extend_from_slice(batch);
            });
        for f in found {
            self.add_findings(f);
        }
        match waited {
            Ok(w) => self.report.thaw = Some(w),
            Err(failed) => {
                let (e, left) = *failed;
                for p in &left {
                    self.problems.push(problem(
                        Object::Pack(*p),
                        format!("not read: thawing it failed: {e}"),
                        Remedy::WarmUp,
                    ));
                }
            }
        }
        read
    }

    /// Records in the repository which packs this check read and whether each was whole.
    /// A check that cannot write (read-only credentials) still reports what it found.
    fn record(&mut self, packs: &Packs) {
        let damaged: HashSet<PackId> = self
            .problems
            .iter()
            .filter_map(|p| match p.object {
                Object::Pack(id) => Some(id),
                _ => None,
            })
            .chain(self.damaged.values().filter_map(|o| match o {
                Object::Pack(id) => Some(*id),
                _ => None,
            }))
            .collect();
        let now = crate::timespec::now();
        let marks: Vec<crate::audit::PackMark> = self
            .read
            .iter()
            .map(|id| crate::audit::PackMark(*id, now.timestamp_millis(), !damaged.contains(id)))
            .collect();
        let stored: HashSet<PackId> = packs
            .indexed
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !packs.missing.contains(id) && !self.pruned.contains(id))
            .collect();
        let recorded = (|| -> Result<crate::audit::Coverage> {
            // The state a budget was chosen by, else read now.
            let records = match self.records.take() {
                Some(r) => r,
                None => crate::audit::load(self.repo)?,
            };
            // After a write the new record is the whole verification state.
            let records = if marks.is_empty() {
                records
            } else {
                let summary = (
                    self.read.len() as u64,
                    self.report.bytes_read,
                    self.problems.len() as u64,
                );
                vec![crate::audit::record_verification(
                    self.repo, &records, &marks, &stored, summary,
                )?]
            };
            Ok(crate::audit::coverage(
                &records,
                stored.iter().copied(),
                now,
            ))
        })();
        match recorded {
            Ok(c) => {
                self.known_damage(&c);
                self.report.verification = Some(c);
            }
            Err(e) => self
                .repo
                .warn(format!("recording what this check verified: {e}")),
        }
    }

    /// Packs an earlier check found damaged and this one did not read again: still
    /// problems. Known damage keeps `check` failing (and its alert firing) until a read
    /// finds the pack whole or a repair takes it out of the repository.
    fn known_damage(&mut self, coverage: &crate::audit::Coverage) {
        let reported: HashSet<PackId> = self
            .problems
            .iter()
            .filter_map(|p| match p.object {
                Object::Pack(id) => Some(id),
                _ => None,
            })
            .collect();
        for pack in &coverage.damaged {
            if self.read.contains(pack) || reported.contains(pack) {
                continue;
            }
            self.problems.push(problem(
                Object::Pack(*pack),
                "found damaged by an earlier check and not read again by this one".into(),
                Remedy::RereadPack,
            ));
            // Its blobs, for the snapshots and paths it hits.
            if let Ok(entries) = self.repo.blob_index().pack_blobs(pack) {
                for e in entries {
                    self.damaged.entry(e.id).or_insert(Object::Pack(*pack));
                }
            }
        }
    }

    /// Names what the damage reaches, and what to do about each problem.
    fn finish(mut self, snapshots: &[(SnapshotId, Snapshot)]) -> Result<CheckReport> {
        if !self.damaged.is_empty() {
            let hits = find_hits(self.repo, snapshots, &self.damaged)?;
            for p in &mut self.problems {
                if let Some(h) = hits.get(&p.object) {
                    // A blob a file holds twice hits it once.
                    p.hits = h.clone();
                    p.hits.dedup();
                }
            }
        }
        self.report.problems = self.problems;
        Ok(self.report)
    }
}

/// What reading packs found.
#[derive(Default)]
struct PackFindings {
    problems: Vec<Problem>,
    /// Damaged blobs, with their packs.
    bad: Vec<(BlobId, PackId)>,
    bytes: u64,
    /// Packs not found, each with its problem: lost, unless a prune deleted them meanwhile.
    gone: Vec<(PackId, Problem)>,
    /// A failure of this host (the local cache), not of the packs.
    local: Option<Error>,
}

/// Reads packs whole, several in flight; tree packs' verified trees go into the cache.
fn read_packs(
    repo: &Repository,
    packs: &[PackId],
    kind: BlobKind,
    progress: &dyn Progress,
    archived: Option<&Mutex<Vec<PackId>>>,
) -> PackFindings {
    progress.set_total(packs.len() as u64);
    let found = Mutex::new(PackFindings::default());
    repo.with_read_pool(|| {
        packs.par_iter().for_each(|id| {
            let one = read_pack(repo, id, kind, archived);
            let mut f = found.lock().unwrap();
            f.problems.extend(one.problems);
            f.bad.extend(one.bad);
            f.bytes += one.bytes;
            f.gone.extend(one.gone);
            if f.local.is_none() {
                f.local = one.local;
            }
            progress.advance(1);
        })
    });
    found.into_inner().unwrap()
}

/// Reads one pack whole: what it found.
fn read_pack(
    repo: &Repository,
    id: &PackId,
    kind: BlobKind,
    archived: Option<&Mutex<Vec<PackId>>>,
) -> PackFindings {
    let object = Object::Pack(*id);
    let mut found = PackFindings::default();
    let entries = match repo.blob_index().pack_blobs(id) {
        Ok(e) => e,
        Err(e @ Error::Cache { .. }) => {
            found.local = Some(e);
            return found;
        }
        Err(e) => {
            (found.problems).push(problem(object, e.to_string(), Remedy::RereadPack));
            return found;
        }
    };
    let bytes = match repo.read_pack(kind, id) {
        Ok(b) => b,
        // In archive storage: not damage, only not readable yet.
        Err(Error::Archived { .. }) if archived.is_some() => {
            archived.unwrap().lock().unwrap().push(*id);
            return found;
        }
        // Lost, or deleted by a prune since the index was read: judged by the caller.
        Err(e @ Error::NotFound { .. }) => {
            found
                .gone
                .push((*id, problem(object, e.to_string(), pack_remedy(&e))));
            return found;
        }
        Err(e @ Error::Cache { .. }) => {
            found.local = Some(e);
            return found;
        }
        Err(e) => {
            found.bad.extend(entries.iter().map(|e| (e.id, *id)));
            (found.problems).push(problem(object, e.to_string(), pack_remedy(&e)));
            return found;
        }
    };
    let mut reasons = Vec::new();
    if crate::id::content_address(&bytes) != id.0 {
        reasons.push("content does not match its name".to_string());
    }
    match repo.pack_header(id, &bytes) {
        Ok(header) => {
            // Every indexed blob must be in the header as indexed; the header may list more
            // (a blob stored twice by concurrent backups is indexed in one pack only).
            if let Some(e) = entries.iter().find(|e| !header.contains(e)) {
                reasons.push(format!(
                    "pack header and index disagree about blob {}",
                    e.id
                ));
            }
        }
        Err(e) => reasons.push(e.to_string()),
    }
    // Trees verified here (each against its id) go into the cache: the walk reads them
    // from there instead of decrypting them again.
    let mut trees = Vec::new();
    for e in &entries {
        let result = repo.open_blob_in(id, &bytes, 0, e);
        match result {
            Ok(plain) if kind == BlobKind::Tree => trees.push((e.id, plain)),
            Ok(_) => {}
            Err(err) => {
                reasons.push(err.to_string());
                found.bad.push((e.id, *id));
            }
        }
    }
    if let Err(e) = repo.cache_trees(&trees) {
        found.local = Some(e);
    }
    if !reasons.is_empty() {
        (found.problems).push(problem(object, reasons.join("; "), Remedy::RereadPack));
    }
    found.bytes = bytes.len() as u64;
    found
}

/// Maps each damaged object (as named in problems) to the snapshot paths it hits.
fn find_hits(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    damaged: &HashMap<BlobId, Object>,
) -> Result<HashMap<Object, Vec<String>>> {
    let mut hits: HashMap<Object, Vec<String>> = HashMap::new();
    for (sid, snap) in snapshots {
        let label = format!("snapshot {} ({})", sid.short(), snap.time);
        if let Some(obj) = damaged.get(&snap.tree) {
            hits.entry(*obj).or_default().push(format!("{label}: /"));
            continue;
        }
        // A tree bomb ends its own walk (past its summary), not the listing.
        let mut walk = TreeWalk::new(repo, &snap.tree).limited(crate::walk::Limits::of(snap));
        while let Some(visit) = walk.next() {
            // Unreadable trees and bad names are problems of their own already.
            let Visit::Node { path, node, .. } = visit else {
                continue;
            };
            let path = Path::new("/").join(path);
            if let Some(obj) = node.subtree.and_then(|sub| damaged.get(&sub)) {
                hits.entry(*obj)
                    .or_default()
                    .push(format!("{label}: {}/ (directory)", path.display()));
                walk.skip_subtree();
            }
            let mut reported = HashSet::new();
            for id in &node.content {
                if let Some(obj) = damaged.get(id) {
                    if reported.insert(obj) {
                        hits.entry(*obj)
                            .or_default()
                            .push(format!("{label}: {}", path.display()));
                    }
                }
            }
        }
    }
    Ok(hits)
}

/// The entries of the distinct trees below `root` (as the walk's sharing bound counts
/// them), from `shapes`.
fn distinct_entries(shapes: &HashMap<TreeId, Shape>, root: TreeId) -> u64 {
    let mut seen = HashSet::from([root]);
    let mut stack = vec![root];
    let mut entries = 0u64;
    while let Some(t) = stack.pop() {
        let Some(shape) = shapes.get(&t) else {
            continue;
        };
        entries = entries.saturating_add(shape.entries);
        stack.extend(shape.subtrees.iter().filter(|s| seen.insert(**s)));
    }
    entries
}

/// A file whose blobs (`len` bytes by the index) do not add up to its size (format-spec §8).
fn size_mismatch(node: &crate::repo::tree::Node, len: u64) -> Option<String> {
    let file = node.kind == crate::repo::tree::NodeKind::File && node.data.is_none();
    (file && len != node.size).then(|| {
        format!(
            "entry {:?}: content of {len} bytes for a size of {}",
            String::from_utf8_lossy(&node.name),
            node.size
        )
    })
}

/// What is wrong with a node's inline bytes (format-spec §8), if anything.
fn inline_mismatch(node: &crate::repo::tree::Node) -> Option<String> {
    let data = node.data.as_ref()?;
    let name = String::from_utf8_lossy(&node.name);
    if node.kind != crate::repo::tree::NodeKind::File || !node.content.is_empty() {
        return Some(format!(
            "entry {name:?}: inline data on a {:?} node or beside content blobs",
            node.kind
        ));
    }
    (data.len() as u64 != node.size).then(|| {
        format!(
            "entry {name:?}: {} bytes of inline data for a size of {}",
            data.len(),
            node.size
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile pass (issue 26): "root record X: root record X is damaged: …" said its
    /// object twice.
    #[test]
    fn a_problem_names_its_object_once() {
        let object = Object::Root([7; 32]);
        let e = Error::corrupt(object.to_string(), "authentication failed");
        let p = problem(object, e.to_string(), Remedy::StoreRecordAgain);
        assert_eq!(p.reason, "damaged: authentication failed");
        let p = problem(object, "gone".into(), Remedy::StoreRecordAgain);
        assert_eq!(p.reason, "gone");
        let p = problem(object, format!("{object}: gone"), Remedy::StoreRecordAgain);
        assert_eq!(p.reason, "gone");
    }

    /// Options print the applications they carry (the CLI's debug output shows them).
    #[test]
    fn options_name_their_applications() {
        struct Notes;
        impl AppCheck for Notes {
            fn namespace(&self) -> &str {
                "toy.notes"
            }
            fn counted(&self) -> &str {
                "notes"
            }
            fn check(
                &self,
                _: &Repository,
                _: Vec<(Object, Root)>,
                _: &[(SnapshotId, Snapshot)],
            ) -> Result<AppFindings> {
                Ok(AppFindings::default())
            }
        }
        let opts = CheckOptions {
            apps: vec![std::sync::Arc::new(Notes)],
            ..Default::default()
        };
        assert!(format!("{opts:?}").contains("AppCheck(toy.notes)"));
    }

    #[test]
    fn subsets_cover_every_pack_once() {
        for m in [1u32, 3, 7] {
            for b in 0..=255u8 {
                let id = PackId([b; 32]);
                let count = (1..=m)
                    .filter(|n| ReadData::Subset { n: *n, m }.selects(&id))
                    .count();
                assert_eq!(count, 1);
            }
        }
        assert_eq!(
            ReadData::parse_subset("2/5").unwrap(),
            ReadData::Subset { n: 2, m: 5 }
        );
        assert_eq!(
            ReadData::parse_subset("10%").unwrap(),
            ReadData::Percent(10.0)
        );
        assert!(ReadData::parse_subset("6/5").is_err());
        assert!(ReadData::parse_subset("0%").is_err());
    }
}
