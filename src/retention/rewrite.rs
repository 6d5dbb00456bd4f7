//! `rewrite`: new snapshots without the paths that match exclusion patterns (erasure
//! requests, GDPR Art. 17), as restic 0.15's `rewrite`; `prune` then removes the data no
//! snapshot needs any more.
//!
//! Every tree of each chosen snapshot is read; an entry whose absolute path matches (the
//! `--exclude` syntax of backup) is left out, with everything below it. Untouched
//! directories keep their tree ids, so the new snapshot shares all it can. The new snapshot
//! is the old one's copy with the new root tree, the tag `rewrite`, and `original` naming
//! the snapshot it replaces. A snapshot in which nothing matches is left alone.
//!
//! With `forget`, the old snapshots are deleted once the new ones are durable, except those a
//! hold or the minimum retention protects: they are kept and reported, never skipped
//! silently. Every erasure (not a dry run) is written to the erasure ledger (`erasures/`),
//! naming the patterns, the snapshots rewritten and the originals that still hold the data;
//! `restore` of such an original warns, and `--apply-erasures` leaves the paths out.
//!
//! Kill -9 safe as `repair snapshots`: trees, then index, then the new snapshot, then the
//! deletion of the old one. It runs as a writer session.

use std::collections::HashMap;
use std::sync::Arc;

use super::governance::Governance;
use crate::format::erasure::ErasureRecord;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Node, NodeKind};
use crate::format::BlobType;
use crate::id::{BlobId, SnapshotId};
use crate::repo::snapshots::ListedSnapshot;
use crate::repo::{MasterIndex, Repository, Result};
use crate::source::exclude::Patterns;

/// The rewrite of one snapshot.
#[derive(Debug, serde::Serialize)]
pub struct SnapshotRewrite {
    pub snapshot: String,
    /// Paths left out (the topmost of each removed subtree).
    pub removed: Vec<String>,
    /// Why the original cannot be removed (with `--forget`), if it cannot.
    pub kept_because: Option<String>,
    #[serde(skip)]
    id: SnapshotId,
    #[serde(skip)]
    snap: Snapshot,
    #[serde(skip)]
    root: BlobId,
}

/// What `rewrite` will do.
#[derive(Debug, Default, serde::Serialize)]
pub struct RewritePlan {
    pub rewrites: Vec<SnapshotRewrite>,
    /// Snapshots looked at in which nothing matches.
    pub unchanged: u64,
    pub new_trees: u64,
    #[serde(skip)]
    trees: Vec<(BlobId, Vec<u8>)>,
}

/// What was done.
#[derive(Debug, Default, serde::Serialize)]
pub struct RewriteOutcome {
    /// `old id -> new id`.
    pub written: Vec<(String, String)>,
    pub forgotten: u64,
    /// Originals that still hold the erased paths, and why.
    pub kept: Vec<(String, String)>,
    pub erasure_record: Option<String>,
}

/// A tree's replacement and the paths removed below it.
type Filtered = (BlobId, Vec<Vec<u8>>);

