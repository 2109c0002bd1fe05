//! Tailing cursors and read-only access: guards against a replica sender that skips, repeats
//! or invents bytes, that is not told it was lapped or that the history changed, that sleeps
//! through an append (lost wake-up), or a read-only view that disagrees with the writer.
#![allow(clippy::cast_possible_truncation)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use durable_backlog::{Backlog, Durability, Error, Options, RunId, TailError, WriteToError};

mod stream;
use stream::{append_stream, bytes_from, stream};

fn backlog(dir: &tempfile::TempDir, cap: u64) -> Backlog {
    Backlog::create(
        dir.path().join("b"),
        Options::new().capacity(cap).durability(Durability::Never),
    )
    .unwrap()
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn cursor_returns_every_byte_once_in_order_through_read_and_write_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    append_stream(&mut b, 1000);
    let mut c = b.reader().cursor(1);
    let mut small = [0u8; 300];
    assert_eq!(c.read(&mut small).unwrap(), 300);
    assert_eq!(&small[..], &bytes_from(1, 300)[..]);
    assert_eq!(c.position(), 301);
    assert_eq!(c.available(), 700);
    append_stream(&mut b, 200_000); // more than write_to's internal chunk
    let mut out = Vec::new();
    assert_eq!(c.write_to(&mut out, 100).unwrap(), 100);
    assert_eq!(c.write_to(&mut out, usize::MAX).unwrap(), 200_600);
    assert_eq!(out, bytes_from(301, 200_700));
    assert_eq!(c.read(&mut small).unwrap(), 0, "caught up");
    assert_eq!(c.write_to(&mut out, 10).unwrap(), 0);
    assert!(!c.is_ready());
}

#[test]
fn lapped_cursor_says_overwritten_and_stays_lapped() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 16 * 1024;
    let mut b = backlog(&dir, cap);
    append_stream(&mut b, 100);
    let mut c = b.reader().cursor(50);
    append_stream(&mut b, cap as usize);
    assert!(c.is_ready());
    assert!(c.wait(Duration::ZERO));
    let mut buf = [0u8; 10];
    for _ in 0..2 {
        match c.read(&mut buf) {
            Err(TailError::Overwritten { requested, first }) => {
                assert_eq!((requested, first), (50, b.first_offset()));
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            c.write_to(&mut Vec::new(), 10),
            Err(WriteToError::Tail(TailError::Overwritten { .. }))
        ));
    }
    assert_eq!(c.position(), 50, "a lapped cursor does not move");
    // A resync restarts from the oldest byte held.
    let mut fresh = b.reader().cursor(b.first_offset());
    let mut all = vec![0u8; cap as usize];
    assert_eq!(fresh.read(&mut all).unwrap(), cap as usize);
    assert_eq!(all, bytes_from(b.first_offset(), cap as usize));
}

#[test]
fn reset_and_truncate_are_history_changes_not_laps() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    append_stream(&mut b, 1000);
    let mut before_truncate = b.reader().cursor(900);
    b.truncate_to(950).unwrap();
    append_stream(&mut b, 100); // other bytes at the same offsets
    let mut buf = [0u8; 100];
    assert!(before_truncate.is_ready());
    assert!(matches!(
        before_truncate.read(&mut buf),
        Err(TailError::HistoryChanged)
    ));
    let mut before_reset = b.reader().cursor(1);
    b.reset(RunId::random(), 5000).unwrap();
    assert!(matches!(
        before_reset.read(&mut buf),
        Err(TailError::HistoryChanged)
    ));
    assert!(matches!(
        before_reset.write_to(&mut Vec::new(), 1),
        Err(WriteToError::Tail(TailError::HistoryChanged))
    ));
    // Cursors made after the change follow the new history.
    let mut after = b.reader().cursor(5001);
    append_stream(&mut b, 10);
    assert_eq!(after.read(&mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], &bytes_from(5001, 10)[..]);
}

#[test]
fn cursor_past_the_end_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    append_stream(&mut b, 10);
    let mut c = b.reader().cursor(12);
    assert!(matches!(
        c.read(&mut [0u8; 4]),
        Err(TailError::NotWritten {
            requested: 12,
            end: 10
        })
    ));
}

