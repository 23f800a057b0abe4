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

    /// Adds another mark of the same pack (§7.2): the latest `marked` time wins (one that
    /// does not parse counts as now, as prune reads it) and readers keep the union of the
    /// marks' blobs, so that no location is lost.
    pub fn absorb(&mut self, other: ObsoletePack) {
        let when = |m: &str| {
            chrono::DateTime::parse_from_rfc3339(m)
                .map(|t| t.to_utc())
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        };
        if when(&other.marked) > when(&self.marked) {
            self.marked = other.marked;
        }
        union(&mut self.entries, other.entries);
        for id in other.blobs {
            if !self.blobs.contains(&id) {
                self.blobs.push(id);
            }
        }
    }
}

/// Adds `more` to `entries`, each blob once, by offset.
fn union(entries: &mut Vec<BlobEntry>, more: Vec<BlobEntry>) {
    let have: std::collections::HashSet<_> = entries.iter().map(|e| e.id).collect();
    entries.extend(more.into_iter().filter(|e| !have.contains(&e.id)));
    entries.sort_by_key(|e| e.offset);
}

/// Puts `mark` into `marks`, merged with any earlier mark of the same pack.
pub fn add_mark(marks: &mut std::collections::HashMap<PackId, ObsoletePack>, mark: ObsoletePack) {
    match marks.entry(mark.id) {
        std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().absorb(mark),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(mark);
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
/// entries in the column encoding of pack headers. Readers take the first four elements of
/// each array and skip any after them, which a later version may append (§7.1).
#[derive(Serialize)]
pub(crate) struct CompactIndex(u32, Vec<IndexId>, Vec<CompactPack>, Vec<CompactMark>);

#[derive(Serialize)]
pub(crate) struct CompactPack(
    PackId,
    BlobKind,
    u64,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

#[derive(Serialize)]
pub(crate) struct CompactMark(
    PackId,
    BlobKind,
    String,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

/// Deserializes an array of at least four elements through `build`, ignoring the rest.
macro_rules! four_or_more {
    ($ty:ident, $what:literal, |$seq:ident, $w:ident| $build:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut $seq: A,
                    ) -> Result<$ty, A::Error> {
                        let $w = $what;
                        let value = $build;
                        while $seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        Ok(value)
                    }
                }
                d.deserialize_seq(V)
            }
        }
    };
}

/// The next of the four required elements.
fn need<'de, T: Deserialize<'de>, A: serde::de::SeqAccess<'de>>(
    seq: &mut A,
    i: usize,
    what: &'static str,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| serde::de::Error::invalid_length(i, &what))
}

four_or_more!(
    CompactIndex,
    "an index array of four or more elements",
    |seq, what| {
        CompactIndex(
            need(&mut seq, 0, what)?,
            need(&mut seq, 1, what)?,
            need(&mut seq, 2, what)?,
            need(&mut seq, 3, what)?,
        )
    }
);

four_or_more!(
    CompactPack,
    "a pack array of four or more elements",
    |seq, what| {
        CompactPack(
            need(&mut seq, 0, what)?,
            need(&mut seq, 1, what)?,
            need(&mut seq, 2, what)?,
            need::<serde_bytes::ByteBuf, _>(&mut seq, 3, what)?.into_vec(),
        )
    }
);

four_or_more!(
    CompactMark,
    "a mark array of four or more elements",
    |seq, what| {
        CompactMark(
            need(&mut seq, 0, what)?,
            need(&mut seq, 1, what)?,
            need(&mut seq, 2, what)?,
            need::<serde_bytes::ByteBuf, _>(&mut seq, 3, what)?.into_vec(),
        )
    }
);

