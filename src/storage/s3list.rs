//! S3 listings that are never trusted when partial.
//!
//! `object_store` pages through ListObjectsV2 itself and stops at the first page without a
//! continuation token, whatever the page says: a page marked `IsTruncated` but carrying no
//! `NextContinuationToken` (a broken store or proxy) ends the listing early, silently, and a
//! store that hands back the same token forever makes it loop. Neither may ever happen to a
//! listing Coffer decides from (docs/storage.md, "Listings"), so:
//! - [`GuardConnector`] wraps `object_store`'s HTTP client and fails any ListObjectsV2
//!   response marked truncated without a continuation token (`object_store` does not parse
//!   `IsTruncated`, so this is the one place that can see it);
//! - [`list`] pages through the listing itself with `object_store`'s own signed requests
//!   ([`PaginatedListStore`]) and fails on a continuation token it has already sent.
//!
//! Written by hand because no crate does this: the check needs the raw response of the
//! request `object_store` signs, which only a connector sees.

use std::collections::HashSet;

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
    ReqwestConnector,
};
use object_store::list::{PaginatedListOptions, PaginatedListStore};

use super::{Listed, StorageError};

/// Makes HTTP clients whose ListObjectsV2 responses are checked (see the module docs).
#[derive(Debug, Default)]
pub struct GuardConnector;

impl HttpConnector for GuardConnector {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Guard { inner }))
    }
}

#[derive(Debug)]
struct Guard {
    inner: HttpClient,
}

#[derive(Debug, thiserror::Error)]
#[error("the store marked a page of a listing truncated without a continuation token: the listing cannot be completed")]
struct TruncatedWithoutToken;

fn is_list_request(req: &HttpRequest) -> bool {
    req.method() == http::Method::GET && req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "list-type=2"))
}

/// Whether a ListObjectsV2 body says it is truncated but names no continuation token.
fn truncated_without_token(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let truncated = text.contains("<IsTruncated>true</IsTruncated>");
    let has_token = text
        .split("<NextContinuationToken>")
        .nth(1)
        .and_then(|rest| rest.split("</NextContinuationToken>").next())
        .is_some_and(|t| !t.trim().is_empty());
    truncated && !has_token
}

#[async_trait::async_trait]
impl HttpService for Guard {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !is_list_request(&req) {
            return self.inner.execute(req).await;
        }
        let resp = self.inner.execute(req).await?;
        if !resp.status().is_success() {
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        let bytes = body.bytes().await?;
        if truncated_without_token(&bytes) {
            return Err(HttpError::new(HttpErrorKind::Decode, TruncatedWithoutToken));
        }
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::from(bytes)))
    }
}

/// Every object under `base` + `prefix` + `/`, with paths relative to `base` (the
/// repository's prefix in the bucket, empty or ending in `/`).
pub async fn list(s3: &object_store::aws::AmazonS3, base: &str, prefix: &str) -> Result<Vec<Listed>, StorageError> {
    let full = format!("{base}{prefix}/");
    let fail = |e: object_store::Error| StorageError::from_os("list", prefix, e);
    let mut token: Option<String> = None;
    let mut sent: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    loop {
        let opts = PaginatedListOptions { page_token: token.clone(), ..Default::default() };
        let page = s3.list_paginated(Some(&full), opts).await.map_err(fail)?;
        for m in &page.result.objects {
            let mut l = Listed::from_meta(m);
            match l.path.strip_prefix(base) {
                Some(rel) => l.path = rel.to_string(),
                None => continue,
            }
            out.push(l);
        }
        match page.page_token {
            None => break,
            Some(t) if !sent.insert(t.clone()) => {
                return Err(StorageError::Location(
                    format!("listing of {prefix}/"),
                    format!("the store sent continuation token {t:?} a second time: the listing cannot be completed"),
                ))
            }
            Some(t) => token = Some(t),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_marks_are_read() {
        let ok = b"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>abc</NextContinuationToken></ListBucketResult>";
        let last = b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        let bad =
            b"<ListBucketResult><Contents><Key>a</Key></Contents><IsTruncated>true</IsTruncated></ListBucketResult>";
        let empty_token = b"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken></NextContinuationToken></ListBucketResult>";
        assert!(!truncated_without_token(ok));
        assert!(!truncated_without_token(last));
        assert!(truncated_without_token(bad));
        assert!(truncated_without_token(empty_token));
    }
}
