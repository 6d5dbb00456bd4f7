//! Where passwords come from, first match wins: `--password-file` (or
//! `COFFER_PASSWORD_FILE`), `--password-command` (or `COFFER_PASSWORD_COMMAND`), the
//! `COFFER_PASSWORD` variable, else a prompt on the terminal. Never from a command-line
//! argument (it would show in `ps`). New passwords must not be empty.

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
/// With `confirm` (a new password), an empty password is refused.
pub fn get(
    env: &str,
    file: Option<&Path>,
    command: Option<&str>,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    let pw = read(env, file, command, prompt, confirm)?;
    if confirm && pw.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(pw)
}

fn read(
    env: &str,
    file: Option<&Path>,
    command: Option<&str>,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        let b = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
        return Ok(Zeroizing::new(strip_newline(b)));
    }
    if let Some(c) = command {
        return Ok(Zeroizing::new(from_command(c)?));
    }
    if let Some(v) = std::env::var_os(env) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(v.into_vec()));
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("no password given: set {env}, or use --password-file or --password-command");
    }
    let p = Zeroizing::new(rpassword::prompt_password(prompt).context("reading the password from the terminal")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("enter the password again: ")?);
        if *again != *p {
            bail!("the passwords do not match");
        }
    }
    Ok(Zeroizing::new(p.as_bytes().to_vec()))
}
