//! Noticing a repository that went back in time (borg's "repository was replaced" check).
//!
//! Someone who can write to the storage (an attacker, a restore of the NAS from an old disk
//! image, a misbehaving replica) can put back an older copy of `snapshots/` and `index/`.
//! Every object would still authenticate, so nothing else notices, and the next backup
//! would reuse a sequence number. So each client keeps, outside the repository, the highest
//! sequence number it has seen for each host and which snapshot carried it (its *mark*),
//! in `<state dir>/<repository id>/seen.json`. Every time the snapshots are read, they are
//! compared with the marks:
//!
//! - **gone**: no snapshot of the host has the mark's sequence number or a higher one, and
//!   the marked snapshot is not merely damaged, nor one this client forgot itself (`forget`
//!   records that) → the repository went back, or another host forgot the newest snapshot;
//! - **reused**: a snapshot of the host has the mark's sequence number but is another
//!   snapshot (not one `tag` made of it: the chain's `original` is compared) → it went back
//!   and a backup has written since.
//!
//! Either is reported by every command; a backup refuses to write until the operator says
//! it is expected (`--accept-rollback`), which moves the marks to what the repository holds
//! now. Marks only move forward otherwise, and a backup numbers its snapshot above both the
//! repository's and the mark's highest, so a sequence number is never reused.
//!
//! The file is written atomically (a temporary file, fsync, rename). Two processes updating
//! it at once may lose one update; marks are rebuilt forward at the next read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::snapshots::{DamagedSnapshot, ListedSnapshot};
use crate::id::SnapshotId;

/// What this client last saw of one host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub seq: u64,
    /// The snapshot that carried `seq` (hex).
    pub snapshot: String,
    /// The first snapshot of its `tag` chain (hex): the same snapshot under another id.
    pub original: String,
    /// This client removed it (`forget`): its absence is no rollback.
    #[serde(default)]
    pub forgotten: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct State {
    hosts: BTreeMap<String, Mark>,
    /// Snapshots this client removed, newest last (at most [`FORGOTTEN_KEPT`]): a mark
    /// naming one is no sign of a rollback, even if another process of this client set the
    /// mark after the removal was noted.
    #[serde(default)]
    forgotten: Vec<String>,
}

/// How many removed snapshot ids the state remembers.
const FORGOTTEN_KEPT: usize = 10_000;

/// A sign that the repository went back in time, for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollback {
    pub host: String,
    pub mark: Mark,
    /// The highest sequence number the repository has now for the host.
    pub now_seq: Option<u64>,
    /// The mark's sequence number is carried by another snapshot.
    pub reused: bool,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = &self.mark.snapshot[..8.min(self.mark.snapshot.len())];
        if self.reused {
            write!(
                f,
                "the repository went back in time: host {} has sequence number {} again, on another snapshot than \
                 {short} seen before (the snapshots were replaced by an older copy, and a backup has written since)",
                self.host, self.mark.seq
            )
        } else {
            let now = self.now_seq.map_or("none".to_string(), |s| s.to_string());
            write!(
                f,
                "the repository may have gone back in time: snapshot {short} of host {} (sequence number {}) seen \
                 before is gone and no later one exists (highest now: {now}); if another host forgot it, this is \
                 expected",
                self.host, self.mark.seq
            )
        }
    }
}

/// The marks of one repository, and what the last comparison found.
pub struct Seen {
    path: PathBuf,
    state: Mutex<State>,
    found: Mutex<Vec<Rollback>>,
}

fn root_of(s: &ListedSnapshot) -> String {
    hex::encode(s.snapshot.original.unwrap_or(s.id.0))
}

impl Seen {
    /// The marks kept under `dir/<repo id>/seen.json` (an unreadable file counts as none).
    pub fn open(dir: &Path, repo_id: &str) -> Seen {
        let path = dir.join(repo_id).join("seen.json");
        let state = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Seen { path, state: Mutex::new(state), found: Mutex::new(Vec::new()) }
    }

