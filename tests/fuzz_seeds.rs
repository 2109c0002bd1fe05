//! The fuzzers' seed corpus (fuzz/seeds/): valid backlog images in every recovery state,
//! their header slots, and operation scripts. Random bytes almost never pass a checksum, so
//! the fuzzers start from these and mutate.
//!
//! `cargo test --all-features --test fuzz_seeds -- --ignored` regenerates them; the test that
//! always runs proves each checked-in image still opens to a consistent backlog (old images
//! double as golden files of the format).
#![allow(clippy::cast_possible_wrap)]

use std::path::Path;

use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Options, RecoveryKind};

const SEEDS: &str = "fuzz/seeds";

fn images() -> Vec<(&'static str, Vec<u8>)> {
    let opts = |d| Options::new().capacity(16 * 1024).durability(d);
    let bytes =
        |n: usize, from: u64| -> Vec<u8> { (0..n as u64).map(|i| (from + i) as u8).collect() };
    let mut out = Vec::new();
    // Clean close after a wrap.
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, opts(Durability::Never)).unwrap();
    b.append(&bytes(20_000, 1)).unwrap();
    b.shift_run_id().unwrap();
    b.append(&bytes(3000, 20_001)).unwrap();
    b.close().unwrap();
    out.push(("clean", disk.bytes()));
    // Fresh, empty.
    let disk = SimDisk::new();
    drop(Backlog::create_sim(&disk, opts(Durability::Always)).unwrap());
    out.push(("empty", disk.bytes()));
    // Process crash with unflushed appends (live page ahead of the slots).
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, opts(Durability::Never)).unwrap();
    b.append(&bytes(9000, 1)).unwrap();
    b.flush().unwrap();
    b.append(&bytes(5000, 9001)).unwrap();
    out.push(("process_crash", disk.process_crash().bytes()));
    // Power loss mid-stream, and after a truncation (a cut history with past epochs).
    b.truncate_to(12_000).unwrap();
    b.append(&bytes(700, 12_001)).unwrap();
    out.push(("power_loss", disk.power_loss(1, 0.5, 0.0).bytes()));
    std::mem::forget(b);
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, opts(Durability::Always)).unwrap();
    b.append(&bytes(15_000, 1)).unwrap();
    b.truncate_to(14_000).unwrap();
    b.append(&bytes(4000, 14_001)).unwrap();
    out.push(("truncated_always", disk.durable_image().bytes()));
    std::mem::forget(b);
    out
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand to regenerate the corpus"]
fn regenerate_fuzz_seeds() {
    let dir = Path::new(SEEDS);
    for t in ["open_image", "header_decode", "ops_with_crash"] {
        let d = dir.join(t);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
    }
    for (name, img) in images() {
        std::fs::write(dir.join("open_image").join(format!("{name}.img")), &img).unwrap();
        for page in 0..2 {
            // Mode byte 0 (checksum as stored), then the slot page's first 636 bytes; then a
            // second seed with the first table sector, to reach the entry decoder.
            let mut h = vec![0u8];
            h.extend_from_slice(&img[page * 4096..page * 4096 + 636]);
            std::fs::write(
                dir.join("header_decode").join(format!("{name}_slot{page}")),
                &h,
            )
            .unwrap();
        }
        let mut t = vec![0u8];
        t.extend_from_slice(&img[3 * 4096..3 * 4096 + 512]);
        std::fs::write(dir.join("header_decode").join(format!("{name}_table")), &t).unwrap();
    }
    // Scripts: [durability, crash countdown (2 bytes), then 3-byte ops] (see the target).
    let scripts: [(&str, &[u8]); 3] = [
        (
            "appends_always",
            &[
                1, 5, 0, 0, 200, 3, 1, 50, 20, 3, 9, 0, 4, 1, 0, 2, 0, 90, 30,
            ],
        ),
        (
            "flushes_never",
            &[
                0, 9, 0, 0, 100, 20, 5, 0, 0, 1, 80, 40, 3, 7, 0, 5, 0, 0, 9, 1, 0,
            ],
        ),
        (
            "history_changes",
            &[
                1, 30, 0, 0, 90, 9, 6, 0, 0, 7, 44, 1, 8, 3, 0, 2, 70, 5, 9, 0, 0,
            ],
        ),
    ];
    for (name, s) in scripts {
        std::fs::write(dir.join("ops_with_crash").join(name), s).unwrap();
    }
}

#[test]
fn checked_in_seed_images_open_consistently() {
    let dir = Path::new(SEEDS).join("open_image");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let img = std::fs::read(&path).unwrap();
        let disk = SimDisk::from_image(&img);
        let b = Backlog::open_sim(&disk, Options::new().durability(Durability::Never))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut buf = vec![0u8; b.histlen() as usize];
        b.reader().read_at(b.first_offset(), &mut buf).unwrap();
        for (i, &x) in buf.iter().enumerate() {
            assert_eq!(x, (b.first_offset() + i as u64) as u8, "{}", path.display());
        }
        if path.file_stem().is_some_and(|s| s == "clean") {
            assert_eq!(b.recovery().kind, RecoveryKind::Clean);
            assert_eq!(b.offset(), 23_000);
        }
        n += 1;
    }
    assert!(n >= 5, "seed images missing from {}", dir.display());
}
