//! The compact metadata encoding of format version 2 (format-spec §6.1): blob entries as
//! columns of fixed-size fields instead of one CBOR map each, and index files and pack
//! headers zstd-compressed before they are sealed. A repository of tiny files has as many
//! entries as files; in version 1 each cost two ~86-byte maps, more than the file itself.

use super::{BlobEntry, BlobKind, Compression};
use crate::id::BlobId;

/// The first bytes of a zstd frame: a sealed file or pack header whose plaintext starts
/// with them is in the compact form (a version 1 plaintext starts with a CBOR map or
/// array head, 0x80..=0xbf, never 0x28).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Bytes per entry in the columns: id, offset, length, raw length, compression.
const ENTRY_LEN: usize = 32 + 8 + 4 + 4 + 1;

/// A compact plaintext larger than this is refused: no pack header or index file written
/// by Strata comes near it, and a forged frame must not make a reader allocate without end.
pub const MAX_PLAIN: usize = 1 << 30;

/// `entries` (all of one pack, whose kind they share) as columns: the count (u32 LE), the
/// ids, the offsets (u64 LE), the lengths (u32 LE), the raw lengths (u32 LE), the
/// compressions (u8).
pub fn encode_entries(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(e.id.as_bytes());
    }
    for e in entries {
        out.extend_from_slice(&e.offset.to_le_bytes());
    }
    for e in entries {
        out.extend_from_slice(&e.length.to_le_bytes());
    }
    for e in entries {
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    for e in entries {
        out.push(u8::from(e.compression));
    }
    out
}

/// The entries [`encode_entries`] wrote, each of `kind`.
pub fn decode_entries(kind: BlobKind, bytes: &[u8]) -> Result<Vec<BlobEntry>, String> {
    let n = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or("entries: no count")?;
    let body = &bytes[4..];
    if body.len() != n.checked_mul(ENTRY_LEN).ok_or("entries: count overflows")? {
        return Err(format!(
            "entries: {} bytes for {n} entries, expected {}",
            body.len(),
            n * ENTRY_LEN
        ));
    }
    let (ids, rest) = body.split_at(32 * n);
    let (offsets, rest) = rest.split_at(8 * n);
    let (lengths, rest) = rest.split_at(4 * n);
    let (raw_lengths, compressions) = rest.split_at(4 * n);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    (0..n)
        .map(|i| {
            Ok(BlobEntry {
                id: BlobId(ids[32 * i..32 * i + 32].try_into().unwrap()),
                kind,
                offset: u64::from_le_bytes(offsets[8 * i..8 * i + 8].try_into().unwrap()),
                length: u32_at(lengths, i),
                raw_length: u32_at(raw_lengths, i),
                compression: Compression::try_from(compressions[i])?,
            })
        })
        .collect()
}

/// zstd at a level that costs little next to sealing and uploading.
pub fn compress(plain: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(plain, 3).expect("zstd into memory")
}

/// How many times its frame a compact plaintext may be. Its columns are mostly random ids
/// (32 of every 49 bytes), so an honest frame shrinks them by 1.5× at most; a forged one of
/// 32 KiB could otherwise claim a gigabyte, and a batch of index files decoded at once
/// (`read_concurrency × 4`) many gigabytes (format-spec §16).
pub const MAX_EXPANSION: usize = 16;

/// The most a frame of `frame_len` bytes may decompress to.
pub fn expansion_limit(frame_len: usize) -> usize {
    frame_len
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(64 << 10)
        .min(MAX_PLAIN)
}

/// The plaintext of a compact frame, refusing one that would grow past
/// [`expansion_limit`] of its size (and [`MAX_PLAIN`]) before it is held.
pub fn decompress(frame: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let limit = expansion_limit(frame.len());
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(frame)
        .map_err(|e| format!("zstd: {e}"))?
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zstd: {e}"))?;
    if out.len() > limit {
        return Err(format!(
            "zstd: expands past {limit} bytes ({MAX_EXPANSION}× its {} plus 64 KiB)",
            frame.len()
        ));
    }
    Ok(out)
}

/// A pack header in the compact form: the pack's kind (u8), then its entries.
pub fn encode_header(kind: BlobKind, entries: &[BlobEntry]) -> Vec<u8> {
    let mut plain = vec![u8::from(kind)];
    plain.extend_from_slice(&encode_entries(entries));
    compress(&plain)
}

