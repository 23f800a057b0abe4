//! The maintenance lock: one prune at a time. Backups never take it.
//!
//! Object stores offer no atomic create-if-absent everywhere (Garage ignores
//! `If-None-Match`), so a lock is taken by write-then-list: write our lock, list all locks,
//! and back off if any other live one exists. Two racing writers both see each other and both
//! back off, which is safe. A lock names its owner and is refreshed while held; one not
//! refreshed within [`LOCK_EXPIRY`] is stale: it is reported with owner and age, and
//! `strata unlock` removes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::util;

/// A lock not refreshed for this long belongs to a process that is gone.
pub const LOCK_EXPIRY: Duration = Duration::from_secs(30 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A lock file's content (format-spec §10).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockFile {
    /// Lock format version (1).
    pub version: u32,
    /// What holds it: "backup", "prune", ….
    pub operation: String,
    /// The holder's host.
    pub host: String,
    /// The holder's user.
    pub user: String,
    /// The holder's process id.
    pub pid: u32,
    /// When the lock was first taken, RFC 3339.
    pub created: String,
    /// When it was last refreshed, RFC 3339.
    pub refreshed: String,
}

impl LockFile {
    /// Time since the last refresh.
    pub fn age(&self) -> chrono::Duration {
        DateTime::parse_from_rfc3339(&self.refreshed)
            .map(|t| crate::timespec::now() - t)
            .unwrap_or(chrono::Duration::MAX)
    }

    /// Not refreshed for [`LOCK_EXPIRY`], or refreshed further ahead of this clock than
    /// that (hostile pass 10: a lock dated years ahead was never stale).
    pub fn is_stale(&self) -> bool {
        let expiry = chrono::Duration::from_std(LOCK_EXPIRY).unwrap();
        let age = self.age();
        age > expiry || age < -expiry
    }

    /// The lock was taken on this host by a process that no longer exists (killed, or the
    /// machine rebooted): nobody will refresh or release it.
    pub fn owner_gone(&self) -> bool {
        self.host == crate::util::hostname()
            && i32::try_from(self.pid).is_ok_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
            })
    }

    /// One line for messages: who, what, since when, and whether it looks stale.
    pub fn describe(&self) -> String {
        let age = self.age();
        format!(
            "{} by {}@{} (pid {}) since {}, refreshed {} min ago{}",
            self.operation,
            self.user,
            self.host,
            self.pid,
            self.created,
            age.num_minutes(),
            if self.owner_gone() {
                " — its process is gone"
            } else if self.is_stale() {
                " — stale"
            } else {
                ""
            }
        )
    }
}

/// All locks in the repository with their names (unreadable ones are reported as such).
pub fn list(repo: &Repository) -> Result<Vec<(String, Result<LockFile>)>> {
    let mut out = Vec::new();
    for f in repo.files().list(FileKind::Lock)? {
        let lock = repo.load_file::<LockFile>(FileKind::Lock, &f.name);
        out.push((f.name, lock));
    }
    Ok(out)
}

/// Held while the guard lives; refreshed in the background.
pub struct LockGuard<'r> {
    repo: &'r Repository,
    name: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

fn now() -> DateTime<FixedOffset> {
    crate::timespec::now()
}

/// Takes an exclusive lock for `operation`; fails with [`crate::Error::Locked`] naming
/// the holders when another process holds one. Released when the guard drops.
pub fn acquire<'r>(repo: &'r Repository, operation: &str) -> Result<LockGuard<'r>> {
    let t = now().to_rfc3339();
    let mine = LockFile {
        version: 1,
        operation: operation.into(),
        host: util::hostname(),
        user: util::username(),
        pid: std::process::id(),
        created: t.clone(),
        refreshed: t,
    };
    let store = repo.file_store();
    let name = store.save(FileKind::Lock, &mine)?;
    // Write, then list: whoever else wrote before our listing is seen.
    let mut stale = false;
    let others: Vec<String> = list(repo)?
        .into_iter()
        .filter(|(n, _)| *n != name)
        .map(|(n, l)| match l {
            Ok(l) => {
                stale |= l.is_stale() || l.owner_gone();
                l.describe()
            }
            Err(e) => {
                stale = true;
                format!("unreadable lock {n}: {e}")
            }
        })
        .collect();
    if !others.is_empty() {
        repo.delete_file(FileKind::Lock, &name)?;
        return Err(Error::Locked {
            holders: others.join("; "),
            stale,
        });
    }
    let name = Arc::new(Mutex::new(name));
    let stop = Arc::new(AtomicBool::new(false));
    let (n2, s2) = (name.clone(), stop.clone());
    let refresher = std::thread::spawn(move || {
        let mut waited = Duration::ZERO;
        while !s2.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            waited += Duration::from_millis(200);
            if waited < REFRESH_EVERY {
                continue;
            }
            waited = Duration::ZERO;
            let mut lock = mine.clone();
            lock.refreshed = now().to_rfc3339();
            // The new lock is in place before the old one goes.
            if let Ok(new) = store.save(FileKind::Lock, &lock) {
                let old = std::mem::replace(&mut *n2.lock().unwrap(), new);
                let _ = store.delete(FileKind::Lock, &old);
            }
        }
    });
    Ok(LockGuard {
        repo,
        name,
        stop,
        refresher: Some(refresher),
    })
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let name = self.name.lock().unwrap().clone();
        let _ = self.repo.delete_file(FileKind::Lock, &name);
    }
}

/// Removes stale locks and those whose process on this host is gone, or every lock with
/// `all`; returns descriptions of what went.
pub fn unlock(repo: &Repository, all: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, lock) in list(repo)? {
        let (stale, what) = match &lock {
            Ok(l) => (l.is_stale() || l.owner_gone(), l.describe()),
            Err(e) => (true, format!("unreadable lock {name}: {e}")),
        };
        if all || stale {
            repo.delete_file(FileKind::Lock, &name)?;
            removed.push(what);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile pass 10: a lock refreshed years ahead of this clock was never stale, and
    /// prune stayed locked out until `unlock --all`.
    #[test]
    fn a_lock_far_from_now_either_way_is_stale() {
        let at = |offset: chrono::Duration| LockFile {
            version: 1,
            operation: "prune".into(),
            host: "h".into(),
            user: "u".into(),
            pid: 1,
            created: now().to_rfc3339(),
            refreshed: (now() + offset).to_rfc3339(),
        };
        let expiry = chrono::Duration::from_std(LOCK_EXPIRY).unwrap();
        assert!(!at(chrono::Duration::zero()).is_stale());
        assert!(at(-expiry * 2).is_stale());
        assert!(at(chrono::Duration::days(365 * 10)).is_stale());
        assert!(
            !at(expiry / 2).is_stale(),
            "a clock a little behind the writer's"
        );
    }
}
