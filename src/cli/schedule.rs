//! `coffer schedule install|list|remove` and `coffer generate man|completions`.
//!
//! With systemd running (`/run/systemd/system` exists) a schedule is a service and a timer
//! unit, system units for root and user units (`~/.config/systemd/user`) otherwise, enabled
//! and started through systemctl. Without systemd it is a cron entry: `/etc/cron.d/coffer-P`
//! for root, a marked block in the user's crontab otherwise. `--dir` writes the files there
//! instead and leaves systemctl and crontab alone (for packaging, tests and review).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::args::{GenerateCommand, Global, ScheduleCommand, ScheduleInstallArgs};
use super::exit::ExitCode;
use super::profile;
use crate::ops::schedule::{self, Job};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn has_systemd() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// Where units go by default.
fn unit_dir() -> Result<PathBuf> {
    if is_root() {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("systemd/user"))
        .ok_or_else(|| anyhow!("no HOME: give --dir"))
}

fn systemctl(args: &[&str]) -> Result<()> {
    let mut c = Process::new("systemctl");
    if !is_root() {
        c.arg("--user");
    }
    let out = c.args(args).output().context("running systemctl")?;
    if !out.status.success() {
        bail!("systemctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Checks an OnCalendar expression with systemd's own parser, where it is installed.
fn check_calendar(cal: &str) -> Result<()> {
    if cal.chars().any(char::is_control) || cal.trim().is_empty() || cal.trim_start().starts_with('-') {
        bail!("--on {cal:?}: not a calendar expression");
    }
    match Process::new("systemd-analyze").args(["calendar", "--", cal]).output() {
        Ok(o) if !o.status.success() => {
            bail!("--on {cal:?}: systemd does not accept it ({})", String::from_utf8_lossy(&o.stderr).trim())
        }
        _ => Ok(()),
    }
}

pub fn schedule(g: &Global, c: ScheduleCommand) -> Result<ExitCode> {
    match c {
        ScheduleCommand::Install(a) => {
            check_dir(a.dir.as_deref(), false)?;
            install(g, a)
        }
        ScheduleCommand::List(a) => {
            check_dir(a.dir.as_deref(), true)?;
            list(g, a.dir.as_deref())
        }
        ScheduleCommand::Remove(a) => {
            check_dir(a.dir.as_deref(), true)?;
            remove(&a.profile, a.dir.as_deref())
        }
    }
}

fn install(g: &Global, a: ScheduleInstallArgs) -> Result<ExitCode> {
    let path = profile::config_path(g.config.as_deref())?;
    let file = profile::load(&path)?;
    let p = file.profiles.get(&a.profile).ok_or_else(|| anyhow!("{}: no profile {:?}", path.display(), a.profile))?;
    let calendar = a.on.clone().or_else(|| p.schedule.clone()).unwrap_or_else(|| "daily".into());
    check_calendar(&calendar)?;
    let delay_s =
        crate::timespec::parse_span_secs(&a.randomized_delay).map_err(|e| anyhow!("--randomized-delay: {e}"))?;
    let exe = std::env::current_exe().and_then(|e| e.canonicalize()).context("finding the coffer binary")?;
    let config = path.canonicalize().with_context(|| format!("{}", path.display()))?;
    // A unit file and a crontab are line-based: a control character in a path would end the
    // line and start another.
    for p in [&exe, &config] {
        if p.to_string_lossy().chars().any(char::is_control) {
            bail!("{:?}: a path with control characters cannot go into a schedule; move or rename it", p);
        }
    }
    let job = Job {
        profile: p.name.clone(),
        exe: exe.display().to_string(),
        config: config.display().to_string(),
        calendar,
        delay_s,
    };
    let cron = a.cron || (a.dir.is_none() && !has_systemd());
    if cron {
        // Named by where the calendar came from: --on, or the profile's schedule.
        schedule::cron_time(&job.calendar).map_err(|e| match &a.on {
            Some(_) => anyhow!("--on {e}"),
            None => anyhow!("{}: profile {}: schedule {e}", path.display(), job.profile),
        })?;
    }
    let written =
        if cron { install_cron(&job, a.dir.as_deref())? } else { install_units(&job, a.dir.as_deref(), a.no_enable)? };
    if g.json {
        super::commands::print_json(
            &json!({ "profile": job.profile, "kind": if cron { "cron" } else { "systemd" }, "schedule": job.calendar, "files": written }),
        )?;
    } else if !g.quiet {
        for w in &written {
            eprintln!("wrote {w}");
        }
        eprintln!(
            "profile {} runs on {:?} ({})",
            job.profile,
            job.calendar,
            if cron { "cron" } else { "systemd timer" }
        );
    }
    Ok(ExitCode::Ok)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::ops::write_atomic(path, text).with_context(|| format!("writing {}", path.display()))
}

fn install_units(job: &Job, dir: Option<&Path>, no_enable: bool) -> Result<Vec<String>> {
    let target = match dir {
        Some(d) => d.to_path_buf(),
        None => unit_dir()?,
    };
    let (svc, tmr) = schedule::unit_names(&job.profile);
    write_file(&target.join(&svc), &schedule::service(job))?;
    write_file(&target.join(&tmr), &schedule::timer(job))?;
    if dir.is_none() && !no_enable {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", &tmr])?;
    }
    Ok(vec![target.join(svc).display().to_string(), target.join(tmr).display().to_string()])
}

/// The user's crontab without the profile's block.
fn crontab_without(profile: &str) -> Result<String> {
    let out = Process::new("crontab").arg("-l").output().context("running crontab -l")?;
    let text = if out.status.success() { String::from_utf8_lossy(&out.stdout).into_owned() } else { String::new() };
    let marker = schedule::cron_marker(profile);
    let mut keep = Vec::new();
    let mut skip_next = false;
    for l in text.lines() {
        if l == marker {
            skip_next = true;
            continue;
        }
        if std::mem::take(&mut skip_next) {
            continue;
        }
        keep.push(l);
    }
    Ok(keep.iter().map(|l| format!("{l}\n")).collect())
}

fn set_crontab(text: &str) -> Result<()> {
    let mut c =
        Process::new("crontab").arg("-").stdin(std::process::Stdio::piped()).spawn().context("running crontab")?;
    c.stdin.take().expect("piped").write_all(text.as_bytes())?;
    if !c.wait()?.success() {
        bail!("crontab - failed");
    }
    Ok(())
}

fn install_cron(job: &Job, dir: Option<&Path>) -> Result<Vec<String>> {
    let name = format!("coffer-{}", job.profile);
    if let Some(d) = dir.map(Path::to_path_buf).or_else(|| is_root().then(|| PathBuf::from("/etc/cron.d"))) {
        let entry = schedule::cron_entry(job, is_root().then_some("root")).map_err(|e| anyhow!(e))?;
        let text = format!("SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{entry}");
        write_file(&d.join(&name), &text)?;
        return Ok(vec![d.join(name).display().to_string()]);
    }
    let entry = schedule::cron_entry(job, None).map_err(|e| anyhow!(e))?;
    set_crontab(&format!("{}{entry}", crontab_without(&job.profile)?))?;
    Ok(vec!["crontab".into()])
}

/// One installed schedule.
#[derive(serde::Serialize)]
struct Installed {
    profile: String,
    kind: &'static str,
    schedule: String,
    path: String,
}

/// The calendar expression a cron line names at its end, or else its five time fields.
fn cron_schedule(line: &str) -> String {
    match line.rsplit_once(schedule::CALENDAR_MARK) {
        Some((_, cal)) => cal.replace("\\%", "%"),
        None => line.split_whitespace().take(5).collect::<Vec<_>>().join(" "),
    }
}

/// `--dir` must be a directory (for `list`, an existing one).
fn check_dir(dir: Option<&Path>, must_exist: bool) -> Result<()> {
    let Some(d) = dir else { return Ok(()) };
    match std::fs::metadata(d) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("--dir {}: not a directory", d.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(()),
        Err(e) => bail!("--dir {}: {e}", d.display()),
    }
}

fn installed(dir: Option<&Path>) -> Vec<Installed> {
    let mut out = Vec::new();
    let dirs: Vec<(PathBuf, &'static str)> = match dir {
        Some(d) => vec![(d.to_path_buf(), "systemd"), (d.to_path_buf(), "cron")],
        None => {
            let mut v: Vec<(PathBuf, &'static str)> = unit_dir().into_iter().map(|d| (d, "systemd")).collect();
            v.push((PathBuf::from("/etc/cron.d"), "cron"));
            v
        }
    };
    for (d, kind) in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names {
            let Some(rest) = n.strip_prefix("coffer-") else { continue };
            let text = std::fs::read_to_string(d.join(&n)).unwrap_or_default();
            let found = match kind {
                "systemd" => rest.strip_suffix(".timer").map(|p| {
                    let cal = text.lines().find_map(|l| l.strip_prefix("OnCalendar=")).unwrap_or_default();
                    (p.to_string(), cal.to_string())
                }),
                _ if !rest.contains('.') => {
                    let line = text.lines().find(|l| !l.starts_with('#') && l.contains(" run ")).unwrap_or_default();
                    Some((rest.to_string(), cron_schedule(line)))
                }
                _ => None,
            };
            if let Some((profile, schedule)) = found {
                out.push(Installed { profile, kind, schedule, path: d.join(&n).display().to_string() });
            }
        }
    }
    if dir.is_none() && !is_root() {
        if let Ok(o) = Process::new("crontab").arg("-l").output() {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut lines = text.lines();
            while let Some(l) = lines.next() {
                if let Some(p) = l.strip_prefix("# coffer schedule: ") {
                    let when = cron_schedule(lines.next().unwrap_or_default());
                    out.push(Installed {
                        profile: p.to_string(),
                        kind: "cron",
                        schedule: when,
                        path: "crontab".into(),
                    });
                }
            }
        }
    }
    out
}

fn list(g: &Global, dir: Option<&Path>) -> Result<ExitCode> {
    let all = installed(dir);
    if g.json {
        super::commands::print_json(&all)?;
    } else {
        let mut out = std::io::stdout().lock();
        for i in &all {
            writeln!(out, "{:<16} {:<8} {:<24} {}", i.profile, i.kind, i.schedule, i.path)?;
        }
        if all.is_empty() {
            eprintln!("no schedules installed");
        }
    }
    Ok(ExitCode::Ok)
}

fn remove(profile: &str, dir: Option<&Path>) -> Result<ExitCode> {
    let found: Vec<Installed> = installed(dir).into_iter().filter(|i| i.profile == profile).collect();
    if found.is_empty() {
        bail!("no schedule of profile {profile:?} is installed (see `coffer schedule list`)");
    }
    for i in found {
        match (i.kind, i.path.as_str()) {
            ("cron", "crontab") => set_crontab(&crontab_without(profile)?)?,
            ("cron", path) => std::fs::remove_file(path).with_context(|| format!("removing {path}"))?,
            (_, path) => {
                let (svc, tmr) = schedule::unit_names(profile);
                if dir.is_none() && has_systemd() {
                    if let Err(e) = systemctl(&["disable", "--now", &tmr]) {
                        eprintln!("warning: {e}");
                    }
                }
                let d = Path::new(path).parent().expect("a unit file's folder");
                for f in [tmr, svc] {
                    match std::fs::remove_file(d.join(&f)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("removing {}", d.join(&f).display())),
                    }
                }
                if dir.is_none() && has_systemd() {
                    let _ = systemctl(&["daemon-reload"]);
                }
            }
        }
        eprintln!("removed the {} schedule of profile {profile} ({})", i.kind, i.path);
    }
    Ok(ExitCode::Ok)
}

/// `coffer generate man DIR` and `coffer generate completions SHELL`.
pub fn generate(c: GenerateCommand) -> Result<ExitCode> {
    use clap::CommandFactory;
    let cmd = super::Cli::command();
    match c {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        GenerateCommand::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (a closed pipe, a full disk).
            let (mut cmd, mut buf) = (cmd, Vec::new());
            clap_complete::generate(shell, &mut cmd, "coffer", &mut buf);
            std::io::stdout().write_all(&buf).context("writing the completions")?;
        }
    }
    Ok(ExitCode::Ok)
}
