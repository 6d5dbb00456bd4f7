//! Shared helpers: a repository in a temp dir, running the CLI, comparing trees.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

pub const BIN: &str = env!("CARGO_BIN_EXE_coffer");
pub const PASSWORD: &str = "correct horse battery staple";

/// A scratch directory with a repository in `repo/` (or, for [`Env::s3`], in a bucket).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    /// Extra environment for every command (the S3 settings).
    pub vars: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl Env {
    /// A new repository with the cheapest key derivation the floor allows.
    pub fn new() -> Env {
        let e = Env::uninit();
        e.ok(&["init", "--kdf-memory", "19", "--kdf-iterations", "2"]);
        e
    }

    /// A scratch directory without a repository.
    pub fn uninit() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        Env { dir, repo, vars: Vec::new() }
    }

    /// A new repository in a fresh bucket of the test S3 server.
    pub fn s3() -> Env {
        Env::s3_with(&[])
    }

    /// [`Env::s3`] with extra `init` arguments.
    pub fn s3_with(init: &[&str]) -> Env {
        Env::s3_in(&s3_server().new_bucket(), init)
    }

    /// An S3 repository in a bucket with Object Lock enabled.
    pub fn s3_locked(init: &[&str]) -> Env {
        Env::s3_in(&s3_server().new_lock_bucket(), init)
    }

    fn s3_in(bucket: &str, init: &[&str]) -> Env {
        let s3 = s3_server();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache").to_str().unwrap().to_string();
        let vars = [
            ("COFFER_CACHE_DIR", cache.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ];
        let e = Env {
            dir,
            repo: PathBuf::from(format!("s3://{bucket}/backups")),
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let mut args = vec!["init", "--kdf-memory", "19", "--kdf-iterations", "2"];
        args.extend_from_slice(init);
        e.ok(&args);
        e
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("COFFER_REPO", &self.repo)
            .env("COFFER_PASSWORD", PASSWORD)
            .env_remove("COFFER_PASSWORD_FILE")
            .env_remove("COFFER_PASSWORD_COMMAND")
            // The catalog and cache stay inside the scratch directory (S3 envs set their own).
            .env("COFFER_CACHE_DIR", self.dir.path().join("cache"))
            // What this client has seen (rollback detection) stays in the scratch directory.
            .env("COFFER_STATE_DIR", self.dir.path().join("state"))
            .env_remove("XDG_CACHE_HOME")
            // Local times in tests mean UTC unless a test says otherwise.
            .env("TZ", "UTC")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run_cmd(mut c: Command) -> Run {
        let o: Output = c.output().expect("run coffer");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Env::run_cmd(self.cmd(args))
    }

    /// Runs and asserts exit code 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "coffer {args:?} failed\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        r
    }

    /// `backup --json` of the given paths; returns the summary.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> serde_json::Value {
        let mut args: Vec<&str> = vec!["backup", "--json"];
        args.extend_from_slice(extra);
        let ps: Vec<String> = paths.iter().map(|p| p.to_str().unwrap().to_string()).collect();
        args.extend(ps.iter().map(String::as_str));
        self.ok(&args).json()
    }

    /// Every object file in the repository with its size, to see what a command wrote.
    pub fn repo_files(&self) -> BTreeMap<PathBuf, u64> {
        let mut out = BTreeMap::new();
        fn walk(d: &Path, base: &Path, out: &mut BTreeMap<PathBuf, u64>) {
            // A running command's temporary files may vanish between listing and stat.
            let Ok(entries) = std::fs::read_dir(d) else { return };
            for e in entries {
                let Ok(e) = e else { continue };
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    walk(&e.path(), base, out);
                } else {
                    out.insert(e.path().strip_prefix(base).unwrap().to_path_buf(), m.len());
                }
            }
        }
        walk(&self.repo, &self.repo, &mut out);
        out
    }

    /// `check --read-data` finds nothing wrong; returns its report.
    /// [`Self::repo_files`] without `audit/`: a refused command still leaves its audit entry.
    pub fn data_files(&self) -> BTreeMap<PathBuf, u64> {
        self.repo_files().into_iter().filter(|(k, _)| !k.starts_with("audit")).collect()
    }

    pub fn assert_clean(&self) -> serde_json::Value {
        let r = self.ok(&["check", "--read-data", "--json"]).json();
        assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
        r
    }

    /// Restores the latest snapshot of backup root `src` into `out` and compares the two.
    pub fn assert_restores(&self, src: &Path, out: &str) {
        let out = self.path(out);
        let spec = format!("latest:{}", src.display());
        self.ok(&["restore", &spec, "--target", out.to_str().unwrap(), "--path", src.to_str().unwrap()]);
        assert_same_tree(src, &out);
    }

    /// Two trees `a` and `b` of `files` random files of `size` bytes each, plus one file of
    /// twice that size they share (stored by whichever backup gets there first, or both).
    pub fn two_trees(&self, files: u64, size: usize) -> (PathBuf, PathBuf) {
        let (a, b) = (self.path("a"), self.path("b"));
        for (dir, seed) in [(&a, 0u64), (&b, 50)] {
            std::fs::create_dir_all(dir).unwrap();
            for i in 0..files {
                std::fs::write(dir.join(format!("f{i}")), noise(seed + i, size)).unwrap();
            }
            std::fs::write(dir.join("shared"), noise(999, 2 * size)).unwrap();
        }
        (a, b)
    }

    /// Backs up `a` and `b` in two processes at once; both must succeed.
    pub fn backups_at_once(&self, a: &Path, b: &Path, extra: &[&str]) {
        let run = |p: &Path| {
            let mut args = vec!["backup", "--json"];
            args.extend_from_slice(extra);
            args.push(p.to_str().unwrap());
            self.cmd(&args).output().unwrap()
        };
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| run(a));
            let hb = s.spawn(|| run(b));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert!(ra.status.success(), "{}", String::from_utf8_lossy(&ra.stderr));
        assert!(rb.status.success(), "{}", String::from_utf8_lossy(&rb.stderr));
    }

    /// Paths of all pack files.
    pub fn packs(&self) -> Vec<PathBuf> {
        // `name#N` files are object_store's staging files, not (yet) packs.
        self.repo_files()
            .keys()
            .filter(|p| p.starts_with("data") && !p.to_string_lossy().contains('#'))
            .map(|p| self.repo.join(p))
            .collect()
    }
}

