//! Verification on a real file reads ahead of itself (`MADV_WILLNEED` windows over the ring,
//! which wrap at the ring's end): guards against a window computation that panics, skips or
//! mis-wraps offsets, so that a verifying open of a large, lapped backlog on a real file
//! still accepts every committed byte and returns them unchanged.

use durable_backlog::{Backlog, Durability, Options};

fn stream(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

#[test]
fn verifying_open_of_a_lapped_32_mib_file_keeps_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let cap = 32u64 << 20;
    let mut b = Backlog::create(
        &path,
        Options::new().capacity(cap).durability(Durability::Never),
    )
    .unwrap();
    // 1.2 laps: the held range starts mid-ring (on a checksum block boundary: a partial
    // oldest block is another matter, see the crash-safety tests) and wraps.
    let chunk_len = 23 * 32 * 1024;
    let total = cap + 10 * chunk_len - 1;
    let mut o = 1u64;
    while o <= total {
        let n = chunk_len.min(total + 1 - o);
        let chunk: Vec<u8> = (o..o + n).map(stream).collect();
        b.append(&chunk).unwrap();
        o += n;
    }
    b.close().unwrap();

    let b = Backlog::open(&path, Options::new().verify_on_open(true)).unwrap();
    assert_eq!(b.offset(), total, "{:?}", b.recovery());
    assert_eq!(b.histlen(), cap);
    assert_eq!(b.recovery().verified_bytes, cap, "{:?}", b.recovery());
    let mut buf = vec![0u8; cap as usize];
    b.reader().read_at(b.first_offset(), &mut buf).unwrap();
    for (i, &x) in buf.iter().enumerate() {
        let off = b.first_offset() + i as u64;
        assert_eq!(x, stream(off), "byte at {off}");
    }
}
