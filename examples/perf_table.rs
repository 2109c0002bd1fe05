//! Prints one markdown table of every performance ratio, each figure beside its baseline from
//! the same run, in under a minute: `cargo run --release --example perf_table`.
//!
//! Quick and noisy by design (few, short, interleaved repetitions; medians): the criterion
//! benches in `benches/` are the precise version of the same measurements. `PERF_TABLE_SCALE`
//! (default 1.0) scales every time budget.
// `unsafe_code`: only the counting global allocator (and the baselines' mmap/fadvise in
// benches/common), each with a SAFETY line; the crate itself stays free of it.
#![allow(
    unsafe_code,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::many_single_char_names,
    clippy::too_many_lines // one measurement after another, in table order
)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    APPEND, BufFileRing, Clock, FdatasyncFloor, GIB, KIB, MIB, MemRing, MsyncFloor, QueueRing,
    QueueSync, Rng, SpscReader, bench_dir, check_backlog, chunk, drop_page_cache, filled_backlog,
    full_backlog, median, patch, read_fixture, run_spsc, run_writer, run_writer_beside_spinner,
    stream, time_per_op,
};
use durable_backlog::{Backlog, Durability, Options, RecoveryKind};

/// Counts live heap bytes and their peak, to measure the heap beyond the mapping.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap growth while `f` runs.
fn heap_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed) - base)
}

struct Table {
    out: String,
}

impl Table {
    fn row(&mut self, figure: &str, this: &str, base: &str, ratio: f64, target: Option<f64>) {
        let verdict = match target {
            Some(t) if ratio >= t => format!("≥ {t} ✅"),
            Some(t) => format!("≥ {t} ❌"),
            None => "—".into(),
        };
        writeln!(
            self.out,
            "| {figure} | {this} | {base} | {ratio:.2}× | {verdict} |"
        )
        .unwrap();
    }
}

fn gbs(bytes: f64, secs: f64) -> String {
    let r = bytes / secs;
    if r >= 1e9 {
        format!("{:.2} GB/s", r / 1e9)
    } else {
        format!("{:.0} MB/s", r / 1e6)
    }
}

fn us(secs: f64) -> String {
    if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.2} µs", secs * 1e6)
    }
}

fn size_name(n: usize) -> String {
    if n >= GIB {
        format!("{} GiB", n / GIB)
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else if n >= KIB {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cpu}, {cores} cores, {} GiB RAM, Linux {}, files on {}",
        mem / (1024 * 1024),
        kernel.trim(),
        fs_of(Path::new(env!("CARGO_MANIFEST_DIR")))
    )
}

/// The filesystem type and device holding `p` (from /proc/mounts, longest prefix).
fn fs_of(p: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && p.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} ({})", f[2], f[0])))
        })
        .max()
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// Seconds `f` takes, once.
fn time_one(f: impl FnOnce()) -> f64 {
    let s = Instant::now();
    f();
    s.elapsed().as_secs_f64()
}

