//! Power loss and OS crashes, on simulated storage: a crash at every storage operation of
//! several scenarios, and every disk image such a crash may leave (each page dirtied since the
//! last sync holding any version it had since; sampled torn and garbage sectors beyond).
//!
//! Guards against: losing bytes acknowledged durable, serving a byte the stream never had at
//! that offset, continuing a replica past the recovered end (splicing histories), and a
//! recovery that is itself unsafe to crash in. Every durability runs: `EverySec`'s
//! background flusher commits when a step lets a second pass (`SimDisk::tick_flusher`),
//! never on its own, so the crash points are the same in every run.
//!
//! `DB_CRASH_IMAGES` (default 4) sets how many seeded images are sampled per crash point
//! where enumerating them all would exceed `DB_CRASH_ENUM` (default 32) images, and how many
//! power-loss images per crash point get their own recovery crashed (default: 1).
#![allow(clippy::cast_possible_wrap, clippy::many_single_char_names)]

mod crashmodel;

use crashmodel::{Model, check_recovered, env_u64};
use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Options, RecoveryKind, RunId};

const CAP: u64 = 16 * 1024;

#[derive(Clone, Copy, Debug)]
enum Step {
    Append(usize),
    Flush,
    /// A second passes: the `EverySec` flusher runs one turn ([`SimDisk::tick_flusher`];
    /// on simulated storage it never runs on its own, so every run is the same).
    Tick,
    Shift,
    /// `truncate_to(offset - n)`.
    Truncate(u64),
    /// `reset(new id, offset)`.
    Reset(u64),
    /// Clean close, then open with this durability.
    Reopen(Durability),
}

/// After a call returned: how many storage ops had run, the model's current history and end,
/// and what was acknowledged durable.
#[derive(Clone, Copy, Debug)]
struct Ack {
    ops: u64,
    hist: usize,
    end: u64,
    durable: (usize, u64),
}

struct Run {
    model: Model,
    acks: Vec<Ack>,
    /// Ops done when `create_sim` returned: crashes before it leave no backlog to open.
    created_at: u64,
    total_ops: u64,
    frozen: Option<SimDisk>,
}

fn run(d: Durability, steps: &[Step], crash_at: Option<u64>) -> Run {
    let disk = SimDisk::new();
    if let Some(n) = crash_at {
        disk.crash_at(n);
    }
    let opts = |d| Options::new().capacity(CAP).durability(d);
    let mut b = Backlog::create_sim(&disk, opts(d)).unwrap();
    let mut m = Model::new(&b, 7);
    m.durable = (0, 0);
    let created_at = disk.ops();
    let mut acks = Vec::new();
    let ack = |m: &Model, disk: &SimDisk| Ack {
        ops: disk.ops(),
        hist: m.cur,
        end: m.end(),
        durable: m.durable,
    };
    acks.push(ack(&m, &disk));
    for &s in steps {
        match s {
            Step::Append(n) => m.append(&mut b, n),
            Step::Flush => {
                let e = b.flush().unwrap();
                m.flushed(e);
            }
            Step::Tick => {
                disk.tick_flusher();
                // What the flusher committed is acknowledged durable (`durable_offset`).
                let e = b.durable_offset();
                if b.durability() == Durability::EverySec {
                    assert_eq!(e, b.offset(), "the flusher's turn committed everything");
                }
                m.flushed(e);
            }
            Step::Shift => {
                b.shift_run_id().unwrap();
                m.shifted(&b);
            }
            Step::Truncate(n) => {
                b.truncate_to(b.offset().saturating_sub(n)).unwrap();
                m.truncated(&b);
            }
            Step::Reset(o) => {
                b.reset(RunId::random(), o).unwrap();
                m.reset(&b);
            }
            Step::Reopen(nd) => {
                drop(b);
                b = Backlog::open_sim(&disk, opts(nd)).unwrap();
                m.reopened(&b).unwrap();
            }
        }
        acks.push(ack(&m, &disk));
    }
    drop(b);
    Run {
        model: m,
        acks,
        created_at,
        total_ops: disk.ops(),
        frozen: disk.frozen(),
    }
}

