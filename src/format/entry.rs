//! Block checksum entries: each ring block has two 32-byte entries, written alternately, that
//! say which replication offsets the block holds, under which epoch, and their CRC-32.
//!
//! Appends only extend a block's run, so an older entry of the same run still verifies the
//! prefix it covers: a torn commit can always fall back to the other copy.

/// Encoded size of one entry.
pub(crate) const ENTRY_LEN: usize = 32;

const O_FIRST: usize = 0;
const O_EPOCH: usize = O_FIRST + 8;
const O_LEN: usize = O_EPOCH + 8;
const O_CRC: usize = O_LEN + 4;
const O_SEQ: usize = O_CRC + 4;
const O_ECRC: usize = O_SEQ + 4;
const _: () = assert!(O_ECRC + 4 == ENTRY_LEN);

/// One decoded entry: bytes `first .. first + len` were written under `epoch` and their
/// CRC-32 is `crc`. `seq` counts updates of the block, to tell the newer copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) first: u64,
    pub(crate) epoch: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) seq: u32,
}

fn u64_at(b: &[u8; ENTRY_LEN], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8; ENTRY_LEN], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl Entry {
    pub(crate) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[O_FIRST..O_FIRST + 8].copy_from_slice(&self.first.to_le_bytes());
        b[O_EPOCH..O_EPOCH + 8].copy_from_slice(&self.epoch.to_le_bytes());
        b[O_LEN..O_LEN + 4].copy_from_slice(&self.len.to_le_bytes());
        b[O_CRC..O_CRC + 4].copy_from_slice(&self.crc.to_le_bytes());
        b[O_SEQ..O_SEQ + 4].copy_from_slice(&self.seq.to_le_bytes());
        let ecrc = crc32fast::hash(&b[..O_ECRC]);
        b[O_ECRC..].copy_from_slice(&ecrc.to_le_bytes());
        b
    }

    /// Decodes an entry; `None` if its own checksum fails (never written, torn or garbage).
    pub(crate) fn decode(b: &[u8; ENTRY_LEN]) -> Option<Entry> {
        if crc32fast::hash(&b[..O_ECRC]) != u32_at(b, O_ECRC) {
            return None;
        }
        Some(Entry {
            first: u64_at(b, O_FIRST),
            epoch: u64_at(b, O_EPOCH),
            len: u32_at(b, O_LEN),
            crc: u32_at(b, O_CRC),
            seq: u32_at(b, O_SEQ),
        })
    }

    /// Offset of the last byte covered (`first - 1` when empty).
    pub(crate) fn last(&self) -> u64 {
        self.first
            .saturating_add(u64::from(self.len))
            .saturating_sub(1)
    }

    /// Whether `self` is a newer update than `other` (wrapping sequence comparison).
    pub(crate) fn newer_than(&self, other: &Entry) -> bool {
        self.seq.wrapping_sub(other.seq).cast_signed() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bit_flips_are_caught() {
        let e = Entry {
            first: 1 << 62,
            epoch: 9,
            len: 4096,
            crc: 0xdead_beef,
            seq: 3,
        };
        let b = e.encode();
        assert_eq!(Entry::decode(&b), Some(e));
        for bit in 0..ENTRY_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Entry::decode(&c), None, "bit {bit}");
        }
    }

    #[test]
    fn zeroed_entry_is_not_valid() {
        assert_eq!(Entry::decode(&[0u8; ENTRY_LEN]), None);
    }

    #[test]
    fn sequence_comparison_wraps() {
        let a = Entry {
            first: 0,
            epoch: 0,
            len: 0,
            crc: 0,
            seq: u32::MAX,
        };
        let b = Entry { seq: 0, ..a };
        assert!(b.newer_than(&a));
        assert!(!a.newer_than(&b));
    }
}
