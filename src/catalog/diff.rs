//! `diff`: what changed between two snapshots below a path.
//!
//! Top-down from the two nodes at the path: two directories' members are merged by name;
//! a member with the same node id on both sides is identical, subtree included, and is
//! skipped without reading further. A worklist instead of recursion keeps any depth safe.
//! The result is sorted by path components, so a directory's entries follow it.

use super::query::NodeInfo;
use super::{Catalog, Result};
use crate::format::tree::NodeKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    Added,
    Removed,
    Modified,
    Metadata,
    Type,
}

impl DiffKind {
    /// restic's one-letter marks.
    pub fn mark(&self) -> char {
        match self {
            DiffKind::Added => '+',
            DiffKind::Removed => '-',
            DiffKind::Modified => 'M',
            DiffKind::Metadata => 'U',
            DiffKind::Type => 'T',
        }
    }
}

#[derive(Clone, Debug)]
pub struct DiffEntry {
    pub kind: DiffKind,
    pub path: Vec<u8>,
    pub before: Option<NodeInfo>,
    pub after: Option<NodeInfo>,
}

/// Two directories' trees still to compare, at a path.
struct Pending {
    path: Vec<u8>,
    a: Option<i64>,
    b: Option<i64>,
}

impl Catalog {
    /// What changed from `a` to `b` at and below `path` (both nodes found with
    /// [`Catalog::node_at`]). When both are directories, the path itself is not reported.
    pub fn diff(&self, path: &[u8], a: Option<&NodeInfo>, b: Option<&NodeInfo>) -> Result<Vec<DiffEntry>> {
        let mut out = Vec::new();
        let mut work = Vec::new();
        let base = if path == b"/" { Vec::new() } else { path.to_vec() };
        match (a, b) {
            (Some(a), Some(b)) if a.kind == NodeKind::Dir && b.kind == NodeKind::Dir => {
                if a.subtree != b.subtree {
                    work.push(Pending { path: base, a: a.subtree, b: b.subtree });
                }
            }
            _ => compare(&base, a, b, &mut out, &mut work),
        }
        let mut seen = std::collections::HashSet::new();
        while let Some(p) = work.pop() {
            // Trees cannot hold themselves; a catalog that says one does is damaged.
            if !seen.insert((p.a, p.b)) {
                continue;
            }
            let left = p.a.map(|t| self.children(t)).transpose()?.unwrap_or_default();
            let right = p.b.map(|t| self.children(t)).transpose()?.unwrap_or_default();
            let (mut i, mut j) = (0, 0);
            while i < left.len() || j < right.len() {
                let (l, r) = (left.get(i), right.get(j));
                let (l, r) = match (l, r) {
                    (Some(l), Some(r)) if l.name == r.name => (Some(l), Some(r)),
                    (Some(l), r) if r.is_none_or(|r| l.name < r.name) => (Some(l), None),
                    (_, r) => (None, r),
                };
                i += l.is_some() as usize;
                j += r.is_some() as usize;
                let name = &l.or(r).expect("one side is there").name;
                let child = [p.path.as_slice(), b"/", name].concat();
                compare(&child, l, r, &mut out, &mut work);
            }
        }
        // By components, so a directory's entries follow it directly (`/a/b` before `/a.c`).
        out.sort_by(|x, y| x.path.split(|b| *b == b'/').cmp(y.path.split(|b| *b == b'/')));
        Ok(out)
    }
}

/// Compares one path's nodes, reports a difference, and queues their subtrees.
fn compare(path: &[u8], a: Option<&NodeInfo>, b: Option<&NodeInfo>, out: &mut Vec<DiffEntry>, work: &mut Vec<Pending>) {
    if a.zip(b).is_some_and(|(a, b)| a.nid == b.nid) {
        return;
    }
    let kind = match (a, b) {
        (None, None) => return,
        (None, Some(_)) => Some(DiffKind::Added),
        (Some(_), None) => Some(DiffKind::Removed),
        (Some(a), Some(b)) if a.kind != b.kind => Some(DiffKind::Type),
        (Some(a), Some(b)) if a.kind == NodeKind::Dir => {
            // The node ids differ: its own metadata changed (mode, owner, mtime, xattrs,
            // names of owners), or only what is below it did.
            let own = (a.mode, a.uid, a.gid, a.mtime_ns) != (b.mode, b.uid, b.gid, b.mtime_ns);
            (own || a.subtree == b.subtree).then_some(DiffKind::Metadata)
        }
        (Some(a), Some(b)) if a.content != b.content || a.size != b.size => Some(DiffKind::Modified),
        _ => Some(DiffKind::Metadata),
    };
    if let Some(kind) = kind {
        out.push(DiffEntry { kind, path: path.to_vec(), before: a.cloned(), after: b.cloned() });
    }
    let sub = |n: Option<&NodeInfo>| n.filter(|n| n.kind == NodeKind::Dir).and_then(|n| n.subtree);
    let (sa, sb) = (sub(a), sub(b));
    if sa != sb {
        work.push(Pending { path: path.to_vec(), a: sa, b: sb });
    }
}
