//! Verification reads ahead of itself (`MADV_WILLNEED` windows over the ring, which wrap at
//! the ring's end): guards against a window computation that panics, skips, repeats or
//! mis-wraps offsets. Read-ahead is only a hint, so on a real file a wrong window costs time,
//! not bytes: the windows themselves are checked on simulated storage, which records each
//! request, and a real file checks that a verifying open of a large, lapped backlog still
//! accepts every committed byte and returns them unchanged.

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

/// The verifying open of a lapped ring asks for every held byte exactly once, newest first,
/// in windows that follow the stream backwards across the ring's wrap.
#[cfg(feature = "sim")]
#[test]
fn verifying_open_reads_ahead_every_held_byte_once_newest_first() {
    use durable_backlog::sim::SimDisk;
    let cap = 8u64 << 20;
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(
        &disk,
        Options::new().capacity(cap).durability(Durability::Never),
    )
    .unwrap();
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

    let image = SimDisk::from_image(&disk.bytes());
    let b = Backlog::open_sim(&image, Options::new().verify_on_open(true)).unwrap();
    assert_eq!(b.recovery().verified_bytes, cap, "{:?}", b.recovery());
    let (first, end) = (b.first_offset(), b.offset());
    assert_eq!((first, end), (total + 1 - cap, total));
    // The data region is the file's last `cap` bytes; offset `o` lives at `o % cap` in it.
    let data = image.len() - cap;
    let requests = image.read_ahead_requests();
    assert!(!requests.is_empty(), "no read-ahead at all");
    // Walk the stream backwards from the newest byte: each request must cover exactly the
    // bytes just below the previous one (split in two where the ring wraps).
    let mut next_last = end; // the newest offset not yet requested
    for &(pos, len) in &requests {
        assert!(
            pos >= data && pos + len <= data + cap,
            "request {pos}+{len} outside the data region"
        );
        let last_pos = pos + len - 1 - data;
        assert_eq!(
            last_pos,
            next_last % cap,
            "request {pos}+{len} does not end just below the bytes already requested \
             (expected offset {next_last}); all requests: {requests:?}"
        );
        next_last -= len;
    }
    assert_eq!(
        next_last + 1,
        first,
        "read-ahead stopped at offset {} instead of the first held byte {first}",
        next_last + 1
    );
}
