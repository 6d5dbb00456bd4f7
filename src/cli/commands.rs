//! One function per command: validate arguments, call the library, print the result.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::args::*;
use super::exit::ExitCode;
use super::{drill, governance, history, password, progress, repair, retention, rewrite};
use crate::format::keyfile::KdfParams;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::progress::Progress;
use crate::repo::check::{self, ReadData};
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::{InitOptions, Repository};
use crate::restore::{self, RestoreOptions};
use crate::source::exclude::Patterns;
use crate::storage::Store;

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    let reports = g.metrics_file.is_some() || !g.notify.is_empty() || g.notify_on.is_some();
    if reports && !matches!(cli.command, Command::Backup(_) | Command::Run(_)) {
        bail!("--metrics-file, --notify and --notify-on apply to `backup` and `run` only");
    }
    // Checked here, not by clap: clap's message would print the URL, credentials and all.
    for url in &g.notify {
        crate::storage::webhook::check_url(url).map_err(|e| anyhow!("--notify {e}"))?;
    }
    match cli.command {
        Command::Init(a) => init(&g, a),
        Command::Backup(a) => super::backup::backup(&g, a),
        Command::Snapshots(a) => snapshots(&g, a),
        Command::Ls(a) => ls(&g, a),
        Command::Restore(a) => restore(&g, a),
        Command::Check(a) => check(&g, a),
        Command::Copy(a) => copy(&g, a),
        Command::Find(a) => history::find(&g, a),
        Command::Versions(a) => history::versions(&g, a),
        Command::Diff(a) => history::diff(&g, a),
        Command::Stats(a) => history::stats(&g, a),
        Command::Catalog { command } => history::catalog(&g, command),
        Command::Key { command } => key(&g, command),
        Command::Forget(a) => retention::forget(&g, *a),
        Command::Tag(a) => retention::tag(&g, a),
        Command::Prune(a) => retention::prune(&g, a),
        Command::Unlock(a) => retention::unlock(&g, a),
        Command::Repair { command } => repair::repair(&g, command),
        Command::Drill(a) => drill::drill(&g, a),
        Command::Policy { command } => governance::policy(&g, command),
        Command::Hold { command } => governance::hold(&g, command),
        Command::Audit(a) => governance::audit_cmd(&g, a),
        Command::Rewrite(a) => rewrite::rewrite(&g, a),
        Command::Run(a) => super::run::run(&g, a),
        Command::Profiles => super::outputs::profiles(&g),
        Command::Metrics => super::outputs::metrics_cmd(&g),
        Command::Schedule { command } => super::schedule::schedule(&g, command),
        Command::Generate { command } => super::schedule::generate(command),
        Command::Version => version(&g),
        Command::Dump(a) => dump(&g, a),
        Command::Mount(a) => mount(&g, a),
    }
}

/// `coffer dump SNAPSHOT PATH [--archive tar|zip]`: streams to stdout.
fn dump(g: &Global, a: DumpArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let repo = open(g)?;
    let _reading = reader_session(&repo, "dump");
    let (id, snap) = repo.find_snapshot(&a.snapshot, &filter(&a.filter))?;
    let path = clean_path(&a.path);
    let index = repo.load_index()?;
    let node = restore::find_node(&repo, &index, &snap, &path)
        .map_err(|e| history::not_in_snapshot(g, &repo, &id, &snap, &path, e))?;
    let archive = if a.archive == "zip" { crate::dump::Archive::Zip } else { crate::dump::Archive::Tar };
    let stdout = std::io::stdout();
    if node.kind == NodeKind::Dir && stdout.is_terminal() {
        bail!(
            "{} is a directory: its {} archive would go to the terminal; redirect stdout (`> out.{}`)",
            a.path.display(),
            a.archive,
            a.archive
        );
    }
    // Large writes straight to the pipe; the lock is held throughout.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let prog = progress(g, "dump");
    if path == b"/" {
        prog.set_total(snap.summary.total_bytes_processed, snap.summary.total_files_processed);
    }
    match node.kind {
        NodeKind::Dir => {
            let d = crate::dump::tree(&repo, &index, &node, &path, archive, &mut out, prog.as_ref())?;
            if d.skipped > 0 {
                eprintln!(
                    "warning: {} left out (the archive format cannot hold them)",
                    super::counted(d.skipped, "entry")
                );
            }
        }
        NodeKind::File => {
            crate::dump::file(&repo, &index, &node, &mut out, prog.as_ref()).context("writing the file")?;
        }
        k => bail!("{} is a {}: dump writes files, and directories as archives", a.path.display(), k.as_str()),
    }
    out.flush().context("writing the output")?;
    prog.finish();
    Ok(ExitCode::Ok)
}

