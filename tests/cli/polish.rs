//! The rough edges a new user coming from restic hits (issue 14): closed pipes, other
//! tools' spellings, errors said once, partial backups of missing paths, `-q`, `version`,
//! listings that line up.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::support::*;

/// A tree of `n` small files in one directory.
fn many_files(root: &Path, n: usize) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..n {
        std::fs::write(root.join(format!("file-{i:05}")), format!("{i}\n")).unwrap();
    }
}

#[test]
fn a_closed_pipe_ends_listings_quietly() {
    let env = Env::new();
    let src = env.path("src");
    many_files(&src, 4000);
    env.backup(&[&src], &[]);
    for args in
        [&["ls", "--json", "latest"][..], &["ls", "latest"], &["find", "--json", "file-*"], &["snapshots", "--json"]]
    {
        let mut c = env.cmd(args);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?} printed nothing");
        drop(out);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked") && !err.contains("error") && !err.contains("Broken pipe"), "{args:?}: {err}");
        // snapshots --json is one short line: it may be written whole before the pipe closes.
        if args[0] != "snapshots" {
            assert_eq!(o.status.code(), Some(141), "{args:?}: {err}");
        } else {
            assert!(matches!(o.status.code(), Some(0 | 141)), "{args:?}: {err}");
        }
    }
}

#[test]
fn other_tools_spellings_of_a_repository_are_refused_with_coffers() {
    let env = Env::uninit();
    for (loc, hint) in [
        ("s3:bkt/host1", "s3://bkt/host1"),
        ("s3:https://minio.example:9000/bkt/host1", "--s3-endpoint https://minio.example:9000"),
        ("s3:s3.amazonaws.com/bkt/host1", "s3://bkt/host1 --s3-endpoint https://s3.amazonaws.com"),
        ("b2:bucket:path", "no b2 backend"),
        ("sftp:user@host:/srv/restic", "no sftp backend"),
    ] {
        let mut c = env.cmd(&["-r", loc, "init"]);
        c.current_dir(env.dir.path());
        let r = Env::run_cmd(c);
        assert_ne!(r.code, 0, "{loc}");
        assert!(r.stderr.contains(hint), "{loc}: {}", r.stderr);
        let mut c = env.cmd(&["-r", loc, "snapshots"]);
        c.current_dir(env.dir.path());
        assert_ne!(Env::run_cmd(c).code, 0);
    }
    let left: Vec<_> = std::fs::read_dir(env.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains(':')), "a directory was created: {left:?}");
}

