//! An arbitrary file image opened as a backlog: `open` returns an error or a consistent
//! backlog (range within the capacity, every held byte readable, no PSYNC past the end, a
//! second open finds the same range); it never panics.
#![no_main]

use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::from_image(data);
    let opts = Options::new().durability(Durability::Never);
    let Ok(b) = Backlog::open_sim(&disk, opts) else {
        return;
    };
    let (first, end) = (b.first_offset(), b.offset());
    assert!(first <= end + 1, "range {first}..={end}");
    assert!(end + 1 - first <= b.capacity(), "holds more than its capacity");
    let mut buf = vec![0u8; (end + 1 - first) as usize];
    assert_eq!(b.reader().read_at(first, &mut buf).unwrap(), buf.len());
    for (id, limit) in b.past_run_ids() {
        assert!(limit <= end + 1, "{id} valid up to {limit} past the end {end}");
        assert!(!b.psync(id.as_str(), end as i64 + 2).is_continue());
    }
    drop(b);
    // What it committed opens again, cleanly, to the same range and bytes.
    let b = Backlog::open_sim(&disk, opts).expect("reopen after a successful open");
    assert_eq!((b.first_offset(), b.offset()), (first, end));
    let mut again = vec![0u8; buf.len()];
    b.reader().read_at(first, &mut again).unwrap();
    assert!(again == buf, "a clean reopen changed the bytes");
});
