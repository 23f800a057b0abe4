//! A repository in a local directory.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, FileInfo, FileKind};
use crate::error::{Error, Result};

/// A repository in a local directory (format-spec §3 gives the layout).
pub struct LocalBackend {
    root: PathBuf,
    /// Whom new files and directories are given to: see [`LocalBackend::owner`].
    owner: std::sync::OnceLock<Option<(u32, u32)>>,
}

impl LocalBackend {
    /// The repository at `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            owner: std::sync::OnceLock::new(),
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

    /// Gives a new file or directory to the repository's owner (see [`Self::owner`]).
    fn give(&self, path: &Path) -> io::Result<()> {
        match self.owner() {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
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
    use std::os::unix::fs::FileTypeExt;
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
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        let what = match () {
            _ if t.is_fifo() => "a FIFO",
            _ if t.is_dir() => "a directory",
            _ if t.is_char_device() || t.is_block_device() => "a device",
            _ => "not a regular file",
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}, not a repository file"),
        ));
    }
    Ok(f)
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

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Repository directories are the owner's alone, whatever the umask: file names and sizes
/// say something about the data too.
fn create_dirs(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl LocalBackend {
    /// The directory a file of `kind` goes in, created if missing, but only inside a
    /// repository that is still there: nothing but `init` creates a repository, and a
    /// write into one that was moved away must fail (PostgreSQL keeps a WAL segment whose
    /// push failed; it deletes one whose push "succeeded" into a re-created skeleton).
    /// Each level is made on its own, never recursively, so a repository that vanishes
    /// between the check and the mkdir is not re-created either.
    fn ensure_dir(&self, kind: FileKind, dir: &Path) -> Result<()> {
        let top = self.root.join(kind.dir());
        for d in [top.as_path(), dir] {
            refuse_symlink(d).map_err(|e| Error::io(d, e))?;
        }
        if dir.is_dir() {
            return Ok(());
        }
        if !self.exists()? {
            return Err(Error::NoRepository(self.location()));
        }
        for d in [top.as_path(), dir] {
            match fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => self.give(d).map_err(|e| Error::io(d, e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::NoRepository(self.location()))
                }
                Err(e) => return Err(Error::io(d, e)),
            }
        }
        Ok(())
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
    /// writes never create one while the config is missing (see `ensure_dir`).
    fn create(&self) -> Result<()> {
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
                // Not only regular files: a FIFO or symlink in a snapshot's place, left out,
                // made that snapshot vanish without a word (and prune then freed its data).
                // Listed, its read fails as damage, which check and prune act on.
                let meta = e.metadata().map_err(|err| Error::io(e.path(), err))?;
                if !meta.is_dir() || kind.fanned_out() {
                    out.push(FileInfo {
                        name,
                        size: meta.len(),
                        storage_class: None,
                        modified: None,
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
        let mut buf = Vec::new();
        open_object(&self.file(kind, name))
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| self.err(kind, name, e))?;
        Ok(buf)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = open_object(&self.file(kind, name)).map_err(|e| self.err(kind, name, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(kind, name, e))?;
        let mut buf = Vec::with_capacity(len as usize);
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

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.file(kind, name);
        let dir = path.parent().expect("repository files live in a directory");
        self.ensure_dir(kind, dir)?;
        let result = (|| -> io::Result<()> {
            // Write aside, fsync, then rename: a crash never leaves a half-written file
            // under a real name.
            let (tmp, mut file) = tempfile_in(dir, name)?;
            let written = self
                .give(&tmp)
                .and_then(|_| file.write_all(data))
                .and_then(|_| file.sync_all())
                .and_then(|_| fs::rename(&tmp, &path));
            if written.is_err() {
                // A full disk must not also keep the partial file: take it away now.
                let _ = fs::remove_file(&tmp);
            }
            written?;
            sync_dir(dir)
        })();
        // A directory that was there a moment ago and is gone: `err` says the repository
        // went away meanwhile.
        result.map_err(|e| self.err(kind, name, e))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        match fs::remove_file(self.file(kind, name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(kind, name, e)),
        }
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<Vec<FileInfo>> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        // Temporaries lie beside the files whose writes they were.
        for kind in FileKind::ALL {
            let dir = self.root.join(kind.dir());
            if kind.fanned_out() {
                if let Ok(rd) = fs::read_dir(&dir) {
                    dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
            }
            dirs.push(dir);
        }
        dirs.sort();
        dirs.dedup();
        let mut removed = Vec::new();
        for dir in dirs {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.starts_with('.') && name.ends_with(".tmp")) {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
                // Younger ones may belong to a write in progress, here or on another host.
                if meta.is_file() && age.is_some_and(|a| a >= older_than) {
                    fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
                    removed.push(FileInfo {
                        name,
                        size: meta.len(),
                        storage_class: None,
                        modified: None,
                    });
                }
            }
        }
        Ok(removed)
    }
}

fn tempfile_in(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    use rand::Rng;
    let suffix: u64 = rand::thread_rng().gen();
    let path = dir.join(format!(".{name}.{suffix:016x}.tmp"));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, f))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            list,
            vec![FileInfo {
                name: "abcdef".into(),
                size: 10,
                storage_class: None,
                modified: None,
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
        // Listed, so that what reads them finds the damage (left out, a snapshot vanished).
        let mut listed: Vec<String> = (b.list(FileKind::Data).unwrap().into_iter())
            .map(|f| f.name)
            .collect();
        listed.sort();
        assert_eq!(listed, ["aa01", "aa02", "aa03", "aa04", "aa05"]);
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
}
