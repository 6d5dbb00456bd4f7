//! A pack's plaintext trailer (read before anything is authenticated).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(n) = coffer::format::pack::decode_trailer(data) {
        assert_eq!(&coffer::format::pack::encode_trailer(n)[..], data);
    }
});
