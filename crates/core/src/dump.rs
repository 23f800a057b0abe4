//! `dump`: a snapshot's file, or a directory as a tar stream, written to any writer.
//!
//! The archive holds what a restore would write: every entry with its mode, owner (ids and
//! names), modification time, symlink targets, devices, fifos, hard links (a later path of
//! the same file is a link to the first) and extended attributes (PAX `SCHILY.xattr.*`
//! records, which GNU tar restores with `--xattrs`), times to the nanosecond (PAX `mtime`).
//! Sparse files are archived dense. Names that could escape their directory are left out,
//! as restore leaves them out.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::restore::{ContentReader, Recreate};
use crate::walk;

/// What a dump wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DumpReport {
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Devices left out (`no_devices`), snapshot paths (serialized lossily).
    #[serde(serialize_with = "lossy_paths")]
    pub skipped_devices: Vec<PathBuf>,
}

fn lossy_paths<S: serde::Serializer>(paths: &[PathBuf], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

/// Writes the directory (or file) at `path` of `snapshot` to `out` as a tar archive whose
/// names start with that directory's own name (the whole snapshot's relative paths for
/// `/`). With `recreate.no_owner` every entry is the dumping user's and loses its set-id
/// bits and file capability; `no_xattrs` leaves attributes out, `no_devices` devices.
pub fn tar(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &Path,
    recreate: Recreate,
    out: &mut dyn Write,
) -> Result<DumpReport> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut dump = Dump {
        repo,
        // Archive names start at the dumped entry's own name.
        base: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        links: HashMap::new(),
        recreate,
        report: DumpReport::default(),
    };
    let io = |e| Error::io("the archive", e);
    let limits = walk::Limits::of(snapshot);
    match walk::lookup(repo, &snapshot.tree, path)? {
        // The whole snapshot: its top-level entries and everything below.
        None => {
            walk::walk(repo, &snapshot.tree, limits, &mut |rel, node| {
                dump.entry(&mut builder, rel, node)?;
                Ok(true)
            })?;
        }
        Some(node) => {
            let name = PathBuf::from(std::ffi::OsStr::from_bytes(&node.name));
            dump.entry(&mut builder, &name, &node)?;
            if let Some(tree) = node.subtree {
                walk::walk(repo, &tree, limits, &mut |rel, n| {
                    dump.entry(&mut builder, &name.join(rel), n)?;
                    Ok(true)
                })?;
            }
        }
    }
    builder.finish().map_err(io)?;
    Ok(dump.report)
}

struct Dump<'r> {
    repo: &'r Repository,
    /// What archive names are relative to in the snapshot, for messages.
    base: PathBuf,
    /// The first path of each multiply linked file, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    recreate: Recreate,
    report: DumpReport,
}

impl Dump<'_> {
    fn entry(&mut self, b: &mut tar::Builder<&mut dyn Write>, path: &Path, n: &Node) -> Result<()> {
        let io = |e| Error::io(path, e);
        if self.recreate.skips(n) {
            self.report.skipped_devices.push(self.base.join(path));
            return Ok(());
        }
        let mut h = tar::Header::new_gnu();
        self.set_owner(&mut h, n);
        h.set_mtime(n.mtime.sec.max(0) as u64);
        h.set_size(0);
        // The header holds whole seconds; a PAX record carries the nanoseconds, and one per
        // extended attribute carries those.
        let mtime = n.mtime.pax_decimal();
        let mut records: Vec<(String, &[u8])> = vec![("mtime".into(), mtime.as_bytes())];
        let keep = |x: &&crate::repo::tree::Xattr| {
            !self.recreate.no_xattrs
                && (!self.recreate.no_owner || x.name != b"security.capability")
        };
        for x in n.xattrs.iter().filter(keep) {
            let name = String::from_utf8_lossy(&x.name);
            records.push((format!("SCHILY.xattr.{name}"), &x.value[..]));
        }
        b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(io)?;
        self.report.entries += 1;
        match n.kind {
            NodeKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, std::io::empty()).map_err(io)
            }
            NodeKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                let target = std::ffi::OsStr::from_bytes(n.target.as_deref().unwrap_or(b""));
                b.append_link(&mut h, path, target).map_err(io)
            }
            NodeKind::File => self.file(b, h, path, n),
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                h.set_entry_type(match n.kind {
                    NodeKind::Fifo => tar::EntryType::Fifo,
                    NodeKind::Chardev => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                let dev = n.rdev as libc::dev_t;
                h.set_device_major(libc::major(dev)).map_err(io)?;
                h.set_device_minor(libc::minor(dev)).map_err(io)?;
                b.append_data(&mut h, path, std::io::empty()).map_err(io)
            }
            // A socket is not a file an archive can hold (restore recreates none either).
            NodeKind::Socket => {
                self.report.entries -= 1;
                Ok(())
            }
        }
    }

    /// Mode and owner: the node's, or with `no_owner` the dumping user's and no set-id
    /// bits (a directory's setgid only passes its group on, and stays).
    fn set_owner(&self, h: &mut tar::Header, n: &Node) {
        if !self.recreate.no_owner {
            h.set_mode(n.mode);
            h.set_uid(u64::from(n.uid));
            h.set_gid(u64::from(n.gid));
            if let Some(user) = &n.user {
                let _ = h.set_username(user);
            }
            if let Some(group) = &n.group {
                let _ = h.set_groupname(group);
            }
            return;
        }
        let set_id = if n.kind == NodeKind::Dir { 0 } else { 0o6000 };
        h.set_mode(n.mode & !set_id);
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        h.set_uid(u64::from(uid.as_raw()));
        h.set_gid(u64::from(gid.as_raw()));
        if let Some(user) = crate::util::user_name(uid.as_raw()) {
            let _ = h.set_username(&user);
        }
        if let Some(group) = crate::util::group_name(gid.as_raw()) {
            let _ = h.set_groupname(&group);
        }
    }

    fn file(
        &mut self,
        b: &mut tar::Builder<&mut dyn Write>,
        mut h: tar::Header,
        path: &Path,
        n: &Node,
    ) -> Result<()> {
        let io = |e| Error::io(path, e);
        if n.nlink > 1 {
            let key = (n.device, n.inode);
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                return b.append_link(&mut h, path, first).map_err(io);
            }
            self.links.insert(key, path.to_path_buf());
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(n.size);
        let mut content = ContentReader::new(self.repo, n)?;
        // Exactly the size the header states, or the dump fails: content of another length
        // (damage) would shift every entry after it.
        n.check_size(&self.base.join(path), content.len())?;
        let mut exact = std::io::Read::take(&mut content, n.size);
        let appended = b.append_data(&mut h, path, &mut exact);
        if let Some(e) = content.error.take() {
            return Err(e);
        }
        appended.map_err(io)?;
        self.report.bytes += n.size;
        Ok(())
    }
}