/// `coffer mount MOUNTPOINT`: serves until SIGINT/SIGTERM (or an unmount), then unmounts.
fn mount(g: &Global, a: MountArgs) -> Result<ExitCode> {
    use std::sync::atomic::Ordering;
    let repo = Arc::new(open(g)?);
    match std::fs::metadata(&a.mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{}: not a directory", a.mountpoint.display()),
        Err(e) => bail!("{}: {e} (give an existing directory)", a.mountpoint.display()),
    }
    let _reading = reader_session(&repo, "mount");
    let f = filter(&a.filter);
    let mut snaps: Vec<_> = repo.load_snapshots()?.into_iter().filter(|(_, s)| f.matches(s)).collect();
    snaps.sort_by_key(|(_, s)| s.time_ns);
    let index = Arc::new(repo.load_index()?);
    let fs = crate::mount::RepoFs::new(repo.clone(), index, &snaps);
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("coffer".into()),
        fuser::MountOption::Subtype("coffer".into()),
    ];
    cfg.n_threads = Some(4);
    super::MOUNTED.store(true, Ordering::SeqCst);
    let session = fuser::spawn_mount(fs, &a.mountpoint, &cfg).with_context(|| {
        format!("mounting on {} (FUSE needs /dev/fuse and fusermount3, from the fuse3 package)", a.mountpoint.display())
    })?;
    if !g.quiet {
        eprintln!(
            "mounted {} ({}) on {}; Ctrl-C or `fusermount3 -u {}` unmounts",
            repo.store().location(),
            super::counted(snaps.len() as u64, "snapshot"),
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    while !super::UNMOUNT.load(Ordering::SeqCst) && !session.guard.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !session.guard.is_finished() && !unmount(&a.mountpoint)? {
        // Lazily unmounted: the kernel keeps the connection while a file in it is open, and
        // serving would go on until then. Exiting ends it (readers still inside get errors).
        std::mem::forget(session);
        return Ok(ExitCode::Ok);
    }
    let ended = session.join();
    super::MOUNTED.store(false, Ordering::SeqCst);
    ended.with_context(|| format!("serving {}", a.mountpoint.display()))?;
    if !g.quiet {
        eprintln!("unmounted {}", a.mountpoint.display());
    }
    Ok(ExitCode::Ok)
}

/// Unmounts a FUSE mount with `fusermount3 -u`, trying again for two seconds while it is
/// busy (a file open in it, a shell inside); then lazily (`-z`: it is detached now, and
/// whoever still uses it gets errors once this process is gone). `false` when lazily.
fn unmount(dir: &Path) -> Result<bool> {
    let run = |lazy: bool| {
        let mut c = std::process::Command::new("fusermount3");
        c.arg("-u").arg("-q");
        if lazy {
            c.arg("-z");
        }
        c.arg("--").arg(dir).stderr(std::process::Stdio::null()).status()
    };
    for _ in 0..10 {
        if run(false).context("running fusermount3")?.success() {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if run(true).context("running fusermount3")?.success() {
        eprintln!("warning: {} was busy (a file open in it?): unmounted lazily", dir.display());
        return Ok(false);
    }
    bail!("{}: could not unmount (fusermount3 -u failed)", dir.display())
}

/// `coffer version [--json]`.
fn version(g: &Global) -> Result<ExitCode> {
    use crate::format::config::{OLDEST_VERSION, VERSION};
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let features = [
        "local",
        "s3",
        "object-lock",
        "catalog",
        "drill",
        "governance",
        "profiles",
        "schedules",
        "metrics",
        "dump",
        "mount",
    ];
    if g.json {
        print_json(&json!({
            "version": env!("CARGO_PKG_VERSION"),
            "format_version": VERSION,
            "oldest_format_version": OLDEST_VERSION,
            "features": features,
            "build": { "target": target, "profile": profile },
        }))?;
    } else {
        outln!(
            "coffer {} (repository format {VERSION}, reads {OLDEST_VERSION} to {VERSION}; {target}, {profile} build)",
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(ExitCode::Ok)
}

/// Why `loc` is another tool's spelling of a repository, with Coffer's. A location that
/// looks like a URL never becomes a local directory (`s3:bkt/host1` would otherwise create
/// `./s3:bkt`); a local path that really starts so is given as `./s3:...`.
fn foreign_location(loc: &str) -> Option<String> {
    let (scheme, rest) = loc.split_once(':')?;
    if rest.starts_with("//") {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let shown = crate::storage::webhook::redacted(loc);
    if scheme == "s3" {
        let (endpoint, rest) = match rest.split_once("://") {
            Some((proto, r)) => {
                let (host, path) = r.split_once('/').unwrap_or((r, ""));
                let allow = if proto.eq_ignore_ascii_case("http") { " --s3-allow-http" } else { "" };
                (Some(format!("{proto}://{host}{allow}")), path)
            }
            None => match rest.split_once('/') {
                Some((host, path)) if host.contains('.') => (Some(format!("https://{host}")), path),
                _ => (None, rest),
            },
        };
        let bucket = rest.trim_matches('/');
        if bucket.is_empty() {
            return Some(format!("{shown:?} is restic's spelling of an S3 location, without a bucket: Coffer's is --repo s3://BUCKET/PREFIX"));
        }
        let endpoint = endpoint.map(|e| format!(" --s3-endpoint {e}")).unwrap_or_default();
        return Some(format!(
            "{shown:?} is restic's spelling of an S3 location: Coffer's is --repo s3://{bucket}{endpoint}"
        ));
    }
    ["b2", "azure", "gs", "sftp", "rest", "rclone", "swift"].contains(&scheme.as_str()).then(|| {
        format!("{shown:?}: Coffer has no {scheme} backend; repositories are local paths (or NAS mounts) and s3://bucket/prefix (a local path starting so: ./{shown})")
    })
}

fn store(g: &Global, create: bool) -> Result<Store> {
    let loc = g.repo.as_deref().ok_or_else(|| anyhow!("no repository given: use --repo or set COFFER_REPO"))?;
    if let Some(why) = foreign_location(loc) {
        bail!("{why}");
    }
    if loc.starts_with("s3://") {
        let opts = crate::storage::S3Options {
            endpoint: g.s3_endpoint.clone(),
            region: g.s3_region.clone(),
            virtual_hosted: g.s3_virtual_hosted,
            retries: g.retries,
            allow_http: g.s3_allow_http,
        };
        return Ok(Store::s3(loc, &opts)?.with_limits(g.limit_upload, g.limit_download));
    }
    let path = loc.strip_prefix("local:").unwrap_or(loc);
    if path.contains("://") {
        bail!("{loc}: unknown repository kind (local paths and s3://bucket/prefix are supported)");
    }
    Ok(Store::local(Path::new(path), create, g.no_hardlinks)?.with_limits(g.limit_upload, g.limit_download))
}

fn password(g: &Global, confirm: bool) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    password::get(
        "COFFER_PASSWORD",
        g.password_file.as_deref(),
        g.password_command.as_deref(),
        "enter the repository password: ",
        confirm,
    )
}

pub(super) fn open(g: &Global) -> Result<Repository> {
    open_with_cache(g, !g.no_cache)
}

/// Opens the repository; with `use_cache`, remote metadata comes from the local cache.
fn open_with_cache(g: &Global, use_cache: bool) -> Result<Repository> {
    let store = store(g, false).map_err(|e| {
        // A missing folder is "no repository here" (exit 10), like a missing config.
        anyhow::Error::new(crate::repo::RepoError::LocationMissing(format!("{e}")))
    })?;
    let pw = password(g, false)?;
    let mut repo = match Repository::open(store, &pw) {
        Ok(r) => r,
        Err(e @ crate::repo::RepoError::NotFound(_)) => {
            // On S3, a missing bucket is worth naming (it is not an empty repository).
            if let Err(b) = self::store(g, false).and_then(|s| Ok(s.check_bucket()?)) {
                return Err(anyhow::Error::new(crate::repo::RepoError::LocationMissing(format!("{b}"))));
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    repo.warnings().set_sink(Box::new(|m| eprintln!("warning: {m}")));
    if let Some(dir) = state_dir() {
        // Every reading of the snapshots compares them with what this client saw before.
        repo.enable_rollback_check(&dir);
    }
    if !repo.store().is_local() && use_cache {
        if let Some(base) = cache_base(g) {
            if let Err(e) = repo.enable_cache(&base) {
                eprintln!("warning: cache at {} unusable ({e}); working without it", base.display());
            }
        }
    }
    Ok(repo)
}

/// Commands that delete or replace (forget, tag, prune, repair) refuse, as backup does,
/// while the snapshots read show that the repository went back in time (repo::rollback):
/// the data of what vanished would be taken for garbage. With `--accept-rollback` the
/// repository is taken as it is.
pub(super) fn refuse_on_rollback(g: &Global, repo: &Repository) -> Result<()> {
    let Some(seen) = repo.seen() else { return Ok(()) };
    let found = seen.rollbacks();
    let Some(r) = found.first() else { return Ok(()) };
    if g.accept_rollback {
        let listed = repo.load_snapshots_listed()?;
        seen.accept(&listed);
        return Ok(());
    }
    bail!("{r}; nothing was changed: if this is expected, run the command again with --accept-rollback")
}

/// Where this client keeps what it must not forget (its marks of the repositories it has
/// seen): `COFFER_STATE_DIR`, else `$XDG_STATE_HOME/coffer`, else `~/.local/state/coffer`.
pub(super) fn state_dir() -> Option<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    var("COFFER_STATE_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("coffer")))
        .or_else(|| var("HOME").map(|h| h.join(".local/state/coffer")))
}

/// `--cache-dir`, else `$XDG_CACHE_HOME/coffer`, else `~/.cache/coffer`.
pub(super) fn cache_base(g: &Global) -> Option<std::path::PathBuf> {
    if let Some(d) = &g.cache_dir {
        return Some(d.clone());
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let home =
        || std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| std::path::PathBuf::from(h).join(".cache"));
    xdg.or_else(home).map(|d| d.join("coffer"))
}

/// Requests in flight at once: 2 suffice for a local disk; a remote store wants
/// `--connections` to hide its latency.
pub(super) fn connections(g: &Global, repo: &Repository) -> usize {
    if repo.store().is_local() {
        2
    } else {
        g.connections.max(1)
    }
}

pub(super) fn threads(g: &Global) -> usize {
    g.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).max(1)
}

pub(super) fn progress(g: &Global, verb: &str) -> Arc<dyn Progress> {
    let display: Box<dyn Progress> = if g.quiet || g.json || !super::stderr_is_tty() {
        Box::new(progress::Quiet)
    } else {
        Box::new(progress::Bar::new(verb))
    };
    match g.verbose {
        0 => Arc::from(display),
        level => Arc::new(progress::Verbose { inner: display, level }),
    }
}

fn kdf(a: &KdfArgs) -> KdfParams {
    KdfParams {
        memory_kib: a.kdf_memory.saturating_mul(1024),
        iterations: a.kdf_iterations,
        parallelism: a.kdf_parallelism,
    }
}

pub(super) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    json_line(&mut std::io::stdout().lock(), v)
}

/// One JSON document and a newline: `--json` output, one line of NDJSON.
pub(super) fn json_line(out: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

fn init(g: &Global, a: InitArgs) -> Result<ExitCode> {
    let store = store(g, true)?;
    store.check_bucket()?;
    let pw = password(g, true)?;
    let object_lock = match (&a.object_lock, &a.retention) {
        (Some(mode), Some(r)) => {
            use crate::format::config::{LockMode, ObjectLock};
            let retention_s = crate::timespec::parse_span_secs(r).map_err(|e| anyhow!("--retention: {e}"))?;
            if retention_s == 0 {
                bail!("--retention {r}: give a length of time, e.g. 30d");
            }
            let mode = if mode == "compliance" { LockMode::Compliance } else { LockMode::Governance };
            Some(ObjectLock { mode, retention_s })
        }
        _ => None,
    };
    let opts = InitOptions {
        compression_level: a.compression,
        kdf: kdf(&a.kdf),
        pack_size: a.pack_size * 1024 * 1024,
        object_lock,
        ..Default::default()
    };
    let mut repo = Repository::init(store, &pw, &opts)?;
    if let Some(dir) = state_dir() {
        repo.enable_rollback_check(&dir);
    }
    // The audit trail starts with the repository (and this client remembers its start).
    repo.append_audit(&crate::repo::audit::Record {
        command: "init".into(),
        args: std::env::args().skip(1).collect(),
        exit_code: 0,
        plan: String::new(),
        outcome: json!({ "repository_id": repo.id().to_hex() }).to_string(),
    })?;
    if g.json {
        print_json(&json!({ "repository_id": repo.id().to_hex(), "location": repo.store().location() }))?;
    } else if !g.quiet {
        eprintln!("created repository {} at {}", repo.id().short(), repo.store().location());
    }
    Ok(ExitCode::Ok)
}

/// Tags given as `--tag a,b --tag c`: split at commas, trimmed, empty parts and repeats
/// dropped, in the order given.
pub(super) fn split_tags(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in v.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// An absolute, lexically clean form of a path as the user typed it (`.`, `..` and trailing
/// slashes resolved without touching the file system), to compare with recorded paths.
pub(super) fn clean_path(p: &Path) -> Vec<u8> {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut clean = std::path::PathBuf::from("/");
    for c in abs.components() {
        match c {
            std::path::Component::Normal(n) => clean.push(n),
            std::path::Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    clean.as_os_str().as_bytes().to_vec()
}

pub(super) fn filter(f: &FilterArgs) -> SnapshotFilter {
    SnapshotFilter {
        hosts: f.hosts.clone(),
        tags: f.tags.clone(),
        paths: f.paths.iter().map(|p| clean_path(p)).collect(),
        exact_paths: f.exact_paths,
        exact_tags: f.exact_tags,
    }
}

pub(super) fn time_of(s: &Snapshot) -> jiff::Zoned {
    let ts = crate::clock::from_unix_ns(s.time_ns);
    let off = jiff::tz::Offset::from_seconds(s.utc_offset_s).unwrap_or(jiff::tz::Offset::UTC);
    ts.to_zoned(jiff::tz::TimeZone::fixed(off))
}

/// A snapshot's time in RFC 3339, with the UTC offset of the host that took it.
pub(super) fn rfc3339_of(s: &Snapshot) -> String {
    let z = time_of(s);
    z.timestamp().display_with_offset(z.offset()).to_string()
}

pub(super) fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": rfc3339_of(s),
        "host": s.host,
        "username": s.username,
        "uid": s.uid,
        "gid": s.gid,
        "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        "tags": s.tags,
        "excludes": s.excludes,
        "parent": s.parent.map(hex::encode),
        "tree": hex::encode(s.tree),
        "seq": s.seq,
        "program_version": s.program_version,
        "summary": s.summary,
        "original": s.original.map(hex::encode),
        "repaired": s.repaired.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
    })
}

/// The newest `n` snapshots of each host and set of paths (restic's `--latest`), in the
/// order given (oldest first).
fn newest_per_host_and_paths(all: Vec<(SnapshotId, Snapshot)>, n: usize) -> Vec<(SnapshotId, Snapshot)> {
    let key = |s: &Snapshot| {
        let mut p = s.paths.clone();
        p.sort();
        (s.host.clone(), p)
    };
    let mut seen: std::collections::HashMap<(String, Vec<Vec<u8>>), usize> = Default::default();
    let mut keep = vec![false; all.len()];
    for (i, (_, s)) in all.iter().enumerate().rev() {
        let c = seen.entry(key(s)).or_default();
        if *c < n {
            *c += 1;
            keep[i] = true;
        }
    }
    all.into_iter().zip(keep).filter(|(_, k)| *k).map(|(x, _)| x).collect()
}

/// One table of snapshots, its columns as wide as their widest value (restic's table), so
/// long host names and tag lists keep the columns straight. `compact` leaves out the paths.
fn snapshot_table(out: &mut impl Write, list: &[(SnapshotId, Snapshot)], compact: bool) -> Result<()> {
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|(id, s)| {
            let paths: Vec<_> = s.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
            let partial = if s.summary.partial { " (partial)" } else { "" };
            [
                id.short(),
                time_of(s).strftime("%Y-%m-%d %H:%M:%S %:z").to_string(),
                s.host.clone(),
                s.tags.join(","),
                if compact { partial.trim().to_string() } else { format!("{}{partial}", paths.join(" ")) },
            ]
        })
        .collect();
    let header = ["id", "time", "host", "tags", if compact { "" } else { "paths" }].map(String::from);
    let width = |c: usize| rows.iter().chain([&header]).map(|r| r[c].chars().count()).max().unwrap_or(0);
    let w = [width(0), width(1), width(2), width(3)];
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<a$}  {:<b$}  {:<c$}  {:<d$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3]
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn snapshots(g: &Global, a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let f = filter(&a.filter);
    let (all, damaged): (Vec<_>, Vec<_>) = match &a.as_of.as_of {
        Some(t) => (vec![history::as_of(g, &repo, t, &f, b"/")?], Vec::new()),
        None => {
            let (ok, damaged) = repo.load_snapshots_all()?;
            (ok.into_iter().map(|l| (l.id, l.snapshot)).filter(|(_, s)| f.matches(s)).collect(), damaged)
        }
    };
    // A damaged snapshot cannot be filtered (its host and tags are unreadable): it is
    // always listed, after the readable ones, and warned about.
    for d in &damaged {
        eprintln!(
            "warning: {}: {}; `coffer forget {}` removes it",
            crate::repo::snapshot_path(&d.id),
            d.reason,
            d.id.short()
        );
    }
    use crate::retention::policy::{GroupBy, GroupKey};
    let paths_of =
        |s: &Snapshot| -> Vec<String> { s.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect() };
    let all = match a.latest {
        Some(n) => newest_per_host_and_paths(all, n as usize),
        None => all,
    };
    // Groups in the order of their oldest snapshot; one group of all without --group-by.
    let by = a.group_by.as_deref().map(GroupBy::parse).transpose().map_err(|e| anyhow!("--group-by: {e}"))?;
    let mut groups: Vec<(GroupKey, Vec<(SnapshotId, Snapshot)>)> = Vec::new();
    for (id, s) in all {
        let key = by.map(|b| GroupKey::new(b, &s.host, &paths_of(&s), &s.tags)).unwrap_or_default();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push((id, s)),
            None => groups.push((key, vec![(id, s)])),
        }
    }
    if g.json {
        let damaged_json =
            damaged.iter().map(|d| json!({ "id": d.id.to_hex(), "short_id": d.id.short(), "damaged": d.reason }));
        if by.is_some() {
            let mut v: Vec<_> = groups
                .iter()
                .map(|(k, list)| {
                    json!({ "group_key": k, "snapshots": list.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>() })
                })
                .collect();
            if !damaged.is_empty() {
                v.push(json!({ "group_key": null, "snapshots": damaged_json.collect::<Vec<_>>() }));
            }
            print_json(&v)?;
        } else {
            let mut v: Vec<_> = groups.iter().flat_map(|(_, l)| l).map(|(id, s)| snapshot_json(id, s)).collect();
            v.extend(damaged_json);
            print_json(&v)?;
        }
        return Ok(ExitCode::Ok);
    }
    let mut out = std::io::stdout().lock();
    let total: usize = groups.iter().map(|(_, l)| l.len()).sum();
    for (i, (key, list)) in groups.iter().enumerate() {
        if by.is_some() {
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "snapshots for ({key}):")?;
        }
        snapshot_table(&mut out, list, a.compact)?;
        if by.is_some() {
            writeln!(out, "{}", super::counted(list.len() as u64, "snapshot"))?;
        }
    }
    if groups.is_empty() {
        snapshot_table(&mut out, &[], a.compact)?;
    }
    for d in &damaged {
        writeln!(out, "{:<8}  DAMAGED: {}", d.id.short(), d.reason)?;
    }
    if by.is_none() {
        if damaged.is_empty() {
            writeln!(out, "{}", super::counted(total as u64, "snapshot"))?;
        } else {
            writeln!(out, "{}, {} damaged", super::counted(total as u64, "snapshot"), damaged.len())?;
        }
    }
    Ok(ExitCode::Ok)
}

fn node_json(path: &[u8], n: &Node) -> serde_json::Value {
    let mtime = jiff::Timestamp::new(n.mtime.sec, n.mtime.nsec as i32).map(|t| t.to_string()).unwrap_or_default();
    json!({
        "path": String::from_utf8_lossy(path),
        "name": String::from_utf8_lossy(&n.name),
        "type": n.kind.as_str(),
        "size": n.size,
        "mode": format!("{:o}", n.mode),
        "uid": n.uid, "gid": n.gid,
        "user": String::from_utf8_lossy(&n.user), "group": String::from_utf8_lossy(&n.group),
        "mtime": mtime,
        "link_target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
    })
}

fn ls(g: &Global, a: LsArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let (id, snap, start_path) = match (&a.as_of.as_of, &a.snapshot, &a.path) {
        (Some(_), Some(_), Some(_)) => bail!("with --as-of, give only PATH (the snapshot is chosen by time)"),
        (Some(t), path, None) => {
            let p = path.as_deref().map(|p| clean_path(Path::new(p))).unwrap_or_else(|| b"/".to_vec());
            let (id, snap) = history::as_of(g, &repo, t, &filter(&a.filter), &p)?;
            (id, snap, p)
        }
        (None, Some(spec), path) => {
            let (id, snap) = repo.find_snapshot(spec, &filter(&a.filter))?;
            (id, snap, path.as_ref().map(|p| p.as_os_str().as_bytes().to_vec()).unwrap_or_else(|| b"/".to_vec()))
        }
        _ => bail!("give a snapshot (`latest`, an id or a prefix) or --as-of TIME"),
    };
    let index = repo.load_index()?;
    let start = restore::find_node(&repo, &index, &snap, &start_path)
        .map_err(|e| history::not_in_snapshot(g, &repo, &id, &snap, &start_path, e))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !g.json && !g.quiet {
        eprintln!("snapshot {} of {} at {}:", id.short(), snap.host, time_of(&snap).strftime("%Y-%m-%d %H:%M:%S"));
    }
    let mut emit = |path: &[u8], n: &Node| -> Result<()> {
        if g.json {
            json_line(&mut out, &node_json(path, n))?;
        } else if a.long {
            let t = jiff::Timestamp::new(n.mtime.sec, n.mtime.nsec as i32)
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            // An owner without a name shows as its number, as `ls -l` shows it.
            let owner = |name: &[u8], id: u32| {
                if name.is_empty() {
                    id.to_string()
                } else {
                    String::from_utf8_lossy(name).into_owned()
                }
            };
            let link = if n.kind == NodeKind::Symlink {
                format!(" -> {}", String::from_utf8_lossy(&n.link_target))
            } else {
                String::new()
            };
            writeln!(
                out,
                "{} {:>8} {:>8} {:>12} {t} {}{link}",
                mode_string(n.kind, n.mode),
                owner(&n.user, n.uid),
                owner(&n.group, n.gid),
                n.size,
                String::from_utf8_lossy(path)
            )?;
        } else {
            out.write_all(path)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    if start_path != b"/" {
        emit(&start_path, &start)?;
    }
    // Depth first, as `find` and restic's ls: a directory is followed by its contents before
    // its next sibling. The stack holds the open directories' remaining entries.
    let mut stack: Vec<(Vec<u8>, std::vec::IntoIter<Node>)> = Vec::new();
    if let (NodeKind::Dir, Some(t)) = (start.kind, start.subtree) {
        stack.push((start_path.clone(), repo.load_tree(&index, &BlobId(t))?.into_iter()));
    }
    while let Some((path, entries)) = stack.last_mut() {
        let Some(n) = entries.next() else {
            stack.pop();
            continue;
        };
        let mut p = path.clone();
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(&n.name);
        emit(&p, &n)?;
        if let (NodeKind::Dir, Some(t), false) = (n.kind, n.subtree, a.no_recursive) {
            stack.push((p, repo.load_tree(&index, &BlobId(t))?.into_iter()));
        }
    }
    out.flush()?;
    Ok(ExitCode::Ok)
}

/// `ls -l`'s mode column: the type and the permission bits as `ls` shows them
/// (`drwxr-xr-x`, `-rwsr-xr-x`, `lrwxrwxrwx`), always ten characters.
fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    };
    let mut s = String::from(t);
    for (i, special, set, unset) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
        let bits = (mode >> i) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A reader's lock, so that a prune deletes no pack under a long read. Where it cannot be
/// written (read-only credentials) the command reads without one.
pub(super) fn reader_session(repo: &Repository, command: &str) -> Option<crate::repo::lock::Session> {
    crate::repo::lock::Session::start(repo, crate::format::lock::LockKind::Reader, command).ok()
}

fn restore(g: &Global, a: RestoreArgs) -> Result<ExitCode> {
    let repo = Arc::new(open(g)?);
    let _reading = reader_session(&repo, "restore");
    let (id, snap, sub_bytes) = match (&a.as_of.as_of, &a.snapshot) {
        (Some(t), path) => {
            // `restore --as-of T /etc/nginx`: the argument is a path as it is on the host.
            let p = path.as_deref().map(|p| clean_path(Path::new(p))).unwrap_or_else(|| b"/".to_vec());
            let (id, snap) = history::as_of(g, &repo, t, &filter(&a.filter), &p)?;
            (id, snap, p)
        }
        (None, Some(arg)) => {
            // SNAPSHOT:SUBPATH split at the first `:`; the snapshot part is text, the path
            // any bytes.
            let b = arg.as_encoded_bytes();
            let (spec, sub) = match b.iter().position(|c| *c == b':') {
                Some(i) => (&b[..i], b[i + 1..].to_vec()),
                None => (b, b"/".to_vec()),
            };
            let spec = std::str::from_utf8(spec).map_err(|_| anyhow!("{:?}: not a snapshot id", arg))?;
            let (id, snap) = repo.find_snapshot(spec, &filter(&a.filter))?;
            (id, snap, sub)
        }
        (None, None) => bail!("give SNAPSHOT[:SUBPATH] or --as-of TIME [PATH]"),
    };
    let index = Arc::new(repo.load_index()?);
    let start = restore::find_node(&repo, &index, &snap, &sub_bytes)
        .map_err(|e| history::not_in_snapshot(g, &repo, &id, &snap, &sub_bytes, e))?;
    let mut excludes = a.excludes.clone();
    let (erased_patterns, erased) =
        crate::retention::rewrite::erased_paths(&repo, &index, &id, crate::id::BlobId(snap.tree), snap.time_ns)?;
    if !erased.is_empty() {
        let shown: Vec<&str> = erased.iter().take(5).map(String::as_str).collect();
        let more = if erased.len() > 5 { format!(" and {} more", erased.len() - 5) } else { String::new() };
        if a.apply_erasures {
            excludes.extend(erased_patterns);
            eprintln!("note: leaving out {} erased paths: {}{more}", erased.len(), shown.join(", "));
        } else {
            eprintln!(
                "warning: snapshot {} still holds {} paths erased since it was taken (kept by a hold, the minimum \
                 retention or a lock): {}{more}; --apply-erasures leaves them out",
                id.short(),
                erased.len(),
                shown.join(", ")
            );
        }
    }
    let opts = RestoreOptions {
        target: a.target.clone(),
        include: Patterns::new(&a.includes).map_err(|e| anyhow!("bad include pattern: {e}"))?,
        exclude: Patterns::new(&excludes).map_err(|e| anyhow!("bad exclude pattern: {e}"))?,
        verify: a.verify,
        // Restoring waits on file creation and writes (and remote reads) as much as on the
        // CPU: twice the cores, or more for a remote repository.
        threads: g.threads.unwrap_or_else(|| (2 * threads(g)).max(connections(g, &repo))).max(1),
        only: None,
        timings: false,
        overwrite: restore::Overwrite::parse(&a.overwrite).expect("clap checked it"),
        delete: a.delete,
    };
    let prog = progress(g, "restore");
    if sub_bytes == b"/" && a.includes.is_empty() {
        // The whole snapshot: its summary says how much there is.
        prog.set_total(snap.summary.total_bytes_processed, snap.summary.total_files_processed);
    } else if prog.wants_totals() {
        // A part: its trees are counted on the side, for the display only.
        let (r, i, n, p) = (repo.clone(), index.clone(), start.clone(), prog.clone());
        std::thread::spawn(move || {
            let (bytes, files) = restore::count(&r, &i, &n);
            p.set_total(bytes, files);
        });
    }
    let watch = crate::clock::stopwatch();
    let sum = if a.dry_run {
        restore::plan(&repo, &index, &start, &sub_bytes, &opts, prog.as_ref())
    } else {
        restore::run(repo, index, start, &sub_bytes, opts, prog.clone())
    }
    .with_context(|| format!("restoring snapshot {}", id.short()))?;
    prog.finish();
    let secs = watch.elapsed().as_secs_f64();
    if g.json {
        print_json(&json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            "target": a.target.display().to_string(),
            "files_restored": sum.files_restored,
            "dirs_restored": sum.dirs_restored,
            "other_restored": sum.other_restored,
            "bytes_restored": sum.bytes_restored,
            "files_verified": sum.files_verified,
            "files_unchanged": sum.files_unchanged,
            "files_deleted": sum.deleted,
            "dry_run": a.dry_run,
            "total_duration": secs,
            "errors": sum.errors,
            "damage_recorded": sum.damage_recorded,
        }))?;
    } else if a.dry_run && !g.quiet {
        let n = |v: u64, noun: &str| super::counted(v, noun);
        eprintln!(
            "dry run: would write {} ({}), make {}, {} other; keep {} unchanged; delete {}; nothing was changed",
            n(sum.files_restored, "file"),
            indicatif::HumanBytes(sum.bytes_restored),
            n(sum.dirs_restored, "dir"),
            sum.other_restored,
            sum.files_unchanged,
            sum.deleted
        );
    } else if !g.quiet {
        eprintln!(
            "restored {}, {}, {} other, {} in {secs:.2}s to {}{}{}",
            super::counted(sum.files_restored, "file"),
            super::counted(sum.dirs_restored, "dir"),
            sum.other_restored,
            indicatif::HumanBytes(sum.bytes_restored),
            a.target.display(),
            if sum.files_unchanged > 0 { format!("; {} unchanged", sum.files_unchanged) } else { String::new() },
            if sum.deleted > 0 { format!("; deleted {}", sum.deleted) } else { String::new() },
        );
        if a.verify {
            eprintln!("verified {} files", sum.files_verified);
        }
    }
    print_damage_recorded(sum.damage_recorded, sum.record_error.as_deref());
    if !sum.errors.is_empty() {
        eprintln!("coffer: {} errors during restore (listed above)", sum.errors.len());
        return Ok(ExitCode::Error);
    }
    Ok(ExitCode::Ok)
}

/// Says what was recorded as damaged (or why it could not be), on stderr.
fn print_damage_recorded(n: u64, error: Option<&str>) {
    if n > 0 {
        eprintln!(
            "recorded {n} damaged blob {} in the repository: the next backup of the files holding them stores \
             them again",
            if n == 1 { "copy" } else { "copies" }
        );
    }
    if let Some(e) = error {
        eprintln!("warning: the damage found could not be recorded in the repository: {e}");
    }
}

fn check(g: &Global, a: CheckArgs) -> Result<ExitCode> {
    // `check` judges the repository itself, never local copies of it.
    let repo = open_with_cache(g, false)?;
    let read = match (&a.read_data, &a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => ReadData::parse_subset(s, crate::retention::prune::parse_size)
            .map_err(|e| anyhow!("--read-data-subset: {e}"))?,
        _ => ReadData::None,
    };
    let prog = progress(g, "check");
    let readers = if repo.store().is_local() { threads(g).min(4) } else { connections(g, &repo) };
    let r = check::check(&repo, read, readers, prog.as_ref())?;
    prog.finish();
    if g.json {
        print_json(&r)?;
    } else {
        for e in &r.errors {
            eprintln!("damaged: {e}");
        }
        if !g.quiet {
            eprintln!(
                "checked {} snapshots, {} trees, {} index files, {} packs ({} read, {} blobs verified)",
                r.snapshots, r.trees, r.index_files, r.packs, r.packs_read, r.blobs_read
            );
        }
        print_damage_recorded(r.damage_recorded, r.record_error.as_deref());
        for u in &r.unchecked {
            eprintln!("could not check: {u}");
        }
        for j in &r.junk {
            eprintln!("junk: {j}: not part of the repository; safe to remove");
        }
        if r.packs_recovered > 0 {
            eprintln!(
                "{} packs no readable index file lists were read from their own headers (`coffer repair index` \
                 rebuilds the index)",
                r.packs_recovered
            );
        }
        if r.leftover_packs > 0 {
            eprintln!(
                "{} packs ({}) are not referenced by any index: leftovers of interrupted backups, reclaimable by prune",
                r.leftover_packs,
                indicatif::HumanBytes(r.leftover_bytes)
            );
        }
        if r.in_flight_packs > 0 {
            eprintln!(
                "{} packs ({}) are not indexed yet: written by a backup that is still running",
                r.in_flight_packs,
                indicatif::HumanBytes(r.in_flight_bytes)
            );
        }
        if r.obsolete_packs > 0 {
            eprintln!(
                "{} packs ({}) are marked for deletion by prune (nothing uses them)",
                r.obsolete_packs,
                indicatif::HumanBytes(r.obsolete_bytes)
            );
        }
        if !r.unchecked.is_empty() {
            eprintln!("{} packs could not be checked (listed above): the check is incomplete", r.unchecked.len());
        } else if r.errors.is_empty() && !g.quiet {
            eprintln!("no errors were found");
        }
        if !r.errors.is_empty() {
            eprintln!("{} errors found", r.errors.len());
        }
    }
    Ok(if r.errors.is_empty() && r.unchecked.is_empty() { ExitCode::Ok } else { ExitCode::Error })
}

fn copy(g: &Global, mut a: CopyArgs) -> Result<ExitCode> {
    super::args::password_from_env(
        &mut a.password_file2,
        &mut a.password_command2,
        "COFFER_PASSWORD_FILE2",
        "COFFER_PASSWORD_COMMAND2",
    );
    let src = open(g)?;
    let _reading = reader_session(&src, "copy (source)");
    let dst_global = Global { repo: Some(a.to.clone()), ..g.clone() };
    let dst_store = store(&dst_global, false)
        .map_err(|e| anyhow::Error::new(crate::repo::RepoError::LocationMissing(format!("{e}"))))?;
    let pw2 = password::get(
        "COFFER_PASSWORD2",
        a.password_file2.as_deref(),
        a.password_command2.as_deref(),
        "enter the destination repository's password: ",
        false,
    )?;
    let mut dst = Repository::open(dst_store, &pw2).context("opening the destination repository")?;
    dst.warnings().set_sink(Box::new(|m| eprintln!("warning: destination: {m}")));
    if !dst.store().is_local() && !g.no_cache {
        if let Some(base) = cache_base(g) {
            let _ = dst.enable_cache(&base);
        }
    }
    let f = filter(&a.filter);
    let snaps = if a.snapshots.is_empty() {
        src.load_snapshots()?.into_iter().filter(|(_, s)| f.matches(s)).collect()
    } else {
        let mut v = a.snapshots.iter().map(|s| src.find_snapshot(s, &f)).collect::<std::result::Result<Vec<_>, _>>()?;
        // `latest` and its id name one snapshot: copy it once.
        let mut seen = std::collections::HashSet::new();
        v.retain(|(id, _)| seen.insert(*id));
        v
    };
    let uploaders = if dst.store().is_local() { 2 } else { g.connections.max(1) };
    let r = crate::copy::copy(&src, Arc::new(dst), &snaps, uploaders)?;
    if g.json {
        print_json(&r)?;
    } else if !g.quiet {
        for (s, d) in &r.copied {
            eprintln!("copied snapshot {} as {}", &s[..8], &d[..8]);
        }
        for (s, d) in &r.skipped {
            eprintln!("skipped snapshot {}: already in the destination as {}", &s[..8], &d[..8]);
        }
        eprintln!("added {} to the destination", indicatif::HumanBytes(r.data_added));
    }
    Ok(ExitCode::Ok)
}

fn new_password(a: &NewPasswordArgs) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    password::get("COFFER_NEW_PASSWORD", a.new_password_file.as_deref(), None, "enter the new password: ", true)
}

fn key(g: &Global, cmd: KeyCommand) -> Result<ExitCode> {
    let mut repo = open(g)?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                print_json(&keys)?;
            } else {
                for k in keys {
                    let cur = if k.current { "*" } else { " " };
                    outln!("{cur}{}  {}  {}@{}", &k.id[..8], k.created, k.username, k.host);
                }
            }
        }
        KeyCommand::Add(a) => {
            let pw = new_password(&a)?;
            return governance::audited(&repo, "key add", |note| {
                let id = repo.add_key(&pw, kdf(&a.kdf))?;
                note.outcome = Some(json!({ "key": id.to_hex() }));
                if g.json {
                    print_json(&json!({ "id": id.to_hex() }))?;
                } else {
                    outln!("{id}");
                    eprintln!("added key {}", id.short());
                }
                Ok(ExitCode::Ok)
            });
        }
        KeyCommand::Remove { id } => {
            return governance::audited(&repo, "key remove", |note| {
                let removed = repo.remove_key(&id)?;
                note.outcome = Some(json!({ "removed": removed.to_hex() }));
                if g.json {
                    print_json(&json!({ "removed": removed.to_hex() }))?;
                } else {
                    eprintln!("removed key {}", removed.short());
                }
                Ok(ExitCode::Ok)
            });
        }
        KeyCommand::Passwd(a) => {
            // The old key file goes at the end; under S3 Object Lock it cannot before its date,
            // and both passwords would then work: refused before anything is written.
            if repo.store().object_lock().is_some() {
                let path = crate::repo::key_path(&repo.key_id());
                if let Some(r) = repo
                    .store()
                    .retention(&path)?
                    .filter(|r| r.until_ns > crate::clock::to_unix_ns(crate::clock::now()))
                {
                    bail!(
                        "{path}: S3 Object Lock keeps this password's key file until {}, so `key passwd` could not \
                         remove it and both passwords would work: add the new one with `key add` now, and `key remove` \
                         the old one after that date",
                        crate::clock::from_unix_ns(r.until_ns)
                    );
                }
            }
            let pw = new_password(&a)?;
            let old = repo.key_id();
            let changed = repo.change_password(&pw, kdf(&a.kdf));
            return governance::audited(&repo, "key passwd", |note| {
                let id = changed?;
                note.outcome = Some(json!({ "old_key": old.to_hex(), "new_key": id.to_hex() }));
                if g.json {
                    print_json(&json!({ "id": id.to_hex() }))?;
                } else {
                    eprintln!("password changed (new key {})", id.short());
                }
                Ok(ExitCode::Ok)
            });
        }
    }
    Ok(ExitCode::Ok)
}
