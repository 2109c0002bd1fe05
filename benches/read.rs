//! Range reads from random offsets of a full 64 MiB backlog (16 KiB and 1 MiB) beside
//! `memcpy` from an in-memory ring of the same size at random positions.
//!
//! `cargo bench --bench read`.
#![allow(unsafe_code)] // only in benches/common's baselines, with SAFETY lines

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{KIB, MIB, Rng, bench_dir, read_fixture};
use criterion::{Criterion, Throughput};

fn reads(c: &mut Criterion) {
    let dir = bench_dir();
    let (bl, mem, _) = read_fixture(dir.path());
    let cap = mem.capacity();
    let r = bl.reader();
    for len in [16 * KIB, MIB] {
        let mut buf = vec![0u8; len];
        let first = bl.first_offset();
        let span = bl.histlen() - len as u64;
        let mut g = c.benchmark_group(format!("read/{}KiB", len / KIB));
        g.throughput(Throughput::Bytes(len as u64));
        g.measurement_time(Duration::from_secs(2));
        let mut rng = Rng(0x1234_5678);
        g.bench_function("backlog read_at", |b| {
            b.iter(|| r.read_at(first + rng.below(span), &mut buf).unwrap());
        });
        let mut rng = Rng(0x1234_5678);
        g.bench_function("memcpy from memory", |b| {
            b.iter(|| mem.read_pos(rng.below((cap - len) as u64) as usize, &mut buf));
        });
        g.finish();
    }
}

fn main() {
    common::crash_child_if_asked();
    let mut c = Criterion::default().configure_from_args();
    reads(&mut c);
    c.final_summary();
}