#[test]
fn errors_are_said_once_and_missing_paths_make_a_partial_backup() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let missing = env.path("nonexistent");
    let r = env.run(&["backup", missing.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("os error 2").count(), 1, "{}", r.stderr);
    // Some paths missing: the others are backed up, with a warning, and the exit code is 3.
    let r = env.run(&["backup", "--json", missing.to_str().unwrap(), src.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("nonexistent") && r.stderr.contains("warning"), "{}", r.stderr);
    let doc = r.json();
    assert_eq!(doc["partial"], true);
    assert_eq!(doc["paths"], serde_json::json!([src.to_str().unwrap()]));
    assert!(doc["errors"][0].as_str().unwrap().contains("nonexistent"), "{doc}");
    let snaps = env.ok(&["snapshots", "--json"]).json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    // A missing --exclude-file is named as one, not as a bad pattern.
    let r = env.run(&["backup", "--exclude-file", missing.to_str().unwrap(), src.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--exclude-file") && !r.stderr.contains("pattern"), "{}", r.stderr);
}

#[test]
fn key_add_without_a_terminal_names_the_new_password_option() {
    let env = Env::new();
    let mut c = env.cmd(&["key", "add"]);
    c.env_remove("COFFER_NEW_PASSWORD");
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--new-password-file") && !r.stderr.contains("--password-file or"), "{}", r.stderr);
}

#[test]
fn tags_split_on_commas_and_quiet_prints_nothing() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let r = env.run(&["backup", "-q", "--tag", "a,b", "--tag", "c", src.to_str().unwrap()]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let snaps = env.ok(&["snapshots", "--json"]).json();
    assert_eq!(snaps[0]["tags"], serde_json::json!(["a", "b", "c"]));
    let r = env.run(&["check", "-q"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let out = env.path("out");
    let r = env.run(&["restore", "-q", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
}

#[test]
fn version_says_what_this_build_is() {
    let env = Env::uninit();
    let r = env.ok(&["version"]);
    assert!(r.stdout.starts_with(&format!("coffer {} (repository format ", env!("CARGO_PKG_VERSION"))), "{}", r.stdout);
    let j = env.ok(&["version", "--json"]).json();
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    assert!(j["format_version"].as_u64().unwrap() >= 4);
    assert!(j["features"].as_array().unwrap().iter().any(|f| f == "s3"));
    assert!(j["build"]["target"].is_string());
}

#[test]
fn listings_are_depth_first_counted_in_words_and_aligned() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("a/b/f"), "f").unwrap();
    std::fs::write(src.join("a/c"), "c").unwrap();
    std::fs::write(src.join("z"), "z").unwrap();
    std::fs::set_permissions(src.join("z"), std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    env.backup(&[&src], &["--host", "a-rather-long-host-name.example.com", "--tag", "t1"]);
    let s = src.to_str().unwrap();
    let r = env.ok(&["ls", "latest", s]);
    let want: Vec<String> = ["", "/a", "/a/b", "/a/b/f", "/a/c", "/z"].iter().map(|p| format!("{s}{p}")).collect();
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), want);
    let r = env.ok(&["ls", "-l", "latest", s]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("-rwsr-xr-x ")), "{}", r.stdout);
    assert!(lines.iter().any(|l| l.starts_with("drwx")), "{}", r.stdout);
    // Every column starts where it starts on the other lines: the size column ends at one place.
    let size_end = |l: &str| l.find(" 20").unwrap();
    assert!(lines.iter().all(|l| size_end(l) == size_end(lines[0])), "{}", r.stdout);
    let r = env.ok(&["snapshots"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"1 snapshot"));
    for col in ["time", "host", "tags", "paths"] {
        let at = lines[0].find(col).unwrap();
        let value_at = lines[1].char_indices().nth(at).map(|(i, _)| i).unwrap();
        assert!(lines[1][..value_at].ends_with("  "), "{col} column off:\n{}", r.stdout);
        assert_ne!(&lines[1][value_at..value_at + 1], " ", "{col} column off:\n{}", r.stdout);
    }
    let r = env.ok(&["find", "f"]);
    assert!(r.stderr.contains("1 match "), "{}", r.stderr);
}

#[test]
fn s3_mistakes_are_named() {
    let s3 = s3_server();
    let env = Env::uninit();
    let bucket = s3.new_bucket();
    let cmd = |repo: &str, args: &[&str]| {
        let mut c = env.cmd(&["-r", repo, "--retries", "1"]);
        c.args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &s3.endpoint)
            .env("AWS_ALLOW_HTTP", "true");
        c
    };
    let init = ["init", "--kdf-memory", "19", "--kdf-iterations", "2"];
    // A bucket that does not exist is named, by init and by every other command (exit 10).
    let r = Env::run_cmd(cmd("s3://no-such-bucket-here/host1", &init));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("bucket does not exist") && r.stderr.contains("no-such-bucket-here"), "{}", r.stderr);
    let r = Env::run_cmd(cmd("s3://no-such-bucket-here/host1", &["snapshots"]));
    assert_eq!(r.code, 10);
    assert!(r.stderr.contains("bucket does not exist"), "{}", r.stderr);
    let repo = format!("s3://{bucket}/host1");
    assert_eq!(Env::run_cmd(cmd(&repo, &init)).code, 0);
    // A plain http:// endpoint without the option names the option.
    let mut c = cmd(&repo, &["snapshots"]);
    c.env_remove("AWS_ALLOW_HTTP");
    let r = Env::run_cmd(c);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--s3-allow-http"), "{}", r.stderr);
    // No credentials at all: said so, and where they are looked for (the metadata service is
    // one that refuses here).
    let mut c = cmd(&repo, &["snapshots"]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
    let r = Env::run_cmd(c);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no AWS credentials found") && r.stderr.contains("AWS_ACCESS_KEY_ID"), "{}", r.stderr);
}

#[test]
fn a_path_missing_from_the_snapshot_names_it_and_where_the_path_is() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/gone"), "soon deleted").unwrap();
    let first = env.backup(&[&src], &[])["snapshot_id"].as_str().unwrap()[..8].to_string();
    std::fs::remove_file(src.join("d/gone")).unwrap();
    let second = env.backup(&[&src], &[])["snapshot_id"].as_str().unwrap()[..8].to_string();
    let gone = src.join("d/gone");
    let out = env.path("out");
    let r = env.run(&["restore", "--as-of", "now", gone.to_str().unwrap(), "--target", out.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&format!("not in snapshot {second}")), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("the newest snapshot holding it is {first}")), "{}", r.stderr);
    let r = env.run(&["ls", "latest", src.join("never").to_str().unwrap()]);
    assert!(r.stderr.contains("no snapshot holds it"), "{}", r.stderr);
}

