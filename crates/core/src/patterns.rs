//! Include and exclude patterns as operators write them: globs matched against absolute
//! paths; a pattern not starting with `/` matches at any depth; as in `.gitignore`, `*`
//! and `?` never match a `/` (`**` does), and a trailing `/` is dropped (`cache/` is
//! `cache`).

use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled patterns, with the text they came from (a snapshot records its excludes).
#[derive(Clone, Debug)]
pub struct Patterns {
    set: GlobSet,
    source: Vec<String>,
}

impl Patterns {
    /// `None` for no patterns at all (nothing excluded, everything included).
    pub fn new(patterns: &[String]) -> Result<Option<Self>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let bad = |p: &str, e: globset::Error| Error::BadInput {
            what: "pattern",
            reason: format!("bad pattern {p:?}: {e}"),
        };
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            // `--include "$UNSET"` once matched everything (as `**/`): an in-place
            // restore of a whole snapshot over live files.
            if p.trim().is_empty() {
                return Err(Error::BadInput {
                    what: "pattern",
                    reason: format!("an empty pattern ({p:?}) matches nothing sensible"),
                });
            }
            // Hostile pass 8: `*` crossed `/` (`/srv/*.log` left out `/srv/db/wal/1.log`),
            // and `cache/` matched nothing.
            let trimmed = match p.trim_end_matches('/') {
                "" => "/",
                t => t,
            };
            let glob = |g: &str| {
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| bad(p, e))
            };
            b.add(glob(trimmed)?);
            // Paths are absolute: a pattern that does not start at the root matches at any
            // depth (`tasks/*.json` is every `…/tasks/*.json`), as restic's do.
            if !trimmed.starts_with('/') {
                b.add(glob(&format!("**/{trimmed}"))?);
            }
        }
        let set = b.build().map_err(|e| bad(&patterns.join(" "), e))?;
        Ok(Some(Patterns {
            set,
            source: patterns.to_vec(),
        }))
    }

    /// Whether `path` (absolute) matches any pattern.
    pub fn is_match(&self, path: &Path) -> bool {
        self.set.is_match(path)
    }

    /// The patterns as given.
    pub fn source(&self) -> &[String] {
        &self.source
    }
}

/// The patterns of a file, one per line; blank lines and lines starting with `#` are
/// skipped.
pub fn read_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile pass: `--include ""` (an unset variable) restored a whole snapshot.
    #[test]
    fn an_empty_pattern_is_refused() {
        for p in ["", " ", "\t"] {
            let e = Patterns::new(&["a".into(), p.into()]).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::BadInput {
                        what: "pattern",
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert!(Patterns::new(&[]).unwrap().is_none());
    }

    #[test]
    fn names_match_at_any_depth_paths_only_where_they_say() {
        let p = Patterns::new(&["*.tmp".into(), "/srv/cache/**".into()])
            .unwrap()
            .unwrap();
        assert!(p.is_match(Path::new("/a.tmp")));
        assert!(p.is_match(Path::new("/srv/app/x/b.tmp")));
        assert!(p.is_match(Path::new("/srv/cache/one/two")));
        assert!(!p.is_match(Path::new("/srv/app/cache/one")));
        assert!(!p.is_match(Path::new("/srv/app/a.tmp.keep")));
        assert_eq!(p.source(), ["*.tmp", "/srv/cache/**"]);
        assert!(Patterns::new(&[]).unwrap().is_none());
        let err = Patterns::new(&["a[".into()]).unwrap_err();
        assert!(err.to_string().contains("bad pattern \"a[\""), "{err}");
    }

    /// Hostile pass 8: as in `.gitignore`, `*` stays within a name and a trailing `/`
    /// names the directory.
    #[test]
    fn a_star_stays_within_a_name_and_a_trailing_slash_is_the_directory() {
        let p = Patterns::new(&["/srv/*.log".into(), "cache/".into()])
            .unwrap()
            .unwrap();
        assert!(p.is_match(Path::new("/srv/x.log")));
        assert!(!p.is_match(Path::new("/srv/db/wal/0001.log")));
        assert!(p.is_match(Path::new("/srv/app/cache")));
        assert!(p.is_match(Path::new("/cache")));
        let deep = Patterns::new(&["/srv/**/*.log".into()]).unwrap().unwrap();
        assert!(deep.is_match(Path::new("/srv/db/wal/0001.log")));
        let dir = Patterns::new(&["/srv/db/".into()]).unwrap().unwrap();
        assert!(dir.is_match(Path::new("/srv/db")));
        let rel = Patterns::new(&["tasks/*.json".into()]).unwrap().unwrap();
        assert!(rel.is_match(Path::new("/srv/app/tasks/a.json")));
        assert!(!rel.is_match(Path::new("/srv/app/tasks/old/a.json")));
    }

    #[test]
    fn pattern_files_skip_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("excludes");
        std::fs::write(&f, "# caches\n*.tmp\n\n  /srv/cache/**  \n#x\n").unwrap();
        assert_eq!(read_file(&f).unwrap(), ["*.tmp", "/srv/cache/**"]);
        assert!(matches!(
            read_file(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }
}
