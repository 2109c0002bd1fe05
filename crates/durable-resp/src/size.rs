//! Redis's size syntax, as `repl-backlog-size` and `redis.conf` take it (`memtoll`).

/// Parses a size as Redis's `memtoll` does: decimal digits, then an optional unit,
/// case-insensitive: `b` (1), `k` (1000), `kb` (1024), `m` (1000²), `mb` (1024²), `g` (1000³),
/// `gb` (1024³).
///
/// # Errors
/// A message for anything else (no digits, a sign, another unit) or a size
/// that does not fit 64 bits.
///
/// # Examples
/// ```
/// use durable_resp::parse_size;
/// assert_eq!(parse_size("1mb").unwrap(), 1 << 20);
/// assert_eq!(parse_size("64KB").unwrap(), 64 * 1024);
/// assert_eq!(parse_size("1m").unwrap(), 1_000_000);
/// assert!(parse_size("1.5mb").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_redis_memtoll() {
        for (s, want) in [
            ("1mb", 1 << 20),
            ("1MB", 1 << 20),
            ("1m", 1_000_000),
            ("16kb", 16 * 1024),
            ("16k", 16_000),
            ("2Gb", 2 << 30),
            ("3g", 3_000_000_000),
            ("123", 123),
            ("123b", 123),
        ] {
            assert_eq!(parse_size(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn anything_else_is_rejected_with_the_input_named() {
        for s in [
            "",
            "mb",
            "-1mb",
            "1tb",
            "1.5mb",
            " 1mb",
            "1 mb",
            "99999999999999999999",
            "18446744073709551615kb",
        ] {
            let e = parse_size(s).unwrap_err();
            assert!(e.contains("bad size"), "{s}: {e}");
        }
    }
}
