//! Progress reporting hooks; the CLI renders them, the library only counts.

/// Receives progress from long operations. Every method has a no-op default.
pub trait Progress: Sync {
    /// Total work is known (bytes or items, as the operation defines).
    fn set_total(&self, _total: u64) {}
    /// Some work was done.
    fn advance(&self, _amount: u64) {}
    /// The operation moved to a new phase.
    fn message(&self, _msg: &str) {}
    /// One item was handled (`what` is e.g. "new" or "changed"); shown with `-v`.
    fn item(&self, _what: &str, _path: &std::path::Path) {}
    /// Something was skipped or went wrong without stopping the operation.
    fn warning(&self, _msg: &str) {}
    /// A scan beside the operation found this many files and bytes so far; `complete`
    /// once it has seen everything (a backup's total, for a percentage and an estimate).
    fn found(&self, _files: u64, _bytes: u64, _complete: bool) {}
    /// One file was handled: read, or skipped as unchanged (its bytes go to `advance`).
    fn file_done(&self, _path: &std::path::Path) {}
    /// A long wait with no work to show (thaws of archived packs): worth a line in a log
    /// too, where no bar is drawn.
    fn waiting(&self, _msg: &str) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
