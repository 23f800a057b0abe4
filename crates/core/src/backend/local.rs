//! A repository in a local directory.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, Capabilities, FileInfo, FileKind, Temporaries, WriteOptions};
use crate::error::{Error, Result};

/// A repository in a local directory (format-spec §3 gives the layout).
pub struct LocalBackend {
    root: PathBuf,
    /// Whom new files and directories are given to: see [`LocalBackend::owner`].
    owner: std::sync::OnceLock<Option<(u32, u32)>>,
    /// The repository directory (device, inode) met first: see [`LocalBackend::pin`].
    pinned: std::sync::OnceLock<(u64, u64)>,
}

impl LocalBackend {
    /// The repository at `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        LocalBackend {
            // Absolute, so that its location (the caches' key) is the same from any cwd.
            root: std::path::absolute(&root).unwrap_or(root),
            owner: std::sync::OnceLock::new(),
            pinned: std::sync::OnceLock::new(),
        }
    }

    /// The repository's owner, when root writes into another user's repository: what root
    /// writes (0600, 0700) is given to that user, or the owner could no longer read its
    /// own repository (a root `backup` into the postgres user's repository would stop its
    /// WAL archiving). `None` when the writer is the owner, or is not root (and so cannot
    /// give files away: the owner's 0700 directories keep it out anyway).
    fn owner(&self) -> Option<(u32, u32)> {
        *self.owner.get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            let me = nix::unistd::geteuid();
            let meta = fs::metadata(&self.root).ok()?;
            (me.is_root() && meta.uid() != me.as_raw()).then(|| (meta.uid(), meta.gid()))
        })
    }

    /// Gives a new file to the repository's owner (see [`Self::owner`]).
    fn give(&self, file: &File) -> io::Result<()> {
        match self.owner() {
            Some((uid, gid)) => std::os::unix::fs::fchown(file, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// Holds the repository to the directory met first: whoever owns the directory above
    /// it could swap the repository's path for a symlink mid-command, and root's writes
    /// then went wherever it pointed. A path that leads elsewhere now is refused (a path
    /// that leads nowhere is a repository moved away: `err` says so).
    fn pin(&self, st: &rustix::fs::Stat) -> Result<()> {
        let id = (st.st_dev, st.st_ino);
        if *self.pinned.get_or_init(|| id) == id {
            return Ok(());
        }
        Err(Error::Backend {
            object: "repository".into(),
            source: io::Error::other(format!(
                "{} is no longer the directory this command opened: it was moved or \
                 replaced meanwhile",
                self.root.display()
            )),
        })
    }

    /// Pins (see `pin`) the directory the repository's path leads to now, if any.
    fn check_root(&self) -> Result<()> {
        match rustix::fs::stat(&self.root) {
            Ok(st) => self.pin(&st),
            Err(_) => Ok(()),
        }
    }

    /// `init` makes a repository in a new or empty directory only (or one where a killed
    /// `init` left the repository's own directories): spreading `keys/`, `data/` ... among
    /// someone's files, or beside a directory of that name, mixes the two for good.
    /// A file system's own `lost+found` is no one's data.
    fn refuse_foreign_entries(&self) -> Result<()> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let ours =
            |name: &str| name == "lost+found" || FileKind::ALL[1..].iter().any(|k| k.dir() == name);
        let mut foreign: Vec<String> = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| Error::io(&self.root, e))?.file_name();
            let name = name.to_string_lossy();
            if !ours(&name) {
                foreign.push(format!("{name:?}"));
            }
        }
        if foreign.is_empty() {
            return Ok(());
        }
        foreign.sort();
        let more = foreign.len().saturating_sub(5);
        foreign.truncate(5);
        let mut found = format!("{} (not a repository's)", foreign.join(", "));
        if more > 0 {
            found += &format!(" and {more} more");
        }
        Err(Error::NotEmpty {
            location: self.location(),
            found,
        })
    }

    fn file(&self, kind: FileKind, name: &str) -> PathBuf {
        self.root.join(kind.path(name))
    }

    /// A file that is not there is missing, unless the whole repository went away; one
    /// that is no regular file (see `open_object`) is damaged.
    fn err(&self, kind: FileKind, name: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::InvalidData {
            Error::corrupt(format!("{kind} {name}"), e.to_string())
        } else if e.kind() == io::ErrorKind::NotFound && !self.exists().unwrap_or(false) {
            Error::NoRepository(self.location())
        } else if e.kind() == io::ErrorKind::NotFound {
            Error::no_file(kind, name)
        } else {
            Error::Backend {
                object: format!("{kind} {name}"),
                source: e,
            }
        }
    }
}

