//! Backup: summaries, change detection, deduplication, filters, unreadable files.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn backup_json_summary_has_the_contract_fields() {
    let env = Env::new();
    let src = env.path("src");
    let bytes = make_simple_tree(&src);
    let s = env.backup(&[&src], &["--tag", "nightly", "--host", "web1"]);
    for k in [
        "snapshot_id",
        "files_new",
        "files_changed",
        "files_unmodified",
        "total_files_processed",
        "total_bytes_processed",
        "data_added",
        "total_duration",
    ] {
        assert!(s.get(k).is_some(), "missing {k} in {s}");
    }
    assert_eq!(s["files_new"], 4);
    assert_eq!(s["total_files_processed"], 4);
    assert_eq!(s["total_bytes_processed"], bytes);
    assert!(s["data_added"].as_u64().unwrap() > 3_000_000, "random data is stored: {s}");
    assert_eq!(s["snapshot_id"].as_str().unwrap().len(), 64);
    // Human mode prints the id on stdout.
    let r = env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(r.stdout.trim().len(), 64, "{}", r.stdout);
}

#[test]
fn unchanged_backup_reads_nothing_and_adds_nothing() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    let before = env.repo_files();
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["files_unmodified"], 4, "{s}");
    assert_eq!(s["files_new"], 0);
    assert_eq!(s["files_changed"], 0);
    // Nothing below src is new. Only the trees of its ancestors (/tmp and the test's temp
    // dir, whose mtimes other tests running at the same time change) may be stored again.
    let ancestors = src.ancestors().count() as u64 - 1;
    assert!(s["blobs_added"].as_u64().unwrap() <= ancestors, "{s}");
    assert!(s["data_added"].as_u64().unwrap() < 10_000, "{s}");
    let after = env.repo_files();
    let new: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(new.iter().filter(|k| k.starts_with("snapshots")).count(), 1, "{new:?}");
    assert!(new.iter().all(|k| after[*k] < 10_000), "only small objects are new: {new:?}");
    // A changed file is read again; the others are not.
    std::fs::write(src.join("small.bin"), noise(99, 10_000)).unwrap();
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["files_changed"], 1, "{s}");
    assert_eq!(s["files_unmodified"], 3, "{s}");
}

#[test]
fn copied_and_renamed_trees_add_almost_nothing() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}")), noise(i, 500_000)).unwrap();
    }
    env.backup(&[&src], &[]);
    let copy = env.path("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for i in 0..20 {
        std::fs::copy(src.join(format!("f{i}")), copy.join(format!("renamed{i}"))).unwrap();
    }
    let s = env.backup(&[&copy], &[]);
    assert_eq!(s["files_new"], 20);
    let added = s["data_added"].as_u64().unwrap();
    assert!(added < 100_000, "a copy of 10 MB added {added} bytes");
}

#[test]
fn excludes_and_exclude_file() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::create_dir_all(src.join("cache/x")).unwrap();
    std::fs::write(src.join("cache/x/junk"), b"junk").unwrap();
    std::fs::write(src.join("docs/notes.tmp"), b"tmp").unwrap();
    let ef = env.path("excludes");
    std::fs::write(&ef, format!("# comment\n\n{}/cache\n", src.display())).unwrap();
    env.backup(&[&src], &["--exclude", "*.tmp", "--exclude-file", ef.to_str().unwrap()]);
    let r = env.ok(&["ls", "latest"]);
    assert!(!r.stdout.contains("notes.tmp"), "{}", r.stdout);
    assert!(!r.stdout.contains("/cache"), "{}", r.stdout);
    assert!(r.stdout.contains("readme.txt"));
}

#[test]
fn dry_run_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let before = env.repo_files();
    let s = env.backup(&[&src], &["--dry-run"]);
    assert_eq!(s["dry_run"], true);
    assert!(s["snapshot_id"].is_null());
    assert!(s["data_added_raw"].as_u64().unwrap() > 3_000_000, "{s}");
    assert_eq!(env.repo_files(), before);
}

#[test]
fn snapshots_filters_and_ids() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    make_simple_tree(&a);
    make_simple_tree(&b);
    let s1 = env.backup(&[&a], &["--host", "h1", "--tag", "daily"]);
    env.backup(&[&b], &["--host", "h2"]);
    let all = env.ok(&["snapshots", "--json"]).json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let first = &all[0];
    for k in ["id", "short_id", "time", "host", "username", "paths", "tags", "parent", "summary"] {
        assert!(first.get(k).is_some(), "missing {k}");
    }
    jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%:z", first["time"].as_str().unwrap())
        .or_else(|_| first["time"].as_str().unwrap().parse::<jiff::Timestamp>())
        .expect("RFC 3339 time");
    let h1 = env.ok(&["snapshots", "--json", "--host", "h1"]).json();
    assert_eq!(h1.as_array().unwrap().len(), 1);
    assert_eq!(h1[0]["id"], s1["snapshot_id"]);
    let tagged = env.ok(&["snapshots", "--json", "--tag", "daily"]).json();
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let by_path = env.ok(&["snapshots", "--json", "--path", b.to_str().unwrap()]).json();
    assert_eq!(by_path.as_array().unwrap().len(), 1);
    assert_eq!(by_path[0]["host"], "h2");
    // An 8-digit prefix works as an id.
    let prefix = &s1["snapshot_id"].as_str().unwrap()[..8];
    env.ok(&["ls", prefix]);
    assert_ne!(env.run(&["ls", "abc"]).code, 0);
}

