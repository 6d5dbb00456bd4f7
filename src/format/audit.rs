//! Audit entries (`audit/<id>`, envelope type Audit): one per destructive or administrative
//! operation, linked into a hash chain.
//!
//! Each entry names the entries that were the chain's heads when it was written (normally
//! one; several when concurrent writers forked the chain, which this entry then joins) by id
//! and by the BLAKE3 hash of their stored objects, so removing, reordering or altering any
//! entry breaks a link that `audit --verify` checks (docs/format.md, "Audit entries").
//!
//! Payload layout: version u8 (= 1); seq u64 (one more than the largest seq among the
//! entries it names; 0 for the first); previous entries (list of id (32) and hash (32));
//! time (i64 Unix ns, the writer's clock); host, user, command (strings); arguments (list
//! of strings); exit code i32; plan and outcome (strings, JSON documents or empty);
//! program version (string).

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    /// `(entry id, BLAKE3 of its stored object)`.
    pub prev: Vec<([u8; 32], [u8; 32])>,
    pub time_ns: i64,
    pub host: String,
    pub user: String,
    pub command: String,
    pub args: Vec<String>,
    pub exit_code: i32,
    pub plan: String,
    pub outcome: String,
    pub program_version: String,
}

impl AuditEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u64(self.seq);
        w.len(self.prev.len());
        for (id, h) in &self.prev {
            w.id(id);
            w.id(h);
        }
        w.i64(self.time_ns);
        w.str(&self.host);
        w.str(&self.user);
        w.str(&self.command);
        w.len(self.args.len());
        self.args.iter().for_each(|a| w.str(a));
        w.i32(self.exit_code);
        w.str(&self.plan);
        w.str(&self.outcome);
        w.str(&self.program_version);
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "audit entry", version });
        }
        let seq = r.u64()?;
        let prev = r.list(64, |r| Ok((r.id()?, r.id()?)))?;
        if seq == 0 && !prev.is_empty() {
            return Err(FormatError::Invalid("an audit entry with predecessors has seq 0"));
        }
        let e = AuditEntry {
            seq,
            prev,
            time_ns: r.i64()?,
            host: r.string()?,
            user: r.string()?,
            command: r.string()?,
            args: r.list(4, |r| r.string())?,
            exit_code: r.i32()?,
            plan: r.string()?,
            outcome: r.string()?,
            program_version: r.string()?,
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
        fn round_trip(seq in 1u64.., prev in proptest::collection::vec((id(), id()), 0..3), time_ns in any::<i64>(),
                      host in text(10), user in text(10), command in text(10), args in proptest::collection::vec(text(10), 0..4),
                      exit_code in any::<i32>(), plan in text(40), outcome in text(40), program_version in text(10)) {
            let e = AuditEntry { seq, prev, time_ns, host, user, command, args, exit_code, plan, outcome, program_version };
            prop_assert_eq!(AuditEntry::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn decode_never_panics(b in bytes(256)) {
            let _ = AuditEntry::decode(&b);
        }
    }
}
