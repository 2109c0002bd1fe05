//! Read-only inspection (`durable_backlog::inspect`) of live and resting files. Guards against
//! an inspector that disturbs a running writer (takes its lock, writes), reports a range or a
//! recovery path an open would not take, serves bytes a live writer overwrote, misses damage,
//! or panics on a damaged file.

use std::time::Duration;

use durable_backlog::inspect::{self, BacklogFile, Holder, SlotView};
use durable_backlog::{Backlog, Durability, Error, Options, RecoveryKind, TailError};

mod stream;
use stream::{append_stream, bytes_from};

/// Byte offset of the live page's change counter (docs/FORMAT.md).
const LIVE_CHANGE: u64 = 2 * 4096 + 48;

#[test]
fn live_file_is_inspected_and_read_without_disturbing_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let opts = Options::new()
        .capacity(64 * 1024)
        .durability(Durability::Never);
    let mut b = Backlog::create(&path, opts).unwrap();
    append_stream(&mut b, 10_000);
    b.flush().unwrap();
    append_stream(&mut b, 500); // not committed: only the live page knows
    let before = std::fs::read(&path).unwrap();

    let f = BacklogFile::open(&path).unwrap();
    let i = f.inspection();
    assert_eq!(
        i.holder,
        Holder::Process {
            pid: std::process::id()
        }
    );
    assert_eq!(i.recovery.kind, RecoveryKind::ProcessCrash);
    assert_eq!((i.first_offset, i.last_offset), (1, 10_500));
    assert_eq!(i.durable_offset, 10_000);
    assert_eq!(i.run_id, b.run_id());
    assert!(!i.clean);
    let mut buf = vec![0u8; 20_000];
    assert_eq!(f.read_at(1, &mut buf).unwrap(), 10_500);
    assert_eq!(&buf[..10_500], &bytes_from(1, 10_500)[..]);
    let v = f.verify(|_, _| {});
    assert!(v.is_intact(), "{:?}", v.damage);
    assert_eq!(v.checked_bytes, 10_000);
    assert_eq!(v.unchecked_tail, 500);
    assert!(f.psync(b.run_id().as_str(), 10_001).is_continue());

    // Nothing was written and the lock is still the writer's.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(matches!(
        Backlog::open(&path, Options::new()),
        Err(Error::AlreadyOpen { .. })
    ));
    append_stream(&mut b, 100);
    b.close().unwrap();
    let i = inspect::inspect(&path).unwrap();
    assert_eq!(i.holder, Holder::Nobody);
    assert!(i.clean);
    assert_eq!(i.recovery.kind, RecoveryKind::Clean);
    assert_eq!(i.last_offset, 10_600);
}

#[test]
fn a_live_writer_lapping_the_snapshot_is_detected_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let opts = Options::new()
        .capacity(16 * 1024)
        .durability(Durability::Never);
    let mut b = Backlog::create(&path, opts).unwrap();
    append_stream(&mut b, 20_000);
    let f = BacklogFile::open(&path).unwrap();
    let first = f.inspection().first_offset;
    append_stream(&mut b, 20_000);
    let mut buf = [0u8; 100];
    assert!(matches!(
        f.read_at(first, &mut buf),
        Err(TailError::Overwritten { .. })
    ));
}

#[test]
fn a_writer_reopening_a_resting_file_invalidates_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new()).unwrap();
    append_stream(&mut b, 1000);
    b.close().unwrap();
    let f = BacklogFile::open(&path).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(f.read_at(1, &mut buf).unwrap(), 10);
    let _w = Backlog::open(&path, Options::new()).unwrap();
    assert!(matches!(
        f.read_at(1, &mut buf),
        Err(TailError::HistoryChanged)
    ));
}

#[test]
fn power_loss_image_reports_the_verified_path_and_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new().durability(Durability::Never)).unwrap();
    append_stream(&mut b, 5000);
    b.flush().unwrap();
    append_stream(&mut b, 100);
    std::mem::forget(b); // a crash: no close
    // Another boot: the live page's boot ID no longer matches.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 4096 + 8] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let i = inspect::inspect(&path).unwrap();
    assert_eq!(i.recovery.kind, RecoveryKind::Verified);
    assert_eq!(i.last_offset, 5000);
    assert!(i.recovery.history_cut);
    assert!(!i.live.this_boot);
}

