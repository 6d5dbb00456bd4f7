//! Restore reproduces the source exactly, and never writes outside its target.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps};

use crate::support::*;

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &Timestamps { last_access: t, last_modification: t },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Builds a tree with every kind of entry and metadata the issue names.
fn make_hard_tree(src: &Path) {
    std::fs::create_dir_all(src.join("dir/empty_dir")).unwrap();
    std::fs::write(src.join("dir/plain.txt"), "plain\n").unwrap();
    std::fs::write(src.join("empty_file"), b"").unwrap();
    // Names that are arbitrary bytes: not UTF-8, with a newline, 255 bytes long.
    std::fs::write(src.join(OsStr::from_bytes(b"caf\xe9-latin1")), b"latin1 name").unwrap();
    std::fs::write(src.join("new\nline"), b"newline name").unwrap();
    std::fs::write(src.join("x".repeat(255)), b"long name").unwrap();
    std::fs::write(src.join(" leading space"), b"space").unwrap();
    // Big file spanning several chunks, plus a copy under another name (dedup).
    let big = noise(7, 20_000_000);
    std::fs::write(src.join("dir/big.bin"), &big).unwrap();
    std::fs::write(src.join("big-copy.bin"), &big).unwrap();
    // Symlinks: relative, absolute outside the tree, dangling. Never followed.
    symlink("plain.txt", src.join("dir/rel-link")).unwrap();
    symlink("/etc/hostname", src.join("abs-link")).unwrap();
    symlink("does/not/exist", src.join("dangling")).unwrap();
    // Hard links.
    std::fs::write(src.join("hl-a"), b"hard linked content").unwrap();
    std::fs::hard_link(src.join("hl-a"), src.join("dir/hl-b")).unwrap();
    // FIFO.
    rustix::fs::mknodat(rustix::fs::CWD, src.join("fifo"), rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o640), 0)
        .unwrap();
    // Modes, setuid, sticky, read-only directory.
    std::fs::write(src.join("setuid-bin"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("setuid-bin"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(src.join("private"), b"secret").unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(src.join("sticky")).unwrap();
    std::fs::set_permissions(src.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir(src.join("readonly")).unwrap();
    std::fs::write(src.join("readonly/inside"), b"inside a read-only dir").unwrap();
    std::fs::set_permissions(src.join("readonly"), std::fs::Permissions::from_mode(0o555)).unwrap();
    // Sparse file: 64 MiB with a little data in the middle.
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"data in the middle", 32 << 20).unwrap();
    drop(f);
    // Extended attributes (user namespace works unprivileged on ext4, xfs, tmpfs >= 6.6).
    rustix::fs::setxattr(
        src.join("dir/plain.txt"),
        "user.coffer.test",
        b"value\0with nul",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(src.join("dir"), "user.on.dir", b"d", rustix::fs::XattrFlags::empty()).unwrap();
    // Very deep path, longer than PATH_MAX in total.
    make_deep(&src.join("dir"), 25);
    // Owners and device nodes need root.
    if is_root() {
        std::fs::write(src.join("owned-numeric"), b"n").unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            src.join("owned-numeric"),
            Some(rustix::fs::Uid::from_raw(4321)),
            Some(rustix::fs::Gid::from_raw(8765)),
            AtFlags::empty(),
        )
        .unwrap();
        std::fs::write(src.join("owned-nobody"), b"n").unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            src.join("owned-nobody"),
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
            AtFlags::empty(),
        )
        .unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            src.join("dir/rel-link"),
            Some(rustix::fs::Uid::from_raw(1111)),
            Some(rustix::fs::Gid::from_raw(2222)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null-dev"),
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        std::fs::write(src.join("setgid-owned"), b"g").unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            src.join("setgid-owned"),
            Some(rustix::fs::Uid::from_raw(4321)),
            Some(rustix::fs::Gid::from_raw(8765)),
            AtFlags::empty(),
        )
        .unwrap();
        std::fs::set_permissions(src.join("setgid-owned"), std::fs::Permissions::from_mode(0o2755)).unwrap();
    } else {
        eprintln!("restore_is_exact: not root, so owners and device nodes are not covered in this run");
    }
    // Nanosecond mtimes, set last (children first, directories after).
    set_mtime(&src.join("dir/plain.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("dir/rel-link"), 1_500_000_000, 987_654_321);
    set_mtime(&src.join("empty_file"), 0, 1);
    set_mtime(&src.join("dir"), 1_400_000_000, 5);
}

#[test]
fn restore_is_exact() {
    let env = Env::new();
    let src = env.path("src");
    make_hard_tree(&src);
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["partial"], false, "{s}");
    let out = env.path("out");
    let spec = format!("latest:{}", src.display());
    let r = env.ok(&["restore", &spec, "--target", out.to_str().unwrap(), "--verify", "--json"]).json();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert_same_tree(&src, &out);
    // Hard links are links again, not copies.
    let meta = tree_meta(&out);
    assert_eq!(meta[&b"dir/hl-b".to_vec()].link_group, Some(b"dir/hl-b".to_vec()));
    assert_eq!(meta[&b"hl-a".to_vec()].link_group, Some(b"dir/hl-b".to_vec()));
    // The sparse file takes far less space than its size.
    let sp = &meta[&b"sparse".to_vec()];
    assert!(sp.blocks * 512 < 8 << 20, "sparse file restored with {} blocks", sp.blocks);
}

#[test]
fn restore_whole_snapshot_recreates_absolute_paths() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let restored = out.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &restored);
}

