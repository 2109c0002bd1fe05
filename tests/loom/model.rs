//! The model itself (see `tests/loom.rs`). Ring bytes are Relaxed atomics here: a racing
//! copy may return any byte the memory model allows, stale or new, and only validation
//! stands between it and the caller.
#![allow(clippy::cast_possible_truncation)]

use durable_backlog::TailError;
use durable_backlog::seqlock::{self, Memory, Word};
use durable_backlog::sync::{AtomicU64, Ordering};
use loom::sync::atomic::AtomicU8;
use loom::sync::{Arc, Condvar, Mutex};

const CAP: u64 = 4;

/// Byte at `offset` in history `h`: every (history, offset) pair gives a distinct byte.
fn byte(h: u8, offset: u64) -> u8 {
    (offset as u8).wrapping_mul(16).wrapping_add(h)
}

struct Model {
    words: [AtomicU64; 5],
    ring: Vec<AtomicU8>,
    /// The kernel's side of the futex: its hash-bucket lock and wait queue.
    futex: (Mutex<()>, Condvar),
}

impl Model {
    /// A ring holding offsets `start..=end` of history 0.
    fn new(start: u64, end: u64) -> Self {
        let ring = (0..CAP).map(|_| AtomicU8::new(0)).collect::<Vec<_>>();
        for o in start..=end {
            ring[(o % CAP) as usize].store(byte(0, o), Ordering::Relaxed);
        }
        Model {
            words: [
                AtomicU64::new(start),
                AtomicU64::new(end),
                AtomicU64::new(0),
                AtomicU64::new(0),
                // No commit protection: the last commit's delta was empty.
                AtomicU64::new(u64::MAX),
            ],
            ring,
            futex: (Mutex::new(()), Condvar::new()),
        }
    }

    fn word(&self, w: Word) -> &AtomicU64 {
        &self.words[match w {
            Word::Start => 0,
            Word::End => 1,
            Word::Change => 2,
            Word::Waiters => 3,
            Word::Protect => 4,
        }]
    }
}

impl Memory for Model {
    fn load(&self, w: Word, order: Ordering) -> u64 {
        self.word(w).load(order)
    }
    fn store(&self, w: Word, v: u64, order: Ordering) {
        self.word(w).store(v, order);
    }
    fn fetch_add(&self, w: Word, v: u64, order: Ordering) -> u64 {
        self.word(w).fetch_add(v, order)
    }
    fn fetch_or(&self, w: Word, v: u64, order: Ordering) -> u64 {
        self.word(w).fetch_or(v, order)
    }
    fn fetch_min(&self, w: Word, v: u64, order: Ordering) -> u64 {
        self.word(w).fetch_min(v, order)
    }
    fn capacity(&self) -> u64 {
        CAP
    }
    fn copy_in(&self, first: u64, src: &[u8]) {
        for (i, &b) in src.iter().enumerate() {
            self.ring[((first + i as u64) % CAP) as usize].store(b, Ordering::Relaxed);
        }
    }
    fn copy_out(&self, first: u64, dst: &mut [u8]) {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self.ring[((first + i as u64) % CAP) as usize].load(Ordering::Relaxed);
        }
    }
    /// `FUTEX_WAIT`: under the bucket lock, compare (the kernel's read is fully fenced) and
    /// queue; no timeout in the model, so a lost wake-up is a deadlock loom reports.
    fn sleep(&self, expected: u64, _timeout: std::time::Duration) {
        let g = self.futex.0.lock().unwrap();
        if self.word(Word::Waiters).load(Ordering::SeqCst) == expected {
            drop(self.futex.1.wait(g).unwrap());
        }
    }
    /// `FUTEX_WAKE`: under the bucket lock, wake the queue.
    fn wake_all(&self) {
        let _g = self.futex.0.lock().unwrap();
        self.futex.1.notify_all();
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// One reader attempt: snapshot, then copy-validate `len` bytes from `offset`. Returns the
/// accepted bytes with the snapshot they were validated against.
fn read_once(m: &Model, offset: u64, len: usize) -> Option<(seqlock::Snapshot, Vec<u8>)> {
    let snap = seqlock::try_snapshot(m)?;
    let mut buf = vec![0u8; len];
    match seqlock::read(m, &snap, offset, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some((snap, buf))
        }
        Err(
            TailError::Overwritten { .. }
            | TailError::HistoryChanged
            | TailError::Moved
            | TailError::NotWritten { .. },
        ) => None,
    }
}

