//! Command-line parsing and the global options every command shares.

mod args;
mod backup;
mod browse;
mod check;
mod config;
mod copy;
mod docs;
mod exit;
mod forget;
mod history;
mod init;
mod key;
mod monitor;
mod output;
mod pg;
mod prune;
mod repair;
mod report;
mod restore;
mod wal;
mod watch;

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};

use strata::{backend, Repository};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Deduplicating, encrypted snapshots of your data"
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The heading of the options every command takes, apart from its own.
const GLOBAL: &str = "Global options";

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Config file (repository, password source, backup sets).
    #[arg(long, env = "STRATA_CONFIG", global = true, help_heading = GLOBAL)]
    config: Option<PathBuf>,
    #[arg(skip)]
    file: config::ConfigFile,
    /// The environment variable holding the password (the destination of `copy` has its own).
    #[arg(skip = "STRATA_PASSWORD")]
    password_var: &'static str,
    /// Repository: a local directory, s3://bucket/prefix (AWS), or
    /// s3:http(s)://host:port/bucket/prefix (any S3 server).
    #[arg(
        short = 'r',
        long = "repo",
        env = "STRATA_REPOSITORY",
        global = true,
        help_heading = GLOBAL
    )]
    repo: Option<String>,
    /// Read the password from this file (first line). The password is taken from
    /// STRATA_PASSWORD if set, else from this file, else from --password-command, else
    /// asked for on the terminal.
    #[arg(long, env = "STRATA_PASSWORD_FILE", global = true, help_heading = GLOBAL)]
    password_file: Option<PathBuf>,
    /// Run this shell command and take its first line of output as the password (a secret
    /// store's client, say).
    #[arg(
        long,
        env = "STRATA_PASSWORD_COMMAND",
        global = true,
        help_heading = GLOBAL
    )]
    password_command: Option<String>,
    /// Cache directory (one sub-directory per repository id).
    #[arg(long, env = "STRATA_CACHE_DIR", global = true, help_heading = GLOBAL)]
    cache_dir: Option<PathBuf>,
    /// S3: upload objects larger than this in parts (default 64MiB, at least 5MiB).
    #[arg(
        long,
        env = "STRATA_S3_MULTIPART_THRESHOLD",
        global = true,
        value_name = "SIZE",
        help_heading = GLOBAL
    )]
    s3_multipart_threshold: Option<String>,
    /// S3: how long a request waits on the endpoint (default 60s): for its reply, and for
    /// each 1 KiB/s of a body's flow. A request's tries end after 3 times this.
    #[arg(
        long,
        env = "STRATA_S3_TIMEOUT",
        global = true,
        value_name = "DURATION",
        help_heading = GLOBAL
    )]
    s3_timeout: Option<String>,
    /// Write Prometheus metrics to this file after every backup, forget, prune and check
    /// (node_exporter's textfile collector; the other runs' series are kept).
    #[arg(long, env = "STRATA_METRICS_FILE", global = true, help_heading = GLOBAL)]
    metrics_file: Option<PathBuf>,
    /// Try first the key file whose id starts with this (`strata key list` shows ids): on
    /// a bare machine, opening otherwise tries key files cheapest first, within a budget.
    #[arg(long, env = "STRATA_KEY_HINT", global = true, help_heading = GLOBAL)]
    key_hint: Option<String>,
    /// How many times over a walk of a snapshot may meet the entries its trees hold
    /// (default 256): raise it for snapshots that honestly hold one directory many times
    /// over (hard-linked generations); a tree bomb repeats a few entries millions of times.
    #[arg(
        long,
        env = "STRATA_TREE_SHARING",
        global = true,
        value_name = "N",
        help_heading = GLOBAL
    )]
    tree_sharing: Option<u64>,
    /// Machine-readable JSON output.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Print nothing but errors and warnings.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    quiet: bool,
    /// More detail.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository.
    Init(init::InitArgs),
    /// Back up paths or standard input.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(browse::SnapshotsArgs),
    /// List the contents of a snapshot.
    Ls(browse::LsArgs),
    /// Write a file from a snapshot to standard output.
    Cat(browse::CatArgs),
    /// Write a file, or a directory as a tar archive, from a snapshot to standard output.
    Dump(browse::DumpArgs),
    /// Per set: the newest snapshot and its age, the last drill, its recovery objectives
    /// (rpo, rto, drill interval) judged, and how much verification covers; exits 1 when
    /// an objective does not hold or cannot be judged.
    Status(watch::StatusArgs),
    /// Restore drill: restore the newest snapshot of each set (or a sample of its files)
    /// into a temporary directory, verify every byte, run the set's drill-verify command
    /// in it, remove it, and record the outcome, the speed and the projected full-restore
    /// time in the repository.
    Drill(watch::DrillArgs),
    /// A report of each set's objectives, backups, drills, verification and storage: a
    /// self-contained HTML page (--html FILE) or JSON.
    Report(report::ReportArgs),
    /// Sizes, deduplication and compression, bytes and estimated monthly cost by storage
    /// class, and each set's growth with a size-anomaly flag.
    Stats(watch::StatsArgs),
    /// Request thaws of the archived (GLACIER, DEEP_ARCHIVE) data packs a snapshot needs;
    /// exit 0 once all are readable, 4 while thaws are pending.
    WarmUp(restore::WarmUpArgs),
    /// Mount the snapshots as a read-only file system (FUSE) until interrupted.
    ///
    /// The layout: snapshots/<id>/, sets/<set>/<time> and sets/<set>/latest,
    /// hosts/<host>/latest, and at/<time>/<set> (each set as of any time --at takes,
    /// e.g. "at/2026-11-25 14:30").
    Mount(browse::MountArgs),
    /// Every version of the paths matching a pattern, across snapshots.
    Find(history::FindArgs),
    /// What changed between two snapshots.
    Diff(history::DiffArgs),
    /// Restore a snapshot, or the state at a point in time.
    Restore(restore::RestoreArgs),
    /// Copy snapshots into another repository (a second site), incrementally: what the
    /// destination has is not sent again, and snapshots copied before are skipped.
    Copy(copy::CopyArgs),
    /// Verify the repository's integrity.
    Check(check::CheckArgs),
    /// Remove snapshots by a retention policy (data stays until prune).
    Forget(forget::ForgetArgs),
    /// Reclaim the space of data no snapshot references (safe while backups run).
    Prune(prune::PruneArgs),
    /// Remove stale maintenance locks (or all with --all).
    Unlock(prune::UnlockArgs),
    /// Repair after loss: rebuild the index, or rewrite snapshots without lost files.
    Repair(repair::RepairArgs),
    /// Manage the passwords that open the repository.
    Key(key::KeyArgs),
    /// PostgreSQL's WAL archive: `wal push` for archive_command, `wal fetch` for
    /// restore_command.
    Wal(wal::WalArgs),
    /// PostgreSQL base backups and point-in-time restores (`pg basebackup`, `pg restore`).
    Pg(pg::PgArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Write man pages (strata.1 and one per command) into a directory.
    Man(docs::ManArgs),
}

