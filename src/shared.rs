//! State shared by the writer, its background flusher and every reader: the medium, its
//! geometry, the live page's atomics and the poison flag.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use crate::error::Error;
use crate::format::live::{L_CHANGE, L_DURABLE, L_END, L_MOVED, L_START, L_WAITERS};
use crate::format::{Geometry, LIVE_OFFSET};
use crate::region::{Medium, futex_wait, futex_wake};
use crate::ring::{spans, spans_at};
use crate::seqlock::{self, Word};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) medium: Medium,
    pub(crate) geo: Geometry,
    pub(crate) path: PathBuf,
    /// The writer must call `CommitState::protect_last_commit` before overwriting bytes
    /// below a start above this (in memory only; lowered by a commit before it hashes,
    /// settled after its sync; `seqlock::Word::Protect`, the pair `seqlock::must_protect`).
    protect_above: AtomicU64,
    /// Set once, by the first failed commit.
    poison_cause: OnceLock<PoisonCause>,
    /// Mapped read-only, without the writer's lock ([`crate::Backlog::open_read_only`]): the
    /// live page is only ever loaded, never stored to, and waiting polls.
    pub(crate) read_only: bool,
    /// The writer's memo of where its next ring write goes: `(first offset, ring position)`,
    /// so consecutive appends skip the division of `first % capacity`. Only the writer's
    /// thread touches it (Relaxed); a stale memo is detected by its offset and recomputed.
    /// On cache lines of its own: the writer stores to it on every append, and readers read
    /// the fields above on every copy.
    next_write: WriterLines,
}

/// The failure that poisoned a backlog, reported by every later write.
#[derive(Debug)]
struct PoisonCause {
    op: &'static str,
    path: Option<PathBuf>,
    source: Arc<io::Error>,
}

impl PoisonCause {
    #[cold]
    fn error(&self) -> Error {
        Error::Poisoned {
            op: self.op,
            path: self.path.clone(),
            source: Arc::clone(&self.source),
        }
    }
}

/// Two words on cache lines no other field shares (128 bytes: adjacent-line prefetch pairs
/// lines on x86).
#[derive(Debug)]
#[repr(align(128))]
struct WriterLines(AtomicU64, AtomicU64);

impl Shared {
    pub(crate) fn new(medium: Medium, geo: Geometry, path: PathBuf) -> Self {
        crate::sync::init_asymmetric();
        Shared {
            medium,
            geo,
            path,
            protect_above: AtomicU64::new(u64::MAX),
            poison_cause: OnceLock::new(),
            read_only: false,
            next_write: WriterLines(AtomicU64::new(u64::MAX), AtomicU64::new(0)),
        }
    }

    #[inline]
    pub(crate) fn live(&self, field: usize) -> &AtomicU64 {
        self.medium.atomic_u64(LIVE_OFFSET + field as u64)
    }

    #[inline]
    pub(crate) fn start(&self) -> &AtomicU64 {
        self.live(L_START)
    }

    #[inline]
    pub(crate) fn end(&self) -> &AtomicU64 {
        self.live(L_END)
    }

    #[inline]
    pub(crate) fn change(&self) -> &AtomicU64 {
        self.live(L_CHANGE)
    }

    #[inline]
    pub(crate) fn durable(&self) -> &AtomicU64 {
        self.live(L_DURABLE)
    }

    #[inline]
    pub(crate) fn waiters(&self) -> &AtomicU64 {
        self.live(L_WAITERS)
    }

    /// Whether a resize replaced this file (see `L_MOVED`): its ring no longer grows.
    /// Readable on a read-only mapping (a `Relaxed` load, then an `Acquire` fence).
    #[inline]
    pub(crate) fn is_moved(&self) -> bool {
        load_acquire(self.live(L_MOVED)) != 0
    }

    /// Writer, once a resize's replacement is durably in place: marks this (replaced) file
    /// for its readers as a history change, so sleeping tailers wake and see it.
    pub(crate) fn mark_moved(&self) {
        seqlock::begin_change(self);
        self.live(L_MOVED).store(1, Ordering::SeqCst);
        seqlock::end_change(self);
        self.wake_waiters();
    }

