//! File reads under a mount.
//!
//! A read takes the chunks covering it from a cache bounded in bytes. Ahead of a reader the
//! next chunks are fetched in the background: one pack range per run of chunks that lie in
//! one pack, several ranges in flight on a pool sized for the backend. A large file thus
//! streams at about a restore's speed instead of paying one round trip per chunk.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::cache::BlobLocation;
use crate::repo::tree::Node;
use crate::repo::Repository;
use crate::restore::MAX_RANGE;

/// How far ahead of a reader chunks are fetched, per read in flight the backend allows
/// (a few packs' worth locally, more where each request waits on the network).
const READ_AHEAD_PER_READ: u64 = 8 << 20;
const READ_AHEAD_MIN: u64 = 32 << 20;
const READ_AHEAD_MAX: u64 = 64 << 20;
/// Files whose chunk positions are kept between reads.
const FILES: usize = 1024;

/// Reads file contents for the mount, fetching ahead.
pub(super) struct Reader {
    repo: Arc<Repository>,
    pool: rayon::ThreadPool,
    cache: Arc<Cache>,
    files: HashMap<u64, File>,
    /// How far ahead to fetch (less in tests, to move the window).
    ahead: u64,
}

/// A file being read: where its chunks are and where they start.
struct File {
    locations: Vec<BlobLocation>,
    starts: Vec<u64>,
    len: u64,
    /// Chunks before this index have been asked for (fetched, in flight or read).
    frontier: usize,
}

impl File {
    fn new(repo: &Repository, node: &Node) -> Result<Self> {
        let locations = node
            .content
            .iter()
            .map(|id| repo.lookup_blob(id))
            .collect::<Result<Vec<_>>>()?;
        let mut len = 0;
        let starts = locations
            .iter()
            .map(|l| {
                let start = len;
                len += u64::from(l.entry.raw_length);
                start
            })
            .collect();
        // The size shown by `stat` is the size read: a longer content is not served.
        node.check_size(&name_of(node), len)?;
        Ok(File {
            locations,
            starts,
            len,
            frontier: 0,
        })
    }

    /// The chunk holding byte `pos` (< len).
    fn chunk_at(&self, pos: u64) -> usize {
        self.starts.partition_point(|&s| s <= pos).saturating_sub(1)
    }

    /// The first chunk that starts at or after `pos`, or the number of chunks.
    fn chunk_from(&self, pos: u64) -> usize {
        self.starts.partition_point(|&s| s < pos)
    }

    fn start(&self, chunk: usize) -> u64 {
        self.starts.get(chunk).copied().unwrap_or(self.len)
    }
}

/// A node's name as a path, for messages (the reader knows files by inode).
fn name_of(node: &Node) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(&node.name).into()
}

/// Decoded chunks shared with the fetching threads.
struct Cache {
    state: Mutex<State>,
    /// Signalled whenever a fetch ends, successful or not.
    fetched: Condvar,
}

struct State {
    /// Bytes of decoded chunks kept: the windows ahead of a few readers, and what they read.
    capacity: usize,
    ready: HashMap<BlobId, Arc<Vec<u8>>>,
    /// Oldest first, for eviction.
    order: VecDeque<BlobId>,
    bytes: usize,
    /// Chunks a background fetch is working on.
    pending: HashSet<BlobId>,
}

