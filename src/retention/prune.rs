//! `prune`: reclaim the space of data no snapshot needs, while backups keep running.
//!
//! The protocol and the argument for its safety are in docs/storage.md ("Many clients and
//! prune"); in short:
//! - prune holds a session of kind prune ([`Session`]); a second prune that finds a live
//!   one with an earlier start refuses (exit 11);
//! - it never deletes a pack it has just found unneeded. It first writes an
//!   *obsolete-packs record* naming it (an index file of kind 1), then a new index without
//!   it. Writers stop deduplicating against it at once; readers still find it. The pack is
//!   deleted only once every session that could have read the index before the record
//!   has ended: no live session started (by the storage's clock) before the record was
//!   written, plus [`MARGIN`]. That is decided again from fresh listings at the end of the
//!   same run, so with no backup running one run completes; otherwise the next run does;
//! - before deleting, every blob a snapshot needs that only an obsolete pack holds is
//!   copied into a new pack ("rescued"), so no snapshot, however late it was written,
//!   loses data;
//! - a pack no index lists is a *leftover* only if no live session started before it was
//!   written (with [`MARGIN`]): a running backup's unindexed packs are never touched.
//!
//! The work is a [`Plan`], computed from listings taken in a fixed order (data, locks,
//! index, snapshots: see [`plan`]); `--dry-run` prints it, [`execute`] carries it out.
//! Nothing here reads a clock: storage timestamps and the sessions' locks decide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::format::index::{IndexFile, IndexKind, IndexPack};
use crate::format::lock::LockKind;
use crate::format::tree::NodeKind;
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::progress::Progress;
use crate::repo::index::{BlobLoc, MasterIndex};
use crate::repo::lock::{list_sessions, margin_ns, Session, SessionInfo};
use crate::repo::writer::BlobSink;
use crate::repo::{index_path, pack_path, RepoError, Repository, Result};
use crate::storage::Listed;

/// How much unused space prune may leave (restic's `--max-unused`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// Unused space may be at most this percentage of the packs kept after pruning.
    Percent(f64),
    Bytes(u64),
    /// Only packs with no used blob at all are removed; nothing is repacked for space.
    Unlimited,
}

/// Parses `5%`, `500M` / `2G` (1024-based, as restic) or `unlimited`.
pub fn parse_max_unused(s: &str) -> std::result::Result<MaxUnused, String> {
    let t = s.trim();
    if t == "unlimited" {
        return Ok(MaxUnused::Unlimited);
    }
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| format!("--max-unused {s:?}: not a percentage"))?;
        if !(0.0..100.0).contains(&p) {
            return Err(format!("--max-unused {s:?}: a percentage from 0 to below 100"));
        }
        return Ok(MaxUnused::Percent(p));
    }
    parse_size(t).map(MaxUnused::Bytes).map_err(|e| format!("--max-unused: {e}"))
}

/// A size: bytes, or a number with a `k`, `m`, `g` or `t` suffix (1024-based).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size (give bytes, or 500M, 2G)"))?;
    if n.is_nan() || n < 0.0 || n * mult as f64 > u64::MAX as f64 {
        return Err(format!("{s:?} is not a size (give bytes, or 500M, 2G)"));
    }
    Ok((n * mult as f64) as u64)
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub max_unused: MaxUnused,
    pub max_repack: Option<u64>,
    /// Packs read and rewritten at once.
    pub threads: usize,
    pub uploaders: usize,
}

/// Counts of packs and bytes.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Amount {
    pub packs: u64,
    pub bytes: u64,
}

impl Amount {
    fn add(&mut self, bytes: u64) {
        self.packs += 1;
        self.bytes += bytes;
    }
}

/// Requests a plan makes, estimated before it runs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Requests {
    pub get: u64,
    pub put: u64,
    pub delete: u64,
    pub list: u64,
}

/// What prune will do, computed before it does anything.
#[derive(Default, serde::Serialize)]
pub struct Plan {
    pub snapshots: usize,
    /// Live sessions of others (backups, copies) the plan works around.
    pub sessions: Vec<SessionInfo>,
    pub packs: Amount,
    /// Bytes of blobs snapshots need, and of those no snapshot needs (in live packs).
    pub used_bytes: u64,
    pub unused_bytes: u64,
    /// Packs whose used blobs are copied into new packs, then marked obsolete.
    pub repack: Amount,
    /// Bytes of blobs copied out of repacked packs (and rescued from obsolete ones).
    pub repack_copy_bytes: u64,
    /// Packs with no used blob, marked obsolete.
    pub unused: Amount,
    /// Packs no index lists, left by processes that are over; marked obsolete.
    pub leftovers: Amount,
    /// Packs no index lists that belong to running sessions: left alone.
    pub in_flight: Amount,
    /// Blobs a snapshot needs that only obsolete packs hold: copied into new packs.
    pub rescue_blobs: u64,
    /// Obsolete packs deleted now (every session that could use them has ended).
    pub delete: Amount,
    /// Obsolete packs kept for now because sessions that may use them still run.
    pub waiting: Amount,
    /// Index files replaced by the rewritten index, and records deleted.
    pub index_files_replaced: u64,
    /// Obsolete packs S3 Object Lock still keeps: left, marked, for a later prune.
    pub locked: Amount,
    /// The latest retain-until date among them (Unix ns; 0 when none).
    pub locked_until_ns: i64,
    /// Objects (packs, index files, keys, config) whose lock is extended.
    pub locks_to_extend: u64,
    #[serde(skip)]
    extend_locks: Vec<(String, i64)>,
    /// Superseded index files of an Object Lock repository, deleted where their lock lapsed.
    #[serde(skip)]
    delete_superseded: Vec<IndexId>,
    pub requests: Requests,
    #[serde(skip)]
    copy: BTreeMap<u32, Vec<(BlobId, BlobLoc)>>,
    #[serde(skip)]
    rescue: Vec<BlobId>,
    /// Obsolete packs the rescued blobs are copied from: marked again after the copies are
    /// indexed, so a session that read the index before then keeps them (see `plan_obsolete`).
    #[serde(skip)]
    rescue_from: HashSet<PackId>,
    #[serde(skip)]
    condemn: HashSet<PackId>,
    #[serde(skip)]
    delete_packs: Vec<PackId>,
    #[serde(skip)]
    rewrite_from: Vec<IndexId>,
    #[serde(skip)]
    replace: Vec<IndexId>,
    #[serde(skip)]
    records: Vec<(IndexId, Vec<PackId>)>,
    /// Damage records (kind 2): deleted like finished records once their packs are gone.
    #[serde(skip)]
    damage_records: Vec<(IndexId, Vec<PackId>)>,
    #[serde(skip)]
    seen_snapshots: HashSet<SnapshotId>,
    #[serde(skip)]
    seen_trees: HashSet<BlobId>,
    #[serde(skip)]
    pack_target: u64,
    #[serde(skip)]
    local: bool,
    /// Packs no rewritten index may list: those marked now, and those already obsolete.
    #[serde(skip)]
    exclude: HashSet<PackId>,
    #[serde(skip)]
    index: MasterIndex,
}

