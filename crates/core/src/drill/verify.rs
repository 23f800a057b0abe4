//! A drill's verify command: the operator's own check (`jq empty`, a smoke test against a
//! staging start) run in the restored copy, its exit code, output tail and time recorded.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use super::VerifyCommand;
use crate::audit::VerifyRun;
use crate::hooks::{wait_or_kill, without_secrets, Waited};
use crate::id::SnapshotId;
use crate::repo::snapshot::Snapshot;

/// The process group of the verify command running now (0: none), for [`stop`].
static GROUP: AtomicI32 = AtomicI32::new(0);

/// Runs `v` in `dir` (the restored copy: the snapshot's absolute paths below it), told
/// where it is and what it checks through `STRATA_DRILL_DIR`, `STRATA_SET`,
/// `STRATA_SNAPSHOT_ID` and `STRATA_SNAPSHOT_TIME`.
pub(super) fn run(v: &VerifyCommand, dir: &Path, id: &SnapshotId, snap: &Snapshot) -> VerifyRun {
    let started = Instant::now();
    let mut record = VerifyRun {
        command: v.command.clone(),
        exit_code: None,
        outcome: String::new(),
        output_tail: String::new(),
        duration_secs: 0.0,
    };
    let ended = output_file().and_then(|mut out| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &v.command])
            .current_dir(dir)
            .env("STRATA_DRILL_DIR", dir)
            .env("STRATA_SET", snap.set.as_deref().unwrap_or(""))
            .env("STRATA_SNAPSHOT_ID", id.to_hex())
            .env("STRATA_SNAPSHOT_TIME", &snap.time)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out.try_clone()?);
        // The restored copy is the operator's data, not a key to the repository, and
        // the command's output is kept in the repository and shown in reports.
        without_secrets(&mut cmd);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn()?;
        let group = child.id() as i32;
        GROUP.store(group, Ordering::SeqCst);
        let waited = wait_or_kill(&mut child, v.timeout, None);
        // What it left running in its group (a staging server, a writer into the copy)
        // ends with it: the copy is about to be removed.
        let _ = GROUP.compare_exchange(group, 0, Ordering::SeqCst, Ordering::SeqCst);
        kill_group(group);
        record.output_tail = tail(&mut out, VerifyRun::TAIL);
        waited
    });
    record.duration_secs = started.elapsed().as_secs_f64();
    (record.exit_code, record.outcome) = match ended {
        Ok(Waited::Exited(status)) => match status.code() {
            Some(c) => (Some(c), format!("exited {c}")),
            None => (None, format!("was killed ({status})")),
        },
        Ok(Waited::TimedOut) => (
            None,
            format!(
                "did not finish within {} and was killed",
                humantime::format_duration(v.timeout)
            ),
        ),
        Ok(Waited::Stopped) => (None, "was stopped".into()),
        Err(e) => (None, format!("could not be run: {e}")),
    };
    record
}

/// Ends the verify command running now, if any (the drill was interrupted): it must not
/// outlive the copy it checks.
pub(super) fn stop() {
    kill_group(GROUP.swap(0, Ordering::SeqCst));
}

fn kill_group(group: i32) {
    if group > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(group),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// An unnamed file for the command's output: outside the restored copy, gone with it.
fn output_file() -> std::io::Result<std::fs::File> {
    tempfile::tempfile()
}

/// The last `max` bytes of `out` (from a line's start where one is in them), as text.
fn tail(out: &mut std::fs::File, max: usize) -> String {
    let len = out.seek(SeekFrom::End(0)).unwrap_or(0);
    let from = len.saturating_sub(max as u64);
    let mut buf = Vec::new();
    if out.seek(SeekFrom::Start(from)).is_err()
        || out.take(max as u64).read_to_end(&mut buf).is_err()
    {
        return String::new();
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if from > 0 {
        if let Some(nl) = text.find('\n') {
            text.drain(..=nl);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One verify at a time: `GROUP` is the process's, and `stop` ends whatever is in it.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snap() -> Snapshot {
        Snapshot {
            paths: vec![],
            set: Some("kb".into()),
            ..Snapshot::sample("2026-12-06T10:00:00Z")
        }
    }

    fn cmd(c: &str, timeout_ms: u64) -> VerifyCommand {
        VerifyCommand {
            command: c.into(),
            timeout: std::time::Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn the_command_runs_in_the_copy_without_the_secrets() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{}").unwrap();
        std::env::set_var("STRATA_PASSWORD", "hunter2");
        std::env::set_var("STRATA_TO_PASSWORD_FILE", "/second-site");
        std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", "/secret");
        let c = "test -f a.json && test \"$STRATA_DRILL_DIR\" = \"$PWD\" && \
                 echo \"set=$STRATA_SET pw=${STRATA_PASSWORD-unset}${AWS_WEB_IDENTITY_TOKEN_FILE-}${STRATA_TO_PASSWORD_FILE-} \
                 t=$STRATA_SNAPSHOT_TIME path=${PATH:+kept}\"";
        let r = run(&cmd(c, 20_000), dir.path(), &SnapshotId([1; 32]), &snap());
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        assert!(r.passed());
        assert_eq!(
            r.output_tail, "set=kb pw=unset t=2026-12-06T10:00:00Z path=kept\n",
            "{r:?}"
        );
        assert_eq!(r.outcome, "exited 0");
    }

    /// A signal's `stop` ends the verify running now, and with none running touches
    /// nothing (this process's own group included).
    #[test]
    fn stop_ends_the_running_command_and_nothing_else() {
        let _serial = serial();
        stop();
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let running = std::thread::scope(|s| {
            let run = s.spawn(|| {
                run(
                    &cmd("sleep 30", 60_000),
                    dir.path(),
                    &SnapshotId([1; 32]),
                    &snap(),
                )
            });
            while GROUP.load(Ordering::SeqCst) == 0 && t.elapsed().as_secs() < 20 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            stop();
            run.join().unwrap()
        });
        assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
        assert!(!running.passed());
        assert!(running.outcome.contains("killed"), "{running:?}");
    }

    #[test]
    fn what_the_command_leaves_running_ends_with_it() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let c = format!("(sleep 2; touch '{}') & echo started", marker.display());
        let r = run(&cmd(&c, 20_000), dir.path(), &SnapshotId([1; 32]), &snap());
        assert!(r.passed(), "{r:?}");
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert!(!marker.exists(), "the background child outlived the verify");
    }

    #[test]
    fn a_failing_or_hanging_command_fails_with_its_output_tail() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let c =
            "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; echo bad >&2; exit 3";
        let r = run(&cmd(c, 20_000), dir.path(), &SnapshotId([1; 32]), &snap());
        assert_eq!((r.exit_code, r.passed()), (Some(3), false));
        assert!(
            r.output_tail.len() <= VerifyRun::TAIL,
            "{}",
            r.output_tail.len()
        );
        assert!(
            r.output_tail.ends_with("line 1999\nbad\n"),
            "{}",
            r.output_tail
        );
        assert!(r.output_tail.starts_with("line "), "starts at a line");
        let t = Instant::now();
        let r = run(
            &cmd("sleep 30", 300),
            dir.path(),
            &SnapshotId([1; 32]),
            &snap(),
        );
        assert!(t.elapsed().as_secs() < 10);
        assert_eq!(r.exit_code, None);
        assert!(!r.passed());
        assert!(r.outcome.contains("did not finish"), "{}", r.outcome);
    }
}