/// `write_bytes` of /proc/self/io: bytes this process caused to be written to storage.
fn proc_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    common::crash_child_if_asked();
    let scale: f64 = std::env::var("PERF_TABLE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    // PERF_TABLE_ONLY=append,everysec,durable,read,tailers,open runs only those sections.
    let only = std::env::var("PERF_TABLE_ONLY").ok();
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    let budget = |ms: u64| Duration::from_secs_f64(ms as f64 / 1000.0 * scale);
    let t0 = Instant::now();
    let dir = bench_dir();
    let mut t = Table { out: String::new() };
    t.out
        .push_str("| figure | this crate | baseline | ratio | target |\n");
    t.out.push_str("| --- | --- | --- | --- | --- |\n");

    // ---- append throughput, Never, vs the in-memory ring and the file baselines ----
    for cap in [MIB, 64 * MIB] {
        for len in [64, KIB, 16 * KIB] {
            if !want("append") {
                break;
            }
            let data = chunk(len);
            let p = |s: &str| dir.path().join(format!("{s}-{cap}-{len}"));
            let mut mem = MemRing::new(cap);
            let mut file = BufFileRing::new(&p("buf"), cap);
            let mut qf = QueueRing::new(&p("qf"), cap, QueueSync::Unsynced);
            let mut bl = filled_backlog(&p("never"), cap, Durability::Never, &data);
            for _ in 0..=cap / len {
                mem.append(&data);
                file.append(&data);
            }
            for _ in 0..(cap / len).min(20_000) {
                qf.append(&data);
            }
            assert_eq!(mem.tail(len), data);
            assert_eq!(file.tail(len), data);
            assert_eq!(qf.last(), data);
            let (mut tm, mut tf, mut tq, mut tb) = (vec![], vec![], vec![], vec![]);
            for _ in 0..5 {
                tm.push(time_per_op(budget(30), 64, || mem.append(&data)));
                tb.push(time_per_op(budget(30), 64, || {
                    bl.append(&data).unwrap();
                }));
                tf.push(time_per_op(budget(30), 64, || file.append(&data)));
                tq.push(time_per_op(budget(30), 64, || qf.append(&data)));
            }
            check_backlog(&bl, &data);
            let (m, f, q, b) = (median(tm), median(tf), median(tq), median(tb));
            let bytes = len as f64;
            let target = if cap == MIB { 0.7 } else { 0.8 };
            let fig = format!(
                "append `Never`, {} ring, {} chunks",
                size_name(cap),
                size_name(len)
            );
            t.row(
                &format!("{fig} vs in-memory ring"),
                &gbs(bytes, b),
                &gbs(bytes, m),
                m / b,
                Some(target),
            );
            t.row(
                &format!("{fig} vs File+BufWriter"),
                &gbs(bytes, b),
                &gbs(bytes, f),
                f / b,
                None,
            );
            t.row(
                &format!("{fig} vs queue-file, sync off"),
                &gbs(bytes, b),
                &gbs(bytes, q),
                q / b,
                None,
            );
        }
    }

    // ---- batch append: many 64 B records per call, vs the in-memory ring ----
    if want("batch") {
        let cap = 64 * MIB;
        let (rec, per_batch) = (64, 64);
        let data = chunk(rec);
        let mut bl = filled_backlog(&dir.path().join("batch"), cap, Durability::Never, &data);
        let mut mem = MemRing::new(cap);
        for _ in 0..=cap / rec {
            mem.append(&data);
        }
        let slices = vec![std::io::IoSlice::new(&data); per_batch];
        // Correctness first: a batch is the append of its concatenation.
        let end = bl.append_vectored(&slices).unwrap();
        assert_eq!(end, bl.offset());
        check_backlog(&bl, &data);
        let (mut tm, mut tb, mut ts) = (vec![], vec![], vec![]);
        for _ in 0..5 {
            tm.push(time_per_op(budget(30), 64, || {
                for s in &slices {
                    mem.append(s);
                }
            }));
            tb.push(time_per_op(budget(30), 64, || {
                bl.append_vectored(&slices).unwrap();
            }));
            ts.push(time_per_op(budget(30), 64, || {
                for s in &slices {
                    bl.append(s).unwrap();
                }
            }));
        }
        check_backlog(&bl, &data);
        assert_eq!(mem.tail(rec), data);
        let (m, b, one) = (median(tm), median(tb), median(ts));
        let bytes = (rec * per_batch) as f64;
        t.row(
            &format!(
                "batch append `Never` (`append_vectored`, {per_batch} × {rec} B records), 64 MiB ring, vs in-memory ring (one copy per record)"
            ),
            &gbs(bytes, b),
            &gbs(bytes, m),
            m / b,
            Some(0.9),
        );
        t.row(
            &format!(
                "batch append `Never` ({per_batch} × {rec} B records), 64 MiB ring, vs one `append` per record"
            ),
            &gbs(bytes, b),
            &gbs(bytes, one),
            one / b,
            None,
        );
    }

    // ---- EverySec vs Never: windows longer than the flusher's period ----
    if want("everysec") {
        let cap = 64 * MIB;
        let data = chunk(KIB);
        let mut never = filled_backlog(&dir.path().join("n"), cap, Durability::Never, &data);
        let mut every = filled_backlog(&dir.path().join("e"), cap, Durability::EverySec, &data);
        let (mut tn, mut te) = (vec![], vec![]);
        for _ in 0..3 {
            tn.push(time_per_op(budget(1050), 64, || {
                never.append(&data).unwrap();
            }));
            te.push(time_per_op(budget(1050), 64, || {
                every.append(&data).unwrap();
            }));
        }
        check_backlog(&every, &data);
        assert!(every.durable_offset() > 0, "the flusher committed");
        let (n, e) = (median(tn), median(te));
        t.row(
            "append `EverySec` vs `Never`, 64 MiB ring, 1 KiB chunks",
            &gbs(KIB as f64, e),
            &gbs(KIB as f64, n),
            n / e,
            Some(0.9),
        );
    }

    // ---- durable commit cost: Always 1 KiB vs one sync of one page per append ----
    if want("durable") {
        let cap = 64 * MIB;
        let data = chunk(KIB);
        let mut always = filled_backlog(&dir.path().join("a"), cap, Durability::Always, &data);
        let mut fd = FdatasyncFloor::new(&dir.path().join("fd"), cap);
        let mut ms = MsyncFloor::new(&dir.path().join("ms"), cap);
        let mut qf = QueueRing::new(&dir.path().join("qfd"), cap, QueueSync::Synced);
        fd.append(&data);
        ms.append(&data);
        qf.append(&data);
        assert_eq!(fd.read_back(0, KIB), data);
        assert_eq!(ms.read_back(0, KIB), data);
        assert_eq!(qf.last(), data);
        let d0 = always.durable_offset();
        always.append(&data).unwrap();
        assert_eq!(always.durable_offset(), d0 + KIB as u64, "Always commits");
        // Synced operations alternate one by one (the disk's sync latency drifts by several
        // times within seconds while other jobs share it); medians of single operations.
        let (mut ta, mut tf, mut tm, mut tq) = (vec![], vec![], vec![], vec![]);
        let end = Instant::now() + budget(2400);
        while Instant::now() < end || ta.len() < 8 {
            ta.push(time_one(|| {
                always.append(&data).unwrap();
            }));
            tf.push(time_one(|| fd.append(&data)));
            tm.push(time_one(|| ms.append(&data)));
            tq.push(time_one(|| qf.append(&data)));
        }
        check_backlog(&always, &data);
        assert_eq!(always.durable_offset(), always.offset());
        // Bytes the kernel accounts as written per commit (a dirtied large folio counts
        // whole): the disk-independent view of the commit's write amplification.
        let w0 = proc_write_bytes();
        for _ in 0..64 {
            always.append(&data).unwrap();
        }
        let per_commit = (proc_write_bytes() - w0) as f64 / 64.0;
        let w0 = proc_write_bytes();
        for _ in 0..64 {
            fd.append(&data);
        }
        let per_floor = (proc_write_bytes() - w0) as f64 / 64.0;
        assert!(
            per_commit > 0.0 && per_floor > 0.0,
            "/proc/self/io write_bytes"
        );
        let (a, f, m, q) = (median(ta), median(tf), median(tm), median(tq));
        let floor = f.min(m);
        t.row(
            "append `Always`, 1 KiB, per append vs one page + `fdatasync`",
            &us(a),
            &us(f),
            f / a,
            None,
        );
        t.row(
            "append `Always`, 1 KiB, per append vs one page + `msync`",
            &us(a),
            &us(m),
            m / a,
            None,
        );
        t.row(
            "append `Always`, 1 KiB vs the faster one-sync floor",
            &us(a),
            &us(floor),
            floor / a,
            Some(0.95),
        );
        t.row(
            "bytes dirtied per `Always` 1 KiB append vs `pwrite`+`fdatasync` (/proc/self/io)",
            &format!("{:.0} KiB", per_commit / 1024.0),
            &format!("{:.0} KiB", per_floor / 1024.0),
            per_floor / per_commit,
            None,
        );
        t.row(
            "append `Always`, 1 KiB vs queue-file default (synced)",
            &us(a),
            &us(q),
            q / a,
            Some(1.6),
        );

        // Group commit: 16 appends, then one flush.
        let mut never = filled_backlog(&dir.path().join("g"), cap, Durability::Never, &data);
        let mut file = BufFileRing::new(&dir.path().join("gf"), cap);
        let (mut tg, mut tgf) = (vec![], vec![]);
        let end = Instant::now() + budget(1000);
        while Instant::now() < end || tg.len() < 8 {
            tg.push(time_one(|| {
                for _ in 0..16 {
                    never.append(&data).unwrap();
                }
                never.flush().unwrap();
            }));
            tgf.push(time_one(|| {
                for _ in 0..16 {
                    file.append(&data);
                }
                file.sync();
            }));
        }
        assert_eq!(never.durable_offset(), never.offset());
        assert_eq!(file.tail(KIB), data);
        let (g, gf) = (median(tg), median(tgf));
        t.row(
            "group commit, 16 × 1 KiB then flush vs File+BufWriter+`fdatasync`",
            &us(g),
            &us(gf),
            gf / g,
            None,
        );
        t.row(
            "group commit 16 × 1 KiB vs `Always` (per append)",
            &us(g / 16.0),
            &us(a),
            a / (g / 16.0),
            None,
        );
    }

    // ---- range reads from random offsets ----
    if want("read") {
        let (bl, mem, _) = read_fixture(dir.path());
        let cap = mem.capacity();
        let r = bl.reader();
        for len in [16 * KIB, MIB] {
            let mut buf = vec![0u8; len];
            let first = bl.first_offset();
            let span = bl.histlen() - len as u64;
            let (mut tr, mut tm) = (vec![], vec![]);
            let (mut g1, mut g2) = (Rng(0x1234_5678), Rng(0x1234_5678));
            for _ in 0..5 {
                tr.push(time_per_op(budget(60), 16, || {
                    let o = first + g1.below(span);
                    assert_eq!(r.read_at(o, &mut buf).unwrap(), len);
                }));
                tm.push(time_per_op(budget(60), 16, || {
                    let o = g2.below((cap - len) as u64) as usize;
                    mem.read_pos(o, &mut buf);
                }));
            }
            let (a, m) = (median(tr), median(tm));
            t.row(
                &format!(
                    "range read {}, random offsets, 64 MiB ring vs memcpy",
                    size_name(len)
                ),
                &gbs(len as f64, a),
                &gbs(len as f64, m),
                m / a,
                (len == MIB).then_some(0.7),
            );
        }
    }

    // ---- writer with tailing readers; the same pair on an in-memory SPSC ring ----
    if want("tailers") {
        let mut b = full_backlog(&dir);
        let data: Vec<u8> = (0..APPEND as u64).map(stream).collect();
        // Appends per timed run: 0.2-0.5 s. Shorter runs read high: a thread busy on the other
        // vCPU slows this VM's writer only after ~0.1 s (docs/concurrency.md).
        let iters = (1_000_000.0 * scale).max(1000.0) as u64;
        let per = |d: Duration| d.as_secs_f64() / iters as f64;
        let (mut t0, mut t1, mut t2, mut skip, mut copy) = (vec![], vec![], vec![], vec![], vec![]);
        let mut spin = vec![];
        for _ in 0..3 {
            t0.push(per(run_writer(&mut b, 0, iters, &data, Clock::Wall)));
            spin.push(per(run_writer_beside_spinner(&mut b, iters, &data)));
            t1.push(per(run_writer(&mut b, 1, iters, &data, Clock::Wall)));
            t2.push(per(run_writer(&mut b, 2, iters, &data, Clock::Wall)));
            skip.push(per(run_spsc(iters, &data, SpscReader::Skips)));
            copy.push(per(run_spsc(iters, &data, SpscReader::Copies)));
        }
        let (t0, t1, t2) = (median(t0), median(t1), median(t2));
        let (skip, copy, spin) = (median(skip), median(copy), median(spin));
        // (figure, this crate's time per append, the baseline's, target)
        let rows = [
            (
                "writer beside a thread that only spins on the other vCPU vs alone (this VM)",
                spin,
                t0,
                None,
            ),
            (
                "writer with 1 tailing reader vs alone, 64 MiB ring, 4 KiB appends",
                t1,
                t0,
                None,
            ),
            (
                "writer with 2 tailing readers vs alone, 64 MiB ring, 4 KiB appends",
                t2,
                t0,
                Some(0.7),
            ),
            (
                "in-memory SPSC ring (`ringbuf`), writer with a copying vs an advancing reader",
                copy,
                skip,
                None,
            ),
            (
                "writer with 1 tailing reader vs the `ringbuf` writer with a copying reader",
                t1,
                copy,
                None,
            ),
        ];
        for (figure, this, base, target) in rows {
            let bytes = APPEND as f64;
            t.row(
                figure,
                &gbs(bytes, this),
                &gbs(bytes, base),
                base / this,
                target,
            );
        }
    }

    // ---- open: clean reopen, verified recovery, heap ----
    let mut reopen = Vec::new();
    let mut heap_max = 0usize;
    for cap in [64 * MIB, GIB] {
        if !want("open") {
            break;
        }
        let path = dir.path().join(format!("open-{cap}"));
        let data = chunk(MIB);
        let (mut b, h) = heap_peak(|| {
            Backlog::create(
                &path,
                Options::new()
                    .capacity(cap as u64)
                    .durability(Durability::Never),
            )
            .unwrap()
        });
        if cap == GIB {
            heap_max = heap_max.max(h);
        }
        for _ in 0..=cap / MIB {
            b.append(&data).unwrap();
        }
        check_backlog(&b, &data);
        b.close().unwrap();
        if cap == GIB {
            // Clean reopen, 64 MiB and 1 GiB interleaved (each open pays one sync, whose
            // latency drifts with the other jobs on this disk).
            let mut times = [vec![], vec![]];
            for _ in 0..7 {
                for (i, c) in [64 * MIB, GIB].into_iter().enumerate() {
                    let p = dir.path().join(format!("open-{c}"));
                    let s = Instant::now();
                    let (b, h) = heap_peak(|| Backlog::open(&p, Options::new()).unwrap());
                    times[i].push(s.elapsed().as_secs_f64());
                    assert_eq!(b.recovery().kind, RecoveryKind::Clean);
                    assert_eq!(b.histlen(), c as u64);
                    if c == GIB {
                        heap_max = heap_max.max(h);
                    }
                    b.close().unwrap();
                }
            }
            reopen = times.map(median).to_vec();
            // Recovery after a crash that needs verification (see docs/PERFORMANCE.md).
            let header = common::crash_image_from(&path);
            for cold in [false, true] {
                let mut rates = vec![];
                for _ in 0..3 {
                    patch(&path, 0, &header);
                    if cold {
                        drop_page_cache(&path);
                    }
                    let s = Instant::now();
                    let (b, h) = heap_peak(|| Backlog::open(&path, Options::new()).unwrap());
                    let el = s.elapsed().as_secs_f64();
                    heap_max = heap_max.max(h);
                    let rep = b.recovery();
                    assert_eq!(rep.kind, RecoveryKind::Verified);
                    assert!(rep.verified_bytes >= (cap - MIB) as u64, "{rep:?}");
                    rates.push(rep.verified_bytes as f64 / el);
                    drop(b);
                }
                let r = median(rates);
                if cold {
                    // The hardware limit, same run: the same file read sequentially with
                    // `read()` in 1 MiB chunks (kernel readahead) from a dropped cache.
                    let mut disk = vec![];
                    for _ in 0..3 {
                        drop_page_cache(&path);
                        let s = Instant::now();
                        let n = common::read_whole(&path);
                        disk.push(n as f64 / s.elapsed().as_secs_f64());
                    }
                    let d = median(disk);
                    t.row(
                        "recovery with verification, 1 GiB, cache dropped vs reading the file with read()",
                        &format!("{:.2} GB/s", r / 1e9),
                        &format!("{:.2} GB/s", d / 1e9),
                        r / d,
                        None,
                    );
                }
                t.row(
                    &format!(
                        "recovery with verification, 1 GiB, page cache {} (GB/s verified)",
                        if cold { "dropped" } else { "warm" }
                    ),
                    &format!("{:.2} GB/s", r / 1e9),
                    "2 GB/s",
                    r / 2e9,
                    Some(1.0),
                );
            }
        }
    }
    if want("open") {
        t.row(
            "clean reopen: 1 GiB vs 64 MiB (time)",
            &us(reopen[1]),
            &us(reopen[0]),
            reopen[0] / reopen[1],
            Some(0.5),
        );
        t.row(
            "clean reopen 1 GiB vs 10 ms",
            &us(reopen[1]),
            "10 ms",
            0.010 / reopen[1],
            Some(1.0),
        );
        {
            // Heap during a working session on the 1 GiB backlog.
            let path = dir.path().join(format!("open-{GIB}"));
            let data = chunk(KIB);
            let ((), h) = heap_peak(|| {
                let mut b =
                    Backlog::open(&path, Options::new().durability(Durability::EverySec)).unwrap();
                for _ in 0..10_000 {
                    b.append(&data).unwrap();
                }
                b.flush().unwrap();
                let mut buf = vec![0u8; KIB];
                b.reader()
                    .read_at(b.offset() + 1 - KIB as u64, &mut buf)
                    .unwrap();
                assert_eq!(buf, data);
                b.close().unwrap();
            });
            heap_max = heap_max.max(h.saturating_sub(KIB));
        }
        t.row(
            "peak heap beyond the mapping, 1 GiB backlog (create, open, recover, append)",
            &format!("{} KiB", heap_max.div_ceil(KIB)),
            "1024 KiB",
            MIB as f64 / heap_max as f64,
            Some(1.0),
        );
    }

    println!("Machine: {}\n", machine());
    print!("{}", t.out);
    println!(
        "\nRatios are baseline/this-crate for times (higher is better for this crate); \
         one run, medians of short interleaved repetitions; took {:.0} s.",
        t0.elapsed().as_secs_f64()
    );
}
