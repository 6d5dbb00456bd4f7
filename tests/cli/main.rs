//! End-to-end tests: the built `coffer` binary on real temporary directories.
//!
//! One integration-test binary (this one) keeps link time down; each module covers one area.
//! Tests that need root (owners, device nodes, mounting a tiny tmpfs) say so on stderr and
//! check what they can when not root; CI runs as root, so there they run in full.

mod backup;
mod catalog;
mod check;
mod containment;
mod copy;
mod corruption;
mod crash;
mod drill;
mod faults;
mod fixture;
mod governance;
mod inputs;
mod keys;
mod limits;
mod objectlock;
mod polish;
mod repair;
mod restore;
mod retention;
mod s3;
mod storage;
mod support;
mod unattended;
