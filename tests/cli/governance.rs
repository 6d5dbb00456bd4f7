//! Retention that holds up in an audit: the stored policy, the minimum retention, legal
//! holds, the hash-chained audit trail, and erasure by `rewrite`.

use std::path::Path;

use crate::support::*;

/// Three snapshots of `src` with the times of 1, 2 and 3 November; their ids, oldest first.
fn three_snapshots(env: &Env) -> Vec<String> {
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::create_dir_all(src.join("people")).unwrap();
    std::fs::write(src.join("people/alice.txt"), "alice's data\n").unwrap();
    for day in 1..=3 {
        env.backup(&[&src], &["--time", &format!("2026-11-0{day} 10:00:00")]);
    }
    snapshot_ids(env)
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    let s = env.ok(&["snapshots", "--json"]).json();
    s.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// Sets the storage's timestamp of a snapshot object (the file's mtime) `days` back.
fn age_snapshot(env: &Env, id: &str, days: u64) {
    let f = std::fs::File::options().write(true).open(env.repo.join("snapshots").join(id)).unwrap();
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    f.set_modified(t).unwrap();
}

fn audit_commands(env: &Env) -> Vec<(String, i64)> {
    let a = env.ok(&["audit", "--json"]).json();
    a.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["command"].as_str().unwrap().to_string(), e["exit_code"].as_i64().unwrap()))
        .collect()
}

