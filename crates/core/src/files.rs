//! The kinds of files a repository holds (format-spec §1): the vocabulary of its layout,
//! below both the backends that store them and the errors that name them.

use std::fmt;

/// Whether `name` can name a repository file: 64 lower-case hex digits (format-spec §1).
/// Readers ignore every other name, all of them alike: one that check skipped but prune
/// read would block prune for good.
pub fn is_file_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The kinds of files in a repository; each has its own directory or prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The one `config` file.
    Config,
    /// Key files, one per password.
    Key,
    /// Snapshot manifests.
    Snapshot,
    /// Index files.
    Index,
    /// Packs of data blobs.
    Data,
    /// Packs of tree blobs.
    Tree,
    /// Lock files.
    Lock,
    /// Audit records: what verification and restore drills found.
    Audit,
    /// Root records of applications (format version 4 on), named by what they record.
    Root,
    /// WAL records of format versions 1-3, one per archived PostgreSQL file (read as
    /// roots; version 4 keeps them as root records).
    Wal,
    /// Mark records (format version 5 on): the packs an operation took out of the live
    /// set, read by backups instead of every other writer's index file.
    Marks,
}

impl FileKind {
    /// Every kind, `config` first.
    pub const ALL: [FileKind; 11] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Data,
        FileKind::Tree,
        FileKind::Lock,
        FileKind::Audit,
        FileKind::Root,
        FileKind::Wal,
        FileKind::Marks,
    ];

    /// The directory (or key prefix) files of this kind live under.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Data => "data",
            FileKind::Tree => "tree",
            FileKind::Lock => "locks",
            FileKind::Audit => "audit",
            FileKind::Root => "roots",
            FileKind::Wal => "wal",
            FileKind::Marks => "marks",
        }
    }

    /// The largest file of this kind a reader accepts (format-spec §1): a backend's `read`
    /// refuses a bigger one from its size before holding it, so that whoever can write to
    /// the storage cannot make a reader allocate (or read) what it likes; writers refuse
    /// to store one. Well above what writers make: a snapshot is a few KiB (its paths,
    /// excludes and a repair's list of what it lost, cut at 1 MiB); an index file a backup
    /// writes holds at most 65,536 entries of 50-100 bytes, one prune and repair write at
    /// most about 2^20 (`ENTRIES_PER_INDEX_FILE` in `repo`, ~105 MB).
    pub const fn max_size(self) -> u64 {
        const MIB: u64 = 1 << 20;
        match self {
            FileKind::Config | FileKind::Key | FileKind::Lock => MIB,
            FileKind::Snapshot => 8 * MIB,
            FileKind::Audit | FileKind::Root | FileKind::Wal | FileKind::Marks => 64 * MIB,
            FileKind::Index => 256 * MIB,
            FileKind::Data | FileKind::Tree => 2048 * MIB,
        }
    }

    /// Packs are spread over 256 sub-directories by the first two hex digits of their name.
    pub fn fanned_out(self) -> bool {
        matches!(self, FileKind::Data | FileKind::Tree)
    }

    /// Relative path of a file of this kind, with `/` separators.
    pub fn path(self, name: &str) -> String {
        match self {
            FileKind::Config => "config".to_string(),
            k if k.fanned_out() => format!("{}/{}/{}", k.dir(), &name[..2.min(name.len())], name),
            k => format!("{}/{}", k.dir(), name),
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Snapshot => "snapshot",
            FileKind::Index => "index",
            FileKind::Data => "data pack",
            FileKind::Tree => "tree pack",
            FileKind::Lock => "lock",
            FileKind::Audit => "audit record",
            FileKind::Root => "root record",
            FileKind::Wal => "WAL record",
            FileKind::Marks => "mark record",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds format-spec §1 gives; a reader's allocation rests on them.
    #[test]
    fn size_bounds_are_the_specified_ones() {
        const MIB: u64 = 1 << 20;
        let bounds: Vec<u64> = FileKind::ALL.iter().map(|k| k.max_size()).collect();
        // config, key, snapshot, index, data, tree, lock, audit, root, wal, marks
        assert_eq!(
            bounds,
            [
                MIB,
                MIB,
                8 * MIB,
                256 * MIB,
                2048 * MIB,
                2048 * MIB,
                MIB,
                64 * MIB,
                64 * MIB,
                64 * MIB,
                64 * MIB
            ]
        );
        assert!(is_file_name(&"ab".repeat(32)));
        assert!(!is_file_name(&"AB".repeat(32)));
        assert!(!is_file_name(&"ab".repeat(31)));
        assert!(!is_file_name(&format!("{}g", "a".repeat(63))));
    }
}
