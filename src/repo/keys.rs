//! Key files: unlocking a repository and managing its passwords.

use super::{key_path, RepoError, Repository, Result};
use crate::crypto::{self, CryptoError, MasterKey};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::id::{KeyId, RepoId};
use crate::storage::Store;

/// One key file as listed by `key list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub current: bool,
    pub created: String,
    pub host: String,
    pub username: String,
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    pub kdf_parallelism: u32,
}

fn whoami() -> (String, String) {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let user = uzers::get_current_username().map(|u| u.to_string_lossy().into_owned()).unwrap_or_default();
    (host, user)
}

/// Writes a new key file wrapping `master` and returns its id.
pub(crate) fn write_key_file(
    store: &Store,
    master: &MasterKey,
    repo_id: RepoId,
    password: &[u8],
    kdf: KdfParams,
) -> Result<KeyId> {
    let id = KeyId::random();
    let (host, user) = whoami();
    let created = crate::clock::now().as_second();
    let bytes = crypto::create_key_file(
        master,
        repo_id,
        password,
        kdf,
        &id,
        crypto::KeyLabel { created_unix: created, host, user },
    )
    .map_err(RepoError::Crypto)?;
    store.put_new(&key_path(&id), bytes)?;
    Ok(id)
}

fn key_files(store: &Store) -> Result<Vec<(KeyId, String)>> {
    let mut out = Vec::new();
    for l in store.list("keys")? {
        let name = l.path;
        if let Some(id) = name.strip_prefix("keys/").and_then(KeyId::from_name) {
            out.push((id, name));
        }
    }
    Ok(out)
}

/// Tries the password against every key file. For each whose commitment matches, `accept`
/// is called with the unwrapped master key; the first it accepts wins. A wrong password on
/// all of them is `WrongPassword`; a key file that matches but is damaged, or that `accept`
/// rejects, is reported if nothing else works.
pub(crate) fn unlock<T>(
    store: &Store,
    password: &[u8],
    mut accept: impl FnMut(MasterKey, RepoId, KeyId) -> Result<T>,
) -> Result<T> {
    let mut damaged: Option<RepoError> = None;
    for (id, name) in key_files(store)? {
        let mut bytes = store.get(&name)?;
        // An empty file is junk (`check` reports it), not a damaged key.
        if bytes.is_empty() {
            continue;
        }
        let mut opened = open_key(&bytes, &id, &name, password);
        // Bytes from a remote store may have been damaged in transit: fetched once more.
        if matches!(opened, Err(Some(_))) && !store.is_local() {
            bytes = store.get(&name)?;
            opened = open_key(&bytes, &id, &name, password);
        }
        match opened {
            Ok((master, repo_id)) => match accept(master, repo_id, id) {
                Ok(t) => return Ok(t),
                Err(e) => damaged = Some(e),
            },
            Err(None) => continue,
            Err(Some(e)) => damaged = Some(e),
        }
    }
    Err(damaged.unwrap_or(RepoError::WrongPassword))
}

/// Decodes and opens one key file: `Err(None)` for a wrong password, `Err(Some)` if damaged.
fn open_key(
    bytes: &[u8],
    id: &KeyId,
    name: &str,
    password: &[u8],
) -> std::result::Result<(MasterKey, RepoId), Option<RepoError>> {
    let kf = KeyFile::decode(bytes).map_err(|e| Some(RepoError::damaged(name, e)))?;
    match crypto::open_key_file(&kf, id, password) {
        Ok(k) => Ok(k),
        Err(CryptoError::WrongPassword) => Err(None),
        Err(e) => Err(Some(RepoError::damaged(name, e))),
    }
}

impl Repository {
    /// Adds a password: a new key file wrapping the same master key.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let (master, repo_id, _) = unlock_current(self)?;
        write_key_file(&self.store, &master, repo_id, password, kdf)
    }

    /// Lists key files (their public headers; nothing is decrypted).
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for (id, name) in key_files(&self.store)? {
            let bytes = self.store.get(&name)?;
            if bytes.is_empty() {
                continue; // junk
            }
            let kf = KeyFile::decode(&bytes).map_err(|e| RepoError::damaged(name, e))?;
            let created = jiff::Timestamp::from_second(kf.created_unix).map(|t| t.to_string()).unwrap_or_default();
            out.push(KeyInfo {
                id: id.to_hex(),
                current: id == self.key_id,
                created,
                host: kf.host,
                username: kf.user,
                kdf_memory_kib: kf.kdf.memory_kib,
                kdf_iterations: kf.kdf.iterations,
                kdf_parallelism: kf.kdf.parallelism,
            });
        }
        Ok(out)
    }

    /// Removes a key file. Refuses the key in use and a prefix matching several keys.
    pub fn remove_key(&self, id_prefix: &str) -> Result<KeyId> {
        let matches: Vec<KeyId> = key_files(&self.store)?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.to_hex().starts_with(&id_prefix.to_ascii_lowercase()))
            .collect();
        let id = match matches.as_slice() {
            [one] => *one,
            [] => return Err(RepoError::Invalid(format!("no key matches {id_prefix:?}"))),
            _ => return Err(RepoError::Invalid(format!("{id_prefix:?} matches several keys; give more digits"))),
        };
        if id == self.key_id {
            return Err(RepoError::Invalid(
                "refusing to remove the key in use (open the repository with another password first)".into(),
            ));
        }
        self.store.delete(&key_path(&id))?;
        Ok(id)
    }

    /// Changes the password of the key in use: writes the new key file first, then removes
    /// the old one, so a crash in between leaves both passwords working, never neither.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let new_id = self.add_key(new_password, kdf)?;
        let old = self.key_id;
        self.key_id = new_id;
        self.store.delete(&key_path(&old))?;
        Ok(new_id)
    }
}

/// The master key of the open repository, for wrapping it under another password.
fn unlock_current(repo: &Repository) -> Result<(MasterKey, RepoId, KeyId)> {
    Ok((repo.master.clone(), repo.id(), repo.key_id))
}