/// The writer laps the ring (two appends overwrite every byte the reader wants) while the
/// reader copies: an accepted copy holds exactly the bytes of its offsets.
#[test]
fn lapping_writer_never_lets_a_torn_copy_through() {
    model(|| {
        let m = Arc::new(Model::new(1, 4));
        let w = Arc::clone(&m);
        let writer = loom::thread::spawn(move || {
            let (mut s, mut e) = (1, 4);
            for len in [2u64, 2] {
                let data: Vec<u8> = (e + 1..=e + len).map(|o| byte(0, o)).collect();
                (s, e) = seqlock::publish(&*w, s, e, &data);
            }
            assert_eq!((s, e), (5, 8));
        });
        if let Some((snap, got)) = read_once(&m, 2, 3) {
            assert!(snap.start <= 2);
            let want: Vec<u8> = (2..2 + got.len() as u64).map(|o| byte(0, o)).collect();
            assert_eq!(got, want, "torn copy accepted");
        }
        writer.join().unwrap();
    });
}

/// A tailer reading new bytes as they are appended (no lap): what it accepts is what was
/// appended, never a stale byte from the previous lap.
#[test]
fn tailer_never_accepts_a_byte_of_the_previous_lap() {
    model(|| {
        let m = Arc::new(Model::new(1, 4));
        let w = Arc::clone(&m);
        let writer = loom::thread::spawn(move || {
            seqlock::publish(&*w, 1, 4, &[byte(0, 5)]);
        });
        if let Some((_, got)) = read_once(&m, 5, 1) {
            assert!(got.is_empty() || got == [byte(0, 5)], "stale byte accepted");
        }
        writer.join().unwrap();
    });
}

/// A truncation (a history change) followed by appends of other bytes at the same offsets:
/// a reader never accepts a mix of the two histories, nor new-history bytes as old ones.
#[test]
fn history_change_never_mixes_histories() {
    model(|| {
        let m = Arc::new(Model::new(1, 4));
        let w = Arc::clone(&m);
        let writer = loom::thread::spawn(move || {
            // truncate_to(2), as the writer does it.
            seqlock::begin_change(&*w);
            w.store(Word::Start, 1, Ordering::SeqCst);
            w.store(Word::End, 2, Ordering::SeqCst);
            seqlock::end_change(&*w);
            // History 1 continues at offset 3 with other bytes.
            seqlock::publish(&*w, 1, 2, &[byte(1, 3)]);
        });
        if let Some((snap, got)) = read_once(&m, 3, 2) {
            let h = u8::from(snap.change != 0);
            let want: Vec<u8> = (3..3 + got.len() as u64)
                .map(|o| if o <= 2 { byte(0, o) } else { byte(h, o) })
                .collect();
            assert_eq!(
                got, want,
                "bytes of another history accepted (snapshot {snap:?})"
            );
        }
        writer.join().unwrap();
    });
}

/// Writer of the wake-up models: appends offset 5 to history 1..=4, then wakes.
fn append_5(w: &Model) {
    seqlock::publish(w, 1, 4, &[byte(0, 5)]);
    seqlock::wake(w);
}

/// Writer of the wake-up models: appends offsets 5 and 6, waking after each.
fn append_5_then_6(w: &Model) {
    append_5(w);
    seqlock::publish(w, 1, 5, &[byte(0, 6)]);
    seqlock::wake(w);
}

/// A tailer waits for offset `next` (history 1..=4, change 0) while a writer thread runs
/// `writer` (publications, each followed by `seqlock::wake`). Loom reports a deadlock if the
/// tailer can sleep through what it waits for.
fn tailer_wakes_for(next: u64, writer: fn(&Model)) {
    model(move || {
        let m = Arc::new(Model::new(1, 4));
        let w = Arc::clone(&m);
        let writer = loom::thread::spawn(move || writer(&w));
        let forever = || Some(std::time::Duration::MAX);
        assert!(seqlock::wait_ready(&*m, next, 0, forever));
        writer.join().unwrap();
    });
}

