//! kill -9 at any moment leaves a valid repository; full disks fail cleanly.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

fn big_tree(root: &std::path::Path, files: u64, size: usize) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..files {
        std::fs::write(root.join(format!("f{i:03}")), noise(1000 + i, size)).unwrap();
    }
}

#[test]
fn kill_9_during_backup_leaves_a_valid_repository() {
    let env = Env::new();
    let first = env.path("first");
    big_tree(&first, 3, 200_000);
    let s1 = env.backup(&[&first], &[]);
    let src = env.path("src");
    big_tree(&src, 40, 1_500_000);
    // Kill at a spread of moments; after each, the repository must check clean.
    for delay_ms in [30u64, 120, 300, 600, 900] {
        let mut child = env
            .cmd(&["backup", "--quiet", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let r = env.run(&["check", "--json"]);
        assert_eq!(r.code, 0, "after kill at {delay_ms} ms: {}", r.stderr);
        assert!(r.json()["errors"].as_array().unwrap().is_empty());
    }
    // The first snapshot is untouched and restores.
    let out = env.path("out1");
    env.ok(&["restore", s1["snapshot_id"].as_str().unwrap(), "--target", out.to_str().unwrap()]);
    assert_same_tree(&first, &out.join(first.strip_prefix("/").unwrap()));
    // A backup after the crashes completes, and the repository reads back fully.
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["partial"], false);
    env.assert_clean();
    env.assert_restores(&src, "out2");
}

#[test]
fn leftovers_are_reported_as_reclaimable_not_damage() {
    let env = Env::new();
    let src = env.path("src");
    big_tree(&src, 3, 100_000);
    env.backup(&[&src], &[]);
    // Simulate a crash after a pack was written but before any index listed it.
    let pack = env.packs()[0].clone();
    let stray_dir = env.repo.join("data/ab");
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::copy(&pack, stray_dir.join("ab".repeat(32))).unwrap();
    let r = env.ok(&["check", "--json"]).json();
    assert_eq!(r["leftover_packs"], 1, "{r}");
    assert!(r["errors"].as_array().unwrap().is_empty());
}

#[test]
fn full_disk_fails_cleanly_and_the_next_backup_completes() {
    if !is_root() {
        eprintln!("full_disk_fails_cleanly: needs root to mount a small tmpfs; not covered in this run");
        return;
    }
    let env = Env::uninit();
    let mnt = env.path("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let repo_env = Env { dir: tempfile::tempdir().unwrap(), repo: mnt.join("repo"), vars: Vec::new() };
    repo_env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    let small = env.path("small-src");
    big_tree(&small, 2, 100_000);
    repo_env.backup(&[&small], &[]);
    let src = env.path("src");
    big_tree(&src, 12, 1_000_000);
    let r = repo_env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "a full disk is an error: {}", r.stderr);
    assert!(r.stderr.contains("No space left") || r.stderr.contains("space"), "the cause is named: {}", r.stderr);
    let snaps = repo_env.ok(&["snapshots", "--json"]).json();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "no snapshot for the failed backup");
    let c = repo_env.ok(&["check", "--json"]).json();
    assert!(c["errors"].as_array().unwrap().is_empty(), "{c}");
    // Make room (a bigger filesystem) and the backup completes.
    let st =
        std::process::Command::new("mount").args(["-o", "remount,size=64m", mnt.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    let s = repo_env.backup(&[&src], &[]);
    assert_eq!(s["partial"], false);
    repo_env.ok(&["check", "--read-data"]);
}

/// Starts a backup and waits until its first pack is durable in the repository.
fn start_backup_until_first_pack(env: &Env, src: &std::path::Path) -> std::process::Child {
    let before = env.packs().len();
    let mut child = env
        .cmd(&["backup", "--quiet", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while env.packs().len() == before {
        assert!(start.elapsed() < Duration::from_secs(60), "no pack was written within a minute");
        if let Some(st) = child.try_wait().unwrap() {
            panic!("backup ended ({st}) before a pack was seen; make the test data larger");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn the_backup_after_a_crash_reuses_packs_that_reached_storage() {
    let env = Env::new();
    let src = env.path("src");
    big_tree(&src, 40, 2_000_000);
    let mut child = start_backup_until_first_pack(&env, &src);
    child.kill().unwrap();
    child.wait().unwrap();
    let r = env.ok(&["check", "--json"]).json();
    assert!(r["leftover_packs"].as_u64().unwrap() >= 1, "{r}");
    let s = env.backup(&[&src], &[]);
    let added = s["data_added"].as_u64().unwrap();
    assert!(added < 80_000_000 - 10_000_000, "the orphan pack's data was stored again: {s}");
    let r = env.assert_clean();
    assert_eq!(r["leftover_packs"], 0, "orphans were adopted: {r}");
    env.assert_restores(&src, "out");
}

#[test]
fn sigint_exits_130_and_leaves_a_valid_repository() {
    let env = Env::new();
    let src = env.path("src");
    big_tree(&src, 40, 2_000_000);
    let child = start_backup_until_first_pack(&env, &src);
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    env.ok(&["check"]);
}
