//! Progress bars and small formatting helpers.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata::progress::Progress;

/// Progress on a terminal; warnings always reach stderr, bars only when wanted.
pub struct Bar {
    bar: Option<ProgressBar>,
    bytes: bool,
    verbose: bool,
}

impl Bar {
    /// `-v` lists items as they are handled.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
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
        }
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
            let line = format!("{what:<8} {}", path.display());
            match &self.bar {
                Some(b) => b.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    }

    fn warning(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }
}

pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}