#[test]
fn wait_times_out_when_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    append_stream(&mut b, 10);
    let c = b.reader().cursor(11);
    assert!(!c.wait(Duration::from_millis(20)));
    assert!(!c.is_ready());
    let ro = Backlog::open_read_only(dir.path().join("b")).unwrap();
    assert!(!ro.cursor(11).wait(Duration::from_millis(20)));
}

#[test]
fn every_append_wakes_a_sleeping_tailer() {
    each_append_wakes_a_sleeping_tailer(|b| {
        append_stream(b, 1);
    });
}

/// `append_vectored_quiet` leaves the sleeping tailer alone; the `wake_cursors` after it wakes it. Its
/// bytes are visible at once to a reader that does not sleep.
#[test]
fn a_quiet_append_is_readable_at_once_and_wake_cursors_wakes_the_tailer() {
    each_append_wakes_a_sleeping_tailer(|b| {
        let o = b.offset() + 1;
        let part = [stream(o)];
        assert_eq!(
            b.append_vectored_quiet(&[std::io::IoSlice::new(&part)])
                .unwrap(),
            o
        );
        let mut byte = [0u8; 1];
        assert_eq!(b.reader().read_at(o, &mut byte).unwrap(), 1);
        assert_eq!(byte[0], stream(o));
        assert!(b.reader().cursor(o).is_ready());
        b.wake_cursors();
    });
}

/// Ping-pong, one byte at a time: every `append` must wake the sleeping tailer. A sleeping
/// tailer also wakes on its own when its sleep slice (50 ms) runs out, so a lost wake-up
/// does not hang `wait`: it shows as a wait that returned only when the slice ran out. Each
/// round appends only once the tailer is asleep (or about to be), and a round whose wait
/// took 40 ms or more counts as a lost wake-up; a few are tolerated for scheduling hiccups
/// on a loaded machine.
fn each_append_wakes_a_sleeping_tailer(mut append: impl FnMut(&mut Backlog)) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    let mut c = b.reader().cursor(1);
    let rounds = 500u64;
    let slice_expired = Duration::from_millis(40);
    let tolerated = 3;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tailer = std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        let mut late = Vec::new();
        for o in 1..=rounds {
            tx.send(()).unwrap();
            let t0 = std::time::Instant::now();
            assert!(c.wait(LONG), "wait timed out at offset {o}");
            let waited = t0.elapsed();
            if waited >= slice_expired {
                late.push((o, waited));
                assert!(
                    late.len() <= tolerated,
                    "lost wake-ups: these waits returned only when the sleep slice ran out: {late:?}"
                );
            }
            assert_eq!(c.read(&mut buf).unwrap(), 1);
            assert_eq!(buf[0], stream(o));
        }
    });
    for _ in 0..rounds {
        if rx.recv_timeout(LONG).is_err() {
            break; // the tailer failed: its panic is reported by join
        }
        // Past the tailer's spinning and yielding (50 µs), so that it is asleep.
        std::thread::sleep(Duration::from_micros(300));
        append(&mut b);
    }
    tailer.join().unwrap();
}

#[test]
fn a_history_change_wakes_a_sleeping_tailer() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    append_stream(&mut b, 10);
    let c = b.reader().cursor(11);
    let asleep = Arc::new(AtomicBool::new(false));
    let a2 = Arc::clone(&asleep);
    let t = std::thread::spawn(move || {
        a2.store(true, Ordering::SeqCst);
        let woke = c.wait(LONG);
        (woke, c)
    });
    while !asleep.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    b.truncate_to(5).unwrap();
    let (woke, mut c) = t.join().unwrap();
    assert!(woke);
    assert!(matches!(
        c.read(&mut [0u8; 4]),
        Err(TailError::HistoryChanged)
    ));
}

