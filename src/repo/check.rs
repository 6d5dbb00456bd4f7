//! `check`: prove the repository is intact, naming every damaged object.
//!
//! Structure (always): every key file, index file and snapshot decrypts and decodes; every
//! pack an index lists exists with the recorded size; every tree of every snapshot decrypts,
//! decodes and matches its id; every chunk a file needs is indexed. With `--read-data`
//! (or a random `--read-data-subset`), every selected pack is downloaded whole: its header
//! must decrypt and agree with the index, and every blob must decrypt, decompress and hash to
//! its id. Nothing a running backup or prune is in the middle of is damage: packs no index
//! lists yet are a running backup's (a live session started before they were written) or
//! leftovers of processes that ended (reclaimable by prune); packs a prune marked obsolete
//! may be gone; and every finding is looked at again with a fresh index before it is
//! reported ([`confirm`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::damage::Damage;
use super::{pack_path, MasterIndex, Repository, Result};
use crate::format::keyfile::KeyFile;
use crate::format::pack;
use crate::format::tree::NodeKind;
use crate::format::BlobType;
use crate::id::{BlobId, PackId};
use crate::progress::Progress;

/// How much pack data to read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A fraction in (0, 1] of the packs, chosen at random each run.
    Subset(f64),
    /// Part `n` of `t` (1-based), restic's `n/t`: the packs whose id, read as a big-endian
    /// number, is `n - 1` modulo `t`. Fixed by the ids alone, so `t` runs with `n = 1..=t`
    /// read every pack exactly once (packs written since are in one of the parts too).
    Part {
        n: u64,
        t: u64,
    },
    /// Packs chosen at random until their sizes add up to at least this many bytes.
    Bytes(u64),
}

impl ReadData {
    /// Parses `--read-data-subset`: `n/t`, `x%` (or a bare number, a percentage) or a size
    /// (`500M`, `2G`, bytes with a unit suffix k, m, g, t).
    pub fn parse_subset(
        s: &str,
        parse_size: impl Fn(&str) -> std::result::Result<u64, String>,
    ) -> std::result::Result<ReadData, String> {
        let t = s.trim();
        if let Some((n, total)) = t.split_once('/') {
            let (n, total): (u64, u64) = match (n.trim().parse(), total.trim().parse()) {
                (Ok(n), Ok(t)) => (n, t),
                _ => return Err(format!("{s:?}: give n/t with whole numbers, e.g. 2/7")),
            };
            if total == 0 || n == 0 || n > total {
                return Err(format!("{s:?}: n/t needs 1 <= n <= t"));
            }
            return Ok(ReadData::Part { n, t: total });
        }
        let is_size = t.chars().last().is_some_and(|c| matches!(c.to_ascii_lowercase(), 'k' | 'm' | 'g' | 't'));
        if is_size {
            let b = parse_size(t)?;
            if b == 0 {
                return Err(format!("{s:?}: the size must be above 0"));
            }
            return Ok(ReadData::Bytes(b));
        }
        let n: f64 =
            t.trim_end_matches('%').trim().parse().map_err(|_| {
                format!("{s:?} is not a subset: give n/t (e.g. 1/7), a percentage (10%) or a size (500M)")
            })?;
        if !(n > 0.0 && n <= 100.0) {
            return Err(format!("{s:?}: a percentage must be above 0 and at most 100"));
        }
        Ok(ReadData::Subset(n / 100.0))
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub key_files: u64,
    pub index_files: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub blobs_read: u64,
    /// Packs no index lists, left by processes that are over: reclaimable by prune.
    pub leftover_packs: u64,
    pub leftover_bytes: u64,
    /// Packs no index lists yet that running backups wrote (they index them before they
    /// finish): not damage, not leftovers.
    pub in_flight_packs: u64,
    pub in_flight_bytes: u64,
    /// Packs a prune has marked obsolete and not yet deleted.
    pub obsolete_packs: u64,
    pub obsolete_bytes: u64,
    /// Sessions (backups, copies, prunes) whose locks look live.
    pub running_sessions: u64,
    /// Packs entered from their own headers because an index file is damaged.
    pub packs_recovered: u64,
    /// What could not be checked (storage that failed while reading a pack): not damage,
    /// but the check is not complete, so it exits 1.
    pub unchecked: Vec<String>,
    /// Copies of blobs this check recorded as damaged (repo::damage): the next backup stores
    /// them afresh.
    pub damage_recorded: u64,
    /// Why the damage found could not be recorded (read-only credentials, say).
    pub record_error: Option<String>,
    /// Objects that are not part of the repository (unknown names, empty files where no
    /// object is expected): reported, never counted as damage, safe to remove.
    pub junk: Vec<String>,
}

/// Something found wrong, kept with what is needed to look again: the repository may have
/// been changed by a backup or prune while check read it, so every finding is confirmed
/// against a fresh listing and index before it is reported ([`confirm`]).
#[derive(Debug, Clone)]
enum Finding {
    PackMissing(PackId),
    PackSize(PackId, u64, u64),
    /// `recorded`: its only copies are recorded as damaged.
    ChunkMissing {
        snapshot: String,
        path: String,
        blob: BlobId,
        recorded: bool,
    },
    Tree {
        snapshot: String,
        path: String,
        tree: BlobId,
        error: String,
    },
    /// A pack read whole: one blob of it (`Some`), or the whole pack (`None`), is bad.
    PackRead(PackId, Option<BlobId>, String),
    /// Listed by no readable index file, and its header does not open.
    PackUnreadable(PackId, String),
    Other(String),
}

impl Finding {
    /// What to record as damaged (repo::damage), if anything is to be recorded.
    fn damage(&self, index: &MasterIndex) -> Option<Damage> {
        match self {
            Finding::PackMissing(p) | Finding::PackSize(p, ..) | Finding::PackRead(p, None, _) => {
                Some(Damage::Pack(*p))
            }
            Finding::PackRead(p, Some(b), _) => Some(Damage::Blob { pack: *p, blob: *b }),
            Finding::Tree { tree, .. } => {
                index.get(tree).map(|l| Damage::Blob { pack: index.pack_id(l.pack), blob: *tree })
            }
            Finding::ChunkMissing { .. } | Finding::PackUnreadable(..) | Finding::Other(_) => None,
        }
    }

