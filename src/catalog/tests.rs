use std::cell::RefCell;
use std::collections::HashMap;

use super::sync::BoxError;
use super::*;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Node, NodeKind, Time};
use crate::id::SnapshotId;

/// A repository in memory: trees by id, snapshots by id; counts tree reads.
#[derive(Default)]
struct Fake {
    trees: HashMap<[u8; 32], Vec<Node>>,
    snaps: HashMap<SnapshotId, Snapshot>,
    reads: RefCell<u64>,
}

impl Source for Fake {
    fn snapshot_ids(&self) -> std::result::Result<Vec<SnapshotId>, BoxError> {
        Ok(self.snaps.keys().copied().collect())
    }
    fn snapshot(&self, id: &SnapshotId) -> std::result::Result<Snapshot, BoxError> {
        Ok(self.snaps[id].clone())
    }
    fn tree(&self, id: &[u8; 32]) -> std::result::Result<Vec<Node>, BoxError> {
        *self.reads.borrow_mut() += 1;
        self.trees.get(id).cloned().ok_or_else(|| "no such tree".into())
    }
}

fn file(name: &str, body: &str, mtime: i64) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    n.size = body.len() as u64;
    n.mode = 0o644;
    n.mtime = Time { sec: mtime, nsec: 0 };
    n.content = vec![*blake3::hash(body.as_bytes()).as_bytes()];
    n
}

impl Fake {
    fn dir(&mut self, name: &str, mut nodes: Vec<Node>) -> Node {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let id = *blake3::hash(&tree::encode(&nodes)).as_bytes();
        self.trees.insert(id, nodes);
        let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::Dir);
        n.mode = 0o755;
        n.subtree = Some(id);
        n
    }
    fn snap(&mut self, host: &str, time: i64, root: Vec<Node>) -> SnapshotId {
        let root = self.dir("", root);
        let id = SnapshotId::random();
        let s = Snapshot {
            time_ns: time * 1_000_000_000,
            utc_offset_s: 0,
            host: host.into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec![b"/etc".to_vec()],
            tags: vec![],
            excludes: vec![],
            parent: None,
            tree: root.subtree.unwrap(),
            seq: 1,
            program_version: "test".into(),
            summary: Default::default(),
            original: None,
            repaired: Vec::new(),
        };
        self.snaps.insert(id, s);
        id
    }
    /// /etc/{a.conf, sub/b.conf, big/<n files>} with `a` as given.
    fn etc(&mut self, a: &str, mtime: i64) -> Vec<Node> {
        let sub = self.dir("sub", vec![file("b.conf", "b", 1)]);
        let big = (0..50).map(|i| file(&format!("f{i}"), "x", 1)).collect();
        let big = self.dir("big", big);
        let etc = self.dir("etc", vec![file("a.conf", a, mtime), sub, big]);
        vec![etc]
    }
}

fn all(_: &[u8]) -> bool {
    true
}

#[test]
fn unchanged_directories_are_indexed_once() {
    let mut f = Fake::default();
    let r1 = f.etc("one", 1);
    f.snap("h", 100, r1);
    let mut cat = Catalog::in_memory(&[7; 32]).unwrap();
    let s = cat.sync(&f, true).unwrap();
    assert_eq!((s.snapshots_added, s.snapshots_indexed, s.trees_indexed), (1, 1, 4));
    let nodes_first = s.nodes_added;
    let r2 = f.etc("two", 2);
    f.snap("h", 200, r2);
    *f.reads.borrow_mut() = 0;
    let s = cat.sync(&f, true).unwrap();
    // Only the root and /etc changed: two tree reads, two new trees, two new nodes.
    assert_eq!(*f.reads.borrow(), 2);
    assert_eq!((s.snapshots_added, s.trees_indexed, s.nodes_added), (1, 2, 2));
    assert!(nodes_first > 50);
    // Stored as deltas: the new /etc removes one row and adds one, the new root likewise.
    let info: HashMap<_, _> = cat.info().unwrap().into_iter().collect();
    assert_eq!(info["entries"], (1 + 3 + 1 + 50) + 2 + 2);
    // Nothing new: nothing read.
    *f.reads.borrow_mut() = 0;
    assert_eq!(cat.sync(&f, true).unwrap(), SyncStats::default());
    assert_eq!(*f.reads.borrow(), 0);
}

