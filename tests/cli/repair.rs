//! `repair index`, `repair snapshots`, `repair packs`: nothing that still reads is lost.

use std::path::{Path, PathBuf};

use crate::containment::{data_pack, objects, rewrite};
use crate::support::*;

/// Ten files of 500 kB in packs of 1 MiB (so there are several packs).
fn ten_files() -> (Env, PathBuf) {
    let env = Env::uninit();
    env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2", "--pack-size", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        std::fs::write(src.join(format!("file{i}")), noise(600 + i, 500_000)).unwrap();
    }
    env.backup(&[&src], &[]);
    (env, src)
}

/// Files of `src` that restore from `out` exactly, and those that do not.
fn compare(src: &Path, out: &Path) -> (Vec<String>, Vec<String>) {
    let (mut same, mut differ) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let name = format!("file{i}");
        let good = std::fs::read(src.join(&name)).unwrap();
        match std::fs::read(out.join(&name)) {
            Ok(b) if b == good => same.push(name),
            _ => differ.push(name),
        }
    }
    (same, differ)
}

fn restore_latest(env: &Env, src: &Path, out: &str) -> (Run, PathBuf) {
    let out = env.path(out);
    let spec = format!("latest:{}", src.display());
    (env.run(&["restore", &spec, "--target", out.to_str().unwrap()]), out)
}

#[test]
fn repair_index_rebuilds_from_the_packs_and_dry_run_changes_nothing() {
    let (env, src) = ten_files();
    std::fs::write(src.join("more"), noise(9, 200_000)).unwrap();
    env.backup(&[&src], &[]);
    let index = objects(&env, "index");
    assert!(index.len() >= 2);
    rewrite(&index[0], |v| v[40] ^= 2);
    let before = env.repo_files();
    let r = env.ok(&["repair", "index", "--dry-run", "--json"]);
    let plan = &r.json()["plan"];
    assert_eq!(plan["index_files_damaged"].as_array().unwrap().len(), 1, "{plan}");
    assert!(plan["packs_from_headers"].as_u64().unwrap() > 0, "{plan}");
    assert_eq!(env.repo_files(), before, "a dry run changes nothing");
    env.ok(&["repair", "index"]);
    let c = env.assert_clean();
    assert_eq!(c["packs_recovered"], 0, "{c}");
    assert_eq!(c["index_files"], 1, "one index file: {c}");
    env.assert_restores(&src, "out");
    // Every index file gone: the packs alone describe everything.
    for f in objects(&env, "index") {
        std::fs::remove_file(f).unwrap();
    }
    let r = env.ok(&["repair", "index", "--json"]);
    assert_eq!(r.json()["plan"]["packs_unreadable"].as_array().unwrap().len(), 0);
    env.assert_clean();
    env.assert_restores(&src, "out2");
    env.ok(&["prune"]);
    env.assert_clean();
}

#[test]
fn repair_index_stopped_before_deleting_leaves_a_valid_repository() {
    let (env, src) = ten_files();
    let index = objects(&env, "index");
    let saved: Vec<(PathBuf, Vec<u8>)> = index.iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    rewrite(&index[0], |v| v.truncate(10));
    let damaged = std::fs::read(&index[0]).unwrap();
    env.ok(&["repair", "index"]);
    // As if killed after writing the new index: the replaced files are back.
    for (p, b) in &saved {
        std::fs::write(p, if *p == index[0] { &damaged } else { b }).unwrap();
    }
    let r = env.ok(&["snapshots"]);
    assert!(!r.stderr.contains("warning"), "superseded files are ignored, the damaged one too: {}", r.stderr);
    env.assert_clean();
    env.assert_restores(&src, "out");
    env.ok(&["repair", "index"]);
    assert_eq!(objects(&env, "index").len(), 1);
}

