//! Retention: which snapshots to keep (`forget`, restic's policy in [`policy`]) and
//! reclaiming the space of what nothing needs any more (`prune`).

pub mod forget;
pub mod governance;
pub mod policy;
pub mod prune;
pub mod rewrite;

#[cfg(test)]
mod interleave_tests;
