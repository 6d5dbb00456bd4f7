//! `coffer mount`: the repository as a read-only FUSE file system (the `fuser` crate, which
//! mounts through `fusermount3`), for browsing and copying files out with ordinary tools.
//!
//! Layout, fixed when mounting (the snapshots then in the repository):
//!
//! ```text
//! snapshots/2026-12-02T03:00:04Z/...   every snapshot, named by its time (UTC)
//! snapshots/latest -> 2026-12-02T03:00:04Z
//! hosts/web1/2026-12-02T03:00:04Z/...  the snapshots of each host, and its latest
//! tags/nightly/...                      the snapshots of each tag, and its latest
//! ids/8ad9c3e1/...                      every snapshot by its short id
//! ```
//!
//! Inside a snapshot, the backed-up paths are as `restore` recreates them (`/etc/hosts` is
//! `snapshots/T/etc/hosts`), with the recorded modes, owners, times, symlinks and extended
//! attributes. Inodes are handed out as entries are first looked at, and kept (a tree's
//! entries are loaded once). File contents are read on demand: a read fetches only the
//! chunks it covers (found by binary search in the file's chunk offsets), through a small
//! cache of decrypted chunks, so sequential reads fetch each chunk once.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyXattr, Request,
};

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{MasterIndex, Repository};

/// Everything is immutable: the kernel may cache attributes and entries for long.
const TTL: Duration = Duration::from_secs(300);
/// Decrypted chunks kept for reads (chunks average 1 MiB: tens of MiB at most).
const CACHED_CHUNKS: usize = 32;

/// A directory's entries: name and inode.
type Entries = Arc<Vec<(Vec<u8>, u64)>>;

enum Kind {
    /// A directory made by the mount, with its entries.
    Virtual(Vec<(Vec<u8>, u64)>),
    /// A symlink made by the mount (`latest`).
    Link(Vec<u8>),
    /// A snapshot's root directory.
    Root { tree: [u8; 32], time_ns: i64 },
    /// An entry of a snapshot (boxed: nodes are large, and most inodes are one).
    Entry(Box<Node>),
}

struct Inode {
    kind: Kind,
    /// A directory's entries once loaded (virtual ones from the start).
    children: Option<Entries>,
    /// A file's chunk end offsets once computed.
    ends: Option<Arc<Vec<u64>>>,
}

/// The mounted file system.
pub struct RepoFs {
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
    inodes: Mutex<Vec<Inode>>,
    chunks: Mutex<VecDeque<(BlobId, Arc<Vec<u8>>)>>,
    mounted_at: SystemTime,
    uid: u32,
    gid: u32,
}