#[test]
fn a_flipped_data_byte_is_named_by_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new().capacity(64 * 1024)).unwrap();
    append_stream(&mut b, 30_000);
    b.close().unwrap();
    let i = inspect::inspect(&path).unwrap();
    let data_offset = i.file_len - 64 * 1024;
    // Stream offset 20_000 sits at ring position 20_000 in block 4 (4 KiB blocks).
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(data_offset + 20_000) as usize] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let file = BacklogFile::open(&path).unwrap();
    let mut calls = 0u64;
    let mut last = (0, 0);
    let v = file.verify(|done, total| {
        calls += 1;
        last = (done, total);
    });
    assert!(calls >= 7, "progress called per block");
    assert_eq!(last, (30_000, 30_000));
    assert_eq!(v.damage.len(), 1, "{:?}", v.damage);
    let d = v.first_damage().unwrap();
    assert_eq!(d.stream_offset, Some(16_384));
    assert!(d.what.contains("does not match its checksum"), "{}", d.what);
    assert_eq!(v.checked_bytes, 30_000 - 4096);
}

#[test]
fn a_zeroed_header_slot_of_a_used_file_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new()).unwrap();
    append_stream(&mut b, 100);
    b.close().unwrap();
    let i = inspect::inspect(&path).unwrap();
    let newest = i.newest_slot;
    let other = 1 - newest;
    let mut bytes = std::fs::read(&path).unwrap();
    let at = other * 4096;
    bytes[at..at + 4096].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let f = BacklogFile::open(&path).unwrap();
    assert_eq!(f.inspection().slots[other], SlotView::NeverWritten);
    let v = f.verify(|_, _| {});
    assert_eq!(v.damage.len(), 1);
    assert_eq!(v.damage[0].file_offset, at as u64);
}

#[test]
fn damaged_files_never_panic_the_inspector() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new().capacity(16 * 1024)).unwrap();
    append_stream(&mut b, 40_000);
    b.close().unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let bad = dir.path().join("bad");
    for round in 0..300 {
        let mut bytes = good.clone();
        match round % 4 {
            0 => {
                for _ in 0..=(rnd() % 8) {
                    let i = (rnd() % bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << (rnd() % 8);
                }
            }
            1 => bytes.truncate((rnd() % bytes.len() as u64) as usize),
            2 => {
                let page = (rnd() % (bytes.len() as u64 / 4096)) as usize * 4096;
                bytes[page..page + 4096].fill(0);
            }
            _ => {
                // A field of a header slot set to an arbitrary value.
                let i = (rnd() % 640) as usize + (round % 2) * 4096;
                bytes[i..i + 8].copy_from_slice(&rnd().to_le_bytes());
            }
        }
        std::fs::write(&bad, &bytes).unwrap();
        if let Ok(f) = BacklogFile::open(&bad) {
            let _ = f.verify(|_, _| {});
            let i = f.inspection();
            let mut buf = vec![0u8; 40_000];
            let _ = f.read_at(i.first_offset, &mut buf);
            let _ = f.psync(i.run_id.as_str(), 5);
        }
    }
}

/// Regression: a writer killed inside a history change (reset, truncate) left the live page's
/// change counter odd, and reopening added 2, so it stayed odd and every reader waited
/// forever for it to become even.
#[test]
fn reopen_after_a_crash_inside_a_history_change_leaves_readers_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new()).unwrap();
    append_stream(&mut b, 1000);
    b.close().unwrap();
    // What a crash between the two increments of a history change leaves behind.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = LIVE_CHANGE as usize;
    let odd = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) | 1;
    bytes[at..at + 8].copy_from_slice(&odd.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let b = Backlog::open(&path, Options::new()).unwrap();
    let r = b.reader();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 10];
        let _ = tx.send(r.read_at(1, &mut buf).map(|_| buf));
    });
    let got = rx
        .recv_timeout(Duration::from_mins(1))
        .expect("reader hung on an odd change counter")
        .unwrap();
    assert_eq!(&got[..], &bytes_from(1, 10)[..]);
    assert_eq!(inspect::inspect(&path).unwrap().live.change % 2, 0);
}