/// Opens a repository file for reading: only a regular file, never through a symlink, and
/// without blocking on a FIFO someone put in its place (it would hang the reader forever).
fn open_object(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidData,
                "a symlink, not a repository file",
            ),
            _ => e,
        })?;
    if let Some(what) = not_regular(f.metadata()?.file_type()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}, not a repository file"),
        ));
    }
    Ok(f)
}

/// What a file of type `t` is instead of a regular file (`None` for a regular one).
fn not_regular(t: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if t.is_file() => None,
        _ if t.is_symlink() => Some("a symlink"),
        _ if t.is_fifo() => Some("a FIFO"),
        _ if t.is_dir() => Some("a directory"),
        _ if t.is_char_device() || t.is_block_device() => Some("a device"),
        _ => Some("not a regular file"),
    }
}

/// A directory of the repository (a kind's, or a pack fan-out one) must not be a symlink:
/// a write through it would land wherever someone with access to the repository pointed
/// it. The repository's own path may be one (it is the operator's choice, not the
/// repository's content).
fn refuse_symlink(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::other(format!(
            "{} is a symlink: a repository's directories must be real directories (mount \
             another disk at the repository's own path instead)",
            dir.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Repository directories are the owner's alone, whatever the umask: file names and sizes
/// say something about the data too.
/// An empty buffer for `len` bytes, or an error where the memory is not there: a file
/// within its kind's bound may still be more than this process may hold (several read at
/// once under a memory limit), and that is an error to report, not an abort.
fn buffer(len: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot hold {len} bytes to read it"),
        )
    })?;
    Ok(buf)
}