    fn message(&self) -> String {
        match self {
            Finding::PackMissing(p) => format!("{}: pack missing (listed in the index)", pack_path(p)),
            Finding::PackSize(p, s, want) => {
                format!("{}: size {s} differs from the {want} the index recorded (truncated or damaged)", pack_path(p))
            }
            Finding::ChunkMissing { snapshot, path, blob, recorded: false } => format!(
                "snapshot {snapshot}: {path}: chunk {} is missing from the index (`coffer repair index` finds it if its \
                 pack is still there)",
                blob.short()
            ),
            Finding::ChunkMissing { snapshot, path, blob, recorded: true } => format!(
                "snapshot {snapshot}: {path}: chunk {} is damaged (recorded: the next backup of the file stores it \
                 again)",
                blob.short()
            ),
            Finding::Tree { snapshot, path, error, .. } => format!("snapshot {snapshot}: {path}: {error}"),
            Finding::PackRead(_, _, e) | Finding::Other(e) => e.clone(),
            Finding::PackUnreadable(p, why) => {
                format!("{}: no readable index file lists it, and its header: {why}", pack_path(p))
            }
        }
    }
}

/// Runs the check. Storage failures that stop it (cannot list) are errors; everything
/// found damaged is collected in the report instead.
/// `readers` packs are downloaded and verified at once with `--read-data`.
///
/// Order matters while backups and prunes run: snapshots are listed first (an index file a
/// snapshot needs was written before it), then the index, then `data/` (a pack an index
/// file lists was written before it), then `locks/`.
pub fn check(repo: &Repository, read: ReadData, readers: usize, progress: &dyn Progress) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    check_keys(repo, &mut r)?;
    let snaps = repo.load_snapshots_all()?;
    let (index, mut findings) = load_index(repo, &mut r)?;
    let listing = repo.store().list("data")?;
    // check reports rather than stops: the packs are then named as missing too.
    if let Err(e) = super::packs::empty_listing_check(&listing, &index) {
        findings.push(Finding::Other(e.to_string()));
    }
    let listed = packs_of(listing);
    let sessions = super::lock::list_sessions(repo)?;
    findings.extend(check_packs(&index, &listed));
    let leftovers = classify_unindexed(&index, &listed, &sessions, &mut r);
    r.packs = index.packs().iter().filter(|p| !p.obsolete).count() as u64;
    findings.extend(check_snapshots(repo, &index, &snaps, &listed, &mut r)?);
    findings.extend(needed_leftovers(repo, &index, &findings, &leftovers, &listed, &mut r));
    findings.extend(read_packs(repo, &index, read, readers, &listed, progress, &mut r));
    r.junk = find_junk(repo, &index)?;
    check_governance(repo, &mut r)?;
    if findings.is_empty() {
        return Ok(r);
    }
    let (confirmed, fresh) = confirm(repo, findings)?;
    r.errors.extend(confirmed.iter().map(Finding::message));
    // What is damaged is recorded, so the next backup stores it afresh (repo::damage).
    let found: Vec<Damage> = confirmed.iter().filter_map(|f| f.damage(&fresh)).collect();
    match super::damage::record(repo, &fresh, &found) {
        Ok(n) => r.damage_recorded = n.map_or(0, |(_, n)| n as u64),
        Err(e) => r.record_error = Some(e.to_string()),
    }
    Ok(r)
}

