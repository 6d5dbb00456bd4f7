//! Pack files (`data/<2 hex>/<64 hex>`): many encrypted blobs and an encrypted header.
//!
//! Layout (docs/format.md, "Packs"):
//!
//! ```text
//! blob_0 ciphertext+tag | blob_1 ... | header ciphertext+tag | trailer (16 bytes)
//! trailer = header_len u32 | magic "COFFERPK" | version u8 (1) | 3 reserved zero bytes
//! ```
//!
//! Blobs start at offset 0 and follow each other without gaps. The header plaintext lists
//! every blob in order: type u8, compression u8, id (32), stored (ciphertext) length u32,
//! raw (plaintext) length u32 — so the index can be rebuilt from packs alone.

use super::codec::{Reader, Writer};
use super::{BlobType, Compression, FormatError};

pub const TRAILER_LEN: usize = 16;
pub const MAGIC: &[u8; 8] = b"COFFERPK";
pub const VERSION: u8 = 1;
/// Bytes one entry takes in the header plaintext.
pub const ENTRY_LEN: usize = 1 + 1 + 32 + 4 + 4;

/// One blob as listed in a pack header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub compression: Compression,
    pub id: [u8; 32],
    pub stored_len: u32,
    pub raw_len: u32,
}

/// Encodes the header plaintext: a u32 count, then the entries.
pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.len(entries.len());
    for e in entries {
        w.u8(e.blob_type as u8);
        w.u8(e.compression as u8);
        w.id(&e.id);
        w.u32(e.stored_len);
        w.u32(e.raw_len);
    }
    w.into_bytes()
}

pub fn decode_header(b: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
    let mut r = Reader::new(b);
    let v = r.list(ENTRY_LEN, |r| {
        Ok(PackEntry {
            blob_type: BlobType::from_u8(r.u8()?)?,
            compression: Compression::from_u8(r.u8()?)?,
            id: r.id()?,
            stored_len: r.u32()?,
            raw_len: r.u32()?,
        })
    })?;
    r.finish()?;
    Ok(v)
}

pub fn encode_trailer(header_len: u32) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&header_len.to_le_bytes());
    t[4..12].copy_from_slice(MAGIC);
    t[12] = VERSION;
    t
}

/// Reads the trailer (the last 16 bytes of a pack) and returns the header's stored length.
pub fn decode_trailer(t: &[u8]) -> Result<u32, FormatError> {
    if t.len() != TRAILER_LEN {
        return Err(FormatError::Truncated);
    }
    if &t[4..12] != MAGIC {
        return Err(FormatError::BadMagic("pack"));
    }
    if t[12] != VERSION {
        return Err(FormatError::UnsupportedVersion { what: "pack", version: t[12] });
    }
    if t[13..] != [0, 0, 0] {
        return Err(FormatError::Invalid("reserved trailer bytes are not zero"));
    }
    Ok(u32::from_le_bytes(t[..4].try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = PackEntry> {
        (0u8..2, 0u8..2, id(), any::<u32>(), any::<u32>()).prop_map(|(t, c, id, s, r)| PackEntry {
            blob_type: BlobType::from_u8(t).unwrap(),
            compression: Compression::from_u8(c).unwrap(),
            id,
            stored_len: s,
            raw_len: r,
        })
    }

    proptest! {
        #[test]
        fn header_round_trip(entries in proptest::collection::vec(entry(), 0..20)) {
            prop_assert_eq!(decode_header(&encode_header(&entries)).unwrap(), entries);
        }

        #[test]
        fn trailer_round_trip(n in any::<u32>()) {
            prop_assert_eq!(decode_trailer(&encode_trailer(n)).unwrap(), n);
        }

        #[test]
        fn decoders_never_panic(b in bytes(200)) {
            let _ = decode_header(&b);
            let _ = decode_trailer(&b);
        }
    }
}
