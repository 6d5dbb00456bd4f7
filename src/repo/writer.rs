//! Writing blobs: compress -> encrypt -> pack -> upload -> index.
//!
//! Blobs are compressed by whichever thread has them, through a [`BlobWriter`] (one per
//! thread, holding its zstd context and a scratch buffer): a backup's reader threads
//! compress the chunks they just cut and hashed, still in their core's cache, and copy no
//! plaintext anywhere. The writer then claims the blob's place in the one open pack (its
//! offset, which is also its AES-GCM nonce) under a short lock, seals the blob in its own
//! buffer with no lock held, and copies it into its place (see [`OpenPack`]). A
//! [`BlobSink`] also runs `threads` packer threads that take [`RawBlob`] from a queue, for
//! callers with one producer (`copy`) and for a backup reader that has a large file while
//! other cores are idle. `uploaders` threads write finished packs to storage.
//!
//! The write ordering that keeps the repository valid at every instant (docs/format.md,
//! "Write ordering"):
//! 1. a pack is written, and durable, before any index file lists it;
//! 2. an index file is written every [`INDEX_FLUSH_PACKS`] packs and at the end, so a crashed
//!    backup leaves at most that many packs unindexed (reclaimable leftovers), and the next
//!    backup deduplicates against everything indexed before the crash;
//! 3. the snapshot is written by the caller only after [`BlobSink::finish`] returned, i.e.
//!    after every index file it depends on is durable.
//!
//! Queues between the stages are bounded, so memory stays flat: one open pack, and at most
//! one closed pack per writing thread still waiting for its last blobs; one pack in the upload
//! queue and one per upload thread; when storage is slower than compression, one finished
//! pack per writing thread waiting to be queued; one recycled pack buffer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::placebuf::PlaceBuf;
use super::{pack_path, Repository, Result};
use crate::compress::{Compressor, Plan};
use crate::crypto::{self, ObjectCipher, PACK_HEADER_NONCE};
use crate::format::index::{IndexBlob, IndexFile, IndexKind, IndexPack};
use crate::format::pack::{self, PackEntry};
use crate::format::BlobType;
use crate::id::{BlobId, PackId};

/// How many packs one index file covers at most.
pub const INDEX_FLUSH_PACKS: usize = 32;

/// Recycled pack buffers kept at most (each is about one pack target size).
const SPARE_BUFFERS: usize = 1;

/// A plaintext blob on its way to a packer thread.
pub struct RawBlob {
    pub blob_type: BlobType,
    pub id: BlobId,
    pub data: Vec<u8>,
    pub plan: Plan,
}

/// One pack being filled. Writers claim a place in it under [`Shared::open`]'s lock (the
/// place's offset is the blob's nonce), seal their blob outside any lock, then copy it to
/// its place with no lock either ([`PlaceBuf`]); whoever drops the last reference to a
/// closed pack finishes it. So no writer waits for another's AES-GCM pass or copy.
struct OpenPack {
    id: PackId,
    cipher: ObjectCipher,
    /// Places claimed and not yet filled, plus one while places are still handed out.
    pending: AtomicUsize,
    /// Bytes claimed so far (set under `Shared::open`).
    len: AtomicUsize,
    buf: PlaceBuf,
    /// The header entries and index records, in offset order (pushed under `Shared::open`).
    meta: Mutex<(Vec<PackEntry>, Vec<IndexBlob>)>,
}

/// The pack places are claimed in, and the bytes claimed in it so far.
struct Current {
    pack: Arc<OpenPack>,
    reserved: usize,
}

/// A place claimed in an open pack.
struct Slot {
    pack: Arc<OpenPack>,
    offset: usize,
}

impl OpenPack {
    fn new(repo: &Repository, buf: Vec<u8>, capacity: usize) -> Arc<Self> {
        let id = PackId::random();
        Arc::new(OpenPack {
            id,
            cipher: repo.keys().object_cipher(crypto::KEY_TYPE_PACK, id.as_bytes()),
            pending: AtomicUsize::new(1),
            len: AtomicUsize::new(0),
            buf: PlaceBuf::new(buf, capacity),
            meta: Mutex::new((Vec::new(), Vec::new())),
        })
    }

