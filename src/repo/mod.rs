//! Opening, reading and initialising a repository.
//!
//! Object names (docs/format.md, "Layout"): `config`, `keys/<id>`, `data/<2 hex>/<id>`,
//! `index/<id>`, `snapshots/<id>`, `locks/<id>` (reserved). Reading is split from writing:
//! [`Repository`] reads and manages keys; [`writer::RepoWriter`] is one backup session.

pub mod audit;
pub mod cache;
pub mod check;
pub mod damage;
pub mod drills;
pub mod governance;
pub mod index;
pub mod keys;
pub mod lock;
pub mod packs;
mod placebuf;
pub mod readahead;
pub mod recheck;
pub mod rollback;
pub mod snapshots;
pub mod stats;
pub mod writer;

use std::sync::Arc;

use crate::compress;
use crate::crypto::{self, CryptoError, Keys};
use crate::format::config::{ChunkerParams, Config};
use crate::format::envelope::{self, Header, ObjectType};
use crate::format::keyfile::KdfParams;
use crate::format::{tree, BlobType, Compression, FormatError};
use crate::id::{
    AuditId, BlobId, DrillId, ErasureId, HoldId, IndexId, KeyId, LockId, PackId, PolicyId, RepoId, SnapshotId,
};
use crate::storage::{StorageError, Store};

pub use index::{BlobLoc, MasterIndex};

/// Default pack target size: 16 MiB (docs/format.md explains the choice).
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// Failures of repository operations, each naming the object concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    #[error("no repository at {0} (it has no config object; run `coffer init` first)")]
    NotFound(String),
    /// The location itself is not there (no such folder, no such bucket): the message says
    /// which.
    #[error("{0}")]
    LocationMissing(String),
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    #[error("wrong password: no key file of the repository matches it")]
    WrongPassword,
    #[error("{object}: {reason}")]
    Damaged { object: String, reason: String },
    /// Authenticated, but of a version or kind this release does not know: refused, never
    /// worked around as damage.
    #[error("{object}: {reason}: it was written by a newer Coffer release; upgrade this one")]
    NewerFormat { object: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    /// A snapshot to remove is under a legal hold or the minimum retention: exit code 13.
    #[error("{0}")]
    Protected(String),
    /// Another process holds what this one needs (a second prune): exit code 11.
    #[error("{0}")]
    Locked(String),
    #[error(
        "this process could not renew its lock for {secs} s (it was stopped, suspended or cut off), so a \
         prune may have judged it over; it commits nothing more: run it again"
    )]
    SessionExpired { secs: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Crypto(CryptoError),
}

impl RepoError {
    pub(crate) fn damaged(object: impl Into<String>, reason: impl ToString) -> Self {
        RepoError::Damaged { object: object.into(), reason: reason.to_string() }
    }

    /// A decoding failure of an authenticated object: damage, or a newer format.
    pub(crate) fn decoding(object: impl Into<String>, e: FormatError) -> Self {
        if e.is_newer_format() {
            RepoError::NewerFormat { object: object.into(), reason: e.to_string() }
        } else {
            RepoError::damaged(object, e)
        }
    }

    /// Whether the error says an object is damaged or missing (as opposed to storage that
    /// could not be reached, a wrong password, or a newer format).
    pub fn is_damage(&self) -> bool {
        matches!(self, RepoError::Damaged { .. })
    }
}

/// Damage a command worked around (an unreadable index file or snapshot): each message is
/// kept once, in order, and handed once to the sink the caller installed (the CLI prints it).
#[derive(Default)]
pub struct Warnings {
    seen: std::sync::Mutex<Vec<String>>,
    #[allow(clippy::type_complexity)]
    sink: std::sync::Mutex<Option<Box<dyn Fn(&str) + Send + Sync>>>,
}

impl Warnings {
    /// Records `msg`; the first time it is seen, it goes to the sink.
    pub fn warn(&self, msg: String) {
        let mut seen = self.seen.lock().expect("poisoned");
        if seen.contains(&msg) {
            return;
        }
        if let Some(f) = self.sink.lock().expect("poisoned").as_ref() {
            f(&msg);
        }
        seen.push(msg);
    }
    pub fn set_sink(&self, f: Box<dyn Fn(&str) + Send + Sync>) {
        *self.sink.lock().expect("poisoned") = Some(f);
    }
    /// Every warning so far, in order.
    pub fn all(&self) -> Vec<String> {
        self.seen.lock().expect("poisoned").clone()
    }
}

