//! Model-based test: random sequences of appends (some larger than the capacity), reads,
//! PSYNC questions, flushes, history changes, clean reopens, process crashes and power losses,
//! run on simulated storage against a plain in-memory model of what a backlog must hold.
//! Guards against any divergence between the engine and the documented semantics.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    clippy::many_single_char_names,
    clippy::similar_names
)]

use durable_backlog::sim::SimDisk;
use durable_backlog::{Backlog, Durability, Options, ReadError, RunId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append(usize, u8),
    Read(u64, usize),
    Psync(usize, i64),
    Flush,
    Shift,
    Truncate(u64),
    Reset(u64),
    Reopen,
    ProcessCrash,
    PowerLoss(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..3000, any::<u8>()).prop_map(|(n, s)| Op::Append(n, s)),
        1 => (20_000usize..45_000, any::<u8>()).prop_map(|(n, s)| Op::Append(n, s)),
        3 => (0u64..25_000, 1usize..5000).prop_map(|(o, n)| Op::Read(o, n)),
        3 => (0usize..4, -2i64..25_000).prop_map(|(i, o)| Op::Psync(i, o)),
        2 => Just(Op::Flush),
        1 => Just(Op::Shift),
        1 => (0u64..5000).prop_map(Op::Truncate),
        1 => (0u64..(1u64 << 62)).prop_map(Op::Reset),
        1 => Just(Op::Reopen),
        1 => Just(Op::ProcessCrash),
        1 => any::<u64>().prop_map(Op::PowerLoss),
    ]
}

/// What the backlog must hold.
struct Model {
    cap: u64,
    /// Every byte of the current history: `hist[i]` has offset `base + i`. A power loss may
    /// legitimately bring back bytes the ring had overwritten in memory but not on disk.
    hist: Vec<u8>,
    base: u64,
    first: u64,
    end: u64,
    run_id: RunId,
    past: Vec<(RunId, u64)>,
    /// Every past ID of this history with its limit, beyond the 8 a backlog remembers.
    ever: Vec<(RunId, u64)>,
    /// Offset the last completed commit covered.
    durable: u64,
    /// Bytes that commit added, and bytes appended since: when together they come close to
    /// the capacity, later appends may overwrite the committed bytes before they are
    /// committed again, and a power loss may then take the recovered end below `durable`.
    last_delta: u64,
    since: u64,
}

impl Model {
    fn append(&mut self, bytes: &[u8]) {
        self.hist.extend_from_slice(bytes);
        self.end += bytes.len() as u64;
        self.since += bytes.len() as u64;
        self.first = self.first.max((self.end + 1).saturating_sub(self.cap));
    }

    fn held(&self) -> &[u8] {
        let from = (self.first - self.base) as usize;
        &self.hist[from..from + (self.end + 1 - self.first) as usize]
    }

    fn shift(&mut self) {
        self.past.insert(0, (self.run_id, self.end + 1));
        self.past.truncate(8);
        self.ever.insert(0, (self.run_id, self.end + 1));
    }

    fn cut(&mut self, end: u64) {
        if end + 1 < self.base {
            self.hist.clear();
            self.base = end + 1;
        }
        self.hist.truncate((end + 1 - self.base) as usize);
        self.end = end;
        self.first = self.first.min(end + 1);
        for p in self.past.iter_mut().chain(self.ever.iter_mut()) {
            p.1 = p.1.min(end + 1);
        }
    }

    fn continues(&self, id: RunId, o: i64) -> bool {
        let id_ok = id == self.run_id
            || self
                .past
                .iter()
                .any(|&(p, lim)| p == id && o >= 0 && o as u64 <= lim);
        id_ok && o >= 0 && (o as u64) >= self.first && (o as u64) <= self.end + 1
    }
}

fn check_same(b: &Backlog, m: &Model) {
    assert_eq!((b.first_offset(), b.offset()), (m.first, m.end), "offsets");
    assert_eq!(b.run_id(), m.run_id);
    assert_eq!(b.past_run_ids(), m.past);
    let mut buf = vec![0u8; m.held().len()];
    assert_eq!(b.reader().read_at(m.first, &mut buf).unwrap(), buf.len());
    assert!(buf == m.held(), "held bytes differ");
}

