//! Profiles: named jobs in a TOML file (`--config FILE`, else
//! `$XDG_CONFIG_HOME/coffer/coffer.toml`, else `/etc/coffer/coffer.toml`).
//!
//! A profile's keys are the long names of the command-line options it sets (`repo` or
//! `repository`, `password-file`, `exclude`, `tag` or `tags`, `keep-daily`, ...), checked
//! against the same clap definitions the command line uses: a key no option has, a value of
//! the wrong kind, or a value the option refuses is an error naming the file and line. A few
//! keys are the profile's own: `paths`, the `retention`, `prune`, `check`, `drill`, `hooks`
//! and `env` tables, `password`, `metrics-file`, `notify`, `notify-on`, `mail-to`,
//! `mail-command`, `mail-on`, `schedule`, `overlap` and `description` (docs/operations.md).
//!
//! Each key becomes `--key=value` on the command line of the step it belongs to, so a
//! profile can do nothing the command line cannot, and `coffer run --dry-run` prints exactly
//! what will run. A file that holds secrets (`password`, or `env` variables named like
//! secrets) must not be readable by others; no profile file may be writable by others (its
//! hooks run as the user running Coffer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::CommandFactory;

/// One command-line argument a profile key gives.
#[derive(Clone, Debug)]
pub struct Arg {
    pub key: String,
    pub line: usize,
    /// `--long`, or `--long=value`.
    pub text: String,
}

/// When a notification goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    Always,
    Failure,
    Success,
    Never,
}

impl When {
    fn parse(s: &str) -> Option<When> {
        Some(match s {
            "always" => When::Always,
            "failure" => When::Failure,
            "success" => When::Success,
            "never" => When::Never,
            _ => return None,
        })
    }

    /// `--notify-on`.
    pub fn parse_cli(s: &str) -> Result<When> {
        When::parse(s).ok_or_else(|| anyhow!("--notify-on {s:?}: give always, failure, success or never"))
    }

    /// Whether a run that ended with `code` is notified.
    pub fn wants(self, code: i32) -> bool {
        match self {
            When::Always => true,
            When::Failure => code != 0,
            When::Success => code == 0,
            When::Never => false,
        }
    }
}

/// What the check step reads.
#[derive(Clone, Debug)]
pub enum Subset {
    /// `parts = N`: part k of N, k advancing each check, so N checks read everything.
    Rotate(u32),
    /// `read-data-subset = "5%"` or `"500M"` (fresh random packs each time), or `read-data`.
    Fixed(Vec<String>),
}

/// A step run only every so often.
#[derive(Clone, Debug)]
pub struct Periodic {
    pub every_s: u64,
    pub args: Vec<Arg>,
}

#[derive(Clone, Debug)]
pub struct CheckStep {
    pub every_s: u64,
    pub subset: Subset,
}

#[derive(Clone, Debug)]
pub enum Retention {
    /// Apply the repository's stored policy (`retention = "policy"`).
    Policy,
    /// These `--keep-*` (and filter) options.
    Rules(Vec<Arg>),
}

#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub on_failure: Vec<String>,
    pub finally: Vec<String>,
    /// A failing `before` hook stops the run (`before-failure = "stop"`, the default).
    pub stop_on_before_failure: bool,
}

/// One profile, validated.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub description: Option<String>,
    pub globals: Vec<Arg>,
    pub backup: Vec<Arg>,
    pub paths: Vec<String>,
    pub retention: Option<Retention>,
    pub prune: Option<Periodic>,
    pub check: Option<CheckStep>,
    pub drill: Option<Periodic>,
    pub hooks: Hooks,
    pub env: Vec<(String, String)>,
    pub password: Option<String>,
    pub metrics_file: Option<PathBuf>,
    pub notify: Vec<String>,
    pub notify_on: When,
    pub mail_to: Vec<String>,
    pub mail_command: String,
    pub mail_on: When,
    pub schedule: Option<String>,
    /// `overlap = "wait"`: a second run waits for the first instead of exiting with 11.
    pub wait: bool,
}

impl Profile {
    /// The value a global option has in this profile (`repo`, ...).
    pub fn global(&self, long: &str) -> Option<&str> {
        let prefix = format!("--{long}=");
        self.globals.iter().rev().find_map(|a| a.text.strip_prefix(&prefix))
    }

