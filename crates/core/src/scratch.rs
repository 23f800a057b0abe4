//! Private scratch directories that hold decrypted data for a while (a drill's restored
//! copy, a `pg restore`'s staging), and the sweep of those a killed run left.
//!
//! A run names its directory `<prefix><pid>-<random>`, makes it 0700, locks it (`flock`)
//! while it lives and writes a marker file into it holding that name. The sweep removes
//! only what provably is such a leftover: this user's real directory of mode 0700, whose
//! process is gone, not locked, a minute old, holding the marker with its own name. Only
//! the run could write that marker (the directory is the user's, 0700), so a directory
//! that another user renamed to such a name (one of the user's they cannot delete) is left
//! alone. Everything goes through descriptors; no symlink is followed.

use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rustix::fs::{self as rfs, AtFlags, FlockOperation, Mode, OFlags};

use crate::error::{Error, Result};
use crate::progress::Progress;

/// The marker file a run writes into its directory: the directory's name and a newline.
pub const MARKER: &str = ".strata-scratch";

/// A directory younger than this may be one a run has made and not marked yet.
const GRACE: Duration = Duration::from_secs(60);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK);

/// A run's scratch directory, locked and marked; removed (content first, through its
/// descriptor) by [`Scratch::remove`] or when dropped.
pub struct Scratch {
    parent: OwnedFd,
    name: CString,
    /// The directory, locked while it is open.
    dir: OwnedFd,
    path: PathBuf,
    removed: bool,
}

impl Scratch {
    /// Makes `<prefix><pid>-<random>` in `parent`: 0700, locked, marked.
    pub fn new(parent: &Path, prefix: &str) -> Result<Self> {
        let io = |e: rustix::io::Errno| Error::io(parent, e.into());
        let parent_fd =
            rfs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).map_err(io)?;
        let random: u64 = rand::thread_rng().gen();
        let name = format!("{prefix}{}-{random:016x}", std::process::id());
        let path = parent.join(&name);
        let name = CString::new(name).map_err(|e| Error::io(&path, e.into()))?;
        let io = |e: rustix::io::Errno| Error::io(&path, e.into());
        rfs::mkdirat(&parent_fd, &name, Mode::from_raw_mode(0o700)).map_err(io)?;
        let mut scratch = Scratch {
            dir: rfs::openat(&parent_fd, &name, DIR_FLAGS, Mode::empty()).map_err(io)?,
            parent: parent_fd,
            name,
            path,
            removed: false,
        };
        scratch.mark().map_err(|e| Error::io(&scratch.path, e))?;
        Ok(scratch)
    }

    /// Locks the directory, makes it 0700 whatever the umask and writes the marker.
    fn mark(&mut self) -> std::io::Result<()> {
        rfs::flock(&self.dir, FlockOperation::NonBlockingLockExclusive)?;
        rfs::fchmod(&self.dir, Mode::from_raw_mode(0o700))?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let marker = rfs::openat(
            &self.dir,
            MARKER,
            flags | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        let mut marker = std::fs::File::from(marker);
        marker.write_all(self.name.as_bytes())?;
        marker.write_all(b"\n")
    }

    /// The directory's path as made.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error naming where the directory is now if its name no longer leads to it
    /// (moved or replaced by whoever may write its parent).
    pub fn in_place(&self) -> std::result::Result<(), String> {
        if same_inode(&self.parent, &self.name, &self.dir) {
            return Ok(());
        }
        let now = rfs::readlink(
            format!("/proc/self/fd/{}", self.dir.as_raw_fd()),
            Vec::new(),
        )
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "somewhere unknown".into());
        Err(format!(
            "{} was moved or replaced while in use (by whoever may write {}): the directory \
             made is now at {now}",
            self.path.display(),
            self.path.parent().unwrap_or(Path::new("/")).display()
        ))
    }

    /// Removes the directory's content through its descriptor (wherever the directory is
    /// now), then its name if that still leads to it. An error says what is left where.
    pub fn remove(mut self) -> std::result::Result<(), String> {
        self.removed = true;
        // Twice: a verify's child may still be creating files as the first pass ends.
        let emptied = empty(&self.dir).or_else(|_| empty(&self.dir));
        // Removed already (by a signal's handler, at the same time): done.
        let gone = || rfs::fstat(&self.dir).is_ok_and(|st| st.st_nlink == 0);
        let placed = self.in_place();
        match (emptied, placed) {
            (Ok(()), _) if gone() => Ok(()),
            (Ok(()), Ok(())) => match rfs::unlinkat(&self.parent, &self.name, AtFlags::REMOVEDIR) {
                Err(rustix::io::Errno::NOENT) if gone() => Ok(()),
                r => r.map_err(|e| format!("{} could not be removed: {e}", self.path.display())),
            },
            (Ok(()), Err(moved)) => Err(format!("{moved}; its content was removed")),
            (Err(e), Ok(())) => Err(format!(
                "{} could not be removed: {e}; the decrypted data in it is left",
                self.path.display()
            )),
            (Err(e), Err(moved)) => Err(format!(
                "{moved}; its content could not be removed ({e}): the decrypted data in it \
                 is left"
            )),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            let _ = empty(&self.dir);
            if same_inode(&self.parent, &self.name, &self.dir) {
                let _ = rfs::unlinkat(&self.parent, &self.name, AtFlags::REMOVEDIR);
            }
        }
    }
}

