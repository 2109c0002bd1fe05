//! Resizing an open backlog (`Backlog::resize`, Redis's `CONFIG SET repl-backlog-size`).
//!
//! Guards against: a resize that loses or changes a held byte, moves the offsets or the run-ID
//! history, leaves the old file's background commit running, lets a second writer in, or
//! leaves readers of the old file reading a ring that no longer grows (they must be told to
//! re-attach, at the same offset, and then stream on without a gap).
#![allow(clippy::cast_possible_truncation)]

mod crashmodel;

use std::time::{Duration, Instant};

use crashmodel::{check_bytes, stream, tempdir};
use durable_backlog::{
    Backlog, Durability, Error, Options, ReadError, RecoveryKind, TailError, WriteToError,
};

const TAG: u64 = 12;

/// Held by the tests whose backlogs run a background commit (`EverySec`): one of them counts
/// this process's commit threads.
static EVERYSEC: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn everysec_lock() -> std::sync::MutexGuard<'static, ()> {
    EVERYSEC
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends `len` bytes of the test stream.
fn append(b: &mut Backlog, len: u64) -> u64 {
    let first = b.offset() + 1;
    let bytes: Vec<u8> = (first..first + len).map(|o| stream(o, TAG)).collect();
    b.append(&bytes).unwrap()
}

fn create(dir: &tempfile::TempDir, cap: u64, d: Durability) -> Backlog {
    Backlog::create(
        dir.path().join("backlog"),
        Options::new().capacity(cap).durability(d),
    )
    .unwrap()
}

#[test]
fn growing_and_shrinking_keep_the_newest_bytes_offsets_and_run_id_history() {
    let dir = tempdir();
    let mut b = create(&dir, 64 * 1024, Durability::Always);
    append(&mut b, 100_000);
    b.shift_run_id().unwrap();
    append(&mut b, 5_000);
    let (id, past) = (b.run_id(), b.past_run_ids());
    assert_eq!(b.first_offset(), 105_000 - 64 * 1024 + 1);

    // Larger: every byte held stays, and the ring fills up to the new capacity.
    b.resize(256 * 1024).unwrap();
    assert_eq!(b.capacity(), 256 * 1024);
    assert_eq!(
        (b.first_offset(), b.offset()),
        (105_000 - 64 * 1024 + 1, 105_000)
    );
    assert_eq!((b.run_id(), b.past_run_ids()), (id, past.clone()));
    check_bytes(&b, |o| stream(o, TAG)).unwrap();
    append(&mut b, 300_000);
    assert_eq!(b.first_offset(), 405_000 - 256 * 1024 + 1);
    check_bytes(&b, |o| stream(o, TAG)).unwrap();

    // Smaller: the newest bytes stay.
    b.resize(16 * 1024).unwrap();
    assert_eq!(b.capacity(), 16 * 1024);
    assert_eq!(
        (b.first_offset(), b.offset()),
        (405_000 - 16 * 1024 + 1, 405_000)
    );
    assert_eq!((b.run_id(), b.past_run_ids()), (id, past));
    check_bytes(&b, |o| stream(o, TAG)).unwrap();
    assert!(b.psync(id.as_str(), 405_000 - 16 * 1024 + 1).is_continue());
    assert!(!b.psync(id.as_str(), 405_000 - 16 * 1024).is_continue());
    append(&mut b, 50_000);
    check_bytes(&b, |o| stream(o, TAG)).unwrap();
    assert_eq!(b.durable_offset(), 455_000, "the durability policy is kept");

    // The same capacity changes nothing; out-of-range ones are refused.
    b.resize(16 * 1024).unwrap();
    assert!(matches!(b.resize(1000), Err(Error::InvalidArgument(_))));
    assert_eq!(b.capacity(), 16 * 1024);
    // Only the backlog file is left in the directory (no temporary file).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["backlog"]);
}

