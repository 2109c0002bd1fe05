//! LZF, the compression Redis uses for long strings in RDB files (`rdbcompression yes`).
//!
//! The format (liblzf's): a sequence of items, each starting with a control byte `c`:
//! - `c < 32`: a literal run; the next `c + 1` bytes are copied to the output.
//! - otherwise a back reference: length code `l = c >> 5` (if 7, add the next byte), offset
//!   `o = ((c & 0x1f) << 8) | next byte`; copy `l + 2` bytes starting `o + 1` bytes back in the
//!   output (the copy may overlap what it produces).
//!
//! The compressor here is written from that description; it produces valid LZF, not
//! necessarily the bytes liblzf would. A differential test against the `lzf` crate (a port of
//! liblzf) checks both directions; the crate is not used at run time because it cannot bound
//! the output of a hostile declared length before allocating, and its errors cannot tell a
//! truncated input from a bad back reference, which the RDB loader reports apart.

use std::fmt;

/// The largest back reference distance, `o + 1` with a 13-bit `o`.
const MAX_OFFSET: usize = 1 << 13;
/// The longest back reference: length code 7 + 255, plus 2.
const MAX_MATCH: usize = 7 + 255 + 2;
/// The longest literal run.
const MAX_LITERAL: usize = 32;
/// Most output bytes one input byte can produce (a 3-byte reference copying 264 bytes).
pub(crate) const MAX_EXPANSION: usize = 88;

/// Why LZF data could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum LzfError {
    /// The input ends inside an item.
    Truncated,
    /// A back reference points before the start of the output.
    BadReference,
    /// The output would be longer than the declared length.
    TooLong,
    /// The output is shorter than the declared length.
    TooShort,
    /// The declared length is more than the input could ever expand to.
    ImpossibleLength,
}

impl fmt::Display for LzfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LzfError::Truncated => "LZF data ends inside an item",
            LzfError::BadReference => "LZF back reference points before the output start",
            LzfError::TooLong => "LZF data expands beyond the declared length",
            LzfError::TooShort => "LZF data expands to less than the declared length",
            LzfError::ImpossibleLength => "declared length exceeds what the LZF data can hold",
        })
    }
}

impl std::error::Error for LzfError {}

/// Decompresses `input`, which must expand to exactly `expected_len` bytes (as Redis requires).
///
/// Memory is reserved only up to what `input` can really expand to.
///
/// # Errors
///
/// An [`LzfError`] for any malformed input or a length mismatch.
pub(crate) fn decompress(input: &[u8], expected_len: usize) -> Result<Vec<u8>, LzfError> {
    if expected_len > input.len().saturating_mul(MAX_EXPANSION) {
        return Err(LzfError::ImpossibleLength);
    }
    let mut out: Vec<u8> = Vec::with_capacity(expected_len);
    let mut ip = 0;
    while let Some(&ctrl) = input.get(ip) {
        ip += 1;
        if ctrl < 32 {
            let run = usize::from(ctrl) + 1;
            let literal = input.get(ip..ip + run).ok_or(LzfError::Truncated)?;
            if out.len() + run > expected_len {
                return Err(LzfError::TooLong);
            }
            out.extend_from_slice(literal);
            ip += run;
        } else {
            let mut len = usize::from(ctrl >> 5);
            if len == 7 {
                len += usize::from(*input.get(ip).ok_or(LzfError::Truncated)?);
                ip += 1;
            }
            let low = usize::from(*input.get(ip).ok_or(LzfError::Truncated)?);
            ip += 1;
            let distance = ((usize::from(ctrl & 0x1f) << 8) | low) + 1;
            let len = len + 2;
            let start = out
                .len()
                .checked_sub(distance)
                .ok_or(LzfError::BadReference)?;
            if out.len() + len > expected_len {
                return Err(LzfError::TooLong);
            }
            // Byte by byte: the source may overlap the bytes being produced.
            for i in start..start + len {
                let byte = *out.get(i).ok_or(LzfError::BadReference)?;
                out.push(byte);
            }
        }
    }
    if out.len() == expected_len {
        Ok(out)
    } else {
        Err(LzfError::TooShort)
    }
}

fn hash3(a: u8, b: u8, c: u8) -> usize {
    let v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
    (v.wrapping_mul(2_654_435_761) >> 18) as usize
}

fn push_literals(out: &mut Vec<u8>, literals: &[u8]) {
    for run in literals.chunks(MAX_LITERAL) {
        // A run holds 1..=32 bytes, so its control byte is 0..=31.
        out.push(u8::try_from(run.len() - 1).unwrap_or(31));
        out.extend_from_slice(run);
    }
}

