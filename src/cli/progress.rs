//! Progress display: an indicatif bar when stderr is a terminal, otherwise just warnings.

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::Progress;

/// Prints warnings to stderr and nothing else.
pub struct Quiet;

impl Progress for Quiet {
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

/// A live line on stderr: bytes, files, elapsed time.
pub struct Bar {
    bar: ProgressBar,
    bytes: AtomicU64,
}

impl Bar {
    pub fn new(verb: &str) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template(&format!("{verb} {{spinner}} {{msg}}, {{pos}} files, {{elapsed}}"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        Bar { bar, bytes: AtomicU64::new(0) }
    }
}

impl Progress for Bar {
    fn add_bytes(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bar.set_message(HumanBytes(total).to_string());
    }
    fn add_item(&self) {
        self.bar.inc(1);
    }
    fn warn(&self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
