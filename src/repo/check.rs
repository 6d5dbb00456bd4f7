//! `check`: prove the repository is intact, naming every damaged object.
//!
//! Structure (always): every key file, index file and snapshot decrypts and decodes; every
//! pack an index lists exists with the recorded size; every tree of every snapshot decrypts,
//! decodes and matches its id; every chunk a file needs is indexed. With `--read-data`
//! (or a random `--read-data-subset`), every selected pack is downloaded whole: its header
//! must decrypt and agree with the index, and every blob must decrypt, decompress and hash to
//! its id. Packs no index lists are leftovers of interrupted backups: reported as
//! reclaimable, not as damage.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

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
    pub leftover_packs: u64,
    pub leftover_bytes: u64,
}

/// Runs the check. Storage failures that stop it (cannot list) are errors; everything
/// found damaged is collected in the report instead.
/// `readers` packs are downloaded and verified at once with `--read-data`.
pub fn check(repo: &Repository, read: ReadData, readers: usize, progress: &dyn Progress) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    check_keys(repo, &mut r)?;
    let listed: HashMap<PackId, u64> = repo
        .store()
        .list("data")?
        .into_iter()
        .filter_map(|l| {
            let id = l.path.rsplit('/').next().and_then(PackId::from_name)?;
            (pack_path(&id) == l.path).then_some((id, l.size))
        })
        .collect();
    let index = load_index(repo, &mut r)?;
    for p in index.packs() {
        match listed.get(&p.id) {
            None => r.errors.push(format!("{}: pack missing (listed in the index)", pack_path(&p.id))),
            Some(s) if *s != p.size => r.errors.push(format!(
                "{}: size {s} differs from the {} the index recorded (truncated or damaged)",
                pack_path(&p.id),
                p.size
            )),
            Some(_) => {}
        }
    }
    r.packs = index.packs().len() as u64;
    let indexed: HashSet<PackId> = index.packs().iter().map(|p| p.id).collect();
    for (id, size) in &listed {
        if !indexed.contains(id) {
            r.leftover_packs += 1;
            r.leftover_bytes += size;
        }
    }
    check_snapshots(repo, &index, &mut r)?;
    read_packs(repo, &index, read, readers, &listed, progress, &mut r);
    Ok(r)
}

