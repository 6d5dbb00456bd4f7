//! What a run leaves for the operator besides its exit code: the metrics file, webhook
//! notifications and mail (for `coffer run` and a plain `coffer backup`), and the listing
//! commands `coffer profiles` and `coffer metrics`.

use std::io::Write;
use std::process::{Command as Process, Stdio};

use anyhow::Result;
use serde_json::{json, Value};

use super::args::Global;
use super::exit::ExitCode;
use super::profile::{self, Profile, Retention};
use super::run::{child, goes_on, status, Step};
use crate::ops::child::Line;
use crate::ops::{metrics, runlock};

/// The run's metrics and the repository's, written atomically; a failure is a warning.
pub(super) fn write_metrics(
    p: &Profile,
    extra: &[String],
    path: &std::path::Path,
    doc: &Value,
    steps: &[Step],
    state: &runlock::RunState,
) {
    let mut s = run_samples(&[("profile", p.name.clone())], doc, steps, state);
    // The repository's side (sizes, the newest snapshot per host): from `coffer metrics`.
    let m = child(p, "metrics", &profile::argv(p, extra, &["metrics", "--json"], &[], &[]));
    match serde_json::from_value::<metrics::RepoMetrics>(m.output.clone()) {
        Ok(r) if m.exit_code == Some(0) => s.extend(metrics::repository_samples(&r, &[("profile", p.name.clone())])),
        _ => warn!("repository metrics left out: {}", m.error.unwrap_or_else(|| "no answer".into())),
    }
    if let Err(e) = metrics::write_atomic(path, &metrics::render(&s)) {
        warn!("metrics file {} not written: {e}", path.display());
    }
}