pub use exit::panic_code;

pub fn main() -> i32 {
    let args = docs::help_args(std::env::args_os().collect());
    if !args.iter().any(|a| a == "wal") {
        exit_on_signals_at_once();
    }
    let fetch = wal::is_fetch(&args);
    if fetch {
        exit::serving_fetch();
    }
    let failed = |code| if fetch { exit::FETCH_FAILED } else { code };
    // A misspelt `wal` command may be a restore_command (`wal fech`): PostgreSQL must not
    // read its usage error as the end of the archive.
    let wal = args.iter().any(|a| a == "wal");
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return if wal {
                exit::FETCH_FAILED
            } else {
                e.exit_code()
            };
        }
        Err(e) => e.exit(),
    };
    if let Some(n) = cli.global.tree_sharing {
        strata::walk::set_sharing(n);
    }
    match config::ConfigFile::load(cli.global.config.as_deref()) {
        Ok(f) => cli.global.file = f,
        Err(e) => {
            eprintln!("error: {}", output::plain_lines(&output::chain(&e)));
            return failed(exit::FAILURE);
        }
    }
    // Said where the sets are set up and proven (a backup says it of the sets it backs
    // up; status judges it): an RTO its storage class cannot meet.
    if matches!(cli.command, Command::Init(_) | Command::Drill(_)) {
        for w in cli.global.file.objective_warnings() {
            eprintln!("warning: {}", output::plain(&w));
        }
    }
    let result = match cli.command {
        Command::Init(args) => init::run(&cli.global, args),
        Command::Backup(args) => backup::run(&cli.global, args),
        Command::Snapshots(args) => browse::snapshots(&cli.global, args),
        Command::Ls(args) => browse::ls(&cli.global, args),
        Command::Cat(args) => browse::cat(&cli.global, args),
        Command::Dump(args) => browse::dump(&cli.global, args),
        Command::Mount(args) => browse::mount(&cli.global, args),
        Command::Status(args) => watch::status(&cli.global, args),
        Command::WarmUp(args) => restore::warm_up(&cli.global, args),
        Command::Drill(args) => watch::drill(&cli.global, args),
        Command::Stats(args) => watch::stats(&cli.global, args),
        Command::Report(args) => report::run(&cli.global, args),
        Command::Find(args) => history::find(&cli.global, args),
        Command::Diff(args) => history::diff(&cli.global, args),
        Command::Restore(args) => restore::run(&cli.global, args),
        Command::Copy(args) => copy::run(&cli.global, args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::Forget(args) => forget::run(&cli.global, args),
        Command::Prune(args) => prune::run(&cli.global, args),
        Command::Unlock(args) => prune::unlock(&cli.global, args),
        Command::Repair(args) => repair::run(&cli.global, args),
        Command::Key(args) => key::run(&cli.global, args),
        Command::Wal(args) => wal::run(&cli.global, args),
        Command::Pg(args) => pg::run(&cli.global, args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::plain_lines(&output::chain(&e)));
            failed(exit::code_of_anyhow(&e))
        }
    }
}

