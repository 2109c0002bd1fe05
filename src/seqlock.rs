//! The publication protocol's code: what the single writer publishes, and how a reader copies
//! and validates (the protocol is described at the top of `reader.rs`).
//!
//! Everything here is generic over [`Memory`], the words and ring bytes the protocol runs on,
//! so the engine (a shared file mapping) and the loom model of `tests/loom.rs` run this same
//! code. Fences come from [`crate::sync`], which loom swaps out.

use std::time::Duration;

use crate::read_error::TailError;
use crate::sync::{Ordering, fence, rare_side_fence, writer_fence};

/// The published words of the live page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// Oldest offset held.
    Start,
    /// Newest offset written.
    End,
    /// History-change counter: odd while a change is in progress.
    Change,
    /// The futex word tailers sleep on: bit 0 is set while an in-process tailer may be
    /// asleep (registered since the writer's last wake-up); the bits above count wake-ups.
    Waiters,
    /// Not in the live page but in the writer's process: the commit protection. The writer
    /// takes the commit lock before overwriting bytes below a start above it (see
    /// [`must_protect`]).
    Protect,
}

/// The memory the protocol runs on: four atomic words and a ring of bytes.
pub trait Memory {
    /// Atomic load of `w`.
    fn load(&self, w: Word, order: Ordering) -> u64;
    /// Atomic store to `w`.
    fn store(&self, w: Word, v: u64, order: Ordering);
    /// Atomic add to `w`, returning the previous value.
    fn fetch_add(&self, w: Word, v: u64, order: Ordering) -> u64;
    /// Atomic bitwise or into `w`, returning the previous value.
    fn fetch_or(&self, w: Word, v: u64, order: Ordering) -> u64;
    /// Atomic minimum of `w` and `v` into `w`, returning the previous value.
    fn fetch_min(&self, w: Word, v: u64, order: Ordering) -> u64;
    /// Ring capacity in bytes.
    fn capacity(&self) -> u64;
    /// Stores the stream bytes starting at offset `first` (`src.len() <= capacity`).
    fn copy_in(&self, first: u64, src: &[u8]);
    /// Stores the concatenation of `parts`, without its first `skip` bytes, as the `len`
    /// stream bytes starting at offset `first` (`len <= capacity`, and `len` plus `skip` is
    /// the parts' total length). The default stores part by part ([`copy_in_each`]).
    fn copy_in_parts<B: std::ops::Deref<Target = [u8]>>(
        &self,
        first: u64,
        len: u64,
        parts: &[B],
        skip: u64,
    ) where
        Self: Sized,
    {
        let _ = len;
        copy_in_each(self, first, parts, skip);
    }
    /// Copies the stream bytes starting at offset `first` into `dst`; they may be changing
    /// while they are copied (`dst.len() <= capacity`).
    fn copy_out(&self, first: u64, dst: &mut [u8]);
    /// Sleeps while `Waiters` still holds `expected` (its low 32 bits compared and slept
    /// atomically, as a futex does), at most `timeout`; may return early.
    fn sleep(&self, expected: u64, timeout: Duration);
    /// Wakes every thread in [`Memory::sleep`].
    fn wake_all(&self);
}

/// Loads `w` with the effect of an `Acquire` load: a `Relaxed` load, then an `Acquire` fence.
///
/// Readers may run on a read-only mapping, where std promises only small `Relaxed` atomic
/// loads to work (an `Acquire` load may be compiled to an instruction that needs write
/// access). A fence after a `Relaxed` load synchronises with the writer's `Release`
/// store or fence exactly as an `Acquire` load would (fence-atomic synchronisation), and
/// orders every later access of this thread after the load.
#[inline]
fn load_acquire<M: Memory + ?Sized>(m: &M, w: Word) -> u64 {
    let v = m.load(w, Ordering::Relaxed);
    fence(Ordering::Acquire);
    v
}

/// One consistent reading of the published offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The history-change counter (even).
    pub change: u64,
    /// Oldest offset held (at most `end + 1`; may already be newer than `end` says).
    pub start: u64,
    /// Newest offset written: every byte up to it is visible.
    pub end: u64,
}

/// Writer: appends `data` to a history holding `start..=end`; returns the new `(start, end)`.
/// Only the single writer calls this; `end + data.len()` must not overflow. (The engine calls
/// the two halves itself, with its commit protection between them; the loom model calls this.)
#[cfg_attr(not(loom), allow(dead_code))]
pub fn publish<M: Memory + ?Sized>(m: &M, start: u64, end: u64, data: &[u8]) -> (u64, u64) {
    let new_start = retire(m, start, end, data.len() as u64);
    (new_start, fill(m, end, data))
}

