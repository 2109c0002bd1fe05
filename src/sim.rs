//! Simulated storage for crash-safety tests and fuzzing (feature `sim`).
//!
//! A [`SimDisk`] stands in for the backlog file. The engine runs its ordinary code on it
//! (the same `write`/`sync` calls it makes on a memory mapping), while the disk records every
//! write since the last successful sync. From that record it materializes the images a real
//! disk may hold after a crash:
//! - [`SimDisk::process_crash`]: a kill -9 — the page cache survives whole, same boot;
//! - [`SimDisk::power_loss`]: an OS crash or power loss — every page dirtied since the last
//!   sync independently holds any version it had since that sync, optionally torn at 512-byte
//!   sector granularity or with a sector of garbage; new boot.
//!
//! It also injects failures: [`SimDisk::fail_from`] makes the Nth storage operation and every
//! later one fail (writes stop reaching the "disk", syncs return an error).
//!
//! Media assumptions modelled (see docs/FORMAT.md): a 512-byte sector is written atomically;
//! a completed sync makes every earlier write durable; nothing else is ordered.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use rand::{RngExt, SeedableRng};

use crate::flusher::Turns;

const PAGE: usize = 4096;
const SECTOR: usize = 512;

/// Where the format's structures lie in the file (docs/FORMAT.md), for corruption tests that
/// must aim at them: taken from the format module, so a layout change moves the tests along.
pub mod layout {
    /// Byte offsets of the two header slots.
    pub const SLOT_OFFSETS: [u64; 2] = crate::format::SLOT_OFFSETS;
    /// Bytes of a header slot that the format uses (the rest of its page is zero).
    pub const SLOT_LEN: usize = crate::format::slot::SLOT_LEN;
    /// Byte offset of the live page.
    pub const LIVE_OFFSET: u64 = crate::format::LIVE_OFFSET;
    /// Bytes of the live page that the format uses.
    pub const LIVE_LEN: usize = crate::format::live::LIVE_LEN;
    /// Byte offset of the checksum table.
    pub const TABLE_OFFSET: u64 = crate::format::TABLE_OFFSET;
    /// Length of one checksum-table entry (two per block).
    pub const ENTRY_LEN: usize = crate::format::entry::ENTRY_LEN;
}

/// A simulated backlog file. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Inner>,
}

struct Inner {
    mem: OnceLock<Box<[AtomicU64]>>,
    boot: [u8; 16],
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What a power loss right now keeps for sure: the state at the last successful sync.
    durable: Vec<u8>,
    /// Writes since that sync, in order.
    pending: Vec<(u64, Vec<u8>)>,
    ops: u64,
    fail_from: Option<u64>,
    locked: bool,
    syncs: u64,
    /// Operation number at which to freeze a copy of the disk ([`SimDisk::crash_at`]).
    crash_at: Option<u64>,
    /// The copy frozen there.
    frozen: Option<SimDisk>,
    /// Read-ahead requests (`MADV_WILLNEED` on a mapping), in order: `(pos, len)`.
    read_ahead: Vec<(u64, u64)>,
    /// The background flusher of the `EverySec` backlog open on this disk, which runs only
    /// when [`SimDisk::tick_flusher`] lets a second pass.
    flusher: Option<Weak<Turns>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("SimDisk")
            .field("len", &self.len())
            .field("ops", &st.ops)
            .field("pending_writes", &st.pending.len())
            .field("fail_from", &st.fail_from)
            .finish_non_exhaustive()
    }
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk::new()
    }
}

impl SimDisk {
    /// An empty disk (no backlog yet) on a fresh simulated boot.
    #[must_use]
    pub fn new() -> Self {
        SimDisk::with_boot(rand::random())
    }

