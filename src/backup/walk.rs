//! The walker: turns the backup roots into file and directory jobs.
//!
//! Roots are absolute paths. The snapshot's root tree mirrors them from `/` down: for roots
//! `/home/a` and `/etc`, the root tree holds `etc` and `home`, `home` holds `a`. The
//! directories on the way (`/home`) carry their real metadata but only the entries that lead
//! to a root.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use rustix::fs::Stat;

use super::{BackupError, Ctx, DirJob, FileJob, Pending};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::source;

/// Makes the roots absolute and lexically clean, resolves symlinks in their parent
/// directories (not in the last component), checks they exist, and drops roots nested in
/// other roots. Sorted. A root that cannot be read is left out with its error in the second
/// list (as restic, the backup goes on with the others and ends partial); when none can be,
/// that is the error.
pub(super) fn normalize_roots(paths: &[PathBuf]) -> Result<(Vec<Vec<u8>>, Vec<BackupError>), BackupError> {
    if paths.is_empty() {
        return Err(BackupError::Invalid("nothing to back up: give at least one path".into()));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        match normalize_root(p) {
            Ok(r) => out.push(r),
            Err(e) => missing.push(e),
        }
    }
    if out.is_empty() {
        return Err(missing.remove(0));
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && is_below(p, q)));
    Ok((out, missing))
}

/// One root, absolute and clean, its parent's symlinks resolved; it must exist.
fn normalize_root(p: &std::path::Path) -> Result<Vec<u8>, BackupError> {
    let abs = std::path::absolute(p).map_err(|e| BackupError::Source { path: p.display().to_string(), source: e })?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    let resolved = match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map_err(|e| BackupError::Source { path: clean.display().to_string(), source: e })?
            .join(name),
        _ => clean,
    };
    std::fs::symlink_metadata(&resolved)
        .map_err(|e| BackupError::Source { path: resolved.display().to_string(), source: e })?;
    Ok(resolved.as_os_str().as_bytes().to_vec())
}

/// Whether path `p` is strictly below directory `q`.
fn is_below(p: &[u8], q: &[u8]) -> bool {
    if q == b"/" {
        return p != b"/";
    }
    p.len() > q.len() && p.starts_with(q) && p[q.len()] == b'/'
}

#[derive(Default)]
struct Trie {
    children: BTreeMap<Vec<u8>, Trie>,
    is_root: bool,
}

fn build_trie(roots: &[Vec<u8>]) -> Trie {
    let mut t = Trie::default();
    for r in roots {
        let mut cur = &mut t;
        for comp in Path::new(std::ffi::OsStr::from_bytes(r)).components() {
            if let Component::Normal(n) = comp {
                cur = cur.children.entry(n.as_bytes().to_vec()).or_default();
            }
        }
        cur.is_root = true;
    }
    t
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn find<'a>(nodes: Option<&'a [Node]>, name: &[u8]) -> Option<&'a Node> {
    let nodes = nodes?;
    nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &nodes[i])
}

/// Senders the walker feeds. Files go to the readers in small batches (one hand-off, and
/// at most one wake-up of the walker when the queue has room again, per batch instead of
/// per file); a batch is sent before any directory job, so the finisher never waits for a
/// file that is still held here.
pub(super) struct Queues<'a> {
    files: &'a Sender<Vec<FileJob>>,
    dirs: &'a Sender<DirJob>,
    batch: std::cell::RefCell<Vec<FileJob>>,
}

/// Files per batch: small enough that readers share a directory's files.
const FILE_BATCH: usize = 16;

impl Queues<'_> {
    fn file(&self, job: FileJob) {
        let mut b = self.batch.borrow_mut();
        b.push(job);
        if b.len() >= FILE_BATCH {
            // A closed queue means the readers are gone; the finisher then sees a dropped
            // sender.
            let _ = self.files.send(std::mem::take(&mut *b));
        }
    }

    fn dir(&self, job: DirJob) -> Result<(), BackupError> {
        let files = std::mem::take(&mut *self.batch.borrow_mut());
        if !files.is_empty() {
            let _ = self.files.send(files);
        }
        self.dirs.send(job).map_err(|_| BackupError::Invalid("tree thread stopped".into()))
    }
}