#[test]
fn old_readers_and_cursors_report_moved_and_re_attach_at_the_same_offset() {
    let dir = tempdir();
    let mut b = create(&dir, 64 * 1024, Durability::Never);
    append(&mut b, 30_000);
    let old = b.reader();
    let mut behind = old.cursor(10_001);
    let mut caught_up = old.cursor(30_001);
    // A tailer asleep on the old file is woken by the resize (well before its time limit).
    let sleeper = {
        let mut c = old.cursor(30_001);
        std::thread::spawn(move || {
            let t0 = Instant::now();
            assert!(c.wait(Duration::from_secs(10)), "not woken");
            assert!(t0.elapsed() < Duration::from_secs(5), "woken late");
            let mut buf = [0u8; 16];
            c.read(&mut buf)
        })
    };
    std::thread::sleep(Duration::from_millis(100));

    b.resize(128 * 1024).unwrap();
    assert_eq!(sleeper.join().unwrap(), Err(TailError::Moved));
    assert!(old.is_moved() && !b.reader().is_moved());
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(old.read_at(10_001, &mut buf), Err(ReadError::Moved));
    assert_eq!(behind.read(&mut buf), Err(TailError::Moved));
    assert!(caught_up.is_ready(), "a moved cursor has news");
    assert!(matches!(
        caught_up.write_to(&mut Vec::new(), 100),
        Err(WriteToError::Tail(TailError::Moved))
    ));
    // Permanent, and so is it for a cursor made on the old reader after the resize.
    assert_eq!(behind.read(&mut buf), Err(TailError::Moved));
    let mut late = old.cursor(20_001);
    assert!(late.wait(Duration::from_secs(5)));
    assert_eq!(late.read(&mut buf), Err(TailError::Moved));

    // Re-attached at the same positions: the stream goes on without a gap or a repeat.
    append(&mut b, 40_000);
    for (pos, want) in [
        (behind.position(), 60_000u64),
        (caught_up.position(), 40_000),
    ] {
        let mut c = b.reader().cursor(pos);
        let mut got = Vec::new();
        while c.write_to(&mut got, usize::MAX).unwrap() > 0 {}
        assert_eq!(got.len() as u64, want);
        assert!(got.iter().zip(pos..).all(|(&x, o)| x == stream(o, TAG)));
    }
}

#[test]
fn a_cursor_behind_a_shrunk_backlog_is_lapped_after_re_attaching() {
    let dir = tempdir();
    let mut b = create(&dir, 64 * 1024, Durability::Never);
    append(&mut b, 60_000);
    let mut c = b.reader().cursor(1_001);
    b.resize(16 * 1024).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(c.read(&mut buf), Err(TailError::Moved));
    let mut c = b.reader().cursor(c.position());
    assert_eq!(
        c.read(&mut buf),
        Err(TailError::Overwritten {
            requested: 1_001,
            first: 60_000 - 16 * 1024 + 1
        })
    );
}

#[test]
fn reopen_after_resize_finds_the_new_capacity_and_every_byte() {
    let _serial = everysec_lock();
    let dir = tempdir();
    let path = dir.path().join("backlog");
    let mut b = create(&dir, 32 * 1024, Durability::EverySec);
    append(&mut b, 20_000);
    b.resize(1024 * 1024).unwrap();
    append(&mut b, 500_000);
    let id = b.run_id();
    b.close().unwrap();
    let b = Backlog::open(&path, Options::new()).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::Clean);
    assert_eq!(b.capacity(), 1024 * 1024);
    assert_eq!((b.first_offset(), b.offset()), (1, 520_000));
    check_bytes(&b, |o| stream(o, TAG)).unwrap();
    assert!(b.psync(id.as_str(), 1).is_continue());
}

#[test]
fn a_process_crash_after_resize_loses_nothing() {
    let _serial = everysec_lock();
    for d in [Durability::Always, Durability::EverySec, Durability::Never] {
        let dir = tempdir();
        let path = dir.path().join("backlog");
        let mut b = create(&dir, 64 * 1024, d);
        append(&mut b, 50_000);
        b.resize(24 * 1024).unwrap();
        append(&mut b, 7_777);
        // The page cache is what a process crash leaves: copy the file while it is open.
        let image = dir.path().join("image");
        std::fs::copy(&path, &image).unwrap();
        let id = b.run_id();
        std::mem::forget(b); // no close, no final commit
        let b = Backlog::open(&image, Options::new()).unwrap();
        assert_eq!(b.recovery().kind, RecoveryKind::ProcessCrash, "{d:?}");
        assert_eq!(b.capacity(), 24 * 1024, "{d:?}");
        assert_eq!(
            (b.first_offset(), b.offset()),
            (57_777 - 24 * 1024 + 1, 57_777),
            "{d:?}"
        );
        check_bytes(&b, |o| stream(o, TAG)).unwrap();
        assert!(b.psync(id.as_str(), 57_778).is_continue(), "{d:?}");
    }
}

