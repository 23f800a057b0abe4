//! Progress bars and small formatting helpers.

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata::Progress;

/// Progress on a terminal; warnings always reach stderr, bars only when wanted.
pub struct Bar {
    bar: Option<ProgressBar>,
    bytes: bool,
    verbose: bool,
    quiet: bool,
    /// Files handled, and found by the scan (backup).
    files_done: AtomicU64,
    files_found: AtomicU64,
    /// When the message last changed (ms since `started`): at most ten times a second.
    shown: AtomicU64,
    started: std::time::Instant,
}

impl Bar {
    /// `-v` lists items as they are handled.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// `-q`: no lines about waits either.
    pub fn quiet(mut self, on: bool) -> Self {
        self.quiet = on;
        self
    }

    pub fn new(show: bool, bytes: bool, what: &str) -> Self {
        let bar = show.then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(spinner_style(bytes));
            b.set_message(what.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Bar {
            bar,
            bytes,
            verbose: false,
            quiet: false,
            files_done: AtomicU64::new(0),
            files_found: AtomicU64::new(0),
            shown: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// `files done/found` and the current file, at most ten times a second.
    fn show_files(&self, path: Option<&std::path::Path>) {
        let Some(b) = &self.bar else { return };
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.shown.load(Ordering::Relaxed);
        if path.is_some() && now < last + 100 {
            return;
        }
        self.shown.store(now, Ordering::Relaxed);
        let (done, found) = (
            self.files_done.load(Ordering::Relaxed),
            self.files_found.load(Ordering::Relaxed),
        );
        let mut msg = format!("{done}/{found} files");
        if let Some(p) = path {
            let p = plain(&p.display().to_string());
            // The end of the path: it is what changes.
            let tail: String = p
                .chars()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            msg.push_str(&format!(" {tail}"));
        }
        b.set_message(msg);
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn spinner_style(bytes: bool) -> ProgressStyle {
    let t = if bytes {
        "{spinner} {msg} {bytes} ({bytes_per_sec}) {elapsed}"
    } else {
        "{spinner} {msg} {pos} {elapsed}"
    };
    ProgressStyle::with_template(t).expect("valid template")
}

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            let t = if self.bytes {
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
            } else {
                "{msg} [{bar:30}] {pos}/{len} ({eta})"
            };
            b.set_style(ProgressStyle::with_template(t).expect("valid template"));
        }
    }

    fn advance(&self, amount: u64) {
        if let Some(b) = &self.bar {
            b.inc(amount);
        }
    }

    fn message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    fn item(&self, what: &str, path: &std::path::Path) {
        if self.verbose {
            let line = plain(&format!("{what:<8} {}", path.display()));
            match &self.bar {
                Some(b) => b.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    }

    fn found(&self, files: u64, bytes: u64, complete: bool) {
        let Some(b) = &self.bar else { return };
        self.files_found.store(files, Ordering::Relaxed);
        if b.length().is_none() {
            b.set_style(
                ProgressStyle::with_template(
                    "{percent:>3}% [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
        }
        // Until the scan is complete the total is a floor: the bar shows it as found so far.
        b.set_length(bytes.max(b.position()));
        if complete {
            self.show_files(None);
        }
    }

    fn file_done(&self, path: &std::path::Path) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.show_files(Some(path));
    }

    fn waiting(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None if !self.quiet => eprintln!("{}", plain(msg)),
            None => {}
        }
    }

    fn warning(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("warning: {}", plain(msg))),
            None => eprintln!("warning: {}", plain(msg)),
        }
    }
}

/// A message for the terminal with control characters escaped (`\n`, `\x1b`, ...): file
/// names come from sources and snapshots, and a hostile one must neither forge lines nor
/// drive the terminal.
pub fn plain(msg: &str) -> String {
    strata::printable(msg)
}

/// As [`plain`], but a message spanning lines (a config file's parse error shows the line
/// at fault) keeps them, each continuation indented, so no line of it passes for one of
/// strata's own.
/// An error and its causes, `a: b: c`, leaving out a cause whose text the error before it
/// already shows (library errors print their source themselves: "x: No such file or
/// directory (os error 2)" once, not twice).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut shown = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !shown.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        shown = text;
    }
    // The library says what fixes an error as a value; here it gets its words.
    let remedy = e.chain().find_map(|c| {
        c.downcast_ref::<strata_pg::Error>()
            .and_then(strata_pg::Error::remedy)
            .or_else(|| c.downcast_ref::<strata::Error>()?.remedy())
    });
    if let Some(r) = remedy {
        out.push_str(&format!(" ({})", self::remedy(r)));
    }
    out
}

pub fn plain_lines(msg: &str) -> String {
    msg.split('\n').map(plain).collect::<Vec<_>>().join("\n  ")
}

pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

/// A time for people: local `YYYY-MM-DD HH:MM:SS` with the zone's offset, the one format
/// every command prints (JSON keeps RFC 3339). Text that is not a time is shown as it is.
pub fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_else(|_| plain(rfc3339))
}