/// Walks trees leaving out what matches.
pub struct Filter<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    patterns: &'a Patterns,
    /// `(tree, its absolute path)` -> `(new tree, paths removed below)`.
    done: HashMap<(BlobId, Vec<u8>), Filtered>,
    new_trees: Vec<(BlobId, Vec<u8>)>,
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl<'a> Filter<'a> {
    pub fn new(repo: &'a Repository, index: &'a MasterIndex, patterns: &'a Patterns) -> Self {
        Filter { repo, index, patterns, done: HashMap::new(), new_trees: Vec::new() }
    }

    /// The tree to use in place of `tid` at absolute path `path`, and the paths removed.
    pub fn tree(&mut self, tid: BlobId, path: &[u8]) -> Result<Filtered> {
        let key = (tid, path.to_vec());
        if let Some(d) = self.done.get(&key) {
            return Ok(d.clone());
        }
        let nodes = self.repo.load_tree(self.index, &tid)?;
        let (mut out, mut removed, mut changed) = (Vec::<Node>::with_capacity(nodes.len()), Vec::new(), false);
        for mut n in nodes {
            let p = join(path, &n.name);
            if self.patterns.matches(&p, &n.name) {
                removed.push(p);
                changed = true;
                continue;
            }
            if n.kind == NodeKind::Dir {
                let old = BlobId(n.subtree.expect("the decoder ensures directories have subtrees"));
                let (new, below) = self.tree(old, &p)?;
                removed.extend(below);
                if new != old {
                    n.subtree = Some(new.0);
                    changed = true;
                }
            }
            out.push(n);
        }
        let new = if changed {
            let bytes = tree::encode(&out);
            let id = self.repo.keys().blob_id(BlobType::Tree, &bytes);
            if !self.index.contains(&id) && !self.new_trees.iter().any(|(t, _)| *t == id) {
                self.new_trees.push((id, bytes));
            }
            id
        } else {
            tid
        };
        self.done.insert(key, (new, removed.clone()));
        Ok((new, removed))
    }
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Finds what each chosen snapshot loses; changes nothing.
pub fn plan(
    repo: &Repository,
    index: &MasterIndex,
    chosen: &[ListedSnapshot],
    patterns: &Patterns,
    gov: &Governance,
    forget: bool,
) -> Result<RewritePlan> {
    let mut f = Filter::new(repo, index, patterns);
    let mut plan = RewritePlan::default();
    for s in chosen {
        let (root, removed) = f.tree(BlobId(s.snapshot.tree), b"/")?;
        if removed.is_empty() {
            plan.unchanged += 1;
            continue;
        }
        let kept_because =
            if forget { gov.protection(s).map(|p| p.to_string()) } else { Some("kept: --forget not given".into()) };
        plan.rewrites.push(SnapshotRewrite {
            snapshot: s.id.to_hex(),
            removed: removed.iter().map(|p| shown(p)).collect(),
            kept_because,
            id: s.id,
            snap: s.snapshot.clone(),
            root,
        });
    }
    plan.trees = std::mem::take(&mut f.new_trees);
    plan.new_trees = plan.trees.len() as u64;
    Ok(plan)
}

/// Stores the new trees, writes the new snapshots, deletes the originals that may be
/// (with `forget`), and records the erasure.
pub fn execute(
    repo: &Arc<Repository>,
    plan: RewritePlan,
    forget: bool,
    record: ErasureRecord,
    alive: &crate::repo::lock::Alive,
) -> Result<RewriteOutcome> {
    let mut out = RewriteOutcome::default();
    crate::repo::writer::store_trees(repo, &plan.trees, alive)?;
    let mut record = record;
    for r in plan.rewrites {
        let mut s = r.snap.clone();
        s.tree = r.root.0;
        s.original = Some(r.snap.original.unwrap_or(r.id.0));
        if !s.tags.iter().any(|t| t == "rewrite") {
            s.tags.push("rewrite".into());
        }
        alive.check()?;
        let new_id = repo.save_snapshot(&s)?;
        out.written.push((r.id.to_hex(), new_id.to_hex()));
        record.rewritten.push((r.id.0, new_id.0));
        match r.kept_because {
            Some(why) => {
                out.kept.push((r.id.to_hex(), why.clone()));
                record.kept.push((r.id.0, why));
            }
            None if forget => {
                repo.remove_snapshot(&r.id)?;
                out.forgotten += 1;
            }
            None => {}
        }
    }
    out.erasure_record = Some(repo.save_erasure(&record)?.to_hex());
    Ok(out)
}

/// The erasures that apply to snapshot `id` (claiming time `time_ns`), as one set of
/// patterns, with the paths of the snapshot (below `root`) they match. An erasure applies to
/// the snapshots it names (those it rewrote, and the originals it had to keep), whatever time
/// they claim (a host's clock may put them after the erasure), and to every other snapshot
/// claiming a time at or before it (one it did not select).
pub fn erased_paths(
    repo: &Repository,
    index: &MasterIndex,
    id: &SnapshotId,
    root: BlobId,
    time_ns: i64,
) -> Result<(Vec<String>, Vec<String>)> {
    let patterns: Vec<String> = repo
        .load_erasures()?
        .into_iter()
        .filter(|e| {
            let named =
                e.value.rewritten.iter().any(|(old, _)| *old == id.0) || e.value.kept.iter().any(|(k, _)| *k == id.0);
            named || e.value.time_ns >= time_ns
        })
        .flat_map(|e| e.value.patterns)
        .collect();
    if patterns.is_empty() {
        return Ok((patterns, Vec::new()));
    }
    let p = Patterns::new(&patterns).map_err(crate::repo::RepoError::Invalid)?;
    let mut f = Filter::new(repo, index, &p);
    let (_, removed) = f.tree(root, b"/")?;
    Ok((patterns, removed.iter().map(|p| shown(p)).collect()))
}
