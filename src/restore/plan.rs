//! `restore --dry-run`: what a restore would write, replace, keep and delete, found by
//! walking the snapshot's trees beside the target, which is only read (directories are
//! opened with `O_NOFOLLOW`, files read to compare content as `--overwrite if-changed`
//! does). Nothing is created, fetched or changed.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use super::existing::{self, Decision};
use super::{join, RestoreError, RestoreOptions, RestoreSummary};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::progress::{FileStatus, Progress};
use crate::repo::{MasterIndex, Repository};

struct Planner<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    opts: &'a RestoreOptions,
    progress: &'a dyn Progress,
    sum: RestoreSummary,
    /// Hard-linked files seen: a restore writes the first and links the others.
    links: HashSet<(u64, u64)>,
}

/// Plans restoring `start` (at snapshot path `start_path`) into the target.
pub fn plan(
    repo: &Repository,
    index: &MasterIndex,
    start: &Node,
    start_path: &[u8],
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary, RestoreError> {
    let target = match crate::source::open_dir_path(opts.target.as_os_str().as_encoded_bytes()) {
        Ok(fd) => Some(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(RestoreError::Target { path: opts.target.display().to_string(), source: e }),
    };
    let mut p = Planner { repo, index, opts, progress, sum: RestoreSummary::default(), links: HashSet::new() };
    if start.kind == NodeKind::Dir {
        p.dir_entries(target.as_ref(), start, start_path, false)?;
    } else {
        p.entry(target.as_ref(), start.clone(), &super::parent_of(start_path), false)?;
    }
    Ok(p.sum)
}

impl Planner<'_> {
    fn dir_entries(
        &mut self,
        dir: Option<&OwnedFd>,
        node: &Node,
        path: &[u8],
        included: bool,
    ) -> Result<(), RestoreError> {
        let Some(t) = node.subtree else { return Ok(()) };
        let tree = self.repo.load_tree(self.index, &BlobId(t))?;
        let names: HashSet<Vec<u8>> = tree.iter().map(|n| n.name.clone()).collect();
        for child in tree {
            self.entry(dir, child, path, included)?;
        }
        if self.opts.delete && (included || self.opts.include.is_empty()) {
            if let Some(d) = dir {
                for n in existing::names(d.as_fd()).map_err(|e| self.target_err(path, e))? {
                    let p = join(path, &n);
                    if !names.contains(&n) && super::deletable(self.opts, &p, &n) {
                        self.sum.deleted += 1;
                        self.progress.file(&p, FileStatus::Deleted);
                    }
                }
            }
        }
        Ok(())
    }

    fn target_err(&self, path: &[u8], e: std::io::Error) -> RestoreError {
        RestoreError::Target { path: String::from_utf8_lossy(path).into_owned(), source: e }
    }

    fn entry(&mut self, dir: Option<&OwnedFd>, node: Node, parent: &[u8], included: bool) -> Result<(), RestoreError> {
        let path = join(parent, &node.name);
        let opts = self.opts;
        if opts.exclude.matches(&path, &node.name) {
            return Ok(());
        }
        let included = included || opts.include.is_empty() || opts.include.matches(&path, &node.name);
        let name = CString::new(node.name.clone()).map_err(|e| RestoreError::Invalid(e.to_string()))?;
        if node.kind == NodeKind::Dir {
            let sub = match dir {
                Some(d) => open_dir(d, &name),
                None => None,
            };
            if included && sub.is_none() {
                self.sum.dirs_restored += 1;
            }
            return self.dir_entries(sub.as_ref(), &node, &path, included);
        }
        if !included || node.kind == NodeKind::Socket {
            return Ok(());
        }
        let decision = match dir {
            None => Decision::New,
            Some(d) => existing::decide(self.repo, self.index, d.as_fd(), &name, &node, opts.overwrite)
                .map_err(|e| self.target_err(&path, e))?,
        };
        let status = match decision {
            Decision::New => FileStatus::New,
            Decision::Replace => FileStatus::Modified,
            Decision::Keep { .. } => FileStatus::Unchanged,
        };
        self.progress.file(&path, status);
        let later_link = node.kind == NodeKind::File && node.nlink > 1 && !self.links.insert((node.dev, node.inode));
        match (decision, node.kind) {
            (Decision::Keep { .. }, _) => self.sum.files_unchanged += 1,
            (_, NodeKind::File) if later_link => self.sum.other_restored += 1,
            (_, NodeKind::File) => {
                self.sum.files_restored += 1;
                self.sum.bytes_restored += node.size;
            }
            _ => self.sum.other_restored += 1,
        }
        Ok(())
    }
}

/// An existing directory `name` in `dir`, never through a symlink.
fn open_dir(dir: &OwnedFd, name: &CString) -> Option<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}
