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
    fn wants_totals(&self) -> bool {
        self.inner.wants_totals()
    }
    fn reading(&self, path: &[u8], started: bool) {
        self.inner.reading(path, started)
    }
}

/// What the display shows, updated by the workers with atomic adds only (a lock just for
/// the files being read): the drawing happens on a ticker thread four times a second.
#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    items: AtomicU64,
    total_bytes: AtomicU64,
    total_items: AtomicU64,
    errors: AtomicU64,
    reading: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// The live display on a terminal (stderr): elapsed time, bytes and files done of the total
/// (when the total is known: a backup's scan running ahead, a restore's snapshot, a check's
/// packs), percent, rate, ETA, errors so far, and the files being read now.
pub struct Bar {
    bar: ProgressBar,
    counts: std::sync::Arc<Counts>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Bar {
    pub fn new(verb: &str) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template(&format!("{verb} [{{elapsed_precise}}] {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        let counts = std::sync::Arc::new(Counts::default());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, c, st) = (bar.clone(), counts.clone(), stop.clone());
        let started = std::time::Instant::now();
        // What the template puts before the message: "VERB [hh:mm:ss] ".
        let prefix = verb.chars().count() + 12;
        let _ = std::thread::Builder::new().name("coffer-progress".into()).spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let width =
                    rustix::termios::tcgetwinsize(std::io::stderr()).map_or(80, |w| usize::from(w.ws_col).max(20));
                b.set_message(fit(&status_line(&c, started.elapsed().as_secs_f64()), width, prefix));
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        });
        Bar { bar, counts, stop }
    }
}

/// Each line cut to the terminal's width (the first one shares it with the prefix), so
/// nothing wraps and the display redraws in place.
fn fit(text: &str, width: usize, prefix: usize) -> String {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| {
            let room = if i == 0 { width.saturating_sub(prefix + 1) } else { width - 1 };
            l.chars().take(room).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `45.2%  2.1 GiB / 4.6 GiB  1,234 / 5,000 files  85.3 MiB/s  ETA 0:00:31  2 errors`, then
/// the files being read on a line of their own.
fn status_line(c: &Counts, secs: f64) -> String {
    let (bytes, items) = (c.bytes.load(Ordering::Relaxed), c.items.load(Ordering::Relaxed));
    let (tb, ti) = (c.total_bytes.load(Ordering::Relaxed), c.total_items.load(Ordering::Relaxed));
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    let mut line = String::new();
    if tb > 0 {
        let pct = (bytes as f64 / tb as f64 * 100.0).min(100.0);
        line.push_str(&format!("{pct:5.1}%  {} / {}", HumanBytes(bytes), HumanBytes(tb)));
    } else {
        line.push_str(&HumanBytes(bytes).to_string());
    }
    if ti > 0 {
        line.push_str(&format!("  {items} / {ti} files"));
    } else {
        line.push_str(&format!("  {items} files"));
    }
    line.push_str(&format!("  {}/s", HumanBytes(rate as u64)));
    if tb > bytes && rate > 0.0 {
        let left = ((tb - bytes) as f64 / rate) as u64;
        line.push_str(&format!("  ETA {}:{:02}:{:02}", left / 3600, left / 60 % 60, left % 60));
    }
    let errors = c.errors.load(Ordering::Relaxed);
    if errors > 0 {
        line.push_str(&format!("  {}", super::counted(errors, "error")));
    }
    let reading = c.reading.lock().map(|r| r.clone()).unwrap_or_default();
    for p in reading.iter().take(4) {
        let p = shown(p);
        // Long paths keep their end, the part that tells files apart (`fit` cuts the rest).
        let n = p.chars().count();
        let p = if n > 70 { format!("...{}", p.chars().skip(n - 67).collect::<String>()) } else { p };
        line.push_str(&format!("\n  {p}"));
    }
    line
}

impl Progress for Bar {
    fn wants_totals(&self) -> bool {
        true
    }
    fn set_total(&self, bytes: u64, items: u64) {
        self.counts.total_bytes.store(bytes, Ordering::Relaxed);
        self.counts.total_items.store(items, Ordering::Relaxed);
    }
    fn add_bytes(&self, bytes: u64) {
        self.counts.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn add_item(&self) {
        self.counts.items.fetch_add(1, Ordering::Relaxed);
    }
    fn reading(&self, path: &[u8], started: bool) {
        if let Ok(mut r) = self.counts.reading.lock() {
            if started {
                r.push(path.to_vec());
            } else if let Some(i) = r.iter().position(|p| p == path) {
                r.swap_remove(i);
            }
        }
    }
    fn warn(&self, message: &str) {
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        let message = shown(message.as_bytes());
        self.bar.suspend(|| eprintln!("warning: {message}"));
        tracing::warn!("{message}");
    }
    fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.bar.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