fn create_dirs(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl LocalBackend {
    /// The directory a file of `kind` named `name` goes in, as a handle opened without
    /// following a symlink anywhere below the repository's own path: every write, rename
    /// and unlink then happens relative to it, so that a directory swapped for a symlink
    /// between a check and a use (the repository's owner racing root's backup) takes
    /// nothing elsewhere. With `create`, a missing level is made (0700, given to the
    /// owner), but only inside a repository that is still there: nothing but `init`
    /// creates a repository, and a write into one moved away must fail (PostgreSQL keeps
    /// a WAL segment whose push failed; it deletes one whose push "succeeded" into a
    /// re-created skeleton). `None` when a level is missing and `create` is not asked.
    fn open_dir(&self, kind: FileKind, name: &str, create: bool) -> Result<Option<OwnedFd>> {
        use rustix::fs::{openat, Mode, OFlags, CWD};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let gone = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => Error::NoRepository(self.location()),
            _ => Error::io(&self.root, e),
        };
        let root = openat(CWD, &self.root, flags, Mode::empty()).map_err(|e| gone(e.into()))?;
        self.pin(&rustix::fs::fstat(&root).map_err(|e| gone(e.into()))?)?;
        let mut levels = vec![kind.dir()];
        if kind.fanned_out() {
            levels.push(&name[..2.min(name.len())]);
        }
        let mut dir = root.try_clone().map_err(gone)?;
        let mut path = self.root.clone();
        for level in levels.into_iter().filter(|l| !l.is_empty()) {
            path.push(level);
            let open = |at: &OwnedFd| openat(at, level, flags | OFlags::NOFOLLOW, Mode::empty());
            dir = match open(&dir) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    self.make_level(&root, &dir, level, &path)?;
                    open(&dir).map_err(|e| Error::io(&path, e.into()))?
                }
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(Error::io(
                        &path,
                        refuse_symlink(&path)
                            .err()
                            .unwrap_or_else(|| io::Error::other("not a directory")),
                    ))
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            };
        }
        Ok(Some(dir))
    }

    /// Makes one missing directory level (see `open_dir`) while the config is there.
    fn make_level(&self, root: &OwnedFd, at: &OwnedFd, level: &str, path: &Path) -> Result<()> {
        use rustix::fs::{chownat, mkdirat, statat, AtFlags, Mode};
        if statat(root, "config", AtFlags::SYMLINK_NOFOLLOW).is_err() {
            return Err(Error::NoRepository(self.location()));
        }
        match mkdirat(at, level, Mode::RWXU) {
            Ok(()) => {
                if let Some((uid, gid)) = self.owner() {
                    let (uid, gid) = (
                        rustix::fs::Uid::from_raw(uid),
                        rustix::fs::Gid::from_raw(gid),
                    );
                    chownat(at, level, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| Error::io(path, e.into()))?;
                }
                Ok(())
            }
            Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(rustix::io::Errno::NOENT) => Err(Error::NoRepository(self.location())),
            Err(e) => Err(Error::io(path, e.into())),
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.root.join("config").is_file())
    }

    /// Every directory a file can go in, the packs' 256 fan-out directories included:
    /// writes never create one while the config is missing (see `open_dir`).
    fn create(&self) -> Result<()> {
        self.refuse_foreign_entries()?;
        for kind in &FileKind::ALL[1..] {
            let dir = self.root.join(kind.dir());
            create_dirs(&dir).map_err(|e| Error::io(&dir, e))?;
            if kind.fanned_out() {
                for i in 0..=255u8 {
                    let sub = dir.join(format!("{i:02x}"));
                    create_dirs(&sub).map_err(|e| Error::io(&sub, e))?;
                }
            }
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        self.check_root()?;
        let dir = self.root.join(kind.dir());
        refuse_symlink(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut out = Vec::new();
        let mut dirs = vec![dir.clone()];
        if kind.fanned_out() {
            dirs.clear();
            match fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.map_err(|e| Error::io(&dir, e))?;
                        let t = e.file_type().map_err(|err| Error::io(e.path(), err))?;
                        // A symlinked fan-out directory would hide its packs (check called
                        // them missing, and `repair index` dropped them): refused.
                        if t.is_symlink() {
                            refuse_symlink(&e.path()).map_err(|err| Error::io(e.path(), err))?;
                        }
                        if t.is_dir() {
                            dirs.push(e.path());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&d, e)),
            };
            for e in rd {
                let e = e.map_err(|e| Error::io(&d, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                // Temporary files of interrupted writes are not repository files.
                if name.starts_with('.') {
                    continue;
                }
                // Not only regular files: a FIFO, symlink or directory in a snapshot's
                // place, left out, made that snapshot vanish without a word (and prune
                // then freed its data). Listed, its read fails as damage, which check and
                // prune act on, and the listing says what it is (check names one no index
                // names). `metadata` is an lstat: a FIFO is never opened, a symlink never
                // followed. (The config's "kind directory" is the repository's own.)
                let meta = match e.metadata() {
                    Ok(meta) => meta,
                    // Deleted since the directory was read (a prune, a merge): not listed
                    // (hostile pass 9: check failed on an index file replaced meanwhile).
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(Error::io(e.path(), err)),
                };
                if kind != FileKind::Config || !meta.is_dir() {
                    let modified = (meta.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64);
                    out.push(FileInfo {
                        name,
                        size: meta.len(),
                        storage_class: None,
                        modified,
                        not_regular: not_regular(meta.file_type()),
                    });
                }
            }
        }
        // An empty listing of a repository moved away meanwhile is not an empty repository
        // (check would find "no errors" in it). The directory, not the config: `init`
        // lists before it writes the config.
        if !self.root.is_dir() {
            return Err(Error::NoRepository(self.location()));
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.check_root()?;
        let f = open_object(&self.file(kind, name)).map_err(|e| self.err(kind, name, e))?;
        let max = kind.max_size();
        let size = f.metadata().map_err(|e| self.err(kind, name, e))?.len();
        if size > max {
            return Err(super::too_large(kind, name, size));
        }
        // Bounded again while reading: the file may grow after the size was taken.
        let mut buf = buffer(size).map_err(|e| self.err(kind, name, e))?;
        f.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(kind, name, e))?;
        if buf.len() as u64 > max {
            return Err(super::too_large(kind, name, buf.len() as u64));
        }
        Ok(buf)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_root()?;
        let mut f = open_object(&self.file(kind, name)).map_err(|e| self.err(kind, name, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(kind, name, e))?;
        let mut buf = buffer(len).map_err(|e| self.err(kind, name, e))?;
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(kind, name, e))?;
        if buf.len() as u64 != len {
            return Err(Error::corrupt(
                format!("{kind} {name}"),
                format!(
                    "short read: wanted {len} bytes at {offset}, got {}",
                    buf.len()
                ),
            ));
        }
        Ok(buf)
    }

    /// A storage class means nothing to a directory; a retention cannot be kept here.
    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        if how.retention.is_some() {
            return Err(super::no_object_lock(self.location()));
        }
        let dir = self
            .open_dir(kind, name, true)?
            .expect("open_dir creates what is missing");
        let result = (|| -> io::Result<()> {
            use rustix::fs::{renameat, unlinkat, AtFlags};
            // Write aside, fsync, then rename: a crash never leaves a half-written file
            // under a real name.
            let (tmp, mut file) = tempfile_in(&dir, name)?;
            let written = self
                .give(&file)
                .and_then(|_| file.write_all(data))
                .and_then(|_| file.sync_all())
                .and_then(|_| Ok(renameat(&dir, &tmp, &dir, name)?));
            if written.is_err() {
                // A full disk must not also keep the partial file: take it away now.
                let _ = unlinkat(&dir, &tmp, AtFlags::empty());
            }
            written?;
            Ok(rustix::fs::fsync(&dir)?)
        })();
        // A directory that was there a moment ago and is gone: `err` says the repository
        // went away meanwhile.
        result.map_err(|e| self.err(kind, name, e))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let Some(dir) = self.open_dir(kind, name, false)? else {
            return Ok(());
        };
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.err(kind, name, e.into())),
        }
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities {
            temporaries: Some(self),
            special_files: true,
            ..Capabilities::plain()
        }
    }
}

