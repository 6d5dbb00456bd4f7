//! Directories being restored: created on first use, metadata applied when the last entry
//! inside them is finished.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{meta, Ctx};
use crate::format::tree::Node;

pub(super) struct DirState {
    parent: Option<Arc<DirState>>,
    /// `None` for the target itself, whose metadata is left alone.
    node: Option<Node>,
    path: Vec<u8>,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Unfinished holds: the walker's, each queued file's, each child directory's.
    pending: AtomicUsize,
}

impl DirState {
    /// The target directory, already open.
    pub(super) fn existing(fd: OwnedFd) -> Arc<Self> {
        Arc::new(DirState {
            parent: None,
            node: None,
            path: Vec::new(),
            fd: Mutex::new(Some(Arc::new(fd))),
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
            pending: AtomicUsize::new(1),
        })
    }

    pub(super) fn fd(&self) -> Option<Arc<OwnedFd>> {
        self.fd.lock().expect("poisoned").clone()
    }

    /// Creates (or opens, if it exists as a real directory) this directory and its parents.
    pub(super) fn ensure(&self, ctx: &Ctx) -> std::io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.fd() {
            return Ok(fd);
        }
        let parent = self.parent.as_ref().expect("only the target has no parent").ensure(ctx)?;
        let node = self.node.as_ref().expect("only the target has no node");
        let fd = Arc::new(meta::make_dir(parent.as_fd(), &node.name)?);
        ctx.dirs.fetch_add(1, Ordering::Relaxed);
        *self.fd.lock().expect("poisoned") = Some(fd.clone());
        Ok(fd)
    }

    pub(super) fn acquire(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops one hold; the last one applies the metadata and releases the parent. A loop,
    /// not recursion, so very deep trees cannot overflow a worker's stack.
    pub(super) fn release(self: &Arc<Self>, ctx: &Ctx) {
        let mut cur = self.clone();
        loop {
            if cur.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            if let (Some(node), Some(fd)) = (&cur.node, cur.fd()) {
                let file = std::fs::File::from(fd.as_fd().try_clone_to_owned().expect("dup"));
                if let Err(e) = meta::apply_fd(&file, node, &ctx.owners) {
                    ctx.error(&cur.path, format!("cannot set directory metadata: {e}"));
                }
            }
            match cur.parent.clone() {
                Some(p) => cur = p,
                None => return,
            }
        }
    }
}