    #[inline]
    fn word(&self, w: Word) -> &AtomicU64 {
        match w {
            Word::Start => self.start(),
            Word::End => self.end(),
            Word::Change => self.change(),
            Word::Waiters => self.waiters(),
            Word::Protect => &self.protect_above,
        }
    }

    /// Writes `bytes` as the stream bytes starting at replication offset `first`
    /// (`bytes.len() <= capacity`). Only the writer calls this.
    #[inline]
    pub(crate) fn write_ring(&self, first: u64, bytes: &[u8]) {
        let cap = self.geo.capacity;
        let pos = self.ring_pos(first);
        let len = bytes.len() as u64;
        let (a, b) = spans_at(cap, pos, len);
        let (head, tail) = bytes.split_at(a.len as usize);
        self.medium.write(self.geo.data_offset + a.pos, head);
        self.medium.write(self.geo.data_offset + b.pos, tail);
        self.remember(first + len, pos + len);
    }

    /// Writes the concatenation of `parts` without its first `skip` bytes as the `len` stream
    /// bytes starting at `first` (`len <= capacity`). Only the writer calls this. A batch that
    /// does not cross the ring's end (the usual case) is bounds-checked once and copied part
    /// after part; one that does goes part by part through [`Shared::write_ring`].
    #[inline]
    pub(crate) fn write_ring_parts<B: std::ops::Deref<Target = [u8]>>(
        &self,
        first: u64,
        len: u64,
        parts: &[B],
        skip: u64,
    ) {
        let pos = self.ring_pos(first);
        if len <= self.geo.capacity - pos {
            self.medium
                .write_parts(self.geo.data_offset + pos, len, parts, skip);
            self.remember(first + len, pos + len);
        } else {
            seqlock::copy_in_each(self, first, parts, skip);
        }
    }

    /// The ring position of stream offset `first`, from the writer's memo when `first` is
    /// where the last write ended (no `u64` division per append).
    #[inline]
    fn ring_pos(&self, first: u64) -> u64 {
        let WriterLines(memo_first, memo_pos) = &self.next_write;
        let pos = if memo_first.load(Ordering::Relaxed) == first {
            memo_pos.load(Ordering::Relaxed)
        } else {
            first % self.geo.capacity
        };
        debug_assert!(pos == first % self.geo.capacity);
        pos
    }

    /// Records that the next write starts at stream offset `next`, ring position `next_pos`
    /// (at most the capacity: a write that ended at the ring's end continues at 0).
    #[inline]
    fn remember(&self, next: u64, next_pos: u64) {
        let cap = self.geo.capacity;
        let WriterLines(memo_first, memo_pos) = &self.next_write;
        memo_first.store(next, Ordering::Relaxed);
        memo_pos.store(
            if next_pos >= cap {
                next_pos - cap
            } else {
                next_pos
            },
            Ordering::Relaxed,
        );
    }

    /// Copies the stream bytes starting at `first` into `dst` (`dst.len() <= capacity`).
    /// Unvalidated: the caller checks afterwards that they were not overwritten meanwhile.
    #[inline]
    pub(crate) fn read_ring(&self, first: u64, dst: &mut [u8]) {
        let (a, b) = spans(self.geo.capacity, first, dst.len() as u64);
        let (head, tail) = dst.split_at_mut(a.len as usize);
        self.medium.read(self.geo.data_offset + a.pos, head);
        self.medium.read(self.geo.data_offset + b.pos, tail);
    }

