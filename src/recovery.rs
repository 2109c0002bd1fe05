//! Open-time recovery: choose the header slot, decide which bytes are trustworthy, report.
//!
//! The rule (docs/FORMAT.md, "Recovery"):
//! 1. Decode both slots; take the valid one with the highest sequence number.
//! 2. If it was written by a clean close, its range is exact.
//! 3. Else, if the live page was written on this boot (the kernel's boot ID matches) and
//!    extends that slot's epoch, the page cache survived the crash: the live start/end are
//!    exact (a process crash loses nothing `append` returned) — provided the committed bytes
//!    still held verify against their checksums (all but the oldest held block and the
//!    block of the commit's end, whose checksums may cover bytes stored after the commit). If they do not, the file system lost writes without
//!    a reboot, and the live page is not trusted: step 4.
//! 4. Else (OS crash, power loss, or an inconsistent live page): a slot is accepted only if
//!    every block of its delta verifies against the block checksums; the range is then
//!    extended backwards over blocks that verify. If neither slot verifies, the backlog is
//!    recovered empty at the newest slot's end. Because bytes after the recovered end may
//!    have reached replicas, the history is cut there: new epoch, past IDs limited to it.

use std::fmt;
use std::path::Path;

use crate::commit::{BlockState, CommitState, Meta};
use crate::error::{Error, Result};
use crate::format::entry::{ENTRY_LEN, Entry};
use crate::format::live::{L_BOOT0, L_BOOT1, L_EPOCH, L_MAGIC, LIVE_MAGIC};
use crate::format::slot::{SLOT_LEN, Slot, SlotError};
use crate::format::{Geometry, LIVE_OFFSET, PAGE, SLOT_OFFSETS, VERSION};
use crate::region::{Access, Medium};
use crate::ring::{run_base, spans};
use crate::shared::{Shared, load_acquire};

/// How far ahead of the verification pass the disk is asked to read.
const VERIFY_READAHEAD: u64 = 8 << 20;
/// Size of one readahead request (below any kernel's per-request readahead cap).
const READAHEAD_PIECE: u64 = 1 << 20;

/// How the backlog was found when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryKind {
    /// The file was just created.
    Created,
    /// The previous writer closed it cleanly.
    Clean,
    /// The previous writer died (kill -9, panic, abort) but the machine did not: every byte
    /// `append` returned was recovered from the page cache, after the committed bytes held
    /// verified against their checksums.
    ProcessCrash,
    /// The machine crashed or lost power (or the live state was unusable): only committed
    /// bytes whose checksums verified were kept.
    Verified,
}

impl fmt::Display for RecoveryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoveryKind::Created => "created",
            RecoveryKind::Clean => "clean shutdown",
            RecoveryKind::ProcessCrash => "process crash (page cache intact)",
            RecoveryKind::Verified => "unclean shutdown (verified committed data)",
        })
    }
}

/// What `open` found and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Which path recovery took.
    pub kind: RecoveryKind,
    /// Sequence number of the header slot it started from.
    pub slot_seq: u64,
    /// Whether the newest slot was rejected and the older one used.
    pub used_older_slot: bool,
    /// Offset of the last byte before the crash, as far as recovery can tell: the committed
    /// end for verified recovery, the live end otherwise.
    pub recorded_end: u64,
    /// First and last offset recovered (`first > last` when empty).
    pub first: u64,
    /// Last offset recovered (the new `master_repl_offset`).
    pub last: u64,
    /// Bytes whose checksums were verified.
    pub verified_bytes: u64,
    /// Whether the history was cut (replicas beyond `last` must fully resync).
    pub history_cut: bool,
    /// The backlog was resized from this capacity.
    pub resized_from: Option<u64>,
}

/// The result of recovery: what to commit next.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) state: CommitState,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) report: RecoveryReport,
}

pub(crate) fn corrupt(
    path: &Path,
    at: u64,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        at,
        expected: expected.into(),
        found: found.into(),
    }
}

