//! What a drill killed outright (SIGKILL, a power cut) left: its decrypted copy in a
//! `.strata-drill-<pid>-*` directory. A drill locks its directory (`flock`) while it lives,
//! so the next drill on that disk can tell a dead one's copy from a live one's and remove it.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{self as rfs, AtFlags, FlockOperation, Mode, OFlags};

use crate::error::{Error, Result};
use crate::progress::Progress;

pub(super) const PREFIX: &str = ".strata-drill-";

/// A directory younger than this may be one a drill has made and not locked yet.
const GRACE: Duration = Duration::from_secs(60);

/// Locks this drill's directory `dir` for as long as the returned file is open.
pub(super) fn lock(dir: &Path) -> Result<std::fs::File> {
    let file = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    rfs::flock(&file, FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| Error::io(dir, e.into()))?;
    Ok(file)
}

/// Removes from `scratch` the copies drills that were killed left: directories named as a
/// drill names them whose process is gone, this user's, of mode 0700 (as made), not locked
/// and older than [`GRACE`]; each removed one is named in a warning, and so is one too
/// young to judge. Symlinks are never followed: everything goes through descriptors.
pub(super) fn remove_abandoned(scratch: &Path, progress: &dyn Progress) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(parent) = rfs::open(scratch, flags, Mode::empty()) else {
        return;
    };
    let Ok(entries) = rfs::Dir::read_from(&parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = pid_of(name) else { continue };
        if pid == std::process::id() || running(pid) {
            continue;
        }
        let path = scratch.join(name.to_string_lossy().as_ref());
        let (path, copy) = (
            path.display(),
            "the decrypted copy of a drill that was killed",
        );
        match remove_if_abandoned(&parent, name) {
            Ok(Leftover::Removed) => progress.warning(&format!("removed {path}, {copy}")),
            Ok(Leftover::Young) => progress.warning(&format!(
                "{path} looks like {copy} (its process {pid} is gone); the next drill removes \
                 it once it is a minute old"
            )),
            Ok(Leftover::NotOurs) => {}
            Err(e) => progress.warning(&format!("cannot remove {path}, {copy}: {e}")),
        }
    }
}

/// What became of a directory that looked left behind.
enum Leftover {
    Removed,
    /// Perhaps a live drill's that has not locked it yet.
    Young,
    /// Another user's, another mode, a live drill's (locked), or not a directory.
    NotOurs,
}

/// The pid in a drill directory's name, `.strata-drill-<pid>-<random>`.
fn pid_of(name: &CStr) -> Option<u32> {
    let rest = name.to_str().ok()?.strip_prefix(PREFIX)?;
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

/// Removes `name` in `parent` if it is an abandoned drill directory.
fn remove_if_abandoned(parent: &OwnedFd, name: &CStr) -> std::io::Result<Leftover> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rfs::openat(parent, name, flags | OFlags::NONBLOCK, Mode::empty()) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => return Ok(Leftover::NotOurs),
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&dir)?;
    let ours = st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o7777 == 0o700;
    // Held for the removal: a second drill cleaning up at once skips it.
    if !ours || rfs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(Leftover::NotOurs);
    }
    let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    if modified.elapsed().map_or(true, |age| age < GRACE) {
        return Ok(Leftover::Young);
    }
    empty(&dir)?;
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(Leftover::Removed)
}

/// Removes everything below `dir` through descriptors, making each directory its owner's to
/// empty first (a snapshot's 0555 directory restored as it was).
fn empty(dir: &OwnedFd) -> std::io::Result<()> {
    let _ = rfs::fchmod(dir, Mode::from_raw_mode(0o700));
    let names: Vec<CString> = rfs::Dir::read_from(dir)?
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        match open_subdir(dir, &name) {
            Ok(sub) => {
                empty(&sub)?;
                rfs::unlinkat(dir, &name, AtFlags::REMOVEDIR)?;
            }
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                rfs::unlinkat(dir, &name, AtFlags::empty())?
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
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags | OFlags::NONBLOCK, Mode::empty()) {
        Err(rustix::io::Errno::ACCESS) => {
            let path = rfs::openat(dir, name, OFlags::PATH | flags, Mode::empty())?;
            // The descriptor's own inode, whatever its name meanwhile: no link is followed.
            let fd = std::os::fd::AsRawFd::as_raw_fd(&path);
            rfs::chmod(format!("/proc/self/fd/{fd}"), Mode::from_raw_mode(0o700))?;
            rfs::openat(dir, name, flags | OFlags::NONBLOCK, Mode::empty())
        }
        opened => opened,
    }
}
