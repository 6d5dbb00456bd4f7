//! Open-file limits: how many directory descriptors a walk may hold.
//!
//! Backup and restore work with `*at` calls relative to directory descriptors (no path is
//! ever resolved twice, so a swapped symlink cannot redirect them), which costs one
//! descriptor per directory they keep open. The CLI raises the soft limit to the hard one
//! at start ([`raise`]); walks keep at most [`dir_budget`] directories open and reopen the
//! others when they need them again, so a tree 2,000 levels deep or with thousands of
//! hard-linked directories stays within even `ulimit -n 1024`.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft open-file limit to the hard limit (at most 2^20); returns the new soft
/// limit. Failure leaves the limit as it was.
pub fn raise() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(1 << 20).min(1 << 20);
    let soft = lim.current.unwrap_or(hard);
    if soft < hard && setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: lim.maximum }).is_ok() {
        return hard;
    }
    soft
}

/// Directory descriptors a walk may keep open: a quarter of the soft limit (the rest is
/// for files being read or written, packs, sockets and the catalog), between 16 and 4096.
pub fn dir_budget() -> usize {
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    (soft / 4).clamp(16, 4096) as usize
}
