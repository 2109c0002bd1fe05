//! Baselines and workloads shared by the criterion benches (`benches/*.rs`) and by
//! `examples/perf_table.rs`, so the quick table and the precise benches measure the same code.
//!
//! Every subject writes the same pre-generated chunk; every subject is checked for correctness
//! (`check_*`) before it is timed. Files live under `target/bench-files` on the real disk (never
//! tmpfs: the durable figures are about the disk).
#![allow(dead_code, unsafe_code, clippy::cast_precision_loss)] // each binary uses a subset; see SAFETY lines

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use durable_backlog::{Backlog, Durability, Options};

pub(crate) const KIB: usize = 1024;
pub(crate) const MIB: usize = 1024 * 1024;
pub(crate) const GIB: usize = 1024 * 1024 * 1024;

/// Offset of the live page's boot ID in the file (format: page 2, bytes 8..24).
pub(crate) const LIVE_BOOT_ID: u64 = 2 * 4096 + 8;
/// Header slots A, B and the live page: what a crash image differs in, besides data.
pub(crate) const HEADER_PAGES: usize = 3 * 4096;

/// A fresh directory under `target/bench-files` (the real disk).
pub(crate) fn bench_dir() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-files");
    std::fs::create_dir_all(&root).expect("create target/bench-files");
    tempfile::tempdir_in(root).expect("tempdir on the real disk")
}

/// The bytes every append writes: not all equal, so a misplaced copy is caught.
pub(crate) fn chunk(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

/// A new (or emptied) file at `path`, open for reading and writing.
fn fresh_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

/// Redis's in-memory backlog: a heap ring of the same capacity, pre-touched.
#[derive(Debug)]
pub(crate) struct MemRing {
    buf: Vec<u8>,
    end: u64,
}

impl MemRing {
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn new(cap: usize) -> Self {
        MemRing {
            buf: vec![1u8; cap],
            end: 0,
        }
    }

    #[inline]
    pub(crate) fn append(&mut self, data: &[u8]) {
        let cap = self.buf.len();
        let keep = &data[data.len().saturating_sub(cap)..];
        let pos = ((self.end + (data.len() - keep.len()) as u64) % cap as u64) as usize;
        let head = keep.len().min(cap - pos);
        self.buf[pos..pos + head].copy_from_slice(&keep[..head]);
        self.buf[..keep.len() - head].copy_from_slice(&keep[head..]);
        self.end += data.len() as u64;
    }

    /// Copies the bytes at ring position `pos` (no wrap) into `dst`.
    #[inline]
    pub(crate) fn read_pos(&self, pos: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self.buf[pos..pos + dst.len()]);
    }

    /// The last `n` bytes appended.
    pub(crate) fn tail(&self, n: usize) -> Vec<u8> {
        let cap = self.buf.len() as u64;
        (self.end - n as u64..self.end)
            .map(|o| self.buf[(o % cap) as usize])
            .collect()
    }
}

/// `std::fs::File` + `BufWriter` writing a circular file of the same capacity, no sync.
#[derive(Debug)]
pub(crate) struct BufFileRing {
    w: BufWriter<File>,
    pos: usize,
    cap: usize,
    path: PathBuf,
}

impl BufFileRing {
    pub(crate) fn new(path: &Path, cap: usize) -> Self {
        let f = fresh_file(path);
        f.set_len(cap as u64).unwrap();
        BufFileRing {
            w: BufWriter::with_capacity(64 * KIB, f),
            pos: 0,
            cap,
            path: path.to_path_buf(),
        }
    }

    #[inline]
    pub(crate) fn append(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(self.cap - self.pos);
            self.w.write_all(&data[..n]).unwrap();
            data = &data[n..];
            self.pos += n;
            if self.pos == self.cap {
                self.w.seek(SeekFrom::Start(0)).unwrap();
                self.pos = 0;
            }
        }
    }

    /// Flushes the buffer and `fdatasync`s (the group-commit baseline).
    pub(crate) fn sync(&mut self) {
        self.w.flush().unwrap();
        self.w.get_ref().sync_data().unwrap();
    }

    /// The last `n` bytes written, read back from the file.
    pub(crate) fn tail(&mut self, n: usize) -> Vec<u8> {
        self.w.flush().unwrap();
        let f = self.w.get_ref();
        let mut out = vec![0u8; n];
        for (i, b) in out.iter_mut().enumerate() {
            let p = (self.pos + self.cap - n + i) % self.cap;
            f.read_exact_at(std::slice::from_mut(b), p as u64).unwrap();
        }
        out
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The `queue-file` crate used as a bounded backlog: add at the tail, remove from the head
/// while more than `cap` bytes are held.
pub(crate) struct QueueRing {
    q: queue_file::QueueFile,
    lens: VecDeque<usize>,
    cap: u64,
}

impl std::fmt::Debug for QueueRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRing")
            .field("cap", &self.cap)
            .field("held", &self.lens.len())
            .finish_non_exhaustive()
    }
}

