//! `backup`: walk -> read + chunk + hash -> compress -> encrypt -> pack -> upload.
//!
//! Threads and the bounded queues between them (memory stays flat whatever the tree):
//! - the walker (one thread, large stack) lists directories with `*at` calls, decides per
//!   file whether its content must be read (change detection against the parent snapshot:
//!   size, mtime, ctime and inode equal, and every chunk still indexed, means the old
//!   content list is reused without opening the file), and queues [`FileJob`]s;
//! - readers (`threads`) open, chunk and hash files, claim each new chunk id, and compress
//!   and seal the chunk into the [`BlobSink`]'s open pack themselves (see [`Out`]: while a
//!   reader is idle and no file waits, the others hand chunks to the sink's packer threads
//!   instead); the sink's upload threads write finished packs;
//! - the finisher (one thread) receives directories in post-order, waits for their entries,
//!   encodes each tree blob and stores it if new (unchanged directories deduplicate).
//!
//! Each entry's result travels through its own one-slot channel, so directories complete
//! while readers are still busy elsewhere. The snapshot is written only after the sink
//! has made every pack and index durable.

mod scan;
mod stream;
mod walk;

pub use stream::{check_stdin_filename, run_stream, Stream};
pub use walk::{TagFile, IGNORE_FILE};

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunker::Chunker;
use crate::compress::{plan_for_file, Plan};
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{self, Node, NodeKind};
use crate::format::BlobType;
use crate::id::{BlobId, SnapshotId};
use crate::progress::{FileStatus, Progress};
use crate::repo::writer::{claim, BlobSink, BlobWriter, RawBlob};
use crate::repo::{MasterIndex, RepoError, Repository};
use crate::source::exclude::Patterns;
use crate::source::{self, Names};

/// What to back up and how.
#[derive(Clone)]
pub struct BackupOptions {
    pub paths: Vec<std::path::PathBuf>,
    pub tags: Vec<String>,
    pub host: String,
    pub excludes: Patterns,
    pub one_file_system: bool,
    /// Skip the contents of directories tagged with a CACHEDIR.TAG.
    pub exclude_caches: bool,
    /// Skip the contents of directories holding one of these tag files.
    pub exclude_if_present: Vec<TagFile>,
    /// Leave out regular files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
    /// Read per-directory `.cofferignore` files (gitignore syntax).
    pub ignore_files: bool,
    pub dry_run: bool,
    /// zstd level for this backup; the repository's default when `None`.
    pub compression_level: Option<i32>,
    /// Use this snapshot as the parent instead of finding one.
    pub parent: Option<SnapshotId>,
    /// Reader and packer threads each (default: the number of cores).
    pub threads: usize,
    /// Packs uploaded at once.
    pub uploaders: usize,
    /// The snapshot's time and UTC offset instead of now (`--time`, as `restic backup --time`).
    pub time: Option<jiff::Zoned>,
    /// The operator confirms that the repository went back in time (see repo::rollback).
    pub accept_rollback: bool,
    /// Directories (device, inode) never backed up: the repository itself and Coffer's cache
    /// when they lie inside the backed-up paths.
    pub skip_dirs: Vec<(u64, u64)>,
}

