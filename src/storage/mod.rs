//! Where repository objects live: a thin blocking wrapper over `object_store`.
//!
//! The contract every store gives Coffer (docs/storage.md):
//! - `put_new` is atomic and write-once: it either stores the whole object under a name that
//!   did not exist, or fails (`AlreadyExists` if the name is taken). Objects are never
//!   rewritten or appended to.
//! - When `put_new` returns, the object is durable: for local folders and NAS mounts the
//!   file and its directory are fsynced (`LocalFileSystem::with_fsync(true)`).
//! - `get` of a missing object is `NotFound`, distinct from every other failure.
//! - `list` returns the complete listing or fails; a partial listing is never returned.
//!
//! The core is synchronous threads (CPU-bound stages); this wrapper runs each request on a
//! small tokio runtime and blocks the calling thread until it completes, so many worker
//! threads can have requests in flight at once.

mod direct;
pub mod objectlock;
mod s3list;
pub mod webhook;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// A failed storage operation, naming the operation and the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{path}: object not found")]
    NotFound { path: String },
    #[error("{path}: object already exists")]
    AlreadyExists { path: String },
    #[error("repository location {0}: {1}")]
    Location(String, String),
    /// S3 Object Lock keeps the object until then: it is not deleted (nor would S3 delete it).
    #[error("{path}: locked by S3 Object Lock ({mode}) until {until}")]
    Locked { path: String, mode: &'static str, until: String },
    /// A failure of the storage itself; `hint` says what to do about the common causes.
    #[error("{op} {path}: {}{source}", .hint.map(|h| format!("{h}; ")).unwrap_or_default())]
    Backend {
        op: &'static str,
        path: String,
        hint: Option<&'static str>,
        /// Boxed: object_store's error is large, and every Result of every layer carries it.
        #[source]
        source: Box<object_store::Error>,
    },
}

/// What an S3 failure usually means, from its text (object_store's errors carry no codes
/// for these): the fix, in words an operator acts on.
pub fn hint_for(text: &str) -> Option<&'static str> {
    if text.contains("URL scheme is not allowed") {
        return Some("the endpoint is plain http://: give --s3-allow-http (or set AWS_ALLOW_HTTP=true) to allow it");
    }
    // The instance metadata service's paths (IMDSv2 token, then the role's credentials):
    // object_store asks it last, when no credentials were given.
    if text.contains("/latest/api/token") || text.contains("/latest/meta-data") || text.contains("169.254.170.2") {
        return Some(
            "no AWS credentials found: Coffer reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with \
             AWS_SESSION_TOKEN), AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, the ECS container credentials \
             (AWS_CONTAINER_CREDENTIALS_*), then the EC2 instance metadata service, which did not answer \
             (~/.aws/credentials is not read)",
        );
    }
    if text.contains("NoSuchBucket") {
        return Some("the bucket does not exist (Coffer does not create buckets)");
    }
    if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") {
        return Some("the AWS credentials were refused: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    }
    None
}

