//! S3 Object Lock (WORM) on moto with an Object Lock bucket, and the anti-ransomware setup:
//! a backup host whose credentials cannot delete or shorten a lock (the fault proxy plays
//! that policy), forget and prune only from an admin host.

use crate::faults::{FaultProxy, Faults};
use crate::support::*;

/// The object lock headers of `key` (relative to the repository) as S3 reports them.
fn lock_of(env: &Env, key: &str) -> (Option<String>, Option<String>, Option<String>) {
    let url = env.repo.to_str().unwrap().strip_prefix("s3://").unwrap();
    let r = s3_server().raw("HEAD", &format!("/{url}/{key}"), "", b"");
    let h = |n: &str| {
        r.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(n).then(|| v.trim().to_string())
        })
    };
    (h("x-amz-object-lock-mode"), h("x-amz-object-lock-retain-until-date"), h("x-amz-version-id"))
}

fn keys_under(env: &Env, prefix: &str) -> Vec<String> {
    let url = env.repo.to_str().unwrap().strip_prefix("s3://").unwrap();
    let (bucket, base) = url.split_once('/').unwrap();
    let r = s3_server().raw("GET", &format!("/{bucket}?list-type=2&prefix={base}/{prefix}"), "", b"");
    r.split("<Key>").skip(1).filter_map(|k| k.split("</Key>").next()).map(|k| k[base.len() + 1..].to_string()).collect()
}