/// Whether a [`QueueRing`] syncs its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueSync {
    /// The crate's default (`sync_writes` on): synced adds and header commits.
    Synced,
    /// `sync_writes` off.
    Unsynced,
}

impl QueueRing {
    pub(crate) fn new(path: &Path, cap: usize, sync: QueueSync) -> Self {
        let _ = std::fs::remove_file(path);
        let mut q = queue_file::QueueFile::with_capacity(path, cap as u64).unwrap();
        q.set_sync_writes(sync == QueueSync::Synced);
        QueueRing {
            q,
            lens: VecDeque::new(),
            cap: cap as u64,
        }
    }

    #[inline]
    pub(crate) fn append(&mut self, data: &[u8]) {
        while !self.lens.is_empty() && self.q.used_bytes() + data.len() as u64 + 64 > self.cap {
            self.q.remove().unwrap();
            self.lens.pop_front();
        }
        self.q.add(data).unwrap();
        self.lens.push_back(data.len());
    }

    /// The newest element.
    pub(crate) fn last(&self) -> Vec<u8> {
        self.q.iter().last().unwrap().clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.q.size()
    }
}

/// The durable floor: the 1 KiB (or any) append written with `pwrite` into a preallocated,
/// fully written file, then one `fdatasync`.
#[derive(Debug)]
pub(crate) struct FdatasyncFloor {
    f: File,
    pos: u64,
    cap: u64,
}

impl FdatasyncFloor {
    pub(crate) fn new(path: &Path, cap: usize) -> Self {
        let f = fresh_file(path);
        let block = vec![7u8; MIB];
        for i in 0..cap / MIB {
            f.write_all_at(&block, (i * MIB) as u64).unwrap();
        }
        f.sync_all().unwrap();
        // Writing it filled the page cache with large folios; a 1 KiB write into one would
        // dirty (and the sync write back) the whole folio. Start from an empty cache so the
        // floor really is one 4 KiB page per append, as the engine's mapping (advised random)
        // gets it.
        drop_page_cache(path);
        FdatasyncFloor {
            f,
            pos: 0,
            cap: cap as u64,
        }
    }

    #[inline]
    pub(crate) fn append(&mut self, data: &[u8]) {
        if self.pos + data.len() as u64 > self.cap {
            self.pos = 0;
        }
        self.f.write_all_at(data, self.pos).unwrap();
        self.f.sync_data().unwrap();
        self.pos += data.len() as u64;
    }

    pub(crate) fn read_back(&self, at: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.f.read_exact_at(&mut v, at).unwrap();
        v
    }
}

/// The other durable floor: the append copied into a shared mapping of a preallocated, fully
/// written file, then `msync(MS_SYNC)` of just the page(s) it touched.
#[derive(Debug)]
pub(crate) struct MsyncFloor {
    map: memmap2::MmapMut,
    pos: usize,
}

impl MsyncFloor {
    pub(crate) fn new(path: &Path, cap: usize) -> Self {
        let f = FdatasyncFloor::new(path, cap);
        // SAFETY: the file was created by this function in a private bench directory and is
        // neither truncated nor written by anyone else while mapped.
        let map = unsafe { memmap2::MmapOptions::new().len(cap).map_mut(&f.f) }.unwrap();
        map.advise(memmap2::Advice::Random).unwrap();
        MsyncFloor { map, pos: 0 }
    }

    #[inline]
    pub(crate) fn append(&mut self, data: &[u8]) {
        if self.pos + data.len() > self.map.len() {
            self.pos = 0;
        }
        self.map[self.pos..self.pos + data.len()].copy_from_slice(data);
        let first = self.pos & !4095;
        let last = (self.pos + data.len() + 4095) & !4095;
        self.map.flush_range(first, last - first).unwrap();
        self.pos += data.len();
    }

    pub(crate) fn read_back(&self, at: usize, n: usize) -> Vec<u8> {
        self.map[at..at + n].to_vec()
    }
}

/// Drops `path`'s pages from the page cache (they must be clean), so the next read goes to
/// the disk as after a reboot.
pub(crate) fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: plain syscall on a descriptor `f` owns; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

/// A backlog of `cap` bytes at `path`, filled with one full lap of `chunk`s and checked.
pub(crate) fn filled_backlog(path: &Path, cap: usize, d: Durability, data: &[u8]) -> Backlog {
    let mut b = Backlog::create(path, Options::new().capacity(cap as u64).durability(d)).unwrap();
    let laps = if d == Durability::Always {
        16 // a lap of synced appends would take minutes
    } else {
        cap.div_ceil(data.len()) + 1
    };
    for _ in 0..laps {
        b.append(data).unwrap();
    }
    check_backlog(&b, data);
    b
}