/// Whether `name` in `parent` is (still) the directory `dir`, not following a link.
fn same_inode(parent: &OwnedFd, name: &CStr, dir: &OwnedFd) -> bool {
    let (Ok(there), Ok(held)) = (
        rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW),
        rfs::fstat(dir),
    ) else {
        return false;
    };
    (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)
}

/// Removes from `parent` the directories named `<prefix><pid>-…` that killed runs left
/// (see the module's notes), except `keep` (an operator may name a target so); each
/// removed one is named in a warning as `what`, and so is one too young to judge, or
/// one without the marker (left alone).
pub fn remove_abandoned(
    parent: &Path,
    prefix: &str,
    keep: Option<&OsStr>,
    what: &str,
    progress: &dyn Progress,
) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(parent_fd) = rfs::open(parent, flags, Mode::empty()) else {
        return;
    };
    let Ok(entries) = rfs::Dir::read_from(&parent_fd) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if keep.is_some_and(|k| k.as_bytes() == name.to_bytes()) {
            continue;
        }
        let Some(pid) = pid_of(name, prefix) else {
            continue;
        };
        if pid == std::process::id() || running(pid) {
            continue;
        }
        let path = parent.join(OsStr::from_bytes(name.to_bytes()));
        let path = path.display();
        match remove_if_abandoned(&parent_fd, name) {
            Ok(Leftover::Removed) => progress.warning(&format!("removed {path}, {what}")),
            Ok(Leftover::Young) => progress.warning(&format!(
                "{path} looks like {what} (its process {pid} is gone); the next run removes \
                 it once it is a minute old"
            )),
            Ok(Leftover::Unmarked) => progress.warning(&format!(
                "{path} is named like {what} but holds no marker of one: left alone (remove \
                 it yourself if it is one)"
            )),
            Ok(Leftover::NotOurs) => {}
            Err(e) => progress.warning(&format!("cannot remove {path}, {what}: {e}")),
        }
    }
}

