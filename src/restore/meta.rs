//! Creating nodes and applying their metadata, relative to directory descriptors.
//!
//! Order matters: owner first (chown clears setuid/setgid), then mode, then extended
//! attributes, then times (anything else would touch them again).

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use rustix::fs::Timespec;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::fs::{Gid, Uid};
use rustix::io::Errno;

use crate::format::tree::{Node, NodeKind};

/// Runs `create`; if the name is taken by something that is not a directory, removes it
/// (`unlinkat` never follows symlinks) and tries once more.
pub(super) fn replace_with(
    dir: BorrowedFd<'_>,
    name: &CStr,
    create: impl Fn(BorrowedFd<'_>, &CStr) -> rustix::io::Result<()>,
) -> io::Result<()> {
    match create(dir, name) {
        Err(Errno::EXIST) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(create(dir, name)?)
        }
        r => Ok(r?),
    }
}

/// Creates a fresh regular file (replacing whatever non-directory had that name).
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = || rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600));
    let fd = match open() {
        Err(Errno::EXIST) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            open()?
        }
        r => r?,
    };
    Ok(File::from(fd))
}

/// Creates a directory, or opens the existing one; a non-directory in the way is removed.
/// Says whether it was created.
pub(super) fn make_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<(OwnedFd, bool)> {
    let name = OsStr::from_bytes(name);
    let created = match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(e.into()),
    };
    let open = || {
        rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    match open() {
        Ok(fd) => Ok((fd, created)),
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
            Ok((open()?, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens an existing directory below `dir`, never following a symlink.
pub(super) fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates a symlink, FIFO or device node.
pub(super) fn create_special(dir: BorrowedFd<'_>, name: &CStr, node: &Node, is_root: bool) -> io::Result<()> {
    let mode = Mode::from_raw_mode(node.mode & 0o7777);
    match node.kind {
        NodeKind::Symlink => {
            replace_with(dir, name, |d, n| rustix::fs::symlinkat(OsStr::from_bytes(&node.link_target), d, n))
        }
        NodeKind::Fifo => replace_with(dir, name, |d, n| rustix::fs::mknodat(d, n, FileType::Fifo, mode, 0)),
        NodeKind::CharDevice | NodeKind::BlockDevice if is_root => {
            let ft = if node.kind == NodeKind::CharDevice { FileType::CharacterDevice } else { FileType::BlockDevice };
            replace_with(dir, name, |d, n| rustix::fs::mknodat(d, n, ft, mode, node.rdev))
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => {
            Err(io::Error::other("device nodes can only be restored as root"))
        }
        _ => Ok(()),
    }
}

/// Who restores, and the owner names this system knows, looked up once per name and
/// restore (each lookup reads /etc/passwd or /etc/group again through NSS: ten syscalls,
/// for every file of a tree owned by one user).
pub(super) struct Owners {
    pub(super) is_root: bool,
    users: Mutex<HashMap<Vec<u8>, Option<u32>>>,
    groups: Mutex<HashMap<Vec<u8>, Option<u32>>>,
}

impl Owners {
    pub(super) fn new(is_root: bool) -> Self {
        Owners { is_root, users: Mutex::default(), groups: Mutex::default() }
    }

    /// The owner to restore: by name where this system knows the name, else the number.
    fn of(&self, node: &Node) -> (Uid, Gid) {
        let uid = cached(&self.users, &node.user, |n| uzers::get_user_by_name(n).map(|u| u.uid()));
        let gid = cached(&self.groups, &node.group, |n| uzers::get_group_by_name(n).map(|g| g.gid()));
        (Uid::from_raw(uid.unwrap_or(node.uid)), Gid::from_raw(gid.unwrap_or(node.gid)))
    }
}

/// `find(name)`, remembered in `cache`; `None` for an empty name. The lookup runs without
/// the lock held: NSS may ask a directory server.
fn cached(
    cache: &Mutex<HashMap<Vec<u8>, Option<u32>>>,
    name: &[u8],
    find: impl Fn(&OsStr) -> Option<u32>,
) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    if let Some(hit) = cache.lock().expect("poisoned").get(name) {
        return *hit;
    }
    let found = find(OsStr::from_bytes(name));
    cache.lock().expect("poisoned").insert(name.to_vec(), found);
    found
}

fn times(node: &Node) -> Timestamps {
    let t = Timespec { tv_sec: node.mtime.sec, tv_nsec: node.mtime.nsec as _ };
    Timestamps { last_access: t, last_modification: t }
}

/// Whether a failure to set an xattr is expected for an unprivileged restore.
fn ignorable_xattr_error(e: Errno, is_root: bool) -> bool {
    e == Errno::NOTSUP || (!is_root && e == Errno::PERM)
}

/// Owner, mode, xattrs and times of an open file or directory.
pub(super) fn apply_fd(f: &File, node: &Node, owners: &Owners) -> io::Result<()> {
    let is_root = owners.is_root;
    if is_root {
        let (u, g) = owners.of(node);
        rustix::fs::fchown(f, Some(u), Some(g))?;
    }
    rustix::fs::fchmod(f, Mode::from_raw_mode(node.mode & 0o7777))?;
    for (k, v) in &node.xattrs {
        match rustix::fs::fsetxattr(f, OsStr::from_bytes(k), v, XattrFlags::empty()) {
            Err(e) if !ignorable_xattr_error(e, is_root) => return Err(e.into()),
            _ => {}
        }
    }
    rustix::fs::futimens(f, &times(node))?;
    Ok(())
}

/// `chmod` of a FIFO or device node that can never be redirected through a symlink: the
/// node is opened with `O_PATH | O_NOFOLLOW` (which opens neither a FIFO nor a device), its
/// type checked on the descriptor, and the mode set through `/proc/self/fd/N`, which names
/// exactly that inode. (Linux's `fchmodat` has no working `AT_SYMLINK_NOFOLLOW`.)
fn chmod_nofollow(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink {
        return Err(io::Error::other("replaced by a symlink during restore"));
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}

/// Metadata of a symlink, FIFO or device node, by name (never following a symlink).
pub(super) fn apply_at(dir: BorrowedFd<'_>, name: &CStr, node: &Node, owners: &Owners) -> io::Result<()> {
    let is_root = owners.is_root;
    if is_root {
        let (u, g) = owners.of(node);
        rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    if node.kind != NodeKind::Symlink {
        chmod_nofollow(dir, name, node.mode)?;
    }
    if !node.xattrs.is_empty() {
        let path = crate::source::proc_path(dir, name.to_bytes());
        for (k, v) in &node.xattrs {
            match rustix::fs::lsetxattr(OsStr::from_bytes(&path), OsStr::from_bytes(k), v, XattrFlags::empty()) {
                Err(e) if !ignorable_xattr_error(e, is_root) => return Err(e.into()),
                _ => {}
            }
        }
    }
    rustix::fs::utimensat(dir, name, &times(node), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
