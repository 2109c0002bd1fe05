//! The self-verifying stream the engine, restart, inspection and concurrency tests append:
//! the byte at offset `o` is a pure function of `o` (a splitmix64 finaliser, so a byte from
//! another lap, or a neighbour's, differs), so any wrong byte anywhere is caught.
#![allow(dead_code, unreachable_pub)]

use durable_backlog::Backlog;

/// The byte at replication offset `offset`.
pub fn stream(offset: u64) -> u8 {
    let mut z = offset.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u8
}

/// The `len` stream bytes from offset `first`.
pub fn bytes_from(first: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| stream(first + i)).collect()
}

/// Appends the next `len` stream bytes; returns the new offset.
pub fn append_stream(b: &mut Backlog, len: usize) -> u64 {
    let first = b.offset() + 1;
    b.append(&bytes_from(first, len)).unwrap()
}

/// Asserts that every byte the backlog holds is the stream's byte at its offset.
pub fn check_held(b: &Backlog) {
    let first = b.first_offset();
    let mut buf = vec![0u8; b.histlen() as usize];
    assert_eq!(b.reader().read_at(first, &mut buf).unwrap(), buf.len());
    if let Some(i) = buf
        .iter()
        .zip(bytes_from(first, buf.len()))
        .position(|(a, b)| *a != b)
    {
        panic!("wrong byte at offset {}", first + i as u64);
    }
}
