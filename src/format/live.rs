//! The live page: the writer's current state, updated with plain atomic stores on every
//! append and never synced on purpose.
//!
//! After a process crash the page cache still holds it, so recovery on the same boot trusts
//! it (nothing `append` returned is lost). After an OS crash or power loss its boot ID no
//! longer matches and recovery ignores it, falling back to verified, committed data.

/// Field offsets within the live page. All fields are 8-byte aligned `u64`s accessed atomically.
pub(crate) const L_MAGIC: usize = 0;
/// Kernel boot ID, first half.
pub(crate) const L_BOOT0: usize = L_MAGIC + 8;
/// Kernel boot ID, second half.
pub(crate) const L_BOOT1: usize = L_BOOT0 + 8;
/// Epoch of the history the start/end below extend.
pub(crate) const L_EPOCH: usize = L_BOOT1 + 8;
/// `first_offset` (oldest byte held). Published before overwriting older bytes.
pub(crate) const L_START: usize = L_EPOCH + 8;
/// `offset` (newest byte). Published after the bytes are in place.
pub(crate) const L_END: usize = L_START + 8;
/// Sequence counter for rare history changes (odd while one is in progress).
pub(crate) const L_CHANGE: usize = L_END + 8;
/// Durable (committed) offset, for observers.
pub(crate) const L_DURABLE: usize = L_CHANGE + 8;
/// Futex word of in-process tailers: bit 0 set while one may be asleep, wake-ups counted
/// above it; the writer wakes nobody when nobody waits (see `seqlock::wake`).
pub(crate) const L_WAITERS: usize = L_DURABLE + 8;
/// Non-zero once a resize replaced this file: its writer went on in a new file at the same
/// path, so this ring no longer grows. Set only on the replaced file (no longer linked at the
/// path), after the directory sync that made the replacement durable; cleared by every open.
/// Readers report it as `Moved`.
pub(crate) const L_MOVED: usize = L_WAITERS + 8;
/// Encoded length.
pub(crate) const LIVE_LEN: usize = L_MOVED + 8;

/// Magic value of an initialised live page ("DBLIVE01" little-endian).
pub(crate) const LIVE_MAGIC: u64 = u64::from_le_bytes(*b"DBLIVE01");

const _: () =
    assert!(L_START.is_multiple_of(8) && L_END.is_multiple_of(8) && L_CHANGE.is_multiple_of(8));