    /// The value a backup option has in this profile (`host`, ...), the last one given.
    pub fn backup_value(&self, long: &str) -> Vec<&str> {
        let prefix = format!("--{long}=");
        self.backup.iter().filter_map(|a| a.text.strip_prefix(&prefix)).collect()
    }
}

/// The profile file to read: `--config`, else the user's, else the system's.
pub fn config_path(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let user =
        var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config"))).map(|d| d.join("coffer/coffer.toml"));
    let system = PathBuf::from("/etc/coffer/coffer.toml");
    match user {
        Some(u) if u.exists() => Ok(u),
        _ if system.exists() => Ok(system),
        Some(u) => bail!("no profile file: give --config FILE, or write {} or {}", u.display(), system.display()),
        None => bail!("no profile file: give --config FILE, or write {}", system.display()),
    }
}

/// The line (1-based) of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Where a table is in the file: the line it starts on and the byte range of its value.
#[derive(Clone, Copy)]
struct Place {
    line: usize,
    start: usize,
    end: usize,
}

/// The byte offset of `key` followed by `=` in `hay`, the key standing alone (or after a
/// `.` of a dotted key, a `{` or `,` of an inline table).
fn find_key(hay: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = hay[from..].find(key) {
        let k = from + pos;
        let before = hay[..k].chars().next_back();
        let after = hay[k + key.len()..].trim_start_matches([' ', '\t']);
        if before.is_none_or(|c| c.is_whitespace() || "{,.".contains(c))
            && after.starts_with('=')
            && !after.starts_with("==")
        {
            return Some(k);
        }
        from = k + key.len();
    }
    None
}

/// The line of `key = ...` of a table: inside its value when it is inline, else on the
/// lines after its start up to the next `[header]` (standard and dotted tables); the table's
/// own line when not found.
fn key_line(text: &str, at: Place, key: &str) -> usize {
    let (start, end) = (at.start.min(text.len()), at.end.min(text.len()));
    if text[start..end].starts_with('{') {
        if let Some(k) = find_key(&text[start..end], key) {
            return line_of(text, start + k);
        }
        return at.line;
    }
    for (i, l) in text.lines().enumerate().skip(at.line.saturating_sub(1)) {
        if i + 1 > at.line && l.trim_start().starts_with('[') {
            break;
        }
        if find_key(l, key).is_some() {
            return i + 1;
        }
    }
    at.line
}

/// What an option of a command takes.
#[derive(Clone, Debug)]
struct Opt {
    long: String,
    takes_value: bool,
    repeatable: bool,
}

/// The long options of `cmd` by name (aliases included), without `hidden` ones.
fn options_of(cmd: &clap::Command, only_global: bool) -> BTreeMap<String, Opt> {
    let mut out = BTreeMap::new();
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if only_global != a.is_global_set() || matches!(long, "help" | "version") {
            continue;
        }
        let opt = Opt {
            long: long.to_string(),
            takes_value: a.get_action().takes_values(),
            repeatable: matches!(a.get_action(), clap::ArgAction::Append),
        };
        for name in std::iter::once(long).chain(a.get_all_aliases().unwrap_or_default()) {
            out.insert(name.to_string(), opt.clone());
        }
    }
    out
}

/// Global options a profile does not set: they belong to the command line of `run` itself.
const NOT_IN_PROFILES: &[&str] = &["config", "json"];

/// Plural spellings profiles may use for repeatable options.
fn canonical(key: &str) -> &str {
    match key {
        "tags" => "tag",
        "excludes" => "exclude",
        "iexcludes" => "iexclude",
        "exclude-files" => "exclude-file",
        "hosts" => "host",
        "keep-tags" => "keep-tag",
        k => k,
    }
}

/// A bad key or value, named by file and line.
fn at(file: &Path, line: usize, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}:{line}: {msg}", file.display())
}

/// The arguments one option key gives (`--key=value` for each value, `--key` for `true`).
fn option_args(file: &Path, line: usize, key: &str, opt: &Opt, v: &toml::Value) -> Result<Vec<Arg>> {
    let arg = |text: String| Arg { key: key.to_string(), line, text };
    let scalar = |v: &toml::Value| -> Result<String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            _ => Err(at(file, line, format!("{key}: give a string or a number"))),
        }
    };
    if !opt.takes_value {
        return match v {
            toml::Value::Boolean(true) => Ok(vec![arg(format!("--{}", opt.long))]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err(at(file, line, format!("{key}: is a switch: give true or false"))),
        };
    }
    match v {
        toml::Value::Array(items) if opt.repeatable => {
            items.iter().map(|i| Ok(arg(format!("--{}={}", opt.long, scalar(i)?)))).collect()
        }
        toml::Value::Array(_) => Err(at(file, line, format!("{key}: takes one value, not a list"))),
        v => Ok(vec![arg(format!("--{}={}", opt.long, scalar(v)?))]),
    }
}

