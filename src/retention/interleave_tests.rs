//! A deterministic interleaving test of the protocol between backups, prunes, forgets and
//! crashes (docs/storage.md, "Many clients and prune").
//!
//! Every actor (a backup, a prune, a forget) runs the real library code in its own thread,
//! against one in-memory store reached through a *gate*: each storage operation of an
//! actor waits until the schedule lets that actor make exactly one operation. A proptest
//! draws the schedule (which actor moves next, when one crashes, when an operator unlocks
//! the crashed ones, when a source tree changes), so the interleavings explored are the
//! ones a real deployment could produce, one storage operation at a time, and a failing
//! schedule shrinks to a short one. The store hands out exactly ordered timestamps (one
//! second apart), and the margin for misordered timestamps is set to 0 here, so that every
//! decision the margin would postpone is reached.
//!
//! A `Suspend` step moves the storage's clock and this machine's boot-time clock ahead by
//! more than a lock stays fresh, as a suspended machine would see on waking: every actor
//! running then was asleep, and must refuse to commit afterwards.
//!
//! After every single storage operation, the invariant is checked on the store directly:
//! every snapshot that exists is fully readable (every tree and every chunk reads back and
//! matches its id). A crashed actor's operations all fail from the moment it crashes, its
//! locks stay, as a killed process's would.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use proptest::prelude::*;

use crate::backup::{self, BackupOptions};
use crate::format::tree::NodeKind;
use crate::id::BlobId;
use crate::progress::NoProgress;
use crate::repo::{InitOptions, Repository};
use crate::storage::Store;

const PASSWORD: &[u8] = b"interleave";

/// The tests here change process-wide settings (the margin, the boot-time clock's
/// suspension): they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which actor may make the next storage operation.
#[derive(Default)]
struct GateState {
    /// Operations waiting, per actor.
    waiting: HashMap<usize, usize>,
    granted: Option<usize>,
    crashed: HashSet<usize>,
    finished: HashSet<usize>,
    ops_done: u64,
    /// Logical storage clock, and the timestamp given to each object when written.
    clock_ns: i64,
    times: HashMap<String, i64>,
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Debug)]
struct Crashed;

impl fmt::Display for Crashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the process crashed")
    }
}
impl std::error::Error for Crashed {}

fn crashed_error() -> object_store::Error {
    object_store::Error::Generic { store: "gate", source: Box::new(Crashed) }
}

impl Gate {
    /// Blocks until this actor's operation is let through; fails once it has crashed.
    fn enter(&self, actor: usize) -> object_store::Result<()> {
        let mut s = self.state.lock().unwrap();
        if s.crashed.contains(&actor) {
            return Err(crashed_error());
        }
        *s.waiting.entry(actor).or_default() += 1;
        self.cv.notify_all();
        loop {
            if s.crashed.contains(&actor) {
                *s.waiting.get_mut(&actor).unwrap() -= 1;
                self.cv.notify_all();
                return Err(crashed_error());
            }
            if s.granted == Some(actor) {
                s.granted = None;
                *s.waiting.get_mut(&actor).unwrap() -= 1;
                return Ok(());
            }
            s = self.cv.wait(s).unwrap();
        }
    }

    fn exit(&self) {
        let mut s = self.state.lock().unwrap();
        s.ops_done += 1;
        self.cv.notify_all();
    }

    /// Lets one operation of `actor` through and waits for it to complete; false if the
    /// actor has finished (or crashed) and makes no more operations.
    fn step(&self, actor: usize) -> bool {
        let mut s = self.state.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while s.waiting.get(&actor).copied().unwrap_or(0) == 0 {
            if s.finished.contains(&actor) || s.crashed.contains(&actor) {
                return false;
            }
            let (g, t) = self.cv.wait_timeout(s, Duration::from_millis(200)).unwrap();
            s = g;
            assert!(!t.timed_out() || std::time::Instant::now() < deadline, "actor {actor} is stuck");
        }
        let before = s.ops_done;
        s.granted = Some(actor);
        self.cv.notify_all();
        while s.ops_done == before {
            s = self.cv.wait(s).unwrap();
        }
        true
    }