impl Plan {
    /// Whether executing it changes anything.
    pub fn is_noop(&self) -> bool {
        self.copy.is_empty()
            && self.rescue.is_empty()
            && self.condemn.is_empty()
            && self.delete_packs.is_empty()
            && self.replace.is_empty()
            && self.records.is_empty()
    }

    /// Bytes freed once everything marked now is deleted too.
    pub fn freed_eventually(&self) -> u64 {
        self.repack.bytes + self.unused.bytes + self.leftovers.bytes + self.delete.bytes + self.waiting.bytes
            - self.repack_copy_bytes.min(self.repack.bytes)
    }
}

/// The outcome of a prune run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub packs_written: u64,
    pub bytes_written: u64,
    pub packs_marked: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Obsolete packs left for a later prune (sessions still running, or snapshots written
    /// meanwhile that need them).
    pub packs_waiting: u64,
    pub index_files_written: u64,
    pub index_files_deleted: u64,
    /// Objects whose S3 Object Lock was extended.
    pub locks_extended: u64,
    /// Objects left because S3 Object Lock still keeps them.
    pub objects_locked: u64,
    /// Requests actually made, by kind.
    pub requests: serde_json::Value,
}

/// Starts a prune session, refusing (exit 11) when another prune runs.
pub fn start_session(repo: &Repository) -> Result<(Session, i64)> {
    start_exclusive(repo, "prune")
}

/// Starts an exclusive session (a prune, a repair) for `command`, refusing (exit 11) when
/// another one runs.
pub fn start_exclusive(repo: &Repository, command: &str) -> Result<(Session, i64)> {
    let session = Session::start(repo, LockKind::Prune, command)?;
    let sessions = list_sessions(repo)?;
    let me = sessions.iter().find(|s| s.session == session.id()).cloned();
    let Some(me) = me else {
        return Err(RepoError::Invalid("the prune lock just written is missing from the listing of locks/".into()));
    };
    let now = me.renewed_ns;
    // Any other live prune stops this one, unless it clearly started after this one (it
    // then stops itself). Storage timestamps may be misordered by up to MARGIN, so two
    // prunes started within MARGIN of each other both stop: safe, and rare.
    let rival = sessions
        .iter()
        .filter(|s| s.is_prune() && s.session != me.session && s.is_live(now))
        .find(|s| s.started_ns <= me.started_ns.saturating_add(margin_ns()));
    if let Some(r) = rival {
        session.end();
        return Err(RepoError::Locked(format!(
            "another prune or repair is running ({}, host {}, pid {}, started {}); only one may run at a time",
            r.command,
            r.host,
            r.pid,
            crate::clock::from_unix_ns(r.started_ns)
        )));
    }
    Ok((session, now))
}

/// The pack ids under `data/`, with their listings.
fn list_packs(repo: &Repository) -> Result<HashMap<PackId, Listed>> {
    crate::repo::packs::list_packs(repo)
}

/// Adds every blob reachable from the snapshots not yet in `seen_snapshots` to `used`,
/// reading each tree once (`seen_trees`). Any tree that cannot be read stops the prune:
/// nothing may be deleted on the strength of a partial view.
///
/// A snapshot written after the index was read may need index files written after it too
/// (a backup that adopted a pack, or wrote one, meanwhile): a tree not found is looked up
/// in a fresh index, which is returned, so that the plan is made from an index that knows
/// every pack the snapshots it saw need.
fn mark_used(
    repo: &Repository,
    index: &MasterIndex,
    snapshots: &[(SnapshotId, [u8; 32])],
    seen_snapshots: &mut HashSet<SnapshotId>,
    seen_trees: &mut HashSet<BlobId>,
    used: &mut HashSet<BlobId>,
) -> Result<Option<MasterIndex>> {
    let mut fresh: Option<MasterIndex> = None;
    let mut reloads = 0;
    for (sid, root) in snapshots {
        if !seen_snapshots.insert(*sid) {
            continue;
        }
        let mut stack = vec![BlobId(*root)];
        while let Some(t) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            used.insert(t);
            // The newest index read so far; a tree it does not know, or places where it is no
            // longer (a writer copied it meanwhile, a rescue, and a prune retired the old
            // copy), is looked up in a fresh one, a few times at most.
            let mut nodes = {
                if fresh.is_none() && index.get(&t).is_none() {
                    fresh = Some(whole_index(repo)?);
                }
                repo.load_tree(fresh.as_ref().unwrap_or(index), &t)
            };
            for _ in 0..3 {
                match &nodes {
                    Err(e) if e.is_damage() && reloads < 8 => {
                        reloads += 1;
                        fresh = Some(whole_index(repo)?);
                        nodes = repo.load_tree(fresh.as_ref().expect("just set"), &t);
                    }
                    _ => break,
                }
            }
            let nodes = nodes.map_err(|e| {
                RepoError::Invalid(format!("snapshot {}: {e}; prune stops (run `coffer check`)", sid.short()))
            })?;
            for n in nodes {
                if n.kind == NodeKind::Dir {
                    if let Some(s) = n.subtree {
                        stack.push(BlobId(s));
                    }
                }
                used.extend(n.content.iter().map(|c| BlobId(*c)));
            }
        }
    }
    Ok(fresh)
}

/// Per-pack accounting of a live pack.
#[derive(Default, Clone, Copy)]
struct Usage {
    used_bytes: u64,
    used_blobs: u64,
    listed_bytes: u64,
}

