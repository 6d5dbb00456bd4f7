//! The repository config payload (object `config`, envelope type Config).
//!
//! Layout (docs/format.md, "Config"): version u8 (the repository format version: 4; 3, 2 or
//! 1 for repositories made before audit logs, damage records, or locks and prune existed);
//! repo id (32); created (i64 Unix ns); chunker algorithm u8 (1 = FastCDC 2020 with a keyed
//! gear table); chunk min, avg, max (u32 each); normalization level u8; default zstd level
//! i32; pack target size u32; from version 4 on, the object lock mode u8 (0 none,
//! 1 governance, 2 compliance) and, when not 0, the retention every object is written with
//! (u64 seconds).

use super::codec::{Reader, Writer};
use super::FormatError;

/// The repository format version `init` writes (docs/format.md, "Format version").
pub const VERSION: u8 = 4;
/// The oldest repository format version this release reads and writes.
pub const OLDEST_VERSION: u8 = 1;
pub const CHUNKER_FASTCDC2020_KEYED: u8 = 1;

/// Chunker parameters fixed at `init` (changing them would defeat deduplication).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub normalization: u8,
}

impl ChunkerParams {
    /// The defaults, justified in docs/format.md: 512 KiB / 1 MiB / 8 MiB, level 1.
    pub const DEFAULT: ChunkerParams =
        ChunkerParams { min: 512 * 1024, avg: 1024 * 1024, max: 8 * 1024 * 1024, normalization: 1 };

    /// Checks the limits the chunker accepts (docs/format.md).
    pub fn validate(&self) -> Result<(), FormatError> {
        let ok = (64..=1 << 20).contains(&self.min)
            && (256..=1 << 22).contains(&self.avg)
            && (1024..=1 << 24).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
            && self.avg.is_power_of_two()
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(FormatError::Invalid("chunker parameters out of range"))
        }
    }
}

/// S3 Object Lock (WORM) mode, as S3 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Governance = 1,
    Compliance = 2,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// Object Lock settings fixed at `init`: every object is written locked for `retention_s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub retention_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The format version the repository was created with (config is written once).
    pub version: u8,
    pub repo_id: [u8; 32],
    pub created_ns: i64,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_target_size: u32,
    /// Version 4 and later only (`None` before).
    pub object_lock: Option<ObjectLock>,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.version);
        w.id(&self.repo_id);
        w.i64(self.created_ns);
        w.u8(CHUNKER_FASTCDC2020_KEYED);
        w.u32(self.chunker.min);
        w.u32(self.chunker.avg);
        w.u32(self.chunker.max);
        w.u8(self.chunker.normalization);
        w.i32(self.compression_level);
        w.u32(self.pack_target_size);
        if self.version >= 4 {
            match self.object_lock {
                None => w.u8(0),
                Some(l) => {
                    w.u8(l.mode as u8);
                    w.u64(l.retention_s);
                }
            }
        }
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion { what: "repository", version });
        }
        let repo_id = r.id()?;
        let created_ns = r.i64()?;
        if r.u8()? != CHUNKER_FASTCDC2020_KEYED {
            return Err(FormatError::Invalid("unknown chunker"));
        }
        let chunker = ChunkerParams { min: r.u32()?, avg: r.u32()?, max: r.u32()?, normalization: r.u8()? };
        let (compression_level, pack_target_size) = (r.i32()?, r.u32()?);
        let object_lock = if version >= 4 {
            let mode = match r.u8()? {
                0 => None,
                1 => Some(LockMode::Governance),
                2 => Some(LockMode::Compliance),
                v => return Err(FormatError::UnknownKind { what: "object lock mode", value: v }),
            };
            match mode {
                None => None,
                Some(mode) => {
                    let retention_s = r.u64()?;
                    if retention_s == 0 {
                        return Err(FormatError::Invalid("object lock with a zero retention"));
                    }
                    Some(ObjectLock { mode, retention_s })
                }
            }
        } else {
            None
        };
        let c = Config { version, repo_id, created_ns, chunker, compression_level, pack_target_size, object_lock };
        r.finish()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(version in OLDEST_VERSION..=VERSION, repo_id in id(), created_ns in any::<i64>(), min in any::<u32>(), avg in any::<u32>(),
                      max in any::<u32>(), n in any::<u8>(), level in any::<i32>(), pack in any::<u32>(),
                      lock in proptest::option::of((any::<bool>(), 1u64..))) {
            let object_lock = lock.filter(|_| version >= 4).map(|(c, retention_s)| ObjectLock {
                mode: if c { LockMode::Compliance } else { LockMode::Governance }, retention_s });
            let c = Config { version, repo_id, created_ns, chunker: ChunkerParams { min, avg, max, normalization: n },
                compression_level: level, pack_target_size: pack, object_lock };
            prop_assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        }

        #[test]
        fn decode_never_panics(b in bytes(100)) {
            let _ = Config::decode(&b);
        }
    }

    #[test]
    fn defaults_are_valid() {
        ChunkerParams::DEFAULT.validate().unwrap();
    }
}