    /// Copies a sealed blob to the place `slot` claimed; returns the finished pack if that
    /// was the last place of a closed pack.
    #[allow(unsafe_code)] // PlaceBuf's contract, kept as the SAFETY note says
    fn fill(slot: Slot, sealed: &[u8]) -> Option<Upload> {
        // SAFETY: `claim` handed this place (offset, sealed length) to this slot alone, and
        // the pack cannot be finished (taken) before this slot's reference is released below.
        unsafe { slot.pack.buf.write_at(slot.offset, sealed) };
        slot.pack.release()
    }

    /// Drops one reference (a filled place, or the open one); the last finishes the pack.
    fn release(&self) -> Option<Upload> {
        (self.pending.fetch_sub(1, Ordering::AcqRel) == 1).then(|| self.finish())
    }

    /// Appends the encrypted header and the trailer. Only called by the last `release`.
    #[allow(unsafe_code)] // PlaceBuf's contract, kept as the SAFETY note says
    fn finish(&self) -> Upload {
        // SAFETY: the last reference is gone, so no place is handed out any more and every
        // place was filled by its writer before it released (`AcqRel` above orders those
        // writes before this); places are contiguous from 0 to `len`.
        let mut buf = unsafe { self.buf.take(self.len.load(Ordering::Acquire)) };
        let (entries, index) = std::mem::take(&mut *self.meta.lock().expect("poisoned"));
        let mut header = pack::encode_header(&entries);
        self.cipher.seal(PACK_HEADER_NONCE, b"pack header", &mut header);
        let header_len = header.len() as u32;
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&pack::encode_trailer(header_len));
        let ip = IndexPack { pack_id: self.id.0, pack_size: buf.len() as u64, blobs: index };
        (self.id, buf, ip)
    }
}

/// Counters of what a sink stored.
#[derive(Default)]
pub struct SinkStats {
    pub blobs_added: AtomicU64,
    /// Bytes of packs written.
    pub data_added: AtomicU64,
    pub data_added_raw: AtomicU64,
    pub packs: AtomicU64,
}

/// What a finished sink stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkTotals {
    pub blobs_added: u64,
    pub data_added: u64,
    pub data_added_raw: u64,
    pub packs: u64,
}

/// Shared state of one writing session.
struct Shared {
    repo: Arc<Repository>,
    pending: Mutex<Vec<IndexPack>>,
    /// Pack buffers handed back by the uploaders, for the packers to fill again.
    spare: Mutex<Vec<Vec<u8>>>,
    /// The pack places are claimed in; every writer uses it.
    open: Mutex<Option<Current>>,
    /// A pack is finished once it holds this many bytes.
    target: usize,
    level: i32,
    error: Mutex<Option<super::RepoError>>,
    stats: SinkStats,
    /// Packs opened; at the end every one must have been uploaded (see `BlobSink::finish`).
    packs_made: AtomicU64,
    /// The session the sink writes for: no index file is written once it may have been
    /// judged over (docs/storage.md, "Many clients and prune").
    alive: std::sync::OnceLock<super::lock::Alive>,
}

impl Shared {
    /// A buffer for the next pack: a recycled one when there is one.
    fn buffer(&self) -> Vec<u8> {
        self.spare.lock().expect("poisoned").pop().unwrap_or_default()
    }