impl State {
    fn insert(&mut self, id: BlobId, plain: Arc<Vec<u8>>) {
        if self.ready.contains_key(&id) {
            return;
        }
        self.bytes += plain.len();
        self.ready.insert(id, plain);
        self.order.push_back(id);
        while self.bytes > self.capacity && self.order.len() > 1 {
            let old = self.order.pop_front().expect("more than one");
            if let Some(b) = self.ready.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking fetch leaves the maps consistent: every update is one insert or remove.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reader {
    pub(super) fn new(repo: Arc<Repository>) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(repo.read_concurrency())
            .thread_name(|i| format!("strata-mount-read-{i}"))
            .build()
            .map_err(|e| Error::io("mount read threads", std::io::Error::other(e)))?;
        let ahead = (READ_AHEAD_PER_READ * repo.read_concurrency() as u64)
            .clamp(READ_AHEAD_MIN, READ_AHEAD_MAX);
        let state = State {
            capacity: 2 * ahead as usize + (32 << 20),
            ready: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            pending: HashSet::new(),
        };
        Ok(Reader {
            repo,
            pool,
            cache: Arc::new(Cache {
                state: Mutex::new(state),
                fetched: Condvar::new(),
            }),
            files: HashMap::new(),
            ahead,
        })
    }

    /// Forgets what it keeps of file `ino` (whose number may next be another file's).
    pub(super) fn forget(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// Up to `size` bytes of file `ino` (whose node is `node`) from `offset` on.
    pub(super) fn read(
        &mut self,
        ino: u64,
        node: &Node,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>> {
        if let Some(data) = &node.data {
            node.check_size(&name_of(node), data.len() as u64)?;
            let from = (offset.min(data.len() as u64)) as usize;
            let to = from.saturating_add(size).min(data.len());
            return Ok(data[from..to].to_vec());
        }
        let mut file = match self.files.remove(&ino) {
            Some(f) => f,
            None => File::new(&self.repo, node)?,
        };
        let out = self.read_in(&mut file, offset, size);
        if self.files.len() >= FILES {
            self.files.clear();
        }
        self.files.insert(ino, file);
        out
    }

    fn read_in(&self, file: &mut File, offset: u64, size: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(size as u64).min(file.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (file.chunk_at(offset), file.chunk_at(end - 1));
        // A jump forward past what was asked for, or back behind the window, starts over.
        let behind = file.chunk_from(end.saturating_add(2 * self.ahead));
        if file.frontier < first || file.frontier > behind {
            file.frontier = first;
        }
        // Refill the window once less than half of it is asked for: ranges stay long.
        if file.start(file.frontier) < end.saturating_add(self.ahead / 2) {
            let mut to = file
                .chunk_from(end.saturating_add(self.ahead))
                .max(last + 1);
            // To the end of the pack run it reached: the next refill starts a new range
            // instead of a second request into the same pack.
            let locations = &file.locations;
            while to < locations.len() && locations[to].pack == locations[to - 1].pack {
                to += 1;
            }
            if file.frontier < to {
                self.request(&file.locations[file.frontier..to]);
                file.frontier = to;
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for i in first..=last {
            let plain = self.get(&file.locations[i])?;
            let from = offset.saturating_sub(file.starts[i]) as usize;
            let take = ((end - offset) as usize - out.len()).min(plain.len().saturating_sub(from));
            out.extend_from_slice(&plain[from..from + take]);
        }
        Ok(out)
    }

    /// Starts background fetches of the chunks not cached or in flight, a range per run
    /// of neighbours in one pack.
    fn request(&self, locations: &[BlobLocation]) {
        let mut runs: Vec<Vec<BlobLocation>> = Vec::new();
        let mut span = (0, 0);
        {
            let mut state = self.cache.lock();
            for loc in locations {
                let id = loc.entry.id;
                if state.ready.contains_key(&id) || !state.pending.insert(id) {
                    continue;
                }
                let (lo, hi) = (loc.entry.offset, loc.entry.offset + loc.entry.length as u64);
                let joined = runs.last_mut().filter(|run| {
                    run[0].pack == loc.pack && hi.max(span.1) - lo.min(span.0) <= MAX_RANGE
                });
                match joined {
                    Some(run) => {
                        run.push(*loc);
                        span = (lo.min(span.0), hi.max(span.1));
                    }
                    None => {
                        runs.push(vec![*loc]);
                        span = (lo, hi);
                    }
                }
            }
        }
        for run in runs {
            let (repo, cache) = (self.repo.clone(), self.cache.clone());
            self.pool.spawn_fifo(move || {
                let fetched = fetch(&repo, &run);
                let mut state = cache.lock();
                for loc in &run {
                    state.pending.remove(&loc.entry.id);
                }
                // A failed fetch leaves its chunks out: a reader that needs one fetches it
                // itself and gets the error.
                for (id, plain) in fetched.into_iter().flatten() {
                    state.insert(id, Arc::new(plain));
                }
                drop(state);
                cache.fetched.notify_all();
            });
        }
    }

    /// A chunk's plaintext: cached, awaited from a fetch in flight, or fetched now.
    fn get(&self, loc: &BlobLocation) -> Result<Arc<Vec<u8>>> {
        let id = loc.entry.id;
        let mut state = self.cache.lock();
        loop {
            if let Some(plain) = state.ready.get(&id) {
                return Ok(plain.clone());
            }
            if !state.pending.contains(&id) {
                break;
            }
            state = self
                .cache
                .fetched
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        let (id, plain) = fetch(&self.repo, std::slice::from_ref(loc))?
            .pop()
            .expect("one chunk asked for");
        let plain = Arc::new(plain);
        self.cache.lock().insert(id, plain.clone());
        Ok(plain)
    }
}

/// The chunks of one run (all in one pack), with one range read.
fn fetch(repo: &Repository, run: &[BlobLocation]) -> Result<Vec<(BlobId, Vec<u8>)>> {
    let pack = run[0].pack;
    let start = run.iter().map(|l| l.entry.offset).min().expect("a run");
    let end = run
        .iter()
        .map(|l| l.entry.offset + l.entry.length as u64)
        .max()
        .expect("a run");
    let bytes = repo.read_pack_range(run[0].entry.kind, &pack, start, end - start)?;
    run.iter()
        .map(|l| {
            Ok((
                l.entry.id,
                repo.open_blob_in(&pack, &bytes, start, &l.entry)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::faulty::{Fault, Faulty, Op};
    use crate::backend::{FileKind, MemBackend};
    use crate::repo::tree::NodeKind;

    struct Fixture {
        _dir: tempfile::TempDir,
        repo: Arc<Repository>,
        faults: Arc<Faulty>,
        node: Node,
        content: Vec<u8>,
    }

    /// A file of many chunks over a few packs, in a fresh repository over a backend that
    /// counts reads and fails on cue.
    fn repo_with_file(len: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faulty::new(Arc::new(MemBackend::default())));
        let store: crate::backend::BackendRef = faults.clone();
        let repo = crate::repo::for_tests(store, 3, dir.path());
        let content = crate::util::pseudo_random(len, 7);
        let path = dir.path().join("f");
        std::fs::write(&path, &content).unwrap();
        let options = crate::backup::BackupOptions {
            source: crate::backup::Source::Paths(vec![path.clone()]),
            ..Default::default()
        };
        let report = crate::backup::run(&repo, options, &crate::NoProgress).unwrap();
        let node = crate::walk::lookup(&repo, &report.snapshot.tree, &path)
            .unwrap()
            .unwrap();
        assert_eq!(node.kind, NodeKind::File);
        Fixture {
            _dir: dir,
            repo: Arc::new(repo),
            faults,
            node,
            content,
        }
    }

    fn data_reads(f: &Fixture) -> u64 {
        f.faults.count(Op::Read, Some(FileKind::Data))
    }

    #[test]
    fn a_sequential_read_costs_a_range_per_pack_run_not_a_request_per_chunk() {
        let f = repo_with_file(6 << 20);
        let chunks = f.node.content.len() as u64;
        let mut reader = Reader::new(f.repo.clone()).unwrap();
        reader.ahead = 1 << 20;
        let before = data_reads(&f);
        let mut got = Vec::new();
        for offset in (0..f.content.len() as u64).step_by(128 << 10) {
            got.extend(reader.read(1, &f.node, offset, 128 << 10).unwrap());
        }
        assert!(got == f.content, "content read back differs");
        let reads = data_reads(&f) - before;
        // Refilled once half the window is read: about two ranges per MiB, not ~16 chunks.
        assert!(
            reads * 4 <= chunks,
            "{reads} range reads for {chunks} chunks"
        );
        // The last MiB again: its chunks are still cached and cost nothing.
        let before = data_reads(&f);
        reader.read(1, &f.node, 5 << 20, 1 << 20).unwrap();
        assert_eq!(data_reads(&f), before, "cached chunks fetched again");
    }

    /// Issue 31, item 12: content of another length than the node's size is not served,
    /// whether in blobs or inline.
    #[test]
    fn content_of_another_length_than_the_size_is_refused() {
        for len in [100, 300 << 10] {
            let mut f = repo_with_file(len);
            f.node.size -= 1;
            let mut reader = Reader::new(f.repo.clone()).unwrap();
            let err = reader.read(1, &f.node, 0, 4096).unwrap_err();
            assert!(matches!(err, Error::SizeMismatch { .. }), "{len}: {err}");
            assert!(err.to_string().contains("for a size of"), "{err}");
        }
    }

    #[test]
    fn a_small_file_is_read_from_its_node_without_a_request() {
        let f = repo_with_file(100);
        assert!(f.node.data.is_some() && f.node.content.is_empty());
        let mut reader = Reader::new(f.repo.clone()).unwrap();
        let before = data_reads(&f);
        assert_eq!(reader.read(1, &f.node, 0, 4096).unwrap(), f.content);
        assert_eq!(reader.read(1, &f.node, 90, 20).unwrap(), f.content[90..]);
        assert!(reader.read(1, &f.node, 100, 20).unwrap().is_empty());
        assert!(reader.read(1, &f.node, u64::MAX, 20).unwrap().is_empty());
        assert_eq!(data_reads(&f), before);
    }

    #[test]
    fn a_failed_fetch_fails_the_read_that_needs_it_and_a_later_read_recovers() {
        let f = repo_with_file(2 << 20);
        let mut reader = Reader::new(f.repo.clone()).unwrap();
        // Every data read fails: the background fetch and the reader's own retry.
        f.faults
            .inject_from(Op::Read, Some(FileKind::Data), 1, Fault::Fail);
        let err = reader.read(1, &f.node, 0, 4096).unwrap_err();
        assert!(!err.to_string().is_empty());
        f.faults.heal();
        let got = reader.read(1, &f.node, 0, 4096).unwrap();
        assert_eq!(got, f.content[..4096]);
    }

    #[test]
    fn reads_anywhere_return_the_files_bytes() {
        let Fixture {
            repo,
            node,
            content,
            ..
        } = repo_with_file(3 << 20);
        assert!(node.content.len() > 10, "{} chunks", node.content.len());
        let mut reader = Reader::new(repo).unwrap();
        reader.ahead = 256 << 10;
        let len = content.len() as u64;
        // Sequential, then a jump back, a jump ahead, reads across chunk ends and past the end.
        let mut reads: Vec<(u64, usize)> = (0..len)
            .step_by(128 << 10)
            .map(|o| (o, 128 << 10))
            .collect();
        reads.extend([
            (5, 1),
            (len - 3, 100),
            (len, 10),
            (1 << 20, 700_000),
            (0, 4 << 20),
        ]);
        for (offset, size) in reads {
            let got = reader.read(1, &node, offset, size).unwrap();
            let from = (offset as usize).min(content.len());
            let to = (from + size).min(content.len());
            assert_eq!(got, content[from..to], "read of {size} at {offset}");
        }
    }
}
