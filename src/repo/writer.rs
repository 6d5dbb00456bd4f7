//! Writing blobs: compress -> encrypt -> pack -> upload -> index.
//!
//! Blobs are compressed by whichever thread has them, through a [`BlobWriter`] (one per
//! thread, holding its zstd context and a scratch buffer): a backup's reader threads
//! compress the chunks they just cut and hashed, still in their core's cache, and copy no
//! plaintext anywhere. The compressed bytes are then appended to the one open pack under a
//! short lock and sealed in place (AES-GCM, the nonce is the blob's offset). A
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
//! Queues between the stages are bounded, so memory stays flat: one open pack; one pack in
//! the upload queue and one per upload thread; when storage is slower than compression, one
//! finished pack per writing thread waiting to be queued; one recycled pack buffer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{pack_path, Repository, Result};
use crate::compress::Compressor;
use crate::crypto::{self, ObjectCipher, PACK_HEADER_NONCE};
use crate::format::index::{IndexBlob, IndexFile, IndexPack};
use crate::format::pack::{self, PackEntry};
use crate::format::{BlobType, Compression};
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
}

/// One pack being filled.
struct PackBuilder {
    id: PackId,
    cipher: ObjectCipher,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    index: Vec<IndexBlob>,
}

impl PackBuilder {
    fn new(repo: &Repository, mut buf: Vec<u8>, capacity: usize) -> Self {
        let id = PackId::random();
        buf.clear();
        buf.reserve(capacity);
        PackBuilder {
            id,
            cipher: repo.keys().object_cipher(crypto::KEY_TYPE_PACK, id.as_bytes()),
            buf,
            entries: Vec::new(),
            index: Vec::new(),
        }
    }

    /// Appends one encoded blob (`stored` bytes, before encryption) and seals it in place;
    /// the nonce is its offset. Returns where its sealed bytes are in the pack.
    fn append(
        &mut self,
        blob_type: BlobType,
        id: BlobId,
        compression: Compression,
        raw_len: u32,
        stored: &[u8],
    ) -> std::ops::Range<usize> {
        let start = self.buf.len();
        let offset = start as u32;
        self.buf.extend_from_slice(stored);
        let ctx = crypto::blob_context(blob_type as u8, compression as u8, &id, raw_len);
        self.cipher.seal_tail(u64::from(offset), &ctx, &mut self.buf, start);
        let stored_len = (self.buf.len() - start) as u32;
        self.entries.push(PackEntry { blob_type, compression, id: id.0, stored_len, raw_len });
        self.index.push(IndexBlob { blob_type, compression, id: id.0, offset, stored_len, raw_len });
        start..self.buf.len()
    }

    /// Appends the encrypted header and the trailer.
    fn finish(mut self) -> (PackId, Vec<u8>, IndexPack) {
        let mut header = pack::encode_header(&self.entries);
        self.cipher.seal(PACK_HEADER_NONCE, b"pack header", &mut header);
        let header_len = header.len() as u32;
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(&pack::encode_trailer(header_len));
        let ip = IndexPack { pack_id: self.id.0, pack_size: self.buf.len() as u64, blobs: self.index };
        (self.id, self.buf, ip)
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
    /// The pack being filled; every writer appends to it.
    open: Mutex<Option<PackBuilder>>,
    /// A pack is finished once it holds this many bytes.
    target: usize,
    level: i32,
    error: Mutex<Option<super::RepoError>>,
    stats: SinkStats,
}

impl Shared {
    /// A buffer for the next pack: a recycled one when there is one.
    fn buffer(&self) -> Vec<u8> {
        self.spare.lock().expect("poisoned").pop().unwrap_or_default()
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
            self.repo.save_index_file(&IndexFile { supersedes: vec![], packs })?;
        }
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
    pub fn write(&mut self, blob_type: BlobType, id: BlobId, data: &[u8]) {
        if let Err(e) = self.try_write(blob_type, id, data) {
            self.shared.fail(e);
        }
    }

    fn try_write(&mut self, blob_type: BlobType, id: BlobId, data: &[u8]) -> Result<()> {
        if zstd::zstd_safe::compress_bound(data.len()) + crypto::TAG_LEN > LIMIT {
            return Err(super::RepoError::Invalid(format!("blob {id} is too large to store")));
        }
        self.scratch.clear();
        let compression = self.compressor.compress_into(data, &mut self.scratch);
        let sealed_len = self.scratch.len() + crypto::TAG_LEN;
        let shared = &self.shared;
        let mut done = Vec::new();
        let mut tree_copy = None;
        {
            let mut open = shared.open.lock().expect("poisoned");
            if open.as_ref().is_some_and(|p| p.buf.len() + sealed_len > LIMIT) {
                done.push(open.take().expect("checked"));
            }
            let p = open.get_or_insert_with(|| {
                PackBuilder::new(&shared.repo, shared.buffer(), shared.target + shared.target / 8)
            });
            let at = p.append(blob_type, id, compression, data.len() as u32, &self.scratch);
            if blob_type == BlobType::Tree && shared.repo.cache().is_some() {
                tree_copy = Some(p.buf[at].to_vec());
            }
            if p.buf.len() >= shared.target {
                done.push(open.take().expect("just used"));
            }
        }
        if let (Some(bytes), Some(c)) = (tree_copy, shared.repo.cache()) {
            // The next backup reads this tree as its parent: keep it local (see repo::cache).
            c.put("trees", &id.to_hex(), &bytes);
        }
        let st = &shared.stats;
        st.blobs_added.fetch_add(1, Ordering::Relaxed);
        st.data_added_raw.fetch_add(data.len() as u64, Ordering::Relaxed);
        for p in done {
            if self.up.send(p.finish()).is_err() {
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
            if up.send(p.finish()).is_err() {
                self.shared.fail(super::RepoError::Invalid("the upload threads stopped".into()));
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
        let packs = std::mem::take(&mut *self.shared.pending.lock().expect("poisoned"));
        if !packs.is_empty() {
            self.shared.repo.save_index_file(&IndexFile { supersedes: vec![], packs })?;
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

/// Claims `id` for storing: true if nobody stored or is storing it yet.
pub fn claim(known: &Mutex<HashSet<BlobId>>, id: BlobId) -> bool {
    known.lock().expect("poisoned").insert(id)
}

/// Packer thread: stores the blobs sent to the sink.
fn packer(mut writer: BlobWriter, rx: Receiver<RawBlob>) {
    for blob in rx {
        writer.write(blob.blob_type, blob.id, &blob.data);
    }
}
