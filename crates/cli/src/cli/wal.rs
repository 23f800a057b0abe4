//! `strata wal push|fetch`: PostgreSQL's archive_command and restore_command.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::json;

use strata_pg::wal::{Pushed, Spool, PREFETCH};

use super::{exit, output, Global};

#[derive(Args, Debug)]
pub struct WalArgs {
    #[command(subcommand)]
    cmd: WalCmd,
}

#[derive(Subcommand, Debug)]
enum WalCmd {
    /// Archive one WAL file (archive_command = 'strata --config FILE wal push NAME %p').
    /// Exit 0 only once the file is in the repository: PostgreSQL then deletes it. The
    /// same file pushed again exits 0; other content under an archived name fails.
    Push {
        /// The cluster, as `[postgres.NAME]` in the config file.
        name: String,
        /// The file (PostgreSQL's %p).
        path: PathBuf,
    },
    /// Write an archived WAL file to DEST (restore_command = 'strata --config FILE wal
    /// fetch NAME %f %p'). Exit 1, without writing anything, when it was never archived;
    /// any other failure exits 126, which stops PostgreSQL's recovery instead of ending it.
    /// The next segments are fetched ahead in the background, into the cache.
    Fetch {
        /// The cluster, as `[postgres.NAME]` in the config file.
        name: String,
        /// The file's name (PostgreSQL's %f).
        file: String,
        /// Where to write it (PostgreSQL's %p).
        dest: PathBuf,
    },
    /// Fetch the segments after FILE into the cache for `wal fetch` (started by it).
    #[command(hide = true)]
    Prefetch { name: String, file: String },
    /// Keep the repository open and serve `wal push` (started by it): see `agent`.
    #[command(hide = true)]
    Agent { name: String },
}

/// Whether the command line is `wal fetch`, read before parsing: its failures must all
/// exit [`exit::FETCH_FAILED`], a malformed command line's included.
pub fn is_fetch(args: &[std::ffi::OsString]) -> bool {
    let Some(wal) = args.iter().position(|a| a == "wal") else {
        return false;
    };
    args[wal + 1..]
        .iter()
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| a == "fetch")
}

pub fn run(global: &Global, args: WalArgs) -> anyhow::Result<i32> {
    let name = match &args.cmd {
        WalCmd::Push { name, .. }
        | WalCmd::Fetch { name, .. }
        | WalCmd::Prefetch { name, .. }
        | WalCmd::Agent { name } => name,
    };
    // A typo must not start a second archive beside the real one.
    if !global.file.postgres.contains_key(name) {
        return Err(anyhow!(
            "no [postgres.{name}] in the config file{}",
            match &global.config {
                Some(c) => format!(" {}", c.display()),
                None => " (give one with --config)".to_string(),
            }
        ));
    }
    if let WalCmd::Push { name, path } = &args.cmd {
        if let Some(code) = agent::push(global, name, path)? {
            return Ok(code);
        }
    }
    // Fetched ahead: no need to open the repository at all.
    let mut fetch_spool = None;
    if let WalCmd::Fetch { name, file, dest } = &args.cmd {
        let spool = spool(global, name)?;
        if spool.take(file, dest)? {
            if spool.ahead(file) < PREFETCH / 2 {
                prefetch(global, name, file);
            }
            return Ok(exit::OK);
        }
        fetch_spool = Some(spool);
    }
    if let WalCmd::Agent { name } = &args.cmd {
        return agent::serve(global, name);
    }
    let repo = global.open()?;
    match args.cmd {
        WalCmd::Push { name, path } => {
            let pushed = strata_pg::wal::push(&repo, &name, &path)?;
            // The next pushes go to an agent that keeps the repository open.
            agent::spawn(global, &name);
            print_pushed(global, &name, &path, pushed);
            Ok(exit::OK)
        }
        WalCmd::Fetch { name, file, dest } => {
            if strata_pg::wal::fetch(&repo, &name, &file, &dest)? {
                // A copy a prefetch spooled meanwhile would only linger.
                if let Some(spool) = &fetch_spool {
                    spool.discard(&file);
                }
                prefetch(global, &name, &file);
                Ok(exit::OK)
            } else {
                if !global.quiet {
                    // Not `eprintln!`: a standard error that cannot be written (a full
                    // disk) must not turn "not archived" into a failure.
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr(), "{file} is not archived for {name}");
                }
                Ok(exit::FAILURE)
            }
        }
        WalCmd::Agent { .. } => unreachable!("served before the repository is opened"),
        WalCmd::Prefetch { name, file } => {
            let spool = spool(global, &name)?;
            // The segment size the cluster's base backups record (PostgreSQL's default
            // without one).
            let size = strata_pg::base_backups(&repo, &name)?
                .last()
                .and_then(|(_, s)| strata_pg::base_backup(s).map(|p| p.segment_size))
                .unwrap_or(16 << 20);
            spool.fill(&repo, &name, &file, size, PREFETCH)?;
            Ok(exit::OK)
        }
    }
}

