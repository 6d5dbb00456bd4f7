//! Index files (`index/<id>`, envelope type Index): where each blob lives.
//!
//! Payload layout (docs/format.md, "Index files"): version u8 (= 2; 1 is still read); in
//! version 2 a kind u8 (0: the packs listed hold live blobs; 1: an *obsolete-packs record*, the
//! packs listed are scheduled for deletion by prune); a list (u32 count) of superseded index
//! ids (32 bytes each); a list of packs, each: pack id (32), pack size u64, and a list of
//! blobs: type u8, compression u8, id (32), offset u32, stored length u32, raw length u32.
//! Version 1 has no kind byte (every version-1 file is kind 0).

use super::codec::{Reader, Writer};
use super::{BlobType, Compression, FormatError};

pub const VERSION: u8 = 2;

/// What the packs of an index file are (docs/format.md, "Index files").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IndexKind {
    /// The packs hold live blobs: readers and writers use them.
    #[default]
    Packs = 0,
    /// An obsolete-packs record: prune removed these packs from the index and will delete
    /// them. Writers never deduplicate against them; readers use them only for blobs no
    /// live pack holds.
    Obsolete = 1,
    /// A damage record (repository format 3): the blob entries listed were found missing or
    /// damaged where they are listed (by `check`, `restore`, `drill`). Writers never
    /// deduplicate against those copies, so the next backup stores the blobs afresh;
    /// readers try them last.
    Damaged = 2,
}

impl IndexKind {
    fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            0 => Ok(IndexKind::Packs),
            1 => Ok(IndexKind::Obsolete),
            2 => Ok(IndexKind::Damaged),
            _ => Err(FormatError::UnknownKind { what: "index kind", value: v }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexBlob {
    pub blob_type: BlobType,
    pub compression: Compression,
    pub id: [u8; 32],
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    pub pack_id: [u8; 32],
    pub pack_size: u64,
    pub blobs: Vec<IndexBlob>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexFile {
    pub kind: IndexKind,
    pub supersedes: Vec<[u8; 32]>,
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u8(self.kind as u8);
        w.len(self.supersedes.len());
        for id in &self.supersedes {
            w.id(id);
        }
        w.len(self.packs.len());
        for p in &self.packs {
            w.id(&p.pack_id);
            w.u64(p.pack_size);
            w.len(p.blobs.len());
            for b in &p.blobs {
                w.u8(b.blob_type as u8);
                w.u8(b.compression as u8);
                w.id(&b.id);
                w.u32(b.offset);
                w.u32(b.stored_len);
                w.u32(b.raw_len);
            }
        }
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        let kind = match version {
            1 => IndexKind::Packs,
            VERSION => IndexKind::from_u8(r.u8()?)?,
            _ => return Err(FormatError::UnsupportedVersion { what: "index", version }),
        };
        let supersedes = r.list(32, |r| r.id())?;
        let packs = r.list(44, |r| {
            Ok(IndexPack {
                pack_id: r.id()?,
                pack_size: r.u64()?,
                blobs: r.list(46, |r| {
                    Ok(IndexBlob {
                        blob_type: BlobType::from_u8(r.u8()?)?,
                        compression: Compression::from_u8(r.u8()?)?,
                        id: r.id()?,
                        offset: r.u32()?,
                        stored_len: r.u32()?,
                        raw_len: r.u32()?,
                    })
                })?,
            })
        })?;
        r.finish()?;
        Ok(IndexFile { kind, supersedes, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    fn blob() -> impl Strategy<Value = IndexBlob> {
        (0u8..2, 0u8..2, id(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(t, c, id, o, s, r)| IndexBlob {
            blob_type: BlobType::from_u8(t).unwrap(),
            compression: Compression::from_u8(c).unwrap(),
            id,
            offset: o,
            stored_len: s,
            raw_len: r,
        })
    }

    fn pack() -> impl Strategy<Value = IndexPack> {
        (id(), any::<u64>(), proptest::collection::vec(blob(), 0..8))
            .prop_map(|(pack_id, pack_size, blobs)| IndexPack { pack_id, pack_size, blobs })
    }

    proptest! {
        #[test]
        fn round_trip(kind in 0u8..3, supersedes in proptest::collection::vec(id(), 0..3), packs in proptest::collection::vec(pack(), 0..5)) {
            let f = IndexFile { kind: IndexKind::from_u8(kind).unwrap(), supersedes, packs };
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }

        /// A version-1 file (no kind byte) reads as kind 0 with the same content.
        #[test]
        fn version_1_reads_as_packs(supersedes in proptest::collection::vec(id(), 0..3), packs in proptest::collection::vec(pack(), 0..5)) {
            let f = IndexFile { kind: IndexKind::Packs, supersedes, packs };
            let mut v1 = f.encode();
            v1.remove(1);
            v1[0] = 1;
            prop_assert_eq!(IndexFile::decode(&v1).unwrap(), f);
        }

        #[test]
        fn decode_never_panics(b in bytes(300)) {
            let _ = IndexFile::decode(&b);
        }
    }
}
