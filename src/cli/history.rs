//! Commands that answer from the catalog (`find`, `versions`, `diff`, `--as-of`,
//! `catalog`) and `stats`.

use std::cell::OnceCell;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::args::*;
use super::commands::{cache_base, clean_path, filter, json_line, open, print_json, rfc3339_of, time_of};
use super::exit::ExitCode;
use crate::catalog::{self, covers, BoxError, Catalog, CatalogError, FindFilter, NameTest, NodeInfo, SnapRow};
use crate::format::snapshot::Snapshot;
use crate::id::{BlobId, SnapshotId};
use crate::repo::index::MasterIndex;
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::stats::{self, ratio};
use crate::repo::Repository;

/// The repository as the catalog's source of truth; the index is loaded only if trees are.
struct RepoSource<'a> {
    repo: &'a Repository,
    index: OnceCell<MasterIndex>,
}

impl catalog::Source for RepoSource<'_> {
    fn snapshot_ids(&self) -> std::result::Result<Vec<SnapshotId>, BoxError> {
        // Read, not only listed: a repository that went back in time is noticed here too
        // (repo::rollback; the snapshots are small, and cached for remote repositories).
        let (ok, damaged) = self.repo.load_snapshots_all()?;
        Ok(ok.into_iter().map(|l| l.id).chain(damaged.into_iter().map(|d| d.id)).collect())
    }
    fn snapshot(&self, id: &SnapshotId) -> std::result::Result<Snapshot, BoxError> {
        Ok(self.repo.load_snapshot(id)?)
    }
    fn tree(&self, id: &[u8; 32]) -> std::result::Result<Vec<crate::format::tree::Node>, BoxError> {
        if self.index.get().is_none() {
            let _ = self.index.set(self.repo.load_index()?);
        }
        let index = self.index.get().expect("set above");
        Ok(self.repo.load_tree(index, &BlobId(*id))?)
    }
}

/// Where the catalog of `repo` lives, or None for an in-memory one (`--no-cache`, no HOME).
fn catalog_path(g: &Global, repo: &Repository) -> Option<std::path::PathBuf> {
    if g.no_cache {
        return None;
    }
    let base = cache_base(g)?;
    // Creates the repository's cache directory (mode 0700, tagged CACHEDIR.TAG).
    crate::repo::cache::Cache::open(&base, &repo.id().to_hex()).ok()?;
    Some(base.join(repo.id().to_hex()).join(catalog::FILE_NAME))
}