/// The spool of cluster `name` in this command's repository: the one whose `config`
/// file the location holds now (one request, no password).
fn spool(global: &Global, name: &str) -> anyhow::Result<Spool> {
    let config = global
        .backend()?
        .read(strata::backend::FileKind::Config, "config")?;
    Ok(Spool::new(
        &global.cache_base()?,
        global.repo_url()?,
        &config,
        name,
    )?)
}

fn print_pushed(global: &Global, name: &str, path: &std::path::Path, pushed: Pushed) {
    if global.json {
        output::print_json(&json!({"cluster": name, "path": path, "result": pushed}));
    }
}

/// This command's repository, config and cache, for a strata started in the background.
fn background(global: &Global) -> Option<std::process::Command> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = &global.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(r) = &global.repo {
        cmd.arg("--repo").arg(r);
    }
    if let Some(d) = &global.cache_dir {
        cmd.arg("--cache-dir").arg(d);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Some(cmd)
}

/// Starts `wal prefetch` in the background for the segments after `file`, with this
/// command's repository, config and cache; PostgreSQL does not wait for it. Only a
/// segment has a next one.
fn prefetch(global: &Global, name: &str, file: &str) {
    if file.len() != 24 {
        return;
    }
    let Some(mut cmd) = background(global) else {
        return;
    };
    cmd.args(["--quiet", "wal", "prefetch", name, file]);
    // Not waited for: it ends on its own, and a failure only costs the fetches it would
    // have saved.
    let _ = cmd.spawn();
}

/// The archive agent: `archive_command` runs one `wal push` per WAL file, and each would
/// pay for opening the repository (Argon2id, the cache, an index listing) before its few
/// milliseconds of work. The first push starts an agent that keeps the repository open
/// and listens on a socket in the cache (a 0700 directory: only the same user reaches
/// it); later pushes hand it their path and wait for its answer, which it gives only once
/// the file is durable in the repository, as a push of its own would. Asked for one file,
/// it archives the others PostgreSQL has ready along with it, sharing packs and one index
/// file, so that the pushes for those find them archived and answer at once.
mod agent {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use strata::Repository;
    use strata_pg::wal::Pushed;

    use super::super::{exit, Global};

    /// Idle this long, the agent exits.
    const IDLE: Duration = Duration::from_secs(30);
    /// The longest an agent lives: its view of the index must stay far younger than
    /// prune's grace period (24 h), like a backup's.
    const LIFE: Duration = Duration::from_secs(600);
    /// WAL files archived along with the one asked for.
    const READ_AHEAD: usize = 15;

    fn disabled() -> bool {
        std::env::var_os("STRATA_WAL_AGENT").is_some_and(|v| v == "off")
    }

    fn socket(global: &Global, name: &str) -> anyhow::Result<PathBuf> {
        let url = global.repo_url()?;
        let key = blake3::hash(url.as_bytes()).to_hex();
        let base = global.cache_base()?;
        let dir = base.join("wal-agent");
        // Only this user may have made the directories the socket lies in: another user
        // who could would serve pushes from a socket of their own.
        strata::private_dirs(&base, &dir)?;
        // Short: a socket path has room for about 100 bytes.
        Ok(dir.join(format!("{}-{}", &key[..16], hex::encode(name.as_bytes()))))
    }

