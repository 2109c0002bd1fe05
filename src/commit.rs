//! Commits: making a prefix of the stream durable with exactly one sync.
//!
//! A commit (1) writes, for every checksum block the new bytes touched, that block's entry
//! into the copy the previous update of the block did not use, (2) writes the header slot the
//! previous commit did not use, with a sequence number one higher, and (3) syncs once.
//! Recovery after a power loss trusts a slot only if the blocks of its delta (the bytes after
//! the previous commit's end) verify, so a slot that landed without its data is rejected and
//! the older slot — whose entries the commit did not overwrite — is used instead.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::SLOT_OFFSETS;
use crate::format::entry::Entry;
use crate::format::slot::{EpochLimit, Generation, MAX_EPOCHS, MAX_GENERATIONS, Slot};
use crate::ring::{chunks, run_base};
use crate::runid::RunId;
use crate::seqlock;
use crate::shared::Shared;

/// What the committer knows of one checksum block.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockState {
    /// The latest entry written for the block, if it may be extended (it matches the bytes).
    pub(crate) entry: Option<Entry>,
    /// The copy (0 or 1) holding the latest entry: the next update writes the other one.
    pub(crate) copy: usize,
    /// Update counter of the latest entry.
    pub(crate) seq: u32,
}

/// The history's identity, changed only by rare operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) run_id: RunId,
    /// Past generations, newest first.
    pub(crate) gens: Vec<Generation>,
    pub(crate) epoch: u64,
    /// Past epochs still covering bytes of this history, newest first.
    pub(crate) epochs: Vec<EpochLimit>,
}

impl Meta {
    pub(crate) fn from_slot(s: &Slot) -> Self {
        Meta {
            run_id: s.run_id,
            gens: s.gens.clone(),
            epoch: s.epoch,
            epochs: s.epochs.clone(),
        }
    }

    /// Redis's `shiftReplicationId`: the current ID becomes a past one, valid for PSYNC
    /// offsets up to `end + 1`.
    pub(crate) fn shift(&mut self, end: u64) {
        self.gens.insert(
            0,
            Generation {
                id: self.run_id,
                second_offset: end + 1,
            },
        );
        self.gens.truncate(MAX_GENERATIONS);
        self.run_id = RunId::random();
    }

    /// A replica following a master whose replication ID is `id` (Redis's reaction to
    /// `+CONTINUE <new id>`): the current ID becomes a past one, valid up to `end + 1`, and
    /// `id` the current one. Older entries of `id` itself are dropped: the current ID already
    /// covers every offset they allowed.
    pub(crate) fn shift_to(&mut self, end: u64, id: RunId) {
        if id == self.run_id {
            return;
        }
        self.gens.retain(|g| g.id != id);
        self.gens.insert(
            0,
            Generation {
                id: self.run_id,
                second_offset: end + 1,
            },
        );
        self.gens.truncate(MAX_GENERATIONS);
        self.run_id = id;
    }

    /// The history is cut after `end`: nothing past it may be served or continued from.
    /// Starts a new epoch (numbered above `floor`) so bytes written later at the same offsets
    /// can never be confused with the dropped ones.
    pub(crate) fn cut(&mut self, end: u64, floor: u64) {
        for g in &mut self.gens {
            g.second_offset = g.second_offset.min(end + 1);
        }
        for e in &mut self.epochs {
            e.until = e.until.min(end);
        }
        self.epochs.insert(
            0,
            EpochLimit {
                epoch: self.epoch,
                until: end,
            },
        );
        self.epochs.truncate(MAX_EPOCHS);
        self.epoch = self.epoch.max(floor) + 1;
    }
}

/// Who commits, which decides how the commit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitKind {
    /// The writer's own thread (a flush, an `Always` append, a history change, an open):
    /// nothing appends meanwhile.
    Writer,
    /// The writer's last commit at close, which marks the file cleanly closed. Only after a
    /// `Writer` commit made the data durable: recovery trusts a clean mark without verifying
    /// data, and one sync may land its writes in any order.
    CleanClose,
    /// The background flusher, while the writer may be appending: the start is re-read once
    /// the protection is published (before hashing) and again after hashing, so bytes lapped
    /// meanwhile are neither hashed nor claimed.
    Background,
}

/// The committer's state; lives behind the commit mutex.
#[derive(Debug)]
pub(crate) struct CommitState {
    /// The last slot written (and, once `sync` returned, committed).
    pub(crate) last: Slot,
    /// Which slot page holds `last`.
    pub(crate) page: usize,
    pub(crate) meta: Meta,
    pub(crate) blocks: Vec<BlockState>,
}