    /// Claims the next place of `sealed_len` bytes for a blob and records its entry. Also
    /// returns a pack this closed with no place left to fill (the blob did not fit in it).
    fn claim(&self, entry: PackEntry, sealed_len: usize) -> (Slot, Option<Upload>) {
        let mut open = self.open.lock().expect("poisoned");
        // Leave a sixteenth of the room for the header, so finishing rarely reallocates.
        let room = |c: &Current| (c.pack.buf.capacity() - c.pack.buf.capacity() / 16).min(LIMIT);
        let full = open.take_if(|c| c.reserved + sealed_len > room(c));
        let c = open.get_or_insert_with(|| {
            self.packs_made.fetch_add(1, Ordering::Relaxed);
            Current {
                // Room for the target and a large chunk; a larger blob gets a pack of its own.
                pack: OpenPack::new(&self.repo, self.buffer(), (self.target + self.target / 2).max(sealed_len)),
                reserved: 0,
            }
        });
        let offset = c.reserved;
        c.reserved += sealed_len;
        c.pack.len.store(c.reserved, Ordering::Release);
        c.pack.pending.fetch_add(1, Ordering::AcqRel);
        {
            let mut meta = c.pack.meta.lock().expect("poisoned");
            meta.1.push(IndexBlob {
                blob_type: entry.blob_type,
                compression: entry.compression,
                id: entry.id,
                offset: offset as u32,
                stored_len: entry.stored_len,
                raw_len: entry.raw_len,
            });
            meta.0.push(entry);
        }
        let slot = Slot { pack: c.pack.clone(), offset };
        if c.reserved >= self.target {
            // Our own place is still pending, so closing cannot finish the pack here.
            let closed = open.take().and_then(|c| c.pack.release());
            debug_assert!(closed.is_none());
        }
        drop(open);
        // The pack the blob did not fit in is finished (if nothing is pending) without the lock.
        (slot, full.and_then(|c| c.pack.release()))
    }

    fn fail(&self, e: super::RepoError) {
        let mut g = self.error.lock().expect("poisoned");
        if g.is_none() {
            *g = Some(e);
        }
    }

    fn upload(&self, id: PackId, bytes: Vec<u8>, ip: IndexPack) -> Result<()> {
        let size = bytes.len() as u64;
        if let Some(buf) = self.repo.store().put_new_reclaim(&pack_path(&id), bytes)? {
            let mut spare = self.spare.lock().expect("poisoned");
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        }
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        self.stats.data_added.fetch_add(size, Ordering::Relaxed);
        let full = {
            let mut p = self.pending.lock().expect("poisoned");
            p.push(ip);
            if p.len() >= INDEX_FLUSH_PACKS {
                Some(std::mem::take(&mut *p))
            } else {
                None
            }
        };
        if let Some(packs) = full {
            self.save_index(packs)?;
        }
        Ok(())
    }

    /// Writes an index file for `packs`, if the session may still commit.
    fn save_index(&self, packs: Vec<IndexPack>) -> Result<()> {
        if let Some(a) = self.alive.get() {
            a.check()?;
        }
        self.repo.save_index_file(&IndexFile { kind: IndexKind::Packs, supersedes: vec![], packs })?;
        Ok(())
    }
}

/// Compresses blobs on the calling thread and appends them to the sink's open pack.
/// Dropping a writer flushes nothing: the open pack is the sink's, finished by
/// [`BlobSink::finish`] (every writer must be dropped before that).
pub struct BlobWriter {
    shared: Arc<Shared>,
    up: Sender<Upload>,
    compressor: Compressor,
    scratch: Vec<u8>,
}

/// A finished pack on its way to storage.
type Upload = (PackId, Vec<u8>, IndexPack);

// Offsets and lengths are u32 on disk (docs/format.md). A pack is finished before it could
// pass 2 GiB; a blob that alone could is refused (chunks are at most 8 MiB, so only an
// absurd tree blob could be).
const LIMIT: usize = (u32::MAX / 2) as usize;

impl BlobWriter {
    /// Stores one blob (the caller has claimed its id). Failures are the sink's: they are
    /// kept and reported by [`BlobSink::finish`], and [`BlobSink::failed`] tells callers
    /// to stop early.
    pub fn write(&mut self, blob_type: BlobType, id: BlobId, data: &[u8], plan: Plan) {
        if let Err(e) = self.try_write(blob_type, id, data, plan) {
            self.shared.fail(e);
        }
    }

    fn try_write(&mut self, blob_type: BlobType, id: BlobId, data: &[u8], plan: Plan) -> Result<()> {
        if zstd::zstd_safe::compress_bound(data.len()) + crypto::TAG_LEN > LIMIT {
            return Err(super::RepoError::Invalid(format!("blob {id} is too large to store")));
        }
        self.scratch.clear();
        let compression = self.compressor.compress_into(data, &mut self.scratch, plan);
        self.place(blob_type, id, compression, data.len() as u32)
    }

