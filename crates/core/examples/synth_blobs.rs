//! Adds synthetic data blobs to a repository, for `tools/bench --memory-scaling`: a repository
//! holding 10^6 blobs takes a minute this way instead of a 64 GB backup.
//!
//! Usage: `STRATA_PASSWORD=... synth_blobs REPOSITORY CACHE_DIR COUNT`
//!
//! Each blob is 64 distinct pseudo-random bytes, stored through the same saver a backup uses
//! (so packs, index files and the cache are real). An index file is written every 16384
//! blobs, about what a backup of 64 KiB chunks writes per index file (64 packs of 16 MiB).

use std::path::Path;

use strata::internals::{BlobSaver, SaverShared};
use strata::BlobKind;

const PER_INDEX: u64 = 16384;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: synth_blobs REPOSITORY CACHE_DIR COUNT"
    );
    let count: u64 = args[3].parse()?;
    let password = std::env::var("STRATA_PASSWORD")?;
    let repo = strata::Repository::open(
        strata::backend::open(&args[1])?,
        password.as_bytes(),
        Path::new(&args[2]),
    )?;
    let mut done = 0;
    while done < count {
        let n = PER_INDEX.min(count - done);
        let shared = SaverShared::default();
        std::thread::scope(|scope| -> strata::Result<()> {
            let saver = BlobSaver::new(&repo, &shared, scope, 2);
            let mut data = [0u8; 64];
            for i in done..done + n {
                blake3::Hasher::new()
                    .update(b"strata synthetic blob")
                    .update(&i.to_le_bytes())
                    .finalize_xof()
                    .fill(&mut data);
                saver.save(BlobKind::Data, repo.blob_id(&data), &data)?;
            }
            // Packs, then their index file: the saver keeps the repository's write order.
            saver.finish()
        })?;
        done += n;
    }
    eprintln!("added {count} blobs to {}", args[1]);
    Ok(())
}