/// Policy documents, holds and erasure records must read: an unreadable one stops every
/// command that removes snapshots or data. Audit entries that do not read are named too
/// (`audit --verify` checks the chain).
fn check_governance(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    let bad = |e: super::RepoError| -> Result<Option<String>> {
        if e.is_damage() || matches!(e, super::RepoError::NewerFormat { .. }) {
            Ok(Some(format!("{e} (forget and prune stop until it is readable or removed)")))
        } else {
            Err(e)
        }
    };
    if let Err(e) = repo.load_policies() {
        r.errors.extend(bad(e)?);
    }
    if let Err(e) = repo.load_holds() {
        r.errors.extend(bad(e)?);
    }
    if let Err(e) = repo.load_erasures() {
        r.errors.extend(bad(e)?);
    }
    // From the cache where it has them (authenticated as read); `audit --verify` reads them
    // all from storage and checks the chain.
    for l in repo.load_audit(false)? {
        if let Err(why) = &l.entry {
            r.errors.push(format!("{}: {why} (`coffer audit --verify` reports it)", super::audit_path(&l.id)));
        }
    }
    Ok(())
}

fn list_packs(repo: &Repository) -> Result<HashMap<PackId, crate::storage::Listed>> {
    super::packs::list_packs(repo)
}

fn packs_of(listing: Vec<crate::storage::Listed>) -> HashMap<PackId, crate::storage::Listed> {
    super::packs::packs_in(listing)
}

/// Every live pack the index lists exists with the recorded size (obsolete ones may be gone).
fn check_packs(index: &MasterIndex, listed: &HashMap<PackId, crate::storage::Listed>) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in index.packs().iter().filter(|p| !p.obsolete) {
        match listed.get(&p.id) {
            None => out.push(Finding::PackMissing(p.id)),
            Some(l) if l.size != p.size => out.push(Finding::PackSize(p.id, l.size, p.size)),
            Some(_) => {}
        }
    }
    out
}

/// Unindexed packs are a running backup's (a live session started before the pack was
/// written) or leftovers; obsolete ones are counted apart.
fn classify_unindexed(
    index: &MasterIndex,
    listed: &HashMap<PackId, crate::storage::Listed>,
    sessions: &[super::lock::SessionInfo],
    r: &mut CheckReport,
) -> Vec<PackId> {
    let mut leftovers = Vec::new();
    // check writes nothing, so the storage's present is judged by the newest timestamp seen.
    let now = listed.values().map(|l| l.modified_ns).chain(sessions.iter().map(|s| s.renewed_ns)).max().unwrap_or(0);
    let live: Vec<_> = sessions.iter().filter(|s| s.is_live(now)).collect();
    r.running_sessions = live.len() as u64;
    let margin = super::lock::margin_ns();
    for (id, l) in listed {
        // While an index file is damaged, a pack nothing describes is a finding, never a
        // leftover; an empty file is junk.
        if (!index.is_whole() || l.size == 0) && index.pack_pos(id).is_none() {
            continue;
        }
        match index.pack_pos(id).map(|pos| index.pack(pos).obsolete) {
            Some(false) => {}
            Some(true) => {
                r.obsolete_packs += 1;
                r.obsolete_bytes += l.size;
            }
            None if live.iter().any(|s| s.started_ns <= l.modified_ns.saturating_add(margin)) => {
                r.in_flight_packs += 1;
                r.in_flight_bytes += l.size;
            }
            None => {
                r.leftover_packs += 1;
                r.leftover_bytes += l.size;
                leftovers.push(*id);
            }
        }
    }
    leftovers
}

