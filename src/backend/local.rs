//! A repository in a local directory.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Backend, FileInfo, FileKind};
use crate::error::{Error, Result};

pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    fn file(&self, kind: FileKind, name: &str) -> PathBuf {
        self.root.join(kind.path(name))
    }

    fn err(kind: FileKind, name: &str, e: io::Error) -> Error {
        let object = format!("{kind} {name}");
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound { object }
        } else {
            Error::Backend { object, source: e }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.root.join("config").is_file())
    }

    fn create(&self) -> Result<()> {
        for kind in [
            FileKind::Key,
            FileKind::Snapshot,
            FileKind::Index,
            FileKind::Data,
            FileKind::Tree,
            FileKind::Lock,
        ] {
            let dir = self.root.join(kind.dir());
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let dir = self.root.join(kind.dir());
        let mut out = Vec::new();
        let mut dirs = vec![dir.clone()];
        if kind.fanned_out() {
            dirs.clear();
            match fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.map_err(|e| Error::io(&dir, e))?;
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
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
                let meta = e.metadata().map_err(|err| Error::io(e.path(), err))?;
                if meta.is_file() {
                    out.push(FileInfo {
                        name,
                        size: meta.len(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        fs::read(self.file(kind, name)).map_err(|e| Self::err(kind, name, e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.file(kind, name)).map_err(|e| Self::err(kind, name, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Self::err(kind, name, e))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| Self::err(kind, name, e))?;
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
        let result = (|| -> io::Result<()> {
            fs::create_dir_all(dir)?;
            // Write aside, fsync, then rename: a crash never leaves a half-written file
            // under a real name.
            let mut tmp = tempfile_in(dir, name)?;
            tmp.1.write_all(data)?;
            tmp.1.sync_all()?;
            fs::rename(&tmp.0, &path)?;
            sync_dir(dir)
        })();
        result.map_err(|e| Self::err(kind, name, e))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        match fs::remove_file(self.file(kind, name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::err(kind, name, e)),
        }
    }
}

fn tempfile_in(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    use rand::Rng;
    let suffix: u64 = rand::thread_rng().gen();
    let path = dir.join(format!(".{name}.{suffix:016x}.tmp"));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
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
                size: 10
            }]
        );
        b.delete(FileKind::Data, "abcdef").unwrap();
        assert!(b.list(FileKind::Data).unwrap().is_empty());
        assert!(matches!(
            b.read(FileKind::Data, "abcdef"),
            Err(Error::NotFound { .. })
        ));
    }
}
