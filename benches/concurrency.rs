//! Concurrency benchmarks, each beside its baseline from the same run:
//! - `writer_tailers`: writer throughput on a 64 MiB ring alone, then with 1 and 2 tailing
//!   cursors streaming every byte (target: with 2 tailers ≥ 0.7× alone), timed by the wall
//!   clock and by the writer thread's on-CPU time (which leaves out the CPU the tailers take
//!   from the writer on a machine with fewer free cores than threads);
//! - `read_bandwidth`: validated reads (`read_at`, `Cursor::write_to`) against `memcpy` of the
//!   same sizes from a plain buffer;
//! - `spsc_baseline`: the same writer/reader pair on a plain in-memory SPSC ring (the
//!   `ringbuf` crate, 64 MiB, 4 KiB pushes): the writer with a reader that copies every byte
//!   out, against the writer with a reader that only advances (`skip`) — what a copying
//!   reader costs a writer on this machine when no durable backlog is involved;
//! - `copy_choice`: what word-sized atomic copies (the `atomic-memcpy` approach) would cost
//!   against the plain `memcpy` the engine uses, in both directions.
//!
//! Run: `cargo bench --bench concurrency`. Correctness is asserted before anything is timed.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;

use common::{APPEND, Clock, RING, SpscReader, full_backlog, run_spsc, run_writer, stream};

fn writer_tailers(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = full_backlog(&dir);
    let data: Vec<u8> = (0..APPEND as u64).map(stream).collect();
    // Correctness first: a tailer receives exactly what was appended.
    let mut check = b.reader().cursor(b.offset() + 1);
    b.append(&data).unwrap();
    let mut got = Vec::new();
    assert_eq!(check.write_to(&mut got, usize::MAX).unwrap(), APPEND);
    assert!(got == data, "tailer received other bytes");

    let mut g = c.benchmark_group("writer_tailers");
    g.throughput(Throughput::Bytes(APPEND as u64));
    g.sample_size(20).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for (clock, name) in [(Clock::Wall, "wall"), (Clock::WriterCpu, "writer_cpu")] {
        for tailers in [0usize, 1, 2] {
            g.bench_function(format!("{name}_append_4KiB_{tailers}_tailers"), |bench| {
                bench.iter_custom(|iters| run_writer(&mut b, tailers, iters, &data, clock));
            });
        }
    }
    g.finish();
}

fn read_bandwidth(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let backlog = full_backlog(&dir);
    let reader = backlog.reader();
    let first = backlog.first_offset();
    let mut g = c.benchmark_group("read_bandwidth");
    g.sample_size(20).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    for size in [64usize << 10, 1 << 20] {
        let src: Vec<u8> = (first..first + RING).map(stream).collect();
        let mut dst = vec![0u8; size];
        assert_eq!(reader.read_at(first, &mut dst).unwrap(), size);
        assert!(dst[..] == src[..size], "read_at returned other bytes");
        g.throughput(Throughput::Bytes(size as u64));
        let label = size >> 10;
        // Walk the whole ring so every size reads from memory, not a warm cache.
        let slots = (RING as usize / size) as u64;
        let mut i = 0u64;
        g.bench_function(format!("memcpy_{label}KiB"), |bench| {
            bench.iter(|| {
                let at = (i % slots) as usize * size;
                i += 1;
                dst.copy_from_slice(&src[at..at + size]);
                black_box(&dst);
            });
        });
        let mut i = 0u64;
        g.bench_function(format!("read_at_{label}KiB"), |bench| {
            bench.iter(|| {
                let at = first + (i % slots) * size as u64;
                i += 1;
                black_box(reader.read_at(at, &mut dst).unwrap());
            });
        });
        let mut i = 0u64;
        g.bench_function(format!("cursor_write_to_{label}KiB"), |bench| {
            let mut sink = std::io::sink();
            bench.iter(|| {
                let at = first + (i % slots) * size as u64;
                i += 1;
                let mut cur = reader.cursor(at);
                black_box(cur.write_to(&mut sink, size).unwrap());
            });
        });
    }
    g.finish();
}

/// The word-wise atomic copy the engine would need to make racing copies well-defined.
fn atomic_copy_out(src: &[AtomicU64], dst: &mut [u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.load(Ordering::Relaxed);
    }
}

fn atomic_copy_in(src: &[u64], dst: &[AtomicU64]) {
    for (s, d) in src.iter().zip(dst) {
        d.store(*s, Ordering::Relaxed);
    }
}

fn copy_choice(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy_choice");
    g.sample_size(30).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    for size in [4usize << 10, 256 << 10, 8 << 20] {
        let words = size / 8;
        let plain_src: Vec<u64> = (0..words as u64).map(|w| w.wrapping_mul(31)).collect();
        let atomic_src: Vec<AtomicU64> = plain_src.iter().map(|&w| AtomicU64::new(w)).collect();
        let mut dst = vec![0u64; words];
        atomic_copy_out(&atomic_src, &mut dst);
        assert!(dst == plain_src, "atomic copy differs");
        let label = size >> 10;
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("read_memcpy_{label}KiB"), |bench| {
            bench.iter(|| {
                dst.copy_from_slice(black_box(&plain_src));
                black_box(&dst);
            });
        });
        g.bench_function(format!("read_atomic_u64_{label}KiB"), |bench| {
            bench.iter(|| {
                atomic_copy_out(black_box(&atomic_src), &mut dst);
                black_box(&dst);
            });
        });
        let mut plain_dst = vec![0u64; words];
        g.bench_function(format!("write_memcpy_{label}KiB"), |bench| {
            bench.iter(|| {
                plain_dst.copy_from_slice(black_box(&plain_src));
                black_box(&plain_dst);
            });
        });
        g.bench_function(format!("write_atomic_u64_{label}KiB"), |bench| {
            bench.iter(|| {
                atomic_copy_in(black_box(&plain_src), &atomic_src);
                black_box(&atomic_src);
            });
        });
    }
    g.finish();
}

fn spsc_baseline(c: &mut Criterion) {
    let data: Vec<u8> = (0..APPEND as u64).map(stream).collect();
    let mut g = c.benchmark_group("spsc_baseline");
    g.throughput(Throughput::Bytes(APPEND as u64));
    g.sample_size(20).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for (mode, name) in [
        (SpscReader::Skips, "skipping"),
        (SpscReader::Copies, "copying"),
    ] {
        g.bench_function(format!("push_4KiB_{name}_reader"), |bench| {
            bench.iter_custom(|iters| run_spsc(iters, &data, mode));
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    writer_tailers,
    spsc_baseline,
    read_bandwidth,
    copy_choice
);
criterion_main!(benches);
