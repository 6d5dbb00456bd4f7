//! Policy documents, hold records and erasure records: small immutable objects under
//! `policy/`, `holds/` and `erasures/` (docs/format.md, format 4), written and listed here.
//!
//! What they mean (which policy is in effect, which holds are in force, what a snapshot's
//! minimum retention is) is decided in `retention::governance`; this module only moves them.
//! An unreadable record is an error naming it, never left out: a hold or a policy silently
//! skipped would let a snapshot be removed that must not be.

use super::{erasure_path, hold_path, policy_path, RepoError, Repository, Result};
use crate::format::envelope::ObjectType;
use crate::format::erasure::ErasureRecord;
use crate::format::hold::HoldRecord;
use crate::format::policy::PolicyDoc;
use crate::format::FormatError;
use crate::id::{ErasureId, HoldId, PolicyId};
use crate::storage::StorageError;

/// A record as listed: its id, the storage's timestamp of its object, its content.
#[derive(Clone, Debug)]
pub struct Stored<I, T> {
    pub id: I,
    pub stored_ns: i64,
    pub value: T,
}

struct Kind<I, T> {
    dir: &'static str,
    t: ObjectType,
    from_name: fn(&str) -> Option<I>,
    bytes: fn(&I) -> [u8; 32],
    path: fn(&I) -> String,
    decode: fn(&[u8]) -> std::result::Result<T, FormatError>,
}

const POLICY: Kind<PolicyId, PolicyDoc> = Kind {
    dir: "policy",
    t: ObjectType::Policy,
    from_name: PolicyId::from_name,
    bytes: |i| i.0,
    path: policy_path,
    decode: PolicyDoc::decode,
};
const HOLD: Kind<HoldId, HoldRecord> = Kind {
    dir: "holds",
    t: ObjectType::Hold,
    from_name: HoldId::from_name,
    bytes: |i| i.0,
    path: hold_path,
    decode: HoldRecord::decode,
};
const ERASURE: Kind<ErasureId, ErasureRecord> = Kind {
    dir: "erasures",
    t: ObjectType::Erasure,
    from_name: ErasureId::from_name,
    bytes: |i| i.0,
    path: erasure_path,
    decode: ErasureRecord::decode,
};

impl Repository {
    fn load_kind<I: Copy + Ord, T>(&self, k: &Kind<I, T>) -> Result<Vec<Stored<I, T>>> {
        let mut out = Vec::new();
        for l in self.store().list(k.dir)? {
            let Some(id) = l.path.strip_prefix(k.dir).and_then(|p| p.strip_prefix('/')).and_then(k.from_name) else {
                continue;
            };
            let name = (k.path)(&id);
            let key = (k.bytes)(&id);
            let got = self.cached_get(k.dir, &hex::encode(key), &name, |b| {
                let plain = self.open_object(k.t, &key, &name, b)?;
                (k.decode)(&plain).map_err(|e| RepoError::decoding(name.clone(), e))
            });
            match got {
                Ok(value) => out.push(Stored { id, stored_ns: l.modified_ns, value }),
                Err(RepoError::Storage(StorageError::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|s| (s.stored_ns, s.id));
        Ok(out)
    }

    fn save_kind<I, T>(&self, k: &Kind<I, T>, id: I, payload: &[u8]) -> Result<i64> {
        let name = (k.path)(&id);
        let sealed = self.seal_object(k.t, &(k.bytes)(&id), payload, 3);
        self.store().put_new(&name, sealed)?;
        Ok(self.store().head(&name)?.modified_ns)
    }

    /// Every policy document, oldest by storage time first.
    pub fn load_policies(&self) -> Result<Vec<Stored<PolicyId, PolicyDoc>>> {
        self.load_kind(&POLICY)
    }

    /// Writes a policy document; returns its id and the storage's timestamp of it.
    pub fn save_policy(&self, d: &PolicyDoc) -> Result<(PolicyId, i64)> {
        let id = PolicyId::random();
        Ok((id, self.save_kind(&POLICY, id, &d.encode())?))
    }

    /// Every hold and release, oldest by storage time first.
    pub fn load_holds(&self) -> Result<Vec<Stored<HoldId, HoldRecord>>> {
        self.load_kind(&HOLD)
    }

    /// Writes a hold record; returns its id and the storage's timestamp of it.
    pub fn save_hold(&self, h: &HoldRecord) -> Result<(HoldId, i64)> {
        let id = HoldId::random();
        let stored = self.save_kind(&HOLD, id, &h.encode())?;
        Ok((id, stored))
    }

    /// The erasure ledger, oldest first.
    pub fn load_erasures(&self) -> Result<Vec<Stored<ErasureId, ErasureRecord>>> {
        self.load_kind(&ERASURE)
    }

    pub fn save_erasure(&self, e: &ErasureRecord) -> Result<ErasureId> {
        let id = ErasureId::random();
        self.save_kind(&ERASURE, id, &e.encode())?;
        Ok(id)
    }
}
