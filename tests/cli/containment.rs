//! Damage stays contained: one damaged index file or snapshot never makes the rest of the
//! repository unusable, and nothing is judged unreferenced because it could not be read.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Replaces an object's bytes, as damage in storage would (objects are read-only once written).
pub fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, b).unwrap();
}

pub fn objects(env: &Env, dir: &str) -> Vec<PathBuf> {
    env.repo_files().keys().filter(|k| k.starts_with(dir)).map(|k| env.repo.join(k)).collect()
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Two snapshots of two different trees: `a` (first backup) and `b` (second), each with its
/// own index file.
fn two_snapshots() -> (Env, PathBuf, PathBuf, String, String) {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for (dir, seed) in [(&a, 1), (&b, 50)] {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..4 {
            std::fs::write(dir.join(format!("f{i}")), noise(seed + i, 300_000)).unwrap();
        }
    }
    let sa = env.backup(&[&a], &[])["snapshot_id"].as_str().unwrap().to_string();
    let sb = env.backup(&[&b], &[])["snapshot_id"].as_str().unwrap().to_string();
    (env, a, b, sa, sb)
}

/// The index file written by the first backup (the one that lists `a`'s packs).
fn first_index(env: &Env) -> PathBuf {
    objects(env, "index").into_iter().min_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap()).unwrap()
}

