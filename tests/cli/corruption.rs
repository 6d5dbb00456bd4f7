//! Damage to any repository object is found and named; nothing is restored silently wrong.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A repository holding one snapshot of ten distinct random files.
fn setup() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        std::fs::write(src.join(format!("file{i}")), noise(100 + i, 700_000)).unwrap();
    }
    env.backup(&[&src], &[]);
    (env, src)
}

fn largest_pack(env: &Env) -> PathBuf {
    env.packs().into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap()
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x40;
    // Objects are read-only once written; replace the file as a storage attacker would.
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, b).unwrap();
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn flipped_bit_in_pack_is_named_by_check_and_restore() {
    let (env, src) = setup();
    let pack = largest_pack(&env);
    flip(&pack, 1000);
    let r = env.run(&["check", "--read-data"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&name_of(&pack)), "check names the pack: {}", r.stderr);
    let out = env.path("out");
    let spec = format!("latest:{}", src.display());
    let r = env.run(&["restore", &spec, "--target", out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "restore reports the damage: {}", r.stderr);
    let mut damaged = 0;
    for i in 0..10 {
        let name = format!("file{i}");
        let good = std::fs::read(src.join(&name)).unwrap();
        match std::fs::read(out.join(&name)) {
            Ok(b) if b == good => {}
            _ => {
                damaged += 1;
                assert!(r.stderr.contains(&name), "restore names the damaged file {name}: {}", r.stderr);
            }
        }
    }
    assert_eq!(damaged, 1, "exactly the file owning the flipped blob is damaged; the rest restores");
}

#[test]
fn truncated_or_deleted_pack_is_found_without_reading_data() {
    let (env, _src) = setup();
    let pack = largest_pack(&env);
    let b = std::fs::read(&pack).unwrap();
    std::fs::remove_file(&pack).unwrap();
    std::fs::write(&pack, &b[..b.len() / 2]).unwrap();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&name_of(&pack)) && r.stderr.contains("truncated"), "{}", r.stderr);
    std::fs::remove_file(&pack).unwrap();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&name_of(&pack)) && r.stderr.contains("missing"), "{}", r.stderr);
}

#[test]
fn swapped_snapshot_objects_are_rejected() {
    let (env, src) = setup();
    std::fs::write(src.join("extra"), b"x").unwrap();
    env.backup(&[&src], &[]);
    let snaps: Vec<PathBuf> =
        env.repo_files().keys().filter(|k| k.starts_with("snapshots")).map(|k| env.repo.join(k)).collect();
    assert_eq!(snaps.len(), 2);
    let a = std::fs::read(&snaps[0]).unwrap();
    std::fs::remove_file(&snaps[1]).unwrap();
    std::fs::write(&snaps[1], a).unwrap();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&name_of(&snaps[1])), "{}", r.stderr);
    assert!(!r.stderr.contains(&name_of(&snaps[0])), "the untouched snapshot is fine: {}", r.stderr);
}

#[test]
fn damaged_index_config_and_key_files_are_named() {
    let (env, _src) = setup();
    let files = env.repo_files();
    let index = env.repo.join(files.keys().find(|k| k.starts_with("index")).unwrap());
    flip(&index, 20);
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&name_of(&index)), "{}", r.stderr);

    let (env, _src) = setup();
    flip(&env.repo.join("config"), 12);
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("config"), "{}", r.stderr);

    let (env, _src) = setup();
    let key = env.repo.join(env.repo_files().keys().find(|k| k.starts_with("keys")).unwrap());
    let len = std::fs::metadata(&key).unwrap().len();
    flip(&key, len - 3);
    let r = env.run(&["snapshots"]);
    assert_eq!(r.code, 1, "a damaged key file is not a wrong password: {}", r.stderr);
    assert!(r.stderr.contains(&name_of(&key)), "{}", r.stderr);
}
