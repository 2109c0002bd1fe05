//! Read-only inspection of a backlog file, live or at rest: what it holds, whether every
//! checksum verifies, what an `open` would recover, and its stream bytes.
//!
//! Operator tools use this module (the `durable-backlog` command is built on it). It never
//! takes the file's lock and never writes: the file is mapped read-only, so a running master
//! that holds it open is not disturbed, and a damaged file is left exactly as it was found.
//!
//! # How a file is read without its writer's cooperation
//! [`BacklogFile::open`] decodes both header slots and runs the recovery rule as a dry run
//! (the same code `Backlog::open` runs, minus every write) to learn the range an open would
//! keep. When that rule trusts the live page — a running writer, or one that died while the
//! machine stayed up — the range is the live page's, and every later read is validated like a
//! [`Reader`](crate::Reader)'s (the seqlock protocol in `reader.rs`): copy, fence, re-load the
//! live `start` and change counter, discard the copy if the writer lapped it or changed the
//! history. Otherwise (a clean file, or one left by an OS crash or power loss) the range is the
//! committed, verified one and nothing is expected to move: a read then fails with
//! [`TailError::HistoryChanged`] if a writer opened the file meanwhile.
//!
//! A [`BacklogFile`] is a snapshot: it sees the range as it was at `open`. Bytes a live writer
//! appends afterwards need a new `open`.
//!
//! The hazard of the crate's safety model applies here too: another process truncating the
//! file while it is mapped makes accesses raise SIGBUS. (A writer's resize replaces the file
//! by a rename, which is harmless: the mapping keeps the old file.)

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::entry::{ENTRY_LEN, Entry};
use crate::format::live::{
    L_BOOT0, L_BOOT1, L_CHANGE, L_DURABLE, L_END, L_EPOCH, L_MAGIC, L_START, LIVE_MAGIC,
};
use crate::format::slot::{MAX_GENERATIONS, SLOT_LEN, Slot, SlotError};
use crate::format::{Geometry, LIVE_OFFSET, MAGIC, SLOT_OFFSETS, VERSION};
use crate::psync::{History, PsyncReply, decide};
use crate::read_error::TailError;
use crate::recovery::{
    DataCheck, RecoveryKind, RecoveryReport, corrupt, map_file, read_slots, recover,
};
use crate::region::{Access, Medium};
use crate::ring::{chunks, run_base};
use crate::runid::RunId;
use crate::seqlock::{self, Snapshot};
use crate::shared::{Shared, load_acquire};

/// Everything a backlog file says about itself, decoded without taking its lock.
///
/// Offsets and IDs are those an `open` would start from (after its recovery rule, before it
/// begins its own generation with a fresh run ID). On a live file they are a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The file inspected.
    pub path: PathBuf,
    /// Its length in bytes.
    pub file_len: u64,
    /// On-disk format version.
    pub format_version: u32,
    /// Ring capacity in bytes (`repl_backlog_size`).
    pub capacity: u64,
    /// Bytes covered by one block checksum.
    pub block_size: u64,
    /// Number of checksum blocks.
    pub blocks: u64,
    /// Both header slots (A on page 0, B on page 1), decoded or why not.
    pub slots: [SlotView; 2],
    /// Which slot (0 = A, 1 = B) is the newest valid one.
    pub newest_slot: usize,
    /// Sequence number of the newest valid slot: how many commits the file has seen.
    pub generation: u64,
    /// Whether the last writer closed the file cleanly.
    pub clean: bool,
    /// The run ID the file's last writer used (`master_replid`).
    pub run_id: RunId,
    /// Earlier run IDs still accepted for PSYNC, newest first, each with the largest PSYNC
    /// offset it allows (its `second_replid_offset`).
    pub past_run_ids: Vec<(RunId, u64)>,
    /// Current epoch (bumped whenever the history diverged).
    pub epoch: u64,
    /// Earlier epochs whose bytes belong to the history, newest first, each with the last
    /// offset it covers.
    pub past_epochs: Vec<(u64, u64)>,
    /// `repl_backlog_first_byte_offset`: oldest byte an open would keep.
    pub first_offset: u64,
    /// `master_repl_offset`: newest byte an open would keep.
    pub last_offset: u64,
    /// Newest offset committed to stable storage (the newest slot's end).
    pub durable_offset: u64,
    /// The live page as found.
    pub live: LivePage,
    /// What `open` would do, as a dry run (nothing is written).
    pub recovery: RecoveryReport,
    /// Who holds the writer's lock, as far as the OS tells.
    pub holder: Holder,
}

