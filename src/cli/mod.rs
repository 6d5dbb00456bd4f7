//! The command line: parse once into typed options, open the repository, call the library,
//! print. Nothing below `cli/` prints or knows about terminals.
//!
//! Output rules: `--json` prints one JSON document on stdout (NDJSON for `ls`), nothing else
//! on stdout; human text goes to stdout only for what a command is asked to list, and
//! progress, warnings and errors go to stderr.

mod args;
mod backup;
mod commands;
mod drill;
mod exit;
mod governance;
mod history;
mod password;
mod profile;
mod progress;
mod repair;
mod retention;
mod rewrite;
mod run;
mod schedule;

use std::io::IsTerminal;

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
    match commands::dispatch(cli) {
        Ok(code) => code as i32,
        Err(err) => {
            let code = exit_code_for(&err);
            eprintln!("coffer: error: {err:#}");
            if json {
                let doc = serde_json::json!({ "error": format!("{err:#}"), "exit_code": code as i32 });
                println!("{doc}");
            }
            code as i32
        }
    }
}

/// SIGINT/SIGTERM end the process with exit code 130 at once: every write Coffer makes is
/// crash-safe (docs/format.md, "Write ordering"), so there is nothing to clean up.
fn install_signal_handler() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                eprintln!("coffer: interrupted");
                std::process::exit(ExitCode::Interrupted as i32);
            }
        });
    }
}

/// Whether to draw progress bars.
fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}