/// Opens a copy of `img` (which stays as it is, for further checks).
fn open(img: &SimDisk) -> Result<Backlog, String> {
    Backlog::open_sim(
        &img.snapshot(),
        Options::new().durability(Durability::Never),
    )
    .map_err(|e| format!("open failed: {e}"))
}

/// The last acknowledgement completed before op `n` was issued.
fn ack_before(acks: &[Ack], n: u64) -> Ack {
    *acks.iter().rev().find(|a| a.ops <= n).unwrap_or(&acks[0])
}

/// What a power-loss image may have destroyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    /// What the media assumptions allow: each page at any version since the last sync, torn
    /// at sectors. Nothing acknowledged durable may be lost.
    Allowed,
    /// Also a sector of garbage, which may destroy acknowledged bytes sharing it (never turn
    /// them into wrong ones).
    GarbageSector,
}

/// A power-loss image: nothing acknowledged durable may be lost (unless a garbage sector hit
/// it), nothing wrong served, no PSYNC beyond the end.
fn check_power_loss(img: &SimDisk, m: &Model, a: Ack, damage: Damage) -> Result<Backlog, String> {
    let b = open(img)?;
    let h = check_recovered(&b, m)?;
    let (dh, doff) = a.durable;
    if damage == Damage::Allowed && h <= dh && !(h == dh && b.offset() >= doff) {
        return Err(format!(
            "lost durable bytes: recovered history {h} end {} ({:?}), acknowledged history {dh} end {doff}",
            b.offset(),
            b.recovery()
        ));
    }
    Ok(b)
}

/// A process-crash image: everything a returned call did is there.
fn check_process_crash(img: &SimDisk, m: &Model, a: Ack) -> Result<Backlog, String> {
    let b = open(img)?;
    let h = check_recovered(&b, m)?;
    if h < a.hist || (h == a.hist && b.offset() < a.end) {
        return Err(format!(
            "process crash lost appended bytes: history {h} end {} < history {} end {} ({:?})",
            b.offset(),
            a.hist,
            a.end,
            b.recovery()
        ));
    }
    Ok(b)
}

/// Whether a second recovery found what the first did: the same end, and the same bytes except
/// that a verified recovery cannot keep the oldest bytes when they share their checksum block
/// with the newest ones (the block's entry covers only its newest run): at most one block less.
fn same_range(second: (u64, u64), first: (u64, u64)) -> bool {
    let block = 4096; // the block size of a 16 KiB ring
    second.1 == first.1 && second.0 >= first.0 && second.0 - first.0 < block
}

/// Crashes the recovery of `img` at each of its storage operations, then recovers again:
/// the second recovery must be as safe as the first and, where the first was exact or
/// verified, give the same range.
fn check_recovery_crashes(img: &SimDisk, m: &Model, a: Ack, seed: u64) -> Result<u64, String> {
    let probe = img.snapshot();
    let first = Backlog::open_sim(&probe, Options::new().durability(Durability::Never))
        .map_err(|e| format!("open failed: {e}"))?;
    let ops = probe.ops();
    let (r1_first, r1_end, r1_kind) = (first.first_offset(), first.offset(), first.recovery().kind);
    let h1 = m.recovered_history(&first)?;
    drop(first);
    let mut checked = 0;
    for j in 0..ops {
        let c = img.snapshot();
        c.crash_at(j);
        let again = Backlog::open_sim(&c, Options::new().durability(Durability::Never))
            .map_err(|e| format!("open failed: {e}"))?;
        // The crashed recovery's commit may have landed, naming the history by its new ID.
        let mut m2 = m.clone();
        m2.ids.push((again.run_id(), h1));
        drop(again);
        let f = c.frozen().ok_or("recovery crash point not reached")?;
        // What the first recovery found is all there is: a process crash during its
        // commit must find exactly that again.
        let pc = check_power_loss(&f.process_crash(), &m2, a, Damage::Allowed)
            .map_err(|e| format!("process crash at recovery op {j}: {e}"))?;
        if !same_range((pc.first_offset(), pc.offset()), (r1_first, r1_end)) {
            return Err(format!(
                "process crash at recovery op {j}: recovered {}..={} but the first recovery {r1_first}..={r1_end}",
                pc.first_offset(),
                pc.offset()
            ));
        }
        for k in 0..2 {
            let pl = f.power_loss(seed * 7 + k, 0.3, 0.0);
            let b = check_power_loss(&pl, &m2, a, Damage::Allowed)
                .map_err(|e| format!("power loss at recovery op {j}: {e}"))?;
            if r1_kind != RecoveryKind::ProcessCrash
                && !same_range((b.first_offset(), b.offset()), (r1_first, r1_end))
            {
                return Err(format!(
                    "power loss at recovery op {j}: recovered {}..={} but the first ({r1_kind:?}) recovery {r1_first}..={r1_end}",
                    b.first_offset(),
                    b.offset()
                ));
            }
            checked += 1;
        }
        checked += 1;
    }
    Ok(checked)
}