impl Inspection {
    /// `repl_backlog_histlen`: bytes an open would keep.
    #[must_use]
    pub fn histlen(&self) -> u64 {
        (self.last_offset + 1).saturating_sub(self.first_offset)
    }

    /// Fraction of the ring in use, 0.0 ..= 1.0.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a ratio for display
    pub fn fill(&self) -> f64 {
        self.histlen() as f64 / self.capacity as f64
    }
}

/// One header slot as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotView {
    /// The slot decodes and its checksum and invariants hold.
    Valid(SlotSummary),
    /// The slot's page is all zeros: no commit has used it yet.
    NeverWritten,
    /// The slot is torn or damaged.
    Invalid {
        /// File offset of the offending field.
        at: u64,
        /// What was expected there.
        expected: String,
        /// What was found.
        found: String,
    },
}

/// The fields of a valid header slot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotSummary {
    /// Commit sequence number.
    pub seq: u64,
    /// Written by a clean close.
    pub clean: bool,
    /// Epoch of the history.
    pub epoch: u64,
    /// Oldest offset held at this commit.
    pub first: u64,
    /// Newest offset held at this commit.
    pub last: u64,
    /// Newest offset of the commit before (bytes after it are this commit's delta).
    pub prev_last: u64,
    /// Run ID.
    pub run_id: RunId,
    /// Past run IDs with their PSYNC limits, newest first.
    pub past_run_ids: Vec<(RunId, u64)>,
    /// Past epochs with the last offset each covers, newest first.
    pub past_epochs: Vec<(u64, u64)>,
}

impl SlotSummary {
    fn new(s: &Slot) -> Self {
        SlotSummary {
            seq: s.seq,
            clean: s.clean,
            epoch: s.epoch,
            first: s.start,
            last: s.end,
            prev_last: s.prev_end,
            run_id: s.run_id,
            past_run_ids: s.gens.iter().map(|g| (g.id, g.second_offset)).collect(),
            past_epochs: s.epochs.iter().map(|e| (e.epoch, e.until)).collect(),
        }
    }
}

/// The live page: the writer's unsynced, per-append state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LivePage {
    /// The page carries its magic (a writer initialised it).
    pub initialised: bool,
    /// It was written during the current boot of this machine (so it survived any crash).
    pub this_boot: bool,
    /// Epoch it extends.
    pub epoch: u64,
    /// Oldest offset held, as last published.
    pub first: u64,
    /// Newest offset, as last published.
    pub last: u64,
    /// Durable offset, as last published.
    pub durable: u64,
    /// History-change counter (odd while a reset, truncation or reopen is in progress).
    pub change: u64,
}

/// Who holds a backlog file's writer lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// A process holds it: the file is live.
    Process {
        /// Its process ID (as the kernel's lock table shows it; another PID namespace's
        /// processes appear with the PID they have in this one, or 0).
        pid: u32,
    },
    /// Nobody: the file is at rest.
    Nobody,
    /// The OS does not say (no `/proc/locks`).
    Unknown,
}

/// One problem `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// File offset of the damaged structure (header field, checksum entry or data).
    pub file_offset: u64,
    /// Replication offset of the first damaged stream byte, for damaged data.
    pub stream_offset: Option<u64>,
    /// What is wrong, in words.
    pub what: String,
}

/// What `verify` checked and found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Committed stream bytes whose checksums were checked.
    pub checked_bytes: u64,
    /// Bytes held after the last commit (a live writer's, or a crashed one's): not yet
    /// covered by checksums, so not checkable.
    pub unchecked_tail: u64,
    /// Bytes a live writer overwrote while they were being checked (not damage).
    pub lapped_bytes: u64,
    /// The oldest bytes held, when their checksum block already holds newer bytes of the
    /// next lap of the ring: the block's entries describe the newer bytes, so these cannot be
    /// checked (recovery after a power loss would drop them; not damage).
    pub uncovered_head: u64,
    /// Every problem found, in file order within each kind (header, table, data).
    pub damage: Vec<Damage>,
}

impl VerifyReport {
    /// Whether nothing is damaged.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.damage.is_empty()
    }

    /// The first problem found, if any: header slots first, then checksum entries, then the
    /// data by increasing replication offset.
    #[must_use]
    pub fn first_damage(&self) -> Option<&Damage> {
        self.damage.first()
    }
}

