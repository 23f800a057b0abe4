//! What a run tells the outside: the metrics file and the sets' hook commands.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use strata::metrics::{self, MetricsFile, Samples};

use super::output;
use super::Global;
use super::Waited;

/// How long a hook may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a hook may run once strata was interrupted (it reports the interruption).
const HOOK_AFTER_SIGNAL: Duration = Duration::from_secs(30);

impl Global {
    /// The metrics file, if one is configured.
    pub fn metrics(&self) -> Option<MetricsFile> {
        self.metrics_file
            .as_ref()
            .or(self.file.metrics_file.as_ref())
            .map(MetricsFile::new)
    }

    /// Updates the metrics file, if there is one. A metrics file that cannot be written is
    /// reported and does not change the run's outcome: the backup is what matters.
    pub fn update_metrics(&self, f: impl FnOnce(&mut Samples)) {
        if let Some(m) = self.metrics() {
            if let Err(e) = m.update(f) {
                eprintln!(
                    "warning: metrics file {}: {}",
                    m.path().display(),
                    output::plain(&e.to_string())
                );
            }
        }
    }
}

/// Runs a set's hook with the run's summary in its environment; its output goes to
/// standard error (standard output may be JSON). A hook that fails or hangs is reported
/// and changes nothing else.
pub fn run_hook(
    what: &str,
    cmd: &str,
    env: &[(&str, String)],
    stop: Option<&std::sync::atomic::AtomicBool>,
) {
    let stdout = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::null(),
    };
    let child = std::process::Command::new("sh")
        .args(["-c", cmd])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .process_group(0)
        .spawn();
    // An interrupted run still reports through its hook (its on-failure alert matters
    // most then), for a short while; only a signal that comes while a hook runs ends it.
    let (stop, timeout) = match stop {
        Some(s) if s.load(std::sync::atomic::Ordering::Relaxed) => (None, HOOK_AFTER_SIGNAL),
        stop => (stop, HOOK_TIMEOUT),
    };
    let outcome = match child {
        Ok(mut child) => match super::wait_or_kill(&mut child, timeout, stop) {
            Ok(Waited::Exited(status)) if status.success() => return,
            Ok(Waited::Exited(status)) => format!("failed ({status})"),
            Ok(Waited::TimedOut) => format!(
                "did not finish within {} and was killed",
                humantime::format_duration(timeout)
            ),
            Ok(Waited::Stopped) => "was ended: strata was interrupted (SIGINT or SIGTERM) \
                                    while it ran"
                .to_string(),
            Err(e) => format!("could not be waited for: {e}"),
        },
        Err(e) => format!("could not be started: {e}"),
    };
    eprintln!("warning: {what} hook {cmd:?} {outcome}");
}

/// Records a backup run in the metrics file.
pub fn record_backup(global: &Global, run: &metrics::BackupRun<'_>) {
    global.update_metrics(|s| metrics::record_backup(s, run));
}
