//! The command line: parse once into typed options, open the repository, call the library,
//! print. Nothing below `cli/` prints or knows about terminals.
//!
//! Output rules: `--json` prints one JSON document on stdout (NDJSON for `ls`), nothing else
//! on stdout; human text goes to stdout only for what a command is asked to list, and
//! progress, warnings and errors go to stderr.

/// A warning on stderr and in the log.
macro_rules! warn {
    ($($t:tt)*) => {{
        let m = format!($($t)*);
        eprintln!("warning: {m}");
        tracing::warn!("{m}");
    }};
}

/// A line on stdout; a write error (a closed pipe above all) is returned, never a panic as
/// with `println!`.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

/// As [`outln!`], without the newline.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($t)*)?
    }};
}

mod args;
mod backup;
mod commands;
mod drill;
mod exit;
mod governance;
mod history;
mod log;
mod outputs;
mod password;
mod profile;
mod progress;
mod repair;
mod retention;
mod rewrite;
mod run;
mod schedule;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches};

pub use args::Cli;
pub use exit::{exit_code_for, ExitCode};

/// The parsed command line, for `run` to tell which options were given on it.
static MATCHES: std::sync::OnceLock<clap::ArgMatches> = std::sync::OnceLock::new();

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    install_signal_handler();
    crate::fdlimit::raise();
    // Repository objects (key files above all) and restored files start private; restore
    // then sets each file's recorded mode explicitly.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.global.apply_env();
    let _ = MATCHES.set(matches);
    let json = cli.global.json;
    JSON.store(json, Ordering::SeqCst);
    if let Some(file) = &cli.global.log_file {
        let g = &cli.global;
        if let Err(e) = log::init(file, &g.log_level, g.log_format == "json", g.log_max_size.as_deref()) {
            eprintln!("coffer: error: {}", error_text(&e));
            return ExitCode::Error as i32;
        }
    }
    let watch = crate::clock::stopwatch();
    // The subcommand's name as clap parsed it: never an option's value (which can be a secret,
    // such as a --password-command).
    let command = MATCHES.get().and_then(|m| m.subcommand_name()).unwrap_or_default().to_string();
    tracing::info!(command = %command, pid = std::process::id(), "start");
    let result = commands::dispatch(cli);
    let secs = watch.elapsed().as_secs_f64();
    match result {
        Ok(code) => {
            tracing::info!(command = %command, exit_code = code as i32, duration_seconds = secs, "end");
            code as i32
        }
        Err(err) if stdout_closed(&err) => {
            // As `yes | head -1`: a closed pipe ends the command quietly, with the status of
            // a process killed by SIGPIPE (so `set -o pipefail` still sees it).
            tracing::info!(command = %command, duration_seconds = secs, "standard output closed");
            ExitCode::BrokenPipe as i32
        }
        Err(err) => {
            let code = exit_code_for(&err);
            let text = error_text(&err);
            tracing::error!(command = %command, exit_code = code as i32, duration_seconds = secs, error = %text, "failed");
            eprintln!("coffer: error: {text}");
            if json {
                let doc = serde_json::json!({ "error": text, "exit_code": code as i32 });
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            code as i32
        }
    }
}

/// Set while `coffer run` runs its steps: a signal then stops the running step (its child
/// process gets SIGTERM) and the run goes on to its failure and `finally` hooks.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// `coffer mount` is serving: a signal then asks it to unmount (a second one ends it).
static MOUNTED: AtomicBool = AtomicBool::new(false);
/// A signal asked the mount to end.
static UNMOUNT: AtomicBool = AtomicBool::new(false);
/// `--json` was given: a signal then ends the output with the error document too.
static JSON: AtomicBool = AtomicBool::new(false);
/// A signal arrived during a run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// SIGINT/SIGTERM end the process with exit code 130 at once: every write Coffer makes is
/// crash-safe (docs/format.md, "Write ordering"), so there is nothing to clean up but the
/// child processes, whose process groups get SIGTERM first (crate::ops::child). During
/// `coffer run` the first signal is passed on to the running step (and any hook) instead,
/// and a second one ends the run at once.
fn install_signal_handler() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        std::thread::spawn(move || {
            for _ in signals.forever() {
                if MOUNTED.load(Ordering::SeqCst) && !UNMOUNT.swap(true, Ordering::SeqCst) {
                    eprintln!("coffer: unmounting");
                    continue;
                }
                if RUNNING.load(Ordering::SeqCst) && !INTERRUPTED.swap(true, Ordering::SeqCst) {
                    eprintln!("coffer: interrupted: stopping the running step; the failure hooks run next");
                    crate::ops::child::terminate_all();
                    continue;
                }
                crate::ops::child::terminate_all();
                eprintln!("coffer: interrupted");
                tracing::error!(exit_code = ExitCode::Interrupted as i32, "interrupted");
                if JSON.load(Ordering::SeqCst) {
                    // println! takes stdout's lock and every document is written as whole
                    // lines, so this one starts on a line of its own.
                    let doc = serde_json::json!({ "error": "interrupted", "exit_code": ExitCode::Interrupted as i32 });
                    let _ = writeln!(std::io::stdout(), "{doc}");
                }
                std::process::exit(ExitCode::Interrupted as i32);
            }
        });
    }
}

/// `n` and the noun, singular for one: `1 snapshot`, `2 matches`, `0 entries`.
pub(crate) fn counted(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        return format!("1 {noun}");
    }
    let many = if noun.ends_with("ch") || noun.ends_with('s') || noun.ends_with('x') {
        format!("{noun}es")
    } else if let Some(stem) = noun.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'o', 'u'])) {
        format!("{stem}ies")
    } else {
        format!("{noun}s")
    };
    format!("{n} {many}")
}

/// An error and its causes on one line, each said once: a context that already quotes its
/// cause (`reading x: No such file or directory (os error 2)`) is not followed by it again,
/// nor is a cause that repeats an earlier one.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let t = cause.to_string();
        let t = t.trim();
        if t.is_empty() || out.contains(t) {
            continue;
        }
        if !out.is_empty() && t.starts_with(out.as_str()) {
            out = t.to_string();
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(t);
    }
    out
}

/// Whether `err` is a write to standard output that found the reading end closed: a
/// broken pipe in its causes, and stdout a pipe without readers (a broken pipe from a
/// network connection is a real error).
fn stdout_closed(err: &anyhow::Error) -> bool {
    let broken = err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    });
    if !broken {
        return false;
    }
    use rustix::event::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let fd = out.as_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
    poll(&mut fds, Some(&zero)).is_ok() && fds[0].revents().contains(PollFlags::ERR)
}

/// Whether to draw progress bars.
fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counted_nouns() {
        assert_eq!(super::counted(1u64, "snapshot"), "1 snapshot");
        assert_eq!(super::counted(2u64, "match"), "2 matches");
        assert_eq!(super::counted(0u64, "entry"), "0 entries");
        assert_eq!(super::counted(3u64, "key"), "3 keys");
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let shown = io.to_string();
        let e = anyhow::Error::new(io).context(format!("/nonexistent: {shown}")).context("backup");
        assert_eq!(super::error_text(&e), format!("backup: /nonexistent: {shown}"));
        let e = anyhow::anyhow!("Permission denied").context("Generic error: Permission denied").context("reading x");
        assert_eq!(super::error_text(&e), "reading x: Generic error: Permission denied");
    }
}
