//! One run of a profile at a time on this machine, and what earlier runs left for the next.
//!
//! The lock is an exclusive `flock` on `<state>/run/PROFILE.lock`: the kernel drops it when
//! the process ends however it ends, so a killed run never leaves a stale lock behind (the
//! repository's own locks still guard against other machines). A second run either waits
//! for it or gives up at once (`overlap = "wait"` or `"exit"`).
//!
//! The state (`PROFILE.json` beside it) holds the times of the last prune, check and drill,
//! which part of the data the next check reads, the last success, and run counts; it is
//! written atomically after each run.

use std::fs::File;
use std::path::{Path, PathBuf};

/// A held run lock; released when dropped (or when the process ends).
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunLockError {
    #[error("profile {profile:?} is already running (lock {path}); this run exits (overlap = \"wait\" waits instead)")]
    Busy { profile: String, path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Takes the lock of `profile` under `state_dir`; with `wait`, blocks until it is free.
pub fn lock(state_dir: &Path, profile: &str, wait: bool) -> Result<RunLock, RunLockError> {
    let dir = state_dir.join("run");
    let path = dir.join(format!("{profile}.lock"));
    let io = |source| RunLockError::Io { path: path.display().to_string(), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    use rustix::fs::FlockOperation as Op;
    let op = if wait { Op::LockExclusive } else { Op::NonBlockingLockExclusive };
    match rustix::fs::flock(&file, op) {
        Ok(()) => Ok(RunLock { _file: file, path }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            Err(RunLockError::Busy { profile: profile.to_string(), path: path.display().to_string() })
        }
        Err(e) => Err(io(e.into())),
    }
}

/// What one profile's runs remember (Unix nanoseconds; 0 = never).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunState {
    pub last_run_ns: i64,
    pub last_success_ns: i64,
    pub last_prune_ns: i64,
    pub last_check_ns: i64,
    /// The part (1-based) the next rotating check reads.
    pub next_check_part: u32,
    pub last_drill_ns: i64,
    pub runs: u64,
    pub failures: u64,
}

fn state_path(state_dir: &Path, profile: &str) -> PathBuf {
    state_dir.join("run").join(format!("{profile}.json"))
}

/// The state of `profile`; a missing or unreadable file is a fresh start.
pub fn load_state(state_dir: &Path, profile: &str) -> RunState {
    std::fs::read(state_path(state_dir, profile)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Saves the state atomically.
pub fn save_state(state_dir: &Path, profile: &str, s: &RunState) -> std::io::Result<()> {
    let path = state_path(state_dir, profile);
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, s).map_err(std::io::Error::other)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// Whether a step last done at `last_ns` is due at `now_ns` when it runs every `every_s`
/// seconds. A last time in the future (a clock set back) counts as due: better one step too
/// many than none for as long as the clock was off.
pub fn due(last_ns: i64, every_s: u64, now_ns: i64) -> bool {
    last_ns == 0 || now_ns < last_ns || (now_ns - last_ns) as u128 >= every_s as u128 * 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_freed_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let a = lock(d.path(), "nightly", false).unwrap();
        assert!(matches!(lock(d.path(), "nightly", false), Err(RunLockError::Busy { .. })));
        assert!(lock(d.path(), "other", false).is_ok());
        drop(a);
        assert!(lock(d.path(), "nightly", false).is_ok());
    }

    #[test]
    fn state_round_trips_and_due() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_state(d.path(), "p"), RunState::default());
        let s = RunState { last_prune_ns: 5, next_check_part: 3, runs: 2, ..Default::default() };
        save_state(d.path(), "p", &s).unwrap();
        assert_eq!(load_state(d.path(), "p"), s);
        let day = 86_400;
        assert!(due(0, day, 1));
        assert!(!due(10 * 1_000_000_000, day, 11 * 1_000_000_000));
        assert!(due(1, day, 1 + day as i64 * 1_000_000_000));
        assert!(due(100, day, 50), "a clock set back counts as due");
    }
}
