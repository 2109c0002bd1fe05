//! Concurrent readers: copy, then validate.
//!
//! # Publication protocol (a seqlock over the ring)
//! The live page holds three words the single writer publishes; readers, in this process or
//! another, only load them:
//! - `start` (oldest offset held). Before an append overwrites ring bytes, the writer stores
//!   the new `start` (Relaxed) and issues a Release fence; only then does it copy the bytes.
//! - `end` (newest offset). After the bytes are in place the writer stores `end` (Release).
//! - `change`: incremented (`SeqCst`) before and after a rare history change (reset,
//!   `truncate_to`, recovery); odd while one is in progress.
//!
//! A reader loads `change` (Acquire; retries while odd) and `end` (Acquire), so every byte up
//! to `end` is visible; copies the bytes it wants; issues an Acquire fence; then re-loads
//! `start` and `change`. If `start` moved past the first byte it copied, some copied byte may
//! have been overwritten during the copy — the copy is discarded and the reader learns that
//! its offset is gone ([`Error::Overwritten`]). If `change` moved, the history changed under
//! it. This is the classic seqlock (as in the Linux kernel and crossbeam's `AtomicCell`).
//!
//! # Racing copies
//! Bytes are copied with a plain `memcpy` through raw pointers, never through a `&[u8]` into
//! the mapping, and a copy is used only after validation says no byte in it can have been
//! overwritten. The alternative — word-sized atomic copies, as the `atomic-memcpy` crate does —
//! would make the racing copy well-defined in the language's memory model but costs the
//! vectorised copy on both the append and the read path; the mapping is shared with other
//! processes anyway, where only the hardware's (byte-granular, coherent) model applies. The
//! `benches/` suite measures the plain copy against the in-memory baseline.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crate::error::{Error, Result};
use crate::shared::Shared;

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

/// A consistent view of the published offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) change: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl Reader {
    pub(crate) fn new(sh: Arc<Shared>) -> Self {
        Reader { sh }
    }

    /// Loads `change`, `end`, `start`, waiting out a history change in progress.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut spins = 0u32;
        loop {
            let change = self.sh.change().load(Ordering::Acquire);
            if change.is_multiple_of(2) {
                let end = self.sh.end().load(Ordering::Acquire);
                let start = self.sh.start().load(Ordering::Acquire);
                if self.sh.change().load(Ordering::Acquire) == change {
                    return Snapshot { change, start, end };
                }
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
    /// [`Error::Overwritten`] if the byte at `offset` is older than the oldest held (or was
    /// overwritten during the copy); [`Error::NotWritten`] if `offset > offset() + 1`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        loop {
            let snap = self.snapshot();
            match self.copy_validated(&snap, offset, buf) {
                Err(Error::HistoryChanged) => {}
                r => return r,
            }
        }
    }

    /// One seqlock read against `snap`: copy, fence, re-check.
    pub(crate) fn copy_validated(
        &self,
        snap: &Snapshot,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if offset < snap.start {
            return Err(Error::Overwritten {
                requested: offset,
                first: snap.start,
            });
        }
        if offset > snap.end + 1 {
            return Err(Error::NotWritten {
                requested: offset,
                end: snap.end,
            });
        }
        let n = (snap.end + 1 - offset).min(buf.len() as u64) as usize;
        self.sh.read_ring(offset, &mut buf[..n]);
        fence(Ordering::Acquire);
        let start = self.sh.start().load(Ordering::Relaxed);
        if self.sh.change().load(Ordering::Relaxed) != snap.change {
            return Err(Error::HistoryChanged);
        }
        if start > offset {
            return Err(Error::Overwritten {
                requested: offset,
                first: start,
            });
        }
        Ok(n)
    }

    /// `master_repl_offset` as last published by the writer.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.snapshot().end
    }

    /// Oldest offset held, as last published by the writer (it only grows while you look).
    #[must_use]
    pub fn first_offset(&self) -> u64 {
        self.snapshot().start
    }

    /// Offset up to which bytes are committed to stable storage.
    #[must_use]
    pub fn durable_offset(&self) -> u64 {
        self.sh.durable().load(Ordering::Acquire)
    }

    /// Ring capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.sh.geo.capacity
    }
}
