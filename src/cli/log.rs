//! `--log-file`: structured logs through `tracing`, as text or JSON lines.
//!
//! The file is opened for appending (mode 0600) by each process, so logrotate can rename it
//! between runs without `copytruncate`; `--log-max-size` rotates it at start instead
//! (`FILE.1` ... `FILE.5`). Each command logs its start, its end with the exit code and
//! duration, its warnings and errors; `coffer run` adds each step's and hook's output.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};

/// Logs kept by `--log-max-size` rotation besides the live one.
const KEEP: u32 = 5;

static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Whether a log is being written.
pub fn active() -> bool {
    STARTED.get().is_some()
}

fn rotate(file: &Path, max: u64) -> std::io::Result<()> {
    match std::fs::metadata(file) {
        Ok(m) if m.len() > max => {}
        _ => return Ok(()),
    }
    let numbered = |n: u32| {
        let mut s = file.as_os_str().to_owned();
        s.push(format!(".{n}"));
        std::path::PathBuf::from(s)
    };
    for n in (1..KEEP).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    std::fs::rename(file, numbered(1))
}

/// Starts logging to `file` (once per process; later calls do nothing).
pub fn init(file: &Path, level: &str, json: bool, max_size: Option<&str>) -> Result<()> {
    if active() {
        return Ok(());
    }
    if let Some(m) = max_size {
        let max = crate::retention::prune::parse_size(m).map_err(|e| anyhow!("--log-max-size: {e}"))?;
        rotate(file, max).with_context(|| format!("rotating the log {}", file.display()))?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("opening the log file {}", file.display()))?;
    let level: tracing::Level =
        level.parse().map_err(|_| anyhow!("--log-level {level:?}: give error, warn, info, debug or trace"))?;
    // The HTTP stack logs whole URLs (a webhook's user:password@ among them) and headers at
    // debug and trace: it never goes below info, whatever --log-level says.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let quiet = level.min(tracing::Level::INFO);
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_targets(["hyper", "hyper_util", "reqwest", "h2", "rustls", "tower"].map(|t| (t, quiet)));
    let builder = tracing_subscriber::fmt().with_writer(Mutex::new(f)).with_ansi(false).with_max_level(level);
    let set =
        if json { builder.json().finish().with(targets).try_init() } else { builder.finish().with(targets).try_init() };
    set.map_err(|e| anyhow!("starting the log: {e}"))?;
    let _ = STARTED.set(());
    Ok(())
}
