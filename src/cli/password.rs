//! Where passwords come from, first match wins: `--password-file` or `--password-command`
//! (on the command line, else `COFFER_PASSWORD_FILE` / `COFFER_PASSWORD_COMMAND`: see
//! `Global::apply_env`), the `COFFER_PASSWORD` variable, else a prompt on the terminal. Never from a command-line
//! argument (it would show in `ps`). New passwords must not be empty.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// The longest password accepted, in bytes: far above any passphrase, far below what
/// could exhaust memory (a password file pointed at a disk image, a command that never
/// stops printing).
pub const MAX_PASSWORD: usize = 4096;

/// Reads at most [`MAX_PASSWORD`] + 1 bytes from `r`, failing if there are more.
fn read_capped(mut r: impl std::io::Read, what: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    (&mut r).take(MAX_PASSWORD as u64 + 3).read_to_end(&mut buf).with_context(|| format!("reading {what}"))?;
    let b = strip_newline(buf);
    if b.len() > MAX_PASSWORD {
        bail!("{what} is longer than {MAX_PASSWORD} bytes: that is not a password");
    }
    Ok(b)
}

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
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("running password command {cmd:?}"))?;
    let out = read_capped(child.stdout.take().expect("piped"), &format!("the output of password command {cmd:?}"));
    if out.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().with_context(|| format!("running password command {cmd:?}"))?;
    let out = out?;
    if !status.success() {
        bail!("password command {cmd:?} failed ({status})");
    }
    Ok(out)
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
        let what = format!("password file {}", f.display());
        let file = std::fs::File::open(f).with_context(|| format!("reading {what}"))?;
        return Ok(Zeroizing::new(read_capped(file, &what)?));
    }
    if let Some(c) = command {
        return Ok(Zeroizing::new(from_command(c)?));
    }
    if let Some(v) = std::env::var_os(env) {
        use std::os::unix::ffi::OsStringExt;
        let v = v.into_vec();
        if v.len() > MAX_PASSWORD {
            bail!("{env} is longer than {MAX_PASSWORD} bytes: that is not a password");
        }
        return Ok(Zeroizing::new(v));
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        let options = match env {
            "COFFER_NEW_PASSWORD" => "--new-password-file",
            "COFFER_PASSWORD2" => "--password-file2 or --password-command2",
            _ => "--password-file or --password-command",
        };
        bail!("no password given: set {env}, or use {options}");
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
