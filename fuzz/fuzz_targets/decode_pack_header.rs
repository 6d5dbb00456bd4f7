//! A pack's decrypted header.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(e) = coffer::format::pack::decode_header(data) {
        assert_eq!(coffer::format::pack::encode_header(&e), data);
    }
});