#[test]
fn find_versions_and_diff() {
    let mut f = Fake::default();
    let r = f.etc("one", 1);
    let s1 = f.snap("h", 100, r);
    let r = f.etc("one", 5); // metadata only
    f.snap("h", 200, r);
    let r = f.etc("three!", 6); // content
    let s3 = f.snap("h", 300, r);
    let r = f.etc("three!", 6); // same again
    f.snap("h", 400, r);
    let mut cat = Catalog::in_memory(&[7; 32]).unwrap();
    cat.sync(&f, true).unwrap();

    let hits = cat.find(&FindFilter::default(), NameTest::Matching(&|n| n.ends_with(b".conf")), &all).unwrap();
    assert_eq!(hits.len(), 8);
    assert_eq!(hits[0].snapshot.snap.time_ns, 400 * 1_000_000_000);
    assert_eq!(hits[0].path, b"/etc/a.conf");
    assert_eq!(hits[1].path, b"/etc/sub/b.conf");
    let filt = FindFilter { until_ns: Some(250 * 1_000_000_000), ..Default::default() };
    assert_eq!(cat.find(&filt, NameTest::Matching(&|n| n == b"a.conf"), &all).unwrap().len(), 2);

    let v = cat.versions(b"/etc/a.conf", &[]).unwrap();
    let changes: Vec<_> = v.iter().map(|v| (v.change, v.snapshots)).collect();
    assert_eq!(changes, [(VersionChange::First, 1), (VersionChange::Metadata, 1), (VersionChange::Content, 2)]);
    assert_eq!(v[2].first.id, s3);
    assert!(cat.versions(b"/etc/sub/a.conf", &[]).unwrap().is_empty());
    assert_eq!(cat.versions(b"/etc/big", &[]).unwrap().len(), 1);

    let snaps = cat.snapshots().unwrap();
    let (a, b) = (&snaps[0], &snaps[2]);
    assert_eq!(a.id, s1);
    let d = cat.diff(b"/", cat.node_at(a, b"/").unwrap().as_ref(), cat.node_at(b, b"/").unwrap().as_ref()).unwrap();
    let got: Vec<_> = d.iter().map(|e| (e.kind, String::from_utf8_lossy(&e.path).into_owned())).collect();
    assert_eq!(got, [(DiffKind::Modified, "/etc/a.conf".to_string())]);
}