#[test]
fn forget_applies_the_stored_policy_per_scope_and_every_step_is_audited() {
    let env = Env::new();
    let ids = three_snapshots(&env);
    // No policy anywhere: forget refuses, as restic does.
    let r = env.run(&["forget"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    env.ok(&["policy", "set", "--keep-last", "1", "--rto", "4h", "--rpo", "1d"]);
    // A rule for another host leaves this host to the default.
    env.ok(&["policy", "set", "--host", "elsewhere", "--keep-last", "5"]);
    let p = env.ok(&["policy", "show", "--json"]).json();
    let rules = p["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{p}");
    assert_eq!(rules[0]["scope"], "default");
    assert_eq!(rules[0]["keep"]["last"], 1);
    assert_eq!(rules[0]["rto_seconds"], 14_400);
    assert_eq!(rules[1]["scope"], "host=elsewhere");
    let text = env.ok(&["policy", "show"]).stdout;
    assert!(text.contains("host=elsewhere: keep 5 latest"), "{text}");

    let dry = env.ok(&["forget", "--dry-run", "--json"]).json();
    assert_eq!(dry[0]["rule"], "default", "{dry}");
    assert_eq!(dry[0]["remove"].as_array().unwrap().len(), 2);
    assert_eq!(snapshot_ids(&env).len(), 3, "a dry run removes nothing");
    env.ok(&["forget"]);
    assert_eq!(snapshot_ids(&env), vec![ids[2].clone()]);

    // A tag rule keeps what the default would remove: both must agree to remove.
    let src = env.path("src");
    env.backup(&[&src], &["--tag", "monthly", "--time", "2026-11-04 10:00:00"]);
    env.backup(&[&src], &["--time", "2026-11-05 10:00:00"]);
    env.ok(&["policy", "set", "--tag", "monthly", "--keep-last", "3"]);
    let out = env.ok(&["forget", "--json"]).json();
    let kept: Vec<String> = snapshot_ids(&env);
    assert_eq!(kept.len(), 2, "the newest and the monthly one stay: {out}");

    // Every administrative step left an entry, in order, and the chain verifies.
    let cmds: Vec<String> = audit_commands(&env).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        cmds,
        ["init", "forget", "policy set", "policy set", "forget", "policy set", "forget"],
        "the refused forget is audited, dry runs are not"
    );
    assert_ne!(audit_commands(&env)[1].1, 0);
    let v = env.ok(&["audit", "--verify", "--json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 7);
    let entries = env.ok(&["audit", "--json"]).json();
    let last = entries.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["args"][0], "forget");
    assert!(last["plan"].is_array(), "the plan is kept: {last}");
    assert_eq!(last["outcome"]["removed"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["prev"].as_array().unwrap().len(), 1);

    // The stored objectives drive a drill when none are given: an RPO of 1 day is breached
    // by snapshots from November.
    let r = env.run(&["drill", "--json"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert_eq!(r.json()["objectives"]["rpo"]["target"], 86_400, "{}", r.stdout);
}

#[test]
fn the_minimum_retention_is_judged_by_the_storage_and_cannot_be_lowered_at_once() {
    let env = Env::new();
    let ids = three_snapshots(&env);
    env.ok(&["policy", "set", "--min-retention", "30d"]);
    // By id: refused (exit 13), naming the snapshot and when it becomes removable.
    let r = env.run(&["forget", &ids[0]]);
    assert_eq!(r.code, 13, "{}", r.stderr);
    assert!(r.stderr.contains(&ids[0][..8]) && r.stderr.contains("removable after"), "{}", r.stderr);
    // A client clock far ahead changes nothing: the storage's clock decides.
    let mut c = env.cmd(&["forget", &ids[0]]);
    c.env("COFFER_FAKE_NOW", "2030-01-01T00:00:00Z");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 13, "{}", r.stderr);
    let mut c = env.cmd(&["forget", &ids[0]]);
    c.env_remove("COFFER_FAKE_NOW");
    let mut f = std::process::Command::new("faketime");
    f.arg("-f").arg("+400d").arg(c.get_program());
    f.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => f.env(k, v),
            None => f.env_remove(k),
        };
    }
    let r = Env::run_cmd(f);
    assert_eq!(r.code, 13, "faketime +400d: {}", r.stderr);
    // By policy: kept, with the reason, and reported.
    let out = env.ok(&["forget", "--keep-last", "1", "--json"]);
    let plan = out.json();
    assert_eq!(plan[0]["protected"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(snapshot_ids(&env).len(), 3);
    // tag replaces the snapshot object: refused too.
    assert_eq!(env.run(&["tag", "--add", "x", &ids[1]]).code, 13);

    // Lowered: the snapshots stored under 30 days keep it; one stored later does not.
    env.ok(&["policy", "set", "--min-retention", "0"]);
    assert_eq!(env.run(&["forget", &ids[0]]).code, 13, "the old minimum still holds for it");
    // (Storage times within 5 minutes of a change count as after it: the documents and the
    // first snapshots are moved back in time, keeping their order.)
    let mut docs: Vec<_> = std::fs::read_dir(env.repo.join("policy")).unwrap().map(|e| e.unwrap().path()).collect();
    docs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    for (i, d) in docs.iter().enumerate() {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(3600 * (docs.len() - i) as u64);
        std::fs::File::options().write(true).open(d).unwrap().set_modified(t).unwrap();
    }
    for id in &ids {
        let f = std::fs::File::options().write(true).open(env.repo.join("snapshots").join(id)).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600)).unwrap();
    }
    assert_eq!(env.run(&["forget", &ids[0]]).code, 13, "stored before both changes");
    let src = env.path("src");
    env.backup(&[&src], &["--time", "2026-11-04 10:00:00"]);
    let newest = snapshot_ids(&env).last().unwrap().clone();
    env.ok(&["forget", &newest]);
    // Once the minimum has passed (the object stored 31 days ago), it may go.
    age_snapshot(&env, &ids[0], 31);
    env.ok(&["forget", &ids[0]]);
    assert_eq!(snapshot_ids(&env).len(), 2);
    let audit = audit_commands(&env);
    assert!(audit.contains(&("forget".to_string(), 13)), "refusals are audited too: {audit:?}");
}

#[test]
fn a_held_snapshot_and_its_data_stay_until_the_hold_is_released() {
    let env = Env::new();
    let ids = three_snapshots(&env);
    let h = env.ok(&["hold", "add", &ids[0], "--reason", "case 2026-17", "--json"]).json();
    let hold = h["id"].as_str().unwrap().to_string();
    let list = env.ok(&["hold", "list", "--json"]).json();
    assert_eq!(list[0]["snapshots"][0], ids[0].as_str(), "{list}");
    assert_eq!(list[0]["reason"], "case 2026-17");

    let r = env.run(&["forget", &ids[0]]);
    assert_eq!(r.code, 13, "{}", r.stderr);
    assert!(r.stderr.contains("legal hold") && r.stderr.contains(&hold[..8]), "{}", r.stderr);
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(snapshot_ids(&env), vec![ids[0].clone(), ids[2].clone()], "the held one stays");

    // Removed behind Coffer's back: prune still keeps every blob the held tree needs.
    std::fs::remove_file(env.repo.join("snapshots").join(&ids[0])).unwrap();
    let r = env.ok(&["prune", "--max-unused", "0"]);
    assert!(r.stderr.contains("under a legal hold but its object is missing"), "{}", r.stderr);
    let c = env.assert_clean();
    assert_eq!(c["errors"].as_array().map_or(0, |e| e.len()), 0, "{c}");

    // Released: it no longer protects; the release is listed with --all.
    env.ok(&["hold", "release", &hold[..8], "--reason", "case closed"]);
    assert_eq!(env.ok(&["hold", "list", "--json"]).json(), serde_json::json!([]));
    let all = env.ok(&["hold", "list", "--all", "--json"]).json();
    assert_eq!(all[0]["active"], false);
    assert_eq!(all[0]["released"]["reason"], "case closed");
    assert_ne!(env.run(&["hold", "release", &hold[..8], "--reason", "again"]).code, 0);
    assert_ne!(env.run(&["hold", "add", "deadbeef", "--reason", "x"]).code, 0, "an unknown snapshot");
    let cmds: Vec<String> = audit_commands(&env).into_iter().map(|(c, _)| c).collect();
    assert!(cmds.contains(&"hold add".to_string()) && cmds.contains(&"hold release".to_string()), "{cmds:?}");
}

fn audit_files_by_age(env: &Env) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(env.repo.join("audit")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    v
}

fn first_problem(env: &Env) -> serde_json::Value {
    let r = env.run(&["audit", "--verify", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    r.json()["first_problem"].clone()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        let t = e.metadata().unwrap().modified().unwrap();
        std::fs::File::options().write(true).open(to.join(e.file_name())).unwrap().set_modified(t).unwrap();
    }
}

#[test]
fn audit_verify_names_the_first_entry_removed_altered_or_forked() {
    let env = Env::new();
    let ids = three_snapshots(&env);
    for (i, id) in ids.iter().enumerate() {
        env.ok(&["hold", "add", id, "--reason", &format!("r{i}")]);
    }
    env.ok(&["audit", "--verify"]);
    let files = audit_files_by_age(&env);
    assert_eq!(files.len(), 4, "init and three holds");
    let saved = env.path("audit-saved");
    copy_dir(&env.repo.join("audit"), &saved);
    let restore = || {
        std::fs::remove_dir_all(env.repo.join("audit")).unwrap();
        copy_dir(&saved, &env.repo.join("audit"));
    };

    // Removed from the middle.
    std::fs::remove_file(&files[1]).unwrap();
    let p = first_problem(&env);
    assert_eq!(p["kind"], "removed", "{p}");
    assert_eq!(p["entry"], files[1].file_name().unwrap().to_str().unwrap());
    restore();
    // The newest removed: no link names it, but this client saw it.
    std::fs::remove_file(&files[3]).unwrap();
    assert_eq!(first_problem(&env)["kind"], "removed");
    restore();
    // Altered.
    let mut b = std::fs::read(&files[2]).unwrap();
    b[30] ^= 1;
    std::fs::write(&files[2], b).unwrap();
    let p = first_problem(&env);
    assert_eq!(p["kind"], "altered", "{p}");
    restore();
    env.ok(&["audit", "--verify"]);

    // Forked: history cut after the second entry and written anew an hour later.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in &files {
        std::fs::File::options().write(true).open(f).unwrap().set_modified(hour_ago).unwrap();
    }
    let aside = env.path("aside");
    std::fs::create_dir_all(&aside).unwrap();
    for f in &files[2..] {
        std::fs::rename(f, aside.join(f.file_name().unwrap())).unwrap();
    }
    env.ok(&["hold", "add", &ids[0], "--reason", "rewritten history"]);
    for f in &files[2..] {
        std::fs::rename(aside.join(f.file_name().unwrap()), f).unwrap();
    }
    let p = first_problem(&env);
    assert_eq!(p["kind"], "forked", "{p}");
}

#[test]
fn two_admins_writing_at_once_leave_a_chain_that_verifies() {
    let env = Env::new();
    let ids = three_snapshots(&env);
    for round in 0..3 {
        std::thread::scope(|s| {
            let a = s.spawn(|| env.run(&["hold", "add", &ids[0], "--reason", &format!("a{round}")]));
            let b = s.spawn(|| env.run(&["hold", "add", &ids[1], "--reason", &format!("b{round}")]));
            assert_eq!(a.join().unwrap().code, 0);
            assert_eq!(b.join().unwrap().code, 0);
        });
    }
    env.ok(&["hold", "list"]);
    env.ok(&["policy", "set", "--keep-last", "3"]);
    let v = env.ok(&["audit", "--verify", "--json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 8);
    assert_eq!(v["heads"].as_array().unwrap().len(), 1, "the last entry joined any fork: {v}");
}

#[test]
fn rewrite_erases_paths_and_the_ledger_guards_what_must_stay() {
    let env = Env::new();
    let ids = three_snapshots(&env);
    env.ok(&["hold", "add", &ids[0], "--reason", "litigation"]);
    // A dry run changes nothing.
    let dry = env.ok(&["rewrite", "--exclude", "alice.txt", "--dry-run", "--json"]).json();
    assert_eq!(dry["plan"]["rewrites"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(snapshot_ids(&env).len(), 3);
    assert!(!env.repo.join("erasures").exists() || std::fs::read_dir(env.repo.join("erasures")).unwrap().count() == 0);

    let r = env.run(&["rewrite", "--exclude", "alice.txt", "--forget", "--reason", "GDPR request 12", "--json"]);
    assert_eq!(r.code, 3, "the held original cannot go: {}", r.stderr);
    assert!(r.stderr.contains("legal hold"), "{}", r.stderr);
    let out = r.json();
    assert_eq!(out["outcome"]["written"].as_array().unwrap().len(), 3);
    assert_eq!(out["outcome"]["forgotten"], 2);
    assert_eq!(out["outcome"]["kept"][0][0], ids[0].as_str());
    let now = snapshot_ids(&env);
    assert_eq!(now.len(), 4, "three rewritten and the held original: {now:?}");
    // The new snapshots lack the path; the rest is intact.
    let latest = env.ok(&["ls", "--json", "latest"]).stdout;
    assert!(!latest.contains("alice.txt") && latest.contains("people"), "{latest}");
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let rewritten = snaps.as_array().unwrap().iter().find(|s| s["id"] != ids[0].as_str()).unwrap().clone();
    assert!(rewritten["tags"].as_array().unwrap().iter().any(|t| t == "rewrite"), "{rewritten}");
    assert!(rewritten["original"].is_string());

    // Restoring the held original warns; --apply-erasures leaves the path out.
    let out1 = env.path("out1");
    let r = env.ok(&["restore", &ids[0], "--target", out1.to_str().unwrap()]);
    assert!(r.stderr.contains("erased") && r.stderr.contains("alice.txt"), "{}", r.stderr);
    let out2 = env.path("out2");
    env.ok(&["restore", &ids[0], "--target", out2.to_str().unwrap(), "--apply-erasures"]);
    let src = env.path("src");
    let rel = src.strip_prefix("/").unwrap();
    assert!(out1.join(rel).join("people/alice.txt").exists());
    assert!(!out2.join(rel).join("people/alice.txt").exists());
    assert!(out2.join(rel).join("people").is_dir());
    // The new snapshots restore whole, without it.
    let out3 = env.path("out3");
    env.ok(&["restore", "latest", "--target", out3.to_str().unwrap()]);
    assert!(!out3.join(rel).join("people/alice.txt").exists());

    let cmds: Vec<String> = audit_commands(&env).into_iter().map(|(c, _)| c).collect();
    assert!(cmds.contains(&"rewrite".to_string()), "{cmds:?}");
    // prune then leaves a clean repository.
    env.ok(&["prune", "--max-unused", "0"]);
    env.assert_clean();
    assert_ne!(env.run(&["rewrite"]).code, 0, "no pattern given");
}

#[test]
fn governance_works_on_s3() {
    let env = Env::s3();
    let ids = three_snapshots(&env);
    env.ok(&["policy", "set", "--keep-last", "1", "--min-retention", "1d"]);
    env.ok(&["hold", "add", &ids[0], "--reason", "audit"]);
    assert_eq!(env.run(&["forget", &ids[1]]).code, 13);
    env.ok(&["forget"]);
    assert_eq!(snapshot_ids(&env).len(), 3, "the minimum retention keeps them all");
    env.ok(&["rewrite", "--exclude", "alice.txt"]);
    assert_eq!(snapshot_ids(&env).len(), 6);
    // S3 counts time in seconds: a change made in the same second as the one before still wins.
    for i in 0..3 {
        env.ok(&["policy", "set", "--tag", "t", "--keep-last", "5"]);
        env.ok(&["policy", "set", "--tag", "t", "--keep-last", "5", "--min-retention", &format!("{}h", i + 1)]);
        let p = env.ok(&["policy", "show", "--json"]).json();
        let rule = p["rules"].as_array().unwrap().iter().find(|r| r["scope"] == "tag=t").unwrap().clone();
        assert_eq!(rule["min_retention"], format!("{}h", i + 1), "round {i}: {p}");
    }
    let v = env.ok(&["audit", "--verify", "--json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    let cmds: Vec<String> = audit_commands(&env).into_iter().map(|(c, _)| c).collect();
    assert_eq!(&cmds[..6], ["init", "policy set", "hold add", "forget", "forget", "rewrite"]);
}

#[test]
fn races_and_hostile_input_found_by_review_stay_fixed() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    // A hold placed while a forget of the same snapshot runs: never both succeed with the
    // snapshot gone.
    for i in 0..8 {
        let id = env.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
        let (f, h) = std::thread::scope(|s| {
            let f = s.spawn(|| env.run(&["forget", &id]));
            let h = s.spawn(|| env.run(&["hold", "add", &id, "--reason", &format!("race {i}")]));
            (f.join().unwrap(), h.join().unwrap())
        });
        let present = snapshot_ids(&env).contains(&id);
        assert!(h.code != 0 || present, "round {i}: hold added but the snapshot is gone ({})", f.stderr);
        if present {
            let holds = env.ok(&["hold", "list", "--json"]).json();
            for hold in holds.as_array().unwrap() {
                env.ok(&["hold", "release", hold["id"].as_str().unwrap(), "--reason", "next round"]);
            }
        }
    }
    // Concurrent `policy set`s of different scopes all survive.
    std::thread::scope(|s| {
        for i in 0..6 {
            let env = &env;
            s.spawn(move || {
                env.ok(&["policy", "set", "--host", &format!("h{i}"), "--min-retention", &format!("{}d", i + 1)])
            });
        }
    });
    let p = env.ok(&["policy", "show", "--json"]).json();
    assert_eq!(p["rules"].as_array().unwrap().len(), 6, "{p}");
    // Nonsense is refused.
    for bad in [
        &["policy", "set", "--min-retention", ""][..],
        &["policy", "set", "--host", "", "--keep-last", "1"],
        &["policy", "set", "--tag", "a,b", "--keep-last", "1"],
        &["policy", "set", "--clear", "--keep-last", "1"],
        &["hold", "add", "latest", "--reason", " "],
        &["hold", "add", "latest", "--reason", "a\nreleased"],
    ] {
        assert_ne!(env.run(bad).code, 0, "{bad:?}");
    }
    // check knows the objects of format 4 (never "safe to remove").
    env.ok(&["hold", "add", "latest", "--reason", "kept"]);
    let c = env.assert_clean();
    assert!(c["junk"].as_array().unwrap().is_empty(), "{c}");
    // A kept original claiming a time after the erasure still has the erased path left out.
    std::fs::create_dir_all(src.join("people")).unwrap();
    std::fs::write(src.join("people/bob.txt"), "bob\n").unwrap();
    let later = env.backup(&[&src], &["--time", "2099-01-01 00:00:00"])["snapshot_id"].as_str().unwrap().to_string();
    env.ok(&["hold", "add", &later, "--reason", "kept too"]);
    assert_eq!(env.run(&["rewrite", "--exclude", "bob.txt", "--forget"]).code, 3);
    let out = env.path("out-later");
    let r = env.ok(&["restore", &later, "--target", out.to_str().unwrap(), "--apply-erasures"]);
    assert!(r.stderr.contains("leaving out"), "{}", r.stderr);
    assert!(!out.join(src.strip_prefix("/").unwrap()).join("people/bob.txt").exists());
    // Every entry removed: a format-4 repository cannot have an empty trail.
    std::fs::remove_dir_all(env.repo.join("audit")).unwrap();
    std::fs::create_dir_all(env.repo.join("audit")).unwrap();
    let r = env.run(&["audit", "--verify", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json()["first_problem"]["kind"], "removed");
}