/// A duration in seconds as people read an age: `3d 4h`, `2h 5m`, `40s`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        "under 1s".into()
    }
}

/// What the CLI says a remedy is: its commands by name.
pub fn remedy(r: strata::Remedy) -> String {
    use strata::Remedy::*;
    const LOST: &str = "run `strata repair index` (the index then matches the packs that \
                        exist, and the next backup stores lost data again), then `strata repair \
                        snapshots` (new snapshots without the files that are lost)";
    match r {
        // Said at the start of a command and when a repository vanishes mid-way alike.
        Init => "check the location: if it was there, it was moved or deleted; a new one \
                 is made with `strata init`"
            .into(),
        // Not taken over by itself: a host of the same name (a cloned machine) may be
        // running it, and a lock records no boot id to tell.
        Unlock => "once no strata of that host runs it (another machine of the same name \
                   included), run `strata unlock`"
            .into(),
        WarmUp => "thaw what you need with `strata warm-up`".into(),
        RepairIndex => {
            "run `strata repair index`: it indexes the packs this file named from their headers"
                .into()
        }
        RepairIndexThenSnapshots => LOST.into(),
        IndexUnindexedPacks => "run `strata repair index` unless you did since the loss (it \
                                indexes packs that no index file names); what stays lost is \
                                stored again by a backup of the same files, and `strata repair \
                                snapshots` writes snapshots without what cannot come back"
            .into(),
        RereadPack => format!(
            "if a second read finds the same damage, move the pack out of the repository \
             (keep a copy), then {LOST}"
        ),
        ForgetSnapshot => {
            "the snapshot cannot be read; `strata repair snapshots --forget` removes it".into()
        }
        RemoveStrayFile => "it is no file strata wrote (someone who can write the repository's \
                            directory put it there) and no command reads it: move it out of \
                            the repository, and find out who made it"
            .into(),
        InvestigateRollback => "no forget removed it: someone who can write the storage may \
                                have rolled the repository back; find out who removed it (the \
                                bucket's access logs) before trusting `latest`; put the file \
                                back if a copy has it, or accept the loss (or record a removal \
                                of yours) with `strata forget --snapshot ID`; prune waits until \
                                then"
            .into(),
        HintKey => "name the key to try first with `--key-hint ID` (or STRATA_KEY_HINT=ID): \
                    `strata key list` on a host that opens the repository shows the ids, and \
                    otherwise the oldest file in the repository's keys/ (by the storage's \
                    time: S3's LastModified cannot be set back, a directory's mtimes can) is \
                    most likely the one `strata init` wrote; then remove the key files nobody \
                    knows"
            .into(),
        FixArchivingThenBaseBackup => "the missing WAL cannot be made again: see that \
                                       archiving works (pg_stat_archiver), then take a new base \
                                       backup (`strata pg basebackup`), from which recovery no \
                                       longer needs it"
            .into(),
        TakeBaseBackup => "take one with `strata pg basebackup`".into(),
        NewBaseBackup => "the archived WAL file cannot be read: take a new base backup of the \
                          cluster (`strata pg basebackup`), so that recovery no longer needs it"
            .into(),
        StopSecondArchiver => "stop the server that should not archive as this cluster (a \
                               restored copy: archive_mode = off there); `strata pg restore \
                               --timeline N` chooses the line to recover, and a new base backup \
                               starts a clean one"
            .into(),
        StoreRecordAgain => "a record cannot be read or names data that is gone: store it \
                             again from its source (a WAL file: `strata wal push` it again while \
                             PostgreSQL still has it); if that cannot be done, `strata repair \
                             roots` removes the records that cannot be read, and a new base \
                             backup (`strata pg basebackup`) replaces the WAL they held"
            .into(),
        ForgetExpandingSnapshot => "restore and the listings refuse it: if no host of yours \
                                    wrote it, remove it with `strata forget --snapshot` and \
                                    its id"
            .into(),
        RaiseTreeSharing => format!(
            "if this snapshot is your own (one directory held many times, as hard-linked \
             generations are), run again with --tree-sharing N above {} (memory and time grow \
             with it); if another host wrote it, it may be a tree bomb: do not raise it",
            strata::walk::sharing()
        ),
        RemoveMarkRecord => "move the mark record out of the repository's marks/ (keep a \
                             copy); until then every backup reads the whole index"
            .into(),
        CheckEndpoint => "see that the S3 endpoint is up and reachable from here (the \
                           repository URL, AWS_ENDPOINT_URL, AWS_REGION, the network), then run \
                           the command again; --s3-timeout (default 60s) sets how long a \
                           request waits"
            .into(),
        RemoveCraftedSnapshot => "only a host holding a key writes such a snapshot: remove \
                                  it (`strata forget --snapshot ID`), find the host that wrote \
                                  it (`strata snapshots`), and change its keys; the other \
                                  snapshots restore as usual"
            .into(),
    }
}
