//! The audit trail: a hash chain of immutable, encrypted entries under `audit/`.
//!
//! **Appending** ([`Repository::append_audit`]): list `audit/`, read the entries (immutable,
//! so cached), find the *heads* (entries no other entry names), and write one new entry
//! naming every head by id and by the BLAKE3 hash of its stored object, with a `seq` one
//! more than the largest among them. The listing is taken right before the write, so a
//! writer sees every entry stored more than a moment before its own; two admins writing at
//! once both name the same heads (a fork), and whoever writes next names both heads and so
//! joins them. An entry that cannot be read is still a head (its bytes are hashed as
//! stored), so damage never stops the trail.
//!
//! **Verifying** ([`verify`]): every entry is read from storage (never the cache) and
//! authenticated; then each link is checked. The findings:
//! - *removed*: an entry names a predecessor that is not there; or an entry this client saw
//!   as a head earlier (kept in the state directory) is gone, which catches the removal of
//!   the newest entries, that no link names;
//! - *altered*: an entry does not authenticate, or its stored bytes no longer hash to what
//!   its successor recorded;
//! - *reordered*: an entry's seq is not larger than its predecessors', or it was stored
//!   before a predecessor (beyond the storage's [`MARGIN`](super::lock::MARGIN));
//! - *forked*: an entry does not descend from an entry stored more than the margin before
//!   it. Its writer must have seen that entry and named it (or one of its descendants), so
//!   the chain was branched on purpose: history was cut and written anew from an older
//!   point. Concurrent writers are stored within the margin of each other and are not
//!   reported; a fork they leave is joined by the next entry.

use std::collections::{HashMap, HashSet};

use super::{audit_path, RepoError, Repository, Result};
use crate::format::audit::AuditEntry;
use crate::format::envelope::ObjectType;
use crate::id::AuditId;
use crate::storage::StorageError;

/// One listed entry: its stored object's hash and timestamp, and its content when it reads.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: AuditId,
    pub stored_ns: i64,
    pub hash: [u8; 32],
    pub entry: std::result::Result<AuditEntry, String>,
}

/// What an audited command did, for its entry.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub command: String,
    pub args: Vec<String>,
    pub exit_code: i32,
    pub plan: String,
    pub outcome: String,
}

/// A finding of [`verify`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    /// `removed`, `altered`, `reordered` or `forked`.
    pub kind: &'static str,
    /// The entry the finding is about (for `removed`, the missing one).
    pub entry: String,
    /// Its seq where known (for ordering the report).
    pub seq: Option<u64>,
    pub message: String,
}

/// The result of [`verify`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verification {
    pub entries: usize,
    pub heads: Vec<String>,
    /// Forks left by concurrent writers and joined later (or not yet).
    pub concurrent_forks: usize,
    /// Oldest (by seq) first.
    pub problems: Vec<Problem>,
}

impl Repository {
    /// Every entry in `audit/`, oldest (by seq, then storage time) first. With `fresh`, read
    /// from storage; otherwise from the cache where it has them.
    pub fn load_audit(&self, fresh: bool) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        for l in self.store().list("audit")? {
            let Some(id) = l.path.strip_prefix("audit/").and_then(AuditId::from_name) else { continue };
            let name = audit_path(&id);
            let open = |b: &[u8]| -> Result<([u8; 32], AuditEntry)> {
                let plain = self.open_object(ObjectType::Audit, id.as_bytes(), &name, b)?;
                let e = AuditEntry::decode(&plain).map_err(|e| RepoError::decoding(name.clone(), e))?;
                Ok((*blake3::hash(b).as_bytes(), e))
            };
            let res = if fresh {
                self.store().get(&name).map_err(RepoError::from).and_then(|b| open(&b))
            } else {
                self.cached_get("audit", &id.to_hex(), &name, open)
            };
            let (hash, entry) = match res {
                Ok((h, e)) => (h, Ok(e)),
                Err(RepoError::Storage(StorageError::NotFound { .. })) => continue,
                // Damaged (or written by a newer release): still hashed as stored, so the
                // chain can name it.
                Err(e) if e.is_damage() || matches!(&e, RepoError::NewerFormat { .. }) => match self.store().get(&name)
                {
                    Ok(b) => (*blake3::hash(&b).as_bytes(), Err(e.to_string())),
                    Err(StorageError::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e),
            };
            out.push(Listed { id, stored_ns: l.modified_ns, hash, entry });
        }
        out.sort_by_key(|l| (l.entry.as_ref().map(|e| e.seq).unwrap_or(u64::MAX), l.stored_ns, l.id));
        Ok(out)
    }