fn slot_error(path: &Path, page: usize, e: SlotError) -> Error {
    if let Some(found) = e.version {
        return Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: VERSION,
        };
    }
    corrupt(path, SLOT_OFFSETS[page] + e.at as u64, e.expected, e.found)
}

/// Reads and decodes both header slots from a medium of any length (never panics).
pub(crate) fn read_slots(medium: &Medium) -> [Result<Slot, SlotError>; 2] {
    let len = medium.len();
    SLOT_OFFSETS.map(|off| {
        let mut buf = [0u8; SLOT_LEN];
        let n = len.saturating_sub(off).min(SLOT_LEN as u64) as usize;
        medium.read(off, &mut buf[..n]);
        Slot::decode(&buf[..n])
    })
}

/// The geometry the newest valid slot describes, checked against the medium's length.
pub(crate) fn probe(medium: &Medium, path: &Path) -> Result<Geometry> {
    let (newest, _, _) = newest_slot(medium, path)?;
    newest
        .check_geometry(medium.len())
        .map_err(|e| corrupt(path, e.at as u64, e.expected, e.found))
}

/// Maps an open backlog file whole (read-write for the writer, read-only for views) after
/// checking it is long enough to hold a header, and reads its geometry from the newest valid
/// slot, checked against the real length. Nothing is written.
pub(crate) fn map_file(
    file: &std::fs::File,
    path: &Path,
    access: Access,
) -> Result<(Medium, Geometry)> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading the file length", Some(path), e))?
        .len();
    if len < crate::format::TABLE_OFFSET {
        return Err(corrupt(
            path,
            0,
            format!(
                "a backlog file of at least {} bytes",
                crate::format::TABLE_OFFSET
            ),
            format!("{len} bytes"),
        ));
    }
    let map = crate::region::MapMedium::map(file, len, access)
        .map_err(|e| Error::io("mapping the backlog file", Some(path), e))?;
    let medium = Medium::Map(map);
    let geo = probe(&medium, path)?;
    Ok((medium, geo))
}

/// The newest valid slot and its page, and the other slot if it is valid too.
type SlotChoice = (Slot, usize, Option<(Slot, usize)>);

/// The newest valid slot and its page, or the clearest error about why there is none.
pub(crate) fn newest_slot(medium: &Medium, path: &Path) -> Result<SlotChoice> {
    let [a, b] = read_slots(medium);
    let mut valid: Vec<(Slot, usize)> = Vec::new();
    let mut errs = Vec::new();
    for (page, r) in [a, b].into_iter().enumerate() {
        match r {
            Ok(s) => valid.push((s, page)),
            Err(e) => errs.push((page, e)),
        }
    }
    valid.sort_by_key(|(s, _)| std::cmp::Reverse(s.seq));
    let mut it = valid.into_iter();
    match it.next() {
        Some(newest) => Ok((newest.0, newest.1, it.next())),
        None => {
            // Prefer the error that says the most: a version mismatch, then slot 0's.
            let pick = errs
                .iter()
                .position(|(_, e)| e.version.is_some())
                .unwrap_or(0);
            let (page, e) = errs.swap_remove(pick);
            if medium.len() < 2 * PAGE {
                return Err(corrupt(
                    path,
                    0,
                    format!("a backlog file of at least {} bytes", 2 * PAGE),
                    format!("{} bytes", medium.len()),
                ));
            }
            Err(slot_error(path, page, e))
        }
    }
}

fn read_entries(sh: &Shared, g: &Geometry) -> Vec<[Option<Entry>; 2]> {
    let mut out = Vec::with_capacity(g.nblocks as usize);
    let mut buf = [0u8; 2 * ENTRY_LEN];
    for block in 0..g.nblocks {
        sh.medium.read(g.entry_offset(block, 0), &mut buf);
        let mut pair = [[0u8; ENTRY_LEN]; 2];
        pair[0].copy_from_slice(&buf[..ENTRY_LEN]);
        pair[1].copy_from_slice(&buf[ENTRY_LEN..]);
        out.push(pair.map(|b| Entry::decode(&b)));
    }
    out
}

