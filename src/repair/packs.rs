//! `repair packs`: copy every blob that still reads out of damaged packs, then retire them.
//!
//! The damaged packs are those damage records name (found by `check`, `restore`, a backup),
//! or those given. Each is downloaded whole. Its blobs are located by its header if that
//! still opens, else by the entries the index has for the pack (offsets and lengths), so a
//! damaged header loses nothing. Every blob is decrypted and checked against its id; each
//! one that reads, and has no good copy elsewhere, is copied into a new pack. Then the
//! damaged packs are retired with an obsolete-packs record, as prune does (docs/storage.md):
//! writers stop using them at once, readers still fall back to them, and the next prune
//! deletes them once no session can still be using them. A blob that reads nowhere is lost:
//! the plan lists it, and `repair snapshots` replaces the files that need it.
//!
//! borg 1.1's repair discarded good data (borg #3444); here every blob that can be read is
//! kept, and the test suite checks exactly that. Kill -9 safe: copies are durable and indexed
//! before the record is written; a second run after a crash copies only what is still
//! missing and writes the record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::format::index::{IndexBlob, IndexFile, IndexKind, IndexPack};
use crate::format::{BlobType, Compression};
use crate::id::{BlobId, PackId};
use crate::repo::writer::BlobSink;
use crate::repo::{pack_path, BlobLoc, MasterIndex, RepoError, Repository, Result};

/// One damaged pack, as found.
#[derive(Debug, serde::Serialize)]
pub struct PackRepair {
    pub pack: String,
    /// Whether the header still opens (else the index's entries located the blobs).
    pub header_ok: bool,
    /// Blobs that read and will be copied.
    pub blobs_salvaged: u64,
    pub bytes_salvaged: u64,
    /// Blobs that read but have a good copy elsewhere already.
    pub blobs_elsewhere: u64,
    /// Blobs that do not read (`blob id: reason`).
    pub blobs_lost: Vec<String>,
    #[serde(skip)]
    id: PackId,
    #[serde(skip)]
    salvage: Vec<(BlobId, BlobLoc)>,
    #[serde(skip)]
    entries: Vec<IndexBlob>,
    #[serde(skip)]
    size: u64,
}

/// What `repair packs` will do.
#[derive(Debug, Default, serde::Serialize)]
pub struct PacksPlan {
    pub packs: Vec<PackRepair>,
    /// Damaged packs named that `data/` no longer has (nothing to salvage).
    pub packs_gone: Vec<String>,
}

/// What was done.
#[derive(Debug, Default, serde::Serialize)]
pub struct PacksOutcome {
    pub blobs_copied: u64,
    pub packs_retired: u64,
}

/// The live packs damage records name, and those whose size in `data/` differs from the
/// index's (truncated); or those given.
fn damaged_packs(index: &MasterIndex, sizes: &HashMap<PackId, u64>, given: &[PackId]) -> Vec<PackId> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let live = |p: &PackId| index.pack_pos(p).is_some_and(|pos| !index.pack(pos).obsolete);
    let mut v: Vec<PackId> = index
        .files
        .iter()
        .filter(|f| f.kind == IndexKind::Damaged)
        .flat_map(|f| f.packs.iter().copied())
        .filter(live)
        .chain(
            index
                .packs()
                .iter()
                .filter(|p| !p.obsolete && sizes.get(&p.id).is_some_and(|s| *s != p.size))
                .map(|p| p.id),
        )
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Every entry the index has for pack `pos` (live, obsolete and recorded-damaged copies).
fn index_entries(index: &MasterIndex, pos: u32) -> Vec<(BlobId, BlobLoc)> {
    let mut v: Vec<(BlobId, BlobLoc)> = index
        .iter()
        .chain(index.iter_fallback_all())
        .chain(index.iter_damaged_all())
        .filter(|(_, l)| l.pack == pos)
        .map(|(id, l)| (*id, *l))
        .collect();
    v.sort_by_key(|(_, l)| l.offset);
    v.dedup_by_key(|(id, l)| (*id, l.offset));
    v
}

/// Whether the blob has a copy, outside `pack`, in a live pack and not recorded damaged.
fn good_elsewhere(index: &MasterIndex, id: &BlobId, pack: u32) -> bool {
    index.get_live(id).is_some_and(|l| l.pack != pack && !index.is_recorded_damaged(id, &l))
}