fn strings(file: &Path, line: usize, key: &str, v: &toml::Value) -> Result<Vec<String>> {
    match v {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| at(file, line, format!("{key}: give strings"))))
            .collect(),
        _ => Err(at(file, line, format!("{key}: give a string or a list of strings"))),
    }
}

fn string(file: &Path, line: usize, key: &str, v: &toml::Value) -> Result<String> {
    v.as_str().map(str::to_string).ok_or_else(|| at(file, line, format!("{key}: give a string")))
}

fn span_secs(file: &Path, line: usize, key: &str, v: &toml::Value) -> Result<u64> {
    let s = string(file, line, key, v)?;
    crate::timespec::parse_span_secs(&s).map_err(|e| at(file, line, format!("{key}: {e}")))
}

/// Variable names taken for secrets: their values must not be readable by others.
fn is_secret_name(k: &str) -> bool {
    let k = k.to_ascii_uppercase();
    ["SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "CREDENTIAL"].iter().any(|s| k.contains(s))
        || k.ends_with("_KEY")
        || k.ends_with("KEY") && !k.ends_with("_ID")
}

/// The profile file, parsed and checked.
pub struct ProfileFile {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

type Spanned = toml::Spanned<toml::Value>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    profiles: BTreeMap<String, toml::Spanned<BTreeMap<String, Spanned>>>,
}

/// Reads and checks every profile of `path`.
pub fn load(path: &Path) -> Result<ProfileFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the profile file {}", path.display()))?;
    let doc: Doc = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut profiles = BTreeMap::new();
    for (name, table) in doc.profiles {
        let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            let line = line_of(&text, table.span().start);
            bail!(at(
                path,
                line,
                format!(
                    "profile name {name:?}: use letters, digits, `-` and `_`, starting with a letter or digit (it names files, cron entries and systemd units)"
                )
            ));
        }
        let line = line_of(&text, table.span().start);
        let p = profile(path, &text, &name, line, table.into_inner())?;
        profiles.insert(name, p);
    }
    check_permissions(path, &profiles)?;
    for p in profiles.values() {
        validate(p)?;
    }
    Ok(ProfileFile { path: path.to_path_buf(), profiles })
}

