//! Index files: which blobs live in which packs.

use serde::{Deserialize, Serialize};

use super::pack::{BlobEntry, BlobKind};
use crate::id::{IndexId, PackId};

/// `index/<id>`: an encrypted CBOR [`IndexFile`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexFile {
    /// Index format version (1).
    pub version: u32,
    /// Index files whose content this one includes (written by prune); readers may ignore
    /// those once this one is present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<IndexId>,
    /// The packs this file indexes.
    pub packs: Vec<IndexedPack>,
    /// Packs marked for deletion by prune (see format-spec, deletion protocol). Their blobs
    /// are not part of the index; the packs may already be gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obsolete: Vec<ObsoletePack>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObsoletePack {
    pub id: PackId,
    pub kind: BlobKind,
    /// When prune first found the pack unused, RFC 3339.
    pub marked: String,
    /// Blob ids only, as marks were written before `entries` (still read, never written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<crate::id::BlobId>,
    /// The pack's blobs when marked, with their places, so that readers can still resolve
    /// blobs a backup deduplicated against before the mark; empty for a pack no index named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<BlobEntry>,
}

impl ObsoletePack {
    /// The ids of the blobs the pack held when marked (empty for an unnamed pack).
    pub fn blob_ids(&self) -> Vec<crate::id::BlobId> {
        if self.entries.is_empty() {
            self.blobs.clone()
        } else {
            self.entries.iter().map(|e| e.id).collect()
        }
    }
}

/// One pack in an index file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack.
    pub id: PackId,
    /// The kind of blobs it holds.
    pub kind: BlobKind,
    /// Size of the pack file in bytes.
    pub size: u64,
    /// Its blobs, by offset.
    pub blobs: Vec<BlobEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use crate::repo::pack::Compression;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cbor_round_trip(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
                           size in any::<u64>()) {
            let blobs: Vec<BlobEntry> = ids.iter().enumerate().map(|(i, id)| BlobEntry {
                id: BlobId(*id),
                kind: BlobKind::Data,
                offset: i as u64 * 100,
                length: 100,
                raw_length: 60 + i as u32,
                compression: if i % 2 == 0 { Compression::Zstd } else { Compression::None },
            }).collect();
            let f = IndexFile {
                version: 1,
                supersedes: vec![IndexId([3; 32])],
                packs: vec![IndexedPack { id: PackId([1; 32]), kind: BlobKind::Tree, size, blobs: blobs.clone() }],
                obsolete: vec![
                    ObsoletePack { id: PackId([2; 32]), kind: BlobKind::Data, marked: "2026-11-25T00:00:00Z".into(), blobs: vec![BlobId([4; 32])], entries: vec![] },
                    ObsoletePack { id: PackId([5; 32]), kind: BlobKind::Data, marked: "2026-11-25T00:00:00Z".into(), blobs: vec![], entries: blobs.clone() },
                ],
            };
            let mut buf = Vec::new();
            ciborium::into_writer(&f, &mut buf).unwrap();
            let back: IndexFile = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, f);
        }
    }
}
