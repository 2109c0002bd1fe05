//! Creating and opening a backlog: a new file, recovery of an existing one, resizing, and
//! the start of a new generation.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::commit::{BlockState, CommitKind, CommitState, Meta};
use crate::error::{Error, Result};
use crate::files::{Lock, is_at_path, lock_file, new_file, remove_stale_temps, sync_dir};
use crate::flusher::Flusher;
use crate::format::Geometry;
use crate::format::live::{L_BOOT0, L_BOOT1, L_EPOCH, L_MAGIC, L_MOVED, LIVE_MAGIC};
use crate::format::slot::Slot;
use crate::options::{DEFAULT_CAPACITY, Durability, Options};
use crate::recovery::{DataCheck, RecoveryKind, RecoveryReport, map_file, recover};
use crate::region::{Access, Medium};
use crate::runid::RunId;
use crate::seqlock;
use crate::shared::Shared;
use crate::writer::Backlog;

impl Backlog {
    /// Creates a new, empty backlog file at `path` (offset 0, a fresh run ID).
    ///
    /// The file is created atomically: a temporary file beside it is fully allocated (so a
    /// full disk fails here, never later), initialised, synced, then linked into place and the
    /// directory synced. Mode 0600.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `path` exists; [`Error::InvalidArgument`] for a capacity
    /// outside 16 KiB ..= 1 TiB; [`Error::Io`] (e.g. no space) otherwise.
    pub fn create(path: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let path = path.as_ref();
        let geo = Geometry::for_capacity(opts.capacity.unwrap_or(DEFAULT_CAPACITY))?;
        if path.exists() {
            return Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        remove_stale_temps(path);
        let (file, tmp, map) = new_file(path, &geo)?;
        map.prefault();
        let sh = Arc::new(Shared::new(Medium::Map(map), geo, path.to_path_buf()));
        let meta = Meta {
            run_id: RunId::random(),
            gens: Vec::new(),
            epoch: 1,
            epochs: Vec::new(),
        };
        let result = Self::init(
            sh,
            meta,
            1,
            0,
            Lock::File(file),
            opts.durability,
            RecoveryKind::Created,
            None,
        )
        .and_then(|b| match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(Error::io(
                "linking the backlog file into place",
                Some(path),
                e,
            )),
        });
        let _ = std::fs::remove_file(&tmp);
        let b = result?;
        sync_dir(path)?;
        Ok(b)
    }