/// A snapshot's name in the listings: its time, UTC.
fn time_name(s: &Snapshot) -> String {
    crate::clock::from_unix_ns(s.time_ns).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A host or tag as a directory name: `%` and `/` percent-escaped, `.` and `..` (and the
/// empty name) spelled so they are names, not the directory itself or its parent.
fn entry_name(k: &str) -> String {
    match k {
        "" => "%00".into(),
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => k.replace('%', "%25").replace('/', "%2F"),
    }
}

fn system_time(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(sec.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    }
}

impl RepoFs {
    /// The layout for these snapshots (oldest first).
    pub fn new(repo: Arc<Repository>, index: Arc<MasterIndex>, snaps: &[(SnapshotId, Snapshot)]) -> RepoFs {
        let mut inodes: Vec<Inode> = Vec::new();
        let mut add = |kind: Kind| -> u64 {
            let children = match &kind {
                Kind::Virtual(c) => Some(Arc::new(c.clone())),
                _ => None,
            };
            inodes.push(Inode { kind, children, ends: None });
            inodes.len() as u64
        };
        // Inode 1 is the root; filled in last.
        add(Kind::Virtual(Vec::new()));
        let roots: Vec<u64> = snaps.iter().map(|(_, s)| add(Kind::Root { tree: s.tree, time_ns: s.time_ns })).collect();
        // Unique time names: a second snapshot in the same second gets `-2`.
        let mut used: HashMap<String, u32> = HashMap::new();
        let names: Vec<Vec<u8>> = snaps
            .iter()
            .map(|(_, s)| {
                let base = time_name(s);
                let n = used.entry(base.clone()).or_insert(0);
                *n += 1;
                if *n == 1 { base } else { format!("{base}-{n}") }.into_bytes()
            })
            .collect();
        let mut group = |members: Vec<usize>| -> u64 {
            let mut entries: Vec<(Vec<u8>, u64)> = members.iter().map(|&i| (names[i].clone(), roots[i])).collect();
            if let Some(&last) = members.last() {
                let link = add(Kind::Link(names[last].clone()));
                entries.push((b"latest".to_vec(), link));
            }
            add(Kind::Virtual(entries))
        };
        let all = group((0..snaps.len()).collect());
        let mut by = |key: &dyn Fn(&Snapshot) -> Vec<String>| -> Vec<(Vec<u8>, u64)> {
            let mut keys: Vec<String> = snaps.iter().flat_map(|(_, s)| key(s)).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .map(|k| {
                    let members = (0..snaps.len()).filter(|&i| key(&snaps[i].1).contains(&k)).collect();
                    (entry_name(&k).into_bytes(), group(members))
                })
                .collect()
        };
        let hosts = by(&|s| vec![s.host.clone()]);
        let tags = by(&|s| s.tags.clone());
        let hosts = add(Kind::Virtual(hosts));
        let tags = add(Kind::Virtual(tags));
        let ids: Vec<(Vec<u8>, u64)> =
            snaps.iter().zip(&roots).map(|((id, _), &r)| (id.short().into_bytes(), r)).collect();
        let ids = add(Kind::Virtual(ids));
        let top = vec![
            (b"snapshots".to_vec(), all),
            (b"hosts".to_vec(), hosts),
            (b"tags".to_vec(), tags),
            (b"ids".to_vec(), ids),
        ];
        inodes[0] = Inode { children: Some(Arc::new(top.clone())), kind: Kind::Virtual(top), ends: None };
        RepoFs {
            repo,
            index,
            inodes: Mutex::new(inodes),
            chunks: Mutex::new(VecDeque::new()),
            mounted_at: SystemTime::now(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    fn attr(&self, ino: u64, i: &Inode) -> FileAttr {
        let dir = |perm: u16, time: SystemTime| FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        };
        match &i.kind {
            Kind::Virtual(_) => dir(0o555, self.mounted_at),
            Kind::Root { time_ns, .. } => {
                dir(0o555, system_time(time_ns.div_euclid(1_000_000_000), time_ns.rem_euclid(1_000_000_000) as u32))
            }
            Kind::Link(target) => FileAttr {
                kind: FileType::Symlink,
                perm: 0o777,
                size: target.len() as u64,
                nlink: 1,
                ..dir(0o777, self.mounted_at)
            },
            Kind::Entry(n) => {
                let kind = match n.kind {
                    NodeKind::File => FileType::RegularFile,
                    NodeKind::Dir => FileType::Directory,
                    NodeKind::Symlink => FileType::Symlink,
                    NodeKind::Fifo => FileType::NamedPipe,
                    NodeKind::CharDevice => FileType::CharDevice,
                    NodeKind::BlockDevice => FileType::BlockDevice,
                    NodeKind::Socket => FileType::Socket,
                };
                let size = match n.kind {
                    NodeKind::File => n.size,
                    NodeKind::Symlink => n.link_target.len() as u64,
                    _ => 0,
                };
                let mtime = system_time(n.mtime.sec, n.mtime.nsec);
                FileAttr {
                    ino: INodeNo(ino),
                    size,
                    blocks: size.div_ceil(512),
                    atime: mtime,
                    mtime,
                    ctime: system_time(n.ctime.sec, n.ctime.nsec),
                    crtime: mtime,
                    kind,
                    perm: (n.mode & 0o7777) as u16,
                    nlink: if n.kind == NodeKind::Dir { 2 } else { n.nlink.clamp(1, u64::from(u32::MAX)) as u32 },
                    uid: n.uid,
                    gid: n.gid,
                    rdev: n.rdev as u32,
                    flags: 0,
                    blksize: 4096,
                }
            }
        }
    }

    /// A directory's entries, its tree loaded (and its entries given inodes) on first use.
    fn children(&self, ino: u64) -> Result<Entries, Errno> {
        let tree = {
            let inodes = self.inodes.lock().expect("poisoned");
            let i = inodes.get(ino as usize - 1).ok_or(Errno::ENOENT)?;
            if let Some(c) = &i.children {
                return Ok(c.clone());
            }
            match &i.kind {
                Kind::Root { tree, .. } => *tree,
                Kind::Entry(n) if n.kind == NodeKind::Dir => match n.subtree {
                    Some(t) => t,
                    None => return Ok(Arc::new(Vec::new())),
                },
                _ => return Err(Errno::ENOTDIR),
            }
        };
        // Loaded without the lock held: other readers go on meanwhile.
        let nodes = self.repo.load_tree(&self.index, &BlobId(tree)).map_err(|e| {
            eprintln!("warning: mount: a directory could not be read: {e}");
            Errno::EIO
        })?;
        let mut inodes = self.inodes.lock().expect("poisoned");
        if let Some(c) = &inodes[ino as usize - 1].children {
            return Ok(c.clone());
        }
        let mut list = Vec::with_capacity(nodes.len());
        for n in nodes {
            let name = n.name.clone();
            inodes.push(Inode { kind: Kind::Entry(Box::new(n)), children: None, ends: None });
            list.push((name, inodes.len() as u64));
        }
        let list = Arc::new(list);
        inodes[ino as usize - 1].children = Some(list.clone());
        Ok(list)
    }

    fn with_inode<T>(&self, ino: INodeNo, f: impl FnOnce(&Inode) -> T) -> Result<T, Errno> {
        let inodes = self.inodes.lock().expect("poisoned");
        inodes.get((u64::from(ino) as usize).wrapping_sub(1)).map(f).ok_or(Errno::ENOENT)
    }

    /// A chunk's plaintext, from the cache or the repository.
    fn chunk(&self, id: BlobId) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some((_, c)) = self.chunks.lock().expect("poisoned").iter().find(|(i, _)| *i == id) {
            return Ok(c.clone());
        }
        let data = Arc::new(self.repo.read_data_blob(&self.index, &id).map_err(|e| {
            eprintln!("warning: mount: a file's content could not be read: {e}");
            Errno::EIO
        })?);
        let mut cache = self.chunks.lock().expect("poisoned");
        cache.push_back((id, data.clone()));
        if cache.len() > CACHED_CHUNKS {
            cache.pop_front();
        }
        Ok(data)
    }

    /// `size` bytes of file `ino` from `offset`.
    fn read_at(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (content, ends) = self.with_inode(ino, |i| match &i.kind {
            Kind::Entry(n) if n.kind == NodeKind::File => Ok((n.content.clone(), i.ends.clone())),
            _ => Err(Errno::EISDIR),
        })??;
        let ends = match ends {
            Some(e) => e,
            None => {
                let mut at = 0u64;
                let mut v = Vec::with_capacity(content.len());
                for id in &content {
                    at += self.index.get(&BlobId(*id)).map(|l| u64::from(l.raw_len)).ok_or(Errno::EIO)?;
                    v.push(at);
                }
                let v = Arc::new(v);
                let mut inodes = self.inodes.lock().expect("poisoned");
                inodes[u64::from(ino) as usize - 1].ends = Some(v.clone());
                v
            }
        };
        let total = ends.last().copied().unwrap_or(0);
        let end = offset.saturating_add(u64::from(size)).min(total);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        // The first chunk ending after `offset`.
        let mut k = ends.partition_point(|&e| e <= offset);
        let mut at = offset;
        while at < end && k < content.len() {
            let start = if k == 0 { 0 } else { ends[k - 1] };
            let data = self.chunk(BlobId(content[k]))?;
            let from = (at - start) as usize;
            let to = ((end - start) as usize).min(data.len());
            if from >= to {
                return Err(Errno::EIO);
            }
            out.extend_from_slice(&data[from..to]);
            at = start + to as u64;
            k += 1;
        }
        Ok(out)
    }
}

impl Filesystem for RepoFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.children(parent.into()).and_then(|c| {
            c.iter().find(|(n, _)| n.as_slice() == name.as_bytes()).map(|(_, ino)| *ino).ok_or(Errno::ENOENT)
        });
        match found.and_then(|ino| self.with_inode(INodeNo(ino), |i| self.attr(ino, i))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with_inode(ino, |i| self.attr(ino.into(), i)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = self.with_inode(ino, |i| match &i.kind {
            Kind::Link(t) => Ok(t.clone()),
            Kind::Entry(n) if n.kind == NodeKind::Symlink => Ok(n.link_target.clone()),
            _ => Err(Errno::EINVAL),
        });
        match target.and_then(|t| t) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_at(ino, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let children = match self.children(ino.into()) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let kinds: Vec<FileType> = {
            let inodes = self.inodes.lock().expect("poisoned");
            children.iter().map(|(_, c)| self.attr(*c, &inodes[*c as usize - 1]).kind).collect()
        };
        let dots = [(b".".as_slice(), u64::from(ino), FileType::Directory), (b"..".as_slice(), 1, FileType::Directory)];
        let all = dots.into_iter().chain(children.iter().zip(kinds).map(|((n, c), k)| (n.as_slice(), *c, k)));
        for (i, (name, child, kind)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = self.with_inode(ino, |i| match &i.kind {
            Kind::Entry(n) => n.xattrs.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v.clone()),
            _ => None,
        });
        match value {
            Ok(Some(v)) if size == 0 => reply.size(v.len() as u32),
            Ok(Some(v)) if v.len() <= size as usize => reply.data(&v),
            Ok(Some(_)) => reply.error(Errno::ERANGE),
            Ok(None) => reply.error(Errno::ENODATA),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let list = self.with_inode(ino, |i| match &i.kind {
            Kind::Entry(n) => n.xattrs.iter().flat_map(|(k, _)| k.iter().copied().chain([0])).collect(),
            _ => Vec::new(),
        });
        match list {
            Ok(l) if size == 0 => reply.size(l.len() as u32),
            Ok(l) if l.len() <= size as usize => reply.data(&l),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn odd_hosts_and_tags_become_names() {
        assert_eq!(super::entry_name("h/2"), "h%2F2");
        assert_eq!(super::entry_name(".."), "%2E%2E");
        assert_eq!(super::entry_name("50%"), "50%25");
        assert_eq!(super::entry_name("ünï"), "ünï");
    }
}
