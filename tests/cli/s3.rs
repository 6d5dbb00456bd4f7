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
    let (a, b) = env.two_trees(6, 1_000_000);
    env.backups_at_once(&a, &b, &[]);
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

#[test]
fn s3_settings_as_options() {
    let env = Env::s3();
    let endpoint = s3_server().endpoint.clone();
    let mut c =
        env.cmd(&["snapshots", "--json", "--s3-endpoint", &endpoint, "--s3-region", "us-east-1", "--s3-allow-http"]);
    c.env_remove("AWS_ENDPOINT_URL").env_remove("AWS_REGION").env_remove("AWS_ALLOW_HTTP");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Without --s3-allow-http a plain-HTTP endpoint is refused.
    let mut c = env.cmd(&["snapshots", "--s3-endpoint", &endpoint, "--s3-region", "us-east-1"]);
    c.env_remove("AWS_ENDPOINT_URL").env_remove("AWS_REGION").env_remove("AWS_ALLOW_HTTP");
    assert_ne!(Env::run_cmd(c).code, 0);
}