impl Temporaries for LocalBackend {
    fn remove_stale(&self, older_than: std::time::Duration) -> Result<Vec<FileInfo>> {
        use rustix::fs::{openat, Mode, OFlags};
        // Temporaries lie beside the files whose writes they were; each directory is
        // looked into and cleaned through a handle, never through a symlink.
        let mut dirs: Vec<(OwnedFd, PathBuf)> = Vec::new();
        for kind in FileKind::ALL {
            let Some(dir) = self.open_dir(kind, "", false)? else {
                continue;
            };
            let path = self.root.join(kind.dir());
            if kind.fanned_out() {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                for sub in names_in(&dir, &path)? {
                    if let Ok(fd) = openat(&dir, sub.as_str(), flags, Mode::empty()) {
                        dirs.push((fd, path.join(&sub)));
                    }
                }
            }
            dirs.push((dir, path));
        }
        let mut removed = Vec::new();
        for (dir, path) in &dirs {
            for name in names_in(dir, path)? {
                if let Some(f) = remove_if_stale(dir, &name, older_than)
                    .map_err(|e| Error::io(path.join(&name), e))?
                {
                    removed.push(f);
                }
            }
        }
        Ok(removed)
    }
}

/// The names in a directory (by its handle), `.` and `..` left out.
fn names_in(dir: &OwnedFd, path: &Path) -> Result<Vec<String>> {
    let entries = rustix::fs::Dir::read_from(dir).map_err(|e| Error::io(path, e.into()))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(path, e.into()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` if it is the temporary of a write (a regular file named
/// `.….tmp`) at least `older_than` old: younger ones may belong to a write in progress,
/// here or on another host.
fn remove_if_stale(
    dir: &OwnedFd,
    name: &str,
    older_than: std::time::Duration,
) -> io::Result<Option<FileInfo>> {
    use rustix::fs::{statat, unlinkat, AtFlags, FileType};
    if !(name.starts_with('.') && name.ends_with(".tmp")) {
        return Ok(None);
    }
    // Gone since the directory was read: a write that finished (renamed) meanwhile, or
    // another prune's removal (hostile pass 9: prune failed racing a backup).
    let gone = |e: &rustix::io::Errno| *e == rustix::io::Errno::NOENT;
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(e) if gone(&e) => return Ok(None),
        st => st?,
    };
    let modified =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.st_mtime.max(0) as u64);
    let old = modified.elapsed().is_ok_and(|age| age >= older_than);
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || !old {
        return Ok(None);
    }
    match unlinkat(dir, name, AtFlags::empty()) {
        Err(e) if gone(&e) => return Ok(None),
        r => r?,
    }
    Ok(Some(FileInfo {
        name: name.to_string(),
        size: st.st_size as u64,
        storage_class: None,
        modified: None,
        not_regular: None,
    }))
}

/// A new temporary file beside `name` in `dir` (never through a symlink): its name and
/// the open file.
fn tempfile_in(dir: &OwnedFd, name: &str) -> io::Result<(String, File)> {
    use rand::Rng;
    use rustix::fs::{openat, Mode, OFlags};
    let suffix: u64 = rand::thread_rng().gen();
    let tmp = format!(".{name}.{suffix:016x}.tmp");
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(dir, &tmp, flags, Mode::RUSR | Mode::WUSR)?;
    Ok((tmp, File::from(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile pass: planted index files within their bound were allocated whole, several
    /// at once, and under a memory limit the process aborted instead of failing.
    #[test]
    fn a_buffer_that_cannot_be_held_is_an_error_not_an_abort() {
        let e = buffer(u64::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("cannot hold"), "{e}");
        assert!(buffer(1 << 20).unwrap().capacity() >= 1 << 20);
    }

    /// Issue 31: `init` once spread a repository among the files of any directory.
    #[test]
    fn create_refuses_a_directory_with_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        let b = LocalBackend::new(dir.path());
        let e = b.create().unwrap_err();
        assert!(
            matches!(&e, Error::NotEmpty { found, .. } if found.contains("notes.txt")),
            "{e}"
        );
        assert!(!dir.path().join("keys").exists(), "nothing made");
        fs::remove_file(dir.path().join("notes.txt")).unwrap();
        // What a killed init left, and a file system's lost+found, are no obstacle.
        fs::create_dir(dir.path().join("keys")).unwrap();
        b.create().unwrap();
        assert!(dir.path().join("data/ff").is_dir());
    }

    /// The refusal names five foreign entries and counts the rest.
    #[test]
    fn the_refusal_names_five_entries_and_counts_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        let found = |b: &LocalBackend| match b.create().unwrap_err() {
            Error::NotEmpty { found, .. } => found,
            e => panic!("{e}"),
        };
        for i in 0..5 {
            fs::write(dir.path().join(format!("f{i}")), "").unwrap();
        }
        let five = found(&b);
        assert!(five.contains("\"f4\"") && !five.contains("more"), "{five}");
        for i in 5..7 {
            fs::write(dir.path().join(format!("f{i}")), "").unwrap();
        }
        let seven = found(&b);
        assert!(seven.ends_with(" and 2 more"), "{seven}");
        assert!(
            seven.contains("\"f4\"") && !seven.contains("\"f5\""),
            "{seven}"
        );
    }

    #[test]
    fn write_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        b.write(FileKind::Data, "abcdef", b"0123456789").unwrap();
        b.write(FileKind::Snapshot, "s1", b"x").unwrap();
        assert_eq!(b.read(FileKind::Data, "abcdef").unwrap(), b"0123456789");
        assert_eq!(
            b.read_range(FileKind::Data, "abcdef", 2, 3).unwrap(),
            b"234"
        );
        assert!(b.read_range(FileKind::Data, "abcdef", 8, 3).is_err());
        assert!(dir.path().join("data/ab/abcdef").is_file());
        let list = b.list(FileKind::Data).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let modified = list[0].modified.expect("the file's time");
        assert!((now - 60..=now).contains(&modified), "{modified} vs {now}");
        assert_eq!(
            list,
            vec![FileInfo {
                name: "abcdef".into(),
                size: 10,
                storage_class: None,
                modified: Some(modified),
                not_regular: None,
            }]
        );
        b.delete(FileKind::Data, "abcdef").unwrap();
        assert!(b.list(FileKind::Data).unwrap().is_empty());
        assert!(matches!(
            b.read(FileKind::Data, "abcdef"),
            Err(Error::NotFound { .. })
        ));
    }

    /// A repository moved away is not re-created by a write: the write fails as "no
    /// repository" and leaves nothing behind; a missing kind directory (a repository made
    /// before that kind existed) is created while the config is there.
    #[test]
    fn writes_never_recreate_a_vanished_repository() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        fs::remove_dir(root.join("wal")).unwrap();
        b.write(FileKind::Wal, "w1", b"x").unwrap();
        assert!(root.join("wal/w1").is_file());

        fs::rename(&root, dir.path().join("away")).unwrap();
        for kind in [
            FileKind::Data,
            FileKind::Index,
            FileKind::Wal,
            FileKind::Snapshot,
        ] {
            let e = b.write(kind, "abcdef", b"x").unwrap_err();
            assert!(matches!(e, Error::NoRepository(_)), "{kind}: {e}");
        }
        assert!(!root.exists(), "a write re-created {}", root.display());

        // Emptied in place (the config gone, a directory missing): none is made.
        fs::rename(dir.path().join("away"), &root).unwrap();
        fs::remove_file(root.join("config")).unwrap();
        fs::remove_dir(root.join("data/ff")).unwrap();
        let e = b.write(FileKind::Data, "ffeedd", b"x").unwrap_err();
        assert!(matches!(e, Error::NoRepository(_)), "{e}");
        assert!(!root.join("data/ff").exists());
    }

    /// Hostile pass (issue 25): a repository moved away after it was opened is no
    /// repository to listings and reads, not an empty one or one with missing files.
    #[test]
    fn a_vanished_repository_is_said_to_be_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        b.write(FileKind::Snapshot, "ab", b"s").unwrap();
        assert_eq!(b.list(FileKind::Snapshot).unwrap().len(), 1);
        assert!(matches!(
            b.read(FileKind::Snapshot, "cd"),
            Err(Error::NotFound { .. })
        ));
        fs::rename(&root, dir.path().join("away")).unwrap();
        for kind in [FileKind::Snapshot, FileKind::Data, FileKind::Key] {
            let e = b.list(kind).unwrap_err();
            assert!(matches!(e, Error::NoRepository(_)), "{kind}: {e}");
        }
        let e = b.read(FileKind::Snapshot, "ab").unwrap_err();
        assert!(matches!(e, Error::NoRepository(_)), "{e}");
        let e = b.read_range(FileKind::Snapshot, "ab", 0, 1).unwrap_err();
        assert!(matches!(e, Error::NoRepository(_)), "{e}");
    }

    /// Hostile pass (issue 26): a file over its kind's size bound (a sparse one here) is
    /// refused before it is read, so whoever can write to the storage cannot make every
    /// reader allocate what it likes; one at the bound reads.
    #[test]
    fn a_file_larger_than_its_kind_can_be_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        for kind in [
            FileKind::Lock,
            FileKind::Snapshot,
            FileKind::Index,
            FileKind::Root,
        ] {
            b.write(kind, "ab", b"x").unwrap();
            let f = fs::OpenOptions::new()
                .write(true)
                .open(root.join(kind.path("ab")))
                .unwrap();
            f.set_len(kind.max_size() + 1).unwrap();
            let e = b.read(kind, "ab").unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{kind}: {e}");
            assert!(e.to_string().contains("larger than"), "{kind}: {e}");
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .open(root.join("locks/ab"))
            .unwrap();
        f.set_len(FileKind::Lock.max_size()).unwrap();
        assert_eq!(
            b.read(FileKind::Lock, "ab").unwrap().len() as u64,
            FileKind::Lock.max_size()
        );
        let mem = crate::backend::MemBackend::new();
        mem.write(
            FileKind::Key,
            "k",
            &vec![0; FileKind::Key.max_size() as usize + 1],
        )
        .unwrap();
        assert!(mem
            .read(FileKind::Key, "k")
            .unwrap_err()
            .to_string()
            .contains("larger than"));
        let at_bound = vec![0; FileKind::Key.max_size() as usize];
        mem.write(FileKind::Key, "k", &at_bound).unwrap();
        assert!(mem.read(FileKind::Key, "k").is_ok());
    }

    /// Hostile pass (issue 25): a FIFO, a device or a symlink put in a pack's place is an
    /// error at once (a FIFO hung restore forever), and a symlinked kind directory takes
    /// no write and gives no listing.
    #[test]
    fn only_regular_files_are_read_and_no_symlinked_directory_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        b.write(FileKind::Data, "aa01", b"pack").unwrap();
        nix::unistd::mkfifo(&root.join("data/aa/aa02"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink(root.join("data/aa/aa01"), root.join("data/aa/aa03")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("data/aa/aa04")).unwrap();
        fs::create_dir(root.join("data/aa/aa05")).unwrap();
        for (name, what) in [
            ("aa02", "a FIFO"),
            ("aa03", "a symlink"),
            ("aa04", "a symlink"),
            ("aa05", "a directory"),
        ] {
            let e = b.read(FileKind::Data, name).unwrap_err().to_string();
            assert!(e.contains(what), "{name}: {e}");
            let e = b.read_range(FileKind::Data, name, 0, 1).unwrap_err();
            assert!(e.to_string().contains(what), "{name}: {e}");
        }
        assert_eq!(b.read(FileKind::Data, "aa01").unwrap(), b"pack");
        if nix::unistd::geteuid().is_root() {
            use nix::sys::stat::{makedev, mknod, Mode, SFlag};
            let dev = root.join("data/aa/aa06");
            mknod(&dev, SFlag::S_IFCHR, Mode::S_IRUSR, makedev(1, 3)).unwrap();
            let e = b.read(FileKind::Data, "aa06").unwrap_err().to_string();
            assert!(e.contains("a device"), "{e}");
            fs::remove_file(dev).unwrap();
        }
        // Listed, so that what reads them finds the damage (left out, a snapshot vanished).
        let mut listed: Vec<String> = (b.list(FileKind::Data).unwrap().into_iter())
            .map(|f| f.name)
            .collect();
        listed.sort();
        assert_eq!(listed, ["aa01", "aa02", "aa03", "aa04", "aa05"]);
        let mut kinds: Vec<(String, Option<&str>)> = (b.list(FileKind::Data).unwrap())
            .into_iter()
            .map(|f| (f.name, f.not_regular))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                ("aa01".into(), None),
                ("aa02".into(), Some("a FIFO")),
                ("aa03".into(), Some("a symlink")),
                ("aa04".into(), Some("a symlink")),
                ("aa05".into(), Some("a directory")),
            ]
        );
        assert!(matches!(
            b.read(FileKind::Data, "aa02"),
            Err(Error::Corrupt { .. })
        ));

        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::remove_dir(root.join("snapshots")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("snapshots")).unwrap();
        fs::remove_dir(root.join("data/bb")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("data/bb")).unwrap();
        let e = b.write(FileKind::Snapshot, "s1", b"x").unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        let e = b.write(FileKind::Data, "bb01", b"x").unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        let e = b.list(FileKind::Snapshot).unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        let e = b.list(FileKind::Data).unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "written through"
        );
    }

    /// Attacker pass (issue 25): the repository's owner swaps a kind directory with a
    /// symlink again and again while root writes; root's check-then-write by path then
    /// created files wherever the symlink pointed. Through directory handles, every write
    /// lands in the repository (or fails), never outside.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_write_takes_nothing_outside() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let link = root.join("snapshots.lnk");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, real) = (stop.clone(), root.join("snapshots"));
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let cwd = rustix::fs::CWD;
                    let exchange = rustix::fs::RenameFlags::EXCHANGE;
                    if rustix::fs::renameat_with(cwd, &real, cwd, &link, exchange).is_ok() {
                        swaps += 1;
                    }
                }
                swaps
            })
        };
        for i in 0..400 {
            let _ = b.write(FileKind::Snapshot, &format!("{i:064x}"), b"x");
            let _ = b.delete(FileKind::Snapshot, &format!("{:064x}", i / 2));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(swapper.join().unwrap() > 100, "the race did not run");
        let leaked: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            leaked.is_empty(),
            "written outside the repository: {leaked:?}"
        );
    }

    /// Attacker re-check (issue 25): the owner of the directory above the repository swaps
    /// the repository's path for a symlink to a directory of root's mid-command; root's
    /// writes and deletes followed it. Now they are refused, and a directory in a
    /// snapshot's place is listed (and read as damage), not left out.
    #[test]
    fn a_repository_path_swapped_mid_command_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "config", b"c").unwrap();
        fs::create_dir(root.join("snapshots/ab")).unwrap();
        assert_eq!(b.list(FileKind::Snapshot).unwrap().len(), 1);
        let e = b.read(FileKind::Snapshot, "ab").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        fs::remove_dir(root.join("snapshots/ab")).unwrap();

        let victim = dir.path().join("victim");
        let other = LocalBackend::new(&victim);
        other.create().unwrap();
        fs::write(victim.join("config"), "c").unwrap();
        fs::write(victim.join("index/.old.tmp"), "root's").unwrap();
        fs::rename(&root, dir.path().join("away")).unwrap();
        std::os::unix::fs::symlink(&victim, &root).unwrap();
        let e = b.write(FileKind::Snapshot, "cd", b"x").unwrap_err();
        assert!(e.to_string().contains("no longer the directory"), "{e}");
        assert!(b.delete(FileKind::Snapshot, "cd").is_err());
        assert!(b.remove_stale(std::time::Duration::ZERO).is_err());
        assert!(b.list(FileKind::Snapshot).is_err());
        assert!(!victim.join("snapshots/cd").exists());
        assert!(victim.join("index/.old.tmp").exists());
    }
}
