//! Writing blobs: compress -> encrypt -> pack -> upload -> index.
//!
//! A [`BlobSink`] runs `threads` packer threads, each filling its own pack (so no lock is
//! held while compressing or encrypting), and `uploaders` upload threads that write finished
//! packs to storage. The write ordering that keeps the repository valid at every instant
//! (docs/format.md, "Write ordering"):
//! 1. a pack is written, and durable, before any index file lists it;
//! 2. an index file is written every [`INDEX_FLUSH_PACKS`] packs and at the end, so a crashed
//!    backup leaves at most that many packs unindexed (reclaimable leftovers), and the next
//!    backup deduplicates against everything indexed before the crash;
//! 3. the snapshot is written by the caller only after [`BlobSink::finish`] returned, i.e.
//!    after every index file it depends on is durable.
//!
//! Queues between the stages are bounded, so memory stays flat: at most
//! `threads` open packs plus a few finished ones waiting for upload.

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
use crate::format::BlobType;
use crate::id::{BlobId, PackId};

/// How many packs one index file covers at most.
pub const INDEX_FLUSH_PACKS: usize = 32;

/// Recycled pack buffers kept at most (each is about one pack target size).
const SPARE_BUFFERS: usize = 1;

/// Plaintext blobs on their way into the repository, travelling together: most files are a
/// few KiB, and one message per blob (an allocation, a channel hand-off and often a thread
/// wake-up each) cost more CPU than packing them did.
pub struct RawBlobs {
    data: Vec<u8>,
    /// Type, id and end offset in `data` of each blob, in order.
    blobs: Vec<(BlobType, BlobId, usize)>,
}

impl RawBlobs {
    /// A batch holding just this blob (no copy).
    pub fn one(blob_type: BlobType, id: BlobId, data: Vec<u8>) -> Self {
        let end = data.len();
        RawBlobs { data, blobs: vec![(blob_type, id, end)] }
    }

    fn with_capacity(bytes: usize) -> Self {
        RawBlobs { data: Vec::with_capacity(bytes), blobs: Vec::new() }
    }

    /// Each blob's type, id and bytes.
    fn iter(&self) -> impl Iterator<Item = (BlobType, BlobId, &[u8])> {
        let mut start = 0;
        self.blobs.iter().map(move |&(t, id, end)| {
            let bytes = &self.data[start..end];
            start = end;
            (t, id, bytes)
        })
    }
}

/// Gathers blobs into [`RawBlobs`] batches of about [`BlobBatcher::BYTES`] for one sender;
/// sends what it holds when dropped, so a stage's last blobs reach the sink before the
/// stage's thread ends.
pub struct BlobBatcher {
    tx: Sender<RawBlobs>,
    cur: RawBlobs,
}

impl BlobBatcher {
    /// A batch is sent once it holds this many bytes (a chunk of average size or more
    /// goes at once).
    pub const BYTES: usize = 512 << 10;

    pub fn new(tx: Sender<RawBlobs>) -> Self {
        BlobBatcher { tx, cur: RawBlobs::with_capacity(0) }
    }

    /// Queues a copy of `data` as blob `id`.
    pub fn push(&mut self, blob_type: BlobType, id: BlobId, data: &[u8]) {
        if self.cur.data.capacity() - self.cur.data.len() < data.len() {
            self.flush();
            self.cur = RawBlobs::with_capacity(data.len().max(Self::BYTES));
        }
        self.cur.data.extend_from_slice(data);
        self.cur.blobs.push((blob_type, id, self.cur.data.len()));
        if self.cur.data.len() >= Self::BYTES {
            self.flush();
        }
    }

    /// Sends the blobs gathered so far. A closed sink (it failed) drops them; the sink
    /// reports its error when finished.
    pub fn flush(&mut self) {
        if !self.cur.blobs.is_empty() {
            let _ = self.tx.send(std::mem::replace(&mut self.cur, RawBlobs::with_capacity(0)));
        }
    }
}

impl Drop for BlobBatcher {
    fn drop(&mut self) {
        self.flush();
    }
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

