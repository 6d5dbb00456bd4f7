//! Erasure records (`erasures/<id>`, envelope type Erasure): the ledger of `rewrite`s that
//! removed paths from snapshots (GDPR Art. 17), so a restore of an older snapshot that still
//! holds an erased path (one a hold, the minimum retention or an object lock keeps) can
//! warn, and leave those paths out (docs/format.md, "Erasure records").
//!
//! Payload layout: version u8 (= 1); time (i64 Unix ns, the writer's clock); host, user,
//! reason (strings); patterns (list of strings, `--exclude` syntax); rewritten (list of the
//! old snapshot id (32) and the new one (32)); kept (list of an old snapshot id (32) that
//! could not be removed, and why (string)).

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErasureRecord {
    pub time_ns: i64,
    pub host: String,
    pub user: String,
    pub reason: String,
    pub patterns: Vec<String>,
    pub rewritten: Vec<([u8; 32], [u8; 32])>,
    pub kept: Vec<([u8; 32], String)>,
}

impl ErasureRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.i64(self.time_ns);
        w.str(&self.host);
        w.str(&self.user);
        w.str(&self.reason);
        w.len(self.patterns.len());
        self.patterns.iter().for_each(|p| w.str(p));
        w.len(self.rewritten.len());
        for (a, b) in &self.rewritten {
            w.id(a);
            w.id(b);
        }
        w.len(self.kept.len());
        for (a, why) in &self.kept {
            w.id(a);
            w.str(why);
        }
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "erasure record", version });
        }
        let e = ErasureRecord {
            time_ns: r.i64()?,
            host: r.string()?,
            user: r.string()?,
            reason: r.string()?,
            patterns: r.list(4, |r| r.string())?,
            rewritten: r.list(64, |r| Ok((r.id()?, r.id()?)))?,
            kept: r.list(36, |r| Ok((r.id()?, r.string()?)))?,
        };
        r.finish()?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(time_ns in any::<i64>(), host in text(10), user in text(10), reason in text(30),
                      patterns in proptest::collection::vec(text(12), 0..4),
                      rewritten in proptest::collection::vec((id(), id()), 0..4),
                      kept in proptest::collection::vec((id(), text(20)), 0..3)) {
            let e = ErasureRecord { time_ns, host, user, reason, patterns, rewritten, kept };
            prop_assert_eq!(ErasureRecord::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn decode_never_panics(b in bytes(256)) {
            let _ = ErasureRecord::decode(&b);
        }
    }
}