fn check_permissions(path: &Path, profiles: &BTreeMap<String, Profile>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let mode = meta.mode();
    if mode & 0o002 != 0 {
        bail!("{}: writable by any user, and its hooks run as you: chmod o-w {}", path.display(), path.display());
    }
    let secret = profiles.values().find_map(|p| {
        if p.password.is_some() {
            return Some(format!("profile {}: password", p.name));
        }
        p.env.iter().find(|(k, _)| is_secret_name(k)).map(|(k, _)| format!("profile {}: env {k}", p.name))
    });
    if let Some(what) = secret {
        if mode & 0o004 != 0 {
            bail!(
                "{} holds secrets ({what}) and is readable by every user: chmod 600 {} (or keep the secret in a password-file)",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// One `[profiles.NAME]` table.
fn profile(file: &Path, text: &str, name: &str, line: usize, table: BTreeMap<String, Spanned>) -> Result<Profile> {
    let root = crate::cli::Cli::command();
    let globals = options_of(&root, true);
    let backup_cmd = root.find_subcommand("backup").expect("backup exists");
    let backup_opts = options_of(backup_cmd, false);
    let mut p = Profile {
        name: name.to_string(),
        file: file.to_path_buf(),
        line,
        description: None,
        globals: Vec::new(),
        backup: Vec::new(),
        paths: Vec::new(),
        retention: None,
        prune: None,
        check: None,
        drill: None,
        hooks: Hooks { stop_on_before_failure: true, ..Default::default() },
        env: Vec::new(),
        password: None,
        metrics_file: None,
        notify: Vec::new(),
        notify_on: When::Always,
        mail_to: Vec::new(),
        mail_command: "sendmail -t".into(),
        mail_on: When::Failure,
        schedule: None,
        wait: false,
    };
    let mut command: Option<Vec<String>> = None;
    for (key, v) in table {
        let kline = line_of(text, v.span().start);
        let place = Place { line: kline, start: v.span().start, end: v.span().end };
        let v = v.into_inner();
        let when = |v: &toml::Value| -> Result<When> {
            let s = string(file, kline, &key, v)?;
            When::parse(&s)
                .ok_or_else(|| at(file, kline, format!("{key} = {s:?}: give always, failure, success or never")))
        };
        match key.as_str() {
            "description" => p.description = Some(string(file, kline, &key, &v)?),
            "paths" => p.paths = strings(file, kline, &key, &v)?,
            "password" => p.password = Some(string(file, kline, &key, &v)?),
            "metrics-file" => p.metrics_file = Some(PathBuf::from(string(file, kline, &key, &v)?)),
            "notify" => {
                p.notify = strings(file, kline, &key, &v)?;
                for url in &p.notify {
                    crate::storage::webhook::check_url(url).map_err(|e| at(file, kline, format!("notify: {e}")))?;
                }
            }
            "notify-on" => p.notify_on = when(&v)?,
            "mail-to" => p.mail_to = strings(file, kline, &key, &v)?,
            "mail-command" => p.mail_command = string(file, kline, &key, &v)?,
            "mail-on" => p.mail_on = when(&v)?,
            "schedule" => {
                let s = string(file, kline, &key, &v)?;
                if s.trim().is_empty() || s.chars().any(char::is_control) || s.trim_start().starts_with('-') {
                    bail!(at(file, kline, format!("schedule = {s:?}: give a systemd calendar expression such as \"daily\" or \"Mon..Fri *-*-* 02:30\"")));
                }
                p.schedule = Some(s);
            }
            "overlap" => {
                p.wait = match string(file, kline, &key, &v)?.as_str() {
                    "wait" => true,
                    "exit" => false,
                    s => bail!(at(file, kline, format!("overlap = {s:?}: give \"exit\" (exit code 11) or \"wait\""))),
                }
            }
            "stdin-from-command" if !matches!(v, toml::Value::Boolean(_)) => {
                // The command itself, as a list (or one word): the backup's positional arguments.
                p.backup.push(Arg { key: key.clone(), line: kline, text: "--stdin-from-command".into() });
                command = Some(strings(file, kline, &key, &v)?);
            }
            "env" => p.env = env_table(file, text, place, &v)?,
            "hooks" => p.hooks = hooks_table(file, text, place, &v)?,
            "retention" => p.retention = Some(retention_table(file, text, place, &v, &root)?),
            "prune" => p.prune = Some(periodic(file, text, place, "prune", &v, &root)?),
            "drill" => p.drill = Some(periodic(file, text, place, "drill", &v, &root)?),
            "check" => p.check = Some(check_table(file, text, place, &v)?),
            "stdin" | "files-from" | "files-from-verbatim" | "files-from-raw" if is_stdin(&v) => {
                bail!(at(file, kline, format!("{key}: a scheduled run has no standard input (use stdin-from-command)")))
            }
            k => {
                let c = canonical(k);
                if let Some(opt) = globals.get(c).filter(|o| !NOT_IN_PROFILES.contains(&o.long.as_str())) {
                    p.globals.extend(option_args(file, kline, k, opt, &v)?);
                } else if let Some(opt) = backup_opts.get(c) {
                    p.backup.extend(option_args(file, kline, k, opt, &v)?);
                } else {
                    bail!(at(file, kline, format!("profile {name}: unknown key {k:?} (keys are the long options of backup and the global options; see docs/operations.md)")));
                }
            }
        }
    }
    if let Some(cmd) = command {
        if !p.paths.is_empty() {
            bail!(at(file, line, format!("profile {name}: paths and stdin-from-command = [...]: give one (the command's output is the backup)")));
        }
        if cmd.is_empty() || cmd[0].is_empty() {
            bail!(at(file, line, format!("profile {name}: stdin-from-command: give the command and its arguments")));
        }
        p.paths = cmd;
    }
    if let Some(bad) = p.paths.iter().find(|x| x.is_empty()) {
        bail!(at(file, line, format!("profile {name}: paths: {bad:?} is not a path")));
    }
    Ok(p)
}

fn table<'v>(file: &Path, line: usize, key: &str, v: &'v toml::Value) -> Result<&'v toml::Table> {
    v.as_table().ok_or_else(|| at(file, line, format!("{key}: give a table ([profiles.NAME.{key}])")))
}

/// `stdin = true`, or a list read from `-`.
fn is_stdin(v: &toml::Value) -> bool {
    match v {
        toml::Value::Boolean(b) => *b,
        toml::Value::String(s) => s == "-",
        toml::Value::Array(a) => a.iter().any(|x| x.as_str() == Some("-")),
        _ => false,
    }
}

fn env_table(file: &Path, text: &str, at_: Place, v: &toml::Value) -> Result<Vec<(String, String)>> {
    let (line, mut out) = (at_.line, Vec::new());
    for (k, val) in table(file, line, "env", v)? {
        let l = key_line(text, at_, k);
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            bail!(at(file, l, format!("env: {k:?} is not a variable name")));
        }
        let s = match val {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => bail!(at(file, l, format!("env {k}: give a string"))),
        };
        out.push((k.clone(), s));
    }
    Ok(out)
}

fn hooks_table(file: &Path, text: &str, at_: Place, v: &toml::Value) -> Result<Hooks> {
    let mut h = Hooks { stop_on_before_failure: true, ..Default::default() };
    for (k, val) in table(file, at_.line, "hooks", v)? {
        let l = key_line(text, at_, k);
        match k.as_str() {
            "before" => h.before = strings(file, l, k, val)?,
            "after" => h.after = strings(file, l, k, val)?,
            "on-failure" => h.on_failure = strings(file, l, k, val)?,
            "finally" => h.finally = strings(file, l, k, val)?,
            "before-failure" => {
                h.stop_on_before_failure = match string(file, l, k, val)?.as_str() {
                    "stop" => true,
                    "continue" => false,
                    s => bail!(at(file, l, format!("before-failure = {s:?}: give \"stop\" or \"continue\""))),
                }
            }
            _ => bail!(at(
                file,
                l,
                format!("hooks: unknown key {k:?} (before, after, on-failure, finally, before-failure)")
            )),
        }
    }
    Ok(h)
}

/// Options of subcommand `cmd` from a table, leaving out `skip` keys.
fn sub_options(
    file: &Path,
    text: &str,
    place: Place,
    section: &str,
    t: &toml::Table,
    cmd: &clap::Command,
    skip: &[&str],
) -> Result<Vec<Arg>> {
    let opts = options_of(cmd, false);
    let mut out = Vec::new();
    for (k, val) in t {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let l = key_line(text, place, k);
        if section == "retention"
            && ["host", "hosts", "tag", "tags", "path", "paths", "exact-paths", "exact-tags"].contains(&k.as_str())
        {
            bail!(at(file, l, format!("retention: {k}: forget keeps to the profile's own host, tags and paths (set them at the profile's top level)")));
        }
        let opt = opts
            .get(canonical(k))
            .filter(|o| !matches!(o.long.as_str(), "dry-run" | "prune" | "unsafe-allow-remove-all"));
        let Some(opt) = opt else {
            bail!(at(
                file,
                l,
                format!("{section}: unknown key {k:?} (the long options of `coffer {}`)", cmd.get_name())
            ));
        };
        out.extend(option_args(file, l, k, opt, val)?);
    }
    Ok(out)
}

fn retention_table(file: &Path, text: &str, at_: Place, v: &toml::Value, root: &clap::Command) -> Result<Retention> {
    let line = at_.line;
    if let toml::Value::String(s) = v {
        return match s.as_str() {
            "policy" => Ok(Retention::Policy),
            _ => Err(at(
                file,
                line,
                format!("retention = {s:?}: give \"policy\" (the stored policy) or a table of --keep-* options"),
            )),
        };
    }
    let t = table(file, line, "retention", v)?;
    let forget = root.find_subcommand("forget").expect("forget exists");
    let args = sub_options(file, text, at_, "retention", t, forget, &[])?;
    if args.is_empty() {
        bail!(at(file, line, "retention: give --keep-* rules, or retention = \"policy\" for the stored policy"));
    }
    Ok(Retention::Rules(args))
}

fn periodic(
    file: &Path,
    text: &str,
    place: Place,
    name: &str,
    v: &toml::Value,
    root: &clap::Command,
) -> Result<Periodic> {
    let t = table(file, place.line, name, v)?;
    let every_s = match t.get("every") {
        Some(e) => span_secs(file, key_line(text, place, "every"), "every", e)?,
        None => 0,
    };
    let cmd = root.find_subcommand(name).expect("subcommand exists");
    Ok(Periodic { every_s, args: sub_options(file, text, place, name, t, cmd, &["every"])? })
}

fn check_table(file: &Path, text: &str, at_: Place, v: &toml::Value) -> Result<CheckStep> {
    let t = table(file, at_.line, "check", v)?;
    let chosen: Vec<&str> =
        ["parts", "read-data-subset", "read-data"].into_iter().filter(|k| t.contains_key(*k)).collect();
    if chosen.len() > 1 {
        bail!(at(
            file,
            key_line(text, at_, chosen[1]),
            format!("check: give one of {}, not both", chosen.join(" and "))
        ));
    }
    let mut c = CheckStep { every_s: 0, subset: Subset::Fixed(Vec::new()) };
    for (k, val) in t {
        let l = key_line(text, at_, k);
        match k.as_str() {
            "every" => c.every_s = span_secs(file, l, k, val)?,
            "parts" => match val.as_integer() {
                Some(n) if (1..=10_000).contains(&n) => c.subset = Subset::Rotate(n as u32),
                _ => bail!(at(file, l, "parts: give a number from 1 to 10000 (each check reads the next part)")),
            },
            "read-data-subset" => {
                let v = string(file, l, k, val)?;
                crate::repo::check::ReadData::parse_subset(&v, crate::retention::prune::parse_size)
                    .map_err(|e| at(file, l, format!("read-data-subset: {e}")))?;
                c.subset = Subset::Fixed(vec![format!("--read-data-subset={v}")]);
            }
            "read-data" => {
                if val.as_bool().ok_or_else(|| at(file, l, "read-data: give true or false"))? {
                    c.subset = Subset::Fixed(vec!["--read-data".into()]);
                }
            }
            _ => bail!(at(file, l, format!("check: unknown key {k:?} (every, parts, read-data-subset, read-data)"))),
        }
    }
    Ok(c)
}

/// The command line of one step: the profile's globals, then `extra_globals` (the command
/// line's own, which win), the subcommand, its arguments, and positional ones after `--`.
pub fn argv(p: &Profile, extra_globals: &[String], sub: &[&str], args: &[Arg], tail: &[String]) -> Vec<String> {
    // A password source on the command line replaces the profile's, whichever kind each is.
    let group =
        |f: &str| if f == "--password-file" || f == "--password-command" { "--password" } else { f }.to_string();
    let overridden = |a: &Arg| {
        let flag = group(a.text.split('=').next().unwrap_or_default());
        extra_globals.iter().any(|g| group(g.split('=').next().unwrap_or_default()) == flag)
    };
    // The run rotates its log once, at its start; its steps append to it.
    let rotation = |t: &String| t.starts_with("--log-max-size");
    let mut v: Vec<String> =
        p.globals.iter().filter(|a| !overridden(a)).map(|a| a.text.clone()).filter(|t| !rotation(t)).collect();
    v.extend(extra_globals.iter().filter(|t| !rotation(t)).cloned());
    v.extend(sub.iter().map(|s| s.to_string()));
    v.extend(args.iter().map(|a| a.text.clone()));
    if !tail.is_empty() {
        v.push("--".into());
        v.extend(tail.iter().cloned());
    }
    v
}

/// Every step's command line parses: a bad value names its key's line.
fn validate(p: &Profile) -> Result<()> {
    let has_input =
        !p.paths.is_empty() || p.backup.iter().any(|a| a.text.starts_with("--files-from") || a.text == "--stdin");
    if !has_input {
        bail!(at(
            &p.file,
            p.line,
            format!("profile {}: nothing to back up (give paths, files-from or stdin-from-command)", p.name)
        ));
    }
    let mut steps: Vec<Vec<Arg>> = vec![p.globals.iter().cloned().chain(p.backup.iter().cloned()).collect()];
    let mut subs = vec!["backup"];
    if let Some(Retention::Rules(r)) = &p.retention {
        steps.push(r.clone());
        subs.push("forget");
    }
    for (name, step) in [("prune", &p.prune), ("drill", &p.drill)] {
        if let Some(s) = step {
            steps.push(s.args.clone());
            subs.push(name);
        }
    }
    for (sub, args) in subs.into_iter().zip(steps) {
        let mut argv = vec!["coffer".to_string()];
        if sub != "backup" {
            argv.extend(p.globals.iter().map(|a| a.text.clone()));
        }
        argv.push(sub.into());
        argv.extend(args.iter().map(|a| a.text.clone()));
        if let Err(e) = crate::cli::Cli::command().try_get_matches_from(&argv) {
            let bad = match e.get(clap::error::ContextKind::InvalidArg) {
                Some(clap::error::ContextValue::String(s)) => {
                    s.split([' ', '=']).next().unwrap_or_default().to_string()
                }
                _ => String::new(),
            };
            let culprit = args
                .iter()
                .chain(&p.globals)
                .find(|a| !bad.is_empty() && a.text.split('=').next() == Some(bad.as_str()));
            let msg = e.render().to_string();
            let msg = msg.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
            return Err(match culprit {
                Some(a) => at(&p.file, a.line, format!("{}: {msg}", a.key)),
                None => at(&p.file, p.line, format!("profile {}: {msg}", p.name)),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<ProfileFile> {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("coffer.toml");
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        load(&f)
    }

    const EXAMPLE: &str = r#"
[profiles.nightly]
repository = "/srv/backup"
password-file = "/etc/coffer/password"
paths = ["/etc", "/home"]
exclude = ["*.tmp"]
tags = ["nightly"]
metrics-file = "/var/lib/node_exporter/coffer.prom"
notify = "https://hooks.example/coffer"
[profiles.nightly.retention]
keep-daily = 7
keep-weekly = 4
[profiles.nightly.hooks]
before = "pg_dump -f /var/backups/db.sql app"
after = "logger coffer done $COFFER_SNAPSHOT_ID"
"#;

    #[test]
    fn the_issue_example_reads_as_written() {
        let f = load_str(EXAMPLE).unwrap();
        let p = &f.profiles["nightly"];
        assert_eq!(p.global("repo"), Some("/srv/backup"));
        let b: Vec<&str> = p.backup.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(b, ["--exclude=*.tmp", "--tag=nightly"]);
        assert_eq!(p.paths, ["/etc", "/home"]);
        let Some(Retention::Rules(r)) = &p.retention else { panic!() };
        assert_eq!(r.iter().map(|a| a.text.as_str()).collect::<Vec<_>>(), ["--keep-daily=7", "--keep-weekly=4"]);
        assert_eq!(p.hooks.before.len(), 1);
        assert_eq!(p.notify, ["https://hooks.example/coffer"]);
        let argv = argv(p, &["--repo=/other".into()], &["backup"], &p.backup, &p.paths);
        assert_eq!(argv[0], "--password-file=/etc/coffer/password", "the command line's --repo replaces the profile's");
        assert_eq!(argv[1], "--repo=/other");
    }

    #[test]
    fn bad_keys_and_values_name_the_line() {
        let bad = |text: &str, want: &str| {
            let e = format!("{:#}", load_str(text).err().unwrap_or_else(|| panic!("accepted: {text}")));
            assert!(e.contains(want), "{e} lacks {want:?}");
        };
        bad("[profiles.a]\npaths = [\"/x\"]\nfrobnicate = 1\n", ":3: profile a: unknown key \"frobnicate\"");
        bad(
            "[profiles.a]\npaths = [\"/x\"]\n[profiles.a.retention]\nkeep-daily = 7\nkeep-dayly = 3\n",
            ":5: retention: unknown key \"keep-dayly\"",
        );
        bad("[profiles.a]\npaths = [\"/x\"]\n[profiles.a.retention]\n\nkeep-daily = \"many\"\n", ":5: keep-daily:");
        bad("[profiles.a]\npaths = [\"/x\"]\none-file-system = \"yes\"\n", ":3: one-file-system: is a switch");
        bad("[profiles.a]\npaths = [\"/x\"]\nhost = [\"a\", \"b\"]\n", ":3: host: takes one value");
        bad("[profiles.a]\npaths = [\"/x\"]\nconnections = \"lots\"\n", ":3: connections:");
        bad("[profiles.a]\nrepo = \"/r\"\n", ":1: profile a: nothing to back up");
        bad("[profiles.a]\npaths = 1\n", ":2: paths:");
        bad("[profiles.a]\npaths = [\"/x\"]\n[profiles.a.prune]\nevery = \"often\"\n", ":4: every:");
        bad("[profiles.a]\npaths = [\"/x\"]\n[profiles.a.check]\nparts = 0\n", ":4: parts");
        bad("[profile.a]\n", "unknown field");
        bad("[profiles.a]\npaths = [\"/x\"\n", "line 2");
        bad("[profiles.\"a b\"]\npaths = [\"/x\"]\n", ":1: profile name");
        bad("[profiles.\"-x\"]\npaths = [\"/x\"]\n", ":1: profile name");
        bad("[profiles.\"db.main\"]\npaths = [\"/x\"]\n", ":1: profile name");
        // Inline and dotted tables name their own line, not a later profile's.
        let two = "[profiles.a]\npaths = [\"/x\"]\nhooks = { before = 1 }\nretention = { keep-daily = \"x\" }\n\
                   [profiles.b]\npaths = [\"/x\"]\n[profiles.b.hooks]\nbefore = \"true\"\n[profiles.b.retention]\nkeep-daily = 3\n";
        bad(two, ":3: before");
        bad(&two.replace("hooks = { before = 1 }\n", "\n"), ":4: keep-daily");
        bad(
            "[profiles.a]\npaths = [\"/x\"]\nretention.keep-daily = 3\nretention.keep-dayly = 3\n",
            ":4: retention: unknown key",
        );
        // Values the commands would refuse are refused when the file is read.
        bad("[profiles.a]\npaths = [\"/x\"]\ncompression = 99\n", ":3: compression");
        bad("[profiles.a]\npaths = [\"/x\"]\nexclude-larger-than = \"lots\"\n", ":3: exclude-larger-than");
        bad("[profiles.a]\npaths = [\"/x\"]\nexclude-if-present = \"a/b\"\n", ":3: exclude-if-present");
        bad(
            "[profiles.a]\npaths = [\"/x\"]\n[profiles.a.check]\nread-data-subset = \"bogus\"\n",
            ":4: read-data-subset",
        );
        bad(
            "[profiles.a]\npaths = [\"/x\"]\n[profiles.a.check]\nparts = 4\nread-data = true\n",
            "give one of parts and read-data",
        );
        bad("[profiles.a]\npaths = [\"/x\"]\n[profiles.a.prune]\nmax-unused = \"bogus\"\n", ":4: max-unused");
        bad("[profiles.a]\npaths = [\"/x\"]\nnotify = \"not a url\"\n", "notify: not a url: not a valid");
        bad("[profiles.a]\npaths = [\"\"]\n", "paths");
        bad("[profiles.a]\nstdin = true\n", ":2: stdin: a scheduled run has no standard input");
        bad("[profiles.a]\nfiles-from = \"-\"\n", ":2: files-from");
        bad("[profiles.a]\npaths = [\"/x\"]\nstdin-from-command = [\"pg_dump\"]\n", "paths and stdin-from-command");
        bad(
            "[profiles.a]\npaths = [\"/x\"]\n[profiles.a.retention]\nkeep-last = 1\nhost = \"other\"\n",
            ":5: retention: host",
        );
    }

    #[test]
    fn secrets_need_a_private_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("coffer.toml");
        std::fs::write(&f, "[profiles.a]\npaths = [\"/x\"]\n[profiles.a.env]\nAWS_SECRET_ACCESS_KEY = \"s\"\n")
            .unwrap();
        let mode = |m| std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        mode(0o644);
        let e = format!("{:#}", load(&f).err().unwrap());
        assert!(e.contains("readable by every user") && e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        mode(0o640);
        assert!(load(&f).is_ok());
        std::fs::write(&f, "[profiles.a]\npaths = [\"/x\"]\n").unwrap();
        mode(0o646);
        assert!(format!("{:#}", load(&f).err().unwrap()).contains("writable by any user"));
        mode(0o644);
        assert!(load(&f).is_ok(), "no secrets: readable is fine");
        for name in ["B2_ACCOUNT_KEY", "API_KEY", "GITHUB_TOKEN"] {
            assert!(is_secret_name(name), "{name}");
        }
        assert!(!is_secret_name("AWS_ACCESS_KEY_ID") && !is_secret_name("AWS_REGION"));
    }
}