    /// The uid of the process at the other end of `conn` (SO_PEERCRED), which must be
    /// this user: the directory's mode keeps others out, this makes sure of it.
    fn same_user(conn: &UnixStream) -> anyhow::Result<()> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let peer = getsockopt(conn, PeerCredentials)?.uid();
        let me = nix::unistd::geteuid().as_raw();
        if peer != me {
            anyhow::bail!("the WAL agent's socket is held by uid {peer}, not by this user (uid {me}): refusing it");
        }
        Ok(())
    }

    /// What a push shows the agent of its password: a hash of it, bound to the
    /// repository, that the agent compares with the one of the password it opened the
    /// repository with. A push must prove it could open the repository itself (only
    /// the same user ever sees the hash: both ends check).
    fn proof(global: &Global, password: &[u8]) -> anyhow::Result<blake3::Hash> {
        let mut h = blake3::Hasher::new_derive_key("strata wal agent password proof v1");
        h.update(global.repo_url()?.as_bytes());
        h.update(&[0]);
        h.update(password);
        Ok(h.finalize())
    }

    /// Hands `path` to a running agent: its exit code, or `None` when no agent answered
    /// (none runs, or it went away mid-request): then the push runs here. Pushing twice
    /// is harmless, so a lost answer costs nothing but time.
    pub fn push(global: &Global, name: &str, path: &Path) -> anyhow::Result<Option<i32>> {
        if disabled() {
            return Ok(None);
        }
        let path = std::path::absolute(path)?;
        let Some(text) = path.to_str().filter(|t| !t.contains('\n')) else {
            return Ok(None);
        };
        // Another user's directory or listener is no agent of ours: its "stored" would
        // have PostgreSQL delete a segment the archive lacks. This push archives instead.
        let conn = socket(global, name).and_then(|sock| match UnixStream::connect(sock) {
            Ok(conn) => same_user(&conn).map(|_| Some(conn)),
            Err(_) => Ok(None),
        });
        let mut conn = match conn {
            Ok(Some(conn)) => conn,
            Ok(None) => return Ok(None),
            Err(e) => {
                eprintln!("warning: {e:#}; archiving without the WAL agent");
                return Ok(None);
            }
        };
        let password = global.password("repository password: ", false)?;
        if writeln!(conn, "push {} {text}", proof(global, &password)?.to_hex()).is_err() {
            return Ok(None);
        }
        let mut answer = String::new();
        if BufReader::new(&conn).read_line(&mut answer).is_err() || !answer.ends_with('\n') {
            return Ok(None);
        }
        let pushed = match answer.trim_end() {
            "stored" => Pushed::Stored,
            "already_archived" => Pushed::AlreadyArchived,
            "wrong_password" => {
                return Err(strata::Error::WrongPassword { damaged: vec![] }.into());
            }
            // Its repository went or was replaced: this push opens what is there now.
            GONE => return Ok(None),
            other => {
                let msg = other.strip_prefix("error ").unwrap_or(other);
                return Err(anyhow::anyhow!("{msg}"));
            }
        };
        super::print_pushed(global, name, &path, pushed);
        Ok(Some(exit::OK))
    }

    /// Starts an agent for cluster `name` in the background, in a process group of its
    /// own (PostgreSQL signals its archiver's group when it stops).
    pub fn spawn(global: &Global, name: &str) {
        use std::os::unix::process::CommandExt;
        if disabled() {
            return;
        }
        if let Some(mut cmd) = super::background(global) {
            cmd.args(["--quiet", "wal", "agent", name]).process_group(0);
            let _ = cmd.spawn();
        }
    }

    struct State {
        busy: bool,
        last: Instant,
    }

    /// Serves pushes until idle or old; exits the process then. The socket is taken
    /// before the repository is opened: pushes meanwhile wait for this agent instead of
    /// starting more agents, each opening the repository in vain.
    pub fn serve(global: &Global, name: &str) -> anyhow::Result<i32> {
        let sock = socket(global, name)?;
        // Another agent of this user's serves already. Another user's listener there
        // (bound while the directory was open to them) is replaced: the directory is
        // ours, and pushes would otherwise archive by themselves for ever.
        if UnixStream::connect(&sock).is_ok_and(|conn| same_user(&conn).is_ok()) {
            return Ok(exit::OK);
        }
        let _ = std::fs::remove_file(&sock);
        let Ok(listener) = UnixListener::bind(&sock) else {
            return Ok(exit::OK); // Another agent bound it first.
        };
        // The directory (0700) keeps others out already; the socket says so too.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        }
        let password = global.password("repository password: ", false);
        let opened =
            password.and_then(|p| Ok((global.open_with_password(&p)?, proof(global, &p)?)));
        let (repo, proof) = match opened {
            Ok(r) => r,
            Err(e) => {
                // Waiting pushes see the connection close and do the work themselves.
                let _ = std::fs::remove_file(&sock);
                return Err(e);
            }
        };
        let repo = &repo;
        let started = Instant::now();
        let state = Arc::new(Mutex::new(State {
            busy: false,
            last: Instant::now(),
        }));
        {
            let (state, sock) = (state.clone(), sock.clone());
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                let st = state.lock().unwrap();
                if !st.busy && (st.last.elapsed() > IDLE || started.elapsed() > LIFE) {
                    let _ = std::fs::remove_file(&sock);
                    std::process::exit(exit::OK);
                }
            });
        }
        // Files this agent archived: name → the file's fingerprint when it was read.
        let mut done: HashMap<String, Fingerprint> = HashMap::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if same_user(&conn).is_err() {
                continue;
            }
            state.lock().unwrap().busy = true;
            let answer = handle(repo, name, &proof, &conn, &mut done);
            let _ = writeln!(conn, "{answer}");
            if answer == GONE {
                // The repository it opened is no longer there: the push that asked does
                // the work itself, and so do the next ones, until one starts an agent on
                // what is there now.
                let _ = std::fs::remove_file(&sock);
                std::process::exit(exit::OK);
            }
            let mut st = state.lock().unwrap();
            st.busy = false;
            st.last = Instant::now();
        }
        Ok(exit::OK)
    }

    /// What tells a file changed: PostgreSQL never writes a WAL file it marked ready, and
    /// recycles one (for a later segment) by renaming and rewriting it, which changes
    /// its name, size or modification time.
    type Fingerprint = (u64, u64, u64, i64, i64);

    fn fingerprint(path: &Path) -> Option<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }

    fn handle(
        repo: &Repository,
        name: &str,
        proof: &blake3::Hash,
        conn: &UnixStream,
        done: &mut HashMap<String, Fingerprint>,
    ) -> String {
        let mut line = String::new();
        if BufReader::new(conn).read_line(&mut line).is_err() {
            return "error unreadable request".into();
        }
        let Some((given, path)) = line
            .trim_end_matches('\n')
            .strip_prefix("push ")
            .and_then(|rest| rest.split_once(' '))
        else {
            return "error unknown request".into();
        };
        // blake3::Hash compares in constant time. Another password than the agent's may
        // be the new one (`key passwd`): the push opens the repository itself, which
        // tells, and this agent, whose password may be the old one, goes.
        if blake3::Hash::from_hex(given).ok().as_ref() != Some(proof) {
            return GONE.into();
        }
        let path = PathBuf::from(path);
        let file = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        // Archived by this agent already, the same bytes: one request makes sure the
        // record is still there (the repository may have been replaced by an older copy,
        // or the record damaged or removed since), or PostgreSQL would delete a segment
        // the archive lacks. Otherwise it is pushed again.
        if let Some(f) = file(&path) {
            if done
                .get(&f)
                .is_some_and(|k| fingerprint(&path).as_ref() == Some(k))
            {
                if let Ok(Some(_)) = strata_pg::wal::record(repo, name, &f) {
                    return "already_archived".into();
                }
                done.remove(&f);
            }
        }
        let mut batch = vec![path.clone()];
        batch.extend(
            strata_pg::wal::ready_after(&path, READ_AHEAD)
                .into_iter()
                .filter(|p| file(p).is_some_and(|f| !done.contains_key(&f))),
        );
        // Read before the push and again after it: a file PostgreSQL recycled meanwhile
        // must not be remembered with bytes other than those stored.
        let prints: Vec<_> = batch.iter().map(|p| fingerprint(p)).collect();
        let refs: Vec<&Path> = batch.iter().map(PathBuf::as_path).collect();
        // The agent may have opened the repository minutes ago: it must still be there,
        // or PostgreSQL would delete segments archived into nothing, and still have the
        // key file of the agent's password (removed, the push tries its own password).
        if repo.ensure_present().is_err() {
            return GONE.into();
        }
        let outcomes = match strata_pg::wal::push_many(repo, name, &refs) {
            Ok(o) => o,
            Err(e) => return format!("error {}", one_line(&e.to_string())),
        };
        let mut answer = String::new();
        for (i, (p, outcome)) in batch.iter().zip(outcomes).enumerate() {
            if let (Ok(_), Some(f), Some(print)) = (&outcome, file(p), prints[i]) {
                if fingerprint(p) == Some(print) {
                    done.insert(f, print);
                }
            }
            if i == 0 {
                answer = match outcome {
                    Ok(Pushed::Stored) => "stored".into(),
                    Ok(Pushed::AlreadyArchived) => "already_archived".into(),
                    Err(e) => format!("error {}", one_line(&e.to_string())),
                };
            }
        }
        answer
    }

    /// The agent's answer when the repository it opened is gone or replaced, its key file
    /// removed, or the push's password another: the push does the work itself, and the
    /// agent exits.
    const GONE: &str = "repository_gone";

    fn one_line(s: &str) -> String {
        s.replace('\n', " ")
    }
}