/// Crash at every storage operation of `steps` under `d`; returns how many images were checked.
fn crash_everywhere(name: &str, d: Durability, steps: &[Step]) -> u64 {
    let samples = env_u64("DB_CRASH_IMAGES", 4);
    let limit = env_u64("DB_CRASH_ENUM", 32) as usize;
    let full = run(d, steps, None);
    let mut images = 0u64;
    for n in full.created_at..full.total_ops {
        let r = run(d, steps, Some(n));
        let f = r.frozen.expect("crash point reached");
        let a = ack_before(&r.acks, n);
        let m = &r.model;
        let ctx = |e: String| format!("{name}: crash at op {n}/{}: {e}", full.total_ops);
        check_process_crash(&f.process_crash(), m, a)
            .map_err(ctx)
            .unwrap();
        images += 1;
        let mut pl: Vec<(SimDisk, Damage)> = match f.all_images(limit) {
            Some(all) => all.into_iter().map(|i| (i, Damage::Allowed)).collect(),
            None => (0..samples)
                .map(|s| (f.power_loss(n * 1000 + s, 0.0, 0.0), Damage::Allowed))
                .collect(),
        };
        for s in 0..samples {
            pl.push((f.power_loss(n * 1000 + 500 + s, 0.5, 0.0), Damage::Allowed));
        }
        for s in 0..samples.div_ceil(2) {
            pl.push((
                f.power_loss(n * 1000 + 900 + s, 0.3, 0.5),
                Damage::GarbageSector,
            ));
        }
        for (img, damage) in &pl {
            check_power_loss(img, m, a, *damage).map_err(ctx).unwrap();
        }
        images += pl.len() as u64;
        // Crash the recovery of the process-crash image and of some power-loss images.
        images += check_recovery_crashes(&f.process_crash(), m, a, n)
            .map_err(ctx)
            .unwrap();
        let deep = usize::try_from(samples.div_ceil(4)).unwrap_or(1);
        for (img, _) in pl
            .iter()
            .filter(|(_, damage)| *damage == Damage::Allowed)
            .take(deep)
        {
            images += check_recovery_crashes(img, m, a, n).map_err(ctx).unwrap();
        }
    }
    eprintln!(
        "{name}: {} crash points, {images} images recovered and checked",
        full.total_ops - full.created_at
    );
    images
}

use Step::{Append, Flush, Reopen, Reset, Shift, Tick, Truncate};

#[test]
fn every_crash_point_of_always_appends_keeps_every_acknowledged_byte() {
    let steps = [
        Append(100),
        Append(5000),
        Append(3),
        Append(9000),
        Append(CAP as usize + 7),
        Append(4000),
        Append(1),
        Append(4096),
    ];
    crash_everywhere("always-appends", Durability::Always, &steps);
}

#[test]
fn every_crash_point_of_never_with_flushes_keeps_every_flushed_byte() {
    let steps = [
        Append(3000),
        Append(2000),
        Flush,
        Append(7000),
        Append(6000),
        Append(100),
        Flush,
        Append(20_000),
        Flush,
        Append(10),
        Flush,
    ];
    crash_everywhere("never-flushes", Durability::Never, &steps);
}

