//! Storing trees in the catalog: in full, or as deltas against their previous version.
//!
//! A tree's members are rows `entries(tid, nid, removed)`. A tree stored in full has a row
//! per member. A tree stored as a delta names its `base` (the tree at the same path in the
//! reference snapshot) and has rows only for the nodes it adds (`removed = 0`) and drops
//! (`removed = 1`). A tree is stored in full when it has no base, when the chain of deltas
//! would grow past [`MAX_DEPTH`] links, or when the chain's rows would exceed half the
//! tree's size plus [`SLACK_ROWS`]; so reading a tree's members ([`member_rows`]) costs at
//! most one query per link and about 1.5 times its size in rows.
//!
//! Indexing a snapshot walks its trees depth first from the root, stopping at every tree
//! the catalog already holds, alongside the reference snapshot's trees at the same paths
//! (each new tree's base). Children are stored before their parent (post-order, with an
//! explicit stack: trees may be thousands of levels deep). A member whose identity (which
//! includes its name) equals a base member's is the same node, found without a query.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::sync::{Source, SyncStats};
use super::{CatalogError, Result};
use crate::format::tree::{Node, NodeKind};

/// Longest chain of deltas before a tree is stored in full.
pub const MAX_DEPTH: i64 = 64;
/// Delta rows a chain may hold beyond half its tree's size (so small directories that
/// change often are not stored in full every few days).
pub const SLACK_ROWS: i64 = 16;