/// Leftover packs that hold blobs snapshots need but no index file lists: an index file
/// was lost, and they are not reclaimable. Their headers are read only when something is
/// missing from the index.
fn needed_leftovers(
    repo: &Repository,
    index: &MasterIndex,
    findings: &[Finding],
    leftovers: &[PackId],
    listed: &HashMap<PackId, crate::storage::Listed>,
    r: &mut CheckReport,
) -> Vec<Finding> {
    let missing: HashSet<BlobId> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::ChunkMissing { blob, recorded: false, .. } => Some(*blob),
            Finding::Tree { tree, .. } if index.get(tree).is_none() => Some(*tree),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    if missing.is_empty() {
        return out;
    }
    for pid in leftovers {
        let l = &listed[pid];
        let header = super::packs::read_header(repo, pid, l.size, |rg| {
            repo.store().get_range(&l.path, rg).map(|b| b.to_vec()).map_err(|e| e.to_string())
        });
        let Ok(entries) = header else { continue };
        let needed = entries.iter().filter(|e| missing.contains(&BlobId(e.id))).count();
        if needed > 0 {
            r.leftover_packs -= 1;
            r.leftover_bytes -= l.size;
            out.push(Finding::Other(format!(
                "{}: no index file lists it, but snapshots need {needed} of its blobs (an index file was lost?): \
                 `coffer repair index` indexes it again; it is not reclaimable",
                l.path
            )));
        }
    }
    out
}

/// Looks at every finding again with a fresh index and listing: what a backup or prune
/// changed meanwhile (a pack moved by a repack, an index file replaced) is not damage.
fn confirm(repo: &Repository, findings: Vec<Finding>) -> Result<(Vec<Finding>, MasterIndex)> {
    let index = repo.load_index_with(false)?;
    let listed = list_packs(repo)?;
    let mut out = Vec::new();
    for f in findings {
        let still = match &f {
            Finding::PackMissing(p) => {
                index.pack_pos(p).is_some_and(|pos| !index.pack(pos).obsolete) && !listed.contains_key(p)
            }
            Finding::PackSize(p, ..) => match (index.pack_pos(p), listed.get(p)) {
                (Some(pos), Some(l)) => !index.pack(pos).obsolete && l.size != index.pack(pos).size,
                _ => false,
            },
            Finding::ChunkMissing { blob, .. } => {
                let present = index.contains(blob)
                    || index.fallback_locations(blob).iter().any(|l| listed.contains_key(&index.pack_id(l.pack)));
                !matches!(index.get(blob), Some(l) if l.blob_type == BlobType::Data) || !present
            }
            Finding::Tree { tree, .. } => repo.load_tree(&index, tree).is_err(),
            Finding::PackRead(p, _, _) => {
                // Gone since: marked obsolete and deleted, or no longer indexed.
                listed.contains_key(p) && index.pack_pos(p).is_some_and(|pos| !index.pack(pos).obsolete)
            }
            Finding::PackUnreadable(p, _) => index.unreadable.iter().any(|(u, _)| u == p),
            Finding::Other(_) => true,
        };
        if still {
            out.push(f);
        }
    }
    Ok((out, index))
}

/// Whether `path` is the name of an object Coffer writes (docs/format.md, "Layout").
fn is_object_name(path: &str) -> bool {
    use crate::id::{IndexId, KeyId, LockId, SnapshotId};
    match path.split_once('/') {
        None => path == super::CONFIG_PATH,
        Some(("keys", n)) => KeyId::from_name(n).is_some(),
        Some(("index", n)) => IndexId::from_name(n).is_some(),
        Some(("snapshots", n)) => SnapshotId::from_name(n).is_some(),
        Some(("locks", n)) => LockId::from_name(n).is_some(),
        Some(("drills", n)) => crate::id::DrillId::from_name(n).is_some(),
        Some(("policy", n)) => crate::id::PolicyId::from_name(n).is_some(),
        Some(("holds", n)) => crate::id::HoldId::from_name(n).is_some(),
        Some(("audit", n)) => crate::id::AuditId::from_name(n).is_some(),
        Some(("erasures", n)) => crate::id::ErasureId::from_name(n).is_some(),
        Some(("data", _)) => super::packs::pack_of(path).is_some(),
        Some(_) => false,
    }
}

