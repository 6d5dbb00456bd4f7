//! forget, tag and prune end to end, alone and while backups run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Snapshot ids of `snapshots --json`, oldest first.
fn snapshot_ids(env: &Env) -> Vec<String> {
    env.ok(&["snapshots", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().into())
        .collect()
}

pub fn repo_bytes(env: &Env) -> u64 {
    env.repo_files().values().sum()
}

/// A tree of `n` random files of `size` bytes.
fn tree(root: &Path, n: u64, size: usize, seed: u64) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..n {
        std::fs::write(root.join(format!("f{i:03}")), noise(seed * 1000 + i, size)).unwrap();
    }
}

/// Backs up `src` with a given `--time`; returns the snapshot id.
fn backup_at(env: &Env, src: &Path, time: &str, extra: &[&str]) -> String {
    let mut args = vec!["--time", time];
    args.extend_from_slice(extra);
    env.backup(&[src], &args)["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn forget_applies_the_policy_per_group_and_prints_the_contract_json() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 2, 1000, 1);
    // Two snapshots a day for five days, at 01:00 and 13:00 UTC.
    let mut ids = Vec::new();
    for day in 1..=5 {
        for hour in ["01", "13"] {
            ids.push(backup_at(&env, &src, &format!("2026-11-0{day}T{hour}:00:00Z"), &[]));
        }
    }
    let other = backup_at(&env, &src, "2026-11-05T14:00:00Z", &["--host", "other"]);
    let r = env.ok(&["forget", "--keep-daily", "3", "--keep-last", "1", "--dry-run", "--json"]).json();
    let groups = r.as_array().unwrap();
    assert_eq!(groups.len(), 2, "one group per host: {r}");
    let mine = groups.iter().find(|g| g["group"]["host"] != "other").unwrap();
    assert!(mine["group"]["paths"].is_array() && mine["group"]["tags"].is_array(), "{mine}");
    let keep: Vec<&str> = mine["keep"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    // The newest of each of the last three days (the newest is also the "last").
    assert_eq!(keep, vec![ids[9].as_str(), ids[7].as_str(), ids[5].as_str()], "{mine}");
    assert_eq!(mine["remove"].as_array().unwrap().len(), 7);
    let reasons = mine["reasons"].as_array().unwrap();
    assert_eq!(reasons[0]["snapshot"], ids[9].as_str());
    assert_eq!(reasons[0]["matches"], serde_json::json!(["last snapshot", "daily snapshot"]));
    assert!(mine["keep"][0]["time"].as_str().unwrap().starts_with("2026-11-05T13:00:00"), "{mine}");
    let theirs = groups.iter().find(|g| g["group"]["host"] == "other").unwrap();
    assert_eq!(theirs["keep"][0]["id"], other.as_str());
    // The dry run removed nothing; the real run removes exactly the plan.
    assert_eq!(snapshot_ids(&env).len(), 11);
    env.ok(&["forget", "--keep-daily", "3", "--keep-last", "1"]);
    let left = snapshot_ids(&env);
    assert_eq!(left.len(), 4);
    for id in [&ids[5], &ids[7], &ids[9], &other] {
        assert!(left.contains(id));
    }
    env.assert_clean();
}

#[test]
fn forget_group_by_and_buckets_in_the_snapshots_own_offset() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 1, 100, 2);
    // 23:30 and 00:30 at +02:00 are two days there, one day (21:30, 22:30) in UTC.
    let a = backup_at(&env, &src, "2026-11-10T23:30:00+02:00", &[]);
    let b = backup_at(&env, &src, "2026-11-11T00:30:00+02:00", &[]);
    let r = env.ok(&["forget", "--keep-daily", "2", "--dry-run", "--json", "--group-by", ""]).json();
    let g = &r.as_array().unwrap()[0];
    assert_eq!(g["group"]["host"], "", "an empty --group-by makes one group: {g}");
    assert_eq!(g["keep"].as_array().unwrap().len(), 2, "two days in the recorded offset: {g}");
    assert!(g["keep"][0]["time"].as_str().unwrap().ends_with("+02:00"), "{g}");
    let _ = (a, b);
}

