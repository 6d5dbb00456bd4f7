//! A tree blob: decoding must reject every name that could escape a restore target.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(nodes) = coffer::format::tree::decode(data) {
        for n in &nodes {
            assert!(coffer::format::tree::valid_name(&n.name));
        }
        assert_eq!(coffer::format::tree::encode(&nodes), data);
    }
});
