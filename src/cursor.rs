//! Tailing cursors: how a replica sender streams the backlog as the writer appends.

use std::io;
use std::time::{Duration, Instant};

use crate::read_error::{TailError, WriteToError};
use crate::reader::Reader;
use crate::seqlock;

/// Bytes [`Cursor::write_to`] copies and validates at a time.
const CHUNK: usize = 64 * 1024;
/// Readiness checks spent spinning before a waiter sleeps.
const SPINS: u32 = 128;
/// How long a waiter keeps yielding (re-checking between yields) before it sleeps: a tailer
/// keeping pace with a streaming writer then rarely sleeps, so the writer rarely pays a wake
/// syscall and the woken tailer does not preempt it (measured in benches/concurrency.rs).
const YIELD_FOR: Duration = Duration::from_micros(50);
/// Longest single sleep of an in-process waiter. Appends and history changes wake sleepers;
/// this bounds the sleep should the writer go away without another one.
const SLICE: Duration = Duration::from_millis(50);
/// Bounds of the poll interval of a waiter in another process than the writer.
const POLL_MIN: Duration = Duration::from_micros(20);
const POLL_MAX: Duration = Duration::from_millis(1);

/// A tailing reader for one replica sender: it remembers the next offset to send, hands out
/// the bytes after it as the writer appends them, sleeps until there are new ones, and says
/// clearly when the writer lapped it.
///
/// Outcomes of [`Cursor::read`] and [`Cursor::write_to`]:
/// - `Ok(n)` with `n > 0`: the next `n` bytes, validated; the cursor moved past them.
/// - `Ok(0)`: caught up with the writer; [`Cursor::wait`] for more.
/// - `Err(`[`TailError::Overwritten`]`)`: **lapped** — the ring overwrote the cursor's next
///   byte before it was read. That replica needs a full resync.
/// - `Err(`[`TailError::HistoryChanged`]`)`: the history this cursor followed was reset or
///   truncated (or a reopened backlog cut it in recovery): offsets now name other bytes, so
///   that replica needs a full resync too.
/// - `Err(`[`TailError::NotWritten`]`)`: the cursor was made past the end of the stream.
/// - `Err(`[`TailError::Moved`]`)`: the backlog was resized
///   ([`Backlog::resize`](crate::Backlog::resize)): the same history goes on in a new file.
///   No resync needed: make a cursor at the same [`position`](Cursor::position) on the
///   resized backlog's reader.
///
/// These outcomes are permanent: every later call returns them again. Neither the cursor nor
/// waiting on it ever blocks the writer.
///
/// # Examples
/// A sender streaming to a replica while the master appends:
/// ```
/// use std::time::Duration;
/// use durable_backlog::{Backlog, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let mut master = Backlog::create(dir.path().join("b"), Options::new()).unwrap();
/// master.append(b"*1\r\n$4\r\nPING\r\n").unwrap();
///
/// // The replica asked for PSYNC from offset 1: stream everything after it, as it comes.
/// let mut cursor = master.reader().cursor(1);
/// let sender = std::thread::spawn(move || {
///     let mut socket = Vec::new(); // any io::Write
///     while socket.len() < 28 {
///         if cursor.write_to(&mut socket, 1 << 20).unwrap() == 0 {
///             cursor.wait(Duration::from_secs(5));
///         }
///     }
///     socket
/// });
/// master.append(b"*1\r\n$4\r\nPING\r\n").unwrap();
/// assert_eq!(sender.join().unwrap(), b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
/// ```
///
/// A cursor the writer lapped:
/// ```
/// use durable_backlog::{Backlog, Options, TailError};
/// let dir = tempfile::tempdir().unwrap();
/// let mut b = Backlog::create(dir.path().join("b"), Options::new().capacity(16 * 1024)).unwrap();
/// let mut slow = b.reader().cursor(1);
/// b.append(&[7u8; 20_000]).unwrap(); // more than the ring holds: offsets 1..=3616 are gone
/// let mut buf = [0u8; 100];
/// match slow.read(&mut buf) {
///     Err(TailError::Overwritten { requested: 1, first: 3617 }) => { /* full resync */ }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
pub struct Cursor {
    reader: Reader,
    next: u64,
    change: u64,
    buf: Vec<u8>,
}

impl Cursor {
    pub(crate) fn new(reader: Reader, next: u64) -> Self {
        let snap = reader.snapshot();
        // Made on a file a resize already replaced: a counter value no snapshot has (odd)
        // makes the cursor ready at once, and its first read reports `Moved`.
        let change = if reader.is_moved() {
            u64::MAX
        } else {
            snap.change
        };
        Cursor {
            reader,
            next,
            change,
            buf: Vec::new(),
        }
    }

    /// The replication offset of the next byte this cursor will return.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Bytes published after the cursor's position, as far as the writer has published them
    /// now (another thread may publish more at any moment). Some may already be lapped.
    #[must_use]
    pub fn available(&self) -> u64 {
        (self.reader.snapshot().end + 1).saturating_sub(self.next)
    }

