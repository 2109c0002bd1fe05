//! Failing storage: the device fails from the Nth storage operation on (writes are lost,
//! syncs return errors), for every N of a scenario, on simulated storage.
//!
//! Guards against: reporting success for a sync that failed (a durability lie), retrying a
//! failed sync and carrying on as if nothing happened (fsyncgate), writes accepted after a
//! failure, and a file left unrecoverable by a failure.
#![allow(clippy::many_single_char_names)]

mod crashmodel;

use crashmodel::{Model, check_recovered};
use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Error, Options, RunId};

const CAP: u64 = 16 * 1024;

#[derive(Clone, Copy, Debug)]
enum Step {
    Append(usize),
    Flush,
    Shift,
    Truncate(u64),
    Reset(u64),
}
use Step::{Append, Flush, Reset, Shift, Truncate};

const STEPS: &[Step] = &[
    Append(3000),
    Append(9000),
    Flush,
    Append(7000),
    Shift,
    Append(100),
    Flush,
    Truncate(50),
    Append(5000),
    Reset(77_777),
    Append(2000),
    Flush,
];

/// Runs `STEPS` on a disk that fails from op `n`; checks the poisoning rules on the way and
/// returns the disk, the model and what was acknowledged durable.
struct Outcome {
    disk: SimDisk,
    model: Model,
    durable: (usize, u64),
    failed: bool,
    landed: Option<usize>,
    /// A reset whose sync failed: its ID and offset.
    failed_reset: Option<(RunId, u64)>,
}

fn run_failing(d: Durability, n: u64) -> Outcome {
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, Options::new().capacity(CAP).durability(d)).unwrap();
    let mut m = Model::new(&b, 11);
    disk.fail_from(n);
    let mut failed: Option<String> = None;
    // A history change whose sync failed may still be in the page cache under a run ID it
    // never returned: the history it would have continued.
    let mut landed = None;
    let mut reset_id = None;
    let mut failed_reset = None;
    for (i, &s) in STEPS.iter().enumerate() {
        let r: Result<(), Error> = match s {
            Append(len) => {
                let bytes = m.next_bytes(len);
                let r = b.append(&bytes).map(|end| {
                    if d == Durability::Always {
                        m.flushed(end);
                    }
                });
                // An append whose commit failed has still appended (readers see the bytes);
                // only their durability failed.
                m.hists[m.cur].end = b.offset();
                r
            }
            Flush => b.flush().map(|e| m.flushed(e)),
            Shift => b.shift_run_id().map(|()| m.shifted(&b)),
            Truncate(k) => b
                .truncate_to(b.offset().saturating_sub(k))
                .map(|()| m.truncated(&b)),
            Reset(o) => {
                let id = RunId::random();
                reset_id = Some((id, o));
                b.reset(id, o).map(|()| m.reset(&b))
            }
        };
        match (&failed, r) {
            (None, Ok(())) | (Some(_), Err(Error::Poisoned { .. })) => {}
            (None, Err(Error::Io { .. })) => {
                assert!(
                    disk.failed(),
                    "fail at {n}: I/O error before the failure point"
                );
                failed = Some(format!("step {i} {s:?}"));
                if matches!(s, Shift | Truncate(_)) {
                    landed = Some(m.cur);
                }
                if matches!(s, Reset(_)) {
                    failed_reset = reset_id;
                }
            }
            (None, Err(e)) => panic!("fail at {n}: step {i} {s:?}: unexpected first error {e}"),
            (Some(first), Ok(())) => {
                panic!("fail at {n}: step {i} {s:?} succeeded after {first} failed")
            }
            (Some(first), Err(e)) => {
                panic!("fail at {n}: step {i} {s:?} after {first}: {e} instead of Poisoned")
            }
        }
    }
    if failed.is_some() {
        assert!(
            matches!(b.flush(), Err(Error::Poisoned { .. })),
            "fail at {n}: flush after a failure must report the poisoning"
        );
        // Readers keep working on what is in memory.
        let mut buf = vec![0u8; b.histlen() as usize];
        b.reader().read_at(b.first_offset(), &mut buf).unwrap();
    }
    let durable = m.durable;
    drop(b); // a poisoned handle must not write a clean mark
    Outcome {
        disk,
        model: m,
        durable,
        failed: failed.is_some(),
        landed,
        failed_reset,
    }
}

