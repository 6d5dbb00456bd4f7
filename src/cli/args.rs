//! Command-line definitions (clap derive). Validated into library options in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "coffer", version, about = "Encrypted, deduplicated backup and disaster recovery")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// An environment variable's value; empty counts as unset.
pub fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Fills the password source from the environment when the command line gives none:
/// `file` from `file_var`, else `command` from `command_var`.
pub fn password_from_env(file: &mut Option<PathBuf>, command: &mut Option<String>, file_var: &str, command_var: &str) {
    if file.is_some() || command.is_some() {
        return;
    }
    *file = env_value(file_var).map(PathBuf::from);
    if file.is_none() {
        *command = env_value(command_var);
    }
}

impl Global {
    /// The options the environment can give, read after parsing, not by clap: an option clap
    /// takes from the environment counts as given, and clap then shows it in every usage
    /// line (`Usage: coffer restore --target <TARGET> --password-file <FILE>`), as if
    /// required. A password source on the command line replaces the environment's, of
    /// either kind.
    pub fn apply_env(&mut self) {
        self.repo = self.repo.take().or_else(|| env_value("COFFER_REPO"));
        self.config = self.config.take().or_else(|| env_value("COFFER_CONFIG").map(PathBuf::from));
        self.cache_dir = self.cache_dir.take().or_else(|| env_value("COFFER_CACHE_DIR").map(PathBuf::from));
        self.log_file = self.log_file.take().or_else(|| env_value("COFFER_LOG_FILE").map(PathBuf::from));
        password_from_env(
            &mut self.password_file,
            &mut self.password_command,
            "COFFER_PASSWORD_FILE",
            "COFFER_PASSWORD_COMMAND",
        );
    }
}