/// Removes `name` in `parent`, a directory of this very process (a run stopped by a
/// signal): only if it is the user's, 0700 and marked; its lock is this process's own.
pub fn remove_own(parent: &Path, name: &OsStr) -> std::io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let parent = rfs::open(parent, flags, Mode::empty())?;
    let name = CString::new(name.as_bytes())?;
    let dir = rfs::openat(&parent, &name, DIR_FLAGS, Mode::empty())?;
    let st = rfs::fstat(&dir)?;
    let ours = st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o7777 == 0o700;
    if !ours || !marked(&dir, &name) {
        return Err(std::io::Error::other("not a scratch directory of this run"));
    }
    empty(&dir)?;
    if same_inode(&parent, &name, &dir) {
        rfs::unlinkat(&parent, &name, AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

/// What became of a directory that looked left behind.
enum Leftover {
    Removed,
    /// Perhaps a live run's that has not marked it yet.
    Young,
    /// The user's, 0700, unlocked, but without the marker a run writes.
    Unmarked,
    /// Another user's, another mode, a live run's (locked), or not a directory.
    NotOurs,
}

/// The pid in a name `<prefix><pid>-<random>`.
fn pid_of(name: &CStr, prefix: &str) -> Option<u32> {
    let rest = name.to_str().ok()?.strip_prefix(prefix)?;
    let (pid, random) = rest.split_once('-')?;
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (digits && !random.is_empty())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Whether process `pid` exists (one of another user's counts: its pid is taken).
fn running(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
    !matches!(alive, Err(nix::errno::Errno::ESRCH))
}

/// Removes `name` in `parent` if it is an abandoned scratch directory.
fn remove_if_abandoned(parent: &OwnedFd, name: &CStr) -> std::io::Result<Leftover> {
    let dir = match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => return Ok(Leftover::NotOurs),
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&dir)?;
    let ours = st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o7777 == 0o700;
    // Held for the removal: a second run cleaning up at once skips it.
    if !ours || rfs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(Leftover::NotOurs);
    }
    let marked = match marker_of(&dir, name) {
        Marker::Whole => true,
        // A run killed before its marker was whole had not restored anything yet.
        Marker::Partial if holds_only_marker(&dir)? => false,
        _ => return Ok(Leftover::Unmarked),
    };
    let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    if modified.elapsed().map_or(true, |age| age < GRACE) {
        return Ok(Leftover::Young);
    }
    if marked {
        empty(&dir)?;
    } else {
        unlink_marker(&dir)?;
    }
    // Emptied through its descriptor; its name is removed only if it still leads to it.
    if same_inode(parent, name, &dir) {
        rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    }
    Ok(Leftover::Removed)
}

/// Whether `dir` holds the marker a run writes: the user's own regular file, one link,
/// holding `name` and a newline.
fn marked(dir: &OwnedFd, name: &CStr) -> bool {
    marker_of(dir, name) == Marker::Whole
}

/// What a directory's marker says of it.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    /// The user's own regular file, one link, holding the directory's name and a newline.
    Whole,
    /// No marker yet, or such a file holding less of that (a run killed while marking).
    Partial,
    /// Anything else.
    Foreign,
}

fn marker_of(dir: &OwnedFd, name: &CStr) -> Marker {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, MARKER, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Marker::Partial,
        Err(_) => return Marker::Foreign,
    };
    let Ok(st) = rfs::fstat(&fd) else {
        return Marker::Foreign;
    };
    let me = nix::unistd::geteuid().as_raw();
    let regular = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile;
    if !regular || st.st_uid != me || st.st_nlink != 1 || st.st_size > 512 {
        return Marker::Foreign;
    }
    let mut text = Vec::new();
    if std::fs::File::from(fd)
        .take(512)
        .read_to_end(&mut text)
        .is_err()
    {
        return Marker::Foreign;
    }
    let whole = [name.to_bytes(), b"\n"].concat();
    if text == whole {
        Marker::Whole
    } else if whole.starts_with(&text) {
        Marker::Partial
    } else {
        Marker::Foreign
    }
}

/// Whether `dir` holds nothing but (perhaps) its marker: a run killed before it wrote
/// anything else, so removing it loses nothing.
fn holds_only_marker(dir: &OwnedFd) -> std::io::Result<bool> {
    let mut entries = rfs::Dir::read_from(dir)?;
    let mut only = true;
    for entry in entries.by_ref() {
        let name = entry?.file_name().to_bytes().to_vec();
        only &= matches!(&name[..], b"." | b"..") || name == MARKER.as_bytes();
    }
    Ok(only)
}

fn unlink_marker(dir: &OwnedFd) -> std::io::Result<()> {
    unlink_unless_gone(dir, MARKER, AtFlags::empty())
}

