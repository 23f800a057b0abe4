//! Trees: one CBOR blob per directory, entries sorted by raw name bytes.

use serde::{Deserialize, Serialize};

use crate::id::{BlobId, TreeId};

/// One directory's entries (format-spec §9).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tree {
    /// The entries, sorted by name once encoded.
    pub entries: Vec<Node>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
/// What a tree entry is.
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    Chardev,
    /// A block device.
    Blockdev,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timespec {
    /// Whole seconds.
    pub sec: i64,
    /// Nanoseconds, below 10⁹.
    pub nsec: u32,
}

impl Timespec {
    /// Nanoseconds since the epoch.
    pub fn as_nanos(&self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }

    /// The decimal number of seconds a PAX `mtime` record holds: `-1.5` is 1.5 s before
    /// the epoch, which is `sec` -2 and `nsec` 500000000.
    pub fn pax_decimal(&self) -> String {
        let nanos = self.as_nanos();
        let (sign, abs) = if nanos < 0 {
            ("-", -nanos)
        } else {
            ("", nanos)
        };
        format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
    }
}

/// An extended attribute.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Xattr {
    /// Its name, raw bytes.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Its value, raw bytes.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// One entry of a directory and its metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    /// The entry's name, raw bytes (one path component).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits, including set-id and sticky bits (st_mode & 0o7777).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Owner's user name, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Owner's group name, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time.
    pub mtime: Timespec,
    /// Status change time.
    pub ctime: Timespec,
    /// Size in bytes (files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Inode number at backup time (hard links share it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    /// Device of the file system it was on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    /// Number of hard links.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nlink: u64,
    /// File contents, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// A small file's content itself, in place of `content` (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A directory's tree.
    pub subtree: Option<TreeId>,
    /// Symlink target, raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub target: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Device number of character and block devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// The file had holes (fewer blocks allocated than its size); restore keeps zero runs
    /// as holes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sparse: bool,
}

/// Where a file's content is: in blobs, or inline in its tree node (format version 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileContent {
    /// Its blobs, in order (none for an empty file).
    Blobs(Vec<BlobId>),
    /// Its bytes.
    Inline(Vec<u8>),
}

impl Node {
    /// A file's content as stored: its inline bytes, else its blobs.
    pub fn file_content(&self) -> FileContent {
        match &self.data {
            Some(bytes) => FileContent::Inline(bytes.clone()),
            None => FileContent::Blobs(self.content.clone()),
        }
    }

    /// Refuses content of another length than `size` (`content_len`: the inline bytes, or
    /// the blobs' lengths): a writer could otherwise make the bytes restored, dumped or
    /// mounted differ from what the listing and the verification promise.
    pub fn check_size(&self, file: &std::path::Path, content_len: u64) -> crate::Result<()> {
        if content_len == self.size {
            return Ok(());
        }
        Err(crate::Error::SizeMismatch {
            file: file.display().to_string(),
            size: self.size,
            content: content_len,
        })
    }

    /// Sets a file's content: `data` or `content`, never both.
    pub fn set_content(&mut self, content: FileContent) {
        (self.content, self.data) = match content {
            FileContent::Blobs(ids) => (ids, None),
            FileContent::Inline(bytes) => (Vec::new(), Some(bytes)),
        };
    }

    /// An entry with no metadata yet.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            size: 0,
            inode: 0,
            device: 0,
            nlink: 0,
            content: Vec::new(),
            data: None,
            subtree: None,
            target: None,
            xattrs: Vec::new(),
            rdev: 0,
            sparse: false,
        }
    }
}

impl Tree {
    /// Canonical encoding: entries sorted by raw name bytes, so equal directories give equal
    /// bytes and therefore equal tree ids.
    pub fn encode(&mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut buf = Vec::new();
        ciborium::into_writer(&*self, &mut buf).expect("CBOR into memory");
        buf
    }

    /// The tree in `bytes` (tree `id`, named in the error).
    pub fn decode(bytes: &[u8], id: &TreeId) -> crate::Result<Self> {
        ciborium::from_reader(bytes)
            .map_err(|e| crate::Error::corrupt(format!("tree {id}"), format!("CBOR: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_1970_keep_their_fraction() {
        let t = |sec, nsec| Timespec { sec, nsec };
        assert_eq!(
            t(-301233601, 500_000_000).pax_decimal(),
            "-301233600.500000000"
        );
        assert_eq!(t(-1, 500_000_000).pax_decimal(), "-0.500000000");
        assert_eq!(t(-2, 0).pax_decimal(), "-2.000000000");
        assert_eq!(t(5, 7).pax_decimal(), "5.000000007");
    }
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(any::<u8>(), 1..40),
            0u32..0o7777,
            any::<(u32, u32, i64, u32, u64)>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        )
            .prop_map(
                |(name, mode, (uid, gid, sec, nsec, size), target, content, sparse, data)| {
                    let mut n = Node::new(
                        name,
                        if target.is_some() {
                            NodeKind::Symlink
                        } else {
                            NodeKind::File
                        },
                    );
                    n.mode = mode;
                    n.uid = uid;
                    n.gid = gid;
                    n.mtime = Timespec {
                        sec,
                        nsec: nsec % 1_000_000_000,
                    };
                    n.size = size;
                    n.target = target;
                    n.content = content.into_iter().map(BlobId).collect();
                    if n.content.is_empty() && n.target.is_none() {
                        n.data = data;
                    }
                    n.sparse = sparse;
                    n.xattrs = vec![Xattr {
                        name: b"user.k".to_vec(),
                        value: vec![0, 255],
                    }];
                    n
                },
            )
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..10)) {
            let mut t = Tree { entries: nodes };
            let bytes = t.encode();
            let back = Tree::decode(&bytes, &BlobId([0; 32])).unwrap();
            prop_assert_eq!(&back, &t);
            let mut again = back.clone();
            prop_assert_eq!(again.encode(), bytes);
        }
    }

    #[test]
    fn order_does_not_change_encoding() {
        let a = Node::new(b"a".to_vec(), NodeKind::File);
        let b = Node::new(vec![0xff, 0x01], NodeKind::Dir);
        let mut t1 = Tree {
            entries: vec![a.clone(), b.clone()],
        };
        let mut t2 = Tree {
            entries: vec![b, a],
        };
        assert_eq!(t1.encode(), t2.encode());
    }
}