/// Writer, first half of [`publish`]: if appending `n` bytes after `end` drops bytes from a
/// history starting at `start`, publishes the new start before any of them is overwritten.
/// Returns the new start. Between this and [`fill`] the writer may do work that must see the
/// new start published but the old bytes still in place (the engine protects its last
/// commit there).
#[inline]
pub fn retire<M: Memory + ?Sized>(m: &M, start: u64, end: u64, n: u64) -> u64 {
    let new_start = start.max((end + n + 1).saturating_sub(m.capacity()));
    if new_start != start {
        // Retire the bytes about to be overwritten before touching them: a reader that
        // copies any byte stored after this fence also sees this start (fence-fence
        // synchronisation with the reader's Acquire fence).
        m.store(Word::Start, new_start, Ordering::Relaxed);
        fence(Ordering::Release);
    }
    new_start
}

/// Writer, second half of [`publish`]: copies `data` (its last `capacity` bytes) after `end`
/// and publishes the new end. Returns it.
#[inline]
pub fn fill<M: Memory + ?Sized>(m: &M, end: u64, data: &[u8]) -> u64 {
    let cap = m.capacity();
    let n = data.len() as u64;
    let new_end = end + n;
    let keep = if n > cap {
        &data[(n - cap) as usize..]
    } else {
        data
    };
    m.copy_in(new_end - keep.len() as u64 + 1, keep);
    // Every byte up to `new_end` is in place before readers can learn of it.
    m.store(Word::End, new_end, Ordering::Release);
    new_end
}

/// Stores the concatenation of `parts`, without its first `skip` bytes, from stream offset
/// `first` on, one [`Memory::copy_in`] per part.
#[cfg_attr(loom, allow(dead_code))]
pub fn copy_in_each<M: Memory, B: std::ops::Deref<Target = [u8]>>(
    m: &M,
    mut first: u64,
    parts: &[B],
    mut skip: u64,
) {
    for part in parts {
        let part: &[u8] = part;
        let drop = skip.min(part.len() as u64);
        skip -= drop;
        let keep = &part[drop as usize..];
        if !keep.is_empty() {
            m.copy_in(first, keep);
            first += keep.len() as u64;
        }
    }
}

/// Writer, second half of a batch append: as [`fill`] for the concatenation of `parts`
/// (`n` bytes in all), copied part by part (only its last `capacity` bytes), with one
/// publication of the new end after the last. Returns it.
#[cfg_attr(loom, allow(dead_code))]
pub fn fill_parts<M: Memory, B: std::ops::Deref<Target = [u8]>>(
    m: &M,
    end: u64,
    n: u64,
    parts: &[B],
) -> u64 {
    let cap = m.capacity();
    let new_end = end + n;
    // Bytes of the concatenation that an append of it would not keep.
    let skip = n.saturating_sub(cap);
    let len = n - skip;
    m.copy_in_parts(new_end - len + 1, len, parts, skip);
    // Every byte up to `new_end` is in place before readers can learn of it.
    m.store(Word::End, new_end, Ordering::Release);
    new_end
}

/// Writer, between [`retire`] (which published `new_start`) and [`fill`]: whether the
/// bytes about to be overwritten reach what a commit protects ([`Word::Protect`]), so that
/// the writer must take the commit lock first (and there protect the last commit).
///
/// Dekker with a background commit ([`lower_protection`], then
/// [`start_after_protection`]): the writer stores its start ([`retire`]), fences, then loads
/// the protection; the committer lowers the protection, fences, then loads the start. Either
/// the writer sees the protection and waits for the commit, or the committer sees the new
/// start and neither hashes nor claims the bytes being overwritten. The writer's side is
/// the light one (`crate::sync`).
#[inline]
pub fn must_protect<M: Memory + ?Sized>(m: &M, new_start: u64) -> bool {
    writer_fence();
    new_start > m.load(Word::Protect, Ordering::Acquire)
}

/// Committer, before it hashes a delta: lowers the protection to `protect`, the first offset
/// the delta's checksums need (`u64::MAX` for an empty delta).
#[inline]
pub fn lower_protection<M: Memory + ?Sized>(m: &M, protect: u64) {
    m.fetch_min(Word::Protect, protect, Ordering::AcqRel);
}

