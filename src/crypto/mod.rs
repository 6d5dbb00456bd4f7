//! All cryptography: key derivation, keyed ids, the keyed chunker table, AEAD.
//!
//! Scheme (docs/format.md, "Cryptography"; attack model in docs/security.md):
//! - A random 256-bit master key is wrapped in key files by a key-encryption key (KEK) from
//!   Argon2id(password, salt). A commitment `BLAKE3-derive_key(CTX_COMMIT, KEK)` stored in the
//!   key file tells a wrong password apart from a damaged key file.
//! - Purpose keys come from `BLAKE3-derive_key(context, master)`: data chunk ids, tree ids,
//!   the chunker's gear table, and object encryption each use their own context string.
//! - Every object (pack, index, snapshot, config) is encrypted under its own AES-256-GCM key,
//!   `BLAKE3-keyed(data key, "coffer object key v1" || type || object id)`. Object ids of
//!   packs, indexes and snapshots are 256 random bits, so no two objects share a key, however
//!   many clients write, and even after a repository is rolled back. Within one object the
//!   96-bit nonce is a counter (the blob's byte offset in its pack; `u64::MAX` for a pack
//!   header; 0 for a single-payload object), so nonces never repeat under one key.
//! - Associated data binds repo id, object type, object id and (for blobs) blob type,
//!   compression, blob id and raw length, so a swapped, renamed, re-typed or foreign object fails to open.

mod keyfile;

pub use keyfile::{create_key_file, open_key_file, KdfParamsExt, KeyLabel, KDF_DEFAULT, KDF_FLOOR};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::format::BlobType;
use crate::id::{BlobId, RepoId};

/// Context strings for BLAKE3 `derive_key` (never change them: they define the format).
const CTX_BLOB_ID: &str = "coffer 2026-11-27 blob id key v1";
const CTX_TREE_ID: &str = "coffer 2026-11-27 tree id key v1";
const CTX_CHUNKER: &str = "coffer 2026-11-27 chunker gear table v1";
const CTX_DATA: &str = "coffer 2026-11-27 object encryption key v1";
pub(crate) const CTX_COMMIT: &str = "coffer 2026-11-27 key file commitment v1";

/// Length of the GCM authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Nonce counter used for a pack's header.
pub const PACK_HEADER_NONCE: u64 = u64::MAX;

/// Type bytes mixed into per-object keys (docs/format.md).
pub const KEY_TYPE_CONFIG: u8 = 1;
pub const KEY_TYPE_INDEX: u8 = 2;
pub const KEY_TYPE_SNAPSHOT: u8 = 3;
pub const KEY_TYPE_LOCK: u8 = 4;
pub const KEY_TYPE_DRILL: u8 = 5;
pub const KEY_TYPE_POLICY: u8 = 6;
pub const KEY_TYPE_HOLD: u8 = 7;
pub const KEY_TYPE_AUDIT: u8 = 8;
pub const KEY_TYPE_ERASURE: u8 = 9;
pub const KEY_TYPE_PACK: u8 = 16;

/// Cryptographic failures. Messages never include key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("authentication failed: the data was modified, truncated, moved or belongs to another repository")]
    Authentication,
    #[error("wrong password (no key file matches it)")]
    WrongPassword,
    #[error("key derivation parameters are below the floor or above the ceiling ({0})")]
    KdfTooWeak(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// The repository master key. Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the operating system's random source failed");
        MasterKey(k)
    }
}

/// The purpose keys derived from the master key, plus the repo id they are bound to.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    id_key: [u8; 32],
    tree_id_key: [u8; 32],
    chunker_key: [u8; 32],
    data_key: [u8; 32],
    #[zeroize(skip)]
    repo_id: RepoId,
}

impl Keys {
    pub fn derive(master: &MasterKey, repo_id: RepoId) -> Self {
        Keys {
            id_key: blake3::derive_key(CTX_BLOB_ID, &master.0),
            tree_id_key: blake3::derive_key(CTX_TREE_ID, &master.0),
            chunker_key: blake3::derive_key(CTX_CHUNKER, &master.0),
            data_key: blake3::derive_key(CTX_DATA, &master.0),
            repo_id,
        }
    }

    pub fn repo_id(&self) -> RepoId {
        self.repo_id
    }

    /// The id of a blob: BLAKE3 keyed over the plaintext, with one key for data chunks and
    /// another for trees, so a file whose bytes equal an encoded tree never shares its id.
    pub fn blob_id(&self, blob_type: BlobType, plaintext: &[u8]) -> BlobId {
        let key = match blob_type {
            BlobType::Data => &self.id_key,
            BlobType::Tree => &self.tree_id_key,
        };
        BlobId(*blake3::keyed_hash(key, plaintext).as_bytes())
    }

