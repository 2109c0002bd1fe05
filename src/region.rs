//! The storage medium under the engine: the only module with `unsafe` code.
//!
//! A [`Medium`] is a fixed-length byte region shared by one writer and any number of
//! readers (in this process through an `Arc`, in others through their own mapping):
//! - [`Medium::Map`]: a shared memory mapping of the backlog file (the product);
//! - [`Medium::Sim`] (feature `sim`): simulated storage that records every write and sync so
//!   tests can materialize the crash images a real disk may leave, and fail the Nth operation.
//!
//! Both run the same engine code: the engine only ever calls `write`, `read`, `atomic_u64` and
//! `sync`. Bytes are copied in and out through raw pointers; no `&[u8]` into the shared region
//! is ever handed out, because the writer may change those bytes at any moment.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

#[cfg(feature = "sim")]
use crate::sim::SimDisk;

/// A byte region the engine reads and writes.
#[derive(Debug)]
pub(crate) enum Medium {
    Map(MapMedium),
    #[cfg(feature = "sim")]
    Sim(SimDisk),
}

/// How a backlog file is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The writer's mapping.
    ReadWrite,
    /// A view's (`open_read_only`, `inspect`): the engine never stores to it.
    ReadOnly,
}

/// A shared mapping of a whole backlog file.
#[derive(Debug)]
pub(crate) struct MapMedium {
    raw: MmapRaw,
    len: u64,
    access: Access,
}

impl MapMedium {
    /// Maps the whole of `file`, which must be exactly `len` bytes long.
    pub(crate) fn map(file: &File, len: u64, access: Access) -> io::Result<Self> {
        let size = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        let mut opts = MmapOptions::new();
        opts.len(size);
        let raw = match access {
            Access::ReadWrite => opts.map_raw(file)?,
            Access::ReadOnly => opts.map_raw_read_only(file)?,
        };
        // Reads and writes land wherever the ring's head is: read-ahead and large-folio
        // write-back would only add I/O (measured in the performance notes).
        let _ = raw.advise(memmap2::Advice::Random);
        Ok(MapMedium { raw, len, access })
    }

    /// Faults every page in now, so the first lap of appends does not pay a fault per page.
    pub(crate) fn prefault(&self) {
        let _ = self.raw.advise(memmap2::Advice::WillNeed);
        let _ = self.raw.advise(memmap2::Advice::PopulateWrite);
    }
}

/// The panic of a failed [`Medium::check`], out of line so the hot path only compares.
#[cold]
#[inline(never)]
fn outside(pos: u64, n: usize, len: u64) -> ! {
    panic!("region access {pos}+{n} outside {len}")
}

/// The panic of a write to a read-only mapping (an engine bug), out of line.
#[cold]
#[inline(never)]
fn read_only_write() -> ! {
    panic!("write to a read-only mapping")
}

impl Medium {
    /// Faults every page of a mapped file in now (see [`MapMedium::prefault`]); nothing for
    /// simulated storage. Changes no byte, so it may run beside the writer.
    pub(crate) fn prefault(&self) {
        match self {
            Medium::Map(m) => m.prefault(),
            #[cfg(feature = "sim")]
            Medium::Sim(_) => {}
        }
    }

