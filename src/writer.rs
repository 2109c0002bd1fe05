//! The single writer: append, commit order, durability policy, rare history operations,
//! close, and poisoning after a failed flush. Creating and opening are in `open.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::commit::{CommitKind, CommitState, Meta};
use crate::error::{Error, Result};
use crate::files::Lock;
use crate::flusher::Flusher;
use crate::format::live::L_EPOCH;
use crate::format::slot::MAX_OFFSET;
use crate::options::Durability;
use crate::psync::{History, PsyncReply, decide};
use crate::reader::Reader;
use crate::recovery::RecoveryReport;
use crate::runid::RunId;
use crate::seqlock;
use crate::shared::Shared;
use crate::stats::Stats;

/// A durable replication backlog: the single writer's handle.
///
/// Not `Clone`; appends take `&mut self`; an exclusive OS lock on the file stops a second
/// writer in this or another process. Readers are separate, cheap handles ([`Backlog::reader`]).
///
/// # Examples
/// ```
/// use durable_backlog::{Backlog, Options};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("backlog");
/// let mut b = Backlog::create(&path, Options::new()).unwrap();
/// b.append(b"*1\r\n$4\r\nPING\r\n").unwrap();
/// let id = b.run_id();
/// assert!(b.psync(id.as_str(), 1).is_continue());
/// b.close().unwrap();
///
/// // A restarted master keeps offering partial resync to replicas of the old run ID.
/// let b = Backlog::open(&path, Options::new()).unwrap();
/// assert_ne!(b.run_id(), id);
/// assert!(b.psync(id.as_str(), 15).is_continue());
/// ```
#[derive(Debug)]
pub struct Backlog {
    pub(crate) sh: Arc<Shared>,
    pub(crate) commit: Arc<Mutex<CommitState>>,
    pub(crate) meta: Meta,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) durability: Durability,
    pub(crate) flusher: Option<Flusher>,
    pub(crate) report: RecoveryReport,
    pub(crate) lock: Option<Lock>,
}

impl Backlog {
    /// Appends bytes of the replication stream; returns the new [`Backlog::offset`].
    ///
    /// The bytes are readable at once. They survive a process crash as soon as this returns;
    /// OS-crash and power-loss survival follow the [`Durability`] policy. Appending more than
    /// the capacity keeps only the last `capacity` bytes (as Redis's backlog does).
    ///
    /// # Errors
    /// [`Error::Poisoned`] after a failed flush; [`Error::Io`] if this append's commit
    /// (`Always`) fails — the handle is then poisoned; [`Error::InvalidArgument`] if the
    /// offset would pass 2^63 - 2.
    #[inline]
    pub fn append(&mut self, data: &[u8]) -> Result<u64> {
        let n = data.len() as u64;
        if n == 0 {
            self.sh.check_poison()?;
            return Ok(self.end);
        }
        let new_end = self.before_fill(n)?;
        self.end = seqlock::fill(&*self.sh, self.end, data);
        debug_assert_eq!(self.end, new_end);
        self.after_fill()?;
        self.sh.wake_waiters();
        Ok(new_end)
    }

    /// Appends the concatenation of `bufs` as one append; returns the new
    /// [`Backlog::offset`].
    ///
    /// Exactly as [`append`](Backlog::append) of the concatenated bytes, without building it:
    /// readers see all of the bytes or none (one publication of the new end), a process crash
    /// after it returns loses none of them, the [`Durability`] policy applies once to the
    /// whole batch (`Always`: one commit, one sync), and more than the capacity keeps only the
    /// last `capacity` bytes. Meant for a server that publishes many small records at once.
    ///
    /// # Errors
    /// As [`append`](Backlog::append).
    ///
    /// # Examples
    /// ```
    /// use std::io::IoSlice;
    /// use durable_backlog::{Backlog, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut b = Backlog::create(dir.path().join("b"), Options::new()).unwrap();
    /// let end = b.append_vectored(&[IoSlice::new(b"*1\r\n"), IoSlice::new(b"$4\r\nPING\r\n")]).unwrap();
    /// assert_eq!(end, 14);
    /// let mut buf = [0u8; 14];
    /// b.reader().read_at(1, &mut buf).unwrap();
    /// assert_eq!(&buf, b"*1\r\n$4\r\nPING\r\n");
    /// ```
    pub fn append_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> Result<u64> {
        let end = self.append_vectored_quiet(bufs)?;
        self.sh.wake_waiters();
        Ok(end)
    }

