//! POSTs a JSON document to a webhook (`--notify URL`): the HTTP client `object_store`
//! already brings (reqwest with rustls), so notifications need no second TLS stack.
//!
//! Each attempt has a short timeout; failures (no connection, a timeout, a status other than
//! 2xx) are retried a few times with a growing pause. The caller decides what a final
//! failure means: for a backup it is a warning, never a failed backup.

use std::time::Duration;

use bytes::Bytes;
use object_store::client::{HttpConnector, ReqwestConnector};

/// How one notification went.
#[derive(Debug)]
pub struct Delivery {
    pub attempts: u32,
    /// The final HTTP status, if a response came.
    pub status: Option<u16>,
    /// Why the last attempt failed; `None` when delivered.
    pub error: Option<String>,
}

/// A URL for messages and logs: without its `user:password@` and its query (either can hold
/// a token).
pub fn shown(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str().is_some() => {
            let host = u.authority().map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h)).unwrap_or("");
            format!("{}://{host}{}", u.scheme_str().unwrap_or("?"), u.path())
        }
        _ => redacted(url),
    }
}

/// Any text shaped like a URL, with what sits between `://` and the last `@` of the
/// authority replaced by `***` (for URLs too broken to parse) and the query left out.
pub fn redacted(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    if let Some(i) = url.find("://") {
        let rest = &url[i + 3..];
        let end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{}://***@{}", &url[..i], &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// A webhook URL for the command line and profiles: http or https, with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let ok =
        url.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(format!("{}: not a valid http:// or https:// URL", redacted(url)))
    }
}

/// The URL without its `user:password@`, and that as an `Authorization: Basic` value
/// (percent-escapes in it decoded), if it has one.
fn split_credentials(uri: &http::Uri) -> (http::Uri, Option<String>) {
    use base64::Engine as _;
    let Some(auth) = uri.authority() else { return (uri.clone(), None) };
    let Some((user, host)) = auth.as_str().rsplit_once('@') else { return (uri.clone(), None) };
    let mut parts = uri.clone().into_parts();
    match host.parse::<http::uri::Authority>() {
        Ok(a) => parts.authority = Some(a),
        Err(_) => return (uri.clone(), None),
    }
    let Ok(bare) = http::Uri::from_parts(parts) else { return (uri.clone(), None) };
    let decoded = percent_decode(user);
    (bare, Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(decoded))))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Sends `body` (JSON) to `url` by POST, up to `attempts` times. The error never holds the
/// URL's credentials.
pub fn post_json(url: &str, body: Vec<u8>, timeout: Duration, attempts: u32) -> Delivery {
    let mut d = post(url, body, timeout, attempts);
    if let Some(user) = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().and_then(|a| a.as_str().rsplit_once('@').map(|(user, _)| user.to_string())))
    {
        d.error = d.error.map(|e| e.replace(&format!("{user}@"), "***@"));
    }
    d
}

fn post(url: &str, body: Vec<u8>, timeout: Duration, attempts: u32) -> Delivery {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Delivery { attempts: 0, status: None, error: Some(format!("not a URL ({e})")) },
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Delivery { attempts: 0, status: None, error: Some("give an http:// or https:// URL".into()) };
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return Delivery { attempts: 0, status: None, error: Some(format!("no runtime: {e}")) },
    };
    let options =
        object_store::ClientOptions::new().with_allow_http(true).with_timeout(timeout).with_connect_timeout(timeout);
    let client = match ReqwestConnector::default().connect(&options) {
        Ok(c) => c,
        Err(e) => return Delivery { attempts: 0, status: None, error: Some(e.to_string()) },
    };
    // user:password@ in the URL is sent as basic authentication, never in the request line.
    let (uri, basic) = split_credentials(&uri);
    let body = Bytes::from(body);
    let mut out = Delivery { attempts: 0, status: None, error: None };
    for attempt in 1..=attempts.max(1) {
        out.attempts = attempt;
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(uri.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")));
        if let Some(b) = &basic {
            req = req.header("authorization", b);
        }
        let req = req.body(body.clone().into());
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        let sent = rt.block_on(async { tokio::time::timeout(timeout, client.execute(req)).await });
        match sent {
            Ok(Ok(resp)) if resp.status().is_success() => {
                out.status = Some(resp.status().as_u16());
                out.error = None;
                return out;
            }
            Ok(Ok(resp)) => {
                out.status = Some(resp.status().as_u16());
                out.error = Some(format!("the server answered {}", resp.status()));
            }
            Ok(Err(e)) => out.error = Some(e.to_string()),
            Err(_) => out.error = Some(format!("no answer within {}s", timeout.as_secs_f64())),
        }
        if attempt < attempts {
            std::thread::sleep(Duration::from_millis(500 << (attempt - 1).min(4)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_basic_authentication() {
        let (bare, basic) = split_credentials(&"http://us%40er:p%3Aw@h.example:81/x?q=1".parse().unwrap());
        assert_eq!(bare.to_string(), "http://h.example:81/x?q=1");
        assert_eq!(basic.as_deref(), Some("Basic dXNAZXI6cDp3"));
        assert_eq!(redacted("http://u:SECRET@bad host/x?t=1"), "http://***@bad host/x");
        assert!(check_url("http://u:SECRET@bad host/x").unwrap_err().contains("***@bad host"));
        assert!(check_url("ftp://h/x").is_err() && check_url("https://h/x").is_ok());
    }

    #[test]
    fn shown_urls_hold_no_secrets() {
        assert_eq!(shown("https://user:pw@hooks.example:8443/a/b?token=x"), "https://hooks.example:8443/a/b");
        assert_eq!(shown("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
        let d = post_json("http://user:secret@127.0.0.1:9/x", b"{}".to_vec(), Duration::from_millis(300), 1);
        let e = d.error.expect("nothing listens on port 9");
        assert!(!e.contains("secret"), "{e}");
    }
}
