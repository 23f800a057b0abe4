//! A backup set's hooks: the shell command a set names for a run that succeeded
//! (`on-success`) or failed (`on-failure`), told how the run went through its environment
//! ([`crate::sets::hook_env`]). A hook that fails or hangs is reported, and changes
//! nothing else: the backup is what matters.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::sets::BackupSet;

/// How long a hook may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// How long a hook may run once the run was interrupted (it reports the interruption).
pub const AFTER_SIGNAL: Duration = Duration::from_secs(30);

/// The process group of the child [`wait_or_kill`] waits for now (0: none), for a second
/// signal, which ends this process at once, to end it too ([`kill_running`]).
static RUNNING: AtomicI32 = AtomicI32::new(0);

/// Kills the process group of the hook (or other child in its own group) running now, if
/// any. Async-signal-safe (an atomic load and `killpg`): a handler that ends the process
/// at once calls it first, or the hook is orphaned and runs on (hostile pass 6).
pub fn kill_running() {
    let group = RUNNING.load(Ordering::SeqCst);
    if group > 0 {
        // SAFETY: killpg is async-signal-safe and takes no pointers.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
}

impl BackupSet {
    /// The hook a run triggers, with its name: `on-success` or `on-failure`.
    pub fn hook_for(&self, succeeded: bool) -> Option<(&'static str, &str)> {
        match succeeded {
            true => self.on_success.as_deref().map(|c| ("on-success", c)),
            false => self.on_failure.as_deref().map(|c| ("on-failure", c)),
        }
    }
}

/// How a hook ended.
#[derive(Debug)]
pub enum HookOutcome {
    /// It exited 0.
    Succeeded,
    /// It exited otherwise.
    Failed(ExitStatus),
    /// It ran longer than it may and was killed.
    TimedOut(Duration),
    /// The run was interrupted while it ran, and it was ended.
    Stopped,
    /// It could not be started, or waited for.
    Unstarted(std::io::Error),
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOutcome::Succeeded => f.write_str("succeeded"),
            HookOutcome::Failed(status) => write!(f, "failed ({status})"),
            HookOutcome::TimedOut(t) => write!(
                f,
                "did not finish within {} and was killed",
                humantime::format_duration(*t)
            ),
            HookOutcome::Stopped => {
                f.write_str("was ended: the run was interrupted (SIGINT or SIGTERM) while it ran")
            }
            HookOutcome::Unstarted(e) => write!(f, "could not be run: {e}"),
        }
    }
}

