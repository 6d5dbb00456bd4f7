//! The in-memory master index: every blob the repository's index files know about.
//!
//! Built by reading all `index/` objects. Duplicates (the same blob in two packs, e.g. after
//! two clients stored it concurrently) are fine: the first location wins and both are valid.

use std::collections::HashMap;

use super::{index_path, RepoError, Repository, Result};
use crate::format::envelope::ObjectType;
use crate::format::index::IndexFile;
use crate::format::{BlobType, Compression};
use crate::id::{BlobId, IndexId, PackId};

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
}

#[derive(Default)]
pub struct MasterIndex {
    blobs: HashMap<BlobId, BlobLoc>,
    packs: Vec<PackInfo>,
    pack_pos: HashMap<PackId, u32>,
    /// The index files read, for `check`.
    pub files: Vec<IndexId>,
}

impl MasterIndex {
    pub fn get(&self, id: &BlobId) -> Option<BlobLoc> {
        self.blobs.get(id).copied()
    }
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }
    pub fn pack_id(&self, pos: u32) -> PackId {
        self.packs[pos as usize].id
    }
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }
    pub fn len(&self) -> usize {
        self.blobs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &BlobLoc)> {
        self.blobs.iter()
    }

    /// Adds the contents of one index file.
    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            let pid = PackId(p.pack_id);
            let pos = *self.pack_pos.entry(pid).or_insert_with(|| {
                self.packs.push(PackInfo { id: pid, size: p.pack_size });
                (self.packs.len() - 1) as u32
            });
            for b in &p.blobs {
                self.blobs.entry(BlobId(b.id)).or_insert(BlobLoc {
                    pack: pos,
                    blob_type: b.blob_type,
                    compression: b.compression,
                    offset: b.offset,
                    stored_len: b.stored_len,
                    raw_len: b.raw_len,
                });
            }
        }
    }
}

/// Lists the index files in storage.
pub fn list_index_ids(repo: &Repository) -> Result<Vec<IndexId>> {
    Ok(repo
        .store()
        .list("index")?
        .into_iter()
        .filter_map(|(n, _)| n.strip_prefix("index/").and_then(IndexId::from_name))
        .collect())
}

impl Repository {
    /// Reads and decodes one index file.
    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let name = index_path(id);
        self.cached_get("index", &id.to_hex(), &name, |bytes| {
            let plain = self.open_object(ObjectType::Index, id.as_bytes(), &name, bytes)?;
            IndexFile::decode(&plain).map_err(|e| RepoError::damaged(name.clone(), e))
        })
    }

    /// Loads every index file. Any damaged index file is an error naming it.
    pub fn load_index(&self) -> Result<MasterIndex> {
        let mut idx = MasterIndex::default();
        let ids = list_index_ids(self)?;
        if let Some(c) = self.cache() {
            c.retain("index", |n| IndexId::from_name(n).is_some_and(|id| ids.contains(&id)));
        }
        for id in ids {
            let f = self.load_index_file(&id)?;
            idx.add_file(&f);
            idx.files.push(id);
        }
        if let Some(c) = self.cache() {
            c.retain("trees", |n| BlobId::from_name(n).is_some_and(|id| idx.contains(&id)));
        }
        Ok(idx)
    }

    /// Writes one index file (after the packs it lists are durable).
    pub fn save_index_file(&self, f: &IndexFile) -> Result<IndexId> {
        let id = IndexId::random();
        let sealed = self.seal_object(ObjectType::Index, id.as_bytes(), &f.encode(), 3);
        self.store().put_new(&index_path(&id), sealed)?;
        Ok(id)
    }
}
