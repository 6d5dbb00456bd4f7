//! `repair`: put a damaged repository back in order without losing anything readable.
//!
//! - [`index`]: a new index from the packs themselves;
//! - [`snapshots`]: new snapshots in which only what cannot be read is replaced;
//! - [`packs`]: every readable blob of damaged packs copied into new packs.
//!
//! Each computes a plan first (printed, and all a `--dry-run` does), then carries it out in
//! an order that a kill -9 at any moment leaves a valid repository, and each runs as an
//! exclusive session, like prune (a second one, or a prune, refuses: exit 11).

pub mod index;
pub mod packs;
pub mod snapshots;