pub type Result<T> = std::result::Result<T, RepoError>;

pub fn pack_path(id: &PackId) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}
pub fn index_path(id: &IndexId) -> String {
    format!("index/{id}")
}
pub fn snapshot_path(id: &SnapshotId) -> String {
    format!("snapshots/{id}")
}
pub fn key_path(id: &KeyId) -> String {
    format!("keys/{id}")
}
pub fn lock_path(id: &LockId) -> String {
    format!("locks/{id}")
}
pub fn drill_path(id: &DrillId) -> String {
    format!("drills/{id}")
}
pub fn policy_path(id: &PolicyId) -> String {
    format!("policy/{id}")
}
pub fn hold_path(id: &HoldId) -> String {
    format!("holds/{id}")
}
pub fn audit_path(id: &AuditId) -> String {
    format!("audit/{id}")
}
pub fn erasure_path(id: &ErasureId) -> String {
    format!("erasures/{id}")
}
pub const CONFIG_PATH: &str = "config";

/// Options for `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub compression_level: i32,
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    /// S3 Object Lock for every object (S3 only; the bucket must have Object Lock enabled).
    pub object_lock: Option<crate::format::config::ObjectLock>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            compression_level: 3,
            kdf: crypto::KDF_DEFAULT,
            chunker: ChunkerParams::DEFAULT,
            object_lock: None,
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

/// An open repository: storage, keys and config.
pub struct Repository {
    store: Store,
    /// Local copies of immutable metadata (remote repositories only).
    cache: Option<cache::Cache>,
    /// Read-ahead of pack ranges (remote repositories only).
    readahead: Option<readahead::Readahead>,
    master: crypto::MasterKey,
    keys: Arc<Keys>,
    config: Config,
    key_id: KeyId,
    warnings: Arc<Warnings>,
    /// This client's marks of what it has seen (rollback detection), once enabled.
    seen: Option<rollback::Seen>,
}