#[test]
fn snapshots_latest_group_by_and_compact() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    for host in ["h1", "h1", "h1", "h2", "h2"] {
        env.backup(&[&src], &["--host", host, "--tag", host]);
    }
    let ids = |v: &serde_json::Value| {
        v.as_array().unwrap().iter().map(|s| s["host"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let latest = env.ok(&["snapshots", "--json", "--latest", "2"]).json();
    assert_eq!(ids(&latest), ["h1", "h1", "h2", "h2"]);
    let all = env.ok(&["snapshots", "--json"]).json();
    assert_eq!(latest[0]["id"], all[1]["id"], "the newest two of h1 are kept");
    let grouped = env.ok(&["snapshots", "--json", "--group-by", "host", "--latest", "1"]).json();
    assert_eq!(grouped.as_array().unwrap().len(), 2);
    assert_eq!(grouped[0]["group_key"]["host"], "h1");
    assert_eq!(grouped[1]["snapshots"].as_array().unwrap().len(), 1);
    let r = env.ok(&["snapshots", "--group-by", "host,tags", "--compact"]);
    assert!(
        r.stdout.contains("snapshots for (host h1, tags [h1]):")
            && r.stdout.contains("snapshots for (host h2, tags [h2]):"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(src.to_str().unwrap()) && !r.stdout.contains("paths"),
        "compact leaves the paths out: {}",
        r.stdout
    );
    assert!(r.stdout.contains("3 snapshots") && r.stdout.contains("2 snapshots"), "{}", r.stdout);
    assert_eq!(env.run(&["snapshots", "--group-by", "colour"]).code, 2);
    assert_eq!(env.run(&["snapshots", "--latest", "0"]).code, 2);
}

#[test]
fn restore_resumes_overwrites_as_asked_deletes_and_dry_runs() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::create_dir_all(src.join("keep")).unwrap();
    std::fs::write(src.join("keep/same-size"), "aaaa").unwrap();
    std::fs::write(src.join("keep/edited"), "original").unwrap();
    env.backup(&[&src], &[]);
    let out = env.path("out");
    let (o, snap) = (out.to_str().unwrap(), format!("latest:{}", src.display()));
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--json", snap.as_str(), "--target", o];
        args.extend_from_slice(extra);
        let r = env.run(&args);
        assert_eq!(r.code, 0, "{extra:?}: {}", r.stderr);
        (r.json(), r.stderr)
    };
    let (first, _) = restore(&[]);
    let files = first["files_restored"].as_u64().unwrap();
    assert!(files >= 3);
    // A second restore over the finished tree writes nothing: it resumes.
    let (again, _) = restore(&[]);
    assert_eq!(
        (again["files_restored"].as_u64(), again["files_unchanged"].as_u64()),
        (Some(0), Some(files)),
        "{again}"
    );
    // Damage the target: one file edited, one of the same size changed, one's mode changed,
    // and things the snapshot does not hold.
    std::fs::write(out.join("keep/edited"), "edited by hand").unwrap();
    std::fs::write(out.join("keep/same-size"), "bbbb").unwrap();
    std::fs::set_permissions(out.join("keep"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(out.join("extra"), "not in the snapshot").unwrap();
    std::fs::create_dir_all(out.join("keep/newdir/deeper")).unwrap();
    std::fs::write(out.join("keep/newdir/deeper/f"), "x").unwrap();
    let plan = |extra: &[&str]| {
        let mut e = vec!["--dry-run"];
        e.extend_from_slice(extra);
        restore(&e)
    };
    let (p, _) = plan(&["--delete"]);
    assert_eq!(p["dry_run"], true);
    assert_eq!((p["files_restored"].as_u64(), p["files_deleted"].as_u64()), (Some(2), Some(2)), "{p}");
    assert!(out.join("extra").exists(), "a dry run changes nothing");
    assert_eq!(std::fs::read_to_string(out.join("keep/edited")).unwrap(), "edited by hand");
    let (p, _) = plan(&["--overwrite", "never"]);
    assert_eq!((p["files_restored"].as_u64(), p["files_deleted"].as_u64()), (Some(0), Some(0)), "{p}");
    let (p, _) = plan(&["--overwrite", "always"]);
    assert_eq!((p["files_restored"].as_u64(), p["files_unchanged"].as_u64()), (Some(files), Some(0)), "{p}");
    // if-newer: the target's file is newer than the snapshot's, so it stays.
    let (p, _) = plan(&["--overwrite", "if-newer"]);
    assert_eq!(p["files_restored"].as_u64(), Some(0), "{p}");
    // The real thing, listed with -v: afterwards the target is the snapshot, exactly.
    let r = env.run(&["restore", "-v", &snap, "--target", o, "--delete"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("deleted") && r.stderr.contains("/extra") && r.stderr.contains("modified"),
        "{}",
        r.stderr
    );
    assert!(!out.join("extra").exists() && !out.join("keep/newdir").exists());
    assert_same_tree(&src, &out);
    // --overwrite never leaves an edited file alone.
    std::fs::write(out.join("keep/edited"), "edited again").unwrap();
    restore(&["--overwrite", "never"]);
    assert_eq!(std::fs::read_to_string(out.join("keep/edited")).unwrap(), "edited again");
    // A directory where the snapshot has a file is replaced by the file.
    std::fs::remove_file(out.join("keep/edited")).unwrap();
    std::fs::create_dir_all(out.join("keep/edited/inside")).unwrap();
    restore(&[]);
    assert_eq!(std::fs::read_to_string(out.join("keep/edited")).unwrap(), "original");
    // With --include DIR, --delete removes what is extra inside it, and only there.
    std::fs::write(out.join("keep/extra-inside"), "x").unwrap();
    std::fs::write(out.join("extra-outside"), "x").unwrap();
    let inc = format!("{}/keep", src.display());
    restore(&["--delete", "--include", &inc]);
    assert!(!out.join("keep/extra-inside").exists() && out.join("extra-outside").exists());
}

#[test]
fn a_resumed_restore_links_hard_links_again() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "linked").unwrap();
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    env.backup(&[&src], &[]);
    let out = env.path("out");
    let (o, snap) = (out.to_str().unwrap(), format!("latest:{}", src.display()));
    env.ok(&["restore", &snap, "--target", o]);
    std::fs::remove_file(out.join("a")).unwrap();
    let r = env.ok(&["restore", "-v", &snap, "--target", o]);
    assert!(r.stderr.contains("new") && r.stderr.contains("/a"), "hard links are listed: {}", r.stderr);
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(out.join("a")).unwrap(), std::fs::metadata(out.join("b")).unwrap());
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "linked again");
}

