//! Limits found by a hostile test battery: open-file limits, passwords, a repository inside
//! the backed-up paths.

use std::process::Command;

use crate::support::*;

/// `coffer ARGS` with the open-file limit (soft and hard) at `n`, as `ulimit -n n` sets it.
fn limited(env: &Env, n: u32, args: &[&str]) -> Run {
    let inner = env.cmd(args);
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::null());
    Env::run_cmd(c)
}

#[test]
fn a_tree_2000_levels_deep_backs_up_and_restores_under_ulimit_1024() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    make_deep(&src, 2000);
    let r = limited(&env, 1024, &["backup", "--json", src.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.json()["errors"].as_array().unwrap().is_empty(), "{}", r.stdout);
    let out = env.path("out");
    let spec = format!("latest:{}", src.display());
    let r = limited(&env, 1024, &["restore", &spec, "--target", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The comparison recurses once per level: a thread with room for that.
    let t = std::thread::Builder::new().stack_size(256 << 20).spawn(move || assert_same_tree(&src, &out)).unwrap();
    t.join().unwrap();
}

#[test]
fn thousands_of_hard_linked_directories_restore_exactly_under_ulimit_1024() {
    let env = Env::new();
    let src = env.path("src");
    let (a, b) = (src.join("a"), src.join("b"));
    for i in 0..3000 {
        let d = a.join(format!("d{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), format!("file {i}")).unwrap();
    }
    // The shape `cp -al a b` (rsnapshot) makes: every file of b is a hard link into a.
    for i in 0..3000 {
        let d = b.join(format!("d{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::hard_link(a.join(format!("d{i}/f")), d.join("f")).unwrap();
    }
    let r = limited(&env, 1024, &["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = env.path("out");
    let spec = format!("latest:{}", src.display());
    let r = limited(&env, 1024, &["restore", &spec, "--target", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_same_tree(&src, &out);
    use std::os::unix::fs::MetadataExt;
    for i in [0, 1234, 2999] {
        let x = std::fs::metadata(out.join(format!("a/d{i}/f"))).unwrap();
        let y = std::fs::metadata(out.join(format!("b/d{i}/f"))).unwrap();
        assert_eq!((x.ino(), x.nlink()), (y.ino(), 2), "d{i}/f is one file with two links");
    }
}

#[test]
fn a_wrong_password_writes_nothing_and_huge_passwords_are_refused() {
    let env = Env::new();
    let before = env.repo_files();
    let r = Env::run_cmd({
        let mut c = env.cmd(&["snapshots"]);
        c.env("COFFER_PASSWORD", "wrong");
        c
    });
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert_eq!(env.repo_files(), before);
    let names: Vec<_> = std::fs::read_dir(&env.repo).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().contains("probe")), "{names:?}");
    // A password file of 64 MiB and a password command that never stops are refused.
    let big = env.path("big");
    std::fs::write(&big, vec![b'x'; 64 << 20]).unwrap();
    let r = env.run(&["snapshots", "--password-file", big.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("longer than"), "{}", r.stderr);
    let r = env.run(&["snapshots", "--password-command", "yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("longer than"), "{}", r.stderr);
}

#[test]
fn a_repository_and_cache_inside_the_backed_up_paths_are_left_out() {
    let env = Env::new();
    let top = env.dir.path().to_path_buf();
    std::fs::create_dir_all(top.join("src")).unwrap();
    std::fs::write(top.join("src/data"), noise(3, 50_000)).unwrap();
    env.backup(&[&top.join("src")], &[]);
    env.ok(&["find", "data"]); // makes the catalog, in the cache
    assert!(top.join("cache").is_dir());
    let r = env.ok(&["backup", top.to_str().unwrap()]);
    assert!(r.stderr.contains("the repository at") && r.stderr.contains("left out"), "{}", r.stderr);
    assert!(r.stderr.contains("Coffer's cache at"), "{}", r.stderr);
    let r = env.ok(&["ls", "latest", top.to_str().unwrap()]);
    assert!(r.stdout.contains("/src"), "{}", r.stdout);
    assert!(!r.stdout.contains("/repo") && !r.stdout.contains("/cache"), "{}", r.stdout);
}
