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
        Ok(u) => {
            let host = u.authority().map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h)).unwrap_or("");
            format!("{}://{host}{}", u.scheme_str().unwrap_or("?"), u.path())
        }
        Err(_) => "(not a URL)".into(),
    }
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
    let body = Bytes::from(body);
    let mut out = Delivery { attempts: 0, status: None, error: None };
    for attempt in 1..=attempts.max(1) {
        out.attempts = attempt;
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(uri.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")))
            .body(body.clone().into());
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
    fn shown_urls_hold_no_secrets() {
        assert_eq!(shown("https://user:pw@hooks.example:8443/a/b?token=x"), "https://hooks.example:8443/a/b");
        assert_eq!(shown("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
        let d = post_json("http://user:secret@127.0.0.1:9/x", b"{}".to_vec(), Duration::from_millis(300), 1);
        let e = d.error.expect("nothing listens on port 9");
        assert!(!e.contains("secret"), "{e}");
    }
}
