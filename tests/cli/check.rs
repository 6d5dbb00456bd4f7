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

/// `--read-data-subset n/t`: t runs read every pack exactly once, so damage is found by
/// exactly one of them; `x%` and a size are accepted; bad forms name what was wrong.
#[test]
fn read_data_subset_parts_cover_every_pack_once() {
    let env = Env::uninit();
    env.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2", "--pack-size", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        std::fs::write(src.join(format!("f{i}")), noise(900 + i, 600_000)).unwrap();
    }
    env.backup(&[&src], &[]);
    let packs = env.ok(&["check", "--json"]).json()["packs"].as_u64().unwrap();
    assert!(packs >= 6, "{packs} packs");
    let mut total = 0;
    for n in 1..=3 {
        let spec = format!("{n}/3");
        let r = env.ok(&["check", "--read-data-subset", &spec, "--json"]).json();
        total += r["packs_read"].as_u64().unwrap();
        let again = env.ok(&["check", "--read-data-subset", &spec, "--json"]).json();
        assert_eq!(r["packs_read"], again["packs_read"], "part {spec} is the same every time");
    }
    assert_eq!(total, packs, "the three parts read every pack once");
    // One damaged data pack is found by exactly one of the parts (a pack holding trees would
    // be found by every check, which reads all trees: such a pack is put back).
    let mut damaged_name = String::new();
    for victim in env.packs() {
        damaged_name = victim.file_name().unwrap().to_string_lossy().into_owned();
        let good = std::fs::read(&victim).unwrap();
        let mut b = good.clone();
        b[100] ^= 1;
        std::fs::remove_file(&victim).unwrap();
        std::fs::write(&victim, b).unwrap();
        if env.run(&["check"]).code == 0 {
            break;
        }
        std::fs::remove_file(&victim).unwrap();
        std::fs::write(&victim, good).unwrap();
    }
    let runs: Vec<Run> = (1..=3).map(|n| env.run(&["check", "--read-data-subset", &format!("{n}/3")])).collect();
    // The part that reads the pack names it (and records the damage, which every later
    // check then reports, without naming the pack).
    let failing: Vec<&str> =
        runs.iter().filter(|r| r.stderr.contains(&damaged_name)).map(|r| r.stderr.as_str()).collect();
    assert_eq!(failing.len(), 1, "exactly one part reads the damaged pack: {failing:?}");
    let at = runs.iter().position(|r| r.stderr.contains(&damaged_name)).unwrap();
    assert!(runs[..at].iter().all(|r| r.code == 0), "before it, nothing was known");
    assert!(runs[at..].iter().all(|r| r.code == 1), "from then on, the recorded damage is reported");
    let r = env.run(&["check", "--read-data-subset", "1M", "--json"]);
    assert!(r.json()["packs_read"].as_u64().unwrap() >= 1, "{}", r.stdout);
    let r = env.run(&["check", "--read-data-subset", "100%", "--json"]);
    assert_eq!(r.json()["packs_read"].as_u64().unwrap(), packs);
    for bad in ["0/3", "4/3", "3/0", "nonsense", "150%"] {
        let r = env.run(&["check", "--read-data-subset", bad]);
        assert_ne!(r.code, 0, "{bad}");
        assert!(r.stderr.contains("--read-data-subset") && r.stderr.contains(bad), "{bad}: {}", r.stderr);
    }
}
