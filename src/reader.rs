//! Concurrent readers: copy, then validate.
//!
//! # Publication protocol (a seqlock over the ring)
//! The live page holds the words the single writer publishes; readers, in this process or
//! another, only load them (the code is in `seqlock.rs`, generic over the memory so that the
//! loom model in `tests/loom.rs` checks the very same code):
//! - `start` (oldest offset held). Before an append overwrites ring bytes, the writer stores
//!   the new `start` (Relaxed) and issues a Release fence; only then does it copy the bytes.
//! - `end` (newest offset). After the bytes are in place the writer stores `end` (Release).
//! - `change`: made odd, followed by a `SeqCst` fence, before a rare history change (reset,
//!   `truncate_to`, a reopen whose recovery moved the range), and even again, at a new value,
//!   after it (`SeqCst`). The fence orders every later store of the writer — including bytes
//!   appended after the change at offsets an older snapshot still names — after the odd
//!   value, so a reader that copied such a byte sees the counter move.
//!
//! A reader loads `change` (retries while odd), `end` and `start` and `change` again, each
//! load `Relaxed` followed by an Acquire fence (the effect of an Acquire load; std promises
//! only `Relaxed` loads to work on the read-only mapping of another process's view), so every
//! byte up to `end` is visible; copies the bytes it wants; issues an
//! Acquire fence; then re-loads `start` and `change`. If the copy saw any byte stored by a
//! later append, the fences make that append's `start` visible to the re-load: if `start`
//! moved past the first byte copied, the copy is discarded and the reader learns that its
//! offset is gone ([`TailError::Overwritten`], "lapped"). If `change` moved, the history changed
//! under it ([`TailError::HistoryChanged`]), or, if the live page's `moved` word is set too,
//! the file was replaced by a resize ([`TailError::Moved`]). This is the classic seqlock (as in the Linux kernel
//! and crossbeam's `AtomicCell`), with the ring's `start` as the sequence number.
//!
//! # Waking tailers
//! A [`Cursor`](crate::Cursor) that caught up sleeps on a (process-private) futex on the live
//! page's waiter word, whose bit 0 means "somebody registered since the last wake-up" and
//! whose higher bits count wake-ups. The writer pays for waking only when somebody sleeps:
//! after publishing `end` it fences and loads the word, and only if bit 0 is set adds 1 (bit
//! 0 cleared, count moved) and calls `FUTEX_WAKE`; a waiter sets bit 0, fences, re-loads
//! `end`, and sleeps with `FUTEX_WAIT` while the word still holds the value its registration
//! left. The fence pair makes it impossible for both to miss the other (Dekker; asymmetric
//! where the kernel offers `membarrier`, see `crate::sync`), and the kernel compares the word
//! and sleeps in one step, so a wake-up between the check and the sleep is not lost: the word
//! has moved on by then, even if another waiter registered again. A woken waiter that is
//! ready leaves without registering again, so the writer pays one wake-up per sleep, not one
//! per append. The writer takes no lock and never blocks; with no sleeper an append costs one
//! load after a compiler fence.
//! Readers in another process ([`Backlog::open_read_only`](crate::Backlog::open_read_only))
//! never write the mapping, so they cannot register: they poll with an adaptive back-off
//! (spin, yield, then sleeps growing from 20 µs to 1 ms).
//!
//! # Racing copies
//! Bytes are copied with a plain `memcpy` through raw pointers, never through a `&[u8]` into
//! the mapping, and a copy is used only after validation says no byte in it can have been
//! overwritten. The alternative — word-sized atomic copies, as the `atomic-memcpy` crate does —
//! makes the racing copy well-defined in the language's memory model (a plain racing copy is,
//! formally, a data race whose result we discard), but replaces the vectorised copy on both
//! the append and the read path with a loop of 8-byte loads and stores, and must handle
//! unaligned heads and tails. The mapping is shared with other processes anyway, where only
//! the hardware's (coherent, at worst byte-granular-stale) model applies and the compiler
//! cannot see the other side. `benches/concurrency.rs` measures what the atomic copy would
//! cost (group `copy_choice`); the loom model treats every ring byte as a Relaxed atomic, so
//! it checks the validation, which is what makes either kind of copy sound.