    /// Compresses one blob onto the end of the pack and seals it in place; the nonce is its
    /// offset. Returns the stored length.
    fn add(
        &mut self,
        blob_type: BlobType,
        id: BlobId,
        data: &[u8],
        compressor: &mut Compressor,
        cache: Option<&super::cache::Cache>,
    ) -> u32 {
        let raw_len = data.len() as u32;
        let start = self.buf.len();
        let offset = start as u32;
        let compression = compressor.compress_into(data, &mut self.buf);
        let ctx = crypto::blob_context(blob_type as u8, compression as u8, &id, raw_len);
        self.cipher.seal_tail(u64::from(offset), &ctx, &mut self.buf, start);
        let stored_len = (self.buf.len() - start) as u32;
        if let (BlobType::Tree, Some(c)) = (blob_type, cache) {
            // The next backup reads this tree as its parent: keep it local (see repo::cache).
            c.put("trees", &id.to_hex(), &self.buf[start..]);
        }
        self.entries.push(PackEntry { blob_type, compression, id: id.0, stored_len, raw_len });
        self.index.push(IndexBlob { blob_type, compression, id: id.0, offset, stored_len, raw_len });
        stored_len
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

/// Accepts blobs and stores them; see the module docs.
pub struct BlobSink {
    tx: Option<Sender<RawBlobs>>,
    packers: Vec<JoinHandle<()>>,
    uploaders: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    known: Arc<Mutex<HashSet<BlobId>>>,
}

impl BlobSink {
    /// Starts the packer and uploader threads. `known` holds every blob already stored.
    pub fn start(repo: Arc<Repository>, level: i32, threads: usize, uploaders: usize, known: HashSet<BlobId>) -> Self {
        let shared = Arc::new(Shared {
            repo,
            pending: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            stats: SinkStats::default(),
        });
        let (tx, rx) = bounded::<RawBlobs>(threads * 2);
        let (up_tx, up_rx) = bounded::<(PackId, Vec<u8>, IndexPack)>(1);
        let packers = (0..threads.max(1))
            .map(|i| {
                let (rx, up_tx, shared) = (rx.clone(), up_tx.clone(), shared.clone());
                std::thread::Builder::new()
                    .name(format!("coffer-pack-{i}"))
                    .spawn(move || packer(shared, level, rx, up_tx))
                    .expect("spawn packer")
            })
            .collect();
        let uploaders = (0..uploaders.max(1))
            .map(|i| {
                let (rx, shared) = (up_rx.clone(), shared.clone());
                std::thread::Builder::new()
                    .name(format!("coffer-upload-{i}"))
                    .spawn(move || {
                        for (id, bytes, ip) in rx {
                            if let Err(e) = shared.upload(id, bytes, ip) {
                                shared.fail(e);
                            }
                        }
                    })
                    .expect("spawn uploader")
            })
            .collect();
        BlobSink { tx: Some(tx), packers, uploaders, shared, known: Arc::new(Mutex::new(known)) }
    }

    /// The set of blobs stored or being stored; callers claim a blob with [`Self::claim`].
    pub fn known(&self) -> Arc<Mutex<HashSet<BlobId>>> {
        self.known.clone()
    }

    /// A handle to send blobs with.
    pub fn sender(&self) -> Sender<RawBlobs> {
        self.tx.clone().expect("sink still open")
    }

    /// True when some stage failed; the caller should stop feeding blobs.
    pub fn failed(&self) -> bool {
        self.shared.error.lock().expect("poisoned").is_some()
    }

    pub fn stats(&self) -> &SinkStats {
        &self.shared.stats
    }

    /// Flushes every open pack, waits for all uploads, writes the last index file.
    /// Returns only when everything sent is durable, or the first error.
    pub fn finish(mut self) -> Result<SinkTotals> {
        drop(self.tx.take());
        for h in self.packers.drain(..) {
            if h.join().is_err() {
                self.shared.fail(super::RepoError::Invalid("a packer thread panicked".into()));
            }
        }
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

fn packer(shared: Arc<Shared>, level: i32, rx: Receiver<RawBlobs>, up: Sender<(PackId, Vec<u8>, IndexPack)>) {
    let target = shared.repo.config().pack_target_size as usize;
    let mut compressor = match Compressor::new(level) {
        Ok(c) => c,
        Err(e) => return shared.fail(super::RepoError::Invalid(format!("zstd: {e}"))),
    };
    let mut current: Option<PackBuilder> = None;
    // Offsets and lengths are u32 on disk (docs/format.md). A pack is finished before it
    // could pass 2 GiB; a blob that alone could is refused (chunks are at most 8 MiB, so only
    // an absurd tree blob could be).
    const LIMIT: u64 = (u32::MAX / 2) as u64;
    for batch in rx {
        for (blob_type, id, data) in batch.iter() {
            let worst = zstd::zstd_safe::compress_bound(data.len()) as u64 + crypto::TAG_LEN as u64;
            if worst > LIMIT {
                return shared.fail(super::RepoError::Invalid(format!("blob {id} is too large to store")));
            }
            if current.as_ref().is_some_and(|p| p.buf.len() as u64 + worst > LIMIT)
                && up.send(current.take().expect("checked").finish()).is_err()
            {
                return;
            }
            let p =
                current.get_or_insert_with(|| PackBuilder::new(&shared.repo, shared.buffer(), target + target / 8));
            p.add(blob_type, id, data, &mut compressor, shared.repo.cache());
            let st = &shared.stats;
            st.blobs_added.fetch_add(1, Ordering::Relaxed);
            st.data_added_raw.fetch_add(data.len() as u64, Ordering::Relaxed);
            if p.buf.len() >= target && up.send(current.take().expect("just used").finish()).is_err() {
                return;
            }
        }
    }
    if let Some(p) = current.take() {
        let _ = up.send(p.finish());
    }
}
