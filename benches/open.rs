//! Open: clean reopen of 64 MiB and 1 GiB backlogs (should not depend on the capacity),
//! recovery after a process crash (same boot; the committed range is verified), and
//! recovery after a crash that needs verification (a real file: a child process commits and
//! dies, then the live page's boot ID is changed as a reboot leaves it), with the page cache
//! warm and dropped; criterion reports verified bytes per second.
//!
//! `cargo bench --bench open`.
#![allow(unsafe_code, clippy::many_single_char_names)] // unsafe: only in benches/common's baselines, with SAFETY lines

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{GIB, MIB, bench_dir, check_backlog, chunk, drop_page_cache, patch};
use criterion::{BenchmarkId, Criterion, Throughput};
use durable_backlog::{Backlog, Durability, Options, RecoveryKind};

fn open(c: &mut Criterion) {
    let dir = bench_dir();
    let data = chunk(MIB);
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    for cap in [64 * MIB, GIB] {
        let path = dir.path().join(format!("b{cap}"));
        let mut b = Backlog::create(
            &path,
            Options::new()
                .capacity(cap as u64)
                .durability(Durability::Never),
        )
        .unwrap();
        for _ in 0..=cap / MIB {
            b.append(&data).unwrap();
        }
        check_backlog(&b, &data);
        b.close().unwrap();
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new("clean reopen", format!("{}MiB", cap / MIB)),
            |bch| {
                bch.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let s = Instant::now();
                        let b = Backlog::open(&path, Options::new()).unwrap();
                        t += s.elapsed();
                        assert_eq!(b.recovery().kind, RecoveryKind::Clean);
                        b.close().unwrap();
                    }
                    t
                });
            },
        );
        if cap == GIB {
            // kill -9 on a machine that stays up: the unclean open verifies the committed
            // range (the page cache is warm: the writer just ran).
            let header = common::process_crash_image_from(&path);
            g.throughput(Throughput::Bytes(cap as u64));
            g.bench_function("process-crash recovery 1GiB", |bch| {
                bch.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        patch(&path, 0, &header);
                        let s = Instant::now();
                        let b = Backlog::open(&path, Options::new()).unwrap();
                        t += s.elapsed();
                        assert_eq!(b.recovery().kind, RecoveryKind::ProcessCrash);
                    }
                    t
                });
            });
            let header = common::crash_image_from(&path);
            g.throughput(Throughput::Bytes(cap as u64));
            for cold in [false, true] {
                let name = if cold {
                    "page cache dropped"
                } else {
                    "page cache warm"
                };
                g.bench_function(BenchmarkId::new("verified recovery 1GiB", name), |bch| {
                    bch.iter_custom(|iters| {
                        let mut t = Duration::ZERO;
                        for _ in 0..iters {
                            patch(&path, 0, &header);
                            if cold {
                                drop_page_cache(&path);
                            }
                            let s = Instant::now();
                            let b = Backlog::open(&path, Options::new()).unwrap();
                            t += s.elapsed();
                            assert_eq!(b.recovery().kind, RecoveryKind::Verified);
                            assert!(b.recovery().verified_bytes >= (cap - MIB) as u64);
                        }
                        t
                    });
                });
            }
        }
    }
    g.finish();
}

fn main() {
    common::crash_child_if_asked();
    let mut c = Criterion::default().configure_from_args();
    open(&mut c);
    c.final_summary();
}
