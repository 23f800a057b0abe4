//! Pack files: many encrypted blobs, then an encrypted header listing them.
//!
//! ```text
//! blob 0 | blob 1 | ... | blob n-1 | sealed header | header length (u32 LE)
//! ```
//! Each blob is `nonce || ciphertext || tag` with AAD `kind byte || blob id`; the header is
//! the CBOR list of [`BlobEntry`] sealed with AAD `strata/pack-header/v1`. The pack's name
//! is the BLAKE3 hash of all its bytes.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{content_address, BlobId, PackId};

pub(crate) mod compact;

const HEADER_AAD: &[u8] = b"strata/pack-header/v1";
pub const TRAILER_LEN: usize = 4;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum BlobKind {
    /// File content.
    Data = 0,
    /// A tree.
    Tree = 1,
}

impl From<BlobKind> for u8 {
    fn from(k: BlobKind) -> u8 {
        k as u8
    }
}

impl TryFrom<u8> for BlobKind {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            v => Err(format!("unknown blob kind {v}")),
        }
    }
}

/// How a blob's plaintext is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Compression {
    /// As is.
    None = 0,
    /// Compressed with zstd.
    Zstd = 1,
}

impl From<Compression> for u8 {
    fn from(c: Compression) -> u8 {
        c as u8
    }
}

impl TryFrom<u8> for Compression {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            v => Err(format!("unknown compression {v}")),
        }
    }
}

/// Where a blob sits in its pack and how to decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// The blob's id.
    pub id: BlobId,
    /// Its kind.
    pub kind: BlobKind,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob (nonce + ciphertext + tag).
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
    /// How its plaintext is stored.
    pub compression: Compression,
}

fn blob_aad(id: &BlobId, kind: BlobKind) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[0] = kind as u8;
    aad[1..].copy_from_slice(id.as_bytes());
    aad
}

// A zstd context costs an allocation and a few hundred KiB of zeroing to create: far more
// than compressing one 32 KiB chunk. Each worker thread keeps one of each and reuses it.
thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// True when a sample of `data` has the byte statistics of random (already compressed or
/// encrypted) data. zstd would spend most of its time on such a chunk finding nothing; the
/// sample costs a few percent of that. The idea is btrfs's compression heuristic: sampled
/// pieces and a byte-entropy threshold close to 8 bits.
pub fn looks_incompressible(data: &[u8]) -> bool {
    const PIECES: usize = 128;
    const PIECE: usize = 16;
    if data.len() < 2 * PIECES * PIECE {
        return false;
    }
    let step = data.len() / PIECES;
    let mut counts = [0u32; 256];
    for i in 0..PIECES {
        for &b in &data[i * step..i * step + PIECE] {
            counts[b as usize] += 1;
        }
    }
    let n = (PIECES * PIECE) as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    // 2048 uniformly random bytes measure 7.91 bits on average (the estimator is biased
    // low), with a standard deviation under 0.01: 7.8 leaves a wide margin. Text (~5 bits)
    // and page-structured data (runs of zeros) are far below; anything in between is still
    // compressed.
    entropy > 7.8
}

/// The zstd frame for `plain`, or `None` when it would not be smaller.
fn compress(plain: &[u8], level: i32) -> Option<Vec<u8>> {
    if looks_incompressible(plain) {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().map(|(l, _)| *l) != Some(level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = cell.as_mut()?;
        // Room for less than the input only: zstd gives up with "destination too small"
        // on data that does not shrink, which is then stored raw.
        let mut out = Vec::with_capacity(plain.len().saturating_sub(1));
        compressor.compress_to_buffer(plain, &mut out).ok()?;
        Some(out)
    })
}

/// No blob strata writes is larger: chunks are at most 16 MiB, and a tree this size would
/// hold millions of entries. A larger length in an index entry is damage (or a crafted
/// repository), refused before anything is allocated for it.
const MAX_BLOB_LEN: usize = 1 << 30;
/// Up to this length the output buffer is allocated at once (every data chunk); a longer
/// blob (a huge tree) grows with what actually decompresses, not with what its entry claims.
const PREALLOCATE_MAX: usize = 16 << 20;

/// Decompresses a blob that must come out `raw_length` bytes long.
pub(crate) fn decompress_checked(frame: &[u8], raw_length: usize) -> std::io::Result<Vec<u8>> {
    let out = decompress(frame, raw_length)?;
    if out.len() != raw_length {
        return Err(std::io::Error::other(format!(
            "{} bytes, not the {raw_length} of its entry",
            out.len()
        )));
    }
    Ok(out)
}