#[test]
fn dump_writes_a_file_or_a_directory_as_tar_or_zip() {
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/deeper/x"), "x").unwrap();
    std::fs::hard_link(src.join("sub/deeper/x"), src.join("sub/x-link")).unwrap();
    std::os::unix::fs::symlink("deeper/x", src.join("sub/sym")).unwrap();
    std::fs::set_permissions(src.join("sub/deeper/x"), std::os::unix::fs::PermissionsExt::from_mode(0o4750)).unwrap();
    env.backup(&[&src], &[]);
    // One file: its bytes on stdout.
    let mut c = env.cmd(&["dump", "latest", src.join("sub/big.bin").to_str().unwrap()]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == big, "the file's bytes, exactly");
    // A directory: a tar that GNU tar extracts to the same tree.
    let tar = env.path("sub.tar");
    let mut c = env.cmd(&["dump", "latest", src.join("sub").to_str().unwrap()]);
    c.stdout(std::fs::File::create(&tar).unwrap());
    assert!(c.status().unwrap().success());
    let out = env.path("x");
    std::fs::create_dir_all(&out).unwrap();
    let st =
        std::process::Command::new("tar").args(["--xattrs", "-xpf"]).arg(&tar).arg("-C").arg(&out).status().unwrap();
    assert!(st.success());
    let inside = out.join(src.strip_prefix("/").unwrap()).join("sub");
    assert_same_tree(&src.join("sub"), &inside);
    // zip: the files and their contents (Python's zipfile reads it).
    let zip = env.path("sub.zip");
    let mut c = env.cmd(&["dump", "--archive", "zip", "latest", src.join("sub").to_str().unwrap()]);
    c.stdout(std::fs::File::create(&zip).unwrap());
    assert!(c.status().unwrap().success());
    let name = format!("{}/sub/big.bin", src.strip_prefix("/").unwrap().display());
    let py = format!("import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); sys.stdout.buffer.write(z.read('{name}'))");
    let o = std::process::Command::new("python3").args(["-c", &py]).arg(&zip).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == big);
    // A name that is not UTF-8, given as it is.
    use std::os::unix::ffi::OsStrExt;
    let odd = src.join(std::ffi::OsStr::from_bytes(b"odd\xff\xfe"));
    std::fs::write(&odd, "odd bytes").unwrap();
    env.backup(&[&src], &[]);
    let o = env.cmd(&["dump", "latest"]).arg(&odd).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"odd bytes");
    // What is not in the snapshot is named.
    let r = env.run(&["dump", "latest", src.join("nope").to_str().unwrap()]);
    assert!(r.code == 1 && r.stderr.contains("not in snapshot"), "{}", r.stderr);
}