    /// Length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> u64 {
        match self {
            Medium::Map(m) => m.len,
            #[cfg(feature = "sim")]
            Medium::Sim(s) => s.len(),
        }
    }

    #[inline]
    fn base(&self) -> *mut u8 {
        match self {
            Medium::Map(m) => m.raw.as_mut_ptr(),
            #[cfg(feature = "sim")]
            Medium::Sim(s) => s.base(),
        }
    }

    #[inline]
    fn check(&self, pos: u64, n: usize) {
        // Positions come from the verified geometry, never straight from disk bytes: a miss
        // here is a bug in the engine, not bad input.
        let len = self.len();
        if (n as u64) > len || pos > len - n as u64 {
            outside(pos, n, len);
        }
    }

    /// Copies `src` to `pos`. Only the single writer calls this.
    #[inline]
    #[allow(irrefutable_let_patterns)] // `Map` is the only variant without feature `sim`
    pub(crate) fn write(&self, pos: u64, src: &[u8]) {
        if src.is_empty() {
            return;
        }
        self.check(pos, src.len());
        if let Medium::Map(m) = self
            && m.access == Access::ReadOnly
        {
            read_only_write();
        }
        // SAFETY: `check` proved `pos..pos + len` lies inside the live mapping/buffer, which
        // outlives `self`. `src` is caller memory, so the ranges cannot overlap. Readers may
        // copy these bytes while this store runs: a plain, non-atomic copy racing this one,
        // which is formally a data race. What is assumed (reader.rs, "Racing copies"): the
        // racing copy yields some bytes without trapping or tearing anything else, no
        // reference to them exists, and the reader validates afterwards (seqlock) and never
        // uses a copy that may have overlapped this store.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base().add(pos as usize), src.len());
        }
        #[cfg(feature = "sim")]
        if let Medium::Sim(s) = self {
            s.record_write(pos, src);
        }
    }

    /// Copies the concatenation of `parts`, without its first `skip` bytes, to the `len`
    /// bytes at `pos`: one bounds check for the whole range, then one copy per part. Panics
    /// (before copying anything past it) if the parts hold more than `skip + len` bytes.
    /// Only the single writer calls this.
    #[inline]
    #[allow(irrefutable_let_patterns)] // `Map` is the only variant without feature `sim`
    pub(crate) fn write_parts<B: std::ops::Deref<Target = [u8]>>(
        &self,
        pos: u64,
        len: u64,
        parts: &[B],
        mut skip: u64,
    ) {
        if len == 0 {
            return;
        }
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        self.check(pos, n);
        if let Medium::Map(m) = self
            && m.access == Access::ReadOnly
        {
            read_only_write();
        }
        let mut at = pos as usize;
        let mut room = n;
        for part in parts {
            let part: &[u8] = part;
            let drop = skip.min(part.len() as u64);
            skip -= drop;
            let keep = &part[drop as usize..];
            let Some(left) = room.checked_sub(keep.len()) else {
                outside(at as u64, keep.len(), pos + len);
            };
            // SAFETY: `check` proved `pos..pos + n` lies inside the live mapping/buffer,
            // which outlives `self`, and `at..at + keep.len()` lies inside it: `at - pos` is
            // what earlier parts took and `keep.len() <= room = n - (at - pos)` (checked just
            // above). `keep` is caller memory, so the ranges cannot overlap. Racing readers:
            // as in `write`.
            unsafe {
                std::ptr::copy_nonoverlapping(keep.as_ptr(), self.base().add(at), keep.len());
            }
            #[cfg(feature = "sim")]
            if let Medium::Sim(s) = self
                && !keep.is_empty()
            {
                s.record_write(at as u64, keep);
            }
            at += keep.len();
            room = left;
        }
    }

    /// Copies bytes at `pos` into `dst`. The bytes may be changing: callers validate.
    #[inline]
    pub(crate) fn read(&self, pos: u64, dst: &mut [u8]) {
        if dst.is_empty() {
            return;
        }
        self.check(pos, dst.len());
        // SAFETY: `check` proved the source range is inside the region; `dst` is exclusive
        // caller memory. The writer may store to these bytes during the copy: a data race
        // on plain memory, assumed (reader.rs, "Racing copies") to yield arbitrary bytes in
        // `dst` and nothing worse. Callers treat `dst` as garbage until the seqlock
        // validation says no byte of it can have been overwritten.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base().add(pos as usize),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
    }

    /// The 8-byte aligned word at `pos`, as an atomic.
    #[allow(clippy::cast_ptr_alignment)] // alignment checked at run time
    #[inline]
    pub(crate) fn atomic_u64(&self, pos: u64) -> &AtomicU64 {
        self.check(pos, 8);
        assert!(pos.is_multiple_of(8), "unaligned atomic at {pos}");
        // SAFETY: in bounds (checked), 8-aligned (checked; the mapping and the simulated
        // buffer are page/u64 aligned), and the region lives as long as `&self`. Every access
        // to these words, in every process, is atomic. On a read-only mapping only `Relaxed`
        // loads are ever issued (`Shared::read_only`; `Acquire` is a `Relaxed` load plus a
        // fence, `shared::load_acquire`): std allows small `Relaxed` atomic loads, and only
        // those, on read-only memory.
        unsafe { &*(self.base().add(pos as usize).cast::<AtomicU64>()) }
    }

    /// Starts reading `pos..pos + len` from the disk in the background (`MADV_WILLNEED`).
    /// The mapping is advised random, which turns readahead off; a sequential pass over
    /// data that is probably not in the page cache (verification after a reboot) asks for
    /// it explicitly, so the pages arrive in large reads instead of one 4 KiB fault each.
    /// Only a hint: errors are ignored and nothing is mapped or changed.
    pub(crate) fn will_need(&self, pos: u64, len: u64) {
        #[cfg(feature = "sim")]
        if let Medium::Sim(s) = self
            && len > 0
        {
            s.record_read_ahead(pos, len);
        }
        self.advise(memmap2::Advice::WillNeed, pos, len);
    }

    /// Maps `pos..pos + len` in one call (`MADV_POPULATE_READ`), waiting for any read
    /// still in flight: a sequential pass then takes no fault per page (the random advice
    /// also turns off fault-around). Only a hint: errors are ignored, bytes are unchanged.
    pub(crate) fn populate_read(&self, pos: u64, len: u64) {
        self.advise(memmap2::Advice::PopulateRead, pos, len);
    }

    /// `advice` for `pos..pos + len`, clipped to the mapping; a hint whose errors are
    /// ignored (nothing on simulated storage).
    fn advise(&self, advice: memmap2::Advice, pos: u64, len: u64) {
        if let Medium::Map(m) = self
            && pos < m.len
        {
            let len = len.min(m.len - pos);
            let _ = m.raw.advise_range(advice, pos as usize, len as usize);
        }
    }

    /// Makes every write so far durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        match self {
            Medium::Map(m) => m.raw.flush(),
            #[cfg(feature = "sim")]
            Medium::Sim(s) => s.record_sync(),
        }
    }

    /// The boot this medium's page cache belongs to.
    pub(crate) fn boot_id(&self) -> [u8; 16] {
        match self {
            Medium::Map(_) => current_boot_id(),
            #[cfg(feature = "sim")]
            Medium::Sim(s) => s.boot_id(),
        }
    }
}

