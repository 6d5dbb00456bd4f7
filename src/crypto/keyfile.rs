//! Wrapping and unwrapping the master key with a password (docs/format.md, "Key files").

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::{CryptoError, MasterKey, CTX_COMMIT};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::id::{KeyId, RepoId};

/// The weakest Argon2id parameters Coffer accepts (OWASP's minimum for Argon2id:
/// 19 MiB, 2 iterations, 1 lane). Key files below it are refused, so a tampered key file
/// cannot silently weaken the password's protection.
pub const KDF_FLOOR: KdfParams = KdfParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
/// The parameters `init` and `key add` use unless told otherwise: RFC 9106's second
/// recommended setting. The 4 lanes are computed in parallel (argon2's `parallel` feature),
/// so opening takes about 0.05 s on 2 cores here instead of 0.1 s with one lane.
pub const KDF_DEFAULT: KdfParams = KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 4 };
/// Upper bounds, so a hostile key file cannot make `open` use unbounded memory or time.
const KDF_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const KDF_MAX_ITERATIONS: u32 = 64;
const KDF_MAX_PARALLELISM: u32 = 16;

/// Validation of stored KDF parameters.
pub trait KdfParamsExt {
    fn check(&self) -> Result<(), CryptoError>;
}

impl KdfParamsExt for KdfParams {
    fn check(&self) -> Result<(), CryptoError> {
        let below = self.memory_kib < KDF_FLOOR.memory_kib
            || self.iterations < KDF_FLOOR.iterations
            || self.parallelism < KDF_FLOOR.parallelism;
        let above = self.memory_kib > KDF_MAX_MEMORY_KIB
            || self.iterations > KDF_MAX_ITERATIONS
            || self.parallelism > KDF_MAX_PARALLELISM;
        if below || above {
            return Err(CryptoError::KdfTooWeak(format!(
                "memory {} KiB, iterations {}, parallelism {}; allowed: memory {}..={} KiB, iterations {}..={}, parallelism {}..={}",
                self.memory_kib, self.iterations, self.parallelism, KDF_FLOOR.memory_kib, KDF_MAX_MEMORY_KIB,
                KDF_FLOOR.iterations, KDF_MAX_ITERATIONS, KDF_FLOOR.parallelism, KDF_MAX_PARALLELISM
            )));
        }
        Ok(())
    }
}

fn kek(password: &[u8], params: &KdfParams, salt: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let p = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password, salt, out.as_mut()).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

fn aad(kf: &KeyFile, key_id: &KeyId) -> Vec<u8> {
    let mut a = kf.public_header();
    a.extend_from_slice(key_id.as_bytes());
    a
}

/// The public labels of a key file (shown by `key list`, authenticated, not secret).
pub struct KeyLabel {
    pub created_unix: i64,
    pub host: String,
    pub user: String,
}

/// Wraps `master` (and the repo id) under `password`, returning the encoded key file.
pub fn create_key_file(
    master: &MasterKey,
    repo_id: RepoId,
    password: &[u8],
    params: KdfParams,
    key_id: &KeyId,
    label: KeyLabel,
) -> Result<Vec<u8>, CryptoError> {
    let KeyLabel { created_unix, host, user } = label;
    params.check()?;
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).expect("the operating system's random source failed");
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("the operating system's random source failed");
    let kek = kek(password, &params, &salt)?;
    let commitment = blake3::derive_key(CTX_COMMIT, kek.as_ref());
    let mut kf = KeyFile { kdf: params, salt, commitment, created_unix, host, user, nonce, sealed: Vec::new() };
    let mut payload = Zeroizing::new([0u8; 64]);
    payload[..32].copy_from_slice(&master.0);
    payload[32..].copy_from_slice(repo_id.as_bytes());
    let cipher = Aes256Gcm::new_from_slice(kek.as_ref()).expect("32-byte key");
    kf.sealed = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: payload.as_ref(), aad: &aad(&kf, key_id) })
        .expect("AES-GCM encryption cannot fail");
    Ok(kf.encode())
}

/// Unwraps a decoded key file. `WrongPassword` when the commitment does not match;
/// `Authentication` when it matches but the sealed payload fails (a damaged key file).
pub fn open_key_file(kf: &KeyFile, key_id: &KeyId, password: &[u8]) -> Result<(MasterKey, RepoId), CryptoError> {
    kf.kdf.check()?;
    let kek = kek(password, &kf.kdf, &kf.salt)?;
    if blake3::derive_key(CTX_COMMIT, kek.as_ref()) != kf.commitment {
        return Err(CryptoError::WrongPassword);
    }
    let cipher = Aes256Gcm::new_from_slice(kek.as_ref()).expect("32-byte key");
    let plain = Zeroizing::new(
        cipher
            .decrypt(&Nonce::from(kf.nonce), Payload { msg: &kf.sealed, aad: &aad(kf, key_id) })
            .map_err(|_| CryptoError::Authentication)?,
    );
    let mut mk = [0u8; 32];
    mk.copy_from_slice(&plain[..32]);
    let repo_id = RepoId(plain[32..64].try_into().expect("64-byte payload"));
    Ok((MasterKey(mk), repo_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_password_and_corruption_are_told_apart() {
        let mk = MasterKey::random();
        let rid = RepoId::random();
        let kid = KeyId::random();
        let enc = create_key_file(
            &mk,
            rid,
            b"pw",
            KDF_FLOOR,
            &kid,
            KeyLabel { created_unix: 0, host: "h".into(), user: "u".into() },
        )
        .unwrap();
        let kf = KeyFile::decode(&enc).unwrap();
        let (m2, r2) = open_key_file(&kf, &kid, b"pw").unwrap();
        assert_eq!(m2.0, mk.0);
        assert_eq!(r2, rid);
        assert!(matches!(open_key_file(&kf, &kid, b"nope"), Err(CryptoError::WrongPassword)));
        let mut bad = kf.clone();
        bad.sealed[3] ^= 1;
        assert!(matches!(open_key_file(&bad, &kid, b"pw"), Err(CryptoError::Authentication)));
        let mut relabeled = kf.clone();
        relabeled.host = "other".into();
        assert!(matches!(open_key_file(&relabeled, &kid, b"pw"), Err(CryptoError::Authentication)));
        assert!(matches!(open_key_file(&kf, &KeyId::random(), b"pw"), Err(CryptoError::Authentication)));
    }

    #[test]
    fn weak_parameters_are_refused() {
        let weak = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        assert!(weak.check().is_err());
        KDF_FLOOR.check().unwrap();
        KDF_DEFAULT.check().unwrap();
    }
}
