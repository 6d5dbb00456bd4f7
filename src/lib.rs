//! Coffer: encrypted, deduplicated backup and disaster recovery.
//!
//! Layers (edges point down only): `cli` -> `backup`, `restore` -> `repo`, `source` ->
//! `storage`, `format`, `crypto`, `compress`, `chunker` -> `id`. See ../docs/ and
//! docs/format.md (normative) for the repository format.

pub mod backup;
pub mod catalog;
pub mod chunker;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod copy;
pub mod crypto;
pub mod format;
pub mod id;
pub mod progress;
pub mod repo;
pub mod restore;
pub mod source;
pub mod storage;
pub mod timespec;
