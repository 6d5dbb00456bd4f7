//! Sessions: who is writing to the repository, told apart without trusting any clock.
//!
//! Every process that adds data (backup, copy) or removes it (prune) holds a *session*
//! (docs/storage.md, "Many clients and prune"):
//! - it writes a lock object `locks/<random id>` (envelope type 4) before anything else, and
//!   a fresh one every [`REFRESH`] while it runs (deleting the previous one, except the
//!   first, when it may). The storage's timestamp of a session's first lock is its *start*;
//!   that of its newest lock, its *last sign of life*. Both are the storage's clock (S3
//!   `LastModified`, the file system's mtime), never a client's;
//! - at its end it deletes its locks. Credentials that cannot delete leave them behind;
//!   they then simply go stale.
//!
//! A session is *live* unless it is provably over: its lock names this very boot of this
//! machine (host name and kernel boot id), this pid namespace, and a process that no longer
//! exists, or its last
//! sign of life is more than [`STALE`] older than the storage's present (the timestamp of
//! an object the judging process has just written). A lock that cannot be read counts as a
//! live session that started when it was written: it can only delay deletions.
//!
//! A session that could not renew its lock for longer than [`STALE`] minus [`MARGIN`] (it
//! was stopped, suspended, or cut off) may have been judged dead by a prune: it must not
//! commit anything more. [`Session::check_alive`] says so, measured on the machine's
//! boot-time clock (a duration on this machine, which counts suspended time, never a
//! comparison of two machines' clocks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{lock_path, Repository, Result};
use crate::crypto::Keys;
use crate::format::envelope::ObjectType;
use crate::format::lock::{Lock, LockKind};
use crate::id::LockId;
use crate::storage::{StorageError, Store};

/// How often a running session writes a fresh lock.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A session whose newest lock is this much older than the storage's present is over.
pub const STALE: Duration = Duration::from_secs(30 * 60);
/// How far apart two storage timestamps may be misordered (the servers of one store, or a
/// NAS, need not agree to the nanosecond): every comparison of storage times allows this.
pub const MARGIN: Duration = Duration::from_secs(5 * 60);

pub(crate) fn ns(d: Duration) -> i64 {
    d.as_nanos() as i64
}

/// [`MARGIN`] in nanoseconds, as comparisons of storage timestamps use it. The interleaving
/// tests, whose store hands out exactly ordered timestamps, set it to 0 so that they reach
/// every decision the margin would otherwise postpone.
static MARGIN_NS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(5 * 60 * 1_000_000_000);

pub(crate) fn margin_ns() -> i64 {
    MARGIN_NS.load(Ordering::Relaxed)
}

#[cfg(test)]
pub(crate) fn set_margin_for_tests(ns: i64) {
    MARGIN_NS.store(ns, Ordering::Relaxed);
}

/// This machine's identity for locks: host name, kernel boot id, and the pid namespace of
/// this process (containers that share the host's name and boot id have their own).
pub fn this_machine() -> (String, String, String) {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string());
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.to_string_lossy().into_owned());
    (host, boot.unwrap_or_default(), ns.unwrap_or_default())
}

/// Seconds since boot, suspended time included (CLOCK_BOOTTIME).
fn boottime() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32) + Duration::from_secs(SUSPENDED_SECS.load(Ordering::Relaxed))
}

/// Seconds the interleaving tests pretend this machine was suspended for (0 otherwise).
static SUSPENDED_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Moves the boot-time clock forward, as a suspend of the whole machine would (tests).
#[cfg(test)]
pub(crate) fn suspend_for_tests(secs: u64) {
    SUSPENDED_SECS.fetch_add(secs, Ordering::Relaxed);
}

/// A lock this process holds, and the heartbeat that renews it.
pub struct Session {
    inner: Arc<Inner>,
    stop: Option<crossbeam_channel::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    store: Store,
    keys: Arc<Keys>,
    lock: Lock,
    first: LockId,
    /// The newest lock after the first, if any.
    latest: Mutex<Option<LockId>>,
    /// Boot-time clock reading taken just before the newest lock was written.
    renewed_at: Mutex<Duration>,
    /// Set when deleting a lock was refused (credentials that cannot delete).
    cannot_delete: AtomicBool,
    /// Set when the session has ended: nothing may be committed under it any more.
    ended: AtomicBool,
    /// Set, for good, when a renewal came more than STALE − MARGIN after the one before: a
    /// prune may have judged the session over meanwhile, and a later renewal cannot undo
    /// what that prune did.
    expired: AtomicBool,
    /// The longest time between two renewals so far, in seconds.
    longest_gap: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn write(&self) -> Result<LockId> {
        let id = LockId::random();
        let mut lock = self.lock.clone();
        lock.client_time_ns = crate::clock::to_unix_ns(crate::clock::now());
        let sealed = super::seal_envelope(&self.keys, ObjectType::Lock, id.as_bytes(), &lock.encode(), 0);
        self.store.put_new(&lock_path(&id), sealed)?;
        Ok(id)
    }