/// Threads of this process named like the library's background commit.
fn flush_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"))
                .is_ok_and(|c| c.trim() == "backlog-flush")
        })
        .count()
}

/// Waits up to a second for [`flush_threads`] to be `want` (a joined thread may linger in
/// `/proc` for a moment); returns the last count.
fn settle_flush_threads(want: usize) -> usize {
    let t0 = Instant::now();
    loop {
        let n = flush_threads();
        if n == want || t0.elapsed() > Duration::from_secs(1) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_old_files_background_commit_stops_and_the_new_ones_runs() {
    let _serial = everysec_lock();
    // Backlogs other tests forgot (a simulated crash) keep theirs.
    let others = flush_threads();
    let dir = tempdir();
    let mut b = create(&dir, 64 * 1024, Durability::EverySec);
    append(&mut b, 10_000);
    assert_eq!(settle_flush_threads(others + 1), others + 1);
    for cap in [128 * 1024, 32 * 1024, 64 * 1024] {
        b.resize(cap).unwrap();
        assert_eq!(
            settle_flush_threads(others + 1),
            others + 1,
            "one background commit after resizing to {cap}"
        );
    }
    let end = append(&mut b, 1_000);
    let t0 = Instant::now();
    while b.durable_offset() < end {
        assert!(t0.elapsed() < Duration::from_secs(5), "nothing commits");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.set_durability(Durability::Never).unwrap();
    assert_eq!(settle_flush_threads(others), others);
}

#[test]
fn no_second_writer_gets_in_while_resizes_replace_the_file() {
    let dir = tempdir();
    let path = dir.path().join("backlog");
    let mut b = create(&dir, 16 * 1024, Durability::Never);
    append(&mut b, 10_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (path, stop) = (path.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut refused = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match Backlog::open(&path, Options::new()) {
                    Err(Error::AlreadyOpen { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                    Ok(_) => return Err(refused),
                }
            }
            Ok(refused)
        })
    };
    for i in 0..300 {
        b.resize(if i % 2 == 0 { 20 * 1024 } else { 16 * 1024 })
            .unwrap();
        append(&mut b, 100);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = opener
        .join()
        .unwrap()
        .expect("a second writer opened the backlog");
    assert!(refused > 0);
    check_bytes(&b, |o| stream(o, TAG)).unwrap();
}

#[test]
fn a_read_only_view_in_another_process_is_told_and_reopens_at_the_same_offset() {
    let dir = tempdir();
    let path = dir.path().join("backlog");
    let mut b = create(&dir, 64 * 1024, Durability::Never);
    append(&mut b, 20_000);
    // A view as another process opens it: a read-only mapping, no lock, polling.
    let view = Backlog::open_read_only(&path).unwrap();
    let mut tail = view.cursor(15_001);
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(tail.read(&mut buf), Ok(5_000));
    b.resize(32 * 1024).unwrap();
    assert!(tail.wait(Duration::from_secs(5)));
    assert_eq!(tail.read(&mut buf), Err(TailError::Moved));
    assert_eq!(view.read_at(15_001, &mut buf), Err(ReadError::Moved));
    append(&mut b, 1_000);
    let view = Backlog::open_read_only(&path).unwrap();
    assert!(!view.is_moved());
    let mut tail = view.cursor(tail.position());
    assert_eq!(tail.read(&mut buf), Ok(1_000));
    assert!(
        buf[..1_000]
            .iter()
            .zip(20_001..)
            .all(|(&x, o)| x == stream(o, TAG))
    );
}