#[test]
fn repair_snapshots_replaces_only_what_is_lost() {
    let (env, src) = ten_files();
    let orig = env.ok(&["snapshots", "--json"]).json()[0]["id"].as_str().unwrap().to_string();
    std::fs::remove_file(data_pack(&env)).unwrap();
    let before = env.repo_files();
    let r = env.ok(&["repair", "snapshots", "--dry-run", "--json"]);
    let repairs = r.json()["plan"]["repairs"].as_array().unwrap().clone();
    assert_eq!(repairs.len(), 1, "{}", r.stdout);
    let replaced: Vec<String> =
        repairs[0]["replaced"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap().to_string()).collect();
    assert!(!replaced.is_empty() && replaced.len() < 10, "{replaced:?}");
    assert_eq!(env.repo_files(), before, "a dry run changes nothing");
    let r = env.ok(&["repair", "snapshots"]);
    assert!(r.stderr.contains("repaired as"), "{}", r.stderr);
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "the original is kept without --forget");
    let fixed = snaps.iter().find(|s| s["id"] != orig.as_str()).unwrap();
    assert!(fixed["tags"].as_array().unwrap().iter().any(|t| t == "repaired"), "{fixed}");
    assert_eq!(fixed["original"], orig.as_str());
    let listed: Vec<&str> = fixed["repaired"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(listed, replaced.iter().map(String::as_str).collect::<Vec<_>>());
    // The repaired snapshot restores without errors: the lost files empty, the rest exact.
    let out = env.path("out");
    let spec = format!("{}:{}", fixed["id"].as_str().unwrap(), src.display());
    env.ok(&["restore", &spec, "--target", out.to_str().unwrap()]);
    let (same, differ) = compare(&src, &out);
    assert_eq!(same.len() + differ.len(), 10);
    for name in &differ {
        assert!(replaced.iter().any(|p| p.ends_with(&format!("/{name}"))), "{name} was replaced");
        assert_eq!(std::fs::metadata(out.join(name)).unwrap().len(), 0, "{name} is empty");
    }
    assert_eq!(differ.len(), replaced.len(), "only the lost files differ");
    // --forget removes the original; then prune leaves a clean repository.
    env.ok(&["forget", &orig]);
    env.ok(&["prune", "--max-unused", "0"]);
    env.assert_clean();
}

#[test]
fn repair_packs_keeps_every_blob_that_reads() {
    // A damaged blob: every other blob of the pack is copied; a damaged header: all are.
    for damage in ["blob", "header"] {
        let (env, src) = ten_files();
        let pack = data_pack(&env);
        let len = std::fs::metadata(&pack).unwrap().len() as usize;
        rewrite(&pack, |v| match damage {
            "blob" => v[100] ^= 1,
            _ => v[len - 20] ^= 1,
        });
        let r = env.run(&["check", "--read-data", "--json"]);
        assert_eq!(r.code, 1, "{damage}: {}", r.stderr);
        let before = env.repo_files();
        let r = env.ok(&["repair", "packs", "--dry-run", "--json"]);
        let plan = r.json()["plan"]["packs"].as_array().unwrap()[0].clone();
        assert_eq!(env.repo_files(), before, "a dry run changes nothing");
        let lost = plan["blobs_lost"].as_array().unwrap().len();
        assert_eq!(lost, if damage == "blob" { 1 } else { 0 }, "{damage}: {plan}");
        assert_eq!(plan["header_ok"], damage == "blob", "{plan}");
        let salvaged = plan["blobs_salvaged"].as_u64().unwrap();
        assert!(salvaged >= 1, "{plan}");
        let r = env.ok(&["repair", "packs", "--json"]);
        assert_eq!(r.json()["outcome"]["blobs_copied"].as_u64().unwrap(), salvaged);
        env.ok(&["repair", "snapshots", "--forget"]);
        env.ok(&["prune", "--max-unused", "0"]);
        assert!(!pack.exists(), "{damage}: the damaged pack is gone");
        env.assert_clean();
        let (r, out) = restore_latest(&env, &src, &format!("out-{damage}"));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let (same, differ) = compare(&src, &out);
        assert_eq!(differ.len(), lost, "{damage}: every file but the one with the lost blob restores exactly");
        assert_eq!(same.len(), 10 - lost);
    }
}

