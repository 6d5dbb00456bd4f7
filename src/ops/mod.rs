//! Unattended operation: what `coffer run` needs around the commands it runs (metrics for
//! node_exporter, the per-profile run lock and state, hooks, schedules).

pub mod child;
pub mod hooks;
pub mod metrics;
pub mod runlock;
pub mod schedule;

pub use metrics::write_atomic;
