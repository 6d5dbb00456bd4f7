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

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{Catalog, CatalogError, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::SnapshotId;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
                let root = index_tree(&tx, src, &snap.tree, stats)?;
                tx.execute("UPDATE snapshots SET root = ?1 WHERE sid = ?2", [root, sid])?;
                stats.snapshots_indexed += 1;
            }
            tx.commit()?;
        }
        Ok(())
    }
}

pub(super) fn decode_manifest(b: &[u8]) -> Result<Snapshot> {
    Snapshot::decode(b)
        .map_err(|e| CatalogError::Unusable { path: "catalog".into(), reason: format!("bad manifest: {e}") })
}

/// Deletes what no remaining snapshot reaches.
fn collect_garbage(tx: &Transaction) -> Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS live(tid INTEGER PRIMARY KEY);
         DELETE FROM temp.live;
         INSERT INTO temp.live WITH RECURSIVE r(tid) AS (
             SELECT root FROM snapshots WHERE root IS NOT NULL
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

/// One directory being indexed: its nodes, and the tids of the subtrees found so far.
struct Frame {
    id: [u8; 32],
    nodes: Vec<Node>,
    next: usize,
    subtids: Vec<Option<i64>>,
}

impl Frame {
    fn load(src: &dyn Source, id: &[u8; 32]) -> Result<Frame> {
        let nodes = src.tree(id).map_err(CatalogError::Source)?;
        let n = nodes.len();
        Ok(Frame { id: *id, nodes, next: 0, subtids: vec![None; n] })
    }
}

fn tree_tid(tx: &Transaction, id: &[u8; 32]) -> Result<Option<i64>> {
    Ok(tx.prepare_cached("SELECT tid FROM trees WHERE id = ?1")?.query_row([&id[..]], |r| r.get(0)).optional()?)
}

/// Indexes tree `root` and everything below it the catalog lacks; returns its tid.
fn index_tree(tx: &Transaction, src: &dyn Source, root: &[u8; 32], stats: &mut SyncStats) -> Result<i64> {
    if let Some(tid) = tree_tid(tx, root)? {
        return Ok(tid);
    }
    let mut stack = vec![Frame::load(src, root)?];
    'outer: loop {
        let top = stack.last_mut().expect("the stack holds the frame being worked on");
        while top.next < top.nodes.len() {
            let node = &top.nodes[top.next];
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                match tree_tid(tx, &sub)? {
                    Some(tid) => top.subtids[top.next] = Some(tid),
                    None => {
                        let frame = Frame::load(src, &sub)?;
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

fn insert_tree(tx: &Transaction, f: &Frame, stats: &mut SyncStats) -> Result<i64> {
    tx.prepare_cached("INSERT INTO trees(id) VALUES (?1)")?.execute([&f.id[..]])?;
    let tid = tx.last_insert_rowid();
    let mut add = tx.prepare_cached("INSERT OR IGNORE INTO entries(tid, nid) VALUES (?1, ?2)")?;
    for (node, sub) in f.nodes.iter().zip(&f.subtids) {
        let nid = node_id(tx, node, *sub, stats)?;
        add.execute([tid, nid])?;
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
