//! A fault-injecting HTTP proxy in front of the S3 server, and what Coffer does behind it.
//!
//! The proxy speaks just enough HTTP/1.1 to forward object_store's requests to moto (one
//! upstream connection per request) and, for a deterministic pseudo-random share of requests,
//! answers 503 SlowDown or 500 without forwarding, delays, cuts the response body short and
//! closes the connection, or forwards a PUT (so it is stored) and still answers 500.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// Rates of each fault, per thousand requests (applied in this order).
#[derive(Clone, Copy, Default)]
pub struct Faults {
    pub slow_down_503: u32,
    pub error_500: u32,
    pub delay: u32,
    pub truncate: u32,
    pub put_stored_then_500: u32,
    /// Only requests with this method are faulted.
    pub only_method: Option<&'static str>,
    /// Methods refused with 403 AccessDenied, as a bucket policy for restricted
    /// credentials would (moto itself does not enforce IAM).
    pub deny: &'static [&'static str],
    /// Listings (ListObjectsV2) of a prefix containing this text are answered wrongly.
    pub bad_listing: Option<(&'static str, ListFault)>,
    /// GET responses with one byte of the body flipped, as damage in transit would: each
    /// distinct request (path and range) at most once, so asking again gets good bytes.
    pub flip_once: u32,
    /// Plays a backup host's credentials on a compliance-mode Object Lock bucket: no
    /// DELETE of anything but `locks/`, no bypass of governance retention, and a retention
    /// may only be extended, never shortened (S3's rule, which moto does not enforce).
    pub worm: bool,
}

/// Whether a PutObjectRetention request shortens the object's current lock (asked upstream).
fn shortens_retention(upstream: &str, line: &str, body: &[u8]) -> std::io::Result<bool> {
    let body = String::from_utf8_lossy(body);
    let Some(new) = body.split("<RetainUntilDate>").nth(1).and_then(|r| r.split('<').next()) else {
        return Ok(false);
    };
    let path = line.split(' ').nth(1).unwrap_or("/").split('?').next().unwrap_or("/");
    let head = format!(
        "HEAD {path} HTTP/1.1\r\nHost: {upstream}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nConnection: close\r\n\r\n"
    );
    let resp = String::from_utf8_lossy(&forward(upstream, head.as_bytes(), &[])?).to_ascii_lowercase();
    let current = resp
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-object-lock-retain-until-date:"))
        .map(|v| v.trim().to_ascii_uppercase());
    // Both are RFC 3339 UTC: to the second, they compare as text.
    let norm = |s: &str| s.trim().trim_end_matches('Z').split('.').next().unwrap_or("").to_string();
    Ok(current.is_some_and(|c| norm(new) < norm(&c)))
}

/// The GET requests (first line and range) whose answer was already flipped once.
static FLIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Flips one byte in the middle of a 200/206 response body the first time `key` is asked.
fn flip_once(resp: &mut [u8], key: String) -> bool {
    let ok = resp.starts_with(b"HTTP/1.1 200") || resp.starts_with(b"HTTP/1.1 206");
    let body_at = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 4);
    if !ok || body_at >= resp.len() {
        return false;
    }
    let mut seen = FLIPPED.lock().unwrap();
    if seen.contains(&key) {
        return false;
    }
    seen.push(key);
    let mid = body_at + (resp.len() - body_at) / 2;
    resp[mid] ^= 0x20;
    true
}

/// How a listing is answered wrongly.
#[derive(Clone, Copy, Debug)]
pub enum ListFault {
    /// Only the first object, marked truncated, with no continuation token.
    TruncatedWithoutToken,
    /// The first page again and again, always with the same continuation token.
    RepeatToken,
}

/// The body of an HTTP/1.1 response (Content-Length or chunked).
fn response_body(resp: &[u8]) -> (String, Vec<u8>) {
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&resp[..at]).into_owned();
    let mut body = resp[at..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = out;
    }
    (head, body)
}

