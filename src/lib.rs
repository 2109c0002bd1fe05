//! # durable-backlog
//!
//! A persistent, crash-safe replication backlog for Redis-style masters.
//!
//! A Redis master keeps the last N bytes of its replication stream in an in-memory ring so a
//! replica that lost its link can `PSYNC` and receive only what it missed. That ring dies with
//! the process, so every restart — and every crash — forces every replica into a full resync.
//! [`Backlog`] keeps the ring in a memory-mapped file whose checksummed header holds the run ID,
//! its predecessors and the offsets, so a master that restarts, cleanly or after `kill -9` or a
//! power loss, keeps answering `+CONTINUE` — and never serves a byte that differs from what it
//! originally streamed.
//!
//! ```
//! use durable_backlog::{Backlog, Durability, Options};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("backlog");
//! let mut master = Backlog::create(&path, Options::new().durability(Durability::Always)).unwrap();
//! master.append(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap();
//! let old_id = master.run_id();
//! drop(master); // or a crash
//! let master = Backlog::open(&path, Options::new()).unwrap();
//! let reply = master.psync(old_id.as_str(), 1);
//! assert!(reply.is_continue());
//! ```
//!
//! The crate stores bytes; what they mean is the embedding program's business. The reference
//! master, `crates/durable-master` in this repository's workspace, is built on this public API
//! only (docs/MASTER.md).
//!
//! ## Platform
//! Linux on a 64-bit target only, checked at compile time. The engine relies on Linux
//! interfaces (`futex`, `membarrier`, `posix_fallocate`, `MADV_POPULATE_*`, the kernel's boot
//! ID) and on native 8-byte atomics in the shared mapping; every offset is a `u64` that must
//! fit a `usize` when it indexes the mapping.
//!
//! ## Safety model
//! - The file is mapped shared. Its contents are only ever copied in and out through raw
//!   pointers in one module (`region`); no reference into the mapping is handed out.
//! - One writer: enforced by the type (`append` takes `&mut self`, [`Backlog`] is not `Clone`)
//!   and by an exclusive `flock` on the file. The lock belongs to the open file description:
//!   a child process forked while the backlog is open shares it until the child execs or
//!   exits, so `close` releases the lock only once such children are gone (std's `Command`
//!   execs at once; a long-lived `fork` without exec keeps the file locked).
//! - Readers never block the writer and the writer never waits for readers: copies are
//!   validated afterwards (a seqlock; protocol at the top of the `reader` module, proved by a
//!   loom model in `tests/loom.rs`). Tailing [`Cursor`]s sleep on a futex on the live page,
//!   which the writer signals once per sleep, never per append.
//! - [`Backlog::open_read_only`] maps the file read-only and takes no lock; such views only
//!   load from the mapping: `Relaxed` atomic loads of at most 8 bytes, followed by fences
//!   where the protocol needs Acquire (std promises only such loads on read-only memory).
//! - Remaining hazards, outside what the crate can prevent: another process truncating the
//!   file while it is mapped (accesses would raise SIGBUS), or writing to it without the
//!   lock (readers would return what it wrote if it passes validation; recovery after a power
//!   loss still verifies checksums). Don't edit a live backlog file.
//! - Checksums are CRC-32: recovery after a power loss rejects a damaged block except with
//!   probability 2^-32 per block.

#![deny(unsafe_code)]

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!(
    "durable-backlog supports only Linux on 64-bit targets (see the crate docs, \"Platform\")"
);

mod commit;
mod cursor;
mod error;
mod files;
mod flusher;
mod format;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod inspect;
mod open;
mod options;
mod psync;
mod read_error;
mod read_only;
mod reader;
mod recovery;
mod region;
mod ring;
mod runid;
/// The publication protocol, public only to the loom model (`cfg(loom)`, `tests/loom.rs`).
#[cfg(loom)]
pub mod seqlock;
#[cfg(not(loom))]
#[allow(unreachable_pub)] // `pub` for the loom build, where the module is public
mod seqlock;
mod shared;
#[cfg(feature = "sim")]
pub mod sim;
mod stats;
#[cfg(loom)]
pub mod sync;
#[cfg(not(loom))]
#[allow(unreachable_pub)] // `pub` for the loom build, where the module is public
mod sync;
mod writer;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use cursor::Cursor;
pub use error::{Error, Result};
pub use format::{MAX_CAPACITY, MIN_CAPACITY};
pub use options::{DEFAULT_CAPACITY, Durability, Options};
pub use psync::{FullResyncReason, PsyncReply};
pub use read_error::{ReadError, TailError, WriteToError};
pub use reader::Reader;
pub use recovery::{RecoveryKind, RecoveryReport};
pub use runid::RunId;
pub use stats::Stats;
pub use writer::Backlog;
