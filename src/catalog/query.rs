//! Questions the catalog answers: `find`, `versions`, and the snapshot list behind
//! `--as-of` (`diff` is in `diff.rs`).
//!
//! `find` and `versions` work bottom-up: they look up the *names* that match (one table of
//! distinct names, small however many snapshots there are), then the nodes with those names,
//! then climb from each node to the trees that contain it, to the directory nodes that hold
//! those trees, and so on up to the snapshots whose root is reached. The places a tree is
//! found at are remembered per tree, so a tree shared by thirty snapshots is climbed once;
//! places are linked lists of names (a path's bytes are built only for hits), so memory
//! stays proportional to the places, whatever the depth. The work grows with the number of
//! matches, not with the size of the snapshots. `versions` climbs only along the path asked
//! for, so it touches a few rows per snapshot.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use rusqlite::{OptionalExtension, Row};

use super::index::{holds, member_rows};
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

/// The node columns, in the order [`node_row`] reads them (after `nid`).
const NODE_COLS: &str = "m.name, n.kind, n.mode, n.uid, n.gid, n.size, n.mtime_ns, n.content, n.subtree";

/// A [`NodeInfo`] of node `nid` whose [`NODE_COLS`] start at column `at`.
fn node_row(nid: i64, r: &Row, at: usize) -> rusqlite::Result<NodeInfo> {
    let kind: u8 = r.get(at + 1)?;
    Ok(NodeInfo {
        nid,
        name: r.get(at)?,
        kind: NodeKind::from_u8(kind).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(at + 1, kind as i64))?,
        mode: r.get(at + 2)?,
        uid: r.get(at + 3)?,
        gid: r.get(at + 4)?,
        size: r.get::<_, i64>(at + 5)? as u64,
        mtime_ns: r.get(at + 6)?,
        content: r.get(at + 7)?,
        subtree: r.get(at + 8)?,
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

/// Which names `find` looks at.
#[derive(Clone, Copy)]
pub enum NameTest<'a> {
    /// Exactly this name: one index lookup.
    Exact(&'a [u8]),
    /// Names this test accepts: a scan of the table of distinct names.
    Matching(&'a dyn Fn(&[u8]) -> bool),
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
    /// The same as the version before it, back after snapshots that did not have it.
    Reappeared,
}

/// A run of consecutive snapshots (of one host) holding the same node at the path.
#[derive(Clone, Debug)]
pub struct Version {
    pub first: Rc<SnapRow>,
    pub last: Rc<SnapRow>,
    pub snapshots: u64,
    pub node: Rc<NodeInfo>,
    pub change: VersionChange,
    /// Snapshots of this host that covered the path but did not have it came just before.
    pub after_gap: bool,
}

/// Whether snapshot `s` backed up `path` or a directory above it (`/` is in every one).
pub fn covers(s: &Snapshot, path: &[u8]) -> bool {
    path == b"/"
        || s.paths.iter().any(|p| {
            let p = p.strip_suffix(b"/").unwrap_or(p);
            p.is_empty() || path == p || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
        })
}

impl Catalog {
    /// All snapshots the catalog knows, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Rc<SnapRow>>> {
        let mut st = self.conn.prepare_cached("SELECT sid, id, manifest FROM snapshots ORDER BY time_ns, id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?)))?;
        let mut v = Vec::new();
        for row in rows {
            let (sid, id, manifest) = row?;
            let id: [u8; 32] = id
                .try_into()
                .map_err(|_| CatalogError::Unusable { path: "catalog".into(), reason: "a bad snapshot id".into() })?;
            v.push(Rc::new(SnapRow { sid, id: SnapshotId(id), snap: decode_manifest(&manifest)? }));
        }
        Ok(v)
    }

    fn snapshot_map(&self, keep: impl Fn(&Snapshot) -> bool) -> Result<HashMap<i64, Rc<SnapRow>>> {
        Ok(self.snapshots()?.into_iter().filter(|s| keep(&s.snap)).map(|s| (s.sid, s)).collect())
    }

    /// Every path in the chosen snapshots whose name passes `names` and whose full path
    /// passes `path_ok`, newest snapshot first, then by path.
    pub fn find(&self, filter: &FindFilter, names: NameTest, path_ok: &dyn Fn(&[u8]) -> bool) -> Result<Vec<FindHit>> {
        let snaps = self.snapshot_map(|s| filter.matches(s))?;
        let mut climb = Climb { cat: self, snaps: &snaps, memo: HashMap::new() };
        let mut hits = Vec::new();
        let name_ids = match names {
            NameTest::Exact(n) => self.name_id(n)?.into_iter().collect(),
            NameTest::Matching(ok) => self.matching_names(ok)?,
        };
        for name_id in name_ids {
            for node in self.nodes_named(name_id)? {
                let node = Rc::new(node);
                for tid in self.trees_holding(node.nid)? {
                    for (sid, dir) in climb.places(tid)?.iter() {
                        let mut path = materialize(dir);
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
        let sql = format!(
            "SELECT n.nid, {NODE_COLS} FROM nodes n JOIN names m ON m.name_id = n.name_id WHERE n.name_id = ?1"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let v = st.query_map([name_id], |r| node_row(r.get(0)?, r, 1))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The trees that hold node `nid`: those that add it (in full or as a delta), and the
    /// trees built on those (down their delta chains) until one removes it.
    fn trees_holding(&self, nid: i64) -> Result<Vec<i64>> {
        let mut direct = self.conn.prepare_cached("SELECT tid FROM entries WHERE nid = ?1 AND removed = 0")?;
        let mut stack = direct.query_map([nid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
        let mut derived = self.conn.prepare_cached(
            "SELECT t.tid FROM trees t WHERE t.base = ?1 AND t.base IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.tid = t.tid AND e.nid = ?2 AND e.removed = 1)",
        )?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
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
    fn dirs_holding(&self, tid: i64) -> Result<Vec<(i64, Rc<[u8]>)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT n.nid, m.name FROM nodes n JOIN names m ON m.name_id = n.name_id WHERE n.subtree = ?1 AND n.subtree IS NOT NULL",
        )?;
        let v = st
            .query_map([tid], |r| Ok((r.get(0)?, Rc::from(r.get::<_, Vec<u8>>(1)?))))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    fn roots(&self, tid: i64) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached("SELECT sid FROM snapshots WHERE root = ?1")?;
        let v = st.query_map([tid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The node at `path` (absolute, as backed up) through time, for the snapshots of
    /// `hosts` (all when empty): runs of consecutive snapshots of a host holding the same
    /// node, broken where a snapshot that covered the path did not have it. Oldest first.
    pub fn versions(&self, path: &[u8], hosts: &[String]) -> Result<Vec<Version>> {
        let comps: Vec<&[u8]> = path.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
        let Some((last, dirs)) = comps.split_last() else {
            return Err(CatalogError::Invalid("give a path below /".into()));
        };
        let snaps = self.snapshot_map(|s| hosts.is_empty() || hosts.contains(&s.host))?;
        let mut at = PathClimb { cat: self, snaps: &snaps, comps: dirs, memo: HashMap::new() };
        let mut found: HashMap<i64, Rc<NodeInfo>> = HashMap::new();
        if let Some(name_id) = self.name_id(last)? {
            for node in self.nodes_named(name_id)? {
                let node = Rc::new(node);
                for tid in self.trees_holding(node.nid)? {
                    for sid in at.snapshots(tid, dirs.len())?.iter() {
                        found.insert(*sid, node.clone());
                    }
                }
            }
        }
        let mut order: Vec<&Rc<SnapRow>> =
            snaps.values().filter(|s| found.contains_key(&s.sid) || covers(&s.snap, path)).collect();
        order.sort_by(|a, b| (&a.snap.host, a.snap.time_ns, a.id).cmp(&(&b.snap.host, b.snap.time_ns, b.id)));
        Ok(group_versions(&order, &found))
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
        let rows = member_rows(&self.conn, tid, NODE_COLS, |r| node_row(r.get(0)?, r, 2))?;
        let mut v: Vec<NodeInfo> = rows.into_values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// The entry `name` of tree `tid`: the nodes of that name, tested for membership (few
    /// rows even in a huge directory), unless the name is so common that reading the
    /// directory is cheaper.
    fn child(&self, tid: i64, name: &[u8]) -> Result<Option<NodeInfo>> {
        let Some(name_id) = self.name_id(name)? else { return Ok(None) };
        let candidates = self.nodes_named(name_id)?;
        if candidates.len() > 256 {
            return Ok(self.children(tid)?.into_iter().find(|n| n.name == name));
        }
        for n in candidates {
            if holds(&self.conn, tid, n.nid)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
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
            let Some(tid) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else { return Ok(None) };
            match self.child(tid, comp)? {
                Some(n) => node = n,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }
}

/// A directory path as a linked list of names, root first when read back.
#[derive(Debug)]
struct Link {
    up: Option<Rc<Link>>,
    name: Rc<[u8]>,
}

/// The bytes of a path (`/a/b`; empty for the root).
fn materialize(mut at: &Option<Rc<Link>>) -> Vec<u8> {
    let mut names = Vec::new();
    while let Some(l) = at {
        names.push(l.name.clone());
        at = &l.up;
    }
    let mut out = Vec::new();
    for n in names.iter().rev() {
        out.push(b'/');
        out.extend_from_slice(n);
    }
    out
}

/// (snapshot sid, directory path) pairs at which a tree is found.
type Places = Rc<Vec<(i64, Option<Rc<Link>>)>>;
/// The trees holding a tree as a directory, with the directory's name.
type Parents = Vec<(i64, Rc<[u8]>)>;

/// Climbs from a tree to every (snapshot, path) it is found at, remembering each tree's.
struct Climb<'a> {
    cat: &'a Catalog,
    snaps: &'a HashMap<i64, Rc<SnapRow>>,
    memo: HashMap<i64, Places>,
}

impl Climb<'_> {
    /// The places of tree `tid`: where a snapshot's root is it (path empty), and below
    /// each place of each tree holding a directory whose subtree it is. Post-order over
    /// the trees above, with an explicit stack (trees may be thousands of levels deep).
    fn places(&mut self, tid: i64) -> Result<Places> {
        // (tree, its parents as (parent tree, directory name)) once they are known.
        let mut stack: Vec<(i64, Option<Parents>)> = vec![(tid, None)];
        let mut open = HashSet::new();
        while let Some((t, parents)) = stack.pop() {
            if self.memo.contains_key(&t) {
                continue;
            }
            match parents {
                None => {
                    // A tree above itself: only a damaged catalog can say so.
                    if !open.insert(t) {
                        return Err(CatalogError::Unusable {
                            path: "catalog".into(),
                            reason: "a directory inside itself".into(),
                        });
                    }
                    let mut ps = Vec::new();
                    for (nid, name) in self.cat.dirs_holding(t)? {
                        for p in self.cat.trees_holding(nid)? {
                            ps.push((p, name.clone()));
                        }
                    }
                    let todo: Vec<i64> = ps.iter().map(|(p, _)| *p).filter(|p| !self.memo.contains_key(p)).collect();
                    stack.push((t, Some(ps)));
                    stack.extend(todo.into_iter().map(|p| (p, None)));
                }
                Some(ps) => {
                    let mut v: Vec<(i64, Option<Rc<Link>>)> = Vec::new();
                    v.extend(self.cat.roots(t)?.into_iter().filter(|s| self.snaps.contains_key(s)).map(|s| (s, None)));
                    for (p, name) in ps {
                        for (sid, up) in self.memo[&p].iter() {
                            v.push((*sid, Some(Rc::new(Link { up: up.clone(), name: name.clone() }))));
                        }
                    }
                    self.memo.insert(t, Rc::new(v));
                }
            }
        }
        Ok(self.memo[&tid].clone())
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
    /// Recursion is bounded by the number of components of the path the user typed.
    fn snapshots(&mut self, tid: i64, depth: usize) -> Result<Rc<Vec<i64>>> {
        if let Some(p) = self.memo.get(&(tid, depth)) {
            return Ok(p.clone());
        }
        let mut v = Vec::new();
        if depth == 0 {
            v.extend(self.cat.roots(tid)?.into_iter().filter(|s| self.snaps.contains_key(s)));
        } else {
            for (nid, name) in self.cat.dirs_holding(tid)? {
                if *name != *self.comps[depth - 1] {
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

/// Groups the snapshots in `order` (sorted by host, then time) into versions of the node
/// each holds (`found`); ordered by the time of each version's first snapshot.
fn group_versions(order: &[&Rc<SnapRow>], found: &HashMap<i64, Rc<NodeInfo>>) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    let mut prev: Option<(&str, bool)> = None; // (host, whether the last snapshot held it)
    let mut host_start = 0; // index in `out` of this host's first version
    for snap in order {
        let host = snap.snap.host.as_str();
        if prev.is_none_or(|(h, _)| h != host) {
            host_start = out.len();
            prev = Some((host, false));
        }
        let Some(node) = found.get(&snap.sid) else {
            prev = Some((host, false));
            continue;
        };
        let held_before = prev.is_some_and(|(_, held)| held);
        let last = out.get_mut(host_start..).and_then(|v| v.last_mut());
        if let Some(cur) = last.filter(|c| held_before && c.node.nid == node.nid) {
            cur.last = (*snap).clone();
            cur.snapshots += 1;
        } else {
            let previous = out.get(host_start..).and_then(|v| v.last());
            let change = match previous {
                None => VersionChange::First,
                Some(p) if p.node.nid == node.nid => VersionChange::Reappeared,
                Some(p) if p.node.kind != node.kind => VersionChange::Type,
                Some(p)
                    if p.node.content != node.content || p.node.size != node.size || p.node.subtree != node.subtree =>
                {
                    VersionChange::Content
                }
                Some(_) => VersionChange::Metadata,
            };
            let after_gap = previous.is_some() && !held_before;
            out.push(Version {
                first: (*snap).clone(),
                last: (*snap).clone(),
                snapshots: 1,
                node: node.clone(),
                change,
                after_gap,
            });
        }
        prev = Some((host, true));
    }
    out.sort_by_key(|v| (v.first.snap.time_ns, v.first.id));
    out
}
