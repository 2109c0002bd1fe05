//! The single writer: create/open, append, commit order, durability policy, rare history
//! operations, and poisoning after a failed flush.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::commit::{BlockState, CommitKind, CommitState, Meta};
use crate::error::{Error, Result};
use crate::flusher::Flusher;
use crate::format::Geometry;
use crate::format::live::{L_BOOT0, L_BOOT1, L_EPOCH, L_MAGIC, LIVE_MAGIC};
use crate::format::slot::{MAX_OFFSET, Slot};
use crate::psync::{History, PsyncReply, decide};
use crate::reader::Reader;
use crate::recovery::{DataCheck, RecoveryKind, RecoveryReport, map_file, recover};
use crate::region::{Access, MapMedium, Medium, preallocate};
use crate::runid::RunId;
use crate::seqlock;
use crate::shared::Shared;

/// Default capacity: 1 MiB, like Redis's `repl-backlog-size`.
pub const DEFAULT_CAPACITY: u64 = 1024 * 1024;

/// When appended bytes become durable — Redis's `appendfsync` choices.
///
/// Under **every** variant a process crash (kill -9, panic, abort) loses nothing `append`
/// returned: the bytes and the live offsets are in the kernel's page cache, and recovery on
/// the same boot reads them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every `append` commits (checksums, header slot, one sync) before it returns.
    /// Survives: process crash, OS crash and power loss lose nothing `append` returned.
    Always,
    /// A background thread commits at least once a second.
    /// Survives: process crash loses nothing; OS crash or power loss loses at most the last
    /// second of appends (never a byte in the middle: the recovered history is a prefix).
    #[default]
    EverySec,
    /// Commits only on [`Backlog::flush`] and [`Backlog::close`] (and at open).
    /// Survives: process crash loses nothing; OS crash or power loss keeps what the last
    /// flush covered.
    Never,
}

/// How to create or open a backlog.
///
/// # Examples
/// ```
/// use durable_backlog::{Durability, Options};
/// let opts = Options::new().capacity(64 * 1024).durability(Durability::Always);
/// assert_eq!(opts.get_capacity(), Some(64 * 1024));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    capacity: Option<u64>,
    durability: Durability,
    verify_on_open: bool,
}

impl Options {
    /// Defaults: capacity of the existing file (1 MiB for a new one), `EverySec`.
    #[must_use]
    pub fn new() -> Self {
        Options::default()
    }

    /// Ring capacity in bytes (16 KiB ..= 1 TiB, any value, not only powers of two).
    /// Opening an existing file with a different capacity resizes it atomically, keeping the
    /// newest bytes.
    #[must_use]
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// The durability policy.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Verify every held byte's checksum at open, even after a clean shutdown, and keep only
    /// verified bytes, so that nothing unverified is ever served. (By default a clean reopen
    /// verifies nothing; an unclean open on the same boot verifies the committed bytes but
    /// keeps the bytes after the last commit, which have no checksum, from the page cache;
    /// recovery after an OS crash or power loss keeps only verified bytes.) Costs a read of the whole backlog; catches media
    /// corruption of data at rest. After a process crash, bytes appended since the last
    /// commit have no checksum yet: this option drops them (the history is cut at the last
    /// commit), so pair it with [`Durability::Always`] when no returned append may be lost.
    #[must_use]
    pub fn verify_on_open(mut self, yes: bool) -> Self {
        self.verify_on_open = yes;
        self
    }

    /// The capacity set, if any.
    #[must_use]
    pub fn get_capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// The durability policy set.
    #[must_use]
    pub fn get_durability(&self) -> Durability {
        self.durability
    }
}

/// The fields of Redis's `INFO replication` that describe the backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `master_replid`.
    pub master_replid: RunId,
    /// `master_replid2`: the previous run ID, if any (`INFO` shows forty zeros when none,
    /// as Redis does).
    pub master_replid2: Option<RunId>,
    /// `master_repl_offset`.
    pub master_repl_offset: u64,
    /// `second_repl_offset` (-1 when none).
    pub second_repl_offset: i64,
    /// `repl_backlog_active` (always 1: the durable backlog always exists).
    pub repl_backlog_active: u8,
    /// `repl_backlog_size`.
    pub repl_backlog_size: u64,
    /// `repl_backlog_first_byte_offset`.
    pub repl_backlog_first_byte_offset: u64,
    /// `repl_backlog_histlen`.
    pub repl_backlog_histlen: u64,
    /// Not in Redis: the offset up to which bytes are committed to stable storage.
    pub durable_offset: u64,
}

impl fmt::Display for Stats {
    /// Renders the fields as `INFO` lines (`name:value\r\n`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Redis's `master_replid2` when there is no previous ID.
        const NO_REPLID2: &str = "0000000000000000000000000000000000000000";
        const _: () = assert!(NO_REPLID2.len() == RunId::LEN);
        let replid2 = self
            .master_replid2
            .as_ref()
            .map_or(NO_REPLID2, RunId::as_str);
        write!(
            f,
            "master_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{}\r\nsecond_repl_offset:{}\r\n\
             repl_backlog_active:{}\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\n\
             repl_backlog_histlen:{}\r\n",
            self.master_replid,
            replid2,
            self.master_repl_offset,
            self.second_repl_offset,
            self.repl_backlog_active,
            self.repl_backlog_size,
            self.repl_backlog_first_byte_offset,
            self.repl_backlog_histlen,
        )
    }
}