/// The kernel's boot ID (`/proc/sys/kernel/random/boot_id`), or zeros where there is none —
/// in which case the live page is never trusted and only committed data survives a crash.
pub(crate) fn current_boot_id() -> [u8; 16] {
    static BOOT: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let mut out = [0u8; 16];
        if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            let hexs: String = s.trim().chars().filter(char::is_ascii_hexdigit).collect();
            if hex::decode_to_slice(&hexs, &mut out).is_err() {
                out = [0; 16];
            }
        }
        out
    })
}

/// Reserves every block of `file` up to `len` so that a full disk fails here, not as a
/// SIGBUS when a page of the mapping is first written.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    // SAFETY: plain syscall on a valid, open descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The 32-bit half of `word` that holds its low-order bits (the futex word: the kernel
/// compares 32-bit values).
fn low_half(word: &AtomicU64) -> *const u32 {
    let p = std::ptr::from_ref(word).cast::<u32>();
    if cfg!(target_endian = "little") {
        p
    } else {
        p.wrapping_add(1)
    }
}

/// Sleeps while the low 32 bits of `word` equal `expected`, until [`futex_wake`] on the same
/// word, `timeout`, or a spurious wake-up. The comparison and the sleep are one atomic step
/// in the kernel, so a wake after a change cannot be lost.
///
/// A process-private futex, although the word lies in a file mapping other processes may
/// share: only tailers in the writer's own process sleep, and only the writer wakes them
/// (read-only views in other processes poll). The kernel then keys the futex by address
/// instead of looking up the file page on every call, which cost the writer a fifth of its
/// time under two sleeping tailers (`gup_fast_fallback` in a profile of
/// `cargo bench --bench concurrency -- wall_append_4KiB_2_tailers`).
pub(crate) fn futex_wait(word: &AtomicU64, expected: u32, timeout: std::time::Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos().cast_signed()),
    };
    // SAFETY: `low_half` points at 4 aligned bytes inside `word`, which is live for the
    // call; FUTEX_WAIT only reads them. `ts` outlives the call. The result (woken, timed
    // out, value changed, interrupted) is deliberately ignored: callers re-check and loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &raw const ts,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake(word: &AtomicU64) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not access the memory at all.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Registers this process for expedited private `membarrier`; whether that worked (Linux ≥
/// 4.14). Then [`heavy_fence`] makes every thread of the process execute a full barrier.
#[cfg_attr(loom, allow(dead_code))] // loom models the symmetric fences
pub(crate) fn register_heavy_fence() -> bool {
    rustix::thread::membarrier(rustix::thread::MembarrierCommand::RegisterPrivateExpedited).is_ok()
}

/// Issues a full memory barrier on every running thread of this process (the expensive side
/// of an asymmetric fence); returns whether the kernel did. Only valid after
/// [`register_heavy_fence`] returned true.
#[cfg_attr(loom, allow(dead_code))] // loom models the symmetric fences
pub(crate) fn heavy_fence() -> bool {
    rustix::thread::membarrier(rustix::thread::MembarrierCommand::PrivateExpedited).is_ok()
}