    /// Stores a blob whose stored form (`compression` applied to a plaintext of `raw_len`
    /// bytes) is already at hand, as prune has when it repacks: nothing is compressed again.
    /// The caller has verified that it decompresses to a plaintext with this id.
    pub fn write_stored(
        &mut self,
        blob_type: BlobType,
        id: BlobId,
        compression: crate::format::Compression,
        stored: &[u8],
        raw_len: u32,
    ) {
        let r = if stored.len() + crypto::TAG_LEN > LIMIT {
            Err(super::RepoError::Invalid(format!("blob {id} is too large to store")))
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(stored);
            self.place(blob_type, id, compression, raw_len)
        };
        if let Err(e) = r {
            self.shared.fail(e);
        }
    }

    /// Seals the blob in `self.scratch` into its place in the open pack.
    fn place(
        &mut self,
        blob_type: BlobType,
        id: BlobId,
        compression: crate::format::Compression,
        raw_len: u32,
    ) -> Result<()> {
        let sealed_len = self.scratch.len() + crypto::TAG_LEN;
        let shared = &self.shared;
        let entry = PackEntry { blob_type, compression, id: id.0, stored_len: sealed_len as u32, raw_len };
        let (slot, closed) = shared.claim(entry, sealed_len);
        let ctx = crypto::blob_context(blob_type as u8, compression as u8, &id, raw_len);
        slot.pack.cipher.seal(slot.offset as u64, &ctx, &mut self.scratch);
        let filled = OpenPack::fill(slot, &self.scratch);
        if blob_type == BlobType::Tree {
            if let Some(c) = shared.repo.cache() {
                // The next backup reads this tree as its parent: keep it local (see repo::cache).
                c.put("trees", &id.to_hex(), &self.scratch);
            }
        }
        let st = &shared.stats;
        st.blobs_added.fetch_add(1, Ordering::Relaxed);
        st.data_added_raw.fetch_add(u64::from(raw_len), Ordering::Relaxed);
        for upload in [closed, filled].into_iter().flatten() {
            if self.up.send(upload).is_err() {
                return Err(super::RepoError::Invalid("the upload threads stopped".into()));
            }
        }
        Ok(())
    }
}

/// Accepts blobs and stores them; see the module docs.
pub struct BlobSink {
    tx: Option<Sender<RawBlob>>,
    up: Option<Sender<Upload>>,
    packers: Vec<JoinHandle<()>>,
    uploaders: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    known: Arc<Mutex<HashSet<BlobId>>>,
}

