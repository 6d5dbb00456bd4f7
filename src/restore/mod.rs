//! `restore`: recreate a snapshot's files exactly, never writing outside the target.
//!
//! The walker (calling thread) goes through the trees depth-first, creating directories,
//! symlinks, FIFOs and device nodes itself and queueing regular files to worker threads,
//! which fetch, decrypt, verify and write their chunks. Everything is done with `*at` calls
//! relative to directory descriptors the restore created or opened with `O_NOFOLLOW`, and
//! node names are validated when trees are decoded, so no name in a snapshot and no symlink
//! planted in the target can make Coffer write outside the target.
//!
//! Directory metadata (mode, owner, times) is applied after the last entry inside it is
//! finished: each directory counts its unfinished entries, and whoever finishes the last
//! one (a worker or the walker) applies it, then tells the parent directory.
//! Runs of zero bytes covering a whole chunk are skipped with a seek, so sparse files are
//! restored sparse. Hard links within the restore are recreated with `linkat`.

mod dirs;
mod existing;
mod meta;
mod plan;

pub use existing::Overwrite;
pub use plan::plan;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver};

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::progress::{FileStatus, Progress};
use crate::repo::damage::Damage;
use crate::repo::{MasterIndex, RepoError, Repository};
use crate::source::exclude::Patterns;
use dirs::DirState;
use existing::Decision;

/// How to restore.
#[derive(Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub include: Patterns,
    pub exclude: Patterns,
    /// Read every restored file back and check it against the snapshot.
    pub verify: bool,
    pub threads: usize,
    /// Restore only these files (exact snapshot paths; a drill's sample): directories not
    /// on the way to one are not even read.
    pub only: Option<Arc<Only>>,
    /// Keep each file's size and restore time in the summary (a drill's measurements).
    pub timings: bool,
    /// When an existing file in the target is replaced.
    pub overwrite: Overwrite,
    /// Remove what the target holds beyond the snapshot (within what the filters restore).
    pub delete: bool,
}

/// The files a partial restore restores, and the directories that lead to them.
#[derive(Debug, Default)]
pub struct Only {
    pub files: std::collections::HashSet<Vec<u8>>,
    pub dirs: std::collections::HashSet<Vec<u8>>,
}

