//! The plaintext header of config, index and snapshot objects.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((h, rest)) = coffer::format::envelope::Header::decode(data) {
        assert_eq!(&data[coffer::format::envelope::HEADER_LEN..], rest);
        assert_eq!(&h.encode()[..], &data[..coffer::format::envelope::HEADER_LEN]);
    }
});
