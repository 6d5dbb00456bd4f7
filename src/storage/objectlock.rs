//! S3 Object Lock (WORM): the three requests `object_store` does not make.
//!
//! - `PUT` with `Content-MD5` and the `x-amz-object-lock-*` headers writes an object locked
//!   (and is how Coffer writes into a bucket with a default retention, where S3 refuses an
//!   upload without `Content-MD5`, which `object_store` does not send);
//! - `PUT ?retention` (PutObjectRetention) extends an object's lock (prune, for what kept
//!   snapshots still need);
//! - `HEAD` reads an object's `x-amz-object-lock-mode` and `-retain-until-date` headers
//!   (moto does not implement GetObjectRetention; every S3 returns them on HEAD);
//! - `GET ?object-lock` checks that the bucket has Object Lock enabled (`init`).
//!
//! Why by hand, and how: `object_store` sends no Object Lock headers and has no retention
//! call, and adding headers in an HTTP connector would break the request's signature. So
//! these requests are built here and signed with `object_store`'s own SigV4 signer
//! (`AwsAuthorizer`, public API) using the store's own credential provider, and sent
//! through an HTTP client from `object_store`'s reqwest connector: the same credentials,
//! endpoint, TLS and proxy settings as every other request, without a second AWS SDK. S3
//! requires `Content-MD5` on PutObjectRetention (the `md-5` and `base64` crates).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, ReqwestConnector};

use super::StorageError;
use crate::format::config::{LockMode, ObjectLock};

/// A response's status, headers and body.
type Response = (http::StatusCode, http::HeaderMap, Bytes);

/// Signs and sends Object Lock requests for one bucket.
pub struct LockApi {
    s3: Arc<AmazonS3>,
    client: HttpClient,
    /// `scheme://host[/bucket]`: where object keys are appended.
    base: String,
    region: String,
    /// The repository's prefix in the bucket: empty or ending in `/`.
    prefix: String,
}

/// An object's lock, as S3 reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    /// Unix nanoseconds.
    pub until_ns: i64,
}

