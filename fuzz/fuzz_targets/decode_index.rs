//! An index file's payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(f) = coffer::format::index::IndexFile::decode(data) {
        assert_eq!(f.encode(), data);
    }
});
