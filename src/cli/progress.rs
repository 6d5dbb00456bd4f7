//! Progress display: an indicatif bar when stderr is a terminal, otherwise just warnings.

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{FileStatus, Progress};

/// Prints warnings to stderr and nothing else.
pub struct Quiet;

impl Progress for Quiet {
    fn warn(&self, message: &str) {
        // A file name in a warning can hold a newline: never let it forge a line.
        let message = shown(message.as_bytes());
        eprintln!("warning: {message}");
        tracing::warn!("{message}");
    }
}

/// `-v`: each file read (new, modified) on stderr, as restic lists them; `-vv`: unchanged
/// ones too. Wraps the display in use.
pub struct Verbose {
    pub inner: Box<dyn Progress>,
    pub level: u8,
}

/// A path for a line of output: lossy UTF-8, control characters escaped (a file name can hold
/// a newline or a terminal escape).
fn shown(path: &[u8]) -> String {
    terminal_text(&String::from_utf8_lossy(path))
}

/// Text for a terminal or a log line: control characters, line and paragraph separators and
/// the invisible formatting characters (bidirectional overrides such as U+202E, zero-width
/// spaces) written as `\n`, `\u{202e}`..., and `\` as `\\`, so an escape in the output
/// always means one in the name.
pub(super) fn terminal_text(s: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
    };
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if hidden(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

impl Progress for Verbose {
    fn set_total(&self, bytes: u64, items: u64) {
        self.inner.set_total(bytes, items)
    }
    fn add_bytes(&self, bytes: u64) {
        self.inner.add_bytes(bytes)
    }
    fn add_item(&self) {
        self.inner.add_item()
    }
    fn file(&self, path: &[u8], status: FileStatus) {
        if status != FileStatus::Unchanged || self.level >= 2 {
            let line = format!("{:<9} {}", status.as_str(), shown(path));
            self.inner.println(&line);
            tracing::debug!(status = status.as_str(), path = %shown(path), "file");
        }
    }
    fn warn(&self, message: &str) {
        self.inner.warn(message)
    }
    fn finish(&self) {
        self.inner.finish()
    }
    fn println(&self, line: &str) {
        self.inner.println(line)
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
        let message = shown(message.as_bytes());
        self.bar.suspend(|| eprintln!("warning: {message}"));
        tracing::warn!("{message}");
    }
    fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_text_escapes_what_hides() {
        assert_eq!(super::terminal_text("a\nb"), "a\\nb");
        assert_eq!(super::terminal_text("a\\nb"), "a\\\\nb");
        assert_eq!(super::terminal_text("x\u{202e}y\u{2028}z"), "x\\u{202e}y\\u{2028}z");
        assert_eq!(super::terminal_text("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
    }
}
