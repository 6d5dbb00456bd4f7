//! The CLI end to end against a real S3 server (moto) on loopback.

use crate::support::*;

#[test]
fn s3_backup_restore_check_round_trip() {
    let env = Env::s3();
    let src = env.path("src");
    make_simple_tree(&src);
    let s = env.backup(&[&src], &["--tag", "s3"]);
    assert_eq!(s["files_new"], 4, "{s}");
    let again = env.backup(&[&src], &[]);
    assert_eq!(again["files_unmodified"], 4);
    // Only ancestor trees (/tmp changes while other tests run) may be stored again.
    assert!(again["data_added"].as_u64().unwrap() < 10_000, "{again}");
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 2);
    env.assert_clean();
    env.assert_restores(&src, "out");
    let mut c = env.cmd(&["snapshots"]);
    c.env("COFFER_PASSWORD", "wrong");
    assert_eq!(Env::run_cmd(c).code, 12);
}

#[test]
fn s3_two_backups_at_once() {
    let env = Env::s3();
    let a = env.path("a");
    let b = env.path("b");
    for (dir, seed) in [(&a, 0u64), (&b, 50)] {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..6 {
            std::fs::write(dir.join(format!("f{i}")), noise(seed + i, 1_000_000)).unwrap();
        }
        std::fs::write(dir.join("shared"), noise(999, 2_000_000)).unwrap();
    }
    let run = |p: &std::path::Path| env.cmd(&["backup", "--json", p.to_str().unwrap()]).output().unwrap();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| run(&a));
        let hb = s.spawn(|| run(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(ra.status.success(), "{}", String::from_utf8_lossy(&ra.stderr));
    assert!(rb.status.success(), "{}", String::from_utf8_lossy(&rb.stderr));
    assert_eq!(env.assert_clean()["snapshots"], 2);
}

#[test]
fn s3_missing_repository_is_exit_10() {
    let s3 = s3_server();
    let bucket = s3.new_bucket();
    let mut env = Env::uninit();
    env.repo = std::path::PathBuf::from(format!("s3://{bucket}/nothing-here"));
    env.vars = vec![
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), s3.endpoint.clone()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
    ];
    assert_eq!(env.run(&["snapshots"]).code, 10);
}