/// Walks every root; returns the channel that will deliver the root tree's node.
pub(super) fn walk_roots(
    ctx: &Arc<Ctx>,
    roots: &[Vec<u8>],
    parent_root: Option<&[Node]>,
    parent_tree_id: Option<BlobId>,
    files: &Sender<Vec<FileJob>>,
    dirs: &Sender<DirJob>,
) -> Result<Receiver<Option<Node>>, BackupError> {
    let q = Queues { files, dirs, batch: Default::default() };
    let trie = build_trie(roots);
    if trie.is_root {
        return Err(BackupError::Invalid("backing up `/` itself: name the directories below it instead".into()));
    }
    let fd = source::open_dir_path(b"/").map_err(|e| BackupError::Source { path: "/".into(), source: e })?;
    let entries = walk_virtual(ctx, &q, Arc::new(fd), b"/", &trie, parent_root)?;
    let (tx, rx) = bounded(1);
    let parent_subtree = parent_tree_id;
    let job = DirJob { node: Node::new(Vec::new(), NodeKind::Dir), entries, parent_subtree, result: tx };
    q.dir(job)?;
    Ok(rx)
}

/// The directories leading to the roots: real metadata, only the entries on the way.
fn walk_virtual(
    ctx: &Arc<Ctx>,
    q: &Queues<'_>,
    dir: Arc<OwnedFd>,
    prefix: &[u8],
    trie: &Trie,
    parent: Option<&[Node]>,
) -> Result<Vec<Pending>, BackupError> {
    let mut entries = Vec::new();
    for (name, child) in &trie.children {
        let path = join(prefix, name);
        let shown = || String::from_utf8_lossy(&path).into_owned();
        let cname =
            CString::new(name.clone()).map_err(|_| BackupError::Invalid(format!("{}: NUL in path", shown())))?;
        let st = source::stat_at(dir.as_fd(), &cname).map_err(|e| BackupError::Source { path: shown(), source: e })?;
        let pnode = find(parent, name);
        if child.is_root {
            let (dev, none) = (st.st_dev as u64, Ignores::default());
            if let Some(p) = walk_entry(ctx, q, &dir, &cname, path.clone(), &st, pnode, dev, &none) {
                entries.push(p);
            }
            continue;
        }
        let node = source::node_from_stat(name, &st, &ctx.names);
        let fd =
            source::open_dir_at(dir.as_fd(), &cname).map_err(|e| BackupError::Source { path: shown(), source: e })?;
        let ptree = parent_tree(ctx, pnode, &path);
        let sub = walk_virtual(ctx, q, Arc::new(fd), &path, child, ptree.as_deref())?;
        entries.push(send_dir(q, node, sub, pnode)?);
    }
    Ok(entries)
}

fn send_dir(q: &Queues<'_>, node: Node, entries: Vec<Pending>, pnode: Option<&Node>) -> Result<Pending, BackupError> {
    let (tx, rx) = bounded(1);
    let parent_subtree = pnode.and_then(|p| p.subtree).map(BlobId);
    q.dir(DirJob { node, entries, parent_subtree, result: tx })?;
    Ok(Pending::Later(rx))
}

/// Loads the parent snapshot's tree for a directory, if it had one.
fn parent_tree(ctx: &Ctx, pnode: Option<&Node>, path: &[u8]) -> Option<Vec<Node>> {
    let p = pnode.filter(|p| p.kind == NodeKind::Dir)?;
    match ctx.repo.load_tree(&ctx.index, &BlobId(p.subtree?)) {
        Ok(t) => Some(t),
        Err(e) => {
            ctx.progress.warn(&format!(
                "{}: parent snapshot's tree unreadable ({e}); reading everything below",
                String::from_utf8_lossy(path)
            ));
            None
        }
    }
}

