//! The check a writer makes before it commits a snapshot (docs/storage.md, step W4).
//!
//! A backup deduplicates against the index it loaded when it started. If a prune marked
//! packs obsolete since then, the new snapshot may reference blobs that only those packs
//! hold. Prune would rescue them (it copies every used blob that only obsolete packs hold
//! before deleting them, and waits for this session to end), but the writer does not rely
//! on that: before writing its snapshot it re-lists `index/`; only if an obsolete-packs
//! record appeared that it had not seen does it walk its new snapshot's trees and copy every
//! blob that only obsolete packs hold into a new pack. In the common case this costs one
//! listing.

use std::collections::HashSet;
use std::sync::Arc;

use super::index::list_index_ids;
use super::writer::BlobSink;
use super::{Repository, Result};
use crate::format::index::IndexKind;
use crate::format::tree::NodeKind;
use crate::id::{BlobId, IndexId};

/// The index files a writer saw when it started.
pub fn seen_files(index: &super::MasterIndex) -> HashSet<IndexId> {
    index.files.iter().map(|f| f.id).chain(index.damaged_files.iter().map(|d| d.id)).collect()
}

/// Ensures every blob reachable from `roots` is held by a live pack, copying those that
/// only obsolete packs hold (see the module docs). Returns how many were copied.
pub fn ensure_live(
    repo: &Arc<Repository>,
    seen: &HashSet<IndexId>,
    roots: &[BlobId],
    uploaders: usize,
    alive: &super::lock::Alive,
) -> Result<u64> {
    let new: Vec<IndexId> = list_index_ids(repo)?.into_iter().filter(|id| !seen.contains(id)).collect();
    let mut marked = false;
    for id in &new {
        match repo.load_index_file(id) {
            Ok(f) if f.kind == IndexKind::Obsolete => {
                marked = true;
                break;
            }
            Ok(_) => {}
            Err(super::RepoError::Storage(crate::storage::StorageError::NotFound { .. })) => {}
            // Unreadable: it may be a record, so the trees are walked.
            Err(e) if e.is_damage() => {
                marked = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if !marked {
        return Ok(0);
    }
    let index = repo.load_index()?;
    // A read that fails because a prune deleted a pack is this session's expiry showing
    // (the prune judged it over), not damage: that is what is reported then.
    let expired_or = |e: super::RepoError| alive.check().err().unwrap_or(e);
    let mut todo: Vec<BlobId> = Vec::new();
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let mut seen_data: HashSet<BlobId> = HashSet::new();
    let mut stack: Vec<BlobId> = roots.to_vec();
    while let Some(t) = stack.pop() {
        if !seen_trees.insert(t) {
            continue;
        }
        if index.only_obsolete(&t) {
            todo.push(t);
        }
        for n in repo.load_tree(&index, &t).map_err(expired_or)? {
            if let (NodeKind::Dir, Some(s)) = (n.kind, n.subtree) {
                stack.push(BlobId(s));
            }
            for c in &n.content {
                let c = BlobId(*c);
                if seen_data.insert(c) && index.only_obsolete(&c) {
                    todo.push(c);
                }
            }
        }
    }
    if todo.is_empty() {
        return Ok(0);
    }
    let sink = BlobSink::start(repo.clone(), repo.config().compression_level, 1, uploaders.max(1), HashSet::new());
    sink.guard(alive.clone());
    let mut w = sink.writer();
    for id in &todo {
        let loc = index.get(id).expect("only_obsolete implies a location");
        let plain = repo.read_blob(&index, id).map_err(expired_or)?;
        w.write(loc.blob_type, *id, &plain, crate::compress::Plan::Try);
    }
    drop(w);
    sink.finish()?;
    Ok(todo.len() as u64)
}
