//! `coffer drill`: restores for real, proves the bytes, measures RTO and RPO, keeps the
//! evidence in the repository; and the runbook's recovery of a whole host from scratch.

use std::path::{Path, PathBuf};

use crate::containment::rewrite;
use crate::support::*;

fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("f{i}")), noise(800 + i, 1000 + 3000 * i as usize)).unwrap();
    }
    for i in 0..20 {
        std::fs::write(src.join(format!("sub/deeper/s{i}")), format!("small {i}\n")).unwrap();
    }
    src
}

#[test]
fn a_drill_restores_verifies_measures_and_keeps_its_record() {
    let env = Env::new();
    let src = tree(&env);
    let id = env.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    let r = env.run(&["drill", "--json", "--rto", "1h", "--rpo", "1d"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    for field in [
        "snapshot",
        "host",
        "files_checked",
        "bytes_checked",
        "damaged",
        "duration",
        "throughput",
        "projected_full_restore_seconds",
        "rpo_seconds",
        "objectives",
        "coverage",
        "passed",
    ] {
        assert!(j.get(field).is_some(), "{field} in {j}");
    }
    assert_eq!(j["snapshot"], id.as_str());
    assert_eq!(j["passed"], true);
    assert_eq!(j["parts"], 20, "5% by default");
    assert_eq!(j["files_total"], 60);
    assert_eq!(j["objectives"]["rto"]["target"], 3600);
    assert_eq!(j["objectives"]["rto"]["met"], true);
    assert_eq!(j["objectives"]["rpo"]["met"], true);
    assert!(j["projected_full_restore_seconds"].as_f64().unwrap() > 0.0);
    assert!(j["damaged"].as_array().unwrap().is_empty());
    // The scratch directory is gone; a kept target holds exactly the sample, byte for byte.
    let target = env.path("kept");
    let r = env.ok(&["drill", "--full", "--json", "--target", target.to_str().unwrap()]);
    assert_eq!(r.json()["files_checked"], 60);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    // Any host sees the history, a fresh one with only the URL and the password included.
    let fresh = Env::run_cmd({
        let mut c = env.cmd(&["drill", "history", "--json"]);
        c.env("COFFER_CACHE_DIR", env.path("fresh-cache")).env("COFFER_STATE_DIR", env.path("fresh-state"));
        c
    });
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    let h = fresh.json();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["full"], true, "newest first");
    for field in ["time", "host", "snapshot", "passed", "rto_seconds", "rpo_seconds", "coverage"] {
        assert!(h[0].get(field).is_some(), "{field} in {}", h[0]);
    }
    let r = env.ok(&["drill", "history"]);
    assert!(r.stdout.contains("2 drills"), "{}", r.stdout);
}

#[test]
fn successive_drills_rotate_until_they_cover_the_whole_snapshot() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src], &[]);
    let mut parts = Vec::new();
    let mut files = 0;
    let mut coverage = Vec::new();
    for _ in 0..4 {
        let j = env.ok(&["drill", "--sample", "25%", "--json"]).json();
        assert_eq!(j["parts"], 4);
        parts.push(j["part"].as_u64().unwrap());
        files += j["files_checked"].as_u64().unwrap();
        coverage.push(j["coverage"].as_f64().unwrap());
    }
    assert_eq!(parts, vec![0, 1, 2, 3], "each drill takes the next part");
    assert_eq!(files, 60, "four parts are every file, once");
    assert!(coverage.windows(2).all(|w| w[0] <= w[1]), "{coverage:?}");
    assert!((coverage[3] - 1.0).abs() < 1e-9, "{coverage:?}");
    // The fifth starts the next cycle with the same seed.
    let j = env.ok(&["drill", "--sample", "25%", "--json"]).json();
    assert_eq!(j["part"], 0);
    assert!(j["coverage"].as_f64().unwrap() < 1.0);
}