/// Backup failures that stop the backup (unreadable files only warn).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}: {source}")]
    Source { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}; nothing was written: if this is expected, run the backup again with --accept-rollback")]
    Rollback(String),
    /// `--stdin-from-command`'s command failed (or the stream broke off).
    #[error("{0}; no snapshot was written")]
    Stream(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The outcome of a backup.
pub struct BackupResult {
    /// `None` for a dry run.
    pub snapshot_id: Option<SnapshotId>,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    /// Blobs copied before committing because a prune had marked the packs holding them.
    pub rescued: u64,
}

/// Live packs the listing of `data/` lacks are gone (a prune deletes only packs its records
/// made obsolete, and waits for this session): they are recorded as damaged, so readers stop
/// trying them first, and this backup stores what they held again.
fn record_missing(
    repo: &Repository,
    index: &MasterIndex,
    missing: &[crate::id::PackId],
    alive: &crate::repo::lock::Alive,
    progress: &dyn Progress,
) -> Result<(), BackupError> {
    if missing.is_empty() {
        return Ok(());
    }
    for p in missing {
        progress.warn(&format!(
            "{}: listed in the index but missing; the data it held is stored again (run `coffer check`)",
            crate::repo::pack_path(p)
        ));
    }
    let found: Vec<_> = missing.iter().map(|p| crate::repo::damage::Damage::Pack(*p)).collect();
    alive.check()?;
    if let Err(e) = crate::repo::damage::record(repo, index, &found) {
        progress.warn(&format!("the missing packs could not be recorded as damaged: {e}"));
    }
    Ok(())
}

/// Counters shared by the stages.
#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unmodified: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    dry_blobs: AtomicU64,
    dry_bytes: AtomicU64,
}

/// A file whose content must be read.
struct FileJob {
    dir: Arc<OwnedFd>,
    /// The full path, for warnings (the name is the node's).
    path: Vec<u8>,
    node: Node,
    /// The parent snapshot had this file (with other content or metadata).
    changed: bool,
    result: Sender<Option<Node>>,
}

/// A directory whose entries are all known or pending; finished in post-order.
struct DirJob {
    node: Node,
    entries: Vec<Pending>,
    parent_subtree: Option<BlobId>,
    result: Sender<Option<Node>>,
}

/// An entry of a directory: known now, or to be delivered by a reader or the finisher.
enum Pending {
    Ready(Box<Node>),
    Later(Receiver<Option<Node>>),
}

/// Everything the stages share.
struct Ctx {
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    known: Arc<Mutex<HashSet<BlobId>>>,
    /// Readers busy with a file; fewer than `opts.threads`, with no file waiting in
    /// `queued`, means a core is free.
    active: AtomicUsize,
    queued: Receiver<Vec<FileJob>>,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    progress: Arc<dyn Progress>,
    names: Names,
    /// `--exclude-if-present`'s tags, and CACHEDIR.TAG with `--exclude-caches`.
    tag_files: Vec<TagFile>,
    opts: BackupOptions,
}

impl Ctx {
    fn warn(&self, msg: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.progress.warn(&msg);
        self.warnings.lock().expect("poisoned").push(msg);
    }