/// `EverySec`: what the background flusher committed survives, its commits interleaved with
/// laps of the ring over its last commit, turns with nothing to commit, explicit flushes,
/// history changes and a reopen.
#[test]
fn every_crash_point_of_everysec_keeps_what_the_flusher_committed() {
    let steps = [
        Append(3000),
        Tick,
        Append(2000),
        Append(7000),
        Tick,
        Append(9000),
        Append(100),
        Tick,
        Tick,
        Append(20_000),
        Tick,
        Shift,
        Append(700),
        Truncate(300),
        Append(10),
        Tick,
        Flush,
        Reopen(Durability::EverySec),
        Append(500),
        Tick,
        Append(4000),
    ];
    crash_everywhere("everysec", Durability::EverySec, &steps);
}

#[test]
fn every_crash_point_of_history_changes_keeps_histories_apart() {
    let steps = [
        Append(6000),
        Shift,
        Append(700),
        Truncate(300),
        Append(5000),
        Truncate(0),
        Append(12_000),
        Reset(1_000_000),
        Append(2500),
        Shift,
        Append(100),
    ];
    crash_everywhere("history-changes", Durability::Always, &steps);
}

#[test]
fn every_crash_point_of_reopens_and_durability_switches_is_safe() {
    let steps = [
        Append(9000),
        Reopen(Durability::Never),
        Append(4000),
        Append(3000),
        Reopen(Durability::Always),
        Append(6000),
        Truncate(5000),
        Reopen(Durability::Never),
        Append(2000),
        Flush,
        Append(1000),
        Reopen(Durability::Always),
        Append(500),
    ];
    crash_everywhere("reopens", Durability::Never, &steps);
}

/// A lossy recovery cuts the history; bytes then written at the same offsets must never be
/// taken for the dropped ones (nor the dropped ones for them) after a second crash.
#[test]
fn lossy_recovery_then_rewrite_then_crash_again_never_mixes_histories() {
    for seed in 0..40u64 {
        let disk = SimDisk::new();
        let opts = Options::new().capacity(CAP).durability(Durability::Never);
        let mut b = Backlog::create_sim(&disk, opts).unwrap();
        let mut m = Model::new(&b, 100 + seed);
        m.append(&mut b, 5000 + seed as usize * 13);
        let e = b.flush().unwrap();
        m.flushed(e);
        m.append(&mut b, 6000);
        // The second half reaches the disk, its commit does not.
        let img = disk.power_loss(seed, 0.2, 0.0);
        std::mem::forget(b);
        let mut b = Backlog::open_sim(&img, opts).unwrap();
        let h = check_recovered(&b, &m).unwrap();
        assert!(b.offset() >= e, "seed {seed}: lost flushed bytes");
        m.reopened(&b).unwrap();
        assert_eq!(m.cur, m.hists.len() - 1);
        let _ = h;
        // New bytes at the offsets of the dropped ones, committed, then another power loss.
        m.append(&mut b, 3000);
        let e2 = b.flush().unwrap();
        m.flushed(e2);
        m.append(&mut b, 4000);
        for k in 0..8 {
            let img2 = img.power_loss(seed * 100 + k, 0.3, 0.0);
            let b2 = Backlog::open_sim(&img2, opts).unwrap();
            let h2 = check_recovered(&b2, &m).unwrap();
            assert!(
                h2 == m.cur && b2.offset() >= e2,
                "seed {seed}/{k}: lost flushed bytes"
            );
        }
        std::mem::forget(b);
    }
}

