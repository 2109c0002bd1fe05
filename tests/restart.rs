//! Restart semantics on simulated storage: what each kind of crash keeps, and that no PSYNC
//! answer after a lossy crash splices a new history onto bytes a replica got from a lost one.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::match_wildcard_for_single_variants
)]

use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Options, RecoveryKind};

mod stream;
use stream::{append_stream, check_held};

#[test]
fn process_crash_loses_nothing_under_every_durability() {
    for d in [Durability::Always, Durability::EverySec, Durability::Never] {
        let disk = SimDisk::new();
        let mut b =
            Backlog::create_sim(&disk, Options::new().capacity(64 * 1024).durability(d)).unwrap();
        append_stream(&mut b, 100_000);
        b.flush().unwrap();
        append_stream(&mut b, 777);
        let id = b.run_id();
        let image = disk.process_crash();
        std::mem::forget(b); // the process died: no close, no final commit
        let b = Backlog::open_sim(&image, Options::new()).unwrap();
        assert_eq!(b.recovery().kind, RecoveryKind::ProcessCrash, "{d:?}");
        assert_eq!(b.offset(), 100_777, "{d:?}");
        assert_eq!(b.histlen(), 64 * 1024);
        check_held(&b);
        assert!(b.psync(id.as_str(), 100_778).is_continue());
    }
}

#[test]
fn power_loss_keeps_the_last_flush_and_cuts_the_history_there() {
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(
        &disk,
        Options::new()
            .capacity(64 * 1024)
            .durability(Durability::Never),
    )
    .unwrap();
    append_stream(&mut b, 50_000);
    b.flush().unwrap();
    append_stream(&mut b, 5_000);
    let id = b.run_id();
    let image = disk.durable_image();
    std::mem::forget(b);
    let mut b = Backlog::open_sim(&image, Options::new()).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::Verified);
    assert!(b.recovery().history_cut);
    assert_eq!(b.offset(), 50_000);
    assert_eq!(b.histlen(), 50_000);
    check_held(&b);
    assert!(b.psync(id.as_str(), 50_001).is_continue());
    assert!(
        !b.psync(id.as_str(), 50_002).is_continue(),
        "replica ahead of the recovered end continued"
    );
    append_stream(&mut b, 10_000);
    assert!(
        !b.psync(id.as_str(), 55_001).is_continue(),
        "spliced a new history onto a lost one"
    );
}

#[test]
fn sampled_power_loss_images_never_serve_a_wrong_byte() {
    for seed in 0..200u64 {
        let disk = SimDisk::new();
        let d = if seed % 2 == 0 {
            Durability::Always
        } else {
            Durability::Never
        };
        let mut b =
            Backlog::create_sim(&disk, Options::new().capacity(20_000).durability(d)).unwrap();
        let mut durable = 0;
        for i in 0..(seed % 7 + 3) {
            append_stream(&mut b, (seed as usize * 37 + i as usize * 1013) % 9000 + 1);
            if i % 2 == 0 {
                durable = b.flush().unwrap();
            }
        }
        if d == Durability::Always {
            durable = b.offset();
        }
        // Torn pages (atomic sectors): nothing durable is lost.
        let image = disk.power_loss(seed, 0.3, 0.0);
        let b2 = Backlog::open_sim(&image, Options::new()).unwrap();
        assert!(
            b2.offset() >= durable,
            "seed {seed}: lost acknowledged-durable bytes"
        );
        check_held(&b2);
        // A sector of garbage may destroy durable bytes that share it, never serve wrong ones.
        let image = disk.power_loss(seed, 0.3, 0.5);
        std::mem::forget(b);
        let b = Backlog::open_sim(&image, Options::new()).unwrap();
        check_held(&b);
    }
}

#[test]
fn verify_on_open_serves_only_verified_bytes_after_a_crash_and_catches_a_flipped_data_bit() {
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(
        &disk,
        Options::new()
            .capacity(64 * 1024)
            .durability(Durability::Never),
    )
    .unwrap();
    append_stream(&mut b, 30_000);
    b.flush().unwrap();
    append_stream(&mut b, 500);
    let image = disk.process_crash();
    std::mem::forget(b);
    // Without the option the uncommitted tail comes back from the page cache...
    let b = Backlog::open_sim(&image.process_crash(), Options::new()).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::ProcessCrash);
    assert_eq!(b.offset(), 30_500);
    drop(b);
    // ...with it, only the verified, committed bytes do, and the history is cut there.
    let b = Backlog::open_sim(&image, Options::new().verify_on_open(true)).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::Verified);
    assert!(b.recovery().history_cut);
    assert_eq!((b.first_offset(), b.offset()), (1, 30_000));
    assert_eq!(b.recovery().verified_bytes, 30_000);
    check_held(&b);
    b.close().unwrap();

    // Flip one bit in the middle of the data ring of the cleanly closed file.
    let mut bytes = image.bytes();
    let data_start = bytes.len() - 64 * 1024;
    bytes[data_start + 10_000] ^= 0x10;
    let flipped = SimDisk::from_image(&bytes);
    let b = Backlog::open_sim(&flipped, Options::new().verify_on_open(true)).unwrap();
    assert!(
        b.first_offset() > 10_000,
        "a block with a flipped bit was kept"
    );
    assert_eq!(b.offset(), 30_000);
    check_held(&b);
}