/// A flag SIGINT and SIGTERM set: a backup then stops reading, saves and indexes what it
/// uploaded; a restore stops reading packs and removes its partly written files; both exit
/// 130 saying so. A second signal ends the process at once, and the hook running then.
pub(crate) fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    signals_taken_over();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        let second = stop.clone();
        // SAFETY: the handler only loads an atomic, calls killpg and exits, all
        // async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                if second.load(std::sync::atomic::Ordering::SeqCst) {
                    strata::hooks::kill_running();
                    let code = AT_ONCE_CODE.load(std::sync::atomic::Ordering::SeqCst);
                    signal_hook::low_level::exit(code);
                }
            })?;
        }
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// The exit code a second signal ends the process with: [`exit::INTERRUPTED`] until the
/// command's own result is known (a backup whose snapshot is saved, running its hook: the
/// snapshot is there, and 130 says "none written"; hostile pass 7).
static AT_ONCE_CODE: std::sync::atomic::AtomicI32 =
    std::sync::atomic::AtomicI32::new(exit::INTERRUPTED);

/// The command's result is `code` from now on, whatever a second signal interrupts.
pub(crate) fn result_known(code: i32) {
    AT_ONCE_CODE.store(code, std::sync::atomic::Ordering::SeqCst);
}

/// While set, SIGINT and SIGTERM end the process at once with [`exit::INTERRUPTED`]
/// (instead of the signal's own 130/143 and no word); cleared once a command takes them
/// over ([`stop_on_signals`]) to stop cleanly.
static AT_ONCE: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// A command handles SIGINT and SIGTERM itself from now on (it must say so before it
/// registers its own handlers, or the first signal would still end the process at once).
pub(crate) fn signals_taken_over() {
    if let Some(at_once) = AT_ONCE.get() {
        at_once.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// From the process's start: a signal before a command stops cleanly exits 130, as the
/// README's table says of an interrupted run. Not for `wal`, whose exit codes PostgreSQL
/// reads (a restore_command killed by SIGTERM must look killed, not failed).
fn exit_on_signals_at_once() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let at_once = AT_ONCE.get_or_init(|| std::sync::Arc::new(true.into()));
    for sig in [SIGINT, SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            sig,
            exit::INTERRUPTED,
            at_once.clone(),
        );
    }
}