/// The entries of a compact pack header.
pub fn decode_header(frame: &[u8]) -> Result<Vec<BlobEntry>, String> {
    let plain = decompress(frame)?;
    let (&kind, entries) = plain.split_first().ok_or("empty header")?;
    decode_entries(BlobKind::try_from(kind)?, entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(kind: BlobKind) -> impl Strategy<Value = Vec<BlobEntry>> {
        proptest::collection::vec(
            (
                any::<[u8; 32]>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<bool>(),
            ),
            0..50,
        )
        .prop_map(move |v| {
            v.into_iter()
                .map(|(id, offset, length, raw_length, z)| BlobEntry {
                    id: BlobId(id),
                    kind,
                    offset,
                    length,
                    raw_length,
                    compression: if z {
                        Compression::Zstd
                    } else {
                        Compression::None
                    },
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn entries_round_trip(data in entries(BlobKind::Data), tree in entries(BlobKind::Tree)) {
            prop_assert_eq!(decode_entries(BlobKind::Data, &encode_entries(&data)).unwrap(), data.clone());
            prop_assert_eq!(decode_header(&encode_header(BlobKind::Tree, &tree)).unwrap(), tree);
            let header = encode_header(BlobKind::Data, &data);
            prop_assert_eq!(&header[..4], &ZSTD_MAGIC[..]);
        }

        #[test]
        fn truncated_or_padded_entries_are_refused(data in entries(BlobKind::Data), cut in 1usize..60) {
            let bytes = encode_entries(&data);
            let short = &bytes[..bytes.len().saturating_sub(cut)];
            prop_assert!(decode_entries(BlobKind::Data, short).is_err());
            let mut long = bytes.clone();
            long.push(0);
            prop_assert!(decode_entries(BlobKind::Data, &long).is_err());
        }
    }

    #[test]
    fn an_entry_costs_about_its_id_once_compressed() {
        // 1,000 tiny blobs end to end, as a pack of 100-byte files holds them.
        let entries: Vec<BlobEntry> = (0..1000u32)
            .map(|i| BlobEntry {
                id: BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                kind: BlobKind::Data,
                offset: u64::from(i) * 140,
                length: 140,
                raw_length: 100,
                compression: Compression::None,
            })
            .collect();
        let header = encode_header(BlobKind::Data, &entries);
        assert!(header.len() < 1000 * 36, "{} bytes", header.len());
        let mut cbor = Vec::new();
        ciborium::into_writer(&entries, &mut cbor).unwrap();
        assert!(cbor.len() > 1000 * 80, "version 1: {} bytes", cbor.len());
    }

    #[test]
    fn a_bad_compression_code_or_a_bomb_is_refused() {
        let e = BlobEntry {
            id: BlobId([1; 32]),
            kind: BlobKind::Data,
            offset: 0,
            length: 40,
            raw_length: 0,
            compression: Compression::None,
        };
        let mut bytes = encode_entries(&[e]);
        *bytes.last_mut().unwrap() = 7;
        assert!(decode_entries(BlobKind::Data, &bytes)
            .unwrap_err()
            .contains("compression"));
        assert!(decompress(b"not zstd").is_err());
    }

    #[test]
    fn a_frame_expands_to_sixteen_times_its_size_and_64_kib_at_most() {
        assert_eq!(expansion_limit(1000), 16_000 + 65_536);
        assert_eq!(expansion_limit(0), 65_536);
        assert_eq!(expansion_limit(usize::MAX), MAX_PLAIN);
        assert_eq!(expansion_limit(MAX_PLAIN / 16), MAX_PLAIN);
        // Zeros shrink a thousandfold: 64 KiB fits the slack, 10 MiB does not.
        assert_eq!(
            decompress(&compress(&[0; 64 << 10])).unwrap().len(),
            64 << 10
        );
        let bomb = compress(&vec![0; 10 << 20]);
        let err = decompress(&bomb).unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        // An honest header (random ids) is far inside the limit.
        let entries: Vec<BlobEntry> = (0..5000u32)
            .map(|i| BlobEntry {
                id: BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                kind: BlobKind::Tree,
                offset: u64::from(i) * 40,
                length: 40,
                raw_length: 0,
                compression: Compression::None,
            })
            .collect();
        assert_eq!(
            decode_header(&encode_header(BlobKind::Tree, &entries)).unwrap(),
            entries
        );
    }
}
