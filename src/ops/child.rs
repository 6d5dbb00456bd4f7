//! Child processes Coffer starts and answers for: `coffer run`'s steps, hooks, the mail
//! command and `--stdin-from-command`.
//!
//! Each starts in a process group of its own, so a signal or a timeout reaches everything it
//! started (a hook's `sh -c` and the programs under it), not only the shell. The groups alive
//! are kept in one registry, so the signal handler can stop them all ([`terminate_all`]).
//!
//! Output is read on threads and handed over line by line (invalid UTF-8 shown lossily, a
//! line cut at [`MAX_LINE`] bytes, so a child printing without newlines cannot fill memory).
//! Once the direct child has exited, its output is read until the pipes close, or until
//! none came for [`GRACE`] (at most [`MAX_DRAIN`] in all): a background process a hook
//! started (`daemon &`) may hold the pipes open for hours, and a run must not wait for it.
//! The reading threads then go on draining the pipes and drop what they read, so such a
//! process is not killed by SIGPIPE on its next write.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After the child exited: how long without output ends the reading.
pub const GRACE: Duration = Duration::from_millis(500);
/// After the child exited: how long its output is read at most.
pub const MAX_DRAIN: Duration = Duration::from_secs(10);
/// The longest line handed over; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 64 * 1024;
/// How long a group gets between SIGTERM and SIGKILL when a timeout stops it.
const KILL_AFTER: Duration = Duration::from_secs(2);

/// Process group ids of the children alive.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// A line a child printed.
pub enum Line {
    Out(String),
    Err(String),
}

/// How a supervised child ended.
pub struct Ended {
    pub status: ExitStatus,
    /// It ran past its timeout and was killed (with its whole group).
    pub timed_out: bool,
}

/// Starts `cmd` in a process group of its own and registers the group.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.process_group(0);
    let child = cmd.spawn()?;
    if let Ok(mut g) = GROUPS.lock() {
        g.push(child.id() as i32);
    }
    Ok(child)
}

/// Forgets a group (its leader was waited for).
pub fn unregister(pid: u32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.retain(|p| *p != pid as i32);
    }
}

/// Sends `signal` to the group led by `pid`.
pub fn signal_group(pid: u32, signal: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(p, signal);
    }
}

/// Sends SIGTERM to every registered group.
pub fn terminate_all() {
    for pid in GROUPS.lock().map(|g| g.clone()).unwrap_or_default() {
        signal_group(pid as u32, rustix::process::Signal::TERM);
    }
}

/// Reads one pipe line by line into `tx`, then reports its end (`None`). When nobody
/// listens any more it keeps reading to the end and drops the lines.
fn reader<R: Read + Send + 'static>(r: R, tx: mpsc::Sender<Option<Line>>, out: bool) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        let mut listening = true;
        loop {
            buf.clear();
            match (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if buf.len() == MAX_LINE && buf.last() != Some(&b'\n') {
                // Cut: the rest of the line is skipped.
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    match (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut rest) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if rest.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
                buf.extend_from_slice(" [line cut]".as_bytes());
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            if listening {
                let s = String::from_utf8_lossy(&buf).into_owned();
                listening = tx.send(Some(if out { Line::Out(s) } else { Line::Err(s) })).is_ok();
            }
        }
        let _ = tx.send(None);
    });
}