    /// Stores a blob unless it is known; returns nothing (the id is the caller's). `out` is
    /// `None` on a dry run.
    fn store_blob(&self, out: Option<&mut Out>, blob_type: BlobType, id: BlobId, data: &[u8], plan: Plan) {
        if !claim(&self.known, id) {
            return;
        }
        match out {
            Some(out) => {
                let spare_core = self.active.load(Ordering::Relaxed) < self.opts.threads && self.queued.is_empty();
                out.store(spare_core, blob_type, id, data, plan)
            }
            None => {
                self.counters.dry_blobs.fetch_add(1, Ordering::Relaxed);
                self.counters.dry_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Where one stage's blobs go: compressed and packed on the stage's own thread, where the
/// chunk is still in cache and nothing is copied; or, while some reader has no file to work
/// on and none is waiting (one large file, the end of a backup), handed to the sink's
/// packer threads so every core compresses.
struct Out {
    writer: BlobWriter,
    offload: Sender<RawBlob>,
}

impl Out {
    fn new(sink: &BlobSink) -> Self {
        Out { writer: sink.writer(), offload: sink.sender() }
    }

    fn store(&mut self, spare_core: bool, blob_type: BlobType, id: BlobId, data: &[u8], plan: Plan) {
        if spare_core && !self.offload.is_full() {
            // Full, or no packer left (they only end by panicking, which fails the backup):
            // store it here.
            if self.offload.try_send(RawBlob { blob_type, id, data: data.to_vec(), plan }).is_ok() {
                return;
            }
        }
        self.writer.write(blob_type, id, data, plan);
    }
}

fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// The default `--host`.
pub fn default_host() -> String {
    hostname()
}

/// What a backup session holds from its start to its snapshot: the session's lock, the
/// parent and sequence number, and the index read after the snapshots.
struct Prepared {
    session: Option<crate::repo::lock::Session>,
    parent: Option<(SnapshotId, Snapshot)>,
    seq: u64,
    index: Arc<MasterIndex>,
    seen_index: HashSet<crate::id::IndexId>,
}

/// Starts the session (docs/storage.md, step W1), then reads the snapshots and the index in
/// that order: every index file a snapshot needs was written before it, so the parent's trees
/// are in the index read after it.
fn prepare(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    roots: &[Vec<u8>],
    progress: &dyn Progress,
) -> Result<Prepared, BackupError> {
    let session = if opts.dry_run {
        None
    } else {
        Some(crate::repo::lock::Session::start(repo, crate::format::lock::LockKind::Writer, "backup")?)
    };
    let (parent, seq) = parent_and_seq(repo, opts, roots)?;
    let mut index = repo.load_index()?;
    let seen_index = crate::repo::recheck::seen_files(&index);
    if let Some(session) = &session {
        let adopted = crate::repo::packs::adopt_orphans(repo, &mut index, Some(&session.alive()))?;
        record_missing(repo, &index, &adopted.missing, &session.alive(), progress)?;
        index.set_aside_packs(&adopted.missing.iter().copied().collect());
    }
    Ok(Prepared { session, parent, seq, index: Arc::new(index), seen_index })
}

/// The sink new blobs go to (none on a dry run), and the set of blob ids known or claimed.
fn open_sink(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    prep: &Prepared,
    threads: usize,
) -> (Option<BlobSink>, Arc<Mutex<HashSet<BlobId>>>) {
    let known: HashSet<BlobId> = prep.index.blob_ids().copied().collect();
    if opts.dry_run {
        return (None, Arc::new(Mutex::new(known)));
    }
    let level = opts.compression_level.unwrap_or(repo.config().compression_level);
    let sink = BlobSink::start(repo.clone(), level, threads, opts.uploaders.max(1), known);
    if let Some(session) = &prep.session {
        sink.guard(session.alive());
    }
    let known = sink.known();
    (Some(sink), known)
}

/// The snapshot of a finished walk (or stream) whose root tree is `root`.
fn snapshot_of(
    opts: &BackupOptions,
    prep: &Prepared,
    started: jiff::Timestamp,
    roots: Vec<Vec<u8>>,
    root: [u8; 32],
    summary: Summary,
) -> Snapshot {
    let (time, offset) = match &opts.time {
        Some(z) => (z.timestamp(), z.offset()),
        None => (started, jiff::tz::TimeZone::system().to_offset(started)),
    };
    Snapshot {
        time_ns: crate::clock::to_unix_ns(time),
        utc_offset_s: offset.seconds(),
        host: opts.host.clone(),
        username: uzers::get_current_username().map(|u| u.to_string_lossy().into_owned()).unwrap_or_default(),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        paths: roots,
        tags: opts.tags.clone(),
        excludes: opts.excludes.sources.clone(),
        parent: prep.parent.as_ref().map(|(id, _)| id.0),
        tree: root,
        seq: prep.seq,
        program_version: format!("coffer {}", env!("CARGO_PKG_VERSION")),
        summary,
        original: None,
        repaired: Vec::new(),
    }
}

/// Writes the snapshot, unless this is a dry run: nothing it references may be only in packs
/// a prune has marked meanwhile, and the session must not have been judged over
/// (docs/storage.md, step W4). Returns the id and the number of blobs rescued.
fn commit(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    prep: Prepared,
    snapshot: &Snapshot,
) -> Result<(Option<SnapshotId>, u64), BackupError> {
    let Some(session) = &prep.session else { return Ok((None, 0)) };
    let rescued = crate::repo::recheck::ensure_live(
        repo,
        &prep.seen_index,
        &[BlobId(snapshot.tree)],
        opts.uploaders,
        &session.alive(),
    )?;
    session.check_alive()?;
    let id = repo.save_snapshot(snapshot)?;
    drop(prep);
    Ok((Some(id), rescued))
}

/// Runs a backup. Returns after the snapshot (and all it references) is durable.
pub fn run(
    repo: Arc<Repository>,
    opts: BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupResult, BackupError> {
    let started = crate::clock::now();
    let watch = crate::clock::stopwatch();
    let (roots, missing) = walk::normalize_roots(&opts.paths)?;
    // Totals for a display that shows percent and ETA; the scan stops with the backup.
    let scanning = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_scan = StopOnDrop(scanning.clone());
    if progress.wants_totals() {
        let paths = roots.iter().map(|r| PathBuf::from(std::ffi::OsStr::from_bytes(r))).collect();
        scan::start(paths, &opts, progress.clone(), scanning.clone());
    }
    let prep = prepare(&repo, &opts, &roots, progress.as_ref())?;
    let index = prep.index.clone();
    // A parent whose trees cannot be read (a prune moved them while this backup started)
    // only costs reading every file again: warn and go on without it.
    let parent_tree = match &prep.parent {
        Some((id, s)) => match repo.load_tree(&index, &BlobId(s.tree)) {
            Ok(t) => Some(t),
            Err(e) => {
                progress.warn(&format!("parent snapshot {} unreadable ({e}); reading every file", id.short()));
                None
            }
        },
        None => None,
    };
    let threads = opts.threads.max(1);
    let (sink, known) = open_sink(&repo, &opts, &prep, threads);
    let (file_tx, file_rx) = bounded::<Vec<FileJob>>(threads * 4);
    let ctx = Arc::new(Ctx {
        repo: repo.clone(),
        index: index.clone(),
        known,
        active: AtomicUsize::new(0),
        queued: file_rx.clone(),
        counters: Counters::default(),
        warnings: Mutex::new(Vec::new()),
        progress,
        names: Names::default(),
        tag_files: opts
            .exclude_caches
            .then(TagFile::cachedir)
            .into_iter()
            .chain(opts.exclude_if_present.clone())
            .collect(),
        opts: opts.clone(),
    });
    for e in missing {
        ctx.warn(format!("{e}: left out of the backup"));
    }

    let (dir_tx, dir_rx) = bounded::<DirJob>(1024);
    let readers: Vec<_> = (0..threads)
        .map(|i| {
            let (ctx, rx, out) = (ctx.clone(), file_rx.clone(), sink.as_ref().map(Out::new));
            std::thread::Builder::new()
                .name(format!("coffer-read-{i}"))
                .spawn(move || reader(ctx, rx, out))
                .expect("spawn")
        })
        .collect();
    drop(file_rx);
    let (fin_ctx, fin_out) = (ctx.clone(), sink.as_ref().map(Out::new));
    let finisher = std::thread::Builder::new()
        .name("coffer-trees".into())
        .spawn(move || finisher(fin_ctx, dir_rx, fin_out))
        .expect("spawn");

    let walk_ctx = ctx.clone();
    let walk_roots = roots.clone();
    let parent_tree_id = parent_tree.as_ref().and(prep.parent.as_ref()).map(|(_, s)| BlobId(s.tree));
    let walker = std::thread::Builder::new()
        .name("coffer-walk".into())
        .stack_size(512 << 20)
        .spawn(move || {
            walk::walk_roots(&walk_ctx, &walk_roots, parent_tree.as_deref(), parent_tree_id, &file_tx, &dir_tx)
        })
        .expect("spawn walker");
    let root_rx = walker.join().map_err(|_| BackupError::Invalid("the walker thread panicked".into()))??;
    let root = root_rx.recv().ok().flatten();
    finisher.join().map_err(|_| BackupError::Invalid("the tree thread panicked".into()))?;
    for r in readers {
        r.join().map_err(|_| BackupError::Invalid("a reader thread panicked".into()))?;
    }
    let ctx = Arc::try_unwrap(ctx).map_err(|_| BackupError::Invalid("backup stages still running".into()))?;
    let root = root.and_then(|n| n.subtree).ok_or_else(|| BackupError::Invalid("no root tree was produced".into()))?;

    let c = &ctx.counters;
    let mut summary = Summary {
        files_new: c.files_new.load(Ordering::Relaxed),
        files_changed: c.files_changed.load(Ordering::Relaxed),
        files_unmodified: c.files_unmodified.load(Ordering::Relaxed),
        dirs_new: c.dirs_new.load(Ordering::Relaxed),
        dirs_changed: c.dirs_changed.load(Ordering::Relaxed),
        dirs_unmodified: c.dirs_unmodified.load(Ordering::Relaxed),
        total_bytes_processed: c.bytes.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        ..Default::default()
    };
    summary.total_files_processed = summary.files_new + summary.files_changed + summary.files_unmodified;
    summary.partial = summary.errors > 0;
    finish_sink(sink, &mut summary, c)?;
    summary.duration_ns = watch.elapsed().as_nanos() as u64;
    let snapshot = snapshot_of(&opts, &prep, started, roots, root, summary);
    let (snapshot_id, rescued) = commit(&repo, &opts, prep, &snapshot)?;
    let warnings = ctx.warnings.into_inner().expect("poisoned");
    Ok(BackupResult { snapshot_id, snapshot, warnings, rescued })
}

/// Makes every pack and index durable and adds what was stored to the summary (on a dry
/// run, what would have been).
fn finish_sink(sink: Option<BlobSink>, summary: &mut Summary, c: &Counters) -> Result<(), BackupError> {
    if let Some(sink) = sink {
        let t = sink.finish()?;
        summary.blobs_added = t.blobs_added;
        summary.data_added = t.data_added;
        summary.data_added_raw = t.data_added_raw;
    } else {
        summary.blobs_added = c.dry_blobs.load(Ordering::Relaxed);
        summary.data_added_raw = c.dry_bytes.load(Ordering::Relaxed);
    }
    Ok(())
}

/// The parent (the given one, or the newest snapshot of this host with the same paths) and
/// the next per-host sequence number, from one read of the snapshot list. Two backups of one
/// host running at once can get the same number; it orders, it does not identify.
fn parent_and_seq(
    repo: &Repository,
    opts: &BackupOptions,
    roots: &[Vec<u8>],
) -> Result<(Option<(SnapshotId, Snapshot)>, u64), BackupError> {
    let all = repo.load_snapshots()?;
    if let Some(r) = repo.seen().map(|s| s.rollbacks()).and_then(|v| v.into_iter().next()) {
        if !opts.accept_rollback {
            return Err(BackupError::Rollback(r.to_string()));
        }
        let listed = repo.load_snapshots_listed()?;
        repo.seen().expect("checked").accept(&listed);
    }
    // Above both the repository's and this client's highest: a number is never reused.
    let seen = repo.seen().map_or(0, |s| s.seq(&opts.host));
    let seq = all.iter().filter(|(_, s)| s.host == opts.host).map(|(_, s)| s.seq).max().unwrap_or(0).max(seen) + 1;
    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None => all.into_iter().rev().find(|(_, s)| s.host == opts.host && s.paths == roots),
    };
    Ok((parent, seq))
}

/// Sets its flag when dropped (however the function holding it returns).
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Reader thread: reads and chunks files.
fn reader(ctx: Arc<Ctx>, rx: Receiver<Vec<FileJob>>, mut out: Option<Out>) {
    let keys = ctx.repo.keys().clone();
    let mut chunker = Chunker::new(ctx.repo.config().chunker, keys.gear_table());
    for job in rx.iter().flatten() {
        ctx.active.fetch_add(1, Ordering::Relaxed);
        ctx.progress.reading(&job.path, true);
        let node = read_file(&ctx, &mut chunker, &mut out, job.dir.as_ref(), &job.path, job.node);
        ctx.progress.reading(&job.path, false);
        if node.is_some() {
            let status = if job.changed { FileStatus::Modified } else { FileStatus::New };
            ctx.progress.file(&job.path, status);
        }
        ctx.active.fetch_sub(1, Ordering::Relaxed);
        ctx.progress.add_item();
        let _ = job.result.send(node);
    }
}

fn read_file(
    ctx: &Ctx,
    chunker: &mut Chunker,
    out: &mut Option<Out>,
    dir: &OwnedFd,
    path: &[u8],
    mut node: Node,
) -> Option<Node> {
    use std::os::fd::AsFd;
    let shown = || String::from_utf8_lossy(path); // only when warning: it scans the name
    let file = match source::open_file_at(dir.as_fd(), &node.name) {
        Ok(f) => f,
        Err(e) => {
            ctx.warn(format!("{}: cannot read: {e}", shown()));
            return None;
        }
    };
    let before = match source::fstat(&file) {
        Ok(st) if source::kind_of(&st) == NodeKind::File => st,
        Ok(_) => {
            ctx.warn(format!("{}: replaced by something else than a file while backing up; skipped", shown()));
            return None;
        }
        Err(e) => {
            ctx.warn(format!("{}: cannot read: {e}", shown()));
            return None;
        }
    };
    let keys = ctx.repo.keys().clone();
    let mut content = Vec::new();
    let mut plan = None; // from the file's first bytes (see compress::plan_for_file)
    let mut emit = |chunk: &[u8]| -> std::io::Result<()> {
        let plan = *plan.get_or_insert_with(|| plan_for_file(chunk));
        let id = keys.blob_id(BlobType::Data, chunk);
        ctx.store_blob(out.as_mut(), BlobType::Data, id, chunk, plan);
        content.push(id.0);
        ctx.progress.add_bytes(chunk.len() as u64);
        Ok(())
    };
    // Read to the end, not just the size fstat gave: on network and FUSE file systems that
    // cache attributes, fstat can lag behind the content, and a file would be cut short.
    let read = chunker.chunk_stream(&file, &mut emit);
    let read = match read {
        Ok(n) => n,
        Err(e) => {
            ctx.warn(format!("{}: read failed: {e}", shown()));
            return None;
        }
    };
    ctx.counters.bytes.fetch_add(read, Ordering::Relaxed);
    match source::fstat(&file) {
        Ok(after) if source::same_file_unchanged(&before, &after) && after.st_size as u64 == read => {}
        _ => ctx.warn(format!("{}: changed while being read; the saved copy may be inconsistent", shown())),
    }
    source::update_from_stat(&mut node, &before, &ctx.names);
    match source::read_xattrs_fd(file.as_fd()) {
        Ok(x) => node.xattrs = x,
        Err(e) => ctx.warn(format!("{}: cannot read extended attributes: {e}", shown())),
    }
    node.size = read;
    node.content = content;
    Some(node)
}

/// Finisher thread: turns completed directories into tree blobs, in post-order.
fn finisher(ctx: Arc<Ctx>, rx: Receiver<DirJob>, mut out: Option<Out>) {
    let keys = ctx.repo.keys().clone();
    for job in rx {
        let mut nodes = Vec::with_capacity(job.entries.len());
        for e in job.entries {
            match e {
                Pending::Ready(n) => nodes.push(*n),
                Pending::Later(rx) => {
                    if let Ok(Some(n)) = rx.recv() {
                        nodes.push(n)
                    }
                }
            }
        }
        let bytes = tree::encode(&nodes);
        let id = keys.blob_id(BlobType::Tree, &bytes);
        ctx.store_blob(out.as_mut(), BlobType::Tree, id, &bytes, Plan::Try);
        let c = &ctx.counters;
        match job.parent_subtree {
            None => c.dirs_new.fetch_add(1, Ordering::Relaxed),
            Some(p) if p == id => c.dirs_unmodified.fetch_add(1, Ordering::Relaxed),
            Some(_) => c.dirs_changed.fetch_add(1, Ordering::Relaxed),
        };
        let mut node = job.node;
        node.subtree = Some(id.0);
        let _ = job.result.send(Some(node));
    }
}
