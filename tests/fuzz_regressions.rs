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