/// An error and all its causes as one text.
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl StorageError {
    fn from_os(op: &'static str, path: &str, e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound { path: path.to_string() },
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists { path: path.to_string() },
            source => StorageError::Backend {
                op,
                path: path.to_string(),
                hint: hint_for(&chain_text(&source)),
                source: Box::new(source),
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// One object of a listing: its path (relative to the repository root), size, and the
/// storage's own timestamp for it (S3 `LastModified`; for local folders and NAS mounts, the
/// mtime the file system gave the file). Safety decisions that need time use only these
/// timestamps, never the client's clock (docs/storage.md, "Many clients and prune").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    /// Unix nanoseconds, by the storage's clock.
    pub modified_ns: i64,
}

impl Listed {
    fn from_meta(m: &object_store::ObjectMeta) -> Self {
        Listed {
            path: m.location.to_string(),
            size: m.size,
            modified_ns: m.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
        }
    }
}

/// A repository's storage: a set of named immutable objects.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    rt: Arc<tokio::runtime::Runtime>,
    location: String,
    /// For local folders: the root, and open files for ranged reads (see [`LocalReads`]).
    local: Option<Arc<LocalReads>>,
    /// Whole-operation retries after transient failures (see [`Store::retrying`]).
    retries: u32,
    /// `--limit-upload` / `--limit-download`.
    up: Option<Arc<RateLimit>>,
    down: Option<Arc<RateLimit>>,
    /// Operations made through this store (retries not counted), for reports.
    ops: Arc<OpCounts>,
    /// For S3: the bucket itself and the repository's prefix in it (empty or ending in
    /// `/`), for listings paged by Coffer (see `s3list`).
    s3: Option<(Arc<object_store::aws::AmazonS3>, String)>,
    /// For S3: the Object Lock requests `object_store` does not make.
    lock_api: Option<Arc<objectlock::LockApi>>,
    /// The repository's Object Lock settings (from its config, or `init`): every object but
    /// locks is locked when written, and locked objects are never deleted.
    object_lock: Arc<std::sync::OnceLock<crate::format::config::ObjectLock>>,
    /// Uploads go through `lock_api` (with `Content-MD5`, and the lock in the same request):
    /// always for an Object Lock repository, and from the first upload a bucket with a
    /// default retention refused without it (400 MissingUploadObjectWithObjectLockHeaders).
    own_puts: Arc<std::sync::atomic::AtomicBool>,
}

/// How many operations of each kind a store was asked for (a retried operation counts
/// once): what `prune --json` reports as the requests it made.
#[derive(Debug, Default, serde::Serialize)]
pub struct OpCounts {
    pub get: std::sync::atomic::AtomicU64,
    pub put: std::sync::atomic::AtomicU64,
    pub head: std::sync::atomic::AtomicU64,
    pub list: std::sync::atomic::AtomicU64,
    pub delete: std::sync::atomic::AtomicU64,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Paces transfers to an average rate. Each transfer of n bytes, once done, reserves n/rate
/// seconds on a timeline shared by all threads and sleeps until its reservation ends, so
/// concurrent transfers share the rate and the total never runs faster than it.
pub struct RateLimit {
    bytes_per_sec: f64,
    next: std::sync::Mutex<std::time::Instant>,
}

impl RateLimit {
    pub fn kib_per_sec(kib: u64) -> Self {
        RateLimit { bytes_per_sec: (kib.max(1) * 1024) as f64, next: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    fn account(&self, bytes: usize) {
        let wait = {
            let mut next = self.next.lock().expect("poisoned");
            let now = std::time::Instant::now();
            let start = (*next).max(now);
            *next = start + std::time::Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
            next.saturating_duration_since(now)
        };
        std::thread::sleep(wait);
    }
}

/// Ranged reads of a local repository with `pread` on cached descriptors.
///
/// `object_store`'s `LocalFileSystem` runs every read on tokio's blocking pool, which costs a
/// thread hop, two futex wake-ups and an open/close per read; restoring many small files
/// makes hundreds of thousands of such reads, and that overhead measured larger than the
/// decryption itself. Objects are immutable, so a cached descriptor can never see stale data.
/// Writes, listings and deletes still go through `object_store`.
struct LocalReads {
    root: std::path::PathBuf,
    open: std::sync::Mutex<std::collections::HashMap<String, Arc<std::fs::File>>>,
    /// Hard links were ruled out by the caller (`--no-hardlinks`).
    forced_no_hardlinks: bool,
    /// Whether the file system can make hard links (SMB/CIFS, some NAS cannot: see
    /// [`Store::put_new`]), probed at the first write, so that a command that writes
    /// nothing (a wrong password, a listing) leaves no trace in the repository.
    links: std::sync::OnceLock<bool>,
}

impl LocalReads {
    fn no_hardlinks(&self) -> bool {
        self.forced_no_hardlinks || !*self.links.get_or_init(|| supports_hard_links(&self.root))
    }
}

/// Whether `dir` supports hard links: makes a probe file, links it, removes both. A
/// directory we cannot write to (read-only access) is assumed to support them: nothing will
/// be written there anyway.
fn supports_hard_links(dir: &Path) -> bool {
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).expect("random source");
    let a = dir.join(format!(".coffer-link-probe-{}", hex::encode(tag)));
    let b = dir.join(format!(".coffer-link-probe-{}-link", hex::encode(tag)));
    if std::fs::write(&a, b"probe").is_err() {
        return true;
    }
    let linked = std::fs::hard_link(&a, &b).is_ok();
    let _ = std::fs::remove_file(&b);
    let _ = std::fs::remove_file(&a);
    linked
}

impl LocalReads {
    const MAX_OPEN: usize = 64;

    fn file(&self, path: &str) -> std::io::Result<Arc<std::fs::File>> {
        if let Some(f) = self.open.lock().expect("poisoned").get(path) {
            return Ok(f.clone());
        }
        let f = Arc::new(std::fs::File::open(self.root.join(path))?);
        let mut open = self.open.lock().expect("poisoned");
        if open.len() >= Self::MAX_OPEN {
            open.clear();
        }
        open.insert(path.to_string(), f.clone());
        Ok(f)
    }

    fn read(&self, path: &str, range: &Range<u64>) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let f = self.file(path)?;
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        f.read_exact_at(&mut buf, range.start)?;
        Ok(Bytes::from(buf))
    }
}

/// Objects at least this large go to remote stores as multipart uploads. object_store cannot
/// make a multipart upload conditional (`If-None-Match`), so for these the name is checked
/// first; only packs are this large, and their names are 256 random bits, so no other writer
/// can be racing for the name.
pub const MULTIPART_MIN: usize = 32 << 20;
/// Objects at least this large are written to local disks with `O_DIRECT` (see `direct`).
const DIRECT_MIN: usize = 1 << 20;

/// Part size of multipart uploads (S3's minimum is 5 MiB).
pub const MULTIPART_PART: usize = 8 << 20;

/// Settings of an S3 (or S3-compatible) repository. Everything not given here comes from the
/// standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Address buckets as `bucket.endpoint` rather than `endpoint/bucket` (path-style, the
    /// default with a custom endpoint, which MinIO, Ceph and most self-hosted stores expect).
    pub virtual_hosted: bool,
    pub allow_http: bool,
    /// Retries of a failed request before giving up (0: none).
    pub retries: usize,
}

/// Retries with exponential backoff and jitter on 5xx, throttling, timeouts and connection
/// errors (object_store's retry policy, which also retries an ambiguous write only when it is
/// idempotent: a conditional create that turns out to exist is reported as such).
fn retry_config(retries: usize) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: retries,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .max_blocking_threads(32)
            .thread_name("coffer-io")
            .build()
            .expect("tokio runtime"),
    )
}

