//! Content-defined chunking with FastCDC (2020), in batches.
//!
//! The chunker reads a large buffer, cuts as many chunks as it can, and hands them out as
//! one [`Batch`] so that hashing, compression and encryption can run on a whole batch in
//! parallel. Memory is bounded by the batch size whatever the file size.

use std::io::{self, Read};
use std::ops::Range;

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size bounds and FastCDC normalization, stored in the repository config so every
/// writer cuts alike.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is smaller (but a file's last).
    pub min_size: u32,
    /// The size chunks aim at.
    pub avg_size: u32,
    /// No chunk is larger.
    pub max_size: u32,
    /// FastCDC normalization level (0-3); configs written before it existed used 1.
    #[serde(default = "level_one")]
    pub normalization: u8,
}

fn level_one() -> u8 {
    1
}

impl Default for ChunkerParams {
    /// 8/32/128 KiB, normalization level 2, chosen by measurement (`tools/bench`, see the
    /// README): a database rewriting 0.5% of its 4 KiB pages at random re-stores ~11 MB per
    /// hour per 256 MB instead of 23 MB at 64 KiB (level 1) or ~60 MB at restic's 1 MiB, and
    /// level 2's tighter size spread gets as close as 16 KiB chunks do at half the index
    /// entries. Smaller chunks cost more per-blob metadata than they save.
    fn default() -> Self {
        ChunkerParams::with_average(32 * 1024)
    }
}

impl ChunkerParams {
    /// Minimum and maximum at a quarter and four times the average, normalization level 2.
    pub fn with_average(avg_size: u32) -> Self {
        ChunkerParams {
            min_size: avg_size / 4,
            avg_size,
            max_size: avg_size.saturating_mul(4),
            normalization: 2,
        }
    }