    /// The marks as they are now, before the snapshots are listed: a mark set after the
    /// listing began (another process of this client wrote a snapshot meanwhile) names a
    /// snapshot the listing may not show, so only these are compared ([`Self::observe`]).
    pub fn marks_now(&self) -> BTreeMap<String, Mark> {
        let mut state = self.state.lock().expect("poisoned");
        self.merge_from_disk(&mut state);
        state.hosts.clone()
    }

    /// Compares the snapshots read now with the marks `pre` (taken before the listing);
    /// moves marks forward where the repository did; returns (and keeps) the rollbacks found.
    pub fn observe(
        &self,
        pre: &BTreeMap<String, Mark>,
        ok: &[ListedSnapshot],
        damaged: &[DamagedSnapshot],
    ) -> Vec<Rollback> {
        let mut newest: BTreeMap<&str, &ListedSnapshot> = BTreeMap::new();
        for s in ok {
            let e = newest.entry(s.snapshot.host.as_str()).or_insert(s);
            if s.snapshot.seq > e.snapshot.seq {
                *e = s;
            }
        }
        let mut state = self.state.lock().expect("poisoned");
        self.merge_from_disk(&mut state);
        let before = state.clone();
        let forgotten = state.forgotten.clone();
        let mut found = Vec::new();
        for (host, mark) in pre {
            let now = newest.get(host.as_str());
            let present = ok.iter().any(|s| s.snapshot.host == *host && root_of(s) == mark.original)
                || damaged.iter().any(|d| d.id.to_hex() == mark.snapshot);
            let forgot = mark.forgotten
                || state_forgot(&forgotten, &mark.snapshot)
                || state.hosts.get(host).is_some_and(|m| m.snapshot == mark.snapshot && m.forgotten);
            // Concurrent backups of one host may share a number: only a marked snapshot that
            // is gone (and that this client did not forget) says anything.
            if !present && !forgot {
                let reused = ok.iter().any(|s| s.snapshot.host == *host && s.snapshot.seq == mark.seq);
                let gone = now.is_none_or(|n| n.snapshot.seq < mark.seq);
                if reused || gone {
                    found.push(Rollback {
                        host: host.clone(),
                        mark: mark.clone(),
                        now_seq: now.map(|n| n.snapshot.seq),
                        reused,
                    });
                }
            }
        }
        for (host, mark) in state.hosts.iter_mut() {
            if found.iter().any(|r| r.host == *host) {
                continue;
            }
            match newest.get(host.as_str()) {
                Some(n) if n.snapshot.seq > mark.seq => *mark = mark_of(n),
                // The marked snapshot under a new id (`tag`): follow it.
                Some(n) if n.snapshot.seq == mark.seq && root_of(n) == mark.original => *mark = mark_of(n),
                _ => {}
            }
        }
        for (host, s) in &newest {
            state.hosts.entry(host.to_string()).or_insert_with(|| mark_of(s));
        }
        if *state != before {
            self.save(&mut state);
        }
        *self.found.lock().expect("poisoned") = found.clone();
        found
    }

    /// What the last comparison found.
    pub fn rollbacks(&self) -> Vec<Rollback> {
        self.found.lock().expect("poisoned").clone()
    }

    /// The operator accepts the repository as it is: marks move to what it holds now.
    pub fn accept(&self, ok: &[ListedSnapshot]) {
        let mut state = self.state.lock().expect("poisoned");
        for r in self.found.lock().expect("poisoned").drain(..) {
            let now = ok.iter().filter(|s| s.snapshot.host == r.host).max_by_key(|s| s.snapshot.seq);
            match now {
                // The mark keeps the highest number seen, so it is never handed out again.
                Some(s) => {
                    let keep = state.hosts.get(&r.host).map_or(0, |m| m.seq);
                    let mut m = mark_of(s);
                    if keep > m.seq {
                        m = Mark { seq: keep, forgotten: true, ..r.mark.clone() };
                    }
                    state.hosts.insert(r.host, m);
                }
                None => {
                    state.hosts.insert(r.host, Mark { forgotten: true, ..r.mark });
                }
            }
        }
        self.save(&mut state);
    }