fn newest_copy(pair: &[Option<Entry>; 2]) -> (usize, Option<Entry>) {
    match pair {
        [Some(a), Some(b)] => {
            if b.newer_than(a) {
                (1, Some(*b))
            } else {
                (0, Some(*a))
            }
        }
        [Some(a), None] => (0, Some(*a)),
        [None, Some(b)] => (1, Some(*b)),
        [None, None] => (1, None),
    }
}

/// Verifies `slot`'s bytes backwards from its end. Returns the first verified offset and the
/// verified copy of each block, or `None` when a block of the slot's delta fails.
/// What verification of a slot established: its first verified offset, the copy of each
/// block's entry that verified, and how many bytes were checked.
struct Verified {
    first: u64,
    copies: Vec<Option<usize>>,
    bytes: u64,
}

fn verify(
    sh: &Shared,
    g: &Geometry,
    table: &[[Option<Entry>; 2]],
    slot: &Slot,
) -> Option<Verified> {
    let mut verified: Vec<Option<usize>> = vec![None; table.len()];
    let mut checked: Vec<[Option<bool>; 2]> = vec![[None; 2]; table.len()];
    let mut o = slot.end;
    let mut bytes = 0u64;
    // The block holding the newest byte also holds, after it, the oldest bytes of the
    // previous lap; entries only describe the newer run, so the walk ends there.
    let head = (g.block_of_pos(g.pos(slot.end)), run_base(g, slot.end));
    // Offsets `requested..=slot.end` have been asked of the disk (see `Medium::will_need`);
    // keep between one and two windows requested below the block being checked.
    let mut requested = slot.end.saturating_add(1);
    while o >= slot.start && o > 0 {
        if o < requested.saturating_add(VERIFY_READAHEAD) && requested > slot.start {
            let lo = slot.start.max(o.saturating_sub(2 * VERIFY_READAHEAD));
            // The kernel reads at most its readahead size per request, from the low end:
            // ask in pieces, newest first, the order the walk needs them.
            while requested > lo {
                let piece = (requested - lo).min(READAHEAD_PIECE);
                requested -= piece;
                let (a, b) = spans(g.capacity, requested, piece);
                // Where the piece wraps, `b` (the ring's start) holds its newer bytes.
                sh.medium.will_need(g.data_offset + b.pos, b.len);
                sh.medium.will_need(g.data_offset + a.pos, a.len);
            }
        }
        let block = g.block_of_pos(g.pos(o)) as usize;
        let base = run_base(g, o);
        if block as u64 == head.0 && base != head.1 {
            return Some(Verified {
                first: o + 1,
                copies: verified,
                bytes,
            });
        }
        let chunk_first = base.max(slot.start);
        // Map the block's pages in one call instead of one fault per 4 KiB page.
        sh.medium
            .populate_read(g.data_offset + g.pos(chunk_first), o - chunk_first + 1);
        let pair = &table[block];
        let order = match pair {
            [Some(a), Some(b)] if !a.newer_than(b) => [1, 0],
            _ => [0usize, 1],
        };
        let mut ok = false;
        for c in order {
            let Some(e) = pair[c] else { continue };
            let fits = e.len > 0
                && e.first <= chunk_first
                && e.first >= base
                && e.last() >= o
                && run_base(g, e.last()) == base
                && slot.epoch_until(e.epoch).is_some_and(|until| until >= o);
            if !fits {
                continue;
            }
            let good = *checked[block][c]
                .get_or_insert_with(|| sh.crc_range(0, e.first, e.last()) == e.crc);
            if good {
                ok = true;
                verified[block] = Some(c);
                break;
            }
        }
        if !ok {
            // A block already verified for newer offsets of this walk means the walk lapped
            // the ring: older bytes of a delta longer than the gap to the block's newer run
            // have no entry of their own. Stop there; any other failure inside the delta
            // rejects the slot.
            if o > slot.prev_end && verified[block].is_none() {
                return None;
            }
            return Some(Verified {
                first: o + 1,
                copies: verified,
                bytes,
            });
        }
        bytes += o - chunk_first + 1;
        if chunk_first == 0 {
            break;
        }
        o = chunk_first - 1;
    }
    Some(Verified {
        first: slot.start.max(o + 1).min(slot.end + 1),
        copies: verified,
        bytes,
    })
}

