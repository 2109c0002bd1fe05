//! The backlog's figures in the form of Redis's `INFO replication` fields.

use std::fmt;

use crate::runid::RunId;

/// The fields of Redis's `INFO replication` that describe the backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `master_replid`.
    pub master_replid: RunId,
    /// `master_replid2`: the previous run ID, if any (`INFO` shows forty zeros when none,
    /// as Redis does).
    pub master_replid2: Option<RunId>,
    /// `master_repl_offset`.
    pub master_repl_offset: u64,
    /// `second_repl_offset` (-1 when none).
    pub second_repl_offset: i64,
    /// `repl_backlog_active` (always 1: the durable backlog always exists).
    pub repl_backlog_active: u8,
    /// `repl_backlog_size`.
    pub repl_backlog_size: u64,
    /// `repl_backlog_first_byte_offset`.
    pub repl_backlog_first_byte_offset: u64,
    /// `repl_backlog_histlen`.
    pub repl_backlog_histlen: u64,
    /// Not in Redis: the offset up to which bytes are committed to stable storage.
    pub durable_offset: u64,
}

impl fmt::Display for Stats {
    /// Renders the fields as `INFO` lines (`name:value\r\n`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Redis's `master_replid2` when there is no previous ID.
        const NO_REPLID2: &str = "0000000000000000000000000000000000000000";
        const _: () = assert!(NO_REPLID2.len() == RunId::LEN);
        let replid2 = self
            .master_replid2
            .as_ref()
            .map_or(NO_REPLID2, RunId::as_str);
        write!(
            f,
            "master_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{}\r\nsecond_repl_offset:{}\r\n\
             repl_backlog_active:{}\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\n\
             repl_backlog_histlen:{}\r\n",
            self.master_replid,
            replid2,
            self.master_repl_offset,
            self.second_repl_offset,
            self.repl_backlog_active,
            self.repl_backlog_size,
            self.repl_backlog_first_byte_offset,
            self.repl_backlog_histlen,
        )
    }
}