/// Committer running while the writer appends, after [`lower_protection`]: the heavy side of
/// the pair with [`must_protect`], then the start to hash from (`start`, or the writer's newer
/// one; at most `end + 1`). `None` if the pair did not hold (see `crate::sync`): the caller
/// must not commit now.
#[inline]
pub fn start_after_protection<M: Memory + ?Sized>(m: &M, start: u64, end: u64) -> Option<u64> {
    if !rare_side_fence() {
        return None;
    }
    Some(
        start
            .max(m.load(Word::Start, Ordering::Acquire))
            .min(end + 1),
    )
}

/// Committer running while the writer appends, after hashing: the start to claim, past any
/// bytes the writer lapped meanwhile (bytes below the protection lapped during the sync are
/// still claimed: recovery cuts the range there, depth and not correctness).
#[inline]
pub fn start_after_hashing<M: Memory + ?Sized>(m: &M, start: u64, end: u64) -> u64 {
    start
        .max(m.load(Word::Start, Ordering::Acquire))
        .min(end + 1)
}

/// Committer, once its sync completed: the protection its slot needs from now on.
#[inline]
pub fn settle_protection<M: Memory + ?Sized>(m: &M, protect: u64) {
    m.store(Word::Protect, protect, Ordering::Release);
}

/// Writer: starts a history change (reset, truncation, a reopen that moved the range): the
/// counter turns odd.
///
/// The fence matters as much as the counter: every later store of the writer — the new
/// start and end, and the bytes appended after the change, which may land where a reader
/// with an older snapshot is copying — is ordered after the odd value. A reader that copied
/// such a byte sees, after its Acquire fence, a counter other than its snapshot's and drops
/// the copy. (A `SeqCst` increment without the fence orders only the stores before it; the
/// loom model `history_change_never_mixes_histories` fails with it.)
pub fn begin_change<M: Memory + ?Sized>(m: &M) {
    let c = m.load(Word::Change, Ordering::Relaxed);
    // A writer that died mid-change left it odd: continue that change.
    if c.is_multiple_of(2) {
        m.store(Word::Change, c + 1, Ordering::Relaxed);
    }
    fence(Ordering::SeqCst);
}

/// Writer: ends a history change after storing the new start and end: the counter turns
/// even again, at a value no reader saw before. A reader that loads it (Acquire) sees the
/// new start and end.
pub fn end_change<M: Memory + ?Sized>(m: &M) {
    m.fetch_add(Word::Change, 1, Ordering::SeqCst);
}

/// Reader: one attempt at a consistent reading of the offsets; `None` while a history change
/// is in progress or if one happened during the reading.
#[inline]
pub fn try_snapshot<M: Memory + ?Sized>(m: &M) -> Option<Snapshot> {
    let change = load_acquire(m, Word::Change);
    if !change.is_multiple_of(2) {
        return None;
    }
    let end = load_acquire(m, Word::End);
    let start = load_acquire(m, Word::Start);
    // `start > end + 1`: an append longer than the ring is in progress (its start is out, its
    // end not yet); such a pair describes no state of the stream, so wait for the end.
    (start <= end + 1 && load_acquire(m, Word::Change) == change).then_some(Snapshot {
        change,
        start,
        end,
    })
}