    /// Appends one entry naming the current heads; returns its id.
    pub fn append_audit(&self, r: &Record) -> Result<AuditId> {
        let all = self.load_audit(false)?;
        let (seq, prev) = links_for(&all);
        let (host, user) = who();
        let entry = AuditEntry {
            seq,
            prev,
            time_ns: crate::clock::to_unix_ns(crate::clock::now()),
            host,
            user,
            command: r.command.clone(),
            args: r.args.clone(),
            exit_code: r.exit_code,
            plan: r.plan.clone(),
            outcome: r.outcome.clone(),
            program_version: format!("coffer {}", env!("CARGO_PKG_VERSION")),
        };
        let id = AuditId::random();
        let sealed = self.seal_object(ObjectType::Audit, id.as_bytes(), &entry.encode(), 3);
        let hash = *blake3::hash(&sealed).as_bytes();
        self.store().put_new(&audit_path(&id), sealed)?;
        if let Some(seen) = self.seen() {
            seen.audit_wrote(&id.to_hex(), &hex::encode(hash), entry.seq);
        }
        Ok(id)
    }
}

/// A link to a predecessor: its id and the BLAKE3 hash of its stored object.
pub type Link = ([u8; 32], [u8; 32]);

/// The seq and the predecessors of an entry written after the entries `all`: every head
/// (an entry no other names), and one more than the largest seq.
pub fn links_for(all: &[Listed]) -> (u64, Vec<Link>) {
    let named: HashSet<AuditId> = all
        .iter()
        .filter_map(|l| l.entry.as_ref().ok())
        .flat_map(|e| e.prev.iter().map(|(id, _)| AuditId(*id)))
        .collect();
    let prev: Vec<Link> = all.iter().filter(|l| !named.contains(&l.id)).map(|l| (l.id.0, l.hash)).collect();
    let max_seq = all.iter().filter_map(|l| l.entry.as_ref().ok().map(|e| e.seq)).max();
    let seq = match max_seq {
        Some(s) => s + 1,
        None if prev.is_empty() => 0,
        None => 1,
    };
    (seq, prev)
}

/// This machine's host name and the user running the command.
pub fn who() -> (String, String) {
    let host = super::lock::this_machine().0;
    let user = uzers::get_current_username().map(|u| u.to_string_lossy().into_owned()).unwrap_or_default();
    (host, user)
}

/// Checks the whole chain (see the module docs). `remembered` are entries this client saw
/// as heads before: `(id hex, hash hex, seq)`.
pub fn verify(all: &[Listed], remembered: &[(String, String, u64)]) -> Verification {
    verify_with(all, remembered, super::lock::margin_ns())
}

