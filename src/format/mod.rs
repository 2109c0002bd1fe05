//! The on-disk format: geometry, header slots, block checksum entries and the live page.
//!
//! Pure code, no I/O: everything here is a function of bytes and numbers, so it is tested
//! exhaustively and fuzzed. `docs/FORMAT.md` is the prose version of this module; every
//! field offset below is computed from the previous one and checked by `const` assertions.

pub(crate) mod entry;
pub(crate) mod live;
pub(crate) mod slot;

use crate::error::{Error, Result};

/// Format version written by this build.
pub(crate) const VERSION: u32 = 1;
/// The first eight bytes of each header slot.
pub(crate) const MAGIC: [u8; 8] = *b"DBACKLOG";
/// The unit of layout: header slots, the live page, the table and the data region start on
/// multiples of it. Fixed by the format, independent of the machine's page size.
pub(crate) const PAGE: u64 = 4096;
/// Smallest capacity accepted (Redis's minimum repl-backlog-size).
pub const MIN_CAPACITY: u64 = 16 * 1024;
/// Largest capacity accepted: 1 TiB.
pub const MAX_CAPACITY: u64 = 1 << 40;
/// Blocks per capacity the checksum table aims for (the block size is clamped to
/// `MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT`).
const TARGET_BLOCKS: u64 = 1024;
pub(crate) const MIN_BLOCK_SHIFT: u32 = 12;
pub(crate) const MAX_BLOCK_SHIFT: u32 = 20;

pub(crate) const SLOT_OFFSETS: [u64; 2] = [0, PAGE];
pub(crate) const LIVE_OFFSET: u64 = 2 * PAGE;
pub(crate) const TABLE_OFFSET: u64 = 3 * PAGE;

const _: () = assert!(slot::SLOT_LEN as u64 <= PAGE);
const _: () = assert!(live::LIVE_LEN as u64 <= PAGE);
const _: () = assert!(PAGE.is_multiple_of(entry::ENTRY_LEN as u64));
// A 512-byte sector holds whole entries, so a torn sector never splits one.
const _: () = assert!(512 % entry::ENTRY_LEN == 0);

/// Where everything lives in a file of a given capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes of replication stream the ring holds.
    pub(crate) capacity: u64,
    /// log2 of the checksum block size.
    pub(crate) block_shift: u32,
    /// Number of checksum blocks (the last may be short).
    pub(crate) nblocks: u64,
    /// Start of the data region.
    pub(crate) data_offset: u64,
    /// Total file length.
    pub(crate) file_len: u64,
}

pub(crate) fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

impl Geometry {
    /// The block-size rule: about `TARGET_BLOCKS` blocks, a power of two from 4 KiB to 1 MiB.
    pub(crate) fn block_shift_for(capacity: u64) -> u32 {
        let want = capacity.div_ceil(TARGET_BLOCKS).next_power_of_two();
        want.trailing_zeros()
            .clamp(MIN_BLOCK_SHIFT, MAX_BLOCK_SHIFT)
    }

    /// The layout for `capacity`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the capacity is outside
    /// `MIN_CAPACITY..=MAX_CAPACITY`.
    pub(crate) fn for_capacity(capacity: u64) -> Result<Self> {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidArgument(format!(
                "capacity {capacity} is outside {MIN_CAPACITY}..={MAX_CAPACITY} bytes"
            )));
        }
        let block_shift = Self::block_shift_for(capacity);
        let nblocks = capacity.div_ceil(1 << block_shift);
        let table_len = round_up(nblocks * 2 * entry::ENTRY_LEN as u64, PAGE);
        let data_offset = TABLE_OFFSET + table_len;
        let file_len = round_up(data_offset + capacity, PAGE);
        Ok(Geometry {
            capacity,
            block_shift,
            nblocks,
            data_offset,
            file_len,
        })
    }

    pub(crate) fn block_size(self) -> u64 {
        1 << self.block_shift
    }

    /// File offset of copy `copy` (0 or 1) of block `block`'s checksum entry.
    #[allow(clippy::unused_self)] // the table's place is part of the geometry
    pub(crate) fn entry_offset(&self, block: u64, copy: usize) -> u64 {
        TABLE_OFFSET + (block * 2 + copy as u64) * entry::ENTRY_LEN as u64
    }

    /// Physical ring position of the byte with replication offset `offset`.
    pub(crate) fn pos(&self, offset: u64) -> u64 {
        offset % self.capacity
    }

    /// Block holding ring position `pos`.
    pub(crate) fn block_of_pos(&self, pos: u64) -> u64 {
        pos >> self.block_shift
    }

    /// Ring positions `[start, end)` of block `block`.
    pub(crate) fn block_bounds(&self, block: u64) -> (u64, u64) {
        let start = block << self.block_shift;
        (start, (start + self.block_size()).min(self.capacity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_limits_are_enforced() {
        assert!(Geometry::for_capacity(MIN_CAPACITY - 1).is_err());
        assert!(Geometry::for_capacity(MAX_CAPACITY + 1).is_err());
        assert!(Geometry::for_capacity(MIN_CAPACITY).is_ok());
        assert!(Geometry::for_capacity(64 << 30).is_ok());
    }

    #[test]
    fn block_size_tracks_capacity_within_bounds() {
        assert_eq!(Geometry::block_shift_for(16 << 10), 12);
        assert_eq!(Geometry::block_shift_for(1 << 20), 12);
        assert_eq!(Geometry::block_shift_for(64 << 20), 16);
        assert_eq!(Geometry::block_shift_for(1 << 30), 20);
        assert_eq!(Geometry::block_shift_for(64 << 30), 20);
    }

    #[test]
    fn layout_is_page_aligned_and_blocks_cover_the_ring() {
        for cap in [
            MIN_CAPACITY,
            16 * 1024 + 1,
            1_000_003,
            1 << 20,
            3 << 30,
            64 << 30,
        ] {
            let g = Geometry::for_capacity(cap).unwrap();
            assert_eq!(g.data_offset % PAGE, 0);
            assert_eq!(g.file_len % PAGE, 0);
            assert!(g.file_len >= g.data_offset + cap);
            assert!(g.entry_offset(g.nblocks - 1, 1) + 32 <= g.data_offset);
            let (_, last_end) = g.block_bounds(g.nblocks - 1);
            assert_eq!(last_end, cap);
            assert_eq!(g.block_of_pos(cap - 1), g.nblocks - 1);
        }
    }
}