impl Store {
    /// A repository in a local folder (or a NAS mount). With `create`, the folder is made.
    ///
    /// `no_hardlinks` forces the write path for file systems without hard links (otherwise
    /// it is chosen by probing the directory).
    pub fn local(dir: &Path, create: bool, no_hardlinks: bool) -> Result<Self> {
        let shown = dir.display().to_string();
        if create {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::Location(shown.clone(), e.to_string()))?;
        } else if !dir.is_dir() {
            return Err(StorageError::Location(shown, "no such directory".into()));
        }
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Location(shown.clone(), e.to_string()))?
            .with_fsync(true);
        let root = dir.canonicalize().map_err(|e| StorageError::Location(shown.clone(), e.to_string()))?;
        let local = Some(Arc::new(LocalReads {
            root,
            open: Default::default(),
            forced_no_hardlinks: no_hardlinks,
            links: Default::default(),
        }));
        Ok(Store {
            inner: Arc::new(fs),
            rt: runtime(),
            location: shown,
            local,
            retries: 0,
            up: None,
            down: None,
            ops: Default::default(),
            s3: None,
            lock_api: None,
            object_lock: Default::default(),
            own_puts: Default::default(),
        })
    }

    /// A repository at `s3://bucket/prefix`. Write-once objects use conditional creates
    /// (`If-None-Match: *`), so concurrent writers can never overwrite each other.
    pub fn s3(url: &str, opts: &S3Options) -> Result<Self> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StorageError::Location(url.into(), "an S3 repository is s3://bucket/prefix".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Location(url.into(), "no bucket name".into()));
        }
        let client_options = object_store::ClientOptions::new()
            // Per request: a 16 MiB pack must fit through a slow uplink (~0.5 Mbit/s).
            .with_timeout(std::time::Duration::from_secs(300))
            .with_connect_timeout(std::time::Duration::from_secs(15))
            .with_allow_http(opts.allow_http || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true"));
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_http_connector(s3list::GuardConnector)
            .with_retry(retry_config(opts.retries))
            .with_client_options(client_options.clone());
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &opts.region {
            b = b.with_region(r);
        }
        if opts.virtual_hosted {
            b = b.with_virtual_hosted_style_request(true);
        }
        let s3 = Arc::new(b.clone().build().map_err(|e| StorageError::Location(url.into(), e.to_string()))?);
        let prefix = prefix.trim_matches('/');
        let base_prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let lock_api = objectlock::LockApi::new(s3.clone(), &b, &client_options, base_prefix)?;
        let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
            s3.clone()
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3.clone(), prefix))
        };
        let base = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let retries = opts.retries.min(4) as u32;
        Ok(Store {
            inner,
            rt: runtime(),
            location: url.to_string(),
            local: None,
            retries,
            up: None,
            down: None,
            ops: Default::default(),
            s3: Some((s3, base)),
            lock_api: Some(Arc::new(lock_api)),
            object_lock: Default::default(),
            own_puts: Default::default(),
        })
    }

    /// An arbitrary object store (tests use `InMemory`).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, location: String) -> Self {
        Store {
            inner,
            rt: runtime(),
            location,
            local: None,
            retries: 0,
            up: None,
            down: None,
            ops: Default::default(),
            s3: None,
            lock_api: None,
            object_lock: Default::default(),
            own_puts: Default::default(),
        }
    }

    /// Locks every object written from now on (but locks) with these settings, and refuses
    /// to delete objects still locked. Only S3 stores have Object Lock.
    pub fn set_object_lock(&self, lock: crate::format::config::ObjectLock) -> Result<()> {
        if self.lock_api.is_none() {
            return Err(StorageError::Location(
                self.location.clone(),
                "S3 Object Lock needs an S3 repository (s3://bucket/prefix)".into(),
            ));
        }
        let _ = self.object_lock.set(lock);
        self.own_puts.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The Object Lock settings in force, if any.
    pub fn object_lock(&self) -> Option<crate::format::config::ObjectLock> {
        self.object_lock.get().copied()
    }

    /// For S3: an error naming the bucket when it does not exist (a missing bucket otherwise
    /// looks like a missing object, or an empty repository).
    pub fn check_bucket(&self) -> Result<()> {
        let Some(api) = &self.lock_api else { return Ok(()) };
        if self.rt.block_on(api.bucket_exists())? {
            return Ok(());
        }
        Err(StorageError::Location(
            self.location.clone(),
            format!(
                "the bucket does not exist at {} (Coffer does not create buckets: create it first, e.g. with `aws s3 mb`)",
                api.bucket_url()
            ),
        ))
    }

    /// Whether the bucket has Object Lock enabled (false for local stores).
    pub fn bucket_lock_enabled(&self) -> Result<bool> {
        match &self.lock_api {
            Some(api) => self.rt.block_on(api.bucket_enabled()),
            None => Ok(false),
        }
    }

    /// An object's lock, if it has one (always `None` for local stores).
    pub fn retention(&self, path: &str) -> Result<Option<objectlock::Retention>> {
        match &self.lock_api {
            Some(api) => {
                bump(&self.ops.head);
                self.retrying(|| self.rt.block_on(api.retention(path)))
            }
            None => Ok(None),
        }
    }

    /// An upload through `lock_api`: with `Content-MD5`, and locked unless it is a lock.
    fn own_put(&self, api: &objectlock::LockApi, path: &str, data: Bytes) -> Result<()> {
        let lock = self
            .object_lock()
            .filter(|_| !path.starts_with("locks/"))
            .map(|l| (l.mode, objectlock::until_from_now(&l)));
        match self.rt.block_on(api.put_new(path, data.clone(), lock)) {
            Err(StorageError::AlreadyExists { .. }) if self.get_once(path).is_ok_and(|b| b == data) => Ok(()),
            r => r,
        }
    }

    /// Whether S3 refused an upload for want of `Content-MD5` (a bucket with a default
    /// Object Lock retention): uploads then go through `lock_api`, from now on.
    fn needs_md5(&self, e: &object_store::Error) -> bool {
        let yes = self.lock_api.is_some() && e.to_string().contains("MissingUploadObjectWithObjectLockHeaders");
        if yes {
            self.own_puts.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        yes
    }

    /// Extends the lock of an object until `until_ns`, in the repository's mode.
    pub fn lock_until(&self, path: &str, until_ns: i64) -> Result<()> {
        let (Some(api), Some(lock)) = (&self.lock_api, self.object_lock()) else { return Ok(()) };
        bump(&self.ops.put);
        self.retrying(|| self.rt.block_on(api.set_retention(path, lock.mode, until_ns)))
    }

    /// Limits uploads and downloads to an average rate in KiB/s (`None`: unlimited).
    pub fn with_limits(mut self, upload_kib: Option<u64>, download_kib: Option<u64>) -> Self {
        self.up = upload_kib.map(|k| Arc::new(RateLimit::kib_per_sec(k)));
        self.down = download_kib.map(|k| Arc::new(RateLimit::kib_per_sec(k)));
        self
    }

    fn uploaded(&self, bytes: usize) {
        if let Some(l) = &self.up {
            l.account(bytes);
        }
    }

    fn downloaded(&self, bytes: usize) {
        if let Some(l) = &self.down {
            l.account(bytes);
        }
    }

    /// The operations made so far.
    pub fn ops(&self) -> &OpCounts {
        &self.ops
    }

    /// Whether the repository is a local folder (or NAS mount), where reads are cheap.
    /// The folder of a local repository (canonical), `None` for S3.
    pub fn local_root(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.root.as_path())
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Where the repository is, as the user named it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The location as one name for one repository however it was spelled: a local
    /// repository's absolute path with symlinks resolved; an S3 location as given.
    pub fn canonical_location(&self) -> String {
        match &self.local {
            Some(l) => l.root.display().to_string(),
            None => self.location.trim_end_matches('/').to_string(),
        }
    }

    /// Writes a new object; fails with `AlreadyExists` rather than replace one.
    pub fn put_new(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.put_new_reclaim(path, data).map(drop)
    }

    /// [`Self::put_new`], handing the buffer back (emptied) for reuse when the store kept no
    /// reference to it, so a writer can recycle its pack buffers instead of faulting in
    /// fresh pages for every pack.
    pub fn put_new_reclaim(&self, path: &str, data: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let data = Bytes::from(data);
        let n = data.len();
        bump(&self.ops.put);
        self.retrying(|| self.put_new_once(path, data.clone()))?;
        self.uploaded(n);
        Ok(data.try_into_mut().ok().map(|b| {
            let mut v = Vec::from(b);
            v.clear();
            v
        }))
    }

    /// The whole object.
    pub fn get(&self, path: &str) -> Result<Bytes> {
        bump(&self.ops.get);
        let b = self.retrying(|| self.get_once(path))?;
        self.downloaded(b.len());
        Ok(b)
    }

    /// Exactly the bytes in `range`; a range past the end is an error.
    pub fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        bump(&self.ops.get);
        let b = self.retrying(|| self.get_range_once(path, range.clone()))?;
        self.downloaded(b.len());
        Ok(b)
    }

    /// The size of an object.
    pub fn size(&self, path: &str) -> Result<u64> {
        bump(&self.ops.head);
        self.retrying(|| self.size_once(path))
    }

    /// An object's size and the storage's timestamp for it.
    pub fn head(&self, path: &str) -> Result<Listed> {
        bump(&self.ops.head);
        self.retrying(|| {
            let p = ObjPath::from(path);
            self.rt
                .block_on(self.inner.head(&p))
                .map(|m| Listed { path: path.to_string(), ..Listed::from_meta(&m) })
                .map_err(|e| StorageError::from_os("stat", path, e))
        })
    }

    /// Every object under `prefix` (a folder name without a trailing slash), sorted by path,
    /// with sizes and the storage's timestamps, as paths relative to the repository root.
    /// Fails rather than return a partial list: a listing cut short is retried from the
    /// start, never used.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        bump(&self.ops.list);
        self.retrying(|| self.list_once(prefix))
    }

    /// Uploads `data` in parts of [`MULTIPART_PART`] bytes, several at once, then completes
    /// the upload; a failed upload is aborted, so no parts linger in the bucket.
    async fn multipart(&self, p: &ObjPath, data: Bytes) -> object_store::Result<()> {
        let mut upload = self.inner.put_multipart(p).await?;
        let parts: Vec<_> = (0..data.len())
            .step_by(MULTIPART_PART)
            .map(|o| upload.put_part(PutPayload::from(data.slice(o..(o + MULTIPART_PART).min(data.len())))))
            .collect();
        let r = match futures::future::try_join_all(parts).await {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if r.is_err() {
            let _ = upload.abort().await;
        }
        r
    }

    /// Runs `op` again after transient failures, with exponential backoff and jitter.
    ///
    /// object_store retries failed requests itself (and resumes a broken GET body when the
    /// object has an ETag), but not a listing whose body breaks off, nor a conditional create
    /// whose answer was lost (it may have landed). Every operation here is idempotent (reads,
    /// and `put_new`, which recognises its own earlier write), so retrying the whole
    /// operation is safe.
    /// `NotFound` and `AlreadyExists` are answers, not failures, and are never retried; nor
    /// is anything on a local disk, whose errors (a full disk) do not pass by themselves.
    fn retrying<T>(&self, op: impl Fn() -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match op() {
                Err(StorageError::Backend { .. } | StorageError::Location(..)) if attempt < self.retries => {
                    let mut j = [0u8; 2];
                    getrandom::fill(&mut j).expect("random source");
                    let base = 100u64 << attempt.min(6);
                    let jitter = u64::from(u16::from_le_bytes(j)) % base;
                    std::thread::sleep(std::time::Duration::from_millis(base + jitter));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Writes a new object; fails with `AlreadyExists` rather than replace one.
    ///
    /// A write whose answer was lost (a timeout, a reset, a 5xx after the object was stored)
    /// is retried by the client; the retry then finds the object. So `AlreadyExists` is
    /// checked: if the object holds exactly these bytes, our earlier attempt landed and the
    /// write succeeded. Names of packs, indexes and snapshots are random, so nobody else
    /// could have written them.
    fn put_new_once(&self, path: &str, data: Bytes) -> Result<()> {
        if let Some(api) = self.lock_api.as_ref().filter(|_| self.own_puts.load(std::sync::atomic::Ordering::Relaxed)) {
            return self.own_put(api, path, data);
        }
        let p = ObjPath::from(path);
        let mut opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let multipart = self.local.is_none() && data.len() >= MULTIPART_MIN;
        if multipart || self.local.as_ref().is_some_and(|l| l.no_hardlinks()) {
            // Without hard links the publish step is a rename, which replaces silently, so
            // existence is checked first. Only `config` and key files have names that anyone
            // else could choose; every other name is 256 random bits, so two writers never
            // race for one. The rename itself stays atomic, and file and directory are
            // fsynced before it returns, as in the default path.
            match self.size_once(path) {
                Ok(_) => {
                    return match self.get_once(path) {
                        Ok(b) if b == data => Ok(()),
                        _ => Err(StorageError::AlreadyExists { path: path.to_string() }),
                    }
                }
                Err(StorageError::NotFound { .. }) => opts.mode = PutMode::Overwrite,
                Err(e) => return Err(e),
            }
        }
        if multipart {
            return match self.rt.block_on(self.multipart(&p, data.clone())) {
                Err(e) if self.needs_md5(&e) => self.put_new_once(path, data),
                r => r.map_err(|e| StorageError::from_os("write", path, e)),
            };
        }
        if let Some(local) = self.local.as_ref().filter(|_| data.len() >= DIRECT_MIN) {
            match direct::put(&local.root, path, &data, !local.no_hardlinks()) {
                Ok(direct::Outcome::Written) => return Ok(()),
                Ok(direct::Outcome::Exists) if self.get_once(path).is_ok_and(|b| b == data) => return Ok(()),
                Ok(direct::Outcome::Exists) => return Err(StorageError::AlreadyExists { path: path.to_string() }),
                Ok(direct::Outcome::Unsupported) => {}
                Err(e) => return Err(StorageError::Location(path.to_string(), format!("write: {e}"))),
            }
        }
        match self.rt.block_on(self.inner.put_opts(&p, PutPayload::from(data.clone()), opts)) {
            Ok(_) => Ok(()),
            Err(e) if self.needs_md5(&e) => self.put_new_once(path, data),
            Err(object_store::Error::AlreadyExists { .. }) if self.get_once(path).is_ok_and(|b| b == data) => Ok(()),
            Err(e) => Err(StorageError::from_os("write", path, e)),
        }
    }

    fn get_once(&self, path: &str) -> Result<Bytes> {
        let p = ObjPath::from(path);
        self.rt
            .block_on(async { self.inner.get(&p).await?.bytes().await })
            .map_err(|e| StorageError::from_os("read", path, e))
    }

    fn get_range_once(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        if let Some(local) = &self.local {
            return local.read(path, &range).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::NotFound { path: path.to_string() },
                std::io::ErrorKind::UnexpectedEof => StorageError::Location(
                    path.to_string(),
                    format!("short read: object ends before byte {}", range.end),
                ),
                _ => StorageError::Location(path.to_string(), e.to_string()),
            });
        }
        let p = ObjPath::from(path);
        let b =
            self.rt.block_on(self.inner.get_range(&p, range)).map_err(|e| StorageError::from_os("read", path, e))?;
        if b.len() as u64 != want {
            return Err(StorageError::Location(path.to_string(), format!("short read: {} of {want} bytes", b.len())));
        }
        Ok(b)
    }

    fn size_once(&self, path: &str) -> Result<u64> {
        let p = ObjPath::from(path);
        self.rt.block_on(self.inner.head(&p)).map(|m| m.size).map_err(|e| StorageError::from_os("stat", path, e))
    }

    fn list_once(&self, prefix: &str) -> Result<Vec<Listed>> {
        if let Some((s3, base)) = &self.s3 {
            let mut out = self.rt.block_on(s3list::list(s3, base, prefix))?;
            out.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(out);
        }
        let p = ObjPath::from(prefix);
        self.rt.block_on(async {
            let mut s = self.inner.list(Some(&p));
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| StorageError::from_os("list", prefix, e))?;
                out.push(Listed::from_meta(&m));
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
    }

    /// Deletes an object. Deleting one that is already gone succeeds: a delete that is
    /// repeated (after a crash, by a second prune) is not an error.
    pub fn delete(&self, path: &str) -> Result<()> {
        if self.object_lock().is_some() && !path.starts_with("locks/") {
            self.refuse_if_locked(path)?;
        }
        bump(&self.ops.delete);
        let p = ObjPath::from(path);
        match self.rt.block_on(self.inner.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::from_os("delete", path, e)),
        }
    }
}

impl Store {
    /// Refuses to delete an object S3 Object Lock still holds (S3 would only hide it behind a
    /// delete marker in a versioned bucket, keeping the data and the bill).
    fn refuse_if_locked(&self, path: &str) -> Result<()> {
        match self.retention(path) {
            Ok(Some(r)) if r.until_ns > crate::clock::to_unix_ns(crate::clock::now()) => Err(StorageError::Locked {
                path: path.to_string(),
                mode: r.mode.as_str(),
                until: crate::clock::from_unix_ns(r.until_ns).to_string(),
            }),
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_are_checked() {
        assert!(Store::s3("s3://", &S3Options::default()).is_err());
        assert!(Store::s3("gs://bucket", &S3Options::default()).is_err());
    }
}
