//! Small helpers about the running system.

use std::collections::HashMap;
use std::sync::Mutex;

/// This host's name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

pub fn username() -> String {
    user_name(nix::unistd::getuid().as_raw()).unwrap_or_else(|| nix::unistd::getuid().to_string())
}

pub fn user_name(uid: u32) -> Option<String> {
    static NAMES: Mutex<Option<HashMap<u32, Option<String>>>> = Mutex::new(None);
    let mut g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .entry(uid)
        .or_insert_with(|| {
            nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .clone()
}

pub fn group_name(gid: u32) -> Option<String> {
    static NAMES: Mutex<Option<HashMap<u32, Option<String>>>> = Mutex::new(None);
    let mut g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .entry(gid)
        .or_insert_with(|| {
            nix::unistd::Group::from_gid(gid.into())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .clone()
}

/// `text` with control characters escaped (`\n`, `\x1b`, ...): names from snapshots and
/// sources, shown to a terminal or a log, neither forge lines nor drive the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_printable(&mut out, c);
    }
    out
}

/// `name` as [`printable`] shows it, a backslash doubled and each byte that is not UTF-8
/// as `\xNN` (a lone 0x9b is the 8-bit CSI to some terminals): a listing's line that
/// tells every name apart and cannot be taken for another.
pub fn printable_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c => push_printable(&mut out, c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn push_printable(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        // C0, DEL and C1 (U+009B is the 8-bit CSI to xterm in UTF-8).
        c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
        // Line and paragraph separators end a line for some terminals and viewers;
        // bidirectional overrides reorder what follows them.
        '\u{2028}'
        | '\u{2029}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// Whether this process runs as root (and so may give files away to their owners).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `f` on a thread pool sized for the backend's reads (at least one thread per core), so
/// that network latency does not leave the cores idle.
pub fn with_read_pool<R: Send>(
    backend: &dyn crate::backend::Backend,
    f: impl FnOnce() -> R + Send,
) -> R {
    let threads = backend
        .capabilities()
        .read_concurrency
        .max(rayon::current_num_threads());
    match read_pool(threads) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// The process's read pool of `threads` threads, built once: a restore asks for it per
/// batch and a tree walk per level of missing trees (hostile pass 7: a pool was built
/// for each).
fn read_pool(threads: usize) -> Option<std::sync::Arc<rayon::ThreadPool>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().ok()?;
    if let Some(pool) = pools.get(&threads) {
        return Some(pool.clone());
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .ok()?,
    );
    pools.insert(threads, pool.clone());
    Some(pool)
}

/// The test vectors of format-spec §17 (its `vectors` block: one `name hex` per line), as
/// the spec says them: the code must compute every one (issue 32, item 1).
#[cfg(test)]
pub(crate) fn spec_vectors() -> std::collections::HashMap<&'static str, Vec<u8>> {
    let spec = include_str!("../../../format-spec/repository-v1.md");
    let block = spec
        .split("```vectors\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("format-spec has a vectors block");
    (block.lines())
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, hex::decode(v.trim()).expect("hex")))
        .collect()
}

/// Deterministic bytes that look random (xorshift64), for unit tests.
#[cfg(test)]
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// Hostile pass 4: U+2028 passed raw (a line break for some viewers).
    #[test]
    fn separators_and_bidi_overrides_are_escaped() {
        let shown = super::printable("a\u{2028}b\u{202e}c\nd\x1be é");
        assert_eq!(shown, "a\\u{2028}b\\u{202e}c\\nd\\x1be é");
    }

    /// Hostile pass 5 (E7): C1 controls and bytes that are not UTF-8 passed raw in
    /// listings; a backslash is doubled so that no name passes for another's escape.
    #[test]
    fn names_escape_c1_controls_stray_bytes_and_backslashes() {
        let shown = super::printable_name(b"a\xc2\x9bb\x9b\\x9b\xff\xc3\xa9\n");
        assert_eq!(shown, "a\\x9bb\\x9b\\\\x9b\\xffé\\n");
    }
}
