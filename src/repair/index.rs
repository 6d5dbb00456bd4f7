//! `repair index`: a new index, made from the packs themselves.
//!
//! Every pack in `data/` is described either by a readable index file that lists it with
//! the size it has (its entries were authenticated when that file was read), or, when no
//! readable file does or `--read-all-packs` is given, by its own header (two ranged reads).
//! The new index is one kind-0 file that supersedes every kind-0 file present, the damaged
//! ones included; the replaced files are deleted afterwards. Records (kinds 1 and 2) are
//! kept: an obsolete pack stays obsolete, a damaged copy stays recorded.
//!
//! Nothing readable is dropped: every pack whose header (or an index entry) describes it is
//! in the new index. Packs that neither describes are listed in the plan (`repair packs`
//! salvages what they hold); packs an index lists that `data/` lacks are left out.
//!
//! Kill -9 safe: the new file is written before anything is deleted, and a replaced file
//! still present is superseded, so ignored. Runs as an exclusive session (like prune): a
//! backup writing meanwhile keeps its index files (they are not superseded) and its
//! unindexed packs are described from their headers, as an adoption would.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::format::index::{IndexFile, IndexKind, IndexPack};
use crate::id::{IndexId, PackId};
use crate::progress::Progress;
use crate::repo::{index::list_index_files, index_path, pack_path, packs, RepoError, Repository, Result};
use crate::storage::{Listed, StorageError};

/// What `repair index` will do.
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexPlan {
    /// Packs described by a readable index file (entries reused).
    pub packs_from_index: u64,
    /// Packs described by their own header.
    pub packs_from_headers: u64,
    /// Packs neither describes: `data/...: reason`. Left out.
    pub packs_unreadable: Vec<String>,
    /// Packs whose header does not open, kept with the entries an index file had for them
    /// (`repair packs` salvages what they hold): `data/...: reason`.
    pub packs_kept_unreadable: Vec<String>,
    /// Packs an index file lists that are missing from `data/`.
    pub packs_missing: Vec<String>,
    /// Index files that will be replaced (superseded, then deleted).
    pub index_files_replaced: u64,
    /// Of those, the ones that could not be read: `index/...: reason`.
    pub index_files_damaged: Vec<String>,
    /// Blobs the new index lists.
    pub blobs: u64,
    #[serde(skip)]
    new_file: IndexFile,
    #[serde(skip)]
    replace: Vec<IndexId>,
}

impl IndexPlan {
    /// Whether the index is already what a rebuild would write.
    pub fn is_noop(&self) -> bool {
        self.packs_from_headers == 0
            && self.packs_missing.is_empty()
            && self.packs_kept_unreadable.is_empty()
            && self.index_files_damaged.is_empty()
            && self.index_files_replaced <= 1
    }
}

/// The outcome.
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexOutcome {
    pub index_file: Option<String>,
    pub index_files_deleted: u64,
}

