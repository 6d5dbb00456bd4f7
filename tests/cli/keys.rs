//! Passwords, key files and the exit codes for a missing repository or wrong password.

use crate::support::*;

#[test]
fn wrong_password_is_exit_12_and_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    let before = env.repo_files();
    let mut c = env.cmd(&["backup", src.to_str().unwrap()]);
    c.env("COFFER_PASSWORD", "wrong");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert!(r.stderr.contains("wrong password"));
    assert_eq!(env.repo_files(), before);
    let mut c = env.cmd(&["snapshots", "--json"]);
    c.env("COFFER_PASSWORD", "wrong");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 12);
    assert_eq!(r.json()["exit_code"], 12, "--json errors are JSON too");
}

#[test]
fn missing_repository_is_exit_10() {
    let env = Env::uninit();
    assert_eq!(env.run(&["snapshots"]).code, 10);
    std::fs::create_dir_all(&env.repo).unwrap();
    assert_eq!(env.run(&["snapshots"]).code, 10);
}

#[test]
fn init_twice_is_refused() {
    let env = Env::new();
    let r = env.run(&["init", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
}

#[test]
fn weak_kdf_parameters_are_refused() {
    let env = Env::uninit();
    let r = env.run(&["init", "--kdf-memory", "1", "--kdf-iterations", "1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("floor"), "{}", r.stderr);
    for lanes in ["0", "17"] {
        let r = env.run(&["init", "--kdf-memory", "19", "--kdf-iterations", "2", "--kdf-parallelism", lanes]);
        assert_ne!(r.code, 0, "{lanes} lanes were accepted");
        assert!(r.stderr.contains("parallelism"), "{}", r.stderr);
    }
    assert!(!env.repo.join("config").exists());
}

/// Key files with one lane and with many open alike: the lane count is the key file's own.
#[test]
fn key_files_with_different_lane_counts_open() {
    let env = Env::uninit();
    env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2", "--kdf-parallelism", "1"]);
    let mut c = env.cmd(&["key", "add", "--kdf-memory", "19", "--kdf-iterations", "2", "--kdf-parallelism", "16"]);
    c.env("COFFER_NEW_PASSWORD", "sixteen lanes");
    assert_eq!(Env::run_cmd(c).code, 0);
    let keys = env.ok(&["key", "list", "--json"]).json();
    let mut lanes: Vec<u64> = keys.as_array().unwrap().iter().map(|k| k["kdf_parallelism"].as_u64().unwrap()).collect();
    lanes.sort();
    assert_eq!(lanes, [1, 16]);
    assert_eq!(env.run(&["snapshots"]).code, 0);
    let mut c = env.cmd(&["snapshots"]);
    c.env("COFFER_PASSWORD", "sixteen lanes");
    assert_eq!(Env::run_cmd(c).code, 0);
    let mut c = env.cmd(&["snapshots"]);
    c.env("COFFER_PASSWORD", "neither");
    assert_eq!(Env::run_cmd(c).code, 12);
}

#[test]
fn password_file_and_command() {
    let env = Env::new();
    let pf = env.path("pw");
    std::fs::write(&pf, format!("{PASSWORD}\n")).unwrap();
    let mut c = env.cmd(&["snapshots", "--password-file", pf.to_str().unwrap()]);
    c.env_remove("COFFER_PASSWORD");
    assert_eq!(Env::run_cmd(c).code, 0);
    let mut c = env.cmd(&["snapshots", "--password-command", &format!("echo '{PASSWORD}'")]);
    c.env_remove("COFFER_PASSWORD");
    assert_eq!(Env::run_cmd(c).code, 0);
    let mut c = env.cmd(&["snapshots"]);
    c.env_remove("COFFER_PASSWORD").env("COFFER_PASSWORD_FILE", &pf);
    assert_eq!(Env::run_cmd(c).code, 0);
    // A source on the command line replaces the environment's, whichever kind each is.
    let mut c = env.cmd(&["snapshots", "--password-command", &format!("echo '{PASSWORD}'")]);
    c.env_remove("COFFER_PASSWORD").env("COFFER_PASSWORD_FILE", env.path("no-such-file"));
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // An environment variable the usage line would show as if required: not shown.
    let mut c = env.cmd(&["restore", "latest"]);
    c.env("COFFER_PASSWORD_FILE", &pf);
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("Usage: coffer restore --target <TARGET>") && !r.stderr.contains("--password-file"),
        "{}",
        r.stderr
    );
    let mut c = env.cmd(&["snapshots"]);
    c.env_remove("COFFER_PASSWORD");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 1, "no password and no terminal: an error, never a hang");
}

#[test]
fn key_add_list_remove_passwd() {
    let env = Env::new();
    let mut c = env.cmd(&["key", "add", "--json", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    c.env("COFFER_NEW_PASSWORD", "second");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let second_id = r.json()["id"].as_str().unwrap().to_string();
    let keys = env.ok(&["key", "list", "--json"]).json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(keys.as_array().unwrap().iter().filter(|k| k["current"] == true).count(), 1);
    let with = |pw: &str, args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("COFFER_PASSWORD", pw);
        Env::run_cmd(c)
    };
    assert_eq!(with("second", &["snapshots"]).code, 0);
    // The key in use cannot be removed.
    let r = with("second", &["key", "remove", &second_id[..8]]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    env.ok(&["key", "remove", &second_id[..8]]);
    assert_eq!(with("second", &["snapshots"]).code, 12);
    // passwd replaces the current password.
    let mut c = env.cmd(&["key", "passwd", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    c.env("COFFER_NEW_PASSWORD", "third");
    assert_eq!(Env::run_cmd(c).code, 0);
    assert_eq!(with(PASSWORD, &["snapshots"]).code, 12);
    assert_eq!(with("third", &["snapshots"]).code, 0);
    assert_eq!(with("third", &["key", "list", "--json"]).json().as_array().unwrap().len(), 1);
}

#[test]
fn key_file_left_by_an_interrupted_init_does_not_block_open() {
    // An interrupted `init` with the same password leaves a key file wrapping another master
    // key. Of two fresh repositories, the one whose key id sorts last plays the real one, and
    // gets the other's key file, which is then listed, and tried, first.
    let key_of = |e: &Env| e.repo_files().keys().find(|k| k.starts_with("keys")).unwrap().clone();
    let (a, b) = (Env::new(), Env::new());
    let (real, other) = if key_of(&a) > key_of(&b) { (a, b) } else { (b, a) };
    let stray = key_of(&other);
    std::fs::copy(other.repo.join(&stray), real.repo.join(&stray)).unwrap();
    let r = real.run(&["snapshots", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}
