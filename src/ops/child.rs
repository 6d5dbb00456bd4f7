//! Child processes Coffer starts and answers for: `coffer run`'s steps, hooks, the mail
//! command and `--stdin-from-command`.
//!
//! Each starts in a process group of its own, so a signal or a timeout reaches everything it
//! started (a hook's `sh -c` and the programs under it), not only the shell. The groups alive
//! are kept in one registry, so the signal handler can stop them all ([`terminate_all`]).
//!
//! Output is read on threads and handed over line by line (invalid UTF-8 shown lossily).
//! Once the direct child has exited, its output is read for [`GRACE`] more and then left
//! behind: a background process a hook started (`daemon &`) may hold the pipes open for
//! hours, and a run must not wait for it.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long output is still read after the child exited.
pub const GRACE: Duration = Duration::from_millis(500);
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

/// Reads one pipe line by line into `tx`, then reports its end (`None`).
fn reader<R: Read + Send + 'static>(r: R, tx: mpsc::Sender<Option<Line>>, out: bool) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let s = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(Some(if out { Line::Out(s) } else { Line::Err(s) })).is_err() {
                        break;
                    }
                }
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
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(l)) => line(l),
            Ok(None) => open -= 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => open = 0,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(s)) => exited = Some((s, Instant::now())),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        }
        match exited {
            Some((status, at)) if open == 0 || at.elapsed() > GRACE => break Ok(Ended { status, timed_out }),
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
