//! Questions the catalog answers: `find`, `versions`, `diff`, and the snapshot list behind
//! `--as-of`.
//!
//! `find` and `versions` work bottom-up: they look up the *names* that match (one table of
//! distinct names, small however many snapshots there are), then the nodes with those names,
//! then climb from each node to the trees that contain it, to the directory nodes that hold
//! those trees, and so on up to the snapshots whose root is reached. The paths a tree is
//! found at are remembered per tree, so a tree shared by thirty snapshots is climbed once.
//! The work grows with the number of matches, not with the size of the snapshots.
//! `versions` climbs only along the path asked for, so it touches a few rows per snapshot.
//!
//! `diff` works top-down from the two snapshots' roots, skipping every subtree the two have
//! in common (the same tree id), so it reads only what changed.

use std::collections::HashMap;
use std::rc::Rc;

use rusqlite::{OptionalExtension, Row};

use super::sync::decode_manifest;
use super::{Catalog, CatalogError, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::id::SnapshotId;

/// A node as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub nid: i64,
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    /// Hash of a file's content ids, a symlink's target or a device number.
    pub content: Option<Vec<u8>>,
    /// A directory's tree (catalog tid).
    pub subtree: Option<i64>,
}

const NODE_COLS: &str = "n.nid, m.name, n.kind, n.mode, n.uid, n.gid, n.size, n.mtime_ns, n.content, n.subtree";

fn node_row(r: &Row) -> rusqlite::Result<NodeInfo> {
    let kind: u8 = r.get(2)?;
    Ok(NodeInfo {
        nid: r.get(0)?,
        name: r.get(1)?,
        kind: NodeKind::from_u8(kind).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(2, kind as i64))?,
        mode: r.get(3)?,
        uid: r.get(4)?,
        gid: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        mtime_ns: r.get(7)?,
        content: r.get(8)?,
        subtree: r.get(9)?,
    })
}

/// A snapshot as the catalog knows it.
#[derive(Clone, Debug)]
pub struct SnapRow {
    pub sid: i64,
    pub id: SnapshotId,
    pub snap: Snapshot,
}

/// Which snapshots `find` searches.
#[derive(Clone, Debug, Default)]
pub struct FindFilter {
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub hosts: Vec<String>,
    /// All of these tags.
    pub tags: Vec<String>,
}

impl FindFilter {
    fn matches(&self, s: &Snapshot) -> bool {
        self.since_ns.is_none_or(|t| s.time_ns >= t)
            && self.until_ns.is_none_or(|t| s.time_ns <= t)
            && (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}

/// One path in one snapshot.
#[derive(Clone, Debug)]
pub struct FindHit {
    pub snapshot: Rc<SnapRow>,
    pub path: Vec<u8>,
    pub node: Rc<NodeInfo>,
}

/// How a version differs from the one before it (of the same host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionChange {
    /// The first version seen.
    First,
    /// The content changed (a file's bytes, a symlink's target, a directory's entries).
    Content,
    /// Only metadata changed (mode, owner, mtime, xattrs).
    Metadata,
    /// It became another kind of thing (a file replaced by a directory, ...).
    Type,
}

/// A run of consecutive snapshots (of one host) holding the same node at the path.
#[derive(Clone, Debug)]
pub struct Version {
    pub first: Rc<SnapRow>,
    pub last: Rc<SnapRow>,
    pub snapshots: u64,
    pub node: Rc<NodeInfo>,
    pub change: VersionChange,
}

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

impl Catalog {
    /// All snapshots the catalog knows, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Rc<SnapRow>>> {
        let mut st = self.conn.prepare_cached("SELECT sid, id, manifest FROM snapshots ORDER BY time_ns, id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?)))?;
        let mut v = Vec::new();
        for row in rows {
            let (sid, id, manifest) = row?;
            let id: [u8; 32] = id.try_into().map_err(|_| CatalogError::Invalid("bad snapshot id in catalog".into()))?;
            v.push(Rc::new(SnapRow { sid, id: SnapshotId(id), snap: decode_manifest(&manifest)? }));
        }
        Ok(v)
    }

    fn snapshot_map(&self, keep: impl Fn(&Snapshot) -> bool) -> Result<HashMap<i64, Rc<SnapRow>>> {
        Ok(self.snapshots()?.into_iter().filter(|s| keep(&s.snap)).map(|s| (s.sid, s)).collect())
    }