    fn crash(&self, actor: usize) {
        let mut s = self.state.lock().unwrap();
        s.crashed.insert(actor);
        self.cv.notify_all();
    }

    fn finish(&self, actor: usize) {
        let mut s = self.state.lock().unwrap();
        s.finished.insert(actor);
        self.cv.notify_all();
    }

    fn stamp(&self, path: &ObjPath) {
        let mut s = self.state.lock().unwrap();
        s.clock_ns += 1_000_000_000;
        let t = s.clock_ns;
        s.times.insert(path.to_string(), t);
    }

    fn restamp(&self, mut m: ObjectMeta) -> ObjectMeta {
        let t = self.state.lock().unwrap().times.get(m.location.as_ref()).copied().unwrap_or(0);
        m.last_modified = chrono::DateTime::from_timestamp_nanos(t);
        m
    }
}

/// One actor's view of the shared store: every operation passes the gate (`actor` None:
/// ungated, for setup and for checking the invariant).
#[derive(Debug)]
struct Gated {
    inner: Arc<InMemory>,
    gate: Arc<Gate>,
    actor: Option<usize>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gate")
    }
}

impl fmt::Display for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gated({:?})", self.actor)
    }
}

impl Gated {
    fn enter(&self) -> object_store::Result<()> {
        match self.actor {
            Some(a) => self.gate.enter(a),
            None => Ok(()),
        }
    }
    fn exit(&self) {
        if self.actor.is_some() {
            self.gate.exit();
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.enter()?;
        let r = self.inner.put_opts(location, payload, opts).await;
        if r.is_ok() {
            self.gate.stamp(location);
        }
        self.exit();
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.enter()?;
        let r = self.inner.get_opts(location, options).await;
        self.exit();
        let mut r = r?;
        r.meta = self.gate.restamp(r.meta);
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        let (inner, gate, actor) = (self.inner.clone(), self.gate.clone(), self.actor);
        locations
            .then(move |l| {
                let (inner, gate) = (inner.clone(), gate.clone());
                async move {
                    let l = l?;
                    if let Some(a) = actor {
                        gate.enter(a)?;
                    }
                    let mut one = inner.delete_stream(futures::stream::iter([Ok(l.clone())]).boxed());
                    let r = one.next().await.unwrap_or(Ok(l));
                    if actor.is_some() {
                        gate.exit();
                    }
                    r
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (inner, gate, actor) = (self.inner.clone(), self.gate.clone(), self.actor);
        let prefix = prefix.cloned();
        // One operation: the whole listing is taken at once, when first polled.
        futures::stream::once(async move {
            if let Some(a) = actor {
                if let Err(e) = gate.enter(a) {
                    return vec![Err(e)];
                }
            }
            let items: Vec<object_store::Result<ObjectMeta>> = inner.list(prefix.as_ref()).collect().await;
            if actor.is_some() {
                gate.exit();
            }
            items.into_iter().map(|r| r.map(|m| gate.restamp(m))).collect::<Vec<_>>()
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjPath, to: &ObjPath, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// What one step of a schedule does.
#[derive(Clone, Debug)]
enum Step {
    /// Start a backup of source tree `n` (mod 3).
    Backup(u8),
    /// Start a prune with `--max-unused 0`.
    Prune,
    /// Forget the `n`-th snapshot (mod their number), through the gate.
    Forget(u8),
    /// Forget every snapshot but the newest (`forget --keep-last 1`), through the gate.
    KeepLast1,
    /// Let the `n`-th running actor (mod their number) make `k` storage operations.
    Run(u8, u8),
    /// Kill the `n`-th running actor.
    Crash(u8),
    /// An operator removes the locks of every crashed actor (`coffer unlock --remove-all`
    /// after making sure they are gone).
    Unlock,
    /// Change a file of source tree `n`.
    Touch(u8, u8),
    /// The machine sleeps for longer than a lock stays fresh: the storage's clock and the
    /// machine's boot-time clock jump ahead by 40 minutes (every running actor was asleep).
    Suspend,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<u8>().prop_map(Step::Backup),
        3 => Just(Step::Prune),
        2 => any::<u8>().prop_map(Step::Forget),
        2 => Just(Step::KeepLast1),
        10 => (any::<u8>(), 1u8..20).prop_map(|(a, k)| Step::Run(a, k)),
        1 => any::<u8>().prop_map(Step::Crash),
        1 => Just(Step::Unlock),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(t, f)| Step::Touch(t, f)),
        1 => Just(Step::Suspend),
    ]
}

/// A running actor.
struct Actor {
    id: usize,
    what: String,
    handle: std::thread::JoinHandle<std::result::Result<(), String>>,
}

struct World {
    /// The repository opened once, ungated: every actor's view derives from it.
    raw: Repository,
    mem: Arc<InMemory>,
    gate: Arc<Gate>,
    dir: tempfile::TempDir,
    actors: Vec<Actor>,
    next_id: usize,
    crashed: Vec<usize>,
    log: Vec<String>,
}

impl World {
    fn new() -> World {
        let mem = Arc::new(InMemory::new());
        let gate = Arc::new(Gate::default());
        let store = Store::from_object_store(
            Arc::new(Gated { inner: mem.clone(), gate: gate.clone(), actor: None }),
            "mem".into(),
        );
        let opts = InitOptions { kdf: crate::crypto::KDF_FLOOR, pack_size: 1 << 20, ..Default::default() };
        Repository::init(store.clone(), PASSWORD, &opts).unwrap();
        let mut raw = Repository::open(store, PASSWORD).unwrap();
        raw.set_readahead(false);
        let dir = tempfile::tempdir().unwrap();
        for t in 0..3u8 {
            let d = dir.path().join(format!("t{t}"));
            std::fs::create_dir_all(d.join("sub")).unwrap();
            for f in 0..4u8 {
                // Files shared between trees (f < 2) and files of one tree only.
                let seed = if f < 2 { u64::from(f) } else { 100 * u64::from(t) + u64::from(f) };
                std::fs::write(d.join(format!("f{f}")), content(seed, 3000 + 1000 * usize::from(f))).unwrap();
            }
            std::fs::write(d.join("sub/s"), content(7, 2000)).unwrap();
        }
        World { raw, mem, gate, dir, actors: vec![], next_id: 0, crashed: vec![], log: vec![] }
    }

    /// The repository as actor `actor` sees it (opened before its gate applies).
    fn repo_for(&self, actor: Option<usize>) -> Repository {
        let store = Store::from_object_store(
            Arc::new(Gated { inner: self.mem.clone(), gate: self.gate.clone(), actor }),
            "mem".into(),
        );
        self.raw.view(store)
    }

    fn spawn(&mut self, what: String, f: impl FnOnce(Repository) -> std::result::Result<(), String> + Send + 'static) {
        let id = self.next_id;
        self.next_id += 1;
        let repo = self.repo_for(Some(id));
        let gate = self.gate.clone();
        let handle = std::thread::spawn(move || {
            let r = f(repo);
            gate.finish(id);
            r
        });
        self.log.push(format!("start {id}: {what}"));
        self.actors.push(Actor { id, what, handle });
    }

    fn apply(&mut self, s: &Step) {
        match s {
            Step::Backup(t) => {
                let src = self.dir.path().join(format!("t{}", t % 3));
                self.spawn(format!("backup t{}", t % 3), move |repo| {
                    let opts = BackupOptions {
                        paths: vec![src],
                        tags: vec![],
                        host: "h".into(),
                        excludes: crate::source::exclude::Patterns::new(&[]).unwrap(),
                        one_file_system: false,
                        exclude_caches: false,
                        exclude_if_present: Vec::new(),
                        exclude_larger_than: None,
                        ignore_files: true,
                        dry_run: false,
                        compression_level: None,
                        parent: None,
                        threads: 1,
                        uploaders: 1,
                        time: None,
                        skip_dirs: Vec::new(),
                        accept_rollback: false,
                    };
                    match backup::run(Arc::new(repo), opts, Arc::new(NoProgress)) {
                        Ok(_) => Ok(()),
                        // Asleep too long to commit: a correct, clean failure.
                        Err(e) if expired(&e.to_string()) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                });
            }
            Step::Prune => self.spawn("prune".into(), |repo| {
                let repo = Arc::new(repo);
                let opts = super::prune::PruneOptions {
                    max_unused: super::prune::MaxUnused::Bytes(0),
                    max_repack: None,
                    threads: 1,
                    uploaders: 1,
                };
                let (me, _) = match super::prune::start_session(&repo) {
                    Ok(s) => s,
                    Err(crate::repo::RepoError::Locked(_)) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                };
                let plan = match super::prune::plan(&repo, &me, &opts, &NoProgress) {
                    Ok(p) => p,
                    // Refusing is always safe: no snapshot yet, only a crashed backup's index.
                    Err(e) if e.to_string().contains("listing of snapshots/ is empty") => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                };
                match super::prune::execute(&repo, &me, plan, &opts, &NoProgress) {
                    Ok(_) | Err(crate::repo::RepoError::Locked(_)) => Ok(()),
                    Err(e) if expired(&e.to_string()) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }),
            Step::Forget(n) => {
                let ids = self.repo_for(None).list_snapshot_ids().unwrap();
                if ids.is_empty() {
                    return;
                }
                let victim = ids[usize::from(*n) % ids.len()];
                self.spawn(format!("forget {}", victim.short()), move |repo| {
                    repo.store().delete(&crate::repo::snapshot_path(&victim)).map_err(|e| e.to_string())
                });
            }
            Step::KeepLast1 => {
                let snaps = self.repo_for(None).load_snapshots().unwrap();
                let old: Vec<crate::id::SnapshotId> =
                    snaps.iter().take(snaps.len().saturating_sub(1)).map(|(id, _)| *id).collect();
                self.spawn(format!("forget all but the newest ({} snapshots)", old.len()), move |repo| {
                    for id in &old {
                        repo.store().delete(&crate::repo::snapshot_path(id)).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                });
            }
            Step::Run(a, k) => {
                if self.actors.is_empty() {
                    return;
                }
                let id = self.actors[usize::from(*a) % self.actors.len()].id;
                for _ in 0..*k {
                    if !self.gate.step(id) {
                        break;
                    }
                    self.log.push(format!("op of {id}"));
                    self.check_invariant();
                }
                self.reap();
            }
            Step::Crash(a) => {
                if self.actors.is_empty() {
                    return;
                }
                let i = usize::from(*a) % self.actors.len();
                let actor = self.actors.remove(i);
                self.gate.crash(actor.id);
                let _ = actor.handle.join();
                self.crashed.push(actor.id);
                self.log.push(format!("crash {}: {}", actor.id, actor.what));
                self.check_invariant();
            }
            Step::Unlock => {
                self.log.push("unlock --remove-all (crashed actors only)".into());
                let repo = self.repo_for(None);
                // Live actors' locks are kept: only the crashed ones are known to be gone.
                let live_ids: HashSet<usize> = self.actors.iter().map(|a| a.id).collect();
                if live_ids.is_empty() {
                    for l in repo.store().list("locks").unwrap() {
                        repo.store().delete(&l.path).unwrap();
                    }
                    self.crashed.clear();
                }
            }
            Step::Suspend => {
                let secs = 40 * 60;
                self.gate.state.lock().unwrap().clock_ns += secs as i64 * 1_000_000_000;
                crate::repo::lock::suspend_for_tests(secs);
            }
            Step::Touch(t, f) => {
                let d = self.dir.path().join(format!("t{}", t % 3));
                let name = format!("f{}", f % 4);
                std::fs::write(d.join(name), content(1000 + u64::from(*f) * 7 + u64::from(*t), 2500)).unwrap();
            }
        }
    }

    /// Joins actors that have finished; every one must have succeeded.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.actors.len() {
            if self.actors[i].handle.is_finished() {
                let a = self.actors.remove(i);
                let r = a.handle.join().expect("actor panicked");
                assert!(r.is_ok(), "{} failed: {:?}\nschedule:\n{}", a.what, r, self.log.join("\n"));
            } else {
                i += 1;
            }
        }
    }

    /// Lets actor `id` make every operation it has left, checking the invariant after each,
    /// then waits for its thread and requires that it succeeded.
    fn run_to_end(&mut self, id: usize) {
        while self.gate.step(id) {
            self.check_invariant();
        }
        if let Some(i) = self.actors.iter().position(|a| a.id == id) {
            let a = self.actors.remove(i);
            let r = a.handle.join().expect("actor panicked");
            assert!(r.is_ok(), "{} failed: {:?}\nschedule:\n{}", a.what, r, self.log.join("\n"));
        }
    }

    /// Runs every actor to its end, oldest first.
    fn run_all(&mut self) {
        while let Some(id) = self.actors.first().map(|a| a.id) {
            self.run_to_end(id);
        }
    }

    /// Every snapshot in the store reads back completely.
    fn check_invariant(&self) {
        let repo = self.repo_for(None);
        // Snapshots first: the index files they need were written before them.
        let ids = repo.list_snapshot_ids().unwrap();
        let index = repo.load_index().unwrap();
        for id in ids {
            let Ok(snap) = repo.load_snapshot(&id) else { continue };
            let mut stack = vec![BlobId(snap.tree)];
            while let Some(t) = stack.pop() {
                let nodes = repo.load_tree(&index, &t).unwrap_or_else(|e| {
                    panic!("snapshot {}: tree {}: {e}\nschedule:\n{}", id.short(), t.short(), self.log.join("\n"))
                });
                for n in nodes {
                    if let (NodeKind::Dir, Some(s)) = (n.kind, n.subtree) {
                        stack.push(BlobId(s));
                    }
                    for c in &n.content {
                        if let Err(e) = repo.read_blob(&index, &BlobId(*c)) {
                            panic!(
                                "snapshot {}: chunk {}: {e}\nschedule:\n{}",
                                id.short(),
                                BlobId(*c).short(),
                                self.log.join("\n")
                            );
                        }
                    }
                }
            }
        }
    }

    /// Runs every actor to its end, then prunes twice with nothing running.
    fn finish(mut self) {
        self.run_all();
        self.apply(&Step::Unlock);
        for _ in 0..2 {
            self.apply(&Step::Prune);
            self.run_all();
        }
        self.check_invariant();
        // With nothing running, the two prunes left nothing marked behind (unless there is no
        // snapshot at all: prune then refuses to work, by design).
        let repo = self.repo_for(None);
        if repo.list_snapshot_ids().unwrap().is_empty() {
            return;
        }
        let index = repo.load_index().unwrap();
        let present: HashSet<crate::id::PackId> = repo
            .store()
            .list("data")
            .unwrap()
            .into_iter()
            .filter_map(|l| l.path.rsplit('/').next().and_then(crate::id::PackId::from_name))
            .collect();
        assert!(
            !index.packs().iter().any(|p| p.obsolete && present.contains(&p.id)),
            "obsolete packs left after two prunes with nothing running\nschedule:\n{}",
            self.log.join("\n")
        );
    }
}

/// A session that slept longer than its lock stays fresh refuses to commit.
fn expired(message: &str) -> bool {
    message.contains("could not renew its lock")
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_committed_snapshot_stays_readable(steps in proptest::collection::vec(step(), 20..80)) {
        let _serial = serial();
        crate::repo::lock::set_margin_for_tests(0);
        let mut w = World::new();
        for s in &steps {
            w.log.push(format!("{s:?}"));
            w.apply(s);
        }
        w.finish();
    }
}

/// The schedule the protocol exists for: a backup reads the index, a forget and a prune
/// then remove the only other snapshot of its data and mark the packs, and the backup
/// commits afterwards. (A prune that deleted marked packs at once, without waiting for the
/// backup or copying what it needs, fails here.)
#[test]
fn a_backup_deduplicating_against_packs_a_prune_marks_keeps_its_data() {
    let _serial = serial();
    crate::repo::lock::set_margin_for_tests(0);
    let mut w = World::new();
    w.apply(&Step::Backup(0));
    w.run_all();
    w.apply(&Step::Backup(1));
    w.run_all();
    // The backup of t0 again: it lists snapshots and reads the index, then waits.
    w.apply(&Step::Backup(0));
    let backup = w.actors[0].id;
    for _ in 0..12 {
        assert!(w.gate.step(backup), "the backup ended too early");
    }
    // Forget the first snapshot of t0 (keep the newest, of t1), then prune.
    w.apply(&Step::KeepLast1);
    let forget = w.actors[1].id;
    w.run_to_end(forget);
    w.apply(&Step::Prune);
    let prune = w.actors.last().unwrap().id;
    w.run_to_end(prune);
    w.run_all();
    w.finish();
}

/// A crashed backup's unindexed pack is adopted by the next backup while a prune, which
/// took it for a leftover, is still running; that backup commits and ends before the prune
/// finishes. Every point at which the prune can be overtaken is tried.
#[test]
fn a_leftover_adopted_while_a_prune_runs_is_not_deleted() {
    let _serial = serial();
    crate::repo::lock::set_margin_for_tests(0);
    for prune_ops in 1..40 {
        let mut w = World::new();
        w.apply(&Step::Backup(1));
        w.run_all();
        // A backup of t0 that crashes right after its pack is durable.
        w.apply(&Step::Backup(0));
        let crashing = w.actors[0].id;
        let packs = |w: &World| w.repo_for(None).store().list("data").unwrap().len();
        let before = packs(&w);
        while packs(&w) == before {
            assert!(w.gate.step(crashing), "the backup ended before writing a pack");
        }
        w.apply(&Step::Crash(0));
        w.apply(&Step::Unlock);
        // The prune gets `prune_ops` operations, then a backup of t0 runs to its end.
        w.apply(&Step::Prune);
        let prune = w.actors[0].id;
        for _ in 0..prune_ops {
            if !w.gate.step(prune) {
                break;
            }
            w.check_invariant();
        }
        w.apply(&Step::Backup(0));
        let adopting = w.actors.last().unwrap().id;
        w.run_to_end(adopting);
        w.finish();
    }
}

/// A backup that has written a pack but not indexed it sleeps (the machine is suspended)
/// for longer than its lock stays fresh; a prune judges it over and reclaims the pack; the
/// backup wakes up. It must not index that pack or commit a snapshot needing it.
#[test]
fn a_backup_asleep_past_its_lock_commits_nothing() {
    let _serial = serial();
    crate::repo::lock::set_margin_for_tests(0);
    let mut w = World::new();
    w.apply(&Step::Backup(1));
    w.run_all();
    w.apply(&Step::Touch(0, 3));
    w.apply(&Step::Backup(0));
    let sleeper = w.actors[0].id;
    let packs = |w: &World| w.repo_for(None).store().list("data").unwrap().len();
    let before = packs(&w);
    while packs(&w) == before {
        assert!(w.gate.step(sleeper), "the backup ended before writing a pack");
    }
    w.apply(&Step::Suspend);
    w.apply(&Step::Prune);
    let prune = w.actors.last().unwrap().id;
    w.run_to_end(prune);
    w.run_to_end(sleeper);
    w.finish();
}
