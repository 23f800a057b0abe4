//! What a run tells the outside: the metrics file and the sets' hook commands.

use std::os::fd::AsFd;

use strata::metrics::{MetricsFile, Samples};

use super::output;
use super::Global;

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
    let output = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::null(),
    };
    match strata::hooks::run(cmd, env, output, stop) {
        strata::hooks::HookOutcome::Succeeded => {}
        outcome => eprintln!("warning: {what} hook {cmd:?} {outcome}"),
    }
}