/// Rewrites a ListObjectsV2 response as `fault` says.
fn rewrite_listing(resp: &[u8], fault: ListFault) -> Vec<u8> {
    let (head, body) = response_body(resp);
    let mut xml = String::from_utf8_lossy(&body).into_owned();
    if let Some(a) = xml.find("<NextContinuationToken>") {
        let b = xml.find("</NextContinuationToken>").unwrap() + "</NextContinuationToken>".len();
        xml.replace_range(a..b, "");
    }
    xml = xml.replace("<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>");
    match fault {
        ListFault::TruncatedWithoutToken => {
            // Keep the first object only.
            if let Some(first_end) = xml.find("</Contents>").map(|p| p + "</Contents>".len()) {
                while let Some(a) = xml[first_end..].find("<Contents>").map(|p| p + first_end) {
                    let b = xml[a..].find("</Contents>").unwrap() + a + "</Contents>".len();
                    xml.replace_range(a..b, "");
                }
            }
        }
        ListFault::RepeatToken => {
            let end = xml.rfind("</ListBucketResult>").unwrap();
            xml.insert_str(end, "<NextContinuationToken>c2FtZS10b2tlbg==</NextContinuationToken>");
        }
    }
    let mut out = String::new();
    for line in head.split("\r\n") {
        let l = line.to_ascii_lowercase();
        if line.is_empty() || l.starts_with("content-length:") || l.starts_with("transfer-encoding:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", xml.len()));
    out.push_str(&xml);
    out.into_bytes()
}

pub struct FaultProxy {
    pub endpoint: String,
    pub requests: Arc<AtomicU64>,
    pub faulted: Arc<AtomicU64>,
    /// Multipart uploads started (`POST ...?uploads`).
    pub multipart: Arc<AtomicU64>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Faults, seed: u64) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let faulted = Arc::new(AtomicU64::new(0));
        let multipart = Arc::new(AtomicU64::new(0));
        let (r, f, m) = (requests.clone(), faulted.clone(), multipart.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (up, r, f, m) = (upstream.clone(), r.clone(), f.clone(), m.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, faults, seed, &r, &f, &m);
                });
            }
        });
        FaultProxy { endpoint, requests, faulted, multipart }
    }
}

fn roll(seed: u64, n: u64) -> u32 {
    let h = blake3::hash(&[seed.to_le_bytes(), n.to_le_bytes()].concat());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().unwrap()) % 1000
}

/// One request: method, head (with `Connection: close` for upstream) and body.
type Request = (String, Vec<u8>, Vec<u8>);

/// Reads one request; `None` when the client closed the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let method = line.split(' ').next().unwrap_or("").to_string();
    let mut head = line.into_bytes();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        assert!(!lower.starts_with("transfer-encoding"), "the proxy does not forward chunked requests");
        if !lower.starts_with("connection:") {
            head.extend_from_slice(h.as_bytes());
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some((method, head, body)))
}

fn forward(upstream: &str, head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head)?;
    up.write_all(body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    Ok(resp)
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    format!("HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn serve(
    client: TcpStream,
    upstream: &str,
    f: Faults,
    seed: u64,
    reqs: &AtomicU64,
    faulted: &AtomicU64,
    multipart: &AtomicU64,
) -> std::io::Result<()> {
    let mut out = client.try_clone()?;
    let mut r = BufReader::new(client);
    while let Some((method, head, body)) = read_request(&mut r)? {
        let n = reqs.fetch_add(1, Ordering::Relaxed);
        let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        if method == "POST" && first_line.windows(8).any(|w| w == b"?uploads") {
            multipart.fetch_add(1, Ordering::Relaxed);
        }
        let eligible = f.only_method.is_none_or(|m| m == method);
        let x = if eligible { roll(seed, n) } else { 1000 };
        let mut t = 0;
        let mut hit = |rate: u32| {
            t += rate;
            x < t
        };
        let line = String::from_utf8_lossy(first_line);
        let bad_listing = f.bad_listing.filter(|(p, _)| line.contains("list-type=2") && line.contains(p));
        let lower_head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let worm_denied = f.worm
            && ((method == "DELETE" && !line.contains("/locks/"))
                || lower_head.contains("x-amz-bypass-governance-retention")
                || (method == "PUT" && line.contains("?retention") && shortens_retention(upstream, &line, &body)?));
        if f.deny.contains(&method.as_str()) || worm_denied {
            faulted.fetch_add(u64::from(worm_denied), Ordering::Relaxed);
            out.write_all(&error_response("403 Forbidden", "AccessDenied"))?;
        } else if let Some((_, fault)) = bad_listing {
            faulted.fetch_add(1, Ordering::Relaxed);
            // Every page asked for is answered with the first one (moto checks no signatures).
            let head = String::from_utf8_lossy(&head);
            let head = match head.find("continuation-token=") {
                Some(a) => {
                    let rest = &head[a..];
                    let end =
                        rest.find(['&', ' '])
                            .map_or(rest.len(), |e| if rest[e..].starts_with('&') { e + 1 } else { e });
                    format!("{}{}", &head[..a], &rest[end..])
                }
                None => head.into_owned(),
            };
            let resp = forward(upstream, head.as_bytes(), &body)?;
            if resp.starts_with(b"HTTP/1.1 200") {
                out.write_all(&rewrite_listing(&resp, fault))?;
            } else {
                out.write_all(&resp)?;
            }
        } else if hit(f.slow_down_503) {
            faulted.fetch_add(1, Ordering::Relaxed);
            out.write_all(&error_response("503 Slow Down", "SlowDown"))?;
        } else if hit(f.error_500) {
            faulted.fetch_add(1, Ordering::Relaxed);
            out.write_all(&error_response("500 Internal Server Error", "InternalError"))?;
        } else if hit(f.delay) {
            faulted.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(150));
            out.write_all(&forward(upstream, &head, &body)?)?;
        } else if hit(f.truncate) {
            faulted.fetch_add(1, Ordering::Relaxed);
            let resp = forward(upstream, &head, &body)?;
            let body_at = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 4);
            let cut = body_at + (resp.len() - body_at) / 2;
            out.write_all(&resp[..cut])?;
            return Ok(()); // close mid-body
        } else if method == "GET" && !line.contains("list-type") && hit(f.flip_once) {
            let mut resp = forward(upstream, &head, &body)?;
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let range = text.lines().find(|l| l.starts_with("range:")).unwrap_or_default().to_string();
            if flip_once(&mut resp, format!("{line} {range}")) {
                faulted.fetch_add(1, Ordering::Relaxed);
            }
            out.write_all(&resp)?;
        } else if method == "PUT" && hit(f.put_stored_then_500) {
            faulted.fetch_add(1, Ordering::Relaxed);
            forward(upstream, &head, &body)?;
            out.write_all(&error_response("500 Internal Server Error", "InternalError"))?;
        } else {
            out.write_all(&forward(upstream, &head, &body)?)?;
        }
    }
    Ok(())
}

