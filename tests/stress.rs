//! Stress: one writer and several tailers and random readers racing over a self-verifying
//! stream (every byte is a function of its offset). Guards against the reader accepting a
//! byte the writer overwrote during the copy (a torn read), a tailer skipping or repeating
//! bytes, and a lap or wake-up going unnoticed. Tiny rings lap the readers constantly; large
//! ones, with the writer never more than half a ring ahead, must never lap anyone and must
//! deliver every byte.
//!
//! Each scenario runs `DB_STRESS_SECS` seconds (default 1); e.g. `DB_STRESS_SECS=300 cargo
//! test --release --test stress -- --nocapture` for a long run.
#![allow(clippy::cast_possible_truncation)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_backlog::{Backlog, Durability, Options, ReadError, Reader, TailError, WriteToError};

mod stream;
use stream::stream;

fn verify(first: u64, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        let o = first + i as u64;
        assert_eq!(b, stream(o), "wrong byte accepted at offset {o}");
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An `io::Write` that checks every byte it receives against the stream.
struct VerifyingSink {
    next: u64,
}
impl io::Write for VerifyingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        verify(self.next, buf);
        self.next += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    reads: AtomicU64,
    laps: AtomicU64,
    random_reads: AtomicU64,
    torn_rejected: AtomicU64,
}

fn duration() -> Duration {
    let secs: f64 = std::env::var("DB_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// Follows the stream from offset 1 to `final_end`, resyncing when lapped.
fn tail(
    id: usize,
    reader: &Reader,
    pos: &AtomicU64,
    final_end: &AtomicU64,
    counts: &Counts,
    laps: Laps,
) {
    let mut cursor = reader.cursor(1);
    let mut buf = vec![0u8; 1 + id * 7919 % 70_000];
    let mut sink = VerifyingSink { next: 1 };
    let mut turn = 0u64;
    loop {
        turn += 1;
        let at = cursor.position();
        let r = if turn.is_multiple_of(2) {
            sink.next = at;
            cursor.write_to(&mut sink, buf.len())
        } else {
            cursor
                .read(&mut buf)
                .inspect(|&n| verify(at, &buf[..n]))
                .map_err(WriteToError::Tail)
        };
        match r {
            Ok(0) => {
                let end = final_end.load(Ordering::Acquire);
                if end != 0 && cursor.position() == end + 1 {
                    return;
                }
                cursor.wait(Duration::from_millis(5));
            }
            Ok(n) => {
                counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
                counts.reads.fetch_add(1, Ordering::Relaxed);
                pos.store(cursor.position(), Ordering::Release);
            }
            Err(WriteToError::Tail(TailError::Overwritten { requested, first })) => {
                assert!(
                    laps == Laps::Expected,
                    "tailer {id} lapped at {requested} (first {first})"
                );
                assert!(first > requested);
                counts.laps.fetch_add(1, Ordering::Relaxed);
                cursor = reader.cursor(reader.first_offset());
            }
            Err(e) => panic!("tailer {id}: {e}"),
        }
    }
}

/// Reads random ranges of what the writer holds until `stop`.
fn random_reads(reader: &Reader, seed: u64, stop: &AtomicBool, counts: &Counts) {
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; 128 * 1024];
    while !stop.load(Ordering::Acquire) {
        let (first, end) = (reader.first_offset(), reader.offset());
        if end < first {
            continue;
        }
        let o = first + rng.below(end - first + 1);
        let len = 1 + rng.below(buf.len() as u64) as usize;
        match reader.read_at(o, &mut buf[..len]) {
            Ok(n) => {
                verify(o, &buf[..n]);
                counts.random_reads.fetch_add(1, Ordering::Relaxed);
            }
            Err(ReadError::Overwritten { .. }) => {
                counts.torn_rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("random reader: {e}"),
        }
    }
}

/// Whether the writer may lap the tailers in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Laps {
    /// A ring small enough that tailers get lapped and resync.
    Expected,
    /// A ring large enough that every tailer must receive every byte once.
    Forbidden,
}

fn scenario(name: &str, cap: u64, tailers: usize, laps: Laps) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new().capacity(cap).durability(Durability::Never),
    )
    .unwrap();
    let reader = b.reader();
    let counts = Arc::new(Counts::default());
    let final_end = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let positions: Arc<Vec<AtomicU64>> =
        Arc::new((0..tailers).map(|_| AtomicU64::new(1)).collect());
    let mut threads = Vec::new();
    for id in 0..tailers {
        let (rd, pos, fin, cnt) = (
            reader.clone(),
            Arc::clone(&positions),
            Arc::clone(&final_end),
            Arc::clone(&counts),
        );
        threads.push(std::thread::spawn(move || {
            tail(id, &rd, &pos[id], &fin, &cnt, laps);
        }));
    }
    for seed in [0x1234_5678_9abc_def1u64, 0x0fed_cba9_8765_4321] {
        let (r, s, c) = (reader.clone(), Arc::clone(&stop), Arc::clone(&counts));
        threads.push(std::thread::spawn(move || random_reads(&r, seed, &s, &c)));
    }

    let mut rng = Rng(0xdead_beef_cafe_f00d ^ cap);
    let mut data = Vec::new();
    let mut appends = 0u64;
    let t0 = Instant::now();
    let limit = duration();
    while t0.elapsed() < limit {
        let len = match rng.below(100) {
            0 if laps == Laps::Expected => cap + rng.below(cap), // more than the ring holds
            0..=9 => 4096 + rng.below(60_000),
            _ => 1 + rng.below(300),
        } as usize;
        if laps == Laps::Forbidden {
            // Never get more than half a ring ahead of the slowest tailer.
            let len = len.min(cap as usize / 4);
            loop {
                let slowest = positions
                    .iter()
                    .map(|p| p.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(1);
                if b.offset() + 1 + len as u64 - slowest <= cap / 2 {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let first = b.offset() + 1;
        data.clear();
        data.extend((0..len as u64).map(|i| stream(first + i)));
        b.append(&data).unwrap();
        appends += 1;
    }
    final_end.store(b.offset(), Ordering::Release);
    // Wake anyone asleep so they notice the final end.
    b.append(&[stream(b.offset() + 1)]).unwrap();
    final_end.store(b.offset(), Ordering::Release);
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().unwrap();
    }
    let written = b.offset();
    let c = &*counts;
    println!(
        "{name}: capacity {cap}, {secs:.1} s: writer {written} bytes in {appends} appends; \
         {tailers} tailers verified {} bytes in {} reads, lapped {} times; random reads: {} \
         verified, {} rejected as overwritten",
        c.bytes.load(Ordering::Relaxed),
        c.reads.load(Ordering::Relaxed),
        c.laps.load(Ordering::Relaxed),
        c.random_reads.load(Ordering::Relaxed),
        c.torn_rejected.load(Ordering::Relaxed),
        secs = t0.elapsed().as_secs_f64(),
    );
    if laps == Laps::Forbidden {
        assert_eq!(c.laps.load(Ordering::Relaxed), 0);
        assert_eq!(
            c.bytes.load(Ordering::Relaxed),
            written * tailers as u64,
            "every tailer must receive every byte exactly once"
        );
    }
}

#[test]
fn tiny_ring_laps_readers_constantly_and_no_wrong_byte_is_accepted() {
    scenario("tiny ring", 16 * 1024, 3, Laps::Expected);
}

#[test]
fn large_ring_tailers_receive_every_byte_exactly_once() {
    scenario("large ring", 8 << 20, 3, Laps::Forbidden);
}
