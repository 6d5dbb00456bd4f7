//! Unattended operation: profiles, `coffer run` (hooks, retention, prune, check rotation,
//! drills), the run lock, metrics for node_exporter and webhook notifications, against a
//! local repository and against S3 on moto.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::support::*;

/// A webhook receiver on 127.0.0.1: answers each POST with the next status of `statuses`
/// (then 200), and hands over each body.
struct Hook {
    url: String,
    bodies: mpsc::Receiver<serde_json::Value>,
}

fn webhook(statuses: Vec<u16>) -> Hook {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/coffer", l.local_addr().unwrap());
    let (tx, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let status = statuses.next().unwrap_or(200);
            let _ = write!(c, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if status == 200 {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
            }
        }
    });
    Hook { url, bodies }
}

/// Writes the profile file (mode 0600) and returns its path.
fn profile_file(env: &Env, text: &str) -> PathBuf {
    let f = env.path("coffer.toml");
    std::fs::write(&f, text).unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    f
}

/// `coffer --config FILE ARGS` with the repository and password only from the profile.
fn coffer(env: &Env, config: &Path, args: &[&str]) -> Run {
    let mut c = env.cmd(&["--config", config.to_str().unwrap()]);
    c.args(args).env_remove("COFFER_REPO").env_remove("COFFER_PASSWORD");
    Env::run_cmd(c)
}

fn nightly(env: &Env, repo: &str, hook_url: &str, extra: &str) -> String {
    let pwfile = env.path("password");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let src = env.path("src");
    let out = env.path("hooks.log");
    format!(
        r#"
[profiles.nightly]
repository = "{repo}"
password-file = "{pw}"
paths = ["{src}"]
exclude = ["*.tmp"]
tags = ["nightly"]
host = "web1"
metrics-file = "{metrics}"
notify = "{hook_url}"
{extra}
[profiles.nightly.retention]
keep-last = 2
[profiles.nightly.check]
parts = 3
[profiles.nightly.drill]
sample = "50%"
[profiles.nightly.hooks]
before = "echo dump-$COFFER_PROFILE > {src}/db.sql"
after = "echo after $COFFER_SNAPSHOT_ID $COFFER_EXIT_CODE $COFFER_FILES $COFFER_STATUS >> {out}"
on-failure = "echo failed $COFFER_EXIT_CODE \"$COFFER_ERROR\" >> {out}"
finally = "echo finally $COFFER_EXIT_CODE >> {out}"
"#,
        pw = pwfile.display(),
        src = src.display(),
        metrics = env.path("coffer.prom").display(),
        out = out.display(),
    )
}

/// The value of a metric line `name{labels} value` whose labels contain `label`.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {label} in:\n{text}"))
}