/// Decodes a backlog file's state without taking its lock or writing anything.
///
/// # Errors
/// As [`BacklogFile::open`].
///
/// # Examples
/// ```
/// use durable_backlog::{Backlog, Options, inspect};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("backlog");
/// let mut b = Backlog::create(&path, Options::new()).unwrap();
/// b.append(b"hello").unwrap();
/// let live = inspect::inspect(&path).unwrap(); // while the writer holds it
/// assert_eq!((live.first_offset, live.last_offset), (1, 5));
/// b.close().unwrap();
/// let at_rest = inspect::inspect(&path).unwrap();
/// assert!(at_rest.clean);
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection> {
    BacklogFile::open(path).map(|f| f.info)
}

/// A backlog file opened read-only, without its lock: inspect it, verify it, read its stream
/// bytes, ask it a PSYNC question.
#[derive(Debug)]
pub struct BacklogFile {
    sh: Arc<Shared>,
    info: Inspection,
    /// The newest valid slot (for `verify`).
    newest: Slot,
    /// Live change counter and start when the snapshot was taken.
    change0: u64,
    start0: u64,
    /// Whether the range follows the live page (validated per read) or is fixed.
    follows_live: bool,
}

fn live_word(sh: &Shared, field: usize) -> u64 {
    load_acquire(sh.medium.atomic_u64(LIVE_OFFSET + field as u64))
}

impl BacklogFile {
    /// Opens `path` read-only (no lock, no writes) and takes a snapshot of its state.
    ///
    /// # Errors
    /// [`Error::Io`] if it is missing or unreadable; [`Error::InvalidArgument`] if it is not
    /// a regular file; [`Error::NotABacklog`] if it holds no backlog header at all;
    /// [`Error::Corrupt`] if it is shorter than its header says, or neither header slot is valid; [`Error::UnsupportedVersion`] for another
    /// format version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| Error::io("opening the backlog file", Some(path), e))?;
        let md = file
            .metadata()
            .map_err(|e| Error::io("reading the file's metadata", Some(path), e))?;
        if !md.is_file() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let len = md.len();
        if !has_magic(&file) {
            return Err(Error::NotABacklog {
                path: path.to_path_buf(),
            });
        }
        let (medium, geo) = map_file(&file, path, Access::ReadOnly)?;
        let holder = lock_holder(&md);
        let sh = Arc::new(Shared::new(medium, geo, path.to_path_buf()));