    fn with_boot(boot: [u8; 16]) -> Self {
        SimDisk {
            inner: Arc::new(Inner {
                mem: OnceLock::new(),
                boot,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn from_bytes(bytes: &[u8], boot: [u8; 16]) -> Self {
        let disk = SimDisk::with_boot(boot);
        disk.format(bytes.len() as u64);
        let mem = disk.mem();
        for (i, word) in mem.iter().enumerate() {
            let mut w = [0u8; 8];
            let at = i * 8;
            let n = bytes.len().saturating_sub(at).min(8);
            w[..n].copy_from_slice(&bytes[at..at + n]);
            word.store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        disk.inner.state.lock().durable = bytes.to_vec();
        disk
    }

    /// A disk holding exactly `bytes`, as if read back from a file: for corruption tests.
    #[must_use]
    pub fn from_image(bytes: &[u8]) -> Self {
        SimDisk::from_bytes(bytes, rand::random())
    }

    fn mem(&self) -> &[AtomicU64] {
        self.inner.mem.get().map_or(&[], |m| &m[..])
    }

    /// Allocates the disk's bytes (zeroed). Called once, when a backlog is created on it.
    pub(crate) fn format(&self, len: u64) -> bool {
        let words = (len as usize).div_ceil(8);
        let fresh = self.inner.mem.get().is_none();
        let _ = self
            .inner
            .mem
            .set((0..words).map(|_| AtomicU64::new(0)).collect());
        if fresh {
            self.inner.state.lock().durable = vec![0; len as usize];
        }
        fresh
    }

    /// Length in bytes (0 before a backlog was created on it).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.mem().len() as u64 * 8
    }

    /// Whether no backlog was ever created on this disk.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.mem().as_ptr().cast::<u8>().cast_mut()
    }

    pub(crate) fn boot_id(&self) -> [u8; 16] {
        self.inner.boot
    }

    /// The current contents (what a process reading the file now would see).
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        self.mem()
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect()
    }

    /// Storage operations (writes and syncs) performed so far.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.inner.state.lock().ops
    }

    /// Successful syncs so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.inner.state.lock().syncs
    }

    /// From operation number `n` (0-based, counted by [`SimDisk::ops`]) on, every write is
    /// lost to the disk and every sync fails, as if the device died.
    pub fn fail_from(&self, n: u64) {
        self.inner.state.lock().fail_from = Some(n);
    }

    /// Whether the injected failure point has been reached.
    #[must_use]
    pub fn failed(&self) -> bool {
        let st = self.inner.state.lock();
        st.fail_from.is_some_and(|n| st.ops > n)
    }

    fn next_op(st: &mut State) -> bool {
        let ok = st.fail_from.is_none_or(|n| st.ops < n);
        st.ops += 1;
        ok
    }

    pub(crate) fn record_write(&self, pos: u64, src: &[u8]) {
        let mut st = self.inner.state.lock();
        let at = st.ops;
        if Self::next_op(&mut st) {
            st.pending.push((pos, src.to_vec()));
        }
        self.maybe_freeze(&mut st, at);
    }

    /// Every read-ahead request the engine made on this disk, in order, as `(file position,
    /// length)`: what a mapping would have been asked to read from the disk in the
    /// background (`MADV_WILLNEED`). Only hints; they change no byte.
    #[must_use]
    pub fn read_ahead_requests(&self) -> Vec<(u64, u64)> {
        self.inner.state.lock().read_ahead.clone()
    }

    pub(crate) fn record_read_ahead(&self, pos: u64, len: u64) {
        self.inner.state.lock().read_ahead.push((pos, len));
    }

