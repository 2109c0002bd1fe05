//! CRC-64/Jones, the checksum at the end of every RDB file.
//!
//! Parameters (as Redis's `crc64.c`): reflected polynomial 0x95AC9329AC4BC9B5, initial value
//! 0, no final xor. The check value of `"123456789"` is 0xe9c6d914c4b8d9ca. Table-driven,
//! eight tables ("slicing by 8") so that checksumming a large snapshot is not the bottleneck.

/// The reflected polynomial.
const POLY: u64 = 0x95AC_9329_AC4B_C9B5;

/// `TABLES[0]` is the classic byte table; `TABLES[k][b]` is the CRC of byte `b` followed by `k`
/// zero bytes, which lets eight input bytes be folded in at once.
static TABLES: [[u64; 256]; 8] = build_tables();

#[allow(clippy::indexing_slicing)] // Constant evaluation: every index is below 256 or 8.
const fn build_tables() -> [[u64; 256]; 8] {
    let mut tables = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// Table lookup; a `u8` index always fits the 256 entries.
#[allow(clippy::indexing_slicing)]
#[inline]
fn t(table: usize, index: u8) -> u64 {
    TABLES[table & 7][usize::from(index)]
}

/// Continues a CRC-64/Jones over `bytes`: start with `crc = 0`, feed chunks in order.
///
/// # Examples
///
/// ```ignore
/// use crate::crc64::crc64;
/// assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
/// assert_eq!(crc64(crc64(0, b"1234"), b"56789"), 0xe9c6_d914_c4b8_d9ca);
/// ```
#[must_use]
pub(crate) fn crc64(crc: u64, bytes: &[u8]) -> u64 {
    let mut crc = crc;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = crc ^ u64::from_le_bytes(word);
        let b = x.to_le_bytes();
        crc = t(7, b[0])
            ^ t(6, b[1])
            ^ t(5, b[2])
            ^ t(4, b[3])
            ^ t(3, b[4])
            ^ t(2, b[5])
            ^ t(1, b[6])
            ^ t(0, b[7]);
    }
    for &byte in chunks.remainder() {
        let [low, ..] = crc.to_le_bytes();
        crc = t(0, low ^ byte) ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// Bit-at-a-time reference, straight from the definition.
    fn reference(bytes: &[u8]) -> u64 {
        let mut crc = 0u64;
        for &b in bytes {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn check_value_of_123456789_matches_redis() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(reference(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn empty_input_leaves_crc_unchanged() {
        assert_eq!(crc64(0, b""), 0);
        assert_eq!(crc64(42, b""), 42);
    }

    #[test]
    fn sliced_tables_agree_with_bitwise_reference_at_every_length_and_split() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(crc64(0, &data[..len]), reference(&data[..len]), "len {len}");
        }
        let whole = crc64(0, &data);
        for split in 0..data.len() {
            assert_eq!(
                crc64(crc64(0, &data[..split]), &data[split..]),
                whole,
                "split {split}"
            );
        }
    }
}