#[test]
fn unreadable_files_give_exit_3_and_a_partial_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::write(src.join("locked"), b"no access").unwrap();
    std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = env.cmd(&["backup", "--json", src.to_str().unwrap()]);
    if is_root() {
        // Root reads everything: run coffer as nobody, with the repository writable by it.
        rustix::fs::chownat(
            rustix::fs::CWD,
            env.dir.path(),
            Some(rustix::fs::Uid::from_raw(65534)),
            None,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        std::process::Command::new("chown").args(["-R", "65534", env.repo.to_str().unwrap()]).status().unwrap();
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "backup", "--json", src.to_str().unwrap()])
            .env("COFFER_REPO", &env.repo)
            .env("COFFER_PASSWORD", PASSWORD)
            .env("HOME", "/tmp");
        cmd = c;
    }
    let r = Env::run_cmd(cmd);
    assert_eq!(r.code, 3, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("locked"), "the unreadable file is named: {}", r.stderr);
    let s = r.json();
    assert_eq!(s["partial"], true);
    assert!(!s["snapshot_id"].is_null());
    let snaps = env.ok(&["snapshots", "--json"]).json();
    assert_eq!(snaps[0]["summary"]["partial"], true);
}

#[test]
fn fifos_are_not_opened_and_vanished_paths_fail_cleanly() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // Would hang forever if the FIFO were opened for reading.
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["partial"], false);
    let r = env.run(&["backup", env.path("missing").to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("missing"));
}

#[test]
fn two_backups_at_once_into_one_repository_both_succeed() {
    let env = Env::new();
    let (a, b) = env.two_trees(10, 1_500_000);
    env.backups_at_once(&a, &b, &[]);
    assert_eq!(env.assert_clean()["snapshots"], 2);
    for dir in [&a, &b] {
        let out = env.path(&format!("out-{}", dir.file_name().unwrap().to_str().unwrap()));
        let spec = format!("latest:{}", dir.display());
        env.ok(&["restore", &spec, "--target", out.to_str().unwrap(), "--path", dir.to_str().unwrap()]);
        assert_same_tree(dir, &out);
    }
}