impl Only {
    /// For these file paths (absolute, as in the snapshot).
    pub fn new(files: impl IntoIterator<Item = Vec<u8>>) -> Only {
        let mut o = Only::default();
        for f in files {
            let mut p = f.as_slice();
            while let Some(i) = p.iter().rposition(|b| *b == b'/') {
                p = if i == 0 { b"/" } else { &p[..i] };
                if !o.dirs.insert(p.to_vec()) || p == b"/" {
                    break;
                }
            }
            o.files.insert(f);
        }
        o.dirs.insert(b"/".to_vec());
        o
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("target {path}: {source}")]
    Target { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    /// The path asked for is not in the snapshot (the caller can say where it is).
    #[error("{0} is not in the snapshot")]
    NotInSnapshot(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What a restore did. `errors` name every file that could not be restored exactly.
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files_restored: u64,
    pub dirs_restored: u64,
    pub other_restored: u64,
    pub bytes_restored: u64,
    pub files_verified: u64,
    /// Files (and other entries) already in the target as the snapshot has them, or kept by
    /// `--overwrite`: not written.
    pub files_unchanged: u64,
    /// Entries removed from the target (`--delete`; a directory counts once).
    pub deleted: u64,
    pub errors: Vec<String>,
    /// Copies of blobs found damaged and recorded in the repository (repo::damage), so the
    /// next backup stores them afresh.
    pub damage_recorded: u64,
    /// Why damage found could not be recorded (read-only credentials, say).
    pub record_error: Option<String>,
    /// With `timings`: each restored file's size and the time its worker spent on it.
    #[serde(skip)]
    pub timings: Vec<(u64, u64)>,
    /// Snapshot paths of the files that could not be restored exactly.
    #[serde(skip)]
    pub failed_paths: Vec<Vec<u8>>,
}

struct FileJob {
    dir: Arc<DirState>,
    node: Node,
    path: Vec<u8>,
    /// Already created by the walker (first link of a hard-linked file).
    file: Option<std::fs::File>,
}

struct Ctx {
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    opts: RestoreOptions,
    progress: Arc<dyn Progress>,
    errors: Mutex<Vec<String>>,
    files: AtomicU64,
    dirs: AtomicU64,
    other: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
    unchanged: AtomicU64,
    deleted: AtomicU64,
    owners: meta::Owners,
    open_dirs: dirs::OpenDirs,
    /// Blobs (data and trees) that could not be read: recorded at the end.
    damaged: Mutex<Vec<BlobId>>,
    timings: Mutex<Vec<(u64, u64)>>,
    failed_paths: Mutex<Vec<Vec<u8>>>,
}

impl Ctx {
    fn error(&self, path: &[u8], msg: impl std::fmt::Display) {
        let m = format!("{}: {msg}", String::from_utf8_lossy(path));
        self.progress.warn(&m);
        self.errors.lock().expect("poisoned").push(m);
    }
}

/// The files below `start` and their bytes, for a display's total (the trees are read; a
/// tree that cannot be is left out: the restore itself reports it).
pub fn count(repo: &Repository, index: &MasterIndex, start: &Node) -> (u64, u64) {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut todo: Vec<[u8; 32]> = start.subtree.into_iter().collect();
    if start.kind == NodeKind::File {
        return (start.size, 1);
    }
    while let Some(t) = todo.pop() {
        let Ok(nodes) = repo.load_tree(index, &BlobId(t)) else { continue };
        for n in nodes {
            match (n.kind, n.subtree) {
                (NodeKind::File, _) => {
                    bytes += n.size;
                    files += 1;
                }
                (NodeKind::Dir, Some(sub)) => todo.push(sub),
                _ => {}
            }
        }
    }
    (bytes, files)
}

/// Finds the node at `subpath` (absolute, as backed up) in a snapshot.
pub fn find_node(
    repo: &Repository,
    index: &MasterIndex,
    snap: &Snapshot,
    subpath: &[u8],
) -> Result<Node, RestoreError> {
    let mut node = Node::new(Vec::new(), NodeKind::Dir);
    node.subtree = Some(snap.tree);
    for comp in subpath.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        let tree = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => repo.load_tree(index, &BlobId(t))?,
            _ => return Err(RestoreError::NotInSnapshot(String::from_utf8_lossy(subpath).into_owned())),
        };
        node = tree
            .into_iter()
            .find(|n| n.name == comp)
            .ok_or_else(|| RestoreError::NotInSnapshot(String::from_utf8_lossy(subpath).into_owned()))?;
    }
    Ok(node)
}