/// Warnings about damage an operation skipped, on standard error.
fn warning_sink() -> strata::WarningSink {
    Box::new(|msg| eprintln!("warning: {}", output::plain(msg)))
}

impl Global {
    fn repo_url(&self) -> anyhow::Result<&str> {
        self.repo
            .as_deref()
            .or(self.file.repository.as_deref())
            .ok_or_else(|| {
                anyhow!("no repository given: use -r/--repo, STRATA_REPOSITORY or the config file")
            })
    }

    fn backend(&self) -> anyhow::Result<backend::BackendRef> {
        let threshold = self
            .s3_multipart_threshold
            .as_deref()
            .or(self.file.s3_multipart_threshold.as_deref())
            .map(|s| {
                s.parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|e| anyhow!("s3-multipart-threshold {s:?}: {e}"))
            })
            .transpose()?;
        let opts = backend::BackendOptions {
            s3_multipart_threshold: threshold,
            s3_timeout: self.s3_timeout()?,
        };
        Ok(strata_s3::schemes().open(self.repo_url()?, &opts)?)
    }

    /// `--s3-timeout`, else the config file's: a second at least (a hung endpoint costs a
    /// request 3 times this, a command one request in flight).
    fn s3_timeout(&self) -> anyhow::Result<Option<std::time::Duration>> {
        let given = self.s3_timeout.as_deref();
        let Some(s) = given.or(self.file.s3_timeout.as_deref()) else {
            return Ok(None);
        };
        // A day at most: a request may take three times it, and no endpoint answers later.
        let range = std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86_400);
        match humantime::parse_duration(s) {
            Ok(t) if range.contains(&t) => Ok(Some(t)),
            Ok(_) => Err(exit::usage(format!(
                "s3-timeout {s:?}: between 1s and 1day"
            ))),
            Err(e) => Err(exit::usage(format!("s3-timeout {s:?}: {e}"))),
        }
    }

    /// The password: `STRATA_PASSWORD`, then the password file, then the password command,
    /// then a prompt on a terminal.
    fn password(&self, prompt: &str, confirm: bool) -> anyhow::Result<Vec<u8>> {
        if let Some(p) = std::env::var_os(self.password_var) {
            return non_empty(p.into_encoded_bytes(), self.password_var);
        }
        // What the command line (or environment) gives wins over the config file.
        let file = self.password_file.as_ref();
        let command = self.password_command.as_ref();
        let (file, command) = match (file, command) {
            (None, None) => (
                self.file.password_file.as_ref(),
                self.file.password_command.as_ref(),
            ),
            given => given,
        };
        if let Some(f) = file {
            return non_empty(read_password_file(f)?, "the password file");
        }
        if let Some(cmd) = command {
            let timeout = match &self.file.password_command_timeout {
                Some(t) => strata::timespec::parse_duration(t)
                    .map_err(|e| anyhow!("password-command-timeout: {e}"))?
                    .to_std()?,
                None => std::time::Duration::from_secs(60),
            };
            return non_empty(run_password_command(cmd, timeout)?, "the password command");
        }
        if self.password_var != "STRATA_PASSWORD" && !std::io::stdin().is_terminal() {
            return Err(anyhow!(
                "no password given for the destination: set {} or STRATA_TO_PASSWORD_FILE, or \
                 use --to-password-file or --to-password-command",
                self.password_var
            ));
        }
        prompt_password(prompt, confirm)
    }

    fn cache_base(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = self.cache_dir.as_ref().or(self.file.cache_dir.as_ref()) {
            return Ok(d.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .ok_or_else(|| anyhow!("no cache directory: set STRATA_CACHE_DIR or HOME"))?;
        Ok(base.join("strata"))
    }

    fn open(&self) -> anyhow::Result<Repository> {
        let repo = self.open_how(strata::IndexView::Full)?;
        repo.set_warning_sink(warning_sink());
        Ok(repo)
    }

    /// For a backup: a partial view of the index where the repository allows one
    /// (format-spec §7.3), so that its cost does not grow with the hosts sharing it.
    fn open_for_backup(&self) -> anyhow::Result<Repository> {
        let repo = self.open_how(strata::IndexView::Partial)?;
        repo.set_warning_sink(warning_sink());
        Ok(repo)
    }

    /// For commands that need snapshots and audit records only: no index listing.
    fn open_metadata(&self) -> anyhow::Result<strata::MetadataRepository> {
        let repo = strata::MetadataRepository::new(self.open_how(strata::IndexView::None)?);
        repo.set_warning_sink(warning_sink());
        Ok(repo)
    }

    /// [`Global::open`] with a password already read (the WAL agent keeps it to check
    /// the pushes it serves).
    fn open_with_password(&self, password: &[u8]) -> anyhow::Result<Repository> {
        let backend = self.backend()?;
        let repo = Repository::open(backend, password, &self.cache_base()?)
            .with_context(|| format!("opening repository {}", self.repo_url().unwrap_or("")))?;
        Ok(repo)
    }

    fn open_how(&self, view: strata::IndexView) -> anyhow::Result<Repository> {
        let backend = self.backend()?;
        let cache = self.cache_base()?;
        let prompt = match self.password_var {
            "STRATA_PASSWORD" => "repository password: ",
            _ => "destination repository password: ",
        };
        let mut password = || {
            self.password(prompt, false)
                .map_err(|e| strata::Error::Password(output::chain(&e)))
        };
        let hint = self.key_hint.as_deref();
        let repo = Repository::open_hinted(backend, &mut password, &cache, view, hint)
            .with_context(|| format!("opening repository {}", self.repo_url().unwrap_or("")))?;
        Ok(repo)
    }

    /// The cost of new keys. `STRATA_TEST_FAST_KDF=1` makes them cheap for test suites: read
    /// here, in the CLI, never by the library.
    fn kdf_cost(&self) -> strata::KdfCost {
        if std::env::var_os("STRATA_TEST_FAST_KDF").is_some_and(|v| v == "1") {
            // A release build is what operators run: a stray variable must not make their
            // key files cheap to guess without a word.
            if !cfg!(debug_assertions) {
                eprintln!(
                    "warning: STRATA_TEST_FAST_KDF=1 is set: the new key file's password is \
                     derived at a test's cost and is cheap to guess; unset it and add a key \
                     again (`strata key passwd`) for real use"
                );
            }
            strata::KdfCost::INSECURE_FOR_TESTS
        } else {
            strata::KdfCost::DEFAULT
        }
    }

    /// Progress bars only for a person watching.
    fn show_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

/// Runs `password-command`; its first output line is the password. A command still
/// running after `timeout` is killed and reported, and so is one that exits but leaves a
/// process (`cmd &`) holding its output open: the password is read to the end of that
/// output, which would otherwise never come.
fn run_password_command(cmd: &str, timeout: std::time::Duration) -> anyhow::Result<Vec<u8>> {
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running password-command {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped");
    let pipe = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&stdout)).map(|s| s.st_ino);
    let output = read_bounded(stdout);
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let strata::hooks::Waited::Exited(status) =
        strata::hooks::wait_or_kill(&mut child, timeout, None)?
    else {
        pipe.map(kill_pipe_holders).ok();
        return Err(anyhow!(
            "password-command {cmd:?} did not finish within {} (raise \
             password-command-timeout if it needs longer)",
            humantime::format_duration(timeout)
        ));
    };
    let left = timeout.saturating_sub(started.elapsed());
    let out = output.recv_timeout(left).or_else(|_| {
        // Whatever still holds the pipe is the command's own leftover: end it.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        pipe.map(kill_pipe_holders).ok();
        output
            .recv_timeout(std::time::Duration::from_secs(1))
            .map_err(|_| {
                anyhow!(
                    "password-command {cmd:?} exited but left a process holding its output \
                     open for more than {}: let the command end with its output",
                    humantime::format_duration(timeout)
                )
            })
    })?;
    if !status.success() {
        return Err(anyhow!("password-command {cmd:?} failed ({status})"));
    }
    let line = out.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(line.to_vec())
}

/// Kills every other process that holds the pipe `ino` open: the password command's
/// leftovers, including one that left its process group (`setsid cmd &`).
fn kill_pipe_holders(ino: u64) {
    let want = format!("pipe:[{ino}]");
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = |fd: std::fs::DirEntry| std::fs::read_link(fd.path()).is_ok_and(|l| l == *want);
        if pid != me && fds.flatten().any(holds) {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Reads `pipe` to its end on a thread of its own, keeping at most 64 KiB (a password is
/// one line) and draining the rest so that the writer is never blocked by a full pipe.
fn read_bounded(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    use std::io::Read;
    const KEEP: u64 = 64 << 10;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut out = Vec::new();
        let _ = pipe.by_ref().take(KEEP).read_to_end(&mut out);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        let _ = tx.send(out);
    });
    rx
}

/// `password`, unless it is empty: an empty password (an unset variable's `X=`, an empty
/// file, `/dev/null`) protects nothing, and is refused wherever it comes from.
pub fn non_empty(password: Vec<u8>, source: &str) -> anyhow::Result<Vec<u8>> {
    // Spaces alone are no password either (a file of one blank line with a space).
    if password.iter().all(u8::is_ascii_whitespace) {
        return Err(strata::Error::BadInput {
            what: "password",
            reason: format!("the password from {source} is empty: refusing it"),
        }
        .into());
    }
    Ok(password)
}

/// The first line of `f`, read no further than its end: the file may be a pipe whose
/// writer stays open (`--password-file /dev/stdin`) or a device without end (`/dev/zero`).
pub fn read_password_file(f: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = || format!("reading password file {}", f.display());
    // A FIFO nobody writes to must not hold the command for ever (hostile pass 9): opened
    // without waiting for a writer, then read as usual (no writer reads as empty).
    let file = (std::fs::OpenOptions::new().read(true))
        .custom_flags(libc::O_NONBLOCK)
        .open(f)
        .with_context(what)?;
    let flags = nix::fcntl::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), nix::fcntl::F_GETFL)
        .with_context(what)?;
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::F_SETFL(blocking),
    )
    .with_context(what)?;
    let line = first_line(file, 64 << 10).with_context(what)?;
    Ok(line.strip_suffix(b"\r").unwrap_or(&line).to_vec())
}

