//! Entry points into crate internals for the fuzz targets in `fuzz/`. Compiled only under
//! `cfg(fuzzing)` (set by cargo-fuzz); never part of the normal build or public API.

use crate::format::entry::{ENTRY_LEN, Entry};
use crate::format::slot::{SLOT_LEN, Slot};

/// Decodes `data` as a header slot and as checksum-table entries; never panics on any input,
/// and anything that decodes re-encodes to exactly the same bytes.
///
/// If the first byte is odd, the slot's checksum is recomputed first, so the fuzzer gets past
/// it and exercises the field checks behind it.
///
/// # Panics
/// When a property above fails: that is the finding.
pub fn header_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if mode & 1 == 1 && buf.len() >= SLOT_LEN {
        let crc = crc32fast::hash(&buf[..SLOT_LEN - 4]);
        buf[SLOT_LEN - 4..SLOT_LEN].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(slot) = Slot::decode(&buf) {
        let enc = slot.encode();
        assert_eq!(
            &enc[..],
            &buf[..SLOT_LEN],
            "a valid slot did not round-trip exactly"
        );
        assert_eq!(Slot::decode(&enc).as_ref(), Ok(&slot));
        for len in [0, 3 * 4096, u64::from(mode) << 14, u64::MAX] {
            let _ = slot.check_geometry(len);
        }
        for e in 0..4 {
            let _ = slot.epoch_until(e);
        }
    }
    for chunk in buf.chunks_exact(ENTRY_LEN) {
        let mut b = [0u8; ENTRY_LEN];
        b.copy_from_slice(chunk);
        if let Some(e) = Entry::decode(&b) {
            assert_eq!(e.encode(), b, "a valid entry did not round-trip exactly");
        }
    }
}
