//! Key files (`keys/<id>`): the master key wrapped by a password-derived key.
//!
//! Layout (docs/format.md, "Key files"), all integers little-endian:
//!
//! | field | size |
//! |---|---|
//! | magic `COFFERKY` | 8 |
//! | version (1) | 1 |
//! | kdf (1 = Argon2id v0x13) | 1 |
//! | memory KiB, iterations, parallelism | 3 x u32 |
//! | salt | 32 |
//! | commitment | 32 |
//! | created (Unix seconds) | i64 |
//! | host, user | u32-prefixed UTF-8 each |
//! | nonce | 12 |
//! | sealed payload (64 bytes: master key, repo id) + tag | 80 |
//!
//! Everything before the nonce is the "public header"; it is authenticated as associated
//! data together with the key id, so editing the parameters or the labels is detected.

use super::codec::{Reader, Writer};
use super::FormatError;

pub const MAGIC: &[u8; 8] = b"COFFERKY";
pub const VERSION: u8 = 1;
pub const KDF_ARGON2ID: u8 = 1;
pub const NONCE_LEN: usize = 12;
/// 32-byte master key + 32-byte repo id, plus the 16-byte GCM tag.
pub const SEALED_LEN: usize = 64 + 16;

/// Argon2id cost parameters as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// A decoded key file. `sealed` is still encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub kdf: KdfParams,
    pub salt: [u8; 32],
    pub commitment: [u8; 32],
    pub created_unix: i64,
    pub host: String,
    pub user: String,
    pub nonce: [u8; NONCE_LEN],
    pub sealed: Vec<u8>,
}

impl KeyFile {
    /// The authenticated public header (everything before the nonce).
    pub fn public_header(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.u8(VERSION);
        w.u8(KDF_ARGON2ID);
        w.u32(self.kdf.memory_kib);
        w.u32(self.kdf.iterations);
        w.u32(self.kdf.parallelism);
        w.id(&self.salt);
        w.id(&self.commitment);
        w.i64(self.created_unix);
        w.str(&self.host);
        w.str(&self.user);
        w.into_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.public_header();
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&self.sealed);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        if r.raw(8)? != MAGIC {
            return Err(FormatError::BadMagic("key file"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "key file", version });
        }
        if r.u8()? != KDF_ARGON2ID {
            return Err(FormatError::Invalid("unknown key derivation function"));
        }
        let kdf = KdfParams { memory_kib: r.u32()?, iterations: r.u32()?, parallelism: r.u32()? };
        let salt = r.id()?;
        let commitment = r.id()?;
        let created_unix = r.i64()?;
        let host = r.string()?;
        let user = r.string()?;
        let nonce = r.raw(NONCE_LEN)?.try_into().expect("length checked");
        let sealed = r.raw(SEALED_LEN)?.to_vec();
        r.finish()?;
        Ok(KeyFile { kdf, salt, commitment, created_unix, host, user, nonce, sealed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(m in any::<u32>(), t in any::<u32>(), p in any::<u32>(), salt in id(), c in id(),
                      created in any::<i64>(), host in text(20), user in text(20),
                      nonce in proptest::array::uniform12(any::<u8>()),
                      sealed in proptest::collection::vec(any::<u8>(), SEALED_LEN)) {
            let k = KeyFile { kdf: KdfParams { memory_kib: m, iterations: t, parallelism: p }, salt,
                commitment: c, created_unix: created, host, user, nonce, sealed };
            prop_assert_eq!(KeyFile::decode(&k.encode()).unwrap(), k);
        }

        #[test]
        fn decode_never_panics(b in bytes(300)) {
            let _ = KeyFile::decode(&b);
        }
    }
}
