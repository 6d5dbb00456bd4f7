//! Read-ahead windows for ranged reads of remote packs.
//!
//! Restoring from S3 asks for one blob at a time, in the order the backup wrote them, and a
//! request per blob (often a few KiB) is dominated by latency. Each miss therefore fetches a
//! window of up to 4 MiB from the blob onwards (never past the pack's recorded end), and the
//! last few windows are kept, so the following blobs of the same pack come from memory.
//! Memory stays bounded: at most [`Readahead::KEEP`] windows.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use crate::id::PackId;
use crate::storage::{self, Store};

struct Window {
    pack: PackId,
    start: u64,
    data: Bytes,
}

#[derive(Default)]
pub struct Readahead {
    windows: Mutex<VecDeque<Window>>,
}

impl Readahead {
    pub const WINDOW: u64 = 4 << 20;
    pub const KEEP: usize = 8;

    fn lookup(&self, pack: &PackId, range: &Range<u64>) -> Option<Bytes> {
        let w = self.windows.lock().expect("poisoned");
        w.iter().find_map(|w| {
            let end = w.start + w.data.len() as u64;
            (w.pack == *pack && w.start <= range.start && range.end <= end)
                .then(|| w.data.slice((range.start - w.start) as usize..(range.end - w.start) as usize))
        })
    }

    /// Drops the windows of `pack` (bytes from it failed to authenticate: they may have been
    /// damaged in transit, so they are fetched again).
    pub fn forget(&self, pack: &PackId) {
        self.windows.lock().expect("poisoned").retain(|w| w.pack != *pack);
    }

    /// Exactly the bytes of `range` of pack `pack` (stored at `path`, `pack_size` bytes long).
    pub fn read(
        &self,
        store: &Store,
        path: &str,
        pack: PackId,
        pack_size: u64,
        range: Range<u64>,
    ) -> storage::Result<Bytes> {
        if let Some(b) = self.lookup(&pack, &range) {
            return Ok(b);
        }
        let end = range.end.max((range.start + Self::WINDOW).min(pack_size));
        let data = match store.get_range(path, range.start..end) {
            Ok(d) => d,
            // A wrong recorded size must not make a good blob unreadable.
            Err(_) if end > range.end => store.get_range(path, range.clone())?,
            Err(e) => return Err(e),
        };
        let out = data.slice(0..(range.end - range.start) as usize);
        let mut w = self.windows.lock().expect("poisoned");
        w.push_front(Window { pack, start: range.start, data });
        w.truncate(Self::KEEP);
        Ok(out)
    }
}