use std::sync::Arc;

use crate::cursor::Cursor;
use crate::read_error::{ReadError, TailError};
use crate::seqlock::{self, Snapshot};
use crate::shared::{Shared, load_acquire};

/// A read handle on a backlog: `Clone + Send + Sync`, cheap to clone, never blocks the writer.
///
/// # Examples
/// ```
/// use durable_backlog::{Backlog, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let mut b = Backlog::create(dir.path().join("b"), Options::new()).unwrap();
/// b.append(b"hello world").unwrap();
/// let r = b.reader();
/// let mut buf = [0u8; 5];
/// assert_eq!(r.read_at(7, &mut buf).unwrap(), 5);
/// assert_eq!(&buf, b"world");
/// ```
#[derive(Clone, Debug)]
pub struct Reader {
    sh: Arc<Shared>,
}

impl Reader {
    pub(crate) fn new(sh: Arc<Shared>) -> Self {
        Reader { sh }
    }

    /// Loads `change`, `end`, `start`, waiting out a history change in progress.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut spins = 0u32;
        loop {
            if let Some(s) = seqlock::try_snapshot(&*self.sh) {
                return s;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Copies stream bytes starting at replication offset `offset` into `buf`; returns how
    /// many (`min(buf.len(), offset() + 1 - offset)`; 0 when `offset == offset() + 1`).
    ///
    /// Never returns a byte that changed during the copy.
    ///
    /// # Errors
    /// [`ReadError::Overwritten`] if the byte at `offset` is older than the oldest held (or
    /// was overwritten during the copy); [`ReadError::NotWritten`] if `offset > offset() + 1`;
    /// [`ReadError::Moved`] if the backlog was resized since this reader was made (read
    /// through a reader of the resized backlog). A history change during the read is not
    /// reported: the read is retried in the new history.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        loop {
            if self.sh.is_moved() {
                return Err(ReadError::Moved);
            }
            let snap = self.snapshot();
            match self.copy_validated(&snap, offset, buf) {
                Ok(n) => return Ok(n),
                Err(TailError::Overwritten { requested, first }) => {
                    return Err(ReadError::Overwritten { requested, first });
                }
                Err(TailError::NotWritten { requested, end }) => {
                    return Err(ReadError::NotWritten { requested, end });
                }
                Err(TailError::HistoryChanged | TailError::Moved) => {}
            }
        }
    }

    /// One seqlock read against `snap`: copy, fence, re-check.
    pub(crate) fn copy_validated(
        &self,
        snap: &Snapshot,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, TailError> {
        seqlock::read(&*self.sh, snap, offset, buf)
    }

    /// A tailing cursor whose first byte is the one at replication offset `offset` (e.g.
    /// the offset a replica sent in `PSYNC`, or [`Reader::offset`]` + 1` to follow only new
    /// bytes). See [`Cursor`].
    #[must_use]
    pub fn cursor(&self, offset: u64) -> Cursor {
        Cursor::new(self.clone(), offset)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.sh
    }

    /// Whether the backlog was resized since this reader was made
    /// ([`Backlog::resize`](crate::Backlog::resize)): the writer went on in a new file, so this
    /// reader's offsets (and [`durable_offset`](Reader::durable_offset)) no longer move and
    /// its reads report [`ReadError::Moved`]. Take a reader of the resized backlog instead.
    /// One load from the live page.
    #[must_use]
    pub fn is_moved(&self) -> bool {
        self.sh.is_moved()
    }

    /// `master_repl_offset` as last published by the writer (frozen once
    /// [`is_moved`](Reader::is_moved)).
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.snapshot().end
    }

    /// Oldest offset held, as last published by the writer (it only grows while you look).
    #[must_use]
    pub fn first_offset(&self) -> u64 {
        self.snapshot().start
    }

    /// Offset up to which bytes are committed to stable storage (frozen once
    /// [`is_moved`](Reader::is_moved)).
    #[must_use]
    pub fn durable_offset(&self) -> u64 {
        load_acquire(self.sh.durable())
    }

    /// Ring capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.sh.geo.capacity
    }
}