fn check_keys(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    for l in repo.store().list("keys")? {
        let name = l.path;
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

fn load_index(repo: &Repository, r: &mut CheckReport) -> Result<MasterIndex> {
    let mut idx = MasterIndex::default();
    for id in super::index::list_index_ids(repo)? {
        r.index_files += 1;
        match repo.load_index_file(&id) {
            Ok(f) => idx.add_file(&f),
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    Ok(idx)
}

/// Walks every snapshot's trees (each tree once) and checks that all data is indexed.
fn check_snapshots(repo: &Repository, index: &MasterIndex, r: &mut CheckReport) -> Result<()> {
    let mut seen: HashSet<BlobId> = HashSet::new();
    for sid in repo.list_snapshot_ids()? {
        r.snapshots += 1;
        let snap = match repo.load_snapshot(&sid) {
            Ok(s) => s,
            Err(e) => {
                r.errors.push(e.to_string());
                continue;
            }
        };
        let mut stack = vec![(BlobId(snap.tree), b"/".to_vec())];
        while let Some((tid, path)) = stack.pop() {
            if !seen.insert(tid) {
                continue;
            }
            r.trees += 1;
            let nodes = match repo.load_tree(index, &tid) {
                Ok(n) => n,
                Err(e) => {
                    r.errors.push(format!("snapshot {}: {}: {e}", sid.short(), String::from_utf8_lossy(&path)));
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
                    (NodeKind::Dir, None) => r.errors.push(format!(
                        "snapshot {}: {}: directory without tree",
                        sid.short(),
                        String::from_utf8_lossy(&p)
                    )),
                    _ => {}
                }
                for c in &n.content {
                    match index.get(&BlobId(*c)) {
                        Some(l) if l.blob_type == BlobType::Data => {}
                        _ => r.errors.push(format!(
                            "snapshot {}: {}: chunk {} is missing from the index",
                            sid.short(),
                            String::from_utf8_lossy(&p),
                            BlobId(*c).short()
                        )),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Picks the packs to read: all, or a random fraction (at least one).
fn select(index: &MasterIndex, read: ReadData) -> Vec<PackId> {
    let all: Vec<PackId> = index.packs().iter().map(|p| p.id).collect();
    match read {
        ReadData::None => Vec::new(),
        ReadData::All => all,
        ReadData::Subset(f) => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).expect("random source");
            let mut keyed: Vec<(blake3::Hash, PackId)> =
                all.into_iter().map(|id| (blake3::keyed_hash(&seed, id.as_bytes()), id)).collect();
            keyed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let n = ((keyed.len() as f64 * f).ceil() as usize).clamp(keyed.len().min(1), keyed.len());
            keyed.into_iter().take(n).map(|(_, id)| id).collect()
        }
    }
}

fn read_packs(
    repo: &Repository,
    index: &MasterIndex,
    read: ReadData,
    readers: usize,
    listed: &HashMap<PackId, u64>,
    progress: &dyn Progress,
    r: &mut CheckReport,
) {
    let chosen: Vec<PackId> = select(index, read).into_iter().filter(|p| listed.contains_key(p)).collect();
    let mut by_pack: HashMap<PackId, Vec<(BlobId, super::BlobLoc)>> = HashMap::new();
    for (id, loc) in index.iter() {
        by_pack.entry(index.pack_id(loc.pack)).or_default().push((*id, *loc));
    }
    progress.set_total(chosen.iter().map(|p| listed[p]).sum(), chosen.len() as u64);
    let queue = Mutex::new(chosen.into_iter());
    let out = Mutex::new((Vec::new(), 0u64, 0u64));
    std::thread::scope(|s| {
        for _ in 0..readers.max(1) {
            s.spawn(|| loop {
                let Some(pid) = queue.lock().expect("poisoned").next() else { break };
                let expect = by_pack.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
                let (errs, blobs) = verify_pack(repo, &pid, expect);
                progress.add_bytes(listed[&pid]);
                progress.add_item();
                let mut o = out.lock().expect("poisoned");
                o.0.extend(errs);
                o.1 += 1;
                o.2 += blobs;
            });
        }
    });
    let (errs, packs, blobs) = out.into_inner().expect("poisoned");
    r.errors.extend(errs);
    r.packs_read = packs;
    r.blobs_read = blobs;
}

/// Downloads one pack and checks its header against the index and every blob's content.
fn verify_pack(repo: &Repository, pid: &PackId, expect: &[(BlobId, super::BlobLoc)]) -> (Vec<String>, u64) {
    let name = pack_path(pid);
    let bytes = match repo.store().get(&name) {
        Ok(b) => b,
        Err(e) => return (vec![e.to_string()], 0),
    };
    let entries = match parse_pack(repo, pid, &bytes) {
        Ok(e) => e,
        Err(reason) => return (vec![format!("{name}: {reason}")], 0),
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
            errors.push(format!("{name}: blob {id}: {reason}"));
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
            _ => errors.push(format!("{name}: blob {id}: the index disagrees with the pack header")),
        }
    }
    (errors, blobs)
}

/// Reads a whole pack's trailer and header; checks the blobs exactly fill the space before it.
pub fn parse_pack(repo: &Repository, pid: &PackId, bytes: &[u8]) -> std::result::Result<Vec<pack::PackEntry>, String> {
    let size = bytes.len() as u64;
    super::packs::read_header(repo, pid, size, |r| Ok(bytes[r.start as usize..r.end as usize].to_vec()))
}
