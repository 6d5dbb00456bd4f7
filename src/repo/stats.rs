//! Sizes and ratios for `coffer stats`.
//!
//! For a snapshot: its *logical* size (every file's size, counted as often as the file
//! appears), and the blobs it references, each counted once, data (file contents) and
//! trees (directory listings) apart: their plaintext size (*raw*) and their size in the
//! repository (*stored*). Deduplication ratio = logical / raw data; compression ratio =
//! raw data / stored data. For the repository: the logical sizes of all snapshots added
//! up, against every blob the index holds and the packs' total size.
//!
//! Each snapshot's trees are walked once (a tree that appears at several places is read
//! once; its counts are multiplied), so the work is one read of each distinct tree.

use std::collections::{HashMap, HashSet};

use super::index::MasterIndex;
use super::{Repository, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::format::BlobType;
use crate::id::BlobId;

/// Counts over a set of files, with multiplicity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub logical_bytes: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.other += o.other;
        self.logical_bytes += o.logical_bytes;
    }
}

/// Distinct blobs and their sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlobTotals {
    pub blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

impl BlobTotals {
    fn add(&mut self, raw: u64, stored: u64) {
        self.blobs += 1;
        self.raw_bytes += raw;
        self.stored_bytes += stored;
    }
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SnapshotStats {
    #[serde(flatten)]
    pub counts: Counts,
    /// Distinct file-content blobs.
    pub data: BlobTotals,
    /// Distinct tree blobs (directory listings).
    pub trees: BlobTotals,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Sum of all snapshots' logical sizes and counts.
    #[serde(flatten)]
    pub counts: Counts,
    pub data: BlobTotals,
    pub trees: BlobTotals,
    pub packs: u64,
    pub pack_bytes: u64,
}

/// Ratio a / b, 0 when b is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One tree's own entries: counts of its non-directory entries, its subtrees, and the data
/// blobs its files reference.
struct TreeInfo {
    own: Counts,
    subtrees: Vec<[u8; 32]>,
    blobs: Vec<[u8; 32]>,
}

/// Walks snapshots, remembering each tree's [`TreeInfo`] across them.
#[derive(Default)]
pub struct Walker {
    trees: HashMap<[u8; 32], TreeInfo>,
    totals: HashMap<[u8; 32], Counts>,
}

impl Walker {
    /// The stats of one snapshot.
    pub fn snapshot(&mut self, repo: &Repository, index: &MasterIndex, snap: &Snapshot) -> Result<SnapshotStats> {
        let mut seen_blobs: HashSet<BlobId> = HashSet::new();
        let mut seen_trees: HashSet<[u8; 32]> = HashSet::new();
        let mut st = SnapshotStats::default();
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            add_blob(index, &mut seen_blobs, &mut st.trees, BlobId(t));
            if !self.trees.contains_key(&t) {
                let info = self.read_tree(repo, index, &t)?;
                self.trees.insert(t, info);
            }
            let info = &self.trees[&t];
            stack.extend(info.subtrees.iter().copied());
            for c in &info.blobs {
                add_blob(index, &mut seen_blobs, &mut st.data, BlobId(*c));
            }
        }
        st.counts = self.total(&snap.tree);
        Ok(st)
    }

    fn read_tree(&self, repo: &Repository, index: &MasterIndex, t: &[u8; 32]) -> Result<TreeInfo> {
        let mut info = TreeInfo { own: Counts::default(), subtrees: Vec::new(), blobs: Vec::new() };
        for n in repo.load_tree(index, &BlobId(*t))? {
            match n.kind {
                NodeKind::File => {
                    info.own.files += 1;
                    info.own.logical_bytes += n.size;
                    info.blobs.extend(n.content);
                }
                NodeKind::Dir => {
                    info.own.dirs += 1;
                    info.subtrees.extend(n.subtree);
                }
                _ => info.own.other += 1,
            }
        }
        Ok(info)
    }

    /// A tree's counts including everything below it (memoized; iterative, since trees
    /// may be thousands of levels deep).
    fn total(&mut self, root: &[u8; 32]) -> Counts {
        let mut stack = vec![(*root, false)];
        while let Some((t, children_done)) = stack.pop() {
            if self.totals.contains_key(&t) {
                continue;
            }
            let Some(info) = self.trees.get(&t) else { continue };
            if children_done {
                let mut c = info.own;
                for s in &info.subtrees {
                    c += self.totals.get(s).copied().unwrap_or_default();
                }
                self.totals.insert(t, c);
            } else {
                stack.push((t, true));
                stack.extend(info.subtrees.iter().map(|s| (*s, false)));
            }
        }
        self.totals.get(root).copied().unwrap_or_default()
    }
}

fn add_blob(index: &MasterIndex, seen: &mut HashSet<BlobId>, tot: &mut BlobTotals, id: BlobId) {
    if seen.insert(id) {
        if let Some(loc) = index.get(&id) {
            tot.add(loc.raw_len as u64, loc.stored_len as u64);
        }
    }
}

/// The repository's totals; `logical` is the sum of its snapshots' counts.
pub fn repo_stats(index: &MasterIndex, snapshots: u64, logical: Counts) -> RepoStats {
    let mut r = RepoStats { snapshots, counts: logical, ..Default::default() };
    for (_, loc) in index.iter() {
        match loc.blob_type {
            BlobType::Data => r.data.add(loc.raw_len as u64, loc.stored_len as u64),
            BlobType::Tree => r.trees.add(loc.raw_len as u64, loc.stored_len as u64),
        }
    }
    r.packs = index.packs().len() as u64;
    r.pack_bytes = index.packs().iter().map(|p| p.size).sum();
    r
}
