//! `coffer run PROFILE`: a profile's whole job, unattended, and `coffer profiles`.
//!
//! The steps run in order, each as a child `coffer` process with `--json` (so each is
//! exactly the command `run --dry-run` prints, its errors and exit code are its own, and a
//! crash in one step cannot take the run's bookkeeping with it):
//! 1. the `before` hooks (a failing one stops the run unless `before-failure = "continue"`);
//! 2. `backup`;
//! 3. `forget` with the profile's retention (or the stored policy), limited to the
//!    profile's host and tags, when the backup wrote a snapshot;
//! 4. `prune`, at most once per `[prune] every`;
//! 5. `check --read-data-subset k/N` (`[check] parts = N`, k advancing each time) or the
//!    given subset, at most once per `[check] every`;
//! 6. `drill` with its options, at most once per `[drill] every`;
//! 7. the `after` hooks when nothing failed, else `on-failure`; then `finally`.
//!
//! A step that fails (any exit code but 0, 3 "partial" and 5 "objective breached") stops the
//! steps after it. The run's exit code is the worst of its steps'. Then come the metrics
//! file, the webhook and the mail, none of which can fail the run; a summary ends it (one
//! JSON document with `--json`). One run of a profile at a time (`ops::runlock`).

use std::io::Write;
use std::process::{Command as Process, Stdio};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::args::{Global, RunArgs};
use super::exit::ExitCode;
use super::outputs::{mail, notify, write_metrics};
use super::profile::{self, Arg, Profile, Retention, Subset};
use crate::ops::child::Line;
use crate::ops::{hooks, runlock};

/// Whether a signal asked the run to stop.
fn interrupted() -> bool {
    super::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// How bad an exit code is, for "the worst step decides".
fn severity(code: i32) -> u8 {
    match code {
        0 => 0,
        3 => 1,
        5 => 2,
        4 => 3,
        13 => 4,
        1 | 2 => 5,
        130 => 7,
        _ => 6,
    }
}

/// Whether the steps after one that ended with `code` still run.
pub(super) fn goes_on(code: i32) -> bool {
    matches!(code, 0 | 3 | 5)
}

/// `success`, `warning` (partial backup, breached objective) or `failure`.
pub(super) fn status(code: i32) -> &'static str {
    match code {
        0 => "success",
        3 | 5 => "warning",
        _ => "failure",
    }
}

/// One step of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub(super) struct Step {
    pub(super) name: String,
    /// `None` when skipped.
    pub(super) exit_code: Option<i32>,
    pub(super) duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(skip)]
    pub(super) output: Value,
}

impl Step {
    fn skipped(name: &str, why: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            exit_code: None,
            duration_seconds: 0.0,
            skipped: Some(why.into()),
            error: None,
            output: Value::Null,
        }
    }
}

/// The global options given on `run`'s own command line, as `--long[=value]`: they win over
/// the profile's. Options about the run itself (`--json`, `--config`, logs, metrics,
/// notifications) stay with it.
pub(super) fn command_line_globals() -> Vec<String> {
    use clap::parser::ValueSource;
    use clap::CommandFactory;
    let Some(m) = super::MATCHES.get() else { return Vec::new() };
    // Global options are propagated to the subcommand's matches wherever they were given.
    let m = m.subcommand_matches("run").unwrap_or(m);
    let mut out = Vec::new();
    for a in super::Cli::command().get_arguments() {
        let (Some(long), true) = (a.get_long(), a.is_global_set()) else { continue };
        let own = ["json", "config", "metrics-file", "notify", "notify-on"];
        if own.contains(&long) || m.value_source(a.get_id().as_str()) != Some(ValueSource::CommandLine) {
            continue;
        }
        if a.get_action().takes_values() {
            for v in m.get_raw(a.get_id().as_str()).into_iter().flatten() {
                out.push(format!("--{long}={}", v.to_string_lossy()));
            }
        } else {
            // A counted switch (-vv) is given as often as it was counted.
            let times = if matches!(a.get_action(), clap::ArgAction::Count) {
                m.get_count(a.get_id().as_str()).max(1)
            } else {
                1
            };
            out.extend(std::iter::repeat_n(format!("--{long}"), times as usize));
        }
    }
    out
}

/// What a run does, step by step, before it runs: the command lines, with what is due.
struct Plan {
    backup: Vec<String>,
    forget: Option<Vec<String>>,
    prune: Option<(Vec<String>, bool)>,
    check: Option<(Vec<String>, bool)>,
    drill: Option<(Vec<String>, bool)>,
}

