//! The config payload (decrypted, but written by whoever holds a key).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = coffer::format::config::Config::decode(data) {
        assert_eq!(c.encode(), data);
    }
});
