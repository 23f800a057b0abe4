//! The restore target: every write, link, chmod and chown stays beneath it.
//!
//! A target may already hold symlinks (a previous restore of a snapshot where `x -> /etc`,
//! or someone else's doing). Paths are therefore never handed to the kernel whole: every
//! open resolves relative to the target directory's descriptor with `openat2`'s
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so no symlink on the way is followed and nothing
//! outside the target is reached; metadata is applied through descriptors of the restored
//! object itself, or `*at` calls that do not follow a final symlink. An entry of the wrong
//! kind in the way (a symlink where a directory goes) is replaced, never followed.

use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};

use crate::repo::tree::{Node, NodeKind};

pub struct Target {
    dir: OwnedFd,
    path: PathBuf,
    /// The directories entries may be created in (the target and those [`Target::make_dir`]
    /// made or checked), by path beneath the target, as they were then: every entry goes
    /// into a directory opened again only if it is still that one (hostile pass 3, item 1).
    dirs: RwLock<HashMap<PathBuf, Checked>>,
    /// What this restore made, for a later one should it be killed; `None` where the
    /// target's own directory cannot take it (a read-only one, another user's).
    journal: Option<Journal>,
    /// Staged names are [`STAGED`], this and 64 random bits, in hex.
    id: u64,
    /// Directories a killed restore into this target made and did not finish: this one
    /// finishes those it meets again.
    /// Each with the path it was made at: one moved since to another name is not it
    /// (hostile pass 7: another user renamed root's private directory onto the name of
    /// theirs, and root's re-run gave it their owner and mode).
    inherited: HashMap<Ident, PathBuf>,
    /// A killed restore's staged files removed.
    swept: usize,
}

/// A regular file just created under a staged name, open for writing, and its directory.
pub struct Staged {
    pub file: File,
    pub name: OsString,
    pub dir: OwnedFd,
}

/// The name a regular file is written under, beside its own, until it is complete.
pub const STAGED: &str = ".strata-restore-";

/// A restore's journal: `.strata-restore-ID.lock` in the target's own directory, this
/// user's (0600), `flock`ed while the restore runs, removed when it ends. It lists, each
/// entry ended by a NUL, the restore's pid (`P`), each directory it made (`D`, device,
/// inode, birth time and path) and each directory it staged files in (`S` and path). The staged names
/// carry its ID. So a later restore into the same target knows a killed one's leftovers for
/// its own: a journal it can lock is a killed restore's, whose staged files (in the
/// directories listed, with its ID) it removes and whose directories (the same inode,
/// see [`refinish`]) it finishes, those its earlier batches finished too; a journal it cannot lock is a running
/// restore's, and it stops (hostile pass 3, items 4, 6, 7 and 12). Nothing else is swept.
struct Journal {
    file: File,
    name: OsString,
    staged_in: Mutex<HashSet<PathBuf>>,
}

/// Largest journal read: a killed restore's past it is read that far.
const MAX_JOURNAL: u64 = 256 << 20;

fn journal_name(id: u64) -> OsString {
    OsString::from(format!("{STAGED}{id:016x}.lock"))
}

/// The ID of a journal's name.
fn journal_id(name: &[u8]) -> Option<u64> {
    let hex = name
        .strip_prefix(STAGED.as_bytes())?
        .strip_suffix(b".lock")?;
    let hex = std::str::from_utf8(hex).ok().filter(|h| h.len() == 16)?;
    u64::from_str_radix(hex, 16).ok()
}

impl Journal {
    /// A new journal in `dir`, locked, and its ID.
    fn create(dir: &OwnedFd, restoring: &str) -> io::Result<(Journal, u64)> {
        let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::EXCL;
        loop {
            let id = rand::random::<u64>();
            let name = journal_name(id);
            let fd = match rfs::openat(
                dir,
                name.as_os_str(),
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Err(rustix::io::Errno::EXIST) => continue,
                r => r.map_err(to_io)?,
            };
            rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive).map_err(to_io)?;
            let journal = Journal {
                file: File::from(fd),
                name,
                staged_in: Mutex::default(),
            };
            journal.record(format!("P{}", std::process::id()).as_bytes())?;
            journal.record(format!("T{restoring}").as_bytes())?;
            return Ok((journal, id));
        }
    }

    /// Appends one entry, in one write.
    fn record(&self, entry: &[u8]) -> io::Result<()> {
        let mut line = entry.to_vec();
        line.push(0);
        std::io::Write::write_all(&mut &self.file, &line)
    }

    fn made_dir(&self, rel: &Path, id: Ident) -> io::Result<()> {
        let mut entry = format!("D{} {} {} ", id.dev, id.ino, id.born).into_bytes();
        entry.extend_from_slice(rel.as_os_str().as_bytes());
        self.record(&entry)
    }

    fn stages_in(&self, dir: &Path) -> io::Result<()> {
        if !self.staged_in.lock().unwrap().insert(dir.to_path_buf()) {
            return Ok(());
        }
        let mut entry = b"S".to_vec();
        entry.extend_from_slice(dir.as_os_str().as_bytes());
        self.record(&entry)
    }
}

/// A journal of another restore into the same target, locked: it was killed.
struct Killed {
    id: u64,
    name: OsString,
    /// Held until its leftovers are dealt with.
    _lock: OwnedFd,
    entries: Vec<u8>,
}

/// A relative path of a journal's, if it is one that stays beneath the target.
fn journal_path(bytes: &[u8]) -> Option<PathBuf> {
    let p = PathBuf::from(OsStr::from_bytes(bytes));
    let beneath = p.components().all(|c| matches!(c, Component::Normal(_)));
    beneath.then_some(p)
}

/// Whether `entries` begin as a journal does: the restore's pid, then its tree.
fn is_journal(entries: &[u8]) -> bool {
    let mut e = entries.split(|b| *b == 0);
    let pid = e.next().and_then(|p| p.strip_prefix(b"P"));
    let tree = e.next().and_then(|t| t.strip_prefix(b"T"));
    pid.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        && tree.is_some_and(|t| t.iter().all(u8::is_ascii_hexdigit))
}

/// The journals of other restores in the target's directory `dir`: those of restores
/// killed, locked; an error naming a running one.
fn other_journals(dir: &OwnedFd, own: u64, path: &Path) -> io::Result<Vec<Killed>> {
    let me = nix::unistd::geteuid().as_raw();
    let mut killed = Vec::new();
    for entry in rfs::Dir::read_from(dir).map_err(to_io)? {
        let entry = entry.map_err(to_io)?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        let Some(id) = journal_id(name.as_bytes()).filter(|id| *id != own) else {
            continue;
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rfs::openat(dir, name, flags, Mode::empty()) else {
            continue;
        };
        // Only this user's: no one else can make a staged file of this user's.
        let st = rfs::fstat(&fd).map_err(to_io)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_uid != me {
            continue;
        }
        let mut entries = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&File::from(fd.try_clone()?), MAX_JOURNAL),
            &mut entries,
        )?;
        // A file of another kind under a journal's name is no journal: left alone.
        if !is_journal(&entries) {
            continue;
        }
        if rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let pid = entries
                .split(|b| *b == 0)
                .find_map(|e| e.strip_prefix(b"P"));
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another restore into {} is running (pid {}, holding {}): wait for it \
                     to end; two restores into one target would replace each other's files",
                    path.display(),
                    String::from_utf8_lossy(pid.unwrap_or(b"?")),
                    path.join(name).display()
                ),
            ));
        }
        killed.push(Killed {
            id,
            name: name.to_os_string(),
            _lock: fd,
            entries,
        });
    }
    Ok(killed)
}

/// Which inode an entry the restore created is: a name in a directory another user can
/// write may be made to point at another inode at any time (issue 31, item 4). The inode
/// number alone does not tell: one freed comes back at once for the next file made (ext4),
/// so another user who removes a restored file and makes one of theirs gets its number,
/// and a hard link or chown by number went to theirs (hostile pass 6: a setuid root copy
/// of their program). The birth time (statx) tells them apart where the file system keeps
/// one (ext4, XFS, Btrfs, tmpfs); `born` is 0 where it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ident {
    dev: u64,
    ino: u64,
    born: u64,
}

