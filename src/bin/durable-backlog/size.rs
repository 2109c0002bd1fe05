//! Redis's size syntax (`memtoll`) and plain integers, with one-line errors.

/// Parses a size as Redis's `memtoll` does: digits, then an optional unit, case-insensitive:
/// `b` (1), `k` (1000), `kb` (1024), `m` (1000²), `mb` (1024²), `g` (1000³), `gb` (1024³).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "bad size {s:?}: expected a number of bytes with an optional unit \
             (b, k, kb, m, mb, g, gb), e.g. 1mb"
        )
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (num, unit) = s.split_at(digits);
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("bad size {s:?}: too large"))
}

/// Parses a replication offset: a non-negative decimal integer.
pub(crate) fn parse_offset(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad offset {s:?}: expected a non-negative decimal integer"
        ));
    }
    s.parse()
        .map_err(|_| format!("bad offset {s:?}: too large"))
}

/// Parses a PSYNC offset as a replica sends it: a signed decimal integer (`-1` with `?`).
pub(crate) fn parse_psync_offset(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad offset {s:?}: expected a decimal integer"));
    }
    s.parse()
        .map_err(|_| format!("bad offset {s:?}: out of the 64-bit signed range"))
}

/// Renders a byte count for people: `1048576` → `1048576 bytes (1 MiB)`.
pub(crate) fn human(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{n} bytes ({} {unit})", n >> shift);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_redis_memtoll() {
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("1m"), Ok(1_000_000));
        assert_eq!(parse_size("16kb"), Ok(16 * 1024));
        assert_eq!(parse_size("16k"), Ok(16_000));
        assert_eq!(parse_size("2Gb"), Ok(2 << 30));
        assert_eq!(parse_size("3g"), Ok(3_000_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("123b"), Ok(123));
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        for s in [
            "",
            "mb",
            "-1mb",
            "1.5mb",
            "1 mb",
            "1tb",
            "1mbb",
            "99999999999999999999",
        ] {
            assert!(parse_size(s).is_err(), "{s}");
        }
        assert!(parse_size("18446744073709551615gb").is_err());
    }

    #[test]
    fn offsets_are_plain_integers() {
        assert_eq!(parse_offset("10011"), Ok(10011));
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("1k").is_err());
        assert!(parse_offset("").is_err());
        assert_eq!(parse_psync_offset("-1"), Ok(-1));
        assert!(parse_psync_offset("-").is_err());
        assert!(parse_psync_offset("9223372036854775808").is_err());
    }
}