/// The wake-up protocol: the writer wakes only if it sees a registered waiter (and takes the
/// registration); a waiter re-checks `end` after registering and sleeps on the futex while
/// still registered.
#[test]
fn tailer_never_sleeps_through_an_append() {
    tailer_wakes_for(5, append_5);
}

/// A wake-up takes the registrations it saw: a tailer woken (or whose sleep was cut short)
/// by the first append, still short of its byte, registers again and is woken by the second.
#[test]
fn tailer_woken_early_never_sleeps_through_the_next_append() {
    tailer_wakes_for(6, append_5_then_6);
}

/// A history change wakes a sleeping tailer too.
#[test]
fn tailer_never_sleeps_through_a_history_change() {
    tailer_wakes_for(5, |w| {
        seqlock::begin_change(w);
        w.store(Word::Start, 1, Ordering::SeqCst);
        w.store(Word::End, 2, Ordering::SeqCst);
        seqlock::end_change(w);
        seqlock::wake(w);
    });
}

/// Two tailers waiting for offset 5, one append: a waiter whose registration the writer took
/// before it slept must not sleep because another tailer registered again in between (found
/// in review: with a 0/1 waiter word the second tailer slept through the append).
#[test]
fn two_tailers_never_sleep_through_one_append() {
    two_tailers(5, 5, append_5);
}

/// Two tailers waiting for different offsets, two appends.
#[test]
fn two_tailers_at_different_offsets_are_each_woken() {
    two_tailers(5, 6, append_5_then_6);
}

/// A tailer that gives up (its time runs out) leaves its registration behind; the other
/// tailer is still woken.
#[test]
fn a_tailer_giving_up_never_costs_another_its_wake_up() {
    model(|| {
        let m = Arc::new(Model::new(1, 4));
        let (w, q) = (Arc::clone(&m), Arc::clone(&m));
        let writer = loom::thread::spawn(move || {
            seqlock::publish(&*w, 1, 4, &[byte(0, 5)]);
            seqlock::wake(&*w);
        });
        let quitter = loom::thread::spawn(move || {
            // Ready if the append came first; else it gives up without sleeping.
            let _ = seqlock::wait_ready(&*q, 5, 0, || None);
        });
        let forever = || Some(std::time::Duration::MAX);
        assert!(seqlock::wait_ready(&*m, 5, 0, forever));
        writer.join().unwrap();
        quitter.join().unwrap();
    });
}

/// Tailers waiting for offsets `mine` and `other` (history 1..=4) while a writer thread runs
/// `writer`; loom reports a deadlock if either can sleep through what it waits for.
fn two_tailers(mine: u64, other: u64, writer: fn(&Model)) {
    model(move || {
        let m = Arc::new(Model::new(1, 4));
        let (w, t) = (Arc::clone(&m), Arc::clone(&m));
        let writer = loom::thread::spawn(move || writer(&w));
        let forever = || Some(std::time::Duration::MAX);
        let other =
            loom::thread::spawn(move || assert!(seqlock::wait_ready(&*t, other, 0, forever)));
        assert!(seqlock::wait_ready(&*m, mine, 0, forever));
        writer.join().unwrap();
        other.join().unwrap();
    });
}

/// An append longer than the ring publishes its start before its end: a snapshot taken in
/// between must not pair the new start with the old end (a cursor created at such a
/// `first_offset` would be past the end: found by tests/stress.rs).
#[test]
fn snapshot_never_pairs_a_new_start_with_an_old_end() {
    model(|| {
        let m = Arc::new(Model::new(1, 4));
        let w = Arc::clone(&m);
        let writer = loom::thread::spawn(move || {
            let data: Vec<u8> = (5..=10).map(|o| byte(0, o)).collect();
            assert_eq!(seqlock::publish(&*w, 1, 4, &data), (7, 10));
        });
        if let Some(snap) = seqlock::try_snapshot(&*m) {
            assert!(snap.start <= snap.end + 1, "{snap:?}");
            assert!(
                matches!((snap.start, snap.end), (1, 4) | (7, 10)),
                "{snap:?}"
            );
        }
        writer.join().unwrap();
    });
}