    /// Every path in the chosen snapshots whose name matches `name_ok` and whose full path
    /// matches `path_ok`, newest snapshot first, then by path.
    pub fn find(
        &self,
        filter: &FindFilter,
        name_ok: &dyn Fn(&[u8]) -> bool,
        path_ok: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<FindHit>> {
        let snaps = self.snapshot_map(|s| filter.matches(s))?;
        let mut climb = Climb { cat: self, snaps: &snaps, memo: HashMap::new() };
        let mut hits = Vec::new();
        for name_id in self.matching_names(name_ok)? {
            for node in self.nodes_named(name_id)? {
                let node = Rc::new(node);
                for tid in self.trees_holding(node.nid)? {
                    for (sid, dir) in climb.paths(tid)?.iter() {
                        let mut path = dir.clone();
                        path.push(b'/');
                        path.extend_from_slice(&node.name);
                        if path_ok(&path) {
                            hits.push(FindHit { snapshot: snaps[sid].clone(), path, node: node.clone() });
                        }
                    }
                }
            }
        }
        hits.sort_by(|a, b| {
            (b.snapshot.snap.time_ns, b.snapshot.id)
                .cmp(&(a.snapshot.snap.time_ns, a.snapshot.id))
                .then_with(|| a.path.cmp(&b.path))
        });
        Ok(hits)
    }

    fn matching_names(&self, ok: &dyn Fn(&[u8]) -> bool) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached("SELECT name_id, name FROM names")?;
        let mut rows = st.query([])?;
        let mut v = Vec::new();
        while let Some(r) = rows.next()? {
            if ok(r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?) {
                v.push(r.get(0)?);
            }
        }
        Ok(v)
    }