#[test]
fn a_damaged_or_empty_index_file_is_worked_around_and_named_once() {
    for damage in ["flip", "empty"] {
        let (env, a, b, sa, sb) = two_snapshots();
        let index = first_index(&env);
        rewrite(&index, |v| match damage {
            "flip" => v[30] ^= 1,
            _ => v.clear(),
        });
        let name = name_of(&index);
        // Every snapshot restores exactly, the one the damaged file covered too.
        for (snap, src, out) in [(&sa, &a, "out-a"), (&sb, &b, "out-b")] {
            let target = env.path(&format!("{damage}-{out}"));
            let spec = format!("{snap}:{}", src.display());
            let r = env.ok(&["restore", &spec, "--target", target.to_str().unwrap()]);
            assert_eq!(r.stderr.matches(&name).count(), 1, "{damage}: warned once, naming the file: {}", r.stderr);
            assert_same_tree(src, &target);
        }
        env.ok(&["ls", &sa]);
        env.ok(&["snapshots"]);
        // A backup works, and deduplicates against the packs the damaged file listed.
        let r = env.ok(&["backup", "--json", a.to_str().unwrap()]);
        let j = r.json();
        assert_eq!(j["files_unmodified"], 4, "{damage}: {}", r.stdout);
        assert!(j["data_added"].as_u64().unwrap() < 4096, "{damage}: no file content stored twice: {}", r.stdout);
        // check names the file as damage, and calls no pack reclaimable.
        let r = env.run(&["check", "--json"]);
        assert_eq!(r.code, 1, "{damage}: {}", r.stderr);
        let j = r.json();
        let errors = j["errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e.as_str().unwrap().contains(&name)), "{damage}: {errors:?}");
        assert_eq!(j["leftover_packs"], 0, "{damage}: no pack is reclaimable because an index is unreadable");
        assert!(j["packs_recovered"].as_u64().unwrap() > 0, "{j}");
        // prune refuses rather than judge those packs unreferenced; nothing is deleted.
        let before = env.data_files();
        let r = env.run(&["prune"]);
        assert_eq!(r.code, 1, "{damage}: {}", r.stderr);
        assert!(r.stderr.contains("repair index") && r.stderr.contains(&name), "{}", r.stderr);
        assert_eq!(env.data_files(), before, "prune deleted nothing");
        let r = env.run(&["forget", "--keep-last", "1", "--prune"]);
        assert_ne!(r.code, 0, "forget --prune refuses to prune too: {}", r.stderr);
    }
}

#[test]
fn a_damaged_snapshot_is_listed_skipped_and_removable() {
    let (env, a, b, sa, sb) = two_snapshots();
    let snap = env.repo.join(format!("snapshots/{sb}"));
    rewrite(&snap, |v| {
        let n = v.len();
        v[n - 5] ^= 0x10
    });
    let short = &sb[..8];
    let r = env.ok(&["snapshots"]);
    assert!(r.stdout.contains(short) && r.stdout.contains("DAMAGED"), "{}", r.stdout);
    assert!(r.stdout.contains(&sa[..8]));
    assert!(r.stderr.contains(short), "warned: {}", r.stderr);
    let j = env.ok(&["snapshots", "--json"]).json();
    let d: Vec<_> = j.as_array().unwrap().iter().filter(|s| s["damaged"].is_string()).collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["id"], sb.as_str());
    // latest skips it.
    let out = env.path("out");
    let spec = format!("latest:{}", a.display());
    env.ok(&["restore", &spec, "--target", out.to_str().unwrap()]);
    assert_same_tree(&a, &out);
    env.ok(&["stats"]);
    env.ok(&["stats", "latest"]);
    // backup works; its parent is the readable snapshot.
    let r = env.ok(&["backup", "--json", b.to_str().unwrap()]);
    let sc = r.json()["snapshot_id"].as_str().unwrap().to_string();
    // A policy never removes the damaged snapshot; prune refuses while it is there.
    env.ok(&["forget", "--keep-last", "5"]);
    assert!(snap.exists());
    let r = env.run(&["prune"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(short) && r.stderr.contains("forget"), "{}", r.stderr);
    // forget ID removes it.
    let r = env.ok(&["forget", short]);
    assert!(r.stdout.contains(short), "{}", r.stdout);
    assert!(!snap.exists());
    let r = env.ok(&["snapshots"]);
    assert!(!r.stdout.contains("DAMAGED") && r.stdout.contains(&sc[..8]), "{}", r.stdout);
    env.ok(&["prune"]);
    env.assert_clean();
}

#[test]
fn junk_in_the_repository_is_reported_as_junk_and_breaks_nothing() {
    let (env, a, _b, _sa, _sb) = two_snapshots();
    let valid_id = "ab".repeat(32);
    let junk = [
        "keys/README".to_string(),
        format!("keys/{valid_id}"),
        "stray.tmp".into(),
        "snapshots/notes.txt".into(),
        "index/.DS_Store".into(),
        "data/zz/not-a-pack".into(),
        format!("data/ab/{valid_id}"),
        "lost+found/x".into(),
    ];
    for j in &junk {
        let p = env.repo.join(j);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, if j.ends_with("README") { &b"hello"[..] } else { &b""[..] }).unwrap();
    }
    let r = env.ok(&["check", "--read-data", "--json"]);
    let j = r.json();
    assert!(j["errors"].as_array().unwrap().is_empty(), "junk is not damage: {j}");
    let reported: Vec<&str> = j["junk"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for name in &junk {
        assert!(reported.iter().any(|r| r.starts_with(name.as_str())), "{name} reported as junk: {reported:?}");
    }
    assert_eq!(j["leftover_packs"], 0, "an empty file is not a pack: {j}");
    let r = env.ok(&["check"]);
    assert!(r.stderr.contains("junk: keys/README"), "{}", r.stderr);
    env.ok(&["snapshots"]);
    env.ok(&["key", "list"]);
    env.ok(&["backup", a.to_str().unwrap()]);
    env.assert_restores(&a, "out");
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A wrong password is still a wrong password (exit 12), not a damaged (empty) key file.
    let r = Env::run_cmd({
        let mut c = env.cmd(&["snapshots"]);
        c.env("COFFER_PASSWORD", "wrong");
        c
    });
    assert_eq!(r.code, 12, "{}", r.stderr);
}

/// A tree whose file node names a tree blob as its content, or whose directory has no
/// subtree, is refused: never restored as bytes or as an empty directory.
#[test]
fn trees_whose_nodes_do_not_fit_their_kind_are_refused() {
    use coffer::format::tree::{self, Node, NodeKind};
    use coffer::format::BlobType;
    use coffer::id::BlobId;
    use std::sync::Arc;

    let (env, _a, _b, _sa, sb) = two_snapshots();
    let store = coffer::storage::Store::local(&env.repo, false, false).unwrap();
    let repo = Arc::new(coffer::repo::Repository::open(store, PASSWORD.as_bytes()).unwrap());
    let (_, snap) = repo.find_snapshot(&sb, &Default::default()).unwrap();
    let root_plain = repo.read_blob(&repo.load_index().unwrap(), &BlobId(snap.tree)).unwrap();
    // A file whose content is the snapshot's root tree blob.
    let mut evil = Node::new(b"evil".to_vec(), NodeKind::File);
    evil.content = vec![snap.tree];
    evil.size = root_plain.len() as u64;
    evil.mode = 0o644;
    let file_tree = tree::encode(&[evil]);
    // A directory without a subtree.
    let mut hollow = Node::new(b"hollow".to_vec(), NodeKind::Dir);
    hollow.mode = 0o755;
    let dir_tree = tree::encode(&[hollow]);
    let sink = coffer::repo::writer::BlobSink::start(repo.clone(), 3, 1, 1, Default::default());
    let mut w = sink.writer();
    let mut ids = Vec::new();
    for t in [&file_tree, &dir_tree] {
        let id = repo.keys().blob_id(BlobType::Tree, t);
        w.write(BlobType::Tree, id, t, coffer::compress::Plan::Try);
        ids.push(id);
    }
    drop(w);
    sink.finish().unwrap();
    for (id, what) in ids.iter().zip(["names a tree blob", "without a subtree"]) {
        let mut s = snap.clone();
        s.tree = id.0;
        let sid = repo.save_snapshot(&s).unwrap().to_hex();
        let out = env.path(&format!("out-{}", &sid[..8]));
        let r = env.run(&["restore", &sid, "--target", out.to_str().unwrap()]);
        assert_ne!(r.code, 0, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(what), "{what}: {}", r.stderr);
        if let Ok(b) = std::fs::read(out.join("evil")) {
            assert!(b.is_empty() || b != root_plain, "a tree blob was restored as a file's bytes");
        }
        let r = env.run(&["check"]);
        assert_eq!(r.code, 1, "check names it: {}", r.stderr);
    }
}

/// The largest pack that holds no tree (without it, every tree still reads).
pub fn data_pack(env: &Env) -> PathBuf {
    let mut packs = env.packs();
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let aside = env.path("aside");
    for p in packs {
        std::fs::rename(&p, &aside).unwrap();
        let ok = env.run(&["ls", "latest"]).code == 0;
        std::fs::rename(&aside, &p).unwrap();
        if ok {
            return p;
        }
    }
    panic!("no pack without trees");
}

fn one_backup_of_ten_files() -> (Env, PathBuf) {
    let env = Env::uninit();
    env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2", "--pack-size", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        std::fs::write(src.join(format!("file{i}")), noise(400 + i, 500_000)).unwrap();
    }
    env.backup(&[&src], &[]);
    (env, src)
}