    /// Appends as [`append_vectored`](Backlog::append_vectored) does, except that cursors
    /// asleep in [`Cursor::wait`](crate::Cursor::wait) are not woken: they learn of the bytes
    /// at the next [`wake_cursors`](Backlog::wake_cursors) or when their current sleep ends
    /// (at most 50 ms later). Readers, and cursors that are not asleep, see the bytes at once.
    ///
    /// For a server that acknowledges its clients before it feeds its replicas: waking a
    /// sleeping sender thread is a syscall on whose return the sender may take this thread's
    /// CPU before the acknowledgements are written. Call `wake_cursors` once they are.
    ///
    /// # Errors
    /// As [`append`](Backlog::append).
    ///
    /// # Examples
    /// ```
    /// use std::io::IoSlice;
    /// use durable_backlog::{Backlog, Options};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut b = Backlog::create(dir.path().join("b"), Options::new()).unwrap();
    /// b.append_vectored_quiet(&[IoSlice::new(b"*1\r\n$4\r\nPING\r\n")]).unwrap();
    /// // ... answer the clients whose writes these were ...
    /// b.wake_cursors();
    /// ```
    pub fn append_vectored_quiet(&mut self, bufs: &[std::io::IoSlice<'_>]) -> Result<u64> {
        let n = bufs
            .iter()
            .try_fold(0u64, |acc, b| acc.checked_add(b.len() as u64))
            .ok_or_else(offset_overflow)?;
        if n == 0 {
            self.sh.check_poison()?;
            return Ok(self.end);
        }
        let new_end = self.before_fill(n)?;
        self.end = seqlock::fill_parts(&*self.sh, self.end, n, bufs);
        debug_assert_eq!(self.end, new_end);
        self.after_fill()?;
        Ok(new_end)
    }

    /// Wakes the cursors asleep in [`Cursor::wait`](crate::Cursor::wait) after
    /// [`append_vectored_quiet`](Backlog::append_vectored_quiet). Costs a load when none is
    /// asleep, one syscall otherwise.
    #[inline]
    pub fn wake_cursors(&self) {
        self.sh.wake_waiters();
    }

    /// The part of an append of `n > 0` bytes before they are copied: checks, retires the
    /// bytes they will overwrite and protects the last commit. Returns the new end.
    #[inline]
    fn before_fill(&mut self, n: u64) -> Result<u64> {
        self.sh.check_poison()?;
        let new_end = match self.end.checked_add(n) {
            Some(e) if e <= MAX_OFFSET => e,
            _ => return Err(offset_overflow()),
        };
        let new_start = seqlock::retire(&*self.sh, self.start, self.end, n);
        if new_start != self.start {
            self.start = new_start;
            // After the live start (a process crash in this commit must still find the live
            // page consistent with the slot), before the overwrite. Lock-free unless the
            // overwrite reaches what the last (or an in-flight) commit's checksums need; the
            // pair with the flusher's commit is in `seqlock::must_protect`.
            if seqlock::must_protect(&*self.sh, new_start) {
                self.protect_before_overwrite(new_start)?;
            }
        }
        Ok(new_end)
    }

    /// The part of an append after the bytes are published: the durability policy. Waking
    /// tailers is the caller's.
    #[inline]
    fn after_fill(&mut self) -> Result<()> {
        if self.durability == Durability::Always {
            self.commit_now(CommitKind::Writer)?;
        }
        Ok(())
    }

    /// The rare part of an append that laps what the last commit's checksums need: commit
    /// the same end again without those bytes first (see `CommitState::protect_last_commit`).
    #[cold]
    #[inline(never)]
    fn protect_before_overwrite(&mut self, new_start: u64) -> Result<()> {
        let mut st = self.commit.lock();
        // The background commit this waited for may have failed: a sync is never retried.
        self.sh.check_poison()?;
        st.protect_last_commit(&self.sh, new_start)
            .map_err(|e| self.sh.poison(e))
    }

    pub(crate) fn commit_now(&mut self, kind: CommitKind) -> Result<u64> {
        self.sh.check_poison()?;
        let mut st = self.commit.lock();
        st.commit(&self.sh, self.start, self.end, kind)
            .map_err(|e| self.sh.poison(e))
    }

    /// Commits everything appended so far; returns [`Backlog::durable_offset`].
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the sync's [`Error::Io`]; a failure poisons the handle (a sync
    /// is never retried and reported as success).
    pub fn flush(&mut self) -> Result<u64> {
        self.commit_now(CommitKind::Writer)
    }

    /// Runs a rare history change: readers see the change counter odd meanwhile.
    fn change_history(&mut self, start: u64, end: u64, f: impl FnOnce(&mut Meta)) -> Result<()> {
        self.sh.check_poison()?;
        let sh = Arc::clone(&self.sh);
        seqlock::begin_change(&*sh);
        let result = {
            let mut st = self.commit.lock();
            let mut meta = st.meta.clone();
            f(&mut meta);
            st.meta = meta.clone();
            let r = st.commit(&sh, start, end, CommitKind::Writer);
            if r.is_ok() {
                sh.start().store(start, Ordering::SeqCst);
                sh.end().store(end, Ordering::SeqCst);
                sh.live(L_EPOCH).store(meta.epoch, Ordering::SeqCst);
                self.meta = meta;
                self.start = start;
                self.end = end;
            }
            r
        };
        seqlock::end_change(&*sh);
        sh.wake_waiters();
        result.map(|_| ()).map_err(|e| sh.poison(e))
    }

    /// Promotion (Redis's `shiftReplicationId`): a new run ID; the current one stays valid
    /// for PSYNC up to the current offset + 1.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the commit's [`Error::Io`].
    pub fn shift_run_id(&mut self) -> Result<()> {
        let end = self.end;
        self.change_history(self.start, end, |m| m.shift(end))
    }

    /// Continues the same bytes under another master's replication ID, as a replica does
    /// when its master answers `+CONTINUE <id>` with an ID other than its own: the current ID
    /// stays valid for PSYNC up to the current offset + 1 (like [`Backlog::shift_run_id`]),
    /// and `id` becomes the current one. Nothing happens if `id` is already current.
    ///
    /// Only call this when the master's history at this offset is known to be this
    /// backlog's (it just accepted a partial resynchronization at `offset() + 1`).
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the commit's [`Error::Io`].
    ///
    /// # Examples
    /// ```
    /// use durable_backlog::{Backlog, Options, RunId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut b = Backlog::create(dir.path().join("backlog"), Options::new()).unwrap();
    /// b.append(b"*1\r\n$4\r\nPING\r\n").unwrap();
    /// let (mine, masters) = (b.run_id(), RunId::random());
    /// b.adopt_run_id(masters).unwrap();
    /// assert_eq!(b.run_id(), masters);
    /// assert_eq!(b.replid2(), Some((mine, 15)));
    /// assert!(b.psync(mine.as_str(), 15).is_continue());
    /// ```
    pub fn adopt_run_id(&mut self, id: RunId) -> Result<()> {
        if id == self.meta.run_id {
            return Ok(());
        }
        let end = self.end;
        self.change_history(self.start, end, |m| m.shift_to(end, id))
    }

    /// Empties the backlog and continues another history at `offset` under `run_id` (e.g.
    /// after this server fully synced from another master). Past IDs are forgotten.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `offset` exceeds 2^63 - 2; [`Error::Poisoned`] or the
    /// commit's [`Error::Io`].
    pub fn reset(&mut self, run_id: RunId, offset: u64) -> Result<()> {
        if offset > MAX_OFFSET {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} exceeds {MAX_OFFSET}"
            )));
        }
        self.change_history(offset + 1, offset, |m| {
            *m = Meta {
                run_id,
                gens: Vec::new(),
                epoch: m.epoch + 1,
                epochs: Vec::new(),
            };
        })
    }

    /// Drops every byte after `offset` (which must not exceed [`Backlog::offset`]), as if the
    /// tail had never been written, and starts a new run ID: replicas that received any
    /// dropped byte get a full resync, never a spliced history.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `offset > offset()`; [`Error::Poisoned`] or the commit's
    /// [`Error::Io`].
    pub fn truncate_to(&mut self, offset: u64) -> Result<()> {
        if offset > self.end {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {offset}, beyond the end {}",
                self.end
            )));
        }
        let start = self.start.min(offset + 1);
        self.change_history(start, offset, |m| {
            let e = m.epoch;
            m.cut(offset, e);
            m.shift(offset);
        })
    }

    /// Commits everything, marks the file cleanly closed and releases the lock.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the final sync's [`Error::Io`].
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(mut f) = self.flusher.take() {
            f.stop();
        }
        // Two commits: the clean mark is trusted without verifying data, so it must only
        // reach the disk after the data it covers is durable (one sync may land its writes
        // in any order).
        let r = if self.lock.is_some() {
            self.commit_now(CommitKind::Writer)
                .and_then(|_| self.commit_now(CommitKind::CleanClose))
                .map(|_| ())
        } else {
            Ok(())
        };
        self.lock = None;
        r
    }

    /// `master_repl_offset`: offset of the newest byte (0 before the first).
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.end
    }

    /// `repl_backlog_first_byte_offset`: offset of the oldest byte held (`offset() + 1` when
    /// empty).
    #[must_use]
    pub fn first_offset(&self) -> u64 {
        self.start
    }

    /// `repl_backlog_histlen`: bytes held.
    #[must_use]
    pub fn histlen(&self) -> u64 {
        self.end + 1 - self.start
    }

    /// Offset up to which bytes are committed to stable storage. Under `EverySec` the
    /// background thread advances it at any moment.
    #[must_use]
    pub fn durable_offset(&self) -> u64 {
        self.sh.durable().load(Ordering::Acquire)
    }

    /// Ring capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.sh.geo.capacity
    }

    /// The durability policy in force.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Changes the durability policy of an open backlog (Redis's `CONFIG SET appendfsync`):
    /// to [`Durability::EverySec`] the background commit starts, away from it it stops; to
    /// [`Durability::Always`] everything appended so far is committed first, so the policy
    /// covers every byte held.
    ///
    /// # Errors
    /// [`Error::Poisoned`], the commit's [`Error::Io`], or [`Error::Io`] if the background
    /// thread cannot start; the policy is then unchanged.
    pub fn set_durability(&mut self, d: Durability) -> Result<()> {
        self.sh.check_poison()?;
        if d == Durability::Always {
            self.commit_now(CommitKind::Writer)?;
        }
        match (self.flusher.is_some(), d == Durability::EverySec) {
            (false, true) => {
                self.flusher = Some(Flusher::start(
                    Arc::clone(&self.sh),
                    Arc::clone(&self.commit),
                )?);
            }
            (true, false) => {
                if let Some(mut f) = self.flusher.take() {
                    f.stop();
                }
            }
            _ => {}
        }
        self.durability = d;
        Ok(())
    }

    /// The current run ID (`master_replid`).
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.meta.run_id
    }

    /// The previous run ID and its `second_replid_offset`, if any (Redis's `replid2`).
    #[must_use]
    pub fn replid2(&self) -> Option<(RunId, u64)> {
        self.meta.gens.first().map(|g| (g.id, g.second_offset))
    }

    /// Every past run ID still accepted for PSYNC, newest first, each with the largest
    /// PSYNC offset it allows.
    #[must_use]
    pub fn past_run_ids(&self) -> Vec<(RunId, u64)> {
        self.meta
            .gens
            .iter()
            .map(|g| (g.id, g.second_offset))
            .collect()
    }

    /// What a master would answer to `PSYNC <replid> <offset>` (Redis's rule, with the chain
    /// of past IDs). Render it with [`PsyncReply::to_wire`].
    #[must_use]
    pub fn psync(&self, replid: &str, offset: i64) -> PsyncReply {
        let past = self.past_run_ids();
        decide(
            &History {
                run_id: self.meta.run_id,
                past: &past,
                first: self.start,
                end: self.end,
            },
            replid,
            offset,
        )
    }

    /// A reader handle: cheap, `Clone + Send + Sync`, usable from any thread.
    #[must_use]
    pub fn reader(&self) -> Reader {
        Reader::new(Arc::clone(&self.sh))
    }

    /// What recovery found when this handle was opened.
    #[must_use]
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The backlog's `INFO replication` fields.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let (replid2, second) = match self.replid2() {
            Some((id, off)) => (Some(id), i64::try_from(off).unwrap_or(i64::MAX)),
            None => (None, -1),
        };
        Stats {
            master_replid: self.meta.run_id,
            master_replid2: replid2,
            master_repl_offset: self.end,
            second_repl_offset: second,
            repl_backlog_active: 1,
            repl_backlog_size: self.capacity(),
            repl_backlog_first_byte_offset: self.start,
            repl_backlog_histlen: self.histlen(),
            durable_offset: self.durable_offset(),
        }
    }

    /// The file's path (`<simulated>` on simulated storage).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.sh.path
    }
}

impl Drop for Backlog {
    /// Best effort: commits and marks the file clean, ignoring errors. Call
    /// [`Backlog::close`] to learn whether that worked.
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The error of an append that would take the offset past [`MAX_OFFSET`] (out of line: the
/// hot path only compares).
#[cold]
#[inline(never)]
fn offset_overflow() -> Error {
    Error::InvalidArgument(format!("offset would exceed {MAX_OFFSET}"))
}