fn plan(p: &Profile, extra: &[String], state: &runlock::RunState, now_ns: i64) -> Plan {
    let args =
        |v: &[&str]| v.iter().map(|s| Arg { key: String::new(), line: 0, text: s.to_string() }).collect::<Vec<_>>();
    let mut backup_args = args(&["--json"]);
    backup_args.extend(p.backup.iter().cloned());
    let backup = profile::argv(p, extra, &["backup"], &backup_args, &p.paths);
    // forget stays within the profile's own snapshots: its host, and its tags.
    let forget = forget_argv(p, extra, &expected_paths(p));
    let prune = (p.prune.is_some() || p.retention.is_some()).then(|| {
        let every = p.prune.as_ref().map_or(0, |s| s.every_s);
        let mut a = args(&["--json"]);
        a.extend(p.prune.iter().flat_map(|s| s.args.iter().cloned()));
        (profile::argv(p, extra, &["prune"], &a, &[]), runlock::due(state.last_prune_ns, every, now_ns))
    });
    let check = p.check.as_ref().map(|c| {
        let mut a = args(&["--json"]);
        match &c.subset {
            Subset::Rotate(n) => {
                let k = state.next_check_part.clamp(1, *n);
                a.push(Arg { key: String::new(), line: 0, text: format!("--read-data-subset={k}/{n}") });
            }
            Subset::Fixed(v) => a.extend(v.iter().map(|t| Arg { key: String::new(), line: 0, text: t.clone() })),
        }
        (profile::argv(p, extra, &["check"], &a, &[]), runlock::due(state.last_check_ns, c.every_s, now_ns))
    });
    let drill = p.drill.as_ref().map(|d| {
        let mut a = args(&["--json"]);
        a.extend(d.args.iter().cloned());
        (profile::argv(p, extra, &["drill"], &a, &[]), runlock::due(state.last_drill_ns, d.every_s, now_ns))
    });
    Plan { backup, forget, prune, check, drill }
}

/// The paths the profile's snapshots record, as far as they are known before the backup
/// (the backup's own list replaces them when the run gets there).
fn expected_paths(p: &Profile) -> Vec<String> {
    if p.backup.iter().any(|a| a.text == "--stdin-from-command" || a.text == "--stdin") {
        let name = p.backup_value("stdin-filename").last().copied().unwrap_or("stdin");
        return vec![format!("/{}", name.split('/').filter(|c| !c.is_empty()).collect::<Vec<_>>().join("/"))];
    }
    p.paths
        .iter()
        .map(|x| String::from_utf8_lossy(&super::commands::clean_path(std::path::Path::new(x))).into_owned())
        .collect()
}

/// forget keeps to the profile's own snapshots: its host, its tags, and exactly its paths, so
/// one profile's rules never thin out another profile's snapshots.
fn forget_argv(p: &Profile, extra: &[String], paths: &[String]) -> Option<Vec<String>> {
    let r = p.retention.as_ref()?;
    let arg = |text: String| Arg { key: String::new(), line: 0, text };
    let host = p.backup_value("host").last().map(|h| h.to_string()).unwrap_or_else(crate::backup::default_host);
    let mut a = vec![arg("--json".into()), arg(format!("--host={host}"))];
    for t in super::commands::split_tags(&p.backup_value("tag").iter().map(|s| s.to_string()).collect::<Vec<_>>()) {
        a.push(arg(format!("--tag={t}")));
    }
    a.extend(paths.iter().map(|x| arg(format!("--path={x}"))));
    if !paths.is_empty() {
        a.push(arg("--exact-paths".into()));
    }
    // Tags too: an untagged profile must not match a tagged one's snapshots.
    a.push(arg("--exact-tags".into()));
    if let Retention::Rules(rules) = r {
        a.extend(rules.iter().cloned());
    }
    Some(profile::argv(p, extra, &["forget"], &a, &[]))
}

/// The repository a run uses: the command line's, else the profile's, else COFFER_REPO.
fn repository(p: &Profile, extra: &[String]) -> String {
    extra
        .iter()
        .rev()
        .find_map(|g| g.strip_prefix("--repo=").or_else(|| g.strip_prefix("--repository=")))
        .or(p.global("repo"))
        .or_else(|| p.env.iter().rev().find(|(k, _)| k == "COFFER_REPO").map(|(_, v)| v.as_str()))
        .map(str::to_string)
        .or_else(|| std::env::var("COFFER_REPO").ok())
        .unwrap_or_default()
}