#[test]
fn after_a_pack_is_deleted_the_next_backup_is_whole_again() {
    for run_check_first in [false, true] {
        let (env, src) = one_backup_of_ten_files();
        let old = env.ok(&["snapshots", "--json"]).json()[0]["id"].as_str().unwrap().to_string();
        std::fs::remove_file(data_pack(&env)).unwrap();
        if run_check_first {
            let r = env.run(&["check", "--json"]);
            assert_eq!(r.code, 1);
            assert!(r.json()["damage_recorded"].as_u64().unwrap() > 0, "{}", r.stdout);
        }
        let r = env.ok(&["backup", "--json", src.to_str().unwrap()]);
        assert!(r.json()["data_added"].as_u64().unwrap() > 0, "the lost data is stored again: {}", r.stdout);
        if !run_check_first {
            assert!(r.stderr.contains("missing"), "the backup says so: {}", r.stderr);
        }
        // The new snapshot is whole: it restores exactly, and so does the old one now (the
        // blobs it lacked are back, under the same ids).
        env.assert_restores(&src, &format!("out-{run_check_first}"));
        let out = env.path(&format!("old-{run_check_first}"));
        let spec = format!("{old}:{}", src.display());
        env.ok(&["restore", &spec, "--target", out.to_str().unwrap()]);
        assert_same_tree(&src, &out);
        // Once prune has dropped the missing pack from the index, nothing is damaged.
        env.ok(&["prune", "--max-unused", "0"]);
        env.assert_clean();
    }
}