/// One entry of a real directory. `None` when it is skipped (a warning was given).
#[allow(clippy::too_many_arguments)]
fn walk_entry(
    ctx: &Arc<Ctx>,
    q: &Queues<'_>,
    dir: &Arc<OwnedFd>,
    name: &CStr,
    path: Vec<u8>,
    st: &Stat,
    pnode: Option<&Node>,
    root_dev: u64,
    ign: &Ignores<'_>,
) -> Option<Pending> {
    let shown = || String::from_utf8_lossy(&path).into_owned();
    let mut node = source::node_from_stat(name.to_bytes(), st, &ctx.names);
    // Files' and directories' xattrs are read through the descriptor once they are open
    // (cheaper than a path lookup); everything else by path, without following symlinks.
    if !matches!(node.kind, NodeKind::File | NodeKind::Dir) {
        match source::read_xattrs(dir.as_fd(), name.to_bytes()) {
            Ok(x) => node.xattrs = x,
            Err(e) => ctx.warn(format!("{}: cannot read extended attributes: {e}", shown())),
        }
    }
    match node.kind {
        NodeKind::File => Some(file_entry(ctx, q, dir, path, node, pnode)),
        NodeKind::Dir => dir_entry(ctx, q, dir, name, &path, node, pnode, root_dev, ign),
        NodeKind::Symlink => match source::read_link_at(dir.as_fd(), name) {
            Ok(t) => {
                node.link_target = t;
                Some(Pending::Ready(Box::new(node)))
            }
            Err(e) => {
                ctx.warn(format!("{}: cannot read symlink: {e}", shown()));
                None
            }
        },
        _ => Some(Pending::Ready(Box::new(node))),
    }
}

fn file_entry(
    ctx: &Arc<Ctx>,
    q: &Queues<'_>,
    dir: &Arc<OwnedFd>,
    path: Vec<u8>,
    mut node: Node,
    pnode: Option<&Node>,
) -> Pending {
    let c = &ctx.counters;
    if let Some(p) = pnode.filter(|p| p.kind == NodeKind::File) {
        let same = p.size == node.size && p.mtime == node.mtime && p.ctime == node.ctime && p.inode == node.inode;
        if same && p.content.iter().all(|id| ctx.index.contains(&BlobId(*id))) {
            // Changing an xattr changes the ctime, so an unchanged file has the same ones.
            node.content = p.content.clone();
            node.xattrs = p.xattrs.clone();
            c.files_unmodified.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(node.size, Ordering::Relaxed);
            ctx.progress.add_bytes(node.size);
            ctx.progress.add_item();
            ctx.progress.file(&path, crate::progress::FileStatus::Unchanged);
            return Pending::Ready(Box::new(node));
        }
        c.files_changed.fetch_add(1, Ordering::Relaxed);
    } else {
        c.files_new.fetch_add(1, Ordering::Relaxed);
    }
    let changed = pnode.is_some_and(|p| p.kind == NodeKind::File);
    let (tx, rx) = bounded(1);
    let job = FileJob { dir: dir.clone(), path, node, changed, result: tx };
    q.file(job);
    Pending::Later(rx)
}

#[allow(clippy::too_many_arguments)]
fn dir_entry(
    ctx: &Arc<Ctx>,
    q: &Queues<'_>,
    dir: &Arc<OwnedFd>,
    name: &CStr,
    path: &[u8],
    node: Node,
    pnode: Option<&Node>,
    root_dev: u64,
    ign: &Ignores<'_>,
) -> Option<Pending> {
    if ctx.opts.one_file_system && node.dev != root_dev {
        return send_dir(q, node, Vec::new(), pnode).ok();
    }
    let fd = match source::open_dir_at(dir.as_fd(), name) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            ctx.warn(format!("{}: cannot open directory: {e}", String::from_utf8_lossy(path)));
            return None;
        }
    };
    walk_dir(ctx, q, fd, path, node, pnode, root_dev, ign).0
}

/// Directory levels below which a walk keeps every ancestor's descriptor open; deeper, a
/// directory closes its own while a subdirectory is walked and reopens it afterwards
/// through the subdirectory's `..` (checked to be the same directory), so a walk holds a
/// bounded number of descriptors however deep the tree (`crate::fdlimit`).
fn keep_open_levels() -> usize {
    crate::fdlimit::dir_budget() / 2
}

