//! Progress reporting: the one trait the core reports through.
//!
//! The core never draws anything; `cli/` implements this trait with indicatif when stderr is
//! a terminal, and uses [`NoProgress`] otherwise. Implementations must be cheap: they are
//! called from worker threads for every file and blob.

/// Receives progress events from long-running operations. All methods default to no-ops.
pub trait Progress: Send + Sync {
    /// The total amount of work is known (or grew): bytes and items.
    fn set_total(&self, _bytes: u64, _items: u64) {}
    /// `bytes` of input were processed (read from source or restored).
    fn add_bytes(&self, _bytes: u64) {}
    /// One item (a file) was finished.
    fn add_item(&self) {}
    /// A file was backed up: read because it is new or changed, or reused unchanged from
    /// the parent snapshot (`-v` lists the first two, `-vv` all three); or restored: written
    /// new, replaced, kept, or deleted (`--delete`).
    fn file(&self, _path: &[u8], _status: FileStatus) {}
    /// Whether totals are worth computing ahead (a display that shows percent and ETA):
    /// a backup then scans its paths in the background to count them.
    fn wants_totals(&self) -> bool {
        false
    }
    /// A file started (`started`) or finished being read or written.
    fn reading(&self, _path: &[u8], _started: bool) {}
    /// A non-fatal problem worth telling the user about right away.
    fn warn(&self, _message: &str) {}
    /// A line for the user (stderr), printed without disturbing a live display.
    fn println(&self, line: &str) {
        eprintln!("{line}");
    }
    /// The operation has finished; clear any display.
    fn finish(&self) {}
}

/// What happened to a file in a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStatus {
    New,
    Modified,
    Unchanged,
    /// Removed (`restore --delete`).
    Deleted,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::New => "new",
            FileStatus::Modified => "modified",
            FileStatus::Unchanged => "unchanged",
            FileStatus::Deleted => "deleted",
        }
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
