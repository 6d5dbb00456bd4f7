//! Hook commands (`before`, `after`, `on-failure`, `finally`): each runs with `sh -c`, with
//! the run described in `COFFER_*` environment variables, its standard input closed, and its
//! output captured line by line for the log.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// How a hook ended.
#[derive(Debug)]
pub struct HookResult {
    /// The exit code; `None` when it could not start or was killed by a signal.
    pub code: Option<i32>,
    pub error: Option<String>,
}

impl HookResult {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `command` with `env` added; each line it prints (stdout and stderr) goes to `line`.
pub fn run(command: &str, env: &[(String, String)], line: &mut dyn FnMut(&str)) -> HookResult {
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return HookResult { code: None, error: Some(format!("cannot run sh: {e}")) },
    };
    // stderr is read on a thread of its own, so neither pipe can fill up and stall the hook.
    let err = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            line(&l);
            while let Ok(e) = rx.try_recv() {
                line(&e);
            }
        }
    }
    let _ = reader.join();
    for e in rx.try_iter() {
        line(&e);
    }
    match child.wait() {
        Ok(s) if s.success() => HookResult { code: Some(0), error: None },
        Ok(s) => HookResult { code: s.code(), error: Some(format!("{s}")) },
        Err(e) => HookResult { code: None, error: Some(e.to_string()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status() {
        let mut lines = Vec::new();
        let env = [("COFFER_PROFILE".to_string(), "nightly".to_string())];
        let r = run("echo out $COFFER_PROFILE; echo err >&2; exit 4", &env, &mut |l| lines.push(l.to_string()));
        assert_eq!(r.code, Some(4));
        assert!(!r.ok());
        lines.sort();
        assert_eq!(lines, ["err", "out nightly"]);
        assert!(run("true", &[], &mut |_| {}).ok());
    }
}