#[derive(Debug)]
enum Lock {
    /// Held only for the `flock` it carries.
    File(#[allow(dead_code)] File),
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimDisk),
}

impl Drop for Lock {
    fn drop(&mut self) {
        #[cfg(feature = "sim")]
        if let Lock::Sim(d) = self {
            d.unlock();
        }
    }
}

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
    sh: Arc<Shared>,
    commit: Arc<Mutex<CommitState>>,
    meta: Meta,
    start: u64,
    end: u64,
    durability: Durability,
    flusher: Option<Flusher>,
    report: RecoveryReport,
    lock: Option<Lock>,
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag: u32 = rand::random();
    path.with_file_name(format!(".{name}.tmp.{}.{tag:08x}", std::process::id()))
}

/// Removes temporary files a killed `create` or resize of this backlog left beside it: named
/// like [`tmp_path`]'s, made by a process that no longer exists, and not locked (a live
/// creator locks its temporary file right after creating it). Best effort: errors are ignored.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp.");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let tmp = entry.path();
        if let Ok(f) = File::open(&tmp)
            && f.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing the directory", Some(&dir), e))
}

fn lock_file(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::AlreadyOpen {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io("locking the backlog file", Some(path), e))
        }
    }
}

/// A fresh, fully allocated, locked temporary file beside `path`, mapped.
fn new_file(path: &Path, geo: &Geometry) -> Result<(File, PathBuf, MapMedium)> {
    let tmp = tmp_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("creating the backlog file", Some(&tmp), e))?;
    let cleanup = |e: Error| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    lock_file(&file, &tmp).map_err(cleanup)?;
    preallocate(&file, geo.file_len)
        .map_err(|e| cleanup(Error::io("allocating the backlog file", Some(&tmp), e)))?;
    let map = MapMedium::map(&file, geo.file_len, Access::ReadWrite)
        .map_err(|e| cleanup(Error::io("mapping the backlog file", Some(&tmp), e)))?;
    map.prefault();
    Ok((file, tmp, map))
}

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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening the backlog file", Some(path), e))?;
        lock_file(&file, path)?;
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
                path: PathBuf::from("<simulated>"),
            });
        }
        let lock = Lock::Sim(disk.clone());
        if !disk.format(geo.file_len) {
            return Err(Error::AlreadyExists {
                path: PathBuf::from("<simulated>"),
            });
        }
        let sh = Arc::new(Shared::new(
            Medium::Sim(disk.clone()),
            geo,
            PathBuf::from("<simulated>"),
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
                path: PathBuf::from("<simulated>"),
            });
        }
        let lock = Lock::Sim(disk.clone());
        let medium = Medium::Sim(disk.clone());
        let path = PathBuf::from("<simulated>");
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
            return Self::resize(
                &sh,
                lock,
                meta,
                rec.start,
                rec.end,
                cap,
                opts.durability,
                rec.report,
            );
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

    /// Writes the current range into a new file of capacity `cap` and atomically replaces
    /// the old file with it.
    #[allow(clippy::too_many_arguments)]
    fn resize(
        old: &Shared,
        lock: Lock,
        meta: Meta,
        start: u64,
        end: u64,
        cap: u64,
        d: Durability,
        mut report: RecoveryReport,
    ) -> Result<Self> {
        let geo = Geometry::for_capacity(cap)?;
        let path = old.path.clone();
        let (file, tmp, map) = new_file(&path, &geo)?;
        let sh = Arc::new(Shared::new(Medium::Map(map), geo, path.clone()));
        let keep_start = start.max((end + 1).saturating_sub(cap));
        let mut buf = vec![0u8; 1 << 20];
        let mut o = keep_start;
        while o <= end {
            let n = (end - o + 1).min(buf.len() as u64) as usize;
            old.read_ring(o, &mut buf[..n]);
            sh.write_ring(o, &buf[..n]);
            o += n as u64;
        }
        report.resized_from = Some(old.geo.capacity);
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
        let b = result?;
        drop(lock);
        sync_dir(&path)?;
        Ok(b)
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
        let n = bufs
            .iter()
            .try_fold(0u64, |acc, b| acc.checked_add(b.len() as u64))
            .ok_or_else(offset_overflow)?;
        if n == 0 {
            self.sh.check_poison()?;
            return Ok(self.end);
        }
        let new_end = self.before_fill(n)?;
        self.end = seqlock::fill_parts(&*self.sh, self.end, bufs);
        debug_assert_eq!(self.end, new_end);
        self.after_fill()?;
        Ok(new_end)
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

    /// The part of an append after the bytes are published: the durability policy, then
    /// waking tailers.
    #[inline]
    fn after_fill(&mut self) -> Result<()> {
        if self.durability == Durability::Always {
            self.commit_now(CommitKind::Writer)?;
        }
        self.sh.wake_waiters();
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

    fn commit_now(&mut self, kind: CommitKind) -> Result<u64> {
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