fn check_images(f: &Outcome, ctx: &str) {
    let (disk, durable) = (&f.disk, f.durable);
    let opts = Options::new().durability(Durability::Never);
    // What the device holds (the machine rebooted) and what the page cache holds (only the
    // process died): both must recover, serve only right bytes and keep what was acked.
    for (what, img) in [
        ("durable image", disk.durable_image()),
        ("process crash", disk.process_crash()),
        ("power loss", disk.power_loss(7, 0.3, 0.0)),
    ] {
        let b = Backlog::open_sim(&img, opts)
            .unwrap_or_else(|e| panic!("{ctx}: {what}: reopen failed: {e}"));
        let mut m = f.model.clone();
        let prev = b.past_run_ids()[0].0;
        if let Some((id, o)) = f.failed_reset
            && id == prev
        {
            // The failed reset landed: an empty backlog at its offset.
            assert_eq!((b.offset(), b.histlen()), (o, 0), "{ctx}: {what}");
            continue;
        }
        let failed_change_landed = m.hist_of(prev).is_none() && f.landed.is_some();
        if let (true, Some(h)) = (failed_change_landed, f.landed) {
            m.ids.push((prev, h));
        }
        let h = check_recovered(&b, &m).unwrap_or_else(|e| panic!("{ctx}: {what}: {e}"));
        let (dh, doff) = durable;
        assert!(
            failed_change_landed || h > dh || (h == dh && b.offset() >= doff),
            "{ctx}: {what}: a sync reported successful did not make its data durable: \
             history {h} end {} < acknowledged history {dh} end {doff}",
            b.offset()
        );
    }
}

fn every_failure_point(d: Durability) -> (u64, u64) {
    let clean = run_failing(d, u64::MAX);
    assert!(!clean.failed);
    let total = clean.disk.ops();
    let mut poisoned = 0;
    for n in 2..=total {
        let f = run_failing(d, n);
        poisoned += u64::from(f.failed);
        check_images(&f, &format!("{d:?}, fail from op {n}"));
        // Reopening the failed device itself fails clearly rather than pretending.
        if f.failed {
            match Backlog::open_sim(&f.disk, Options::new()) {
                Err(Error::Io { .. }) => {}
                Ok(_) => panic!("{d:?}, fail from op {n}: reopen on a dead device succeeded"),
                Err(e) => panic!("{d:?}, fail from op {n}: reopen on a dead device: {e}"),
            }
        }
    }
    (total - 1, poisoned)
}

#[test]
fn failure_at_every_op_under_always_poisons_and_keeps_what_was_acknowledged() {
    let (points, poisoned) = every_failure_point(Durability::Always);
    assert!(
        poisoned > points / 2,
        "{poisoned} of {points} failure points poisoned"
    );
}

#[test]
fn failure_at_every_op_under_never_poisons_and_keeps_what_was_flushed() {
    let (points, poisoned) = every_failure_point(Durability::Never);
    assert!(
        poisoned > points / 2,
        "{poisoned} of {points} failure points poisoned"
    );
}

#[test]
fn failed_background_flush_poisons_the_writer() {
    let disk = SimDisk::new();
    let opts = Options::new()
        .capacity(CAP)
        .durability(Durability::EverySec);
    let mut b = Backlog::create_sim(&disk, opts).unwrap();
    b.append(&[1u8; 100]).unwrap();
    b.flush().unwrap();
    disk.fail_from(disk.ops());
    b.append(&[2u8; 10]).unwrap();
    // A second passes: the flusher's commit fails, and nobody is waiting for it.
    disk.tick_flusher();
    let result = b.append(&[2u8; 10]);
    assert!(
        matches!(result, Err(Error::Poisoned { .. })),
        "appends after a failed background sync: {result:?}"
    );
    // Nobody received the flusher's error: the poisoned error carries it.
    let e = result.unwrap_err();
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("Poisoned's source() is the failed sync's io::Error");
    assert_eq!(
        io.raw_os_error(),
        Some(5),
        "EIO, as the simulated sync failed"
    );
    assert!(matches!(b.flush(), Err(Error::Poisoned { .. })));
    assert!(
        b.durable_offset() <= 100,
        "durable offset advanced by a failed sync"
    );
    drop(b);
    let b = Backlog::open_sim(&disk.durable_image(), Options::new()).unwrap();
    assert_eq!(b.offset(), 100);
}