impl Ident {
    /// The inode `fd` is (an `O_PATH` descriptor too).
    pub fn of(fd: impl AsFd) -> io::Result<Self> {
        Self::at(fd, "", AtFlags::EMPTY_PATH)
    }

    /// The inode at `name` in the directory `dir`, not following a symlink.
    fn at(dir: impl AsFd, name: impl rustix::path::Arg, flags: AtFlags) -> io::Result<Self> {
        Ok(Self::of_statx(&statx_at(dir, name, flags)?))
    }

    fn of_statx(x: &rfs::Statx) -> Self {
        use rustix::fs::StatxFlags;
        let born = match x.stx_mask & StatxFlags::BTIME.bits() != 0 {
            true => (x.stx_btime.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(u64::from(x.stx_btime.tv_nsec)),
            false => 0,
        };
        Ident {
            dev: rfs::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
            born,
        }
    }

    #[cfg(test)]
    pub fn for_test(ino: u64) -> Self {
        Ident {
            dev: 1,
            ino,
            born: 0,
        }
    }
}

/// A directory as [`Target::make_dir`] checked it: the same inode, owner and mode, or
/// another user changed it (an inode number freed can come back as another user's
/// directory; the owner and mode tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checked {
    id: Ident,
    uid: u32,
    mode: u32,
}

impl Checked {
    /// The directory `fd`, in one statx.
    fn of(fd: impl AsFd) -> io::Result<Self> {
        let x = statx_at(fd, "", AtFlags::EMPTY_PATH)?;
        Ok(Checked {
            id: Ident::of_statx(&x),
            uid: x.stx_uid,
            mode: u32::from(x.stx_mode) & 0o7777,
        })
    }
}

/// `name` in `dir` (not following a symlink), with its birth time where there is one.
fn statx_at(
    dir: impl AsFd,
    name: impl rustix::path::Arg,
    flags: AtFlags,
) -> io::Result<rfs::Statx> {
    use rustix::fs::{statx, StatxFlags};
    let flags = flags | AtFlags::SYMLINK_NOFOLLOW;
    statx(
        dir,
        name,
        flags,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
    .map_err(to_io)
}

/// The mode of a directory the restore made and has not given the snapshot's metadata yet
/// (it does so last): private, and sticky so that a later restore knows it for one a
/// killed restore left (no one makes a private directory sticky) and finishes it. Any
/// umask that leaves the owner's bits alone keeps it.
pub const UNFINISHED: u32 = 0o1700;

/// How metadata is applied (issue 31, item 3).
#[derive(Clone, Copy, Debug)]
pub struct Apply {
    /// Entries get the snapshot's owners (root, without `--no-owner`).
    pub owners: bool,
    /// Extended attributes are set (without `--no-xattrs`).
    pub xattrs: bool,
}

/// Setuid and setgid.
const SET_ID: u32 = 0o6000;

impl Apply {
    /// The mode to set. Set-id bits only where the snapshot's owner is restored: on a file
    /// the restoring user owns instead they would hand that user's rights to whoever the
    /// snapshot says. A directory's setgid only passes its group on, and stays.
    fn mode(&self, node: &Node) -> u32 {
        match self.owners || node.kind == NodeKind::Dir {
            true => node.mode,
            false => node.mode & !SET_ID,
        }
    }

    /// Whether attribute `name` is set: a file capability is privilege as setuid is, and
    /// follows the same rule.
    fn xattr(&self, name: &[u8]) -> bool {
        self.xattrs && (self.owners || name != b"security.capability")
    }
}

/// The error for an entry that is no longer the one the restore made.
fn replaced(rel: &Path) -> io::Error {
    io::Error::other(format!(
        "{} was replaced during the restore (by another user with write access to its \
         directory?): nothing written to it, no owner or mode set",
        rel.display()
    ))
}

/// The error for a directory that changed after it was checked: nothing goes below it.
fn dir_changed(rel: &Path) -> io::Error {
    io::Error::other(format!(
        "{}: the directory restored there was moved away or changed during the restore (by \
         another user with write access to its parent?): nothing written below it",
        display_rel(rel)
    ))
}

/// The error for a directory the restore made and wrote into, no longer under its name
/// at the end: what it holds is elsewhere, and what holds the name now got nothing.
fn moved_away(rel: &Path) -> io::Error {
    io::Error::other(format!(
        "{} was moved away during the restore (by another user with write access to its \
         parent?): the entries restored into it are no longer at this path, and the \
         directory now there got nothing from the restore, no owner or mode",
        display_rel(rel)
    ))
}

/// `rel` as the snapshot's path, as the restore's other errors name it.
fn display_rel(rel: &Path) -> String {
    Path::new("/").join(rel).display().to_string()
}

/// Refuses an existing directory that would give the entries restored into it to someone
/// the snapshot's directory `node` did not: one owned by another user than this one, root
/// and the snapshot's owner, or that lets group or others in where `node`'s mode does not.
/// Such a directory is refused rather than tightened: it is someone's, and its owner and
/// mode are kept (as with tar's `--no-overwrite-dir`).
fn open_enough(st: &rfs::Stat, node: &Node) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if ![me, 0, node.uid].contains(&st.st_uid) {
        return Err(io::Error::other(format!(
            "the existing directory there is owned by uid {}, not by this user (uid {me}), \
             root or the snapshot's owner (uid {}): nothing restored into it; restore into \
             a new target, or give it to one of them first",
            st.st_uid, node.uid
        )));
    }
    let more = st.st_mode & 0o077 & !node.mode;
    if more != 0 {
        return Err(io::Error::other(format!(
            "the existing directory there (mode {:o}) lets group or others in where the \
             snapshot's (mode {:o}) does not: nothing restored into it; restore into a new \
             target, or `chmod go-{}` it first",
            st.st_mode & 0o7777,
            node.mode & 0o7777,
            rwx(more)
        )));
    }
    Ok(())
}

/// Whether the directory `fd` (stat `st`), which a killed restore of the same snapshot
/// made (its journal names the inode), is this restore's to finish: unfinished still
/// (this user's, [`UNFINISHED`]), or finished by one of the killed restore's earlier
/// batches. Such a one gets its entries rewritten, so its times (and a read-only mode
/// that stops a user's rewrite) must be given again at the end (hostile pass 5, E5/E6):
/// this user's is made [`UNFINISHED`] again, through its descriptor. Root's, given to
/// the snapshot's owner and group, keeps its mode (root writes anyway); re-giving it
/// the snapshot's metadata grants that owner nothing they could not do themselves,
/// should the inode number have come back as a directory of theirs.
fn refinish(fd: &OwnedFd, st: &mut rfs::Stat, node: &Node) -> io::Result<bool> {
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Ok(me == 0 && (st.st_uid, st.st_gid) == (node.uid, node.gid));
    }
    if st.st_mode & 0o7777 != UNFINISHED {
        // An O_PATH descriptor takes no fchmod; its /proc link is the same inode, and
        // unlike a new open it needs no read permission on a directory finished 0311.
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rfs::chmod(link.as_str(), Mode::from_raw_mode(UNFINISHED)).map_err(to_io)?;
        *st = rfs::fstat(fd).map_err(to_io)?;
    }
    Ok(st.st_mode & 0o7777 == UNFINISHED)
}

/// The letters of the group and other permission bits in `bits`.
fn rwx(bits: u32) -> String {
    let bits = bits | bits >> 3;
    [(0o4, 'r'), (0o2, 'w'), (0o1, 'x')]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| c)
        .collect()
}

