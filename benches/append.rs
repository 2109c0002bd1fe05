//! Append throughput and durable commit cost, each beside its same-run baselines: an
//! in-memory ring of the same capacity (the practical limit), `File` + `BufWriter`, the
//! `queue-file` crate (sync off and its default sync), and the one-sync-per-append floors
//! (`pwrite` + `fdatasync`, mapped write + `msync` of one page).
//!
//! `cargo bench --bench append`; criterion reports throughput, compare entries of a group.
#![allow(unsafe_code)] // only in benches/common's baselines, with SAFETY lines

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{
    BufFileRing, FdatasyncFloor, KIB, MIB, MemRing, MsyncFloor, QueueRing, QueueSync, bench_dir,
    check_backlog, chunk, filled_backlog,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use durable_backlog::Durability;

fn throughput(c: &mut Criterion) {
    let dir = bench_dir();
    for cap in [MIB, 64 * MIB] {
        for len in [64, KIB, 16 * KIB] {
            let data = chunk(len);
            let p = |s: &str| dir.path().join(format!("{s}-{cap}-{len}"));
            let mut g = c.benchmark_group(format!("append/{}MiB/{len}B", cap / MIB));
            g.throughput(Throughput::Bytes(len as u64));
            g.measurement_time(Duration::from_secs(2));
            g.warm_up_time(Duration::from_millis(500));

            let mut mem = MemRing::new(cap);
            for _ in 0..=cap / len {
                mem.append(&data);
            }
            assert_eq!(mem.tail(len), data);
            g.bench_function("in-memory ring", |b| b.iter(|| mem.append(&data)));

            let mut file = BufFileRing::new(&p("buf"), cap);
            file.append(&data);
            assert_eq!(file.tail(len), data);
            g.bench_function("File+BufWriter", |b| b.iter(|| file.append(&data)));

            let mut qf = QueueRing::new(&p("qf"), cap, QueueSync::Unsynced);
            qf.append(&data);
            assert_eq!(qf.last(), data);
            g.bench_function("queue-file sync off", |b| b.iter(|| qf.append(&data)));
            drop(qf);

            for d in [Durability::Never, Durability::EverySec] {
                let mut bl = filled_backlog(&p(&format!("{d:?}")), cap, d, &data);
                g.bench_function(BenchmarkId::new("backlog", format!("{d:?}")), |b| {
                    b.iter(|| bl.append(&data).unwrap());
                });
                check_backlog(&bl, &data);
            }
            g.finish();
        }
    }
}

fn durable(c: &mut Criterion) {
    let dir = bench_dir();
    let cap = 64 * MIB;
    let data = chunk(KIB);
    let mut g = c.benchmark_group("durable/1KiB");
    g.throughput(Throughput::Bytes(KIB as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));

    let mut always = filled_backlog(&dir.path().join("a"), cap, Durability::Always, &data);
    assert_eq!(always.durable_offset(), always.offset());
    g.bench_function("backlog Always", |b| {
        b.iter(|| always.append(&data).unwrap());
    });
    assert_eq!(always.durable_offset(), always.offset());
    drop(always);

    let mut fd = FdatasyncFloor::new(&dir.path().join("fd"), cap);
    fd.append(&data);
    assert_eq!(fd.read_back(0, KIB), data);
    g.bench_function("floor pwrite+fdatasync", |b| b.iter(|| fd.append(&data)));
    drop(fd);

    let mut ms = MsyncFloor::new(&dir.path().join("ms"), cap);
    ms.append(&data);
    assert_eq!(ms.read_back(0, KIB), data);
    g.bench_function("floor mmap+msync one page", |b| b.iter(|| ms.append(&data)));
    drop(ms);

    let mut qf = QueueRing::new(&dir.path().join("q"), cap, QueueSync::Synced);
    qf.append(&data);
    assert_eq!(qf.last(), data);
    g.bench_function("queue-file default sync", |b| b.iter(|| qf.append(&data)));
    drop(qf);

    // Group commit: N appends, one flush.
    for n in [4usize, 16, 64] {
        g.throughput(Throughput::Bytes((n * KIB) as u64));
        let mut never = filled_backlog(
            &dir.path().join(format!("g{n}")),
            cap,
            Durability::Never,
            &data,
        );
        g.bench_function(BenchmarkId::new("backlog group commit", n), |b| {
            b.iter(|| {
                for _ in 0..n {
                    never.append(&data).unwrap();
                }
                never.flush().unwrap();
            });
        });
        assert_eq!(never.durable_offset(), never.offset());
        let mut file = BufFileRing::new(&dir.path().join(format!("gf{n}")), cap);
        g.bench_function(BenchmarkId::new("File+BufWriter+fdatasync group", n), |b| {
            b.iter(|| {
                for _ in 0..n {
                    file.append(&data);
                }
                file.sync();
            });
        });
        assert_eq!(file.tail(KIB), data);
    }
    g.finish();
}

fn main() {
    common::crash_child_if_asked();
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    durable(&mut c);
    c.final_summary();
}