impl Repository {
    /// Creates a repository: first the key file, then `config` (whose presence is what
    /// makes a repository, so a crash midway leaves no half-made repository behind).
    pub fn init(store: Store, password: &[u8], opts: &InitOptions) -> Result<Repository> {
        validate_settings(&opts.chunker, opts.pack_size, opts.compression_level).map_err(RepoError::Invalid)?;
        match store.get(CONFIG_PATH) {
            Ok(_) => return Err(RepoError::AlreadyExists(store.location().to_string())),
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(lock) = opts.object_lock {
            if store.is_local() {
                return Err(RepoError::Invalid(format!(
                    "{}: --object-lock needs an S3 repository (s3://bucket/prefix) in a bucket with Object Lock enabled",
                    store.location()
                )));
            }
            if !store.bucket_lock_enabled()? {
                return Err(RepoError::Invalid(format!(
                    "{}: the bucket does not have S3 Object Lock enabled (it can only be enabled when the bucket is \
                     made: `aws s3api create-bucket --object-lock-enabled-for-bucket`)",
                    store.location()
                )));
            }
            store.set_object_lock(lock)?;
        }
        let master = crypto::MasterKey::random();
        let repo_id = RepoId::random();
        let key_id = keys::write_key_file(&store, &master, repo_id, password, opts.kdf)?;
        let keys = Arc::new(Keys::derive(&master, repo_id));
        let config = Config {
            version: crate::format::config::VERSION,
            repo_id: repo_id.0,
            created_ns: crate::clock::to_unix_ns(crate::clock::now()),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_target_size: opts.pack_size,
            object_lock: opts.object_lock,
        };
        let repo = Repository {
            store,
            cache: None,
            readahead: None,
            master,
            keys,
            config,
            key_id,
            warnings: Default::default(),
            seen: None,
        };
        let sealed = repo.seal_object(ObjectType::Config, &[0u8; 32], &repo.config.encode(), 0);
        repo.store.put_new(CONFIG_PATH, sealed)?;
        Ok(repo)
    }

    /// Opens a repository with a password: tries every key file the password opens until
    /// one also opens `config` (a key file left by an interrupted `init` wraps another
    /// master key, and must not stop the real one from being found).
    pub fn open(store: Store, password: &[u8]) -> Result<Repository> {
        let config_bytes = match store.get(CONFIG_PATH) {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => return Err(RepoError::NotFound(store.location().to_string())),
            Err(e) => return Err(e.into()),
        };
        let mut config_bytes = config_bytes;
        keys::unlock(&store, password, |master, repo_id, key_id| {
            let keys = Keys::derive(&master, repo_id);
            let config = match open_config(&keys, repo_id, &config_bytes) {
                // Damaged in transit? Fetched once more before it is called damage.
                Err(_) if !store.is_local() => {
                    config_bytes = store.get(CONFIG_PATH)?;
                    open_config(&keys, repo_id, &config_bytes)?
                }
                r => r?,
            };
            let readahead = (!store.is_local()).then(readahead::Readahead::default);
            // A copy of an Object Lock bucket on a local disk has no locks to keep.
            if let Some(lock) = config.object_lock.filter(|_| !store.is_local()) {
                store.set_object_lock(lock)?;
            }
            Ok(Repository {
                store: store.clone(),
                cache: None,
                readahead,
                master,
                keys: Arc::new(keys),
                config,
                key_id,
                warnings: Default::default(),
                seen: None,
            })
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads packs without read-ahead windows (tests that must see every deletion at once).
    #[cfg(test)]
    pub(crate) fn set_readahead(&mut self, on: bool) {
        self.readahead = on.then(readahead::Readahead::default);
    }

    /// The same repository reached through another store, without cache or read-ahead
    /// (tests: a gated view of one store), with no key derivation.
    #[cfg(test)]
    pub(crate) fn view(&self, store: Store) -> Repository {
        Repository {
            store,
            cache: None,
            readahead: None,
            master: self.master.clone(),
            keys: self.keys.clone(),
            config: self.config.clone(),
            key_id: self.key_id,
            warnings: self.warnings.clone(),
            seen: None,
        }
    }

    /// Keeps local copies of index files, snapshots and trees under `base/<repo id>/`.
    pub fn enable_cache(&mut self, base: &std::path::Path) -> std::io::Result<()> {
        self.cache = Some(cache::Cache::open(base, &self.id().to_hex())?);
        Ok(())
    }

    /// Compares every reading of the snapshots with this client's marks, kept under `dir`
    /// (see [`rollback`]).
    pub fn enable_rollback_check(&mut self, dir: &std::path::Path) {
        self.seen = Some(rollback::Seen::open(dir, &self.id().to_hex()));
    }

    pub fn seen(&self) -> Option<&rollback::Seen> {
        self.seen.as_ref()
    }

    /// Damage worked around so far (see [`Warnings`]).
    pub fn warnings(&self) -> &Warnings {
        &self.warnings
    }

    pub fn cache(&self) -> Option<&cache::Cache> {
        self.cache.as_ref()
    }

    /// An immutable object's bytes, from the cache when `valid` accepts the cached copy,
    /// else from storage (then cached). A cached copy `valid` rejects is dropped.
    pub(crate) fn cached_get<T>(
        &self,
        kind: &str,
        name: &str,
        path: &str,
        valid: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<T> {
        if let Some(c) = &self.cache {
            if let Some(b) = c.get(kind, name) {
                match valid(&b) {
                    Ok(t) => return Ok(t),
                    Err(_) => c.remove(kind, name),
                }
            }
        }
        let b = self.store.get(path)?;
        let (b, t) = match valid(&b) {
            Ok(t) => (b, t),
            // Damaged in transit? Fetched once more before it is called damage.
            Err(_) if !self.store.is_local() => {
                let b = self.store.get(path)?;
                let t = valid(&b)?;
                (b, t)
            }
            Err(e) => return Err(e),
        };
        if let Some(c) = &self.cache {
            c.put(kind, name, &b);
        }
        Ok(t)
    }
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn id(&self) -> RepoId {
        self.keys.repo_id()
    }

    pub(crate) fn key_type(t: ObjectType) -> u8 {
        match t {
            ObjectType::Config => crypto::KEY_TYPE_CONFIG,
            ObjectType::Index => crypto::KEY_TYPE_INDEX,
            ObjectType::Snapshot => crypto::KEY_TYPE_SNAPSHOT,
            ObjectType::Lock => crypto::KEY_TYPE_LOCK,
            ObjectType::Drill => crypto::KEY_TYPE_DRILL,
            ObjectType::Policy => crypto::KEY_TYPE_POLICY,
            ObjectType::Hold => crypto::KEY_TYPE_HOLD,
            ObjectType::Audit => crypto::KEY_TYPE_AUDIT,
            ObjectType::Erasure => crypto::KEY_TYPE_ERASURE,
        }
    }

    /// Compresses (when it helps) and encrypts a small object (docs/format.md, "Object envelope").
    pub fn seal_object(&self, t: ObjectType, id: &[u8; 32], payload: &[u8], level: i32) -> Vec<u8> {
        seal_envelope(&self.keys, t, id, payload, level)
    }

    /// Authenticates, decrypts and decompresses a small object.
    pub fn open_object(&self, t: ObjectType, id: &[u8; 32], name: &str, object: &[u8]) -> Result<Vec<u8>> {
        open_envelope(&self.keys, t, id, name, object)
    }

    /// Reads, verifies and decodes one blob. The plaintext's keyed hash must equal `id`.
    /// A blob only obsolete packs hold is read from any of them that is still there.
    pub fn read_blob(&self, index: &MasterIndex, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| {
            RepoError::damaged(
                format!("blob {id}"),
                "not in any index (if an index file was lost, `coffer repair index` rebuilds the index from the packs)",
            )
        })?;
        match self.read_blob_at(index, id, loc) {
            Err(e) if index.fallback_locations(id).len() > 1 => {
                for other in index.fallback_locations(id).iter().skip(1) {
                    if let Ok(plain) = self.read_blob_at(index, id, *other) {
                        return Ok(plain);
                    }
                }
                Err(e)
            }
            r => r,
        }
    }

    /// Reads one chunk of a file's content: the blob must be indexed as data (a file node
    /// naming a tree blob is a damaged or hostile tree, never restored as bytes).
    pub fn read_data_blob(&self, index: &MasterIndex, id: &BlobId) -> Result<Vec<u8>> {
        if let Some(loc) = index.get(id) {
            if loc.blob_type != BlobType::Data {
                // A bad tree, not a bad blob: nothing to record as damaged.
                return Err(RepoError::Invalid(format!("blob {id}: a file's content names a tree blob")));
            }
        }
        self.read_blob(index, id)
    }

    fn read_blob_at(&self, index: &MasterIndex, id: &BlobId, loc: BlobLoc) -> Result<Vec<u8>> {
        let pack = index.pack_id(loc.pack);
        let path = pack_path(&pack);
        let cache = self.cache.as_ref().filter(|_| loc.blob_type == BlobType::Tree);
        if let Some(b) = cache.and_then(|c| c.get("trees", &id.to_hex())) {
            match self.decode_blob(&pack, id, &loc, b) {
                Ok(plain) => return Ok(plain),
                Err(_) => cache.expect("checked").remove("trees", &id.to_hex()),
            }
        }
        let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.stored_len);
        let stored = match &self.readahead {
            Some(ra) => ra.read(&self.store, &path, pack, index.packs()[loc.pack as usize].size, range.clone()),
            None => self.store.get_range(&path, range.clone()),
        };
        let missing = |e| match e {
            StorageError::NotFound { .. } => RepoError::damaged(path.clone(), "pack missing"),
            e => e.into(),
        };
        let stored = stored.map_err(missing)?;
        let plain = match self.decode_blob(&pack, id, &loc, stored.to_vec()) {
            Ok(p) => Ok((p, stored)),
            // Bytes from a remote store may have been damaged in transit: fetched once more
            // (past the read-ahead windows) before they are called damage.
            Err(_) if !self.store.is_local() => {
                if let Some(ra) = &self.readahead {
                    ra.forget(&pack);
                }
                let again = self.store.get_range(&path, range).map_err(missing)?;
                self.decode_blob(&pack, id, &loc, again.to_vec()).map(|p| (p, again))
            }
            Err(e) => Err(e),
        };
        let (plain, stored) = plain.map_err(|reason| RepoError::damaged(format!("{path} (blob {id})"), reason))?;
        if let Some(c) = cache {
            c.put("trees", &id.to_hex(), &stored);
        }
        Ok(plain)
    }

    /// Decrypts and checks one blob's stored bytes (as found in its pack).
    pub fn decode_blob(
        &self,
        pack: &PackId,
        id: &BlobId,
        loc: &BlobLoc,
        mut buf: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, String> {
        let cipher = self.keys.object_cipher(crypto::KEY_TYPE_PACK, pack.as_bytes());
        let ctx = crypto::blob_context(loc.blob_type as u8, loc.compression as u8, id, loc.raw_len);
        cipher.open(u64::from(loc.offset), &ctx, &mut buf).map_err(|e| e.to_string())?;
        let plain = compress::decompress(&buf, loc.compression, loc.raw_len as usize).map_err(|e| e.to_string())?;
        if self.keys.blob_id(loc.blob_type, &plain) != *id {
            return Err("content does not match its id".into());
        }
        Ok(plain)
    }

    /// Loads and decodes a tree blob.
    pub fn load_tree(&self, index: &MasterIndex, id: &BlobId) -> Result<Vec<tree::Node>> {
        if let Some(loc) = index.get(id) {
            if loc.blob_type != BlobType::Tree {
                return Err(RepoError::damaged(format!("tree {id}"), "indexed as a data blob"));
            }
        }
        let plain = self.read_blob(index, id)?;
        tree::decode(&plain).map_err(|e| RepoError::decoding(format!("tree {id}"), e))
    }
}

/// Opens and checks the config object with the keys of one key file.
fn open_config(keys: &Keys, repo_id: RepoId, bytes: &[u8]) -> Result<Config> {
    let plain = open_envelope(keys, ObjectType::Config, &[0u8; 32], CONFIG_PATH, bytes)?;
    let config = Config::decode(&plain).map_err(|e| RepoError::decoding(CONFIG_PATH, e))?;
    if config.repo_id != repo_id.0 {
        return Err(RepoError::damaged(CONFIG_PATH, "belongs to another repository than the key file"));
    }
    validate_settings(&config.chunker, config.pack_target_size, config.compression_level)
        .map_err(|e| RepoError::damaged(CONFIG_PATH, e))?;
    Ok(config)
}

/// Checks the settings a repository is created with, and found with on open.
fn validate_settings(chunker: &ChunkerParams, pack_size: u32, level: i32) -> std::result::Result<(), String> {
    chunker.validate().map_err(|e| e.to_string())?;
    if !(1024 * 1024..=512 * 1024 * 1024).contains(&pack_size) {
        return Err("pack size must be between 1 MiB and 512 MiB".into());
    }
    check_compression_level(level)
}

/// zstd levels Coffer accepts: -7..=22, 0 meaning "store raw".
pub fn check_compression_level(level: i32) -> std::result::Result<(), String> {
    if (-7..=22).contains(&level) {
        Ok(())
    } else {
        Err(format!("compression level {level} is out of range (-7 to 22, 0 = off)"))
    }
}

/// Compresses (when it helps) and encrypts a small object (docs/format.md, "Object envelope").
pub(crate) fn seal_envelope(keys: &Keys, t: ObjectType, id: &[u8; 32], payload: &[u8], level: i32) -> Vec<u8> {
    let (mut body, compression) = if level == 0 {
        (payload.to_vec(), Compression::None)
    } else {
        let mut raw = (payload.len() as u64).to_le_bytes().to_vec();
        match zstd::bulk::compress(payload, level) {
            Ok(c) if c.len() + 8 < payload.len() => {
                raw.extend_from_slice(&c);
                (raw, Compression::Zstd)
            }
            _ => (payload.to_vec(), Compression::None),
        }
    };
    let header = Header { object_type: t, compression }.encode();
    keys.object_cipher(Repository::key_type(t), id).seal(0, &header, &mut body);
    let mut out = header.to_vec();
    out.extend_from_slice(&body);
    out
}

/// Authenticates, decrypts and decompresses a small object (docs/format.md, "Object envelope").
pub(crate) fn open_envelope(keys: &Keys, t: ObjectType, id: &[u8; 32], name: &str, object: &[u8]) -> Result<Vec<u8>> {
    let (header, ct) = Header::decode(object).map_err(|e| RepoError::damaged(name, e))?;
    if header.object_type != t {
        return Err(RepoError::damaged(name, "object type does not match its name"));
    }
    let mut buf = ct.to_vec();
    keys.object_cipher(Repository::key_type(t), id)
        .open(0, &object[..envelope::HEADER_LEN], &mut buf)
        .map_err(|e| RepoError::damaged(name, e))?;
    match header.compression {
        Compression::None => Ok(buf),
        Compression::Zstd => {
            if buf.len() < 8 {
                return Err(RepoError::damaged(name, FormatError::Truncated));
            }
            let raw_len = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            if raw_len > 1 << 34 {
                return Err(RepoError::damaged(name, "implausible decompressed size"));
            }
            compress::decompress(&buf[8..], Compression::Zstd, raw_len as usize)
                .map_err(|e| RepoError::damaged(name, e))
        }
    }
}
