//! `repair snapshots`: for each snapshot with unreadable parts, a new snapshot in which only
//! those parts are replaced.
//!
//! Every tree of the snapshot is read. A file is unreadable when one of its chunks has no
//! copy that can be read: no index entry, or only entries in packs `data/` lacks or copies
//! recorded as damaged that fail to read when tried. Such a file becomes an empty file of
//! the same name and metadata (size 0, no content); a directory whose tree cannot be read
//! becomes an empty directory. Everything else is kept exactly, down to the tree ids of
//! untouched directories. The new snapshot is the old one's copy with the new root tree, the
//! tag `repaired`, `original` naming the snapshot it replaces, and the list of paths that
//! were replaced (docs/format.md, "Snapshots", version 3). The old snapshot is kept unless
//! `--forget` is given.
//!
//! Kill -9 safe: new trees are stored (packs, then index) before the new snapshot is
//! written, and the old snapshot is deleted only after the new one is durable. It runs as a
//! writer session, like a backup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Node, NodeKind};
use crate::format::BlobType;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repo::snapshots::{match_id, ListedSnapshot};
use crate::repo::{MasterIndex, RepoError, Repository, Result};

/// One path replaced, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Replaced {
    pub path: String,
    pub reason: String,
}

/// The repair of one snapshot.
#[derive(Debug, serde::Serialize)]
pub struct SnapshotRepair {
    pub snapshot: String,
    pub replaced: Vec<Replaced>,
    #[serde(skip)]
    id: SnapshotId,
    #[serde(skip)]
    snap: Snapshot,
    #[serde(skip)]
    root: BlobId,
    #[serde(skip)]
    paths: Vec<Vec<u8>>,
}

/// What `repair snapshots` will do.
#[derive(Debug, Default, serde::Serialize)]
pub struct SnapshotsPlan {
    /// Snapshots that need a repair.
    pub repairs: Vec<SnapshotRepair>,
    /// Snapshots looked at that are whole.
    pub whole: u64,
    /// New tree blobs to store.
    pub new_trees: u64,
    #[serde(skip)]
    trees: Vec<(BlobId, Vec<u8>)>,
}

/// What was done.
#[derive(Debug, Default, serde::Serialize)]
pub struct SnapshotsOutcome {
    /// `old id -> new id`.
    pub written: Vec<(String, String)>,
    pub forgotten: u64,
    /// Originals `--forget` could not remove (a hold or the minimum retention), and why.
    pub kept: Vec<(String, String)>,
}

struct Walk<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    /// Packs in `data/` with the size the index records for them.
    present: &'a HashSet<PackId>,
    chunk_ok: HashMap<BlobId, Option<String>>,
    /// Trees already looked at (shared subtrees are read once): old id -> new id, and the
    /// paths replaced below it.
    #[allow(clippy::type_complexity)]
    done: HashMap<BlobId, (BlobId, Vec<(Vec<u8>, String)>)>,
    new_trees: Vec<(BlobId, Vec<u8>)>,
    empty_tree: BlobId,
}

impl Walk<'_> {
    /// `None` if the chunk can be read, else why not.
    fn chunk_problem(&mut self, id: &BlobId) -> Option<String> {
        if let Some(r) = self.chunk_ok.get(id) {
            return r.clone();
        }
        let i = self.index;
        // Only a live copy in a pack that is there whole, and not recorded damaged, is taken
        // on trust; any other copy (in a retired pack, say) must prove itself by reading.
        let trusted = |loc: &crate::repo::BlobLoc| {
            self.present.contains(&i.pack_id(loc.pack))
                && !i.is_recorded_damaged(id, loc)
                && loc.blob_type == BlobType::Data
        };
        let r = if i.get_live(id).is_some_and(|l| trusted(&l)) {
            None
        } else if i.get(id).is_none() {
            Some(format!("chunk {} is in no index", id.short()))
        } else {
            // Only doubtful copies: try reading.
            self.repo.read_data_blob(i, id).err().map(|e| e.to_string())
        };
        self.chunk_ok.insert(*id, r.clone());
        r
    }

    /// The tree to use in place of `tid` (the same id if nothing below it changed), and the
    /// paths replaced below it, relative to it (`""` for the directory itself), with why.
    fn tree(&mut self, tid: BlobId) -> (BlobId, Vec<(Vec<u8>, String)>) {
        if let Some(d) = self.done.get(&tid) {
            return d.clone();
        }
        let nodes = match self.repo.load_tree(self.index, &tid) {
            Ok(n) => n,
            Err(e) => return (self.empty_tree, vec![(Vec::new(), format!("directory unreadable: {e}"))]),
        };
        let mut replaced = Vec::new();
        let mut changed = false;
        let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
        for mut n in nodes {
            match n.kind {
                NodeKind::Dir => {
                    let old = BlobId(n.subtree.expect("the decoder ensures directories have subtrees"));
                    let (new, below) = self.tree(old);
                    replaced.extend(below.into_iter().map(|(p, why)| (rel_join(&n.name, &p), why)));
                    if new != old {
                        n.subtree = Some(new.0);
                        changed = true;
                    }
                }
                NodeKind::File => {
                    let problem = n.content.iter().find_map(|c| self.chunk_problem(&BlobId(*c)));
                    if let Some(why) = problem {
                        replaced.push((n.name.clone(), why));
                        n.content.clear();
                        n.size = 0;
                        changed = true;
                    }
                }
                _ => {}
            }
            out.push(n);
        }
        let new = if changed {
            let bytes = tree::encode(&out);
            let id = self.repo.keys().blob_id(BlobType::Tree, &bytes);
            self.new_trees.push((id, bytes));
            id
        } else {
            tid
        };
        self.done.insert(tid, (new, replaced.clone()));
        (new, replaced)
    }
}