/// This prune's own session as listed now (its newest lock's storage timestamp is the
/// storage's present), and the other sessions that are live: backups, copies and readers
/// (another prune that is live has lost to this one and stops by itself).
fn sessions_now(repo: &Repository, me: &Session) -> Result<(SessionInfo, Vec<SessionInfo>)> {
    let sessions = list_sessions(repo)?;
    let mine = sessions
        .iter()
        .find(|s| s.session == me.id())
        .cloned()
        .ok_or_else(|| RepoError::Invalid("this prune's lock is missing from the listing of locks/".into()))?;
    let live =
        sessions.into_iter().filter(|s| s.session != me.id() && s.is_live(mine.renewed_ns) && !s.is_prune()).collect();
    Ok((mine, live))
}

/// Computes the plan. Listing order matters (docs/storage.md): `data/` first, then
/// `locks/`, then `index/`, then `snapshots/`, so that every pack seen is either indexed,
/// or owned by a session seen, or a leftover; and every snapshot of a session that ended
/// is seen.
pub fn plan(repo: &Repository, me: &Session, opts: &PruneOptions, progress: &dyn Progress) -> Result<Plan> {
    let data = list_packs(repo)?;
    let (mine, live) = sessions_now(repo, me)?;
    let index = whole_index(repo)?;
    let mut data = data;
    complete_listing(repo, &index, &mut data)?;
    let live_packs = index.packs().iter().filter(|p| !p.obsolete).count();
    if data.is_empty() && live_packs > 0 {
        return Err(RepoError::Invalid(format!(
            "the listing of data/ is empty, but the index lists {live_packs} packs: not pruning on a listing \
             that cannot be complete"
        )));
    }
    let snaps = all_snapshots(repo)?;
    if snaps.is_empty() && live_packs > 0 {
        return Err(RepoError::Invalid(format!(
            "the listing of snapshots/ is empty, but the index lists {live_packs} packs: not pruning on a \
             listing that may be cut short (to remove everything, delete the repository)"
        )));
    }
    let mut plan =
        Plan { snapshots: snaps.len(), pack_target: u64::from(repo.config().pack_target_size), ..Default::default() };
    progress.set_total(0, snaps.len() as u64);
    let mut roots: Vec<(SnapshotId, [u8; 32])> = snaps.iter().map(|s| (s.id, s.snapshot.tree)).collect();
    // A held snapshot's data stays even when its snapshot object is gone (removed behind
    // Coffer's back): the hold names its tree.
    let listed: HashSet<SnapshotId> = roots.iter().map(|(id, _)| *id).collect();
    let held = super::governance::Governance::load(repo, 0)?.held_roots();
    for (id, tree) in held.into_iter().filter(|(id, _)| !listed.contains(id)) {
        repo.warnings().warn(format!(
            "snapshot {} is under a legal hold but its object is missing; prune keeps all of its data",
            id.short()
        ));
        roots.push((id, tree));
    }
    let mut used = HashSet::new();
    let mut index = index;
    if let Some(fresh) = mark_used(repo, &index, &roots, &mut plan.seen_snapshots, &mut plan.seen_trees, &mut used)? {
        // Read after the listing of locks/ like the first, only later: every pack it knows
        // that the first did not is indexed now, so none of them is taken for a leftover.
        index = fresh;
        complete_listing(repo, &index, &mut data)?;
    }
    // A blob a snapshot needs that no index file lists means an index file was lost (the
    // packs it listed would pass for leftovers): nothing is decided then.
    let unlisted: Vec<&BlobId> = used.iter().filter(|b| index.get(b).is_none()).collect();
    if let Some(b) = unlisted.first() {
        return Err(RepoError::Invalid(format!(
            "snapshots need {} blobs that no index file lists (blob {b}, ...): an index file may be lost, and the \
             packs it listed would be taken for leftovers; prune stops (`coffer repair index` rebuilds the index \
             from the packs)",
            unlisted.len()
        )));
    }

    // Which live pack each used blob is read from, and how much of each pack is used.
    let mut usage: HashMap<u32, Usage> = HashMap::new();
    // A used blob whose only copies are recorded as damaged keeps its pack (it may still
    // read; `repair packs` decides): nothing readable is dropped by a prune.
    for (id, loc) in index.iter().chain(index.iter_damaged_only()) {
        let u = usage.entry(loc.pack).or_default();
        if used.contains(id) {
            u.used_bytes += u64::from(loc.stored_len);
            u.used_blobs += 1;
        }
    }
    for (pos, u) in usage.iter_mut() {
        u.listed_bytes = index.pack(*pos).listed_bytes;
    }
    // Packs written since the oldest running session started may be that session's: their
    // blobs may be about to be referenced by its snapshot, so they are left alone.
    let young_from = live.iter().map(|s| s.started_ns).min().map(|t| t.saturating_sub(margin_ns()));
    classify_live_packs(&index, &data, &usage, &used, young_from, opts, &mut plan)?;
    plan_rescue(&index, &data, &used, &mut plan)?;
    plan_leftovers(&index, &data, &live, &mut plan);
    plan_obsolete(&index, &data, &live, &mut plan);
    plan_index(&index, &mut plan, repo.store().object_lock().is_some());
    plan.exclude =
        plan.condemn.iter().copied().chain(index.packs().iter().filter(|p| p.obsolete).map(|p| p.id)).collect();
    plan.sessions = live;
    if let Some(lock) = repo.store().object_lock() {
        plan_locks(repo, &index, &data, mine.renewed_ns, lock, &mut plan)?;
    }
    estimate_requests(&mut plan);
    plan.index = index;
    Ok(plan)
}