    fn delete(&self, id: &LockId) {
        if self.cannot_delete.load(Ordering::Relaxed) {
            return;
        }
        if self.store.delete(&lock_path(id)).is_err() {
            self.cannot_delete.store(true, Ordering::Relaxed);
        }
    }

    /// See [`Session::check_alive`]; also fails if this session's first lock is gone (an
    /// operator ran `coffer unlock --remove-all` while it ran): a prune may then have
    /// taken its packs for leftovers.
    fn check_alive(&self) -> Result<()> {
        if self.ended.load(Ordering::Acquire) {
            return Err(super::RepoError::Invalid("the session that wrote this data has ended".into()));
        }
        let since = boottime().saturating_sub(*self.renewed_at.lock().expect("poisoned"));
        if since > STALE - MARGIN || self.expired.load(Ordering::Acquire) {
            let secs = since.as_secs().max(self.longest_gap.load(Ordering::Relaxed));
            return Err(super::RepoError::SessionExpired { secs });
        }
        match self.store.head(&lock_path(&self.first)) {
            Ok(_) => Ok(()),
            Err(StorageError::NotFound { .. }) => Err(super::RepoError::Invalid(format!(
                "this process's lock {} was removed while it ran (`coffer unlock --remove-all`?): a prune may \
                 have reclaimed what it wrote, so it commits nothing more; run it again",
                lock_path(&self.first)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a fresh lock and deletes the previous one (never the first).
    fn renew(&self) -> Result<()> {
        let before = boottime();
        let id = self.write()?;
        let after = boottime();
        {
            let mut at = self.renewed_at.lock().expect("poisoned");
            let gap = after.saturating_sub(*at);
            self.longest_gap.fetch_max(gap.as_secs(), Ordering::Relaxed);
            if gap > STALE - MARGIN {
                self.expired.store(true, Ordering::Release);
            }
            *at = before;
        }
        if let Some(old) = self.latest.lock().expect("poisoned").replace(id) {
            self.delete(&old);
        }
        Ok(())
    }
}

impl Session {
    /// Writes this process's first lock and starts renewing it every [`REFRESH`].
    pub fn start(repo: &Repository, kind: LockKind, command: &str) -> Result<Session> {
        let (host, boot_id, pid_ns) = this_machine();
        let mut session = [0u8; 32];
        getrandom::fill(&mut session).expect("random source");
        let lock = Lock {
            kind,
            session,
            host,
            boot_id,
            pid: std::process::id(),
            pid_ns,
            username: uzers::get_current_username().map(|u| u.to_string_lossy().into_owned()).unwrap_or_default(),
            command: command.to_string(),
            client_time_ns: 0,
        };
        let before = boottime();
        let inner = Inner {
            store: repo.store().clone(),
            keys: repo.keys().clone(),
            first: LockId::default(),
            lock,
            latest: Mutex::new(None),
            renewed_at: Mutex::new(before),
            cannot_delete: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            longest_gap: Default::default(),
        };
        let first = inner.write()?;
        let inner = Arc::new(Inner { first, ..inner });
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let hb = inner.clone();
        let heartbeat = std::thread::Builder::new()
            .name("coffer-lock".into())
            .spawn(move || {
                // A failed renewal is tried again at the next tick; check_alive reports
                // a session that could not renew for too long.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
                    let _ = hb.renew();
                }
            })
            .expect("spawn lock heartbeat");
        Ok(Session { inner, stop: Some(stop), heartbeat: Some(heartbeat) })
    }

    /// The session id written in every lock of this session.
    pub fn id(&self) -> [u8; 32] {
        self.inner.lock.session
    }

    /// The name of the first lock (whose storage timestamp is the session's start).
    pub fn first_lock(&self) -> LockId {
        self.inner.first
    }

    /// Fails if the lock was last renewed so long ago that a prune may have judged this
    /// session over; nothing more may then be committed (see the module docs).
    pub fn check_alive(&self) -> Result<()> {
        self.inner.check_alive()
    }

    /// A handle that tells, from any thread, whether this session may still commit (index
    /// files, snapshots): see [`Session::check_alive`]. It fails once the session has ended.
    pub fn alive(&self) -> Alive {
        Alive(self.inner.clone())
    }

    /// Renews the lock now (before a long step, or a commit).
    pub fn renew(&self) -> Result<()> {
        self.inner.renew()
    }

    /// Stops renewing and deletes this session's locks (where the credentials allow).
    pub fn end(self) {
        drop(self);
    }
}

/// See [`Session::alive`].
#[derive(Clone)]
pub struct Alive(Arc<Inner>);

impl Alive {
    pub fn check(&self) -> Result<()> {
        self.0.check_alive()
    }
}

impl Drop for Session {
    /// Ending a session, on success or on an error: what it wrote unindexed becomes a
    /// leftover at once, since it will never index it (its [`Alive`] handles refuse from
    /// now on). A process killed outright leaves its locks, which go stale (see the module
    /// docs).
    fn drop(&mut self) {
        self.inner.ended.store(true, Ordering::Release);
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let latest = self.inner.latest.lock().expect("poisoned").take();
        if let Some(l) = latest {
            self.inner.delete(&l);
        }
        self.inner.delete(&self.inner.first);
    }
}

/// A session as found in `locks/`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionInfo {
    #[serde(serialize_with = "hex_id")]
    pub session: [u8; 32],
    pub kind: &'static str,
    pub host: String,
    #[serde(skip)]
    pub boot_id: String,
    pub pid: u32,
    #[serde(skip)]
    pub pid_ns: String,
    pub username: String,
    pub command: String,
    /// Storage timestamp of its oldest lock object (its start), Unix ns.
    pub started_ns: i64,
    /// Storage timestamp of its newest lock object (its last sign of life), Unix ns.
    pub renewed_ns: i64,
    #[serde(skip)]
    pub locks: Vec<LockId>,
    /// Its locks could not be read (damaged or of an unknown version).
    pub unreadable: bool,
}

fn hex_id<S: serde::Serializer>(id: &[u8; 32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(id))
}

impl SessionInfo {
    pub fn is_prune(&self) -> bool {
        self.kind == LockKind::Prune.as_str()
    }

    /// Whether the session may still be running, judged at storage time `now_ns`.
    pub fn is_live(&self, now_ns: i64) -> bool {
        let (host, boot, pid_ns) = this_machine();
        let here = !boot.is_empty()
            && !pid_ns.is_empty()
            && self.host == host
            && self.boot_id == boot
            && self.pid_ns == pid_ns;
        if here && !process_exists(self.pid) {
            return false;
        }
        now_ns.saturating_sub(self.renewed_ns) <= ns(STALE)
    }
}

fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Every session with a lock in the repository, grouped from the lock objects. A lock that
/// is listed but gone when read was deleted meanwhile: by a session renewing its lock (its
/// new lock was written first) or ending. The listing is then taken again, so a renewing
/// session is never seen without its newest lock (and so judged over by an old one).
pub fn list_sessions(repo: &Repository) -> Result<Vec<SessionInfo>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match read_sessions(repo)? {
            Some(s) => return Ok(s),
            None if attempt < 5 => continue,
            None => return Err(super::RepoError::Invalid("locks/ keeps changing while it is read; try again".into())),
        }
    }
}

/// One reading of `locks/`; `None` if a listed lock was gone when read.
fn read_sessions(repo: &Repository) -> Result<Option<Vec<SessionInfo>>> {
    let mut by_session: std::collections::BTreeMap<[u8; 32], SessionInfo> = Default::default();
    for l in repo.store().list("locks")? {
        let Some(id) = l.path.strip_prefix("locks/").and_then(LockId::from_name) else { continue };
        let lock = match repo.store().get(&l.path) {
            Ok(b) => repo
                .open_object(ObjectType::Lock, id.as_bytes(), &l.path, &b)
                .and_then(|p| Lock::decode(&p).map_err(|e| super::RepoError::damaged(l.path.clone(), e))),
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (key, info) = match lock {
            Ok(lock) => (
                lock.session,
                SessionInfo {
                    session: lock.session,
                    kind: lock.kind.as_str(),
                    host: lock.host,
                    boot_id: lock.boot_id,
                    pid: lock.pid,
                    pid_ns: lock.pid_ns,
                    username: lock.username,
                    command: lock.command,
                    started_ns: l.modified_ns,
                    renewed_ns: l.modified_ns,
                    locks: vec![],
                    unreadable: false,
                },
            ),
            // An unreadable lock is its own session: a writer that started then.
            Err(_) => (
                *id.as_bytes(),
                SessionInfo {
                    session: *id.as_bytes(),
                    kind: LockKind::Writer.as_str(),
                    host: String::new(),
                    boot_id: String::new(),
                    pid: 0,
                    pid_ns: String::new(),
                    username: String::new(),
                    command: String::new(),
                    started_ns: l.modified_ns,
                    renewed_ns: l.modified_ns,
                    locks: vec![],
                    unreadable: true,
                },
            ),
        };
        let e = by_session.entry(key).or_insert(info);
        e.started_ns = e.started_ns.min(l.modified_ns);
        e.renewed_ns = e.renewed_ns.max(l.modified_ns);
        e.locks.push(id);
    }
    Ok(Some(by_session.into_values().collect()))
}