#[test]
fn restore_include_exclude_and_single_file() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}", src.display());
    let out = env.path("inc");
    env.ok(&["restore", &spec, "--target", out.to_str().unwrap(), "--include", "*.txt"]);
    assert!(out.join("docs/readme.txt").exists());
    assert!(out.join("empty.txt").exists());
    assert!(!out.join("small.bin").exists());
    assert!(!out.join("docs/deeper").exists(), "directories without included entries are not created");
    let out = env.path("exc");
    env.ok(&["restore", &spec, "--target", out.to_str().unwrap(), "--exclude", "deeper"]);
    assert!(out.join("docs/readme.txt").exists());
    assert!(!out.join("docs/deeper").exists());
    let out = env.path("one");
    let file_spec = format!("latest:{}/docs/readme.txt", src.display());
    env.ok(&["restore", &file_spec, "--target", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("readme.txt")).unwrap(), std::fs::read(src.join("docs/readme.txt")).unwrap());
}

#[test]
fn restore_never_writes_through_planted_symlinks() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("file"), b"from the snapshot").unwrap();
    std::fs::write(src.join("sub/inner"), b"inner").unwrap();
    env.backup(&[&src], &[]);
    // An attacker plants symlinks in the target where restore will write.
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"must stay").unwrap();
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    symlink(outside.join("victim"), out.join("file")).unwrap();
    symlink(&outside, out.join("sub")).unwrap();
    let spec = format!("latest:{}", src.display());
    env.ok(&["restore", &spec, "--target", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"must stay");
    assert!(!outside.join("inner").exists(), "restore followed a planted directory symlink");
    assert_eq!(std::fs::read(out.join("file")).unwrap(), b"from the snapshot");
    assert!(std::fs::symlink_metadata(out.join("sub")).unwrap().is_dir());
    assert_eq!(std::fs::read(out.join("sub/inner")).unwrap(), b"inner");
}

#[test]
fn ls_lists_paths_and_json() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    let r = env.ok(&["ls", "latest", src.to_str().unwrap()]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.contains(&format!("{}/docs/deeper/data.bin", src.display()).as_str()), "{}", r.stdout);
    let r = env.ok(&["ls", "latest", "--json", &format!("{}/docs", src.display())]);
    let items: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(items.iter().any(|i| i["name"] == "data.bin" && i["type"] == "file" && i["size"] == 3_000_000));
    assert!(!Path::new(&format!("{}/nothing", src.display())).exists());
}
