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
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

impl Repository {
    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .store()
            .list("snapshots")?
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix("snapshots/").and_then(SnapshotId::from_name))
            .collect())
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = snapshot_path(id);
        self.cached_get("snapshots", &id.to_hex(), &name, |bytes| {
            let plain = self.open_object(ObjectType::Snapshot, id.as_bytes(), &name, bytes)?;
            Snapshot::decode(&plain).map_err(|e| RepoError::damaged(name.clone(), e))
        })
    }

    /// All snapshots, oldest first. Any unreadable snapshot is an error naming it.
    pub fn load_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut v = Vec::new();
        let ids = self.list_snapshot_ids()?;
        if let Some(c) = self.cache() {
            c.retain("snapshots", |n| SnapshotId::from_name(n).is_some_and(|id| ids.contains(&id)));
        }
        for id in ids {
            v.push((id, self.load_snapshot(&id)?));
        }
        v.sort_by_key(|a| (a.1.time_ns, a.0));
        Ok(v)
    }

    /// Writes a snapshot manifest (after the index that covers its data is durable).
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<SnapshotId> {
        let id = SnapshotId::random();
        let sealed = self.seal_object(ObjectType::Snapshot, id.as_bytes(), &s.encode(), 3);
        self.store().put_new(&snapshot_path(&id), sealed)?;
        Ok(id)
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
        let id = match_id(spec, &self.list_snapshot_ids()?)?;
        Ok((id, self.load_snapshot(&id)?))
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