/// Unlinks `name` in `dir`; one removed meanwhile (a signal's handler empties a scratch
/// directory while the run does) is no error.
fn unlink_unless_gone<P: rustix::path::Arg>(
    dir: &OwnedFd,
    name: P,
    flags: AtFlags,
) -> std::io::Result<()> {
    match rfs::unlinkat(dir, name, flags) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything in a scratch directory through its descriptor, the marker last: a
/// removal that fails halfway can be tried again (the marker still says what it is).
fn empty(dir: &OwnedFd) -> std::io::Result<()> {
    empty_but(dir, Some(MARKER))?;
    unlink_marker(dir)
}

/// Removes everything below `dir` but `keep` through descriptors, making each directory
/// its owner's to empty first (a snapshot's 0555 directory restored as it was).
fn empty_but(dir: &OwnedFd, keep: Option<&str>) -> std::io::Result<()> {
    let _ = rfs::fchmod(dir, Mode::from_raw_mode(0o700));
    let names: Vec<CString> = rfs::Dir::read_from(dir)?
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .filter(|n| keep.is_none_or(|k| n.as_bytes() != k.as_bytes()))
        .collect();
    for name in names {
        match open_subdir(dir, &name) {
            Ok(sub) => {
                empty_but(&sub, None)?;
                unlink_unless_gone(dir, &name, AtFlags::REMOVEDIR)?;
            }
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                unlink_unless_gone(dir, &name, AtFlags::empty())?;
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Opens the directory `name` in `dir` without following a symlink; one its mode keeps
/// from being read (0000) is made readable first, through an `O_PATH` descriptor.
fn open_subdir(dir: &impl AsFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    match rfs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Err(rustix::io::Errno::ACCESS) => {
            let path = rfs::openat(dir, name, OFlags::PATH | DIR_FLAGS, Mode::empty())?;
            // The descriptor's own inode, whatever its name meanwhile: no link is followed.
            let fd = path.as_raw_fd();
            rfs::chmod(format!("/proc/self/fd/{fd}"), Mode::from_raw_mode(0o700))?;
            rfs::openat(dir, name, DIR_FLAGS, Mode::empty())
        }
        opened => opened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory as a killed run (pid 999999999, long gone) left it, an hour old.
    fn left(parent: &Path, marker: Option<&[u8]>, data: bool) -> PathBuf {
        let dir = parent.join("x-999999999-00aa");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(text) = marker {
            std::fs::write(dir.join(MARKER), text).unwrap();
        }
        if data {
            std::fs::write(dir.join("secret"), "plaintext").unwrap();
        }
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        dir
    }

    fn sweep(parent: &Path) {
        remove_abandoned(parent, "x-", None, "a test's", &crate::progress::NoProgress);
    }

    /// A drill's signal handler removes the copy while the drill removes it too (hostile
    /// pass 5: SIGTERM during the removal left 10,000 decrypted files and a failed drill).
    #[test]
    fn a_copy_removed_from_two_sides_at_once_is_removed_and_no_error() {
        for _ in 0..5 {
            let parent = tempfile::tempdir().unwrap();
            let scratch = Scratch::new(parent.path(), "x-").unwrap();
            for d in 0..20 {
                let dir = scratch.path().join(format!("d{d}"));
                std::fs::create_dir(&dir).unwrap();
                for f in 0..100 {
                    std::fs::write(dir.join(format!("f{f}")), "plaintext").unwrap();
                }
            }
            let name = scratch.path().file_name().unwrap().to_owned();
            let handler = std::thread::spawn({
                let parent = parent.path().to_path_buf();
                move || (0..10).any(|_| remove_own(&parent, &name).is_ok())
            });
            let removed = scratch.remove();
            let _ = handler.join().unwrap();
            assert_eq!(removed, Ok(()));
            let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn a_copy_the_handler_removed_first_is_no_error() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(parent.path(), "x-").unwrap();
        std::fs::write(scratch.path().join("f"), "plaintext").unwrap();
        let name = scratch.path().file_name().unwrap().to_owned();
        remove_own(parent.path(), &name).unwrap();
        assert_eq!(scratch.remove(), Ok(()));
    }

    #[test]
    fn a_marked_leftover_is_removed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = left(parent.path(), Some(b"x-999999999-00aa\n"), true);
        sweep(parent.path());
        assert!(!dir.exists());
    }

    #[test]
    fn a_run_killed_while_marking_leaves_nothing_behind() {
        for marker in [None, Some(&b""[..]), Some(&b"x-9999"[..])] {
            let parent = tempfile::tempdir().unwrap();
            let dir = left(parent.path(), marker, false);
            sweep(parent.path());
            assert!(!dir.exists(), "{marker:?}");
        }
    }

    #[test]
    fn an_unmarked_or_foreign_marked_directory_with_content_is_left() {
        for marker in [None, Some(&b"x-9999"[..]), Some(&b"other\n"[..])] {
            let parent = tempfile::tempdir().unwrap();
            let dir = left(parent.path(), marker, true);
            sweep(parent.path());
            assert!(dir.join("secret").exists(), "{marker:?}");
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = left(parent.path(), Some(b"other\n"), false);
        sweep(parent.path());
        assert!(dir.exists(), "a marker naming another directory");
    }
}
