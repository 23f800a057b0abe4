//! The operator's config file: repository, password source and named backup sets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::Deserialize;
pub use strata::sets::{BackupSet, Keep};

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
    /// S3: how long a request waits on the endpoint, e.g. "2m" (default 60s).
    pub s3_timeout: Option<String>,
    /// Prometheus metrics, rewritten after every run (node_exporter's textfile directory).
    pub metrics_file: Option<PathBuf>,
    /// Storage prices per GB-month by storage class, for `stats`' cost estimate.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
    #[serde(default)]
    pub sets: BTreeMap<String, BackupSet>,
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
            set.validate(name)
                .map_err(|e| anyhow!("invalid config {}: {e}", path.display()))?;
        }
        // Relative paths would name other files from each directory cron starts in: a
        // password file another user planted in /tmp (hostile pass 9), another repository.
        let repo = cfg
            .repository
            .as_deref()
            .map(|r| r.strip_prefix("local:").unwrap_or(r));
        let local = repo.filter(|r| !r.contains(':')).map(Path::new);
        let paths = [
            ("repository", local),
            ("password-file", cfg.password_file.as_deref()),
            ("cache-dir", cfg.cache_dir.as_deref()),
            ("metrics-file", cfg.metrics_file.as_deref()),
        ];
        let pg = (cfg.postgres.values())
            .filter_map(|c| Some(("postgres data-directory", c.data_directory.as_deref()?)));
        let all = paths
            .into_iter()
            .filter_map(|(k, p)| Some((k, p?)))
            .chain(pg);
        if let Some((key, p)) = all.into_iter().find(|(_, p)| !p.is_absolute()) {
            return Err(anyhow!(
                "invalid config {}: {key} {p:?} is relative: give it from / (a run from \
                 another directory would use another file)",
                path.display()
            ));
        }
        if cfg.password_file.is_some() && cfg.password_command.is_some() {
            return Err(anyhow!(
                "invalid config {}: give password-file or password-command, not both",
                path.display()
            ));
        }
        Ok(cfg)
    }

    /// Each set whose RTO its data's storage class cannot meet, whatever a drill measures
    /// (an archive class whose thaw alone is longer), with the fix.
    pub fn objective_warnings(&self) -> Vec<String> {
        self.sets
            .iter()
            .filter_map(|(name, set)| {
                let why = set.unreachable_rto(&[]).ok().flatten()?;
                Some(format!("set {name}: {why}"))
            })
            .collect()
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

    /// Set `name`; one the config does not define is a usage error (exit 2) naming those
    /// it does.
    pub fn set(&self, name: &str) -> anyhow::Result<&BackupSet> {
        self.sets.get(name).ok_or_else(|| {
            let known: Vec<String> = (self.sets.keys().cloned())
                .chain(self.postgres.keys().map(|c| format!("postgres.{c}")))
                .collect();
            super::exit::usage(format!(
                "no backup set {name:?} in the config ({})",
                match known.is_empty() {
                    true => "it defines none".to_string(),
                    false => format!("sets: {}", known.join(", ")),
                }
            ))
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
        // The runbook's tiers, every one reachable from its storage class.
        let rto = |s: &str| cfg.sets[s].objectives(None, &[]).unwrap().rto.unwrap();
        assert_eq!(rto("critical").num_hours(), 1);
        assert_eq!(rto("full").num_hours(), 4);
        assert!(
            cfg.objective_warnings().is_empty(),
            "{:?}",
            cfg.objective_warnings()
        );
        // With the runbook's literal "S3 Glacier", the full set's 4 hours cannot hold.
        let glacier = text.replace(
            "\"GLACIER_IR\"\none-file-system",
            "\"GLACIER\"\none-file-system",
        );
        let cfg = ConfigFile::parse(&glacier, Path::new("example")).unwrap();
        let warnings = cfg.objective_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("set full: data in GLACIER takes up to 5h"));
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
        for relative in [
            "repository = \"repo\"\n",
            "repository = \"local:repo\"\n",
            "[sets.a]\npaths = [\"/srv\"]\nexclude-file = [\"excludes.txt\"]\n",
            "password-file = \"pw\"\n",
            "cache-dir = \"cache\"\n",
            "metrics-file = \"m.prom\"\n",
            "[postgres.main]\ndata-directory = \"data\"\n",
        ] {
            let e = ConfigFile::parse(relative, Path::new("c"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("is relative"), "{relative}: {e}");
        }
        let fine = "repository = \"s3:https://h:1/b/p\"\npassword-file = \"/etc/pw\"\n";
        ConfigFile::parse(fine, Path::new("c")).unwrap();
        let e = ConfigFile::parse("[sets.a]\npaths = []\n", Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no paths"), "{e}");
    }
}