/// The members of tree `tid`, each as `read` makes it from a row of
/// `SELECT e.nid, e.removed, <cols> FROM entries e JOIN nodes n .. JOIN names m ..` (its
/// columns from index 2 on): the base's members (recursively), less the rows the tree
/// drops, plus the rows it adds.
pub(super) fn member_rows<T>(
    conn: &Connection,
    tid: i64,
    cols: &str,
    read: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<HashMap<i64, T>> {
    let mut chain = vec![tid];
    let mut get_base = conn.prepare_cached("SELECT base FROM trees WHERE tid = ?1")?;
    while let Some(base) = get_base.query_row([chain[chain.len() - 1]], |r| r.get::<_, Option<i64>>(0))? {
        chain.push(base);
        if chain.len() as i64 > MAX_DEPTH + 1 {
            return Err(CatalogError::Unusable { path: "catalog".into(), reason: "a delta chain is too long".into() });
        }
    }
    // Names only when asked for (`m.` columns): the join costs a lookup per row.
    let names = if cols.contains("m.") { "JOIN names m ON m.name_id = n.name_id" } else { "" };
    let sql = format!(
        "SELECT e.nid, e.removed, {cols} FROM entries e JOIN nodes n ON n.nid = e.nid {names} WHERE e.tid = ?1"
    );
    let mut rows = conn.prepare_cached(&sql)?;
    let mut out: HashMap<i64, T> = HashMap::new();
    for t in chain.iter().rev() {
        let mut q = rows.query([t])?;
        while let Some(r) = q.next()? {
            let (nid, removed): (i64, bool) = (r.get(0)?, r.get(1)?);
            if removed {
                out.remove(&nid);
            } else {
                out.insert(nid, read(r)?);
            }
        }
    }
    Ok(out)
}

/// Whether node `nid` is a member of tree `tid` (newest link of the chain first).
pub(super) fn holds(conn: &Connection, tid: i64, nid: i64) -> Result<bool> {
    let mut row = conn.prepare_cached("SELECT removed FROM entries WHERE tid = ?1 AND nid = ?2")?;
    let mut get_base = conn.prepare_cached("SELECT base FROM trees WHERE tid = ?1")?;
    let mut t = tid;
    for _ in 0..=MAX_DEPTH {
        if let Some(removed) = row.query_row([t, nid], |r| r.get::<_, bool>(0)).optional()? {
            return Ok(!removed);
        }
        match get_base.query_row([t], |r| r.get::<_, Option<i64>>(0))? {
            Some(b) => t = b,
            None => return Ok(false),
        }
    }
    Err(CatalogError::Unusable { path: "catalog".into(), reason: "a delta chain is too long".into() })
}

/// A member of a base tree.
struct Member {
    nid: i64,
    subtree: Option<i64>,
}

/// The tree a new one is stored against: its tid, its chain, its members by identity (an
/// identity includes the name), and its directories' subtrees by name id.
struct Base {
    tid: i64,
    depth: i64,
    chain_rows: i64,
    by_key: HashMap<Vec<u8>, Member>,
    dirs: HashMap<i64, i64>,
}

impl Base {
    fn load(tx: &Transaction, tid: i64) -> Result<Base> {
        let (depth, chain_rows): (i64, i64) =
            tx.query_row("SELECT depth, chain_rows FROM trees WHERE tid = ?1", [tid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let rows = member_rows(tx, tid, "n.key, n.subtree, n.name_id", |r| {
            Ok((r.get::<_, Vec<u8>>(2)?, r.get::<_, Option<i64>>(3)?, r.get::<_, i64>(4)?))
        })?;
        let mut by_key = HashMap::with_capacity(rows.len());
        let mut dirs = HashMap::new();
        for (nid, (key, subtree, name_id)) in rows {
            if let Some(sub) = subtree {
                dirs.insert(name_id, sub);
            }
            by_key.insert(key, Member { nid, subtree });
        }
        Ok(Base { tid, depth, chain_rows, by_key, dirs })
    }
}

/// A tree as the catalog knows it: its tid and its content key.
type Known = (i64, [u8; 16]);

/// One directory being indexed: its nodes, the subtrees found so far, and the tree at the
/// same path in the reference snapshot.
struct Frame {
    id: [u8; 32],
    nodes: Vec<Node>,
    next: usize,
    subtrees: Vec<Option<Known>>,
    base: Option<Base>,
}

impl Frame {
    fn load(tx: &Transaction, src: &dyn Source, id: &[u8; 32], base: Option<i64>) -> Result<Frame> {
        let nodes = src.tree(id).map_err(CatalogError::Source)?;
        let n = nodes.len();
        let base = base.map(|b| Base::load(tx, b)).transpose()?;
        Ok(Frame { id: *id, nodes, next: 0, subtrees: vec![None; n], base })
    }

    /// The base of child directory `name`: the subtree of the base's member of that name.
    fn child_base(&self, tx: &Transaction, name: &[u8]) -> Result<Option<i64>> {
        let Some(base) = &self.base else { return Ok(None) };
        let name_id: Option<i64> = tx
            .prepare_cached("SELECT name_id FROM names WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        Ok(name_id.and_then(|n| base.dirs.get(&n).copied()))
    }
}

/// The catalog tree a tree blob was indexed as.
fn known(tx: &Transaction, id: &[u8; 32]) -> Result<Option<Known>> {
    let row: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT b.tid, t.ckey FROM blobs b JOIN trees t ON t.tid = b.tid WHERE b.id = ?1")?
        .query_row([&id[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(tid, ckey)| Ok((tid, ckey.try_into().map_err(|_| bad("a content key of the wrong length"))?))).transpose()
}

fn bad(reason: &str) -> CatalogError {
    CatalogError::Unusable { path: "catalog".into(), reason: reason.into() }
}

/// Indexes tree `root` and everything below it the catalog lacks, as deltas against the
/// trees at the same paths below `base` where that pays; returns its tid.
pub(super) fn index_tree(
    tx: &Transaction,
    src: &dyn Source,
    root: &[u8; 32],
    base: Option<i64>,
    stats: &mut SyncStats,
) -> Result<i64> {
    if let Some((tid, _)) = known(tx, root)? {
        return Ok(tid);
    }
    let mut stack = vec![Frame::load(tx, src, root, base)?];
    'outer: loop {
        let top = stack.last_mut().expect("the stack holds the frame being worked on");
        while top.next < top.nodes.len() {
            let node = &top.nodes[top.next];
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                match known(tx, &sub)? {
                    Some(k) => top.subtrees[top.next] = Some(k),
                    None => {
                        let child_base = top.child_base(tx, &node.name)?;
                        let frame = Frame::load(tx, src, &sub, child_base)?;
                        stack.push(frame);
                        continue 'outer;
                    }
                }
            }
            top.next += 1;
        }
        let frame = stack.pop().expect("checked above");
        let k = insert_tree(tx, &frame, stats)?;
        match stack.last_mut() {
            None => return Ok(k.0),
            Some(parent) => {
                parent.subtrees[parent.next] = Some(k);
                parent.next += 1;
            }
        }
    }
}

/// Stores a tree blob: under the catalog tree of the same content if there is one (it
/// differs from one already indexed only in inodes, ctimes, devices or link counts), else
/// as a new tree, a delta against its base when the chain stays short, else in full.
fn insert_tree(tx: &Transaction, f: &Frame, stats: &mut SyncStats) -> Result<Known> {
    let keys: Vec<[u8; 16]> =
        f.nodes.iter().zip(&f.subtrees).map(|(n, sub)| node_key(n, sub.map(|(_, c)| c))).collect();
    let ckey = content_key(&keys);
    let same_content: Option<i64> =
        tx.prepare_cached("SELECT tid FROM trees WHERE ckey = ?1")?.query_row([&ckey[..]], |r| r.get(0)).optional()?;
    if let Some(tid) = same_content {
        tx.prepare_cached("INSERT INTO blobs(id, tid) VALUES (?1, ?2)")?.execute(params![&f.id[..], tid])?;
        return Ok((tid, ckey));
    }
    let mut nids = Vec::with_capacity(f.nodes.len());
    for ((node, sub), key) in f.nodes.iter().zip(&f.subtrees).zip(&keys) {
        let sub = sub.map(|(tid, _)| tid);
        let same = f.base.as_ref().and_then(|b| b.by_key.get(&key[..])).filter(|m| m.subtree == sub);
        nids.push(match same {
            Some(m) => m.nid,
            None => node_id(tx, node, key, sub, stats)?,
        });
    }
    let mut rows: Vec<(i64, bool)> = nids.iter().map(|n| (*n, false)).collect();
    let (mut base, mut depth, mut chain_rows) = (None, 0, 0);
    if let Some(b) = &f.base {
        let mine: HashSet<i64> = nids.iter().copied().collect();
        let theirs: HashSet<i64> = b.by_key.values().map(|m| m.nid).collect();
        let mut delta: Vec<(i64, bool)> = mine.difference(&theirs).map(|n| (*n, false)).collect();
        delta.extend(theirs.difference(&mine).map(|n| (*n, true)));
        let total = b.chain_rows + delta.len() as i64;
        if b.depth < MAX_DEPTH && total <= nids.len() as i64 / 2 + SLACK_ROWS {
            (base, depth, chain_rows) = (Some(b.tid), b.depth + 1, total);
            rows = delta;
        }
    }
    tx.prepare_cached("INSERT INTO trees(ckey, base, depth, chain_rows) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        &ckey[..],
        base,
        depth,
        chain_rows
    ])?;
    let tid = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO blobs(id, tid) VALUES (?1, ?2)")?.execute(params![&f.id[..], tid])?;
    let mut add = tx.prepare_cached("INSERT OR IGNORE INTO entries(tid, nid, removed) VALUES (?1, ?2, ?3)")?;
    for (nid, removed) in rows {
        add.execute(params![tid, nid, removed])?;
    }
    stats.trees_indexed += 1;
    Ok((tid, ckey))
}

/// A tree's content key: its members' identities, in name order.
fn content_key(keys: &[[u8; 16]]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&(keys.len() as u64).to_le_bytes());
    keys.iter().for_each(|k| {
        h.update(k);
    });
    first16(h.finalize())
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

/// The node's row, added if new. `sub` is the tid of a directory's subtree: a node kept
/// from an earlier snapshot may point at a tree since collected (its identity names the
/// subtree's blob id, which is indexed again under a new tid), so it is brought up to date.
fn node_id(tx: &Transaction, n: &Node, key: &[u8; 16], sub: Option<i64>, stats: &mut SyncStats) -> Result<i64> {
    let found: Option<(i64, Option<i64>)> = tx
        .prepare_cached("SELECT nid, subtree FROM nodes WHERE key = ?1")?
        .query_row([&key[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((nid, old_sub)) = found {
        if old_sub != sub {
            tx.prepare_cached("UPDATE nodes SET subtree = ?1 WHERE nid = ?2")?.execute(params![sub, nid])?;
        }
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
/// (name, kind, mode, owner, mtime, size, xattrs, content, and for a directory the content
/// key of its tree), but not the inode, device, ctime or link count, which change without
/// the file changing. (The subtree's blob id would bring those back: it hashes the
/// children's inodes.)
fn node_key(n: &Node, subtree: Option<[u8; 16]>) -> [u8; 16] {
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
    bytes(subtree.as_ref().map(|s| &s[..]).unwrap_or(&[]));
    first16(h.finalize())
}