impl CommitState {
    /// Makes stream bytes `start..=end` and the current metadata durable (see [`CommitKind`]
    /// for what each kind of commit does differently).
    pub(crate) fn commit(
        &mut self,
        sh: &Shared,
        start: u64,
        end: u64,
        kind: CommitKind,
    ) -> Result<u64> {
        let racy = kind == CommitKind::Background;
        let g = sh.geo;
        let prev_end = self.last.end.min(end);
        // What the writer must not overwrite unprotected once this commit may be the last
        // durable one: published before any byte of the delta is hashed, settled after the
        // sync. A writer that sees it takes the commit lock (held here) before overwriting.
        let protect = if end > prev_end {
            run_base(&g, prev_end + 1)
        } else {
            u64::MAX
        };
        seqlock::lower_protection(sh, protect);
        let mut start = start;
        if racy {
            // Dekker with the appending writer (`seqlock::must_protect`): either it saw the
            // protection, or its start (and so which bytes it is about to overwrite) is
            // visible here. This side is the rare one, so it takes the heavy fence.
            match seqlock::start_after_protection(sh, start, end) {
                Some(s) => start = s,
                // The writer may have overwritten bytes unseen: skip this turn (the next
                // one runs with full fences on both sides).
                None => return Ok(self.last.end),
            }
        }
        let lo = (prev_end + 1).max(start);
        if lo <= end {
            let all: Vec<_> = chunks(&g, lo, end).collect();
            let last_block = all.last().map(|c| c.block);
            for (i, c) in all.iter().enumerate() {
                // The first chunk of a delta that wraps all the way round shares its block with
                // the last chunk, whose run (from the block's start) supersedes it.
                if i == 0 && all.len() > 1 && Some(c.block) == last_block {
                    continue;
                }
                self.update_block(sh, c.block, c.first, c.last, start);
            }
        }
        // Bytes older than the delta that the writer lapped while this hashed are not
        // claimed either. (Bytes below the protection lapped during the sync still are;
        // recovery cuts the range there: depth, not correctness.)
        let start = if racy {
            seqlock::start_after_hashing(sh, start, end)
        } else {
            start
        };
        let slot = Slot {
            seq: self.last.seq + 1,
            clean: kind == CommitKind::CleanClose,
            capacity: g.capacity,
            block_shift: g.block_shift,
            epoch: self.meta.epoch,
            start,
            end,
            prev_end,
            run_id: self.meta.run_id,
            gens: self.meta.gens.clone(),
            epochs: self.meta.epochs.clone(),
        };
        let page = 1 - self.page;
        sh.medium.write(SLOT_OFFSETS[page], &slot.encode());
        sh.medium
            .sync()
            .map_err(|e| Error::io("syncing the backlog", Some(&sh.path), e))?;
        self.last = slot;
        self.page = page;
        seqlock::settle_protection(sh, protect);
        sh.durable().store(end, Ordering::Release);
        Ok(end)
    }

    /// Called before the writer overwrites the ring bytes below `new_start`. If they include
    /// bytes of the last commit's delta — or older bytes of the run its first block's entry
    /// covers, which that entry's checksum also needs — that commit could no longer be verified
    /// after a power loss and recovery would fall back to an older slot, losing offsets already
    /// acknowledged durable. So first commit the same end with an empty delta (start past the
    /// dropped bytes): one extra sync, at most once per commit, only when a lap overtakes it.
    pub(crate) fn protect_last_commit(&mut self, sh: &Shared, new_start: u64) -> Result<()> {
        let (end, prev_end) = (self.last.end, self.last.prev_end);
        if end > prev_end && new_start > run_base(&sh.geo, prev_end + 1) {
            self.commit(sh, new_start.min(end + 1), end, CommitKind::Writer)?;
        }
        Ok(())
    }

    fn update_block(&mut self, sh: &Shared, block: u64, a: u64, b: u64, start: u64) {
        let g = sh.geo;
        let base = run_base(&g, a).max(start);
        let st = &mut self.blocks[block as usize];
        let crc = match st.entry {
            Some(e)
                if e.epoch == self.meta.epoch
                    && e.first == base
                    && e.len > 0
                    && e.last() + 1 == a =>
            {
                sh.crc_range(e.crc, a, b)
            }
            _ => sh.crc_range(0, base, b),
        };
        let seq = st.seq.wrapping_add(1);
        let entry = Entry {
            first: base,
            epoch: self.meta.epoch,
            len: (b - base + 1) as u32,
            crc,
            seq,
        };
        let copy = 1 - st.copy;
        sh.medium
            .write(g.entry_offset(block, copy), &entry.encode());
        *st = BlockState {
            entry: Some(entry),
            copy,
            seq,
        };
    }
}