/// Whether `dir` is a mount point now (in /proc/self/mounts).
fn mounted(dir: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let d = dir.to_str().unwrap();
    m.lines().any(|l| l.split_whitespace().nth(1) == Some(d))
}

#[test]
fn mount_serves_snapshots_hosts_tags_and_ids_and_unmounts_on_sigint() {
    assert!(Path::new("/dev/fuse").exists(), "FUSE tests need /dev/fuse");
    assert!(
        std::process::Command::new("sh").args(["-c", "command -v fusermount3"]).status().unwrap().success(),
        "FUSE tests need fusermount3 (apt-get install fuse3; scripts/test.sh installs it)"
    );
    let env = Env::new();
    let src = env.path("src");
    make_simple_tree(&src);
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    std::fs::set_permissions(src.join("big.bin"), std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let first =
        env.backup(&[&src], &["--host", "web1", "--tag", "nightly"])["snapshot_id"].as_str().unwrap()[..8].to_string();
    std::fs::write(src.join("later.txt"), "later").unwrap();
    env.backup(&[&src], &["--host", "db1"]);
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut c = env.cmd(&["mount", mnt.to_str().unwrap()]);
    c.stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let t = std::time::Instant::now();
    while !mnt.join("snapshots").exists() {
        assert!(t.elapsed().as_secs() < 30, "the mount never appeared");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rel = src.strip_prefix("/").unwrap();
    let latest = mnt.join("snapshots/latest").join(rel);
    // Whole files read back exactly, through the kernel, in the kernel's read sizes.
    assert!(std::fs::read(latest.join("big.bin")).unwrap() == big);
    assert_eq!(std::fs::read_to_string(latest.join("later.txt")).unwrap(), "later");
    assert_eq!(std::fs::read_link(latest.join("link")).unwrap(), Path::new("big.bin"));
    let meta = std::fs::metadata(latest.join("big.bin")).unwrap();
    let orig = std::fs::metadata(src.join("big.bin")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o7777, meta.size(), meta.mtime()), (0o640, orig.size(), orig.mtime()));
    // A read in the middle of a chunk, across chunk boundaries.
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(latest.join("big.bin")).unwrap();
    f.seek(std::io::SeekFrom::Start(3_000_001)).unwrap();
    let mut buf = vec![0u8; 1_500_000];
    f.read_exact(&mut buf).unwrap();
    assert!(buf == big[3_000_001..4_500_001]);
    // The other views.
    assert!(mnt.join("hosts/web1/latest").join(rel).join("big.bin").exists());
    assert!(!mnt.join("hosts/web1/latest").join(rel).join("later.txt").exists(), "web1's latest is the first backup");
    assert!(mnt.join("hosts/db1/latest").join(rel).join("later.txt").exists());
    assert!(mnt.join("tags/nightly/latest").join(rel).join("big.bin").exists());
    assert!(mnt.join("ids").join(&first).join(rel).join("big.bin").exists());
    let listed: Vec<String> = std::fs::read_dir(mnt.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "two snapshots and latest: {listed:?}");
    assert!(std::fs::write(latest.join("new"), "x").is_err(), "read-only");
    // Ctrl-C unmounts cleanly, even with a file still open in it (lazily, then).
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!mounted(&mnt), "still mounted after SIGINT");
    drop(f);
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    // Again, nothing open: a plain unmount.
    let mut c = env.cmd(&["mount", mnt.to_str().unwrap(), "--host", "db1"]);
    c.stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let t = std::time::Instant::now();
    while !mnt.join("hosts").exists() {
        assert!(t.elapsed().as_secs() < 30, "the mount never appeared");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!mnt.join("hosts/web1").exists(), "--host chose the snapshots");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("unmounted") && !err.contains("lazily"), "{err}");
    assert!(!mounted(&mnt));
}