#[test]
fn repairs_killed_at_any_moment_finish_on_the_next_run() {
    use std::process::Stdio;
    let (env, src) = ten_files();
    let pack = data_pack(&env);
    rewrite(&pack, |v| v[100] ^= 1);
    rewrite(&objects(&env, "index")[0], |v| v[30] ^= 1);
    for delay_ms in [2u64, 10, 40, 120] {
        for cmd in [
            &["repair", "index", "--quiet"][..],
            &["repair", "packs", "--quiet"],
            &["repair", "snapshots", "--forget", "--quiet"],
        ] {
            let mut child = env.cmd(cmd).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
            child.wait().unwrap();
            // Whatever was interrupted, the repository still opens and lists.
            env.ok(&["snapshots"]);
        }
    }
    env.ok(&["unlock"]);
    env.ok(&["repair", "index"]);
    env.run(&["check", "--read-data"]);
    env.ok(&["repair", "packs"]);
    env.ok(&["repair", "snapshots", "--forget"]);
    env.ok(&["prune", "--max-unused", "0"]);
    env.assert_clean();
    let (r, out) = restore_latest(&env, &src, "out");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (same, differ) = compare(&src, &out);
    assert_eq!(differ.len(), 1, "only the file with the damaged blob is lost: {differ:?}");
    assert_eq!(same.len(), 9);
}

/// A lost index file (deleted, not damaged) loses nothing: `check` says what is wrong and
/// calls no needed pack reclaimable, prune refuses, `repair snapshots` replaces nothing, and
/// `repair index` puts it back.
#[test]
fn a_lost_index_file_loses_nothing() {
    let (env, src) = ten_files();
    std::fs::write(src.join("more"), noise(5, 300_000)).unwrap();
    env.backup(&[&src], &[]);
    let index = objects(&env, "index");
    let newest = index.iter().max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap()).unwrap();
    std::fs::remove_file(newest).unwrap();
    let r = env.run(&["check", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j = r.json();
    let errors: Vec<&str> = j["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("repair index") && e.contains("not reclaimable")), "{errors:?}");
    assert_eq!(j["leftover_packs"], 0, "{j}");
    let before = env.data_files();
    let r = env.run(&["prune"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("repair index"), "{}", r.stderr);
    assert_eq!(env.data_files(), before, "prune deleted nothing");
    let r = env.ok(&["repair", "snapshots", "--json"]);
    assert!(r.json()["plan"]["repairs"].as_array().unwrap().is_empty(), "nothing is lost: {}", r.stdout);
    env.ok(&["repair", "index"]);
    env.assert_clean();
    env.assert_restores(&src, "out");
}

/// A truncated pack keeps its index entries through `repair index`, so `repair packs` still
/// salvages what it holds.
#[test]
fn a_truncated_pack_survives_repair_index_for_repair_packs() {
    let (env, src) = ten_files();
    let pack = data_pack(&env);
    let len = std::fs::metadata(&pack).unwrap().len();
    rewrite(&pack, |v| v.truncate((len / 2) as usize));
    let r = env.ok(&["repair", "index", "--json"]);
    assert_eq!(r.json()["plan"]["packs_kept_unreadable"].as_array().unwrap().len(), 1, "{}", r.stdout);
    let r = env.ok(&["repair", "packs", "--json"]);
    let plan = &r.json()["plan"]["packs"][0];
    assert_eq!(plan["header_ok"], false, "{plan}");
    assert!(plan["blobs_salvaged"].as_u64().unwrap() >= 1, "the blobs before the cut are salvaged: {plan}");
    env.ok(&["repair", "snapshots", "--forget"]);
    env.ok(&["prune", "--max-unused", "0"]);
    env.assert_clean();
    let (r, out) = restore_latest(&env, &src, "out");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (same, _) = compare(&src, &out);
    assert!(same.len() >= 9, "at most the file cut in half is lost: {same:?}");
}
