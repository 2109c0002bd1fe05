//! The PSYNC decision: pure function of the master's history and the replica's request.
//!
//! Redis's `masterTryPartialResynchronization`, extended from one previous ID (`replid2`)
//! to a short chain of past generations, each valid up to its own offset.

use std::fmt;

use crate::runid::RunId;

/// What the master knows when it answers: its IDs and the bytes its backlog holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct History<'a> {
    pub(crate) run_id: RunId,
    /// Past IDs with their `second_replid_offset`, newest first.
    pub(crate) past: &'a [(RunId, u64)],
    /// `repl_backlog_first_byte_offset`.
    pub(crate) first: u64,
    /// `master_repl_offset`.
    pub(crate) end: u64,
}

/// Why a replica gets a full resynchronization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FullResyncReason {
    /// The replica asked for one (`PSYNC ? -1`).
    Requested,
    /// The ID is not 40 characters (or not an ID at all).
    MalformedId,
    /// The ID is neither the current one nor a past one we remember.
    UnknownId,
    /// A past ID, but the replica is beyond the point where that history joins ours: it holds
    /// bytes this master does not have (lost in a crash, or from a diverged history).
    BeyondPastIdOffset {
        /// The largest PSYNC offset that past ID allows.
        limit: u64,
    },
    /// The requested offset is older than the oldest byte the backlog holds.
    BeforeBacklog {
        /// `repl_backlog_first_byte_offset`.
        first: u64,
    },
    /// The requested offset is after the newest byte + 1.
    AfterBacklog {
        /// `master_repl_offset`.
        end: u64,
    },
}

impl fmt::Display for FullResyncReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FullResyncReason::Requested => write!(f, "replica asked for a full resync"),
            FullResyncReason::MalformedId => write!(f, "replication ID is malformed"),
            FullResyncReason::UnknownId => write!(f, "replication ID mismatch"),
            FullResyncReason::BeyondPastIdOffset { limit } => write!(
                f,
                "replica is ahead of where its replication ID joins this history (limit {limit})"
            ),
            FullResyncReason::BeforeBacklog { first } => {
                write!(f, "offset is before the backlog (first byte {first})")
            }
            FullResyncReason::AfterBacklog { end } => {
                write!(f, "offset is beyond the master's offset {end}")
            }
        }
    }
}

/// The master's answer to `PSYNC <replid> <offset>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsyncReply {
    /// Partial resynchronization: send the bytes with offsets `from ..= from + len - 1`, then
    /// the live stream.
    Continue {
        /// The master's current run ID (sent to psync2 replicas).
        run_id: RunId,
        /// Replication offset of the first byte to send (the replica's offset + 1).
        from: u64,
        /// How many backlog bytes to send now (0 when the replica is in sync).
        len: u64,
    },
    /// Full resynchronization: send a snapshot taken at `offset`.
    FullResync {
        /// The master's current run ID.
        run_id: RunId,
        /// `master_repl_offset`, the offset the snapshot stands at.
        offset: u64,
        /// Why partial resynchronization was refused.
        reason: FullResyncReason,
    },
}

impl PsyncReply {
    /// The reply line exactly as Redis sends it to a psync2-capable replica:
    /// `+CONTINUE <id>\r\n` or `+FULLRESYNC <id> <offset>\r\n`.
    ///
    /// # Examples
    /// ```
    /// use durable_backlog::{PsyncReply, RunId};
    /// let id: RunId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
    /// let r = PsyncReply::Continue { run_id: id, from: 11, len: 33 };
    /// assert_eq!(r.to_wire(), b"+CONTINUE 0123456789abcdef0123456789abcdef01234567\r\n");
    /// ```
    #[must_use]
    pub fn to_wire(&self) -> Vec<u8> {
        match self {
            PsyncReply::Continue { run_id, .. } => format!("+CONTINUE {run_id}\r\n").into_bytes(),
            PsyncReply::FullResync { run_id, offset, .. } => {
                format!("+FULLRESYNC {run_id} {offset}\r\n").into_bytes()
            }
        }
    }

    /// The reply line for a replica that did not announce `capa psync2`: a bare
    /// `+CONTINUE\r\n` (such a replica cannot follow an ID change); a full resync is the same.
    #[must_use]
    pub fn to_wire_legacy(&self) -> Vec<u8> {
        match self {
            PsyncReply::Continue { .. } => b"+CONTINUE\r\n".to_vec(),
            PsyncReply::FullResync { .. } => self.to_wire(),
        }
    }

    /// Whether this is a partial resynchronization.
    #[must_use]
    pub fn is_continue(&self) -> bool {
        matches!(self, PsyncReply::Continue { .. })
    }
}

