//! Pure bytes <-> structs for every structure of the repository format.
//!
//! Nothing here does I/O or cryptography: encryption wraps these plaintexts in `crypto`, and
//! `repo` moves them to and from storage. docs/format.md is the normative description; the
//! constants here cite its sections. Every decoder is total (returns an error, never panics)
//! and has a proptest round trip and a cargo-fuzz target.

pub mod audit;
pub mod codec;
pub mod config;
pub mod drill;
pub mod envelope;
pub mod erasure;
pub mod hold;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod pack;
pub mod policy;
pub mod snapshot;
pub mod tree;

/// A structure could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    #[error("truncated data")]
    Truncated,
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("bad magic bytes (not a Coffer {0})")]
    BadMagic(&'static str),
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: u8 },
    #[error("invalid data: {0}")]
    Invalid(&'static str),
    #[error("unknown {what} {value}")]
    UnknownKind { what: &'static str, value: u8 },
}

impl FormatError {
    /// Whether the structure is one a newer release of the format wrote (an unknown version
    /// or kind) rather than damage: after authentication succeeded, only a key holder can
    /// have written it, so it is refused, never worked around as damage.
    pub fn is_newer_format(&self) -> bool {
        matches!(self, FormatError::UnsupportedVersion { .. } | FormatError::UnknownKind { .. })
    }
}

/// Kinds of blob stored in packs (docs/format.md, "Blob types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobType {
    /// A chunk of file content.
    Data = 0,
    /// An encoded directory tree.
    Tree = 1,
}

impl BlobType {
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::Tree),
            _ => Err(FormatError::Invalid("unknown blob type")),
        }
    }
}

/// How a blob or object payload was compressed before encryption (docs/format.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is (compression did not shrink it, or it was off).
    None = 0,
    /// A single zstd frame.
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(FormatError::Invalid("unknown compression")),
        }
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    //! proptest strategies shared by the codec round-trip tests.
    use proptest::prelude::*;

    pub fn id() -> impl Strategy<Value = [u8; 32]> {
        proptest::array::uniform32(any::<u8>())
    }
    pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }
    pub fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
    }
}