/// Compresses `input` with a greedy single-probe hash matcher.
///
/// Returns the compressed bytes only if they are at most `max_len` long (Redis stores a
/// string compressed only if that saves at least 4 bytes), else `None`.
#[must_use]
pub(crate) fn compress(input: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(max_len.min(input.len()));
    let mut table = vec![usize::MAX; 1 << 14];
    let mut literal_start = 0;
    let mut ip = 0;
    while ip + 2 < input.len() {
        let (Some(&a), Some(&b), Some(&c)) = (input.get(ip), input.get(ip + 1), input.get(ip + 2))
        else {
            break;
        };
        let slot = table.get_mut(hash3(a, b, c))?;
        let candidate = *slot;
        *slot = ip;
        let usable = candidate < ip && ip - candidate <= MAX_OFFSET;
        let limit = MAX_MATCH.min(input.len() - ip);
        let mut len = 0;
        if usable {
            while len < limit && input.get(candidate + len) == input.get(ip + len) {
                len += 1;
            }
        }
        if len < 3 {
            ip += 1;
            continue;
        }
        push_literals(&mut out, input.get(literal_start..ip).unwrap_or_default());
        let offset = ip - candidate - 1; // 0..8192: 13 bits
        let code = len - 2; // 1..=262
        let high = u8::try_from(offset >> 8).unwrap_or(0x1f);
        let low = u8::try_from(offset & 0xff).unwrap_or(0);
        if code < 7 {
            out.push((u8::try_from(code).unwrap_or(7) << 5) | high);
        } else {
            out.push((7 << 5) | high);
            out.push(u8::try_from(code - 7).unwrap_or(255));
        }
        out.push(low);
        ip += len;
        literal_start = ip;
        if out.len() > max_len {
            return None;
        }
    }
    push_literals(&mut out, input.get(literal_start..).unwrap_or_default());
    (out.len() <= max_len).then_some(out)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn round_trip(input: &[u8]) {
        let packed = compress(input, usize::MAX).unwrap();
        assert_eq!(decompress(&packed, input.len()).unwrap(), input);
    }

    #[test]
    fn compressible_and_random_inputs_round_trip() {
        round_trip(b"");
        round_trip(b"a");
        round_trip(b"abcabcabcabcabcabcabcabc");
        round_trip(&vec![b'x'; 100_000]);
        let mut state = 7u32;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        round_trip(&noise);
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .copied()
            .cycle()
            .take(50_000)
            .collect();
        round_trip(&text);
        let packed = compress(&text, usize::MAX).unwrap();
        assert!(packed.len() < text.len() / 10, "{} bytes", packed.len());
    }

    /// Differential check against the `lzf` crate (a port of liblzf, which Redis links): each
    /// side decompresses what the other compressed, over inputs from incompressible noise to
    /// long repeats, so a format misreading on either side fails here.
    #[test]
    fn interoperates_with_liblzf_port_both_ways() {
        let mut rng = crate::commands_interop::Rng::new(11);
        for case in 0..400 {
            let len = rng.below(if case % 10 == 0 { 70_000 } else { 2_000 }) + 1;
            let alphabet = [2, 4, 16, 256][case % 4];
            let input: Vec<u8> = (0..len)
                .map(|i| {
                    if case % 5 == 1 && i > 40 {
                        b'x'
                    } else if case % 3 == 0 && i > 40 && rng.below(8) != 0 {
                        b'r'
                    } else {
                        u8::try_from(rng.below(alphabet)).unwrap()
                    }
                })
                .collect();
            if let Ok(theirs) = lzf::compress(&input) {
                assert_eq!(
                    decompress(&theirs, input.len()).unwrap(),
                    input,
                    "case {case}"
                );
            }
            if let Some(ours) = compress(&input, usize::MAX) {
                assert_eq!(
                    lzf::decompress(&ours, input.len()).unwrap(),
                    input,
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn overlapping_back_reference_repeats_bytes() {
        // Literal "ab", then copy 6 bytes from 2 back: "abababab".
        assert_eq!(
            decompress(&[1, b'a', b'b', 4 << 5, 1], 8).unwrap(),
            b"abababab"
        );
    }

    #[test]
    fn long_back_reference_uses_the_extra_length_byte() {
        // Literal "a", then code 7 + 255 → 264 bytes from 1 back.
        let out = decompress(&[0, b'a', 7 << 5, 255, 0], 265).unwrap();
        assert_eq!(out, vec![b'a'; 265]);
    }

    #[test]
    fn reference_before_output_start_is_rejected() {
        assert_eq!(
            decompress(&[0, b'a', 1 << 5, 5], 4),
            Err(LzfError::BadReference)
        );
        assert_eq!(decompress(&[1 << 5, 0], 3), Err(LzfError::BadReference));
    }

    #[test]
    fn truncated_input_is_rejected() {
        assert_eq!(decompress(&[5, b'a'], 6), Err(LzfError::Truncated));
        assert_eq!(
            decompress(&[0, b'a', 7 << 5], 100),
            Err(LzfError::Truncated)
        );
        assert_eq!(decompress(&[0, b'a', 1 << 5], 4), Err(LzfError::Truncated));
    }

    #[test]
    fn declared_length_must_match_exactly() {
        assert_eq!(decompress(&[1, b'a', b'b'], 3), Err(LzfError::TooShort));
        assert_eq!(decompress(&[1, b'a', b'b'], 1), Err(LzfError::TooLong));
        assert_eq!(decompress(&[0, b'a', 4 << 5, 0], 4), Err(LzfError::TooLong));
    }

    #[test]
    fn absurd_declared_length_is_refused_before_allocating() {
        assert_eq!(
            decompress(&[0, b'a'], usize::MAX),
            Err(LzfError::ImpossibleLength)
        );
        assert_eq!(
            decompress(&[0, b'a'], 1 << 40),
            Err(LzfError::ImpossibleLength)
        );
    }

    #[test]
    fn compression_that_does_not_save_enough_is_refused() {
        assert_eq!(compress(b"abcdefgh", 4), None);
        assert!(compress(&[b'z'; 64], 60).is_some());
    }

    #[test]
    fn every_truncation_of_valid_lzf_errors_without_panicking() {
        let input: Vec<u8> = b"hello hello hello world world world!".repeat(20);
        let packed = compress(&input, usize::MAX).unwrap();
        for cut in 0..packed.len() {
            assert!(
                decompress(&packed[..cut], input.len()).is_err(),
                "cut {cut}"
            );
        }
    }
}
