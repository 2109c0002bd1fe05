//! The fences of the publication protocol, in one place so that `cfg(loom)` swaps in loom's.
//!
//! The protocol code ([`crate::seqlock`]) issues every fence through this module and every
//! atomic access through its `Memory` trait. In the engine the words are `std` atomics in the
//! shared mapping (so other processes see them); in the loom model (`tests/loom.rs`, built
//! with `RUSTFLAGS="--cfg loom"`) they are loom's atomics and these fences are loom's, so
//! loom explores every interleaving and every stale value the memory model allows.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, fence};
pub use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::fence;
