//! `check` on a healthy repository, with and without reading data.

use crate::support::*;

#[test]
fn check_is_clean_after_backups() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    std::fs::write(src.join("more"), noise(5, 100_000)).unwrap();
    env.backup(&[&src], &[]);
    let r = env.ok(&["check", "--json"]).json();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["snapshots"], 2);
    assert_eq!(r["packs_read"], 0);
    let r = env.ok(&["check", "--read-data", "--json"]).json();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["packs_read"].as_u64().unwrap() >= 2);
    assert!(r["blobs_read"].as_u64().unwrap() >= 6);
    let r = env.ok(&["check", "--read-data-subset", "50%", "--json"]).json();
    assert!(r["packs_read"].as_u64().unwrap() >= 1);
    assert_ne!(env.run(&["check", "--read-data-subset", "0%"]).code, 0);
}
