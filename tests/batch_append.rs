//! Batch appends (`Backlog::append_vectored`): guards against a batch that is not exactly an
//! append of its concatenation — bytes misplaced at a part boundary or across the ring's
//! wrap, a batch longer than the ring keeping the wrong bytes, a different start, end or
//! durable offset — and against a batch under `Always` that a crash can tear or lose.
#![allow(clippy::cast_possible_truncation)]

use std::io::IoSlice;

use durable_backlog::{Backlog, Durability, Options};

mod stream;
use stream::stream;

/// A deterministic generator (splitmix64), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Parts of a batch: mostly small records, some empty, sometimes one larger than the ring.
fn batch(rng: &mut Rng, cap: u64, next: u64) -> Vec<Vec<u8>> {
    let parts = rng.below(24);
    let mut o = next;
    (0..parts)
        .map(|_| {
            let len = match rng.below(20) {
                0 => 0,
                1 => cap + rng.below(cap),
                2..=4 => rng.below(cap / 2),
                _ => rng.below(200),
            };
            let part: Vec<u8> = (o..o + len).map(stream).collect();
            o += len;
            part
        })
        .collect()
}

fn held(b: &Backlog) -> Vec<u8> {
    let mut buf = vec![0u8; (b.offset() + 1 - b.first_offset()) as usize];
    let n = b.reader().read_at(b.first_offset(), &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn equivalent_under(d: Durability, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let cap = 16 * 1024;
    let opts = Options::new().capacity(cap).durability(d);
    let mut batched = Backlog::create(dir.path().join("batched"), opts).unwrap();
    let mut single = Backlog::create(dir.path().join("single"), opts).unwrap();
    let mut rng = Rng(seed);
    let mut laps = 0;
    for round in 0..300 {
        let parts = batch(&mut rng, cap, batched.offset() + 1);
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let concat = parts.concat();
        let before = batched.first_offset();
        let a = batched.append_vectored(&slices).unwrap();
        let b = single.append(&concat).unwrap();
        let ctx = format!(
            "{d:?}, round {round}, parts {:?}",
            parts.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(a, b, "returned offset, {ctx}");
        assert_eq!(
            (
                batched.first_offset(),
                batched.offset(),
                batched.durable_offset()
            ),
            (
                single.first_offset(),
                single.offset(),
                single.durable_offset()
            ),
            "start, end, durable offset, {ctx}"
        );
        let bytes = held(&batched);
        assert_eq!(bytes, held(&single), "held bytes, {ctx}");
        for (i, &x) in bytes.iter().enumerate() {
            let o = batched.first_offset() + i as u64;
            assert_eq!(x, stream(o), "byte at {o}, {ctx}");
        }
        if batched.first_offset() != before {
            laps += 1;
        }
    }
    assert!(
        laps > 50,
        "the ring must lap often ({laps} rounds moved the start)"
    );
}

#[test]
fn batch_append_equals_append_of_the_concatenation_across_laps() {
    equivalent_under(Durability::Never, 1);
}

#[test]
fn batch_append_under_always_commits_like_one_append() {
    equivalent_under(Durability::Always, 2);
}

/// Under `Always`, a power loss or a process crash at any storage operation of a batch
/// append leaves either none or all of the batch, and a returned batch is durable.
#[cfg(feature = "sim")]
#[test]
fn batch_append_is_atomic_and_durable_at_every_crash_point() {
    use durable_backlog::sim::SimDisk;
    let cap = 16 * 1024;
    let mut rng = Rng(7);
    for round in 0..40u64 {
        let disk = SimDisk::new();
        let opts = Options::new().capacity(cap).durability(Durability::Always);
        let mut b = Backlog::create_sim(&disk, opts).unwrap();
        let warm: Vec<u8> = (1..=rng.below(2 * cap)).map(stream).collect();
        let before = b.append(&warm).unwrap();
        let parts = batch(&mut rng, cap, before + 1);
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let ops0 = disk.ops();
        let after = b.append_vectored(&slices).unwrap();
        let ops1 = disk.ops();
        // Returned under `Always`: durable.
        let r = Backlog::open_sim(&disk.durable_image(), opts).unwrap();
        assert_eq!(
            r.offset(),
            after,
            "round {round}: a returned batch was lost"
        );
        drop(b);
        // Replay the batch on fresh disks, crashing at each of its storage operations.
        for at in ops0..=ops1 {
            let disk = SimDisk::new();
            let mut b = Backlog::create_sim(&disk, opts).unwrap();
            assert_eq!(b.append(&warm).unwrap(), before);
            disk.crash_at(at);
            assert_eq!(b.append_vectored(&slices).unwrap(), after);
            drop(b);
            let Some(frozen) = disk.frozen() else {
                continue;
            };
            for (kind, image) in [
                ("process crash", frozen.process_crash()),
                ("power loss", frozen.power_loss(round * 1000 + at, 0.5, 0.0)),
            ] {
                let r = Backlog::open_sim(&image, opts).unwrap();
                let ctx = format!("round {round}, {kind} at op {at}: {:?}", r.recovery());
                assert!(
                    r.offset() == before || r.offset() == after,
                    "a torn batch: end {} is neither {before} nor {after}, {ctx}",
                    r.offset()
                );
                let bytes = held(&r);
                for (i, &x) in bytes.iter().enumerate() {
                    let o = r.first_offset() + i as u64;
                    assert_eq!(x, stream(o), "byte at {o}, {ctx}");
                }
            }
        }
    }
}