/// [`verify`] with storage timestamps allowed to be misordered by `margin` ns.
pub fn verify_with(all: &[Listed], remembered: &[(String, String, u64)], margin: i64) -> Verification {
    let by_id: HashMap<AuditId, usize> = all.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
    let mut problems = Vec::new();
    let seq_of = |l: &Listed| l.entry.as_ref().ok().map(|e| e.seq);
    let mut named: HashSet<AuditId> = HashSet::new();
    for l in all {
        let e = match &l.entry {
            Ok(e) => e,
            Err(why) => {
                problems.push(Problem {
                    kind: "altered",
                    entry: l.id.to_hex(),
                    seq: None,
                    message: format!("entry {} does not read ({why}): it was altered", l.id.short()),
                });
                continue;
            }
        };
        for (pid, h) in &e.prev {
            let pid = AuditId(*pid);
            named.insert(pid);
            let Some(&pi) = by_id.get(&pid) else {
                problems.push(Problem {
                    kind: "removed",
                    entry: pid.to_hex(),
                    seq: e.seq.checked_sub(1),
                    message: format!(
                        "entry {} (seq {}) names its predecessor {}, which is missing: it was removed",
                        l.id.short(),
                        e.seq,
                        pid.short()
                    ),
                });
                continue;
            };
            let p = &all[pi];
            if p.hash != *h {
                problems.push(Problem {
                    kind: "altered",
                    entry: pid.to_hex(),
                    seq: seq_of(p).or(e.seq.checked_sub(1)),
                    message: format!(
                        "entry {} no longer has the content its successor {} (seq {}) recorded: it was altered",
                        pid.short(),
                        l.id.short(),
                        e.seq
                    ),
                });
            }
            if seq_of(p).is_some_and(|ps| ps >= e.seq) || p.stored_ns > l.stored_ns.saturating_add(margin) {
                problems.push(Problem {
                    kind: "reordered",
                    entry: l.id.to_hex(),
                    seq: Some(e.seq),
                    message: format!(
                        "entry {} (seq {}) comes before its predecessor {} (seq {}, stored {}): the chain was reordered",
                        l.id.short(),
                        e.seq,
                        pid.short(),
                        seq_of(p).map_or("?".into(), |s| s.to_string()),
                        crate::clock::from_unix_ns(p.stored_ns)
                    ),
                });
            }
        }
    }
    let (forks, concurrent) = find_forks(all, &by_id, margin);
    problems.extend(forks);
    for (id, hash, seq) in remembered {
        match AuditId::from_hex(id).and_then(|i| by_id.get(&i)) {
            None => problems.push(Problem {
                kind: "removed",
                entry: id.clone(),
                seq: Some(*seq),
                message: format!(
                    "entry {} (seq {seq}), which this client saw earlier, is missing: it was removed",
                    &id[..8.min(id.len())]
                ),
            }),
            Some(&i) if hex::encode(all[i].hash) != *hash => problems.push(Problem {
                kind: "altered",
                entry: id.clone(),
                seq: Some(*seq),
                message: format!(
                    "entry {} (seq {seq}) differs from what this client saw earlier: it was altered",
                    &id[..8.min(id.len())]
                ),
            }),
            Some(_) => {}
        }
    }
    problems.sort_by_key(|p| (p.seq.unwrap_or(u64::MAX), p.kind, p.entry.clone()));
    problems.dedup_by(|a, b| a.kind == b.kind && a.entry == b.entry);
    let heads = all.iter().filter(|l| !named.contains(&l.id)).map(|l| l.id.to_hex()).collect();
    Verification { entries: all.len(), heads, concurrent_forks: concurrent, problems }
}

