//! `coffer backup`: files and directories, lists of them (`--files-from*`), standard input
//! or a command's output (`--stdin`, `--stdin-from-command`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::args::{BackupArgs, Global};
use super::commands::{cache_base, connections, open, print_json, progress, split_tags, threads};
use super::exit::ExitCode;
use crate::backup::{self, BackupOptions, BackupResult, TagFile};
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::Repository;
use crate::source::exclude::Patterns;
use crate::source::list::{read_list, ListKind};

/// What a backup reads.
enum Input {
    Paths(Vec<PathBuf>),
    Stdin,
    Command(Vec<std::ffi::OsString>),
}

/// The paths given and those of the list files; standard input; or a command.
fn input(a: &BackupArgs) -> Result<Input> {
    if a.stdin_from_command {
        if a.paths.is_empty() {
            bail!(
                "--stdin-from-command: give the command after `--` (coffer backup --stdin-from-command -- pg_dump app)"
            );
        }
        return Ok(Input::Command(a.paths.iter().map(|p| p.as_os_str().to_owned()).collect()));
    }
    if a.stdin {
        if !a.paths.is_empty() {
            bail!("--stdin backs up standard input only: leave out the paths (or use --stdin-from-command)");
        }
        return Ok(Input::Stdin);
    }
    let mut paths = a.paths.clone();
    let lists = [
        (&a.files_from, ListKind::Globs),
        (&a.files_from_verbatim, ListKind::Verbatim),
        (&a.files_from_raw, ListKind::Raw),
    ];
    for (files, kind) in lists {
        for f in files {
            let listed = read_list(f, kind).map_err(|e| anyhow!("--files-from: {e}"))?;
            if listed.is_empty() {
                bail!("{}: lists no path to back up", f.display());
            }
            paths.extend(listed);
        }
    }
    if paths.is_empty() {
        bail!("nothing to back up: give paths, --files-from FILE, --stdin or --stdin-from-command");
    }
    Ok(Input::Paths(paths))
}

/// The repository's folder and Coffer's cache, as (device, inode), so a backup never stores
/// them; each one inside a backed-up path is named in a note.
fn own_dirs_inside(g: &Global, repo: &Repository, paths: &[PathBuf]) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let roots: Vec<PathBuf> = paths.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let mine =
        [("the repository", repo.store().local_root().map(Path::to_path_buf)), ("Coffer's cache", cache_base(g))];
    let mut out = Vec::new();
    for (what, dir) in mine {
        let Some(dir) = dir.and_then(|d| d.canonicalize().ok()) else { continue };
        let Ok(m) = std::fs::metadata(&dir) else { continue };
        out.push((m.dev(), m.ino()));
        if roots.iter().any(|r| dir.starts_with(r)) && !g.quiet {
            eprintln!("note: {what} at {} is inside the backed-up paths: it is left out", dir.display());
        }
    }
    out
}

/// The library's options from the command line (paths are filled in by the caller).
fn options(g: &Global, a: &BackupArgs, repo: &Repository) -> Result<BackupOptions> {
    let time = match &a.time {
        Some(t) => Some(
            crate::timespec::parse_snapshot_time(t, &jiff::tz::TimeZone::system())
                .map_err(|e| anyhow!("--time: {e}"))?,
        ),
        None => None,
    };
    let exact = Patterns::gather(&a.excludes, &a.exclude_files).map_err(|e| anyhow!("--exclude-file {e}"))?;
    let insensitive = Patterns::gather(&a.iexcludes, &a.iexclude_files).map_err(|e| anyhow!("--iexclude-file {e}"))?;
    let excludes = Patterns::with_insensitive(&exact, &insensitive).map_err(|e| anyhow!("bad exclude pattern: {e}"))?;
    let exclude_if_present: Vec<TagFile> = a.exclude_if_present.clone();
    let exclude_larger_than = a.exclude_larger_than;
    let parent = match &a.parent {
        Some(p) => Some(repo.find_snapshot(p, &SnapshotFilter::default())?.0),
        None => None,
    };
    Ok(BackupOptions {
        skip_dirs: Vec::new(),
        accept_rollback: g.accept_rollback,
        paths: Vec::new(),
        // `--tag a,b` is two tags, as in restic (and as forget's and tag's options read them).
        tags: split_tags(&a.tags),
        host: a.host.clone().unwrap_or_else(backup::default_host),
        excludes,
        exclude_if_present,
        exclude_larger_than,
        ignore_files: !a.no_cofferignore,
        one_file_system: a.one_file_system,
        exclude_caches: a.exclude_caches,
        dry_run: a.dry_run,
        compression_level: a.compression,
        parent,
        threads: threads(g),
        uploaders: connections(g, repo),
        time,
    })
}