#[test]
fn forget_refuses_an_empty_policy_and_one_that_keeps_nothing() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 1, 100, 3);
    backup_at(&env, &src, "2026-11-01T10:00:00Z", &[]);
    let r = env.run(&["forget"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no policy was specified"), "{}", r.stderr);
    let r = env.run(&["forget", "--keep-tag", "nosuchtag"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("refusing to delete last snapshot of snapshot group"), "{}", r.stderr);
    assert_eq!(snapshot_ids(&env).len(), 1, "nothing was removed");
    let r = env.run(&["forget", "--keep-daily", "-2"]);
    assert_eq!(r.code, 2, "a negative count other than -1 is a usage error: {}", r.stderr);
    // -1 and `unlimited` mean unlimited.
    env.ok(&["forget", "--keep-daily", "-1"]);
    env.ok(&["forget", "--keep-daily", "unlimited"]);
    assert_eq!(snapshot_ids(&env).len(), 1);
}

#[test]
fn forget_ids_removes_exactly_those() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 1, 100, 4);
    let a = backup_at(&env, &src, "2026-11-01T10:00:00Z", &[]);
    let b = backup_at(&env, &src, "2026-11-02T10:00:00Z", &[]);
    let c = backup_at(&env, &src, "2026-11-03T10:00:00Z", &[]);
    let r = env.ok(&["forget", &a[..8], &c, "--json"]).json();
    assert_eq!(r[0]["remove"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(snapshot_ids(&env), vec![b.clone()]);
    let r = env.run(&["forget", &b, "--keep-last", "1"]);
    assert_eq!(r.code, 1, "ids and a policy together are refused: {}", r.stderr);
}

#[test]
fn future_dated_snapshots_never_push_real_ones_out() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 1, 100, 5);
    let real: Vec<String> = (1..=3).map(|d| backup_at(&env, &src, &format!("2026-11-0{d}T10:00:00Z"), &[])).collect();
    // A compromised host plants snapshots dated years ahead of the storage's clock.
    let planted: Vec<String> =
        (1..=3).map(|d| backup_at(&env, &src, &format!("2031-01-0{d}T10:00:00Z"), &[])).collect();
    let r = env.run(&["forget", "--keep-last", "2", "--keep-within", "1d", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("later than the storage's timestamp"), "reported: {}", r.stderr);
    let g = &r.json()[0];
    assert_eq!(g["future_dated"].as_array().unwrap().len(), 3, "{g}");
    let left = snapshot_ids(&env);
    // The two newest real ones stay (keep-last 2 counts only real snapshots), and the
    // window of keep-within is measured from the newest real one; the planted ones stay too.
    assert!(left.contains(&real[2]) && left.contains(&real[1]), "{left:?}");
    assert!(!left.contains(&real[0]), "{left:?}");
    for p in &planted {
        assert!(left.contains(p));
    }
    let reason = g["reasons"].as_array().unwrap().iter().find(|x| x["snapshot"] == planted[0].as_str()).unwrap();
    assert_eq!(reason["matches"], serde_json::json!(["future-dated (not counted)"]));
}

#[test]
fn tag_replaces_snapshots_and_keep_tag_applies_afterwards() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 1, 100, 6);
    let a = backup_at(&env, &src, "2026-11-01T10:00:00Z", &["--tag", "daily"]);
    let b = backup_at(&env, &src, "2026-11-02T10:00:00Z", &["--tag", "daily"]);
    let r = env.ok(&["tag", &a, "--add", "keep,audit", "--json"]).json();
    let new_a = r[0]["new"].as_str().unwrap().to_string();
    assert_ne!(new_a, a);
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let s = snaps.as_array().unwrap().iter().find(|s| s["id"] == new_a.as_str()).unwrap();
    assert_eq!(s["tags"], serde_json::json!(["daily", "keep", "audit"]));
    assert_eq!(s["original"], a.as_str(), "the copy names the snapshot it replaced");
    assert!(!snapshot_ids(&env).contains(&a), "the original is gone");
    env.ok(&["tag", &new_a, "--remove", "audit"]);
    let r = env.ok(&["tag", "latest", "--set", "weekly", "--json"]).json();
    assert_eq!(r[0]["tags"], serde_json::json!(["weekly"]));
    assert_eq!(r[0]["snapshot"], b.as_str());
    // keep-tag keeps the tagged one although keep-last 1 would not.
    env.ok(&["forget", "--keep-last", "1", "--keep-tag", "keep"]);
    let left = env.ok(&["snapshots", "--json"]).json();
    let tags: Vec<_> = left.as_array().unwrap().iter().map(|s| s["tags"].clone()).collect();
    assert_eq!(tags, vec![serde_json::json!(["daily", "keep"]), serde_json::json!(["weekly"])]);
    env.assert_clean();
    let r = env.run(&["tag", "latest"]);
    assert_eq!(r.code, 1, "tag needs --add, --remove or --set: {}", r.stderr);
    // As restic: --add before --remove, and commas separate tags everywhere.
    let r = env.ok(&["tag", "latest", "--add", "x", "--remove", "x", "--json"]).json();
    assert_eq!(r[0]["tags"], serde_json::json!(["weekly"]), "{r}");
    let c = backup_at(&env, &src, "2026-11-03T10:00:00Z", &["--tag", "a,b", "--tag", "c"]);
    let snaps = env.ok(&["snapshots", "--json", "--tag", "b"]).json();
    assert_eq!(snaps[0]["id"], c.as_str());
    assert_eq!(snaps[0]["tags"], serde_json::json!(["a", "b", "c"]));
}

