//! Typed 256-bit identifiers.
//!
//! Every object and blob in a repository is named by 32 bytes, shown as 64 lowercase hex
//! digits. Each kind of id gets its own newtype so that a pack id can never be passed where a
//! blob id is expected. Blob ids are keyed BLAKE3 hashes of the plaintext (see `crypto`);
//! pack, index, snapshot and key ids are random.

use std::fmt;

/// Length in bytes of every id (docs/format.md, "Ids").
pub const ID_LEN: usize = 32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// A fresh random id (from the operating system's CSPRNG).
            pub fn random() -> Self {
                let mut b = [0u8; ID_LEN];
                getrandom::fill(&mut b).expect("the operating system's random source failed");
                Self(b)
            }
            /// The 64-digit lowercase hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Parses exactly 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut b = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut b).ok()?;
                Some(Self(b))
            }
            /// Parses an object name: exactly 64 lowercase hex digits (the only form Coffer
            /// writes), so two spellings can never name one object.
            pub fn from_name(s: &str) -> Option<Self> {
                if s.len() != 2 * ID_LEN || s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                Self::from_hex(s)
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Names a blob (a data chunk or a tree): keyed BLAKE3 of its plaintext.
    BlobId
);
id_type!(
    /// Names a pack file under `data/`: random.
    PackId
);
id_type!(
    /// Names an index file under `index/`: random.
    IndexId
);
id_type!(
    /// Names a snapshot manifest under `snapshots/`: random.
    SnapshotId
);
id_type!(
    /// Names a key file under `keys/`: random.
    KeyId
);
id_type!(
    /// Identifies a repository; bound into every object's associated data.
    RepoId
);
id_type!(
    /// Names a lock object under `locks/`: random.
    LockId
);
id_type!(
    /// Names a drill record under `drills/`: random.
    DrillId
);
id_type!(
    /// Names a policy document under `policy/`: random.
    PolicyId
);
id_type!(
    /// Names a hold record (a hold or a release) under `holds/`: random.
    HoldId
);
id_type!(
    /// Names an audit entry under `audit/`: random.
    AuditId
);
id_type!(
    /// Names an erasure record under `erasures/`: random.
    ErasureId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = PackId::random();
        assert_eq!(PackId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 8);
        assert!(PackId::from_hex("zz").is_none());
    }
}