/// Everything in storage that is not an object of the repository: unknown names anywhere,
/// and empty files no index lists (Coffer never writes an empty object; an empty index file
/// or snapshot is damage, reported as such).
fn find_junk(repo: &Repository, index: &MasterIndex) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for l in repo.store().list("")? {
        if !is_object_name(&l.path) {
            out.push(format!("{} (not a repository object)", l.path));
        } else if l.size == 0 && (l.path.starts_with("keys/") || l.path.starts_with("locks/")) {
            out.push(format!("{} (empty file)", l.path));
        } else if l.size == 0 && l.path.starts_with("data/") {
            let id = l.path.rsplit('/').next().and_then(PackId::from_name);
            if id.and_then(|id| index.pack_pos(&id)).is_none() {
                out.push(format!("{} (empty file, not a pack)", l.path));
            }
        }
    }
    Ok(out)
}

fn check_keys(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    for l in repo.store().list("keys")? {
        let name = l.path;
        // Junk (an unknown name, an empty file) is reported by find_junk.
        if !is_object_name(&name) || l.size == 0 {
            continue;
        }
        r.key_files += 1;
        match repo.store().get(&name) {
            Ok(b) => {
                if let Err(e) = KeyFile::decode(&b) {
                    r.errors.push(format!("{name}: {e}"));
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    Ok(())
}

/// The index as every command sees it; damaged index files, and packs neither an index
/// file nor their own header describes, are findings.
fn load_index(repo: &Repository, r: &mut CheckReport) -> Result<(MasterIndex, Vec<Finding>)> {
    let index = repo.load_index_with(false)?;
    r.index_files = (index.files.len() + index.damaged_files.len()) as u64;
    r.packs_recovered = index.recovered.len() as u64;
    let mut findings: Vec<Finding> = index
        .damaged_files
        .iter()
        .map(|d| Finding::Other(format!("{}: {}", super::index_path(&d.id), d.reason)))
        .collect();
    findings.extend(index.unreadable.iter().map(|(p, why)| Finding::PackUnreadable(*p, why.clone())));
    Ok((index, findings))
}

/// Walks every snapshot's trees (each tree once) and checks that all data is indexed.
fn check_snapshots(
    repo: &Repository,
    index: &MasterIndex,
    snaps: &(Vec<super::snapshots::ListedSnapshot>, Vec<super::snapshots::DamagedSnapshot>),
    listed: &HashMap<PackId, crate::storage::Listed>,
    r: &mut CheckReport,
) -> Result<Vec<Finding>> {
    // A blob only obsolete packs hold is there only while one of them still exists.
    let present = |c: &BlobId| {
        index.contains(c) || index.fallback_locations(c).iter().any(|l| listed.contains_key(&index.pack_id(l.pack)))
    };
    let mut out = Vec::new();
    let mut seen: HashSet<BlobId> = HashSet::new();
    for d in &snaps.1 {
        r.snapshots += 1;
        out.push(Finding::Other(format!("{}: {}", super::snapshot_path(&d.id), d.reason)));
    }
    for l in &snaps.0 {
        let (sid, snap) = (&l.id, &l.snapshot);
        r.snapshots += 1;
        let mut stack = vec![(BlobId(snap.tree), b"/".to_vec())];
        while let Some((tid, path)) = stack.pop() {
            if !seen.insert(tid) {
                continue;
            }
            r.trees += 1;
            let shown = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
            let nodes = match repo.load_tree(index, &tid) {
                Ok(n) => n,
                Err(e) => {
                    out.push(Finding::Tree {
                        snapshot: sid.short(),
                        path: shown(&path),
                        tree: tid,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            for n in nodes {
                let mut p = path.clone();
                if !p.ends_with(b"/") {
                    p.push(b'/');
                }
                p.extend_from_slice(&n.name);
                match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(t)) => stack.push((BlobId(t), p.clone())),
                    (NodeKind::Dir, None) => out.push(Finding::Other(format!(
                        "snapshot {}: {}: directory without tree",
                        sid.short(),
                        shown(&p)
                    ))),
                    _ => {}
                }
                for c in &n.content {
                    match index.get(&BlobId(*c)) {
                        Some(l) if l.blob_type == BlobType::Data && present(&BlobId(*c)) => {}
                        _ => {
                            let recorded = !index.damaged_locations(&BlobId(*c)).is_empty();
                            out.push(Finding::ChunkMissing {
                                snapshot: sid.short(),
                                path: shown(&p),
                                blob: BlobId(*c),
                                recorded,
                            })
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Picks the packs to read (see [`ReadData`]); a random fraction is at least one pack.
fn select(index: &MasterIndex, read: ReadData) -> Vec<PackId> {
    let all: Vec<&super::index::PackInfo> = index.packs().iter().filter(|p| !p.obsolete).collect();
    let shuffled = || {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random source");
        let mut keyed: Vec<(blake3::Hash, &super::index::PackInfo)> =
            all.iter().map(|p| (blake3::keyed_hash(&seed, p.id.as_bytes()), *p)).collect();
        keyed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        keyed.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    match read {
        ReadData::None => Vec::new(),
        ReadData::All => all.iter().map(|p| p.id).collect(),
        ReadData::Subset(f) => {
            let v = shuffled();
            let n = ((v.len() as f64 * f).ceil() as usize).clamp(v.len().min(1), v.len());
            v.into_iter().take(n).map(|p| p.id).collect()
        }
        ReadData::Part { n, t } => all.iter().filter(|p| part_of(&p.id, t) == n - 1).map(|p| p.id).collect(),
        ReadData::Bytes(limit) => {
            let mut total = 0u64;
            shuffled()
                .into_iter()
                .take_while(|p| {
                    let take = total < limit;
                    total = total.saturating_add(p.size);
                    take
                })
                .map(|p| p.id)
                .collect()
        }
    }
}

/// Which of `t` parts a pack is in: its id's first 8 bytes, big-endian, modulo `t`.
pub fn part_of(id: &PackId, t: u64) -> u64 {
    u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes")) % t
}

fn read_packs(
    repo: &Repository,
    index: &MasterIndex,
    read: ReadData,
    readers: usize,
    listed: &HashMap<PackId, crate::storage::Listed>,
    progress: &dyn Progress,
    r: &mut CheckReport,
) -> Vec<Finding> {
    let chosen: Vec<PackId> = select(index, read).into_iter().filter(|p| listed.contains_key(p)).collect();
    let mut by_pack: HashMap<PackId, Vec<(BlobId, super::BlobLoc)>> = HashMap::new();
    for (id, loc) in index.iter() {
        by_pack.entry(index.pack_id(loc.pack)).or_default().push((*id, *loc));
    }
    progress.set_total(chosen.iter().map(|p| listed[p].size).sum(), chosen.len() as u64);
    let queue = Mutex::new(chosen.into_iter());
    let out = Mutex::new((Vec::new(), 0u64, 0u64, Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..readers.max(1) {
            s.spawn(|| loop {
                let Some(pid) = queue.lock().expect("poisoned").next() else { break };
                let expect = by_pack.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
                let mut result = verify_pack(repo, &pid, expect);
                // Bytes damaged in transit from a remote store: downloaded once more.
                if matches!(&result, Ok((errs, _)) if !errs.is_empty()) && !repo.store().is_local() {
                    result = verify_pack(repo, &pid, expect);
                }
                progress.add_bytes(listed[&pid].size);
                progress.add_item();
                let mut o = out.lock().expect("poisoned");
                match result {
                    Ok((errs, blobs)) => {
                        o.0.extend(errs.into_iter().map(|(b, e)| Finding::PackRead(pid, b, e)));
                        o.1 += 1;
                        o.2 += blobs;
                    }
                    Err(e) => o.3.push(e),
                }
            });
        }
    });
    let (errs, packs, blobs, unchecked) = out.into_inner().expect("poisoned");
    r.packs_read = packs;
    r.blobs_read = blobs;
    r.unchecked.extend(unchecked);
    errs
}

/// Downloads one pack and checks its header against the index and every blob's content.
/// Returns what is wrong, or `Err` when the pack could not be read at all (storage failing,
/// not the pack: nothing is known about it).
#[allow(clippy::type_complexity)]
fn verify_pack(
    repo: &Repository,
    pid: &PackId,
    expect: &[(BlobId, super::BlobLoc)],
) -> std::result::Result<(Vec<(Option<BlobId>, String)>, u64), String> {
    let name = pack_path(pid);
    let bytes = match repo.store().get(&name) {
        Ok(b) => b,
        Err(e @ crate::storage::StorageError::NotFound { .. }) => return Ok((vec![(None, e.to_string())], 0)),
        Err(e) => return Err(format!("{name}: could not be read: {e}")),
    };
    let entries = match parse_pack(repo, pid, &bytes) {
        Ok(e) => e,
        Err(reason) => return Ok((vec![(None, format!("{name}: {reason}"))], 0)),
    };
    let mut errors = Vec::new();
    let mut offset = 0u64;
    let mut at: HashMap<(BlobId, u64), &pack::PackEntry> = HashMap::new();
    let mut blobs = 0;
    for e in &entries {
        let id = BlobId(e.id);
        at.insert((id, offset), e);
        let loc = super::BlobLoc {
            pack: 0,
            blob_type: e.blob_type,
            compression: e.compression,
            offset: offset as u32,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
        };
        let body = bytes[offset as usize..offset as usize + e.stored_len as usize].to_vec();
        if let Err(reason) = repo.decode_blob(pid, &id, &loc, body) {
            errors.push((Some(id), format!("{name}: blob {id}: {reason}")));
        }
        blobs += 1;
        offset += u64::from(e.stored_len);
    }
    for (id, loc) in expect {
        match at.get(&(*id, u64::from(loc.offset))) {
            Some(e)
                if e.stored_len == loc.stored_len
                    && e.raw_len == loc.raw_len
                    && e.blob_type == loc.blob_type
                    && e.compression == loc.compression => {}
            _ => errors.push((Some(*id), format!("{name}: blob {id}: the index disagrees with the pack header"))),
        }
    }
    Ok((errors, blobs))
}

/// Reads a whole pack's trailer and header; checks the blobs exactly fill the space before it.
pub fn parse_pack(repo: &Repository, pid: &PackId, bytes: &[u8]) -> std::result::Result<Vec<pack::PackEntry>, String> {
    let size = bytes.len() as u64;
    super::packs::read_header(repo, pid, size, |r| Ok(bytes[r.start as usize..r.end as usize].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> std::result::Result<u64, String> {
        crate::retention::prune::parse_size(s)
    }

    #[test]
    fn subsets_parse_in_restic_forms() {
        assert_eq!(ReadData::parse_subset("2/7", size), Ok(ReadData::Part { n: 2, t: 7 }));
        assert_eq!(ReadData::parse_subset("10%", size), Ok(ReadData::Subset(0.1)));
        assert_eq!(ReadData::parse_subset("25", size), Ok(ReadData::Subset(0.25)));
        assert_eq!(ReadData::parse_subset("500M", size), Ok(ReadData::Bytes(500 << 20)));
        assert_eq!(ReadData::parse_subset("1g", size), Ok(ReadData::Bytes(1 << 30)));
        for bad in ["0/3", "4/3", "1/0", "a/b", "0%", "101%", "-5", "x", "0M", ""] {
            assert!(ReadData::parse_subset(bad, size).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_parts_of_t_cover_every_pack_exactly_once() {
        use crate::format::index::{IndexFile, IndexPack};
        let packs: Vec<IndexPack> = (0..300u32)
            .map(|i| IndexPack { pack_id: *blake3::hash(&i.to_le_bytes()).as_bytes(), pack_size: 10, blobs: vec![] })
            .collect();
        let l = crate::storage::Listed { path: String::new(), size: 0, modified_ns: 0 };
        let f = IndexFile { kind: crate::format::index::IndexKind::Packs, supersedes: vec![], packs };
        let index = MasterIndex::build(vec![(l, crate::id::IndexId([1; 32]), f)]);
        for t in [1u64, 2, 3, 7, 10, 256] {
            let mut seen: HashMap<PackId, u64> = HashMap::new();
            for n in 1..=t {
                let part = select(&index, ReadData::Part { n, t });
                assert_eq!(part, select(&index, ReadData::Part { n, t }), "deterministic");
                if t <= 10 {
                    assert!(!part.is_empty(), "part {n}/{t} of 300 packs is not empty");
                }
                for p in part {
                    assert!(seen.insert(p, n).is_none(), "{p:?} in two parts of {t}");
                }
            }
            assert_eq!(seen.len(), 300, "the {t} parts cover every pack");
        }
        assert_eq!(select(&index, ReadData::Bytes(25)).len(), 3, "packs until 25 bytes are reached");
        assert_eq!(select(&index, ReadData::Subset(0.1)).len(), 30);
    }
}