/// The S3 server the tests share: moto's, started once per test run on a free loopback port,
/// and stopped by a watchdog when the test process exits. Missing moto is a failure, never a
/// skip: `scripts/test.sh` installs it (or set `COFFER_MOTO_SERVER`).
pub struct S3Server {
    pub endpoint: String,
    port: u16,
    buckets: std::sync::atomic::AtomicU32,
    /// The watchdog shell; it outlives this process on purpose, to stop moto after it.
    _watchdog: std::sync::Mutex<std::process::Child>,
}

static S3: std::sync::OnceLock<S3Server> = std::sync::OnceLock::new();

pub fn s3_server() -> &'static S3Server {
    S3.get_or_init(|| {
        let server = std::env::var("COFFER_MOTO_SERVER")
            .unwrap_or_else(|_| format!("{}/target/moto-venv/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
        assert!(
            Path::new(&server).exists(),
            "the S3 tests need moto's server at {server}: run scripts/test.sh, which installs it"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pid = std::process::id();
        let script = format!(
            "'{server}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {pid} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.3; done; kill $m 2>/dev/null"
        );
        let watchdog =
            Command::new("sh").arg("-c").arg(script).stdin(std::process::Stdio::null()).spawn().expect("start moto");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "moto did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            buckets: Default::default(),
            _watchdog: std::sync::Mutex::new(watchdog),
        }
    })
}

impl S3Server {
    /// Creates a new bucket (moto does not check signatures, so a plain PUT does).
    pub fn new_bucket(&self) -> String {
        self.make_bucket(false)
    }

    /// A new bucket with S3 Object Lock enabled (and so versioning).
    pub fn new_lock_bucket(&self) -> String {
        self.make_bucket(true)
    }

    fn make_bucket(&self, lock: bool) -> String {
        let n = self.buckets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("coffer-test-{}-{n}", std::process::id());
        let extra = if lock { "x-amz-bucket-object-lock-enabled: true\r\n" } else { "" };
        let reply = self.raw("PUT", &format!("/{name}"), extra, b"");
        assert!(reply.starts_with("HTTP/1.1 200"), "creating bucket {name}: {reply}");
        name
    }

    /// One raw HTTP request to moto (which checks no signatures, but wants an Authorization
    /// header on some requests); the whole response as text.
    pub fn raw(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> String {
        raw_http(self.port, method, path, headers, body)
    }
}

/// One raw HTTP/1.1 request to 127.0.0.1:`port`; the whole response as text.
pub fn raw_http(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                SignedHeaders=host, Signature=0\r\n";
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(body).unwrap();
    // A keep-alive peer (the fault proxy) answers and then waits for more: say there is none.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// What a tree comparison looks at for each entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u64),
    pub content: Option<blake3::Hash>,
    pub link: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub rdev: u64,
    /// The first path (in walk order) with the same inode, for hard links.
    pub link_group: Option<Vec<u8>>,
    /// Bytes actually allocated, to see sparseness.
    pub blocks: u64,
}

fn kind(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode as _) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "chardev",
        FileType::BlockDevice => "blockdev",
        _ => "socket",
    }
}