/// Reader: copies the bytes from `offset` (at most `buf.len()`, at most up to `snap.end`) into
/// `buf`, then validates the copy. `Ok(n)` only if none of the `n` bytes can have changed
/// during the copy.
///
/// # Errors
/// [`TailError::Overwritten`] if the byte at `offset` is gone (before or during the copy);
/// [`TailError::NotWritten`] if `offset > snap.end + 1`; [`TailError::HistoryChanged`] if the
/// history changed since `snap`.
#[inline]
pub fn read<M: Memory + ?Sized>(
    m: &M,
    snap: &Snapshot,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, TailError> {
    let (n, start) = copy_and_reload(m, snap, offset, buf)?;
    // Overwriting any byte `o >= offset` first published a start above `o`.
    if start > offset {
        return Err(TailError::Overwritten {
            requested: offset,
            first: start,
        });
    }
    Ok(n)
}

/// Reader: the copy of [`read`] and the re-loads after it, without the final judgement on
/// the start: returns how many bytes were copied and the start loaded after the copy (a
/// caller whose range is fixed compares it with the start it saw at first, instead of with
/// `offset`). The change counter is already checked.
///
/// # Errors
/// As [`read`], except that a start that moved past `offset` during the copy is returned,
/// not reported.
#[inline]
pub fn copy_and_reload<M: Memory + ?Sized>(
    m: &M,
    snap: &Snapshot,
    offset: u64,
    buf: &mut [u8],
) -> Result<(usize, u64), TailError> {
    if offset < snap.start {
        return Err(TailError::Overwritten {
            requested: offset,
            first: snap.start,
        });
    }
    if offset > snap.end + 1 {
        return Err(TailError::NotWritten {
            requested: offset,
            end: snap.end,
        });
    }
    let n = (snap.end + 1 - offset).min(buf.len() as u64) as usize;
    m.copy_out(offset, &mut buf[..n]);
    // Pairs with the writer's Release fences: if any copied byte was stored by a later append
    // or after a history change, the loads below see that append's start or that change.
    fence(Ordering::Acquire);
    let start = m.load(Word::Start, Ordering::Relaxed);
    if m.load(Word::Change, Ordering::Relaxed) != snap.change {
        return Err(TailError::HistoryChanged);
    }
    Ok((n, start))
}

/// Writer, after publishing (`end` or a history change): wakes sleeping tailers, if any.
///
/// Dekker-style with [`wait_ready`]: the writer stores `end`, fences, then loads the waiter
/// word; a waiter sets its bit 0, fences, then loads `end`. At least one side sees the
/// other's store: either the waiter sees the new `end` and does not sleep, or the writer sees
/// the bit and wakes. The writer takes the registrations it wakes by adding 1 to the word,
/// which clears bit 0 and moves the count above it, so while woken tailers wait for a CPU
/// later appends do not repeat the syscall. A waiter sleeps on the waiter word with the value
/// its registration left, compared by the kernel atomically with the sleep (a futex): once
/// the writer has taken that registration the word differs — even if another waiter set bit
/// 0 again since — and the sleep returns at once, so no wake-up is lost. With no waiter this
/// costs the writer one fence and one load: no lock, no syscall. The writer never blocks.
///
/// The fence pair is asymmetric where the kernel allows (`crate::sync`): the writer's side is
/// a compiler fence, the waiter's a `membarrier` that runs a full barrier on every thread of
/// the process — so a writer load that missed the waiter's registration happened before that
/// barrier, which made the writer's earlier `end` store visible to the waiter's load. Waiters
/// only sleep in the writer's process (read-only views in other processes poll), which is what
/// a private `membarrier` covers. Where it is unavailable both sides are `SeqCst` fences (the
/// loom model checks that form).
#[inline]
pub fn wake<M: Memory + ?Sized>(m: &M) {
    writer_fence();
    // Only the writer clears bit 0, so it is still set here.
    if m.load(Word::Waiters, Ordering::Relaxed) & 1 != 0 {
        m.fetch_add(Word::Waiters, 1, Ordering::AcqRel);
        m.wake_all();
    }
}

/// Waiter: blocks until the cursor at `next` (following change counter `change`) is
/// [`ready`], or until `slice` returns `None` (timed out). Each sleep lasts at most what
/// `slice` returns. A waiter registers before every sleep (a wake-up takes the registrations
/// it saw) and, once woken, leaves without registering again if it is ready, so a wake-up
/// costs the writer one syscall. A history change wakes it like an append does. Returns
/// whether the cursor is ready.
pub fn wait_ready<M: Memory + ?Sized>(
    m: &M,
    next: u64,
    change: u64,
    mut slice: impl FnMut() -> Option<Duration>,
) -> bool {
    let is_ready = || {
        let end = load_acquire(m, Word::End);
        load_acquire(m, Word::Change) != change || end >= next
    };
    loop {
        let seen = m.fetch_or(Word::Waiters, 1, Ordering::AcqRel) | 1;
        // A pair that did not hold (see `rare_side_fence`) costs at most one slice of sleep.
        let _ = rare_side_fence();
        if is_ready() {
            return true;
        }
        match slice() {
            Some(t) => m.sleep(seen, t),
            None => return false,
        }
        if is_ready() {
            return true;
        }
    }
}

/// Whether a tailer whose next byte is `next` and who started under change counter `change`
/// has something to act on: new bytes, or a history change to report.
pub fn ready<M: Memory + ?Sized>(m: &M, next: u64, change: u64) -> bool {
    load_acquire(m, Word::Change) != change || load_acquire(m, Word::End) >= next
}
