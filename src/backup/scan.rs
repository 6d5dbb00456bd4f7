//! The scan that runs ahead of a backup when a display wants totals: it walks the paths
//! (stat only, with the backup's excludes, `--one-file-system` and `--exclude-larger-than`)
//! counting files and bytes, and reports the running totals, so the display can show
//! percent and ETA. It is a display's estimate, never used for anything else, and it stops
//! as soon as the backup is done.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::BackupOptions;
use crate::progress::Progress;

/// Starts the scan; it ends by itself, or when `stop` is set.
pub(super) fn start(roots: Vec<PathBuf>, opts: &BackupOptions, progress: Arc<dyn Progress>, stop: Arc<AtomicBool>) {
    let (excludes, one_fs, larger) = (opts.excludes.clone(), opts.one_file_system, opts.exclude_larger_than);
    let _ = std::thread::Builder::new().name("coffer-scan".into()).spawn(move || {
        let (mut bytes, mut files, mut seen) = (0u64, 0u64, 0u64);
        for root in roots {
            let Ok(m) = std::fs::symlink_metadata(&root) else { continue };
            let dev = m.dev();
            let mut stack = vec![(root, m)];
            while let Some((path, m)) = stack.pop() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if m.is_file() {
                    if larger.is_none_or(|l| m.len() <= l) {
                        bytes += m.len();
                        files += 1;
                    }
                } else if m.is_dir() && (!one_fs || m.dev() == dev) {
                    for e in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                        let p = e.path();
                        let name = e.file_name();
                        if excludes.matches(p.as_os_str().as_bytes(), name.as_bytes()) {
                            continue;
                        }
                        if let Ok(m) = e.metadata() {
                            stack.push((p, m));
                        }
                    }
                }
                seen += 1;
                if seen % 4096 == 0 {
                    progress.set_total(bytes, files);
                }
            }
        }
        progress.set_total(bytes, files);
    });
}
