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
    /// S3 Object Lock: retain every file written for this long (days, or a duration such
    /// as 90d), so that stolen credentials cannot delete history. The bucket must have
    /// Object Lock enabled.
    #[arg(long, value_name = "DAYS")]
    object_lock: Option<String>,
    /// Governance (credentials with s3:BypassGovernanceRetention may still delete) or
    /// compliance (no one can, the account's root included).
    #[arg(
        long,
        value_enum,
        default_value = "governance",
        requires = "object_lock"
    )]
    lock_mode: LockMode,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LockMode {
    Governance,
    Compliance,
}

/// `--object-lock`: a number of days, or a duration.
fn lock_period(s: &str) -> anyhow::Result<u64> {
    let secs = match s.trim().parse::<u64>() {
        Ok(days) => days * 86_400,
        Err(_) => strata::timespec::parse_duration(s)
            .map_err(|e| anyhow::anyhow!("--object-lock {s}: {e}"))?
            .num_seconds()
            .max(0) as u64,
    };
    if secs == 0 {
        anyhow::bail!("--object-lock {s}: give a period longer than zero");
    }
    Ok(secs)
}

pub fn run(global: &Global, args: InitArgs) -> anyhow::Result<i32> {
    let backend = global.backend()?;
    // Refused before anyone types a password; Repository::init checks again.
    if backend.exists()? {
        return Err(strata::Error::RepositoryExists(backend.location()).into());
    }
    lifecycle_allows_a_repository(backend.as_ref())?;
    let object_lock = args
        .object_lock
        .as_deref()
        .map(|p| -> anyhow::Result<_> {
            Ok(strata::ObjectLock {
                mode: match args.lock_mode {
                    LockMode::Governance => strata::backend::LockMode::Governance,
                    LockMode::Compliance => strata::backend::LockMode::Compliance,
                },
                period_secs: lock_period(p)?,
            })
        })
        .transpose()?;
    // Before anyone types a password, as the lifecycle check; Repository::init checks again.
    let lock_enabled = match backend.capabilities().object_lock {
        Some(lock) if object_lock.is_some() => lock.enabled()?,
        _ => false,
    };
    if object_lock.is_some() && !lock_enabled {
        anyhow::bail!(
            "--object-lock: the bucket of {} does not have Object Lock enabled (it can only \
             be turned on when the bucket is created: `aws s3api create-bucket \
             --object-lock-enabled-for-bucket ...`)",
            backend.location()
        );
    }
    let password = global.password("new repository password: ", true)?;
    let chunker = args
        .chunk_avg
        .map(ChunkerParams::with_average)
        .unwrap_or_default();
    // Before anyone types a password; Repository::init checks again.
    chunker.validate()?;
    let mut config = Config::new(chunker, args.compression);
    config.data_storage_class = args.data_storage_class;
    config.object_lock = object_lock;
    let config = Repository::init(backend.clone(), &password, config, &global.kdf_cost())?;
    if global.json {
        output::print_json(&json!({"id": config.id.to_hex(), "location": backend.location()}));
    } else if !global.quiet {
        println!(
            "created repository {} at {}",
            config.id.to_hex(),
            backend.location()
        );
        if let Some(l) = &config.object_lock {
            println!(
                "object lock: every file is retained ({} mode) for {} after it is written or \
                 last reused",
                l.mode,
                humantime::format_duration(l.period())
            );
        }
    }
    Ok(exit::OK)
}

/// Refuses a bucket whose lifecycle rules would expire repository objects or archive its
/// metadata; warns about data packs going to an archive class, and when the rules cannot be
/// read (credentials without s3:GetLifecycleConfiguration).
fn lifecycle_allows_a_repository(backend: &dyn strata::backend::Backend) -> anyhow::Result<()> {
    use strata::backend::lifecycle;
    let Some(lifecycle) = backend.capabilities().lifecycle else {
        return Ok(());
    };
    let (prefix, rules) = match lifecycle.rules() {
        Ok(found) => found,
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