/// Whether a command this program starts (a hook, a drill's verify command, `psql`) must
/// not see variable `name`: the repository's password and how to get it
/// (`STRATA_PASSWORD*`), a new key's (`STRATA_NEW_PASSWORD`), a copy destination's
/// (`STRATA_TO_PASSWORD*`), and every AWS variable (keys, tokens, and the files, URLs and
/// profiles that lead to them). Such a command needs none of them, and its output may be
/// kept, shown in reports or sent to others.
pub fn is_secret(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    [
        "STRATA_PASSWORD",
        "STRATA_NEW_PASSWORD",
        "STRATA_TO_PASSWORD",
        "AWS_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// `cmd` with this process's secret variables (see [`is_secret`]) left out of the
/// environment it inherits.
pub fn without_secrets(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os().filter(|(n, _)| is_secret(n)) {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs hook `cmd` (`sh -c`, its own process group) with `env`, its output to `output`,
/// without this process's secrets (see [`is_secret`]).
/// `stop` set (the run was interrupted) ends it; already set when it starts, it still
/// runs, for [`AFTER_SIGNAL`] (an on-failure alert matters most then).
pub fn run(
    cmd: &str,
    env: &[(&str, String)],
    output: Stdio,
    stop: Option<&AtomicBool>,
) -> HookOutcome {
    // Decided before the spawn: a signal that comes once the hook runs must end it, not
    // be taken for one that came before (CI saw a hook outlive a SIGTERM by 30 s).
    let (stop, timeout) = match stop {
        Some(s) if s.load(Ordering::SeqCst) => (None, AFTER_SIGNAL),
        stop => (stop, TIMEOUT),
    };
    let child = without_secrets(&mut Command::new("sh"))
        .args(["-c", cmd])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(output)
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return HookOutcome::Unstarted(e),
    };
    match wait_or_kill(&mut child, timeout, stop) {
        Ok(Waited::Exited(status)) if status.success() => HookOutcome::Succeeded,
        Ok(Waited::Exited(status)) => HookOutcome::Failed(status),
        Ok(Waited::TimedOut) => HookOutcome::TimedOut(timeout),
        Ok(Waited::Stopped) => HookOutcome::Stopped,
        Err(e) => HookOutcome::Unstarted(e),
    }
}

/// How a child waited for by [`wait_or_kill`] ended.
pub enum Waited {
    /// It exited by itself.
    Exited(ExitStatus),
    /// Killed after the timeout.
    TimedOut,
    /// This process was asked to stop (SIGINT, SIGTERM): the child's group was told too.
    Stopped,
}

/// Waits for a child started in its own process group; after `timeout` kills the group
/// (`sh -c` may have started the real command as a child). When `stop` is set (a signal
/// to this process) the group gets SIGTERM, and SIGKILL if it outlives a short grace:
/// a hook must neither hold up a stop nor outlive it.
pub fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
    stop: Option<&AtomicBool>,
) -> std::io::Result<Waited> {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    RUNNING.store(group.as_raw(), Ordering::SeqCst);
    let waited = wait_for(child, group, timeout, stop);
    RUNNING.store(0, Ordering::SeqCst);
    waited
}

fn wait_for(
    child: &mut Child,
    group: nix::unistd::Pid,
    timeout: Duration,
    stop: Option<&AtomicBool>,
) -> std::io::Result<Waited> {
    use nix::sys::signal::{killpg, Signal};
    const GRACE: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(match stopping {
                Some(_) => Waited::Stopped,
                None => Waited::Exited(status),
            });
        }
        let asked = stop.is_some_and(|s| s.load(Ordering::SeqCst));
        if asked && stopping.is_none() {
            let _ = killpg(group, Signal::SIGTERM);
            stopping = Some(Instant::now());
        }
        let over = match stopping {
            Some(at) => at.elapsed() >= GRACE,
            None => started.elapsed() >= timeout,
        };
        if over {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            return Ok(if stopping.is_some() {
                Waited::Stopped
            } else {
                Waited::TimedOut
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook started once the run was stopped (an on-failure alert after SIGTERM) runs
    /// to its end, within [`AFTER_SIGNAL`], rather than being stopped at once.
    #[test]
    fn a_hook_started_after_the_signal_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let cmd = format!("sleep 0.3; echo ran > {}", done.display());
        let stopped = AtomicBool::new(true);
        let outcome = run(&cmd, &[], Stdio::null(), Some(&stopped));
        assert!(matches!(outcome, HookOutcome::Succeeded));
        assert!(done.exists());
    }

    /// Hooks, verify commands and psql get neither the repository's password variables
    /// nor the cloud's (issue 31); what they are told, and libpq's own, they keep.
    #[test]
    fn secrets_are_told_from_what_children_need() {
        for name in [
            "STRATA_PASSWORD",
            "STRATA_PASSWORD_FILE",
            "STRATA_PASSWORD_COMMAND",
            "STRATA_NEW_PASSWORD",
            "STRATA_TO_PASSWORD_FILE",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            assert!(is_secret(name.as_ref()), "{name}");
        }
        for name in [
            "STRATA_SET",
            "STRATA_ERROR",
            "PATH",
            "HOME",
            "PGPASSWORD",
            "TZ",
        ] {
            assert!(!is_secret(name.as_ref()), "{name}");
        }
    }

    #[test]
    fn a_hook_is_told_the_run_and_its_end_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!(
            "echo \"$STRATA_SET $STRATA_EXIT_CODE\" > '{}'",
            out.display()
        );
        let env = [
            ("STRATA_SET", "docs".to_string()),
            ("STRATA_EXIT_CODE", "3".into()),
        ];
        assert!(matches!(
            run(&cmd, &env, Stdio::null(), None),
            HookOutcome::Succeeded
        ));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "docs 3\n");
        let failed = run("exit 4", &[], Stdio::null(), None);
        assert!(failed.to_string().starts_with("failed"), "{failed}");
        // Asked to stop while it runs: ended at once, not after its sleep.
        let stop = AtomicBool::new(false);
        let t = Instant::now();
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                stop.store(true, Ordering::SeqCst);
            });
            run("sleep 30", &[], Stdio::null(), Some(&stop))
        });
        assert!(matches!(outcome, HookOutcome::Stopped), "{outcome}");
        assert!(t.elapsed() < Duration::from_secs(20));
        let set = BackupSet {
            on_success: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(set.hook_for(true), Some(("on-success", "a")));
        assert_eq!(set.hook_for(false), None);
    }
}