/// Restores `start` (found with [`find_node`] at `start_path`) into the target: a
/// directory's entries go directly into the target, a single file or other node is put
/// inside it under its own name.
pub fn run(
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    start: Node,
    start_path: &[u8],
    opts: RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary, RestoreError> {
    let tpath = opts.target.display().to_string();
    std::fs::create_dir_all(&opts.target).map_err(|e| RestoreError::Target { path: tpath.clone(), source: e })?;
    let tfd = crate::source::open_dir_path(opts.target.as_os_str().as_encoded_bytes())
        .map_err(|e| RestoreError::Target { path: tpath, source: e })?;
    let ctx = Arc::new(Ctx {
        repo,
        index,
        opts: opts.clone(),
        progress,
        errors: Mutex::new(Vec::new()),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        other: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        unchanged: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        owners: meta::Owners::new(rustix::process::geteuid().is_root()),
        open_dirs: Default::default(),
        damaged: Mutex::new(Vec::new()),
        timings: Mutex::new(Vec::new()),
        failed_paths: Mutex::new(Vec::new()),
    });
    let threads = opts.threads.max(1);
    let (tx, rx) = bounded::<FileJob>(threads * 16);
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (ctx, rx) = (ctx.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("coffer-restore-{i}"))
                .spawn(move || worker(ctx, rx))
                .expect("spawn")
        })
        .collect();
    drop(rx);
    let root = DirState::existing(tfd);
    let walk_ctx = ctx.clone();
    let sp = start_path.to_vec();
    let walker = std::thread::Builder::new()
        .name("coffer-restore-walk".into())
        .stack_size(512 << 20)
        .spawn(move || {
            let mut w = Walker { ctx: &walk_ctx, tx, links: HashMap::new() };
            if start.kind == NodeKind::Dir {
                w.dir_entries(&root, &start, &sp, false);
            } else {
                let parent = parent_of(&sp);
                w.entry(&root, start, &parent, false);
            }
            root.release(&walk_ctx);
        })
        .expect("spawn");
    walker.join().map_err(|_| RestoreError::Invalid("the restore walker panicked".into()))?;
    for w in workers {
        w.join().map_err(|_| RestoreError::Invalid("a restore worker panicked".into()))?;
    }
    let ctx = Arc::try_unwrap(ctx).map_err(|_| RestoreError::Invalid("restore still running".into()))?;
    let (damage_recorded, record_error) = record_damage(&ctx);
    Ok(RestoreSummary {
        damage_recorded,
        record_error,
        timings: ctx.timings.into_inner().expect("poisoned"),
        failed_paths: ctx.failed_paths.into_inner().expect("poisoned"),
        files_restored: ctx.files.into_inner(),
        dirs_restored: ctx.dirs.into_inner(),
        other_restored: ctx.other.into_inner(),
        bytes_restored: ctx.bytes.into_inner(),
        files_verified: ctx.verified.into_inner(),
        files_unchanged: ctx.unchanged.into_inner(),
        deleted: ctx.deleted.into_inner(),
        errors: ctx.errors.into_inner().expect("poisoned"),
    })
}

/// Records the blobs that could not be read (the copy each was read from).
fn record_damage(ctx: &Ctx) -> (u64, Option<String>) {
    let blobs = ctx.damaged.lock().expect("poisoned");
    let found: Vec<Damage> = blobs
        .iter()
        .filter_map(|b| ctx.index.get(b).map(|l| Damage::Blob { pack: ctx.index.pack_id(l.pack), blob: *b }))
        .collect();
    match crate::repo::damage::record(&ctx.repo, &ctx.index, &found) {
        Ok(n) => (n.map_or(0, |(_, n)| n as u64), None),
        Err(e) => (0, Some(e.to_string())),
    }
}

/// Whether `--delete` may remove the target's entry at snapshot path `path`, in a directory
/// the restore covers whole (no `--include`, or one matching the directory or above it):
/// anything but what `--exclude` leaves out (not the restore's business).
fn deletable(opts: &RestoreOptions, path: &[u8], name: &[u8]) -> bool {
    !opts.exclude.matches(path, name)
}

/// The parent directory of an absolute path (`/` for top-level names).
fn parent_of(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
    }
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

struct Walker<'a> {
    ctx: &'a Arc<Ctx>,
    tx: crossbeam_channel::Sender<FileJob>,
    /// (device, inode) of hard-linked files -> where the first link was restored.
    links: HashMap<(u64, u64), (Arc<DirState>, CString)>,
}