    /// Copies the next available bytes into `buf` (at most `buf.len()`) and moves past them;
    /// returns how many (0 when caught up with the writer).
    ///
    /// # Errors
    /// [`TailError::Overwritten`]: lapped (the next byte is gone);
    /// [`TailError::HistoryChanged`]: the history was reset or truncated;
    /// [`TailError::NotWritten`]: the cursor was created past the end of the stream
    /// (`offset > Reader::offset() + 1`); [`TailError::Moved`]: the backlog was resized
    /// (re-attach at [`position`](Cursor::position)). All four are permanent.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, TailError> {
        let n = fetch(&self.reader, self.change, self.next, buf)?;
        self.next += n as u64;
        Ok(n)
    }

    /// Writes the next available bytes (at most `max`) to `out` and moves past them; returns
    /// how many (0 when caught up).
    ///
    /// Bytes go through an internal buffer: each chunk (64 KiB at most) is copied out of the
    /// ring and validated before any of it is written to `out`, so `out` never receives a
    /// byte the writer overwrote during the copy.
    ///
    /// # Errors
    /// [`WriteToError::Tail`] with what [`Cursor::read`] would report (only if nothing was
    /// written in this call; otherwise the call returns the count and the next call reports
    /// it); [`WriteToError::Sink`] if `out` fails — then part of the failing chunk may have
    /// reached `out` although the cursor did not move past it.
    pub fn write_to<W: io::Write + ?Sized>(
        &mut self,
        out: &mut W,
        max: usize,
    ) -> Result<usize, WriteToError> {
        let mut total = 0;
        while total < max {
            let want = (max - total).min(CHUNK);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let n = match fetch(&self.reader, self.change, self.next, &mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if total == 0 => return Err(WriteToError::Tail(e)),
                Err(_) => break,
            };
            out.write_all(&self.buf[..n]).map_err(WriteToError::Sink)?;
            self.next += n as u64;
            total += n;
        }
        Ok(total)
    }

    /// Whether [`Cursor::read`] would now return bytes or an error rather than `Ok(0)`.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        seqlock::ready(self.reader.shared(), self.next, self.change)
    }

    /// Blocks until the writer publishes bytes at the cursor's position, the history changes,
    /// or `timeout` passes (`Duration::MAX`: no limit). Returns whether the cursor
    /// [`is_ready`](Cursor::is_ready) (false: timed out). Spurious early returns do not occur
    /// before the timeout, but the bytes may be lapped by the time they are read.
    ///
    /// It first re-checks while spinning briefly and then yielding the CPU for up to 50 µs
    /// (a tailer keeping pace with the writer rarely goes to sleep). Then, in the writer's
    /// process, it registers in the live page and sleeps on a futex there, which the writer
    /// signals once per registration (no syscall per append otherwise, and the writer never
    /// blocks). In another process
    /// ([`Backlog::open_read_only`](crate::Backlog::open_read_only)) it polls with an adaptive
    /// back-off: a few spins and yields, then sleeps growing from 20 µs to 1 ms, so a new byte
    /// is noticed at most about a millisecond late. The futex is private to the writer's
    /// process: a process forked from it should open its own view with `open_read_only`
    /// (a cursor carried across `fork` would notice new bytes only every 50 ms).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use durable_backlog::{Backlog, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut b = Backlog::create(dir.path().join("b"), Options::new()).unwrap();
    /// let mut c = b.reader().cursor(b.offset() + 1);
    /// assert!(!c.wait(Duration::from_millis(1))); // nothing new yet
    /// b.append(b"x").unwrap();
    /// assert!(c.wait(Duration::from_secs(5)));
    /// let mut buf = [0u8; 8];
    /// assert_eq!(c.read(&mut buf).unwrap(), 1);
    /// ```
    #[allow(clippy::must_use_candidate)] // a sender loop may just wait, then read again
    pub fn wait(&self, timeout: Duration) -> bool {
        if self.is_ready() {
            return true;
        }
        for _ in 0..SPINS {
            std::hint::spin_loop();
            if self.is_ready() {
                return true;
            }
        }
        let deadline = Instant::now().checked_add(timeout);
        let yield_until = Instant::now() + YIELD_FOR;
        while Instant::now() < yield_until.min(deadline.unwrap_or(yield_until)) {
            std::thread::yield_now();
            if self.is_ready() {
                return true;
            }
        }
        let sh = self.reader.shared();
        if sh.read_only {
            return self.poll(deadline);
        }
        seqlock::wait_ready(sh, self.next, self.change, || {
            let left = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => SLICE,
            };
            (!left.is_zero()).then(|| left.min(SLICE))
        })
    }

    /// Waiting without the writer's help: adaptive polling.
    fn poll(&self, deadline: Option<Instant>) -> bool {
        let mut pause = POLL_MIN;
        for _ in 0..16 {
            std::thread::yield_now();
            if self.is_ready() {
                return true;
            }
        }
        loop {
            if self.is_ready() {
                return true;
            }
            let now = Instant::now();
            let nap = match deadline {
                Some(d) if now >= d => return false,
                Some(d) => pause.min(d - now),
                None => pause,
            };
            std::thread::sleep(nap);
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// The reader this cursor reads through.
    #[must_use]
    pub fn reader(&self) -> &Reader {
        &self.reader
    }
}

/// One validated copy from `next` into `buf`, without moving any cursor.
fn fetch(reader: &Reader, change: u64, next: u64, buf: &mut [u8]) -> Result<usize, TailError> {
    let snap = reader.snapshot();
    if snap.change != change {
        return Err(if reader.is_moved() {
            TailError::Moved
        } else {
            TailError::HistoryChanged
        });
    }
    // A resize marks the replaced file with a history change, which the check above sees;
    // a cursor that caught up re-checks, so that it never waits on a ring that stopped.
    match reader.copy_validated(&snap, next, buf) {
        Ok(0) | Err(TailError::HistoryChanged) if reader.is_moved() => Err(TailError::Moved),
        r => r,
    }
}