#[test]
fn backup_time_outside_what_a_snapshot_holds_is_refused() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 1, 100, 14);
    for bad in ["1600-01-01 00:00:00", "0000-06-01", "2262-04-12T00:00:00Z", "9999-12-31 23:59:59", "2h"] {
        let r = env.run(&["backup", "--time", bad, src.to_str().unwrap()]);
        // Refused as the command line is parsed: a usage error.
        assert_eq!(r.code, 2, "--time {bad}: {}", r.stderr);
        assert!(r.stderr.contains("--time"), "names the option: {}", r.stderr);
    }
    assert!(snapshot_ids(&env).is_empty());
}

/// Ten days of a changing tree: `changed` of its files rewritten every day.
pub fn history(env: &Env, src: &Path, days: u64, files: u64, changed: u64) -> Vec<String> {
    tree(src, files, 200_000, 7);
    let mut ids = Vec::new();
    for day in 0..days {
        for i in 0..changed {
            let f = (day * changed + i) % files;
            std::fs::write(src.join(format!("f{f:03}")), noise(100_000 + day * 100 + i, 200_000)).unwrap();
        }
        ids.push(backup_at(env, src, &format!("2026-10-{:02}T03:00:00Z", day + 1), &[]));
    }
    ids
}

#[test]
fn forget_keep_last_1_and_two_prunes_leave_what_a_fresh_repository_holds() {
    let env = Env::new();
    let src = env.path("src");
    history(&env, &src, 10, 60, 8);
    let before = repo_bytes(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune", "--max-unused", "0"]);
    env.ok(&["prune", "--max-unused", "0"]);
    let after = repo_bytes(&env);
    // A fresh repository holding only that snapshot.
    let fresh = Env::new();
    fresh.backup(&[&src], &[]);
    let fresh_bytes = repo_bytes(&fresh);
    let pack = 16u64 << 20;
    eprintln!("before {before}, after prune {after}, fresh {fresh_bytes}");
    assert!(after < before * 6 / 10, "prune freed little: {before} -> {after}");
    assert!(after <= fresh_bytes + fresh_bytes / 10 + pack, "{after} vs fresh {fresh_bytes}");
    let c = env.assert_clean();
    assert_eq!(c["obsolete_packs"], 0, "{c}");
    assert_eq!(c["leftover_packs"], 0, "{c}");
    env.assert_restores(&src, "out");
}

#[test]
fn prune_dry_run_changes_nothing_and_json_has_the_plan() {
    let env = Env::new();
    let src = env.path("src");
    history(&env, &src, 4, 20, 5);
    env.ok(&["forget", "--keep-last", "1"]);
    let files = env.repo_files();
    let r = env.ok(&["prune", "--dry-run", "--max-unused", "0", "--json"]).json();
    assert_eq!(r["dry_run"], true);
    assert!(r["plan"]["repack"]["packs"].as_u64().unwrap() + r["plan"]["unused"]["packs"].as_u64().unwrap() > 0, "{r}");
    assert!(r["plan"]["requests"]["delete"].as_u64().is_some(), "{r}");
    let mut after = env.repo_files();
    after.retain(|p, _| !p.starts_with("locks"));
    let mut files = files;
    files.retain(|p, _| !p.starts_with("locks"));
    assert_eq!(files, after, "a dry run writes and deletes nothing");
    let r = env.ok(&["prune", "--json"]).json();
    assert_eq!(r["dry_run"], false);
    assert!(r["outcome"]["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    assert!(r["outcome"]["requests"]["delete"].as_u64().unwrap() > 0, "{r}");
    env.assert_clean();
}

#[test]
fn a_backup_that_started_before_a_prune_loses_nothing() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 8, 400_000, 8);
    let first = env.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    // Another host's snapshot stays: prune refuses to work from an empty snapshot listing.
    let other = env.path("other");
    tree(&other, 1, 1000, 13);
    env.backup(&[&other], &["--host", "other"]);
    // Those backups ran a while ago: prune leaves alone packs written less than five
    // minutes before a running backup started (they may be that backup's).
    age_repository(&env, 600);
    // A slow backup of the same files plus new ones: it deduplicates against the packs of
    // the first snapshot, which is forgotten and pruned while it runs.
    let slow = env.path("slow");
    std::fs::create_dir_all(&slow).unwrap();
    for i in 0..8 {
        std::fs::copy(src.join(format!("f{i:03}")), slow.join(format!("f{i:03}"))).unwrap();
    }
    tree(&slow.join("new"), 6, 300_000, 9);
    let packs_before = env.packs().len();
    let mut child = env
        .cmd(&["backup", "--json", "--limit-upload", "400", slow.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its pack is written (so it has read the index); the upload limit then holds it back
    // for seconds before it writes its index file and snapshot.
    let start = Instant::now();
    while env.packs().len() == packs_before {
        assert!(start.elapsed() < Duration::from_secs(30), "the slow backup wrote no pack");
        assert!(child.try_wait().unwrap().is_none(), "the slow backup ended too soon");
        std::thread::sleep(Duration::from_millis(5));
    }
    env.ok(&["forget", &first]);
    let p = env.ok(&["prune", "--max-unused", "0", "--json"]).json();
    assert!(p["outcome"]["packs_marked"].as_u64().unwrap() > 0, "the forgotten snapshot's packs are marked: {p}");
    assert_eq!(p["outcome"]["packs_deleted"], 0, "nothing is deleted while the backup runs: {p}");
    assert!(p["plan"]["sessions"].as_array().unwrap().len() == 1, "{p}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["blobs_rescued"], 8, "it copied the 8 chunks it shares with the forgotten snapshot: {summary}");
    // Now that the backup has ended, the next prune deletes what was marked.
    let p = env.ok(&["prune", "--json"]).json();
    assert!(p["outcome"]["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    // The backup copied what it needed from the marked packs before it committed, so
    // prune had nothing left to rescue.
    assert_eq!(p["plan"]["rescue_blobs"], 0, "{p}");
    env.assert_clean();
    env.assert_restores(&slow, "out");
}

/// Moves the storage timestamps (file mtimes) of every object back by `secs`.
fn age_repository(env: &Env, secs: u64) {
    for p in env.repo_files().keys() {
        let f = std::fs::File::options().write(true).open(env.repo.join(p)).unwrap();
        let t = f.metadata().unwrap().modified().unwrap() - Duration::from_secs(secs);
        f.set_modified(t).unwrap();
    }
}

/// Waits until the child has written its lock (a file under `locks/`).
fn wait_for_lock(env: &Env, child: &mut std::process::Child) {
    let start = Instant::now();
    while std::fs::read_dir(env.repo.join("locks")).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no lock appeared");
        assert!(child.try_wait().unwrap().is_none(), "the process ended before its lock was seen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_second_prune_refuses_with_exit_11() {
    let env = Env::new();
    let src = env.path("src");
    history(&env, &src, 3, 10, 3);
    // A prune slowed to 1 KiB/s of reads holds its lock for a while.
    let mut slow =
        env.cmd(&["prune", "--limit-download", "1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_lock(&env, &mut slow);
    let r = env.run(&["prune"]);
    let _ = slow.kill();
    slow.wait().unwrap();
    assert_eq!(r.code, 11, "{}", r.stderr);
    assert!(r.stderr.contains("another prune or repair is running (prune"), "{}", r.stderr);
    // The killed prune's lock names a process that is gone: the next prune runs.
    env.ok(&["prune"]);
    env.assert_clean();
}

#[test]
fn kill_9_of_prune_at_any_moment_leaves_a_valid_repository() {
    let env = Env::new();
    let src = env.path("src");
    let ids = history(&env, &src, 8, 40, 10);
    env.ok(&["forget", "--keep-last", "2"]);
    for delay_ms in [5u64, 20, 60, 120, 250] {
        let mut child = env
            .cmd(&["prune", "--max-unused", "0", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let r = env.run(&["check", "--json"]);
        assert_eq!(r.code, 0, "after kill at {delay_ms} ms: {}", r.stderr);
        assert!(r.json()["errors"].as_array().unwrap().is_empty(), "{}", r.stdout);
    }
    env.ok(&["prune", "--max-unused", "0"]);
    let c = env.assert_clean();
    assert_eq!(c["obsolete_packs"], 0, "the next prune completed the work: {c}");
    assert_eq!(c["leftover_packs"], 0, "{c}");
    assert_eq!(snapshot_ids(&env), ids[6..].to_vec());
    env.assert_restores(&src, "out");
}

#[test]
fn leftovers_of_a_killed_backup_are_reclaimed_by_prune() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 2, 100_000, 10);
    env.backup(&[&src], &[]);
    let big = env.path("big");
    tree(&big, 30, 2_000_000, 11);
    let mut child = env.cmd(&["backup", "--quiet", big.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while env.packs().len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let c = env.ok(&["check", "--json"]).json();
    assert!(c["leftover_packs"].as_u64().unwrap() >= 1, "{c}");
    // The killed process is gone (same machine, same boot): its packs are leftovers at once.
    let p = env.ok(&["prune", "--json"]).json();
    assert!(p["plan"]["leftovers"]["packs"].as_u64().unwrap() >= 1, "{p}");
    let c = env.assert_clean();
    assert_eq!(c["leftover_packs"], 0, "{c}");
}

#[test]
fn unlock_removes_stale_locks_and_remove_all_removes_every_lock() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 2, 100_000, 12);
    let mut child = env
        .cmd(&["backup", "--quiet", "--limit-upload", "20", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lock(&env, &mut child);
    // A live backup's lock is not stale.
    let r = env.ok(&["unlock", "--json"]).json();
    assert!(r.as_array().unwrap().is_empty(), "{r}");
    child.kill().unwrap();
    child.wait().unwrap();
    let r = env.ok(&["unlock", "--json"]).json();
    assert_eq!(r.as_array().unwrap().len(), 1, "the killed backup's lock is stale: {r}");
    assert_eq!(std::fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
}

/// `c` run under `prefix` (e.g. `faketime -f +3d`), with the same arguments and environment.
fn wrapped(c: std::process::Command, prefix: &[&str]) -> std::process::Command {
    let Some((prog, rest)) = prefix.split_first() else { return c };
    let mut f = std::process::Command::new(prog);
    f.args(rest).arg(c.get_program()).args(c.get_args()).stdin(Stdio::null());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => f.env(k, v),
            None => f.env_remove(k),
        };
    }
    f
}

/// Repeated backups of changing trees, with forget + prune and check in a loop beside them:
/// every backup succeeds, check never reports damage, and every snapshot restores.
pub fn backups_beside_prunes(env: &Env, prune_prefix: &[&str]) {
    let srcs: Vec<PathBuf> = (0..2).map(|i| env.path(&format!("src{i}"))).collect();
    for (i, s) in srcs.iter().enumerate() {
        tree(s, 12, 300_000, 20 + i as u64);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let backups: Vec<_> = srcs
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut round = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && round < 6 {
                        std::fs::write(
                            s.join(format!("f{:03}", round % 12)),
                            noise(5000 + n as u64 * 100 + round, 300_000),
                        )
                        .unwrap();
                        env.backup(&[s], &[]);
                        round += 1;
                    }
                })
            })
            .collect();
        // Prune refuses (rightly) to judge an index against an empty snapshot listing: on a slow
        // machine the first prune could otherwise start while the first backups have written
        // packs but no snapshot yet. Start once a snapshot exists.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while env.ok(&["snapshots", "--json"]).json().as_array().is_none_or(|a| a.is_empty()) {
            assert!(std::time::Instant::now() < deadline, "no backup finished within 120 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for _ in 0..4 {
            let _ = env.run(&["forget", "--keep-last", "2"]);
            let r = Env::run_cmd(wrapped(env.cmd(&["prune", "--max-unused", "0"]), prune_prefix));
            assert!(r.code == 0 || r.code == 11, "prune failed: {}", r.stderr);
            let c = env.run(&["check", "--json"]);
            assert_eq!(c.code, 0, "check during backups and prunes: {}\n{}", c.stdout, c.stderr);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for b in backups {
            b.join().unwrap();
        }
    });
    env.ok(&["prune", "--max-unused", "0"]);
    env.assert_clean();
    for s in &srcs {
        env.assert_restores(s, &format!("out-{}", s.file_name().unwrap().to_string_lossy()));
    }
}

#[test]
fn backups_prunes_and_checks_at_once_lose_nothing() {
    let env = Env::new();
    backups_beside_prunes(&env, &[]);
}

#[test]
fn a_prune_with_a_clock_days_off_loses_nothing() {
    // faketime shifts the prune's clock only; the storage (the kernel's file times) is right.
    let ok = std::process::Command::new("faketime").args(["-f", "+3d", "date", "+%s"]).output();
    let out = ok.expect("faketime is needed (Debian package faketime; scripts/test.sh installs it)");
    let shifted: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(shifted - now > 2 * 86400, "faketime did not shift the clock");
    for shift in ["+3d", "-3d"] {
        let env = Env::new();
        backups_beside_prunes(&env, &["faketime", "-f", shift]);
    }
}
