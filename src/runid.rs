//! The run ID (Redis's replication ID): 40 lowercase hexadecimal characters.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A replication ID: exactly 40 lowercase hexadecimal characters, as Redis's `master_replid`.
///
/// # Examples
/// ```
/// use durable_backlog::RunId;
/// let id: RunId = "8de1787ba490483314a4d30f1c628bc5025eb761".parse().unwrap();
/// assert_eq!(id.to_string(), "8de1787ba490483314a4d30f1c628bc5025eb761");
/// assert!("8DE1787BA490483314A4D30F1C628BC5025EB761".parse::<RunId>().is_err());
/// assert!(RunId::random() != RunId::random());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId([u8; RunId::LEN]);

impl RunId {
    /// The length of a run ID in characters (and in bytes on disk).
    pub const LEN: usize = 40;

    /// A fresh ID from the operating system's strong random source, like Redis's
    /// `changeReplicationId`.
    #[must_use]
    pub fn random() -> Self {
        let bytes: [u8; RunId::LEN / 2] = rand::random();
        let mut out = [0u8; RunId::LEN];
        // Encoding 20 bytes into a 40-byte buffer cannot fail.
        if hex::encode_to_slice(bytes, &mut out).is_err() {
            unreachable!("40 hex digits fit 20 bytes");
        }
        RunId(out)
    }

    /// Parses the 40 ASCII bytes of an ID (as stored on disk or received on the wire).
    ///
    /// # Errors
    /// [`Error::InvalidRunId`] unless `bytes` is exactly 40 lowercase hex digits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let ok = bytes.len() == RunId::LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if !ok {
            return Err(Error::InvalidRunId(
                String::from_utf8_lossy(bytes).into_owned(),
            ));
        }
        let mut out = [0u8; RunId::LEN];
        out.copy_from_slice(bytes);
        Ok(RunId(out))
    }

    /// The 40 ASCII bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; RunId::LEN] {
        &self.0
    }

    /// The ID as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Invariant: only lowercase hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// Compares with an ID as a replica sent it: Redis compares IDs with `strcasecmp`.
    #[must_use]
    pub fn matches_wire(&self, other: &str) -> bool {
        other.len() == RunId::LEN && self.0.eq_ignore_ascii_case(other.as_bytes())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.as_str())
    }
}

impl FromStr for RunId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        RunId::from_bytes(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_lowercase_hex_of_length_40() {
        for _ in 0..100 {
            let id = RunId::random();
            assert_eq!(id.as_str().len(), 40);
            assert_eq!(id.as_str().parse::<RunId>().unwrap(), id);
        }
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "?",
            &"a".repeat(39),
            &"a".repeat(41),
            &"g".repeat(40),
            &"A".repeat(40),
        ] {
            assert!(bad.parse::<RunId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wire_comparison_ignores_case_like_strcasecmp() {
        let id: RunId = "abcdef0123456789abcdef0123456789abcdef01".parse().unwrap();
        assert!(id.matches_wire("ABCDEF0123456789ABCDEF0123456789ABCDEF01"));
        assert!(!id.matches_wire("abcdef0123456789abcdef0123456789abcdef0"));
    }
}