fn decompress(frame: &[u8], raw_length: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if raw_length > MAX_BLOB_LEN {
        return Err(std::io::Error::other(format!(
            "claims {raw_length} bytes, more than any blob"
        )));
    }
    if raw_length > PREALLOCATE_MAX {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::with_buffer(frame)?
            .take(raw_length as u64 + 1)
            .read_to_end(&mut out)?;
        return Ok(out);
    }
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        let mut out = Vec::with_capacity(raw_length);
        cell.as_mut()
            .expect("set above")
            .decompress_to_buffer(frame, &mut out)?;
        Ok(out)
    })
}

/// A blob compressed (when that helps) and sealed, ready to append to a pack.
pub struct SealedBlob {
    /// The blob's id.
    pub id: BlobId,
    /// Its kind.
    pub kind: BlobKind,
    /// Its plaintext length.
    pub raw_length: u32,
    /// How its plaintext is stored.
    pub compression: Compression,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
}

impl SealedBlob {
    /// Compresses (unless `level` is 0 or it does not pay) and encrypts a blob.
    pub fn seal(key: &MasterKey, id: BlobId, kind: BlobKind, plain: &[u8], level: i32) -> Self {
        let compressed = if level != 0 {
            compress(plain, level)
        } else {
            None
        };
        let (payload, compression) = match &compressed {
            Some(c) => (c.as_slice(), Compression::Zstd),
            None => (plain, Compression::None),
        };
        SealedBlob {
            id,
            kind,
            raw_length: plain.len() as u32,
            compression,
            bytes: key.seal(payload, &blob_aad(&id, kind)),
        }
    }
}

/// Decrypts, decompresses and verifies one blob read from a pack.
pub fn open_blob(key: &MasterKey, entry: &BlobEntry, sealed: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: &str| Error::corrupt(format!("blob {}", entry.id), reason.to_string());
    let payload = key
        .open(sealed, &blob_aad(&entry.id, entry.kind))
        .ok_or_else(|| bad("authentication failed (tampered, truncated or wrong key)"))?;
    let plain = match entry.compression {
        Compression::None => payload,
        Compression::Zstd => decompress(&payload, entry.raw_length as usize)
            .map_err(|e| bad(&format!("zstd: {e}")))?,
    };
    if plain.len() != entry.raw_length as usize {
        return Err(bad("length differs from the index"));
    }
    if key.blob_id(&plain) != entry.id {
        return Err(bad("content does not match its id"));
    }
    Ok(plain)
}

/// Accumulates sealed blobs into one pack.
pub struct PackBuilder {
    kind: BlobKind,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its name, bytes and contents.
pub struct FinishedPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    /// An empty pack of `kind` blobs.
    pub fn new(kind: BlobKind) -> Self {
        Self::with_capacity(kind, 0)
    }