/// After a process crash: verifies the committed bytes the live page still holds (`slot`'s
/// range from `live_start`), walking back from the slot's end as [`verify`] does. Two blocks
/// may hold bytes the writer stored after the commit, which their checksums may cover, and
/// are skipped (kept as the page cache holds them): the one holding the oldest held byte
/// (bytes appended after the commit may have overwritten its older bytes) and the one
/// holding the commit's last byte (its checksum may cover offsets past the commit that a
/// truncation dropped and later appends rewrote). `None` if any checked block fails.
fn verify_held(
    sh: &Shared,
    g: &Geometry,
    table: &[[Option<Entry>; 2]],
    slot: &Slot,
    live_start: u64,
) -> Option<Verified> {
    let oldest = slot.start.max(live_start);
    let pos = g.pos(oldest);
    let (_, block_end) = g.block_bounds(g.block_of_pos(pos));
    let mut held = slot.clone();
    held.start = oldest + (block_end - pos);
    held.end = run_base(g, slot.end).saturating_sub(1);
    if held.start > held.end || held.end == 0 {
        // Nothing committed is held beyond the oldest block: nothing to check.
        return Some(Verified {
            first: held.start,
            copies: vec![None; table.len()],
            bytes: 0,
        });
    }
    let v = verify(sh, g, table, &held)?;
    (v.first <= held.start).then_some(v)
}

/// Which held bytes an open verifies against their checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataCheck {
    /// What the recovery rule needs: nothing after a clean close, the committed bytes after
    /// a process crash, everything kept after an OS crash or power loss.
    AsNeeded,
    /// Every held byte, whatever the last writer left (`Options::verify_on_open`): only
    /// verified bytes are kept.
    Always,
}