/// S3 Object Lock (docs/storage.md, "Object Lock"): obsolete packs still locked are not
/// deleted (they wait, marked, for a later prune), and what kept snapshots still need, with
/// the config and key files, the evidence (audit entries, policies, holds, erasure and drill
/// records) and held snapshots, has its lock extended before it lapses. Objects locked for less
/// than half the retention from now are extended to the full retention from now; only
/// objects stored longer ago than half the retention can be that close, so only those are
/// asked for their lock.
fn plan_locks(
    repo: &Repository,
    index: &MasterIndex,
    data: &HashMap<PackId, Listed>,
    now_ns: i64,
    lock: crate::format::config::ObjectLock,
    plan: &mut Plan,
) -> Result<()> {
    let retention = (lock.retention_s as i64).saturating_mul(1_000_000_000);
    let (soon, full) = (now_ns.saturating_add(retention / 2), now_ns.saturating_add(retention));
    let mut deletable = Vec::new();
    for pid in std::mem::take(&mut plan.delete_packs) {
        let until = repo.store().retention(&pack_path(&pid))?.map_or(0, |r| r.until_ns);
        let size = data.get(&pid).map_or(0, |l| l.size);
        if until > now_ns {
            plan.locked.add(size);
            plan.locked_until_ns = plan.locked_until_ns.max(until);
            plan.delete.packs -= 1;
            plan.delete.bytes -= size;
        } else {
            deletable.push(pid);
        }
    }
    plan.delete_packs = deletable;
    // Candidates for an extension: live packs and index files, keys, config.
    let mut old: Vec<String> = Vec::new();
    for p in index.packs().iter().filter(|p| !p.obsolete && !plan.condemn.contains(&p.id)) {
        if data.get(&p.id).is_some_and(|l| l.modified_ns.saturating_add(retention / 2) <= now_ns) {
            old.push(pack_path(&p.id));
        }
    }
    for f in index.files.iter().filter(|f| f.kind == IndexKind::Packs && !f.superseded && !plan.replace.contains(&f.id))
    {
        if f.modified_ns.saturating_add(retention / 2) <= now_ns {
            old.push(index_path(&f.id));
        }
    }
    for l in repo.store().list("keys")?.into_iter().chain([repo.store().head(crate::repo::CONFIG_PATH)?]) {
        if l.modified_ns.saturating_add(retention / 2) <= now_ns {
            old.push(if l.path.is_empty() { crate::repo::CONFIG_PATH.to_string() } else { l.path });
        }
    }
    // The evidence (audit entries, policies, holds, erasures, drills) stays locked as long as
    // the repository lives, and so does a snapshot under a legal hold.
    let held: HashSet<String> = super::governance::Governance::load(repo, 0)?
        .held_roots()
        .iter()
        .map(|(id, _)| crate::repo::snapshot_path(id))
        .collect();
    for dir in ["audit", "policy", "holds", "erasures", "drills", "snapshots"] {
        for l in repo.store().list(dir)? {
            let wanted = dir != "snapshots" || held.contains(&l.path);
            if wanted && l.modified_ns.saturating_add(retention / 2) <= now_ns {
                old.push(l.path);
            }
        }
    }
    for path in old {
        let until = repo.store().retention(&path)?.map_or(0, |r| r.until_ns);
        if until < soon {
            plan.extend_locks.push((path, full));
        }
    }
    plan.locks_to_extend = plan.extend_locks.len() as u64;
    Ok(())
}

