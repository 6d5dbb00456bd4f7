//! Hook commands (`before`, `after`, `on-failure`, `finally`): each runs with `sh -c`, with
//! the run described in `COFFER_*` environment variables, its standard input closed, and its
//! output captured line by line for the log.

use std::process::{Command, Stdio};

use super::child::{self, Line};

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

/// Runs `command` with `env` added, in a process group of its own (a signal to the run
/// reaches all of it); each line it prints (stdout and stderr) goes to `line`. A background
/// process it leaves behind keeps running, and does not hold the run.
pub fn run(command: &str, env: &[(String, String)], line: &mut dyn FnMut(&str)) -> HookResult {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let c = match child::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => return HookResult { code: None, error: Some(format!("cannot run sh: {e}")) },
    };
    let ended = child::supervise(c, None, &mut |l| match l {
        Line::Out(s) | Line::Err(s) => line(&s),
    });
    match ended {
        Ok(e) if e.status.success() => HookResult { code: Some(0), error: None },
        Ok(e) => HookResult { code: e.status.code(), error: Some(format!("{}", e.status)) },
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

    #[test]
    fn a_hook_leaving_a_background_process_does_not_block() {
        let t = std::time::Instant::now();
        let mut lines = Vec::new();
        let r = run("sleep 20 & echo left", &[], &mut |l| lines.push(l.to_string()));
        assert!(r.ok());
        assert_eq!(lines, ["left"]);
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
}
