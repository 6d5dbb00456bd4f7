//! The in-memory master index: every blob the repository's index files know about.
//!
//! Built by reading all `index/` objects (docs/format.md, "Index files"), in two steps:
//! 1. every file is read; the union of the `supersedes` lists of all files names the files
//!    a prune has replaced, which are ignored from then on (a superseded file still present
//!    is one a prune was stopped before deleting);
//! 2. the packs of the files left are entered. A pack named by an obsolete-packs record
//!    (kind 1) is *obsolete*: prune has scheduled it for deletion. Its blobs go into a
//!    fallback map that readers use only for blobs no live pack holds, and writers never
//!    see: a backup never deduplicates against data a prune has marked for deletion.
//!
//! Duplicates (the same blob in two live packs, e.g. after two clients stored it
//! concurrently) are fine: the first location wins and both are valid. A pack listed by
//! several files (a backup that adopted an unindexed pack, a prune's rewrite) is one pack.

use std::collections::{HashMap, HashSet};

use super::{index_path, RepoError, Repository, Result};
use crate::format::envelope::ObjectType;
use crate::format::index::{IndexFile, IndexKind};
use crate::format::{BlobType, Compression};
use crate::id::{BlobId, IndexId, PackId};
use crate::storage::{Listed, StorageError};

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLoc {
    /// Position in [`MasterIndex::packs`].
    pub pack: u32,
    pub blob_type: BlobType,
    pub compression: Compression,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// A pack the index knows, with its size as recorded when it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub id: PackId,
    pub size: u64,
    /// Named by an obsolete-packs record: scheduled for deletion by prune.
    pub obsolete: bool,
    /// Bytes of the blob entries the index lists for it (every copy, duplicates too).
    pub listed_bytes: u64,
}

/// One index file as read, for prune and check.
#[derive(Clone, Debug)]
pub struct FileInfo {
    pub id: IndexId,
    pub kind: IndexKind,
    /// The storage's timestamp of the object, Unix ns (from the listing).
    pub modified_ns: i64,
    /// Superseded by another file: its content is ignored.
    pub superseded: bool,
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<PackId>,
}

/// An index file that is listed but cannot be read (see [`Repository::load_index`]).
#[derive(Clone, Debug)]
pub struct DamagedFile {
    pub id: IndexId,
    pub reason: String,
}

#[derive(Default)]
pub struct MasterIndex {
    /// Blobs in live packs: what writers deduplicate against and readers use first.
    blobs: HashMap<BlobId, BlobLoc>,
    /// Blobs found only in obsolete packs, every copy: readers' last resort (some of those
    /// packs may already be deleted).
    fallback: HashMap<BlobId, Vec<BlobLoc>>,
    /// Copies a damage record names (kind 2), every one: readers try them last, writers
    /// never see them, so the next backup stores those blobs afresh.
    damaged: HashMap<BlobId, Vec<BlobLoc>>,
    packs: Vec<PackInfo>,
    pack_pos: HashMap<PackId, u32>,
    /// The index files read, in listing order.
    pub files: Vec<FileInfo>,
    /// Index files listed but unreadable. While there are any, the packs no readable file
    /// lists were entered from their own headers ([`Self::recovered`]), and nothing may
    /// judge a pack unreferenced (prune refuses).
    pub damaged_files: Vec<DamagedFile>,
    /// Packs entered from their own headers because an index file is damaged.
    pub recovered: Vec<PackId>,
    /// Packs no readable index file lists whose header cannot be read either.
    pub unreadable: Vec<(PackId, String)>,
}

impl MasterIndex {
    /// Where a blob can be read: a live pack, else an obsolete one not yet deleted, else a
    /// copy recorded as damaged (it may have been a passing fault).
    pub fn get(&self, id: &BlobId) -> Option<BlobLoc> {
        self.blobs
            .get(id)
            .copied()
            .or_else(|| self.fallback.get(id).and_then(|v| v.first()).copied())
            .or_else(|| self.damaged.get(id).and_then(|v| v.first()).copied())
    }