/// Packs an index file lists but the listing of `data/` lacks were written after that
/// listing (a pack is durable before any index file names it): each is looked up.
fn complete_listing(repo: &Repository, index: &MasterIndex, data: &mut HashMap<PackId, Listed>) -> Result<()> {
    let absent: Vec<PackId> =
        index.packs().iter().filter(|p| !p.obsolete && !data.contains_key(&p.id)).map(|p| p.id).collect();
    for id in absent {
        match repo.store().head(&pack_path(&id)) {
            Ok(l) => {
                data.insert(id, l);
            }
            Err(crate::storage::StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Decides for every live pack: keep, repack (partly used, or small), or mark unused.
/// Packs written at or after `young_from` (storage time) are kept as they are.
fn classify_live_packs(
    index: &MasterIndex,
    data: &HashMap<PackId, Listed>,
    usage: &HashMap<u32, Usage>,
    used: &HashSet<BlobId>,
    young_from: Option<i64>,
    opts: &PruneOptions,
    plan: &mut Plan,
) -> Result<()> {
    let small = plan.pack_target / 2;
    let mut candidates: Vec<(u32, Usage, u64)> = Vec::new();
    let mut smalls: Vec<(u32, Usage, u64)> = Vec::new();
    let mut total_unused = 0u64;
    for (pos, p) in index.packs().iter().enumerate() {
        let pos = pos as u32;
        if p.obsolete {
            continue;
        }
        let u = usage.get(&pos).copied().unwrap_or(Usage { listed_bytes: p.listed_bytes, ..Default::default() });
        let path = pack_path(&p.id);
        match data.get(&p.id) {
            None if u.used_blobs > 0 => {
                return Err(RepoError::Invalid(format!(
                    "{path}: missing, but snapshots need {} of its blobs; prune stops (run `coffer check`; \
                     `coffer repair snapshots` replaces what is lost)",
                    u.used_blobs
                )))
            }
            Some(l) if l.size != p.size && u.used_blobs > 0 => {
                return Err(RepoError::Invalid(format!(
                    "{path}: {} bytes where the index recorded {}; prune stops (run `coffer check`)",
                    l.size, p.size
                )))
            }
            Some(l) if young_from.is_some_and(|t| l.modified_ns >= t) => {
                plan.packs.add(p.size);
                plan.used_bytes += u.used_bytes;
                plan.in_flight.add(p.size);
                continue;
            }
            None | Some(_) if u.used_blobs == 0 => {
                plan.packs.add(p.size);
                plan.unused_bytes += u.listed_bytes;
                plan.unused.add(p.size);
                plan.condemn.insert(p.id);
                continue;
            }
            _ => {}
        }
        plan.packs.add(p.size);
        plan.used_bytes += u.used_bytes;
        let unused = u.listed_bytes.saturating_sub(u.used_bytes);
        plan.unused_bytes += unused;
        total_unused += unused;
        if unused > 0 {
            candidates.push((pos, u, p.size));
        } else if p.size < small {
            smalls.push((pos, u, p.size));
        }
    }
    // restic's rule: small packs are merged only when there are enough of them to matter.
    let small_count = smalls.len() + candidates.iter().filter(|c| c.2 < small).count();
    if small_count >= 10 {
        candidates.extend(smalls);
    }
    let max_unused = match opts.max_unused {
        MaxUnused::Unlimited => u64::MAX,
        MaxUnused::Bytes(b) => b,
        // Unused space after pruning at most p% of what remains: p/(100-p) of the used bytes.
        MaxUnused::Percent(p) => (p / (100.0 - p) * plan.used_bytes as f64) as u64,
    };
    // Small packs first, then the emptiest (highest unused/used ratio).
    candidates.sort_by(|a, b| {
        let (sa, sb) = (a.2 < small, b.2 < small);
        sb.cmp(&sa).then_with(|| {
            let ra = u128::from(a.2 - a.1.used_bytes.min(a.2)) * u128::from(b.1.used_bytes.max(1));
            let rb = u128::from(b.2 - b.1.used_bytes.min(b.2)) * u128::from(a.1.used_bytes.max(1));
            rb.cmp(&ra)
        })
    });
    let mut remaining_unused = total_unused;
    let mut repack_bytes = 0u64;
    for (pos, u, size) in candidates {
        if opts.max_repack.is_some_and(|m| repack_bytes + size > m) {
            continue;
        }
        let unused = u.listed_bytes.saturating_sub(u.used_bytes);
        if remaining_unused <= max_unused && size >= small {
            continue;
        }
        remaining_unused = remaining_unused.saturating_sub(unused);
        repack_bytes += size;
        let p = index.pack(pos);
        plan.repack.add(p.size);
        plan.repack_copy_bytes += u.used_bytes;
        plan.condemn.insert(p.id);
        plan.copy.insert(pos, Vec::new());
    }
    // The used blobs of the packs chosen, from the master index (one location each).
    let mut used_in: HashMap<u32, Vec<(BlobId, BlobLoc)>> = HashMap::new();
    for (id, loc) in index.iter().chain(index.iter_damaged_only()) {
        if plan.copy.contains_key(&loc.pack) && used.contains(id) {
            used_in.entry(loc.pack).or_default().push((*id, *loc));
        }
    }
    for (pos, v) in plan.copy.iter_mut() {
        *v = used_in.remove(pos).unwrap_or_default();
    }
    Ok(())
}

/// Used blobs found only in obsolete packs are copied into new packs.
fn plan_rescue(
    index: &MasterIndex,
    data: &HashMap<PackId, Listed>,
    used: &HashSet<BlobId>,
    plan: &mut Plan,
) -> Result<()> {
    for (id, loc) in index.iter_fallback() {
        if !used.contains(id) {
            continue;
        }
        let present = index.fallback_locations(id).iter().any(|l| data.contains_key(&index.pack_id(l.pack)));
        if !present {
            return Err(RepoError::Invalid(format!(
                "blob {id} is needed by a snapshot but only the deleted pack {} held it; prune stops \
                 (run `coffer check`)",
                index.pack(loc.pack).id.short()
            )));
        }
        plan.rescue.push(*id);
        plan.rescue_blobs += 1;
        plan.repack_copy_bytes += u64::from(loc.stored_len);
        plan.rescue_from.extend(index.fallback_locations(id).iter().map(|l| index.pack_id(l.pack)));
    }
    // Only the used blobs copied out of repacked packs go into new packs, never their
    // unused ones: drop rescued blobs that a repack copies anyway.
    let copied: HashSet<BlobId> = plan.copy.values().flatten().map(|(id, _)| *id).collect();
    plan.rescue.retain(|id| !copied.contains(id));
    Ok(())
}

/// Packs no index file lists: leftovers of processes that are over, unless a live session
/// started before the pack was written (it may be that session's, not yet indexed).
fn plan_leftovers(index: &MasterIndex, data: &HashMap<PackId, Listed>, live: &[SessionInfo], plan: &mut Plan) {
    for (id, l) in data {
        if index.pack_pos(id).is_some() {
            continue;
        }
        let owned = live.iter().any(|s| s.started_ns <= l.modified_ns.saturating_add(margin_ns()));
        if owned {
            plan.in_flight.add(l.size);
        } else {
            plan.leftovers.add(l.size);
            plan.condemn.insert(*id);
        }
    }
}

/// Obsolete packs are deleted once no live session started before their record (with the
/// margin); others wait. A pack named by several records counts from the last: a pack marked
/// again after blobs were copied out of it must outlive every session that read the index
/// before the copies were indexed. Packs this run copies blobs out of are marked again by
/// this run's record, and wait for it (they may be deleted at the end of this run).
fn plan_obsolete(index: &MasterIndex, data: &HashMap<PackId, Listed>, live: &[SessionInfo], plan: &mut Plan) {
    let mut marked: HashMap<PackId, i64> = HashMap::new();
    for f in index.files.iter().filter(|f| f.kind == IndexKind::Obsolete) {
        for p in &f.packs {
            let t = marked.entry(*p).or_insert(f.modified_ns);
            *t = (*t).max(f.modified_ns);
        }
        plan.records.push((f.id, f.packs.clone()));
    }
    for f in index.files.iter().filter(|f| f.kind == IndexKind::Damaged) {
        plan.damage_records.push((f.id, f.packs.clone()));
    }
    for pid in plan.rescue_from.clone() {
        if data.contains_key(&pid) {
            plan.condemn.insert(pid);
        }
    }
    for (pid, marked_ns) in marked {
        let Some(l) = data.get(&pid) else { continue };
        if ready(live, marked_ns) && !plan.rescue_from.contains(&pid) {
            plan.delete.add(l.size);
            plan.delete_packs.push(pid);
        } else {
            plan.waiting.add(l.size);
        }
    }
    plan.delete_packs.sort();
}

/// Whether every live session started after a record written at `marked_ns` (with margin).
fn ready(live: &[SessionInfo], marked_ns: i64) -> bool {
    live.iter().all(|s| s.started_ns > marked_ns.saturating_add(margin_ns()))
}

/// The index is rewritten (superseding every kind-0 file read) whenever anything is marked,
/// a superseded file is still present, or there is more than one file to merge.
fn plan_index(index: &MasterIndex, plan: &mut Plan, locked_repo: bool) {
    let packs_files: Vec<_> = index.files.iter().filter(|f| f.kind == IndexKind::Packs).collect();
    let live_files = packs_files.iter().filter(|f| !f.superseded).count();
    // Under S3 Object Lock a superseded file may stay locked for long: it is deleted once it
    // can be, without rewriting the index each time (which would only add locked files).
    let any_superseded = !locked_repo && packs_files.iter().any(|f| f.superseded);
    if locked_repo {
        plan.delete_superseded = packs_files.iter().filter(|f| f.superseded).map(|f| f.id).collect();
    }
    let lists_obsolete = packs_files
        .iter()
        .filter(|f| !f.superseded)
        .any(|f| f.packs.iter().any(|p| index.pack_pos(p).is_some_and(|pos| index.pack(pos).obsolete)));
    if !plan.condemn.is_empty() || any_superseded || live_files > 1 || !plan.rescue.is_empty() || lists_obsolete {
        plan.rewrite_from = packs_files.iter().filter(|f| !f.superseded).map(|f| f.id).collect();
        plan.replace = packs_files.iter().map(|f| f.id).collect();
        plan.index_files_replaced = plan.replace.len() as u64;
    }
}

fn estimate_requests(plan: &mut Plan) {
    let copy_packs = plan.repack_copy_bytes.div_ceil(plan.pack_target.max(1));
    let gap = if plan.local { 0 } else { REMOTE_GAP };
    let runs: u64 = plan.copy.values().map(|b| contiguous_runs(b, gap).len() as u64).sum();
    plan.requests = Requests {
        get: runs + plan.rescue.len() as u64 + plan.rewrite_from.len() as u64,
        put: copy_packs + copy_packs.div_ceil(32) + 1 + u64::from(!plan.condemn.is_empty()) + 2,
        delete: plan.delete_packs.len() as u64 + plan.replace.len() as u64 + plan.records.len() as u64 + 2,
        list: 8,
    };
}

/// Carries out a plan: copy, mark, rewrite the index, delete what is ready; then, from
/// fresh listings, delete what this run marked if nothing can still be using it.
pub fn execute(
    repo: &Arc<Repository>,
    me: &Session,
    mut plan: Plan,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let before = snapshot_ops(repo);
    let index = std::mem::take(&mut plan.index);
    // 0. Locks of what is kept are extended before anything else.
    for (path, until) in &plan.extend_locks {
        match repo.store().lock_until(path, *until) {
            Ok(()) => out.locks_extended += 1,
            Err(crate::storage::StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // 1. Copy the used blobs of packs to repack, and rescued ones, into new packs (indexed
    //    by the sink as it goes: packs, then index files).
    if !plan.copy.is_empty() || !plan.rescue.is_empty() {
        let totals = copy_blobs(repo, me, &index, &plan, opts, progress)?;
        out.packs_written = totals.packs;
        out.bytes_written = totals.data_added;
        out.index_files_written += totals.packs.div_ceil(crate::repo::writer::INDEX_FLUSH_PACKS as u64);
        me.renew()?;
    }
    // 2. The obsolete-packs record, before any index leaves those packs out. Before each
    //    step: this prune must not have been judged over by another.
    me.check_alive()?;
    let mut new_record = None;
    if !plan.condemn.is_empty() {
        let record = record_of(repo, &index, &plan)?;
        out.packs_marked = record.packs.len() as u64;
        let id = repo.save_index_file(&record)?;
        out.index_files_written += 1;
        let marked_ns = repo.store().head(&index_path(&id))?.modified_ns;
        new_record = Some((id, marked_ns, record));
    }
    // 3. The rewritten index; the files it replaces are deleted after it is durable.
    me.check_alive()?;
    let mut rewritten_ns = None;
    if !plan.replace.is_empty() {
        rewritten_ns = Some(rewrite_index(repo, &plan)?);
        out.index_files_written += 1;
        for id in &plan.replace {
            // A superseded index file still locked stays: readers skip it.
            if deleted_unless_locked(repo, &index_path(id), &mut out)? {
                out.index_files_deleted += 1;
            }
        }
    }
    for id in plan.delete_superseded.iter().filter(|id| !plan.replace.contains(id)) {
        if deleted_unless_locked(repo, &index_path(id), &mut out)? {
            out.index_files_deleted += 1;
        }
    }
    // 4. Obsolete packs that nothing can still use.
    me.check_alive()?;
    for pid in &plan.delete_packs {
        if deleted_unless_locked(repo, &pack_path(pid), &mut out)? {
            out.packs_deleted += 1;
        }
    }
    out.bytes_deleted = plan.delete.bytes;
    // 5. What this run marked, if the sessions seen now allow it.
    if let Some((id, marked_ns, record)) = new_record {
        me.check_alive()?;
        let locked_before = plan.locked.packs;
        let deleted = delete_marked_now(repo, me, &mut plan, marked_ns, &record)?;
        out.objects_locked += plan.locked.packs - locked_before;
        out.packs_deleted += deleted.0;
        out.bytes_deleted += deleted.1;
        plan.records.push((id, record.packs.iter().map(|p| PackId(p.pack_id)).collect()));
    }
    me.check_alive()?;
    out.index_files_deleted += delete_finished_records(repo, me, &plan, rewritten_ns)?;
    out.packs_waiting = count_waiting(repo)?;
    out.requests = diff_ops(repo, &before);
    Ok(out)
}

/// Deletes an object unless S3 Object Lock still keeps it (counted in `objects_locked`).
fn deleted_unless_locked(repo: &Repository, path: &str, out: &mut Outcome) -> Result<bool> {
    match repo.store().delete(path) {
        Ok(()) => Ok(true),
        Err(crate::storage::StorageError::Locked { .. }) => {
            out.objects_locked += 1;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn snapshot_ops(repo: &Repository) -> [u64; 5] {
    use std::sync::atomic::Ordering::Relaxed;
    let o = repo.store().ops();
    [o.get.load(Relaxed), o.put.load(Relaxed), o.head.load(Relaxed), o.list.load(Relaxed), o.delete.load(Relaxed)]
}

fn diff_ops(repo: &Repository, before: &[u64; 5]) -> serde_json::Value {
    let now = snapshot_ops(repo);
    let d = |i: usize| now[i] - before[i];
    serde_json::json!({ "get": d(0), "put": d(1), "head": d(2), "list": d(3), "delete": d(4) })
}

/// Reads the blobs to copy and stores them again (verified, not recompressed).
fn copy_blobs(
    repo: &Arc<Repository>,
    me: &Session,
    index: &MasterIndex,
    plan: &Plan,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<crate::repo::writer::SinkTotals> {
    let sink = BlobSink::start(repo.clone(), 0, 1, opts.uploaders.max(1), HashSet::new());
    sink.guard(me.alive());
    let work: Vec<(PackId, Vec<(BlobId, BlobLoc)>)> =
        plan.copy.iter().map(|(pos, blobs)| (index.pack_id(*pos), blobs.clone())).collect();
    progress.set_total(plan.repack_copy_bytes, work.len() as u64);
    let queue = Mutex::new(work.into_iter());
    let failure: Mutex<Option<RepoError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            let mut w = sink.writer();
            let (queue, failure) = (&queue, &failure);
            s.spawn(move || loop {
                let Some((pid, blobs)) = queue.lock().expect("poisoned").next() else { break };
                if let Err(e) = copy_pack(repo, &pid, &blobs, &mut w, progress) {
                    failure.lock().expect("poisoned").get_or_insert(e);
                    break;
                }
                progress.add_item();
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("poisoned") {
        drop(sink.finish());
        return Err(e);
    }
    let mut w = sink.writer();
    for id in &plan.rescue {
        let loc = index.get(id).expect("planned from the index");
        let plain = repo.read_blob(index, id)?;
        w.write(loc.blob_type, *id, &plain, crate::compress::Plan::Try);
        progress.add_bytes(u64::from(loc.stored_len));
    }
    drop(w);
    sink.finish()
}

/// A byte range of a pack to read, and the kept blobs in it.
type Run = (u64, u64, Vec<(BlobId, BlobLoc)>);

/// Gaps between kept blobs of a remote pack up to this size are read rather than skipped:
/// one ranged read of a few hundred KiB more costs less than another request's latency.
const REMOTE_GAP: u64 = 1 << 20;

/// Runs of kept blobs in a pack, as (start, end, blobs): one ranged read each. Blobs are in
/// one run when they lie back to back, or when fewer than `max_gap` bytes separate them.
/// With `max_gap` 0 (local folders, where a read costs no round trip) a repack reads exactly
/// the blobs it keeps.
fn contiguous_runs(blobs: &[(BlobId, BlobLoc)], max_gap: u64) -> Vec<Run> {
    let mut sorted = blobs.to_vec();
    sorted.sort_by_key(|(_, l)| l.offset);
    let mut runs: Vec<Run> = Vec::new();
    for (id, loc) in sorted {
        let (start, end) = (u64::from(loc.offset), u64::from(loc.offset) + u64::from(loc.stored_len));
        match runs.last_mut() {
            Some(run) if start >= run.1 && start - run.1 <= max_gap => {
                run.1 = end;
                run.2.push((id, loc));
            }
            _ => runs.push((start, end, vec![(id, loc)])),
        }
    }
    runs
}

/// Copies the listed blobs of one pack: each run of them is read with one ranged read, each
/// blob decrypted and verified against its id, then sealed again in its stored
/// (compressed) form.
fn copy_pack(
    repo: &Repository,
    pid: &PackId,
    blobs: &[(BlobId, BlobLoc)],
    w: &mut crate::repo::writer::BlobWriter,
    progress: &dyn Progress,
) -> Result<()> {
    let path = pack_path(pid);
    let cipher = repo.keys().object_cipher(crate::crypto::KEY_TYPE_PACK, pid.as_bytes());
    let gap = if repo.store().is_local() { 0 } else { REMOTE_GAP };
    for (start, end, run) in contiguous_runs(blobs, gap) {
        let bytes = repo.store().get_range(&path, start..end)?;
        for (id, loc) in run {
            let at = (u64::from(loc.offset) - start) as usize;
            let mut buf = bytes[at..at + loc.stored_len as usize].to_vec();
            let ctx = crate::crypto::blob_context(loc.blob_type as u8, loc.compression as u8, &id, loc.raw_len);
            cipher.open(u64::from(loc.offset), &ctx, &mut buf).map_err(|e| {
                RepoError::damaged(format!("{path} (blob {id})"), format!("{e}; prune stops (run `coffer check`)"))
            })?;
            let plain = crate::compress::decompress(&buf, loc.compression, loc.raw_len as usize)
                .map_err(|e| RepoError::damaged(format!("{path} (blob {id})"), e))?;
            if repo.keys().blob_id(loc.blob_type, &plain) != id {
                return Err(RepoError::damaged(format!("{path} (blob {id})"), "content does not match its id"));
            }
            w.write_stored(loc.blob_type, id, loc.compression, &buf, loc.raw_len);
            progress.add_bytes(u64::from(loc.stored_len));
        }
    }
    Ok(())
}

/// The obsolete-packs record for what the plan marks: each pack with the blob entries the
/// index has for it (leftovers have none: no index ever listed them).
fn record_of(repo: &Repository, index: &MasterIndex, plan: &Plan) -> Result<IndexFile> {
    let mut packs: BTreeMap<PackId, IndexPack> = BTreeMap::new();
    for id in &plan.rewrite_from {
        let f = repo.load_index_file(id).map_err(gone_under_us)?;
        for p in f.packs {
            let pid = PackId(p.pack_id);
            if plan.condemn.contains(&pid) {
                packs.entry(pid).or_insert(p);
            }
        }
    }
    for pid in &plan.condemn {
        let size = index.pack_pos(pid).map(|pos| index.pack(pos).size).unwrap_or(0);
        packs.entry(*pid).or_insert(IndexPack { pack_id: pid.0, pack_size: size, blobs: vec![] });
    }
    Ok(IndexFile { kind: IndexKind::Obsolete, supersedes: vec![], packs: packs.into_values().collect() })
}

/// An index file this prune read and is rewriting vanished: only another prune deletes index
/// files, so this one stops before it writes anything that would leave its packs out.
fn gone_under_us(e: RepoError) -> RepoError {
    match e {
        RepoError::Storage(crate::storage::StorageError::NotFound { path }) => RepoError::Locked(format!(
            "{path} was deleted while this prune was rewriting the index: another prune is running; \
             this one stops"
        )),
        e => e,
    }
}

/// Writes the index without the packs marked: every pack of the live files read, once, in
/// one file that supersedes every kind-0 file read. One file, not several: a reader whose
/// listing saw a first part but not the last (listings are not atomic) would otherwise
/// ignore the old files and miss the parts it did not see.
fn rewrite_index(repo: &Repository, plan: &Plan) -> Result<i64> {
    let mut seen: HashSet<PackId> = HashSet::new();
    let mut packs: Vec<IndexPack> = Vec::new();
    for id in &plan.rewrite_from {
        let f = repo.load_index_file(id).map_err(gone_under_us)?;
        for p in f.packs {
            let pid = PackId(p.pack_id);
            if !plan.exclude.contains(&pid) && seen.insert(pid) {
                packs.push(p);
            }
        }
    }
    let f = IndexFile { kind: IndexKind::Packs, supersedes: plan.replace.iter().map(|i| i.0).collect(), packs };
    let id = repo.save_index_file(&f)?;
    Ok(repo.store().head(&index_path(&id))?.modified_ns)
}

/// After the record at `marked_ns` is durable: if the sessions listed now allow it, and no
/// snapshot written since the plan needs one of its blobs, deletes the packs it names.
fn delete_marked_now(
    repo: &Repository,
    me: &Session,
    plan: &mut Plan,
    marked_ns: i64,
    record: &IndexFile,
) -> Result<(u64, u64)> {
    let (_, live) = sessions_now(repo, me)?;
    if !ready(&live, marked_ns) {
        return Ok((0, 0));
    }
    let data = list_packs(repo)?;
    let index = whole_index(repo)?;
    let snaps = all_snapshots(repo)?;
    let new_roots: Vec<(SnapshotId, [u8; 32])> =
        snaps.iter().filter(|s| !plan.seen_snapshots.contains(&s.id)).map(|s| (s.id, s.snapshot.tree)).collect();
    let mut newly_used = HashSet::new();
    let fresh = mark_used(repo, &index, &new_roots, &mut plan.seen_snapshots, &mut plan.seen_trees, &mut newly_used)?;
    let index = fresh.unwrap_or(index);
    // A blob a new snapshot needs that no index file lists: nothing is deleted now.
    if newly_used.iter().any(|b| index.get(b).is_none()) {
        return Ok((0, 0));
    }
    // A blob a new snapshot needs that no live pack holds keeps every obsolete pack that
    // has a copy (by the fresh index: a leftover has no entries in the record, but a backup
    // may have adopted it meanwhile): the next prune copies the blob first.
    let mut needed: HashSet<PackId> = HashSet::new();
    for b in newly_used.iter().filter(|b| !index.contains(b)) {
        needed.extend(index.fallback_locations(b).iter().map(|l| index.pack_id(l.pack)));
    }
    let (mut n, mut bytes) = (0, 0);
    for p in &record.packs {
        let pid = PackId(p.pack_id);
        if needed.contains(&pid) {
            continue;
        }
        if let Some(l) = data.get(&pid) {
            match repo.store().delete(&pack_path(&pid)) {
                Ok(()) => {
                    n += 1;
                    bytes += l.size;
                }
                // Still locked by S3 Object Lock: it waits, marked, for a later prune.
                Err(crate::storage::StorageError::Locked { .. }) => plan.locked.add(l.size),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((n, bytes))
}

/// Deletes the records whose packs are all gone, unless an index file this run did not
/// read lists one of them (a backup that adopted it meanwhile), and only once no live
/// session started before the index that leaves their packs out was written (`rewritten_ns`,
/// else this prune's start), with the margin: a session whose listing of `index/` began
/// earlier may still be using a replaced file that lists those packs, and only the record
/// keeps it from deduplicating against them.
fn delete_finished_records(repo: &Repository, me: &Session, plan: &Plan, rewritten_ns: Option<i64>) -> Result<u64> {
    if plan.records.is_empty() && plan.damage_records.is_empty() {
        return Ok(0);
    }
    let (mine, live) = sessions_now(repo, me)?;
    let cutoff = rewritten_ns.unwrap_or(mine.started_ns);
    if !ready(&live, cutoff) {
        return Ok(0);
    }
    let data = list_packs(repo)?;
    let index = whole_index(repo)?;
    // Every pack a live kind-0 file lists, obsolete or not: such a file would make it live
    // again once no record names it.
    let listed_live: HashSet<PackId> = index
        .files
        .iter()
        .filter(|f| f.kind == IndexKind::Packs && !f.superseded)
        .flat_map(|f| f.packs.iter().copied())
        .collect();
    let mut n = 0;
    for (id, packs) in plan.records.iter().chain(&plan.damage_records) {
        // A pack still present, or listed by a live index file (one a backup wrote while
        // adopting it): the record must stay, to keep writers away from it.
        if packs.iter().any(|p| data.contains_key(p) || listed_live.contains(p)) {
            continue;
        }
        match repo.store().delete(&index_path(id)) {
            Ok(()) => n += 1,
            Err(crate::storage::StorageError::Locked { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// The index, refusing to go on when an index file is damaged: the packs it listed are
/// then known only from their headers, and which of them a running backup is about to
/// index cannot be told from leftovers, so no pack may be judged unreferenced.
fn whole_index(repo: &Repository) -> Result<MasterIndex> {
    let index = repo.load_index_with(false)?;
    match index.damaged_files.first() {
        None => Ok(index),
        Some(d) => Err(RepoError::Invalid(format!(
            "{}: {}; prune cannot tell which packs are unreferenced while an index file is damaged: \
             run `coffer repair index` first",
            index_path(&d.id),
            d.reason
        ))),
    }
}

/// Every snapshot, refusing to go on when one is damaged: the data it needs cannot be told
/// from garbage.
fn all_snapshots(repo: &Repository) -> Result<Vec<crate::repo::snapshots::ListedSnapshot>> {
    let (ok, damaged) = repo.load_snapshots_all()?;
    match damaged.first() {
        None => Ok(ok),
        Some(d) => Err(RepoError::Invalid(format!(
            "{}: {}; prune cannot tell which data that snapshot needs: remove it with `coffer forget {}` \
             (or repair it), then prune",
            crate::repo::snapshot_path(&d.id),
            d.reason,
            d.id.short()
        ))),
    }
}

/// Obsolete packs still present after the run.
fn count_waiting(repo: &Repository) -> Result<u64> {
    let data = list_packs(repo)?;
    let index = whole_index(repo)?;
    Ok(index.packs().iter().filter(|p| p.obsolete && data.contains_key(&p.id)).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobType, Compression};

    fn loc(offset: u32, len: u32) -> BlobLoc {
        BlobLoc {
            pack: 0,
            blob_type: BlobType::Data,
            compression: Compression::None,
            offset,
            stored_len: len,
            raw_len: 0,
        }
    }

    #[test]
    fn repacks_read_runs_of_kept_blobs_only() {
        let blobs = vec![(BlobId([3; 32]), loc(50, 10)), (BlobId([1; 32]), loc(0, 20)), (BlobId([2; 32]), loc(20, 5))];
        let shape = |gap| -> Vec<(u64, u64, usize)> {
            contiguous_runs(&blobs, gap).iter().map(|r| (r.0, r.1, r.2.len())).collect()
        };
        // Bytes 25..50 belong to a blob not kept: they are not read.
        assert_eq!(shape(0), vec![(0, 25, 2), (50, 60, 1)]);
        // Remote: a small gap is read rather than paid for with a request.
        assert_eq!(shape(25), vec![(0, 60, 3)]);
        assert_eq!(shape(24), vec![(0, 25, 2), (50, 60, 1)]);
    }

    #[test]
    fn sizes_and_limits_parse() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("-1").is_err() && parse_size("lots").is_err());
        assert_eq!(parse_max_unused("5%").unwrap(), MaxUnused::Percent(5.0));
        assert_eq!(parse_max_unused("0").unwrap(), MaxUnused::Bytes(0));
        assert_eq!(parse_max_unused("unlimited").unwrap(), MaxUnused::Unlimited);
        assert!(parse_max_unused("100%").is_err());
    }
}
