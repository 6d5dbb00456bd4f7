//! Repositories written by earlier releases keep working (tests/fixtures/README.md).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

/// A copy of a checked-in fixture repository, opened with its own password.
fn fixture_env(name: &str, password: &str) -> Env {
    let mut env = Env::uninit();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    copy_dir(&from, &env.repo);
    env.vars.push(("COFFER_PASSWORD".into(), password.into()));
    env
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn a_version_1_repository_still_works() {
    let env = fixture_env("repo-v1", "coffer-fixture-v1");
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["first"]));
    assert_eq!(snaps[1]["tags"], serde_json::json!(["second"]));
    assert_eq!(snaps[1]["host"], "fixture");
    env.assert_clean();

    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let data = out.join("tmp/coffer-fixture-v1/data");
    let readme = std::fs::read_to_string(data.join("docs/readme.txt")).unwrap();
    assert_eq!(readme, "hello from format version 1\n".repeat(50));
    assert_eq!(std::fs::metadata(data.join("docs/readme.txt")).unwrap().permissions().mode() & 0o7777, 0o640);
    assert_eq!(std::fs::read(data.join("docs/xs.txt")).unwrap(), vec![b'x'; 200_000]);
    assert_eq!(std::fs::read_to_string(data.join("docs/new.txt")).unwrap(), "changed in the second snapshot\n");
    let random = std::fs::read(data.join("random.bin")).unwrap();
    assert_eq!(random.len(), 128_000);
    assert_eq!(blake3::hash(&random).to_hex().as_str(), RANDOM_BIN_BLAKE3);
    assert_eq!(std::fs::read_link(data.join("link")).unwrap(), Path::new("docs/readme.txt"));
    assert!(data.join("empty").is_dir());

    // The first snapshot lacks the file the second added.
    let first = snaps[0]["id"].as_str().unwrap();
    let r = env.ok(&["ls", first]);
    assert!(!r.stdout.contains("new.txt") && r.stdout.contains("xs.txt"), "{}", r.stdout);

    // A new backup into it works and the repository stays whole.
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    env.assert_clean();
    env.assert_restores(&src, "out2");

    // Retention works on it too: the first snapshot is forgotten, prune reclaims its data.
    env.ok(&["forget", first]);
    env.ok(&["prune", "--max-unused", "0"]);
    let c = env.assert_clean();
    assert_eq!(c["obsolete_packs"], 0, "{c}");
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 2);
    let out3 = env.path("out3");
    env.ok(&["restore", snaps[1]["id"].as_str().unwrap(), "--target", out3.to_str().unwrap()]);
    let readme = std::fs::read_to_string(out3.join("tmp/coffer-fixture-v1/data/docs/readme.txt")).unwrap();
    assert_eq!(readme, "hello from format version 1\n".repeat(50));
}

/// BLAKE3 of `random.bin` as made by tests/fixtures/make-repo-v1.sh.
const RANDOM_BIN_BLAKE3: &str = "e1cd9d7e03ba0908135f19483673a83dae560dd2ad8f464f58a92e0ca3933ffb";

#[test]
fn a_version_2_repository_still_works() {
    let env = fixture_env("repo-v2", "coffer-fixture-v2");
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let snaps = snaps.as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["second"]));
    assert_eq!(snaps[1]["tags"], serde_json::json!(["third", "kept"]));
    assert!(snaps[1]["original"].is_string(), "tag recorded the snapshot it replaced: {}", snaps[1]);
    assert_eq!(snaps[1]["time"], "2026-11-03T10:00:00+00:00");
    env.assert_clean();
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let data = out.join("tmp/coffer-fixture-v2/data");
    let readme = std::fs::read_to_string(data.join("docs/readme.txt")).unwrap();
    assert_eq!(readme, "hello from format version 2\n".repeat(50));
    assert_eq!(std::fs::read_to_string(data.join("docs/third.txt")).unwrap(), "added in the third snapshot\n");
    let random = std::fs::read(data.join("random.bin")).unwrap();
    assert_eq!(blake3::hash(&random).to_hex().as_str(), RANDOM_BIN_BLAKE3);

    // Version-3 objects go into it as needed: a damage record, then a backup that stores
    // the damaged data again, and a prune that leaves it clean.
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::write(src.join("big"), noise(77, 300_000)).unwrap();
    env.backup(&[&src], &[]);
    let pack = env.packs().into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    b[50] ^= 1;
    std::fs::remove_file(&pack).unwrap();
    std::fs::write(&pack, b).unwrap();
    let r = env.run(&["check", "--read-data", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json()["damage_recorded"], 1, "{}", r.stdout);
    std::fs::write(src.join("big"), noise(77, 300_000)).unwrap();
    env.backup(&[&src], &[]);
    env.assert_restores(&src, "out2");
    env.ok(&["forget", snaps[0]["id"].as_str().unwrap()]);
    env.ok(&["prune", "--max-unused", "0"]);
    env.assert_clean();
}

#[test]
fn a_version_3_repository_still_works() {
    let env = fixture_env("repo-v3", "coffer-fixture-v3");
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let snaps = snaps.as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[1]["tags"], serde_json::json!(["third", "kept"]));
    env.assert_clean();
    let h = env.ok(&["drill", "history", "--json"]).json();
    assert_eq!(h.as_array().unwrap().len(), 1, "the drill record reads: {h}");
    assert_eq!(h[0]["passed"], true);
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let data = out.join("tmp/coffer-fixture-v3/data");
    assert_eq!(
        std::fs::read_to_string(data.join("docs/readme.txt")).unwrap(),
        "hello from format version 3\n".repeat(50)
    );
    let random = std::fs::read(data.join("random.bin")).unwrap();
    assert_eq!(blake3::hash(&random).to_hex().as_str(), RANDOM_BIN_BLAKE3);

    // Version-4 objects go into it: a policy, a hold, audit entries; forget honours them.
    assert_eq!(env.ok(&["audit", "--json"]).json(), serde_json::json!([]), "no trail before version 4");
    env.ok(&["policy", "set", "--keep-last", "1"]);
    let first = snaps[0]["id"].as_str().unwrap();
    env.ok(&["hold", "add", first, "--reason", "fixture"]);
    env.ok(&["forget"]);
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 2, "the held one stays");
    let hold = env.ok(&["hold", "list", "--json"]).json()[0]["id"].as_str().unwrap().to_string();
    env.ok(&["hold", "release", &hold, "--reason", "done"]);
    env.ok(&["forget", "--prune", "--max-unused", "0"]);
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 1);
    env.assert_clean();
    let v = env.ok(&["audit", "--verify", "--json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 5, "{v}");
}