/// Three nightly runs: hooks, backup, retention, prune, a rotating check, a drill, metrics
/// and the webhook; checks what each left behind.
fn full_cycle(env: &Env, repo: &str) {
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::write(src.join("junk.tmp"), "x").unwrap();
    let hook = webhook(vec![500]);
    let config = profile_file(env, &nightly(env, repo, &hook.url, ""));
    let r = coffer(env, &config, &["profiles", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()[0]["name"], "nightly");
    let dry = coffer(env, &config, &["run", "nightly", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("backup")
            && dry.stdout.contains("--keep-last=2")
            && dry.stdout.contains("--read-data-subset=1/3"),
        "{}",
        dry.stdout
    );
    assert!(!env.path("hooks.log").exists(), "a dry run runs nothing");
    let mut ids = Vec::new();
    for round in 1..=3 {
        let r = coffer(env, &config, &["run", "nightly", "--json"]);
        assert_eq!(r.code, 0, "round {round}: {}\n{}", r.stdout, r.stderr);
        let doc = r.json();
        assert_eq!(doc["status"], "success", "{doc}");
        let id = doc["snapshot_id"].as_str().unwrap().to_string();
        let names: Vec<&str> = doc["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["backup", "forget", "prune", "check", "drill"], "{doc}");
        // The webhook got the same document; the first POST was answered 500 and retried.
        let got = hook.bodies.recv_timeout(std::time::Duration::from_secs(20)).expect("webhook called");
        assert_eq!(got["snapshot_id"], id.as_str());
        assert_eq!(got["profile"], "nightly");
        ids.push(id);
    }
    let log = std::fs::read_to_string(env.path("hooks.log")).unwrap();
    let afters: Vec<&str> = log.lines().filter(|l| l.starts_with("after ")).collect();
    assert_eq!(afters.len(), 3, "{log}");
    assert!(afters[2].starts_with(&format!("after {} 0 ", ids[2])) && afters[2].ends_with(" success"), "{log}");
    assert_eq!(log.lines().filter(|l| *l == "finally 0").count(), 3, "{log}");
    // keep-last 2, within the profile's host and tag.
    let mut c = env.cmd(&["snapshots", "--json"]);
    c.env("COFFER_REPO", repo);
    let snaps = Env::run_cmd(c).json();
    let left: Vec<&str> = snaps.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(left, [ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["nightly"]));
    // The before hook's dump was backed up; the excluded file was not.
    let mut c = env.cmd(&["ls", "latest"]);
    c.env("COFFER_REPO", repo);
    let ls = Env::run_cmd(c).stdout;
    assert!(ls.contains("/db.sql") && !ls.contains("junk.tmp"), "{ls}");
    // The check rotated through parts 1, 2 and 3 and starts again at 1.
    let dry = coffer(env, &config, &["run", "nightly", "--dry-run"]);
    assert!(dry.stdout.contains("--read-data-subset=1/3"), "{}", dry.stdout);
    let m = std::fs::read_to_string(env.path("coffer.prom")).unwrap();
    assert_eq!(metric(&m, "coffer_run_exit_code", "profile=\"nightly\""), 0.0);
    assert_eq!(metric(&m, "coffer_runs_total", "nightly"), 3.0);
    assert!(metric(&m, "coffer_backup_files", "nightly") >= 5.0, "{m}");
    assert!(metric(&m, "coffer_repository_size_bytes", "nightly") > 3_000_000.0, "{m}");
    assert_eq!(metric(&m, "coffer_repository_snapshots", "nightly"), 2.0);
    let newest = metric(&m, "coffer_snapshot_newest_timestamp_seconds", "host=\"web1\"");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - newest).abs() < 600.0, "{newest} vs {now}");
    assert!(m.contains("# TYPE coffer_runs_total counter"), "{m}");
    assert_eq!(metric(&m, "coffer_drill_last_passed", "web1"), 1.0);
}

#[test]
fn a_profile_runs_a_full_nightly_cycle_on_a_local_repository() {
    let env = Env::new();
    full_cycle(&env, env.repo.to_str().unwrap());
}

#[test]
fn a_profile_runs_a_full_nightly_cycle_on_s3() {
    let env = Env::s3();
    // The profile carries the S3 settings in its env table (the file is 0600).
    let vars: Vec<(String, String)> = env.vars.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    let extra: String = vars.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect();
    let text_env = format!("[profiles.nightly.env]\n{extra}");
    let env2 = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: env.repo.clone(),
        vars: env.vars.iter().filter(|(k, _)| !k.starts_with("AWS_")).cloned().collect(),
    };
    let src = env2.path("src");
    make_simple_tree(&src);
    let hook = webhook(vec![]);
    let mut text = nightly(&env2, env.repo.to_str().unwrap(), &hook.url, "");
    text.push_str(&text_env);
    let config = profile_file(&env2, &text);
    let r = coffer(&env2, &config, &["run", "nightly", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["status"], "success");
    assert!(hook.bodies.recv_timeout(std::time::Duration::from_secs(20)).is_ok());
    let m = std::fs::read_to_string(env2.path("coffer.prom")).unwrap();
    assert_eq!(metric(&m, "coffer_repository_snapshots", "nightly"), 1.0);
    // The command line wins over the profile: a repository that is not there fails the run.
    let r = coffer(&env2, &config, &["run", "nightly", "--repo", env2.path("nowhere").to_str().unwrap()]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    let r = coffer(&env2, &config, &["--repo", env2.path("nowhere").to_str().unwrap(), "run", "nightly", "--json"]);
    assert_eq!(r.code, 10, "given before `run` too: {}", r.stderr);
    assert!(r.json()["repository"].as_str().unwrap().ends_with("/nowhere"), "the repository used is reported");
}

#[test]
fn a_failing_before_hook_stops_the_run_and_failures_are_reported() {
    let env = Env::new();
    let hook = webhook(vec![]);
    let mailbox = env.path("mail.txt");
    let mail = format!(
        "notify-on = \"failure\"\nmail-to = [\"ops@example.com\"]\nmail-command = \"cat > {}\"",
        mailbox.display()
    );
    let text = nightly(&env, env.repo.to_str().unwrap(), &hook.url, &mail)
        .replace("before = \"echo dump", "before = \"exit 7; echo dump");
    let config = profile_file(&env, &text);
    make_simple_tree(&env.path("src"));
    let r = coffer(&env, &config, &["run", "nightly", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "failure");
    assert_eq!(doc["steps"][1]["name"], "backup");
    assert!(doc["steps"][1]["skipped"].is_string(), "{doc}");
    let log = std::fs::read_to_string(env.path("hooks.log")).unwrap();
    assert!(log.contains("failed 1 \"hook before") || log.contains("failed 1 hook before"), "{log}");
    assert!(log.contains("finally 1"), "{log}");
    assert_eq!(hook.bodies.recv_timeout(std::time::Duration::from_secs(20)).unwrap()["exit_code"], 1);
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 0);
    let mail = std::fs::read_to_string(&mailbox).unwrap();
    assert!(
        mail.starts_with("To: ops@example.com\nSubject: [coffer] nightly on ") && mail.contains("failure (exit 1)"),
        "{mail}"
    );
    let m = std::fs::read_to_string(env.path("coffer.prom")).unwrap();
    assert_eq!(metric(&m, "coffer_run_exit_code", "nightly"), 1.0);
    assert_eq!(metric(&m, "coffer_run_failures_total", "nightly"), 1.0);
    // A backup that fails (its only path is missing) skips retention, and the exit code is the
    // backup's.
    let src = format!("paths = [\"{}\"]", env.path("src").display());
    assert!(text.contains(&src));
    let text = text.replace("before = \"exit 7; ", "before = \"").replace(&src, "paths = [\"/nonexistent/x\"]");
    let config = profile_file(&env, &text);
    let r = coffer(&env, &config, &["run", "nightly", "--json"]);
    assert_ne!(r.code, 0);
    let doc = r.json();
    assert!(doc["steps"][1]["skipped"].is_string(), "forget skipped: {doc}");
    assert!(doc["error"].as_str().unwrap().contains("/nonexistent/x"), "{doc}");
}

#[test]
fn two_runs_of_one_profile_never_overlap() {
    let env = Env::new();
    make_simple_tree(&env.path("src"));
    let text = nightly(&env, env.repo.to_str().unwrap(), "http://127.0.0.1:9/", "notify-on = \"never\"")
        .replace("before = \"echo", "before = \"sleep 3; echo");
    let config = profile_file(&env, &text);
    let mut first = env.cmd(&["--config", config.to_str().unwrap(), "run", "nightly"]);
    first.env_remove("COFFER_REPO");
    let mut first = first.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let r = coffer(&env, &config, &["run", "nightly"]);
    assert_eq!(r.code, 11, "{}", r.stderr);
    assert!(r.stderr.contains("already running"), "{}", r.stderr);
    assert!(first.wait().unwrap().success());
    // overlap = "wait" waits instead.
    let config = profile_file(&env, &text.replace("host = \"web1\"", "host = \"web1\"\noverlap = \"wait\""));
    let mut first = env.cmd(&["--config", config.to_str().unwrap(), "run", "nightly"]);
    first.env_remove("COFFER_REPO");
    let mut first = first.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let r = coffer(&env, &config, &["run", "nightly"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(first.wait().unwrap().success());
}

#[test]
fn profile_files_are_checked_before_anything_runs() {
    let env = Env::new();
    let config = profile_file(&env, "[profiles.a]\npaths = [\"/etc\"]\n\nkeep-daily = 3\n");
    let r = coffer(&env, &config, &["run", "a"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("coffer.toml:4:") && r.stderr.contains("keep-daily"), "{}", r.stderr);
    let config = profile_file(&env, "[profiles.a]\npaths = [\"/etc\"]\n");
    let r = coffer(&env, &config, &["run", "b"]);
    assert!(r.stderr.contains("no profile \"b\"") && r.stderr.contains("profiles: a"), "{}", r.stderr);
    std::fs::write(&config, "[profiles.a]\npaths = [\"/etc\"]\npassword = \"hunter2\"\n").unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = coffer(&env, &config, &["profiles"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("readable by every user"), "{}", r.stderr);
    // Values are checked when the file is loaded, each naming its line.
    for (bad, key) in [
        ("[profiles.a.retention]\nkeep-last = 1\ngroup-by = \"hots\"\n", "group-by"),
        ("[profiles.a.drill]\nrto = \"soon\"\n", "rto"),
        ("[profiles.a.drill]\nsample = \"500%\"\n", "sample"),
        ("schedule = \"daily\\nExecStart=/bin/evil\"\n", "schedule"),
        ("log-max-size = \"big\"\n", "log-max-size"),
        ("time = \"yesterday-ish\"\n", "time"),
        ("stdin-filename = \"../etc/passwd\"\n", "stdin-filename"),
    ] {
        let (top, table) = if bad.starts_with('[') { ("", bad) } else { (bad, "") };
        std::fs::write(&config, format!("[profiles.a]\npaths = [\"/etc\"]\n{top}{table}")).unwrap();
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let r = coffer(&env, &config, &["profiles"]);
        assert_eq!(r.code, 1, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("coffer.toml:") && r.stderr.contains(key), "{bad}: {}", r.stderr);
    }
    let mut c = env.cmd(&["profiles"]);
    c.env("XDG_CONFIG_HOME", env.path("nothing")).env("HOME", env.path("nothing")).env_remove("COFFER_CONFIG");
    if !Path::new("/etc/coffer/coffer.toml").exists() {
        assert!(Env::run_cmd(c).stderr.contains("no profile file"));
    }
}

#[test]
fn metrics_command_prints_the_repository_side() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &["--host", "db1"]);
    let r = env.ok(&["metrics"]);
    assert!(r.stdout.contains("# TYPE coffer_repository_size_bytes gauge"), "{}", r.stdout);
    assert!(metric(&r.stdout, "coffer_host_snapshots", "host=\"db1\"") == 1.0);
    let j = env.ok(&["metrics", "--json"]).json();
    assert_eq!(j["hosts"][0]["host"], "db1");
    assert!(j["hosts"][0]["newest_snapshot_age_seconds"].as_f64().unwrap() < 600.0);
}

/// systemd-analyze verify on unit files: no complaint about them.
pub fn verify_units(units: &[PathBuf]) {
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze is installed (scripts/test.sh installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    // Lines about other units of the host (its own broken units) are not ours to judge.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("coffer")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {err}");
}

#[test]
fn schedules_are_systemd_units_or_cron_entries() {
    let env = Env::new();
    make_simple_tree(&env.path("src"));
    let text = nightly(&env, env.repo.to_str().unwrap(), "http://127.0.0.1:9/", "schedule = \"*-*-* 03:30\"");
    let config = profile_file(&env, &text);
    let units = env.path("units");
    let u = units.to_str().unwrap();
    let r = coffer(&env, &config, &["schedule", "install", "nightly", "--dir", u, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["schedule"], "*-*-* 03:30");
    let service = std::fs::read_to_string(units.join("coffer-nightly.service")).unwrap();
    let timer = std::fs::read_to_string(units.join("coffer-nightly.timer")).unwrap();
    assert!(
        service.contains(&format!("--config {} run nightly", config.canonicalize().unwrap().display())),
        "{service}"
    );
    for want in ["Nice=10", "IOSchedulingClass=idle", "LimitNOFILE=", "Type=oneshot"] {
        assert!(service.contains(want), "{want} in {service}");
    }
    for want in ["OnCalendar=*-*-* 03:30", "Persistent=true", "RandomizedDelaySec=900"] {
        assert!(timer.contains(want), "{want} in {timer}");
    }
    verify_units(&[units.join("coffer-nightly.service"), units.join("coffer-nightly.timer")]);
    let r = coffer(&env, &config, &["schedule", "install", "nightly", "--dir", u, "--on", "every full moon"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("every full moon"), "{}", r.stderr);
    let cron = env.path("cron");
    let c = cron.to_str().unwrap();
    let r =
        coffer(&env, &config, &["schedule", "install", "nightly", "--cron", "--dir", c, "--on", "Mon,Thu *-*-* 04:15"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let entry = std::fs::read_to_string(cron.join("coffer-nightly")).unwrap();
    assert!(entry.contains("15 4 * * 1,4 ") && entry.contains(" sleep $(shuf -i 0-900 -n 1); '"), "{entry}");
    let cron_listed = coffer(&env, &config, &["schedule", "list", "--dir", c, "--json"]).json();
    assert_eq!(cron_listed[0]["schedule"], "Mon,Thu *-*-* 04:15", "{cron_listed}");
    let missing = env.path("no-such-dir");
    let r = coffer(&env, &config, &["schedule", "list", "--dir", missing.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("no-such-dir"), "{}", r.stderr);
    let r = coffer(&env, &config, &["schedule", "install", "nightly", "--dir", config.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("not a directory"), "{}", r.stderr);
    let listed = coffer(&env, &config, &["schedule", "list", "--dir", u, "--json"]).json();
    assert_eq!(listed[0]["profile"], "nightly");
    assert_eq!(listed[0]["kind"], "systemd");
    let r = coffer(&env, &config, &["schedule", "remove", "nightly", "--dir", u]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!units.join("coffer-nightly.timer").exists() && !units.join("coffer-nightly.service").exists());
    assert_ne!(coffer(&env, &config, &["schedule", "remove", "nightly", "--dir", u]).code, 0);
    assert_eq!(coffer(&env, &config, &["schedule", "remove", "nightly", "--dir", c]).code, 0);
    assert!(!cron.join("coffer-nightly").exists());
}

#[test]
fn man_pages_and_completions_come_from_the_command_line_definitions() {
    let env = Env::uninit();
    let man = env.path("man");
    env.ok(&["generate", "man", man.to_str().unwrap()]);
    let page = std::fs::read_to_string(man.join("coffer.1")).unwrap();
    assert!(page.contains(".TH coffer") && page.contains("backup"), "{page}");
    let run = std::fs::read_to_string(man.join("coffer-run.1")).unwrap();
    assert!(run.contains("dry\\-run"), "{run}");
    for (shell, want) in [("bash", "_coffer()"), ("zsh", "#compdef coffer"), ("fish", "complete -c coffer")] {
        let out = env.ok(&["generate", "completions", shell]).stdout;
        assert!(out.contains(want) && out.contains("stdin-from-command"), "{shell}: {}", &out[..out.len().min(300)]);
    }
    assert_eq!(env.run(&["generate", "completions", "tcsh"]).code, 2);
}

#[test]
fn verbose_lists_files_and_logs_are_structured() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let s = src.to_str().unwrap();
    let r = env.ok(&["backup", "-v", s]);
    let news: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("new ")).collect();
    assert_eq!(news.len(), 4, "{}", r.stderr);
    std::fs::write(src.join("small.bin"), b"changed").unwrap();
    let r = env.ok(&["backup", "-v", s]);
    let listed: Vec<&str> =
        r.stderr.lines().filter(|l| l.starts_with("modified ") || l.starts_with("unchanged ")).collect();
    assert_eq!(listed.len(), 1, "-v lists what was read: {}", r.stderr);
    assert!(listed[0].ends_with("/small.bin"), "{}", r.stderr);
    let r = env.ok(&["backup", "-vv", s]);
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("unchanged ")).count(), 4, "{}", r.stderr);
    // JSON lines in the log: start and end of each command, errors with their exit code.
    let log = env.path("coffer.log");
    let l = log.to_str().unwrap();
    env.ok(&["backup", "--log-file", l, "--log-format", "json", s]);
    assert_eq!(env.run(&["--log-file", l, "--log-format", "json", "ls", "nosuchsnapshot"]).code, 1);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|x| serde_json::from_str(x).expect("a JSON line")).collect();
    assert_eq!(lines[0]["fields"]["message"], "start");
    assert_eq!(lines[0]["fields"]["command"], "backup");
    assert!(lines.iter().any(|x| x["fields"]["message"] == "end" && x["fields"]["exit_code"] == 0), "{lines:?}");
    assert!(lines.iter().any(|x| x["level"] == "ERROR" && x["fields"]["exit_code"] == 1), "{lines:?}");
    // Rotation at start when the log is over the size.
    env.ok(&["snapshots", "--log-file", l, "--log-max-size", "100"]);
    assert!(env.path("coffer.log.1").exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" INFO ") && text.contains("start"), "text lines after rotation: {text}");
    // A profile's log-file gets the run's steps and its hooks' output.
    let plog = env.path("run.log");
    let extra = format!("log-file = \"{}\"", plog.display());
    let config = profile_file(
        &env,
        &nightly(&env, env.repo.to_str().unwrap(), "http://127.0.0.1:9/", &format!("{extra}\nnotify-on = \"never\"")),
    );
    let r = coffer(&env, &config, &["run", "nightly"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&plog).unwrap();
    assert!(text.contains("step ends") && text.contains("step=\"backup\"") || text.contains("step=backup"), "{text}");
    assert!(text.contains("hook starts") && text.contains("run ends"), "{text}");
}

/// Regression: one profile's retention removed another profile's snapshots of the same host
/// (forget was limited to the host and tags, not to the profile's own paths).
#[test]
fn one_profiles_retention_leaves_other_profiles_alone() {
    let env = Env::new();
    for d in ["etc", "home", "both"] {
        std::fs::create_dir_all(env.path(d)).unwrap();
        std::fs::write(env.path(d).join("f"), d).unwrap();
    }
    let repo = env.repo.display();
    let p = |n: &str| env.path(n).display().to_string();
    let text = format!(
        "[profiles.etc]\nrepo = \"{repo}\"\npassword = \"{PASSWORD}\"\npaths = [\"{}\"]\n[profiles.etc.retention]\nkeep-last = 1\n\
         [profiles.home]\nrepo = \"{repo}\"\npassword = \"{PASSWORD}\"\npaths = [\"{}\"]\n[profiles.home.retention]\nkeep-last = 3\n\
         [profiles.both]\nrepo = \"{repo}\"\npassword = \"{PASSWORD}\"\npaths = [\"{}\", \"{}\"]\n[profiles.both.retention]\nkeep-last = 30\n\
         [profiles.home-archive]\nrepo = \"{repo}\"\npassword = \"{PASSWORD}\"\npaths = [\"{}\"]\ntags = [\"archive\"]\n[profiles.home-archive.retention]\nkeep-last = 30\n",
        p("etc"),
        p("home"),
        p("etc"),
        p("both"),
        p("home")
    );
    let config = profile_file(&env, &text);
    for profile in ["home-archive", "home-archive", "home", "home", "home", "both", "both", "etc", "etc"] {
        let r = coffer(&env, &config, &["run", profile]);
        assert_eq!(r.code, 0, "{profile}: {}", r.stderr);
    }
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let count = |path: &str| {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["paths"].as_array().unwrap().len() == if path == "both" { 2 } else { 1 }
                    && s["paths"].as_array().unwrap().iter().any(|x| x.as_str().unwrap().ends_with(&format!("/{path}")))
            })
            .count()
    };
    // The untagged home profile's keep-last never touched the archive-tagged snapshots of the
    // same paths (regression: tags were matched as "has all of these", not exactly).
    assert_eq!((count("home"), count("both"), count("etc")), (5, 2, 1), "{snaps}");
    let archived = snaps.as_array().unwrap().iter().filter(|s| s["tags"] == serde_json::json!(["archive"])).count();
    assert_eq!(archived, 2, "{snaps}");
}

/// A signal to `coffer run` stops the running step (no snapshot is written after it), runs
/// the failure and finally hooks, and exits 130.
#[test]
fn a_signal_stops_the_step_and_the_failure_hooks_still_run() {
    let env = Env::new();
    let log = env.path("hooks.log");
    let text = format!(
        "[profiles.s]\nrepo = \"{}\"\nstdin-from-command = [\"sh\", \"-c\", \"echo start; sleep 5; echo end\"]\n\
         [profiles.s.hooks]\non-failure = \"echo failed $COFFER_EXIT_CODE >> {l}\"\nfinally = \"echo finally >> {l}\"\n",
        env.repo.display(),
        l = log.display()
    );
    let config = profile_file(&env, &text);
    let mut c = env.cmd(&["--config", config.to_str().unwrap(), "run", "s"]);
    c.env_remove("COFFER_REPO").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let hooks = std::fs::read_to_string(&log).unwrap();
    assert!(hooks.contains("failed ") && hooks.contains("finally"), "{hooks}");
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 0, "the step was stopped");
    // The lock is free again.
    let r = coffer(&env, &config, &["run", "s", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_plain_backup_writes_metrics_and_notifies_failures_too() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let hook = webhook(vec![]);
    let prom = env.path("b.prom");
    let (p, s) = (prom.to_str().unwrap(), src.to_str().unwrap());
    env.ok(&["backup", "--metrics-file", p, "--notify", &hook.url, s]);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(metric(&m, "coffer_run_exit_code", "profile=\"\""), 0.0);
    assert_eq!(metric(&m, "coffer_repository_snapshots", "profile"), 1.0);
    let doc = hook.bodies.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert_eq!(doc["command"], "backup");
    assert_eq!(doc["status"], "success");
    let missing = env.path("missing");
    let r = env.run(&["backup", "--metrics-file", p, "--notify", &hook.url, missing.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    let doc = hook.bodies.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert_eq!(doc["status"], "failure");
    assert!(doc["error"].as_str().unwrap().contains("missing"), "{doc}");
    let m = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(metric(&m, "coffer_run_failures_total", "profile"), 1.0);
    let r = env.run(&["snapshots", "--metrics-file", p]);
    assert!(r.code != 0 && r.stderr.contains("apply to `backup` and `run` only"), "{}", r.stderr);
    // Another repository is another series, with counters of its own.
    let repo1 = format!("repository=\"{}\"", env.repo.display());
    assert_eq!(metric(&m, "coffer_runs_total", &repo1), 2.0);
    let repo2 = env.path("repo2");
    let (r2, prom2) = (repo2.to_str().unwrap(), env.path("b2.prom"));
    env.ok(&["-r", r2, "init"]);
    env.ok(&["-r", r2, "backup", "--metrics-file", prom2.to_str().unwrap(), s]);
    let m2 = std::fs::read_to_string(&prom2).unwrap();
    assert_eq!(metric(&m2, "coffer_runs_total", &format!("repository=\"{r2}\"")), 1.0);
    assert_eq!(metric(&m2, "coffer_run_failures_total", "profile"), 0.0);
}

/// Whether a process is alive (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn a_signal_reaches_the_backup_program_and_hooks_and_background_processes_do_not_hold_runs() {
    let env = Env::new();
    let pidfile = env.path("program.pid");
    let bg = env.path("bg.pid");
    let log = env.path("hooks.log");
    // The program prints its pid and waits; the before hook leaves a process behind that
    // holds the hook's output pipes.
    let text = format!(
        "[profiles.s]\nrepo = \"{}\"\nstdin-from-command = [\"sh\", \"-c\", \"echo $$ > {pf}; sleep 60; echo end\"]\n\
         [profiles.s.hooks]\nbefore = \"sleep 60 & echo $! > {bg}\"\nfinally = \"echo finally >> {l}\"\n",
        env.repo.display(),
        pf = pidfile.display(),
        bg = bg.display(),
        l = log.display()
    );
    let config = profile_file(&env, &text);
    let mut c = env.cmd(&["--config", config.to_str().unwrap(), "run", "s"]);
    c.env_remove("COFFER_REPO").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let started = std::time::Instant::now();
    let child = c.spawn().unwrap();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(started.elapsed().as_secs() < 20, "the program never started (the before hook held the run?)");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let program = std::fs::read_to_string(&pidfile).unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed().as_secs() < 30, "the run waited for its children: {:?}", started.elapsed());
    assert!(std::fs::read_to_string(&log).unwrap().contains("finally"));
    let t = std::time::Instant::now();
    while alive(&program) && t.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!alive(&program), "the --stdin-from-command program outlived the signal");
    // What the hook left in the background is the hook's business: it is still running.
    let bg = std::fs::read_to_string(&bg).unwrap();
    assert!(alive(&bg));
    let _ = std::process::Command::new("kill").arg(bg.trim()).status();
}

#[test]
fn a_failing_after_hook_runs_the_failure_hooks() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let log = env.path("hooks.log");
    let text = format!(
        "[profiles.a]\nrepo = \"{}\"\npaths = [\"{}\"]\n[profiles.a.hooks]\nafter = \"exit 7\"\n\
         on-failure = \"echo failure $COFFER_EXIT_CODE >> {l}\"\n",
        env.repo.display(),
        src.display(),
        l = log.display()
    );
    let config = profile_file(&env, &text);
    let r = coffer(&env, &config, &["run", "a", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "failure 1");
}

#[test]
fn a_json_backup_stopped_by_a_signal_ends_with_the_error_document() {
    let env = Env::new();
    let mut c = env.cmd(&["backup", "--json", "--stdin-from-command", "--", "sleep", "60"]);
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(doc["exit_code"], 130);
    assert_eq!(doc["error"], "interrupted");
}
