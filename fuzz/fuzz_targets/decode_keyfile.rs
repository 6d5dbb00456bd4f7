//! Key files are read before any authentication: decoding must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(k) = coffer::format::keyfile::KeyFile::decode(data) {
        assert_eq!(coffer::format::keyfile::KeyFile::decode(&k.encode()).unwrap(), k);
    }
});