        let (rec, change0, start0) = dry_run(&sh)?;
        let decoded = read_slots(&sh.medium);
        let slots = [0, 1].map(|i| slot_view(&sh.medium, i, &decoded[i]));
        let newest_idx = match &decoded {
            [Ok(a), Ok(b)] => usize::from(b.seq > a.seq),
            [Err(_), _] => 1,
            _ => 0,
        };
        let newest = match &decoded[newest_idx] {
            Ok(s) => s.clone(),
            Err(e) => {
                let at = SLOT_OFFSETS[newest_idx] + e.at as u64;
                return Err(corrupt(path, at, e.expected.clone(), e.found.clone()));
            }
        };
        let live = read_live(&sh);
        let meta = &rec.state.meta;
        let info = Inspection {
            path: path.to_path_buf(),
            file_len: len,
            format_version: VERSION,
            capacity: geo.capacity,
            block_size: geo.block_size(),
            blocks: geo.nblocks,
            slots,
            newest_slot: newest_idx,
            generation: newest.seq,
            clean: newest.clean,
            run_id: meta.run_id,
            past_run_ids: meta.gens.iter().map(|g| (g.id, g.second_offset)).collect(),
            epoch: meta.epoch,
            past_epochs: meta.epochs.iter().map(|e| (e.epoch, e.until)).collect(),
            first_offset: rec.start,
            last_offset: rec.end,
            durable_offset: newest.end,
            live,
            recovery: rec.report.clone(),
            holder,
        };
        Ok(BacklogFile {
            follows_live: rec.report.kind == RecoveryKind::ProcessCrash,
            sh,
            info,
            newest,
            change0,
            start0,
        })
    }

    /// The state found at [`BacklogFile::open`].
    #[must_use]
    pub fn inspection(&self) -> &Inspection {
        &self.info
    }

    /// What a master serving this history would answer to `PSYNC <replid> <offset>` (the
    /// library's rule, with the chain of past run IDs), over the snapshot's range.
    ///
    /// For a live file this is what its writer answers. For a file at rest it is what a
    /// master that reopens the file answers: that master first starts a new generation — a
    /// new run ID, the file's run ID accepted as a past one up to the last offset + 1, the
    /// oldest past ID dropped when the chain is full — so its decision is the one returned
    /// here, but its reply carries its new run ID where this one carries the file's.
    #[must_use]
    pub fn psync(&self, replid: &str, offset: i64) -> PsyncReply {
        let mut past = self.info.past_run_ids.as_slice();
        if !matches!(self.info.holder, Holder::Process { .. }) {
            past = &past[..past.len().min(MAX_GENERATIONS - 1)];
        }
        decide(
            &History {
                run_id: self.info.run_id,
                past,
                first: self.info.first_offset,
                end: self.info.last_offset,
            },
            replid,
            offset,
        )
    }

    /// Copies stream bytes starting at replication offset `offset` into `buf`; returns how
    /// many (up to the last offset of the snapshot; 0 at `last_offset + 1`).
    ///
    /// # Errors
    /// [`TailError::Overwritten`] if `offset` is before the first offset held (or a live
    /// writer overwrote it during the copy); [`TailError::NotWritten`] if it is beyond the
    /// byte after the last offset; [`TailError::HistoryChanged`] if a writer reset, truncated
    /// or reopened the file since the snapshot (open it again).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, TailError> {
        let snap = Snapshot {
            change: self.change0,
            start: self.info.first_offset,
            end: self.info.last_offset,
        };
        if self.follows_live {
            return seqlock::read(&*self.sh, &snap, offset, buf);
        }
        // A file at rest has a fixed range (its live start may be anything an OS crash left):
        // any movement of the live start since the snapshot means a writer opened the file.
        let (n, start) = seqlock::copy_and_reload(&*self.sh, &snap, offset, buf)?;
        if start != self.start0 {
            return Err(TailError::HistoryChanged);
        }
        Ok(n)
    }

    /// Checks every checksum and invariant: both header slots, every checksum-table entry,
    /// and the data of every committed byte held, block by block. Calls
    /// `progress(done, total)` (in data bytes) after each block. Never writes.
    #[must_use]
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> VerifyReport {
        let g = self.sh.geo;
        let mut report = VerifyReport {
            checked_bytes: 0,
            unchecked_tail: 0,
            lapped_bytes: 0,
            uncovered_head: 0,
            damage: Vec::new(),
        };
        self.verify_header(&mut report);
        let table = self.verify_table(&mut report);

        let slot = &self.newest;
        let mut from = slot.start;
        if self.follows_live {
            from = from.max(load_acquire(self.sh.start()));
            report.unchecked_tail = self.info.last_offset.saturating_sub(slot.end);
        }
        let total = (slot.end + 1).saturating_sub(from);
        if from > slot.end {
            progress(0, 0);
            return report;
        }
        let mut done = 0u64;
        for (n, c) in chunks(&g, from, slot.end).enumerate() {
            let len = c.last - c.first + 1;
            let pair = &table[c.block as usize];
            if n == 0 && pair.iter().flatten().any(|e| e.first > c.last) {
                // The ring's head shares its block with newer bytes (see `uncovered_head`).
                report.uncovered_head += len;
                done += len;
                progress(done, total);
                continue;
            }
            let mut verdict = self.check_chunk(pair, c.first, c.last);
            let mut lapped = false;
            if verdict.is_err() && self.follows_live {
                // A live writer may have lapped these bytes (it publishes the new start before
                // overwriting the oldest byte) or committed newer entries meanwhile.
                for _ in 0..20 {
                    if load_acquire(self.sh.start()) > c.first {
                        lapped = true;
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    let pair = read_pair(&self.sh, &g, c.block);
                    verdict = self.check_chunk(&pair, c.first, c.last);
                    if verdict.is_ok() {
                        break;
                    }
                }
            }
            match verdict {
                _ if lapped => report.lapped_bytes += len,
                Ok(()) => report.checked_bytes += len,
                Err(what) => report.damage.push(Damage {
                    file_offset: g.data_offset + g.pos(c.first),
                    stream_offset: Some(c.first),
                    what,
                }),
            }
            done += len;
            progress(done, total);
        }
        report
    }

    /// With a live writer, a slot or entry it is rewriting can be read half-written: such a
    /// read is retried a few times before it counts as damage.
    fn settle<T>(&self, mut read: impl FnMut() -> Option<T>) -> Option<T> {
        let tries = if self.follows_live { 20 } else { 1 };
        for i in 0..tries {
            if let Some(x) = read() {
                return Some(x);
            }
            if i + 1 < tries {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        None
    }

    fn verify_header(&self, report: &mut VerifyReport) {
        let slots = [0, 1].map(|i| {
            let first = self.info.slots[i].clone();
            if !matches!(first, SlotView::Invalid { .. }) {
                return first;
            }
            self.settle(
                || match slot_view(&self.sh.medium, i, &read_slots(&self.sh.medium)[i]) {
                    SlotView::Invalid { .. } => None,
                    v => Some(v),
                },
            )
            .unwrap_or(first)
        });
        for (i, s) in slots.iter().enumerate() {
            if let SlotView::Invalid {
                at,
                expected,
                found,
            } = s
            {
                report.damage.push(Damage {
                    file_offset: *at,
                    stream_offset: None,
                    what: format!(
                        "header slot {} is damaged at byte {at}: expected {expected}, found {found}",
                        slot_name(i)
                    ),
                });
            }
        }
        for (i, s) in slots.iter().enumerate() {
            // Only the very first commit leaves a slot unwritten.
            if *s == SlotView::NeverWritten && self.newest.seq > 1 {
                report.damage.push(Damage {
                    file_offset: SLOT_OFFSETS[i],
                    stream_offset: None,
                    what: format!(
                        "header slot {} is all zeros, but the file has seen {} commits",
                        slot_name(i),
                        self.newest.seq
                    ),
                });
            }
        }
        if let [SlotView::Valid(a), SlotView::Valid(b)] = &slots
            && a.seq == b.seq
        {
            report.damage.push(Damage {
                file_offset: 0,
                stream_offset: None,
                what: format!("both header slots carry sequence number {}", a.seq),
            });
        }
        let magic = live_word(&self.sh, L_MAGIC);
        if magic != LIVE_MAGIC && magic != 0 {
            report.damage.push(Damage {
                file_offset: LIVE_OFFSET,
                stream_offset: None,
                what: format!("live page has magic {magic:#018x}, expected {LIVE_MAGIC:#018x}"),
            });
        }
    }

    /// Decodes the checksum table, recording entries that fail their own checksum or
    /// describe bytes outside their block.
    fn verify_table(&self, report: &mut VerifyReport) -> Vec<[Option<Entry>; 2]> {
        let g = self.sh.geo;
        let mut table = Vec::with_capacity(g.nblocks as usize);
        for block in 0..g.nblocks {
            let mut pair = [None; 2];
            for (copy, slot) in pair.iter_mut().enumerate() {
                let at = g.entry_offset(block, copy);
                let mut raw = [0u8; ENTRY_LEN];
                let decoded = self.settle(|| {
                    self.sh.medium.read(at, &mut raw);
                    if raw == [0u8; ENTRY_LEN] {
                        return Some(None);
                    }
                    Entry::decode(&raw).map(Some)
                });
                if decoded == Some(None) {
                    continue;
                }
                let problem = match decoded.flatten() {
                    None => Some("fails its own checksum (torn or corrupt)".to_string()),
                    Some(e) => {
                        let (bstart, bend) = g.block_bounds(block);
                        let in_block = g.block_of_pos(g.pos(e.first)) == block
                            && e.len > 0
                            && u64::from(e.len) <= bend - bstart
                            && e.first.checked_add(u64::from(e.len)).is_some()
                            && run_base(&g, e.last()) == run_base(&g, e.first);
                        *slot = Some(e);
                        (!in_block).then(|| {
                            format!(
                                "describes offsets {}..={}, which do not fit in this block",
                                e.first,
                                e.last()
                            )
                        })
                    }
                };
                if let Some(p) = problem {
                    *slot = None;
                    let (bstart, bend) = g.block_bounds(block);
                    report.damage.push(Damage {
                        file_offset: at,
                        stream_offset: None,
                        what: format!(
                            "checksum entry {} of block {block} (ring bytes {bstart}..{bend}) {p}",
                            slot_name(copy)
                        ),
                    });
                }
            }
            table.push(pair);
        }
        table
    }

    /// Whether offsets `first..=last` (one block's chunk) verify against one of its entries.
    fn check_chunk(&self, pair: &[Option<Entry>; 2], first: u64, last: u64) -> Result<(), String> {
        let g = self.sh.geo;
        let base = run_base(&g, first);
        let block = g.block_of_pos(g.pos(first));
        let order = match pair {
            [Some(a), Some(b)] if !a.newer_than(b) => [1, 0],
            _ => [0usize, 1],
        };
        let mut mismatch = None;
        for c in order {
            let Some(e) = pair[c] else { continue };
            let fits = e.first <= first
                && e.first >= base
                && e.last() >= last
                && run_base(&g, e.last()) == base
                && self.newest.epoch_until(e.epoch).is_some_and(|u| u >= last);
            if !fits {
                continue;
            }
            let crc = self.sh.crc_range(0, e.first, e.last());
            if crc == e.crc {
                return Ok(());
            }
            mismatch.get_or_insert((c, e, crc));
        }
        let place = format!(
            "offsets {first}..={last} (block {block}, file bytes {}..{})",
            g.data_offset + g.pos(first),
            g.data_offset + g.pos(last) + 1
        );
        Err(match mismatch {
            Some((c, e, crc)) => format!(
                "data of {place} does not match its checksum: entry {} covering {}..={} says \
                 {:#010x}, the bytes give {crc:#010x}",
                slot_name(c),
                e.first,
                e.last(),
                e.crc
            ),
            None => {
                let desc = |c: usize| match pair[c] {
                    None => "none".to_string(),
                    Some(e) => format!("{}..={} in epoch {}", e.first, e.last(), e.epoch),
                };
                format!(
                    "no checksum entry covers {place} (entry A: {}, entry B: {})",
                    desc(0),
                    desc(1)
                )
            }
        })
    }
}

/// The recovery rule as a dry run, and the live change counter and start it saw.
///
/// The dry run reads the live page; it is taken between two equal, even change counts so a
/// live writer's history change does not mix two states (bounded: a writer that died inside a
/// change leaves the count odd for good).
fn dry_run(sh: &Shared) -> Result<(crate::recovery::Recovered, u64, u64)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let c0 = live_word(sh, L_CHANGE);
        if c0 % 2 == 1 && attempt < 50 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        let s0 = live_word(sh, L_START);
        let rec = recover(sh, DataCheck::AsNeeded)?;
        if live_word(sh, L_CHANGE) == c0 || attempt >= 50 {
            return Ok((rec, c0, s0));
        }
    }
}