fn xattrs(dir: &OwnedFd, name: &CStr) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    let path = OsStr::from_bytes(&p);
    let mut buf = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut buf[..]) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for k in buf[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let mut v = vec![0u8; 65536];
        if let Ok(l) = rustix::fs::lgetxattr(path, OsStr::from_bytes(k), &mut v[..]) {
            v.truncate(l);
            out.push((k.to_vec(), v));
        }
    }
    out.sort();
    out
}

/// Walks a tree with `*at` calls (any depth), recording every entry's metadata by its path
/// relative to `root`. Directory mtimes are included.
pub fn tree_meta(root: &Path) -> BTreeMap<Vec<u8>, Meta> {
    let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open root");
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    walk_meta(&fd, b"", &mut out, &mut inodes);
    out
}

fn walk_meta(
    dir: &OwnedFd,
    prefix: &[u8],
    out: &mut BTreeMap<Vec<u8>, Meta>,
    inodes: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    let mut names: Vec<CString> = Dir::read_from(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    names.sort();
    for name in names {
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        let k = kind(st.st_mode as u32);
        let mut m = Meta {
            kind: k,
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if k == "file" { st.st_size as u64 } else { 0 },
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as u64),
            content: None,
            link: None,
            xattrs: xattrs(dir, &name),
            rdev: if k == "chardev" || k == "blockdev" { st.st_rdev as u64 } else { 0 },
            link_group: None,
            blocks: st.st_blocks as u64,
        };
        match k {
            "file" => {
                let f = rustix::fs::openat(dir, &name, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).unwrap();
                let mut b = Vec::new();
                std::fs::File::from(f).read_to_end(&mut b).unwrap();
                m.content = Some(blake3::hash(&b));
                if st.st_nlink > 1 {
                    let first = inodes.entry((st.st_dev as u64, st.st_ino as u64)).or_insert_with(|| path.clone());
                    m.link_group = Some(first.clone());
                }
            }
            "symlink" => m.link = Some(rustix::fs::readlinkat(dir, &name, Vec::new()).unwrap().into_bytes()),
            "dir" => {
                let sub = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                    Mode::empty(),
                )
                .unwrap();
                walk_meta(&sub, &path, out, inodes);
            }
            _ => {}
        }
        out.insert(path, m);
    }
}

/// Asserts two trees are identical in everything `Meta` records except allocation.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ma, mb) = (tree_meta(a), tree_meta(b));
    let strip = |m: &BTreeMap<Vec<u8>, Meta>| -> BTreeMap<Vec<u8>, Meta> {
        m.iter().map(|(k, v)| (k.clone(), Meta { blocks: 0, ..v.clone() })).collect()
    };
    let (sa, sb) = (strip(&ma), strip(&mb));
    for (k, v) in &sa {
        match sb.get(k) {
            None => panic!("{} missing from the restore", String::from_utf8_lossy(k)),
            Some(w) => assert_eq!(v, w, "{} differs", String::from_utf8_lossy(k)),
        }
    }
    assert_eq!(sa.len(), sb.len(), "the restore has extra entries");
}

/// Creates a directory chain of `depth` levels with long names using `*at` calls (so the
/// full path may exceed PATH_MAX); puts a file at the bottom. Returns the relative path.
pub fn make_deep(root: &Path, depth: usize) -> Vec<u8> {
    let mut fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut rel = Vec::new();
    for i in 0..depth {
        let name = format!("{:0>200}", i);
        rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, name.as_str(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
    }
    let f = rustix::fs::openat(&fd, "bottom", OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644)).unwrap();
    rustix::io::write(f.as_fd(), b"at the bottom").unwrap();
    rel
}

/// Deterministic pseudo-random bytes (incompressible, distinct per seed).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// A small mixed tree: text, random data, nested dirs. Returns total file bytes.
pub fn make_simple_tree(root: &Path) -> u64 {
    std::fs::create_dir_all(root.join("docs/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("docs/readme.txt"), "hello world\n".repeat(100)).unwrap();
    std::fs::write(root.join("docs/deeper/data.bin"), noise(1, 3_000_000)).unwrap();
    std::fs::write(root.join("small.bin"), noise(2, 10_000)).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    1200 + 3_000_000 + 10_000
}
