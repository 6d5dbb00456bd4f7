//! Decompression of stored blobs: the first 4 bytes give the claimed raw length.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let raw_len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize % (1 << 24);
    let how = if data[4] & 1 == 0 { coffer::format::Compression::None } else { coffer::format::Compression::Zstd };
    if let Ok(out) = coffer::compress::decompress(&data[5..], how, raw_len) {
        assert_eq!(out.len(), raw_len);
    }
});
