//! The scan a backup runs beside its walk: how many files and bytes the sources hold, so
//! that progress can show a total, a percentage and an estimate. It only stats; it follows
//! the walk's rules (excludes, one file system) and stops when the backup is done.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::patterns::Patterns;
use crate::progress::Progress;

/// How often the totals found so far are passed on.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Counts the files and bytes below `paths`, reporting to `progress` as it goes; gives up
/// quietly when `stop` is set. Whether it counted everything.
pub(crate) fn scan(
    paths: &[PathBuf],
    excludes: Option<&Patterns>,
    one_file_system: bool,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> bool {
    let mut found = Found {
        files: 0,
        bytes: 0,
        last: Instant::now(),
        progress,
        stop,
    };
    for p in paths {
        let Ok(meta) = fs::symlink_metadata(p) else {
            continue;
        };
        if !found.visit(p, &meta, meta.dev(), excludes, one_file_system) {
            return false;
        }
    }
    progress.found(found.files, found.bytes, true);
    true
}

struct Found<'a> {
    files: u64,
    bytes: u64,
    last: Instant,
    progress: &'a dyn Progress,
    stop: &'a AtomicBool,
}

impl Found<'_> {
    /// False once stopped.
    fn visit(
        &mut self,
        path: &Path,
        meta: &fs::Metadata,
        root_dev: u64,
        excludes: Option<&Patterns>,
        one_file_system: bool,
    ) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if excludes.is_some_and(|g| g.is_match(path)) {
            return true;
        }
        if meta.is_file() {
            self.files += 1;
            self.bytes += meta.len();
            if self.last.elapsed() >= REPORT_EVERY {
                self.progress.found(self.files, self.bytes, false);
                self.last = Instant::now();
            }
        } else if meta.is_dir() && !(one_file_system && meta.dev() != root_dev) {
            let Ok(rd) = fs::read_dir(path) else {
                return true;
            };
            for e in rd.flatten() {
                let child = e.path();
                if let Ok(m) = fs::symlink_metadata(&child) {
                    if !self.visit(&child, &m, root_dev, excludes, one_file_system) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Last(Mutex<Option<(u64, u64, bool)>>);
    impl Progress for Last {
        fn found(&self, files: u64, bytes: u64, complete: bool) {
            *self.0.lock().unwrap() = Some((files, bytes, complete));
        }
    }

    #[test]
    fn counts_files_and_bytes_as_the_walk_would() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/one"), vec![0u8; 100]).unwrap();
        fs::write(root.join("a/b/two"), vec![0u8; 50]).unwrap();
        fs::write(root.join("skip.tmp"), vec![0u8; 1000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let excludes = Patterns::new(&["*.tmp".to_string()]).unwrap();
        let last = Last::default();
        scan(
            &[root],
            excludes.as_ref(),
            false,
            &last,
            &AtomicBool::new(false),
        );
        assert_eq!(*last.0.lock().unwrap(), Some((2, 150, true)));
        // Stopped: no total claimed.
        let last = Last::default();
        scan(
            &[dir.path().to_path_buf()],
            None,
            false,
            &last,
            &AtomicBool::new(true),
        );
        assert_eq!(*last.0.lock().unwrap(), None);
    }
}
