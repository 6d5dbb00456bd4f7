//! A snapshot manifest's payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = coffer::format::snapshot::Snapshot::decode(data) {
        // Older versions decode too, and are re-encoded in the current one.
        if data.first() == Some(&coffer::format::snapshot::VERSION) {
            assert_eq!(s.encode(), data);
        }
    }
});