#[test]
fn files_changing_during_backup_warn_and_exit_3() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let hot = src.join("hot.log");
    std::fs::write(&hot, noise(1, 40_000_000)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let codes: Vec<i32> = std::thread::scope(|s| {
        s.spawn(|| {
            // Keeps appending, as a busy log file does.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&hot).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"another line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        let mut codes = Vec::new();
        for _ in 0..5 {
            let r = env.run(&["backup", "--json", src.to_str().unwrap()]);
            codes.push(r.code);
            if r.code == 3 {
                assert!(r.stderr.contains("hot.log") && r.stderr.contains("changed"), "{}", r.stderr);
                assert_eq!(r.json()["partial"], true);
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        codes
    });
    assert!(codes.iter().all(|c| *c == 0 || *c == 3), "{codes:?}");
    assert_eq!(codes.last(), Some(&3), "a file growing while read was never reported: {codes:?}");
    env.ok(&["check"]);
}

#[test]
fn one_file_system_stops_at_mount_points() {
    if !is_root() {
        eprintln!("one_file_system_stops_at_mount_points: needs root to mount a tmpfs; not covered in this run");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    let mnt = src.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::write(src.join("here"), b"same fs").unwrap();
    assert!(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    std::fs::write(mnt.join("elsewhere"), b"other fs").unwrap();
    let r1 = std::panic::catch_unwind(|| {
        env.backup(&[&src], &["--one-file-system"]);
        let r = env.ok(&["ls", "latest"]);
        assert!(r.stdout.contains("/src/mnt\n"), "the mount point itself is kept: {}", r.stdout);
        assert!(!r.stdout.contains("elsewhere"), "{}", r.stdout);
        env.backup(&[&src], &[]);
        assert!(env.ok(&["ls", "latest"]).stdout.contains("elsewhere"));
    });
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    r1.unwrap();
}

#[test]
fn exclude_caches_skips_tagged_directories() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::create_dir_all(src.join("cache/sub")).unwrap();
    std::fs::write(src.join("cache/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
    std::fs::write(src.join("cache/sub/blob"), b"cached").unwrap();
    std::fs::create_dir_all(src.join("fake")).unwrap();
    std::fs::write(src.join("fake/CACHEDIR.TAG"), "not a signature\n").unwrap();
    std::fs::write(src.join("fake/kept"), b"kept").unwrap();
    env.backup(&[&src], &["--exclude-caches"]);
    let ls = env.ok(&["ls", "latest"]).stdout;
    assert!(ls.contains("/cache/CACHEDIR.TAG"), "{ls}");
    assert!(!ls.contains("/cache/sub"), "{ls}");
    assert!(ls.contains("/fake/kept"), "{ls}");
}

#[test]
fn upload_and_download_limits_hold_the_average_rate() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("random"), noise(42, 3 << 20)).unwrap();
    // 3 MiB of incompressible data at 1024 KiB/s cannot take less than about 3 s.
    let t = std::time::Instant::now();
    env.backup(&[&src], &["--limit-upload", "1024"]);
    let up = t.elapsed();
    assert!(up >= std::time::Duration::from_millis(2800), "3 MiB uploaded in {up:?} at 1 MiB/s");
    let t = std::time::Instant::now();
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap(), "--limit-download", "2048"]);
    let down = t.elapsed();
    assert!(down >= std::time::Duration::from_millis(1400), "3 MiB downloaded in {down:?} at 2 MiB/s");
}

#[test]
fn a_repository_without_hard_links_works_end_to_end() {
    // As on an SMB/CIFS mount: forced here, detected there.
    let env = Env::uninit();
    env.ok(&["init", "--no-hardlinks", "--kdf-memory", "19", "--kdf-iterations", "2"]);
    let (src, other) = env.two_trees(3, 200_000);
    env.backups_at_once(&src, &other, &["--no-hardlinks"]);
    let r = env.ok(&["check", "--no-hardlinks", "--read-data", "--json"]).json();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    env.assert_restores(&src, "out");
    assert_ne!(env.run(&["init", "--no-hardlinks", "--kdf-memory", "19", "--kdf-iterations", "2"]).code, 0);
}

#[test]
fn one_large_file_is_shared_between_readers_and_restores_exactly() {
    // With two readers and one file, the idle reader's core is used by handing chunks to
    // the packer threads; a second file of text takes the reader's own compression path.
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), noise(7, 24 << 20)).unwrap();
    let text: Vec<u8> = (0..3_000_000u32).flat_map(|i| format!("line {}\n", i % 5000).into_bytes()).collect();
    std::fs::write(src.join("text"), &text).unwrap();
    let s = env.backup(&[&src], &["--threads", "2"]);
    assert_eq!(s["files_new"], 2, "{s}");
    assert!(s["data_added"].as_u64().unwrap() < (24 << 20) + text.len() as u64 / 2, "text is compressed: {s}");
    env.assert_restores(&src, "out");
    env.assert_clean();
}

/// Files in a compressed format (recognized by their first bytes) are stored without trying
/// zstd; other files are compressed; both restore exactly, and a compressed-format file that
/// spans several chunks is stored raw in every chunk.
#[test]
fn compressed_formats_are_stored_raw_and_restore_exactly() {
    let env = Env::new();
    // Compressible and not periodic, so content-defined chunking cuts it into several chunks.
    let lines = |word: &str| -> Vec<u8> {
        (0..100_000u32).flat_map(|i| format!("{word} {i} of a file that compresses well\n").into_bytes()).collect()
    };
    let text = lines("line"); // 4.5 MB
    let plain = env.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("notes.txt"), &text).unwrap();
    let s = env.backup(&[&plain], &[]);
    assert!(s["data_added"].as_u64().unwrap() < 1_000_000, "text is compressed: {s}");

    // Such text behind a gzip signature (a false match, on purpose): stored as is. Other
    // words than above, so no chunk deduplicates against the first file's.
    let signed = env.path("signed");
    std::fs::create_dir_all(&signed).unwrap();
    let mut gz = b"\x1f\x8b\x08\x00".to_vec();
    gz.extend_from_slice(&lines("row"));
    std::fs::write(signed.join("notes.txt.gz"), &gz).unwrap();
    let s = env.backup(&[&signed], &[]);
    let added = s["data_added"].as_u64().unwrap();
    assert!(added > gz.len() as u64, "a gzip-signed file is stored raw in all its chunks: {s}");

    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap(), "--verify"]);
    let restored = out.join(signed.strip_prefix("/").unwrap()).join("notes.txt.gz");
    assert_eq!(std::fs::read(restored).unwrap(), gz);
    env.ok(&["check", "--read-data"]);
}
