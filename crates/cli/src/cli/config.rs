//! The operator's config file: repository, password source and named backup sets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::Deserialize;
use strata::retention::Policy;

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A command whose standard output (first line) is the password.
    pub password_command: Option<String>,
    /// How long password-command may take (default 60s): a hung secret store must not
    /// leave cron jobs piling up.
    pub password_command_timeout: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// S3: objects larger than this go up in parts, e.g. "64MiB".
    pub s3_multipart_threshold: Option<String>,
    /// Prometheus metrics, rewritten after every run (node_exporter's textfile directory).
    pub metrics_file: Option<PathBuf>,
    /// Storage prices per GB-month by storage class, for `stats`' cost estimate.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
    #[serde(default)]
    pub sets: BTreeMap<String, SetConfig>,
    /// PostgreSQL clusters whose WAL the repository archives (`strata wal`).
    #[serde(default)]
    pub postgres: BTreeMap<String, PostgresConfig>,
}

/// A PostgreSQL cluster (`[postgres.NAME]`). `wal` needs only the section to exist;
/// `pg basebackup` the data directory and connection.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresConfig {
    /// The cluster's data directory.
    pub data_directory: Option<PathBuf>,
    /// libpq conninfo for the cluster (`port=5432 user=postgres`).
    pub connection: Option<String>,
    /// Base backups kept; the WAL they need follows them.
    #[serde(default)]
    pub keep: Keep,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SetConfig {
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub keep: Keep,
    pub data_storage_class: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub one_file_system: bool,
    /// `status` calls the set stale when its newest snapshot is older than this (default:
    /// twice its smallest keep interval).
    pub max_age: Option<String>,
    /// Run (`sh -c`) after a backup of the set that exits 0, with its summary in the
    /// environment (STRATA_SET, STRATA_SNAPSHOT_ID, STRATA_EXIT_CODE, ...).
    pub on_success: Option<String>,
    /// Run after a backup of the set that does not exit 0 (3 included).
    pub on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
    pub within: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Keep {
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let within = self
            .within
            .as_deref()
            .map(|d| {
                strata::timespec::parse_duration(d).map_err(|e| anyhow!("keep.within {d}: {e}"))
            })
            .transpose()?;
        Ok(Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within,
            tags: self.tags.clone(),
        })
    }
}

impl SetConfig {
    /// How old the set's newest snapshot may be: `max-age`, else twice the smallest keep
    /// interval (hourly: 2h, daily: 2d, weekly: 14d, monthly: 62d, yearly: 732d), else none.
    pub fn max_age(&self) -> anyhow::Result<Option<chrono::Duration>> {
        if let Some(d) = &self.max_age {
            return strata::timespec::parse_duration(d)
                .map(Some)
                .map_err(|e| anyhow!("max-age {d}: {e}"));
        }
        let k = &self.keep;
        let hours = [
            (k.hourly, 1),
            (k.daily, 24),
            (k.weekly, 24 * 7),
            (k.monthly, 24 * 31),
            (k.yearly, 24 * 366),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, h)| h);
        Ok(hours.map(|h| chrono::Duration::hours(2 * h)))
    }
}

impl ConfigFile {
    /// `--config`/`STRATA_CONFIG` must exist; the default location is optional.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match default_path() {
                Some(p) => (p, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            // The default path of another user's HOME (run with setpriv, say): not asked
            // for, so not fatal, but said.
            Err(e) if !required && e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!(
                    "warning: config {} cannot be read ({e}); going on without it (--config \
                     names one)",
                    path.display()
                );
                return Ok(Self::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let cfg: ConfigFile =
            toml::from_str(text).map_err(|e| anyhow!("invalid config {}: {e}", path.display()))?;
        for (name, set) in &cfg.sets {
            // A name that could forge a line of output or a directory of `mount`.
            strata::check_name("set name", name)
                .map_err(|e| anyhow!("invalid config {}: {e}", path.display()))?;
            if set.paths.is_empty() {
                return Err(anyhow!(
                    "invalid config {}: set {name:?} has no paths",
                    path.display()
                ));
            }
            set.keep
                .policy()
                .map_err(|e| anyhow!("invalid config {}: set {name:?}: {e}", path.display()))?;
            set.max_age()
                .map_err(|e| anyhow!("invalid config {}: set {name:?}: {e}", path.display()))?;
            if let Some(class) = &set.data_storage_class {
                strata::backend::check_storage_class(class)
                    .map_err(|e| anyhow!("invalid config {}: set {name:?}: {e}", path.display()))?;
            }
        }
        if cfg.password_file.is_some() && cfg.password_command.is_some() {
            return Err(anyhow!(
                "invalid config {}: give password-file or password-command, not both",
                path.display()
            ));
        }
        Ok(cfg)
    }

    /// The keep policy of set `name`: a `[sets.NAME]`, or `postgres.CLUSTER` for the base
    /// backups of a `[postgres.CLUSTER]`.
    pub fn keep_of(&self, name: &str) -> anyhow::Result<&Keep> {
        if let Some(pg) = name
            .strip_prefix("postgres.")
            .and_then(|c| self.postgres.get(c))
        {
            return Ok(&pg.keep);
        }
        Ok(&self.set(name)?.keep)
    }

    pub fn set(&self, name: &str) -> anyhow::Result<&SetConfig> {
        self.sets.get(name).ok_or_else(|| {
            anyhow!(
                "no backup set {name:?} in the config (sets: {})",
                self.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("strata/config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../../../docs/strata.example.toml");
        let cfg = ConfigFile::parse(text, Path::new("example")).unwrap();
        assert_eq!(cfg.sets.len(), 4);
        assert_eq!(cfg.sets["critical"].keep.hourly, 168);
        assert_eq!(cfg.postgres["main"].keep.weekly, 4);
        assert_eq!(
            cfg.sets["metrics"].data_storage_class.as_deref(),
            Some("STANDARD_IA")
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "repository = \"/r\"\n\n[sets.a]\npaths = [\"/x\"]\nkeeep = { daily = 1 }\n";
        let e = ConfigFile::parse(text, Path::new("/etc/strata/config.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/strata/config.toml"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("keeep"), "{e}");
        let e = ConfigFile::parse(
            "[sets.a]\npaths = [\"/x\"]\nkeep = { daily = \"many\" }\n",
            Path::new("c"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3"), "{e}");
        let e = ConfigFile::parse("[sets.a]\npaths = []\n", Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no paths"), "{e}");
    }
}