    /// The chunker's secret gear table: 256 u64 read little-endian from BLAKE3's XOF.
    pub fn gear_table(&self) -> [u64; 256] {
        let mut out = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(&self.chunker_key).finalize_xof().fill(&mut out);
        let mut gear = [0u64; 256];
        for (g, b) in gear.iter_mut().zip(out.chunks_exact(8)) {
            *g = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        gear
    }

    /// The cipher for one object (see the module docs).
    pub fn object_cipher(&self, key_type: u8, object_id: &[u8; 32]) -> ObjectCipher {
        let mut h = blake3::Hasher::new_keyed(&self.data_key);
        h.update(b"coffer object key v1");
        h.update(&[key_type]);
        h.update(object_id);
        let mut k = *h.finalize().as_bytes();
        let cipher = Aes256Gcm::new_from_slice(&k).expect("32-byte key");
        k.zeroize();
        ObjectCipher { cipher, repo_id: self.repo_id, key_type, object_id: *object_id }
    }
}

/// AES-256-GCM under one object's key.
pub struct ObjectCipher {
    cipher: Aes256Gcm,
    repo_id: RepoId,
    key_type: u8,
    object_id: [u8; 32],
}

fn nonce(counter: u64) -> aes_gcm::aead::Nonce<Aes256Gcm> {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

impl ObjectCipher {
    /// The associated data: repo id, key type, object id, then the caller's context.
    fn aad(&self, context: &[u8]) -> Vec<u8> {
        let mut a = Vec::with_capacity(65 + context.len());
        a.extend_from_slice(self.repo_id.as_bytes());
        a.push(self.key_type);
        a.extend_from_slice(&self.object_id);
        a.extend_from_slice(context);
        a
    }

    /// Encrypts `buf` in place and appends the tag.
    pub fn seal(&self, counter: u64, context: &[u8], buf: &mut Vec<u8>) {
        self.cipher
            .encrypt_in_place(&nonce(counter), &self.aad(context), buf)
            .expect("AES-GCM encryption of a buffer below 64 GiB cannot fail");
    }

    /// Checks the tag and decrypts `buf` in place (the tag is removed).
    pub fn open(&self, counter: u64, context: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.cipher.decrypt_in_place(&nonce(counter), &self.aad(context), buf).map_err(|_| CryptoError::Authentication)
    }
}

/// Associated-data context of a blob inside a pack (docs/format.md, "Packs").
pub fn blob_context(blob_type: u8, compression: u8, id: &BlobId, raw_len: u32) -> [u8; 38] {
    let mut c = [0u8; 38];
    c[0] = blob_type;
    c[1] = compression;
    c[2..34].copy_from_slice(id.as_bytes());
    c[34..].copy_from_slice(&raw_len.to_le_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::random(), RepoId::random())
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = keys();
        let id = [7u8; 32];
        let c = k.object_cipher(KEY_TYPE_PACK, &id);
        let mut buf = b"secret".to_vec();
        c.seal(5, b"ctx", &mut buf);
        let sealed = buf.clone();
        c.open(5, b"ctx", &mut buf).unwrap();
        assert_eq!(buf, b"secret");
        // Wrong counter, context, object id, type or a flipped bit: all rejected.
        assert!(c.open(6, b"ctx", &mut sealed.clone()).is_err());
        assert!(c.open(5, b"ctX", &mut sealed.clone()).is_err());
        assert!(k.object_cipher(KEY_TYPE_PACK, &[8u8; 32]).open(5, b"ctx", &mut sealed.clone()).is_err());
        assert!(k.object_cipher(KEY_TYPE_INDEX, &id).open(5, b"ctx", &mut sealed.clone()).is_err());
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(c.open(5, b"ctx", &mut flipped).is_err());
        // Another repository's keys cannot open it.
        assert!(keys().object_cipher(KEY_TYPE_PACK, &id).open(5, b"ctx", &mut sealed.clone()).is_err());
    }

    #[test]
    fn purpose_keys_differ() {
        let k = keys();
        assert_ne!(k.id_key, k.chunker_key);
        assert_ne!(k.id_key, k.data_key);
        assert_ne!(k.blob_id(BlobType::Data, b"a"), keys().blob_id(BlobType::Data, b"a"), "keyed per repository");
        assert_ne!(k.blob_id(BlobType::Data, b"a"), k.blob_id(BlobType::Tree, b"a"), "keyed per blob type");
        assert_ne!(k.gear_table(), keys().gear_table());
    }
}
