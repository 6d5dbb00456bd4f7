//! What is already in the target: whether a file there must be written (`--overwrite`), and
//! removing what the snapshot does not hold (`--delete`).
//!
//! `if-changed` (the default) compares content, not times: a file of the recorded size is
//! read and each chunk's keyed hash compared with the snapshot's chunk ids, so a restore over
//! a partly restored tree writes only what is missing or different, and fetches nothing for
//! the rest. Every look is relative to a directory descriptor and never follows a symlink
//! (a symlink where a file should be is "different": it is replaced, never written through).

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::{MasterIndex, Repository};

/// `--overwrite`: when an existing file in the target is replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Always.
    Always,
    /// When its content differs from the snapshot's.
    #[default]
    IfChanged,
    /// When it is older (mtime) than the snapshot's.
    IfNewer,
    /// Never: existing entries are left as they are.
    Never,
}

impl Overwrite {
    pub fn parse(s: &str) -> Option<Overwrite> {
        Some(match s {
            "always" => Overwrite::Always,
            "if-changed" => Overwrite::IfChanged,
            "if-newer" => Overwrite::IfNewer,
            "never" => Overwrite::Never,
            _ => return None,
        })
    }
}

/// What to do with one entry of the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing by that name: create it.
    New,
    /// Something else is there: replace it.
    Replace,
    /// It is there and stays: the same content (`same`: its metadata is still set), or
    /// `--overwrite` keeps it.
    Keep { same: bool },
}

/// Decides for node `node` (a non-directory) named `name` in the target directory `dir`.
pub fn decide(
    repo: &Repository,
    index: &MasterIndex,
    dir: BorrowedFd<'_>,
    name: &CStr,
    node: &Node,
    overwrite: Overwrite,
) -> io::Result<Decision> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Decision::New),
        Err(e) => return Err(e.into()),
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    let same_kind = matches!(
        (node.kind, kind),
        (NodeKind::File, FileType::RegularFile)
            | (NodeKind::Symlink, FileType::Symlink)
            | (NodeKind::Fifo, FileType::Fifo)
            | (NodeKind::CharDevice, FileType::CharacterDevice)
            | (NodeKind::BlockDevice, FileType::BlockDevice)
    );
    let keep = Decision::Keep { same: false };
    match overwrite {
        Overwrite::Never => return Ok(keep),
        Overwrite::IfNewer if same_kind => {
            let newer = (st.st_mtime, st.st_mtime_nsec as i64) >= (node.mtime.sec, i64::from(node.mtime.nsec));
            return Ok(if newer { keep } else { Decision::Replace });
        }
        Overwrite::Always | Overwrite::IfNewer => return Ok(Decision::Replace),
        Overwrite::IfChanged => {}
    }
    let same = same_kind
        && match node.kind {
            NodeKind::File => st.st_size as u64 == node.size && same_content(repo, index, dir, name, node)?,
            NodeKind::Symlink => {
                rustix::fs::readlinkat(dir, name, Vec::new()).is_ok_and(|t| t.as_bytes() == node.link_target)
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => st.st_rdev == node.rdev,
            _ => true,
        };
    Ok(if same { Decision::Keep { same: true } } else { Decision::Replace })
}

/// Whether the regular file `name` holds exactly the node's chunks.
fn same_content(
    repo: &Repository,
    index: &MasterIndex,
    dir: BorrowedFd<'_>,
    name: &CStr,
    node: &Node,
) -> io::Result<bool> {
    let Some(file) = open_file(dir, name)? else { return Ok(false) };
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &node.content {
        let id = BlobId(*id);
        let Some(len) = index.get(&id).map(|l| l.raw_len as usize) else { return Ok(false) };
        buf.resize(len, 0);
        if file.read_exact_at(&mut buf, offset).is_err() {
            return Ok(false);
        }
        if repo.keys().blob_id(crate::format::BlobType::Data, &buf) != id {
            return Ok(false);
        }
        offset += len as u64;
    }
    Ok(offset == node.size)
}