/// Opens the catalog, syncs it with the repository (`trees`: index new snapshots' trees
/// too) and runs `f` on it. A catalog found damaged, on open or while in use, is deleted,
/// rebuilt from the repository, and `f` run again.
pub fn with_catalog<T>(
    g: &Global,
    repo: &Repository,
    trees: bool,
    f: impl Fn(&Catalog) -> std::result::Result<T, CatalogError>,
) -> Result<T> {
    // Printed once, even when a damaged catalog makes the work run twice.
    let warned = std::cell::Cell::new(false);
    let warn = |s: &catalog::SyncStats| {
        if !s.warnings.is_empty() && !warned.replace(true) {
            s.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
        }
    };
    let src = RepoSource { repo, index: OnceCell::new() };
    let id = repo.id().0;
    let in_memory = |why: Option<String>| -> Result<T> {
        if let Some(why) = why {
            eprintln!("warning: {why}; using a temporary catalog in memory");
        }
        let mut cat = Catalog::in_memory(&id)?;
        warn(&cat.sync(&src, trees)?);
        Ok(cat.read(&f)?)
    };
    let Some(path) = catalog_path(g, repo) else {
        return in_memory(None);
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut cat, rebuilt) = match Catalog::open_or_rebuild(&path, &id) {
            Ok(c) => c,
            // A file system SQLite cannot use (no locks, no shared memory for WAL), ...
            Err(e) if !e.is_corrupt() && !matches!(e, CatalogError::Source(_)) => {
                return in_memory(Some(format!("catalog {} unusable ({e})", path.display())));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(why) = rebuilt {
            eprintln!("warning: {why}; rebuilding it from the repository");
        }
        match cat.sync(&src, trees).and_then(|s| {
            warn(&s);
            cat.read(&f)
        }) {
            Ok(v) => return Ok(v),
            Err(e) if e.is_corrupt() && attempt == 1 => {
                eprintln!("warning: {e}; rebuilding it from the repository");
                drop(cat);
                Catalog::delete_files(&path)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn parse_time(s: &str, what: &str) -> Result<i64> {
    let ts = crate::timespec::parse_local(s).map_err(|e| anyhow!("{what}: {e}"))?;
    // Snapshot times are i64 nanoseconds: years 1677 to 2262.
    i64::try_from(ts.as_nanosecond()).map_err(|_| anyhow!("{what}: {s:?} is outside the years 1677 to 2262"))
}

fn rfc3339(ns: i64) -> String {
    crate::clock::from_unix_ns(ns).to_string()
}

fn snap_time(s: &SnapRow) -> String {
    rfc3339_of(&s.snap)
}

fn local_time(s: &SnapRow) -> String {
    time_of(&s.snap).strftime("%Y-%m-%d %H:%M:%S %:z").to_string()
}

fn mtime_local(ns: i64) -> String {
    let z = crate::clock::from_unix_ns(ns).to_zoned(jiff::tz::TimeZone::system());
    z.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

type Matcher = Box<dyn Fn(&[u8]) -> bool>;

fn glob(p: &str) -> Result<globset::GlobMatcher> {
    let g = globset::GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .with_context(|| format!("bad pattern {p:?}"))?;
    Ok(g.compile_matcher())
}

fn matches(m: &globset::GlobMatcher, b: &[u8]) -> bool {
    m.is_match(Path::new(std::ffi::OsStr::from_bytes(b)))
}

/// A name test for `find`: an exact name (looked up, not scanned for) when the glob has no
/// special characters, else the glob.
enum NameGlob {
    Exact(Vec<u8>),
    Glob(Matcher),
    Any,
}

fn name_glob(p: &str) -> Result<NameGlob> {
    if !p.contains(['*', '?', '[', ']', '{', '}', '\\']) {
        return Ok(NameGlob::Exact(p.as_bytes().to_vec()));
    }
    let m = glob(p)?;
    Ok(NameGlob::Glob(Box::new(move |n| matches(&m, n))))
}

/// (name test, path test) for a `find` pattern: a pattern without `/` tests names; one with
/// `/` tests whole paths (anchored at `/`, else at any depth), and its last part, when it is
/// a plain name glob, serves as a quick name test first.
fn find_matchers(pattern: &str) -> Result<(NameGlob, Matcher)> {
    let p = pattern.trim_end_matches('/');
    if p.is_empty() {
        bail!("give a pattern: a name glob like '*.conf' or a path glob like '/etc/**'");
    }
    if !p.contains('/') {
        return Ok((name_glob(p)?, Box::new(|_| true)));
    }
    let full = if p.starts_with('/') { p.to_string() } else { format!("**/{p}") };
    let pm = glob(&full)?;
    let last = &p[p.rfind('/').expect("contains /") + 1..];
    let name = if last.is_empty() || last.contains("**") || p.contains('{') { NameGlob::Any } else { name_glob(last)? };
    Ok((name, Box::new(move |path| matches(&pm, path))))
}

pub fn find(g: &Global, a: FindArgs) -> Result<ExitCode> {
    let (name_ok, path_ok) = find_matchers(&a.pattern)?;
    let ff = FindFilter {
        since_ns: a.since.as_deref().map(|t| parse_time(t, "--since")).transpose()?,
        until_ns: a.until.as_deref().map(|t| parse_time(t, "--until")).transpose()?,
        hosts: a.hosts.clone(),
        tags: a.tags.clone(),
    };
    let repo = open(g)?;
    let watch = crate::clock::stopwatch();
    let any = |_: &[u8]| true;
    let names = match &name_ok {
        NameGlob::Exact(n) => NameTest::Exact(n),
        NameGlob::Glob(m) => NameTest::Matching(&**m),
        NameGlob::Any => NameTest::Matching(&any),
    };
    let hits = with_catalog(g, &repo, true, |c| c.find(&ff, names, &*path_ok))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for h in &hits {
        let n = &h.node;
        if g.json {
            let doc = json!({
                "snapshot": h.snapshot.id.to_hex(),
                "time": snap_time(&h.snapshot),
                "host": h.snapshot.snap.host,
                "path": lossy(&h.path),
                "type": n.kind.as_str(),
                "size": n.size,
                "mtime": rfc3339(n.mtime_ns),
            });
            json_line(&mut out, &doc)?;
        } else {
            write!(
                out,
                "{}  {}  {:<7} {:>12}  {}  ",
                local_time(&h.snapshot),
                h.snapshot.id.short(),
                n.kind.as_str(),
                n.size,
                mtime_local(n.mtime_ns)
            )?;
            out.write_all(&h.path)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    if !g.json && !g.quiet {
        eprintln!("{} ({:.0} ms)", super::counted(hits.len() as u64, "match"), watch.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ExitCode::Ok)
}

pub fn versions(g: &Global, a: VersionsArgs) -> Result<ExitCode> {
    let path = clean_path(&a.path);
    let repo = open(g)?;
    let watch = crate::clock::stopwatch();
    let vs = with_catalog(g, &repo, true, |c| c.versions(&path, &a.hosts))?;
    let ms = watch.elapsed().as_secs_f64() * 1e3;
    if vs.is_empty() {
        bail!("no snapshot holds {}", lossy(&path));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !g.json {
        writeln!(out, "{}:", lossy(&path))?;
        writeln!(
            out,
            "{:<25}  {:<25}  {:>5}  {:<16}  {:<7}  {:>12}  {:<19}  change",
            "first", "last", "snaps", "host", "type", "size", "mtime"
        )?;
    }
    for v in &vs {
        let n = &v.node;
        if g.json {
            let doc = json!({
                "path": lossy(&path),
                "host": v.first.snap.host,
                "first_snapshot": v.first.id.to_hex(),
                "first_time": snap_time(&v.first),
                "last_snapshot": v.last.id.to_hex(),
                "last_time": snap_time(&v.last),
                "snapshots": v.snapshots,
                "type": n.kind.as_str(),
                "size": n.size,
                "mtime": rfc3339(n.mtime_ns),
                "mode": format!("{:o}", n.mode),
                "uid": n.uid,
                "gid": n.gid,
                "change": v.change,
                "after_gap": v.after_gap,
            });
            json_line(&mut out, &doc)?;
        } else {
            writeln!(
                out,
                "{:<25}  {:<25}  {:>5}  {:<16}  {:<7}  {:>12}  {:<19}  {}",
                format!("{} {}", v.first.id.short(), &local_time(&v.first)[..16]),
                format!("{} {}", v.last.id.short(), &local_time(&v.last)[..16]),
                v.snapshots,
                v.first.snap.host,
                n.kind.as_str(),
                n.size,
                mtime_local(n.mtime_ns),
                match v.change {
                    catalog::VersionChange::First => "first seen",
                    catalog::VersionChange::Content => "content changed",
                    catalog::VersionChange::Metadata => "metadata only",
                    catalog::VersionChange::Type => "type changed",
                    catalog::VersionChange::Reappeared => "back, unchanged",
                }
            )?;
        }
    }
    out.flush()?;
    if !g.json && !g.quiet {
        eprintln!("{} ({ms:.0} ms)", super::counted(vs.len() as u64, "version"));
    }
    Ok(ExitCode::Ok)
}

/// `latest`, a full id or a unique prefix of at least 8 hex digits, among `rows`.
fn resolve(rows: &[Rc<SnapRow>], spec: &str) -> Result<Rc<SnapRow>> {
    if spec == "latest" {
        return rows.last().cloned().ok_or_else(|| anyhow!("the repository has no snapshots"));
    }
    let ids: Vec<SnapshotId> = rows.iter().map(|r| r.id).collect();
    let id = crate::repo::snapshots::match_id(spec, &ids)?;
    Ok(rows.iter().find(|r| r.id == id).expect("match_id picks one of these").clone())
}

fn size_of(n: &Option<NodeInfo>) -> serde_json::Value {
    n.as_ref().map(|n| json!(n.size)).unwrap_or(serde_json::Value::Null)
}

pub fn diff(g: &Global, a: DiffArgs) -> Result<ExitCode> {
    let path = a.path.as_deref().map(clean_path).unwrap_or_else(|| b"/".to_vec());
    let repo = open(g)?;
    let (s1, s2, entries) = with_catalog(g, &repo, true, |c| {
        let rows = c.snapshots()?;
        let pick = |spec: &str| resolve(&rows, spec).map_err(|e| CatalogError::Invalid(e.to_string()));
        let (s1, s2) = (pick(&a.snapshot1)?, pick(&a.snapshot2)?);
        let (n1, n2) = (c.node_at(&s1, &path)?, c.node_at(&s2, &path)?);
        if n1.is_none() && n2.is_none() {
            return Err(CatalogError::Invalid(format!("{} is in neither snapshot", lossy(&path))));
        }
        Ok((s1, s2, c.diff(&path, n1.as_ref(), n2.as_ref())?))
    })?;
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in &entries {
        let word = serde_json::to_value(e.kind)?.as_str().unwrap_or_default().to_string();
        *counts
            .entry(match e.kind {
                catalog::DiffKind::Added => "added",
                catalog::DiffKind::Removed => "removed",
                catalog::DiffKind::Modified => "modified",
                catalog::DiffKind::Metadata => "metadata",
                catalog::DiffKind::Type => "type",
            })
            .or_default() += 1;
        let kind = e.after.as_ref().or(e.before.as_ref()).map(|n| n.kind.as_str()).unwrap_or("");
        if g.json {
            let doc = json!({
                "message_type": "change",
                "change": word,
                "path": lossy(&e.path),
                "type": kind,
                "size_before": size_of(&e.before),
                "size_after": size_of(&e.after),
            });
            json_line(&mut out, &doc)?;
        } else {
            let slash = if kind == "dir" { "/" } else { "" };
            write!(out, "{}    ", e.kind.mark())?;
            out.write_all(&e.path)?;
            writeln!(out, "{slash}")?;
        }
    }
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    if g.json {
        let doc = json!({
            "message_type": "statistics",
            "snapshot1": s1.id.to_hex(),
            "snapshot2": s2.id.to_hex(),
            "added": n("added"), "removed": n("removed"), "modified": n("modified"),
            "metadata": n("metadata"), "type": n("type"),
        });
        json_line(&mut out, &doc)?;
    } else if !g.quiet {
        eprintln!(
            "{} -> {}: {} added, {} removed, {} modified, {} metadata only, {} type changed",
            s1.id.short(),
            s2.id.short(),
            n("added"),
            n("removed"),
            n("modified"),
            n("metadata"),
            n("type")
        );
    }
    out.flush()?;
    Ok(ExitCode::Ok)
}

/// The newest snapshot at or before `when` that `f` allows and that covers `path`.
/// A path missing from the snapshot chosen, said with the snapshot's name and the newest
/// snapshot that does hold the path (from the catalog), if any; other errors as they are.
pub fn not_in_snapshot(
    g: &Global,
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    path: &[u8],
    e: crate::restore::RestoreError,
) -> anyhow::Error {
    if !matches!(e, crate::restore::RestoreError::NotInSnapshot(_)) {
        return e.into();
    }
    let when = |ns: i64| crate::clock::from_unix_ns(ns).strftime("%Y-%m-%d %H:%M:%S").to_string();
    let mut msg =
        format!("{} is not in snapshot {} of {} at {}", lossy(path), id.short(), snap.host, when(snap.time_ns));
    match with_catalog(g, repo, true, |c| c.versions(path, &[])) {
        Ok(vs) => match vs.iter().max_by_key(|v| v.last.snap.time_ns) {
            Some(v) => msg.push_str(&format!(
                "; the newest snapshot holding it is {} of {} at {} (`--as-of '{}'`, or `{}:{}` for restore)",
                v.last.id.short(),
                v.last.snap.host,
                when(v.last.snap.time_ns),
                rfc3339(v.last.snap.time_ns),
                v.last.id.short(),
                lossy(path)
            )),
            None => msg.push_str("; no snapshot holds it"),
        },
        Err(err) => msg.push_str(&format!(" (the catalog, which knows where it is, is unavailable: {err})")),
    }
    anyhow::Error::new(crate::repo::RepoError::Invalid(msg))
}

pub fn as_of(
    g: &Global,
    repo: &Repository,
    when: &str,
    f: &SnapshotFilter,
    path: &[u8],
) -> Result<(SnapshotId, Snapshot)> {
    let t = parse_time(when, "--as-of")?;
    let rows = with_catalog(g, repo, false, |c| c.snapshots())?;
    let hit = rows.iter().rev().find(|r| r.snap.time_ns <= t && f.matches(&r.snap) && covers(&r.snap, path));
    match hit {
        // The catalog chose the snapshot; its manifest comes from the repository itself,
        // authenticated, so a tampered catalog cannot point a restore at another tree.
        Some(r) => Ok((r.id, repo.load_snapshot(&r.id)?)),
        None => Err(anyhow::Error::new(crate::repo::RepoError::Invalid(format!(
            "no snapshot{} at or before {}{}",
            if f.hosts.is_empty() && f.tags.is_empty() && f.paths.is_empty() { "" } else { " matching the filters" },
            rfc3339(t),
            if path == b"/" { String::new() } else { format!(" holds {}", lossy(path)) }
        )))),
    }
}

pub fn stats(g: &Global, a: StatsArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let f = filter(&a.filter);
    let snaps = match &a.snapshot {
        Some(spec) => vec![repo.find_snapshot(spec, &f)?],
        None => repo.load_snapshots()?.into_iter().filter(|(_, s)| f.matches(s)).collect(),
    };
    let all = repo.load_snapshots()?.len() as u64;
    let index = repo.load_index()?;
    let mut walker = stats::Walker::default();
    let mut per = Vec::new();
    let mut logical = stats::Counts::default();
    for (id, s) in &snaps {
        let st = walker.snapshot(&repo, &index, s)?;
        logical += st.counts;
        per.push((id, s, st));
    }
    if a.snapshot.is_some() || per.len() as u64 != all {
        // The repository's logical total is over all its snapshots, not just those shown.
        logical = stats::Counts::default();
        for (_, s) in repo.load_snapshots()? {
            logical += walker.snapshot(&repo, &index, &s)?.counts;
        }
    }
    let r = stats::repo_stats(&index, all, logical);
    if g.json {
        let snapshots: Vec<_> = per
            .iter()
            .map(|(id, s, st)| {
                let mut v = serde_json::to_value(st).unwrap_or_default();
                v["id"] = json!(id.to_hex());
                v["time"] = json!(time_of(s).timestamp().to_string());
                v["host"] = json!(s.host);
                v["stored_bytes"] = json!(st.data.stored_bytes + st.trees.stored_bytes);
                v["dedup_ratio"] = json!(ratio(st.counts.logical_bytes, st.data.raw_bytes));
                v["compression_ratio"] = json!(ratio(st.data.raw_bytes, st.data.stored_bytes));
                v
            })
            .collect();
        let mut repo_v = serde_json::to_value(r)?;
        repo_v["dedup_ratio"] = json!(ratio(r.counts.logical_bytes, r.data.raw_bytes));
        repo_v["compression_ratio"] = json!(ratio(r.data.raw_bytes, r.data.stored_bytes));
        print_json(&json!({ "snapshots": snapshots, "repository": repo_v }))?;
        return Ok(ExitCode::Ok);
    }
    let hb = |b: u64| indicatif::HumanBytes(b).to_string();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8}  {:<19}  {:>9}  {:>11}  {:>11}  {:>11}  {:>6}  {:>6}",
        "id", "time", "files", "logical", "unique", "stored", "dedup", "zstd"
    )?;
    for (id, s, st) in &per {
        writeln!(
            out,
            "{:<8}  {:<19}  {:>9}  {:>11}  {:>11}  {:>11}  {:>5.2}x  {:>5.2}x",
            id.short(),
            time_of(s).strftime("%Y-%m-%d %H:%M:%S").to_string(),
            st.counts.files,
            hb(st.counts.logical_bytes),
            hb(st.data.raw_bytes),
            hb(st.data.stored_bytes + st.trees.stored_bytes),
            ratio(st.counts.logical_bytes, st.data.raw_bytes),
            ratio(st.data.raw_bytes, st.data.stored_bytes),
        )?;
    }
    writeln!(out, "repository: {} snapshots, {} files in all", r.snapshots, r.counts.files)?;
    writeln!(out, "  logical size (all snapshots): {}", hb(r.counts.logical_bytes))?;
    writeln!(
        out,
        "  unique data: {} in {} blobs, stored as {}",
        hb(r.data.raw_bytes),
        r.data.blobs,
        hb(r.data.stored_bytes)
    )?;
    writeln!(out, "  directory listings: {} in {} blobs", hb(r.trees.stored_bytes), r.trees.blobs)?;
    writeln!(out, "  packs: {} in {}", hb(r.pack_bytes), r.packs)?;
    writeln!(
        out,
        "  deduplication {:.2}x, compression {:.2}x, logical size / packs {:.2}x",
        ratio(r.counts.logical_bytes, r.data.raw_bytes),
        ratio(r.data.raw_bytes, r.data.stored_bytes),
        ratio(r.counts.logical_bytes, r.pack_bytes)
    )?;
    Ok(ExitCode::Ok)
}

pub fn catalog(g: &Global, cmd: CatalogCommand) -> Result<ExitCode> {
    let repo = open(g)?;
    let path = catalog_path(g, &repo);
    let src = RepoSource { repo: &repo, index: OnceCell::new() };
    let id = repo.id().0;
    let watch = crate::clock::stopwatch();
    let mut verify_secs = 0.0;
    let mut cat = match &path {
        Some(p) => {
            let (cat, why) = Catalog::open_or_rebuild(p, &id)?;
            if let Some(why) = why {
                eprintln!("warning: {why}; rebuilding it from the repository");
            }
            // Check the whole file; a damaged one is rebuilt like any other.
            let check = crate::clock::stopwatch();
            let verified = cat.verify();
            verify_secs = check.elapsed().as_secs_f64();
            match verified {
                Err(e) if e.is_corrupt() => {
                    eprintln!("warning: {e}; rebuilding it from the repository");
                    drop(cat);
                    Catalog::delete_files(p)?;
                    Catalog::open(p, &id)?
                }
                other => other.map(|_| cat)?,
            }
        }
        None => Catalog::in_memory(&id)?,
    };
    if let CatalogCommand::Rebuild = cmd {
        cat.clear()?;
    }
    let synced = cat.sync(&src, true)?;
    synced.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
    let secs = watch.elapsed().as_secs_f64() - verify_secs;
    let info = cat.info()?;
    // Closing the last connection folds the write-ahead log into the file.
    drop(cat);
    let file_bytes = path.as_ref().map(|p| catalog_bytes(p)).unwrap_or(0);
    if g.json {
        let mut doc = json!({
            "path": path.as_ref().map(|p| p.display().to_string()),
            "file_bytes": file_bytes,
            "sync": synced,
            "duration": secs,
            "integrity": "ok",
            "verify_duration": verify_secs,
        });
        for (k, v) in &info {
            doc[k.as_str()] = json!(v);
        }
        print_json(&doc)?;
    } else {
        match &path {
            Some(p) => eprintln!("catalog: {} ({})", p.display(), indicatif::HumanBytes(file_bytes)),
            None => eprintln!("catalog: in memory (--no-cache)"),
        }
        let rows: Vec<String> = info.iter().filter(|(k, _)| k != "bytes").map(|(k, v)| format!("{v} {k}")).collect();
        eprintln!("holds {}; integrity check ok ({verify_secs:.2}s)", rows.join(", "));
        eprintln!(
            "synced in {secs:.2}s: {} snapshots added, {} removed, {} indexed ({} trees, {} nodes)",
            synced.snapshots_added,
            synced.snapshots_removed,
            synced.snapshots_indexed,
            synced.trees_indexed,
            synced.nodes_added
        );
    }
    Ok(ExitCode::Ok)
}

/// The catalog's size on disk, with its write-ahead log.
fn catalog_bytes(p: &Path) -> u64 {
    let wal = {
        let mut s = p.as_os_str().to_owned();
        s.push("-wal");
        s
    };
    [p.as_os_str().to_owned(), wal].iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}