impl Walker<'_> {
    /// Restores the entries of directory node `node` (at snapshot path `path`) into `dir`.
    fn dir_entries(&mut self, dir: &Arc<DirState>, node: &Node, path: &[u8], included: bool) {
        let Some(t) = node.subtree else { return };
        let tree = match self.ctx.repo.load_tree(&self.ctx.index, &BlobId(t)) {
            Ok(t) => t,
            Err(e) => {
                if e.is_damage() {
                    self.ctx.damaged.lock().expect("poisoned").push(BlobId(t));
                }
                return self.ctx.error(path, format!("directory contents lost: {e}"));
            }
        };
        let names: std::collections::HashSet<Vec<u8>> = tree.iter().map(|n| n.name.clone()).collect();
        for child in tree {
            self.entry(dir, child, path, included);
        }
        if self.ctx.opts.delete && self.ctx.opts.only.is_none() && (included || self.ctx.opts.include.is_empty()) {
            self.delete_extras(dir, path, &names);
        }
    }

    /// `--delete`: removes the entries of `dir` the snapshot's directory does not hold.
    fn delete_extras(&self, dir: &Arc<DirState>, path: &[u8], keep: &std::collections::HashSet<Vec<u8>>) {
        let fd = match dir.ensure(self.ctx) {
            Ok(fd) => fd,
            Err(e) => return self.ctx.error(path, e),
        };
        let found = match existing::names(fd.as_fd()) {
            Ok(n) => n,
            Err(e) => return self.ctx.error(path, format!("listing for --delete: {e}")),
        };
        for n in found {
            let p = join(path, &n);
            if keep.contains(&n) || !deletable(&self.ctx.opts, &p, &n) {
                continue;
            }
            match existing::remove(fd.as_fd(), &n) {
                Ok(()) => {
                    self.ctx.deleted.fetch_add(1, Ordering::Relaxed);
                    self.ctx.progress.file(&p, FileStatus::Deleted);
                }
                Err(e) => self.ctx.error(&p, format!("not deleted: {e}")),
            }
        }
    }

    /// Restores one node into `dir`; `parent_path` is the snapshot path of `dir`.
    fn entry(&mut self, dir: &Arc<DirState>, node: Node, parent_path: &[u8], included: bool) {
        let path = join(parent_path, &node.name);
        let opts = &self.ctx.opts;
        if opts.exclude.matches(&path, &node.name) {
            return;
        }
        let included = match &opts.only {
            // Directories are made as the files inside need them; others are not read.
            Some(only) if node.kind == NodeKind::Dir && !only.dirs.contains(&path) => return,
            Some(only) => only.files.contains(&path),
            None => included || opts.include.is_empty() || opts.include.matches(&path, &node.name),
        };
        if node.kind == NodeKind::Dir {
            let sub = DirState::child(dir, node.clone(), path.clone());
            if included {
                if let Err(e) = sub.ensure(self.ctx) {
                    return self.ctx.error(&path, e);
                }
            }
            self.dir_entries(&sub, &node, &path, included);
            sub.release(self.ctx);
            return;
        }
        if !included {
            return;
        }
        let fd = match dir.ensure(self.ctx) {
            Ok(fd) => fd,
            Err(e) => return self.ctx.error(&path, e),
        };
        if let Err(e) = self.non_dir(dir, fd.as_fd(), node, &path) {
            self.ctx.error(&path, e);
        }
    }

    fn non_dir(
        &mut self,
        dir: &Arc<DirState>,
        fd: std::os::fd::BorrowedFd<'_>,
        node: Node,
        path: &[u8],
    ) -> std::io::Result<()> {
        let name = CString::new(node.name.clone()).map_err(std::io::Error::other)?;
        // Hard links and special files are decided here; plain files by the workers, which
        // may read them to compare content.
        let decide = || existing::decide(&self.ctx.repo, &self.ctx.index, fd, &name, &node, self.ctx.opts.overwrite);
        let status = |d: Decision| if d == Decision::New { FileStatus::New } else { FileStatus::Modified };
        match node.kind {
            NodeKind::File => {
                let mut file = None;
                if node.nlink > 1 {
                    let key = (node.dev, node.inode);
                    if let Some((first_dir, first_name)) = self.links.get(&key) {
                        // A later link: the same inode as the first one, or made so.
                        let first_fd = first_dir.ensure(self.ctx)?;
                        let first = rustix::fs::statat(&first_fd, first_name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
                        let here = rustix::fs::statat(fd, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok();
                        let linked = here.is_some_and(|h| (h.st_dev, h.st_ino) == (first.st_dev, first.st_ino));
                        let keep = linked || (here.is_some() && self.ctx.opts.overwrite == Overwrite::Never);
                        if keep {
                            self.ctx.unchanged.fetch_add(1, Ordering::Relaxed);
                            self.ctx.progress.file(path, FileStatus::Unchanged);
                            return Ok(());
                        }
                        if here.is_some() {
                            existing::remove(fd, &node.name)?;
                        }
                        rustix::fs::linkat(first_fd.as_fd(), first_name, fd, &name, rustix::fs::AtFlags::empty())?;
                        self.ctx.other.fetch_add(1, Ordering::Relaxed);
                        self.ctx
                            .progress
                            .file(path, if here.is_some() { FileStatus::Modified } else { FileStatus::New });
                        return Ok(());
                    }
                    let d = decide()?;
                    if let Decision::Keep { same } = d {
                        if same {
                            if let Some(f) = existing::open_file(fd, &name)? {
                                meta::apply_fd(&f, &node, &self.ctx.owners)?;
                            }
                        }
                        self.links.insert(key, (dir.clone(), name.clone()));
                        self.ctx.unchanged.fetch_add(1, Ordering::Relaxed);
                        self.ctx.progress.file(path, FileStatus::Unchanged);
                        return Ok(());
                    }
                    if d == Decision::Replace {
                        existing::remove(fd, &node.name)?;
                    }
                    file = Some(meta::create_file(fd, &name)?);
                    self.ctx.progress.file(path, status(d));
                    self.links.insert(key, (dir.clone(), name.clone()));
                }
                dir.acquire();
                let job = FileJob { dir: dir.clone(), node, path: path.to_vec(), file };
                if let Err(e) = self.tx.send(job) {
                    e.0.dir.release(self.ctx);
                }
                Ok(())
            }
            NodeKind::Socket => Ok(()),
            _ => {
                let d = decide()?;
                if let Decision::Keep { same } = d {
                    if same {
                        meta::apply_at(fd, &name, &node, &self.ctx.owners)?;
                    }
                    self.ctx.unchanged.fetch_add(1, Ordering::Relaxed);
                    self.ctx.progress.file(path, FileStatus::Unchanged);
                    return Ok(());
                }
                if d == Decision::Replace {
                    // Whatever is there, a directory included: the snapshot has this instead.
                    existing::remove(fd, &node.name)?;
                }
                meta::create_special(fd, &name, &node, self.ctx.owners.is_root)?;
                meta::apply_at(fd, &name, &node, &self.ctx.owners)?;
                self.ctx.other.fetch_add(1, Ordering::Relaxed);
                self.ctx.progress.file(path, status(d));
                Ok(())
            }
        }
    }
}

fn worker(ctx: Arc<Ctx>, rx: Receiver<FileJob>) {
    for job in rx {
        let started = std::time::Instant::now();
        ctx.progress.reading(&job.path, true);
        let r = restore_file(&ctx, &job);
        ctx.progress.reading(&job.path, false);
        if ctx.opts.timings {
            ctx.timings.lock().expect("poisoned").push((job.node.size, started.elapsed().as_nanos() as u64));
        }
        if let Err(e) = r {
            ctx.failed_paths.lock().expect("poisoned").push(job.path.clone());
            ctx.error(&job.path, e);
        }
        ctx.progress.add_item();
        job.dir.release(&ctx);
    }
}

/// Writes one file's content, then its metadata. A damaged chunk is reported and left as a
/// hole (the rest of the file is still written), so nothing is silently wrong.
fn restore_file(ctx: &Ctx, job: &FileJob) -> std::io::Result<()> {
    let fd = job.dir.ensure(ctx)?;
    let name = CString::new(job.node.name.clone()).map_err(std::io::Error::other)?;
    let file = match &job.file {
        Some(f) => f.try_clone()?,
        None => {
            let d = existing::decide(&ctx.repo, &ctx.index, fd.as_fd(), &name, &job.node, ctx.opts.overwrite)?;
            if let Decision::Keep { same } = d {
                // The content is there already; its metadata is made exact (a partly
                // restored tree may lack it), unless --overwrite keeps the file as it is.
                if same {
                    if let Some(f) = existing::open_file(fd.as_fd(), &name)? {
                        meta::apply_fd(&f, &job.node, &ctx.owners)?;
                    }
                }
                ctx.unchanged.fetch_add(1, Ordering::Relaxed);
                ctx.progress.add_bytes(job.node.size);
                ctx.progress.file(&job.path, FileStatus::Unchanged);
                return Ok(());
            }
            if d == Decision::Replace {
                // Whatever is there, a directory included: the snapshot has a file instead.
                existing::remove(fd.as_fd(), &job.node.name)?;
            }
            let f = meta::create_file(fd.as_fd(), &name)?;
            ctx.progress.file(&job.path, if d == Decision::New { FileStatus::New } else { FileStatus::Modified });
            f
        }
    };
    let mut offset = 0u64;
    let mut damaged = Vec::new();
    for id in &job.node.content {
        let id = BlobId(*id);
        let len = ctx.index.get(&id).map(|l| u64::from(l.raw_len));
        match ctx.repo.read_data_blob(&ctx.index, &id) {
            Ok(data) => {
                write_sparse(&file, &data, offset)?;
                offset += data.len() as u64;
                ctx.progress.add_bytes(data.len() as u64);
            }
            Err(e) => {
                if e.is_damage() {
                    ctx.damaged.lock().expect("poisoned").push(id);
                }
                damaged.push(e.to_string());
                offset += len.unwrap_or(0);
            }
        }
    }
    file.set_len(offset)?;
    ctx.bytes.fetch_add(offset, Ordering::Relaxed);
    if ctx.opts.verify && damaged.is_empty() {
        verify_file(ctx, &file, &job.node)?;
        ctx.verified.fetch_add(1, Ordering::Relaxed);
    }
    meta::apply_fd(&file, &job.node, &ctx.owners)?;
    if !damaged.is_empty() {
        return Err(std::io::Error::other(format!("restored with damaged content: {}", damaged.join("; "))));
    }
    if offset != job.node.size {
        return Err(std::io::Error::other(format!("size {offset} differs from the recorded {}", job.node.size)));
    }
    ctx.files.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes `data` at `offset`, skipping 4 KiB blocks that are all zeros, so they stay holes
/// (the file is new, and `set_len` gives it its full size at the end).
fn write_sparse(file: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut start = None;
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let zero = block.iter().all(|b| *b == 0);
        match (zero, start) {
            (false, None) => start = Some(i * BLOCK),
            (true, Some(s)) => {
                file.write_all_at(&data[s..i * BLOCK], offset + s as u64)?;
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        file.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

/// Reads a restored file back and checks every chunk's keyed hash.
fn verify_file(ctx: &Ctx, file: &std::fs::File, node: &Node) -> std::io::Result<()> {
    let mut offset = 0u64;
    for id in &node.content {
        let id = BlobId(*id);
        let len = ctx.index.get(&id).map(|l| l.raw_len as usize).unwrap_or(0);
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        if ctx.repo.keys().blob_id(crate::format::BlobType::Data, &buf) != id {
            return Err(std::io::Error::other(format!("verification failed at offset {offset}")));
        }
        offset += len as u64;
    }
    Ok(())
}
