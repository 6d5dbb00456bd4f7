//! A drill record's payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = coffer::format::drill::DrillRecord::decode(data) {
        assert_eq!(r.encode(), data);
    }
});
