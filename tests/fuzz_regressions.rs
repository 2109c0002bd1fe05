//! Findings of the fuzzers (fuzz/), each kept as a named test on the public API.

use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Error, Options};

/// Byte offset of the checksum in a header slot (docs/FORMAT.md).
const SLOT_CRC: usize = 632;

/// `header_decode`: a slot with a valid checksum but non-zero bytes in its unused generation
/// area decoded fine and re-encoded differently: two encodings of one slot, and bytes past
/// the checksum that nothing reads. Unused bytes must now be zero.
#[test]
fn slot_with_nonzero_unused_bytes_is_rejected() {
    let disk = SimDisk::new();
    let opts = Options::new()
        .capacity(16 * 1024)
        .durability(Durability::Never);
    std::mem::forget(Backlog::create_sim(&disk, opts).unwrap()); // no close: one slot
    let mut img = disk.bytes();
    // The only slot ever written of a fresh file is on page 0, with no past generations: the
    // generation area (bytes 120..504) is unused.
    assert!(Backlog::open_sim(&SimDisk::from_image(&img), opts).is_ok());
    img[200] = 1;
    let crc = crc32fast::hash(&img[..SLOT_CRC]);
    img[SLOT_CRC..SLOT_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    match Backlog::open_sim(&SimDisk::from_image(&img), opts) {
        Err(Error::Corrupt { at, .. }) => assert_eq!(at, 200),
        r => panic!("non-canonical slot accepted: {r:?}"),
    }
}

/// `ops_with_crash`: a process crash inside an append longer than the capacity (its new start,
/// published first, is past the old end + 1) made recovery distrust the live page and fall
/// back to the last commit, losing bytes earlier appends had returned.
#[test]
fn process_crash_inside_an_append_longer_than_the_capacity_keeps_earlier_appends() {
    let disk = SimDisk::new();
    let opts = Options::new()
        .capacity(16 * 1024)
        .durability(Durability::Never);
    let mut b = Backlog::create_sim(&disk, opts).unwrap();
    b.append(&vec![1u8; 5000]).unwrap();
    disk.crash_at(disk.ops()); // the first write of the next append
    b.append(&vec![2u8; 20_000]).unwrap();
    let img = disk.frozen().unwrap().process_crash();
    std::mem::forget(b);
    let b = Backlog::open_sim(&img, opts).unwrap();
    assert!(
        b.offset() >= 5000,
        "lost returned appends: end {}",
        b.offset()
    );
    let mut buf = vec![0u8; b.histlen() as usize];
    b.reader().read_at(b.first_offset(), &mut buf).unwrap();
    assert!(
        buf.iter().all(|&x| x == 1),
        "served bytes of the unfinished append"
    );
}

/// `ops_with_crash`: an append that overwrote only bytes *before* the last commit's delta, but
/// in the same checksum block as its first bytes, broke the checksum of that block's entry
/// (it covers the whole run from the block's start); a power loss before the next commit then
/// rejected the commit and lost offsets `append` had acknowledged durable.
#[test]
fn power_loss_after_a_lap_overwrote_the_run_before_the_last_delta_keeps_it() {
    for seed in 0..16 {
        let disk = SimDisk::new();
        let opts = Options::new()
            .capacity(16 * 1024)
            .durability(Durability::Always);
        let mut b = Backlog::create_sim(&disk, opts).unwrap();
        // The fuzzer's sequence, shortened: the last acknowledged delta starts mid-block.
        b.append(&vec![1u8; 16_759]).unwrap();
        b.append(&vec![2u8; 18_898]).unwrap();
        let acked = b.append(&vec![3u8; 5433]).unwrap();
        disk.crash_at(disk.ops() + 4);
        b.append(&vec![4u8; 10_191]).unwrap();
        let img = disk.frozen().unwrap().power_loss(seed, 0.3, 0.0);
        std::mem::forget(b);
        let b = Backlog::open_sim(&img, opts).unwrap();
        assert!(
            b.offset() >= acked,
            "seed {seed}: lost acknowledged offsets: {:?}",
            b.recovery()
        );
    }
}