/// The range-read fixture: a 64 MiB `Never` backlog and an in-memory ring of the same size,
/// both filled with 1 MiB chunks, and the chunk; reads from the backlog are checked first.
pub(crate) fn read_fixture(dir: &Path) -> (Backlog, MemRing, Vec<u8>) {
    let cap = 64 * MIB;
    let data = chunk(MIB);
    let bl = filled_backlog(&dir.join("r"), cap, Durability::Never, &data);
    let mut mem = MemRing::new(cap);
    for _ in 0..=cap / MIB {
        mem.append(&data);
    }
    // Correctness before timing: a read at a chunk boundary returns the chunk's first bytes.
    for len in [16 * KIB, MIB] {
        let mut buf = vec![0u8; len];
        let at = bl.first_offset().next_multiple_of(MIB as u64) + 1;
        assert_eq!(bl.reader().read_at(at, &mut buf).unwrap(), len);
        assert_eq!(buf, data[..len]);
    }
    (bl, mem, data)
}

/// Correctness before timing: the newest chunk reads back as written, and the offset counts
/// every byte appended.
pub(crate) fn check_backlog(b: &Backlog, data: &[u8]) {
    let n = data.len().min(b.histlen() as usize);
    let mut got = vec![0u8; n];
    let first = b.offset() + 1 - n as u64;
    assert_eq!(b.reader().read_at(first, &mut got).unwrap(), n);
    assert_eq!(got, data[data.len() - n..], "backlog tail differs");
    assert_eq!(b.offset() % data.len() as u64, 0, "offset miscounted");
}

/// Runs `op` in batches until `budget` has passed (at least `min_ops` times); returns
/// seconds per op.
pub(crate) fn time_per_op(budget: Duration, min_ops: u64, mut op: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            op();
        }
        n += batch;
        let el = t.elapsed();
        if el >= budget && n >= min_ops {
            return el.as_secs_f64() / n as f64;
        }
        if el < budget / 8 {
            batch *= 2;
        }
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A tiny xorshift for reproducible random offsets.
#[derive(Debug)]
pub(crate) struct Rng(pub u64);

impl Rng {
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Writes `bytes` at `at` in `path` (patching a crash image).
pub(crate) fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// The first `n` bytes of `path`.
pub(crate) fn head(path: &Path, n: usize) -> Vec<u8> {
    let f = File::open(path).unwrap();
    let mut v = vec![0u8; n];
    f.read_exact_at(&mut v, 0).unwrap();
    v
}

/// Environment variable that turns a bench/example binary into the crashing child.
pub(crate) const CRASH_CHILD: &str = "DURABLE_BACKLOG_PERF_CRASH_CHILD";

/// In the child: open the backlog, append and commit a little, then die without closing
/// (the newest slot is unclean). Call first thing in `main`.
pub(crate) fn crash_child_if_asked() {
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        let mut b = Backlog::open(&path, Options::new().durability(Durability::Never)).unwrap();
        let data = chunk(64 * KIB);
        for _ in 0..4 {
            b.append(&data).unwrap();
        }
        b.flush().unwrap();
        std::process::abort();
    }
}

/// A crash image that needs verification, made from the full, cleanly closed backlog at
/// `path`: a child process opens it, appends and commits 256 KiB, and dies without closing
/// (the newest slot is unclean); then the live page's boot ID is changed as a reboot would
/// leave it. Returns the header pages to restore before each measured open (open rewrites
/// them; the data and checksum table stay as the crash left them).
pub(crate) fn crash_image_from(path: &Path) -> Vec<u8> {
    process_crash_image_from(path);
    patch(path, LIVE_BOOT_ID, &[0xA5; 16]);
    head(path, HEADER_PAGES)
}

/// As [`crash_image_from`], without the reboot: the image a `kill -9` leaves on a machine
/// that stays up (an unclean open on the same boot). Returns the header pages to restore.
pub(crate) fn process_crash_image_from(path: &Path) -> Vec<u8> {
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CRASH_CHILD, path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "the crash child must die");
    head(path, HEADER_PAGES)
}

/// Reads all of `path` sequentially with `read()` in 1 MiB chunks; returns the byte count.
pub(crate) fn read_whole(path: &Path) -> u64 {
    use std::io::Read;
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; MIB];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return n;
        }
        n += k as u64;
    }
}

// ---- Tailing readers (benches/concurrency.rs and the perf table) ----

/// Ring of the tailer workloads.
pub(crate) const RING: u64 = 64 << 20;
/// Bytes per append in the tailer workloads.
pub(crate) const APPEND: usize = 4096;

