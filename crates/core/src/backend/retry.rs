//! Retries as a layer: one policy for every store, instead of each backend its own.
//!
//! A store's client may retry a request itself (the S3 SDK does, until response headers
//! arrive). What surfaces here as [transient](crate::Error::is_transient) — a connection
//! cut while a body streamed, an interrupted call — is tried again with backoff. A
//! time-out is not: the client below waited and retried already, and retrying its retries
//! made a hung endpoint cost 36 waits. Every operation retried is idempotent: reads and listings, and writes and
//! deletes of content-addressed names (writing the same bytes again is harmless). The
//! capabilities are forwarded as they are, without retries.

use std::time::Duration;

use super::{Backend, BackendRef, Capabilities, FileInfo, FileKind, WriteOptions};
use crate::error::Result;

/// Attempts in all, and the first pause between them (doubling).
const ATTEMPTS: u32 = 6;
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// A backend whose transient failures are retried.
pub struct Retrying {
    inner: BackendRef,
    attempts: u32,
    first_pause: Duration,
}

impl Retrying {
    /// Wraps `inner` with the default policy.
    pub fn new(inner: BackendRef) -> Self {
        Self::with_policy(inner, ATTEMPTS, FIRST_PAUSE)
    }

    /// Wraps `inner`: up to `attempts` in all, pausing `first_pause`, then twice that, ….
    pub fn with_policy(inner: BackendRef, attempts: u32, first_pause: Duration) -> Self {
        Retrying {
            inner,
            attempts: attempts.max(1),
            first_pause,
        }
    }

    /// The pause after failed attempt `attempt` (1-based): the first pause, doubling.
    fn pause(&self, attempt: u32) -> Duration {
        self.first_pause
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
    }

    fn retry<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            match op() {
                Err(e) if attempt < self.attempts && e.is_transient() => {
                    std::thread::sleep(self.pause(attempt));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

impl Backend for Retrying {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.retry(|| self.inner.create())
    }
    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.retry(|| self.inner.list(kind))
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.retry(|| self.inner.read(kind, name))
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.retry(|| self.inner.read_range(kind, name, offset, len))
    }
    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        self.retry(|| self.inner.put(kind, name, data, how))
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.retry(|| self.inner.delete(kind, name))
    }
    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        self.retry(|| self.inner.delete_many(kind, names))
    }
    fn capabilities(&self) -> Capabilities<'_> {
        self.inner.capabilities()
    }
    fn exists(&self) -> Result<bool> {
        self.retry(|| self.inner.exists())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use super::*;
    use crate::backend::faulty::{Fault, Faulty, Op};
    use crate::backend::MemBackend;
    use crate::Error;

    fn cut() -> Error {
        Error::Backend {
            object: "x".into(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "cut"),
        }
    }

    #[test]
    fn transient_failures_are_retried_and_others_are_not() {
        let calls = std::cell::Cell::new(0);
        let r = Retrying::with_policy(Arc::new(MemBackend::new()), 3, Duration::ZERO);
        let out = r.retry(|| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(cut())
            } else {
                Ok(7)
            }
        });
        assert_eq!((out.unwrap(), calls.get()), (7, 3));

        calls.set(0);
        let out: Result<()> = r.retry(|| {
            calls.set(calls.get() + 1);
            Err(cut())
        });
        assert!(out.unwrap_err().is_transient());
        assert_eq!(calls.get(), 3, "gives up after its attempts");

        calls.set(0);
        let out: Result<()> = r.retry(|| {
            calls.set(calls.get() + 1);
            Err(Error::no_file(FileKind::Data, "ab"))
        });
        assert!(out.is_err());
        assert_eq!(calls.get(), 1, "a missing file is not tried again");
    }

    #[test]
    fn pauses_double_from_the_first() {
        let r = Retrying::new(Arc::new(MemBackend::new()));
        let pauses: Vec<u128> = (1..=6).map(|a| r.pause(a).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200]);
    }

    #[test]
    fn every_operation_reaches_the_backend_below() {
        let mem: BackendRef = Arc::new(MemBackend::new());
        let r = Retrying::new(mem.clone());
        assert_eq!(r.location(), "memory");
        r.create().unwrap();
        assert!(!r.exists().unwrap());
        r.write(FileKind::Config, "config", b"c").unwrap();
        assert!(r.exists().unwrap());
        r.put(
            FileKind::Data,
            "ab01",
            b"0123456789",
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(mem.read(FileKind::Data, "ab01").unwrap(), b"0123456789");
        assert_eq!(r.read(FileKind::Data, "ab01").unwrap(), b"0123456789");
        assert_eq!(r.read_range(FileKind::Data, "ab01", 2, 3).unwrap(), b"234");
        let listed = r.list(FileKind::Data).unwrap();
        assert_eq!((listed.len(), listed[0].size), (1, 10));
        r.delete(FileKind::Data, "ab01").unwrap();
        assert!(mem.list(FileKind::Data).unwrap().is_empty());
        for name in ["i1", "i2", "i3"] {
            mem.write(FileKind::Index, name, b"x").unwrap();
        }
        r.delete_many(FileKind::Index, &["i1".into(), "i3".into()])
            .unwrap();
        let left = mem.list(FileKind::Index).unwrap();
        assert_eq!((left.len(), left[0].name.as_str()), (1, "i2"));
        let (caps, below) = (r.capabilities(), mem.capabilities());
        assert_eq!(caps.upload_concurrency, below.upload_concurrency);
        assert_eq!(caps.read_concurrency, below.read_concurrency);
    }

    #[test]
    fn a_read_cut_off_once_arrives_whole() {
        let mem: BackendRef = Arc::new(MemBackend::new());
        mem.write(FileKind::Data, "ab01", b"pack bytes").unwrap();
        let faulty = Arc::new(Faulty::new(mem));
        faulty.inject(Op::Read, Some(FileKind::Data), 1, Fault::CutAfter(3));
        let r = Retrying::with_policy(faulty.clone(), 3, Duration::ZERO);
        assert_eq!(r.read(FileKind::Data, "ab01").unwrap(), b"pack bytes");
        assert_eq!(faulty.count(Op::Read, None), 2);
    }
}