/// Reads the index files and pack headers it needs; changes nothing.
pub fn plan(repo: &Repository, read_all: bool, threads: usize, progress: &dyn Progress) -> Result<IndexPlan> {
    let data: Vec<Listed> = repo.store().list("data")?;
    let mut plan = IndexPlan::default();
    // Entries of the readable kind-0 files, by pack (the first file that has the pack with
    // the size it really has wins).
    let mut known: HashMap<PackId, IndexPack> = HashMap::new();
    let mut listed_anywhere: HashSet<PackId> = HashSet::new();
    for (_, id) in list_index_files(repo)? {
        match repo.load_index_file(&id) {
            Ok(f) if f.kind == IndexKind::Packs => {
                plan.replace.push(id);
                for p in f.packs {
                    listed_anywhere.insert(PackId(p.pack_id));
                    known.entry(PackId(p.pack_id)).or_insert(p);
                }
            }
            Ok(_) => {}
            Err(RepoError::Storage(StorageError::NotFound { .. })) => {}
            Err(RepoError::Damaged { reason, .. }) => {
                plan.replace.push(id);
                plan.index_files_damaged.push(format!("{}: {reason}", index_path(&id)));
            }
            Err(e) => return Err(e),
        }
    }
    let live = known.len();
    if data.is_empty() && live > 0 {
        return Err(RepoError::Invalid(format!(
            "the listing of data/ is empty, but the index lists {live} packs: the listing cannot be complete"
        )));
    }
    let mut todo: Vec<(PackId, Listed)> = Vec::new();
    let mut out: Vec<IndexPack> = Vec::new();
    let in_data: HashSet<PackId> = data.iter().filter_map(|l| pack_of(&l.path)).collect();
    for l in data {
        let Some(pid) = pack_of(&l.path) else { continue };
        match known.get(&pid) {
            Some(p) if !read_all && p.pack_size == l.size => {
                plan.packs_from_index += 1;
                out.push(known.remove(&pid).expect("just found"));
            }
            _ => todo.push((pid, l)),
        }
    }
    progress.set_total(0, todo.len() as u64);
    let (read, unreadable) = read_headers(repo, todo, threads, progress);
    plan.packs_from_headers = read.len() as u64;
    out.extend(read);
    // A pack whose header does not open keeps the entries a readable index file had for it
    // (they were authenticated when that file was read), so `repair packs` can still
    // salvage its blobs; one no index file described is left out.
    for (pid, why) in unreadable {
        match known.remove(&pid) {
            Some(p) => {
                plan.packs_kept_unreadable.push(format!("{}: {why}", pack_path(&pid)));
                out.push(p);
            }
            None => plan.packs_unreadable.push(format!("{}: {why}", pack_path(&pid))),
        }
    }
    let mut missing: Vec<String> =
        listed_anywhere.iter().filter(|p| !in_data.contains(p)).map(|p| pack_path(p).to_string()).collect();
    missing.sort();
    plan.packs_missing = missing;
    out.sort_by_key(|p| p.pack_id);
    plan.blobs = out.iter().map(|p| p.blobs.len() as u64).sum();
    plan.index_files_replaced = plan.replace.len() as u64;
    plan.new_file =
        IndexFile { kind: IndexKind::Packs, supersedes: plan.replace.iter().map(|i| i.0).collect(), packs: out };
    Ok(plan)
}

fn pack_of(path: &str) -> Option<PackId> {
    crate::repo::packs::pack_of(path)
}

/// Reads the headers of `todo`, `threads` at a time: the packs described, and the ones not
/// (with why).
#[allow(clippy::type_complexity)]
fn read_headers(
    repo: &Repository,
    todo: Vec<(PackId, Listed)>,
    threads: usize,
    progress: &dyn Progress,
) -> (Vec<IndexPack>, Vec<(PackId, String)>) {
    let queue = Mutex::new(todo.into_iter());
    let out = Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let Some((pid, l)) = queue.lock().expect("poisoned").next() else { break };
                let header = packs::read_header(repo, &pid, l.size, |r| {
                    repo.store().get_range(&l.path, r).map(|b| b.to_vec()).map_err(|e| e.to_string())
                });
                progress.add_item();
                let mut o = out.lock().expect("poisoned");
                match header {
                    Ok(entries) => o.0.push(packs::index_pack(&pid, l.size, &entries)),
                    Err(why) => o.1.push((pid, why)),
                }
            });
        }
    });
    let (mut read, mut bad) = out.into_inner().expect("poisoned");
    read.sort_by_key(|p: &IndexPack| p.pack_id);
    bad.sort_by_key(|(p, _)| *p);
    (read, bad)
}

/// Writes the new index, then deletes the files it replaces.
pub fn execute(repo: &Repository, plan: IndexPlan) -> Result<IndexOutcome> {
    let id = repo.save_index_file(&plan.new_file)?;
    let mut deleted = 0;
    for old in &plan.replace {
        match repo.store().delete(&index_path(old)) {
            Ok(()) => deleted += 1,
            // Still locked by S3 Object Lock: it stays, superseded by the new file.
            Err(crate::storage::StorageError::Locked { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(c) = repo.cache() {
            c.remove("index", &old.to_hex());
        }
    }
    Ok(IndexOutcome { index_file: Some(index_path(&id)), index_files_deleted: deleted })
}
