//! The `coffer` binary: everything lives in the library; see `coffer::cli`.

fn main() {
    tune_malloc();
    std::process::exit(coffer::cli::main());
}

/// Fixes glibc malloc's mmap threshold at 2 MiB (and its trim threshold at 8 MiB).
///
/// By default glibc raises the mmap threshold to the size of the largest block freed (our
/// 16 MiB packs, 8 MiB chunks), after which chunk buffers come from per-thread arenas that
/// the backup pipeline frees on other threads, and freed memory stays resident. Measured on
/// a 1.9 GB, 103k-file backup: peak RSS 216-240 MB by default, 134-148 MB with these fixed
/// thresholds, at no measurable cost in time (run-to-run noise was larger).
#[allow(unsafe_code)]
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once, first thing in
    // main, before any other thread exists, with valid parameter constants and values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}
