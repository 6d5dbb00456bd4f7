//! Retention (`coffer forget`): which snapshots a policy keeps. Pure; see [`policy`].

pub mod policy;
