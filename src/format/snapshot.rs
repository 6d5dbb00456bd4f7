//! Snapshot manifests (`snapshots/<id>`, envelope type Snapshot).
//!
//! Payload layout (docs/format.md, "Snapshots"): version u8 (= 1); time (i64 Unix ns);
//! UTC offset of the host at that time (i32 seconds); host, username (strings); uid, gid
//! (u32); paths (list of bytes); tags, excludes (lists of strings); parent (optional id);
//! root tree id (32); per-host sequence number u64; program version (string); summary
//! (13 x u64, then partial u8); in version 2, then the original snapshot (optional id: the
//! snapshot this one replaced, as `tag` and `repair snapshots` do; version 1 has no such
//! field); in version 3, then the paths `repair snapshots` replaced (list of bytes). A
//! writer uses version 3 only for a snapshot that has such paths, else version 2.

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 3;

/// What a backup did; stored with the snapshot and printed by `backup --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    /// Blobs (data and tree) this backup added.
    pub blobs_added: u64,
    /// Bytes this backup added to the repository (stored, after compression and encryption).
    pub data_added: u64,
    /// Plaintext bytes of the blobs this backup added.
    pub data_added_raw: u64,
    /// Wall-clock duration in nanoseconds.
    pub duration_ns: u64,
    /// Files that could not be read or changed while being read.
    pub errors: u64,
    /// True when some files were skipped or may be inconsistent.
    pub partial: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub time_ns: i64,
    pub utc_offset_s: i32,
    pub host: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub parent: Option<[u8; 32]>,
    pub tree: [u8; 32],
    pub seq: u64,
    pub program_version: String,
    pub summary: Summary,
    /// The snapshot this one was made from by changing its metadata (`tag`), as restic's
    /// `original`; the first of a chain when it was changed more than once.
    pub original: Option<[u8; 32]>,
    /// Paths `repair snapshots` replaced (unreadable files made empty, unreadable
    /// directories made empty); empty for every other snapshot.
    pub repaired: Vec<Vec<u8>>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(if self.repaired.is_empty() { 2 } else { VERSION });
        w.i64(self.time_ns);
        w.i32(self.utc_offset_s);
        w.str(&self.host);
        w.str(&self.username);
        w.u32(self.uid);
        w.u32(self.gid);
        w.len(self.paths.len());
        self.paths.iter().for_each(|p| w.bytes(p));
        w.len(self.tags.len());
        self.tags.iter().for_each(|t| w.str(t));
        w.len(self.excludes.len());
        self.excludes.iter().for_each(|t| w.str(t));
        w.opt_id(self.parent.as_ref());
        w.id(&self.tree);
        w.u64(self.seq);
        w.str(&self.program_version);
        let s = &self.summary;
        for v in [
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            s.dirs_new,
            s.dirs_changed,
            s.dirs_unmodified,
            s.total_files_processed,
            s.total_bytes_processed,
            s.blobs_added,
            s.data_added,
            s.data_added_raw,
            s.duration_ns,
            s.errors,
        ] {
            w.u64(v);
        }
        w.u8(s.partial as u8);
        w.opt_id(self.original.as_ref());
        if !self.repaired.is_empty() {
            w.len(self.repaired.len());
            self.repaired.iter().for_each(|p| w.bytes(p));
        }
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion { what: "snapshot", version });
        }
        let time_ns = r.i64()?;
        let utc_offset_s = r.i32()?;
        let host = r.string()?;
        let username = r.string()?;
        let (uid, gid) = (r.u32()?, r.u32()?);
        let paths = r.list(4, |r| Ok(r.bytes()?.to_vec()))?;
        let tags = r.list(4, |r| r.string())?;
        let excludes = r.list(4, |r| r.string())?;
        let parent = r.opt_id()?;
        let tree = r.id()?;
        let seq = r.u64()?;
        let program_version = r.string()?;
        let mut v = [0u64; 13];
        for x in v.iter_mut() {
            *x = r.u64()?;
        }
        let partial = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(FormatError::Invalid("partial flag is neither 0 nor 1")),
        };
        let original = if version >= 2 { r.opt_id()? } else { None };
        let repaired = if version >= 3 { r.list(4, |r| Ok(r.bytes()?.to_vec()))? } else { Vec::new() };
        if version >= 3 && repaired.is_empty() {
            // Writers use version 2 then: one encoding per snapshot.
            return Err(FormatError::Invalid("a version-3 snapshot without repaired paths"));
        }
        r.finish()?;
        let summary = Summary {
            files_new: v[0],
            files_changed: v[1],
            files_unmodified: v[2],
            dirs_new: v[3],
            dirs_changed: v[4],
            dirs_unmodified: v[5],
            total_files_processed: v[6],
            total_bytes_processed: v[7],
            blobs_added: v[8],
            data_added: v[9],
            data_added_raw: v[10],
            duration_ns: v[11],
            errors: v[12],
            partial,
        };
        Ok(Snapshot {
            time_ns,
            utc_offset_s,
            host,
            username,
            uid,
            gid,
            paths,
            tags,
            excludes,
            parent,
            tree,
            seq,
            program_version,
            summary,
            original,
            repaired,
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
        fn round_trip(time_ns in any::<i64>(), off in any::<i32>(), host in text(10), user in text(10),
                      uid in any::<u32>(), gid in any::<u32>(),
                      paths in proptest::collection::vec(bytes(20), 0..3),
                      tags in proptest::collection::vec(text(5), 0..3),
                      parent in proptest::option::of(id()), tree in id(), seq in any::<u64>(),
                      nums in proptest::array::uniform13(any::<u64>()), partial in any::<bool>(),
                      original in proptest::option::of(id()),
                      repaired in proptest::collection::vec(bytes(20), 0..3)) {
            let summary = Summary {
                files_new: nums[0], files_changed: nums[1], files_unmodified: nums[2], dirs_new: nums[3],
                dirs_changed: nums[4], dirs_unmodified: nums[5], total_files_processed: nums[6],
                total_bytes_processed: nums[7], blobs_added: nums[8], data_added: nums[9],
                data_added_raw: nums[10], duration_ns: nums[11], errors: nums[12], partial,
            };
            let s = Snapshot { time_ns, utc_offset_s: off, host, username: user, uid, gid, paths,
                tags: tags.clone(), excludes: tags, parent, tree, seq, program_version: "x".into(), summary, original,
                repaired };
            prop_assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s.clone());
            prop_assert_eq!(s.encode()[0], if s.repaired.is_empty() { 2 } else { 3 });
            // Version 1 has no `original`: the same bytes less that field read back without it.
            if s.original.is_none() && s.repaired.is_empty() {
                let mut v1 = s.encode();
                v1.pop();
                v1[0] = 1;
                prop_assert_eq!(Snapshot::decode(&v1).unwrap(), s);
            }
        }

        #[test]
        fn decode_never_panics(b in bytes(300)) {
            let _ = Snapshot::decode(&b);
        }
    }
}