    /// This client removed these snapshots (`forget`, `tag`): their absence is expected.
    pub fn forgot(&self, ids: &[SnapshotId]) {
        if ids.is_empty() {
            return;
        }
        let mut state = self.state.lock().expect("poisoned");
        self.merge_from_disk(&mut state);
        for m in state.hosts.values_mut() {
            if ids.iter().any(|id| id.to_hex() == m.snapshot) {
                m.forgotten = true;
            }
        }
        state.forgotten.extend(ids.iter().map(|id| id.to_hex()));
        let n = state.forgotten.len();
        state.forgotten.drain(..n.saturating_sub(FORGOTTEN_KEPT));
        self.save(&mut state);
    }

    /// This client wrote a snapshot: it is the host's mark if its number is higher.
    pub fn wrote(&self, id: SnapshotId, snapshot: &crate::format::snapshot::Snapshot) {
        let mut state = self.state.lock().expect("poisoned");
        let s = ListedSnapshot { id, snapshot: snapshot.clone(), stored_ns: 0 };
        let m = state.hosts.entry(snapshot.host.clone()).or_insert_with(|| mark_of(&s));
        if snapshot.seq >= m.seq {
            *m = mark_of(&s);
        }
        self.save(&mut state);
    }

    /// The highest sequence number this client has seen for `host`.
    pub fn seq(&self, host: &str) -> u64 {
        self.state.lock().expect("poisoned").hosts.get(host).map_or(0, |m| m.seq)
    }
}

impl Seen {
    /// Writes the marks, merged with what another process may have written meanwhile
    /// (under an exclusive `flock` of `seen.lock`): per host the higher number wins, and a
    /// snapshot forgotten by either stays forgotten.
    fn save(&self, state: &mut State) {
        let Some(dir) = self.path.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let Ok(lock) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("seen.lock"))
        else {
            return;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).is_err() {
            return;
        }
        self.merge_from_disk(state);
        let _ = write_atomically(&self.path, &serde_json::to_vec_pretty(&*state).unwrap_or_default());
    }

    /// Takes in what another process wrote since (see [`Self::save`]).
    fn merge_from_disk(&self, state: &mut State) {
        let on_disk: State =
            std::fs::read(&self.path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let known: std::collections::HashSet<String> = state.forgotten.iter().cloned().collect();
        for id in on_disk.forgotten {
            if !known.contains(&id) {
                state.forgotten.push(id);
            }
        }
        let n = state.forgotten.len();
        state.forgotten.drain(..n.saturating_sub(FORGOTTEN_KEPT));
        for (host, theirs) in on_disk.hosts {
            match state.hosts.get_mut(&host) {
                None => {
                    state.hosts.insert(host, theirs);
                }
                Some(mine) if theirs.seq > mine.seq => *mine = theirs,
                Some(mine) if theirs.seq == mine.seq && theirs.original == mine.original => {
                    mine.forgotten |= theirs.forgotten;
                }
                Some(_) => {}
            }
        }
    }
}

fn state_forgot(forgotten: &[String], id: &str) -> bool {
    forgotten.iter().any(|f| f == id)
}

fn mark_of(s: &ListedSnapshot) -> Mark {
    Mark { seq: s.snapshot.seq, snapshot: s.id.to_hex(), original: root_of(s), forgotten: false }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The audit entries this client last saw as the chain's newest: `(id hex, hash hex, seq)`,
/// kept in `audit.json` beside the marks, so `audit --verify` notices the newest entries
/// being removed (no link names them).
impl Seen {
    fn audit_file(&self) -> PathBuf {
        self.path.with_file_name("audit.json")
    }

    pub fn audit_remembered(&self) -> Vec<(String, String, u64)> {
        std::fs::read(self.audit_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Remembers `heads` in place of what was remembered (after a verification).
    pub fn audit_saw(&self, heads: Vec<(String, String, u64)>) {
        let _ = write_atomically(&self.audit_file(), &serde_json::to_vec(&heads).unwrap_or_default());
    }

    /// Remembers an entry this client just wrote, beside those remembered with a seq as high.
    pub fn audit_wrote(&self, id: &str, hash: &str, seq: u64) {
        let mut v = self.audit_remembered();
        v.retain(|(_, _, s)| *s >= seq);
        v.push((id.to_string(), hash.to_string(), seq));
        self.audit_saw(v);
    }
}
