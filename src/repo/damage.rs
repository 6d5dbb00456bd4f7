//! Damage records: what `check`, `restore` and `drill` found missing or damaged, kept in the
//! repository so that every later backup stores those blobs afresh.
//!
//! Blob ids name content, so a backup that meets a chunk it has already stored does not
//! store it again: without a record, a blob lost to a deleted pack or a flipped bit stays
//! lost in every later snapshot that contains it (restic #2571, kopia #3492). A record is an
//! index file of kind 2 (docs/format.md, "Index files") listing the copies found bad: pack,
//! blob id and offset, with the entry the index had. The master index keeps those copies
//! out of what writers deduplicate against ([`super::MasterIndex::contains`]), so the next
//! backup of a file holding such a chunk reads the file and stores the chunk again; once it
//! has, every snapshot that needs the chunk is whole again, old ones too (the new copy has
//! the same id). Readers still try a recorded copy last (a fault may have passed).
//!
//! A record is written only after the damage was seen twice (a fresh index, and for remote
//! stores a second download), and only copies not recorded already are written.

use std::collections::{BTreeMap, HashSet};

use super::{MasterIndex, Repository, Result};
use crate::format::index::{IndexBlob, IndexFile, IndexKind, IndexPack};
use crate::id::{BlobId, IndexId, PackId};

/// Something found bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Damage {
    /// One copy of a blob: the one at `pack` (the copy the index lists there).
    Blob { pack: PackId, blob: BlobId },
    /// A whole pack (missing, truncated, or its header unreadable): every blob the index
    /// lists in it.
    Pack(PackId),
}

/// The index entries `found` names that no record names yet, by pack.
fn entries(index: &MasterIndex, found: &[Damage]) -> BTreeMap<PackId, Vec<IndexBlob>> {
    let whole: HashSet<PackId> =
        found.iter().filter_map(|d| if let Damage::Pack(p) = d { Some(*p) } else { None }).collect();
    let single: HashSet<(PackId, BlobId)> = found
        .iter()
        .filter_map(|d| if let Damage::Blob { pack, blob } = d { Some((*pack, *blob)) } else { None })
        .collect();
    let mut out: BTreeMap<PackId, Vec<IndexBlob>> = BTreeMap::new();
    let mut add = |id: &BlobId, loc: &super::BlobLoc| {
        let pack = index.pack_id(loc.pack);
        if (whole.contains(&pack) || single.contains(&(pack, *id))) && !index.is_recorded_damaged(id, loc) {
            let v = out.entry(pack).or_default();
            if !v.iter().any(|b| b.id == id.0 && b.offset == loc.offset) {
                v.push(IndexBlob {
                    blob_type: loc.blob_type,
                    compression: loc.compression,
                    id: id.0,
                    offset: loc.offset,
                    stored_len: loc.stored_len,
                    raw_len: loc.raw_len,
                });
            }
        }
    };
    for (id, loc) in index.iter() {
        add(id, loc);
    }
    for (id, loc) in index.iter_fallback_all() {
        add(id, loc);
    }
    out
}

/// Writes one damage record for what `found` names and no record names yet; returns it
/// and the number of copies it lists (`None` when there was nothing new).
pub fn record(repo: &Repository, index: &MasterIndex, found: &[Damage]) -> Result<Option<(IndexId, usize)>> {
    let by_pack = entries(index, found);
    let n: usize = by_pack.values().map(Vec::len).sum();
    if n == 0 {
        return Ok(None);
    }
    let packs = by_pack
        .into_iter()
        .map(|(pid, blobs)| {
            let size = index.pack_pos(&pid).map(|p| index.pack(p).size).unwrap_or(0);
            IndexPack { pack_id: pid.0, pack_size: size, blobs }
        })
        .collect();
    let f = IndexFile { kind: IndexKind::Damaged, supersedes: Vec::new(), packs };
    Ok(Some((repo.save_index_file(&f)?, n)))
}