    /// Copies of a blob recorded as damaged.
    pub fn damaged_locations(&self, id: &BlobId) -> &[BlobLoc] {
        self.damaged.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Blobs whose every known copy is recorded as damaged (no live or obsolete copy), with
    /// the first such copy.
    pub fn iter_damaged_only(&self) -> impl Iterator<Item = (&BlobId, &BlobLoc)> {
        self.damaged
            .iter()
            .filter(|(id, _)| !self.blobs.contains_key(id) && !self.fallback.contains_key(id))
            .filter_map(|(id, v)| Some((id, v.first()?)))
    }

    /// Every copy a damage record names.
    pub fn iter_damaged_all(&self) -> impl Iterator<Item = (&BlobId, &BlobLoc)> {
        self.damaged.iter().flat_map(|(id, v)| v.iter().map(move |l| (id, l)))
    }

    /// Whether a damage record names this copy of the blob.
    pub fn is_recorded_damaged(&self, id: &BlobId, loc: &BlobLoc) -> bool {
        self.damaged.get(id).is_some_and(|v| v.iter().any(|l| l.pack == loc.pack && l.offset == loc.offset))
    }

    /// Takes the blobs of packs found missing out of what writers see (in memory only): a
    /// backup that finds a pack the index lists gone from `data/` stores those blobs again.
    pub fn set_aside_packs(&mut self, packs: &HashSet<PackId>) {
        let pos: HashSet<u32> = packs.iter().filter_map(|p| self.pack_pos(p)).collect();
        let gone: Vec<(BlobId, BlobLoc)> =
            self.blobs.iter().filter(|(_, l)| pos.contains(&l.pack)).map(|(id, l)| (*id, *l)).collect();
        for (id, loc) in gone {
            self.blobs.remove(&id);
            self.damaged.entry(id).or_default().push(loc);
        }
    }
    /// Where a blob is in a live pack (never an obsolete one).
    pub fn get_live(&self, id: &BlobId) -> Option<BlobLoc> {
        self.blobs.get(id).copied()
    }
    /// Whether a live pack holds the blob: what deduplication and change detection ask.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }
    pub fn pack_id(&self, pos: u32) -> PackId {
        self.packs[pos as usize].id
    }
    pub fn pack(&self, pos: u32) -> &PackInfo {
        &self.packs[pos as usize]
    }
    /// Every pack the index names, live and obsolete.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }
    pub fn pack_pos(&self, id: &PackId) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }
    /// Number of blobs in live packs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
    /// Blobs in live packs.
    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }
    /// Blobs in live packs, with their locations.
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &BlobLoc)> {
        self.blobs.iter()
    }
    /// Blobs held only by obsolete packs (no live pack has them), with their locations.
    pub fn iter_fallback(&self) -> impl Iterator<Item = (&BlobId, &BlobLoc)> {
        self.fallback.iter().filter_map(|(id, v)| Some((id, v.first()?)))
    }

    /// Every copy in an obsolete pack of a blob no live pack holds.
    pub fn iter_fallback_all(&self) -> impl Iterator<Item = (&BlobId, &BlobLoc)> {
        self.fallback.iter().flat_map(|(id, v)| v.iter().map(move |l| (id, l)))
    }

    /// Every obsolete copy of a blob no live pack holds.
    pub fn fallback_locations(&self, id: &BlobId) -> &[BlobLoc] {
        self.fallback.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    fn pack_entry(&mut self, p: &crate::format::index::IndexPack, obsolete: bool) -> u32 {
        let id = PackId(p.pack_id);
        let pos = *self.pack_pos.entry(id).or_insert_with(|| {
            let listed_bytes = p.blobs.iter().map(|b| u64::from(b.stored_len)).sum();
            self.packs.push(PackInfo { id, size: p.pack_size, obsolete, listed_bytes });
            (self.packs.len() - 1) as u32
        });
        pos
    }

    /// Enters the packs of one live index file (kind 0); packs in `obsolete` go to the
    /// fallback map, copies in `bad` (damage records) to the damaged map.
    fn add_packs(&mut self, f: &IndexFile, obsolete: &HashSet<PackId>) {
        self.add_packs_with(f, obsolete, &HashSet::new());
    }

    fn add_packs_with(&mut self, f: &IndexFile, obsolete: &HashSet<PackId>, bad: &HashSet<(PackId, BlobId, u32)>) {
        for p in &f.packs {
            let pid = PackId(p.pack_id);
            let is_obsolete = obsolete.contains(&pid);
            let pos = self.pack_entry(p, is_obsolete);
            for b in &p.blobs {
                let loc = BlobLoc {
                    pack: pos,
                    blob_type: b.blob_type,
                    compression: b.compression,
                    offset: b.offset,
                    stored_len: b.stored_len,
                    raw_len: b.raw_len,
                };
                if bad.contains(&(pid, BlobId(b.id), b.offset)) {
                    let v = self.damaged.entry(BlobId(b.id)).or_default();
                    if !v.iter().any(|l| l.pack == pos && l.offset == b.offset) {
                        v.push(loc);
                    }
                } else if is_obsolete {
                    let v = self.fallback.entry(BlobId(b.id)).or_default();
                    if !v.iter().any(|l| l.pack == pos) {
                        v.push(loc);
                    }
                } else {
                    self.blobs.entry(BlobId(b.id)).or_insert(loc);
                }
            }
        }
    }

    /// Builds the master index from every index file read (see the module docs).
    pub fn build(files: Vec<(Listed, IndexId, IndexFile)>) -> MasterIndex {
        let superseded: HashSet<IndexId> =
            files.iter().flat_map(|(_, _, f)| f.supersedes.iter().map(|s| IndexId(*s))).collect();
        let obsolete: HashSet<PackId> = files
            .iter()
            .filter(|(_, _, f)| f.kind == IndexKind::Obsolete)
            .flat_map(|(_, _, f)| f.packs.iter().map(|p| PackId(p.pack_id)))
            .collect();
        // Copies damage records name: (pack, blob, offset).
        let bad: HashSet<(PackId, BlobId, u32)> = files
            .iter()
            .filter(|(_, _, f)| f.kind == IndexKind::Damaged)
            .flat_map(|(_, _, f)| {
                f.packs.iter().flat_map(|p| p.blobs.iter().map(|b| (PackId(p.pack_id), BlobId(b.id), b.offset)))
            })
            .collect();
        let mut idx = MasterIndex::default();
        let mut records = Vec::new();
        for (listed, id, f) in files {
            let is_superseded = f.kind == IndexKind::Packs && superseded.contains(&id);
            idx.files.push(FileInfo {
                id,
                kind: f.kind,
                modified_ns: listed.modified_ns,
                superseded: is_superseded,
                supersedes: f.supersedes.iter().map(|s| IndexId(*s)).collect(),
                packs: f.packs.iter().map(|p| PackId(p.pack_id)).collect(),
            });
            match f.kind {
                IndexKind::Packs if !is_superseded => idx.add_packs_with(&f, &obsolete, &bad),
                IndexKind::Packs | IndexKind::Damaged => {}
                IndexKind::Obsolete => records.push(f),
            }
        }
        // Obsolete packs no live file lists any more (prune's rewrite left them out): their
        // entries come from the records themselves.
        for f in &records {
            idx.add_packs_with(f, &obsolete, &bad);
        }
        // The fallback holds only what no live pack has.
        let MasterIndex { blobs, fallback, .. } = &mut idx;
        fallback.retain(|id, _| !blobs.contains_key(id));
        idx
    }

    /// Adds the packs of an index file this process has just written (kind 0).
    pub fn add_file(&mut self, f: &IndexFile) {
        self.add_packs(f, &HashSet::new());
    }

    /// Whether every index file listed could be read.
    pub fn is_whole(&self) -> bool {
        self.damaged_files.is_empty()
    }

    /// Whether the blob is held by an obsolete pack and by no live one.
    pub fn only_obsolete(&self, id: &BlobId) -> bool {
        !self.blobs.contains_key(id) && self.fallback.contains_key(id)
    }
}