    /// Opens an existing backlog, recovering from whatever ended the last writer, and starts
    /// a new generation: a new run ID, the old one kept for PSYNC up to the recovered end.
    ///
    /// # Errors
    /// [`Error::AlreadyOpen`] if another handle holds it; [`Error::Corrupt`] /
    /// [`Error::UnsupportedVersion`] for a file that is not a readable backlog (left
    /// untouched); [`Error::Io`] if it is missing or unreadable.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let path = path.as_ref();
        let file = open_locked(path)?;
        remove_stale_temps(path);
        let (medium, geo) = map_file(&file, path, Access::ReadWrite)?;
        let sh = Arc::new(Shared::new(medium, geo, path.to_path_buf()));
        Self::open_shared(sh, Lock::File(file), &opts)
    }

    /// Opens `path` if it exists, else creates it.
    ///
    /// # Errors
    /// As [`Backlog::open`] and [`Backlog::create`].
    pub fn open_or_create(path: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            Self::open(path, opts)
        } else {
            match Self::create(path, opts) {
                Err(Error::AlreadyExists { .. }) => Self::open(path, opts),
                r => r,
            }
        }
    }

    /// Creates a backlog on simulated storage (feature `sim`).
    ///
    /// # Errors
    /// As [`Backlog::create`]; [`Error::AlreadyExists`] if the disk already holds one.
    #[cfg(feature = "sim")]
    pub fn create_sim(disk: &crate::sim::SimDisk, opts: Options) -> Result<Self> {
        let geo = Geometry::for_capacity(opts.capacity.unwrap_or(DEFAULT_CAPACITY))?;
        if !disk.try_lock() {
            return Err(Error::AlreadyOpen {
                path: std::path::PathBuf::from("<simulated>"),
            });
        }
        let lock = Lock::Sim(disk.clone());
        if !disk.format(geo.file_len) {
            return Err(Error::AlreadyExists {
                path: std::path::PathBuf::from("<simulated>"),
            });
        }
        let sh = Arc::new(Shared::new(
            Medium::Sim(disk.clone()),
            geo,
            std::path::PathBuf::from("<simulated>"),
        ));
        let meta = Meta {
            run_id: RunId::random(),
            gens: Vec::new(),
            epoch: 1,
            epochs: Vec::new(),
        };
        Self::init(
            sh,
            meta,
            1,
            0,
            lock,
            opts.durability,
            RecoveryKind::Created,
            None,
        )
    }

    /// Opens a backlog on simulated storage (feature `sim`), recovering as [`Backlog::open`].
    ///
    /// # Errors
    /// As [`Backlog::open`]; resizing simulated storage is not supported.
    #[cfg(feature = "sim")]
    pub fn open_sim(disk: &crate::sim::SimDisk, opts: Options) -> Result<Self> {
        if !disk.try_lock() {
            return Err(Error::AlreadyOpen {
                path: std::path::PathBuf::from("<simulated>"),
            });
        }
        let lock = Lock::Sim(disk.clone());
        let medium = Medium::Sim(disk.clone());
        let path = std::path::PathBuf::from("<simulated>");
        if medium.len() < crate::format::TABLE_OFFSET {
            return Err(crate::recovery::corrupt(
                &path,
                0,
                "a backlog",
                format!("{} bytes", medium.len()),
            ));
        }
        let geo = crate::recovery::probe(&medium, &path)?;
        if opts.capacity.is_some_and(|c| c != geo.capacity) {
            return Err(Error::InvalidArgument(
                "resizing simulated storage is not supported".into(),
            ));
        }
        let sh = Arc::new(Shared::new(medium, geo, path));
        Self::open_shared(sh, lock, &opts)
    }

    fn open_shared(sh: Arc<Shared>, lock: Lock, opts: &Options) -> Result<Self> {
        let check = if opts.verify_on_open {
            DataCheck::Always
        } else {
            DataCheck::AsNeeded
        };
        let rec = recover(&sh, check)?;
        let mut meta = rec.state.meta.clone();
        meta.shift(rec.end);
        if let (Some(cap), Lock::File(_)) = (opts.capacity.filter(|&c| c != sh.geo.capacity), &lock)
        {
            let mut report = rec.report;
            report.resized_from = Some(sh.geo.capacity);
            let b = Self::replace_file(
                &sh,
                Geometry::for_capacity(cap)?,
                meta,
                rec.start,
                rec.end,
                opts.durability,
                report,
            )?;
            drop(lock);
            sync_dir(&sh.path)?;
            b.sh.medium.prefault();
            return Ok(b);
        }
        let mut report = rec.report;
        report.resized_from = None;
        let mut state = rec.state;
        state.meta = meta.clone();
        Self::finish(
            sh,
            state,
            meta,
            rec.start,
            rec.end,
            lock,
            opts.durability,
            report,
        )
    }

    /// Changes the capacity of the open backlog to `capacity` bytes (16 KiB ..= 1 TiB), as
    /// Redis's `CONFIG SET repl-backlog-size` does, keeping the newest `capacity` bytes held
    /// (a smaller ring drops the oldest ones, as if it had overwritten them), the offsets,
    /// the run ID and its past generations, and the [`Durability`] policy.
    ///
    /// The bytes are copied into a new, fully allocated file created beside the old one
    /// under a temporary name, which is committed (one sync) and then renamed over the old
    /// file, and the directory synced: the same steps as an [`open`](Backlog::open) with
    /// another capacity (docs/FORMAT.md, "Resizing"). It takes the allocation of the new
    /// file, a copy of the bytes kept and three syncs; appends wait meanwhile (this takes
    /// `&mut self`). The new file's other pages are faulted in afterwards by a short-lived
    /// thread, beside the writer (that changes no byte). Both files take disk space until the
    /// old one is released.
    ///
    /// **Crash safety.** Everything appended is committed to the old file first, so a crash
    /// at any point leaves at the path either the old file or the new one, each a complete,
    /// committed backlog holding every byte `append` returned (the new one only the newest
    /// `capacity`): the new file is renamed into place only once its commit is durable, and
    /// until then the old file is untouched. **One writer throughout:** the old file stays
    /// locked until the new one, locked since its creation, is in place; an opener that
    /// locked the old file after that sees it is no longer at the path and tries again.
    ///
    /// **Readers.** [`Reader`](crate::Reader)s and [`Cursor`](crate::Cursor)s made before
    /// keep the old file mapped; once the new one is in place they report
    /// [`ReadError::Moved`](crate::ReadError::Moved) / [`TailError::Moved`](crate::TailError::Moved)
    /// (and [`Reader::is_moved`](crate::Reader::is_moved) says so): make new ones from
    /// [`Backlog::reader`] at the same offsets. Until they do, the old file's disk space
    /// stays allocated. The old file's background commit is stopped and its lock released;
    /// it gets no clean mark, as nothing can open it any more (no name).
    ///
    /// The same capacity is a no-op. Not available on simulated storage (one simulated file
    /// has no directory to rename in; the crash behaviour is that of the open-time resize,
    /// `tests/kill9.rs` kills processes in the middle of both).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a capacity out of range (or on simulated storage);
    /// [`Error::Poisoned`]; [`Error::Io`] if the old file's commit, creating, allocating or
    /// committing the new file, or the rename fails — the backlog then goes on unchanged in
    /// the old file (a failed commit of the old file poisons it, as any failed commit does).
    /// If only the final directory sync fails, the new file is in place but the rename may
    /// not survive a power loss: the resized backlog is returned poisoned, with that error.
    ///
    /// # Examples
    /// ```
    /// use durable_backlog::{Backlog, Options, TailError};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut b = Backlog::create(dir.path().join("b"), Options::new().capacity(64 * 1024)).unwrap();
    /// b.append(&[b'x'; 40_000]).unwrap();
    /// let mut tail = b.reader().cursor(30_001);
    ///
    /// b.resize(16 * 1024).unwrap(); // keeps the newest 16 KiB: offsets 23617..=40000
    /// assert_eq!((b.capacity(), b.first_offset(), b.offset()), (16 * 1024, 23_617, 40_000));
    ///
    /// // The old cursor is told to re-attach; the new one goes on at the same offset.
    /// let mut buf = [0u8; 64];
    /// assert_eq!(tail.read(&mut buf), Err(TailError::Moved));
    /// let mut tail = b.reader().cursor(tail.position());
    /// assert_eq!(tail.read(&mut buf), Ok(64));
    /// ```
    pub fn resize(&mut self, capacity: u64) -> Result<()> {
        let geo = Geometry::for_capacity(capacity)?;
        self.sh.check_poison()?;
        if capacity == self.capacity() {
            return Ok(());
        }
        if !matches!(self.lock, Some(Lock::File(_))) {
            return Err(Error::InvalidArgument(
                "resizing simulated storage is not supported".into(),
            ));
        }
        // Nothing commits the old file while it is copied and replaced; what it holds is
        // committed first, so a crash before the rename loses nothing either.
        if let Some(mut f) = self.flusher.take() {
            f.stop();
        }
        let replaced = self.commit_now(CommitKind::Writer).and_then(|_| {
            Self::replace_file(
                &self.sh,
                geo,
                self.meta.clone(),
                self.start,
                self.end,
                self.durability,
                self.report.clone(),
            )
        });
        let mut new = match replaced {
            Ok(b) => b,
            Err(e) => {
                if self.durability == Durability::EverySec && self.sh.check_poison().is_ok() {
                    match Flusher::start(Arc::clone(&self.sh), Arc::clone(&self.commit)) {
                        Ok(f) => self.flusher = Some(f),
                        Err(restart) => return Err(self.sh.poison(restart)),
                    }
                }
                return Err(e);
            }
        };
        new.report = self.report.clone();
        let synced = sync_dir(&new.sh.path).map_err(|e| new.sh.poison(e));
        let mut old = std::mem::replace(self, new);
        // The new file is at the path: the old one's readers learn that they must move.
        old.sh.mark_moved();
        // Releases the old file's lock; with no lock, dropping the handle commits nothing.
        old.lock = None;
        drop(old);
        // Faulting the new file's pages in is most of a grown file's cost (1 GiB: about 1.3 s
        // of 1.5 s) and changes no byte: a thread of its own does it beside the writer, which
        // meanwhile faults in the pages it reaches first.
        let sh = Arc::clone(&self.sh);
        let _ = std::thread::Builder::new()
            .name("backlog-prefault".into())
            .spawn(move || sh.medium.prefault());
        synced
    }

    /// Writes `start..=end` (its newest `geo.capacity` bytes) into a new file of geometry
    /// `geo`, commits it as a new backlog continuing `meta`, and renames it over the file of
    /// `old`. The caller holds `old`'s lock until this returns, then releases it and syncs
    /// the directory. On error the new file is removed and `old` is untouched.
    fn replace_file(
        old: &Shared,
        geo: Geometry,
        meta: Meta,
        start: u64,
        end: u64,
        d: Durability,
        mut report: RecoveryReport,
    ) -> Result<Self> {
        let path = old.path.clone();
        let (file, tmp, map) = new_file(&path, &geo)?;
        let sh = Arc::new(Shared::new(Medium::Map(map), geo, path.clone()));
        let keep_start = start.max((end + 1).saturating_sub(geo.capacity));
        let mut buf = vec![0u8; 1 << 20];
        let mut o = keep_start;
        while o <= end {
            let n = (end - o + 1).min(buf.len() as u64) as usize;
            old.read_ring(o, &mut buf[..n]);
            sh.write_ring(o, &buf[..n]);
            o += n as u64;
        }
        report.first = keep_start;
        let result = Self::init(
            sh,
            meta,
            keep_start,
            end,
            Lock::File(file),
            d,
            report.kind,
            Some(report),
        )
        .and_then(|b| {
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io("replacing the backlog file", Some(&path), e))?;
            Ok(b)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Commits a brand-new file's first state (create, resize).
    #[allow(clippy::too_many_arguments)]
    fn init(
        sh: Arc<Shared>,
        meta: Meta,
        start: u64,
        end: u64,
        lock: Lock,
        d: Durability,
        kind: RecoveryKind,
        report: Option<RecoveryReport>,
    ) -> Result<Self> {
        let g = sh.geo;
        let last = Slot {
            seq: 0,
            clean: false,
            capacity: g.capacity,
            block_shift: g.block_shift,
            epoch: meta.epoch,
            start,
            end: 0,
            prev_end: 0,
            run_id: meta.run_id,
            gens: Vec::new(),
            epochs: Vec::new(),
        };
        let state = CommitState {
            last,
            page: 1,
            meta: meta.clone(),
            blocks: vec![BlockState::default(); g.nblocks as usize],
        };
        let report = report.unwrap_or(RecoveryReport {
            kind,
            slot_seq: 0,
            used_older_slot: false,
            recorded_end: end,
            first: start,
            last: end,
            verified_bytes: 0,
            history_cut: false,
            resized_from: None,
        });
        Self::finish(sh, state, meta, start, end, lock, d, report)
    }

    /// The recovery (or creation) commit, then the live page, then the flusher.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        sh: Arc<Shared>,
        mut state: CommitState,
        meta: Meta,
        start: u64,
        end: u64,
        lock: Lock,
        d: Durability,
        mut report: RecoveryReport,
    ) -> Result<Self> {
        state.commit(&sh, start, end, CommitKind::Writer)?;
        report.slot_seq = state.last.seq;
        // Readers in other processes may be looking at the live page
        // (`Backlog::open_read_only`, `inspect`): a reopen is a history change for them (a new
        // generation; the range may have moved). The counter is odd meanwhile — a writer that
        // died inside a history change left it odd already — and even, at a new value, after.
        seqlock::begin_change(&*sh);
        // The live page is invalid (no magic) while its fields are rewritten.
        sh.live(L_MAGIC).store(0, Ordering::SeqCst);
        sh.start().store(start, Ordering::SeqCst);
        sh.end().store(end, Ordering::SeqCst);
        sh.live(L_EPOCH).store(meta.epoch, Ordering::SeqCst);
        // No waiter of this process exists yet; a count left by a dead process is stale.
        sh.waiters().store(0, Ordering::SeqCst);
        // Only a replaced file is marked moved, and none is opened again; a power loss that
        // undid a rename could bring one back.
        sh.live(L_MOVED).store(0, Ordering::SeqCst);
        let boot = sh.medium.boot_id();
        let (b0, b1) = boot.split_at(8);
        sh.live(L_BOOT0).store(
            u64::from_le_bytes(b0.try_into().unwrap_or_default()),
            Ordering::SeqCst,
        );
        sh.live(L_BOOT1).store(
            u64::from_le_bytes(b1.try_into().unwrap_or_default()),
            Ordering::SeqCst,
        );
        seqlock::end_change(&*sh);
        sh.live(L_MAGIC).store(LIVE_MAGIC, Ordering::SeqCst);
        let commit = Arc::new(Mutex::new(state));
        let flusher = if d == Durability::EverySec {
            Some(Flusher::start(Arc::clone(&sh), Arc::clone(&commit))?)
        } else {
            None
        };
        Ok(Backlog {
            sh,
            commit,
            meta,
            start,
            end,
            durability: d,
            flusher,
            report,
            lock: Some(lock),
        })
    }
}

/// Opens and locks the backlog file at `path`, making sure the locked file is the one at the
/// path (a resize may replace it between the open and the lock: see [`is_at_path`]).
fn open_locked(path: &Path) -> Result<std::fs::File> {
    for _ in 0..100 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening the backlog file", Some(path), e))?;
        lock_file(&file, path)?;
        if is_at_path(&file, path)? {
            return Ok(file);
        }
    }
    // Replaced a hundred times during this open: a writer is resizing it.
    Err(Error::AlreadyOpen {
        path: path.to_path_buf(),
    })
}