struct FailingSink;
impl io::Write for FailingSink {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("replica went away"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_to_failure_is_a_sink_error_and_does_not_advance() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = backlog(&dir, 1 << 20);
    append_stream(&mut b, 10);
    let mut c = b.reader().cursor(1);
    assert!(matches!(
        c.write_to(&mut FailingSink, 100),
        Err(WriteToError::Sink(e)) if e.to_string() == "replica went away"
    ));
    assert_eq!(c.position(), 1);
    let mut out = Vec::new();
    assert_eq!(c.write_to(&mut out, 100).unwrap(), 10);
    assert_eq!(out, bytes_from(1, 10));
}

#[test]
fn read_only_view_tails_a_live_writer_and_sees_its_restart_as_a_history_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = backlog(&dir, 64 * 1024);
    append_stream(&mut b, 5000);
    let ro = Backlog::open_read_only(&path).unwrap();
    assert_eq!((ro.first_offset(), ro.offset()), (1, 5000));
    assert_eq!(ro.capacity(), 64 * 1024);
    let mut c = ro.cursor(4001);
    let mut out = Vec::new();
    append_stream(&mut b, 3000);
    assert!(c.wait(LONG));
    assert_eq!(c.write_to(&mut out, usize::MAX).unwrap(), 4000);
    assert_eq!(out, bytes_from(4001, 4000));
    // Laps reach the view like in-process readers.
    let mut slow = ro.cursor(ro.first_offset());
    append_stream(&mut b, 60_000); // the ring now starts at 2465
    let mut buf = [0u8; 200];
    assert!(matches!(
        slow.read(&mut buf),
        Err(TailError::Overwritten { .. })
    ));
    assert_eq!(
        c.read(&mut buf).unwrap(),
        200,
        "an up-to-date cursor keeps going"
    );
    // A reopen starts a new generation: a history change for the view's cursors, which
    // wakes a waiting one; cursors made afterwards follow the reopened backlog.
    b.close().unwrap();
    let b = Backlog::open(&path, Options::new().durability(Durability::Never)).unwrap();
    assert!(c.wait(LONG));
    assert!(matches!(c.read(&mut buf), Err(TailError::HistoryChanged)));
    let mut b = b;
    let mut after = ro.cursor(ro.offset() + 1);
    append_stream(&mut b, 100);
    assert!(after.wait(LONG));
    assert_eq!(after.read(&mut buf).unwrap(), 100);
    assert_eq!(&buf[..100], &bytes_from(68_001, 100)[..]);
    b.reset(RunId::random(), 1 << 40).unwrap();
    assert!(after.wait(LONG));
    assert!(matches!(
        after.read(&mut buf),
        Err(TailError::HistoryChanged)
    ));
    assert_eq!(ro.offset(), 1 << 40);
}

#[test]
fn read_only_view_of_a_closed_backlog_reads_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = backlog(&dir, 64 * 1024);
    append_stream(&mut b, 100_000);
    let (first, last) = (b.first_offset(), b.offset());
    b.close().unwrap();
    let ro = Backlog::open_read_only(&path).unwrap();
    assert_eq!((ro.first_offset(), ro.offset()), (first, last));
    let mut all = vec![0u8; 64 * 1024];
    assert_eq!(ro.read_at(first, &mut all).unwrap(), all.len());
    assert_eq!(all, bytes_from(first, all.len()));
    // The view takes no lock: a writer can open the file while it exists.
    let b = Backlog::open(&path, Options::new()).unwrap();
    assert_eq!(b.offset(), last);
}

#[test]
fn read_only_view_rejects_a_file_that_needs_recovery() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = backlog(&dir, 64 * 1024);
    append_stream(&mut b, 1000);
    b.flush().unwrap();
    append_stream(&mut b, 1000);
    // Leave the file as a machine crash would: not clean, live page from another boot.
    std::mem::forget(b);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(2 * 4096 + 8)).unwrap(); // the live page's boot ID
    f.write_all(&[0xAB; 16]).unwrap();
    drop(f);
    // The forgotten writer's lock is still held by this process; the view needs none.
    assert!(matches!(
        Backlog::open_read_only(&path),
        Err(Error::NeedsRecovery { .. })
    ));
}

#[test]
fn read_only_open_of_garbage_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk");
    std::fs::write(&path, vec![0x5Au8; 3 * 4096 + 100]).unwrap();
    assert!(matches!(
        Backlog::open_read_only(&path),
        Err(Error::Corrupt { .. })
    ));
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        Backlog::open_read_only(&path),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        Backlog::open_read_only(dir.path().join("missing")),
        Err(Error::Io { .. })
    ));
}
