//! An arbitrary sequence of operations (append, read, psync, flush, shift_run_id,
//! truncate_to, reset, reopen) on simulated storage, checked against an in-memory model as it
//! runs, with a crash at a fuzzer-chosen storage operation: the process-crash image must
//! keep everything a returned call did, a power-loss image everything acknowledged durable,
//! and neither may serve a wrong byte or continue a replica past its end.
//! (Resizing is a file operation the simulated storage does not model.)
#![no_main]

#[path = "../../tests/crashmodel/mod.rs"]
mod common;

use common::{Model, check_recovered};
use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Options, ReadError, RunId};
use libfuzzer_sys::fuzz_target;

const CAP: u64 = 16 * 1024;

fn opts(d: Durability) -> Options {
    Options::new().capacity(CAP).durability(d)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let d = if data[0] & 1 == 1 { Durability::Always } else { Durability::Never };
    let countdown = u64::from(u16::from_le_bytes([data[1], data[2]]) % 1024);
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, opts(d)).unwrap();
    let mut m = Model::new(&b, 1);
    let crash_at = disk.ops() + countdown;
    disk.crash_at(crash_at);
    // (ops done, history, end, durable) after each completed call.
    let mut acks = vec![(disk.ops(), m.cur, m.end(), m.durable)];
    let mut it = data[3..].chunks_exact(3);
    for op in &mut it {
        let arg = u64::from(u16::from_le_bytes([op[1], op[2]]));
        match op[0] % 10 {
            0..=2 => m.append(&mut b, 1 + (arg as usize * 7) % 20_000),
            3 => {
                // A read anywhere near the held range: right bytes or the documented error.
                let o = b.first_offset().saturating_sub(2) + arg % (b.histlen() + 4);
                let mut buf = vec![0u8; 1 + (arg as usize % 3000)];
                match b.reader().read_at(o, &mut buf) {
                    Ok(n) => {
                        let h = &m.hists[m.cur];
                        for (i, &x) in buf[..n].iter().enumerate() {
                            assert_eq!(x, h.byte(o + i as u64), "read at {}", o + i as u64);
                        }
                        assert_eq!(n as u64, (b.offset() + 1 - o).min(buf.len() as u64));
                    }
                    Err(ReadError::Overwritten { .. }) => assert!(o < b.first_offset()),
                    Err(ReadError::NotWritten { .. }) => assert!(o > b.offset() + 1),
                    Err(ReadError::Moved) => panic!("the simulated backlog is never resized"),
                }
            }
            4 => {
                let o = b.first_offset().saturating_sub(1) + arg % (b.histlen() + 3);
                let ok = b.psync(b.run_id().as_str(), o as i64).is_continue();
                assert_eq!(ok, o >= b.first_offset() && o <= b.offset() + 1, "psync at {o}");
            }
            5 => {
                let e = b.flush().unwrap();
                m.flushed(e);
            }
            6 => {
                b.shift_run_id().unwrap();
                m.shifted(&b);
            }
            7 => {
                b.truncate_to(b.offset().saturating_sub(arg % 5000)).unwrap();
                m.truncated(&b);
            }
            8 => {
                b.reset(RunId::random(), arg * 1000).unwrap();
                m.reset(&b);
            }
            _ => {
                drop(b);
                let dur = if arg & 1 == 1 { Durability::Always } else { Durability::Never };
                b = Backlog::open_sim(&disk, opts(dur)).unwrap();
                m.reopened(&b).unwrap();
            }
        }
        acks.push((disk.ops(), m.cur, m.end(), m.durable));
    }
    drop(b);
    let Some(f) = disk.frozen() else { return };
    let &(_, hist, end, (dh, doff)) = acks.iter().rev().find(|a| a.0 <= crash_at).unwrap();
    let reopen = Options::new().durability(Durability::Never);
    let pc = Backlog::open_sim(&f.process_crash(), reopen).expect("process-crash image opens");
    let h = check_recovered(&pc, &m).unwrap();
    assert!(h > hist || (h == hist && pc.offset() >= end), "process crash lost appended bytes");
    let seed = u64::from(data[0]);
    let pl = Backlog::open_sim(&f.power_loss(seed, 0.3, 0.0), reopen).expect("power-loss image opens");
    let h = check_recovered(&pl, &m).unwrap();
    assert!(h > dh || (h == dh && pl.offset() >= doff), "power loss lost durable bytes");
});