/// Refuses an entry the restore did not make: one of another kind than `node`'s, or owned
/// by another user (this restore creates every non-directory entry afresh, as itself), so
/// that no owner, mode or set-id bit reaches a file swapped in by another user.
fn made_here(fd: BorrowedFd<'_>, rel: &Path, node: &Node) -> io::Result<()> {
    let st = rfs::fstat(fd).map_err(to_io)?;
    let want = match node.kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::Chardev => FileType::CharacterDevice,
        NodeKind::Blockdev => FileType::BlockDevice,
        NodeKind::Dir | NodeKind::Socket => return Ok(()),
    };
    let mine = st.st_uid == nix::unistd::geteuid().as_raw();
    match FileType::from_raw_mode(st.st_mode) == want && mine {
        true => Ok(()),
        false => Err(replaced(rel)),
    }
}

fn to_io(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Symlinks followed while resolving one path, at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The directory at `path`, created (with `mode`, less the umask) where missing, resolved
/// component by component: see [`Target::open`]. A directory it creates must still be this
/// user's once opened (a swap for another user's directory is refused).
pub fn open_trusted_dir(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    resolve_trusted(path, Some(mode))
}

/// The existing directory at `path`, resolved as a restore target is (a symlink on
/// the way only if this user or root made it), for a file written there (the metrics
/// file, a report) that must not land where another user's link points.
pub fn open_trusted_existing(path: &Path) -> io::Result<OwnedFd> {
    resolve_trusted(path, None)
}

fn resolve_trusted(path: &Path, create: Option<u32>) -> io::Result<OwnedFd> {
    let me = nix::unistd::geteuid().as_raw();
    let absolute = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir()?.join(path),
    };
    let root = || {
        rfs::open(
            "/",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let mut cur = root().map_err(to_io)?;
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = comps(&absolute);
    let mut links = 0;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    while let Some(name) = todo.pop_front() {
        let st = match rfs::statat(&cur, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {
                let Some(mode) = create else {
                    return Err(to_io(rustix::io::Errno::NOENT));
                };
                match rfs::mkdirat(&cur, &name, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(to_io(e)),
                }
                let made = rfs::openat(&cur, &name, dir_flags, Mode::empty()).map_err(to_io)?;
                if rfs::fstat(&made).map_err(to_io)?.st_uid != me {
                    return Err(io::Error::other(format!(
                        "{}: the directory made there was replaced by another user's",
                        absolute.display()
                    )));
                }
                cur = made;
                continue;
            }
            r => r.map_err(to_io)?,
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(to_io(rustix::io::Errno::LOOP));
            }
            if st.st_uid != me && st.st_uid != 0 {
                return Err(io::Error::other(format!(
                    "{}: {} on the way is a symlink owned by uid {}, not by this user (uid \
                     {me}) or root: not followed; give the directory it points at, if you \
                     mean it",
                    absolute.display(),
                    name.to_string_lossy(),
                    st.st_uid
                )));
            }
            let to = rfs::readlinkat(&cur, &name, Vec::new()).map_err(to_io)?;
            let to = PathBuf::from(std::ffi::OsStr::from_bytes(to.as_bytes()));
            if to.is_absolute() {
                cur = root().map_err(to_io)?;
            }
            for c in comps(&to).into_iter().rev() {
                todo.push_front(c);
            }
            continue;
        }
        cur = rfs::openat(&cur, &name, dir_flags, Mode::empty()).map_err(to_io)?;
    }
    Ok(cur)
}

/// `path`'s components to open one by one: names and `..` (`/` and `.` drop out).
fn comps(path: &Path) -> std::collections::VecDeque<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

impl Target {
    /// Creates the target directory if needed and holds it open. The target path itself is
    /// the operator's choice and is resolved as given, one component at a time from `/`
    /// with `O_NOFOLLOW`: a symlink on the way (or at the end, or in a chain) is followed
    /// only if this user or root made it, since one planted by another user (in /tmp, or a
    /// directory of theirs) would take a root restore wherever it points; a directory this
    /// makes is created at most 0755 whatever the umask and opened by the descriptor of its
    /// parent, so nobody can swap it for a link between its creation and its use.
    ///
    /// A restore into a target where another runs stops with an error of kind
    /// `WouldBlock`; a killed one's leftovers are dealt with first (see [`Journal`]).
    #[cfg(test)]
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_checked(path, false, "")
    }

    /// As [`Target::open`] for a directory this run made (a scratch or staging directory):
    /// it must be this user's and 0700, whoever may write its parent.
    #[cfg(test)]
    pub fn open_private(path: &Path) -> io::Result<Self> {
        Self::open_checked(path, true, "")
    }

    /// As [`Target::open`] (or [`Target::open_private`]) for a restore of the snapshot
    /// whose tree is `restoring`: a killed restore's unfinished directories are finished
    /// only by a restore of the same tree. Another snapshot's metadata would open a
    /// directory that holds the killed one's private files (hostile pass 4).
    pub fn open_restoring(path: &Path, private: bool, restoring: &str) -> io::Result<Self> {
        Self::open_checked(path, private, restoring)
    }

    fn open_checked(path: &Path, private: bool, restoring: &str) -> io::Result<Self> {
        let dir = open_trusted_dir(path, 0o755)?;
        let st = rfs::fstat(&dir).map_err(to_io)?;
        if private && (st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o077 != 0) {
            return Err(io::Error::other(format!(
                "{}: not this user's private directory (uid {}, mode {:o}): replaced by \
                 another user's?",
                path.display(),
                st.st_uid,
                st.st_mode & 0o7777
            )));
        }
        // A target root this user cannot write (`--target /` as a user) takes no journal:
        // such a restore can be neither told from a killed one nor finished by another.
        let (journal, id) = match Journal::create(&dir, restoring) {
            Ok((j, id)) => (Some(j), id),
            Err(_) => (None, rand::random()),
        };
        let root = Checked::of(&dir)?;
        let mut target = Target {
            dir,
            path: path.to_path_buf(),
            dirs: RwLock::new(HashMap::from([(PathBuf::new(), root)])),
            journal,
            id,
            inherited: HashMap::new(),
            swept: 0,
        };
        match other_journals(&target.dir, id, path) {
            Ok(killed) => (killed.into_iter()).try_for_each(|k| target.take_over(k, restoring))?,
            Err(e) => {
                target.done();
                return Err(e);
            }
        }
        Ok(target)
    }

    /// Deals with a killed restore's leftovers: its staged files go, its unfinished
    /// directories are this restore's to finish (in its journal too, should it be killed
    /// as well), and then its journal goes.
    fn take_over(&mut self, killed: Killed, restoring: &str) -> io::Result<()> {
        let prefix = format!("{STAGED}{:016x}-", killed.id);
        // Its directories stay private (this user's, 1700) unless this restore is of the
        // same snapshot: one kept that way is an existing directory to the restore.
        let same = format!("T{restoring}").into_bytes();
        let same = killed
            .entries
            .split(|b| *b == 0)
            .any(|e| e == same.as_slice());
        for entry in killed.entries.split(|b| *b == 0) {
            match entry.split_first() {
                Some((b'S', dir)) => {
                    if let Some(dir) = journal_path(dir) {
                        // One gone or unreadable keeps its files (unused names).
                        self.swept += self.sweep(&dir, prefix.as_bytes()).unwrap_or(0);
                    }
                }
                Some((b'D', made)) => {
                    let mut f = made.splitn(4, |b| *b == b' ');
                    let num = |f: Option<&[u8]>| {
                        std::str::from_utf8(f?)
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok())
                    };
                    let (dev, ino, born) = (num(f.next()), num(f.next()), num(f.next()));
                    if let (Some(dev), Some(ino), Some(born), Some(rel), true) =
                        (dev, ino, born, f.next().and_then(journal_path), same)
                    {
                        let id = Ident { dev, ino, born };
                        if let Some(j) = &self.journal {
                            j.made_dir(&rel, id)?;
                        }
                        self.inherited.insert(id, rel);
                    }
                }
                _ => {}
            }
        }
        // Another snapshot's restore leaves it for a restore of the killed one's to finish
        // its directories (hostile pass 6: they stayed 1700 for good).
        match same {
            true => {
                rfs::unlinkat(&self.dir, killed.name.as_os_str(), AtFlags::empty()).map_err(to_io)
            }
            false => Ok(()),
        }
    }

    /// The restore ended (not killed, not interrupted: then its journal stays, for the
    /// next restore to finish its directories): its journal goes.
    pub fn done(&self) {
        if let Some(j) = &self.journal {
            let _ = rfs::unlinkat(&self.dir, j.name.as_os_str(), AtFlags::empty());
        }
    }

    /// A killed restore's staged files removed.
    pub fn swept(&self) -> usize {
        self.swept
    }

    /// A fresh staged name for an entry of the directory `dir`, recorded in the journal.
    pub fn staged_name(&self, dir: &Path) -> io::Result<OsString> {
        if let Some(j) = &self.journal {
            j.stages_in(dir)?;
        }
        let name = format!("{STAGED}{:016x}-{:016x}", self.id, rand::random::<u64>());
        Ok(OsString::from(name))
    }

    /// Where a snapshot path lands, for messages.
    pub fn display(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Opens `rel` beneath the target without following any symlink, at the end or on the
    /// way. `rel` must be relative and free of `..` (names come from checked trees).
    fn open_beneath(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        debug_assert!(rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)));
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match rfs::openat2(
            &self.dir,
            rel,
            flags,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            // No openat2 (before Linux 5.6), or a seccomp filter that does not know it
            // (older container runtimes answer EPERM).
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                self.open_walking(rel, flags, mode)
            }
            r => r.map_err(to_io),
        }
    }

    /// Without `openat2`: walk component by component with `O_NOFOLLOW`.
    fn open_walking(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let comps: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return rfs::openat(&self.dir, ".", flags, mode).map_err(to_io);
        };
        let mut fd: Option<OwnedFd> = None;
        for d in dirs {
            let parent = fd.as_ref().map_or(self.dir.as_fd(), |f| f.as_fd());
            fd = Some(
                rfs::openat(
                    parent,
                    *d,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(to_io)?,
            );
        }
        let parent = fd.as_ref().map_or(self.dir.as_fd(), |f| f.as_fd());
        rfs::openat(parent, *last, flags, mode).map_err(to_io)
    }

    /// The directory holding `rel` and `rel`'s last name: a directory the restore made or
    /// checked, opened beneath the target only if it still is that one, so that every entry
    /// is created in it through its descriptor.
    fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.checked_dir(parent)?, name))
    }

    /// The directory `rel`, opened only if it is still the one [`Target::make_dir`] made or
    /// checked: the same inode, owner and mode.
    fn checked_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let want = self.dirs.read().unwrap().get(rel).copied();
        let want = want.ok_or_else(|| {
            io::Error::other(format!(
                "{}: its directory was not restored (see its error): nothing written below it",
                display_rel(rel)
            ))
        })?;
        // It was there: gone now, or a link or no directory on the way, it was swapped
        // (hostile pass 5, F2: thousands of bare ENOENT and ELOOP said nothing of that).
        let fd = self
            .open_beneath(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(
                |e| match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
                    Some(
                        rustix::io::Errno::NOENT
                        | rustix::io::Errno::LOOP
                        | rustix::io::Errno::NOTDIR
                        | rustix::io::Errno::XDEV,
                    ) => dir_changed(rel),
                    _ => e,
                },
            )?;
        match Checked::of(&fd)? == want {
            true => Ok(fd),
            false => Err(dir_changed(rel)),
        }
    }

    /// Opens the entry `rel` (not following it, if a symlink) in its checked directory.
    fn open_in(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let (parent, name) = self.parent(rel)?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rfs::openat(&parent, name, flags, Mode::empty()).map_err(to_io)
    }

    /// Makes `rel` the directory `node`: an existing one is kept if it gives no one more
    /// access than `node` does (see [`open_enough`]), anything else in the way (a symlink
    /// above all) is removed first. Returns the directory's inode when it is the restore's
    /// to give the snapshot's metadata: made now, or made by a killed restore of the same
    /// snapshot (see [`refinish`]); `None` for one that was there. Entries go into
    /// it only while it is still the one checked here.
    pub fn make_dir(&self, rel: &Path, node: &Node) -> io::Result<Option<Ident>> {
        if rel.as_os_str().is_empty() {
            return Ok(None);
        }
        let me = nix::unistd::geteuid().as_raw();
        let (parent, name) = self.parent(rel)?;
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let fd = rfs::openat(&parent, name, dir_flags, Mode::empty()).map_err(to_io)?;
                let mut st = rfs::fstat(&fd).map_err(to_io)?;
                open_enough(&st, node)?;
                // Only one a killed restore made: 1700 is a mode anyone may choose.
                let id = Ident::of(&fd)?;
                let unfinished = self.inherited.get(&id).is_some_and(|at| at == rel)
                    && refinish(&fd, &mut st, node)?;
                self.checked(rel, &fd)?;
                return Ok(unfinished.then_some(id));
            }
            Ok(_) => rfs::unlinkat(&parent, name, AtFlags::empty()).map_err(to_io)?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(to_io(e)),
        }
        rfs::mkdirat(&parent, name, Mode::from_raw_mode(UNFINISHED)).map_err(to_io)?;
        // Through a descriptor: what is checked is what entries go into.
        let fd = rfs::openat(&parent, name, dir_flags, Mode::empty()).map_err(to_io)?;
        let st = rfs::fstat(&fd).map_err(to_io)?;
        match st.st_uid == me && st.st_mode & 0o077 == 0 {
            true => {
                let id = Ident::of(&fd)?;
                if let Some(j) = &self.journal {
                    j.made_dir(rel, id)?;
                }
                self.checked(rel, &fd)?;
                Ok(Some(id))
            }
            false => Err(replaced(rel)),
        }
    }

    /// Forgets the directory `rel` once everything below it is written and its metadata
    /// applied: nothing more goes into it, and a restore remembers only the directories
    /// it is still writing (a streamed restore's memory is bounded by depth and batch).
    pub fn forget_dir(&self, rel: &Path) {
        if !rel.as_os_str().is_empty() {
            self.dirs.write().unwrap().remove(rel);
        }
    }

    /// Records the directory `rel` as checked: entries may go into it while it stays so.
    fn checked(&self, rel: &Path, fd: &OwnedFd) -> io::Result<()> {
        let checked = Checked::of(fd)?;
        self.dirs
            .write()
            .unwrap()
            .insert(rel.to_path_buf(), checked);
        Ok(())
    }

    /// Owner (when `how` says so), mode, attributes and times of the directory `rel`, which
    /// the restore made as inode `id` (never one that was there, or was swapped in).
    pub fn set_dir_metadata(
        &self,
        rel: &Path,
        node: &Node,
        how: Apply,
        id: Ident,
    ) -> io::Result<()> {
        use rustix::io::Errno;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let fd = match self.open_beneath(rel, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Nothing, or no directory, at its name now.
            Err(e)
                if [Errno::NOENT, Errno::LOOP, Errno::NOTDIR, Errno::XDEV]
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                return Err(moved_away(rel))
            }
            Err(e) => return Err(e),
        };
        match Ident::of(&fd)? == id {
            true => apply_through(fd.as_fd(), node, how),
            false => Err(moved_away(rel)),
        }
    }

    /// Removes whatever is at `rel` (an empty directory too, never one with contents) and
    /// returns the parent directory to create the new entry in.
    fn clear<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let (parent, name) = self.parent(rel)?;
        match rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let flags = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rfs::unlinkat(&parent, name, flags).map_err(to_io)?;
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(to_io(e)),
        }
        Ok((parent, name))
    }

    /// Creates an empty regular file under a staged name ([`STAGED`] and a random part)
    /// beside `rel`, and returns it open for writing, with that name and its directory:
    /// [`Target::place`] renames it onto `rel` once complete, so that a restore killed
    /// meanwhile leaves no partial file under `rel`. A directory in the way (an empty one)
    /// is removed first, since no rename replaces it; anything else stays until the rename
    /// replaces it.
    pub fn create_staged(&self, rel: &Path) -> io::Result<Staged> {
        let (parent, name) = self.parent(rel)?;
        match rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                rfs::unlinkat(&parent, name, AtFlags::REMOVEDIR).map_err(to_io)?
            }
            Ok(_) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(to_io(e)),
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        loop {
            let staged = self.staged_name(rel.parent().unwrap_or(Path::new("")))?;
            let made = rfs::openat(
                &parent,
                staged.as_os_str(),
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            );
            match made {
                Err(rustix::io::Errno::EXIST) => continue,
                r => {
                    let file = File::from(r.map_err(to_io)?);
                    return Ok(Staged {
                        file,
                        name: staged,
                        dir: parent,
                    });
                }
            }
        }
    }

    /// Renames the staged file `staged` beside `rel` (inode `id`) onto `rel`, replacing
    /// what is there, only if the staged name still holds that inode. `dir` is `rel`'s
    /// directory when the caller has it open already.
    pub fn place(
        &self,
        rel: &Path,
        staged: &OsStr,
        id: Ident,
        dir: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let opened;
        let (parent, name) = match dir {
            Some(fd) => (fd, rel.file_name().unwrap_or_default()),
            None => {
                opened = self.parent(rel)?;
                (opened.0.as_fd(), opened.1)
            }
        };
        if Ident::at(parent, staged, AtFlags::empty())? != id {
            return Err(replaced(&rel.with_file_name(staged)));
        }
        rfs::renameat(parent, staged, parent, name).map_err(to_io)
    }

    /// Removes a killed restore's staged files in the directory `dir` (beneath the
    /// target): whatever is not a directory and has a name that starts with `prefix` (its
    /// ID), whoever owns it now: root's restore gives a staged file its owner before the
    /// rename, and one killed in between left a complete hidden copy of that user's file
    /// (hostile pass 6). Removing a name takes nothing from anyone: no link is followed.
    /// Returns how many went.
    fn sweep(&self, dir: &Path, prefix: &[u8]) -> io::Result<usize> {
        let fd = self.open_beneath(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut removed = 0;
        for entry in rfs::Dir::read_from(&fd).map_err(to_io)? {
            let entry = entry.map_err(to_io)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if !name.as_bytes().starts_with(prefix) {
                continue;
            }
            let st = rfs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(to_io)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                rfs::unlinkat(&fd, name, AtFlags::empty()).map_err(to_io)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Opens the restored regular file `rel` again, only if it still is inode `id`.
    fn open_same(&self, rel: &Path, flags: OFlags, id: Ident) -> io::Result<File> {
        let fd = self.open_in(rel, flags)?;
        match Ident::of(&fd)? == id {
            true => Ok(File::from(fd)),
            false => Err(replaced(rel)),
        }
    }

    /// Opens a restored regular file, still inode `id`, for writing its content.
    pub fn open_write(&self, rel: &Path, id: Ident) -> io::Result<File> {
        self.open_same(rel, OFlags::WRONLY, id)
    }

    /// Opens a restored regular file, still inode `id`, for reading (verification).
    pub fn open_read(&self, rel: &Path, id: Ident) -> io::Result<File> {
        self.open_same(rel, OFlags::RDONLY, id)
    }

    /// Opens a restored regular file, still inode `id`, to apply its metadata.
    pub fn open_meta(&self, rel: &Path, id: Ident) -> io::Result<File> {
        self.open_same(rel, OFlags::RDONLY | OFlags::NONBLOCK, id)
    }

    /// Links inode `id`, restored at `existing`, at `rel` too: through a descriptor of
    /// that inode, so another user's file put at `existing` is never linked.
    pub fn hard_link(&self, existing: &Path, id: Ident, rel: &Path) -> io::Result<()> {
        // Beneath the target, not through its checked directory: an earlier batch may have
        // finished that (and forgotten it); the inode is what is checked.
        let from = self.open_beneath(existing, OFlags::PATH, Mode::empty())?;
        if Ident::of(&from)? != id {
            return Err(replaced(existing));
        }
        let (to_dir, to_name) = self.clear(rel)?;
        // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the descriptor's /proc link does not.
        match rfs::linkat(&from, "", &to_dir, to_name, AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {
                let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&from));
                rfs::linkat(
                    rfs::CWD,
                    proc.as_str(),
                    &to_dir,
                    to_name,
                    AtFlags::SYMLINK_FOLLOW,
                )
            }
            r => r,
        }
        .map_err(to_io)
    }

    pub fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let (parent, name) = self.clear(rel)?;
        rfs::symlinkat(OsStr::from_bytes(target), &parent, name).map_err(to_io)
    }

    pub fn special(&self, rel: &Path, node: &Node) -> io::Result<()> {
        let file_type = match node.kind {
            NodeKind::Fifo => FileType::Fifo,
            NodeKind::Chardev => FileType::CharacterDevice,
            NodeKind::Blockdev => FileType::BlockDevice,
            _ => return Ok(()),
        };
        let (parent, name) = self.clear(rel)?;
        rfs::mknodat(
            &parent,
            name,
            file_type,
            Mode::from_raw_mode(0o600),
            node.rdev as rfs::Dev,
        )
        .map_err(to_io)
    }

    /// Owner (when `how` says so), mode, user xattrs and times of a restored entry, applied
    /// to the entry itself: never through a symlink.
    pub fn set_metadata(&self, rel: &Path, node: &Node, how: Apply) -> io::Result<()> {
        let times = timestamps(node);
        let owner = || {
            (
                Some(rfs::Uid::from_raw(node.uid)),
                Some(rfs::Gid::from_raw(node.gid)),
            )
        };
        match node.kind {
            NodeKind::Socket => Ok(()),
            NodeKind::Symlink => {
                // Pinned and checked first: chown goes through the descriptor.
                let fd = self.open_in(rel, OFlags::PATH)?;
                made_here(fd.as_fd(), rel, node)?;
                if how.owners {
                    let (u, g) = owner();
                    let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
                    rfs::chownat(&fd, "", u, g, flags).map_err(to_io)?;
                }
                let (parent, name) = self.parent(rel)?;
                rfs::utimensat(&parent, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(to_io)
            }
            NodeKind::File | NodeKind::Dir => {
                let flags = if node.kind == NodeKind::Dir {
                    OFlags::RDONLY | OFlags::DIRECTORY
                } else {
                    OFlags::RDONLY | OFlags::NONBLOCK
                };
                let fd = self.open_in(rel, flags)?;
                made_here(fd.as_fd(), rel, node)?;
                apply_through(fd.as_fd(), node, how)
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                // Opening a device or fifo for I/O could block or act: an O_PATH descriptor
                // pins the entry, and its /proc magic link reaches it for chmod and times.
                let fd = self.open_in(rel, OFlags::PATH)?;
                made_here(fd.as_fd(), rel, node)?;
                if how.owners {
                    let (u, g) = owner();
                    rfs::chownat(&fd, "", u, g, AtFlags::EMPTY_PATH).map_err(to_io)?;
                }
                let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
                rfs::chmodat(
                    rfs::CWD,
                    proc.as_str(),
                    Mode::from_raw_mode(how.mode(node)),
                    AtFlags::empty(),
                )
                .map_err(to_io)?;
                rfs::utimensat(rfs::CWD, proc.as_str(), &times, AtFlags::empty()).map_err(to_io)
            }
        }
    }

    /// As [`Target::set_metadata`], for a regular file or directory already open (a file
    /// just written needs no second lookup of its path).
    pub fn set_metadata_of(&self, file: &File, node: &Node, how: Apply) -> io::Result<()> {
        apply_through(file.as_fd(), node, how)
    }

    /// Removes a file (never a directory) the restore created: `rel` is its staged name.
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        rfs::unlinkat(&parent, name, AtFlags::empty()).map_err(to_io)
    }

    /// Renames a restored file that could not be restored exactly (`from` is its name
    /// now in `rel`'s directory: staged, or `rel`'s own) to `rel` with the suffix
    /// `.strata-damaged`, so that no one takes it for the real thing; returns the new path
    /// (relative). A name too long for the suffix is shortened first (see [`marked_name`]).
    ///
    /// A name taken (a file of the snapshot so named, another damaged file whose long name
    /// was cut alike, an earlier restore's mark) is never replaced: `.1`, `.2`, … follow
    /// the suffix (hostile pass 8: a good restored `report.strata-damaged` was replaced by
    /// the damaged `report`'s).
    pub fn mark_damaged(&self, rel: &Path, from: &OsStr) -> io::Result<PathBuf> {
        let (parent, name) = self.parent(rel)?;
        for n in 0..MARKS_MAX {
            let marked = marked_name(name, n);
            let to = marked.as_os_str();
            let moved = match rfs::renameat_with(&parent, from, &parent, to, NOREPLACE) {
                // A file system without RENAME_NOREPLACE: looked at first, then renamed.
                Err(rustix::io::Errno::INVAL) => match rfs::statat(&parent, to, NOFOLLOW) {
                    Ok(_) => Err(rustix::io::Errno::EXIST),
                    Err(_) => rfs::renameat(&parent, from, &parent, to),
                },
                r => r,
            };
            match moved {
                Ok(()) => return Ok(rel.with_file_name(marked)),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{MARKS_MAX} names with the suffix {DAMAGED} are taken"),
        ))
    }
}