    fn nodes_named(&self, name_id: i64) -> Result<Vec<NodeInfo>> {
        let sql = format!("SELECT {NODE_COLS} FROM nodes n JOIN names m ON m.name_id = n.name_id WHERE n.name_id = ?1");
        let mut st = self.conn.prepare_cached(&sql)?;
        let v = st.query_map([name_id], node_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The trees that hold node `nid`: those that add it (in full or as a delta), and the
    /// trees built on those (down their delta chains) until one removes it.
    fn trees_holding(&self, nid: i64) -> Result<Vec<i64>> {
        let mut direct = self.conn.prepare_cached("SELECT tid FROM entries WHERE nid = ?1 AND removed = 0")?;
        let mut stack = direct.query_map([nid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
        let mut derived = self.conn.prepare_cached(
            "SELECT t.tid FROM trees t WHERE t.base = ?1
             AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.tid = t.tid AND e.nid = ?2 AND e.removed = 1)",
        )?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            out.push(t);
            stack.extend(derived.query_map([t, nid], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
        }
        Ok(out)
    }

    /// Directory nodes whose subtree is `tid`, with their names.
    fn dirs_holding(&self, tid: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT n.nid, m.name FROM nodes n JOIN names m ON m.name_id = n.name_id WHERE n.subtree = ?1",
        )?;
        let v = st.query_map([tid], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    fn roots(&self, tid: i64) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached("SELECT sid FROM snapshots WHERE root = ?1")?;
        let v = st.query_map([tid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The node at `path` (absolute, as backed up) in each snapshot of `hosts` (all when
    /// empty) that has one, grouped into versions: runs of consecutive snapshots of a host
    /// holding the same node. Oldest first.
    pub fn versions(&self, path: &[u8], hosts: &[String]) -> Result<Vec<Version>> {
        let comps: Vec<&[u8]> = path.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
        let Some((last, dirs)) = comps.split_last() else {
            return Err(CatalogError::Invalid("give a path below /".into()));
        };
        let snaps = self.snapshot_map(|s| hosts.is_empty() || hosts.contains(&s.host))?;
        let mut at = PathClimb { cat: self, snaps: &snaps, comps: dirs, memo: HashMap::new() };
        let mut found: Vec<(Rc<SnapRow>, Rc<NodeInfo>)> = Vec::new();
        let Some(name_id) = self.name_id(last)? else { return Ok(Vec::new()) };
        for node in self.nodes_named(name_id)? {
            let node = Rc::new(node);
            for tid in self.trees_holding(node.nid)? {
                for sid in at.snapshots(tid, dirs.len())?.iter() {
                    found.push((snaps[sid].clone(), node.clone()));
                }
            }
        }
        Ok(group_versions(found))
    }

    fn name_id(&self, name: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT name_id FROM names WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    /// The entries of tree `tid`, sorted by name.
    pub fn children(&self, tid: i64) -> Result<Vec<NodeInfo>> {
        let sql = format!("SELECT {NODE_COLS} FROM nodes n JOIN names m ON m.name_id = n.name_id WHERE n.nid = ?1");
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut v = Vec::new();
        for nid in super::sync::members(&self.conn, tid)? {
            v.push(st.query_row([nid], node_row)?);
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    fn child(&self, tid: i64, name: &[u8]) -> Result<Option<NodeInfo>> {
        Ok(self.children(tid)?.into_iter().find(|n| n.name == name))
    }

    /// The node at `path` in snapshot `s` (the root directory for `/`).
    pub fn node_at(&self, s: &SnapRow, path: &[u8]) -> Result<Option<NodeInfo>> {
        let root: Option<i64> =
            self.conn.query_row("SELECT root FROM snapshots WHERE sid = ?1", [s.sid], |r| r.get(0))?;
        let root =
            root.ok_or_else(|| CatalogError::Invalid(format!("snapshot {} is not indexed yet", s.id.short())))?;
        let mut node = NodeInfo {
            nid: 0,
            name: Vec::new(),
            kind: NodeKind::Dir,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            content: None,
            subtree: Some(root),
        };
        for comp in path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".") {
            let Some(tid) = node.subtree else { return Ok(None) };
            match self.child(tid, comp)? {
                Some(n) => node = n,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// What changed from `a` to `b` below `path` (both nodes found with [`Catalog::node_at`]).
    pub fn diff(&self, path: &[u8], a: Option<&NodeInfo>, b: Option<&NodeInfo>) -> Result<Vec<DiffEntry>> {
        let mut out = Vec::new();
        let base = if path == b"/" { Vec::new() } else { path.to_vec() };
        match (a, b) {
            (Some(a), Some(b)) if a.kind == NodeKind::Dir && b.kind == NodeKind::Dir => {
                if path != b"/" {
                    self.diff_pair(&base, Some(a), Some(b), &mut out, false)?;
                } else {
                    self.diff_trees(&base, a.subtree, b.subtree, &mut out)?;
                }
            }
            _ => self.diff_pair(&base, a, b, &mut out, true)?,
        }
        Ok(out)
    }

    fn diff_trees(&self, path: &[u8], a: Option<i64>, b: Option<i64>, out: &mut Vec<DiffEntry>) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let left = a.map(|t| self.children(t)).transpose()?.unwrap_or_default();
        let right = b.map(|t| self.children(t)).transpose()?.unwrap_or_default();
        let (mut i, mut j) = (0, 0);
        while i < left.len() || j < right.len() {
            let child = |n: &NodeInfo| [path, b"/", &n.name].concat();
            match (left.get(i), right.get(j)) {
                (Some(l), Some(r)) if l.name == r.name => {
                    self.diff_pair(&child(l), Some(l), Some(r), out, true)?;
                    i += 1;
                    j += 1;
                }
                (Some(l), r) if r.is_none_or(|r| l.name < r.name) => {
                    self.diff_pair(&child(l), Some(l), None, out, true)?;
                    i += 1;
                }
                (_, Some(r)) => {
                    self.diff_pair(&child(r), None, Some(r), out, true)?;
                    j += 1;
                }
                (_, None) => unreachable!("the loop condition and the arms above cover this"),
            }
        }
        Ok(())
    }

    /// Compares one path's nodes, then (for directories) what is below.
    fn diff_pair(
        &self,
        path: &[u8],
        a: Option<&NodeInfo>,
        b: Option<&NodeInfo>,
        out: &mut Vec<DiffEntry>,
        report_self: bool,
    ) -> Result<()> {
        if let (Some(a), Some(b)) = (a, b) {
            if a.nid == b.nid {
                return Ok(());
            }
        }
        let kind = match (a, b) {
            (None, None) => return Ok(()),
            (None, Some(_)) => DiffKind::Added,
            (Some(_), None) => DiffKind::Removed,
            (Some(a), Some(b)) if a.kind != b.kind => DiffKind::Type,
            (Some(a), Some(b)) if a.kind == NodeKind::Dir => {
                if (a.mode, a.uid, a.gid, a.mtime_ns) != (b.mode, b.uid, b.gid, b.mtime_ns) {
                    DiffKind::Metadata
                } else {
                    return self.diff_trees(path, a.subtree, b.subtree, out);
                }
            }
            (Some(a), Some(b)) if a.content != b.content || a.size != b.size => DiffKind::Modified,
            _ => DiffKind::Metadata,
        };
        if report_self {
            out.push(DiffEntry { kind, path: path.to_vec(), before: a.cloned(), after: b.cloned() });
        }
        let sub = |n: Option<&NodeInfo>| n.filter(|n| n.kind == NodeKind::Dir).and_then(|n| n.subtree);
        self.diff_trees(path, sub(a), sub(b), out)
    }
}

/// (snapshot sid, directory path) pairs at which a tree is found.
type Places = Rc<Vec<(i64, Vec<u8>)>>;

/// Climbs from a tree to every (snapshot, path) it is found at, remembering each tree's.
struct Climb<'a> {
    cat: &'a Catalog,
    snaps: &'a HashMap<i64, Rc<SnapRow>>,
    memo: HashMap<i64, Places>,
}

impl Climb<'_> {
    /// The (snapshot, path) pairs at which tree `tid` is a directory's content; the root's
    /// path is empty, so a child's path is always `dir + "/" + name`.
    fn paths(&mut self, tid: i64) -> Result<Places> {
        if let Some(p) = self.memo.get(&tid) {
            return Ok(p.clone());
        }
        let mut v: Vec<(i64, Vec<u8>)> =
            self.cat.roots(tid)?.into_iter().filter(|s| self.snaps.contains_key(s)).map(|s| (s, Vec::new())).collect();
        for (nid, name) in self.cat.dirs_holding(tid)? {
            for parent in self.cat.trees_holding(nid)? {
                for (sid, dir) in self.paths(parent)?.iter() {
                    v.push((*sid, [dir.as_slice(), b"/", &name].concat()));
                }
            }
        }
        let v = Rc::new(v);
        self.memo.insert(tid, v.clone());
        Ok(v)
    }
}

/// Climbs from a tree along one fixed path only.
struct PathClimb<'a> {
    cat: &'a Catalog,
    snaps: &'a HashMap<i64, Rc<SnapRow>>,
    comps: &'a [&'a [u8]],
    memo: HashMap<(i64, usize), Rc<Vec<i64>>>,
}

impl PathClimb<'_> {
    /// The snapshots in which tree `tid` is the content of the directory `comps[..depth]`.
    fn snapshots(&mut self, tid: i64, depth: usize) -> Result<Rc<Vec<i64>>> {
        if let Some(p) = self.memo.get(&(tid, depth)) {
            return Ok(p.clone());
        }
        let mut v = Vec::new();
        if depth == 0 {
            v.extend(self.cat.roots(tid)?.into_iter().filter(|s| self.snaps.contains_key(s)));
        } else {
            for (nid, name) in self.cat.dirs_holding(tid)? {
                if name != self.comps[depth - 1] {
                    continue;
                }
                for parent in self.cat.trees_holding(nid)? {
                    v.extend(self.snapshots(parent, depth - 1)?.iter());
                }
            }
        }
        let v = Rc::new(v);
        self.memo.insert((tid, depth), v.clone());
        Ok(v)
    }
}

/// Groups (snapshot, node) pairs into per-host runs of the same node, ordered by the time
/// of each run's first snapshot.
fn group_versions(mut found: Vec<(Rc<SnapRow>, Rc<NodeInfo>)>) -> Vec<Version> {
    found.sort_by(|a, b| (&a.0.snap.host, a.0.snap.time_ns, a.0.id).cmp(&(&b.0.snap.host, b.0.snap.time_ns, b.0.id)));
    let mut out: Vec<Version> = Vec::new();
    let mut prev_host: Option<String> = None;
    for (snap, node) in found {
        let same_host = prev_host.as_deref() == Some(snap.snap.host.as_str());
        if same_host {
            let cur = out.last_mut().expect("a version of this host exists");
            if cur.node.nid == node.nid {
                cur.last = snap;
                cur.snapshots += 1;
                continue;
            }
        }
        let change = match out.last().filter(|_| same_host) {
            None => VersionChange::First,
            Some(p) if p.node.kind != node.kind => VersionChange::Type,
            Some(p) if p.node.content != node.content || p.node.size != node.size || p.node.subtree != node.subtree => {
                VersionChange::Content
            }
            Some(_) => VersionChange::Metadata,
        };
        prev_host = Some(snap.snap.host.clone());
        out.push(Version { first: snap.clone(), last: snap, snapshots: 1, node, change });
    }
    out.sort_by_key(|v| (v.first.snap.time_ns, v.first.id));
    out
}
