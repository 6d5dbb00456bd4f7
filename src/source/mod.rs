//! Reading the files to back up: directory walking and metadata, relative to directory fds.
//!
//! Everything is done with `*at` system calls on open directory descriptors (rustix) instead
//! of full paths, so any depth works (no PATH_MAX), a renamed or replaced directory cannot
//! redirect the walk, and symlinks are never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).
//! The `walkdir` crate works on full paths, so it cannot give either guarantee.
//! Extended attributes are read through `/proc/self/fd/<dir>/<name>` with the `l*xattr`
//! calls, which works for every kind of node, symlinks included, at any depth.

pub mod exclude;
pub mod list;

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::RwLock;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};

use crate::format::tree::{Node, NodeKind, Time};

/// Opens a directory below `dir` without following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory by absolute path (the starting points of a walk).
pub fn open_dir_path(path: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(OsStr::from_bytes(path), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// `lstat` of an entry of `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The names in a directory, sorted bytewise, without `.` and `..`.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Opens a regular file for reading without following a symlink or blocking on a FIFO,
/// skipping atime updates where the kernel allows it.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty())?,
        r => r?,
    };
    Ok(File::from(fd))
}

/// The kind of node a stat describes.
pub fn kind_of(st: &Stat) -> NodeKind {
    match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => NodeKind::File,
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::Fifo => NodeKind::Fifo,
        FileType::CharacterDevice => NodeKind::CharDevice,
        FileType::BlockDevice => NodeKind::BlockDevice,
        _ => NodeKind::Socket,
    }
}

/// Caches uid/gid -> name lookups (they hit NSS, which can be slow). Read-mostly: every
/// walked and read file asks, from several threads, so hits take a shared lock and a miss
/// looks the name up with no lock held.
#[derive(Default)]
pub struct Names {
    users: RwLock<HashMap<u32, Vec<u8>>>,
    groups: RwLock<HashMap<u32, Vec<u8>>>,
}

impl Names {
    pub fn user(&self, uid: u32) -> Vec<u8> {
        cached(&self.users, uid, |id| uzers::get_user_by_uid(id).map(|u| u.name().as_bytes().to_vec()))
    }
    pub fn group(&self, gid: u32) -> Vec<u8> {
        cached(&self.groups, gid, |id| uzers::get_group_by_gid(id).map(|g| g.name().as_bytes().to_vec()))
    }
}

/// The cached name of `id`, looked up (empty when it has none) on a miss.
fn cached(map: &RwLock<HashMap<u32, Vec<u8>>>, id: u32, lookup: fn(u32) -> Option<Vec<u8>>) -> Vec<u8> {
    if let Some(n) = map.read().expect("poisoned").get(&id) {
        return n.clone();
    }
    let name = lookup(id).unwrap_or_default();
    map.write().expect("poisoned").entry(id).or_insert(name).clone()
}

/// Fills a node's metadata from a stat. Content and subtree are left to the caller.
pub fn node_from_stat(name: &[u8], st: &Stat, names: &Names) -> Node {
    let mut n = Node::new(name.to_vec(), kind_of(st));
    update_from_stat(&mut n, st, names);
    n
}

/// Sets a node's metadata from a newer stat of the same entry, in place: the owner names are
/// looked up again only when the ids changed, and nothing is reallocated.
pub fn update_from_stat(n: &mut Node, st: &Stat, names: &Names) {
    n.kind = kind_of(st);
    n.mode = st.st_mode & 0o7777;
    if n.user.is_empty() || n.uid != st.st_uid {
        n.user = names.user(st.st_uid);
    }
    if n.group.is_empty() || n.gid != st.st_gid {
        n.group = names.group(st.st_gid);
    }
    n.uid = st.st_uid;
    n.gid = st.st_gid;
    n.mtime = Time { sec: st.st_mtime, nsec: st.st_mtime_nsec as u32 };
    n.ctime = Time { sec: st.st_ctime, nsec: st.st_ctime_nsec as u32 };
    n.dev = st.st_dev;
    n.inode = st.st_ino;
    n.nlink = st.st_nlink;
    n.size = if n.kind == NodeKind::File { st.st_size as u64 } else { 0 };
    n.rdev = if matches!(n.kind, NodeKind::CharDevice | NodeKind::BlockDevice) { st.st_rdev } else { 0 };
}

/// The `/proc/self/fd/N/name` path of an entry, usable with the `l*` calls at any depth.
pub fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// Reads an entry's extended attributes by path (for symlinks and special files), sorted by
/// name. Filesystems or kernels without xattr support give an empty list.
pub fn read_xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = proc_path(dir, name);
    let path = OsStr::from_bytes(&path);
    xattrs_with(
        |buf| rustix::fs::llistxattr(path, buf),
        |key, buf| rustix::fs::lgetxattr(path, OsStr::from_bytes(key), buf),
    )
}

/// Reads the extended attributes of an open file or directory, sorted by name.
pub fn read_xattrs_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_with(
        |buf| rustix::fs::flistxattr(fd, buf),
        |key, buf| rustix::fs::fgetxattr(fd, OsStr::from_bytes(key), buf),
    )
}

/// The listing loop shared by both: list names, then fetch each value, growing buffers on
/// `ERANGE`; an attribute removed in between is skipped.
fn xattrs_with(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match list(&mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 8, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for key in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let mut val = vec![0u8; 256];
        loop {
            match get(key, &mut val[..]) {
                Ok(l) => {
                    val.truncate(l);
                    out.push((key.to_vec(), val));
                    break;
                }
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 8, 0),
                Err(rustix::io::Errno::NODATA) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a symlink's target.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// True when two stats describe the same unchanged file (for "changed while reading").
pub fn same_file_unchanged(a: &Stat, b: &Stat) -> bool {
    a.st_ino == b.st_ino
        && a.st_dev == b.st_dev
        && a.st_size == b.st_size
        && a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
        && a.st_ctime == b.st_ctime
        && a.st_ctime_nsec == b.st_ctime_nsec
}

/// `fstat` of an open file.
pub fn fstat(f: &impl AsFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(f)?)
}