/// Downloads each damaged pack and finds what reads; changes nothing.
pub fn plan(repo: &Repository, given: &[PackId]) -> Result<PacksPlan> {
    let index = repo.load_index()?;
    let sizes: HashMap<PackId, u64> =
        crate::repo::packs::list_packs(repo)?.into_iter().map(|(id, l)| (id, l.size)).collect();
    let mut plan = PacksPlan::default();
    for pid in damaged_packs(&index, &sizes, given) {
        let Some(pos) = index.pack_pos(&pid) else {
            return Err(RepoError::Invalid(format!("{}: no index file lists this pack", pack_path(&pid))));
        };
        let bytes = match repo.store().get(&pack_path(&pid)) {
            Ok(b) => b,
            Err(crate::storage::StorageError::NotFound { .. }) => {
                plan.packs_gone.push(pack_path(&pid));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        plan.packs.push(look_at(repo, &index, pid, pos, &bytes));
    }
    Ok(plan)
}

/// The blobs of one downloaded pack, by header or else by index, and which of them read.
fn look_at(repo: &Repository, index: &MasterIndex, pid: PackId, pos: u32, bytes: &[u8]) -> PackRepair {
    let header = crate::repo::check::parse_pack(repo, &pid, bytes);
    let header_ok = header.is_ok();
    let located: Vec<(BlobId, BlobLoc)> = match header {
        Ok(entries) => {
            let mut offset = 0u32;
            entries
                .iter()
                .map(|e| {
                    let loc = BlobLoc {
                        pack: pos,
                        blob_type: e.blob_type,
                        compression: e.compression,
                        offset,
                        stored_len: e.stored_len,
                        raw_len: e.raw_len,
                    };
                    offset = offset.wrapping_add(e.stored_len);
                    (BlobId(e.id), loc)
                })
                .collect()
        }
        Err(_) => index_entries(index, pos),
    };
    let mut r = PackRepair {
        pack: pack_path(&pid),
        header_ok,
        blobs_salvaged: 0,
        bytes_salvaged: 0,
        blobs_elsewhere: 0,
        blobs_lost: Vec::new(),
        id: pid,
        salvage: Vec::new(),
        entries: index_entries(index, pos).iter().map(|(id, l)| entry(id, l)).collect(),
        size: index.pack(pos).size,
    };
    for (id, loc) in located {
        let (start, end) = (loc.offset as usize, loc.offset as usize + loc.stored_len as usize);
        let read = bytes
            .get(start..end)
            .ok_or_else(|| "beyond the end of the pack".to_string())
            .and_then(|b| repo.decode_blob(&pid, &id, &loc, b.to_vec()));
        match read {
            Ok(_) if good_elsewhere(index, &id, pos) => r.blobs_elsewhere += 1,
            Ok(plain) => {
                r.blobs_salvaged += 1;
                r.bytes_salvaged += plain.len() as u64;
                r.salvage.push((id, loc));
            }
            Err(why) => r.blobs_lost.push(format!("blob {id}: {why}")),
        }
    }
    r
}

fn entry(id: &BlobId, l: &BlobLoc) -> IndexBlob {
    IndexBlob {
        blob_type: l.blob_type,
        compression: l.compression,
        id: id.0,
        offset: l.offset,
        stored_len: l.stored_len,
        raw_len: l.raw_len,
    }
}

/// Copies what reads into new packs (indexed), then retires the damaged packs.
pub fn execute(repo: &Arc<Repository>, plan: PacksPlan, alive: &crate::repo::lock::Alive) -> Result<PacksOutcome> {
    let mut out = PacksOutcome::default();
    if plan.packs.is_empty() {
        return Ok(out);
    }
    let sink = BlobSink::start(repo.clone(), repo.config().compression_level, 1, 2, HashSet::new());
    sink.guard(alive.clone());
    let mut w = sink.writer();
    let mut by_pack: BTreeMap<PackId, Vec<(BlobId, BlobLoc)>> = BTreeMap::new();
    for p in &plan.packs {
        by_pack.insert(p.id, p.salvage.clone());
    }
    let mut copied: HashMap<BlobId, ()> = HashMap::new();
    for (pid, blobs) in &by_pack {
        if blobs.is_empty() {
            continue;
        }
        let bytes = repo.store().get(&pack_path(pid))?;
        for (id, loc) in blobs {
            if copied.contains_key(id) {
                continue;
            }
            let b = bytes[loc.offset as usize..loc.offset as usize + loc.stored_len as usize].to_vec();
            let plain = repo
                .decode_blob(pid, id, loc, b)
                .map_err(|why| RepoError::damaged(format!("{} (blob {id})", pack_path(pid)), why))?;
            // Data already compressed in its pack is stored as it was chosen there.
            let how = match (loc.blob_type, loc.compression) {
                (BlobType::Data, Compression::None) => crate::compress::Plan::StoreRaw,
                _ => crate::compress::Plan::Try,
            };
            w.write(loc.blob_type, *id, &plain, how);
            copied.insert(*id, ());
        }
    }
    drop(w);
    sink.finish()?;
    out.blobs_copied = copied.len() as u64;
    let record = IndexFile {
        kind: IndexKind::Obsolete,
        supersedes: Vec::new(),
        packs: plan
            .packs
            .iter()
            .map(|p| IndexPack { pack_id: p.id.0, pack_size: p.size, blobs: p.entries.clone() })
            .collect(),
    };
    alive.check()?;
    repo.save_index_file(&record)?;
    out.packs_retired = plan.packs.len() as u64;
    Ok(out)
}
