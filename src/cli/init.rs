use super::exit;
use clap::Args;
use serde_json::json;
use strata::ChunkerParams;
use strata::Config;
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

pub fn run(global: &Global, args: InitArgs) -> anyhow::Result<i32> {
    let backend = global.backend()?;
    // Refused before anyone types a password; Repository::init checks again.
    if backend.exists()? {
        return Err(strata::Error::RepositoryExists(backend.location()).into());
    }
    lifecycle_allows_a_repository(backend.as_ref())?;
    let password = global.password("new repository password: ", true)?;
    let chunker = args
        .chunk_avg
        .map(ChunkerParams::with_average)
        .unwrap_or_default();
    // Before anyone types a password; Repository::init checks again.
    chunker.validate()?;
    let mut config = Config::new(chunker, args.compression);
    config.data_storage_class = args.data_storage_class;
    let config = Repository::init(backend.clone(), &password, config, &global.kdf_cost())?;
    if global.json {
        output::print_json(&json!({"id": config.id.to_hex(), "location": backend.location()}));
    } else if !global.quiet {
        println!(
            "created repository {} at {}",
            config.id.to_hex(),
            backend.location()
        );
    }
    Ok(exit::OK)
}

/// Refuses a bucket whose lifecycle rules would expire repository objects or archive its
/// metadata; warns about data packs going to an archive class, and when the rules cannot be
/// read (credentials without s3:GetLifecycleConfiguration).
fn lifecycle_allows_a_repository(backend: &dyn strata::backend::Backend) -> anyhow::Result<()> {
    use strata::backend::lifecycle;
    let (prefix, rules) = match backend.lifecycle() {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(()),
        Err(e) => {
            eprintln!(
                "warning: could not read the bucket's lifecycle rules ({e}); make sure none \
                 expires objects of the repository or archives its metadata"
            );
            return Ok(());
        }
    };
    let dangers = lifecycle::dangers(&rules, &prefix);
    for d in dangers.iter().filter(|d| !d.severe) {
        eprintln!("warning: {d}");
    }
    let severe: Vec<String> = dangers
        .iter()
        .filter(|d| d.severe)
        .map(|d| d.to_string())
        .collect();
    if !severe.is_empty() {
        anyhow::bail!(
            "the bucket's lifecycle rules would destroy a repository: {}; {}",
            severe.join("; "),
            lifecycle::FIX
        );
    }
    Ok(())
}
