//! Findings of the fuzzers (fuzz/), each kept as a named test on the public API.

use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Error, Options};

/// Byte offset of the checksum in a header slot (docs/FORMAT.md).
const SLOT_CRC: usize = 632;

/// header_decode: a slot with a valid checksum but non-zero bytes in its unused generation
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

/// ops_with_crash: a process crash inside an append longer than the capacity (its new start,
/// published first, is past the old end + 1) made recovery distrust the live page and fall
/// back to the last commit, losing bytes earlier appends had returned.
#[test]
fn process_crash_inside_an_append_longer_than_the_capacity_keeps_earlier_appends() {
    let disk = SimDisk::new();
    let opts = Options::new()
        .capacity(16 * 1024)
        .durability(Durability::Never);
    let mut b = Backlog::create_sim(&disk, opts).unwrap();
    b.append(&[1u8; 5000]).unwrap();
    disk.crash_at(disk.ops()); // the first write of the next append
    b.append(&[2u8; 20_000]).unwrap();
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
