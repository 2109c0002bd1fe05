//! Why a read returned no bytes: the normal outcomes of reading a ring that another thread (or
//! process) keeps writing, kept apart from [`Error`](crate::Error), which holds failures.
//!
//! Each reading operation has the type that lists exactly what it can report:
//! [`Reader::read_at`](crate::Reader::read_at) a [`ReadError`] (the bytes are gone or not
//! written yet), a [`Cursor`](crate::Cursor) a [`TailError`] (also: the history it followed
//! changed), and [`Cursor::write_to`](crate::Cursor::write_to) a [`WriteToError`] (also: the
//! sink failed). None is `#[non_exhaustive]`, so a caller's `match` lists every case.

use std::fmt;
use std::io;

/// Why [`Reader::read_at`](crate::Reader::read_at) returned no bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The bytes at `requested` were already overwritten by the ring (or dropped), before or
    /// during the copy.
    Overwritten {
        /// The replication offset asked for.
        requested: u64,
        /// The oldest offset still held.
        first: u64,
    },
    /// The bytes at `requested` have not been written yet (`requested > end + 1`).
    NotWritten {
        /// The replication offset asked for.
        requested: u64,
        /// The offset of the last byte written (`master_repl_offset`).
        end: u64,
    },
    /// The backlog was resized ([`Backlog::resize`](crate::Backlog::resize)): the writer
    /// continues in a new file at the same path, and this reader's file no longer grows.
    /// Read on through a reader of the resized backlog
    /// ([`Backlog::reader`](crate::Backlog::reader), or
    /// [`Backlog::open_read_only`](crate::Backlog::open_read_only) again in another process):
    /// it holds the same offsets, except the oldest ones if it shrank.
    Moved,
}

/// Why a tailing [`Cursor`](crate::Cursor) (or an
/// [`inspect::BacklogFile`](crate::inspect::BacklogFile), a snapshot of one history) returned
/// no bytes. Each is permanent for that cursor; each but [`TailError::Moved`] means its
/// replica needs a full resync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailError {
    /// **Lapped**: the ring overwrote the byte at `requested` before it was read.
    Overwritten {
        /// The replication offset asked for.
        requested: u64,
        /// The oldest offset still held.
        first: u64,
    },
    /// The cursor starts beyond the end of the stream (`requested > end + 1`).
    NotWritten {
        /// The replication offset asked for.
        requested: u64,
        /// The offset of the last byte written (`master_repl_offset`).
        end: u64,
    },
    /// The history changed under the reader (reset, truncation or a reopen): its position
    /// means nothing in the new history.
    HistoryChanged,
    /// The backlog was resized ([`Backlog::resize`](crate::Backlog::resize)): the history
    /// goes on unchanged, in a new file, and this cursor's file no longer grows. Not a reason
    /// for a full resync: make a cursor at the same [`position`](crate::Cursor::position) on
    /// a reader of the resized backlog ([`Backlog::reader`](crate::Backlog::reader), or
    /// [`Backlog::open_read_only`](crate::Backlog::open_read_only) again in another process).
    /// That cursor reports [`TailError::Overwritten`] if the position is older than a shrunk
    /// backlog holds.
    Moved,
}

/// Why [`Cursor::write_to`](crate::Cursor::write_to) wrote nothing.
#[derive(Debug)]
pub enum WriteToError {
    /// The cursor has nothing more to send from its history (see [`TailError`]).
    Tail(TailError),
    /// The sink failed. Part of the failing chunk may have reached it although the cursor
    /// did not move past it.
    Sink(io::Error),
}

impl From<ReadError> for TailError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Overwritten { requested, first } => {
                TailError::Overwritten { requested, first }
            }
            ReadError::NotWritten { requested, end } => TailError::NotWritten { requested, end },
            ReadError::Moved => TailError::Moved,
        }
    }
}

impl From<TailError> for WriteToError {
    fn from(e: TailError) -> Self {
        WriteToError::Tail(e)
    }
}

fn overwritten(f: &mut fmt::Formatter<'_>, requested: u64, first: u64) -> fmt::Result {
    write!(
        f,
        "offset {requested} is no longer in the backlog (oldest held: {first})"
    )
}

fn not_written(f: &mut fmt::Formatter<'_>, requested: u64, end: u64) -> fmt::Result {
    write!(
        f,
        "offset {requested} has not been written yet (last written: {end})"
    )
}

fn moved(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(
        "the backlog was resized into a new file: read on at the same offset through a reader \
         of the resized backlog",
    )
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReadError::Overwritten { requested, first } => overwritten(f, requested, first),
            ReadError::NotWritten { requested, end } => not_written(f, requested, end),
            ReadError::Moved => moved(f),
        }
    }
}

impl fmt::Display for TailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TailError::Overwritten { requested, first } => overwritten(f, requested, first),
            TailError::NotWritten { requested, end } => not_written(f, requested, end),
            TailError::HistoryChanged => f.write_str(
                "the backlog's history was reset, truncated or reopened since the reader's \
                 position was taken",
            ),
            TailError::Moved => moved(f),
        }
    }
}

impl fmt::Display for WriteToError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteToError::Tail(e) => e.fmt(f),
            WriteToError::Sink(e) => write!(f, "writing tailed bytes: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl std::error::Error for TailError {}

impl std::error::Error for WriteToError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Displayed as itself: the wrapper adds nothing.
            WriteToError::Tail(_) => None,
            WriteToError::Sink(e) => Some(e),
        }
    }
}