/// `name/rel` (`name` when `rel` is empty).
fn rel_join(name: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    if !rel.is_empty() {
        p.push(b'/');
        p.extend_from_slice(rel);
    }
    p
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Finds what each snapshot (all, or those `specs` name) needs replaced; changes nothing.
pub fn plan(repo: &Repository, specs: &[String]) -> Result<SnapshotsPlan> {
    let (all, damaged) = repo.load_snapshots_all()?;
    if let Some(d) = damaged.first() {
        repo.warnings().warn(format!(
            "snapshot {} itself is unreadable ({}); nothing in it can be repaired: `coffer forget {}` removes it",
            d.id.short(),
            d.reason,
            d.id.short()
        ));
    }
    let chosen: Vec<&ListedSnapshot> = if specs.is_empty() {
        all.iter().collect()
    } else {
        let ids: Vec<SnapshotId> = all.iter().map(|s| s.id).collect();
        let mut v = Vec::new();
        for spec in specs {
            let id = if spec == "latest" {
                all.last().map(|s| s.id).ok_or_else(|| RepoError::Invalid("the repository has no snapshots".into()))?
            } else {
                match_id(spec, &ids)?
            };
            v.push(all.iter().find(|s| s.id == id).expect("matched"));
        }
        v
    };
    let mut index = repo.load_index()?;
    // Packs no index file lists may hold what a snapshot needs (an index file was lost):
    // they are read from their own headers, so nothing they hold is taken for lost.
    let before = index.recovered.len();
    if index.is_whole() {
        crate::repo::packs::enter_unlisted_packs(repo, &mut index)?;
    }
    let entered = index.recovered.len() - before;
    if entered > 0 {
        repo.warnings().warn(format!(
            "{entered} packs no index file lists were read from their own headers (`coffer repair index` indexes them)"
        ));
    }
    let present: HashSet<PackId> = crate::repo::packs::list_packs(repo)?
        .into_iter()
        .filter(|(id, l)| index.pack_pos(id).is_some_and(|p| index.pack(p).size == l.size))
        .map(|(id, _)| id)
        .collect();
    let empty = tree::encode(&[]);
    let empty_tree = repo.keys().blob_id(BlobType::Tree, &empty);
    let mut w = Walk {
        repo,
        index: &index,
        present: &present,
        chunk_ok: HashMap::new(),
        done: HashMap::new(),
        new_trees: Vec::new(),
        empty_tree,
    };
    let mut plan = SnapshotsPlan::default();
    for s in chosen {
        let (root, replaced) = w.tree(BlobId(s.snapshot.tree));
        if replaced.is_empty() && root == BlobId(s.snapshot.tree) {
            plan.whole += 1;
            continue;
        }
        let paths: Vec<Vec<u8>> = replaced.iter().map(|(p, _)| join(b"/", p)).collect();
        plan.repairs.push(SnapshotRepair {
            snapshot: s.id.to_hex(),
            replaced: replaced
                .iter()
                .zip(&paths)
                .map(|((_, why), p)| Replaced { path: String::from_utf8_lossy(p).into_owned(), reason: why.clone() })
                .collect(),
            id: s.id,
            snap: s.snapshot.clone(),
            root,
            paths,
        });
    }
    // The empty tree is stored if anything was emptied and the repository lacks it.
    let mut trees = std::mem::take(&mut w.new_trees);
    if !plan.repairs.is_empty() && !index.contains(&empty_tree) {
        trees.push((empty_tree, empty));
    }
    plan.new_trees = trees.len() as u64;
    plan.trees = trees;
    Ok(plan)
}

/// Stores the new trees, writes the new snapshots, then (with `forget`) deletes the old ones.
pub fn execute(
    repo: &Arc<Repository>,
    plan: SnapshotsPlan,
    forget: bool,
    protected: &HashMap<SnapshotId, String>,
    alive: &crate::repo::lock::Alive,
) -> Result<SnapshotsOutcome> {
    let mut out = SnapshotsOutcome::default();
    if plan.repairs.is_empty() {
        return Ok(out);
    }
    crate::repo::writer::store_trees(repo, &plan.trees, alive)?;
    for r in plan.repairs {
        let mut s = r.snap.clone();
        s.tree = r.root.0;
        s.original = Some(r.snap.original.unwrap_or(r.id.0));
        s.repaired = r.paths.clone();
        if !s.tags.iter().any(|t| t == "repaired") {
            s.tags.push("repaired".into());
        }
        alive.check()?;
        let new_id = repo.save_snapshot(&s)?;
        out.written.push((r.id.to_hex(), new_id.to_hex()));
        if let Some(why) = protected.get(&r.id).filter(|_| forget) {
            out.kept.push((r.id.to_hex(), why.clone()));
        } else if forget {
            repo.remove_snapshot(&r.id)?;
            out.forgotten += 1;
        }
    }
    Ok(out)
}
