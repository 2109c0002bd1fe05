//! Header slots: the committed, checksummed description of the backlog.
//!
//! Two slots live on pages 0 and 1. A commit writes the slot the last commit did not, with a
//! sequence number one higher; recovery prefers the highest valid sequence whose data verifies.

use crate::format::{
    Geometry, MAGIC, MAX_BLOCK_SHIFT, MAX_CAPACITY, MIN_BLOCK_SHIFT, MIN_CAPACITY, VERSION,
};
use crate::runid::RunId;

/// Past generations (run IDs) a slot remembers for PSYNC.
pub(crate) const MAX_GENERATIONS: usize = 8;
/// Past epochs (histories whose bytes are still valid up to an offset) a slot remembers.
pub(crate) const MAX_EPOCHS: usize = 8;

const GEN_LEN: usize = RunId::LEN + 8;
const EPOCH_LEN: usize = 16;

// Field offsets, each computed from the previous one.
const O_MAGIC: usize = 0;
const O_VERSION: usize = O_MAGIC + 8;
const O_FLAGS: usize = O_VERSION + 4;
const O_SEQ: usize = O_FLAGS + 4;
const O_CAPACITY: usize = O_SEQ + 8;
const O_BLOCK_SHIFT: usize = O_CAPACITY + 8;
const O_RESERVED: usize = O_BLOCK_SHIFT + 4;
const O_EPOCH: usize = O_RESERVED + 4;
const O_START: usize = O_EPOCH + 8;
const O_END: usize = O_START + 8;
const O_PREV_END: usize = O_END + 8;
const O_RUN_ID: usize = O_PREV_END + 8;
const O_GEN_COUNT: usize = O_RUN_ID + RunId::LEN;
const O_EPOCH_COUNT: usize = O_GEN_COUNT + 4;
const O_GENS: usize = O_EPOCH_COUNT + 4;
const O_EPOCHS: usize = O_GENS + MAX_GENERATIONS * GEN_LEN;
const O_CRC: usize = O_EPOCHS + MAX_EPOCHS * EPOCH_LEN;
/// Encoded length of a slot, checksum included.
pub(crate) const SLOT_LEN: usize = O_CRC + 4;

const _: () =
    assert!(O_EPOCH.is_multiple_of(8) && O_GENS.is_multiple_of(8) && O_EPOCHS.is_multiple_of(8));
const _: () = assert!(SLOT_LEN == 636);

const FLAG_CLEAN: u32 = 1;

/// Largest offset the format allows: PSYNC offsets are signed 64-bit on the wire.
pub(crate) const MAX_OFFSET: u64 = i64::MAX as u64 - 1;

/// A past run ID and the PSYNC offset up to which a replica that followed it may continue
/// (Redis's `replid2` / `second_replid_offset`, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    pub(crate) id: RunId,
    pub(crate) second_offset: u64,
}

/// A past epoch: bytes written under it are bytes of the current history up to `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EpochLimit {
    pub(crate) epoch: u64,
    pub(crate) until: u64,
}

/// A decoded slot whose checksum and internal invariants hold. Geometry against the real
/// file is checked separately by [`Slot::check_geometry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) clean: bool,
    pub(crate) capacity: u64,
    pub(crate) block_shift: u32,
    /// Current epoch: bumped whenever the history diverges (reset, truncate, lossy recovery).
    pub(crate) epoch: u64,
    /// Offset of the oldest byte held (`repl_backlog_first_byte_offset`).
    pub(crate) start: u64,
    /// Offset of the newest byte (`master_repl_offset`).
    pub(crate) end: u64,
    /// `end` of the previous commit: bytes after it are this commit's delta.
    pub(crate) prev_end: u64,
    pub(crate) run_id: RunId,
    /// Newest first.
    pub(crate) gens: Vec<Generation>,
    /// Newest first.
    pub(crate) epochs: Vec<EpochLimit>,
}

/// Why a slot's bytes were rejected: the field's byte offset, what was expected and found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotError {
    pub(crate) at: usize,
    pub(crate) expected: String,
    pub(crate) found: String,
    /// The magic and checksum were right but the version is another one.
    pub(crate) version: Option<u32>,
}

