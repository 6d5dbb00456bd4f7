//! Bringing the catalog up to date with the repository.
//!
//! 1. Note the snapshots the catalog holds, then list the repository's. Rows of snapshots
//!    that were in the catalog before the listing and are not in it are deleted, then the
//!    trees, nodes and names nothing reaches any more (a mark from the remaining roots). A
//!    snapshot another process added after our listing is left alone.
//! 2. Each new snapshot's manifest is read (authenticated, like every repository read) and
//!    stored as a row whose `root` is still empty: enough for `snapshots` and `--as-of`.
//! 3. With `trees`, each snapshot without a root gets its trees indexed (`index.rs`), each
//!    snapshot in one transaction, so a killed sync leaves nothing half-done and another
//!    process sees the snapshot either fully indexed or not at all. The reference for its
//!    deltas is its parent snapshot if indexed, else the newest indexed one of the same host
//!    taken before it.
//!
//! A snapshot whose manifest or trees cannot be read is skipped with a warning (the
//! repository's `check` names the damage), so one damaged snapshot does not stop every
//! lookup; the next sync tries it again.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::index::{index_tree, member_rows};
use super::{Catalog, CatalogError, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the catalog's facts come from: the repository (implemented above this layer).
pub trait Source {
    fn snapshot_ids(&self) -> std::result::Result<Vec<SnapshotId>, BoxError>;
    fn snapshot(&self, id: &SnapshotId) -> std::result::Result<Snapshot, BoxError>;
    fn tree(&self, id: &[u8; 32]) -> std::result::Result<Vec<crate::format::tree::Node>, BoxError>;
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncStats {
    pub snapshots_added: u64,
    pub snapshots_removed: u64,
    pub snapshots_indexed: u64,
    pub trees_indexed: u64,
    pub nodes_added: u64,
    /// Snapshots skipped because the repository could not give them, with the reason.
    pub warnings: Vec<String>,
}

impl Catalog {
    /// Syncs with `src`; with `trees`, also indexes every snapshot's trees (needed by
    /// `find`, `versions` and `diff`; `snapshots` and `--as-of` need only the manifests).
    pub fn sync(&mut self, src: &dyn Source, trees: bool) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let before = self.known_ids()?;
        let ids: HashSet<SnapshotId> = src.snapshot_ids().map_err(CatalogError::Source)?.into_iter().collect();
        self.drop_missing(&before, &ids, &mut stats)?;
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
            v.push((sid, SnapshotId(snapshot_id(id)?)));
        }
        Ok(v)
    }

    fn drop_missing(
        &mut self,
        before: &[(i64, SnapshotId)],
        ids: &HashSet<SnapshotId>,
        stats: &mut SyncStats,
    ) -> Result<()> {
        let gone: Vec<&(i64, SnapshotId)> = before.iter().filter(|(_, id)| !ids.contains(id)).collect();
        if gone.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (sid, id) in gone {
            stats.snapshots_removed +=
                tx.execute("DELETE FROM snapshots WHERE sid = ?1 AND id = ?2", params![sid, &id.0[..]])? as u64;
        }
        collect_garbage(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn add_new(&mut self, src: &dyn Source, ids: &HashSet<SnapshotId>, stats: &mut SyncStats) -> Result<()> {
        let known: HashSet<SnapshotId> = self.known_ids()?.into_iter().map(|(_, id)| id).collect();
        let mut new: Vec<(SnapshotId, Snapshot)> = Vec::new();
        for id in ids.iter().filter(|id| !known.contains(id)) {
            match src.snapshot(id) {
                Ok(s) => new.push((*id, s)),
                Err(e) => stats.warnings.push(format!("snapshot {} left out of the catalog: {e}", id.short())),
            }
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
        let pending: Vec<(i64, Vec<u8>, Vec<u8>)> = {
            let mut st =
                self.conn.prepare("SELECT sid, id, manifest FROM snapshots WHERE root IS NULL ORDER BY time_ns")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for (sid, id, manifest) in pending {
            let snap = decode_manifest(&manifest)?;
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have indexed it, or dropped it, meanwhile.
            let state: Option<Option<i64>> = tx
                .query_row("SELECT root FROM snapshots WHERE sid = ?1 AND id = ?2", params![sid, id], |r| r.get(0))
                .optional()?;
            if state != Some(None) {
                continue;
            }
            let base = reference_root(&tx, &snap)?;
            // Counted apart, and added only if the snapshot's transaction commits.
            let mut mine = SyncStats::default();
            match index_tree(&tx, src, &snap.tree, base, &mut mine) {
                Ok(root) => {
                    tx.execute("UPDATE snapshots SET root = ?1 WHERE sid = ?2", [root, sid])?;
                    tx.commit()?;
                    stats.snapshots_indexed += 1;
                    stats.trees_indexed += mine.trees_indexed;
                    stats.nodes_added += mine.nodes_added;
                }
                Err(CatalogError::Source(e)) => {
                    let short = hex::encode(&id[..4.min(id.len())]);
                    stats.warnings.push(format!("snapshot {short} left out of the catalog: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn snapshot_id(v: Vec<u8>) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| CatalogError::Unusable { path: "catalog".into(), reason: "a bad snapshot id".into() })
}

/// The root tid of the snapshot a new one is best stored as deltas against: its parent if
/// indexed, else the newest indexed snapshot of the same host taken before it.
fn reference_root(tx: &Transaction, snap: &Snapshot) -> Result<Option<i64>> {
    if let Some(parent) = &snap.parent {
        let root: Option<i64> =
            tx.query_row("SELECT root FROM snapshots WHERE id = ?1", [&parent[..]], |r| r.get(0)).optional()?.flatten();
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

pub(super) fn decode_manifest(b: &[u8]) -> Result<Snapshot> {
    Snapshot::decode(b)
        .map_err(|e| CatalogError::Unusable { path: "catalog".into(), reason: format!("bad manifest: {e}") })
}

/// Deletes what no remaining snapshot reaches. Live trees are those a snapshot's root
/// reaches through its members' subtrees. A live tree stored as a delta against a tree that
/// is not live is first rewritten in full, so nothing of a forgotten snapshot (its names
/// above all) stays behind as a base. Then the other trees go, their entries, the nodes no
/// entry names, and the names no node uses.
fn collect_garbage(tx: &Transaction) -> Result<()> {
    let mut live: HashSet<i64> = HashSet::new();
    let mut stack: Vec<i64> = {
        let mut st = tx.prepare("SELECT root FROM snapshots WHERE root IS NOT NULL")?;
        let v = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
        v
    };
    while let Some(t) = stack.pop() {
        if live.insert(t) {
            let subs = member_rows(tx, t, "n.subtree", |r| r.get::<_, Option<i64>>(2))?;
            stack.extend(subs.into_values().flatten());
        }
    }
    let mut orphans = Vec::new();
    {
        let mut base_of = tx.prepare("SELECT base FROM trees WHERE tid = ?1")?;
        for t in &live {
            let base: Option<i64> = base_of.query_row([t], |r| r.get(0))?;
            if base.is_some_and(|b| !live.contains(&b)) {
                orphans.push((*t, member_rows(tx, *t, "NULL", |_| Ok(()))?));
            }
        }
    }
    for (t, members) in orphans {
        tx.execute("DELETE FROM entries WHERE tid = ?1", [t])?;
        let mut ins = tx.prepare_cached("INSERT INTO entries(tid, nid, removed) VALUES (?1, ?2, 0)")?;
        for nid in members.keys() {
            ins.execute([t, *nid])?;
        }
        tx.execute("UPDATE trees SET base = NULL, depth = 0, chain_rows = 0 WHERE tid = ?1", [t])?;
    }
    tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS live(tid INTEGER PRIMARY KEY); DELETE FROM temp.live;")?;
    {
        let mut ins = tx.prepare("INSERT INTO temp.live(tid) VALUES (?1)")?;
        for t in &live {
            ins.execute([t])?;
        }
    }
    tx.execute_batch(
        "DELETE FROM trees WHERE tid NOT IN (SELECT tid FROM temp.live);
         DELETE FROM entries WHERE tid NOT IN (SELECT tid FROM temp.live);
         DELETE FROM blobs WHERE tid NOT IN (SELECT tid FROM temp.live);
         DELETE FROM nodes WHERE nid NOT IN (SELECT nid FROM entries);
         DELETE FROM names WHERE name_id NOT IN (SELECT name_id FROM nodes);
         DELETE FROM temp.live;",
    )?;
    Ok(())
}