/// The samples of a run (or of a plain `backup`, whose profile label is empty).
fn run_samples(
    labels: &[(&'static str, String)],
    doc: &Value,
    steps: &[Step],
    state: &runlock::RunState,
) -> Vec<metrics::Sample> {
    use metrics::Sample;
    let l = || labels.to_vec();
    let b = &doc["backup"];
    let n = |k: &str| b.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let mut s = vec![
        Sample::gauge(
            "coffer_run_last_timestamp_seconds",
            "When the last run of this profile ended.",
            l(),
            state.last_run_ns as f64 / 1e9,
        ),
        Sample::gauge(
            "coffer_run_last_success_timestamp_seconds",
            "When the last successful run of this profile ended.",
            l(),
            state.last_success_ns as f64 / 1e9,
        ),
        Sample::gauge(
            "coffer_run_duration_seconds",
            "How long the last run took.",
            l(),
            doc["duration_seconds"].as_f64().unwrap_or(0.0),
        ),
        Sample::gauge(
            "coffer_run_exit_code",
            "The last run's exit code (0: success).",
            l(),
            doc["exit_code"].as_f64().unwrap_or(1.0),
        ),
        Sample::counter("coffer_runs_total", "Runs of this profile.", l(), state.runs as f64),
        Sample::counter("coffer_run_failures_total", "Failed runs of this profile.", l(), state.failures as f64),
        Sample::gauge("coffer_backup_files", "Files the last backup processed.", l(), n("total_files_processed")),
        Sample::gauge("coffer_backup_files_new", "New files in the last backup.", l(), n("files_new")),
        Sample::gauge("coffer_backup_files_changed", "Changed files in the last backup.", l(), n("files_changed")),
        Sample::gauge(
            "coffer_backup_processed_bytes",
            "Bytes the last backup processed.",
            l(),
            n("total_bytes_processed"),
        ),
        Sample::gauge(
            "coffer_backup_added_bytes",
            "Bytes the last backup added to the repository (stored size).",
            l(),
            n("data_added"),
        ),
        Sample::gauge(
            "coffer_backup_errors",
            "Files the last backup could not read.",
            l(),
            b.get("errors").and_then(Value::as_array).map_or(0, Vec::len) as f64,
        ),
        Sample::gauge("coffer_backup_duration_seconds", "How long the last backup took.", l(), n("total_duration")),
    ];
    for st in steps.iter().filter(|st| st.exit_code.is_some() && !st.name.starts_with("hook")) {
        let mut labels = l();
        labels.push(("step", st.name.clone()));
        s.push(Sample::gauge(
            "coffer_step_exit_code",
            "Each step's exit code in the last run.",
            labels,
            st.exit_code.unwrap_or(0) as f64,
        ));
    }
    s
}

/// `coffer backup --metrics-file F --notify URL`: the same metrics and notification as a run
/// (profile label empty; counters kept in the state as profile `_backup`), after the backup
/// succeeded or failed.
pub(super) fn after_backup(
    g: &Global,
    repo: Option<&crate::repo::Repository>,
    summary: Value,
    code: i32,
    error: Option<String>,
    started_ns: i64,
) -> Result<()> {
    if g.metrics_file.is_none() && g.notify.is_empty() {
        return Ok(());
    }
    let when = match &g.notify_on {
        Some(w) => profile::When::parse_cli(w)?,
        None => profile::When::Always,
    };
    let finished_ns = crate::clock::to_unix_ns(crate::clock::now());
    // Plain backups keep their counters per repository (profile names cannot start with `_`),
    // and their series carry the repository as a label: two cron jobs into two repositories
    // are two series.
    // The repository's own location (a local path made absolute), not the spelling used.
    let location = repo.map(|r| r.store().canonical_location()).or_else(|| g.repo.clone()).unwrap_or_default();
    let key = format!("_backup-{}", &blake3::hash(location.as_bytes()).to_hex()[..16]);
    let labels = [("profile", String::new()), ("repository", location.clone())];
    let state_dir = super::commands::state_dir();
    let mut state = state_dir.as_deref().map(|d| runlock::load_state(d, &key)).unwrap_or_default();
    state.last_run_ns = finished_ns;
    state.runs += 1;
    if goes_on(code) {
        state.last_success_ns = finished_ns;
    } else {
        state.failures += 1;
    }
    if let Some(d) = &state_dir {
        if let Err(e) = runlock::save_state(d, &key, &state) {
            warn!("backup state not saved: {e}");
        }
    }
    let step = Step {
        name: "backup".into(),
        exit_code: Some(code),
        duration_seconds: (finished_ns - started_ns) as f64 / 1e9,
        skipped: None,
        error: error.clone(),
        output: summary.clone(),
    };
    let rfc = |ns: i64| crate::clock::from_unix_ns(ns).to_string();
    let doc = json!({
        "command": "backup",
        "host": crate::backup::default_host(),
        "repository": g.repo,
        "status": status(code),
        "exit_code": code,
        "started": rfc(started_ns),
        "finished": rfc(finished_ns),
        "duration_seconds": (finished_ns - started_ns) as f64 / 1e9,
        "snapshot_id": summary.get("snapshot_id"),
        "backup": summary,
        "steps": [&step],
        "error": error,
        "program_version": format!("coffer {}", env!("CARGO_PKG_VERSION")),
    });
    if let Some(path) = &g.metrics_file {
        let mut s = run_samples(&labels, &doc, std::slice::from_ref(&step), &state);
        match repo.map(metrics::repository) {
            Some(Ok(r)) => s.extend(metrics::repository_samples(&r, &labels)),
            Some(Err(e)) => warn!("repository metrics left out: {e}"),
            None => {}
        }
        if let Err(e) = metrics::write_atomic(path, &metrics::render(&s)) {
            warn!("metrics file {} not written: {e}", path.display());
        }
    }
    post_all(&g.notify, when, code, &doc);
    Ok(())
}

/// POSTs the run's document to each webhook the profile names, when `notify-on` wants it.
pub(super) fn notify(p: &Profile, code: i32, doc: &Value) {
    post_all(&p.notify, p.notify_on, code, doc)
}

/// POSTs `doc` to each of `urls` when `when` wants a run that ended with `code`.
fn post_all(urls: &[String], when: profile::When, code: i32, doc: &Value) {
    if !when.wants(code) {
        return;
    }
    let body = serde_json::to_vec(doc).unwrap_or_default();
    // All at once: a dead endpoint (three attempts of 10 s) must not delay the others.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = urls
            .iter()
            .map(|url| {
                let body = body.clone();
                s.spawn(move || crate::storage::webhook::post_json(url, body, std::time::Duration::from_secs(10), 3))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for (url, d) in urls.iter().zip(results) {
        let Ok(d) = d else { continue };
        if let Some(e) = d.error {
            warn!(
                "notification to {} failed after {} attempts: {e} (the run is not affected)",
                crate::storage::webhook::shown(url),
                d.attempts
            );
        }
    }
}

/// How long the mail command may take.
const MAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Mails the summary through a sendmail-compatible command (`mail-command`, default
/// `sendmail -t`), when `mail-on` wants it.
pub(super) fn mail(p: &Profile, code: i32, doc: &Value, steps: &[Step]) {
    if p.mail_to.is_empty() || !p.mail_on.wants(code) {
        return;
    }
    let host = crate::backup::default_host();
    let mut body = format!(
        "To: {}\nSubject: [coffer] {} on {host}: {} (exit {code})\nContent-Type: text/plain; charset=utf-8\n\n",
        p.mail_to.join(", "),
        p.name,
        status(code)
    );
    for s in steps {
        let what = s
            .skipped
            .clone()
            .map(|w| format!("skipped ({w})"))
            .unwrap_or_else(|| format!("exit {}", s.exit_code.unwrap_or(0)));
        body.push_str(&format!(
            "{:<16} {what}{}\n",
            s.name,
            s.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ));
    }
    body.push_str(&format!("\n{}\n", serde_json::to_string_pretty(doc).unwrap_or_default()));
    let mut cmd = Process::new("sh");
    cmd.arg("-c").arg(&p.mail_command).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let sent = crate::ops::child::spawn(&mut cmd).and_then(|mut c| {
        // The body is written on a thread: a mailer that never reads it must not hold the run.
        let mut stdin = c.stdin.take().expect("piped");
        std::thread::spawn(move || stdin.write_all(body.as_bytes()));
        // A mailer that hangs must not hold the run (and its lock) forever: after the timeout
        // its whole process group is killed.
        let ended = crate::ops::child::supervise(c, Some(MAIL_TIMEOUT), &mut |l| match l {
            Line::Out(s) | Line::Err(s) => {
                eprintln!("mail: {s}");
                tracing::info!("mail: {s}");
            }
        })?;
        if ended.timed_out {
            return Err(std::io::Error::other(format!("no exit within {}s; killed", MAIL_TIMEOUT.as_secs())));
        }
        Ok(ended.status)
    });
    match sent {
        Ok(s) if s.success() => {}
        Ok(s) => warn!("mail command {:?} failed ({s}); the run is not affected", p.mail_command),
        Err(e) => warn!("mail command {:?} failed: {e}; the run is not affected", p.mail_command),
    }
}

/// `coffer profiles`: the profiles of the file, checked.
pub fn profiles(g: &Global) -> Result<ExitCode> {
    let file = profile::load(&profile::config_path(g.config.as_deref())?)?;
    let rows: Vec<Value> = file
        .profiles
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "description": p.description,
                "repository": p.global("repo"),
                "paths": p.paths,
                "schedule": p.schedule,
                "retention": match &p.retention {
                    None => Value::Null,
                    Some(Retention::Policy) => json!("policy"),
                    Some(Retention::Rules(r)) => json!(r.iter().map(|a| a.text.clone()).collect::<Vec<_>>()),
                },
                "prune_every_seconds": p.prune.as_ref().map(|s| s.every_s),
                "check_every_seconds": p.check.as_ref().map(|s| s.every_s),
                "drill_every_seconds": p.drill.as_ref().map(|s| s.every_s),
                "metrics_file": p.metrics_file,
                "notify": p.notify,
                "file": file.path,
                "line": p.line,
            })
        })
        .collect();
    if g.json {
        super::commands::print_json(&rows)?;
    } else {
        let mut out = std::io::stdout().lock();
        for r in &rows {
            writeln!(
                out,
                "{:<16} {:<28} {}",
                r["name"].as_str().unwrap_or_default(),
                r["repository"].as_str().unwrap_or("-"),
                r["paths"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::Ok)
}

/// `coffer metrics`: the repository-side metrics, Prometheus text (or `--json`).
pub fn metrics_cmd(g: &Global) -> Result<ExitCode> {
    let repo = super::commands::open(g)?;
    let m = metrics::repository(&repo)?;
    if g.json {
        super::commands::print_json(&m)?;
    } else {
        out!("{}", metrics::render(&metrics::repository_samples(&m, &[])));
    }
    Ok(ExitCode::Ok)
}
