//! Redis's size syntax (`memtoll`) and plain integers, with one-line errors.

pub(crate) use durable_resp::parse_size;

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
