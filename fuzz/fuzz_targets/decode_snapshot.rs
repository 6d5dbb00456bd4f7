//! A snapshot manifest's payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = coffer::format::snapshot::Snapshot::decode(data) {
        assert_eq!(s.encode(), data);
    }
});