/// Recovers the state of an existing backlog. Writes nothing.
#[allow(clippy::too_many_lines)] // the recovery rule, step by step, as documented above
pub(crate) fn recover(sh: &Shared, check: DataCheck) -> Result<Recovered> {
    let verify_always = check == DataCheck::Always;
    let (newest, page, older) = newest_slot(&sh.medium, &sh.path)?;
    let g = newest
        .check_geometry(sh.medium.len())
        .map_err(|e| corrupt(&sh.path, e.at as u64, e.expected, e.found))?;
    if g != sh.geo {
        return Err(corrupt(
            &sh.path,
            0,
            format!("geometry {:?}", sh.geo),
            format!("{g:?}"),
        ));
    }
    let table = read_entries(sh, &g);
    let mut blocks: Vec<BlockState> = table
        .iter()
        .map(|pair| {
            let (copy, entry) = newest_copy(pair);
            BlockState {
                entry,
                copy,
                seq: entry.map_or(0, |e| e.seq),
            }
        })
        .collect();

    let live = |f: usize| load_acquire(sh.medium.atomic_u64(LIVE_OFFSET + f as u64));
    let boot = sh.medium.boot_id();
    let live_boot = [live(L_BOOT0).to_le_bytes(), live(L_BOOT1).to_le_bytes()].concat();
    let same_boot = boot != [0u8; 16] && live_boot == boot && live(L_MAGIC) == LIVE_MAGIC;
    let (lstart, lend) = (load_acquire(sh.start()), load_acquire(sh.end()));
    // An append longer than the capacity publishes its start (past the old end + 1) before
    // its end: caught in between, nothing old is held and nothing new is published yet.
    let lstart = lstart.min(lend.saturating_add(1));
    let live_ok = same_boot
        && live(L_EPOCH) == newest.epoch
        && lend >= newest.end
        && lend <= crate::format::slot::MAX_OFFSET
        && lstart >= newest.start
        && lstart <= lend + 1
        && lend + 1 - lstart <= g.capacity;

    let mut report = RecoveryReport {
        kind: RecoveryKind::Clean,
        slot_seq: newest.seq,
        used_older_slot: false,
        recorded_end: newest.end,
        first: newest.start,
        last: newest.end,
        verified_bytes: 0,
        history_cut: false,
        resized_from: None,
    };
    let mut meta = Meta::from_slot(&newest);
    let max_seq = newest.seq;
    let (start, end, base_slot, base_page);

    // With `verify_always`, only verified bytes are kept: a clean slot must verify, and a
    // process crash goes the verified way too (bytes after its last commit have no checksum
    // and are dropped; the history is cut there).
    let checked = if verify_always && newest.clean {
        verify(sh, &g, &table, &newest)
    } else {
        None
    };
    // An unclean open on the same boot checks, before it believes the live page, that the
    // committed bytes still held are the committed ones: a file system that lost unsynced
    // writes without a reboot may have rolled pages back under a live page that survived.
    let checked_live = if !verify_always && !newest.clean && live_ok {
        verify_held(sh, &g, &table, &newest, lstart)
    } else {
        None
    };
    let trusted = if verify_always {
        checked.is_some()
    } else {
        newest.clean || checked_live.is_some()
    };
    if trusted {
        let (start, end) = if newest.clean {
            (newest.start, newest.end)
        } else {
            report.kind = RecoveryKind::ProcessCrash;
            report.recorded_end = lend;
            (lstart, lend)
        };
        let start = match checked {
            Some(v) => {
                report.verified_bytes = v.bytes;
                for (b, c) in v.copies.iter().enumerate() {
                    blocks[b].entry = c.and_then(|c| table[b][c]);
                    blocks[b].copy = c.unwrap_or(blocks[b].copy);
                }
                start.max(v.first).min(end + 1)
            }
            None => start,
        };
        if let Some(v) = &checked_live {
            report.verified_bytes = v.bytes;
        }
        report.first = start;
        report.last = end;
        let mut last = newest;
        last.seq = max_seq;
        return Ok(Recovered {
            state: CommitState {
                last,
                page,
                meta,
                blocks,
            },
            start,
            end,
            report,
        });
    }
    report.kind = if newest.clean {
        RecoveryKind::Clean
    } else {
        RecoveryKind::Verified
    };
    let mut candidates = vec![(newest, page)];
    candidates.extend(older);
    let mut chosen = None;
    for (i, (slot, p)) in candidates.iter().enumerate() {
        if let Some(v) = verify(sh, &g, &table, slot) {
            chosen = Some((i, slot.clone(), *p, v));
            break;
        }
    }
    let newest = candidates[0].0.clone();
    match chosen {
        Some((
            i,
            slot,
            p,
            Verified {
                first,
                copies: verified,
                bytes,
            },
        )) => {
            report.used_older_slot = i > 0;
            report.verified_bytes = bytes;
            for (b, v) in verified.iter().enumerate() {
                blocks[b].entry = v.and_then(|c| table[b][c]);
                if let Some(c) = v {
                    blocks[b].copy = *c;
                }
            }
            for (b, st) in blocks.iter_mut().enumerate() {
                if verified[b].is_none() {
                    st.entry = None;
                }
            }
            (start, end) = (first, slot.end);
            meta = Meta::from_slot(&slot);
            base_slot = slot;
            base_page = p;
        }
        None => {
            for st in &mut blocks {
                st.entry = None;
            }
            (start, end) = (newest.end + 1, newest.end);
            meta = Meta::from_slot(&newest);
            base_slot = newest;
            base_page = page;
        }
    }
    if report.kind == RecoveryKind::Verified || end != candidates[0].0.end {
        // Bytes after `end` may have been streamed before the crash: cut the history there.
        let floor = table
            .iter()
            .flatten()
            .flatten()
            .map(|e| e.epoch)
            .max()
            .unwrap_or(0)
            .max(meta.epoch);
        meta.cut(end, floor);
        report.history_cut = report.kind == RecoveryKind::Verified;
    }
    report.first = start;
    report.last = end;
    let mut last = base_slot;
    last.seq = max_seq;
    Ok(Recovered {
        state: CommitState {
            last,
            page: base_page,
            meta,
            blocks,
        },
        start,
        end,
        report,
    })
}
