//! Reading pack headers, and re-indexing packs that no index lists.
//!
//! A backup killed after a pack became durable but before an index file listed it leaves an
//! "orphan" pack: complete, authenticated, but invisible to deduplication. The next backup
//! adopts such packs ([`adopt_orphans`]): it reads each one's trailer and encrypted header
//! (two ranged reads), and writes one index file listing them, so everything that reached
//! storage is reused. A pack whose header does not open is left alone (`check` reports it).

use std::collections::HashSet;
use std::ops::Range;

use super::{pack_path, MasterIndex, Repository, Result};

/// The pack a name under `data/` is, if it is one: `data/<hh>/<pack id>` exactly
/// (docs/format.md, "Layout"); anything else is not a pack.
pub fn pack_of(path: &str) -> Option<crate::id::PackId> {
    let id = path.rsplit('/').next().and_then(crate::id::PackId::from_name)?;
    (pack_path(&id) == path).then_some(id)
}

/// The packs in a listing of `data/`, by id (other names left out).
pub fn packs_in(
    listing: Vec<crate::storage::Listed>,
) -> std::collections::HashMap<crate::id::PackId, crate::storage::Listed> {
    listing.into_iter().filter_map(|l| Some((pack_of(&l.path)?, l))).collect()
}

/// The packs under `data/`, by id, with their listings.
pub fn list_packs(repo: &Repository) -> Result<std::collections::HashMap<crate::id::PackId, crate::storage::Listed>> {
    Ok(packs_in(repo.store().list("data")?))
}
use crate::crypto::{self, PACK_HEADER_NONCE};
use crate::format::index::{IndexBlob, IndexFile, IndexKind, IndexPack};
use crate::format::pack::{self, PackEntry, TRAILER_LEN};
use crate::id::PackId;

/// Reads and authenticates a pack's header through `read` (a ranged reader of the pack,
/// whose total size is `size`), checking that the blobs exactly fill the space before it.
pub fn read_header(
    repo: &Repository,
    pid: &PackId,
    size: u64,
    mut read: impl FnMut(Range<u64>) -> std::result::Result<Vec<u8>, String>,
) -> std::result::Result<Vec<PackEntry>, String> {
    let trailer_at = size.checked_sub(TRAILER_LEN as u64).ok_or("truncated (shorter than a trailer)")?;
    let header_len = u64::from(pack::decode_trailer(&read(trailer_at..size)?).map_err(|e| e.to_string())?);
    let hstart = trailer_at.checked_sub(header_len).ok_or("header length exceeds the pack (truncated)")?;
    let mut header = read(hstart..trailer_at)?;
    repo.keys()
        .object_cipher(crypto::KEY_TYPE_PACK, pid.as_bytes())
        .open(PACK_HEADER_NONCE, b"pack header", &mut header)
        .map_err(|e| format!("header: {e}"))?;
    let entries = pack::decode_header(&header).map_err(|e| format!("header: {e}"))?;
    let total: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
    if total != hstart {
        return Err(format!("blobs take {total} bytes but the header starts at {hstart}"));
    }
    Ok(entries)
}

/// Index entries for a pack's header entries (offsets follow from the lengths).
pub fn index_pack(pid: &PackId, size: u64, entries: &[PackEntry]) -> IndexPack {
    let mut offset = 0u32;
    let blobs = entries
        .iter()
        .map(|e| {
            let b = IndexBlob {
                blob_type: e.blob_type,
                compression: e.compression,
                id: e.id,
                offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
            };
            offset = offset.wrapping_add(e.stored_len);
            b
        })
        .collect();
    IndexPack { pack_id: pid.0, pack_size: size, blobs }
}

/// An empty listing of `data/` while the index names live packs cannot be complete (a
/// misbehaving store or proxy, an unmounted share): nothing is decided from it.
pub fn empty_listing_check(listing: &[crate::storage::Listed], index: &MasterIndex) -> Result<()> {
    let live = index.packs().iter().filter(|p| !p.obsolete).count();
    if listing.is_empty() && live > 0 {
        return Err(super::RepoError::Invalid(format!(
            "the listing of data/ is empty, but the index lists {live} packs: the listing cannot be complete"
        )));
    }
    Ok(())
}

/// Enters every pack in `data/` that no readable index file lists from its own header
/// (an index file is damaged: these are the packs it may have listed). Nothing is written;
/// a pack whose header cannot be read is recorded in [`MasterIndex::unreadable`].
pub fn enter_unlisted_packs(repo: &Repository, index: &mut MasterIndex) -> Result<()> {
    let listing = repo.store().list("data")?;
    let mut f = IndexFile { kind: IndexKind::Packs, supersedes: Vec::new(), packs: Vec::new() };
    for l in listing {
        let Some(pid) = l.path.rsplit('/').next().and_then(PackId::from_name) else { continue };
        if pack_path(&pid) != l.path || index.pack_pos(&pid).is_some() {
            continue;
        }
        let header = read_header(repo, &pid, l.size, |r| {
            repo.store().get_range(&l.path, r).map(|b| b.to_vec()).map_err(|e| e.to_string())
        });
        match header {
            Ok(entries) => {
                f.packs.push(index_pack(&pid, l.size, &entries));
                index.recovered.push(pid);
            }
            Err(why) => index.unreadable.push((pid, why)),
        }
    }
    index.add_file(&f);
    Ok(())
}

/// What [`adopt_orphans`] did.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Unindexed packs now indexed.
    pub packs: usize,
    /// Live packs the index lists that `data/` lacks: the caller sets their blobs aside
    /// ([`MasterIndex::set_aside_packs`]), so it stores them again rather than reference a
    /// missing pack.
    pub missing: Vec<PackId>,
}

/// Re-indexes every complete pack no index lists, and finds the live packs that are
/// missing (a prune deletes only packs its records made obsolete, which are not live; and
/// it waits for this writer's session, which started before the index was read).
/// The index file is written only if `alive` (the caller's session) may still commit.
pub fn adopt_orphans(
    repo: &Repository,
    index: &mut MasterIndex,
    alive: Option<&super::lock::Alive>,
) -> Result<Adopted> {
    let known: HashSet<PackId> = index.packs().iter().map(|p| p.id).collect();
    let listing = repo.store().list("data")?;
    empty_listing_check(&listing, index)?;
    let listed: HashSet<&str> = listing.iter().map(|l| l.path.as_str()).collect();
    let missing: Vec<PackId> = index
        .packs()
        .iter()
        .filter(|p| !p.obsolete && !listed.contains(pack_path(&p.id).as_str()))
        .map(|p| p.id)
        .collect();
    let mut packs = Vec::new();
    for l in listing {
        let (name, size) = (l.path, l.size);
        let Some(pid) = name.rsplit('/').next().and_then(PackId::from_name) else { continue };
        if pack_path(&pid) != name || known.contains(&pid) {
            continue;
        }
        let header = read_header(repo, &pid, size, |r| {
            repo.store().get_range(&name, r).map(|b| b.to_vec()).map_err(|e| e.to_string())
        });
        if let Ok(entries) = header {
            packs.push(index_pack(&pid, size, &entries));
        }
    }
    let n = packs.len();
    if n > 0 {
        let f = IndexFile { kind: IndexKind::Packs, supersedes: Vec::new(), packs };
        if let Some(a) = alive {
            a.check()?;
        }
        repo.save_index_file(&f)?;
        index.add_file(&f);
    }
    Ok(Adopted { packs: n, missing })
}
