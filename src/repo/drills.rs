//! Drill records: immutable, encrypted objects under `drills/` (docs/format.md, "Drill
//! records"), so every host, a fresh one with only the URL and the password included, sees
//! the history of recovery drills.

use super::{drill_path, RepoError, Repository, Result};
use crate::format::drill::DrillRecord;
use crate::format::envelope::ObjectType;
use crate::id::DrillId;

impl Repository {
    /// Writes one drill record.
    pub fn save_drill(&self, r: &DrillRecord) -> Result<DrillId> {
        let id = DrillId::random();
        let sealed = self.seal_object(ObjectType::Drill, id.as_bytes(), &r.encode(), 3);
        self.store().put_new(&drill_path(&id), sealed)?;
        Ok(id)
    }

    /// Every drill record, oldest first; unreadable ones are warned about and left out.
    pub fn load_drills(&self) -> Result<Vec<(DrillId, DrillRecord)>> {
        let mut out = Vec::new();
        for l in self.store().list("drills")? {
            let Some(id) = l.path.strip_prefix("drills/").and_then(DrillId::from_name) else { continue };
            let name = drill_path(&id);
            let rec = match self.store().get(&name) {
                Ok(b) => self
                    .open_object(ObjectType::Drill, id.as_bytes(), &name, &b)
                    .and_then(|p| DrillRecord::decode(&p).map_err(|e| RepoError::decoding(name.clone(), e))),
                Err(crate::storage::StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match rec {
                Ok(r) => out.push((id, r)),
                Err(e) if e.is_damage() => self.warnings().warn(format!("{e}; the drill record is left out")),
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|(id, r)| (r.time_ns, *id));
        Ok(out)
    }
}
