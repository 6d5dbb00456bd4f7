//! `drill`: rehearse a recovery. Restore for real, prove the bytes, measure how long a full
//! recovery would take, and keep the evidence in the repository.
//!
//! One drill takes one snapshot:
//! 1. **Walk** every tree of the snapshot (timed: a full restore reads them all too), listing
//!    its files; a tree that cannot be read is damage.
//! 2. **Sample**: with a share P, the files are split into `t = round(100 / P)` parts by a
//!    keyed hash of their paths under a *seed*; this drill takes one part. The seed and `t`
//!    are kept in the drill record, and the next drill of the same host with the same `t`
//!    reuses the seed and takes the next part, so `t` successive drills cover every file
//!    (files added since fall into some part). `--full` takes every file.
//! 3. **Restore** the sample for real (content and metadata) into a scratch directory with
//!    the restore code itself, reading every restored file back and checking each chunk
//!    against its id; optionally compare files unchanged since the snapshot with the live
//!    ones (`--compare-source`). What cannot be restored exactly is damage (and is recorded
//!    in the repository, as `restore` does).
//! 4. **Measure** the time each file took in its worker, fit `time = a + b * bytes` to the
//!    sample (least squares, both terms at least 0), and project the full restore: walk time
//!    plus `(a * files + b * bytes) / concurrency` over the whole snapshot, concurrency being
//!    the workers' total time over the restore's wall time. That is the RTO. The RPO is the
//!    age of the host's newest snapshot, and the largest gap between its snapshots (and from
//!    the newest to now) over the last 30 days.
//! 5. **Keep** a record (`drills/<id>`, docs/format.md "Drill records") with the results.

pub mod report;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::drill::DrillRecord;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::progress::Progress;
use crate::repo::{MasterIndex, RepoError, Repository};
use crate::restore::{self, Only, RestoreOptions};

/// How much to restore.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// A share in (0, 1] of the files.
    Share(f64),
    Full,
}

/// What to drill and against which objectives.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub sample: Sample,
    /// Restore here and keep it (else a scratch directory, removed afterwards).
    pub target: Option<PathBuf>,
    pub compare_source: bool,
    pub rto_secs: Option<u64>,
    pub rpo_secs: Option<u64>,
    pub threads: usize,
}

/// Something found wrong.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Damaged {
    /// The path in the snapshot (a file or a directory).
    pub path: String,
    /// What failed, naming the objects involved.
    pub error: String,
}

/// An objective and whether it was met.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Objective {
    pub target: Option<u64>,
    pub met: Option<bool>,
}

/// The outcome of one drill.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DrillResult {
    pub drill_id: String,
    pub snapshot: String,
    pub host: String,
    pub time: String,
    pub full: bool,
    pub sample: f64,
    pub seed: String,
    pub part: u32,
    pub parts: u32,
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub source_compared: u64,
    pub damaged: Vec<Damaged>,
    pub damage_recorded: u64,
    /// Seconds: the tree walk and the restore of the sample.
    pub duration: f64,
    pub walk_seconds: f64,
    /// Bytes per second of the sample's restore.
    pub throughput: f64,
    pub projected_full_restore_seconds: f64,
    pub rpo_seconds: f64,
    pub rpo_max_gap_seconds: f64,
    pub objectives: Objectives,
    /// Share of the snapshot's bytes verified by this drill and the earlier ones of its cycle.
    pub coverage: f64,
    pub passed: bool,
    /// Where the sample was restored, if it was kept.
    pub target: Option<String>,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Objectives {
    pub rto: Objective,
    pub rpo: Objective,
}

/// A file of the snapshot.
struct FileEntry {
    path: Vec<u8>,
    node: Node,
}