#[test]
fn a_drill_that_finds_damage_exits_4_and_names_it() {
    let env = Env::uninit();
    env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2", "--pack-size", "1"]);
    let src = tree(&env);
    env.backup(&[&src], &[]);
    let pack = env.packs().into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    rewrite(&pack, |v| v[100] ^= 1);
    let r = env.run(&["drill", "--full", "--json"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["passed"], false);
    let damaged = j["damaged"].as_array().unwrap();
    assert!(!damaged.is_empty());
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(damaged.iter().any(|d| d["error"].as_str().unwrap().contains(&pack_name)), "names the pack: {damaged:?}");
    assert!(j["damage_recorded"].as_u64().unwrap() >= 1, "the damage is recorded: {j}");
    let h = env.ok(&["drill", "history", "--json"]).json();
    assert_eq!(h[0]["passed"], false);
}

#[test]
fn a_breached_objective_exits_5_and_compare_source_finds_silent_changes() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src], &[]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = env.run(&["drill", "--rpo", "1s", "--json"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["objectives"]["rpo"]["met"], false);
    assert_eq!(j["passed"], false);
    assert!(j["damaged"].as_array().unwrap().is_empty());
    // A source file changed without its size or mtime changing: the restored bytes differ.
    let f = src.join("f7");
    let m = std::fs::metadata(&f).unwrap();
    rewrite(&f, |v| v[10] ^= 1);
    let file = std::fs::File::options().write(true).open(&f).unwrap();
    file.set_modified(m.modified().unwrap()).unwrap();
    let r = env.run(&["drill", "--full", "--compare-source", "--json"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let j = r.json();
    assert!(j["source_compared"].as_u64().unwrap() >= 59, "{j}");
    let d = j["damaged"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0]["path"].as_str().unwrap().ends_with("/f7"));
}

#[test]
fn drill_reports_in_markdown_and_html() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src], &[]);
    env.ok(&["drill"]);
    let md = env.path("drill.md");
    env.ok(&["drill", "--rto", "4h", "--report", md.to_str().unwrap()]);
    let text = std::fs::read_to_string(&md).unwrap();
    for want in ["# Coffer recovery drill", "PASSED", "Seed", "Coverage", "Projected full restore (RTO)", "Trend"] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    // The result row, and one row per drill in the trend.
    assert_eq!(text.matches("| passed |").count(), 3, "the trend lists both drills:\n{text}");
    let html = env.path("drill.html");
    env.ok(&["drill", "--report", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<table>") && page.ends_with("</html>\n"));
    assert!(!page.contains("<script") && !page.contains("http"), "self-contained");
    let r = env.run(&["drill", "--report", env.path("drill.pdf").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(".md") && r.stderr.contains(".html"), "{}", r.stderr);
    assert_eq!(env.ok(&["drill", "history", "--json"]).json().as_array().unwrap().len(), 3, "the bad one did not run");
}

/// docs/runbook.md, followed step by step on a fresh host: only the URL and the password.
fn follow_the_runbook(env: &Env, src: &Path) {
    let fresh = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("COFFER_CACHE_DIR", env.path("newhost/cache"))
            .env("COFFER_STATE_DIR", env.path("newhost/state"))
            .env("HOME", env.path("newhost/home"));
        let r = Env::run_cmd(c);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        r
    };
    // Step 2: the snapshots of the lost host.
    let r = fresh(&["snapshots", "--host", "lost-host", "--json"]);
    let snaps = r.json();
    let latest = snaps.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    // Step 3: is the repository sound?
    fresh(&["check"]);
    // Step 4: restore the whole snapshot, verified.
    let target = env.path("newhost/root");
    fresh(&["restore", &latest, "--target", target.to_str().unwrap(), "--verify"]);
    assert_same_tree(src, &target.join(src.strip_prefix("/").unwrap()));
    // Step 5: record the recovery as a drill.
    fresh(&["drill", &latest, "--sample", "100%"]);
}

#[test]
fn the_runbook_recovers_a_host_from_scratch() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src], &["--host", "lost-host"]);
    follow_the_runbook(&env, &src);
}

#[test]
fn drills_and_the_runbook_work_on_s3() {
    let env = Env::s3();
    let src = tree(&env);
    env.backup(&[&src], &["--host", "lost-host"]);
    let j = env.ok(&["drill", "--json"]).json();
    assert_eq!(j["passed"], true, "{j}");
    assert_eq!(j["host"], "lost-host");
    follow_the_runbook(&env, &src);
    let h = env.ok(&["drill", "history", "--json"]).json();
    assert_eq!(h.as_array().unwrap().len(), 2);
}

#[test]
fn a_tiny_sample_still_restores_something_and_an_unreadable_snapshot_covers_nothing() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src], &[]);
    let j = env.ok(&["drill", "--sample", "0.001%", "--json", "--rto", "1h"]).json();
    assert!(j["files_checked"].as_u64().unwrap() >= 1, "an empty part is skipped: {j}");
    assert_eq!(j["objectives"]["rto"]["met"], true);
    // An unwritable report is refused before the drill runs (and records nothing).
    let n = env.ok(&["drill", "history", "--json"]).json().as_array().unwrap().len();
    let r = env.run(&["drill", "--report", "/nonexistent/dir/r.md"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(env.ok(&["drill", "history", "--json"]).json().as_array().unwrap().len(), n);
    // Every pack gone: nothing is proven.
    for p in env.packs() {
        std::fs::remove_file(p).unwrap();
    }
    let r = env.run(&["drill", "--full", "--json"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.json()["coverage"], 0.0);
}