/// Lists the index files in storage.
pub fn list_index_files(repo: &Repository) -> Result<Vec<(Listed, IndexId)>> {
    Ok(repo
        .store()
        .list("index")?
        .into_iter()
        .filter_map(|l| {
            let id = l.path.strip_prefix("index/").and_then(IndexId::from_name)?;
            Some((l, id))
        })
        .collect())
}

/// Lists the index files in storage (ids only).
pub fn list_index_ids(repo: &Repository) -> Result<Vec<IndexId>> {
    Ok(list_index_files(repo)?.into_iter().map(|(_, id)| id).collect())
}

impl Repository {
    /// Reads and decodes one index file.
    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let name = index_path(id);
        self.cached_get("index", &id.to_hex(), &name, |bytes| {
            let plain = self.open_object(ObjectType::Index, id.as_bytes(), &name, bytes)?;
            IndexFile::decode(&plain).map_err(|e| RepoError::decoding(name.clone(), e))
        })
    }

    /// Loads every index file. A file that was listed but is gone when read was deleted
    /// meanwhile by a prune, which wrote its replacement first: the listing is then taken
    /// again (a listing that began before the replacement was written may not show it), a
    /// few times at most, then the files still there are used.
    ///
    /// A damaged index file does not stop anything: the others are used, and the packs none
    /// of them lists are read from their own headers (two ranged reads each), so every
    /// blob that is still readable is found. Each damaged file is warned about once. Index
    /// files of a newer format, and storage that cannot be reached, are errors.
    pub fn load_index(&self) -> Result<MasterIndex> {
        self.load_index_with(true)
    }

    /// [`Self::load_index`], warning about damaged files only if `warn` (check reports them
    /// as damage instead).
    pub fn load_index_with(&self, warn: bool) -> Result<MasterIndex> {
        let mut idx = None;
        for _ in 0..3 {
            idx = self.try_load_index(false)?;
            if idx.is_some() {
                break;
            }
        }
        let mut idx = match idx {
            Some(i) => i,
            None => self.try_load_index(true)?.expect("missing files allowed"),
        };
        if !idx.is_whole() {
            super::packs::enter_unlisted_packs(self, &mut idx)?;
            if warn {
                self.warn_damaged_index(&idx);
            }
        }
        Ok(idx)
    }

    fn warn_damaged_index(&self, idx: &MasterIndex) {
        for d in &idx.damaged_files {
            self.warnings().warn(format!(
                "{}: {}; the other index files and the packs' own headers are used instead \
                 (`coffer repair index` rebuilds the index)",
                index_path(&d.id),
                d.reason
            ));
        }
        for (p, why) in &idx.unreadable {
            self.warnings().warn(format!(
                "{}: no readable index file lists it and its header cannot be read ({why}): its blobs are unavailable",
                super::pack_path(p)
            ));
        }
    }

    fn try_load_index(&self, allow_missing: bool) -> Result<Option<MasterIndex>> {
        let listed = list_index_files(self)?;
        if let Some(c) = self.cache() {
            let ids: HashSet<IndexId> = listed.iter().map(|(_, id)| *id).collect();
            c.retain("index", |n| IndexId::from_name(n).is_some_and(|id| ids.contains(&id)));
        }
        let mut files = Vec::with_capacity(listed.len());
        let mut damaged = Vec::new();
        for (l, id) in listed {
            match self.load_index_file(&id) {
                Ok(f) => files.push((l, id, f)),
                Err(RepoError::Storage(StorageError::NotFound { .. })) if allow_missing => {}
                Err(RepoError::Storage(StorageError::NotFound { .. })) => return Ok(None),
                Err(RepoError::Damaged { reason, .. }) => damaged.push(DamagedFile { id, reason }),
                Err(e) => return Err(e),
            }
        }
        let mut idx = MasterIndex::build(files);
        // A damaged file another file supersedes (`repair index` replaced it, and was
        // stopped before deleting it) no longer counts.
        let superseded: HashSet<IndexId> = idx.files.iter().flat_map(|f| f.supersedes.iter().copied()).collect();
        damaged.retain(|d| !superseded.contains(&d.id));
        idx.damaged_files = damaged;
        if let Some(c) = self.cache() {
            c.retain("trees", |n| BlobId::from_name(n).is_some_and(|id| idx.get(&id).is_some()));
        }
        Ok(Some(idx))
    }

    /// Writes one index file (after the packs it lists are durable).
    pub fn save_index_file(&self, f: &IndexFile) -> Result<IndexId> {
        let id = IndexId::random();
        let sealed = self.seal_object(ObjectType::Index, id.as_bytes(), &f.encode(), 3);
        self.store().put_new(&index_path(&id), sealed)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{IndexBlob, IndexPack};

    fn pack(n: u8, blobs: &[u8]) -> IndexPack {
        IndexPack {
            pack_id: [n; 32],
            pack_size: 100,
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, b)| IndexBlob {
                    blob_type: BlobType::Data,
                    compression: Compression::None,
                    id: [*b; 32],
                    offset: i as u32 * 10,
                    stored_len: 10,
                    raw_len: 0,
                })
                .collect(),
        }
    }

    fn file(n: u8, kind: IndexKind, supersedes: &[u8], packs: Vec<IndexPack>) -> (Listed, IndexId, IndexFile) {
        let l = Listed { path: String::new(), size: 0, modified_ns: 0 };
        (l, IndexId([n; 32]), IndexFile { kind, supersedes: supersedes.iter().map(|s| [*s; 32]).collect(), packs })
    }

    #[test]
    fn superseded_files_are_ignored_and_obsolete_packs_are_only_a_fallback() {
        let files = vec![
            // An old file: packs 1 (blobs 10, 11) and 2 (blob 12).
            file(1, IndexKind::Packs, &[], vec![pack(1, &[10, 11]), pack(2, &[12])]),
            // A prune's record: pack 2 is obsolete.
            file(3, IndexKind::Obsolete, &[], vec![pack(2, &[12])]),
            // Its rewrite: pack 1 and a repacked pack 4 holding blob 11 again; supersedes file 1.
            file(2, IndexKind::Packs, &[1], vec![pack(1, &[10, 11]), pack(4, &[11])]),
            // A file no prune has seen stays live.
            file(5, IndexKind::Packs, &[], vec![pack(5, &[13])]),
        ];
        let idx = MasterIndex::build(files);
        assert!(idx.contains(&BlobId([10; 32])) && idx.contains(&BlobId([11; 32])));
        assert!(idx.contains(&BlobId([13; 32])));
        assert!(!idx.contains(&BlobId([12; 32])), "writers must not see obsolete packs");
        assert!(idx.only_obsolete(&BlobId([12; 32])));
        let loc = idx.get(&BlobId([12; 32])).expect("readers still find it");
        assert!(idx.pack(loc.pack).obsolete);
        assert!(idx.files.iter().find(|f| f.id == IndexId([1; 32])).unwrap().superseded);
        assert!(!idx.files.iter().find(|f| f.id == IndexId([2; 32])).unwrap().superseded);
    }
}