/// Runs a command for `--stdin-from-command`: its output is the stream, its standard error
/// passes through, and its exit status decides whether the snapshot is written.
fn spawn(argv: &[std::ffi::OsString], name: String) -> Result<backup::Stream<'static>> {
    let shown = argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    // In a process group of its own, so a signal to Coffer stops the program and everything
    // it started (crate::ops::child).
    let mut child =
        crate::ops::child::spawn(&mut cmd).with_context(|| format!("--stdin-from-command: cannot run {shown:?}"))?;
    let out = child.stdout.take().expect("piped");
    let finish = Box::new(move || {
        let waited = child.wait();
        crate::ops::child::unregister(child.id());
        match waited {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("--stdin-from-command: {shown:?} failed ({s})")),
            Err(e) => Err(format!("--stdin-from-command: waiting for {shown:?}: {e}")),
        }
    });
    Ok(backup::Stream { name, reader: Box::new(out), finish })
}

pub fn backup(g: &Global, a: BackupArgs) -> Result<ExitCode> {
    let started_ns = crate::clock::to_unix_ns(crate::clock::now());
    let mut repo_for_metrics = None;
    let result = backup_with(g, a, &mut repo_for_metrics);
    // --metrics-file and --notify report failures too: those matter most.
    let (code, summary, error) = match &result {
        Ok((code, summary)) => (*code as i32, summary.clone(), None),
        Err(e) => (super::exit_code_for(e) as i32, serde_json::Value::Null, Some(super::error_text(e))),
    };
    super::outputs::after_backup(g, repo_for_metrics.as_deref(), summary, code, error, started_ns)?;
    result.map(|(code, _)| code)
}

fn backup_with(g: &Global, a: BackupArgs, keep: &mut Option<Arc<Repository>>) -> Result<(ExitCode, serde_json::Value)> {
    let input = input(&a)?;
    let repo = Arc::new(open(g)?);
    *keep = Some(repo.clone());
    let mut opts = options(g, &a, &repo)?;
    let prog = progress(g, "backup");
    let res = match input {
        Input::Paths(paths) => {
            opts.skip_dirs = own_dirs_inside(g, &repo, &paths);
            opts.paths = paths;
            backup::run(repo.clone(), opts, prog.clone())?
        }
        Input::Stdin => {
            let stream = backup::Stream {
                name: a.stdin_filename.clone(),
                reader: Box::new(std::io::stdin().lock()),
                finish: Box::new(|| Ok(())),
            };
            backup::run_stream(repo.clone(), opts, stream, prog.clone())?
        }
        Input::Command(argv) => {
            let stream = spawn(&argv, a.stdin_filename.clone())?;
            backup::run_stream(repo.clone(), opts, stream, prog.clone())?
        }
    };
    prog.finish();
    report(g, &res)
}

/// Prints the summary (restic's JSON summary fields) and returns the exit code and the
/// summary.
fn report(g: &Global, res: &BackupResult) -> Result<(ExitCode, serde_json::Value)> {
    let s = &res.snapshot.summary;
    let id = res.snapshot_id.map(|i| i.to_hex());
    let doc = json!({
            "message_type": "summary",
            "snapshot_id": id,
            "paths": res.snapshot.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
            "dry_run": res.snapshot_id.is_none(),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "dirs_new": s.dirs_new,
            "dirs_changed": s.dirs_changed,
            "dirs_unmodified": s.dirs_unmodified,
            "total_files_processed": s.total_files_processed,
            "total_bytes_processed": s.total_bytes_processed,
            "blobs_added": s.blobs_added,
            "data_added": s.data_added,
            "data_added_raw": s.data_added_raw,
            "total_duration": s.duration_ns as f64 / 1e9,
            "errors": res.warnings,
            "partial": s.partial,
            "blobs_rescued": res.rescued,
    });
    if g.json {
        print_json(&doc)?;
    } else if !g.quiet {
        eprintln!(
            "files: {} new, {} changed, {} unmodified; dirs: {} new, {} changed, {} unmodified",
            s.files_new, s.files_changed, s.files_unmodified, s.dirs_new, s.dirs_changed, s.dirs_unmodified
        );
        eprintln!(
            "processed {} files, {}; added {} to the repository ({} before compression) in {:.2}s",
            s.total_files_processed,
            indicatif::HumanBytes(s.total_bytes_processed),
            indicatif::HumanBytes(s.data_added),
            indicatif::HumanBytes(s.data_added_raw),
            s.duration_ns as f64 / 1e9
        );
        match &id {
            Some(id) => outln!("{id}"),
            None => eprintln!("dry run: nothing was written"),
        }
    }
    if s.partial {
        eprintln!(
            "warning: {} (files or paths unreadable, or changed while read); the snapshot is marked partial",
            super::counted(s.errors, "error")
        );
        return Ok((ExitCode::Partial, doc));
    }
    Ok((ExitCode::Ok, doc))
}
