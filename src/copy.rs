//! `copy`: snapshots from one repository into another (the 3-2-1 rule's second copy).
//!
//! The two repositories have different keys, and may have different chunker parameters, so
//! nothing can be copied byte for byte: every file's content is read from the source (blob
//! by blob, decrypted and verified), cut again by the destination's chunker and hashed with
//! its keys; only chunks the destination does not already have are stored. Trees are
//! re-encoded with the new ids. Work is memoised per run: a tree or a file content that
//! several snapshots share is converted once. A source snapshot already in the destination
//! (same time, host, user, paths and tags) is skipped, so copying twice is a no-op.
//! Write ordering is a backup's: packs and index first, then the snapshots.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use crate::chunker::Chunker;
use crate::compress::{plan_for_file, Plan};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, NodeKind};
use crate::format::BlobType;
use crate::id::{BlobId, SnapshotId};
use crate::repo::writer::{claim, BlobSink, RawBlob};
use crate::repo::{MasterIndex, RepoError, Repository, Result};

/// What `copy` did with each source snapshot.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// (source id, new destination id)
    pub copied: Vec<(String, String)>,
    /// (source id, the destination snapshot that already holds it)
    pub skipped: Vec<(String, String)>,
    pub blobs_added: u64,
    pub data_added: u64,
}

/// Whether two snapshots record the same backup.
fn same_backup(a: &Snapshot, b: &Snapshot) -> bool {
    a.time_ns == b.time_ns && a.host == b.host && a.username == b.username && a.paths == b.paths && a.tags == b.tags
}

/// Streams a file's content by reading its source blobs one after another.
struct ContentReader<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    ids: std::slice::Iter<'a, [u8; 32]>,
    current: std::io::Cursor<Vec<u8>>,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(id) = self.ids.next() else { return Ok(0) };
            let data = self.repo.read_blob(self.index, &BlobId(*id)).map_err(std::io::Error::other)?;
            self.current = std::io::Cursor::new(data);
        }
    }
}

struct Copier<'a> {
    src: &'a Repository,
    src_index: &'a MasterIndex,
    dst: &'a Repository,
    sink: &'a BlobSink,
    chunker: Chunker,
    trees: HashMap<BlobId, BlobId>,
    contents: HashMap<blake3::Hash, Vec<[u8; 32]>>,
}

impl Copier<'_> {
    fn store(&self, blob_type: BlobType, data: &[u8]) -> BlobId {
        let id = self.dst.keys().blob_id(blob_type, data);
        if claim(&self.sink.known(), id) {
            let _ = self.sink.sender().send(RawBlob { blob_type, id, data: data.to_vec(), plan: Plan::Try });
        }
        id
    }

    /// The destination content list of a file whose source content list is `ids`.
    fn content(&mut self, ids: &[[u8; 32]]) -> Result<Vec<[u8; 32]>> {
        let key = blake3::hash(&ids.concat());
        if let Some(c) = self.contents.get(&key) {
            return Ok(c.clone());
        }
        let reader =
            ContentReader { repo: self.src, index: self.src_index, ids: ids.iter(), current: Default::default() };
        let mut out = Vec::new();
        let (dst, sink) = (self.dst, self.sink);
        let known = sink.known();
        let tx = sink.sender();
        let mut plan = None; // as backup does, from the file's first bytes
        self.chunker
            .chunk_stream::<std::io::Error>(reader, |chunk| {
                let plan = *plan.get_or_insert_with(|| plan_for_file(chunk));
                let id = dst.keys().blob_id(BlobType::Data, chunk);
                if claim(&known, id) {
                    let _ = tx.send(RawBlob { blob_type: BlobType::Data, id, data: chunk.to_vec(), plan });
                }
                out.push(id.0);
                Ok(())
            })
            .map_err(|e| RepoError::Invalid(format!("reading source data: {e}")))?;
        self.contents.insert(key, out.clone());
        Ok(out)
    }

    /// The destination id of source tree `id`, converting it (and what it holds) if new.
    fn tree(&mut self, id: BlobId) -> Result<BlobId> {
        if let Some(t) = self.trees.get(&id) {
            return Ok(*t);
        }
        let mut nodes = self.src.load_tree(self.src_index, &id)?;
        for n in nodes.iter_mut() {
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => n.subtree = Some(self.tree(BlobId(sub))?.0),
                (NodeKind::File, _) => n.content = self.content(&n.content)?,
                _ => {}
            }
        }
        let new = self.store(BlobType::Tree, &tree::encode(&nodes));
        self.trees.insert(id, new);
        Ok(new)
    }
}

/// Copies `snaps` from `src` into `dst`; see the module docs.
pub fn copy(
    src: &Repository,
    dst: Arc<Repository>,
    snaps: &[(SnapshotId, Snapshot)],
    uploaders: usize,
) -> Result<CopyReport> {
    let src_index = src.load_index()?;
    let session = crate::repo::lock::Session::start(&dst, crate::format::lock::LockKind::Writer, "copy")?;
    let mut dst_index = dst.load_index()?;
    let seen_index = crate::repo::recheck::seen_files(&dst_index);
    let adopted = crate::repo::packs::adopt_orphans(&dst, &mut dst_index, Some(&session.alive()))?;
    dst_index.set_aside_packs(&adopted.missing.iter().copied().collect());
    let existing = dst.load_snapshots()?;
    let mut report = CopyReport::default();
    let mut todo = Vec::new();
    for (id, s) in snaps {
        match existing.iter().find(|(_, d)| same_backup(s, d)) {
            Some((did, _)) => report.skipped.push((id.to_hex(), did.to_hex())),
            None => todo.push((id, s)),
        }
    }
    if todo.is_empty() {
        return Ok(report);
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let known = dst_index.blob_ids().copied().collect();
    let level = dst.config().compression_level;
    let sink = BlobSink::start(dst.clone(), level, threads, uploaders.max(1), known);
    sink.guard(session.alive());
    let chunker = Chunker::new(dst.config().chunker, dst.keys().gear_table());
    let mut c = Copier {
        src,
        src_index: &src_index,
        dst: &dst,
        sink: &sink,
        chunker,
        trees: HashMap::new(),
        contents: HashMap::new(),
    };
    let mut roots = Vec::new();
    for (_, s) in &todo {
        match c.tree(BlobId(s.tree)) {
            Ok(t) => roots.push(t),
            Err(e) => {
                drop(c);
                let _ = sink.finish();
                return Err(e);
            }
        }
    }
    drop(c);
    let totals = sink.finish()?;
    report.blobs_added = totals.blobs_added;
    report.data_added = totals.data_added;
    crate::repo::recheck::ensure_live(&dst, &seen_index, &roots, uploaders, &session.alive())?;
    session.check_alive()?;
    for ((id, s), root) in todo.into_iter().zip(roots) {
        let copy = Snapshot { tree: root.0, parent: None, ..s.clone() };
        let new_id = dst.save_snapshot(&copy)?;
        report.copied.push((id.to_hex(), new_id.to_hex()));
    }
    drop(session);
    Ok(report)
}
