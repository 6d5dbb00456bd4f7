//! Bringing the catalog up to date with the repository.
//!
//! 1. List the repository's snapshots. Rows of snapshots no longer there are deleted, then
//!    trees, nodes and names nothing reaches any more (a mark from the remaining roots).
//! 2. Each new snapshot's manifest is read (authenticated, like every repository read) and
//!    stored as a row whose `root` is still empty: enough for `snapshots` and `--as-of`.
//! 3. With `trees`, each snapshot without a root gets its trees indexed: a depth-first walk
//!    from the root tree that stops at every tree the catalog already holds, so only the
//!    directories that changed since an indexed snapshot are read. Children are indexed
//!    before their parent (post-order, with an explicit stack: trees may be thousands of
//!    levels deep), and each snapshot is one transaction, so a killed sync leaves nothing
//!    half-done and another process sees the snapshot either fully indexed or not at all.
//!
//! Deltas: alongside the walk of the new snapshot goes a walk of its *reference* (its
//! parent snapshot, else the newest indexed one of the same host before it): each new tree
//! gets as its base the tree at the same path in the reference, and is stored as the rows
//! it adds to and removes from the base's members, unless the chain of deltas would grow
//! past [`MAX_DEPTH`] or its rows past half the tree's size (plus [`SLACK_ROWS`]), in which
//! case the tree is stored in full. Reading a tree's members costs at most one query per
//! link of its chain and about 1.5 times its size in rows.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{Catalog, CatalogError, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::SnapshotId;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest chain of deltas before a tree is stored in full.
pub const MAX_DEPTH: i64 = 64;
/// Delta rows a chain may hold beyond half its tree's size (so small directories that
/// change often do not get stored in full every few days).
pub const SLACK_ROWS: i64 = 16;

/// Where the catalog's facts come from: the repository (implemented above this layer).
pub trait Source {
    fn snapshot_ids(&self) -> std::result::Result<Vec<SnapshotId>, BoxError>;
    fn snapshot(&self, id: &SnapshotId) -> std::result::Result<Snapshot, BoxError>;
    fn tree(&self, id: &[u8; 32]) -> std::result::Result<Vec<Node>, BoxError>;
}

/// What a sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncStats {
    pub snapshots_added: u64,
    pub snapshots_removed: u64,
    pub snapshots_indexed: u64,
    pub trees_indexed: u64,
    pub nodes_added: u64,
}