/// Decides the answer to `PSYNC replid offset`.
pub(crate) fn decide(h: &History<'_>, replid: &str, offset: i64) -> PsyncReply {
    let full = |reason| PsyncReply::FullResync {
        run_id: h.run_id,
        offset: h.end,
        reason,
    };
    if replid == "?" {
        return full(FullResyncReason::Requested);
    }
    if replid.len() != RunId::LEN {
        return full(FullResyncReason::MalformedId);
    }
    if !h.run_id.matches_wire(replid) {
        match h.past.iter().find(|(id, _)| id.matches_wire(replid)) {
            None => return full(FullResyncReason::UnknownId),
            Some(&(_, limit)) => {
                if u64::try_from(offset).map_or(true, |o| o > limit) {
                    return full(FullResyncReason::BeyondPastIdOffset { limit });
                }
            }
        }
    }
    let o = match u64::try_from(offset) {
        Ok(o) if o >= h.first => o,
        _ => return full(FullResyncReason::BeforeBacklog { first: h.first }),
    };
    if o > h.end + 1 {
        return full(FullResyncReason::AfterBacklog { end: h.end });
    }
    PsyncReply::Continue {
        run_id: h.run_id,
        from: o,
        len: h.end + 1 - o,
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    /// Redis 7.0's rule, transcribed literally (one replid2 only), to check `decide` against.
    fn redis_rule(
        cur: &str,
        id2: &str,
        off2: i64,
        first: i64,
        histlen: i64,
        replid: &str,
        o: i64,
    ) -> bool {
        if !replid.eq_ignore_ascii_case(cur) && (!replid.eq_ignore_ascii_case(id2) || o > off2) {
            return false;
        }
        !(o < first || o > first + histlen)
    }

    #[test]
    fn decision_matches_the_redis_rule_on_a_grid() {
        let cur = RunId::random();
        let old = RunId::random();
        let other = RunId::random();
        for first in [1u64, 5, 100] {
            for end in [first - 1, first, first + 10, first + 50] {
                for off2 in [1u64, first, end, end + 1] {
                    let past = [(old, off2)];
                    let h = History {
                        run_id: cur,
                        past: &past,
                        first,
                        end,
                    };
                    for id in [cur, old, other] {
                        for o in -2i64..(end as i64 + 4) {
                            let got = decide(&h, id.as_str(), o).is_continue();
                            let want = redis_rule(
                                cur.as_str(),
                                old.as_str(),
                                off2 as i64,
                                first as i64,
                                (end + 1 - first) as i64,
                                id.as_str(),
                                o,
                            );
                            assert_eq!(
                                got, want,
                                "id {id} o {o} first {first} end {end} off2 {off2}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn classic_scenario_continue_sends_missing_bytes() {
        let cur = RunId::random();
        let h = History {
            run_id: cur,
            past: &[],
            first: 1,
            end: 10_043,
        };
        assert_eq!(
            decide(&h, cur.as_str(), 10_011),
            PsyncReply::Continue {
                run_id: cur,
                from: 10_011,
                len: 33
            }
        );
        assert_eq!(
            decide(&h, cur.as_str(), 10_044),
            PsyncReply::Continue {
                run_id: cur,
                from: 10_044,
                len: 0
            }
        );
        assert!(!decide(&h, cur.as_str(), 10_045).is_continue());
    }

    #[test]
    fn question_mark_and_malformed_ids_get_full_resync() {
        let cur = RunId::random();
        let h = History {
            run_id: cur,
            past: &[],
            first: 1,
            end: 100,
        };
        let reason = |r: PsyncReply| match r {
            PsyncReply::FullResync { reason, offset, .. } => {
                assert_eq!(offset, 100);
                reason
            }
            PsyncReply::Continue { .. } => panic!("continue"),
        };
        assert_eq!(reason(decide(&h, "?", -1)), FullResyncReason::Requested);
        assert_eq!(reason(decide(&h, "abc", 5)), FullResyncReason::MalformedId);
        assert_eq!(
            reason(decide(&h, &"z".repeat(40), 5)),
            FullResyncReason::UnknownId
        );
        assert_eq!(
            reason(decide(&h, cur.as_str(), -7)),
            FullResyncReason::BeforeBacklog { first: 1 }
        );
        assert_eq!(
            reason(decide(&h, cur.as_str(), i64::MAX)),
            FullResyncReason::AfterBacklog { end: 100 }
        );
    }

    #[test]
    fn uppercase_id_matches_like_strcasecmp() {
        let cur = RunId::random();
        let h = History {
            run_id: cur,
            past: &[],
            first: 1,
            end: 100,
        };
        assert!(decide(&h, &cur.as_str().to_uppercase(), 50).is_continue());
    }

    #[test]
    fn older_generations_in_the_chain_continue_up_to_their_limit() {
        let (cur, g1, g2) = (RunId::random(), RunId::random(), RunId::random());
        let past = [(g1, 500), (g2, 300)];
        let h = History {
            run_id: cur,
            past: &past,
            first: 100,
            end: 900,
        };
        assert!(decide(&h, g2.as_str(), 300).is_continue());
        assert!(!decide(&h, g2.as_str(), 301).is_continue());
        assert!(decide(&h, g1.as_str(), 500).is_continue());
        assert!(!decide(&h, g1.as_str(), 501).is_continue());
    }

    #[test]
    fn wire_lines_are_byte_exact() {
        let id: RunId = "8de1787ba490483314a4d30f1c628bc5025eb761".parse().unwrap();
        let f = PsyncReply::FullResync {
            run_id: id,
            offset: 10_043,
            reason: FullResyncReason::Requested,
        };
        assert_eq!(
            f.to_wire(),
            b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 10043\r\n"
        );
        let c = PsyncReply::Continue {
            run_id: id,
            from: 1,
            len: 0,
        };
        assert_eq!(c.to_wire_legacy(), b"+CONTINUE\r\n");
    }
}
