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

use std::io::IsTerminal;
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
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let _ = MATCHES.set(matches);
    let json = cli.global.json;
    JSON.store(json, Ordering::SeqCst);
    if let Some(file) = &cli.global.log_file {
        let g = &cli.global;
        if let Err(e) = log::init(file, &g.log_level, g.log_format == "json", g.log_max_size.as_deref()) {
            eprintln!("coffer: error: {e:#}");
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
        Err(err) => {
            let code = exit_code_for(&err);
            tracing::error!(command = %command, exit_code = code as i32, duration_seconds = secs, error = %format!("{err:#}"), "failed");
            eprintln!("coffer: error: {err:#}");
            if json {
                let doc = serde_json::json!({ "error": format!("{err:#}"), "exit_code": code as i32 });
                println!("{doc}");
            }
            code as i32
        }
    }
}

/// Set while `coffer run` runs its steps: a signal then stops the running step (its child
/// process gets SIGTERM) and the run goes on to its failure and `finally` hooks.
static RUNNING: AtomicBool = AtomicBool::new(false);
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
                    println!("{doc}");
                }
                std::process::exit(ExitCode::Interrupted as i32);
            }
        });
    }
}

/// Whether to draw progress bars.
fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}