#[test]
fn bytes_a_live_writer_overwrites_during_verify_are_lapped_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let opts = Options::new()
        .capacity(16 * 1024)
        .durability(Durability::Never);
    let mut b = Backlog::create(&path, opts).unwrap();
    append_stream(&mut b, 16 * 1024);
    b.flush().unwrap();
    let f = BacklogFile::open(&path).unwrap();
    let mut lapped_once = false;
    let v = f.verify(|_, _| {
        if !lapped_once {
            // While verify is between its first and second block, the writer laps two.
            append_stream(&mut b, 8 * 1024);
            lapped_once = true;
        }
    });
    assert!(v.is_intact(), "{:?}", v.damage);
    // Offsets 1..=4095 share block 0 with offset 16384 (uncovered); the lap moved the start
    // to 8193, so blocks 1 and 2 (4096..=12287) were overwritten while being checked; block 3
    // and offset 16384 verify.
    assert_eq!(v.uncovered_head, 4095);
    assert_eq!(v.lapped_bytes, 8192);
    assert_eq!(v.checked_bytes, 4097);
}

/// The answer the inspector gives for a file at rest is the decision of the master that
/// reopens it — including when that reopen pushes the oldest run ID out of a full chain.
#[test]
fn psync_on_a_resting_file_matches_the_master_that_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let opts = Options::new().durability(Durability::Never);
    let mut ids = Vec::new();
    let mut b = Backlog::create(&path, opts).unwrap();
    for _ in 0..10 {
        append_stream(&mut b, 100);
        ids.push(b.run_id());
        b.close().unwrap();
        b = Backlog::open(&path, opts).unwrap();
    }
    append_stream(&mut b, 100);
    ids.push(b.run_id());
    b.close().unwrap();
    let f = BacklogFile::open(&path).unwrap();
    let answers: Vec<_> = ids
        .iter()
        .flat_map(|id| [1i64, 101, 201, 250, 701, 1000, 1001, 1100, 1101, 1102].map(|o| (id, o)))
        .map(|(id, o)| (id, o, f.psync(id.as_str(), o)))
        .collect();
    let master = Backlog::open(&path, opts).unwrap();
    let mut continued = 0;
    for (id, o, mine) in answers {
        let theirs = master.psync(id.as_str(), o);
        assert_eq!(mine.is_continue(), theirs.is_continue(), "{id} {o}");
        continued += usize::from(mine.is_continue());
    }
    assert!(continued > 0);
    // The oldest remembered ID before the reopen is no longer accepted after it.
    assert_eq!(f.inspection().past_run_ids.len(), 8);
    let (oldest, limit) = f.inspection().past_run_ids[7];
    assert!(!f.psync(oldest.as_str(), limit.cast_signed()).is_continue());
    assert!(
        !master
            .psync(oldest.as_str(), limit.cast_signed())
            .is_continue()
    );
    let (next, limit) = f.inspection().past_run_ids[6];
    assert!(f.psync(next.as_str(), limit.cast_signed()).is_continue());
}

/// A tool must tell "this is some other file" from "this backlog is damaged" by the error's
/// type: a file without the magic is `NotABacklog`, a backlog with both header slots
/// destroyed is `Corrupt`.
#[test]
fn another_file_is_not_a_backlog_but_a_wrecked_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"hello, this is not a backlog\n".repeat(1000)).unwrap();
    let err = BacklogFile::open(&other).unwrap_err();
    assert!(matches!(err, Error::NotABacklog { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a backlog file"), "{err}");

    let path = dir.path().join("b");
    drop(Backlog::create(&path, Options::new().capacity(1 << 16)).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    // Keep the magic at byte 0, wreck everything else in both header slots.
    for b in bytes.iter_mut().take(8192).skip(8) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = BacklogFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}