/// The self-checking stream: the byte at each offset.
pub(crate) fn stream(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// A `Never` backlog of [`RING`] bytes, full of the stream.
pub(crate) fn full_backlog(dir: &tempfile::TempDir) -> Backlog {
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new().capacity(RING).durability(Durability::Never),
    )
    .unwrap();
    let chunk: Vec<u8> = (1..=(1u64 << 20)).map(stream).collect();
    for _ in 0..RING >> 20 {
        b.append(&chunk).unwrap();
    }
    b
}

/// What `run_writer` reports: wall-clock time, or the writer thread's on-CPU time — the cost
/// the tailers impose on the writer itself (coherence traffic, fences, wake-ups), without
/// the time the scheduler gives to other threads on an oversubscribed machine.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    Wall,
    WriterCpu,
}

/// `iters` appends of `APPEND` bytes while `tailers` cursors stream everything appended.
pub(crate) fn run_writer(
    b: &mut Backlog,
    tailers: usize,
    iters: u64,
    data: &[u8],
    clock: Clock,
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(tailers + 1));
    let streamed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..tailers)
        .map(|_| {
            let mut cursor = b.reader().cursor(b.offset() + 1);
            let (stop, barrier, streamed) = (
                Arc::clone(&stop),
                Arc::clone(&barrier),
                Arc::clone(&streamed),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                barrier.wait();
                while !stop.load(Ordering::Acquire) {
                    match cursor.read(&mut buf) {
                        Ok(0) => {
                            cursor.wait(Duration::from_millis(1));
                        }
                        Ok(n) => {
                            black_box(&buf[..n]);
                            streamed.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        // A tailer the writer lapped resyncs from the oldest byte.
                        Err(_) => cursor = cursor.reader().cursor(cursor.reader().first_offset()),
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    // Untimed: four laps of the ring, so the tailers have caught up with the writer and the
    // timing is of the steady state. (Short runs without it measured tailers still trailing
    // by megabytes, which costs the writer nothing: see docs/concurrency.md.)
    for _ in 0..4 * RING / APPEND as u64 {
        b.append(data).unwrap();
    }
    let (t0, c0) = (Instant::now(), cpu_time::ThreadTime::now());
    for _ in 0..iters {
        b.append(data).unwrap();
    }
    let elapsed = match clock {
        Clock::Wall => t0.elapsed(),
        Clock::WriterCpu => c0.elapsed(),
    };
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().unwrap();
    }
    black_box(streamed.load(Ordering::Relaxed));
    elapsed
}

/// What the reader of [`run_spsc`] does with the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpscReader {
    /// Copies everything out.
    Copies,
    /// Only advances past it.
    Skips,
}

/// `iters` pushes of `APPEND` bytes into an in-memory SPSC ring while one reader copies
/// everything out or only advances past it. A full ring makes the writer spin
/// (backpressure), which the reader keeping pace rarely causes.
pub(crate) fn run_spsc(iters: u64, data: &[u8], mode: SpscReader) -> Duration {
    use ringbuf::HeapRb;
    use ringbuf::traits::{Consumer, Observer, Producer, Split};
    let (mut prod, mut cons) = HeapRb::<u8>::new(RING as usize).split();
    // Touch every page before timing, as the backlog's file is.
    let mut sink = vec![0u8; 1 << 20];
    while prod.vacant_len() > 0 {
        prod.push_slice(&sink);
    }
    while cons.occupied_len() > 0 {
        cons.pop_slice(&mut sink);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                let n = if mode == SpscReader::Copies {
                    cons.pop_slice(&mut buf)
                } else {
                    let n = cons.occupied_len();
                    cons.skip(n)
                };
                if n == 0 {
                    if stop.load(Ordering::Acquire) && cons.is_empty() {
                        return got;
                    }
                    std::hint::spin_loop();
                }
                got += n as u64;
            }
        })
    };
    let t0 = Instant::now();
    for _ in 0..iters {
        let mut rest = data;
        while !rest.is_empty() {
            let n = prod.push_slice(rest);
            rest = &rest[n..];
        }
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Release);
    assert_eq!(
        reader.join().unwrap(),
        iters * APPEND as u64,
        "reader lost bytes"
    );
    elapsed
}

/// `iters` appends of `APPEND` bytes while another thread only spins (`spin_loop`), touching
/// no shared memory: what a busy second vCPU alone costs the writer on this machine, to read
/// beside what tailers cost it.
pub(crate) fn run_writer_beside_spinner(b: &mut Backlog, iters: u64, data: &[u8]) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    for _ in 0..4 * RING / APPEND as u64 {
        b.append(data).unwrap();
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        b.append(data).unwrap();
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    elapsed
}