/// Lists every file of the snapshot, timing the walk; unreadable trees are damage.
fn walk(repo: &Repository, index: &MasterIndex, root: BlobId) -> (Vec<FileEntry>, Vec<Damaged>, f64) {
    let started = std::time::Instant::now();
    let (mut files, mut damaged) = (Vec::new(), Vec::new());
    // A subtree met under two paths (identical directories) is listed under both.
    let mut stack: Vec<(BlobId, Vec<u8>)> = vec![(root, b"/".to_vec())];
    while let Some((tid, path)) = stack.pop() {
        match repo.load_tree(index, &tid) {
            Ok(nodes) => {
                for n in nodes {
                    let p = join(&path, &n.name);
                    match (n.kind, n.subtree) {
                        (NodeKind::Dir, Some(s)) => stack.push((BlobId(s), p)),
                        (NodeKind::File, _) => files.push(FileEntry { path: p, node: n }),
                        _ => {}
                    }
                }
            }
            Err(e) => damaged.push(Damaged { path: shown(&path), error: format!("directory unreadable: {e}") }),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (files, damaged, started.elapsed().as_secs_f64())
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Which of `parts` parts a path is in under `seed`.
pub fn part_of(seed: &[u8; 32], path: &[u8], parts: u32) -> u32 {
    let h = blake3::keyed_hash(seed, path);
    (u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")) % u64::from(parts)) as u32
}

/// The number of parts for a share (`round(1 / share)`, at least 1).
pub fn parts_for(share: f64) -> u32 {
    ((1.0 / share).round() as u32).max(1)
}

/// The seed of this drill and the parts the earlier drills of its cycle took: the host's
/// latest seed with this many parts, and the parts of the records since the cycle began
/// (a cycle is a run of drills whose parts increase; the next drill takes a higher part).
fn seed_and_cycle(history: &[DrillRecord], host: &str, parts: u32) -> ([u8; 32], Vec<u32>) {
    let same: Vec<&DrillRecord> = history.iter().filter(|r| r.host == host && r.parts == parts && !r.full).collect();
    let Some(last) = same.last() else {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random source");
        return (seed, Vec::new());
    };
    let mine: Vec<u32> = same.iter().filter(|r| r.seed == last.seed).map(|r| r.part).collect();
    // The current cycle: the longest increasing run at the end.
    let mut start = mine.len() - 1;
    while start > 0 && mine[start - 1] < mine[start] {
        start -= 1;
    }
    (last.seed, mine[start..].to_vec())
}

/// The part to take: the first part after the cycle's last that holds a file (parts with
/// no file are skipped: they have nothing to prove), wrapping around to begin a new cycle.
/// Returns the part and whether it begins a new cycle.
fn next_part(cycle: &[u32], parts: u32, has_files: impl Fn(u32) -> bool) -> (u32, bool) {
    let after = cycle.last().map_or(0, |p| p + 1);
    for k in after..parts {
        if has_files(k) {
            return (k, false);
        }
    }
    for k in 0..parts {
        if has_files(k) {
            return (k, !cycle.is_empty());
        }
    }
    (after % parts, !cycle.is_empty() && after >= parts)
}

/// Fits `ns = a + b * bytes` (least squares, a and b at least 0) to the samples.
fn fit(samples: &[(u64, u64)]) -> (f64, f64) {
    let n = samples.len() as f64;
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mx = samples.iter().map(|s| s.0 as f64).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxx: f64 = samples.iter().map(|s| (s.0 as f64 - mx).powi(2)).sum();
    let sxy: f64 = samples.iter().map(|s| (s.0 as f64 - mx) * (s.1 as f64 - my)).sum();
    let mut b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let mut a = my - b * mx;
    if b < 0.0 {
        (a, b) = (my, 0.0);
    }
    if a < 0.0 {
        // Through the origin: all time per byte.
        let sx2: f64 = samples.iter().map(|s| (s.0 as f64).powi(2)).sum();
        let sxy0: f64 = samples.iter().map(|s| s.0 as f64 * s.1 as f64).sum();
        (a, b) = (0.0, if sx2 > 0.0 { sxy0 / sx2 } else { 0.0 });
    }
    (a, b)
}

/// The RPO of `host` now: the age of its newest snapshot, and the largest gap between its
/// snapshots (and from the newest to now) in the last 30 days. Seconds.
pub fn rpo(snapshots: &[(SnapshotId, Snapshot)], host: &str, now_ns: i64) -> (f64, f64) {
    let mut times: Vec<i64> = snapshots.iter().filter(|(_, s)| s.host == host).map(|(_, s)| s.time_ns).collect();
    times.sort();
    let Some(newest) = times.last().copied() else { return (f64::INFINITY, f64::INFINITY) };
    let age = (now_ns - newest).max(0) as f64 / 1e9;
    let from = now_ns - 30 * 86_400 * 1_000_000_000;
    let recent: Vec<i64> = times.iter().copied().filter(|t| *t >= from).chain([now_ns]).collect();
    let gap = recent.windows(2).map(|w| (w[1] - w[0]).max(0)).max().unwrap_or(0) as f64 / 1e9;
    (age, gap.max(age))
}

/// Runs one drill of `snap` (see the module docs) and stores its record.
pub fn run(
    repo: &Arc<Repository>,
    index: &Arc<MasterIndex>,
    id: SnapshotId,
    snap: &Snapshot,
    all: &[(SnapshotId, Snapshot)],
    opts: &DrillOptions,
    progress: Arc<dyn Progress>,
) -> Result<DrillResult, RepoError> {
    let started = std::time::Instant::now();
    let history: Vec<DrillRecord> = repo.load_drills()?.into_iter().map(|(_, r)| r).collect();
    let (files, mut damaged, walk_secs) = walk(repo, index, BlobId(snap.tree));
    let (full, parts) = match opts.sample {
        Sample::Full => (true, 1),
        Sample::Share(s) => (false, parts_for(s)),
    };
    let (seed, cycle) = if full { ([0u8; 32], Vec::new()) } else { seed_and_cycle(&history, &snap.host, parts) };
    let part_of_file: Vec<u32> = files.iter().map(|f| if full { 0 } else { part_of(&seed, &f.path, parts) }).collect();
    let occupied: HashSet<u32> = part_of_file.iter().copied().collect();
    let (part, new_cycle) = if full { (0, false) } else { next_part(&cycle, parts, |k| occupied.contains(&k)) };
    let chosen: Vec<&FileEntry> =
        files.iter().zip(&part_of_file).filter(|(_, p)| **p == part).map(|(f, _)| f).collect();
    let bytes_total: u64 = files.iter().map(|f| f.node.size).sum();
    // Restore the sample for real.
    let scratch;
    let target = match &opts.target {
        Some(t) => t.clone(),
        None => {
            scratch = tempfile::Builder::new()
                .prefix("coffer-drill-")
                .tempdir()
                .map_err(|e| RepoError::Invalid(format!("scratch directory: {e}")))?;
            scratch.path().to_path_buf()
        }
    };
    let only = Only::new(chosen.iter().map(|f| f.path.clone()));
    let ropts = RestoreOptions {
        target: target.clone(),
        include: crate::source::exclude::Patterns::new(&[]).map_err(|e| RepoError::Invalid(e.to_string()))?,
        exclude: crate::source::exclude::Patterns::new(&[]).map_err(|e| RepoError::Invalid(e.to_string()))?,
        verify: true,
        threads: opts.threads,
        only: Some(Arc::new(only)),
        timings: true,
        // A drill measures a real restore: everything is written, whatever is there.
        overwrite: crate::restore::Overwrite::Always,
        delete: false,
    };
    let root = Node { subtree: Some(snap.tree), ..Node::new(Vec::new(), NodeKind::Dir) };
    let restore_started = std::time::Instant::now();
    let sum = restore::run(repo.clone(), index.clone(), root, b"/", ropts, progress).map_err(|e| match e {
        restore::RestoreError::Repo(e) => e,
        e => RepoError::Invalid(e.to_string()),
    })?;
    let restore_secs = restore_started.elapsed().as_secs_f64();
    for e in &sum.errors {
        let (path, error) = e.split_once(": ").unwrap_or(("", e));
        damaged.push(Damaged { path: path.to_string(), error: error.to_string() });
    }
    let failed: HashSet<&[u8]> = sum.failed_paths.iter().map(Vec::as_slice).collect();
    let mut source_compared = 0;
    if opts.compare_source {
        for f in chosen.iter().filter(|f| !failed.contains(f.path.as_slice())) {
            match compare_with_source(&target, f) {
                Compared::Same => source_compared += 1,
                Compared::Changed => {}
                Compared::Differs(why) => {
                    source_compared += 1;
                    damaged.push(Damaged { path: shown(&f.path), error: why });
                }
            }
        }
    }
    // Measurements and projections.
    let bytes_checked: u64 = chosen.iter().filter(|f| !failed.contains(f.path.as_slice())).map(|f| f.node.size).sum();
    let files_checked = chosen.len() as u64 - failed.len().min(chosen.len()) as u64;
    let (a, b) = fit(&sum.timings);
    let busy: f64 = sum.timings.iter().map(|t| t.1 as f64).sum::<f64>() / 1e9;
    let concurrency = if restore_secs > 0.0 { (busy / restore_secs).max(1.0) } else { 1.0 };
    // Nothing restored (every file failed) measures nothing: there is no projection then.
    let measured = !sum.timings.is_empty() || files.is_empty();
    let projected = if full {
        walk_secs + restore_secs
    } else {
        walk_secs + (a * files.len() as f64 + b * bytes_total as f64) / 1e9 / concurrency
    };
    let now_ns = crate::clock::to_unix_ns(crate::clock::now());
    let (rpo_s, gap_s) = rpo(all, &snap.host, now_ns);
    let rto_met = opts.rto_secs.and_then(|t| measured.then_some(projected <= t as f64));
    let rpo_met = opts.rpo_secs.map(|t| gap_s <= t as f64);
    // Coverage: the parts drilled in this cycle (this one and the earlier ones), by bytes.
    let mut done_parts: HashSet<u32> = if new_cycle { HashSet::new() } else { cycle.iter().copied().collect() };
    done_parts.insert(part);
    let covered: u64 =
        files.iter().zip(&part_of_file).filter(|(_, p)| done_parts.contains(p)).map(|(f, _)| f.node.size).sum();
    let coverage = match (bytes_total, files.is_empty()) {
        // Nothing to prove is proven only if nothing failed either.
        (0, _) if !damaged.is_empty() => 0.0,
        (0, _) => 1.0,
        _ => covered as f64 / bytes_total as f64,
    };
    let passed = damaged.is_empty() && rto_met != Some(false) && rpo_met != Some(false);
    let duration = started.elapsed().as_secs_f64();
    let rec = DrillRecord {
        time_ns: now_ns,
        host: snap.host.clone(),
        snapshot: id.0,
        passed,
        full,
        seed,
        parts,
        part,
        sample_ppm: (1_000_000 / parts).min(1_000_000),
        files_checked,
        bytes_checked,
        files_total: files.len() as u64,
        bytes_total,
        duration_ns: (duration * 1e9) as u64,
        projected_ns: (projected * 1e9) as u64,
        rpo_ns: (rpo_s.min(1e12) * 1e9) as u64,
        rpo_max_gap_ns: (gap_s.min(1e12) * 1e9) as u64,
        rto_target_ns: opts.rto_secs.map(|s| s.saturating_mul(1_000_000_000)),
        rpo_target_ns: opts.rpo_secs.map(|s| s.saturating_mul(1_000_000_000)),
        coverage_ppm: (coverage * 1e6).round().min(1e6) as u32,
        damaged: damaged.iter().map(|d| format!("{}: {}", d.path, d.error)).collect(),
        program_version: format!("coffer {}", env!("CARGO_PKG_VERSION")),
    };
    let drill_id = repo.save_drill(&rec)?;
    Ok(DrillResult {
        drill_id: drill_id.to_hex(),
        snapshot: id.to_hex(),
        host: snap.host.clone(),
        time: crate::clock::from_unix_ns(now_ns).to_string(),
        full,
        sample: 1.0 / f64::from(parts),
        seed: hex::encode(seed),
        part,
        parts,
        files_total: files.len() as u64,
        bytes_total,
        files_checked,
        bytes_checked,
        source_compared,
        damaged,
        damage_recorded: sum.damage_recorded,
        duration,
        walk_seconds: walk_secs,
        throughput: if restore_secs > 0.0 { bytes_checked as f64 / restore_secs } else { 0.0 },
        projected_full_restore_seconds: projected,
        rpo_seconds: rpo_s,
        rpo_max_gap_seconds: gap_s,
        objectives: Objectives {
            rto: Objective { target: opts.rto_secs, met: rto_met },
            rpo: Objective { target: opts.rpo_secs, met: rpo_met },
        },
        coverage,
        passed,
        target: opts.target.as_ref().map(|t| t.display().to_string()),
    })
}

enum Compared {
    Same,
    /// The live file changed since the snapshot (or is gone): nothing to compare.
    Changed,
    Differs(String),
}

/// Compares a restored file with the live one, if the live one is unchanged since the
/// snapshot (same size and mtime).
fn compare_with_source(target: &Path, f: &FileEntry) -> Compared {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let live = Path::new(std::ffi::OsStr::from_bytes(&f.path));
    let Ok(m) = std::fs::symlink_metadata(live) else { return Compared::Changed };
    if !m.is_file()
        || m.len() != f.node.size
        || m.mtime() != f.node.mtime.sec
        || m.mtime_nsec() as u32 != f.node.mtime.nsec
    {
        return Compared::Changed;
    }
    let restored = target.join(std::ffi::OsStr::from_bytes(&f.path[1..]));
    match (std::fs::read(live), std::fs::read(&restored)) {
        (Ok(a), Ok(b)) if a == b => Compared::Same,
        (Ok(_), Ok(_)) => Compared::Differs(
            "the restored file differs from the live one, which is unchanged since the snapshot (same size and mtime)"
                .into(),
        ),
        (Err(_), _) => Compared::Changed,
        (_, Err(e)) => Compared::Differs(format!("the restored file cannot be read: {e}")),
    }
}