    /// Reserving the target size up front avoids doubling reallocations that would hold up
    /// to twice the pack in memory.
    pub fn with_capacity(kind: BlobKind, bytes: usize) -> Self {
        PackBuilder {
            kind,
            buf: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    /// A builder writing into `buf` (emptied first): recycling one finished pack's buffer
    /// for the next keeps a backup's memory at a few packs, where fresh allocations of this
    /// size scatter over the allocator's per-thread arenas and stay resident.
    pub fn with_buffer(kind: BlobKind, mut buf: Vec<u8>) -> Self {
        buf.clear();
        PackBuilder {
            kind,
            buf,
            entries: Vec::new(),
        }
    }

    /// Blobs added.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: SealedBlob) {
        self.entries.push(BlobEntry {
            id: blob.id,
            kind: blob.kind,
            offset: self.buf.len() as u64,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
            compression: blob.compression,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    /// The pack's bytes: the blobs, then the sealed header and its length.
    pub fn finish(self, key: &MasterKey, compact: bool) -> FinishedPack {
        let header = if compact {
            compact::encode_header(self.kind, &self.entries)
        } else {
            let mut header = Vec::new();
            ciborium::into_writer(&self.entries, &mut header).expect("CBOR into memory");
            header
        };
        let sealed = key.seal(&header, HEADER_AAD);
        let mut bytes = self.buf;
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        FinishedPack {
            id: PackId(content_address(&bytes)),
            kind: self.kind,
            bytes,
            entries: self.entries,
        }
    }
}

/// Reads the header of a whole pack (the pack's own list of blobs).
pub fn read_header(key: &MasterKey, id: &PackId, bytes: &[u8]) -> Result<Vec<BlobEntry>> {
    let bad = |reason: String| Error::corrupt(format!("pack {id}"), reason);
    if bytes.len() < TRAILER_LEN {
        return Err(bad("shorter than its trailer".into()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let hlen = u32::from_le_bytes(trailer.try_into().unwrap()) as usize;
    if hlen > body.len() {
        return Err(bad(format!("header length {hlen} exceeds the pack")));
    }
    let sealed = &body[body.len() - hlen..];
    let header = key
        .open(sealed, HEADER_AAD)
        .ok_or_else(|| bad("header authentication failed".into()))?;
    if header.starts_with(&compact::ZSTD_MAGIC) {
        return compact::decode_header(&header).map_err(|e| bad(format!("header: {e}")));
    }
    ciborium::from_reader(&header[..]).map_err(|e| bad(format!("header: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::pseudo_random;
    use proptest::prelude::*;

    #[test]
    fn random_data_is_recognised_and_compressible_data_is_not() {
        for len in [4096, 8192, 32 << 10, 131072] {
            assert!(
                looks_incompressible(&pseudo_random(len, len as u64)),
                "random {len}"
            );
            let text: Vec<u8> = (0..len).map(|i| b"route-17 weight 0.25 "[i % 21]).collect();
            assert!(!looks_incompressible(&text), "text {len}");
            // Database pages: half random, half zeros.
            let mut pages = pseudo_random(len, 7);
            for page in pages.chunks_mut(4096) {
                page[2048..].fill(0);
            }
            assert!(!looks_incompressible(&pages), "pages {len}");
            // Hex-encoded random bytes: 4 bits per byte, compressible by half.
            let hex = hex::encode(pseudo_random(len / 2, 9)).into_bytes();
            assert!(!looks_incompressible(&hex), "hex {len}");
        }
        assert!(
            !looks_incompressible(&pseudo_random(4095, 3)),
            "too small to judge"
        );
        // Mostly random with a compressible quarter: still worth compressing.
        let mut mixed = pseudo_random(32 << 10, 4);
        mixed[..8 << 10].fill(b'a');
        assert!(!looks_incompressible(&mixed));
        // Random chunks are stored raw, as zstd would have decided anyway.
        let key = MasterKey::generate();
        let data = pseudo_random(32 << 10, 5);
        let sealed = SealedBlob::seal(&key, key.blob_id(&data), BlobKind::Data, &data, 3);
        assert_eq!(sealed.compression, Compression::None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..3000), 1..8), compact in any::<bool>()) {
            let key = MasterKey::generate();
            let mut b = PackBuilder::new(BlobKind::Data);
            for (i, plain) in blobs.iter().enumerate() {
                let level = if i % 2 == 0 { 3 } else { 0 };
                b.add(SealedBlob::seal(&key, key.blob_id(plain), BlobKind::Data, plain, level));
            }
            let pack = b.finish(&key, compact);
            prop_assert_eq!(pack.id.0, content_address(&pack.bytes));
            let header = read_header(&key, &pack.id, &pack.bytes).unwrap();
            prop_assert_eq!(&header, &pack.entries);
            for (e, plain) in header.iter().zip(&blobs) {
                let s = &pack.bytes[e.offset as usize..(e.offset + e.length as u64) as usize];
                prop_assert_eq!(&open_blob(&key, e, s).unwrap(), plain);
            }
        }
    }

    #[test]
    fn compressible_blobs_shrink_and_flipped_bytes_fail() {
        let key = MasterKey::generate();
        let plain = vec![b'a'; 10_000];
        let id = key.blob_id(&plain);
        let s = SealedBlob::seal(&key, id, BlobKind::Data, &plain, 3);
        assert_eq!(s.compression, Compression::Zstd);
        assert!(s.bytes.len() < 1000);
        let mut b = PackBuilder::new(BlobKind::Data);
        b.add(s);
        let mut pack = b.finish(&key, true);
        let e = pack.entries[0];
        pack.bytes[30] ^= 0x40;
        let err = open_blob(&key, &e, &pack.bytes[..e.length as usize]).unwrap_err();
        assert!(err.to_string().contains(&id.to_hex()));
    }
}
