//! The catalog and point-in-time commands: find, versions, diff, --as-of, stats, catalog.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A backup taken "at" `when` (RFC 3339), in time zone `tz`, as `host`.
fn backup_at(e: &Env, src: &Path, when: &str, tz: &str, host: &str) -> String {
    let mut c = e.cmd(&["backup", "--json", "--host", host, src.to_str().unwrap()]);
    c.env("COFFER_FAKE_NOW", when).env("TZ", tz);
    let r = Env::run_cmd(c);
    assert_eq!(r.code, 0, "backup failed: {}", r.stderr);
    r.json()["snapshot_id"].as_str().unwrap().to_string()
}

fn lines(r: &Run) -> Vec<serde_json::Value> {
    r.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Three daily backups of a small /etc-like tree: day 1 as made, day 2 with nginx.conf
/// changed and a file added, day 3 with only nginx.conf's mode changed.
fn three_days(e: &Env) -> (PathBuf, [String; 3]) {
    let src = e.path("src");
    std::fs::create_dir_all(src.join("etc/nginx/sites")).unwrap();
    std::fs::create_dir_all(src.join("var/www")).unwrap();
    std::fs::write(src.join("etc/nginx/nginx.conf"), "worker_processes 1;\n").unwrap();
    std::fs::write(src.join("etc/nginx/sites/default.conf"), "server {}\n").unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(src.join("var/www/index.html"), "<h1>hi</h1>\n").unwrap();
    let s1 = backup_at(e, &src, "2026-11-20T10:00:00Z", "UTC", "web1");
    std::fs::write(src.join("etc/nginx/nginx.conf"), "worker_processes 4;\n").unwrap();
    std::fs::write(src.join("etc/nginx/sites/new.conf"), "server { listen 81; }\n").unwrap();
    let s2 = backup_at(e, &src, "2026-11-21T10:00:00Z", "UTC", "web1");
    let p = src.join("etc/nginx/nginx.conf");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s3 = backup_at(e, &src, "2026-11-22T10:00:00Z", "UTC", "web1");
    (src, [s1, s2, s3])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn find_lists_every_snapshot_and_path_newest_first() {
    let e = Env::new();
    let (src, [s1, s2, s3]) = three_days(&e);
    let hits = lines(&e.ok(&["find", "*.conf", "--json"]));
    let got: Vec<(String, String)> = hits
        .iter()
        .map(|h| (h["snapshot"].as_str().unwrap().to_string(), h["path"].as_str().unwrap().to_string()))
        .collect();
    let conf = |p: &str| format!("{}/etc/nginx/{p}", s(&src));
    let want = vec![
        (s3.clone(), conf("nginx.conf")),
        (s3.clone(), conf("sites/default.conf")),
        (s3.clone(), conf("sites/new.conf")),
        (s2.clone(), conf("nginx.conf")),
        (s2.clone(), conf("sites/default.conf")),
        (s2.clone(), conf("sites/new.conf")),
        (s1.clone(), conf("nginx.conf")),
        (s1.clone(), conf("sites/default.conf")),
    ];
    assert_eq!(got, want);
    let h = &hits[0];
    assert_eq!(h["type"], "file");
    assert_eq!(h["size"], 20);
    assert!(h["time"].as_str().unwrap().starts_with("2026-11-22T10:00:00"), "{h}");
    assert!(h["mtime"].as_str().unwrap().ends_with('Z'));
    // Path globs, time and host filters.
    let sites = format!("{}/etc/nginx/sites/*", s(&src));
    assert_eq!(lines(&e.ok(&["find", &sites, "--json"])).len(), 5);
    assert_eq!(lines(&e.ok(&["find", "sites/new.conf", "--json"])).len(), 2);
    let r = e.ok(&["find", "*.conf", "--json", "--since", "2026-11-21T00:00:00Z", "--until", "2026-11-21T23:00:00Z"]);
    assert!(lines(&r).iter().all(|h| h["snapshot"] == s2.as_str()));
    assert_eq!(lines(&r).len(), 3);
    assert!(e.ok(&["find", "*.conf", "--json", "--host", "other"]).stdout.is_empty());
    assert!(e.ok(&["find", "nothing-like-this", "--json"]).stdout.is_empty());
    // Directories are found too; human output names the path.
    let r = e.ok(&["find", "nginx"]);
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{}/etc/nginx\n", s(&src))));
}

#[test]
fn versions_show_content_and_metadata_changes() {
    let e = Env::new();
    let (src, [s1, s2, s3]) = three_days(&e);
    let p = src.join("etc/nginx/nginx.conf");
    let v = lines(&e.ok(&["versions", s(&p), "--json"]));
    assert_eq!(v.len(), 3, "{v:?}");
    let change: Vec<_> = v.iter().map(|v| v["change"].as_str().unwrap()).collect();
    assert_eq!(change, ["first", "content", "metadata"]);
    assert_eq!(v[0]["first_snapshot"], s1.as_str());
    assert_eq!(v[1]["first_snapshot"], s2.as_str());
    assert_eq!(v[2]["last_snapshot"], s3.as_str());
    assert_eq!(v[2]["mode"], "600");
    // An unchanged file is one version spanning all three snapshots.
    let v = lines(&e.ok(&["versions", s(&src.join("etc/hosts")), "--json"]));
    assert_eq!(v.len(), 1);
    assert_eq!((v[0]["snapshots"].as_u64(), v[0]["first_snapshot"].as_str()), (Some(3), Some(s1.as_str())));
    // A path relative to the current directory means the same file.
    let mut c = e.cmd(&["versions", "etc/hosts", "--json"]);
    c.current_dir(&src);
    assert_eq!(lines(&Env::run_cmd(c)).len(), 1);
    // A file added on day 2, and a path never backed up.
    let v = lines(&e.ok(&["versions", s(&src.join("etc/nginx/sites/new.conf")), "--json"]));
    assert_eq!((v.len(), v[0]["snapshots"].as_u64()), (1, Some(2)));
    let r = e.run(&["versions", s(&src.join("etc/nope"))]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no snapshot holds"), "{}", r.stderr);
}

#[test]
fn diff_names_added_removed_modified_and_metadata_changes() {
    let e = Env::new();
    let (src, [s1, s2, s3]) = three_days(&e);
    let r = e.ok(&["diff", &s1[..8], &s2]);
    let conf = format!("{}/etc/nginx/nginx.conf", s(&src));
    let new = format!("{}/etc/nginx/sites/new.conf", s(&src));
    assert!(r.stdout.contains(&format!("M    {conf}\n")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("+    {new}\n")), "{}", r.stdout);
    assert!(!r.stdout.contains("hosts"), "{}", r.stdout);
    let d = lines(&e.ok(&["diff", &s2, &s3, s(&src), "--json"]));
    let changes: Vec<_> = d.iter().filter(|c| c["message_type"] == "change").collect();
    assert_eq!(changes.len(), 1, "{d:?}");
    assert_eq!((changes[0]["change"].as_str(), changes[0]["path"].as_str()), (Some("metadata"), Some(conf.as_str())));
    // Backwards, and limited to a path.
    let d = lines(&e.ok(&["diff", &s2, &s1, &format!("{}/etc/nginx/sites", s(&src)), "--json"]));
    let stats = d.last().unwrap();
    assert_eq!(
        (stats["removed"].as_u64(), stats["added"].as_u64(), stats["modified"].as_u64()),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(d[0]["path"], new.as_str());
}

#[test]
fn as_of_picks_the_newest_snapshot_at_or_before_the_time() {
    let e = Env::new();
    let (src, [s1, s2, _s3]) = three_days(&e);
    let snap = |args: &[&str]| {
        let mut a = vec!["snapshots", "--json"];
        a.extend_from_slice(args);
        let v = e.ok(&a).json();
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        v[0]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(snap(&["--as-of", "2026-11-21T09:59:59Z"]), s1);
    assert_eq!(snap(&["--as-of", "2026-11-21T10:00:00Z"]), s2);
    assert_eq!(snap(&["--as-of", "2026-11-21"]), s1); // local midnight, TZ unset = UTC here
    let r = e.run(&["snapshots", "--as-of", "2026-11-19"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // Relative times count back from now.
    let mut c = e.cmd(&["snapshots", "--json", "--as-of", "2 days ago"]);
    c.env("COFFER_FAKE_NOW", "2026-11-23T09:00:00Z");
    assert_eq!(Env::run_cmd(c).json()[0]["id"], s1.as_str());
    // restore --as-of PATH restores that path as it was.
    let conf = src.join("etc/nginx");
    let out = e.path("out");
    e.ok(&["restore", "--as-of", "2026-11-20 12:00", s(&conf), "--target", s(&out)]);
    assert_eq!(std::fs::read_to_string(out.join("nginx.conf")).unwrap(), "worker_processes 1;\n");
    assert!(!out.join("sites/new.conf").exists());
    // ls --as-of PATH.
    let r = e.ok(&["ls", "--as-of", "2026-11-21 12:00", s(&conf.join("sites"))]);
    assert!(r.stdout.contains("new.conf"), "{}", r.stdout);
    let r = e.ok(&["ls", "--as-of", "2026-11-20 12:00", s(&conf.join("sites"))]);
    assert!(!r.stdout.contains("new.conf"), "{}", r.stdout);
}

#[test]
fn as_of_reads_local_times_in_the_users_time_zone() {
    let e = Env::new();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "a").unwrap();
    // Taken in New York at 09:00 local (14:00 UTC) and 11:00 local (16:00 UTC).
    let a = backup_at(&e, &src, "2026-11-20T14:00:00Z", "America/New_York", "h");
    std::fs::write(src.join("f"), "b").unwrap();
    let b = backup_at(&e, &src, "2026-11-20T16:00:00Z", "America/New_York", "h");
    let pick = |when: &str, tz: &str| {
        let mut c = e.cmd(&["snapshots", "--json", "--as-of", when]);
        c.env("TZ", tz);
        let r = Env::run_cmd(c);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.json()[0]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(pick("2026-11-20 10:00", "America/New_York"), a);
    assert_eq!(pick("2026-11-20 11:00", "America/New_York"), b);
    // 01:30 in Tokyo on the 21st is 16:30 UTC on the 20th; 00:30 is 15:30 UTC.
    assert_eq!(pick("2026-11-21 01:30", "Asia/Tokyo"), b);
    assert_eq!(pick("2026-11-21 00:30", "Asia/Tokyo"), a);
    assert_eq!(pick("2026-11-20T10:30:00-05:00", "Asia/Tokyo"), a);
    // Snapshot times are shown with the offset of the host that took them.
    let v = e.ok(&["snapshots", "--json"]).json();
    assert_eq!(v[0]["time"], "2026-11-20T09:00:00-05:00");
}

fn catalog_file(e: &Env) -> PathBuf {
    let cache = e.path("cache");
    let dir = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    dir.join("catalog.sqlite")
}

#[test]
fn catalog_is_private_rebuildable_and_survives_deletion_and_damage() {
    let e = Env::new();
    let (src, _) = three_days(&e);
    let before = e.ok(&["find", "*", "--json"]).stdout;
    assert!(before.lines().count() > 3 * 9, "{before}");
    let file = catalog_file(&e);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    // Deleted: rebuilt from the repository alone.
    std::fs::remove_dir_all(e.path("cache")).unwrap();
    assert_eq!(e.ok(&["find", "*", "--json"]).stdout, before);
    // `catalog rebuild` gives the same answers.
    let r = e.ok(&["catalog", "rebuild", "--json"]).json();
    assert_eq!(r["sync"]["snapshots_indexed"], 3);
    assert_eq!(r["snapshots"], 3);
    assert_eq!(e.ok(&["find", "*", "--json"]).stdout, before);
    // Damaged: overwritten in the middle, or replaced by garbage: detected and rebuilt.
    e.ok(&["catalog", "info"]); // checkpoints nothing in particular; the file exists
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[len / 4..len] {
        *b = 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let r = e.ok(&["find", "*", "--json"]);
    assert_eq!(r.stdout, before);
    assert!(r.stderr.contains("rebuilding"), "{}", r.stderr);
    std::fs::write(&file, b"garbage garbage garbage").unwrap();
    let r = e.ok(&["find", "*", "--json"]);
    assert_eq!(r.stdout, before);
    assert!(r.stderr.contains("rebuilding"), "{}", r.stderr);
    // `catalog info` checks the whole file, and rebuilds a damaged one too.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2..].iter_mut().for_each(|b| *b = 0xa5);
    std::fs::write(&file, &bytes).unwrap();
    let r = e.ok(&["catalog", "info", "--json"]);
    assert!(r.stderr.contains("rebuilding"), "{}", r.stderr);
    assert_eq!((r.json()["snapshots"].as_u64(), r.json()["integrity"].as_str()), (Some(3), Some("ok")));
    // Without a cache, an in-memory catalog answers the same.
    assert_eq!(e.ok(&["find", "*", "--json", "--no-cache"]).stdout, before);
    let _ = src;
}

#[test]
fn catalog_follows_snapshots_added_by_other_hosts_and_removed() {
    let e = Env::new();
    let (src, [s1, _, _]) = three_days(&e);
    assert_eq!(lines(&e.ok(&["find", "hosts", "--json"])).len(), 3);
    // Another machine, with its own cache, backs up into the same repository.
    let mut c = e.cmd(&["backup", "--json", "--host", "db1", s(&src)]);
    c.env("COFFER_CACHE_DIR", e.path("other-cache")).env("COFFER_FAKE_NOW", "2026-11-23T10:00:00Z");
    assert_eq!(Env::run_cmd(c).code, 0);
    let hits = lines(&e.ok(&["find", "hosts", "--json"]));
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[0]["host"], "db1");
    assert_eq!(lines(&e.ok(&["find", "hosts", "--json", "--host", "db1"])).len(), 1);
    // A snapshot removed from the repository disappears from the catalog.
    std::fs::remove_file(e.repo.join("snapshots").join(&s1)).unwrap();
    let hits = lines(&e.ok(&["find", "hosts", "--json"]));
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h["snapshot"] != s1.as_str()));
}

#[test]
fn catalog_works_on_s3_repositories() {
    let e = Env::s3();
    let (src, [_, s2, _]) = three_days(&e);
    let v = lines(&e.ok(&["versions", s(&src.join("etc/nginx/nginx.conf")), "--json"]));
    assert_eq!(v.len(), 3);
    assert_eq!(v[1]["first_snapshot"], s2.as_str());
}

#[test]
fn stats_reports_sizes_and_ratios() {
    let e = Env::new();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = noise(3, 2_000_000);
    std::fs::write(src.join("a"), &data).unwrap();
    std::fs::write(src.join("b"), &data).unwrap(); // a duplicate
    std::fs::write(src.join("text"), "all work and no play\n".repeat(50_000)).unwrap();
    e.backup(&[&src], &[]);
    e.backup(&[&src], &[]);
    let v = e.ok(&["stats", "--json"]).json();
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    let logical = 4_000_000 + 21 * 50_000;
    assert_eq!(snaps[0]["files"], 3);
    assert_eq!(snaps[0]["logical_bytes"], logical);
    assert_eq!(snaps[0]["data"]["raw_bytes"], 2_000_000 + 21 * 50_000);
    let dedup = snaps[0]["dedup_ratio"].as_f64().unwrap();
    assert!((1.6..1.7).contains(&dedup), "{dedup}");
    assert!(snaps[0]["compression_ratio"].as_f64().unwrap() > 1.2);
    let r = &v["repository"];
    assert_eq!(r["snapshots"], 2);
    assert_eq!(r["logical_bytes"], 2 * logical);
    assert_eq!(r["data"]["raw_bytes"], 2_000_000 + 21 * 50_000);
    assert!(r["pack_bytes"].as_u64().unwrap() < 2_000_000 + 21 * 50_000);
    let one = e.ok(&["stats", "latest", "--json"]).json();
    assert_eq!(one["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(one["repository"]["logical_bytes"], 2 * logical);
    assert!(e.ok(&["stats"]).stdout.contains("deduplication"));
}

#[test]
fn versions_break_at_gaps_and_name_what_came_back() {
    let e = Env::new();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("keep"), "k").unwrap();
    std::fs::write(src.join("f"), "same bytes").unwrap();
    let s1 = backup_at(&e, &src, "2026-11-20T10:00:00Z", "UTC", "h");
    // Moved out of the backed-up tree and back: the same file, metadata and all.
    std::fs::rename(src.join("f"), e.path("f.away")).unwrap();
    backup_at(&e, &src, "2026-11-21T10:00:00Z", "UTC", "h");
    std::fs::rename(e.path("f.away"), src.join("f")).unwrap();
    let s3 = backup_at(&e, &src, "2026-11-22T10:00:00Z", "UTC", "h");
    let v = lines(&e.ok(&["versions", s(&src.join("f")), "--json"]));
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0]["first_snapshot"].as_str(), v[0]["change"].as_str()), (Some(s1.as_str()), Some("first")));
    assert_eq!((v[1]["first_snapshot"].as_str(), v[1]["change"].as_str()), (Some(s3.as_str()), Some("reappeared")));
    assert_eq!(v[1]["after_gap"], true);
    assert_eq!(v[0]["after_gap"], false);
}

#[test]
fn very_deep_trees_are_found_and_diffed() {
    let e = Env::new();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 3000 levels: far past PATH_MAX, and far past what recursion on a thread stack takes.
    let mut rel = String::new();
    {
        use rustix::fs::{Mode, OFlags};
        let mut fd = rustix::fs::open(&src, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..3000 {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
            rel.push_str("/d");
        }
        let f = rustix::fs::openat(&fd, "bottom", OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644)).unwrap();
        rustix::io::write(&f, b"one").unwrap();
    }
    let s1 = backup_at(&e, &src, "2026-11-20T10:00:00Z", "UTC", "h");
    {
        use rustix::fs::{Mode, OFlags};
        let mut fd = rustix::fs::open(&src, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..3000 {
            fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        let f = rustix::fs::openat(&fd, "bottom", OFlags::WRONLY | OFlags::TRUNC, Mode::empty()).unwrap();
        rustix::io::write(&f, b"three, longer").unwrap();
    }
    let s2 = backup_at(&e, &src, "2026-11-21T10:00:00Z", "UTC", "h");
    let bottom = format!("{}{rel}/bottom", s(&src));
    let hits = lines(&e.ok(&["find", "bottom", "--json"]));
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["path"], bottom.as_str());
    let v = lines(&e.ok(&["versions", &bottom, "--json"]));
    assert_eq!(v.len(), 2);
    assert_eq!(v[1]["change"], "content");
    let d = lines(&e.ok(&["diff", &s1, &s2, s(&src), "--json"]));
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0]["change"].as_str(), d[0]["path"].as_str()), (Some("modified"), Some(bottom.as_str())));
}

#[test]
fn commands_syncing_one_catalog_at_once_agree() {
    let e = Env::new();
    let (_src, _) = three_days(&e);
    let want = e.ok(&["find", "*.conf", "--json", "--no-cache"]).stdout;
    // A fresh catalog, filled by four processes at once.
    let kids: Vec<_> = (0..4)
        .map(|_| {
            let mut c = e.cmd(&["find", "*.conf", "--json"]);
            c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    }
    let info = e.ok(&["catalog", "info", "--json"]).json();
    assert_eq!((info["snapshots"].as_u64(), info["integrity"].as_str()), (Some(3), Some("ok")));
}

#[test]
fn a_damaged_snapshot_is_left_out_with_a_warning_and_the_rest_answers() {
    let e = Env::new();
    let (_src, [s1, s2, _]) = three_days(&e);
    let f = e.repo.join("snapshots").join(&s2);
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&f, &bytes).unwrap();
    let r = e.ok(&["find", "hosts", "--json"]);
    assert!(r.stderr.contains(&format!("snapshot {} left out of the catalog", &s2[..8])), "{}", r.stderr);
    let hits = lines(&r);
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().any(|h| h["snapshot"] == s1.as_str()));
    assert!(hits.iter().all(|h| h["snapshot"] != s2.as_str()));
}
