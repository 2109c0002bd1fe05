//! Pure ring arithmetic: replication offsets to physical spans and checksum-block chunks.
//!
//! The byte with replication offset `o` lives at ring position `o % capacity`. A run of at
//! most `capacity` consecutive offsets maps to at most two physical spans.

use crate::format::Geometry;

/// A physical span of the ring: `len` bytes from ring position `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) pos: u64,
    pub(crate) len: u64,
}

/// The physical spans of offsets `first .. first + len`. `len` must not exceed `capacity`.
#[inline]
pub(crate) fn spans(capacity: u64, first: u64, len: u64) -> (Span, Span) {
    spans_at(capacity, first % capacity, len)
}

/// [`spans`] for a run whose first byte is at ring position `pos` (`pos < capacity`).
#[inline]
pub(crate) fn spans_at(capacity: u64, pos: u64, len: u64) -> (Span, Span) {
    debug_assert!(len <= capacity && pos < capacity);
    let head = len.min(capacity - pos);
    (
        Span { pos, len: head },
        Span {
            pos: 0,
            len: len - head,
        },
    )
}

/// A maximal run of consecutive offsets `first..=last` that sits in one checksum block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) block: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// Splits offsets `first..=last` (at most `capacity` of them) into per-block chunks, in
/// increasing offset order.
pub(crate) fn chunks(g: &Geometry, first: u64, last: u64) -> impl Iterator<Item = Chunk> + '_ {
    let mut next = first;
    std::iter::from_fn(move || {
        if next > last {
            return None;
        }
        let pos = g.pos(next);
        let block = g.block_of_pos(pos);
        let (_, bend) = g.block_bounds(block);
        let room = bend - pos;
        let chunk_last = last.min(next + room - 1);
        let c = Chunk {
            block,
            first: next,
            last: chunk_last,
        };
        next = chunk_last + 1;
        Some(c)
    })
}

/// The offset at which the run holding `offset` begins in its block: the offset stored at the
/// block's first position in the same lap.
pub(crate) fn run_base(g: &Geometry, offset: u64) -> u64 {
    let pos = g.pos(offset);
    let (bstart, _) = g.block_bounds(g.block_of_pos(pos));
    offset - (pos - bstart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn span_wraps_at_the_ring_end() {
        assert_eq!(
            spans(100, 95, 10),
            (Span { pos: 95, len: 5 }, Span { pos: 0, len: 5 })
        );
        assert_eq!(
            spans(100, 200, 100),
            (Span { pos: 0, len: 100 }, Span { pos: 0, len: 0 })
        );
    }

    proptest! {
        #[test]
        fn spans_cover_exactly_the_requested_positions(cap in 16u64..5000, first in 0u64..(1u64 << 62), len in 0u64..5000) {
            let len = len.min(cap);
            let (a, b) = spans(cap, first, len);
            prop_assert_eq!(a.len + b.len, len);
            for i in 0..len {
                let want = (first + i) % cap;
                let got = if i < a.len { a.pos + i } else { b.pos + (i - a.len) };
                prop_assert_eq!(want, got);
            }
        }

        #[test]
        fn chunks_partition_the_range_by_block(capk in 16u64..3000, extra in 0u64..4096, first in 1u64..(1u64 << 62), len in 1u64..100_000) {
            let g = Geometry::for_capacity(capk * 1024 + extra).unwrap();
            let len = len.min(g.capacity);
            let last = first + len - 1;
            let mut expect = first;
            for c in chunks(&g, first, last) {
                prop_assert_eq!(c.first, expect);
                prop_assert!(c.last >= c.first);
                for o in [c.first, c.last] {
                    prop_assert_eq!(g.block_of_pos(g.pos(o)), c.block);
                }
                prop_assert!(g.pos(c.last) >= g.pos(c.first));
                prop_assert_eq!(run_base(&g, c.last), run_base(&g, c.first));
                expect = c.last + 1;
            }
            prop_assert_eq!(expect, last + 1);
        }
    }
}