/// The newest header slot, guarded by the commit lock: the range it claims and the bytes its
/// checksums hashed. Recovery after a power loss verifies its delta
/// (`max(prev_end + 1, start) ..= end`) against the data on disk.
#[derive(Debug)]
struct Slot {
    start: u64,
    prev_end: u64,
    end: u64,
    hashed: Vec<(u64, u8)>,
}

/// The background flusher's commit as `flusher::turn` and `CommitState::commit` (with
/// `CommitKind::Background`) run it, around the engine's own pair functions; checksum blocks
/// of one byte, so the protection is the delta's first offset.
fn flusher_commit(m: &Model, lock: &Mutex<Slot>) {
    let mut last = lock.lock().unwrap();
    let end = m.load(Word::End, Ordering::Acquire);
    if end == last.end {
        return;
    }
    let start = m.load(Word::Start, Ordering::Acquire).min(end + 1);
    let prev_end = last.end.min(end);
    let protect = prev_end + 1;
    seqlock::lower_protection(m, protect);
    let start = seqlock::start_after_protection(m, start, end).expect("loom fences always pair");
    let hashed = ((prev_end + 1).max(start)..=end)
        .map(|o| {
            let mut b = [0u8];
            m.copy_out(o, &mut b);
            (o, b[0])
        })
        .collect();
    let start = seqlock::start_after_hashing(m, start, end);
    // The slot is written and synced here.
    *last = Slot {
        start,
        prev_end,
        end,
        hashed,
    };
    seqlock::settle_protection(m, protect);
}

/// The writer's append (`Backlog::append`): retire the lapped bytes, take the commit lock
/// and protect the last commit if the overwrite reaches its protection
/// (`CommitState::protect_last_commit`: the same end again, with an empty delta), then fill.
fn writer_append(m: &Model, lock: &Mutex<Slot>, start: u64, end: u64, data: &[u8]) {
    let new_start = seqlock::retire(m, start, end, data.len() as u64);
    if new_start != start && seqlock::must_protect(m, new_start) {
        let mut last = lock.lock().unwrap();
        if last.end > last.prev_end && new_start > last.prev_end + 1 {
            seqlock::lower_protection(m, u64::MAX);
            *last = Slot {
                start: new_start.min(last.end + 1),
                prev_end: last.end,
                end: last.end,
                hashed: Vec::new(),
            };
            seqlock::settle_protection(m, u64::MAX);
        }
    }
    seqlock::fill(m, end, data);
}

/// The background flusher commits while the writer appends bytes that lap the start of the
/// flusher's delta (the last commit, with an empty delta, ended at offset 2; the ring holds
/// 1..=4 and the writer appends 5..=7, dropping 1..=3). Whatever the interleaving, the
/// newest slot afterwards verifies: every byte of its delta was hashed as the stream has it
/// and is still in the ring, so a power loss now keeps its end. Either the writer sees the
/// flusher's protection and waits for the commit lock (then commits the same end again
/// without the dropped bytes), or the flusher sees the writer's new start and neither hashes
/// nor claims them (`seqlock::must_protect` and `seqlock::start_after_protection`).
#[test]
fn flusher_commit_and_lapping_append_never_leave_an_unverifiable_slot() {
    model(|| {
        let m = Arc::new(Model::new(1, 4));
        let lock = Arc::new(Mutex::new(Slot {
            start: 1,
            prev_end: 2,
            end: 2,
            hashed: Vec::new(),
        }));
        let (fm, fl) = (Arc::clone(&m), Arc::clone(&lock));
        let flusher = loom::thread::spawn(move || flusher_commit(&fm, &fl));
        let data: Vec<u8> = (5..=7).map(|o| byte(0, o)).collect();
        writer_append(&m, &lock, 1, 4, &data);
        flusher.join().unwrap();
        let last = lock.lock().unwrap();
        for o in (last.prev_end + 1).max(last.start)..=last.end {
            let mut now = [0u8];
            m.copy_out(o, &mut now);
            let hashed = last.hashed.iter().find(|(h, _)| *h == o).map(|(_, b)| *b);
            assert_eq!(
                (hashed, now[0]),
                (Some(byte(0, o)), byte(0, o)),
                "offset {o} of the newest slot's delta does not verify: {:?}",
                &*last
            );
        }
    });
}
