use clap::Args;
use serde_json::json;
use strata::chunker::ChunkerParams;
use strata::error::exit;
use strata::repo::config::Config;
use strata::Repository;

use super::{output, Global};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level for blobs (0 = no compression).
    #[arg(long, default_value_t = 3)]
    compression: i32,
    /// Average chunk size in bytes (minimum and maximum follow at 1/4 and 4x).
    #[arg(long)]
    chunk_avg: Option<u32>,
    /// Storage class for data packs on S3 (STANDARD, STANDARD_IA, INTELLIGENT_TIERING,
    /// GLACIER_IR, ...); config, keys, index, snapshots and trees stay STANDARD.
    #[arg(long)]
    data_storage_class: Option<String>,
}

pub fn run(g: &Global, a: InitArgs) -> anyhow::Result<i32> {
    let backend = g.backend()?;
    // Refused before anyone types a password; Repository::init checks again.
    if backend.exists()? {
        return Err(strata::Error::RepositoryExists(backend.location()).into());
    }
    let password = g.password("new repository password: ", true)?;
    let chunker = a
        .chunk_avg
        .map(ChunkerParams::with_average)
        .unwrap_or_default();
    chunker.validate().map_err(anyhow::Error::msg)?;
    let mut config = Config::new(chunker, a.compression);
    config.data_storage_class = a.data_storage_class;
    let config = Repository::init(backend.clone(), &password, config, &g.kdf_cost())?;
    if g.json {
        output::print_json(&json!({"id": config.id.to_hex(), "location": backend.location()}));
    } else if !g.quiet {
        println!(
            "created repository {} at {}",
            config.id.to_hex(),
            backend.location()
        );
    }
    Ok(exit::OK)
}
