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

/// Whether the writer's two Dekker pairs use an asymmetric fence: the writer's side a compiler
/// fence (free), the rare side a `membarrier` that makes every thread of the process execute
/// a full barrier. The pairs: the writer's `end` store against a tailer's registration before
/// it sleeps (wake-ups, `seqlock::wake`), and the writer's start store against the background
/// committer's lowering of `protect_above` (`CommitState::commit`). Decided once, before the
/// first backlog exists in this process ([`init_asymmetric`]), so both sides always agree.
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

/// The writer's (light) side of both pairs: orders its `end` store before its load of the
/// waiter word, and its start store before its load of `protect_above`.
#[cfg(not(loom))]
#[inline]
pub(crate) fn writer_fence() {
    if ASYMMETRIC.load(Ordering::Relaxed) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The rare (heavy) side: a tailer's, between its registration and its load of `end`; the
/// background committer's, between lowering `protect_above` and loading the start. With the
/// asymmetric fence it forces the writer's thread through a full barrier, so a writer load
/// that missed this side's store implies the writer's earlier store is visible here.
///
/// Returns whether the pair held. Should `membarrier` ever fail after it registered (the
/// kernel only refuses unregistered commands), the process drops to symmetric fences for
/// good, but the writer may have passed its side with only a compiler fence: the caller must
/// not rely on this pairing (a tailer's sleep is bounded by its slice anyway; a commit skips
/// its turn).
#[cfg(not(loom))]
pub(crate) fn rare_side_fence() -> bool {
    if ASYMMETRIC.load(Ordering::Relaxed) {
        if crate::region::heavy_fence() {
            return true;
        }
        ASYMMETRIC.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        return false;
    }
    fence(Ordering::SeqCst);
    true
}

/// Under loom both sides are plain `SeqCst` fences (loom cannot model `membarrier`).
#[cfg(loom)]
pub(crate) fn writer_fence() {
    fence(Ordering::SeqCst);
}

/// Under loom both sides are plain `SeqCst` fences.
#[cfg(loom)]
pub(crate) fn rare_side_fence() -> bool {
    fence(Ordering::SeqCst);
    true
}

/// Under loom there is nothing to decide.
#[cfg(loom)]
pub(crate) fn init_asymmetric() {}