/// Waits for `child` (started by [`spawn`]), handing each line of its piped stdout and
/// stderr to `line`. With a `timeout`, a child still running then is stopped: SIGTERM to its
/// group, SIGKILL [`KILL_AFTER`] later.
pub fn supervise(mut child: Child, timeout: Option<Duration>, line: &mut dyn FnMut(Line)) -> std::io::Result<Ended> {
    let (tx, rx) = mpsc::channel();
    let mut open = 0;
    if let Some(o) = child.stdout.take() {
        reader(o, tx.clone(), true);
        open += 1;
    }
    if let Some(e) = child.stderr.take() {
        reader(e, tx.clone(), false);
        open += 1;
    }
    drop(tx);
    let pid = child.id();
    let started = Instant::now();
    let mut timed_out = false;
    let mut termed_at: Option<Instant> = None;
    // (status, when it exited, when output last came)
    let mut exited: Option<(ExitStatus, Instant, Instant)> = None;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(l)) => {
                line(l);
                if let Some(e) = exited.as_mut() {
                    e.2 = Instant::now();
                }
            }
            Ok(None) => open -= 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => open = 0,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(s)) => exited = Some((s, Instant::now(), Instant::now())),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        }
        match exited {
            Some((status, at, last)) if open == 0 || last.elapsed() > GRACE || at.elapsed() > MAX_DRAIN => {
                break Ok(Ended { status, timed_out })
            }
            Some(_) => continue,
            None => {}
        }
        if let Some(t) = timeout {
            if started.elapsed() > t && termed_at.is_none() {
                timed_out = true;
                termed_at = Some(Instant::now());
                signal_group(pid, rustix::process::Signal::TERM);
            }
        }
        if termed_at.is_some_and(|at| at.elapsed() > KILL_AFTER) {
            signal_group(pid, rustix::process::Signal::KILL);
            termed_at = Some(Instant::now() + Duration::from_secs(3600));
        }
    };
    unregister(pid);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn lines(script: &str, timeout: Option<Duration>) -> (Ended, Vec<String>, u32) {
        let mut got = Vec::new();
        let child = spawn(&mut sh(script)).unwrap();
        let pid = child.id();
        let e = supervise(child, timeout, &mut |l| {
            got.push(match l {
                Line::Out(s) => format!("out {s}"),
                Line::Err(s) => format!("err {s}"),
            })
        })
        .unwrap();
        got.sort();
        (e, got, pid)
    }

    #[test]
    fn output_status_and_bad_utf8() {
        let (e, got, _) = lines(r"echo a; echo b >&2; printf 'c\377\n'; exit 3", None);
        assert_eq!(e.status.code(), Some(3));
        assert!(!e.timed_out);
        assert_eq!(got, ["err b", "out a", "out c\u{fffd}"]);
    }

    #[test]
    fn a_background_process_holding_the_pipes_does_not_hold_the_wait() {
        let t = Instant::now();
        let (e, got, pid) = lines("sleep 30 & echo started", None);
        assert!(e.status.success());
        assert_eq!(got, ["out started"]);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // The background sleep is still running in the group; stop it.
        signal_group(pid, rustix::process::Signal::KILL);
    }

    #[test]
    fn every_line_of_an_exited_child_arrives_and_long_lines_are_cut() {
        let (e, got, _) = lines("seq 1 200000; echo LAST; head -c 200000 /dev/zero | tr '\\0' x; echo", None);
        assert!(e.status.success());
        assert_eq!(got.len(), 200002);
        assert!(got.contains(&"out LAST".to_string()));
        let long = got.iter().find(|l| l.starts_with("out xxx")).unwrap();
        assert!(long.len() < MAX_LINE + 32 && long.ends_with("[line cut]"), "{}", long.len());
    }

    #[test]
    fn a_background_process_keeps_running_after_the_reading_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("alive");
        // It prints after the wait is over: that write must not kill it.
        let script = format!("(sleep 2; echo late; touch {}) & echo started", mark.display());
        let (e, got, pid) = lines(&script, None);
        assert!(e.status.success());
        assert_eq!(got, ["out started"]);
        std::thread::sleep(Duration::from_secs(4));
        assert!(mark.exists(), "the background process died on its write");
        signal_group(pid, rustix::process::Signal::KILL);
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("survived");
        let script = format!("(sleep 3; touch {}) & sleep 60", mark.display());
        let t = Instant::now();
        let (e, _, _) = lines(&script, Some(Duration::from_millis(300)));
        assert!(e.timed_out);
        assert!(!e.status.success());
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(4));
        assert!(!mark.exists(), "a grandchild outlived the timeout");
    }
}