const NOREPLACE: rfs::RenameFlags = rfs::RenameFlags::NOREPLACE;
const NOFOLLOW: AtFlags = AtFlags::SYMLINK_NOFOLLOW;

/// The suffix of a file not restored exactly.
pub const DAMAGED: &str = ".strata-damaged";

/// How many numbered names a damaged file may try before it stays staged.
const MARKS_MAX: u32 = 1000;

/// `name` with [`DAMAGED`] (and `.n` past the first try): the name cut (at a character, if
/// it is UTF-8) where the whole would pass 255 bytes, the longest a file name can be,
/// rather than left staged.
fn marked_name(name: &OsStr, n: u32) -> OsString {
    const NAME_MAX: usize = 255;
    let suffix = match n {
        0 => DAMAGED.to_string(),
        n => format!("{DAMAGED}.{n}"),
    };
    let bytes = name.as_bytes();
    let mut keep = bytes.len().min(NAME_MAX - suffix.len());
    if let Ok(text) = std::str::from_utf8(bytes) {
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
    }
    let mut marked = OsStr::from_bytes(&bytes[..keep]).to_os_string();
    marked.push(suffix);
    marked
}

fn timestamps(node: &Node) -> Timestamps {
    let t = rfs::Timespec {
        tv_sec: node.mtime.sec,
        tv_nsec: node.mtime.nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner (when `how` says so), mode, user xattrs and times through a descriptor of the
/// entry itself.
fn apply_through(fd: BorrowedFd<'_>, node: &Node, how: Apply) -> io::Result<()> {
    if how.owners {
        let (u, g) = (
            Some(rfs::Uid::from_raw(node.uid)),
            Some(rfs::Gid::from_raw(node.gid)),
        );
        rfs::fchown(fd, u, g).map_err(to_io)?;
    }
    // After chown, which clears set-id bits.
    rfs::fchmod(fd, Mode::from_raw_mode(how.mode(node))).map_err(to_io)?;
    for x in node.xattrs.iter().filter(|x| how.xattr(&x.name)) {
        let set = rfs::fsetxattr(
            fd,
            OsStr::from_bytes(&x.name),
            &x.value,
            rfs::XattrFlags::empty(),
        );
        // Only user attributes are portable; others need privileges or file systems the
        // target may not have.
        if let Err(e) = set {
            if x.name.starts_with(b"user.") {
                return Err(to_io(e));
            }
        }
    }
    rfs::futimens(fd, &timestamps(node)).map_err(to_io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_symlink_is_followed_with_or_without_openat2() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let t = Target::open(&dir.path().join("t")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t/link")).unwrap();
        std::fs::write(outside.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("file"), dir.path().join("t/lf")).unwrap();
        t.make_dir(Path::new("real"), &dir_node(0o755, 0)).unwrap();
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        for walking in [false, true] {
            let open = |rel: &str, flags: OFlags| {
                if walking {
                    t.open_walking(Path::new(rel), flags | OFlags::NOFOLLOW, mode)
                } else {
                    t.open_beneath(Path::new(rel), flags, mode)
                }
            };
            assert!(open("link/x", create).is_err(), "walking {walking}");
            assert!(open("lf", OFlags::RDONLY).is_err(), "walking {walking}");
            assert!(open("real/x", create).is_ok(), "walking {walking}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        // A symlink where a directory goes is replaced, not followed.
        t.make_dir(Path::new("link"), &dir_node(0o755, 0)).unwrap();
        assert!(std::fs::symlink_metadata(dir.path().join("t/link"))
            .unwrap()
            .is_dir());
    }

    /// A symlink of another user's anywhere on the way to a target (at the end, in the
    /// middle, at the end of a chain that starts with one of root's) is not followed; this
    /// user's are; a directory made on the way is at most 0755 whatever the umask.
    #[test]
    fn a_target_path_follows_only_its_users_or_roots_links() {
        use std::os::unix::fs::{symlink, MetadataExt};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("victim")).unwrap();
        let theirs = |link: &str, to: &Path| {
            symlink(to, d.join(link)).unwrap();
            if nix::unistd::geteuid().is_root() {
                let nobody = Some(nix::unistd::Uid::from_raw(65534));
                nix::unistd::fchownat(
                    None,
                    &d.join(link),
                    nobody,
                    None,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .unwrap();
            }
        };
        symlink(d.join("victim"), d.join("mine")).unwrap();
        let t = open_trusted_dir(&d.join("mine/new/deeper"), 0o755).unwrap();
        assert!(d.join("victim/new/deeper").is_dir());
        let mode = std::fs::metadata(d.join("victim/new")).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{mode:o}");
        drop(t);
        if !nix::unistd::geteuid().is_root() {
            return; // links of another user need root to make
        }
        theirs("x", &d.join("victim"));
        symlink(d.join("x"), d.join("chain")).unwrap();
        for through in ["x/restore", "x", "chain", "chain/sub"] {
            let err = open_trusted_dir(&d.join(through), 0o755).unwrap_err();
            assert!(
                err.to_string().contains("owned by uid 65534"),
                "{through}: {err}"
            );
        }
        assert!(!d.join("victim/restore").exists() && !d.join("victim/sub").exists());
        // A loop ends.
        symlink(d.join("l2"), d.join("l1")).unwrap();
        symlink(d.join("l1"), d.join("l2")).unwrap();
        assert!(open_trusted_dir(&d.join("l1"), 0o755).is_err());
    }

    /// A staged file replaces what holds its name only while it is still the inode made.
    #[test]
    fn staged_files_are_placed_only_while_the_inode_made() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::open(&dir.path().join("t")).unwrap();
        let p = |n: &str| dir.path().join("t").join(n);
        std::fs::write(p("f"), "old").unwrap();
        let mut new = t.create_staged(Path::new("f")).unwrap();
        std::io::Write::write_all(&mut new.file, b"new").unwrap();
        assert_eq!(
            std::fs::read(p("f")).unwrap(),
            b"old",
            "in place before complete"
        );
        let id = Ident::of(&new.file).unwrap();
        let other = t.create_staged(Path::new("g")).unwrap().name;
        assert!(
            t.place(Path::new("f"), &other, id, None).is_err(),
            "another inode"
        );
        t.place(Path::new("f"), &new.name, id, None).unwrap();
        assert_eq!(std::fs::read(p("f")).unwrap(), b"new");
    }

    #[test]
    fn a_private_target_is_this_users_and_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scratch");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(Target::open_private(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(Target::open_private(&p).is_err(), "group may read");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        if nix::unistd::geteuid().is_root() {
            let nobody = Some(nix::unistd::Uid::from_raw(65534));
            nix::unistd::chown(&p, nobody, None).unwrap();
            let err = Target::open_private(&p).err().unwrap();
            assert!(err.to_string().contains("uid 65534"), "{err}");
        }
    }

    fn dir_node(mode: u32, uid: u32) -> Node {
        let mut node = Node::new(b"d".to_vec(), NodeKind::Dir);
        (node.mode, node.uid, node.gid) = (mode, uid, uid);
        node
    }

    fn entries(p: &Path) -> usize {
        std::fs::read_dir(p).unwrap().count()
    }

    /// Hostile pass 3, item 1: an existing directory of another user's, or one that lets
    /// group or others in where the snapshot's did not, receives nothing (root's 0644
    /// secrets and setuid programs went into a 0777 directory another user made).
    #[test]
    fn nothing_goes_into_an_existing_directory_more_open_than_the_snapshots() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            // tools/test requires every test to run (see the CLI tests' `not_run`).
            assert!(
                std::env::var_os("STRATA_TEST_REQUIRE_ALL").is_none(),
                "NOT RUN under tools/test: needs root"
            );
            return eprintln!("NOT RUN: needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join("t").join(n);
        let t = Target::open(&dir.path().join("t")).unwrap();
        let private = dir_node(0o700, 0);
        for (name, uid, mode) in [("theirs", 65534, 0o700), ("open", 0, 0o777)] {
            std::fs::create_dir(p(name)).unwrap();
            std::os::unix::fs::chown(p(name), Some(uid), None).unwrap();
            std::fs::set_permissions(p(name), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = t.make_dir(Path::new(name), &private).unwrap_err();
            let why = if uid == 0 { "777" } else { "uid 65534" };
            assert!(err.to_string().contains(why), "{name}: {err}");
            assert!(
                t.create_staged(&Path::new(name).join("f")).is_err(),
                "{name}"
            );
            assert!(
                t.symlink(&Path::new(name).join("l"), b"x").is_err(),
                "{name}"
            );
            assert_eq!(entries(&p(name)), 0, "{name}");
        }
        // The snapshot's owner's, or as open as the snapshot says: written into.
        let theirs = dir_node(0o777, 65534);
        for name in ["theirs", "open"] {
            assert!(t.make_dir(Path::new(name), &theirs).unwrap().is_none());
            t.create_staged(&Path::new(name).join("f")).unwrap();
            assert_eq!(entries(&p(name)), 1, "{name}");
        }
    }

    /// Hostile pass 3, item 1 (the race): a directory the restore made, renamed away and
    /// replaced by another user's between its creation and the first write, receives
    /// nothing, and the end of the restore says where the written entries went.
    #[test]
    fn a_directory_swapped_after_its_creation_receives_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join("t").join(n);
        let t = Target::open(&dir.path().join("t")).unwrap();
        let node = dir_node(0o700, nix::unistd::geteuid().as_raw());
        let id = t.make_dir(Path::new("d"), &node).unwrap().unwrap();
        t.create_staged(Path::new("d/before")).unwrap();
        std::fs::rename(p("d"), p("moved")).unwrap();
        std::fs::create_dir(p("d")).unwrap();
        std::fs::set_permissions(p("d"), std::fs::Permissions::from_mode(0o777)).unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(p("d"), Some(65534), None).unwrap();
        }
        assert!(t.create_staged(Path::new("d/f")).is_err());
        assert!(t.make_dir(Path::new("d/sub"), &node).is_err());
        assert!(t.symlink(Path::new("d/l"), b"x").is_err());
        assert_eq!(entries(&p("d")), 0);
        let how = Apply {
            owners: nix::unistd::geteuid().is_root(),
            xattrs: false,
        };
        let err = t
            .set_dir_metadata(Path::new("d"), &node, how, id)
            .unwrap_err();
        assert!(err.to_string().contains("moved away"), "{err}");
        assert_eq!(entries(&p("moved")), 1);
        // Below a swapped directory (nothing there now, or a link): said so, not a bare
        // ENOENT or ELOOP per file (hostile pass 5, F2).
        t.make_dir(Path::new("e"), &node).unwrap().unwrap();
        t.make_dir(Path::new("e/sub"), &node).unwrap();
        std::fs::rename(p("e"), p("e-moved")).unwrap();
        std::fs::create_dir(p("e")).unwrap();
        let err = t.create_staged(Path::new("e/sub/f")).err().unwrap();
        assert!(err.to_string().contains("moved away or changed"), "{err}");
        std::fs::remove_dir(p("e")).unwrap();
        std::os::unix::fs::symlink(p("e-moved"), p("e")).unwrap();
        let err = t.create_staged(Path::new("e/sub/f")).err().unwrap();
        assert!(err.to_string().contains("moved away or changed"), "{err}");
        assert_eq!(entries(&p("e-moved/sub")), 0);
    }

    /// A restore killed outright: its target dropped without [`Target::done`].
    fn killed(t: Target) {
        drop(t);
    }

    /// Hostile pass 3, items 2 and 12: a restore into a directory inside a running
    /// restore's target swept the running one's staged files as a killed restore's; a
    /// second restore into the same target went ahead; another user's `flock` on the
    /// target switched the sweep off without a word.
    #[test]
    fn only_a_killed_restores_staged_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join("t").join(n);
        let me = nix::unistd::geteuid().as_raw();
        let outer = Target::open(&p("")).unwrap();
        outer
            .make_dir(Path::new("in"), &dir_node(0o755, me))
            .unwrap();
        let live = outer.create_staged(Path::new("in/f")).unwrap().name;
        let nested = Target::open(&p("in")).unwrap();
        assert_eq!(nested.swept(), 0);
        assert!(
            p("in").join(&live).exists(),
            "the running restore's file went"
        );
        assert!(
            Target::open(&p("")).is_err(),
            "two restores into one target"
        );
        drop(nested);
        // Killed: its staged file goes with the next restore of its target, whoever
        // holds a lock on the target directory itself, and (hostile pass 6) whoever a
        // root restore had given it to already.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(p("in").join(&live), Some(65534), Some(65534)).unwrap();
        }
        killed(outer);
        let holder = File::open(p("")).unwrap();
        rfs::flock(&holder, rfs::FlockOperation::LockExclusive).unwrap();
        let again = Target::open(&p("")).unwrap();
        assert_eq!(again.swept(), 1);
        assert!(!p("in").join(&live).exists());
    }

    /// Hostile pass 3, items 6 and 7: an existing 1700 directory of this user's was taken
    /// for one a killed restore made (given the snapshot's owner and mode), and a real file
    /// with a staged-looking name was swept.
    #[test]
    fn what_no_killed_restore_made_is_neither_finished_nor_swept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join("t").join(n);
        let me = nix::unistd::geteuid().as_raw();
        std::fs::create_dir_all(p("opt")).unwrap();
        std::fs::set_permissions(p("opt"), std::fs::Permissions::from_mode(0o1700)).unwrap();
        let real = format!("{STAGED}0123456789abcdef");
        for d in ["", "opt"] {
            std::fs::write(p(d).join(&real), "data").unwrap();
            std::fs::set_permissions(p(d).join(&real), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        let node = dir_node(0o777, me);
        let t = Target::open(&p("")).unwrap();
        assert_eq!(t.make_dir(Path::new("opt"), &node).unwrap(), None);
        assert_eq!(t.swept(), 0);
        assert!(p("").join(&real).exists() && p("opt").join(&real).exists());
        // One a killed restore made is finished by the next.
        let made = t.make_dir(Path::new("new"), &node).unwrap();
        killed(t);
        let again = Target::open(&p("")).unwrap();
        assert_eq!(again.make_dir(Path::new("new"), &node).unwrap(), made);
        assert_eq!(again.make_dir(Path::new("opt"), &node).unwrap(), None);
    }

    /// Hostile pass 4: a restore of snapshot A killed after writing a private directory's
    /// files, then a restore of snapshot B (where that directory is another user's 0755)
    /// into the same target: B "finished" A's directory with B's owner and mode, opening
    /// A's files. Only a restore of the same tree finishes it; another keeps it private.
    #[test]
    fn only_a_restore_of_the_same_tree_finishes_a_killed_ones_directories() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::create_dir_all(&p).unwrap();
        let node = dir_node(0o755, nix::unistd::geteuid().as_raw());
        let a = Target::open_restoring(&p, false, "aaaa").unwrap();
        let made = a.make_dir(Path::new("private"), &node).unwrap();
        assert!(made.is_some());
        killed(a);
        let b = Target::open_restoring(&p, false, "bbbb").unwrap();
        assert_eq!(
            b.make_dir(Path::new("private"), &node).unwrap(),
            None,
            "kept private"
        );
        killed(b);
        // Hostile pass 6: B's restore left A's journal, so A's run again finishes it.
        let a2 = Target::open_restoring(&p, false, "aaaa").unwrap();
        assert_eq!(a2.make_dir(Path::new("private"), &node).unwrap(), made);
        a2.done();
        drop(a2);
        assert_eq!(journals(&p), 1, "B's, killed");
    }

    fn journals(p: &Path) -> usize {
        std::fs::read_dir(p)
            .unwrap()
            .filter(|e| journal_id(e.as_ref().unwrap().file_name().as_bytes()).is_some())
            .count()
    }

    /// Hostile pass 6: a file under a journal's name that is no journal (a user's, or one
    /// a snapshot put there) was taken for a killed restore's, then deleted.
    #[test]
    fn a_file_under_a_journals_name_that_is_no_journal_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::create_dir_all(&p).unwrap();
        let name = p.join(journal_name(0x0123_4567_89ab_cdef));
        std::fs::write(&name, b"D1 2 3 private\0").unwrap();
        let t = Target::open_restoring(&p, false, "aaaa").unwrap();
        t.done();
        assert_eq!(std::fs::read(&name).unwrap(), b"D1 2 3 private\0");
        assert!(is_journal(b"P12\0Taa00\0D1 2 3 x\0"));
        assert!(!is_journal(b"P\0Taa\0") && !is_journal(b"P1\0Xaa\0"));
    }

    /// Hostile pass 5 (E5, E6): a directory a killed restore had finished (its metadata
    /// given, read-only) is the next restore's to finish again, writable meanwhile; as
    /// root, one given to the snapshot's owner only while it is still theirs.
    #[test]
    fn a_directory_a_killed_restore_finished_is_finished_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let root = nix::unistd::geteuid().is_root();
        let owner = if root {
            65534
        } else {
            nix::unistd::geteuid().as_raw()
        };
        let node = dir_node(0o555, owner);
        let how = Apply {
            owners: root,
            xattrs: false,
        };
        // This user's own, finished read-only.
        let mine = dir_node(0o555, nix::unistd::geteuid().as_raw());
        let a = Target::open_restoring(&p, false, "aaaa").unwrap();
        for (d, n) in [
            ("ro", &node),
            ("theirs", &node),
            ("mine", &mine),
            ("moved", &mine),
        ] {
            let made = a.make_dir(Path::new(d), n).unwrap().unwrap();
            a.set_dir_metadata(Path::new(d), n, how, made).unwrap();
        }
        killed(a);
        // Hostile pass 7: one moved to another name since is not finished under it.
        std::fs::rename(p.join("moved"), p.join("renamed")).unwrap();
        let mode = |d: &str| std::fs::metadata(p.join(d)).unwrap().mode() & 0o7777;
        assert_eq!(mode("ro"), 0o555);
        if root {
            // Not the snapshot's owner and group any more: not finished again.
            std::os::unix::fs::chown(p.join("theirs"), None, Some(65533)).unwrap();
        }
        let again = Target::open_restoring(&p, false, "aaaa").unwrap();
        let made = again.make_dir(Path::new("ro"), &node).unwrap();
        assert!(made.is_some(), "not finished again");
        assert_eq!(mode("ro"), if root { 0o555 } else { UNFINISHED });
        again.create_staged(Path::new("ro/f")).unwrap();
        if root {
            assert_eq!(again.make_dir(Path::new("theirs"), &node).unwrap(), None);
        }
        again
            .set_dir_metadata(Path::new("ro"), &node, how, made.unwrap())
            .unwrap();
        assert_eq!(mode("ro"), 0o555);
        assert_eq!(mode("mine"), 0o555);
        assert!(again.make_dir(Path::new("mine"), &mine).unwrap().is_some());
        assert_eq!(mode("mine"), UNFINISHED, "made writable again");
        assert_eq!(again.make_dir(Path::new("renamed"), &mine).unwrap(), None);
        assert_eq!(mode("renamed"), 0o555);
    }

    /// Hostile pass 6: a restored file removed by another user and made again as theirs
    /// got the same inode number (ext4 hands a freed one out again at once), and a second
    /// hard link, then root's chown and setuid bit, went to their file by that number.
    /// The birth time tells the two apart: the link and the metadata are refused.
    #[test]
    fn an_inode_number_come_back_as_another_file_is_not_the_file_restored() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join("t").join(n);
        let t = Target::open(&dir.path().join("t")).unwrap();
        let staged = t.create_staged(Path::new("a")).unwrap();
        let id = Ident::of(&staged.file).unwrap();
        t.place(Path::new("a"), &staged.name, id, None).unwrap();
        drop(staged);
        // Made again until the number comes back (at once on ext4).
        let reused = (0..1000).any(|_| {
            std::fs::remove_file(p("a")).unwrap();
            std::fs::write(p("a"), "theirs").unwrap();
            std::fs::metadata(p("a")).unwrap().ino() == id.ino
        });
        assert!(
            reused,
            "the inode number never came back: this file system is no test of it"
        );
        let again = Ident::of(File::open(p("a")).unwrap()).unwrap();
        assert_eq!((again.dev, again.ino), (id.dev, id.ino));
        assert_ne!(again, id, "no birth time to tell them apart");
        let err = t.hard_link(Path::new("a"), id, Path::new("b")).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        assert!(!p("b").exists());
        assert!(t.open_meta(Path::new("a"), id).is_err());
        assert!(t.open_write(Path::new("a"), id).is_err());
    }

    /// Hostile pass 3, item 14: a damaged file whose name is 255 bytes could not take the
    /// suffix, stayed under its staged name and went with the next restore's sweep.
    /// Hostile pass 8: a name with the suffix that is taken (a good file of the snapshot,
    /// or another damaged file whose long name was cut alike) is never replaced.
    #[test]
    fn a_damaged_file_never_replaces_a_file_of_its_marked_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let t = Target::open(&root).unwrap();
        std::fs::write(root.join("report.strata-damaged"), "good").unwrap();
        let staged = t.create_staged(Path::new("report")).unwrap().name;
        let marked = t.mark_damaged(Path::new("report"), &staged).unwrap();
        assert_eq!(marked, Path::new("report.strata-damaged.1"));
        assert_eq!(
            std::fs::read(root.join("report.strata-damaged")).unwrap(),
            b"good"
        );
        let long = |c: &str| format!("{}{c}", "x".repeat(250));
        let mut names = HashSet::new();
        for c in ["1", "2"] {
            let staged = t.create_staged(Path::new(&long(c))).unwrap().name;
            names.insert(t.mark_damaged(Path::new(&long(c)), &staged).unwrap());
        }
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| root.join(n).is_file()), "{names:?}");
    }

    #[test]
    fn a_damaged_file_with_a_long_name_is_marked_under_a_shortened_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::open(&dir.path().join("t")).unwrap();
        let long = format!("{}é", "L".repeat(253));
        let staged = t.create_staged(Path::new(&long)).unwrap().name;
        let marked = t.mark_damaged(Path::new(&long), &staged).unwrap();
        let name = marked
            .file_name()
            .unwrap()
            .to_str()
            .expect("cut at a character");
        assert!(
            name.len() <= 255 && name.ends_with(".strata-damaged"),
            "{name}"
        );
        assert!(name.starts_with("LLL"), "{name}");
        assert!(dir.path().join("t").join(&marked).is_file());
        assert!(!dir.path().join("t").join(&staged).exists());
    }
}
