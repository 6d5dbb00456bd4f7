//! Drill records (`drills/<id>`, envelope type Drill): the evidence of one recovery drill.
//!
//! Payload layout (docs/format.md, "Drill records"): version u8 (= 1); time (i64 Unix ns);
//! host (string); snapshot id (32); flags u8 (bit 0 passed, bit 1 full restore); seed (32);
//! parts u32 and part u32 (the sample is part `part` of `parts`); sample share in parts per
//! million u32; files checked, bytes checked, files in the snapshot, bytes in the snapshot
//! (u64 each); duration, projected full restore, RPO (age of the newest snapshot), largest
//! gap between snapshots in the last 30 days (u64 nanoseconds each); RTO and RPO targets
//! (option u64 ns each: flag u8 then u64); coverage in parts per million u32; damaged
//! (list of strings: objects and files); program version (string).

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

const PASSED: u8 = 1;
const FULL: u8 = 2;

/// One drill's result, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillRecord {
    pub time_ns: i64,
    pub host: String,
    pub snapshot: [u8; 32],
    pub passed: bool,
    /// The whole snapshot was restored (not a sample).
    pub full: bool,
    pub seed: [u8; 32],
    pub parts: u32,
    pub part: u32,
    pub sample_ppm: u32,
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub duration_ns: u64,
    pub projected_ns: u64,
    pub rpo_ns: u64,
    pub rpo_max_gap_ns: u64,
    pub rto_target_ns: Option<u64>,
    pub rpo_target_ns: Option<u64>,
    pub coverage_ppm: u32,
    pub damaged: Vec<String>,
    pub program_version: String,
}

impl DrillRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.i64(self.time_ns);
        w.str(&self.host);
        w.id(&self.snapshot);
        w.u8(if self.passed { PASSED } else { 0 } | if self.full { FULL } else { 0 });
        w.id(&self.seed);
        w.u32(self.parts);
        w.u32(self.part);
        w.u32(self.sample_ppm);
        for v in [self.files_checked, self.bytes_checked, self.files_total, self.bytes_total] {
            w.u64(v);
        }
        for v in [self.duration_ns, self.projected_ns, self.rpo_ns, self.rpo_max_gap_ns] {
            w.u64(v);
        }
        w.opt_u64(self.rto_target_ns);
        w.opt_u64(self.rpo_target_ns);
        w.u32(self.coverage_ppm);
        w.len(self.damaged.len());
        self.damaged.iter().for_each(|d| w.str(d));
        w.str(&self.program_version);
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "drill record", version });
        }
        let time_ns = r.i64()?;
        let host = r.string()?;
        let snapshot = r.id()?;
        let flags = r.u8()?;
        if flags & !(PASSED | FULL) != 0 {
            return Err(FormatError::Invalid("unknown drill flags"));
        }
        let seed = r.id()?;
        let (parts, part, sample_ppm) = (r.u32()?, r.u32()?, r.u32()?);
        if parts == 0 || part >= parts || sample_ppm > 1_000_000 {
            return Err(FormatError::Invalid("drill sample out of range"));
        }
        let (files_checked, bytes_checked, files_total, bytes_total) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let (duration_ns, projected_ns, rpo_ns, rpo_max_gap_ns) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let rto_target_ns = r.opt_u64()?;
        let rpo_target_ns = r.opt_u64()?;
        let coverage_ppm = r.u32()?;
        if coverage_ppm > 1_000_000 {
            return Err(FormatError::Invalid("drill coverage above 100%"));
        }
        let damaged = r.list(4, |r| r.string())?;
        let program_version = r.string()?;
        r.finish()?;
        Ok(DrillRecord {
            time_ns,
            host,
            snapshot,
            passed: flags & PASSED != 0,
            full: flags & FULL != 0,
            seed,
            parts,
            part,
            sample_ppm,
            files_checked,
            bytes_checked,
            files_total,
            bytes_total,
            duration_ns,
            projected_ns,
            rpo_ns,
            rpo_max_gap_ns,
            rto_target_ns,
            rpo_target_ns,
            coverage_ppm,
            damaged,
            program_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(time_ns in any::<i64>(), host in text(10), snapshot in id(), passed in any::<bool>(),
                      full in any::<bool>(), seed in id(), parts in 1u32..1000, part_frac in 0u32..1000,
                      sample_ppm in 0u32..=1_000_000, nums in proptest::array::uniform8(any::<u64>()),
                      rto in proptest::option::of(any::<u64>()), rpo in proptest::option::of(any::<u64>()),
                      coverage_ppm in 0u32..=1_000_000, damaged in proptest::collection::vec(text(20), 0..4)) {
            let r = DrillRecord {
                time_ns, host, snapshot, passed, full, seed, parts, part: part_frac % parts, sample_ppm,
                files_checked: nums[0], bytes_checked: nums[1], files_total: nums[2], bytes_total: nums[3],
                duration_ns: nums[4], projected_ns: nums[5], rpo_ns: nums[6], rpo_max_gap_ns: nums[7],
                rto_target_ns: rto, rpo_target_ns: rpo, coverage_ppm, damaged, program_version: "coffer x".into(),
            };
            prop_assert_eq!(DrillRecord::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(b in bytes(400)) {
            let _ = DrillRecord::decode(&b);
        }
    }
}
