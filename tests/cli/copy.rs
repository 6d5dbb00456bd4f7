//! `copy`: a second copy in another repository, with other keys and chunker secret.

use crate::support::*;

fn second_repo(env: &Env) -> std::path::PathBuf {
    let dst = env.path("second");
    let mut c = env.cmd(&["init", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    c.env("COFFER_REPO", &dst).env("COFFER_PASSWORD", "other password");
    assert_eq!(Env::run_cmd(c).code, 0);
    dst
}

fn copy(env: &Env, to: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["copy", "--json", "--to", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut c = env.cmd(&args);
    c.env("COFFER_PASSWORD2", "other password");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

#[test]
fn copy_transfers_snapshots_once_and_they_restore_exactly() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &["--tag", "first"]);
    std::fs::write(src.join("later"), noise(77, 200_000)).unwrap();
    env.backup(&[&src], &[]);
    let dst = second_repo(&env);
    let r = copy(&env, &dst, &[]);
    assert_eq!(r["copied"].as_array().unwrap().len(), 2, "{r}");
    let first_added = r["data_added"].as_u64().unwrap();
    assert!(first_added > 3_000_000, "{r}");
    // Twice is a no-op.
    let r = copy(&env, &dst, &[]);
    assert_eq!(r["copied"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 2);
    // The copies restore exactly, with the destination's own password.
    let mut d = Env::uninit();
    d.repo = dst.clone();
    let mut c = d.cmd(&["snapshots", "--json"]);
    c.env("COFFER_PASSWORD", "other password");
    let snaps = Env::run_cmd(c).json();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert!(snaps.as_array().unwrap().iter().any(|s| s["tags"][0] == "first"));
    let out = env.path("out");
    let mut c = d.cmd(&["restore", &format!("latest:{}", src.display()), "--target", out.to_str().unwrap()]);
    c.env("COFFER_PASSWORD", "other password");
    assert_eq!(Env::run_cmd(c).code, 0);
    assert_same_tree(&src, &out);
    let mut c = d.cmd(&["check", "--read-data", "--json"]);
    c.env("COFFER_PASSWORD", "other password");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn copy_to_s3_transfers_only_what_is_missing() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    let s3 = Env::s3();
    // The destination already holds a backup of the same files: copying adds only trees.
    s3.backup(&[&src], &[]);
    let mut args = vec!["copy", "--json", "--to", s3.repo.to_str().unwrap()];
    args.push("latest");
    let mut c = env.cmd(&args);
    c.envs(s3.vars.iter().map(|(k, v)| (k, v))).env("COFFER_PASSWORD2", PASSWORD);
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["copied"].as_array().unwrap().len(), 1, "{j}");
    assert!(j["data_added"].as_u64().unwrap() < 100_000, "only trees were new: {j}");
    assert_eq!(s3.assert_clean()["snapshots"], 2);
}
