//! Reading, writing and choosing snapshots.

use super::{snapshot_path, RepoError, Repository, Result};
use crate::format::envelope::ObjectType;
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;

/// Filters applied by `snapshots`, `latest` and friends.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    /// Snapshots that backed up exactly this path (among others).
    pub paths: Vec<Vec<u8>>,
    /// Only snapshots whose paths are `paths`, no more (`--exact-paths`).
    pub exact_paths: bool,
    /// Only snapshots whose tags are `tags`, no more (`--exact-tags`; no tags: untagged ones).
    pub exact_tags: bool,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.contains(p))
            && (!self.exact_paths || s.paths.iter().all(|p| self.paths.contains(p)))
            && (!self.exact_tags || s.tags.iter().all(|t| self.tags.contains(t)))
    }
}

/// A snapshot listed but unreadable (damaged): left out of everything, reported by id.
#[derive(Clone, Debug)]
pub struct DamagedSnapshot {
    pub id: SnapshotId,
    pub stored_ns: i64,
    pub reason: String,
}

/// A snapshot as listed: its id, content, and the storage's timestamp for its object
/// (Unix ns), which forget compares with the time the snapshot claims.
#[derive(Clone, Debug)]
pub struct ListedSnapshot {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub stored_ns: i64,
}

impl Repository {
    /// Deletes a snapshot this client removes (forget, and the originals of a rewrite or a
    /// repair): noted first as forgotten by this client (rollback detection), then deleted,
    /// then dropped from the cache. One already gone counts as deleted.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        if let Some(seen) = self.seen() {
            seen.forgot(&[*id]);
        }
        self.store().delete(&snapshot_path(id))?;
        if let Some(c) = self.cache() {
            c.remove("snapshots", &id.to_hex());
        }
        Ok(())
    }

    /// The snapshots in storage, with the storage's timestamps.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, i64)>> {
        Ok(self
            .store()
            .list("snapshots")?
            .into_iter()
            .filter_map(|l| Some((l.path.strip_prefix("snapshots/").and_then(SnapshotId::from_name)?, l.modified_ns)))
            .collect())
    }

    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.list_snapshots()?.into_iter().map(|(id, _)| id).collect())
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = snapshot_path(id);
        self.cached_get("snapshots", &id.to_hex(), &name, |bytes| {
            let plain = self.open_object(ObjectType::Snapshot, id.as_bytes(), &name, bytes)?;
            Snapshot::decode(&plain).map_err(|e| RepoError::decoding(name.clone(), e))
        })
    }

    /// All snapshots, oldest first. Any unreadable snapshot is an error naming it.
    pub fn load_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        Ok(self.load_snapshots_listed()?.into_iter().map(|l| (l.id, l.snapshot)).collect())
    }

    /// All readable snapshots with the storage's timestamps, oldest (by claimed time) first.
    /// A damaged snapshot is left out with a warning (see [`Self::load_snapshots_all`]).
    pub fn load_snapshots_listed(&self) -> Result<Vec<ListedSnapshot>> {
        let (ok, damaged) = self.load_snapshots_all()?;
        for d in &damaged {
            self.warnings().warn(format!(
                "{}: {}; the snapshot is left out (`coffer forget {}` removes it)",
                snapshot_path(&d.id),
                d.reason,
                d.id.short()
            ));
        }
        Ok(ok)
    }

    /// Every snapshot listed: the readable ones (oldest by claimed time first) and the
    /// damaged ones. A snapshot listed but gone when read was replaced (tag writes the new
    /// one first) or removed: the listing is then taken again, so a replacement is not
    /// missed. Storage that cannot be reached, and snapshots of a newer format, are errors.
    pub fn load_snapshots_all(&self) -> Result<(Vec<ListedSnapshot>, Vec<DamagedSnapshot>)> {
        for _ in 0..4 {
            let marks = self.seen().map(|s| s.marks_now());
            if let Some(v) = self.try_load_snapshots_listed()? {
                if let (Some(seen), Some(marks)) = (self.seen(), marks) {
                    for r in seen.observe(&marks, &v.0, &v.1) {
                        self.warnings()
                            .warn(format!("{r} (a backup refuses to write until run with --accept-rollback)"));
                    }
                }
                return Ok(v);
            }
        }
        Err(RepoError::Invalid("snapshots/ keeps changing while it is read; try again".into()))
    }

    #[allow(clippy::type_complexity)]
    fn try_load_snapshots_listed(&self) -> Result<Option<(Vec<ListedSnapshot>, Vec<DamagedSnapshot>)>> {
        let (mut v, mut damaged) = (Vec::new(), Vec::new());
        let listed = self.list_snapshots()?;
        if let Some(c) = self.cache() {
            let ids: std::collections::HashSet<SnapshotId> = listed.iter().map(|(id, _)| *id).collect();
            c.retain("snapshots", |n| SnapshotId::from_name(n).is_some_and(|id| ids.contains(&id)));
        }
        for (id, stored_ns) in listed {
            match self.load_snapshot(&id) {
                Ok(snapshot) => v.push(ListedSnapshot { id, snapshot, stored_ns }),
                Err(RepoError::Storage(crate::storage::StorageError::NotFound { .. })) => return Ok(None),
                Err(RepoError::Damaged { reason, .. }) => damaged.push(DamagedSnapshot { id, stored_ns, reason }),
                Err(e) => return Err(e),
            }
        }
        v.sort_by_key(|a| (a.snapshot.time_ns, a.id));
        damaged.sort_by_key(|d| (d.stored_ns, d.id));
        Ok(Some((v, damaged)))
    }

    /// Writes a snapshot manifest (after the index that covers its data is durable).
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<SnapshotId> {
        let id = SnapshotId::random();
        let sealed = self.seal_object(ObjectType::Snapshot, id.as_bytes(), &s.encode(), 3);
        self.store().put_new(&snapshot_path(&id), sealed)?;
        if let Some(seen) = self.seen() {
            seen.wrote(id, s);
        }
        Ok(id)
    }

    /// Writes a copy of snapshot `id` with `tags` (snapshots are immutable), then deletes
    /// the original; the copy records the first snapshot of the chain as its original.
    /// Returns the new id, or `None` when the tags are already those.
    pub fn retag(&self, id: &SnapshotId, s: &Snapshot, tags: Vec<String>) -> Result<Option<SnapshotId>> {
        if tags == s.tags {
            return Ok(None);
        }
        let mut new = s.clone();
        new.tags = tags;
        new.original = Some(s.original.unwrap_or(id.0));
        let new_id = self.save_snapshot(&new)?;
        if let Some(seen) = self.seen() {
            seen.forgot(&[*id]);
        }
        self.store().delete(&snapshot_path(id))?;
        if let Some(c) = self.cache() {
            c.remove("snapshots", &id.to_hex());
        }
        Ok(Some(new_id))
    }

    /// Resolves `latest`, a full id, or a unique prefix of at least 8 hex digits.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            let all = self.load_snapshots()?;
            return all
                .into_iter()
                .rfind(|(_, s)| filter.matches(s))
                .ok_or_else(|| RepoError::Invalid("no snapshot matches (the repository has none that fit)".into()));
        }
        // Every snapshot is read (not just the one named), so a repository that went back in
        // time is noticed here too (repo::rollback); a damaged one named is an error.
        let (ok, damaged) = self.load_snapshots_all()?;
        let ids: Vec<SnapshotId> = ok.iter().map(|l| l.id).chain(damaged.iter().map(|d| d.id)).collect();
        let id = match_id(spec, &ids)?;
        match ok.into_iter().find(|l| l.id == id) {
            Some(l) => Ok((id, l.snapshot)),
            None => Ok((id, self.load_snapshot(&id)?)),
        }
    }
}

/// The one id among `ids` that `spec` names: a full id or a unique prefix of at least 8
/// hex digits (`latest` is for the caller, which knows the times).
pub fn match_id(spec: &str, ids: &[SnapshotId]) -> Result<SnapshotId> {
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.len() < 8 || spec_l.len() > 64 || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!(
            "{spec:?} is not a snapshot id: give `latest`, a full id or at least 8 hex digits"
        )));
    }
    let found: Vec<&SnapshotId> = ids.iter().filter(|id| id.to_hex().starts_with(&spec_l)).collect();
    match found.as_slice() {
        [one] => Ok(**one),
        [] => Err(RepoError::Invalid(format!("no snapshot with id {spec}"))),
        _ => Err(RepoError::Invalid(format!("snapshot id prefix {spec} is ambiguous"))),
    }
}
