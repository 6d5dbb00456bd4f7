//! Where passwords come from: `COFFER_PASSWORD`, `--password-file`, `--password-command`,
//! else a prompt on the terminal. Never from a command-line argument (it would show in `ps`).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// Strips one trailing newline (files and commands usually end with one).
fn strip_newline(mut s: Vec<u8>) -> Vec<u8> {
    if s.ends_with(b"\n") {
        s.pop();
        if s.ends_with(b"\r") {
            s.pop();
        }
    }
    s
}

fn from_command(cmd: &str) -> Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running password command {cmd:?}"))?;
    if !out.status.success() {
        bail!("password command {cmd:?} failed ({})", out.status);
    }
    Ok(strip_newline(out.stdout))
}

/// Reads a password from the sources in order; `env` names the environment variable.
pub fn get(env: &str, file: Option<&Path>, command: Option<&str>, prompt: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(v) = std::env::var_os(env) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(v.into_vec()));
    }
    if let Some(f) = file {
        let b = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
        return Ok(Zeroizing::new(strip_newline(b)));
    }
    if let Some(c) = command {
        return Ok(Zeroizing::new(from_command(c)?));
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("no password given: set {env}, or use --password-file or --password-command");
    }
    let p = rpassword::prompt_password(prompt).context("reading the password from the terminal")?;
    if confirm {
        let again = rpassword::prompt_password("enter the password again: ")?;
        if again != p {
            bail!("the passwords do not match");
        }
    }
    if p.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(Zeroizing::new(p.into_bytes()))
}