#[test]
fn forgotten_snapshots_are_dropped_with_what_only_they_reached() {
    let mut f = Fake::default();
    let r = f.etc("one", 1);
    let s1 = f.snap("h", 100, r);
    let r = f.etc("two", 1);
    f.snap("h", 200, r);
    let mut cat = Catalog::in_memory(&[7; 32]).unwrap();
    cat.sync(&f, true).unwrap();
    f.snaps.remove(&s1);
    let s = cat.sync(&f, true).unwrap();
    assert_eq!(s.snapshots_removed, 1);
    let info: HashMap<_, _> = cat.info().unwrap().into_iter().collect();
    // The second snapshot's root and /etc were deltas against the first's: now stored in
    // full, and nothing of the first snapshot stays.
    assert_eq!(info["trees"], 4);
    let bases: i64 = cat.conn.query_row("SELECT count(*) FROM trees WHERE base IS NOT NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(bases, 0);
    assert!(cat.find(&FindFilter::default(), NameTest::Exact(b"a.conf"), &all).unwrap().len() == 1);
}

#[test]
fn a_damaged_or_foreign_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c").join(FILE_NAME);
    let mut f = Fake::default();
    let r = f.etc("one", 1);
    f.snap("h", 100, r);
    {
        let mut cat = Catalog::open(&path, &[7; 32]).unwrap();
        cat.sync(&f, true).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(Catalog::open(&path, &[8; 32]).err().unwrap().is_corrupt());
    std::fs::write(&path, b"this is not a database at all, not even close to one...").unwrap();
    let _ = std::fs::remove_file(dir.path().join("c").join("catalog.sqlite-wal"));
    let (mut cat, why) = Catalog::open_or_rebuild(&path, &[7; 32]).unwrap();
    assert!(why.is_some());
    assert_eq!(cat.sync(&f, true).unwrap().snapshots_indexed, 1);
}

#[test]
fn long_delta_chains_are_cut_and_stay_correct() {
    let mut f = Fake::default();
    let mut cat = Catalog::in_memory(&[7; 32]).unwrap();
    let days = super::index::MAX_DEPTH + 20;
    for day in 0..days {
        let r = f.etc(&format!("day {day}"), day);
        f.snap("h", 100 + day, r);
        cat.sync(&f, true).unwrap();
    }
    let depth: i64 = cat.conn.query_row("SELECT max(depth) FROM trees", [], |r| r.get(0)).unwrap();
    assert!(depth <= super::index::MAX_DEPTH, "{depth}");
    let v = cat.versions(b"/etc/a.conf", &[]).unwrap();
    assert_eq!(v.len() as i64, days);
    assert!(v.iter().skip(1).all(|v| v.change == VersionChange::Content));
    // Every snapshot still lists /etc in full.
    for s in cat.snapshots().unwrap() {
        let etc = cat.node_at(&s, b"/etc").unwrap().unwrap();
        assert_eq!(cat.children(etc.subtree.unwrap()).unwrap().len(), 3);
    }
    assert_eq!(cat.find(&FindFilter::default(), NameTest::Matching(&|n| n == b"f7"), &all).unwrap().len() as i64, days);
}

#[test]
fn names_only_forgotten_snapshots_had_are_gone() {
    let mut f = Fake::default();
    let mut r = f.etc("one", 1);
    r.push(file("secret-plan.txt", "x", 1));
    let s1 = f.snap("h", 100, r);
    let r = f.etc("two", 2);
    f.snap("h", 200, r);
    let mut cat = Catalog::in_memory(&[7; 32]).unwrap();
    cat.sync(&f, true).unwrap();
    let count = |cat: &Catalog| -> i64 {
        let n: &[u8] = b"secret-plan.txt";
        cat.conn.query_row("SELECT count(*) FROM names WHERE name = ?1", [n], |r| r.get(0)).unwrap()
    };
    assert_eq!(count(&cat), 1);
    f.snaps.remove(&s1);
    cat.sync(&f, true).unwrap();
    assert_eq!(count(&cat), 0);
    assert!(cat
        .find(&FindFilter::default(), NameTest::Matching(&|n| n == b"secret-plan.txt"), &all)
        .unwrap()
        .is_empty());
}

#[test]
fn inode_and_ctime_changes_make_no_new_versions_even_of_directories() {
    let mut f = Fake::default();
    let r = f.etc("one", 1);
    f.snap("h", 100, r);
    // The same files with new inodes and ctimes (say, a backup of a fresh LVM snapshot):
    // new tree blobs, the same content.
    let mut a = file("a.conf", "one", 1);
    a.inode = 99;
    a.ctime = Time { sec: 5, nsec: 0 };
    let sub = f.dir("sub", vec![file("b.conf", "b", 1)]);
    let big = (0..50).map(|i| file(&format!("f{i}"), "x", 1)).collect();
    let big = f.dir("big", big);
    let etc = f.dir("etc", vec![a, sub, big]);
    f.snap("h", 200, vec![etc]);
    let mut cat = Catalog::in_memory(&[7; 32]).unwrap();
    cat.sync(&f, true).unwrap();
    let info: HashMap<_, _> = cat.info().unwrap().into_iter().collect();
    assert_eq!(info["trees"], 4, "the new blobs map to the trees already there");
    for p in [&b"/etc"[..], b"/etc/a.conf", b"/etc/big"] {
        let v = cat.versions(p, &[]).unwrap();
        assert_eq!((v.len(), v[0].snapshots), (1, 2), "{}", String::from_utf8_lossy(p));
    }
    let snaps = cat.snapshots().unwrap();
    let (x, y) = (cat.node_at(&snaps[0], b"/").unwrap(), cat.node_at(&snaps[1], b"/").unwrap());
    assert!(cat.diff(b"/", x.as_ref(), y.as_ref()).unwrap().is_empty());
}

#[test]
fn an_old_schema_or_a_stranger_database_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut f = Fake::default();
    let r = f.etc("one", 1);
    f.snap("h", 100, r);
    {
        let mut cat = Catalog::open(&path, &[7; 32]).unwrap();
        cat.sync(&f, true).unwrap();
        cat.conn.pragma_update(None, "user_version", 7).unwrap();
    }
    let (mut cat, why) = Catalog::open_or_rebuild(&path, &[7; 32]).unwrap();
    assert!(why.unwrap().contains("schema version 7"));
    assert_eq!(cat.sync(&f, true).unwrap().snapshots_indexed, 1);
    drop(cat);
    // Some other program's database where the catalog should be.
    Catalog::delete_files(&path).unwrap();
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    let (cat, why) = Catalog::open_or_rebuild(&path, &[7; 32]).unwrap();
    assert!(why.unwrap().contains("other SQLite database"));
    assert_eq!(cat.info().unwrap()[0], ("snapshots".to_string(), 0));
}
