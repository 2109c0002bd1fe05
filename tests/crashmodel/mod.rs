//! Shared by the crash-safety tests: a deterministic stream and a model of every history a
//! backlog went through, to tell a right byte from a wrong one after any crash.
#![allow(dead_code, unreachable_pub, clippy::cast_possible_wrap)]

use durable_backlog::{Backlog, Durability, RunId};

/// The byte at replication offset `offset` of the stream tagged `tag`: a pure function, so
/// any recovered byte can be checked without keeping a copy of the stream.
pub fn stream(offset: u64, tag: u64) -> u8 {
    let mut x = offset ^ tag.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x = (x ^ (x >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// One history: which stream tag holds each offset range, up to `end`.
#[derive(Clone, Debug)]
pub struct History {
    /// `(first offset, tag)`, ascending: offsets from `first` on come from stream `tag`.
    segs: Vec<(u64, u64)>,
    /// Last offset written in this history.
    pub end: u64,
}

impl History {
    /// The byte this history holds at `offset`.
    pub fn byte(&self, offset: u64) -> u8 {
        let tag = self
            .segs
            .iter()
            .rev()
            .find(|(first, _)| *first <= offset)
            .map_or(0, |(_, t)| *t);
        stream(offset, tag)
    }

    fn tag(&self) -> u64 {
        self.segs.last().map_or(0, |s| s.1)
    }
}

/// Every history a backlog went through and which run IDs name which one.
#[derive(Clone, Debug)]
pub struct Model {
    pub hists: Vec<History>,
    pub ids: Vec<(RunId, usize)>,
    pub cur: usize,
    /// What was last acknowledged durable: (history, offset).
    pub durable: (usize, u64),
    next_tag: u64,
}

impl Model {
    /// The model of a freshly created backlog `b` whose stream is tagged `tag`.
    pub fn new(b: &Backlog, tag: u64) -> Self {
        Model {
            hists: vec![History {
                segs: vec![(0, tag)],
                end: b.offset(),
            }],
            ids: vec![(b.run_id(), 0)],
            cur: 0,
            durable: (0, 0),
            next_tag: tag + 1,
        }
    }

    pub fn end(&self) -> u64 {
        self.hists[self.cur].end
    }

    /// The history a run ID names.
    pub fn hist_of(&self, id: RunId) -> Option<usize> {
        self.ids.iter().find(|(i, _)| *i == id).map(|(_, h)| *h)
    }

    /// The next `len` bytes of the current history.
    pub fn next_bytes(&self, len: usize) -> Vec<u8> {
        let h = &self.hists[self.cur];
        (0..len as u64).map(|i| h.byte(h.end + 1 + i)).collect()
    }

    /// Appends `len` bytes to `b` and to the model; under `Durability::Always` the append is
    /// acknowledged durable when it returns.
    pub fn append(&mut self, b: &mut Backlog, len: usize) {
        let bytes = self.next_bytes(len);
        let end = b.append(&bytes).expect("append");
        self.hists[self.cur].end = end;
        if b.durability() == Durability::Always {
            self.durable = (self.cur, end);
        }
    }

    pub fn flushed(&mut self, end: u64) {
        self.durable = (self.cur, end);
    }

    /// A new history: the current one up to `end`, then a fresh stream tag.
    fn branch(&mut self, from: usize, end: u64, id: RunId) {
        let mut h = self.hists[from].clone();
        h.end = end;
        h.segs.retain(|(first, _)| *first <= end);
        h.segs.push((end + 1, self.next_tag));
        self.next_tag += 1;
        self.hists.push(h);
        self.cur = self.hists.len() - 1;
        self.ids.push((id, self.cur));
    }

    /// `b` just did `truncate_to(offset)` (or was reopened at `offset`).
    pub fn truncated(&mut self, b: &Backlog) {
        let cur = self.cur;
        self.branch(cur, b.offset(), b.run_id());
        self.durable = (self.cur, b.offset());
    }

    /// `b` just did `shift_run_id()`.
    pub fn shifted(&mut self, b: &Backlog) {
        self.ids.push((b.run_id(), self.cur));
        self.durable = (self.cur, b.offset());
    }

    /// `b` just did `reset(id, offset)`.
    pub fn reset(&mut self, b: &Backlog) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.hists.push(History {
            segs: vec![(0, tag)],
            end: b.offset(),
        });
        self.cur = self.hists.len() - 1;
        self.ids.push((b.run_id(), self.cur));
        self.durable = (self.cur, b.offset());
    }

    /// `b` was just opened on what this model describes: follow it, branching at its end (a
    /// later crash must never be able to confuse new bytes with ones the reopen dropped).
    pub fn reopened(&mut self, b: &Backlog) -> Result<(), String> {
        let h = self.recovered_history(b)?;
        self.branch(h, b.offset(), b.run_id());
        self.durable = (self.cur, b.offset());
        Ok(())
    }

    /// Which history a just-opened backlog continues (the one its previous run ID names).
    pub fn recovered_history(&self, b: &Backlog) -> Result<usize, String> {
        let Some((prev, _)) = b.past_run_ids().first().copied() else {
            return Err("a reopened backlog has no past run ID".into());
        };
        self.hist_of(prev)
            .ok_or_else(|| format!("reopened backlog continues unknown run ID {prev}"))
    }
}

/// Checks a just-opened backlog against the model: it continues a known history, invents no
/// byte past that history's end, serves only that history's bytes, and refuses PSYNC beyond
/// its end for every ID it knows. Returns the history it continues.
pub fn check_recovered(b: &Backlog, m: &Model) -> Result<usize, String> {
    let h = m.recovered_history(b)?;
    let hist = &m.hists[h];
    if b.offset() > hist.end {
        return Err(format!(
            "recovered end {} beyond the history's end {}",
            b.offset(),
            hist.end
        ));
    }
    if b.first_offset() > b.offset() + 1 || b.histlen() > b.capacity() {
        return Err(format!(
            "impossible range {}..={}",
            b.first_offset(),
            b.offset()
        ));
    }
    check_bytes(b, |o| hist.byte(o))?;
    for (id, limit) in b.past_run_ids() {
        if limit > b.offset() + 1 {
            return Err(format!(
                "past ID {id} allows PSYNC up to {limit} > end + 1 = {}",
                b.offset() + 1
            ));
        }
        let o = b.offset() as i64 + 2;
        if b.psync(id.as_str(), o).is_continue() {
            return Err(format!("PSYNC {id} {o} continued beyond the recovered end"));
        }
    }
    Ok(h)
}

/// Every byte `b` holds equals `want(offset)`.
pub fn check_bytes(b: &Backlog, want: impl Fn(u64) -> u8) -> Result<(), String> {
    let mut buf = vec![0u8; b.histlen() as usize];
    let n = b
        .reader()
        .read_at(b.first_offset(), &mut buf)
        .map_err(|e| format!("read failed: {e}"))?;
    if n != buf.len() {
        return Err(format!("short read {n} of {}", buf.len()));
    }
    for (i, &x) in buf.iter().enumerate() {
        let o = b.first_offset() + i as u64;
        if x != want(o) {
            return Err(format!(
                "WRONG BYTE at offset {o}: {x:#04x} != {:#04x} (held {}..={})",
                want(o),
                b.first_offset(),
                b.offset()
            ));
        }
    }
    Ok(())
}

/// A directory for real backlog files: on tmpfs when there is one (fsync is then cheap and the
/// page-cache semantics the tests rely on are the same), else the default temp dir.
pub fn tempdir() -> tempfile::TempDir {
    if let Ok(d) = std::env::var("DB_TEST_DIR") {
        return tempfile::tempdir_in(d).expect("DB_TEST_DIR");
    }
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

/// An environment variable as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
