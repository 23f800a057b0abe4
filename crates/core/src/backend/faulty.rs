//! A wrapper around a real backend for tests (as kopia's `blobtesting/faulty` store): it
//! counts every operation and, on cue, makes one fail the way networks and disks do. It
//! never changes what a successful operation does.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use super::{Backend, BackendRef, Capabilities, FileInfo, FileKind, WriteOptions};
use crate::error::{Error, Result};

/// The operations a backend offers that the wrapper tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Listing a kind of file.
    List,
    /// Whole reads and range reads.
    Read,
    /// Writes.
    Write,
    /// Deletes.
    Delete,
}

/// What goes wrong.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The operation fails (a dropped connection, EIO) and has no effect.
    Fail,
    /// A write is stored, then reported failed: the answer was lost on the way.
    FailAfterWrite,
    /// A read returns nothing but fails after `n` bytes arrived, as a cut connection does.
    CutAfter(usize),
    /// The operation waits this long, then goes ahead.
    Delay(Duration),
}

struct Rule {
    op: Op,
    kind: Option<FileKind>,
    /// Which matching operation (1 = the next one) the fault hits; every later one too
    /// when `sticky`.
    nth: u64,
    seen: u64,
    sticky: bool,
    fired: bool,
    fault: Fault,
}

/// A backend that misbehaves on cue, and counts what it is asked; otherwise the real one
/// below.
pub struct Faulty {
    inner: BackendRef,
    rules: Mutex<Vec<Rule>>,
    counts: Mutex<HashMap<(Op, FileKind), u64>>,
}

impl Faulty {
    /// Wraps `inner`, with no fault armed.
    pub fn new(inner: BackendRef) -> Self {
        Faulty {
            inner,
            rules: Mutex::default(),
            counts: Mutex::default(),
        }
    }

    /// Operations `op` on files of `kind` so far (of any kind when `None`), failed ones
    /// included.
    pub fn count(&self, op: Op, kind: Option<FileKind>) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .filter(|((o, k), _)| *o == op && kind.is_none_or(|kind| kind == *k))
            .map(|(_, n)| n)
            .sum()
    }

    /// `fault` hits the `nth` (1-based, counted from now) operation `op` on files of
    /// `kind` (of any kind when `None`).
    pub fn inject(&self, op: Op, kind: Option<FileKind>, nth: u64, fault: Fault) {
        self.add(op, kind, nth, fault, false);
    }

    /// As [`Faulty::inject`], and every matching operation after it too (a disk that
    /// stays full, a network that stays down).
    pub fn inject_from(&self, op: Op, kind: Option<FileKind>, nth: u64, fault: Fault) {
        self.add(op, kind, nth, fault, true);
    }

    /// Removes every fault (the network is back).
    pub fn heal(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn add(&self, op: Op, kind: Option<FileKind>, nth: u64, fault: Fault, sticky: bool) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Rule {
                op,
                kind,
                nth: nth.max(1),
                seen: 0,
                sticky,
                fired: false,
                fault,
            });
    }

    /// Faults injected that have not hit any operation yet.
    pub fn armed(&self) -> usize {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.iter().filter(|r| !r.fired).count()
    }

    /// The fault this operation meets, if any. A delay is served here (the operation then
    /// goes ahead), so the operations only tell failures apart.
    fn fault(&self, op: Op, kind: FileKind) -> Option<Fault> {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, kind))
            .or_default() += 1;
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut hit = None;
        for r in rules.iter_mut() {
            if r.op != op || r.kind.is_some_and(|k| k != kind) || (r.fired && !r.sticky) {
                continue;
            }
            r.seen += 1;
            if r.seen == r.nth || (r.sticky && r.seen > r.nth) {
                r.fired = true;
                hit.get_or_insert(r.fault.clone());
            }
        }
        drop(rules);
        if let Some(Fault::Delay(d)) = hit {
            std::thread::sleep(d);
            return None;
        }
        hit
    }

    fn failure(kind: FileKind, name: &str, what: &str, e: io::ErrorKind) -> Error {
        Error::Backend {
            object: format!("{kind} {name}"),
            source: io::Error::new(e, format!("injected fault: {what}")),
        }
    }

    /// Runs `read` unless a fault says otherwise.
    fn guard_read(
        &self,
        kind: FileKind,
        name: &str,
        read: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        match self.fault(Op::Read, kind) {
            None => read(),
            Some(Fault::CutAfter(n)) => {
                let got = read()?.len().min(n);
                Err(Self::failure(
                    kind,
                    name,
                    &format!("connection cut after {got} bytes"),
                    io::ErrorKind::UnexpectedEof,
                ))
            }
            Some(_) => Err(Self::failure(
                kind,
                name,
                "read failed",
                io::ErrorKind::Other,
            )),
        }
    }
}

impl Backend for Faulty {
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
        match self.fault(Op::List, kind) {
            None => self.inner.list(kind),
            Some(_) => Err(Self::failure(
                kind,
                "",
                "listing failed",
                io::ErrorKind::Other,
            )),
        }
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.guard_read(kind, name, || self.inner.read(kind, name))
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.guard_read(kind, name, || {
            self.inner.read_range(kind, name, offset, len)
        })
    }
    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        match self.fault(Op::Write, kind) {
            None => self.inner.put(kind, name, data, how),
            Some(Fault::FailAfterWrite) => {
                self.inner.put(kind, name, data, how)?;
                Err(Self::failure(
                    kind,
                    name,
                    "stored, but the answer was lost",
                    io::ErrorKind::ConnectionReset,
                ))
            }
            Some(_) => Err(Self::failure(
                kind,
                name,
                "write failed",
                io::ErrorKind::Other,
            )),
        }
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        match self.fault(Op::Delete, kind) {
            None => self.inner.delete(kind, name),
            Some(_) => Err(Self::failure(
                kind,
                name,
                "delete failed",
                io::ErrorKind::Other,
            )),
        }
    }
    /// The store's own: faults hit files, not the extras.
    fn capabilities(&self) -> Capabilities<'_> {
        self.inner.capabilities()
    }
}
