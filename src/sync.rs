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

/// Whether the wake-up protocol uses an asymmetric fence: the writer's side a compiler fence
/// (free), the rare sleeper's side a `membarrier` that makes every thread of the process
/// execute a full barrier. Decided once, before the first backlog exists in this process
/// ([`init_asymmetric`]), so both sides always agree.
#[cfg(not(loom))]
static ASYMMETRIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Decides [`ASYMMETRIC`] once per process; called before any backlog state is shared.
#[cfg(not(loom))]
pub(crate) fn init_asymmetric() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let ok = std::env::var_os("DURABLE_BACKLOG_SYMMETRIC_FENCE").is_none()
            && crate::region::register_heavy_fence();
        ASYMMETRIC.store(ok, Ordering::SeqCst);
    });
}

/// The writer's side of the wake-up Dekker pair: orders its `end` store before its load of
/// the waiter count.
#[cfg(not(loom))]
#[inline]
pub(crate) fn writer_fence() {
    if ASYMMETRIC.load(Ordering::Relaxed) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's side: orders its registration before its load of `end`, and — with the
/// asymmetric fence — forces the writer's thread through a full barrier, so that a writer
/// load of the waiter word that missed the registration implies its `end` store is visible.
///
/// Should `membarrier` ever fail after it registered, the process drops to symmetric fences
/// for good: the writer's next fence is a full one, and this wait, whose pair was not, is
/// bounded by the waiter's sleep slice.
#[cfg(not(loom))]
pub(crate) fn waiter_fence() {
    if ASYMMETRIC.load(Ordering::Relaxed) && crate::region::heavy_fence() {
        return;
    }
    ASYMMETRIC.store(false, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// Under loom both sides are plain `SeqCst` fences (loom cannot model `membarrier`).
#[cfg(loom)]
pub(crate) fn writer_fence() {
    fence(Ordering::SeqCst);
}

/// Under loom both sides are plain `SeqCst` fences.
#[cfg(loom)]
pub(crate) fn waiter_fence() {
    fence(Ordering::SeqCst);
}

/// Under loom there is nothing to decide.
#[cfg(loom)]
pub(crate) fn init_asymmetric() {}