/// A command line for showing: words with spaces or quotes quoted.
fn shown(argv: &[String]) -> String {
    let q = |w: &String| {
        if w.is_empty() || w.chars().any(|c| c.is_whitespace() || "'\"$`\\*?;&|<>()#~[]{}!".contains(c)) {
            format!("'{}'", w.replace('\'', "'\\''"))
        } else {
            w.clone()
        }
    };
    std::iter::once("coffer".to_string()).chain(argv.iter().map(q)).collect::<Vec<_>>().join(" ")
}

/// Runs one step as a child process; its stderr goes to ours line by line, prefixed.
pub(super) fn child(p: &Profile, name: &str, argv: &[String]) -> Step {
    let watch = crate::clock::stopwatch();
    let exe = std::env::current_exe().unwrap_or_else(|_| "coffer".into());
    let mut c = Process::new(exe);
    c.args(argv)
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The profile's password source wins over any the environment names.
    if p.password.is_some() || p.global("password-file").is_some() || p.global("password-command").is_some() {
        c.env_remove("COFFER_PASSWORD_FILE").env_remove("COFFER_PASSWORD_COMMAND").env_remove("COFFER_PASSWORD");
    }
    if let Some(pw) = &p.password {
        c.env("COFFER_PASSWORD", pw);
    }
    let fail = |e: String| Step {
        name: name.into(),
        exit_code: Some(1),
        duration_seconds: watch.elapsed().as_secs_f64(),
        skipped: None,
        error: Some(e),
        output: Value::Null,
    };
    let proc = match crate::ops::child::spawn(&mut c) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot run coffer {name}: {e}")),
    };
    if interrupted() {
        // The signal came between the check and the start: this step stops too.
        crate::ops::child::signal_group(proc.id(), rustix::process::Signal::TERM);
    }
    let mut out = String::new();
    let mut last_error = None;
    let ended = crate::ops::child::supervise(proc, None, &mut |l| match l {
        Line::Out(s) => {
            out.push_str(&s);
            out.push('\n');
        }
        Line::Err(line) => {
            eprintln!("{name}: {line}");
            tracing::info!(step = %name, "{line}");
            if let Some(e) = line.strip_prefix("coffer: error: ") {
                last_error = Some(e.to_string());
            }
        }
    });
    let code = match ended {
        Ok(e) => match (e.status.code(), std::os::unix::process::ExitStatusExt::signal(&e.status)) {
            (Some(c), _) => c,
            // Stopped by the run itself, after a signal to it: interrupted.
            (None, _) if interrupted() => ExitCode::Interrupted as i32,
            // Killed by someone else (the OOM killer, an operator): a failure.
            (None, sig) => return fail(format!("coffer {name} was killed by signal {}", sig.unwrap_or(0))),
        },
        Err(e) => return fail(format!("waiting for coffer {name}: {e}")),
    };
    let output = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let error = (code != 0).then(|| {
        output
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(last_error)
            .unwrap_or_else(|| format!("exit code {code}"))
    });
    let secs = watch.elapsed().as_secs_f64();
    tracing::info!(
        step = name,
        exit_code = code,
        duration_seconds = secs,
        error = error.as_deref().unwrap_or(""),
        "step ends"
    );
    Step { name: name.into(), exit_code: Some(code), duration_seconds: secs, skipped: None, error, output }
}

/// The environment hooks see.
fn hook_env(p: &Profile, hook: &str, code: i32, steps: &[Step], started: std::time::Instant) -> Vec<(String, String)> {
    let b = steps.iter().find(|s| s.name == "backup").map(|s| &s.output).cloned().unwrap_or(Value::Null);
    let num = |k: &str| b.get(k).and_then(Value::as_u64).map(|n| n.to_string()).unwrap_or_default();
    let error = steps.iter().rev().find_map(|s| s.error.clone()).unwrap_or_default();
    let mut env: Vec<(String, String)> = p.env.clone();
    env.extend([
        ("COFFER_PROFILE".into(), p.name.clone()),
        ("COFFER_HOOK".into(), hook.into()),
        ("COFFER_REPOSITORY".into(), repository(p, &command_line_globals())),
        ("COFFER_SNAPSHOT_ID".into(), b.get("snapshot_id").and_then(Value::as_str).unwrap_or_default().to_string()),
        ("COFFER_EXIT_CODE".into(), code.to_string()),
        ("COFFER_STATUS".into(), status(code).into()),
        ("COFFER_ERROR".into(), error),
        ("COFFER_FILES".into(), num("total_files_processed")),
        ("COFFER_FILES_NEW".into(), num("files_new")),
        ("COFFER_FILES_CHANGED".into(), num("files_changed")),
        ("COFFER_BYTES".into(), num("total_bytes_processed")),
        ("COFFER_BYTES_ADDED".into(), num("data_added")),
        ("COFFER_DURATION".into(), format!("{:.3}", started.elapsed().as_secs_f64())),
    ]);
    env
}

