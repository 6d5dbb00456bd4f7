//! One storage conformance suite, run against every kind of store: a local folder, an
//! in-memory store (the unit tests' stand-in), and a real S3 server (moto) on loopback.

use std::sync::Arc;

use coffer::storage::{S3Options, StorageError, Store};

use crate::support::*;

/// The contract of docs/storage.md. `exclusive` stores guarantee that of several writers
/// racing to create one name exactly one wins; a local store without hard links only that
/// the object is one writer's whole write (only `config` has a name two writers could pick).
fn conformance(s: &Store, exclusive: bool) {
    s.put_new("a/x", b"one".to_vec()).unwrap();
    assert!(matches!(s.put_new("a/x", b"two".to_vec()), Err(StorageError::AlreadyExists { .. })), "write-once");
    assert_eq!(&s.get("a/x").unwrap()[..], b"one", "the first write wins");
    assert_eq!(&s.get_range("a/x", 1..3).unwrap()[..], b"ne");
    assert!(s.get_range("a/x", 1..10).is_err(), "a range past the end is an error, not a short read");
    assert_eq!(s.size("a/x").unwrap(), 3);
    assert!(matches!(s.get("a/missing"), Err(StorageError::NotFound { .. })));
    assert!(matches!(s.get_range("a/missing", 0..1), Err(StorageError::NotFound { .. })));
    s.put_new("a/y", vec![]).unwrap();
    s.put_new("b/z", vec![1]).unwrap();
    let big = noise(3, 5 << 20);
    s.put_new("b/big", big.clone()).unwrap();
    assert_eq!(&s.get("b/big").unwrap()[..], &big[..]);
    assert_eq!(&s.get_range("b/big", 4 << 20..(4 << 20) + 10).unwrap()[..], &big[4 << 20..(4 << 20) + 10]);
    let names: Vec<String> = s.list("a").unwrap().into_iter().map(|l| l.path).collect();
    assert_eq!(names, vec!["a/x".to_string(), "a/y".to_string()]);
    let b: Vec<(String, u64)> = s.list("b").unwrap().into_iter().map(|l| (l.path, l.size)).collect();
    assert_eq!(b, vec![("b/big".to_string(), 5 << 20), ("b/z".to_string(), 1)]);
    assert!(s.list("nothing").unwrap().is_empty());
    s.delete("a/x").unwrap();
    assert!(matches!(s.get("a/x"), Err(StorageError::NotFound { .. })));
    // Racing conditional creates of one name.
    let results = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8u8).map(|i| sc.spawn(move || (i, s.put_new("race", vec![i; 100_000])))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let winners: Vec<u8> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
    for (_, r) in &results {
        assert!(matches!(r, Ok(()) | Err(StorageError::AlreadyExists { .. })), "{r:?}");
    }
    let stored = s.get("race").unwrap();
    assert!(stored.len() == 100_000 && stored.iter().all(|b| *b == stored[0]), "a torn object");
    assert!(winners.contains(&stored[0]), "the stored object is a winner's");
    if exclusive {
        assert_eq!(winners.len(), 1, "exactly one of 8 concurrent creates wins");
    }
}

#[test]
fn local_store_meets_the_contract() {
    let d = tempfile::tempdir().unwrap();
    conformance(&Store::local(&d.path().join("repo"), true, false).unwrap(), true);
}

#[test]
fn local_store_without_hard_links_meets_the_contract() {
    let d = tempfile::tempdir().unwrap();
    conformance(&Store::local(&d.path().join("repo"), true, true).unwrap(), false);
}

#[test]
fn memory_store_meets_the_contract() {
    conformance(&Store::from_object_store(Arc::new(object_store::memory::InMemory::new()), "mem".into()), true);
}

#[test]
fn s3_store_meets_the_contract() {
    let s3 = s3_server();
    let bucket = s3.new_bucket();
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let opts = S3Options {
        endpoint: Some(s3.endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: true,
        ..Default::default()
    };
    conformance(&Store::s3(&format!("s3://{bucket}/some/prefix"), &opts).unwrap(), true);
}

#[test]
fn s3_store_behind_a_faulty_proxy_meets_the_contract() {
    use crate::faults::{FaultProxy, Faults};
    let s3 = s3_server();
    let bucket = s3.new_bucket();
    let faults =
        Faults { slow_down_503: 80, error_500: 50, truncate: 50, put_stored_then_500: 80, ..Default::default() };
    let proxy = FaultProxy::start(&s3.endpoint, faults, 11);
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let opts = S3Options {
        endpoint: Some(proxy.endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: true,
        retries: 10,
        ..Default::default()
    };
    conformance(&Store::s3(&format!("s3://{bucket}/faulty"), &opts).unwrap(), true);
    assert!(proxy.faulted.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