fn run(ops: &[Op], durability: Durability, cap: u64) {
    let mut disk = SimDisk::new();
    let opts = Options::new().capacity(cap).durability(durability);
    let mut b = Backlog::create_sim(&disk, opts).unwrap();
    let mut m = Model {
        cap,
        hist: Vec::new(),
        base: 1,
        first: 1,
        end: 0,
        run_id: b.run_id(),
        past: Vec::new(),
        ever: Vec::new(),
        durable: 0,
        last_delta: 0,
        since: 0,
    };
    let committed = |m: &mut Model| {
        m.last_delta = m.end.saturating_sub(m.durable).max(m.since.min(m.cap));
        m.durable = m.end;
        m.since = 0;
    };
    let mut salt = 0u8;
    for op in ops {
        match *op {
            Op::Append(n, s) => {
                salt = salt.wrapping_add(s);
                let bytes: Vec<u8> = (0..n)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
                    .collect();
                assert_eq!(b.append(&bytes).unwrap(), m.end + n as u64);
                m.append(&bytes);
                if durability == Durability::Always {
                    committed(&mut m);
                }
            }
            Op::Read(rel, n) => {
                let o = m.first.saturating_sub(100) + rel;
                let mut buf = vec![0u8; n];
                match b.reader().read_at(o, &mut buf) {
                    Ok(got) => {
                        assert!(o >= m.first && o <= m.end + 1);
                        assert_eq!(got as u64, (m.end + 1 - o).min(n as u64));
                        let at = (o - m.first) as usize;
                        assert_eq!(&buf[..got], &m.held()[at..at + got]);
                    }
                    Err(ReadError::Overwritten { .. }) => assert!(o < m.first),
                    Err(ReadError::NotWritten { .. }) => assert!(o > m.end + 1),
                    Err(ReadError::Moved) => panic!("the simulated backlog is never resized"),
                }
            }
            Op::Psync(i, rel) => {
                let id = match i {
                    0 => m.run_id,
                    1..=2 => m.past.get(i - 1).map_or_else(RunId::random, |p| p.0),
                    _ => RunId::random(),
                };
                let o = m.first as i64 - 50 + rel;
                assert_eq!(
                    b.psync(id.as_str(), o).is_continue(),
                    m.continues(id, o),
                    "psync {id} {o}"
                );
            }
            Op::Flush => {
                assert_eq!(b.flush().unwrap(), m.end);
                committed(&mut m);
            }
            Op::Shift => {
                b.shift_run_id().unwrap();
                m.shift();
                m.run_id = b.run_id();
                committed(&mut m);
            }
            Op::Truncate(back) => {
                let to = m.end.saturating_sub(back);
                b.truncate_to(to).unwrap();
                m.cut(to);
                m.shift();
                m.run_id = b.run_id();
                committed(&mut m);
            }
            Op::Reset(at) => {
                let id = RunId::random();
                b.reset(id, at).unwrap();
                m.hist.clear();
                m.base = at + 1;
                m.first = at + 1;
                m.end = at;
                m.run_id = id;
                m.past.clear();
                m.ever.clear();
                committed(&mut m);
            }
            Op::Reopen | Op::ProcessCrash | Op::PowerLoss(_) => {
                let image = match *op {
                    Op::Reopen => {
                        b.close().unwrap();
                        disk.clone()
                    }
                    Op::ProcessCrash => {
                        let img = disk.process_crash();
                        std::mem::forget(b);
                        img
                    }
                    Op::PowerLoss(seed) => {
                        let img = disk.power_loss(seed, 0.5, 0.0);
                        std::mem::forget(b);
                        img
                    }
                    _ => unreachable!(),
                };
                disk = image;
                b = Backlog::open_sim(&disk, opts).unwrap();
                if let Op::PowerLoss(_) = op {
                    // Anything between the last commit and the live end may or may not be
                    // back; the recovered bytes must be a prefix of ours, at least up to the
                    // last commit, and the oldest end may lose one block.
                    let end = b.offset();
                    let intact = m.since + m.last_delta + 2 * 4096 <= m.cap;
                    let floor = if intact { m.durable } else { 0 };
                    assert!(
                        end >= floor && end <= m.end,
                        "recovered end {end} outside {floor}..={}",
                        m.end
                    );
                    assert!(
                        b.first_offset() >= m.base,
                        "recovered bytes from before the history began"
                    );
                    m.cut(end);
                    m.first = b.first_offset();
                    // Recovery may have fallen back to the older header slot, which knows
                    // fewer past IDs; it must never know more, nor allow more.
                    m.shift();
                    let limit = |id: RunId| m.ever.iter().find(|p| p.0 == id).map(|p| p.1);
                    for (id, lim) in b.past_run_ids() {
                        let allowed = limit(id)
                            .unwrap_or_else(|| panic!("unknown past ID {id} after recovery"));
                        assert!(
                            lim <= allowed,
                            "past ID {id} allowed up to {lim}, model says {allowed}"
                        );
                    }
                    m.past = b.past_run_ids();
                    m.run_id = b.run_id();
                    committed(&mut m);
                    check_same(&b, &m);
                    continue;
                }
                m.shift();
                m.run_id = b.run_id();
                committed(&mut m);
            }
        }
        check_same(&b, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("DB_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn engine_matches_model_under_never(ops in prop::collection::vec(op(), 1..60), cap in 16_384u64..40_000) {
        run(&ops, Durability::Never, cap);
    }

    #[test]
    fn engine_matches_model_under_always(ops in prop::collection::vec(op(), 1..40), cap in 16_384u64..40_000) {
        run(&ops, Durability::Always, cap);
    }
}