impl BlobSink {
    /// Starts the packer and uploader threads. `known` holds every blob already stored.
    pub fn start(repo: Arc<Repository>, level: i32, threads: usize, uploaders: usize, known: HashSet<BlobId>) -> Self {
        let target = repo.config().pack_target_size as usize;
        let shared = Arc::new(Shared {
            repo,
            pending: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            open: Mutex::new(None),
            target,
            level,
            error: Mutex::new(None),
            stats: SinkStats::default(),
            packs_made: AtomicU64::new(0),
            alive: std::sync::OnceLock::new(),
        });
        let (tx, rx) = bounded::<RawBlob>(threads * 2);
        let (up_tx, up_rx) = bounded::<Upload>(1);
        let mut sink = BlobSink {
            tx: Some(tx),
            up: Some(up_tx),
            packers: Vec::new(),
            uploaders: Vec::new(),
            shared,
            known: Arc::new(Mutex::new(known)),
        };
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let writer = sink.writer();
            sink.packers.push(
                std::thread::Builder::new()
                    .name(format!("coffer-pack-{i}"))
                    .spawn(move || packer(writer, rx))
                    .expect("spawn packer"),
            );
        }
        for i in 0..uploaders.max(1) {
            let (rx, shared) = (up_rx.clone(), sink.shared.clone());
            sink.uploaders.push(
                std::thread::Builder::new()
                    .name(format!("coffer-upload-{i}"))
                    .spawn(move || {
                        for (id, bytes, ip) in rx {
                            if let Err(e) = shared.upload(id, bytes, ip) {
                                shared.fail(e);
                            }
                        }
                    })
                    .expect("spawn uploader"),
            );
        }
        sink
    }

    /// Ties the sink to a session: it writes no index file once the session may have been
    /// judged over, or has ended (the packs it wrote then are leftovers for prune).
    pub fn guard(&self, alive: super::lock::Alive) {
        let _ = self.shared.alive.set(alive);
    }

    /// The set of blobs stored or being stored; callers claim a blob with [`claim`].
    pub fn known(&self) -> Arc<Mutex<HashSet<BlobId>>> {
        self.known.clone()
    }

    /// A writer that compresses on the calling thread. A zstd context that cannot be made
    /// (out of memory) stores raw and fails the sink.
    pub fn writer(&self) -> BlobWriter {
        let compressor = Compressor::new(self.shared.level).unwrap_or_else(|e| {
            self.shared.fail(super::RepoError::Invalid(format!("zstd: {e}")));
            Compressor::new(0).expect("level 0 needs no context")
        });
        BlobWriter {
            shared: self.shared.clone(),
            up: self.up.clone().expect("sink still open"),
            compressor,
            scratch: Vec::new(),
        }
    }

    /// A handle to send blobs to the packer threads with.
    pub fn sender(&self) -> Sender<RawBlob> {
        self.tx.clone().expect("sink still open")
    }

    /// True when some stage failed; the caller should stop feeding blobs.
    pub fn failed(&self) -> bool {
        self.shared.error.lock().expect("poisoned").is_some()
    }

    pub fn stats(&self) -> &SinkStats {
        &self.shared.stats
    }

    /// Flushes the open pack, waits for all uploads, writes the last index file. Returns
    /// only when everything sent is durable, or the first error. Every [`BlobWriter`] and
    /// [`Self::sender`] handle must have been dropped.
    pub fn finish(mut self) -> Result<SinkTotals> {
        drop(self.tx.take());
        for h in self.packers.drain(..) {
            if h.join().is_err() {
                self.shared.fail(super::RepoError::Invalid("a packer thread panicked".into()));
            }
        }
        // Left now: this sink and the upload threads. A writer still alive would keep the
        // upload queue open, and the wait below would never end.
        debug_assert_eq!(Arc::strong_count(&self.shared), 1 + self.uploaders.len(), "a BlobWriter outlived its sink");
        let last = self.shared.open.lock().expect("poisoned").take();
        if let (Some(p), Some(up)) = (last, self.up.as_ref()) {
            // Every writer is gone, so only the open reference is left, unless a writer
            // panicked between claiming a place and filling it.
            let sent = match p.pack.release() {
                Some(upload) => up.send(upload).map_err(|_| "the upload threads stopped"),
                None => Err("a writer stopped with a blob half stored"),
            };
            if let Err(e) = sent {
                self.shared.fail(super::RepoError::Invalid(e.into()));
            }
        }
        drop(self.up.take());
        for h in self.uploaders.drain(..) {
            if h.join().is_err() {
                self.shared.fail(super::RepoError::Invalid("an uploader thread panicked".into()));
            }
        }
        if let Some(e) = self.shared.error.lock().expect("poisoned").take() {
            return Err(e);
        }
        // A pack a writer claimed a place in and never filled (it panicked in between) is never
        // finished; its blobs are claimed, so nobody else stores them. Never report success then.
        let (made, stored) =
            (self.shared.packs_made.load(Ordering::Relaxed), self.shared.stats.packs.load(Ordering::Relaxed));
        if made != stored {
            return Err(super::RepoError::Invalid(format!("{} of {made} packs were never finished", made - stored)));
        }
        let packs = std::mem::take(&mut *self.shared.pending.lock().expect("poisoned"));
        if !packs.is_empty() {
            self.shared.save_index(packs)?;
        }
        let st = &self.shared.stats;
        Ok(SinkTotals {
            blobs_added: st.blobs_added.load(Ordering::Relaxed),
            data_added: st.data_added.load(Ordering::Relaxed),
            data_added_raw: st.data_added_raw.load(Ordering::Relaxed),
            packs: st.packs.load(Ordering::Relaxed),
        })
    }
}