impl From<&IndexFile> for CompactIndex {
    fn from(f: &IndexFile) -> Self {
        use super::pack::compact::encode_entries;
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
        use super::pack::compact::decode_entries;
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

impl IndexedPack {
    /// Adds another listing of the same pack (§7.2): its entries are the union of both.
    pub fn absorb(&mut self, other: IndexedPack) {
        union(&mut self.blobs, other.blobs);
    }
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

    /// A compact index as a CBOR value, with `extra` appended to every array.
    fn compact_value(f: &IndexFile, extra: &[ciborium::Value]) -> ciborium::Value {
        use ciborium::Value;
        let mut buf = Vec::new();
        ciborium::into_writer(&CompactIndex::from(f), &mut buf).unwrap();
        let mut v: Value = ciborium::from_reader(&buf[..]).unwrap();
        let Value::Array(top) = &mut v else { panic!() };
        for i in [2, 3] {
            let Value::Array(items) = &mut top[i] else {
                panic!()
            };
            for item in items {
                let Value::Array(fields) = item else { panic!() };
                fields.extend(extra.iter().cloned());
            }
        }
        top.extend(extra.iter().cloned());
        v
    }

    fn sample() -> IndexFile {
        let ids = [[7; 32], [8; 32]];
        IndexFile {
            version: 1,
            supersedes: vec![IndexId([3; 32])],
            packs: vec![IndexedPack {
                id: PackId([1; 32]),
                kind: BlobKind::Data,
                size: 300,
                blobs: entries(&ids, BlobKind::Data),
            }],
            obsolete: vec![ObsoletePack {
                id: PackId([2; 32]),
                kind: BlobKind::Data,
                marked: "2026-11-25T00:00:00Z".into(),
                blobs: vec![],
                entries: entries(&ids, BlobKind::Data),
            }],
        }
    }

    fn read(v: &ciborium::Value) -> Result<IndexFile, String> {
        let mut buf = Vec::new();
        ciborium::into_writer(v, &mut buf).unwrap();
        ciborium::from_reader::<IndexFile, _>(&buf[..]).map_err(|e| e.to_string())
    }

    /// §7.1: elements after the fourth, of any type, are skipped at every level.
    #[test]
    fn elements_after_the_fourth_are_ignored() {
        use ciborium::Value;
        let f = sample();
        let extras = [
            vec![Value::Null],
            vec![Value::Bytes(vec![9; 40]), Value::Integer(5.into())],
            vec![
                Value::Array(vec![Value::Text("x".into())]),
                Value::Map(vec![]),
            ],
        ];
        for extra in extras {
            assert_eq!(read(&compact_value(&f, &extra)).unwrap(), f, "{extra:?}");
        }
    }

    /// Fewer than four elements, or null where an array belongs, is a damaged file.
    #[test]
    fn short_arrays_and_nulls_are_refused() {
        use ciborium::Value;
        let f = sample();
        let whole = compact_value(&f, &[]);
        let Value::Array(top) = &whole else { panic!() };
        let mut short = top.clone();
        short.pop();
        assert!(read(&Value::Array(short)).is_err());
        let mut null = top.clone();
        null[3] = Value::Null;
        assert!(read(&Value::Array(null)).is_err());
        for (i, what) in [(2, "pack"), (3, "mark")] {
            let mut top = top.clone();
            let Value::Array(items) = &mut top[i] else {
                panic!()
            };
            let Value::Array(fields) = &mut items[0] else {
                panic!()
            };
            fields.pop();
            let err = read(&Value::Array(top)).unwrap_err();
            assert!(err.contains(what), "{err}");
        }
    }

    /// Marks absorbed: the later instant wins (an unparseable one counts as latest), the
    /// earlier one never replaces it, and blob lists join without duplicates.
    #[test]
    fn absorbing_marks_keeps_the_latest_time_and_every_blob() {
        let mark = |marked: &str, blobs: Vec<BlobId>| ObsoletePack {
            id: PackId([1; 32]),
            kind: BlobKind::Data,
            marked: marked.into(),
            blobs,
            entries: vec![],
        };
        let mut m = mark(
            "2026-12-01T05:00:00Z",
            vec![BlobId([1; 32]), BlobId([2; 32])],
        );
        m.absorb(mark(
            "2026-12-01T04:00:00Z",
            vec![BlobId([2; 32]), BlobId([3; 32])],
        ));
        assert_eq!(m.marked, "2026-12-01T05:00:00Z");
        assert_eq!(
            m.blobs,
            vec![BlobId([1; 32]), BlobId([2; 32]), BlobId([3; 32])]
        );
        // The same instant written otherwise is no later.
        m.absorb(mark("2026-12-01T10:00:00+05:00", vec![]));
        assert_eq!(m.marked, "2026-12-01T05:00:00Z");
        m.absorb(mark("not a time", vec![]));
        assert_eq!(m.marked, "not a time");
        m.absorb(mark("2026-12-09T00:00:00Z", vec![]));
        assert_eq!(m.marked, "not a time");
    }
}