/// Walks an open directory; returns its pending node and its descriptor (reopened, if it
/// was closed while a subdirectory was walked; `None` if it could not be).
#[allow(clippy::too_many_arguments)]
fn walk_dir(
    ctx: &Arc<Ctx>,
    q: &Queues<'_>,
    fd: Arc<OwnedFd>,
    path: &[u8],
    mut node: Node,
    pnode: Option<&Node>,
    root_dev: u64,
    up: &Ignores<'_>,
) -> (Option<Pending>, Option<Arc<OwnedFd>>) {
    let shown = || String::from_utf8_lossy(path).into_owned();
    match source::read_xattrs_fd(fd.as_fd()) {
        Ok(x) => node.xattrs = x,
        Err(e) => ctx.warn(format!("{}: cannot read extended attributes: {e}", shown())),
    }
    let mut names = source::read_dir_names(fd.as_fd()).unwrap_or_else(|e| {
        ctx.warn(format!("{}: cannot list directory: {e}", shown()));
        Vec::new()
    });
    if let Some(tag) = ctx.tag_files.iter().find(|t| t.marks(fd.as_fd(), &names)) {
        // Keep the directory and its tag, as other tools do, but not its contents.
        names.retain(|n| n.as_bytes() == tag.name);
    }
    let ign = Ignores { here: read_ignore_file(ctx, fd.as_fd(), path, &names), up: Some(up) };
    let deep = path.iter().filter(|b| **b == b'/').count() >= keep_open_levels();
    let ident = (node.dev, node.inode);
    let ptree = parent_tree(ctx, pnode, path);
    let mut entries = Vec::with_capacity(names.len());
    let mut fd = Some(fd);
    for child in names {
        let Some(dir) = fd.as_ref() else { break };
        let cpath = join(path, child.to_bytes());
        if ctx.opts.excludes.matches(&cpath, child.to_bytes()) {
            continue;
        }
        let st = match source::stat_at(dir.as_fd(), &child) {
            Ok(st) => st,
            Err(e) => {
                ctx.warn(format!("{}: vanished or unreadable: {e}", String::from_utf8_lossy(&cpath)));
                continue;
            }
        };
        let cp = find(ptree.as_deref(), child.to_bytes());
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && ctx.opts.skip_dirs.contains(&(st.st_dev as u64, st.st_ino as u64)) {
            continue;
        }
        let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        if is_file && ctx.opts.exclude_larger_than.is_some_and(|max| st.st_size as u64 > max) {
            continue;
        }
        if ign.ignored(&cpath, is_dir) {
            continue;
        }
        if !(deep && is_dir) || (ctx.opts.one_file_system && st.st_dev as u64 != root_dev) {
            if let Some(p) = walk_entry(ctx, q, dir, &child, cpath, &st, cp, root_dev, &ign) {
                entries.push(p);
            }
            continue;
        }
        let cnode = source::node_from_stat(child.to_bytes(), &st, &ctx.names);
        let cfd = match source::open_dir_at(dir.as_fd(), &child) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                ctx.warn(format!("{}: cannot open directory: {e}", String::from_utf8_lossy(&cpath)));
                continue;
            }
        };
        drop(fd.take());
        let (p, cfd) = walk_dir(ctx, q, cfd, &cpath, cnode, cp, root_dev, &ign);
        entries.extend(p);
        fd = cfd.and_then(|c| reopen_parent(&c, ident));
        if fd.is_none() {
            ctx.warn(format!("{}: moved or replaced while it was read; the rest of it is left out", shown()));
        }
    }
    (send_dir(q, node, entries, pnode).ok(), fd)
}

/// The directory `..` of `child` names, if it is still the one with `ident` (device, inode).
fn reopen_parent(child: &OwnedFd, ident: (u64, u64)) -> Option<Arc<OwnedFd>> {
    let fd = source::open_dir_at(child.as_fd(), c"..").ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    ((st.st_dev as u64, st.st_ino as u64) == ident).then(|| Arc::new(fd))
}

/// A tag file whose presence excludes its directory's contents (`--exclude-caches`,
/// `--exclude-if-present NAME[:HEADER]`); the directory and the tag itself are kept.
#[derive(Clone, Debug)]
pub struct TagFile {
    pub name: Vec<u8>,
    /// When set, the tag counts only if the file starts with these bytes.
    pub header: Option<Vec<u8>>,
}

impl TagFile {
    /// CACHEDIR.TAG with its signature (https://bford.info/cachedir/).
    pub fn cachedir() -> Self {
        TagFile {
            name: b"CACHEDIR.TAG".to_vec(),
            header: Some(b"Signature: 8a477f597d28d172789f06886806bc55".to_vec()),
        }
    }