fn ids(env: &Env) -> Vec<String> {
    let s = env.ok(&["snapshots", "--json"]).json();
    s.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn init_needs_an_object_lock_bucket_and_every_object_is_written_locked() {
    // Not on a bucket without Object Lock, not on a local folder.
    let plain = Env::s3();
    let mut other = Env::uninit();
    other.vars = plain.vars.clone();
    other.repo = std::path::PathBuf::from(format!("{}-2", plain.repo.display()));
    let r = other.run(&["init", "--object-lock", "compliance", "--retention", "30d"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Object Lock enabled"), "{}", r.stderr);
    let mut missing = Env::uninit();
    missing.vars = plain.vars.clone();
    missing.repo = std::path::PathBuf::from("s3://no-such-bucket-here/r");
    let r = missing.run(&["init", "--object-lock", "compliance", "--retention", "30d"]);
    assert!(r.stderr.contains("bucket does not exist"), "{}", r.stderr);
    let local = Env::uninit();
    let r = local.run(&["init", "--object-lock", "governance", "--retention", "30d"]);
    assert!(r.stderr.contains("needs an S3 repository"), "{}", r.stderr);
    assert_ne!(Env::uninit().run(&["init", "--object-lock", "forever"]).code, 0);

    let env = Env::s3_locked(&["--object-lock", "compliance", "--retention", "30d"]);
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    env.ok(&["policy", "set", "--keep-last", "1"]);
    for dir in ["config", "keys/", "data/", "index/", "snapshots/", "audit/", "policy/"] {
        let keys = if dir == "config" { vec!["config".to_string()] } else { keys_under(&env, dir) };
        assert!(!keys.is_empty(), "{dir}");
        for k in keys {
            let (mode, until, _) = lock_of(&env, &k);
            assert_eq!(mode.as_deref(), Some("COMPLIANCE"), "{k}");
            let until: jiff::Timestamp = until.unwrap().parse().unwrap();
            let days = (until - jiff::Timestamp::now()).total(jiff::Unit::Hour).unwrap() / 24.0;
            assert!((29.9..=30.1).contains(&days), "{k}: locked for {days} days");
        }
    }
    assert!(keys_under(&env, "locks/").is_empty(), "sessions removed their (unlocked) locks");
    // A locked snapshot is not removed; a policy keeps it and says why.
    let id = ids(&env)[0].clone();
    let r = env.run(&["forget", &id]);
    assert_eq!(r.code, 13, "{}", r.stderr);
    assert!(r.stderr.contains("S3 Object Lock"), "{}", r.stderr);
    env.backup(&[&src], &[]);
    let plan = env.ok(&["forget", "--json"]).json();
    assert!(plan[0]["protected"][0]["reason"].as_str().unwrap().contains("Object Lock"), "{plan}");
    assert_eq!(ids(&env).len(), 2);
    env.assert_clean();
}

#[test]
fn prune_extends_the_locks_of_what_is_kept_and_leaves_locked_garbage() {
    // A retention of 4 s: after 3 s, more than half of it has passed.
    let env = Env::s3_locked(&["--object-lock", "governance", "--retention", "4s"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(1, 300_000)).unwrap();
    env.backup(&[&src], &[]);
    let pack = keys_under(&env, "data/")[0].clone();
    let before = lock_of(&env, &pack).1.unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = env.ok(&["prune", "--json"]).json();
    assert!(out["plan"]["locks_to_extend"].as_u64().unwrap() >= 4, "pack, index, key, config: {out}");
    assert_eq!(out["outcome"]["locks_extended"], out["plan"]["locks_to_extend"]);
    let after = lock_of(&env, &pack).1.unwrap();
    assert!(after > before, "extended: {before} -> {after}");

    // Garbage still locked is left, marked, and said so; nothing fails.
    let env = Env::s3_locked(&["--object-lock", "governance", "--retention", "30d"]);
    std::fs::create_dir_all(env.path("one")).unwrap();
    std::fs::write(env.path("one/a"), noise(2, 300_000)).unwrap();
    std::fs::create_dir_all(env.path("two")).unwrap();
    std::fs::write(env.path("two/b"), noise(3, 300_000)).unwrap();
    env.backup(&[&env.path("one")], &[]);
    env.backup(&[&env.path("two")], &[]);
    // The first snapshot removed behind Coffer's back (an admin with the bucket's keys: in a
    // versioned bucket that is a delete marker; the locked version stays).
    let first = ids(&env)[0].clone();
    let url = env.repo.to_str().unwrap().strip_prefix("s3://").unwrap();
    s3_server().raw("DELETE", &format!("/{url}/snapshots/{first}"), "", b"");
    assert_eq!(ids(&env).len(), 1);
    let packs_before = keys_under(&env, "data/").len();
    let r = env.ok(&["prune", "--max-unused", "0", "--json"]);
    let out = r.json();
    assert!(out["outcome"]["objects_locked"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(keys_under(&env, "data/").len(), packs_before, "no locked pack is deleted");
    let out = env.ok(&["prune", "--max-unused", "0", "--json"]).json();
    assert!(out["plan"]["locked"]["packs"].as_u64().unwrap() >= 1, "the plan works around them: {out}");
    assert_eq!(out["plan"]["delete"]["packs"], 0);
    let r = env.ok(&["prune", "--max-unused", "0"]);
    assert!(r.stderr.contains("S3 Object Lock still keeps"), "{}", r.stderr);
    // Superseded index files that stay locked are not a reason to write the index again.
    let out = env.ok(&["prune", "--max-unused", "0", "--json"]).json();
    assert_eq!(out["outcome"]["index_files_written"], 0, "{out}");
    env.assert_clean();
    env.assert_restores(&env.path("two"), "out");
}

#[test]
fn a_hostile_backup_host_can_neither_delete_nor_shorten_nor_push_snapshots_out() {
    let admin = Env::s3_locked(&["--object-lock", "compliance", "--retention", "30d"]);
    admin.ok(&["policy", "set", "--keep-last", "3"]);
    // The backup host reaches the bucket through credentials that cannot delete, bypass
    // governance retention, or shorten a lock.
    let proxy = FaultProxy::start(&s3_server().endpoint, Faults { worm: true, ..Default::default() }, 7);
    let mut host = Env::uninit();
    host.repo = admin.repo.clone();
    host.vars = admin.vars.clone();
    for (k, v) in host.vars.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint.clone();
        }
    }
    let src = host.path("src");
    make_simple_tree(&src);
    for day in 1..=3 {
        host.backup(&[&src], &["--time", &format!("2026-11-2{day} 03:00:00")]);
    }
    let real = ids(&admin);
    assert_eq!(real.len(), 3);

    // Turned hostile, with the password: Coffer itself refuses, and so does the storage.
    assert_eq!(host.run(&["forget", &real[0]]).code, 13);
    let pack = keys_under(&admin, "data/")[0].clone();
    let url = admin.repo.to_str().unwrap().strip_prefix("s3://").unwrap();
    let port: u16 = proxy.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    for key in [format!("snapshots/{}", real[0]), pack.clone(), "config".into()] {
        let r = raw_http(port, "DELETE", &format!("/{url}/{key}"), "", b"");
        assert!(r.starts_with("HTTP/1.1 403"), "{key}: {r}");
        let (_, until, version) = lock_of(&admin, &key);
        // Not even with the version id (S3 itself refuses a locked version), nor by
        // shortening the lock first.
        let r = raw_http(port, "DELETE", &format!("/{url}/{key}?versionId={}", version.unwrap()), "", b"");
        assert!(r.starts_with("HTTP/1.1 403"), "{key}: {r}");
        let body =
            "<Retention><Mode>COMPLIANCE</Mode><RetainUntilDate>2026-12-03T00:00:00Z</RetainUntilDate></Retention>";
        let r = raw_http(port, "PUT", &format!("/{url}/{key}?retention"), "", body.as_bytes());
        assert!(r.starts_with("HTTP/1.1 403"), "{key}: {r}");
        assert_eq!(lock_of(&admin, &key).1, until, "{key}: the lock is as it was");
    }
    // Directly at the storage (moto enforces locks on versions): the locked version stays.
    let (_, _, version) = lock_of(&admin, &pack);
    let r = s3_server().raw("DELETE", &format!("/{url}/{pack}?versionId={}", version.unwrap()), "", b"");
    assert!(!r.starts_with("HTTP/1.1 204"), "a locked version is not deleted: {r}");

    // Future-dated snapshots planted to push the real ones out of keep-last 3.
    for year in 2090..2095 {
        host.backup(&[&src], &["--time", &format!("{year}-01-01 00:00:00")]);
    }
    let r = admin.ok(&["forget", "--json"]);
    assert!(r.stderr.contains("claims a time later"), "{}", r.stderr);
    let now = ids(&admin);
    for id in &real {
        assert!(now.contains(id), "real snapshot {id} kept");
    }
    admin.assert_clean();
    let v = admin.ok(&["audit", "--verify", "--json"]).json();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_bucket_with_a_default_retention_takes_uploads() {
    // S3 refuses an upload into such a bucket without Content-MD5 (object_store sends none):
    // Coffer notices and sends its own uploads from then on.
    let s3 = s3_server();
    let bucket = s3.new_lock_bucket();
    let body = "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
    let r = s3.raw("PUT", &format!("/{bucket}?object-lock"), "", body.as_bytes());
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let plain = Env::s3();
    let mut env = Env::uninit();
    env.vars = plain.vars.clone();
    env.repo = std::path::PathBuf::from(format!("s3://{bucket}/repo"));
    env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    env.assert_clean();
    env.assert_restores(&src, "out");
    let (mode, _, _) = lock_of(&env, "config");
    assert_eq!(mode.as_deref(), Some("GOVERNANCE"), "the bucket's default applied");
}