/// Opens an existing regular file for reading (and for its metadata), never through a
/// symlink; `None` if it is not one.
pub fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<File>> {
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let f = File::from(fd);
            Ok(f.metadata()?.is_file().then_some(f))
        }
        Err(Errno::LOOP) | Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in directory `dir` (without `.` and `..`).
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let fd = rustix::fs::openat(dir, c".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Removes `name` from `dir`, a directory with everything in it (a loop over an explicit
/// stack: trees may be deep), never following a symlink. At most [`OPEN_DIRS`] descriptors
/// are held: deeper, the directories above are closed and opened again by name from the
/// nearest one still open, so a tree thousands of levels deep stays within `ulimit -n`.
pub fn remove(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let open = |d: BorrowedFd<'_>, n: &[u8]| {
        rustix::fs::openat(
            d,
            OsStr::from_bytes(n),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    // The directories from `name` down: each one's name, and its descriptor if held.
    let mut stack: Vec<(Vec<u8>, Option<OwnedFd>)> = vec![(name.to_vec(), Some(open(dir, name)?))];
    // Opens the entries up to `upto` that were closed, from the nearest one still open.
    let reopen = |stack: &mut Vec<(Vec<u8>, Option<OwnedFd>)>, upto: usize| -> io::Result<()> {
        let from = stack[..=upto].iter().rposition(|(_, fd)| fd.is_some()).map_or(0, |f| f + 1);
        for i in from..=upto {
            let fd = match i.checked_sub(1) {
                Some(p) => open(stack[p].1.as_ref().expect("opened").as_fd(), &stack[i].0)?,
                None => open(dir, &stack[0].0)?,
            };
            stack[i].1 = Some(fd);
        }
        Ok(())
    };
    while let Some(top) = stack.len().checked_sub(1) {
        reopen(&mut stack, top)?;
        let fd = stack[top].1.as_ref().expect("opened");
        let mut sub = None;
        for n in names(fd.as_fd())? {
            match rustix::fs::unlinkat(fd, OsStr::from_bytes(&n), AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::ISDIR) | Err(Errno::PERM) => {
                    sub = Some((open(fd.as_fd(), &n)?, n));
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match sub {
            Some((fd, n)) => {
                if stack.iter().filter(|(_, fd)| fd.is_some()).count() >= OPEN_DIRS {
                    // Close the oldest held descriptor: it is opened again when needed.
                    if let Some(held) = stack.iter_mut().find(|(_, fd)| fd.is_some()) {
                        held.1 = None;
                    }
                }
                stack.push((n, Some(fd)));
            }
            None => {
                let (n, _) = stack.pop().expect("not empty");
                match stack.len().checked_sub(1) {
                    Some(parent) => {
                        reopen(&mut stack, parent)?;
                        let p = stack[parent].1.as_ref().expect("opened");
                        rustix::fs::unlinkat(p, OsStr::from_bytes(&n), AtFlags::REMOVEDIR)?;
                    }
                    None => rustix::fs::unlinkat(dir, OsStr::from_bytes(&n), AtFlags::REMOVEDIR)?,
                }
            }
        }
    }
    Ok(())
}

/// Descriptors [`remove`] holds at most.
const OPEN_DIRS: usize = 64;

#[cfg(test)]
mod tests {
    #[test]
    fn removes_trees_deeper_than_the_descriptors_it_may_hold() {
        use std::os::fd::AsFd;
        let d = tempfile::tempdir().unwrap();
        let mut p = d.path().join("top");
        for _ in 0..(super::OPEN_DIRS * 3 + 7) {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("f"), "x").unwrap();
            p = p.join("d");
        }
        let root = std::fs::File::open(d.path()).unwrap();
        super::remove(root.as_fd(), b"top").unwrap();
        assert!(!d.path().join("top").exists());
        std::fs::write(d.path().join("plain"), "x").unwrap();
        super::remove(root.as_fd(), b"plain").unwrap();
        assert!(!d.path().join("plain").exists());
    }
}