/// Stores tree blobs (a rewrite's, a repair's) as a writer session would: packs, then their
/// index file; returns once they are durable. Nothing is written if `trees` is empty.
pub fn store_trees(repo: &Arc<Repository>, trees: &[(BlobId, Vec<u8>)], alive: &super::lock::Alive) -> Result<()> {
    if trees.is_empty() {
        return Ok(());
    }
    let sink = BlobSink::start(repo.clone(), repo.config().compression_level, 1, 2, HashSet::new());
    sink.guard(alive.clone());
    let mut w = sink.writer();
    for (id, bytes) in trees {
        w.write(BlobType::Tree, *id, bytes, Plan::Try);
    }
    drop(w);
    sink.finish().map(drop)
}

/// Claims `id` for storing: true if nobody stored or is storing it yet.
pub fn claim(known: &Mutex<HashSet<BlobId>>, id: BlobId) -> bool {
    known.lock().expect("poisoned").insert(id)
}

/// Packer thread: stores the blobs sent to the sink.
fn packer(mut writer: BlobWriter, rx: Receiver<RawBlob>) {
    for blob in rx {
        writer.write(blob.blob_type, blob.id, &blob.data, blob.plan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use crate::storage::Store;

    /// Bytes of `len` for blob `n`: every third blob incompressible, the others compressible.
    fn blob(n: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        if n % 3 == 0 {
            blake3::Hasher::new().update(&n.to_le_bytes()).finalize_xof().fill(&mut out);
        } else {
            for (i, b) in out.iter_mut().enumerate() {
                *b = b"coffer "[(i + n as usize) % 7];
            }
        }
        out
    }

    /// Four writers and the packer threads store blobs of mixed sizes at once into 1 MiB
    /// packs, so places are filled out of order, packs close while others still fill, and
    /// blobs larger than a pack's room get packs of their own; every blob reads back.
    #[test]
    fn concurrent_writers_fill_packs_that_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path(), true, false).unwrap();
        let opts = InitOptions { kdf: crypto::KDF_FLOOR, pack_size: 1 << 20, ..Default::default() };
        let repo = Arc::new(Repository::init(store, b"pw", &opts).unwrap());
        let sink = BlobSink::start(repo.clone(), 3, 2, 2, HashSet::new());
        let sizes = [0usize, 1, 100, 4096, 70_000, 300_000, 900_000, 2_500_000];
        let written: Vec<(BlobId, Vec<u8>)> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..5u64)
                .map(|t| {
                    let (mut w, tx, repo, known) = (sink.writer(), sink.sender(), repo.clone(), sink.known());
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..60u64 {
                            let n = t * 1000 + i;
                            let data = blob(n, sizes[(n as usize * 7 + t as usize) % sizes.len()]);
                            let id = repo.keys().blob_id(BlobType::Data, &data);
                            if !claim(&known, id) {
                                continue; // stored by another writer, as callers do
                            }
                            if t == 4 {
                                tx.send(RawBlob { blob_type: BlobType::Data, id, data: data.clone(), plan: Plan::Try })
                                    .unwrap();
                            } else {
                                w.write(BlobType::Data, id, &data, Plan::Try);
                            }
                            out.push((id, data));
                        }
                        out
                    })
                })
                .collect();
            threads.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let totals = sink.finish().unwrap();
        assert_eq!(totals.blobs_added, written.len() as u64);
        assert!(written.len() > 100, "only {} distinct blobs", written.len());
        assert!(totals.packs > 10, "expected many small packs, got {}", totals.packs);
        let index = repo.load_index().unwrap();
        assert_eq!(index.len(), written.len());
        for (id, data) in &written {
            assert_eq!(&repo.read_blob(&index, id).unwrap(), data, "blob {id}");
        }
    }
}