fn read_live(sh: &Shared) -> LivePage {
    let boot = sh.medium.boot_id();
    let live_boot = [
        live_word(sh, L_BOOT0).to_le_bytes(),
        live_word(sh, L_BOOT1).to_le_bytes(),
    ]
    .concat();
    LivePage {
        initialised: live_word(sh, L_MAGIC) == LIVE_MAGIC,
        this_boot: boot != [0u8; 16] && live_boot == boot,
        epoch: live_word(sh, L_EPOCH),
        first: live_word(sh, L_START),
        last: live_word(sh, L_END),
        durable: live_word(sh, L_DURABLE),
        change: live_word(sh, L_CHANGE),
    }
}

fn slot_name(i: usize) -> &'static str {
    if i == 0 { "A" } else { "B" }
}

fn read_pair(sh: &Shared, g: &Geometry, block: u64) -> [Option<Entry>; 2] {
    [0, 1].map(|copy| {
        let mut raw = [0u8; ENTRY_LEN];
        sh.medium.read(g.entry_offset(block, copy), &mut raw);
        Entry::decode(&raw)
    })
}

fn slot_view(medium: &Medium, i: usize, r: &std::result::Result<Slot, SlotError>) -> SlotView {
    match r {
        Ok(s) => SlotView::Valid(SlotSummary::new(s)),
        Err(e) => {
            let mut raw = [0u8; SLOT_LEN];
            medium.read(SLOT_OFFSETS[i], &mut raw);
            if raw == [0u8; SLOT_LEN] {
                return SlotView::NeverWritten;
            }
            SlotView::Invalid {
                at: SLOT_OFFSETS[i] + e.at as u64,
                expected: e.expected.clone(),
                found: e.found.clone(),
            }
        }
    }
}

/// Whether either header slot starts with the magic (read with `pread`: the file may be too
/// short to map).
fn has_magic(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    SLOT_OFFSETS.iter().any(|&off| {
        let mut m = [0u8; 8];
        file.read_exact_at(&mut m, off).is_ok() && m == MAGIC
    })
}

/// Who holds an `flock` on the file, from the kernel's lock table.
fn lock_holder(md: &std::fs::Metadata) -> Holder {
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        return Holder::Unknown;
    };
    let dev = md.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    let want = format!("{major:02x}:{minor:02x}:{}", md.ino());
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 12345 fe:00:1234 0 EOF"; blocked waiters have "->".
        if f.len() >= 6 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == want {
            return Holder::Process {
                pid: f[4].parse().unwrap_or(0),
            };
        }
    }
    Holder::Nobody
}
