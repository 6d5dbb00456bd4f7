//! What cron jobs back up: standard input, a command's output, lists of paths, and the
//! exclusion options beyond --exclude (tags, sizes, case, per-directory .cofferignore).

use std::io::Write;
use std::path::Path;

use crate::support::*;

/// The paths `ls latest` lists, one a line.
fn listed(env: &Env) -> Vec<String> {
    env.ok(&["ls", "latest"]).stdout.lines().map(str::to_string).collect()
}

fn snapshot_count(env: &Env) -> usize {
    env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len()
}

#[test]
fn stdin_is_stored_as_one_file_and_restores() {
    let env = Env::new();
    let data = noise(7, 3_000_000);
    let mut c = env.cmd(&["backup", "--json", "--stdin", "--stdin-filename", "db/app.sql", "--tag", "db"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["total_bytes_processed"], data.len() as u64, "{s}");
    assert_eq!(s["files_new"], 1);
    assert_eq!(listed(&env), ["/db", "/db/app.sql"]);
    let snaps = env.ok(&["snapshots", "--json"]).json();
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/db/app.sql"]));
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("db/app.sql")).unwrap(), data);
    assert!(env.run(&["backup", "--stdin", "--stdin-filename", "../x"]).stderr.contains("--stdin-filename"));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn stdin_from_command_writes_a_snapshot_only_when_the_command_succeeds() {
    let env = Env::new();
    let s = env
        .ok(&[
            "backup",
            "--json",
            "--stdin-from-command",
            "--stdin-filename",
            "dump.sql",
            "--",
            "sh",
            "-c",
            "printf 'CREATE TABLE t;\\n'",
        ])
        .json();
    assert_eq!(s["total_bytes_processed"], 16, "{s}");
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("dump.sql")).unwrap(), "CREATE TABLE t;\n");
    // A dump that fails half way is not a backup: no snapshot, a clear error, exit 1.
    let r = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo half; echo 'pg_dump: lost connection' >&2; exit 3",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("exit status: 3") && r.stderr.contains("no snapshot was written"), "{}", r.stderr);
    assert!(r.stderr.contains("pg_dump: lost connection"), "the command's stderr passes through: {}", r.stderr);
    let r = env.run(&["backup", "--stdin-from-command", "--", "/nonexistent/pg_dump"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("/nonexistent/pg_dump"), "{}", r.stderr);
    assert_eq!(snapshot_count(&env), 1);
    assert!(env.run(&["backup", "--stdin-from-command"]).stderr.contains("give the command"));
}

#[test]
fn files_from_lists_globs_verbatim_and_nul_separated() {
    let env = Env::new();
    let src = env.path("src");
    for d in ["a1", "a2", "b", "odd #name", "nl"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(src.join(d).join("f"), d).unwrap();
    }
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let globs = env.path("globs.txt");
    std::fs::write(&globs, format!("# the a's\n\n   {}/a*\n", s(&src))).unwrap();
    let verbatim = env.path("verbatim.txt");
    std::fs::write(&verbatim, format!("{}\n", s(&src.join("odd #name")))).unwrap();
    let raw = env.path("raw.bin");
    std::fs::write(&raw, format!("{}\0", s(&src.join("nl")))).unwrap();
    env.ok(&[
        "backup",
        "--files-from",
        &s(&globs),
        "--files-from-verbatim",
        &s(&verbatim),
        "--files-from-raw",
        &s(&raw),
        &s(&src.join("b")),
    ]);
    let snaps = env.ok(&["snapshots", "--json"]).json();
    let paths: Vec<String> = snaps[0]["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().into()).collect();
    let want: Vec<String> = ["a1", "a2", "b", "nl", "odd #name"].iter().map(|d| s(&src.join(d))).collect();
    assert_eq!(paths, want);
    // A listed path that does not exist is named.
    std::fs::write(&globs, format!("{}/missing\n", s(&src))).unwrap();
    let r = env.run(&["backup", "--files-from", &s(&globs)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    std::fs::write(&globs, "# nothing\n").unwrap();
    assert!(env.run(&["backup", "--files-from", &s(&globs)]).stderr.contains("lists no path"));
    assert!(env.run(&["backup"]).stderr.contains("nothing to back up"));
}

#[test]
fn exclusions_by_tag_size_case_and_cofferignore() {
    let env = Env::new();
    let src = env.path("src");
    let w = |p: &str, data: &[u8]| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("keep/small.txt", b"x");
    w("keep/big.bin", &vec![1u8; 300_000]);
    w("keep/PHOTO.JPG", b"jpg");
    w("tagged/.nobackup", b"");
    w("tagged/secret", b"s");
    w("hdr/.nobackup2", b"wrong header");
    w("hdr/kept", b"k");
    w("proj/.cofferignore", b"# build output\ntarget/\n*.log\n!important.log\n/local-only\n");
    w("proj/target/debug/x", b"x");
    w("proj/a.log", b"a");
    w("proj/important.log", b"i");
    w("proj/local-only", b"l");
    w("proj/sub/local-only", b"nested: not anchored there");
    w("proj/sub/.cofferignore", b"!a.log\n");
    w("proj/sub/a.log", b"re-included below");
    let root = src.to_str().unwrap();
    env.ok(&[
        "backup",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        ".nobackup2:Signature",
        "--exclude-larger-than",
        "100K",
        "--iexclude",
        "*.jpg",
        root,
    ]);
    let mut rel: Vec<String> = listed(&env)
        .into_iter()
        .filter_map(|p| p.strip_prefix(root).map(str::to_string))
        .filter(|p| !p.is_empty())
        .collect();
    rel.sort();
    let want = [
        "/hdr",
        "/hdr/.nobackup2",
        "/hdr/kept",
        "/keep",
        "/keep/small.txt",
        "/proj",
        "/proj/.cofferignore",
        "/proj/important.log",
        "/proj/sub",
        "/proj/sub/.cofferignore",
        "/proj/sub/a.log",
        "/proj/sub/local-only",
        "/tagged",
        "/tagged/.nobackup",
    ];
    assert_eq!(rel, want);
    let snaps = env.ok(&["snapshots", "--json"]).json();
    assert!(snaps[0]["excludes"].as_array().unwrap().iter().any(|e| e == "(?i)*.jpg"), "{}", snaps[0]);
    // --no-cofferignore reads everything the ignore files left out.
    env.ok(&["backup", "--no-cofferignore", root]);
    let all = listed(&env);
    assert!(all.iter().any(|p| p.ends_with("/proj/target/debug/x")) && all.iter().any(|p| p.ends_with("/proj/a.log")));
    assert!(env.run(&["backup", "--exclude-larger-than", "lots", root]).stderr.contains("--exclude-larger-than"));
    assert!(env.run(&["backup", "--exclude-if-present", "a/b", root]).stderr.contains("--exclude-if-present"));
}
