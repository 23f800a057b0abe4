//! Index files: which blobs live in which packs.

use serde::{Deserialize, Serialize};

use super::pack::{BlobEntry, BlobKind};
use crate::id::{IndexId, PackId};

/// `index/<id>`: an encrypted CBOR [`IndexFile`]: a map (format version 1, what
/// `Serialize` writes) or, zstd-compressed, a compact array (version 2, format-spec §7.1). Both are
/// read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "IndexForm")]
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

/// The map form of format version 1, as read.
#[derive(Deserialize)]
struct MapForm {
    version: u32,
    #[serde(default)]
    supersedes: Vec<IndexId>,
    packs: Vec<IndexedPack>,
    #[serde(default)]
    obsolete: Vec<ObsoletePack>,
}

/// The compact form (format-spec §7): `[version, supersedes, packs, obsolete]`, each pack
/// `[id, kind, size, entries]` and each mark `[id, kind, marked, entries]`, with the
/// entries in the column encoding of pack headers.
#[derive(Serialize, Deserialize)]
pub(crate) struct CompactIndex(u32, Vec<IndexId>, Vec<CompactPack>, Vec<CompactMark>);

#[derive(Serialize, Deserialize)]
pub(crate) struct CompactPack(
    PackId,
    BlobKind,
    u64,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

#[derive(Serialize, Deserialize)]
pub(crate) struct CompactMark(
    PackId,
    BlobKind,
    String,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

impl From<&IndexFile> for CompactIndex {
    fn from(f: &IndexFile) -> Self {
        use super::compact::encode_entries;
        CompactIndex(
            f.version,
            f.supersedes.clone(),
            f.packs
                .iter()
                .map(|p| CompactPack(p.id, p.kind, p.size, encode_entries(&p.blobs)))
                .collect(),
            f.obsolete
                .iter()
                .map(|m| CompactMark(m.id, m.kind, m.marked.clone(), encode_entries(&m.entries)))
                .collect(),
        )
    }
}

/// Either form, told apart by the CBOR item: a map or an array.
enum IndexForm {
    Map(MapForm),
    Compact(CompactIndex),
}

impl<'de> Deserialize<'de> for IndexForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = IndexForm;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an index file: a map (version 1) or an array (compact)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<IndexForm, A::Error> {
                MapForm::deserialize(MapAccessDeserializer::new(a)).map(IndexForm::Map)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<IndexForm, A::Error> {
                CompactIndex::deserialize(SeqAccessDeserializer::new(a)).map(IndexForm::Compact)
            }
        }
        d.deserialize_any(Form)
    }
}

impl TryFrom<IndexForm> for IndexFile {
    type Error = String;
    fn try_from(form: IndexForm) -> Result<Self, String> {
        use super::compact::decode_entries;
        Ok(match form {
            IndexForm::Map(m) => IndexFile {
                version: m.version,
                supersedes: m.supersedes,
                packs: m.packs,
                obsolete: m.obsolete,
            },
            IndexForm::Compact(CompactIndex(version, supersedes, packs, marks)) => IndexFile {
                version,
                supersedes,
                packs: packs
                    .into_iter()
                    .map(|CompactPack(id, kind, size, entries)| {
                        Ok(IndexedPack {
                            id,
                            kind,
                            size,
                            blobs: decode_entries(kind, &entries)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
                obsolete: marks
                    .into_iter()
                    .map(|CompactMark(id, kind, marked, entries)| {
                        Ok(ObsoletePack {
                            id,
                            kind,
                            marked,
                            blobs: Vec::new(),
                            entries: decode_entries(kind, &entries)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            },
        })
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

    /// Entries end to end, one per id, alternately compressed.
    fn entries(ids: &[[u8; 32]], kind: BlobKind) -> Vec<BlobEntry> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| BlobEntry {
                id: BlobId(*id),
                kind,
                offset: i as u64 * 100,
                length: 100,
                raw_length: 60 + i as u32,
                compression: if i % 2 == 0 {
                    Compression::Zstd
                } else {
                    Compression::None
                },
            })
            .collect()
    }

    proptest! {
        #[test]
        fn cbor_round_trip(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
                           size in any::<u64>()) {
            let blobs = entries(&ids, BlobKind::Data);
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

        #[test]
        fn compact_round_trip(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
                              size in any::<u64>(), kind in prop_oneof![Just(BlobKind::Data), Just(BlobKind::Tree)]) {
            let blobs = entries(&ids, kind);
            let f = IndexFile {
                version: 1,
                supersedes: vec![IndexId([3; 32])],
                packs: vec![IndexedPack { id: PackId([1; 32]), kind, size, blobs: blobs.clone() }],
                obsolete: vec![
                    ObsoletePack { id: PackId([2; 32]), kind, marked: "2026-11-25T00:00:00Z".into(), blobs: vec![], entries: vec![] },
                    ObsoletePack { id: PackId([5; 32]), kind, marked: "2026-11-25T00:00:00Z".into(), blobs: vec![], entries: blobs.clone() },
                ],
            };
            let mut buf = Vec::new();
            ciborium::into_writer(&CompactIndex::from(&f), &mut buf).unwrap();
            let back: IndexFile = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(&back, &f);
            // Smaller than the map form as soon as there are entries.
            let mut map = Vec::new();
            ciborium::into_writer(&f, &mut map).unwrap();
            prop_assert!(ids.is_empty() || buf.len() < map.len());
        }
    }

    #[test]
    fn a_compact_index_with_damaged_entries_is_refused() {
        let mut buf = Vec::new();
        let bad = CompactIndex(
            1,
            vec![],
            vec![CompactPack(
                PackId([1; 32]),
                BlobKind::Data,
                10,
                vec![1, 0, 0, 0],
            )],
            vec![],
        );
        ciborium::into_writer(&bad, &mut buf).unwrap();
        let err = ciborium::from_reader::<IndexFile, _>(&buf[..]).unwrap_err();
        assert!(err.to_string().contains("entries"), "{err}");
    }
}