#[test]
fn after_check_finds_a_damaged_blob_the_next_backup_stores_it_again() {
    for touch in [true, false] {
        let (env, src) = one_backup_of_ten_files();
        let pack = data_pack(&env);
        rewrite(&pack, |v| v[100] ^= 1);
        let r = env.run(&["check", "--read-data", "--json"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(r.json()["damage_recorded"], 1, "{}", r.stdout);
        // Recorded once: a second check records nothing new.
        let r = env.run(&["check", "--read-data", "--json"]);
        assert_eq!(r.json()["damage_recorded"], 0, "{}", r.stdout);
        if touch {
            for i in 0..10 {
                let f = src.join(format!("file{i}"));
                let b = std::fs::read(&f).unwrap();
                std::fs::write(&f, b).unwrap();
            }
        }
        let r = env.ok(&["backup", "--json", src.to_str().unwrap()]);
        assert!(r.json()["data_added"].as_u64().unwrap() > 0, "touch={touch}: stored again: {}", r.stdout);
        env.assert_restores(&src, &format!("out-{touch}"));
        // The damaged copy is unused now: prune repacks it away and the repository is clean.
        env.ok(&["prune", "--max-unused", "0"]);
        env.assert_clean();
    }
}

#[test]
fn a_restore_that_meets_damage_records_it_for_the_next_backup() {
    let (env, src) = one_backup_of_ten_files();
    let pack = data_pack(&env);
    rewrite(&pack, |v| v[100] ^= 1);
    let out = env.path("out");
    let spec = format!("latest:{}", src.display());
    let r = env.run(&["restore", &spec, "--target", out.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json()["damage_recorded"], 1, "{}", r.stdout);
    assert!(r.stderr.contains("recorded 1 damaged blob copy"), "{}", r.stderr);
    env.ok(&["backup", src.to_str().unwrap()]);
    env.assert_restores(&src, "out2");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn seqs(env: &Env) -> Vec<u64> {
    let j = env.ok(&["snapshots", "--json"]).json();
    j.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect()
}

/// Two backups, then `snapshots/` and `index/` put back to the copy taken after the first.
fn rolled_back() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(1, 10_000)).unwrap();
    env.backup(&[&src], &[]);
    let old = env.path("old");
    for d in ["snapshots", "index"] {
        copy_tree(&env.repo.join(d), &old.join(d));
    }
    std::fs::write(src.join("b"), noise(2, 10_000)).unwrap();
    env.backup(&[&src], &[]);
    assert_eq!(seqs(&env), vec![1, 2]);
    for d in ["snapshots", "index"] {
        std::fs::remove_dir_all(env.repo.join(d)).unwrap();
        copy_tree(&old.join(d), &env.repo.join(d));
    }
    (env, src)
}

#[test]
fn a_repository_put_back_to_an_older_copy_is_noticed_and_backup_waits_for_the_operator() {
    let (env, src) = rolled_back();
    // Every command says so.
    for args in [&["snapshots"][..], &["check"], &["ls", "latest"], &["stats"]] {
        let r = env.run(args);
        assert!(r.stderr.contains("back in time"), "{args:?}: {}", r.stderr);
    }
    // backup refuses, and writes nothing.
    let before = env.repo_files();
    let r = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--accept-rollback"), "{}", r.stderr);
    assert_eq!(env.repo_files().keys().filter(|k| k.starts_with("snapshots")).count(), 1);
    assert_eq!(
        env.repo_files().into_iter().filter(|(k, _)| !k.starts_with("locks")).collect::<Vec<_>>(),
        before.into_iter().filter(|(k, _)| !k.starts_with("locks")).collect::<Vec<_>>()
    );
    // With the operator's word it writes, and never reuses sequence number 2.
    env.ok(&["backup", "--accept-rollback", src.to_str().unwrap()]);
    assert_eq!(seqs(&env), vec![1, 3]);
    let r = env.ok(&["snapshots"]);
    assert!(!r.stderr.contains("back in time"), "accepted: {}", r.stderr);
    env.ok(&["backup", src.to_str().unwrap()]);
    env.assert_restores(&src, "out");
}

#[test]
fn a_sequence_number_reused_after_a_rollback_is_noticed() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    env.backup(&[&src], &[]);
    let old = env.path("old");
    copy_tree(&env.repo.join("snapshots"), &old.join("snapshots"));
    env.backup(&[&src], &[]);
    std::fs::remove_dir_all(env.repo.join("snapshots")).unwrap();
    copy_tree(&old.join("snapshots"), &env.repo.join("snapshots"));
    // Another client, which never saw sequence number 2, backs up and takes it again.
    let other = Env::run_cmd({
        let mut c = env.cmd(&["backup", src.to_str().unwrap()]);
        c.env("COFFER_STATE_DIR", env.path("other-state"));
        c
    });
    assert_eq!(other.code, 0, "{}", other.stderr);
    assert_eq!(seqs(&env), vec![1, 2]);
    let r = env.run(&["snapshots"]);
    assert!(r.stderr.contains("sequence number 2 again"), "{}", r.stderr);
}

#[test]
fn forget_and_tag_by_this_client_are_not_taken_for_a_rollback() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    env.backup(&[&src], &[]);
    env.backup(&[&src], &[]);
    env.ok(&["tag", "--add", "x", "latest"]);
    let r = env.ok(&["snapshots"]);
    assert!(!r.stderr.contains("back in time"), "{}", r.stderr);
    env.ok(&["forget", "latest"]);
    let r = env.ok(&["snapshots"]);
    assert!(!r.stderr.contains("back in time"), "{}", r.stderr);
    let r = env.ok(&["backup", "--json", src.to_str().unwrap()]);
    assert!(!r.stderr.contains("back in time"), "{}", r.stderr);
    assert_eq!(seqs(&env), vec![1, 3], "sequence number 2 is not handed out again");
}

#[test]
fn destructive_commands_refuse_while_the_repository_went_back_in_time() {
    let (env, _src) = rolled_back();
    let before = env.data_files();
    for args in
        [&["prune"][..], &["forget", "--keep-last", "1"], &["tag", "--add", "x", "latest"], &["repair", "index"]]
    {
        let r = env.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("--accept-rollback"), "{args:?}: {}", r.stderr);
    }
    let after: Vec<_> = env.data_files().into_keys().filter(|k| !k.starts_with("locks")).collect();
    assert_eq!(after, before.into_keys().filter(|k| !k.starts_with("locks")).collect::<Vec<_>>(), "nothing changed");
    let r = env.run(&["find", "a"]);
    assert!(r.stderr.contains("back in time"), "find warns too: {}", r.stderr);
    env.ok(&["prune", "--accept-rollback"]);
    env.ok(&["snapshots"]);
}

#[test]
fn forget_prune_with_a_damaged_index_forgets_nothing() {
    let (env, _a, _b, _sa, _sb) = two_snapshots();
    rewrite(&first_index(&env), |v| v[30] ^= 1);
    let r = env.run(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("nothing was forgotten"), "{}", r.stderr);
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 2);
}