/// Entries that do not descend from an entry stored more than `margin` before them, and
/// the number of forks within the margin (concurrent writers).
fn find_forks(all: &[Listed], by_id: &HashMap<AuditId, usize>, margin: i64) -> (Vec<Problem>, usize) {
    let n = all.len();
    let words = n.div_ceil(64);
    // Ancestor sets as bitsets, built in order of storage time (predecessors first, within
    // the margin; an entry whose predecessor comes later is reported as reordered anyway).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (all[i].stored_ns, all[i].entry.as_ref().map(|e| e.seq).unwrap_or(0)));
    let mut anc: Vec<Vec<u64>> = vec![vec![0; words]; n];
    let mut done = vec![false; n];
    let mut problems = Vec::new();
    let mut children: HashMap<usize, usize> = HashMap::new();
    for (k, &i) in order.iter().enumerate() {
        if let Ok(e) = &all[i].entry {
            for (pid, _) in &e.prev {
                if let Some(&p) = by_id.get(&AuditId(*pid)) {
                    *children.entry(p).or_default() += 1;
                    if done[p] {
                        let (a, b) = if p < i {
                            let (x, y) = anc.split_at_mut(i);
                            (&x[p], &mut y[0])
                        } else {
                            let (x, y) = anc.split_at_mut(p);
                            (&y[0], &mut x[i])
                        };
                        b.iter_mut().zip(a).for_each(|(d, s)| *d |= s);
                    }
                    anc[i][p / 64] |= 1 << (p % 64);
                }
            }
        }
        done[i] = true;
        let me = &all[i];
        if me.entry.is_err() {
            // Its links cannot be read (it is reported as altered): it is taken to follow
            // everything stored before it, so its successors are not reported as forks.
            for &j in &order[..k] {
                anc[i][j / 64] |= 1 << (j % 64);
            }
            continue;
        }
        // Every entry stored more than the margin before this one must be an ancestor.
        let missed = order[..k].iter().find(|&&j| {
            all[j].stored_ns.saturating_add(margin) < me.stored_ns && anc[i][j / 64] & (1 << (j % 64)) == 0
        });
        if let Some(&j) = missed {
            problems.push(Problem {
                kind: "forked",
                entry: me.id.to_hex(),
                seq: me.entry.as_ref().ok().map(|e| e.seq),
                message: format!(
                    "entry {} (stored {}) does not follow entry {} (stored {}, earlier): the chain was forked there",
                    me.id.short(),
                    crate::clock::from_unix_ns(me.stored_ns),
                    all[j].id.short(),
                    crate::clock::from_unix_ns(all[j].stored_ns)
                ),
            });
        }
    }
    let concurrent = children.values().filter(|&&c| c > 1).count();
    (problems, concurrent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: i64 = 5 * 60_000_000_000;

    fn entry(id: u8, seq: u64, prev: &[u8], stored_min: i64) -> Listed {
        let prev = prev.iter().map(|p| ([*p; 32], [*p; 32])).collect();
        Listed {
            id: AuditId([id; 32]),
            stored_ns: stored_min * 60_000_000_000,
            hash: [id; 32],
            entry: Ok(AuditEntry { seq, prev, ..Default::default() }),
        }
    }

    fn kinds(v: &Verification) -> Vec<&'static str> {
        v.problems.iter().map(|p| p.kind).collect()
    }

    mod concurrent {
        //! A stateful property test of the appending protocol between concurrent writers:
        //! each writer lists the entries visible at one moment and stores its entry a little
        //! later (within the storage margin, as a listing taken right before the write is);
        //! whatever the interleaving, the chain verifies, and removing or altering any entry
        //! that a later one names is reported.
        use super::super::*;
        use super::MARGIN;
        use proptest::prelude::*;

        const MIN: i64 = 60_000_000_000;

        /// `(start, lag)` per writer: it lists at minute `start` and stores `lag` seconds later.
        fn run(writers: &[(u8, u8)]) -> Vec<Listed> {
            let mut events: Vec<(i64, usize, bool)> = Vec::new();
            for (i, (start, lag)) in writers.iter().enumerate() {
                let t = i64::from(*start) * MIN;
                events.push((t, i, false));
                events.push((t + i64::from(*lag) * 1_000_000_000, i, true));
            }
            events.sort();
            let mut stored: Vec<Listed> = Vec::new();
            let mut seen: Vec<Option<Vec<Listed>>> = vec![None; writers.len()];
            for (t, i, put) in events {
                if !put {
                    seen[i] = Some(stored.clone());
                    continue;
                }
                let (seq, prev) = links_for(seen[i].as_ref().expect("listed first"));
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                let entry = AuditEntry { seq, prev, command: format!("w{i}"), ..Default::default() };
                let hash = *blake3::hash(&entry.encode()).as_bytes();
                stored.push(Listed { id: AuditId(id), stored_ns: t, hash, entry: Ok(entry) });
            }
            stored
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
            #[test]
            fn any_interleaving_verifies_and_tampering_is_found(
                writers in proptest::collection::vec((0u8..20, 0u8..240), 1..12),
                victim in any::<proptest::sample::Index>(),
            ) {
                                let all = run(&writers);
                let v = verify_with(&all, &[], MARGIN);
                prop_assert!(v.problems.is_empty(), "{:?}", v.problems);
                // Every entry but the heads is named by a later one: removing or altering it shows.
                let named: Vec<usize> = (0..all.len()).filter(|&i| !v.heads.contains(&all[i].id.to_hex())).collect();
                if !named.is_empty() {
                    let i = named[victim.index(named.len())];
                    let mut removed = all.clone();
                    removed.remove(i);
                    prop_assert!(verify_with(&removed, &[], MARGIN).problems.iter().any(|p| p.kind == "removed"));
                    let mut altered = all.clone();
                    altered[i].hash[0] ^= 1;
                    prop_assert!(verify_with(&altered, &[], MARGIN).problems.iter().any(|p| p.kind == "altered"));
                }
            }
        }
    }

    #[test]
    fn a_straight_chain_verifies() {
        let all = vec![entry(1, 0, &[], 0), entry(2, 1, &[1], 10), entry(3, 2, &[2], 20)];
        let v = verify_with(&all, &[], MARGIN);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.heads, vec![AuditId([3; 32]).to_hex()]);
    }

    #[test]
    fn concurrent_writers_fork_and_are_joined() {
        let all = vec![entry(1, 0, &[], 0), entry(2, 1, &[1], 10), entry(3, 1, &[1], 11), entry(4, 2, &[2, 3], 30)];
        let v = verify_with(&all, &[], MARGIN);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.concurrent_forks, 1);
    }

    #[test]
    fn removal_alteration_reordering_and_forks_are_found() {
        // Entry 2 removed.
        let all = vec![entry(1, 0, &[], 0), entry(3, 2, &[2], 20)];
        assert!(kinds(&verify_with(&all, &[], MARGIN)).contains(&"removed"));
        // Entry 2 unreadable: altered, and nothing after it is taken for a fork.
        let mut all = vec![entry(1, 0, &[], 0), entry(2, 1, &[1], 10), entry(3, 2, &[2], 20)];
        all[1].entry = Err("bad".into());
        assert_eq!(kinds(&verify_with(&all, &[], MARGIN)), vec!["altered"]);
        // Entry 2 altered: its hash no longer matches.
        let mut all = vec![entry(1, 0, &[], 0), entry(2, 1, &[1], 10), entry(3, 2, &[2], 20)];
        all[1].hash = [9; 32];
        assert_eq!(kinds(&verify_with(&all, &[], MARGIN)), vec!["altered"]);
        // Reordered: a successor with a lower seq.
        let all = vec![entry(1, 5, &[], 0), entry(2, 1, &[1], 10)];
        assert!(kinds(&verify_with(&all, &[], MARGIN)).contains(&"reordered"));
        // Forked: entry 4 branches off entry 1 long after entry 2 followed it.
        let all = vec![entry(1, 0, &[], 0), entry(2, 1, &[1], 10), entry(3, 2, &[2], 20), entry(4, 1, &[1], 60)];
        let v = verify_with(&all, &[], MARGIN);
        assert_eq!(kinds(&v), vec!["forked"], "{:?}", v.problems);
        assert_eq!(v.problems[0].entry, AuditId([4; 32]).to_hex());
        // The newest entry removed: only the client's memory of it tells.
        let all = vec![entry(1, 0, &[], 0), entry(2, 1, &[1], 10)];
        let seen = vec![(AuditId([3; 32]).to_hex(), hex::encode([3u8; 32]), 2)];
        assert_eq!(kinds(&verify_with(&all, &seen, MARGIN)), vec!["removed"]);
    }
}
