//! zstd compression of blobs and object payloads.
//!
//! One [`Compressor`] per worker thread keeps its zstd context (a fresh context per blob costs
//! about a third of the throughput on small blobs). A blob is stored raw when compression
//! does not make it smaller; level 0 turns compression off.

use std::cell::RefCell;

use crate::format::Compression;

/// A reusable compression context at a fixed level.
pub struct Compressor {
    ctx: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// `level` 0 means "store raw"; otherwise a zstd level (1..=22, negative for fast modes).
    pub fn new(level: i32) -> std::io::Result<Self> {
        let ctx = if level == 0 { None } else { Some(zstd::bulk::Compressor::new(level)?) };
        Ok(Compressor { ctx })
    }

    /// Appends the bytes to store to `out` and says how they were encoded. Compresses
    /// straight into `out`'s spare capacity (no intermediate copy); allocates nothing once
    /// `out` has room for the worst case.
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> Compression {
        if let Some(ctx) = self.ctx.as_mut() {
            let start = out.len();
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            let mut cursor = std::io::Cursor::new(&mut *out);
            cursor.set_position(start as u64);
            match ctx.compress_to_buffer(data, &mut cursor) {
                Ok(n) if n < data.len() => return Compression::Zstd,
                _ => out.truncate(start),
            }
        }
        out.extend_from_slice(data);
        Compression::None
    }

    /// Returns the bytes to store and how they were encoded.
    pub fn compress(&mut self, data: &[u8]) -> (Vec<u8>, Compression) {
        if let Some(ctx) = self.ctx.as_mut() {
            if let Ok(c) = ctx.compress(data) {
                if c.len() < data.len() {
                    return (c, Compression::Zstd);
                }
            }
        }
        (data.to_vec(), Compression::None)
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decodes a stored payload whose plaintext is exactly `raw_len` bytes.
pub fn decompress(data: &[u8], compression: Compression, raw_len: usize) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => {
            if data.len() != raw_len {
                return Err(std::io::Error::other("stored length differs from the recorded raw length"));
            }
            Ok(data.to_vec())
        }
        Compression::Zstd => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            let out = d.as_mut().expect("set above").decompress(data, raw_len)?;
            if out.len() != raw_len {
                return Err(std::io::Error::other("decompressed length differs from the recorded raw length"));
            }
            Ok(out)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..6) {
            let mut c = Compressor::new(level).unwrap();
            let (stored, how) = c.compress(&data);
            prop_assert!(stored.len() <= data.len());
            prop_assert_eq!(&decompress(&stored, how, data.len()).unwrap(), &data);
            let mut appended = b"prefix".to_vec();
            let how2 = c.compress_into(&data, &mut appended);
            prop_assert_eq!(how2, how);
            prop_assert_eq!(&appended[6..], &stored[..]);
        }
    }

    #[test]
    fn compressible_data_shrinks() {
        let mut c = Compressor::new(3).unwrap();
        let (stored, how) = c.compress(&[b'a'; 10000]);
        assert_eq!(how, Compression::Zstd);
        assert!(stored.len() < 100);
    }
}