/// Bytes of `r` up to the first newline or its end, refusing a line past `max` bytes.
fn first_line(r: impl std::io::Read, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{BufRead, Read};
    let mut line = Vec::new();
    let mut r = std::io::BufReader::new(r).take(max as u64 + 1);
    r.read_until(b'\n', &mut line)?;
    if line.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("its first line is longer than {max} bytes: not a password file"),
        ));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

pub fn prompt_password(prompt: &str, confirm: bool) -> anyhow::Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        return Err(anyhow!(
            "no password given: set STRATA_PASSWORD or STRATA_PASSWORD_FILE, or use --password-file or --password-command"
        ));
    }
    let p = rpassword::prompt_password(prompt).context("reading password")?;
    if confirm {
        let again = rpassword::prompt_password("again: ").context("reading password")?;
        if again != p {
            return Err(anyhow!("the passwords differ"));
        }
    }
    if p.is_empty() {
        return Err(anyhow!("empty password"));
    }
    Ok(p.into_bytes())
}

#[cfg(test)]
mod tests {
    /// Every subcommand's arguments are consistent (unique names, valid relations): clap
    /// checks only when a command is parsed, so a clash would otherwise first show in use.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Issue 31: a password file was read to its end: `/dev/zero` grew without bound and a
    /// pipe whose writer stayed open (`/dev/stdin`) hung after the line had come.
    #[test]
    fn a_password_file_is_read_to_its_first_line_only() {
        use super::first_line;
        assert_eq!(first_line(&b"pw\nrest"[..], 16).unwrap(), b"pw");
        assert_eq!(first_line(&b"pw"[..], 16).unwrap(), b"pw");
        assert_eq!(first_line(&[b'x'; 16][..], 16).unwrap(), [b'x'; 16]);
        let endless = std::io::repeat(0);
        let e = first_line(endless, 16).unwrap_err();
        assert!(e.to_string().contains("longer than 16 bytes"), "{e}");
        let (rx, mut tx) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut tx, b"secret\n").unwrap();
        // The writer is still open: the line is enough.
        assert_eq!(first_line(rx, 16).unwrap(), b"secret");
        drop(tx);
    }
}
