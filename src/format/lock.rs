//! Lock objects (`locks/<id>`, envelope type Lock): who is writing to the repository.
//!
//! Payload layout (docs/format.md, "Locks"): version u8 (= 1); kind u8 (1 writer: a backup
//! or copy; 2 prune; 3 reader: a restore, or the source of a copy); session id (32 random bytes, shared by every lock object one process
//! writes while it runs); host, boot id (strings); pid u32; pid namespace (string); user
//! name, command (strings);
//! the writer's own clock at writing, i64 Unix ns (shown to people, never used to decide).

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

/// What the session holding a lock does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// A backup or copy: adds packs, index files and snapshots, never deletes data.
    Writer = 1,
    /// A prune: at most one runs at a time.
    Prune = 2,
    /// A restore (or the source of a copy): reads packs a prune must not delete under it.
    /// Written where the credentials allow it; read-only credentials read without one.
    Reader = 3,
}

impl LockKind {
    fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            1 => Ok(LockKind::Writer),
            2 => Ok(LockKind::Prune),
            3 => Ok(LockKind::Reader),
            _ => Err(FormatError::Invalid("unknown lock kind")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Writer => "writer",
            LockKind::Prune => "prune",
            LockKind::Reader => "reader",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub kind: LockKind,
    pub session: [u8; 32],
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: with the host name, tells whether `pid` is a
    /// process of this very boot of this machine.
    pub boot_id: String,
    pub pid: u32,
    /// The pid namespace `pid` belongs to (`readlink /proc/self/ns/pid`, e.g.
    /// `pid:[4026531836]`): containers that share the host's name and boot id have their own.
    pub pid_ns: String,
    pub username: String,
    pub command: String,
    /// The writer's clock when it wrote the lock, Unix ns: for people only.
    pub client_time_ns: i64,
}

impl Lock {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u8(self.kind as u8);
        w.id(&self.session);
        w.str(&self.host);
        w.str(&self.boot_id);
        w.u32(self.pid);
        w.str(&self.pid_ns);
        w.str(&self.username);
        w.str(&self.command);
        w.i64(self.client_time_ns);
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "lock", version });
        }
        let lock = Lock {
            kind: LockKind::from_u8(r.u8()?)?,
            session: r.id()?,
            host: r.string()?,
            boot_id: r.string()?,
            pid: r.u32()?,
            pid_ns: r.string()?,
            username: r.string()?,
            command: r.string()?,
            client_time_ns: r.i64()?,
        };
        r.finish()?;
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(kind in 1u8..=3, session in id(), host in text(10), boot in text(10), pid in any::<u32>(),
                      ns in text(12), user in text(8), command in text(20), t in any::<i64>()) {
            let l = Lock { kind: LockKind::from_u8(kind).unwrap(), session, host, boot_id: boot, pid, pid_ns: ns,
                username: user, command, client_time_ns: t };
            prop_assert_eq!(Lock::decode(&l.encode()).unwrap(), l);
        }

        #[test]
        fn decode_never_panics(b in bytes(200)) {
            let _ = Lock::decode(&b);
        }
    }
}
