//! Hold records (`holds/<id>`, envelope type Hold): legal holds and their releases.
//!
//! Both are immutable objects, so a release never deletes the hold it ends (an Object Lock
//! bucket could not, and the audit trail keeps both). A hold is in force while no release
//! names it (docs/format.md, "Hold records").
//!
//! Payload layout: version u8 (= 1); kind u8 (0 hold, 1 release); time (i64 Unix ns, the
//! writer's clock); host, user, reason (strings); then for a hold, the snapshots it holds
//! (list of snapshot id (32) and that snapshot's root tree id (32), so a prune keeps the
//! data even of a held snapshot whose object was removed behind Coffer's back); for a
//! release, the id of the hold it releases (32).

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// `(snapshot id, root tree id)` of each held snapshot.
    Hold(Vec<([u8; 32], [u8; 32])>),
    /// The hold released.
    Release([u8; 32]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    pub time_ns: i64,
    pub host: String,
    pub user: String,
    pub reason: String,
    pub kind: HoldKind,
}

impl HoldRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u8(match self.kind {
            HoldKind::Hold(_) => 0,
            HoldKind::Release(_) => 1,
        });
        w.i64(self.time_ns);
        w.str(&self.host);
        w.str(&self.user);
        w.str(&self.reason);
        match &self.kind {
            HoldKind::Hold(v) => {
                w.len(v.len());
                for (s, t) in v {
                    w.id(s);
                    w.id(t);
                }
            }
            HoldKind::Release(h) => w.id(h),
        }
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "hold record", version });
        }
        let kind = r.u8()?;
        if kind > 1 {
            return Err(FormatError::UnknownKind { what: "hold record kind", value: kind });
        }
        let (time_ns, host, user, reason) = (r.i64()?, r.string()?, r.string()?, r.string()?);
        let kind = if kind == 0 {
            HoldKind::Hold(r.list(64, |r| Ok((r.id()?, r.id()?)))?)
        } else {
            HoldKind::Release(r.id()?)
        };
        r.finish()?;
        Ok(HoldRecord { time_ns, host, user, reason, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(time_ns in any::<i64>(), host in text(12), user in text(12), reason in text(40),
                      held in proptest::collection::vec((id(), id()), 0..5), release in proptest::option::of(id())) {
            let kind = match release { Some(h) => HoldKind::Release(h), None => HoldKind::Hold(held) };
            let h = HoldRecord { time_ns, host, user, reason, kind };
            prop_assert_eq!(HoldRecord::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn decode_never_panics(b in bytes(256)) {
            let _ = HoldRecord::decode(&b);
        }
    }
}
