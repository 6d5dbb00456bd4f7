//! Directories being restored: created on first use, metadata applied when the last entry
//! inside them is finished.
//!
//! A directory's descriptor is a cache, not a possession: at most
//! [`crate::fdlimit::dir_budget`] are open at once (the oldest opened is closed first), and
//! a directory whose descriptor was closed is opened again from its parent's when it is
//! needed (a queued file, the first link of a hard-linked file, its metadata), checked to
//! be the directory this restore made (same device and inode; `O_NOFOLLOW`). So deep trees
//! and thousands of directories holding first links stay within the open-file limit.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{meta, Ctx};
use crate::format::tree::Node;

pub(super) struct DirState {
    parent: Option<Arc<DirState>>,
    /// `None` for the target itself, whose metadata is left alone.
    node: Option<Node>,
    path: Vec<u8>,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// (device, inode) once created, to recognise it when it is opened again.
    made: Mutex<Option<(u64, u64)>>,
    /// Unfinished holds: the walker's, each queued file's, each child directory's.
    pending: AtomicUsize,
}

/// The directories whose descriptors are open, oldest first (the target is never closed).
#[derive(Default)]
pub(super) struct OpenDirs {
    open: Mutex<VecDeque<Weak<DirState>>>,
}

impl OpenDirs {
    /// Records that `d` holds a descriptor now, closing the oldest others' beyond the budget.
    fn opened(&self, d: &Arc<DirState>) {
        let budget = crate::fdlimit::dir_budget();
        let mut open = self.open.lock().expect("poisoned");
        open.push_back(Arc::downgrade(d));
        while open.len() > budget {
            let Some(old) = open.pop_front() else { break };
            if let Some(old) = old.upgrade() {
                // Holders of a clone (a worker writing a file) keep it open until they finish.
                *old.fd.lock().expect("poisoned") = None;
            }
        }
    }
}

impl DirState {
    /// The target directory, already open.
    pub(super) fn existing(fd: OwnedFd) -> Arc<Self> {
        Arc::new(DirState {
            parent: None,
            node: None,
            path: Vec::new(),
            fd: Mutex::new(Some(Arc::new(fd))),
            made: Mutex::new(None),
            pending: AtomicUsize::new(1),
        })
    }

    /// A directory below `parent`, not created until [`Self::ensure`] is called.
    pub(super) fn child(parent: &Arc<DirState>, node: Node, path: Vec<u8>) -> Arc<Self> {
        parent.acquire();
        Arc::new(DirState {
            parent: Some(parent.clone()),
            node: Some(node),
            path,
            fd: Mutex::new(None),
            made: Mutex::new(None),
            pending: AtomicUsize::new(1),
        })
    }

    fn cached(&self) -> Option<Arc<OwnedFd>> {
        self.fd.lock().expect("poisoned").clone()
    }

    /// Creates this directory and its parents the first time; afterwards opens it again if
    /// its descriptor was closed. A loop up to the nearest open ancestor, then down, not
    /// recursion: a worker's stack is small and trees may be thousands of levels deep.
    pub(super) fn ensure(self: &Arc<Self>, ctx: &Ctx) -> std::io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cached() {
            return Ok(fd);
        }
        let mut chain = vec![self.clone()];
        let mut fd = loop {
            let up = chain.last().expect("not empty").parent.clone().expect("only the target has no parent");
            if let Some(fd) = up.cached() {
                break fd;
            }
            chain.push(up);
        };
        for d in chain.iter().rev() {
            fd = d.open_in(&fd, ctx)?;
        }
        Ok(fd)
    }

    /// Creates (the first time) or reopens this directory in its parent's `parent` descriptor.
    fn open_in(self: &Arc<Self>, parent: &OwnedFd, ctx: &Ctx) -> std::io::Result<Arc<OwnedFd>> {
        let node = self.node.as_ref().expect("only the target has no node");
        let mut made = self.made.lock().expect("poisoned");
        if let Some(fd) = self.cached() {
            return Ok(fd);
        }
        let fd = match *made {
            None => {
                let (fd, created) = meta::make_dir(parent.as_fd(), &node.name)?;
                let st = rustix::fs::fstat(&fd)?;
                *made = Some((st.st_dev as u64, st.st_ino as u64));
                if created {
                    ctx.dirs.fetch_add(1, Ordering::Relaxed);
                }
                fd
            }
            Some(ident) => {
                let fd = meta::open_dir(parent.as_fd(), &node.name)?;
                let st = rustix::fs::fstat(&fd)?;
                if (st.st_dev as u64, st.st_ino as u64) != ident {
                    return Err(std::io::Error::other("the directory was replaced while it was being restored"));
                }
                fd
            }
        };
        let fd = Arc::new(fd);
        *self.fd.lock().expect("poisoned") = Some(fd.clone());
        drop(made);
        ctx.open_dirs.opened(self);
        Ok(fd)
    }

    pub(super) fn acquire(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops one hold; the last one applies the metadata, closes the directory and releases
    /// the parent. A loop, not recursion, so very deep trees cannot overflow a worker's stack.
    pub(super) fn release(self: &Arc<Self>, ctx: &Ctx) {
        let mut cur = self.clone();
        loop {
            if cur.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            let made = cur.made.lock().expect("poisoned").is_some();
            if let (Some(node), true) = (&cur.node, made) {
                let applied = cur
                    .ensure(ctx)
                    .and_then(|fd| Ok(std::fs::File::from(fd.as_fd().try_clone_to_owned()?)))
                    .and_then(|file| meta::apply_fd(&file, node, &ctx.owners));
                if let Err(e) = applied {
                    ctx.error(&cur.path, format!("cannot set directory metadata: {e}"));
                }
                *cur.fd.lock().expect("poisoned") = None;
            }
            match cur.parent.clone() {
                Some(p) => cur = p,
                None => return,
            }
        }
    }
}