fn err(at: usize, expected: impl Into<String>, found: impl Into<String>) -> SlotError {
    SlotError {
        at,
        expected: expected.into(),
        found: found.into(),
        version: None,
    }
}

fn get<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], SlotError> {
    buf.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| err(at, format!("{N} more bytes"), "end of data"))
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, SlotError> {
    get::<4>(buf, at).map(u32::from_le_bytes)
}

fn u64_at(buf: &[u8], at: usize) -> Result<u64, SlotError> {
    get::<8>(buf, at).map(u64::from_le_bytes)
}

fn id_at(buf: &[u8], at: usize) -> Result<RunId, SlotError> {
    let raw = get::<{ RunId::LEN }>(buf, at)?;
    RunId::from_bytes(&raw).map_err(|_| {
        err(
            at,
            "a run ID of 40 lowercase hex digits",
            format!("{:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

impl Slot {
    /// Encodes the slot, checksum included.
    pub(crate) fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[O_MAGIC..O_MAGIC + 8].copy_from_slice(&MAGIC);
        b[O_VERSION..O_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.clean { FLAG_CLEAN } else { 0 };
        b[O_FLAGS..O_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
        b[O_SEQ..O_SEQ + 8].copy_from_slice(&self.seq.to_le_bytes());
        b[O_CAPACITY..O_CAPACITY + 8].copy_from_slice(&self.capacity.to_le_bytes());
        b[O_BLOCK_SHIFT..O_BLOCK_SHIFT + 4].copy_from_slice(&self.block_shift.to_le_bytes());
        b[O_EPOCH..O_EPOCH + 8].copy_from_slice(&self.epoch.to_le_bytes());
        b[O_START..O_START + 8].copy_from_slice(&self.start.to_le_bytes());
        b[O_END..O_END + 8].copy_from_slice(&self.end.to_le_bytes());
        b[O_PREV_END..O_PREV_END + 8].copy_from_slice(&self.prev_end.to_le_bytes());
        b[O_RUN_ID..O_RUN_ID + RunId::LEN].copy_from_slice(self.run_id.as_bytes());
        let ngens = self.gens.len().min(MAX_GENERATIONS);
        let nepochs = self.epochs.len().min(MAX_EPOCHS);
        b[O_GEN_COUNT..O_GEN_COUNT + 4].copy_from_slice(&(ngens as u32).to_le_bytes());
        b[O_EPOCH_COUNT..O_EPOCH_COUNT + 4].copy_from_slice(&(nepochs as u32).to_le_bytes());
        for (i, g) in self.gens.iter().take(ngens).enumerate() {
            let at = O_GENS + i * GEN_LEN;
            b[at..at + RunId::LEN].copy_from_slice(g.id.as_bytes());
            b[at + RunId::LEN..at + GEN_LEN].copy_from_slice(&g.second_offset.to_le_bytes());
        }
        for (i, e) in self.epochs.iter().take(nepochs).enumerate() {
            let at = O_EPOCHS + i * EPOCH_LEN;
            b[at..at + 8].copy_from_slice(&e.epoch.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&e.until.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..O_CRC]);
        b[O_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a slot from untrusted bytes. Never panics.
    #[allow(clippy::too_many_lines)] // one check per field, in field order
    pub(crate) fn decode(buf: &[u8]) -> Result<Slot, SlotError> {
        let magic = get::<8>(buf, O_MAGIC)?;
        if magic != MAGIC {
            return Err(err(
                O_MAGIC,
                format!("magic {:?}", "DBACKLOG"),
                format!("{magic:02x?}"),
            ));
        }
        let stored = u32_at(buf, O_CRC)?;
        let computed = crc32fast::hash(buf.get(..O_CRC).unwrap_or_default());
        if stored != computed {
            return Err(err(
                O_CRC,
                format!("header checksum {computed:#010x}"),
                format!("{stored:#010x}"),
            ));
        }
        let version = u32_at(buf, O_VERSION)?;
        if version != VERSION {
            let mut e = err(
                O_VERSION,
                format!("version {VERSION}"),
                format!("version {version}"),
            );
            e.version = Some(version);
            return Err(e);
        }
        let flags = u32_at(buf, O_FLAGS)?;
        if flags & !FLAG_CLEAN != 0 {
            return Err(err(O_FLAGS, "flags 0 or 1", format!("{flags:#x}")));
        }
        let capacity = u64_at(buf, O_CAPACITY)?;
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(err(
                O_CAPACITY,
                format!("capacity in {MIN_CAPACITY}..={MAX_CAPACITY}"),
                capacity.to_string(),
            ));
        }
        let block_shift = u32_at(buf, O_BLOCK_SHIFT)?;
        let want_shift = Geometry::block_shift_for(capacity);
        if block_shift != want_shift || !(MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT).contains(&block_shift)
        {
            return Err(err(
                O_BLOCK_SHIFT,
                format!("block shift {want_shift}"),
                block_shift.to_string(),
            ));
        }
        let start = u64_at(buf, O_START)?;
        let end = u64_at(buf, O_END)?;
        let prev_end = u64_at(buf, O_PREV_END)?;
        if end > MAX_OFFSET {
            return Err(err(
                O_END,
                format!("end offset <= {MAX_OFFSET}"),
                end.to_string(),
            ));
        }
        if start > end + 1 || end + 1 - start > capacity {
            return Err(err(
                O_START,
                format!(
                    "start offset in {}..={}",
                    (end + 1).saturating_sub(capacity),
                    end + 1
                ),
                start.to_string(),
            ));
        }
        if prev_end > end {
            return Err(err(
                O_PREV_END,
                format!("previous end <= {end}"),
                prev_end.to_string(),
            ));
        }
        let run_id = id_at(buf, O_RUN_ID)?;
        let ngens = u32_at(buf, O_GEN_COUNT)? as usize;
        if ngens > MAX_GENERATIONS {
            return Err(err(
                O_GEN_COUNT,
                format!("at most {MAX_GENERATIONS} generations"),
                ngens.to_string(),
            ));
        }
        let nepochs = u32_at(buf, O_EPOCH_COUNT)? as usize;
        if nepochs > MAX_EPOCHS {
            return Err(err(
                O_EPOCH_COUNT,
                format!("at most {MAX_EPOCHS} epochs"),
                nepochs.to_string(),
            ));
        }
        // Unused bytes must be zero: every valid slot then has exactly one encoding, and
        // bytes nobody reads cannot carry anything past the checksum.
        let reserved = u32_at(buf, O_RESERVED)?;
        if reserved != 0 {
            return Err(err(O_RESERVED, "reserved 0", reserved.to_string()));
        }
        for (from, to) in [
            (O_GENS + ngens * GEN_LEN, O_EPOCHS),
            (O_EPOCHS + nepochs * EPOCH_LEN, O_CRC),
        ] {
            if let Some(at) = buf
                .get(from..to)
                .and_then(|unused| unused.iter().position(|&b| b != 0))
            {
                return Err(err(from + at, "unused bytes zero", "a non-zero byte"));
            }
        }
        let mut gens = Vec::with_capacity(ngens);
        for i in 0..ngens {
            let at = O_GENS + i * GEN_LEN;
            let id = id_at(buf, at)?;
            let second_offset = u64_at(buf, at + RunId::LEN)?;
            if second_offset > end + 1 {
                return Err(err(
                    at + RunId::LEN,
                    format!("second offset <= {}", end + 1),
                    second_offset.to_string(),
                ));
            }
            gens.push(Generation { id, second_offset });
        }
        let epoch = u64_at(buf, O_EPOCH)?;
        let mut epochs = Vec::with_capacity(nepochs);
        for i in 0..nepochs {
            let at = O_EPOCHS + i * EPOCH_LEN;
            let e = u64_at(buf, at)?;
            let until = u64_at(buf, at + 8)?;
            if e >= epoch || until > end {
                return Err(err(
                    at,
                    format!("an epoch below {epoch} valid until <= {end}"),
                    format!("epoch {e} until {until}"),
                ));
            }
            epochs.push(EpochLimit { epoch: e, until });
        }
        Ok(Slot {
            seq: u64_at(buf, O_SEQ)?,
            clean: flags & FLAG_CLEAN != 0,
            capacity,
            block_shift,
            epoch,
            start,
            end,
            prev_end,
            run_id,
            gens,
            epochs,
        })
    }

    /// Checks the slot's geometry against the real file length.
    pub(crate) fn check_geometry(&self, file_len: u64) -> Result<Geometry, SlotError> {
        let g = Geometry::for_capacity(self.capacity)
            .map_err(|e| err(O_CAPACITY, "a valid capacity", e.to_string()))?;
        if file_len < g.file_len {
            return Err(err(
                0,
                format!(
                    "a file of {} bytes for capacity {}",
                    g.file_len, self.capacity
                ),
                format!("{file_len} bytes"),
            ));
        }
        Ok(g)
    }

    /// The offset up to which bytes written under `epoch` belong to this slot's history.
    pub(crate) fn epoch_until(&self, epoch: u64) -> Option<u64> {
        if epoch == self.epoch {
            return Some(self.end);
        }
        self.epochs
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Slot {
        Slot {
            seq: 7,
            clean: true,
            capacity: 1 << 20,
            block_shift: 12,
            epoch: 3,
            start: 10,
            end: 10_010,
            prev_end: 9_000,
            run_id: RunId::random(),
            gens: vec![Generation {
                id: RunId::random(),
                second_offset: 5_000,
            }],
            epochs: vec![EpochLimit {
                epoch: 2,
                until: 4_000,
            }],
        }
    }

    #[test]
    fn valid_slot_round_trips_exactly() {
        let s = sample();
        assert_eq!(Slot::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Slot::decode(&b).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn unused_bytes_must_be_zero_so_valid_slots_round_trip_exactly() {
        let good = sample().encode();
        let ngens = sample().gens.len();
        for at in [O_RESERVED, O_GENS + ngens * GEN_LEN + 3, O_CRC - 1] {
            let mut b = good;
            b[at] = 0x5a;
            let crc = crc32fast::hash(&b[..O_CRC]);
            b[O_CRC..].copy_from_slice(&crc.to_le_bytes());
            assert!(
                Slot::decode(&b).is_err(),
                "non-zero unused byte {at} accepted"
            );
        }
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Slot::decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn impossible_offsets_are_rejected_even_with_a_good_checksum() {
        let mut s = sample();
        s.start = s.end + 2;
        assert_eq!(Slot::decode(&s.encode()).unwrap_err().at, O_START);
        let mut s = sample();
        s.start = 1;
        s.end = (1 << 20) + 5;
        assert!(Slot::decode(&s.encode()).is_err());
        let mut s = sample();
        s.prev_end = s.end + 1;
        assert!(Slot::decode(&s.encode()).is_err());
        let mut s = sample();
        s.block_shift = 13;
        assert!(Slot::decode(&s.encode()).is_err());
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let mut b = sample().encode();
        b[O_VERSION..O_VERSION + 4].copy_from_slice(&9u32.to_le_bytes());
        let crc = crc32fast::hash(&b[..O_CRC]);
        b[O_CRC..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Slot::decode(&b).unwrap_err().version, Some(9));
    }

    #[test]
    fn short_file_fails_the_geometry_check() {
        let s = sample();
        let g = Geometry::for_capacity(s.capacity).unwrap();
        assert!(s.check_geometry(g.file_len).is_ok());
        assert!(s.check_geometry(g.file_len - 1).is_err());
    }

    #[test]
    fn epoch_limits_answer_per_epoch() {
        let s = sample();
        assert_eq!(s.epoch_until(3), Some(10_010));
        assert_eq!(s.epoch_until(2), Some(4_000));
        assert_eq!(s.epoch_until(1), None);
    }
}