/// Percent-encodes a key for a URL path, `/` kept (RFC 3986 unreserved characters as is).
fn encode_key(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    for b in k.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn err(op: &'static str, path: &str, msg: impl std::fmt::Display) -> StorageError {
    let m = msg.to_string();
    let m = match super::hint_for(&m) {
        Some(h) => format!("{h}; {m}"),
        None => m,
    };
    StorageError::Location(format!("{op} {path}"), m)
}

impl LockApi {
    /// For the bucket of `s3` (built by `builder`, whose settings give endpoint and style).
    pub fn new(
        s3: Arc<AmazonS3>,
        builder: &object_store::aws::AmazonS3Builder,
        options: &object_store::ClientOptions,
        prefix: String,
    ) -> Result<LockApi, StorageError> {
        let get = |k: AmazonS3ConfigKey| builder.get_config_value(&k);
        let bucket = get(AmazonS3ConfigKey::Bucket).unwrap_or_default();
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let base = match get(AmazonS3ConfigKey::Endpoint) {
            Some(e) if virtual_hosted => {
                let (scheme, host) = e.split_once("://").unwrap_or(("https", e.as_str()));
                format!("{scheme}://{bucket}.{}", host.trim_end_matches('/'))
            }
            Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
            None if virtual_hosted => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            None => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let client = ReqwestConnector::default().connect(options).map_err(|e| err("connect", &base, e))?;
        Ok(LockApi { s3, client, base, region, prefix })
    }

    fn url(&self, path: &str, query: &str) -> String {
        format!("{}/{}{}", self.base, encode_key(&format!("{}{path}", self.prefix)), query)
    }

    async fn send(&self, op: &'static str, path: &str, req: HttpRequest) -> Result<Response, StorageError> {
        self.send_with(op, path, req, true).await
    }

    /// Signs (hashing the body into the signature if `sign_payload`) and sends a request.
    async fn send_with(
        &self,
        op: &'static str,
        path: &str,
        mut req: HttpRequest,
        sign_payload: bool,
    ) -> Result<Response, StorageError> {
        let cred = self.s3.credentials().get_credential().await.map_err(|e| err(op, path, e))?;
        AwsAuthorizer::new(&cred, "s3", &self.region)
            .with_sign_payload(sign_payload)
            .try_authorize(&mut req, None)
            .map_err(|e| err(op, path, e))?;
        let resp = self.client.execute(req).await.map_err(|e| err(op, path, e))?;
        let (parts, body) = resp.into_parts();
        let bytes = body.bytes().await.map_err(|e| err(op, path, e))?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// PutObjectRetention: locks `path` in `mode` until `until_ns` (it can only be extended).
    pub async fn set_retention(&self, path: &str, mode: LockMode, until_ns: i64) -> Result<(), StorageError> {
        let until = crate::clock::from_unix_ns(until_ns).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>",
            mode.as_str()
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes()));
        let req = http::Request::builder()
            .method(http::Method::PUT)
            .uri(self.url(path, "?retention"))
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(body.into())
            .map_err(|e| err("retention", path, e))?;
        let (status, _, bytes) = self.send("retention", path, req).await?;
        if status.is_success() {
            return Ok(());
        }
        if status == http::StatusCode::NOT_FOUND {
            return Err(StorageError::NotFound { path: path.to_string() });
        }
        Err(err("retention", path, format!("{status}: {}", String::from_utf8_lossy(&bytes))))
    }

    /// PutObject of a new object, create-only (`If-None-Match: *`), with `Content-MD5` (which
    /// S3 demands of every upload into a bucket with a default retention, and which
    /// `object_store` does not send) and, given `lock`, the object's lock in the same request.
    pub async fn put_new(&self, path: &str, data: Bytes, lock: Option<(LockMode, i64)>) -> Result<(), StorageError> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(&data));
        let mut b = http::Request::builder()
            .method(http::Method::PUT)
            .uri(self.url(path, ""))
            .header("content-md5", md5)
            .header("content-length", data.len())
            .header("if-none-match", "*");
        if let Some((mode, until_ns)) = lock {
            let until = crate::clock::from_unix_ns(until_ns).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            b = b.header("x-amz-object-lock-mode", mode.as_str()).header("x-amz-object-lock-retain-until-date", until);
        }
        let req = b.body(data.into()).map_err(|e| err("write", path, e))?;
        // The body is not hashed for the signature: Content-MD5 covers it.
        let (status, _, bytes) = self.send_with("write", path, req, false).await?;
        match status.as_u16() {
            200..=299 => Ok(()),
            412 => Err(StorageError::AlreadyExists { path: path.to_string() }),
            _ => Err(err("write", path, format!("{status}: {}", String::from_utf8_lossy(&bytes)))),
        }
    }

    /// The lock of `path`, if it has one.
    pub async fn retention(&self, path: &str) -> Result<Option<Retention>, StorageError> {
        let req = http::Request::builder()
            .method(http::Method::HEAD)
            .uri(self.url(path, ""))
            .body(Bytes::new().into())
            .map_err(|e| err("head", path, e))?;
        let (status, headers, _) = self.send("head", path, req).await?;
        if status == http::StatusCode::NOT_FOUND {
            return Err(StorageError::NotFound { path: path.to_string() });
        }
        if !status.is_success() {
            return Err(err("head", path, status));
        }
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mode = match h("x-amz-object-lock-mode").map(|m| m.to_ascii_uppercase()).as_deref() {
            Some("GOVERNANCE") => LockMode::Governance,
            Some("COMPLIANCE") => LockMode::Compliance,
            _ => return Ok(None),
        };
        let Some(until) = h("x-amz-object-lock-retain-until-date") else { return Ok(None) };
        let ts: jiff::Timestamp =
            until.parse().map_err(|e| err("head", path, format!("retain-until date {until:?}: {e}")))?;
        Ok(Some(Retention { mode, until_ns: crate::clock::to_unix_ns(ts) }))
    }

    /// Whether the bucket exists (HeadBucket: 404 means it does not; 403, that it exists
    /// but these credentials may not look at it).
    pub async fn bucket_exists(&self) -> Result<bool, StorageError> {
        let req = http::Request::builder()
            .method(http::Method::HEAD)
            .uri(if self.base.matches('/').count() > 2 { self.base.clone() } else { format!("{}/", self.base) })
            .body(Bytes::new().into())
            .map_err(|e| err("head bucket", "", e))?;
        let (status, _, _) = self.send("head bucket", "", req).await?;
        Ok(status != http::StatusCode::NOT_FOUND)
    }

    /// The bucket's name and where it is looked for, for messages.
    pub fn bucket_url(&self) -> &str {
        &self.base
    }

    /// Whether the bucket has Object Lock enabled.
    pub async fn bucket_enabled(&self) -> Result<bool, StorageError> {
        let req = http::Request::builder()
            .method(http::Method::GET)
            .uri(format!(
                "{}?object-lock",
                if self.base.matches('/').count() > 2 { self.base.clone() } else { format!("{}/", self.base) }
            ))
            .body(Bytes::new().into())
            .map_err(|e| err("object-lock", "", e))?;
        let (status, _, body) = self.send("object-lock", "", req).await?;
        let text = String::from_utf8_lossy(&body);
        if text.contains("<Code>NoSuchBucket</Code>") {
            return Err(err("object-lock", &self.base, "no such bucket: make it first, with Object Lock enabled"));
        }
        Ok(status.is_success() && text.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>"))
    }
}

/// The retain-until date of an object written now under `lock`, by this client's clock:
/// the storage's clock is not known before the write (prune later extends from the storage's).
pub fn until_from_now(lock: &ObjectLock) -> i64 {
    crate::clock::to_unix_ns(crate::clock::now())
        .saturating_add((lock.retention_s as i64).saturating_mul(1_000_000_000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_encoded_for_urls() {
        assert_eq!(super::encode_key("p q/data/ab/x"), "p%20q/data/ab/x");
        assert_eq!(super::encode_key("a+b/é"), "a%2Bb/%C3%A9");
    }
}