#[test]
fn progress_in_a_terminal_shows_percent_rate_eta_and_the_file_being_read() {
    let tmux = |socket: &str, args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(socket)
            .args(args)
            .output()
            .expect("tmux is installed (scripts/test.sh installs it)")
    };
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Big enough to take a few seconds to read, even in a release build.
    std::fs::write(src.join("the-big-one.bin"), noise(7, 200 << 20)).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("small-{i}")), noise(i, 10_000)).unwrap();
    }
    let socket = format!("coffer-test-{}", std::process::id());
    let q = |p: &Path| format!("'{}'", p.display());
    let script = format!(
        "env COFFER_REPO={} COFFER_PASSWORD='{PASSWORD}' COFFER_CACHE_DIR={} COFFER_STATE_DIR={} {BIN} backup {}; sleep 60",
        q(&env.repo),
        q(&env.path("cache")),
        q(&env.path("state")),
        q(&src)
    );
    let o = tmux(&socket, &["new-session", "-d", "-s", "p", "-x", "200", "-y", "20", &script]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = std::time::Instant::now();
    let mut seen = String::new();
    let found = loop {
        let screen = String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "p"]).stdout).into_owned();
        let live =
            screen.lines().any(|l| l.contains("backup [") && l.contains('%') && l.contains("ETA") && l.contains("/s"))
                && screen.contains("the-big-one.bin");
        if live || t.elapsed().as_secs() > 60 {
            break live;
        }
        if !screen.trim().is_empty() {
            seen = screen;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = tmux(&socket, &["kill-server"]);
    assert!(found, "no live progress line seen; last screen:\n{seen}");
    // Not a terminal: no progress at all.
    let r = env.run(&["backup", src.join("small-0").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains('%') && !r.stderr.contains("ETA"), "{}", r.stderr);
}
