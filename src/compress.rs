//! zstd compression of blobs and object payloads.
//!
//! One [`Compressor`] per worker thread keeps its zstd context (a fresh context per blob costs
//! about a third of the throughput on small blobs). A blob is stored raw when compression
//! does not make it smaller; level 0 turns compression off.
//!
//! Files in a compressed format (gzip, zstd, xz, zip, PNG, JPEG, ...; see [`plan_for_file`])
//! are stored raw without trying: zstd level 3 spends as much time on them as on text
//! (365 MB/s on one core here) to save almost nothing (1.7% on the bench tree's 128 MB of
//! them, mostly gzipped man pages). The same idea as borg's `auto` compression and
//! OpenZFS's early abort, decided from the file's first bytes instead of a trial run.

use std::cell::RefCell;

use crate::format::Compression;

/// Whether a blob's bytes are worth handing to zstd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Try zstd; keep the result if it is smaller.
    Try,
    /// Part of a file in a compressed format: store as is.
    StoreRaw,
}

/// File signatures of formats whose content is already entropy-coded, as (offset, bytes).
const COMPRESSED_SIGNATURES: &[(usize, &[u8])] = &[
    (0, b"\x1f\x8b"),           // gzip (.gz, .tgz, man pages)
    (0, b"\x28\xb5\x2f\xfd"),   // zstd
    (0, b"\xfd7zXZ\x00"),       // xz
    (0, b"\x04\x22\x4d\x18"),   // lz4 frame
    (0, b"7z\xbc\xaf\x27\x1c"), // 7-Zip
    (0, b"Rar!\x1a\x07"),       // RAR
    (0, b"\x89PNG\r\n\x1a\n"),  // PNG
    (0, b"\xff\xd8\xff"),       // JPEG
    (0, b"GIF8"),               // GIF
    (0, b"wOFF"),               // WOFF
    (0, b"wOF2"),               // WOFF2
    (0, b"OggS"),               // Ogg (Vorbis, Opus, Theora)
    (0, b"fLaC"),               // FLAC
    (0, b"\x1a\x45\xdf\xa3"),   // Matroska, WebM
    (4, b"ftyp"),               // MP4, MOV, HEIC, AVIF
    (8, b"WEBP"),               // WebP (after "RIFF" and a length)
];

/// How to store the chunks of a file that starts with `head` (its first bytes): raw for
/// the compressed formats above, else try zstd. Two are checked apart: bzip2 ("BZh" and a
/// block size digit), and zip (.jar, .docx, .odt, .apk) only when its first entry is
/// compressed (method at offset 8 not 0): zip also packs data stored as is, in large files
/// that compress (PyTorch checkpoints, NumPy `.npz`). A false match costs only space.
pub fn plan_for_file(head: &[u8]) -> Plan {
    let signed = COMPRESSED_SIGNATURES.iter().any(|(at, sig)| head.get(*at..at + sig.len()) == Some(*sig));
    let bzip2 = head.len() >= 4 && &head[..3] == b"BZh" && (b'1'..=b'9').contains(&head[3]);
    let zip = head.len() >= 10 && head.starts_with(b"PK\x03\x04") && head[8..10] != [0, 0];
    if signed || bzip2 || zip {
        Plan::StoreRaw
    } else {
        Plan::Try
    }
}

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
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>, plan: Plan) -> Compression {
        if let Some(ctx) = self.ctx.as_mut().filter(|_| plan == Plan::Try) {
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
            let how2 = c.compress_into(&data, &mut appended, Plan::Try);
            prop_assert_eq!(how2, how);
            prop_assert_eq!(&appended[6..], &stored[..]);
            let mut raw = Vec::new();
            prop_assert_eq!(c.compress_into(&data, &mut raw, Plan::StoreRaw), Compression::None);
            prop_assert_eq!(&raw, &data);
        }
    }

    #[test]
    fn compressed_formats_are_recognized_by_their_first_bytes() {
        for head in [
            &b"\x1f\x8b\x08\x00rest"[..],
            b"\x28\xb5\x2f\xfd\x04",
            b"\xfd7zXZ\x00\x00",
            b"BZh91AY&SY",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
            b"\x89PNG\r\n\x1a\n\x00",
            b"\xff\xd8\xff\xe0",
            b"\x00\x00\x00\x18ftypmp42",
            b"RIFF\x24\x00\x00\x00WEBPVP8 ",
            b"wOF2\x00\x01",
        ] {
            assert_eq!(plan_for_file(head), Plan::StoreRaw, "{head:?}");
        }
        for head in [
            &b""[..],
            b"\x1f",
            b"#!/bin/sh\n",
            b"BZh0",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b"\x7fELF\x02\x01",
            b"PK\x05\x06",
            b"PK\x03\x04\x14\x00\x00\x00\x00\x00", // zip whose first entry is stored as is
        ] {
            assert_eq!(plan_for_file(head), Plan::Try, "{head:?}");
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