impl Catalog {
    /// Syncs with `src`; with `trees`, also indexes every snapshot's trees (needed by
    /// `find`, `versions` and `diff`; `snapshots` and `--as-of` need only the manifests).
    pub fn sync(&mut self, src: &dyn Source, trees: bool) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let ids: HashSet<SnapshotId> = src.snapshot_ids().map_err(CatalogError::Source)?.into_iter().collect();
        self.drop_missing(&ids, &mut stats)?;
        self.add_new(src, &ids, &mut stats)?;
        if trees {
            self.index_pending(src, &mut stats)?;
        }
        Ok(stats)
    }

    fn known_ids(&self) -> Result<Vec<(i64, SnapshotId)>> {
        let mut st = self.conn.prepare("SELECT sid, id FROM snapshots")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut v = Vec::new();
        for row in rows {
            let (sid, id) = row?;
            let id: [u8; 32] = id.try_into().map_err(|_| CatalogError::Invalid("bad snapshot id in catalog".into()))?;
            v.push((sid, SnapshotId(id)));
        }
        Ok(v)
    }

    fn drop_missing(&mut self, ids: &HashSet<SnapshotId>, stats: &mut SyncStats) -> Result<()> {
        let gone: Vec<i64> =
            self.known_ids()?.into_iter().filter(|(_, id)| !ids.contains(id)).map(|(s, _)| s).collect();
        if gone.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for sid in &gone {
            stats.snapshots_removed += tx.execute("DELETE FROM snapshots WHERE sid = ?1", [sid])? as u64;
        }
        collect_garbage(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn add_new(&mut self, src: &dyn Source, ids: &HashSet<SnapshotId>, stats: &mut SyncStats) -> Result<()> {
        let known: HashSet<SnapshotId> = self.known_ids()?.into_iter().map(|(_, id)| id).collect();
        let mut new: Vec<(SnapshotId, Snapshot)> = Vec::new();
        for id in ids.iter().filter(|id| !known.contains(id)) {
            new.push((*id, src.snapshot(id).map_err(CatalogError::Source)?));
        }
        if new.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (id, s) in &new {
            stats.snapshots_added += tx.execute(
                "INSERT OR IGNORE INTO snapshots(id, time_ns, host, manifest) VALUES (?1, ?2, ?3, ?4)",
                params![&id.0[..], s.time_ns, s.host, s.encode()],
            )? as u64;
        }
        tx.commit()?;
        Ok(())
    }

    fn index_pending(&mut self, src: &dyn Source, stats: &mut SyncStats) -> Result<()> {
        let pending: Vec<(i64, Vec<u8>)> = {
            let mut st =
                self.conn.prepare("SELECT sid, manifest FROM snapshots WHERE root IS NULL ORDER BY time_ns")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for (sid, manifest) in pending {
            let snap = decode_manifest(&manifest)?;
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have indexed it meanwhile.
            let done: Option<i64> =
                tx.query_row("SELECT root FROM snapshots WHERE sid = ?1", [sid], |r| r.get(0)).optional()?.flatten();
            if done.is_none() {
                let base = reference_root(&tx, &snap)?;
                let root = index_tree(&tx, src, &snap.tree, base, stats)?;
                tx.execute("UPDATE snapshots SET root = ?1 WHERE sid = ?2", [root, sid])?;
                stats.snapshots_indexed += 1;
            }
            tx.commit()?;
        }
        Ok(())
    }
}

/// The root tid of the snapshot a new one is best stored as deltas against: its parent if
/// indexed, else the newest indexed snapshot of the same host taken before it.
fn reference_root(tx: &Transaction, snap: &Snapshot) -> Result<Option<i64>> {
    if let Some(parent) = &snap.parent {
        let root: Option<i64> = tx
            .query_row("SELECT root FROM snapshots WHERE id = ?1", [&parent[..]], |r| r.get(0))
            .optional()?
            .flatten();
        if root.is_some() {
            return Ok(root);
        }
    }
    Ok(tx
        .query_row(
            "SELECT root FROM snapshots WHERE host = ?1 AND time_ns <= ?2 AND root IS NOT NULL
             ORDER BY time_ns DESC LIMIT 1",
            params![snap.host, snap.time_ns],
            |r| r.get(0),
        )
        .optional()?)
}

/// The members (nids) of tree `tid`: its base's members (recursively), less the rows it
/// removes, plus the rows it adds.
pub(super) fn members(conn: &Connection, tid: i64) -> Result<Vec<i64>> {
    let mut chain = vec![tid];
    let mut get_base = conn.prepare_cached("SELECT base FROM trees WHERE tid = ?1")?;
    while let Some(base) = get_base.query_row([chain[chain.len() - 1]], |r| r.get::<_, Option<i64>>(0))? {
        chain.push(base);
        if chain.len() as i64 > MAX_DEPTH + 1 {
            return Err(CatalogError::Unusable { path: "catalog".into(), reason: "a delta chain is too long".into() });
        }
    }
    let mut set: HashSet<i64> = HashSet::new();
    let mut rows = conn.prepare_cached("SELECT nid, removed FROM entries WHERE tid = ?1")?;
    for t in chain.iter().rev() {
        let mut q = rows.query([t])?;
        while let Some(r) = q.next()? {
            let (nid, removed): (i64, bool) = (r.get(0)?, r.get(1)?);
            if removed {
                set.remove(&nid);
            } else {
                set.insert(nid);
            }
        }
    }
    Ok(set.into_iter().collect())
}

pub(super) fn decode_manifest(b: &[u8]) -> Result<Snapshot> {
    Snapshot::decode(b)
        .map_err(|e| CatalogError::Unusable { path: "catalog".into(), reason: format!("bad manifest: {e}") })
}

/// Deletes what no remaining snapshot reaches. A tree's bases are kept with it, and the
/// subtrees of every row of it and its bases count as reached (also those a delta removes:
/// keeping a little too much is harmless, dropping a base is not).
fn collect_garbage(tx: &Transaction) -> Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS live(tid INTEGER PRIMARY KEY);
         DELETE FROM temp.live;
         INSERT INTO temp.live WITH RECURSIVE r(tid) AS (
             SELECT root FROM snapshots WHERE root IS NOT NULL
             UNION
             SELECT t.base FROM r JOIN trees t ON t.tid = r.tid WHERE t.base IS NOT NULL
             UNION
             SELECT n.subtree FROM r JOIN entries e ON e.tid = r.tid JOIN nodes n ON n.nid = e.nid
             WHERE n.subtree IS NOT NULL
         ) SELECT tid FROM r;
         DELETE FROM trees WHERE tid NOT IN (SELECT tid FROM temp.live);
         DELETE FROM entries WHERE tid NOT IN (SELECT tid FROM temp.live);
         DELETE FROM nodes WHERE nid NOT IN (SELECT nid FROM entries);
         DELETE FROM names WHERE name_id NOT IN (SELECT name_id FROM nodes);
         DELETE FROM temp.live;",
    )?;
    Ok(())
}