/// Shown after each command's own options, under their own heading (restic's "Global
/// Flags").
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Repository location: a local path (or a NAS mount), or s3://bucket/prefix [env: COFFER_REPO]
    #[arg(long, short = 'r', visible_alias = "repository", global = true)]
    pub repo: Option<String>,
    /// The profile file (default: $XDG_CONFIG_HOME/coffer/coffer.toml, else /etc/coffer/coffer.toml) [env: COFFER_CONFIG]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// After the run, write Prometheus metrics to FILE (atomically; for node_exporter's textfile collector)
    #[arg(long, value_name = "FILE", global = true)]
    pub metrics_file: Option<PathBuf>,
    /// After the run, POST a JSON summary to this webhook (repeatable; never fails the run)
    #[arg(long, value_name = "URL", global = true)]
    pub notify: Vec<String>,
    /// When to notify: always (default), failure, success or never
    #[arg(long, value_name = "WHEN", global = true, value_parser = ["always", "failure", "success", "never"])]
    pub notify_on: Option<String>,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS itself)
    #[arg(long, global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION)
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints (default: AWS_ALLOW_HTTP); for test servers on loopback.
    /// Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, ...), never from arguments, which any user can read with `ps`
    #[arg(long, global = true)]
    pub s3_allow_http: bool,
    /// Virtual-hosted-style S3 requests; with --s3-endpoint the endpoint must then already name
    /// the bucket (https://BUCKET.s3.example.com). Default: path-style (endpoint/bucket)
    #[arg(long, global = true)]
    pub s3_virtual_hosted: bool,
    /// Never rely on hard links in a local or NAS repository (SMB/CIFS mounts); detected
    /// automatically where the file system refuses them
    #[arg(long, global = true)]
    pub no_hardlinks: bool,
    /// Where remote repositories' metadata is cached (default: $XDG_CACHE_HOME/coffer,
    /// else ~/.cache/coffer) [env: COFFER_CACHE_DIR]
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Do not use or fill the local cache
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Write even though the repository went back in time (its snapshots were replaced by an
    /// older copy): the operator confirms it is expected (backup, forget, tag, prune, repair)
    #[arg(long, global = true)]
    pub accept_rollback: bool,
    /// Requests to a remote repository in flight at once (uploads, restore and check reads)
    #[arg(long, global = true, default_value_t = 8)]
    pub connections: usize,
    /// Limit uploads to this many KiB/s (average)
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s (average)
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_download: Option<u64>,
    /// How often a failed S3 request is retried (with exponential backoff) before the
    /// command fails; 0 = never
    #[arg(long, global = true, default_value_t = 10)]
    pub retries: usize,
    /// Read the password from this file (its content, less one trailing newline) [env: COFFER_PASSWORD_FILE]
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password [env: COFFER_PASSWORD_COMMAND]
    #[arg(long, global = true)]
    pub password_command: Option<String>,
    /// Machine-readable JSON on stdout (NDJSON for long listings)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but warnings and errors (no progress, no summary)
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// List each file backed up with its status (new, modified); -vv unchanged ones too
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also write a log to FILE (appended; rotated at --log-max-size, or by logrotate) [env: COFFER_LOG_FILE]
    #[arg(long, value_name = "FILE", global = true)]
    pub log_file: Option<PathBuf>,
    /// The least severe events logged: error, warn, info (default), debug or trace
    #[arg(long, value_name = "LEVEL", default_value = "info", global = true, value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    /// Log lines as text (default) or JSON objects, one a line
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true, value_parser = ["text", "json"])]
    pub log_format: String,
    /// Rotate the log file when it is larger than SIZE at start (FILE.1 ... FILE.5 kept)
    #[arg(long, value_name = "SIZE", global = true, value_parser = size_text)]
    pub log_max_size: Option<String>,
    /// Worker threads for reading, compressing and restoring (default: number of cores)
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files and directories
    Backup(BackupArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot
    Ls(LsArgs),
    /// Restore a snapshot (or part of it)
    Restore(RestoreArgs),
    /// Check the repository's integrity
    Check(CheckArgs),
    /// Copy snapshots into another repository (only data it lacks is transferred)
    Copy(CopyArgs),
    /// Find files and directories by name or path in every snapshot (from the catalog)
    Find(FindArgs),
    /// The distinct versions of a file or directory through time (from the catalog)
    Versions(VersionsArgs),
    /// What changed between two snapshots: added, removed, modified, metadata-only
    Diff(DiffArgs),
    /// Sizes, deduplication and compression ratios, per snapshot and for the repository
    Stats(StatsArgs),
    /// Manage the local catalog
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Manage passwords (key files)
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Remove snapshots by a retention policy (restic's --keep-* rules) or by id
    Forget(Box<ForgetArgs>),
    /// Change the tags of snapshots (each is replaced by a new snapshot object)
    Tag(TagArgs),
    /// Delete data no snapshot needs, repack partly used packs, rewrite the index
    Prune(PruneArgs),
    /// Remove stale locks (--remove-all: every lock; only when no backup or prune runs)
    Unlock(UnlockArgs),
    /// Rehearse a recovery: restore a sample for real, verify it, measure RTO and RPO, keep the evidence
    Drill(DrillArgs),
    /// Repair a damaged repository without losing anything that still reads
    Repair {
        #[command(subcommand)]
        command: RepairCommand,
    },
    /// The retention policy and recovery objectives stored in the repository
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Legal holds: snapshots nothing removes until the hold is released
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// The audit trail of destructive and administrative operations (`--verify` checks it)
    Audit(AuditArgs),
    /// Write new snapshots without the paths matching --exclude (erasure requests)
    Rewrite(RewriteArgs),
    /// Run a profile's whole job: hooks, backup, forget, prune, check and drill as due
    Run(RunArgs),
    /// List the profiles of the profile file (checking every key)
    Profiles,
    /// The repository's metrics (size, snapshots, newest snapshot per host), Prometheus text or --json
    Metrics,
    /// Install, list or remove a profile's schedule (a systemd timer, or cron without systemd)
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Print the version, the repository format it writes and what this build can do
    Version,
    /// Write a file of a snapshot to stdout, or a directory as a tar (or zip) archive
    Dump(DumpArgs),
    /// Browse the snapshots as a read-only file system (FUSE) until Ctrl-C
    Mount(MountArgs),
    /// Write man pages or print shell completions (from the same definitions as the command line)
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Write and enable a service and timer (or a cron entry) that runs `coffer run PROFILE`
    Install(ScheduleInstallArgs),
    /// The schedules installed
    List(ScheduleListArgs),
    /// Disable and remove a profile's schedule
    Remove(ScheduleRemoveArgs),
}

#[derive(Args, Debug)]
pub struct ScheduleInstallArgs {
    /// The profile to run
    pub profile: String,
    /// When, in systemd's OnCalendar syntax (default: the profile's `schedule`, else daily)
    #[arg(long, value_name = "CALENDAR")]
    pub on: Option<String>,
    /// Spread the start over this long (RandomizedDelaySec), so many hosts do not start at once
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub randomized_delay: String,
    /// A cron entry even where systemd runs
    #[arg(long)]
    pub cron: bool,
    /// Write the files into DIR and leave systemctl and crontab alone
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Write the units but do not enable or start the timer
    #[arg(long)]
    pub no_enable: bool,
}

#[derive(Args, Debug)]
pub struct ScheduleListArgs {
    /// Look in DIR instead of the default places
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ScheduleRemoveArgs {
    /// The profile whose schedule goes
    pub profile: String,
    /// The files are in DIR (as installed with --dir)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Write man pages (coffer.1, coffer-backup.1, ...) into DIR
    Man { dir: PathBuf },
    /// Print a completion script for bash, zsh, fish, elvish or powershell
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The profile to run
    pub profile: String,
    /// Print each step's command line and what is due; run nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run this command first instead of the profile's `before` hooks (repeatable)
    #[arg(long, value_name = "COMMAND")]
    pub hook_before: Vec<String>,
    /// Run this command after a run without failures instead of the profile's `after` hooks
    #[arg(long, value_name = "COMMAND")]
    pub hook_after: Vec<String>,
    /// Run this command after a failed run instead of the profile's `on-failure` hooks
    #[arg(long, value_name = "COMMAND")]
    pub hook_on_failure: Vec<String>,
    /// Run this command at the very end instead of the profile's `finally` hooks
    #[arg(long, value_name = "COMMAND")]
    pub hook_finally: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Store the rules of a scope (a host, a tag, both, or the repository default)
    Set(Box<PolicySetArgs>),
    /// Show the stored policy
    Show,
}

#[derive(Args, Debug)]
pub struct PolicySetArgs {
    /// The rules are for this host's snapshots
    #[arg(long)]
    pub host: Option<String>,
    /// The rules are for snapshots with this tag
    #[arg(long)]
    pub tag: Option<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// No snapshot is removed before it has been stored this long (`1y2m3d4h`; 0 to clear)
    #[arg(long, value_name = "DURATION", value_parser = duration_or_zero)]
    pub min_retention: Option<crate::retention::policy::Duration>,
    /// The recovery time objective drills check (e.g. 4h; 0 to clear)
    #[arg(long, value_name = "DURATION", value_parser = span_text)]
    pub rto: Option<String>,
    /// The recovery point objective drills check (e.g. 1d; 0 to clear)
    #[arg(long, value_name = "DURATION", value_parser = span_text)]
    pub rpo: Option<String>,
    /// Remove this scope's rules altogether
    #[arg(long, conflicts_with_all = ["min_retention", "rto", "rpo"])]
    pub clear: bool,
}

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Put snapshots under a legal hold
    Add(HoldAddArgs),
    /// Release a hold
    Release(HoldReleaseArgs),
    /// List the holds in force (--all: released ones too)
    List(HoldListArgs),
}

#[derive(Args, Debug)]
pub struct HoldAddArgs {
    /// Snapshots to hold (`latest`, ids or prefixes)
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// Why (a case number, a ticket): kept with the hold and in the audit trail
    #[arg(long, required = true, value_parser = reason)]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct HoldReleaseArgs {
    /// The hold to release (its id or a prefix)
    pub hold: String,
    /// Why it is released
    #[arg(long, required = true, value_parser = reason)]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct HoldListArgs {
    /// Released holds too
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only entries written at or after this time (`2026-11-01`, `3d` ago, ...)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Check the whole hash chain: exit 1 naming the first entry removed, reordered, altered or forked
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct RewriteArgs {
    /// Snapshots to rewrite (`latest`, ids or prefixes; default: all that match the filters)
    pub snapshots: Vec<String>,
    /// Leave out paths matching PATTERN (backup's --exclude syntax; repeatable)
    #[arg(long, short = 'e', value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Read patterns from FILE (one per line; repeatable)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<std::path::PathBuf>,
    /// Remove the original snapshots once rewritten (where no hold, minimum retention or lock keeps them)
    #[arg(long)]
    pub forget: bool,
    /// Why (a request number): kept in the erasure ledger and the audit trail
    #[arg(long, value_parser = reason)]
    pub reason: Option<String>,
    /// Show what would be rewritten; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    /// The snapshot to drill (`latest`, an id or a prefix); default: the latest of each host
    pub snapshot: Option<String>,
    /// Only the latest snapshot of this host (repeatable)
    #[arg(long)]
    pub host: Vec<String>,
    /// Share of the files to restore, e.g. 5% (default); successive drills take the next part
    #[arg(long, value_name = "P%", conflicts_with = "full", value_parser = percent)]
    pub sample: Option<String>,
    /// Restore every file of the snapshot
    #[arg(long)]
    pub full: bool,
    /// Restore into DIR and keep it (default: a scratch directory, removed afterwards)
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Also compare restored files that are unchanged since the snapshot with the live ones
    #[arg(long)]
    pub compare_source: bool,
    /// Recovery time objective, e.g. 4h: the projected full restore must fit in it
    #[arg(long, value_name = "DURATION", value_parser = span_text)]
    pub rto: Option<String>,
    /// Recovery point objective, e.g. 1d: the newest snapshot's age and the largest gap must fit in it
    #[arg(long, value_name = "DURATION", value_parser = span_text)]
    pub rpo: Option<String>,
    /// Write a report a person reads: Markdown (.md) or a self-contained HTML page (.html)
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// List past drills, newest first (from the repository: any host sees them)
    History,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' headers
    Index(RepairIndexArgs),
    /// Write new snapshots in which only unreadable files and directories are replaced
    Snapshots(RepairSnapshotsArgs),
    /// Copy every readable blob out of damaged packs, then retire them
    Packs(RepairPacksArgs),
}

#[derive(Args, Debug)]
pub struct RepairIndexArgs {
    /// Print the plan, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Read every pack's header, even for packs a readable index file describes
    #[arg(long)]
    pub read_all_packs: bool,
}

#[derive(Args, Debug)]
pub struct RepairSnapshotsArgs {
    /// Snapshots to repair (`latest`, ids or prefixes); default: every snapshot
    pub snapshots: Vec<String>,
    /// Remove each original once its repaired copy is written
    #[arg(long)]
    pub forget: bool,
    /// Print the plan, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct RepairPacksArgs {
    /// Packs to repair (full ids); default: every pack a damage record names
    pub packs: Vec<String>,
    /// Print the plan, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// A zstd level the repository accepts.
fn compression_level(s: &str) -> Result<i32, String> {
    let n: i32 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    crate::repo::check_compression_level(n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// `--read-data-subset`, checked when the command line is read (and a profile loaded).
fn read_data_subset(s: &str) -> Result<String, String> {
    crate::repo::check::ReadData::parse_subset(s, crate::retention::prune::parse_size)?;
    Ok(s.to_string())
}

fn max_unused(s: &str) -> Result<String, String> {
    crate::retention::prune::parse_max_unused(s)?;
    Ok(s.to_string())
}

fn size_text(s: &str) -> Result<String, String> {
    crate::retention::prune::parse_size(s)?;
    Ok(s.to_string())
}

/// A host name or tag to record: no control characters (they would forge lines in every
/// listing and log).
fn label(s: &str) -> Result<String, String> {
    if s.chars().any(char::is_control) {
        return Err("control characters (tabs, newlines, escapes) are not allowed".into());
    }
    Ok(s.to_string())
}

/// A length of time (`4h`, `1d12h`), checked when parsed and kept as given.
fn span_text(s: &str) -> Result<String, String> {
    crate::timespec::parse_span_secs(s)?;
    Ok(s.to_string())
}

/// A percentage above 0 and at most 100 (`5%`, `12.5`), kept as given.
fn percent(s: &str) -> Result<String, String> {
    let p: f64 = s.trim().trim_end_matches('%').trim().parse().map_err(|_| "give a percentage, e.g. 5%".to_string())?;
    if !(p > 0.0 && p <= 100.0) {
        return Err("give a percentage above 0 and at most 100".into());
    }
    Ok(s.to_string())
}

/// `--group-by` fields, checked when parsed.
fn group_by(s: &str) -> Result<String, String> {
    crate::retention::policy::GroupBy::parse(s)?;
    Ok(s.to_string())
}

/// A `--stdin-filename`: a relative path without `.` or `..`.
fn stdin_filename(s: &str) -> Result<String, String> {
    crate::backup::check_stdin_filename(s).map_err(str::to_string)?;
    Ok(s.to_string())
}

/// A `--time` for a snapshot, checked when parsed (in the local time zone).
fn snapshot_time(s: &str) -> Result<String, String> {
    crate::timespec::parse_snapshot_time(s, &jiff::tz::TimeZone::system())?;
    Ok(s.to_string())
}

fn count(s: &str) -> Result<crate::retention::policy::Count, String> {
    crate::retention::policy::parse_count(s)
}

fn duration(s: &str) -> Result<crate::retention::policy::Duration, String> {
    crate::retention::policy::Duration::parse(s)
}

/// As [`duration`], and `0` for none.
fn duration_or_zero(s: &str) -> Result<crate::retention::policy::Duration, String> {
    match s.trim() {
        "0" => Ok(Default::default()),
        "" => Err("give a duration such as 30d or 6y (0 clears it)".into()),
        _ => duration(s),
    }
}

/// A `--reason`: not empty, no control characters (it is shown in evidence).
fn reason(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("give a reason (a case number, a ticket)".into());
    }
    if s.chars().any(char::is_control) {
        return Err("a reason may not contain control characters (newlines, escapes)".into());
    }
    Ok(s.to_string())
}

/// forget's `--keep-*` rules (also what `policy set` stores).
#[derive(Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep the last N snapshots (N, -1 or `unlimited`)
    #[arg(long, short = 'l', value_name = "N", allow_hyphen_values = true, value_parser = count)]
    pub keep_last: Option<crate::retention::policy::Count>,
    /// Keep the last N hourly snapshots
    #[arg(long, short = 'H', value_name = "N", allow_hyphen_values = true, value_parser = count)]
    pub keep_hourly: Option<crate::retention::policy::Count>,
    /// Keep the last N daily snapshots
    #[arg(long, short = 'd', value_name = "N", allow_hyphen_values = true, value_parser = count)]
    pub keep_daily: Option<crate::retention::policy::Count>,
    /// Keep the last N weekly (ISO week) snapshots
    #[arg(long, short = 'w', value_name = "N", allow_hyphen_values = true, value_parser = count)]
    pub keep_weekly: Option<crate::retention::policy::Count>,
    /// Keep the last N monthly snapshots
    #[arg(long, short = 'm', value_name = "N", allow_hyphen_values = true, value_parser = count)]
    pub keep_monthly: Option<crate::retention::policy::Count>,
    /// Keep the last N yearly snapshots
    #[arg(long, short = 'y', value_name = "N", allow_hyphen_values = true, value_parser = count)]
    pub keep_yearly: Option<crate::retention::policy::Count>,
    /// Keep snapshots newer than DURATION (`1y2m3d4h`) before the newest of the group
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub keep_within: Option<crate::retention::policy::Duration>,
    /// Keep hourly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub keep_within_hourly: Option<crate::retention::policy::Duration>,
    /// Keep daily snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub keep_within_daily: Option<crate::retention::policy::Duration>,
    /// Keep weekly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub keep_within_weekly: Option<crate::retention::policy::Duration>,
    /// Keep monthly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub keep_within_monthly: Option<crate::retention::policy::Duration>,
    /// Keep yearly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub keep_within_yearly: Option<crate::retention::policy::Duration>,
    /// Keep snapshots that have all of these tags (repeatable: any of the lists)
    #[arg(long = "keep-tag", value_name = "T[,T...]")]
    pub keep_tags: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Remove exactly these snapshots (`latest`, ids or prefixes) instead of applying a policy
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Group snapshots by these fields (host, paths, tags); an empty value means one group
    #[arg(long, default_value = "host,paths", value_name = "FIELDS", value_parser = group_by)]
    pub group_by: String,
    /// With an empty policy and a filter: remove every snapshot the filter selects
    #[arg(long)]
    pub unsafe_allow_remove_all: bool,
    /// Show what would be removed; remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run prune afterwards if any snapshot was removed
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOpts,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// Snapshots to change (`latest`, ids or prefixes; default: all that match the filters)
    pub snapshots: Vec<String>,
    /// Add these tags (comma-separated; repeatable)
    #[arg(long, value_name = "T")]
    pub add: Vec<String>,
    /// Remove these tags (comma-separated; repeatable)
    #[arg(long, value_name = "T")]
    pub remove: Vec<String>,
    /// Replace all tags with these (comma-separated; repeatable; an empty value clears them)
    #[arg(long, value_name = "T", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// How much prune repacks.
#[derive(Args, Debug, Clone)]
pub struct PruneOpts {
    /// Unused space to tolerate: a percentage of the data kept (5%), a size (500M), or
    /// `unlimited` (only delete packs nothing uses)
    #[arg(long, default_value = "5%", value_name = "P% | SIZE", value_parser = max_unused)]
    pub max_unused: String,
    /// Read and rewrite at most this much of packs (10G); default: no limit
    #[arg(long, value_name = "SIZE", value_parser = size_text)]
    pub max_repack_size: Option<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Print the plan; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub opts: PruneOpts,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones: only when no backup, copy or prune runs
    #[arg(long)]
    pub remove_all: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Default zstd level for this repository (0 = off, 1-22)
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub compression: i32,
    /// Target pack size in MiB (1-512); packs of 32 MiB and more go to S3 as multipart uploads
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub pack_size: u32,
    /// Write every object with an S3 Object Lock (WORM) retention in this mode (S3 only)
    #[arg(long, value_name = "MODE", value_parser = ["governance", "compliance"], requires = "retention")]
    pub object_lock: Option<String>,
    /// With --object-lock: how long each object stays locked (e.g. 30d; prune extends what is still needed)
    #[arg(long, value_name = "DURATION", requires = "object_lock")]
    pub retention: Option<String>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args, Debug, Clone)]
pub struct KdfArgs {
    /// Argon2id memory in MiB for the new key (floor: 19)
    #[arg(long, default_value_t = 64)]
    pub kdf_memory: u32,
    /// Argon2id iterations for the new key (floor: 2)
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
    /// Argon2id lanes for the new key, computed on up to that many cores (1 to 16)
    #[arg(long, default_value_t = 4)]
    pub kdf_parallelism: u32,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up; with --stdin-from-command, the command and its
    /// arguments (after `--`)
    pub paths: Vec<PathBuf>,
    /// Also back up the paths listed in FILE: one a line, globs expanded, `#` comments (repeatable)
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Also back up the paths listed in FILE, one a line exactly as written (repeatable)
    #[arg(long, value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Also back up the paths listed in FILE, separated by NUL bytes, as `find -print0` writes (repeatable)
    #[arg(long, value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
    /// Back up standard input as one file (named by --stdin-filename)
    #[arg(long, conflicts_with_all = ["stdin_from_command", "files_from", "files_from_verbatim", "files_from_raw"])]
    pub stdin: bool,
    /// Run the command given after `--` and back up its output as one file; when it exits
    /// non-zero the backup fails and no snapshot is written
    #[arg(long, conflicts_with_all = ["files_from", "files_from_verbatim", "files_from_raw"])]
    pub stdin_from_command: bool,
    /// The file's path in the snapshot for --stdin and --stdin-from-command
    #[arg(long, value_name = "NAME", default_value = "stdin", value_parser = stdin_filename)]
    pub stdin_filename: String,
    /// Tag the snapshot (comma-separated, repeatable)
    #[arg(long = "tag", value_parser = label)]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long, value_parser = label)]
    pub host: Option<String>,
    /// Exclude paths matching this glob (repeatable)
    #[arg(long = "exclude", short = 'e')]
    pub excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (repeatable)
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<PathBuf>,
    /// As --exclude, ignoring case (repeatable)
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// As --exclude-file, ignoring case (repeatable)
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_files: Vec<PathBuf>,
    /// Skip the contents of directories holding a file NAME (that starts with HEADER, if given; repeatable)
    #[arg(long, value_name = "NAME[:HEADER]", value_parser = crate::backup::TagFile::parse)]
    pub exclude_if_present: Vec<crate::backup::TagFile>,
    /// Leave out files larger than SIZE (bytes, or 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = crate::retention::prune::parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Do not read per-directory .cofferignore files (gitignore syntax)
    #[arg(long)]
    pub no_cofferignore: bool,
    /// Do not cross into other filesystems
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Skip the contents of directories holding a valid CACHEDIR.TAG (Coffer's own cache too)
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do everything but write to the repository
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// zstd level for this backup (default: the repository's)
    #[arg(long, allow_negative_numbers = true, value_parser = compression_level)]
    pub compression: Option<i32>,
    /// Compare against this snapshot instead of the latest one of this host and paths
    #[arg(long)]
    pub parent: Option<String>,
    /// The snapshot's time instead of now: RFC 3339 ("2026-11-20T14:00:00+01:00") or local
    /// "YYYY-MM-DD HH:MM:SS" (for imports and for testing retention)
    #[arg(long, value_name = "TIME", value_parser = snapshot_time)]
    pub time: Option<String>,
}

/// Which snapshots `latest` (and `snapshots`) consider.
#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: all of them)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that backed up this path (repeatable: all of them)
    #[arg(long = "path")]
    pub paths: Vec<PathBuf>,
    /// With --path: only snapshots of exactly these paths, no others besides
    #[arg(long, requires = "paths")]
    pub exact_paths: bool,
    /// Only snapshots whose tags are exactly those of --tag (none given: only untagged ones)
    #[arg(long)]
    pub exact_tags: bool,
}

/// `--as-of TIME` (docs/cli.md, "Times").
#[derive(Args, Debug, Clone)]
pub struct AsOfArgs {
    /// Act on the newest snapshot at or before TIME (RFC 3339, local "YYYY-MM-DD[ HH:MM[:SS]]",
    /// or relative: "3 days ago", "2h"), among those the filters allow
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub as_of: AsOfArgs,
    /// Only the newest N snapshots of each host and set of paths
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub latest: Option<u32>,
    /// List in groups of these fields (host, paths, tags), each under its own heading
    #[arg(long, value_name = "FIELDS", value_parser = group_by)]
    pub group_by: Option<String>,
    /// Id, time, host and tags only, one line a snapshot
    #[arg(long, short = 'c')]
    pub compact: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// `latest`, a snapshot id or a unique prefix of at least 8 hex digits; with --as-of,
    /// leave it out (the first argument is then PATH)
    pub snapshot: Option<String>,
    /// Only this path (absolute, as backed up) and what is below it
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub as_of: AsOfArgs,
    /// Show mode, owner, size and mtime
    #[arg(long, short = 'l')]
    pub long: bool,
    /// Only entries directly inside PATH
    #[arg(long)]
    pub no_recursive: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:SUBPATH; with --as-of, the path to restore (default: everything).
    /// Any bytes: a path need not be UTF-8
    pub snapshot: Option<std::ffi::OsString>,
    #[command(flatten)]
    pub as_of: AsOfArgs,
    /// Directory to restore into (created if missing)
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only paths matching this glob, and what is below them (repeatable)
    #[arg(long = "include", short = 'i')]
    pub includes: Vec<String>,
    /// Skip paths matching this glob (repeatable)
    #[arg(long = "exclude", short = 'e')]
    pub excludes: Vec<String>,
    /// Read every restored file back and check it
    #[arg(long)]
    pub verify: bool,
    /// Leave out the paths erasures (`rewrite`) removed from newer snapshots (warned about otherwise)
    #[arg(long)]
    pub apply_erasures: bool,
    /// When to replace a file already in the target: always, if-changed (its content differs;
    /// default, so a restore resumes), if-newer (the snapshot's is newer), never
    #[arg(long, value_name = "WHEN", default_value = "if-changed", value_parser = ["always", "if-changed", "if-newer", "never"])]
    pub overwrite: String,
    /// Remove what the target holds beyond the snapshot (within what --include/--exclude restore)
    #[arg(long)]
    pub delete: bool,
    /// Say what would be written, replaced, kept and deleted; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An existing directory to mount on
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// `latest`, a snapshot id or a unique prefix
    pub snapshot: String,
    /// The file or directory (absolute, as backed up); `/` for the whole snapshot
    pub path: PathBuf,
    /// The archive format for a directory: tar (exact metadata) or zip
    #[arg(long, value_name = "FORMAT", default_value = "tar", value_parser = ["tar", "zip"])]
    pub archive: String,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// A glob: without `/` it matches names (`*.conf`); with `/` whole paths
    /// (`/etc/**/*.conf`; a pattern not starting with `/` matches at any depth)
    pub pattern: String,
    /// Only snapshots taken at or after TIME
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only snapshots taken at or before TIME
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: all of them)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VersionsArgs {
    /// The path as it is on the host: absolute (or relative to the current directory)
    pub path: PathBuf,
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long = "host")]
    pub hosts: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot (`latest`, an id or a prefix)
    pub snapshot1: String,
    /// The newer snapshot
    pub snapshot2: String,
    /// Compare only this path and what is below it
    pub path: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// One snapshot (`latest`, an id or a prefix); default: every snapshot and the repository
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Recreate the catalog from the repository alone
    Rebuild,
    /// Where the catalog is, how big, and what it holds
    Info,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy: `latest`, ids or prefixes (default: all that match the filters)
    pub snapshots: Vec<String>,
    /// The destination repository (a local path or s3://bucket/prefix)
    #[arg(long)]
    pub to: String,
    /// The destination's password file (else --password-command2, COFFER_PASSWORD2, a prompt) [env: COFFER_PASSWORD_FILE2]
    #[arg(long)]
    pub password_file2: Option<PathBuf>,
    /// A command printing the destination's password [env: COFFER_PASSWORD_COMMAND2]
    #[arg(long)]
    pub password_command2: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read and verify all pack data
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify a subset of the packs: n/t (part n of t, by pack id; t runs cover
    /// all), x% (at random) or a size such as 500M (at random)
    #[arg(long, value_name = "n/t|x%|SIZE", value_parser = read_data_subset)]
    pub read_data_subset: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (new password from COFFER_NEW_PASSWORD, --new-password-file or a prompt)
    Add(NewPasswordArgs),
    /// List key files
    List,
    /// Remove a key file by id (or unique prefix)
    Remove { id: String },
    /// Change the password of the key in use
    Passwd(NewPasswordArgs),
}

#[derive(Args, Debug)]
pub struct NewPasswordArgs {
    /// Read the new password from this file
    #[arg(long)]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}