/// Runs hooks in order; returns the failed ones as a step (named `hook NAME`).
fn run_hooks(p: &Profile, hook: &str, commands: &[String], env: &[(String, String)]) -> Option<Step> {
    for cmd in commands {
        let watch = crate::clock::stopwatch();
        tracing::info!(hook, command = %cmd, "hook starts");
        let r = hooks::run(cmd, env, &mut |line| {
            eprintln!("hook {hook}: {line}");
            tracing::info!(hook, "{line}");
        });
        if !r.ok() {
            let error = format!("hook {hook} {cmd:?} failed ({})", r.error.unwrap_or_default());
            eprintln!("coffer run {}: {error}", p.name);
            tracing::error!(hook, "{error}");
            return Some(Step {
                name: format!("hook {hook}"),
                exit_code: Some(1),
                duration_seconds: watch.elapsed().as_secs_f64(),
                skipped: None,
                error: Some(error),
                output: Value::Null,
            });
        }
    }
    None
}

/// `run` itself: the lock, the steps, the bookkeeping.
pub fn run(g: &Global, a: RunArgs) -> Result<ExitCode> {
    let file = profile::load(&profile::config_path(g.config.as_deref())?)?;
    let Some(p) = file.profiles.get(&a.profile) else {
        let names: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
        bail!(
            "{}: no profile {:?} (profiles: {})",
            file.path.display(),
            a.profile,
            if names.is_empty() { "none".into() } else { names.join(", ") }
        );
    };
    let mut p = p.clone();
    for (given, slot) in [
        (&a.hook_before, &mut p.hooks.before),
        (&a.hook_after, &mut p.hooks.after),
        (&a.hook_on_failure, &mut p.hooks.on_failure),
        (&a.hook_finally, &mut p.hooks.finally),
    ] {
        if !given.is_empty() {
            *slot = given.clone();
        }
    }
    if let Some(m) = &g.metrics_file {
        p.metrics_file = Some(m.clone());
    }
    if !g.notify.is_empty() {
        p.notify = g.notify.clone();
    }
    if let Some(w) = &g.notify_on {
        p.notify_on = profile::When::parse_cli(w)?;
    }
    if let (false, Some(file)) = (super::log::active(), p.global("log-file")) {
        let level = p.global("log-level").unwrap_or("info");
        super::log::init(
            std::path::Path::new(file),
            level,
            p.global("log-format") == Some("json"),
            p.global("log-max-size"),
        )?;
        tracing::info!(command = "run", profile = %p.name, "start");
    }
    let extra = command_line_globals();
    let state_dir =
        super::commands::state_dir().ok_or_else(|| anyhow!("no state directory: set COFFER_STATE_DIR or HOME"))?;
    let now_ns = crate::clock::to_unix_ns(crate::clock::now());
    if a.dry_run {
        let state = runlock::load_state(&state_dir, &p.name);
        return dry_run(g, &p, &plan(&p, &extra, &state, now_ns));
    }
    let _lock = match runlock::lock(&state_dir, &p.name, p.wait) {
        Ok(l) => l,
        Err(e @ runlock::RunLockError::Busy { .. }) => {
            // Exit 11, with the JSON error document under --json.
            return Err(crate::repo::RepoError::Locked(e.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut state = runlock::load_state(&state_dir, &p.name);
    let started = crate::clock::stopwatch();
    super::RUNNING.store(true, std::sync::atomic::Ordering::SeqCst);
    let steps = steps(&p, &extra, &mut state, now_ns, started);
    // From here on a signal ends the run at once (exit 130): nothing is left to stop but
    // the notifications.
    super::RUNNING.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut code = steps.iter().filter_map(|s| s.exit_code).max_by_key(|c| severity(*c)).unwrap_or(0);
    if interrupted() {
        code = ExitCode::Interrupted as i32;
    }
    let finished_ns = crate::clock::to_unix_ns(crate::clock::now());
    state.last_run_ns = finished_ns;
    state.runs += 1;
    if code == 0 || status(code) == "warning" {
        state.last_success_ns = finished_ns;
    } else {
        state.failures += 1;
    }
    if let Err(e) = runlock::save_state(&state_dir, &p.name, &state) {
        warn!("run state not saved: {e}");
    }
    let doc = summary(&p, code, &steps, now_ns, finished_ns);
    tracing::info!(profile = %p.name, status = status(code), exit_code = code, "run ends");
    if let Some(path) = &p.metrics_file {
        write_metrics(&p, &extra, path, &doc, &steps, &state);
    }
    notify(&p, code, &doc);
    mail(&p, code, &doc, &steps);
    if g.json {
        super::commands::print_json(&doc)?;
    } else if !g.quiet || status(code) == "failure" {
        print_summary(&p, code, &steps, started.elapsed().as_secs_f64());
    }
    Ok(exit_from(code))
}

/// The steps, hooks included; updates the state of the periodic ones.
fn steps(
    p: &Profile,
    extra: &[String],
    state: &mut runlock::RunState,
    now_ns: i64,
    started: std::time::Instant,
) -> Vec<Step> {
    let plan = plan(p, extra, state, now_ns);
    let _ = plan.forget;
    let mut steps = Vec::new();
    let worst = |steps: &[Step]| {
        if interrupted() {
            return ExitCode::Interrupted as i32;
        }
        steps.iter().filter_map(|s| s.exit_code).max_by_key(|c| severity(*c)).unwrap_or(0)
    };
    if let Some(failed) = run_hooks(p, "before", &p.hooks.before, &hook_env(p, "before", 0, &steps, started)) {
        let stop = p.hooks.stop_on_before_failure;
        steps.push(failed);
        if stop {
            steps.push(Step::skipped("backup", "a before hook failed"));
        }
    }
    if steps.iter().all(|s| s.skipped.is_none()) {
        let b = child(p, "backup", &plan.backup);
        let wrote = b.output.get("snapshot_id").is_some_and(Value::is_string);
        let paths: Vec<String> = b.output["paths"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_else(|| expected_paths(p));
        steps.push(b);
        // A failed before hook the profile continues after counts for the exit code only.
        let ok = |steps: &[Step]| {
            goes_on(worst(&steps.iter().filter(|s| !s.name.starts_with("hook")).cloned().collect::<Vec<_>>()))
                && !interrupted()
        };
        match forget_argv(p, extra, &paths) {
            Some(argv) if ok(&steps) && wrote => steps.push(child(p, "forget", &argv)),
            Some(_) if !ok(&steps) => steps.push(Step::skipped("forget", "an earlier step failed")),
            Some(_) => steps.push(Step::skipped("forget", "the backup did not write a snapshot")),
            None => {}
        }
        let periodic = [("prune", plan.prune), ("check", plan.check), ("drill", plan.drill)];
        for (name, step) in periodic {
            let Some((argv, due)) = step else { continue };
            if !ok(&steps) {
                steps.push(Step::skipped(name, "an earlier step failed"));
            } else if !due {
                steps.push(Step::skipped(name, "not due yet"));
            } else {
                let s = child(p, name, &argv);
                if s.exit_code.is_some_and(goes_on) {
                    match name {
                        "prune" => state.last_prune_ns = now_ns,
                        "check" => {
                            state.last_check_ns = now_ns;
                            if let Some(Subset::Rotate(n)) = p.check.as_ref().map(|c| &c.subset) {
                                state.next_check_part = state.next_check_part.clamp(1, *n) % n + 1;
                            }
                        }
                        _ => state.last_drill_ns = now_ns,
                    }
                }
                steps.push(s);
            }
        }
    }
    let code = worst(&steps);
    let which = if goes_on(code) { ("after", &p.hooks.after) } else { ("on-failure", &p.hooks.on_failure) };
    if let Some(failed) = run_hooks(p, which.0, which.1, &hook_env(p, which.0, code, &steps, started)) {
        // A failing after hook fails the run, so the on-failure hooks run next (as borgmatic
        // does); a failing on-failure hook is only reported.
        let mut failed = failed;
        if which.0 == "on-failure" {
            failed.exit_code = Some(code);
            steps.push(failed);
        } else {
            steps.push(failed);
            let code = worst(&steps);
            let env = hook_env(p, "on-failure", code, &steps, started);
            if let Some(mut f) = run_hooks(p, "on-failure", &p.hooks.on_failure, &env) {
                f.exit_code = Some(code);
                steps.push(f);
            }
        }
    }
    let code = worst(&steps);
    if let Some(mut failed) = run_hooks(p, "finally", &p.hooks.finally, &hook_env(p, "finally", code, &steps, started))
    {
        failed.exit_code = Some(code);
        steps.push(failed);
    }
    steps
}

fn exit_from(code: i32) -> ExitCode {
    use ExitCode::*;
    [
        Ok,
        Error,
        Usage,
        Partial,
        DrillDamage,
        ObjectiveBreached,
        RepoNotFound,
        LockFailed,
        WrongPassword,
        Protected,
        Interrupted,
    ]
    .into_iter()
    .find(|c| *c as i32 == code)
    .unwrap_or(Error)
}

/// The run's JSON document (`run --json`, the webhook's body).
fn summary(p: &Profile, code: i32, steps: &[Step], started_ns: i64, finished_ns: i64) -> Value {
    let b = steps.iter().find(|s| s.name == "backup").map(|s| s.output.clone()).unwrap_or(Value::Null);
    let rfc = |ns: i64| crate::clock::from_unix_ns(ns).to_string();
    json!({
        "profile": p.name,
        "host": crate::backup::default_host(),
        "repository": repository(p, &command_line_globals()),
        "status": status(code),
        "exit_code": code,
        "started": rfc(started_ns),
        "finished": rfc(finished_ns),
        "duration_seconds": (finished_ns - started_ns) as f64 / 1e9,
        "snapshot_id": b.get("snapshot_id"),
        "backup": b,
        "steps": steps,
        "error": steps.iter().rev().find_map(|s| s.error.clone()),
        "program_version": format!("coffer {}", env!("CARGO_PKG_VERSION")),
    })
}

fn print_summary(p: &Profile, code: i32, steps: &[Step], secs: f64) {
    eprintln!("coffer run {}: {} (exit {code}) in {secs:.1}s", p.name, status(code));
    for s in steps {
        let what = match (&s.skipped, s.exit_code) {
            (Some(why), _) => format!("skipped ({why})"),
            (None, Some(c)) => format!(
                "exit {c} in {:.1}s{}",
                s.duration_seconds,
                s.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            (None, None) => String::new(),
        };
        eprintln!("  {:<16} {what}", s.name);
    }
}

fn dry_run(g: &Global, p: &Profile, plan: &Plan) -> Result<ExitCode> {
    let mut lines: Vec<(String, String)> = Vec::new();
    let hook = |lines: &mut Vec<(String, String)>, name: &str, v: &[String]| {
        for h in v {
            lines.push((format!("hook {name}"), h.clone()));
        }
    };
    hook(&mut lines, "before", &p.hooks.before);
    lines.push(("backup".into(), shown(&plan.backup)));
    if let Some(f) = &plan.forget {
        lines.push(("forget".into(), shown(f)));
    }
    for (name, step) in [("prune", &plan.prune), ("check", &plan.check), ("drill", &plan.drill)] {
        if let Some((argv, due)) = step {
            lines.push((name.into(), format!("{}{}", shown(argv), if *due { "" } else { "   # not due yet" })));
        }
    }
    hook(&mut lines, "after", &p.hooks.after);
    hook(&mut lines, "on-failure", &p.hooks.on_failure);
    hook(&mut lines, "finally", &p.hooks.finally);
    if let Some(m) = &p.metrics_file {
        lines.push(("metrics".into(), m.display().to_string()));
    }
    for n in &p.notify {
        lines.push((
            "notify".into(),
            format!("{} ({})", crate::storage::webhook::shown(n), format!("{:?}", p.notify_on).to_lowercase()),
        ));
    }
    if g.json {
        let steps: Vec<Value> = lines.iter().map(|(s, c)| json!({ "step": s, "command": c })).collect();
        let env: Vec<&str> = p.env.iter().map(|(k, _)| k.as_str()).collect();
        super::commands::print_json(&json!({ "profile": p.name, "dry_run": true, "steps": steps, "env": env }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for (s, c) in lines {
            writeln!(out, "{s:<16} {c}")?;
        }
        if !p.env.is_empty() {
            let names: Vec<&str> = p.env.iter().map(|(k, _)| k.as_str()).collect();
            writeln!(out, "{:<16} {}", "environment", names.join(" "))?;
        }
    }
    Ok(ExitCode::Ok)
}