    pub(crate) fn record_sync(&self) -> std::io::Result<()> {
        let mut st = self.inner.state.lock();
        let at = st.ops;
        // The crash happens while this sync is in flight: it has not completed.
        self.maybe_freeze(&mut st, at);
        if !Self::next_op(&mut st) {
            // What a failed fsync reports.
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        // An msync writes back every dirty page of the mapping, the live page (updated by
        // plain stores, never recorded as writes) included: the disk now holds what the
        // process sees.
        st.pending.clear();
        st.durable = self.bytes();
        st.syncs += 1;
        Ok(())
    }

    fn maybe_freeze(&self, st: &mut State, op: u64) {
        if st.crash_at == Some(op) && st.frozen.is_none() {
            let copy = SimDisk::with_boot(self.inner.boot);
            copy.format(self.len());
            for (dst, src) in copy.mem().iter().zip(self.mem()) {
                dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            {
                let mut cs = copy.inner.state.lock();
                cs.durable.clone_from(&st.durable);
                cs.pending.clone_from(&st.pending);
                cs.syncs = st.syncs;
            }
            st.frozen = Some(copy);
        }
    }

    /// Freezes a copy of the disk when storage operation `n` (0-based, counted by
    /// [`SimDisk::ops`]) is issued: a write is then in the page cache (and pending), a sync
    /// has not completed. [`SimDisk::frozen`] returns the copy, from which
    /// [`SimDisk::process_crash`], [`SimDisk::power_loss`] and friends materialize the
    /// images a crash at that moment may leave. The live disk carries on unaffected.
    pub fn crash_at(&self, n: u64) {
        let mut st = self.inner.state.lock();
        st.crash_at = Some(n);
        st.frozen = None;
    }

    /// The copy frozen by [`SimDisk::crash_at`], once that operation was reached.
    #[must_use]
    pub fn frozen(&self) -> Option<SimDisk> {
        self.inner.state.lock().frozen.clone()
    }

    /// An independent copy of this disk in its current state (page cache, synced state and
    /// pending writes), unlocked, on the same boot.
    #[must_use]
    pub fn snapshot(&self) -> SimDisk {
        let mut st = self.inner.state.lock();
        let (saved_at, saved) = (st.crash_at, st.frozen.take());
        let op = st.ops;
        st.crash_at = Some(op);
        self.maybe_freeze(&mut st, op);
        let copy = st.frozen.take().unwrap_or_default();
        st.crash_at = saved_at;
        st.frozen = saved;
        copy
    }

    /// Lets a second pass for the background flusher of the
    /// [`EverySec`](crate::Durability::EverySec) backlog open on this disk: it runs one turn
    /// (commits what was appended since the last commit, if anything), and this returns once
    /// the turn is over. Does nothing if no flusher runs (another durability, the backlog was
    /// closed, or a failed commit stopped it).
    ///
    /// On simulated storage the flusher never runs on its own: its storage operations then
    /// happen at the same points in every run, so a crash at the Nth operation
    /// ([`SimDisk::crash_at`]) is reproducible.
    pub fn tick_flusher(&self) {
        let turns = self
            .inner
            .state
            .lock()
            .flusher
            .as_ref()
            .and_then(Weak::upgrade);
        // Not under the state lock: the turn's commit records its writes there.
        if let Some(t) = turns {
            t.run_one();
        }
    }

    pub(crate) fn attach_flusher(&self, turns: &Arc<Turns>) {
        self.inner.state.lock().flusher = Some(Arc::downgrade(turns));
    }

    pub(crate) fn try_lock(&self) -> bool {
        let mut st = self.inner.state.lock();
        !std::mem::replace(&mut st.locked, true)
    }

    pub(crate) fn unlock(&self) {
        self.inner.state.lock().locked = false;
    }

    /// The disk a kill -9 leaves: every write the process made is in the page cache, on the
    /// same boot. The returned disk is unlocked and has no pending history.
    #[must_use]
    pub fn process_crash(&self) -> SimDisk {
        SimDisk::from_bytes(&self.bytes(), self.inner.boot)
    }

    /// The disk after an OS crash with nothing lost beyond the last sync: only synced writes.
    #[must_use]
    pub fn durable_image(&self) -> SimDisk {
        let st = self.inner.state.lock();
        SimDisk::from_bytes(&st.durable, rand::random())
    }

    /// Every page that may differ on disk from its synced version, with each version it may
    /// hold: version 0 is the synced one, version k the page after the k-th later write that
    /// touched it. A page changed only by plain stores (the live page) has two versions: the
    /// synced one and the current one (the kernel may write a dirty page back at any time).
    fn page_versions(&self, st: &State) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut out: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        for (pos, bytes) in &st.pending {
            for p in page_span(*pos, bytes.len()) {
                let at = p as usize * PAGE;
                let i = match out.iter().position(|(q, _)| *q == p) {
                    Some(i) => i,
                    None => {
                        out.push((p, vec![page_of(&st.durable, p)]));
                        out.len() - 1
                    }
                };
                let mut v = out[i].1.last().cloned().unwrap_or_default();
                let (wpos, wend) = (*pos as usize, *pos as usize + bytes.len());
                let lo = wpos.max(at);
                let hi = wend.min(at + PAGE);
                v[lo - at..hi - at].copy_from_slice(&bytes[lo - wpos..hi - wpos]);
                out[i].1.push(v);
            }
        }
        let now = self.bytes();
        for p in 0..(now.len() / PAGE) as u64 {
            let cur = page_of(&now, p);
            match out.iter_mut().find(|(q, _)| *q == p) {
                Some((_, vs)) => {
                    if vs.last() != Some(&cur) {
                        vs.push(cur);
                    }
                }
                None => {
                    let synced = page_of(&st.durable, p);
                    if synced != cur {
                        out.push((p, vec![synced, cur]));
                    }
                }
            }
        }
        out
    }

    /// Pages that may differ on disk from their synced version, with how many versions each
    /// may hold (the synced version counts as version 0).
    #[must_use]
    pub fn dirty_pages(&self) -> Vec<(u64, usize)> {
        let st = self.inner.state.lock();
        self.page_versions(&st)
            .into_iter()
            .map(|(p, vs)| (p, vs.len()))
            .collect()
    }

    /// The image where dirty page `pages[i].0` holds version `versions[i]` (numbered as in
    /// [`SimDisk::dirty_pages`]); other pages keep their synced version. On a new boot.
    #[must_use]
    pub fn image_with_versions(&self, versions: &[(u64, usize)]) -> SimDisk {
        let st = self.inner.state.lock();
        let all = self.page_versions(&st);
        let mut img = st.durable.clone();
        for &(page, version) in versions {
            if let Some((_, vs)) = all.iter().find(|(p, _)| *p == page)
                && let Some(v) = vs.get(version)
            {
                put_page(&mut img, page, v);
            }
        }
        SimDisk::from_bytes(&img, rand::random())
    }

    /// Every image [`SimDisk::image_with_versions`] can produce, if there are at most
    /// `limit` of them (the product of the version counts); `None` otherwise.
    #[must_use]
    pub fn all_images(&self, limit: usize) -> Option<Vec<SimDisk>> {
        let st = self.inner.state.lock();
        let all = self.page_versions(&st);
        let mut count = 1usize;
        for (_, vs) in &all {
            count = count.checked_mul(vs.len()).filter(|&c| c <= limit)?;
        }
        let mut out = Vec::with_capacity(count);
        for mut k in 0..count {
            let mut img = st.durable.clone();
            for (page, vs) in &all {
                put_page(&mut img, *page, &vs[k % vs.len()]);
                k /= vs.len();
            }
            out.push(SimDisk::from_bytes(&img, rand::random()));
        }
        Some(out)
    }

    /// A seeded random power-loss image: each dirty page takes a random version; with
    /// probability `tear` a page is torn (each 512-byte sector from one of two adjacent
    /// versions) and with probability `garbage` one sector of it is random bytes.
    #[must_use]
    pub fn power_loss(&self, seed: u64, tear: f64, garbage: f64) -> SimDisk {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let st = self.inner.state.lock();
        let mut img = st.durable.clone();
        for (page, vs) in self.page_versions(&st) {
            let k = rng.random_range(0..vs.len());
            let mut v = vs[k].clone();
            if rng.random_bool(tear) && k + 1 < vs.len() {
                let next = &vs[k + 1];
                for s in 0..PAGE / SECTOR {
                    if rng.random_bool(0.5) {
                        v[s * SECTOR..(s + 1) * SECTOR]
                            .copy_from_slice(&next[s * SECTOR..(s + 1) * SECTOR]);
                    }
                }
            }
            if rng.random_bool(garbage) {
                let s = rng.random_range(0..PAGE / SECTOR);
                rng.fill(&mut v[s * SECTOR..(s + 1) * SECTOR]);
            }
            put_page(&mut img, page, &v);
        }
        SimDisk::from_bytes(&img, rng.random())
    }
}

fn page_span(pos: u64, len: usize) -> impl Iterator<Item = u64> {
    let first = pos / PAGE as u64;
    let last = (pos + len.max(1) as u64 - 1) / PAGE as u64;
    first..=last
}

/// Page `page` of `bytes`, zero-padded to a whole page.
fn page_of(bytes: &[u8], page: u64) -> Vec<u8> {
    let at = (page as usize * PAGE).min(bytes.len());
    let end = (at + PAGE).min(bytes.len());
    let mut v = vec![0u8; PAGE];
    v[..end - at].copy_from_slice(&bytes[at..end]);
    v
}

fn put_page(img: &mut [u8], page: u64, v: &[u8]) {
    let at = (page as usize * PAGE).min(img.len());
    let end = (at + PAGE).min(img.len());
    img[at..end].copy_from_slice(&v[..end - at]);
}