    /// Refuses sizes the chunker cannot work with (format-spec §5 gives the bounds).
    pub fn validate(&self) -> crate::error::Result<()> {
        use fastcdc::v2020::*;
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(crate::error::Error::BadInput {
                what: "chunker parameters",
                reason: format!("invalid chunker parameters {self:?}"),
            })
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// A buffer of whole chunks.
pub struct Batch {
    pub data: Vec<u8>,
    pub chunks: Vec<Range<usize>>,
}

impl Batch {
    pub fn chunk(&self, i: usize) -> &[u8] {
        &self.data[self.chunks[i].clone()]
    }
}

/// Cuts a stream into content-defined chunks, a batch of them at a time.
pub struct Chunker<R> {
    reader: R,
    params: ChunkerParams,
    seed: u64,
    batch_size: usize,
    carry: Vec<u8>,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// `batch_size` is raised to at least twice the maximum chunk size.
    pub fn new(reader: R, params: ChunkerParams, seed: u64, batch_size: usize) -> Self {
        Chunker {
            reader,
            params,
            seed,
            batch_size: batch_size.max(2 * params.max_size as usize),
            carry: Vec::new(),
            eof: false,
        }
    }

    /// The next batch of chunks, or `None` at end of input.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch>> {
        let mut data = std::mem::take(&mut self.carry);
        data.reserve(self.batch_size.saturating_sub(data.len()));
        while !self.eof && data.len() < self.batch_size {
            // `read_to_end` through `take` reads into spare capacity without zeroing it first.
            let want = (self.batch_size - data.len()) as u64;
            match (&mut self.reader).take(want).read_to_end(&mut data) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        let p = self.params;
        let cdc = FastCDC::with_level_and_seed(
            &data,
            p.min_size,
            p.avg_size,
            p.max_size,
            p.level(),
            self.seed,
        );
        let mut chunks = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let remaining = data.len() - pos;
            // Without the rest of the file a cut here could differ from a whole-file cut.
            if !self.eof && remaining < p.max_size as usize {
                break;
            }
            let (_, end) = cdc.cut(pos, remaining);
            chunks.push(pos..end);
            pos = end;
        }
        self.carry = data[pos..].to_vec();
        data.truncate(pos);
        Ok(Some(Batch { data, chunks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::pseudo_random;
    use proptest::prelude::*;

    fn cut_all(data: &[u8], batch: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data, ChunkerParams::default(), 42, batch);
        let mut out = Vec::new();
        while let Some(b) = c.next_batch().unwrap() {
            for i in 0..b.chunks.len() {
                out.push(b.chunk(i).to_vec());
            }
        }
        out
    }

    /// Format-spec §17: the cuts of 1 MiB of BLAKE3's output for "strata chunker vector"
    /// at the default parameters and the vectors' chunker seed. Another cut makes every
    /// backup store its data again, and other writers' data no longer dedupe.
    #[test]
    fn the_spec_chunker_vector_is_cut() {
        let v = crate::util::spec_vectors();
        let seed = u64::from_be_bytes(v["chunker_seed"][..].try_into().unwrap());
        let mut data = vec![0u8; 1 << 20];
        let mut h = blake3::Hasher::new();
        h.update(b"strata chunker vector")
            .finalize_xof()
            .fill(&mut data);
        let mut c = Chunker::new(&data[..], ChunkerParams::default(), seed, 1 << 18);
        let mut ends = Vec::new();
        while let Some(b) = c.next_batch().unwrap() {
            let base = ends.last().copied().unwrap_or(0);
            ends.extend(b.chunks.iter().map(|r| base + r.end as u32));
        }
        let ends: Vec<u8> = ends.iter().flat_map(|e| e.to_be_bytes()).collect();
        let want = &v["chunker_cut_ends_u32be"];
        assert_eq!(hex::encode(&ends), hex::encode(want));
    }

    #[test]
    fn batches_cut_like_one_pass() {
        let data = pseudo_random(3 << 20, 7);
        let small = cut_all(&data, 0);
        let big = cut_all(&data, 16 << 20);
        assert_eq!(small, big);
        assert_eq!(small.concat(), data);
        assert!(small.len() > 10);
        let p = ChunkerParams::default();
        for c in &small[..small.len() - 1] {
            assert!(c.len() >= p.min_size as usize && c.len() <= p.max_size as usize);
        }
    }

    #[test]
    fn an_insert_only_changes_nearby_chunks() {
        let data = pseudo_random(2 << 20, 9);
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, b"inserted".iter().copied());
        let a = cut_all(&data, 0);
        let b = cut_all(&edited, 0);
        let same = a.iter().filter(|c| b.contains(c)).count();
        assert!(same + 3 >= a.len(), "{same} of {} chunks survive", a.len());
    }

    #[test]
    fn configs_without_normalization_read_as_level_one() {
        #[derive(Serialize)]
        struct Before {
            min_size: u32,
            avg_size: u32,
            max_size: u32,
        }
        let mut buf = Vec::new();
        let before = Before {
            min_size: 16384,
            avg_size: 65536,
            max_size: 262144,
        };
        ciborium::into_writer(&before, &mut buf).unwrap();
        let p: ChunkerParams = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(p.normalization, 1);
        assert_eq!(p.avg_size, 65536);
    }

    #[test]
    fn a_higher_normalization_level_narrows_chunk_sizes() {
        let data = pseudo_random(8 << 20, 11);
        let spread = |normalization| {
            let params = ChunkerParams {
                normalization,
                ..ChunkerParams::default()
            };
            let mut c = Chunker::new(&data[..], params, 42, 0);
            let mut sizes = Vec::new();
            while let Some(b) = c.next_batch().unwrap() {
                sizes.extend(b.chunks.iter().map(|r| r.len() as f64));
            }
            let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
            (sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / sizes.len() as f64).sqrt()
        };
        assert!(spread(2) < spread(1), "{} vs {}", spread(2), spread(1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn chunks_concatenate_to_input(len in 0usize..700_000, seed in any::<u64>()) {
            let data = pseudo_random(len, seed);
            prop_assert_eq!(cut_all(&data, 0).concat(), data);
        }
    }
}