/// Regression: a crash in the middle of a history change (truncate, reset, shift) left the
/// live page's change counter odd, and the reopened backlog kept it odd, so every reader
/// waited forever for the change to finish.
#[test]
fn crash_during_a_history_change_does_not_hang_readers_after_reopen() {
    let disk = SimDisk::new();
    let opts = Options::new().capacity(CAP).durability(Durability::Always);
    let mut b = Backlog::create_sim(&disk, opts).unwrap();
    b.append(&[7u8; 3000]).unwrap();
    // The truncation's commit is in flight (counter odd) when the process dies.
    disk.crash_at(disk.ops() + 1);
    b.truncate_to(1000).unwrap();
    let img = disk.frozen().unwrap().process_crash();
    drop(b);
    let b = Backlog::open_sim(&img, opts).unwrap();
    let r = b.reader();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 10];
        let _ = tx.send(r.read_at(1, &mut buf).map(|_| buf));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_mins(1))
        .expect("reader hung after reopening a backlog that crashed mid history change");
    assert_eq!(got.unwrap(), [7u8; 10]);
}

/// Regression: a clean close wrote its clean mark in the same sync as the data, and recovery
/// trusts a clean slot without verifying: a power loss during that sync could keep the
/// mark without the data and serve never-written bytes as the stream.
#[test]
fn power_loss_during_close_never_trusts_a_clean_mark_without_its_data() {
    crash_everywhere(
        "close",
        Durability::Never,
        &[Append(9000), Reopen(Durability::Never)],
    );
}

/// Regression: an append that laps the ring over the last commit's delta destroyed what
/// recovery needs to verify that commit; a power loss before the next commit fell back to an
/// older slot and lost offsets `append` had acknowledged durable.
#[test]
fn power_loss_while_a_lap_overwrites_the_last_commit_keeps_its_offset() {
    crash_everywhere("lap", Durability::Always, &[Append(9000), Append(9000)]);
}

/// Regression: a committed delta longer than the distance to its own newest run in the same
/// block could never verify (its oldest bytes have no entry of their own), so a power loss
/// after an acknowledged append of nearly the capacity lost it.
#[test]
fn acknowledged_append_of_nearly_the_capacity_survives_power_loss() {
    for len in [
        CAP as usize - 100,
        CAP as usize,
        CAP as usize + 7,
        3 * CAP as usize,
    ] {
        let disk = SimDisk::new();
        let opts = Options::new().capacity(CAP).durability(Durability::Always);
        let mut b = Backlog::create_sim(&disk, opts).unwrap();
        let mut m = Model::new(&b, 3);
        m.append(&mut b, 100);
        m.append(&mut b, len);
        let img = disk.durable_image();
        std::mem::forget(b);
        let b = open(&img).unwrap();
        check_recovered(&b, &m).unwrap();
        assert_eq!(b.offset(), m.end(), "append of {len} lost");
        assert!(
            b.histlen() > CAP - 4096,
            "append of {len}: kept {}",
            b.histlen()
        );
    }
}

/// A commit whose slot reached the disk without its data (power loss during its sync) is
/// rejected, and the older slot is used with everything it covered: the backlog keeps its
/// depth instead of settling for the newer end with nothing verified behind it.
#[test]
fn torn_commit_falls_back_to_the_older_slot_with_all_its_bytes() {
    let disk = SimDisk::new();
    let opts = Options::new().capacity(CAP).durability(Durability::Never);
    let mut b = Backlog::create_sim(&disk, opts).unwrap();
    let mut m = Model::new(&b, 5);
    m.append(&mut b, 5000);
    let e = b.flush().unwrap();
    m.append(&mut b, 3000);
    disk.crash_at(disk.ops() + 2); // the flush's sync: its entry and slot are written
    b.flush().unwrap();
    let f = disk.frozen().unwrap();
    std::mem::forget(b);
    // Every dirty page at its newest version except the data page of offsets 5001..8000.
    let data_page = 4 + 5001 / 4096;
    let versions: Vec<(u64, usize)> = f
        .dirty_pages()
        .into_iter()
        .map(|(p, n)| (p, if p == data_page { 0 } else { n - 1 }))
        .collect();
    assert!(versions.iter().any(|&(p, _)| p == data_page));
    let b = open(&f.image_with_versions(&versions)).unwrap();
    check_recovered(&b, &m).unwrap();
    assert!(b.recovery().used_older_slot, "{:?}", b.recovery());
    assert_eq!((b.first_offset(), b.offset()), (1, e));
}
