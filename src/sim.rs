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
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use rand::{RngExt, SeedableRng};

const PAGE: usize = 4096;
const SECTOR: usize = 512;

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
        if Self::next_op(&mut st) {
            st.pending.push((pos, src.to_vec()));
        }
    }

    pub(crate) fn record_sync(&self) -> std::io::Result<()> {
        let mut st = self.inner.state.lock();
        if !Self::next_op(&mut st) {
            return Err(std::io::Error::other("simulated I/O failure"));
        }
        let pending = std::mem::take(&mut st.pending);
        for (pos, bytes) in pending {
            let at = pos as usize;
            st.durable[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        st.syncs += 1;
        Ok(())
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

    /// Pages written since the last successful sync, with how many versions each had
    /// (the synced version counts as version 0).
    #[must_use]
    pub fn dirty_pages(&self) -> Vec<(u64, usize)> {
        let st = self.inner.state.lock();
        let mut pages: Vec<(u64, usize)> = Vec::new();
        for (pos, bytes) in &st.pending {
            for p in page_span(*pos, bytes.len()) {
                match pages.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, n)) => *n += 1,
                    None => pages.push((p, 2)),
                }
            }
        }
        pages
    }

    /// The image where dirty page `pages[i].0` holds version `versions[i]` (0 = as at the
    /// last sync, k = after the k-th later write touching it); other dirty pages keep their
    /// synced version. On a new boot.
    #[must_use]
    pub fn image_with_versions(&self, versions: &[(u64, usize)]) -> SimDisk {
        let st = self.inner.state.lock();
        let mut img = st.durable.clone();
        for &(page, version) in versions {
            let v = page_version(&st, page, version);
            let at = page as usize * PAGE;
            let end = (at + PAGE).min(img.len());
            img[at..end].copy_from_slice(&v[..end - at]);
        }
        SimDisk::from_bytes(&img, rand::random())
    }

    /// A seeded random power-loss image: each dirty page takes a random version; with
    /// probability `tear` a page is torn (each 512-byte sector from one of two adjacent
    /// versions) and with probability `garbage` one sector of it is random bytes.
    #[must_use]
    pub fn power_loss(&self, seed: u64, tear: f64, garbage: f64) -> SimDisk {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let st = self.inner.state.lock();
        let mut img = st.durable.clone();
        let mut pages: Vec<(u64, usize)> = Vec::new();
        for (pos, bytes) in &st.pending {
            for p in page_span(*pos, bytes.len()) {
                match pages.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, n)) => *n += 1,
                    None => pages.push((p, 2)),
                }
            }
        }
        for (page, nversions) in pages {
            let k = rng.random_range(0..nversions);
            let mut v = page_version(&st, page, k);
            if rng.random_bool(tear) && k + 1 < nversions {
                let next = page_version(&st, page, k + 1);
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
            let at = page as usize * PAGE;
            let end = (at + PAGE).min(img.len());
            img[at..end].copy_from_slice(&v[..end - at]);
        }
        SimDisk::from_bytes(&img, rand::random())
    }
}

fn page_span(pos: u64, len: usize) -> impl Iterator<Item = u64> {
    let first = pos / PAGE as u64;
    let last = (pos + len.max(1) as u64 - 1) / PAGE as u64;
    first..=last
}

/// Page `page` after the first `version` pending writes that touch it.
fn page_version(st: &State, page: u64, version: usize) -> Vec<u8> {
    let at = page as usize * PAGE;
    let mut v = vec![0u8; PAGE];
    let end = (at + PAGE).min(st.durable.len());
    v[..end - at].copy_from_slice(&st.durable[at..end]);
    let mut seen = 0;
    for (pos, bytes) in &st.pending {
        if seen >= version {
            break;
        }
        let (wpos, wend) = (*pos as usize, *pos as usize + bytes.len());
        if wend <= at || wpos >= at + PAGE {
            continue;
        }
        seen += 1;
        let lo = wpos.max(at);
        let hi = wend.min(at + PAGE);
        v[lo - at..hi - at].copy_from_slice(&bytes[lo - wpos..hi - wpos]);
    }
    v
}