    /// CRC-32 of stream bytes `first..=last`, continuing from `init` (a CRC of what precedes).
    pub(crate) fn crc_range(&self, init: u32, first: u64, last: u64) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(init);
        let mut buf = [0u8; 16 * 1024];
        let mut o = first;
        while o <= last {
            let n = (last - o + 1).min(buf.len() as u64) as usize;
            self.read_ring(o, &mut buf[..n]);
            h.update(&buf[..n]);
            o += n as u64;
        }
        h.finalize()
    }

    /// Poisons the handle after `failure` (a failed commit): every later write returns
    /// [`Error::Poisoned`] holding its I/O error. Returns the error for the call that failed:
    /// `failure` itself, except that the original `io::Error` now lives in the poison cause
    /// and the caller gets an equivalent one (the same OS error code; else the same kind and
    /// message), as `io::Error` is not `Clone`.
    pub(crate) fn poison(&self, failure: Error) -> Error {
        let (op, path, source, ret) = match failure {
            Error::Io { op, path, source } => {
                let copy = Error::Io {
                    op,
                    path: path.clone(),
                    source: same_io_error(&source),
                };
                (op, path, source, copy)
            }
            other => (
                "committing",
                None,
                io::Error::other(other.to_string()),
                other,
            ),
        };
        // Only the first failure counts: a later one is a consequence.
        let _ = self.poison_cause.set(PoisonCause {
            op,
            path,
            source: Arc::new(source),
        });
        ret
    }

    #[inline]
    pub(crate) fn check_poison(&self) -> Result<(), Error> {
        match self.poison_cause.get() {
            None => Ok(()),
            Some(c) => Err(c.error()),
        }
    }

    /// Wakes tailing readers of this process, paying a syscall only when one is asleep
    /// (see [`seqlock::wake`]).
    #[inline]
    pub(crate) fn wake_waiters(&self) {
        seqlock::wake(self);
    }
}

/// An `io::Error` equal to `e` for a caller: the same OS error, or the same kind and message.
fn same_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Loads a word of the mapping with the effect of an `Acquire` load: `Relaxed`, then an
/// `Acquire` fence (see `seqlock::load_acquire`). Code that may run on a read-only mapping
/// loads through this, never with `Acquire` directly.
#[inline]
pub(crate) fn load_acquire(word: &AtomicU64) -> u64 {
    let v = word.load(Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Acquire);
    v
}

impl seqlock::Memory for Shared {
    #[inline]
    fn load(&self, w: Word, order: Ordering) -> u64 {
        // The protocol loads `Relaxed` and fences (`seqlock::load_acquire`): std promises
        // only `Relaxed` loads to work on a read-only mapping.
        debug_assert!(
            !self.read_only || order == Ordering::Relaxed,
            "{order:?} load from a read-only mapping"
        );
        self.word(w).load(order)
    }

    #[inline]
    fn store(&self, w: Word, v: u64, order: Ordering) {
        debug_assert!(!self.read_only, "store to a read-only live page");
        self.word(w).store(v, order);
    }

    #[inline]
    fn fetch_add(&self, w: Word, v: u64, order: Ordering) -> u64 {
        debug_assert!(!self.read_only, "store to a read-only live page");
        self.word(w).fetch_add(v, order)
    }

    #[inline]
    fn fetch_or(&self, w: Word, v: u64, order: Ordering) -> u64 {
        debug_assert!(!self.read_only, "store to a read-only live page");
        self.word(w).fetch_or(v, order)
    }

    #[inline]
    fn fetch_min(&self, w: Word, v: u64, order: Ordering) -> u64 {
        debug_assert!(!self.read_only, "store to a read-only live page");
        self.word(w).fetch_min(v, order)
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.geo.capacity
    }

    #[inline]
    fn copy_in(&self, first: u64, src: &[u8]) {
        self.write_ring(first, src);
    }

    #[inline]
    fn copy_in_parts<B: std::ops::Deref<Target = [u8]>>(
        &self,
        first: u64,
        len: u64,
        parts: &[B],
        skip: u64,
    ) {
        self.write_ring_parts(first, len, parts, skip);
    }

    #[inline]
    fn copy_out(&self, first: u64, dst: &mut [u8]) {
        self.read_ring(first, dst);
    }

    fn sleep(&self, expected: u64, timeout: Duration) {
        // The futex compares the low 32 bits: a wake-up count that moved by a multiple of
        // 2^31 in between is caught when the (bounded) sleep ends.
        futex_wait(self.waiters(), expected as u32, timeout);
    }

    fn wake_all(&self) {
        futex_wake(self.waiters());
    }
}
