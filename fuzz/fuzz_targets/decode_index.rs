//! An index file's payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(f) = coffer::format::index::IndexFile::decode(data) {
        // Older versions decode too, and are re-encoded in the current one.
        if data.first() == Some(&coffer::format::index::VERSION) {
            assert_eq!(f.encode(), data);
        }
    }
});