    /// `NAME` or `NAME:HEADER`, as restic's `--exclude-if-present` takes it.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, header) = match spec.split_once(':') {
            Some((n, h)) => (n, Some(h.as_bytes().to_vec())),
            None => (spec, None),
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!("--exclude-if-present {spec:?}: give a file name (NAME or NAME:HEADER)"));
        }
        Ok(TagFile { name: name.as_bytes().to_vec(), header })
    }

    /// Whether the directory open as `dir`, holding `names`, carries this tag.
    fn marks(&self, dir: std::os::fd::BorrowedFd<'_>, names: &[CString]) -> bool {
        if !names.iter().any(|n| n.as_bytes() == self.name) {
            return false;
        }
        let Some(header) = &self.header else { return true };
        let Ok(f) = source::open_file_at(dir, &self.name) else { return false };
        let mut head = vec![0u8; header.len()];
        use std::io::Read;
        (&f).read_exact(&mut head).is_ok() && &head == header
    }
}

/// The per-directory ignore file (gitignore syntax), read unless `--no-cofferignore`.
pub const IGNORE_FILE: &[u8] = b".cofferignore";

/// The ignore files of the directories above an entry, nearest first. As in git, the
/// nearest file with a matching line decides (`!pattern` re-includes), and nothing below
/// an ignored directory is looked at.
#[derive(Default)]
pub(super) struct Ignores<'a> {
    here: Option<ignore::gitignore::Gitignore>,
    up: Option<&'a Ignores<'a>>,
}

impl Ignores<'_> {
    fn ignored(&self, path: &[u8], is_dir: bool) -> bool {
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        let mut cur = Some(self);
        while let Some(level) = cur {
            if let Some(g) = &level.here {
                match g.matched(path, is_dir) {
                    ignore::Match::Ignore(_) => return true,
                    ignore::Match::Whitelist(_) => return false,
                    ignore::Match::None => {}
                }
            }
            cur = level.up;
        }
        false
    }
}

/// Reads the directory's ignore file, if it has one. A file that cannot be read or has bad
/// lines is warned about; the lines that parse apply.
fn read_ignore_file(
    ctx: &Ctx,
    dir: std::os::fd::BorrowedFd<'_>,
    path: &[u8],
    names: &[CString],
) -> Option<ignore::gitignore::Gitignore> {
    if !ctx.opts.ignore_files || !names.iter().any(|n| n.as_bytes() == IGNORE_FILE) {
        return None;
    }
    let shown = || String::from_utf8_lossy(&join(path, IGNORE_FILE)).into_owned();
    let mut bytes = Vec::new();
    use std::io::Read;
    // At most 1 MiB: an ignore file is a few lines, not a place to stall the walk. A longer
    // one is not cut short (half a line can ignore everything): it is left out, whole.
    let read = source::open_file_at(dir, IGNORE_FILE).and_then(|f| (&f).take((1 << 20) + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        ctx.warn(format!("{}: cannot read: {e}", shown()));
        return None;
    }
    if bytes.len() > 1 << 20 {
        ctx.warn(format!("{}: larger than 1 MiB; not applied, nothing in its directory is left out by it", shown()));
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut b = ignore::gitignore::GitignoreBuilder::new(Path::new(std::ffi::OsStr::from_bytes(path)));
    for (n, line) in text.lines().enumerate() {
        if let Err(e) = b.add_line(None, line) {
            ctx.progress.warn(&format!("{}:{}: {e}; line ignored", shown(), n + 1));
        }
    }
    match b.build() {
        Ok(g) => Some(g),
        Err(e) => {
            ctx.progress.warn(&format!("{}: {e}; file ignored", shown()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_roots_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir_all(a.join("b")).unwrap();
        let (r, missing) = normalize_roots(&[a.join("b"), a.clone(), a.join("./b/../b"), a.join("nope")]).unwrap();
        assert_eq!(missing.len(), 1);
        assert!(normalize_roots(&[a.join("nope")]).is_err());
        assert_eq!(r.len(), 1);
        assert!(r[0].ends_with(b"/a"));
        assert!(is_below(b"/a/b", b"/a"));
        assert!(!is_below(b"/ab", b"/a"));
    }
}
