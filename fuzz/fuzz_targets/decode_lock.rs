//! A lock object's payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(l) = coffer::format::lock::Lock::decode(data) {
        assert_eq!(l.encode(), data);
    }
});
