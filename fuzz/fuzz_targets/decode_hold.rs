//! A hold payload (format 4).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = coffer::format::hold::HoldRecord::decode(data) {
        assert_eq!(r.encode(), data);
    }
});
