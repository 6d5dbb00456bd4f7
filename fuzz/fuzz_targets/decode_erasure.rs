//! A erasure payload (format 4).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = coffer::format::erasure::ErasureRecord::decode(data) {
        assert_eq!(r.encode(), data);
    }
});
