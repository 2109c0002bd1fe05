//! Read-only access to a backlog that a writer in another process may have open.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::LIVE_OFFSET;
use crate::format::live::{L_BOOT0, L_BOOT1, L_EPOCH, L_MAGIC, LIVE_MAGIC};
use crate::format::slot::MAX_OFFSET;
use crate::reader::Reader;
use crate::recovery::{map_file, newest_slot};
use crate::region::{Access, current_boot_id};
use crate::shared::{Shared, load_acquire};
use crate::writer::Backlog;

/// How long `open_read_only` waits for a writer that is in the middle of opening the file.
const SETTLE: Duration = Duration::from_secs(2);

impl Backlog {
    /// Opens a backlog for reading only, whether or not a writer (in this or another process)
    /// has it open: the file is mapped read-only, no lock is taken, nothing is ever written.
    ///
    /// The returned [`Reader`] and its [`Cursor`](crate::Cursor)s validate every copy exactly
    /// as in the writer's process, so a sidecar or an operator's tool can inspect or stream a
    /// live backlog. A cursor's [`wait`](crate::Cursor::wait) polls (the writer cannot signal
    /// another process without a syscall per append).
    ///
    /// The view follows the file the path named at open: if a writer later resizes the
    /// backlog (which replaces the file), reads report
    /// [`ReadError::Moved`](crate::ReadError::Moved) / [`TailError::Moved`](crate::TailError::Moved):
    /// call this again for a view of the new file, at the same offsets. A writer that reopens the file starts a new generation: existing
    /// cursors report [`TailError::HistoryChanged`](crate::TailError::HistoryChanged); make
    /// new ones. A writer that dies in the middle of a reset or truncation leaves the
    /// history-change counter odd: the view's reads then wait until a writer reopens the file
    /// (its recovery completes the change).
    ///
    /// # Errors
    /// [`Error::NeedsRecovery`] if the last writer neither closed the file cleanly nor left a
    /// live state valid on this boot (the machine crashed since); [`Error::Corrupt`] /
    /// [`Error::UnsupportedVersion`] for a file that is not a readable backlog;
    /// [`Error::Io`] if it cannot be opened or mapped.
    ///
    /// # Examples
    /// ```
    /// use durable_backlog::{Backlog, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("b");
    /// let mut master = Backlog::create(&path, Options::new()).unwrap();
    /// master.append(b"hello").unwrap();
    ///
    /// let view = Backlog::open_read_only(&path).unwrap(); // the writer keeps its lock
    /// let mut tail = view.cursor(view.first_offset());
    /// master.append(b" world").unwrap();
    /// let mut buf = [0u8; 32];
    /// let n = tail.read(&mut buf).unwrap();
    /// assert_eq!(&buf[..n], b"hello world");
    /// ```
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Reader> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| Error::io("opening the backlog file", Some(path), e))?;
        let (medium, geo) = map_file(&file, path, Access::ReadOnly)?;
        let mut sh = Shared::new(medium, geo, path.to_path_buf());
        sh.read_only = true;
        let deadline = Instant::now() + SETTLE;
        loop {
            if live_state_valid(&sh, path)? {
                return Ok(Reader::new(Arc::new(sh)));
            }
            // A writer may be between its recovery commit and its live-page update.
            if Instant::now() >= deadline {
                return Err(Error::NeedsRecovery {
                    path: path.to_path_buf(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether the live page describes bytes a reader may trust without running recovery: those
/// of a clean close, or those of a writer of this boot (alive, or dead with the page cache
/// intact — exactly what recovery itself would trust after a process crash).
fn live_state_valid(sh: &Shared, path: &Path) -> Result<bool> {
    let (newest, _, _) = newest_slot(&sh.medium, path)?;
    let live = |f: usize| load_acquire(sh.medium.atomic_u64(LIVE_OFFSET + f as u64));
    if live(L_MAGIC) != LIVE_MAGIC || live(L_EPOCH) != newest.epoch {
        return Ok(false);
    }
    let (start, end) = (load_acquire(sh.start()), load_acquire(sh.end()));
    let sane = end <= MAX_OFFSET && start <= end + 1 && end + 1 - start <= sh.geo.capacity;
    if !sane {
        return Ok(false);
    }
    if newest.clean && (start, end) == (newest.start, newest.end) {
        return Ok(true);
    }
    let boot = current_boot_id();
    let live_boot = [live(L_BOOT0).to_le_bytes(), live(L_BOOT1).to_le_bytes()].concat();
    Ok(boot != [0u8; 16] && live_boot == boot && end >= newest.end && start >= newest.start)
}