/// The tree a new one is stored against: its tid, chain, and members by name.
struct Base {
    tid: i64,
    depth: i64,
    chain_rows: i64,
    /// name -> (nid, subtree tid)
    members: HashMap<Vec<u8>, (i64, Option<i64>)>,
}

impl Base {
    fn load(tx: &Transaction, tid: i64) -> Result<Base> {
        let (depth, chain_rows): (i64, i64) =
            tx.query_row("SELECT depth, chain_rows FROM trees WHERE tid = ?1", [tid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut by_name = HashMap::new();
        let mut q = tx.prepare_cached(
            "SELECT m.name, n.subtree FROM nodes n JOIN names m ON m.name_id = n.name_id WHERE n.nid = ?1",
        )?;
        for nid in members(tx, tid)? {
            let (name, sub): (Vec<u8>, Option<i64>) = q.query_row([nid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            by_name.insert(name, (nid, sub));
        }
        Ok(Base { tid, depth, chain_rows, members: by_name })
    }
}

/// One directory being indexed: its nodes, the tids of the subtrees found so far, and the
/// tree at the same path in the reference snapshot.
struct Frame {
    id: [u8; 32],
    nodes: Vec<Node>,
    next: usize,
    subtids: Vec<Option<i64>>,
    base: Option<Base>,
}

impl Frame {
    fn load(tx: &Transaction, src: &dyn Source, id: &[u8; 32], base: Option<i64>) -> Result<Frame> {
        let nodes = src.tree(id).map_err(CatalogError::Source)?;
        let n = nodes.len();
        let base = base.map(|b| Base::load(tx, b)).transpose()?;
        Ok(Frame { id: *id, nodes, next: 0, subtids: vec![None; n], base })
    }

    /// The base of child directory `name`: the subtree of the base's member of that name.
    fn child_base(&self, name: &[u8]) -> Option<i64> {
        self.base.as_ref().and_then(|b| b.members.get(name)).and_then(|(_, sub)| *sub)
    }
}

fn tree_tid(tx: &Transaction, id: &[u8; 32]) -> Result<Option<i64>> {
    Ok(tx.prepare_cached("SELECT tid FROM trees WHERE id = ?1")?.query_row([&id[..]], |r| r.get(0)).optional()?)
}

/// Indexes tree `root` and everything below it the catalog lacks, as deltas against the
/// trees at the same paths below `base` where that pays; returns its tid.
fn index_tree(
    tx: &Transaction,
    src: &dyn Source,
    root: &[u8; 32],
    base: Option<i64>,
    stats: &mut SyncStats,
) -> Result<i64> {
    if let Some(tid) = tree_tid(tx, root)? {
        return Ok(tid);
    }
    let mut stack = vec![Frame::load(tx, src, root, base)?];
    'outer: loop {
        let top = stack.last_mut().expect("the stack holds the frame being worked on");
        while top.next < top.nodes.len() {
            let node = &top.nodes[top.next];
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                match tree_tid(tx, &sub)? {
                    Some(tid) => top.subtids[top.next] = Some(tid),
                    None => {
                        let child_base = top.child_base(&node.name);
                        let frame = Frame::load(tx, src, &sub, child_base)?;
                        stack.push(frame);
                        continue 'outer;
                    }
                }
            }
            top.next += 1;
        }
        let frame = stack.pop().expect("checked above");
        let tid = insert_tree(tx, &frame, stats)?;
        match stack.last_mut() {
            None => return Ok(tid),
            Some(parent) => {
                parent.subtids[parent.next] = Some(tid);
                parent.next += 1;
            }
        }
    }
}

/// Stores a tree: as a delta against its base when the chain stays short, else in full.
fn insert_tree(tx: &Transaction, f: &Frame, stats: &mut SyncStats) -> Result<i64> {
    let mut nids = Vec::with_capacity(f.nodes.len());
    for (node, sub) in f.nodes.iter().zip(&f.subtids) {
        nids.push(node_id(tx, node, *sub, stats)?);
    }
    let mut rows: Vec<(i64, bool)> = nids.iter().map(|n| (*n, false)).collect();
    let (mut base, mut depth, mut chain_rows) = (None, 0, 0);
    if let Some(b) = &f.base {
        let mine: HashSet<i64> = nids.iter().copied().collect();
        let theirs: HashSet<i64> = b.members.values().map(|(n, _)| *n).collect();
        let mut delta: Vec<(i64, bool)> = mine.difference(&theirs).map(|n| (*n, false)).collect();
        delta.extend(theirs.difference(&mine).map(|n| (*n, true)));
        let total = b.chain_rows + delta.len() as i64;
        if b.depth < MAX_DEPTH && total <= nids.len() as i64 / 2 + SLACK_ROWS {
            (base, depth, chain_rows) = (Some(b.tid), b.depth + 1, total);
            rows = delta;
        }
    }
    tx.prepare_cached("INSERT INTO trees(id, base, depth, chain_rows) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![&f.id[..], base, depth, chain_rows])?;
    let tid = tx.last_insert_rowid();
    let mut add = tx.prepare_cached("INSERT OR IGNORE INTO entries(tid, nid, removed) VALUES (?1, ?2, ?3)")?;
    for (nid, removed) in rows {
        add.execute(params![tid, nid, removed])?;
    }
    stats.trees_indexed += 1;
    Ok(tid)
}

fn name_id(tx: &Transaction, name: &[u8]) -> Result<i64> {
    let found: Option<i64> =
        tx.prepare_cached("SELECT name_id FROM names WHERE name = ?1")?.query_row([name], |r| r.get(0)).optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO names(name) VALUES (?1)")?.execute([name])?;
    Ok(tx.last_insert_rowid())
}

/// The node's row, added if new. `sub` is the tid of a directory's subtree.
fn node_id(tx: &Transaction, n: &Node, sub: Option<i64>, stats: &mut SyncStats) -> Result<i64> {
    let key = node_key(n);
    let found: Option<i64> =
        tx.prepare_cached("SELECT nid FROM nodes WHERE key = ?1")?.query_row([&key[..]], |r| r.get(0)).optional()?;
    if let Some(nid) = found {
        return Ok(nid);
    }
    let name = name_id(tx, &n.name)?;
    tx.prepare_cached(
        "INSERT INTO nodes(key, name_id, kind, mode, uid, gid, size, mtime_ns, content, subtree)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        &key[..],
        name,
        n.kind as u8,
        n.mode,
        n.uid,
        n.gid,
        n.size as i64,
        mtime_ns(n),
        content_hash(n).as_ref().map(|c| &c[..]),
        sub,
    ])?;
    stats.nodes_added += 1;
    Ok(tx.last_insert_rowid())
}

/// Nanoseconds since the epoch (saturating: a file may claim any date).
pub(super) fn mtime_ns(n: &Node) -> i64 {
    n.mtime.sec.saturating_mul(1_000_000_000).saturating_add(n.mtime.nsec as i64)
}

/// What a node holds, hashed: a file's content ids, a symlink's target, a device's number;
/// none for directories (their content is the subtree) and other kinds.
fn content_hash(n: &Node) -> Option<[u8; 16]> {
    let mut h = blake3::Hasher::new();
    match n.kind {
        NodeKind::File => n.content.iter().for_each(|c| {
            h.update(c);
        }),
        NodeKind::Symlink => {
            h.update(&n.link_target);
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => {
            h.update(&n.rdev.to_le_bytes());
        }
        _ => return None,
    }
    Some(first16(h.finalize()))
}

fn first16(h: blake3::Hash) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// A node's identity in the catalog: everything a user would call a different version
/// (name, kind, mode, owner, mtime, size, xattrs, content, subtree), but not the inode,
/// device, ctime or link count, which change without the file changing.
fn node_key(n: &Node) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    let mut bytes = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    bytes(&n.name);
    bytes(&[n.kind as u8]);
    bytes(&n.mode.to_le_bytes());
    bytes(&n.uid.to_le_bytes());
    bytes(&n.gid.to_le_bytes());
    bytes(&n.user);
    bytes(&n.group);
    bytes(&mtime_ns(n).to_le_bytes());
    bytes(&n.size.to_le_bytes());
    bytes(&n.rdev.to_le_bytes());
    bytes(&n.link_target);
    bytes(&(n.xattrs.len() as u64).to_le_bytes());
    for (k, v) in &n.xattrs {
        bytes(k);
        bytes(v);
    }
    bytes(&(n.content.len() as u64).to_le_bytes());
    for c in &n.content {
        bytes(c);
    }
    bytes(n.subtree.as_ref().map(|s| &s[..]).unwrap_or(&[]));
    first16(h.finalize())
}
