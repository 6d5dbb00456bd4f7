//! Coffer: encrypted, deduplicated backup and disaster recovery.
//!
//! Layers (edges point down only): `cli` -> `backup`, `restore` -> `repo`, `source` ->
//! `storage`, `format`, `crypto`, `compress`, `chunker` -> `id`. See ../docs/ and
//! docs/format.md (normative) for the repository format.
//!
//! Without the default `app` feature only `format`, `compress` and `id` are built: the
//! pure codecs, for the fuzz targets.

#[cfg(feature = "app")]
pub mod backup;
#[cfg(feature = "app")]
pub mod catalog;
#[cfg(feature = "app")]
pub mod chunker;
#[cfg(feature = "app")]
pub mod cli;
#[cfg(feature = "app")]
pub mod clock;
pub mod compress;
#[cfg(feature = "app")]
pub mod copy;
#[cfg(feature = "app")]
pub mod crypto;
#[cfg(feature = "app")]
pub mod drill;
#[cfg(feature = "app")]
pub mod dump;
#[cfg(feature = "app")]
pub mod fdlimit;
pub mod format;
pub mod id;
#[cfg(feature = "app")]
pub mod mount;
#[cfg(feature = "app")]
pub mod ops;
#[cfg(feature = "app")]
pub mod progress;
#[cfg(feature = "app")]
pub mod repair;
#[cfg(feature = "app")]
pub mod repo;
#[cfg(feature = "app")]
pub mod restore;
#[cfg(feature = "app")]
pub mod retention;
#[cfg(feature = "app")]
pub mod source;
#[cfg(feature = "app")]
pub mod storage;
#[cfg(feature = "app")]
pub mod timespec;