/// An S3 repository whose commands go through a fault proxy (created directly, unfaulted).
fn env_behind_proxy(faults: Faults, seed: u64) -> (Env, FaultProxy) {
    env_behind_proxy_with(faults, seed, &[])
}

/// [`env_behind_proxy`] with extra `init` arguments.
pub fn env_behind_proxy_with(faults: Faults, seed: u64, init: &[&str]) -> (Env, FaultProxy) {
    let mut env = Env::s3_with(init);
    let upstream = s3_server().endpoint.clone();
    let proxy = FaultProxy::start(&upstream, faults, seed);
    for (k, v) in env.vars.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint.clone();
        }
    }
    (env, proxy)
}

/// The same repository, reached directly.
pub fn direct(env: &Env) -> Env {
    let mut d = Env::uninit();
    d.repo = env.repo.clone();
    d.vars = env.vars.clone();
    for (k, v) in d.vars.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = s3_server().endpoint.clone();
        }
    }
    d
}

#[test]
fn backup_restore_and_check_survive_s3_faults() {
    let faults = Faults {
        slow_down_503: 60,
        error_500: 40,
        delay: 40,
        truncate: 30,
        put_stored_then_500: 40,
        ..Default::default()
    };
    // COFFER_FAULT_SEED replays another pattern of faults.
    let seed = std::env::var("COFFER_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let (env, proxy) = env_behind_proxy(faults, seed);
    let src = env.path("src");
    make_simple_tree(&src);
    for i in 0..8 {
        std::fs::write(src.join(format!("r{i}")), noise(300 + i, 900_000)).unwrap();
    }
    let s = env.backup(&[&src], &[]);
    assert_eq!(s["partial"], false, "{s}");
    env.assert_clean();
    env.assert_restores(&src, "out");
    let (faulted, total) = (proxy.faulted.load(Ordering::Relaxed), proxy.requests.load(Ordering::Relaxed));
    assert!(faulted > 0 && faulted < total, "the proxy injected {faulted} faults in {total} requests");
    // And the repository, read directly, is intact and references nothing missing.
    direct(&env).assert_clean();
}

#[test]
fn backup_fails_cleanly_when_writes_keep_failing() {
    let faults = Faults { slow_down_503: 1000, only_method: Some("PUT"), ..Default::default() };
    let (env, _proxy) = env_behind_proxy(faults, 1);
    let src = env.path("src");
    make_simple_tree(&src);
    let r = env.run(&["backup", "--retries", "2", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // The first write of a backup is its lock (docs/storage.md, "Many clients and prune").
    assert!(r.stderr.contains("write") && r.stderr.contains("locks/"), "names the operation and object: {}", r.stderr);
    let d = direct(&env);
    assert!(d.ok(&["snapshots", "--json"]).json().as_array().unwrap().is_empty(), "no snapshot for a failed backup");
    d.assert_clean();
}

#[test]
fn a_no_change_backup_to_s3_makes_a_handful_of_requests() {
    let (env, proxy) = env_behind_proxy(Faults::default(), 0);
    let src = env.path("src");
    make_simple_tree(&src);
    for i in 0..30 {
        std::fs::create_dir_all(src.join(format!("d{i}"))).unwrap();
        std::fs::write(src.join(format!("d{i}/f")), noise(i, 1000)).unwrap();
    }
    env.backup(&[&src], &[]);
    let before = proxy.requests.load(Ordering::Relaxed);
    let s = env.backup(&[&src], &[]);
    assert!(s["data_added"].as_u64().unwrap() < 10_000, "{s}");
    let n = proxy.requests.load(Ordering::Relaxed) - before;
    eprintln!("no-change backup of {} files in 34 directories: {n} requests", s["total_files_processed"]);
    // A pack and an index file more (and a HEAD of the lock before the index file is
    // written) when /tmp's mtime (an ancestor) changed meanwhile.
    let allowance = if s["blobs_added"].as_u64().unwrap() > 0 { 3 } else { 0 };
    // 9 without locks; the lock's PUT, HEAD (before committing) and DELETE and the listing of
    // index/ before the snapshot is written (docs/storage.md, "Many clients and prune") make 13.
    assert!(n <= 13 + allowance, "{n} requests: metadata is not served from the cache");
    // A damaged cache entry is noticed and fetched again, never trusted.
    let cache = env.path("cache");
    let snap = walk_files(&cache).into_iter().find(|p| p.to_string_lossy().contains("/snapshots/")).unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    b[20] ^= 1;
    std::fs::write(&snap, b).unwrap();
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 2);
    std::fs::remove_dir_all(&cache).unwrap();
    env.assert_restores(&src, "out");
}

fn walk_files(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn read_only_credentials_can_list_restore_and_check() {
    let (env, _proxy) = env_behind_proxy(Faults { deny: &["PUT", "POST", "DELETE"], ..Default::default() }, 0);
    let src = env.path("src");
    make_simple_tree(&src);
    direct(&env).backup(&[&src], &[]);
    assert_eq!(env.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 1);
    env.ok(&["ls", "latest"]);
    env.assert_restores(&src, "out");
    env.assert_clean();
    // Dry runs of the commands that remove snapshots need no lock either (they say so).
    let r = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(r.stderr.contains("no lock could be written"), "{}", r.stderr);
    env.ok(&["rewrite", "--exclude", "*.nothing", "--dry-run"]);
    env.ok(&["policy", "show"]);
    env.ok(&["hold", "list"]);
    env.ok(&["audit", "--verify"]);
    let r = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "writing with read-only credentials fails: {}", r.stderr);
    assert!(
        r.stderr.contains("AccessDenied") || r.stderr.contains("403") || r.stderr.contains("Forbidden"),
        "{}",
        r.stderr
    );
}

#[test]
fn backup_needs_no_delete_permission() {
    let (env, _proxy) = env_behind_proxy(Faults { deny: &["DELETE"], ..Default::default() }, 0);
    let src = env.path("src");
    make_simple_tree(&src);
    env.backup(&[&src], &[]);
    std::fs::write(src.join("more"), noise(8, 50_000)).unwrap();
    env.backup(&[&src], &[]);
    env.assert_clean();
    env.assert_restores(&src, "out");
}

#[test]
fn large_packs_go_to_s3_as_multipart_uploads() {
    let faults = Faults { slow_down_503: 30, error_500: 20, ..Default::default() };
    let (env, proxy) = env_behind_proxy_with(faults, 3, &["--pack-size", "32"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(61, 30 << 20)).unwrap();
    std::fs::write(src.join("b"), noise(62, 20 << 20)).unwrap();
    // One packer, so a pack fills up to the 32 MiB target.
    env.backup(&[&src], &["--threads", "1"]);
    assert!(proxy.multipart.load(Ordering::Relaxed) >= 1, "no multipart upload was started");
    env.assert_clean();
    env.assert_restores(&src, "out");
}

/// Three snapshots in a bucket, then the proxy answers the listing of `snapshots/` wrongly.
fn env_with_bad_snapshot_listing(fault: ListFault) -> (Env, FaultProxy, std::path::PathBuf) {
    let (env, proxy) = env_behind_proxy(Faults { bad_listing: Some(("snapshots", fault)), ..Default::default() }, 0);
    let src = env.path("src");
    make_simple_tree(&src);
    let d = direct(&env);
    for i in 0..3 {
        std::fs::write(src.join("n"), format!("{i}")).unwrap();
        d.backup(&[&src], &[]);
    }
    (env, proxy, src)
}

#[test]
fn a_listing_marked_truncated_without_a_token_is_never_used() {
    let (env, _proxy, src) = env_with_bad_snapshot_listing(ListFault::TruncatedWithoutToken);
    for args in [&["snapshots"][..], &["check"], &["forget", "--keep-last", "1"], &["prune"]] {
        let r = env.run(&[&["--retries", "1"][..], args].concat());
        assert_eq!(r.code, 1, "{args:?} must fail: {}", r.stderr);
        assert!(r.stderr.contains("truncated without a continuation token"), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("snapshots"), "names the listing: {}", r.stderr);
    }
    let r = env.run(&["--retries", "1", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "a backup would reuse a sequence number: {}", r.stderr);
    assert_eq!(direct(&env).ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 3);
}

#[test]
fn a_listing_that_repeats_its_continuation_token_stops_at_once() {
    let (env, proxy, _src) = env_with_bad_snapshot_listing(ListFault::RepeatToken);
    let before = proxy.requests.load(Ordering::Relaxed);
    let r = env.run(&["--retries", "1", "snapshots"]);
    let made = proxy.requests.load(Ordering::Relaxed) - before;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("continuation token") && r.stderr.contains("snapshots"), "{}", r.stderr);
    assert!(made < 40, "{made} requests: the listing looped");
}

#[test]
fn forget_and_prune_on_s3_through_faults() {
    let faults =
        Faults { slow_down_503: 40, error_500: 30, truncate: 20, put_stored_then_500: 20, ..Default::default() };
    let (env, proxy) = env_behind_proxy(faults, 11);
    let src = env.path("src");
    let ids = crate::retention::history(&env, &src, 5, 20, 5);
    env.ok(&["forget", "--keep-last", "1"]);
    let before = proxy.requests.load(Ordering::Relaxed);
    let r = env.ok(&["prune", "--max-unused", "0", "--json"]).json();
    let made = proxy.requests.load(Ordering::Relaxed) - before;
    let o = &r["outcome"];
    assert!(o["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    let counted: u64 =
        ["get", "put", "head", "list", "delete"].iter().map(|k| o["requests"][k].as_u64().unwrap()).sum();
    eprintln!("prune on S3: {counted} operations reported, {made} HTTP requests through the proxy: {}", o["requests"]);
    assert!(counted > 0 && made >= counted, "retries make more requests than operations: {counted} vs {made}");
    let d = direct(&env);
    let c = d.assert_clean();
    assert_eq!(c["obsolete_packs"], 0, "{c}");
    assert_eq!(d.ok(&["snapshots", "--json"]).json().as_array().unwrap().len(), 1);
    assert_eq!(d.ok(&["snapshots", "--json"]).json()[0]["id"], ids.last().unwrap().as_str());
    d.assert_restores(&src, "out");
}

#[test]
fn s3_backups_prunes_and_checks_at_once_lose_nothing() {
    let env = Env::s3();
    crate::retention::backups_beside_prunes(&env, &[]);
}

/// Bytes damaged in transit are fetched again before they are called damage: a restore and
/// `check --read-data` through a proxy that flips a byte in a fifth of the answers (each
/// request at most once) succeed exactly.
#[test]
fn bytes_damaged_in_transit_are_fetched_again() {
    let faults = Faults { flip_once: 200, only_method: Some("GET"), ..Default::default() };
    let (env, proxy) = env_behind_proxy(faults, 11);
    let src = env.path("src");
    make_simple_tree(&src);
    for i in 0..6 {
        std::fs::write(src.join(format!("r{i}")), noise(700 + i, 700_000)).unwrap();
    }
    env.backup(&[&src], &[]);
    // A fresh cache, so index files, snapshots and trees are fetched through the proxy too.
    let _ = std::fs::remove_dir_all(env.path("cache"));
    env.assert_restores(&src, "out");
    env.assert_clean();
    let flipped = proxy.faulted.load(Ordering::Relaxed);
    assert!(flipped >= 3, "the proxy flipped {flipped} answers");
}
