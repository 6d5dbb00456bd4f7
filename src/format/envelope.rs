//! The 8-byte plaintext header of small encrypted objects (config, index, snapshot).
//!
//! Layout (docs/format.md, "Object envelope"): magic `CFOB` (4 bytes), version (u8 = 1),
//! object type (u8), compression of the payload (u8), reserved (u8 = 0); then the AES-256-GCM
//! ciphertext of the payload with its 16-byte tag. The header is authenticated as part of the
//! associated data, so it cannot be altered without detection.

use super::{Compression, FormatError};

pub const MAGIC: &[u8; 4] = b"CFOB";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;

/// What an enveloped object is; bound into its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    Config = 1,
    Index = 2,
    Snapshot = 3,
    /// Lock objects (`locks/`): who is writing to the repository (docs/format.md, "Locks").
    Lock = 4,
    /// Drill records (`drills/`): the evidence of recovery drills (docs/format.md).
    Drill = 5,
    /// Policy documents (`policy/`, format 4).
    Policy = 6,
    /// Hold records (`holds/`, format 4).
    Hold = 7,
    /// Audit entries (`audit/`, format 4).
    Audit = 8,
    /// Erasure records (`erasures/`, format 4).
    Erasure = 9,
}

impl ObjectType {
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            1 => Ok(Self::Config),
            2 => Ok(Self::Index),
            3 => Ok(Self::Snapshot),
            4 => Ok(Self::Lock),
            5 => Ok(Self::Drill),
            6 => Ok(Self::Policy),
            7 => Ok(Self::Hold),
            8 => Ok(Self::Audit),
            9 => Ok(Self::Erasure),
            _ => Err(FormatError::Invalid("unknown object type")),
        }
    }
}

/// The decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub object_type: ObjectType,
    pub compression: Compression,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = self.object_type as u8;
        h[6] = self.compression as u8;
        h
    }

    /// Splits an object into its header and the ciphertext that follows.
    pub fn decode(object: &[u8]) -> Result<(Header, &[u8]), FormatError> {
        if object.len() < HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if &object[..4] != MAGIC {
            return Err(FormatError::BadMagic("object"));
        }
        if object[4] != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "object", version: object[4] });
        }
        if object[7] != 0 {
            return Err(FormatError::Invalid("reserved header byte is not zero"));
        }
        let h = Header { object_type: ObjectType::from_u8(object[5])?, compression: Compression::from_u8(object[6])? };
        Ok((h, &object[HEADER_LEN..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(t in 1u8..=9, c in 0u8..=1, tail in crate::format::strategies::bytes(64)) {
            let h = Header { object_type: ObjectType::from_u8(t).unwrap(), compression: Compression::from_u8(c).unwrap() };
            let mut obj = h.encode().to_vec();
            obj.extend_from_slice(&tail);
            let (d, rest) = Header::decode(&obj).unwrap();
            prop_assert_eq!(d, h);
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn decode_never_panics(b in crate::format::strategies::bytes(32)) {
            let _ = Header::decode(&b);
        }
    }
}
