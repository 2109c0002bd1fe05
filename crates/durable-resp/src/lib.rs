//! The Redis protocol as `durable-master` and the `durable-backlog` CLI speak it.
//!
//! Not part of the `durable-backlog` library: a program embedding a backlog decides itself what
//! it writes into it. This crate holds the one request parser, the reply encoders and the one
//! replication-stream decoder both programs use, plus Redis's size syntax ([`parse_size`]).
//!
//! RESP: the request parser for client connections, reply encoders, and a strict decoder for
//! an already-written replication stream.
//!
//! # Request parser
//!
//! [`RequestParser`] follows Redis 7.0's `networking.c` (`processMultibulkBuffer`,
//! `processInlineBuffer`, `sdssplitargs`), checked byte for byte against `redis-server` 7.0.15:
//!
//! - A request starting with `*` is a multibulk request; anything else is an inline request.
//! - `*N` with `N <= 0` is consumed and ignored. `N` above [`Limits::max_multibulk_len`]
//!   (Redis 7.0: `INT_MAX`) is `invalid multibulk length`.
//! - While the client must still authenticate ([`RequestParser::set_unauthenticated`]), `*N`
//!   above 10 is `unauthenticated multibulk length` and `$N` above 16384 is
//!   `unauthenticated bulk length`, as in Redis 7.0.
//! - Numbers are parsed like Redis's `string2ll`: no sign `+`, no leading zeros, no spaces.
//! - Like Redis, the two bytes after a count line's `\r` and after a bulk's payload are skipped
//!   without being checked (`*1\rX$4\r\nPINGxx` is a valid `PING` for Redis too).
//! - Inline requests end at `\n` (an optional `\r` before it is dropped) and are split with
//!   Redis's quoting rules (`"..."` with `\n \r \t \b \a \xHH` escapes, `'...'` with `\'`).
//!   An empty or blank line is ignored; replicas send a bare `\n` while they load a snapshot,
//!   see [`RequestParser::ignored_lines`].
//!
//! Two deliberate differences, both about inputs no real client sends:
//! - Redis reports "too big inline request" when no line end arrived within 64 KiB *of
//!   buffered data*, so whether a line slightly longer than 64 KiB is accepted depends on how
//!   the bytes were split into reads. Here a line end must appear within the first
//!   [`Limits::max_inline_len`]` + 1` bytes of the request, whatever the split: the parser's
//!   answer never depends on packet boundaries.
//! - Redis scans inline lines with `strchr`, so an inline request with a NUL byte before its
//!   `\n` is never answered. Here the line ends at `\n` and the splitter stops at the NUL,
//!   as `sdssplitargs` does.
//!
//! Memory follows the bytes that arrive, with one exception taken from Redis: once the `$N`
//! line of a bulk of [`BIG_ARG`] bytes or more is parsed, the argument is received straight
//! into a buffer of exactly `N + 2` bytes, which becomes the argument without a copy (the
//! reservation is address space until bytes fill it; if it cannot be had, the bulk is
//! buffered as any other). A client that must authenticate cannot announce such a bulk
//! ([`UNAUTHENTICATED_MAX_BULK_LEN`]).
//!
//! # Replication stream decoder
//!
//! [`StreamDecoder`] walks bytes that this master already wrote to its replication stream and
//! yields each command with its first and last byte offset. It is strict (every `\r\n` is
//! checked), reports a command cut by the end of the bytes as [`StreamItem::Incomplete`], and
//! anything else as a [`StreamError`] naming the offset.

use std::fmt;

mod size;
pub use size::parse_size;

/// Redis's `proto-max-bulk-len` default: 512 MiB.
pub const PROTO_MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// Redis 7.0's largest multibulk count (`INT_MAX`); larger counts are `invalid multibulk length`.
pub const PROTO_MAX_MULTIBULK_LEN: u64 = i32::MAX as u64;

/// Redis's `PROTO_INLINE_MAX_SIZE`: 64 KiB, the longest inline request or count line.
pub const PROTO_INLINE_MAX_SIZE: usize = 64 * 1024;

/// Largest argument count a client that must still authenticate may announce (Redis 7.0:
/// 10, whatever `proto-max-multibulk-len`); more is `unauthenticated multibulk length`.
pub const UNAUTHENTICATED_MAX_MULTIBULK_LEN: u64 = 10;

/// Largest bulk argument a client that must still authenticate may announce (Redis 7.0:
/// 16384 bytes); more is `unauthenticated bulk length`.
pub const UNAUTHENTICATED_MAX_BULK_LEN: usize = 16384;

/// Preallocated argument slots for a multibulk request: a client announcing a million
/// arguments gets them only as it sends them (Redis uses the same cap).
const ARGV_PREALLOC_MAX: usize = 1024;

/// Bounds enforced by [`RequestParser`] and [`StreamDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk argument, in bytes (Redis: `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest argument count of a multibulk request.
    pub max_multibulk_len: u64,
    /// Longest inline request line and longest `*N` / `$N` line, in bytes.
    pub max_inline_len: usize,
}

impl Default for Limits {
    /// Redis 7.0's defaults.
    fn default() -> Self {
        Limits {
            max_bulk_len: PROTO_MAX_BULK_LEN,
            max_multibulk_len: PROTO_MAX_MULTIBULK_LEN,
            max_inline_len: PROTO_INLINE_MAX_SIZE,
        }
    }
}

/// A protocol violation by a client. The connection must be closed after replying
/// [`ProtocolError::to_reply`], as Redis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*N` was not a number, or too large.
    InvalidMultibulkLength,
    /// `$N` was not a number, negative, or larger than [`Limits::max_bulk_len`].
    InvalidBulkLength,
    /// A multibulk argument did not start with `$`.
    ExpectedDollar {
        /// The byte found instead.
        got: u8,
    },
    /// An inline request line was longer than [`Limits::max_inline_len`].
    TooBigInlineRequest,
    /// A `*N` line was longer than [`Limits::max_inline_len`].
    TooBigMultibulkCountString,
    /// A `$N` line was longer than [`Limits::max_inline_len`].
    TooBigBulkCountString,
    /// An inline request had an unterminated quote, or a closing quote not followed by a space.
    UnbalancedQuotes,
    /// `*N` above [`UNAUTHENTICATED_MAX_MULTIBULK_LEN`] from a client that must still
    /// authenticate.
    UnauthenticatedMultibulkLength,
    /// `$N` above [`UNAUTHENTICATED_MAX_BULK_LEN`] from a client that must still authenticate.
    UnauthenticatedBulkLength,
}

impl ProtocolError {
    /// The error text Redis replies, without the leading `-` and trailing `\r\n`:
    /// for example `ERR Protocol error: invalid bulk length`.
    #[must_use]
    pub fn reply_text(&self) -> Vec<u8> {
        let mut text = b"ERR Protocol error: ".to_vec();
        match self {
            ProtocolError::InvalidMultibulkLength => {
                text.extend_from_slice(b"invalid multibulk length");
            }
            ProtocolError::InvalidBulkLength => text.extend_from_slice(b"invalid bulk length"),
            ProtocolError::ExpectedDollar { got } => {
                text.extend_from_slice(b"expected '$', got '");
                text.push(*got);
                text.push(b'\'');
            }
            ProtocolError::TooBigInlineRequest => {
                text.extend_from_slice(b"too big inline request");
            }
            ProtocolError::TooBigMultibulkCountString => {
                text.extend_from_slice(b"too big mbulk count string");
            }
            ProtocolError::TooBigBulkCountString => {
                text.extend_from_slice(b"too big bulk count string");
            }
            ProtocolError::UnbalancedQuotes => {
                text.extend_from_slice(b"unbalanced quotes in request");
            }
            ProtocolError::UnauthenticatedMultibulkLength => {
                text.extend_from_slice(b"unauthenticated multibulk length");
            }
            ProtocolError::UnauthenticatedBulkLength => {
                text.extend_from_slice(b"unauthenticated bulk length");
            }
        }
        text
    }

    /// The complete RESP error reply, e.g. `-ERR Protocol error: invalid bulk length\r\n`.
    #[must_use]
    pub fn to_reply(&self) -> Vec<u8> {
        error(&self.reply_text())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &String::from_utf8_lossy(&self.reply_text())
                .escape_debug()
                .to_string(),
        )
    }
}

impl std::error::Error for ProtocolError {}

/// Where the parser is inside a multibulk request.
#[derive(Debug)]
struct Multibulk {
    /// Arguments still to read.
    remaining: u64,
    /// Arguments read so far.
    argv: Vec<Vec<u8>>,
    /// Length of the bulk whose `$N` line has been read, if any.
    bulk_len: Option<usize>,
    /// Bytes of the arguments read so far.
    bytes: usize,
    /// The bulk being received in place (see [`BIG_ARG`]): its bytes so far, with room for
    /// all of them and the `\r\n` after.
    big: Option<Vec<u8>>,
}

/// Bulks of at least this many bytes are received in place (Redis's `PROTO_MBULK_BIG_ARG`).
pub const BIG_ARG: usize = 32 * 1024;

/// Capacity a [`RequestParser`] keeps once everything it received is consumed.
const IDLE_BUFFER_KEPT: usize = 64 * 1024;

/// An incremental parser of client requests: feed it bytes as they arrive, then take commands.
///
/// After an error the parser is poisoned: it returns the same error again and the connection
/// must be closed.
///
/// # Examples
///
/// ```
/// use durable_resp::RequestParser;
///
/// let mut parser = RequestParser::new();
/// parser.feed(b"*2\r\n$4\r\nECHO\r\n$2\r\nh");
/// assert_eq!(parser.next_command(), Ok(None));
/// parser.feed(b"i\r\nPING\r\n");
/// assert_eq!(parser.next_command(), Ok(Some(vec![b"ECHO".to_vec(), b"hi".to_vec()])));
/// assert_eq!(parser.next_command(), Ok(Some(vec![b"PING".to_vec()])));
/// assert_eq!(parser.next_command(), Ok(None));
/// ```
#[derive(Debug, Default)]
pub struct RequestParser {
    /// Received bytes; `buf[pos..]` is not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    limits: Limits,
    multibulk: Option<Multibulk>,
    ignored_lines: u64,
    failed: Option<ProtocolError>,
    /// Pending bytes already searched for the end of the current line.
    scanned: usize,
    /// The client must still authenticate: the `UNAUTHENTICATED_*` limits apply.
    unauthenticated: bool,
}

impl RequestParser {
    /// A parser with Redis 7.0's default [`Limits`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser with the given limits.
    #[must_use]
    pub fn with_limits(limits: Limits) -> Self {
        RequestParser {
            limits,
            ..Self::default()
        }
    }

    /// Whether the client must still authenticate. While it must, counts and lengths above
    /// [`UNAUTHENTICATED_MAX_MULTIBULK_LEN`] and [`UNAUTHENTICATED_MAX_BULK_LEN`] are protocol
    /// errors, as in Redis: a client without the password cannot make the server buffer
    /// more than a few kilobytes. Takes effect from the next `*N` or `$N` line parsed.
    ///
    /// # Examples
    ///
    /// ```
    /// use durable_resp::{ProtocolError, RequestParser};
    ///
    /// let mut parser = RequestParser::new();
    /// parser.set_unauthenticated(true);
    /// parser.feed(b"*11\r\n");
    /// assert_eq!(parser.next_command(), Err(ProtocolError::UnauthenticatedMultibulkLength));
    /// ```
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// Appends bytes received from the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if let Some(mb) = &mut self.multibulk
            && let (Some(big), Some(len)) = (&mut mb.big, mb.bulk_len)
        {
            let take = (len + 2 - big.len()).min(bytes.len());
            big.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if self.pos > 0 {
            // Drop consumed bytes before growing, so the buffer holds at most one pending
            // request plus what the client pipelined after it.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet consumed by a complete command.
    #[must_use]
    pub fn buffered(&self) -> usize {
        let big = self
            .multibulk
            .as_ref()
            .and_then(|mb| mb.big.as_ref())
            .map_or(0, Vec::len);
        self.buf.len() - self.pos + big
    }

    /// Memory held for the command being received: unconsumed bytes plus the arguments of an
    /// unfinished multibulk request (Redis compares this sum with `client-query-buffer-limit`).
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.buffered()
            .saturating_add(self.multibulk.as_ref().map_or(0, |mb| mb.bytes))
    }

    /// How many empty or blank inline lines were skipped. A replica sends a bare `\n` to show
    /// it is alive while it loads a snapshot; Redis uses that to refresh the replica's last ACK
    /// time.
    #[must_use]
    pub fn ignored_lines(&self) -> u64 {
        self.ignored_lines
    }

    /// Returns the next complete command, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the client broke the protocol; reply
    /// [`ProtocolError::to_reply`] and close the connection. Every later call returns the
    /// same error.
    pub fn next_command(&mut self) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let result = self.parse_next();
        match &result {
            Err(err) => self.failed = Some(*err),
            Ok(None) if self.pos == self.buf.len() => {
                // Everything consumed: a buffer grown by a big request gives its memory back.
                self.buf.clear();
                self.pos = 0;
                if self.buf.capacity() > IDLE_BUFFER_KEPT {
                    self.buf = Vec::new();
                }
            }
            Ok(_) => {}
        }
        result
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn parse_next(&mut self) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        loop {
            if self.multibulk.is_some() {
                return self.parse_multibulk_args();
            }
            let Some(&first) = self.pending().first() else {
                return Ok(None);
            };
            if first == b'*' {
                let Some(cr) = self.find_number_line(ProtocolError::TooBigMultibulkCountString)?
                else {
                    return Ok(None);
                };
                let count = self
                    .number_before(cr)
                    .filter(|&n| n <= 0 || n.unsigned_abs() <= self.limits.max_multibulk_len)
                    .ok_or(ProtocolError::InvalidMultibulkLength)?;
                if self.unauthenticated
                    && count > 0
                    && count.unsigned_abs() > UNAUTHENTICATED_MAX_MULTIBULK_LEN
                {
                    return Err(ProtocolError::UnauthenticatedMultibulkLength);
                }
                self.advance(cr + 2);
                if count <= 0 {
                    continue;
                }
                let remaining = count.unsigned_abs();
                let prealloc = usize::try_from(remaining)
                    .unwrap_or(ARGV_PREALLOC_MAX)
                    .min(ARGV_PREALLOC_MAX);
                self.multibulk = Some(Multibulk {
                    remaining,
                    argv: Vec::with_capacity(prealloc),
                    bulk_len: None,
                    bytes: 0,
                    big: None,
                });
            } else {
                match self.parse_inline()? {
                    None => return Ok(None),
                    Some(argv) if argv.is_empty() => self.ignored_lines += 1,
                    Some(argv) => return Ok(Some(argv)),
                }
            }
        }
    }

    /// Finds the end of a `*N` or `$N` line at the start of the pending bytes: `Ok(Some(cr))`
    /// with `cr` the index of its `\r`, or `Ok(None)` if the line is not complete yet. Like
    /// Redis, the line is complete once one more byte follows `\r` (that byte is skipped
    /// unchecked).
    fn find_number_line(&mut self, too_big: ProtocolError) -> Result<Option<usize>, ProtocolError> {
        let Some(cr) = self.find_in_line(b'\r') else {
            if self.buffered() > self.limits.max_inline_len {
                return Err(too_big);
            }
            return Ok(None);
        };
        if self.buffered() < cr + 2 {
            return Ok(None);
        }
        Ok(Some(cr))
    }

    /// Index (from the first pending byte) of the first `byte` within the first
    /// `max_inline_len + 1` pending bytes. Bytes already searched by an earlier call for the
    /// same line are not searched again, so a line trickling in byte by byte costs linear time.
    fn find_in_line(&mut self, byte: u8) -> Option<usize> {
        let pending = self.pending();
        let window_len = pending
            .len()
            .min(self.limits.max_inline_len.saturating_add(1));
        let from = self.scanned.min(window_len);
        let found = pending
            .get(from..window_len)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == byte)
            .map(|i| from + i);
        if found.is_none() {
            self.scanned = window_len;
        }
        found
    }

    /// Consumes `n` pending bytes.
    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.scanned = 0;
    }

    /// The number between the first byte of the pending bytes and index `cr`.
    fn number_before(&self, cr: usize) -> Option<i64> {
        parse_i64(self.pending().get(1..cr).unwrap_or_default())
    }

    fn parse_multibulk_args(&mut self) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        loop {
            let (remaining, bulk_len) = match &self.multibulk {
                Some(mb) => (mb.remaining, mb.bulk_len),
                None => return Ok(None),
            };
            if remaining == 0 {
                let argv = self.multibulk.take().map(|mb| mb.argv).unwrap_or_default();
                return Ok(Some(argv));
            }
            let len = if let Some(len) = bulk_len {
                len
            } else {
                // As in Redis: first a complete line, then its '$', then its number.
                let Some(cr) = self.find_number_line(ProtocolError::TooBigBulkCountString)? else {
                    return Ok(None);
                };
                let first = self.pending().first().copied().unwrap_or(b'\r');
                if first != b'$' {
                    return Err(ProtocolError::ExpectedDollar { got: first });
                }
                let len = self
                    .number_before(cr)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&len| len <= self.limits.max_bulk_len)
                    .ok_or(ProtocolError::InvalidBulkLength)?;
                if self.unauthenticated && len > UNAUTHENTICATED_MAX_BULK_LEN {
                    return Err(ProtocolError::UnauthenticatedBulkLength);
                }
                self.advance(cr + 2);
                if let Some(mb) = &mut self.multibulk {
                    mb.bulk_len = Some(len);
                }
                len
            };
            let Some(arg) = self.take_bulk(len) else {
                return Ok(None);
            };
            if let Some(mb) = &mut self.multibulk {
                mb.bytes = mb.bytes.saturating_add(arg.len());
                mb.argv.push(arg);
                mb.remaining -= 1;
                mb.bulk_len = None;
            }
        }
    }

    /// The bulk of `len` bytes whose `$N` line was parsed, once it and the two bytes after it
    /// (normally "\r\n", skipped unchecked) arrived; a big one starts being received in place.
    fn take_bulk(&mut self, len: usize) -> Option<Vec<u8>> {
        let mb = self.multibulk.as_mut()?;
        if let Some(big) = &mb.big {
            if big.len() < len + 2 {
                return None;
            }
            let mut arg = mb.big.take()?;
            arg.truncate(len);
            return Some(arg);
        }
        let pending = self.buf.get(self.pos..).unwrap_or_default();
        if pending.len() >= len + 2 {
            let arg = pending.get(..len)?.to_vec();
            self.advance(len + 2);
            return Some(arg);
        }
        if len >= BIG_ARG {
            let mut big = Vec::new();
            if big.try_reserve_exact(len + 2).is_ok() {
                big.extend_from_slice(pending);
                let n = pending.len();
                mb.big = Some(big);
                self.advance(n);
            }
        }
        None
    }

    fn parse_inline(&mut self) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        let Some(nl) = self.find_in_line(b'\n') else {
            if self.buffered() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            return Ok(None);
        };
        let mut line = self.pending().get(..nl).unwrap_or_default();
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let argv = split_inline_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
        self.advance(nl + 1);
        Ok(Some(argv))
    }
}

/// Parses a decimal integer exactly like Redis's `string2ll`: an optional `-`, then `0` alone
/// or a digit 1-9 followed by digits; no `+`, spaces or leading zeros; at most 20 bytes; no
/// overflow. Used for protocol lengths and for command arguments (`INCRBY`, `SELECT`).
#[must_use]
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline request line into arguments with Redis's `sdssplitargs` rules; `None` for
/// unbalanced quotes. The line ends at its first NUL byte, as the C string it is in Redis.
#[must_use]
pub fn split_inline_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
    let line = line.get(..end).unwrap_or_default();
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_c_space(at(p)) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = at(p);
            if in_double {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3)))
                {
                    current.push(hi * 16 + lo);
                    p += 4;
                    continue;
                }
                if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // A closing quote must be followed by a space or the end of the line.
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => current.push(other),
                }
            }
            p += 1;
        }
        args.push(current);
    }
}

/// Maps `\r` and `\n` to spaces so a status or error line cannot break the protocol, as Redis
/// does for error replies.
fn push_line_sanitized(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// A one-line reply: `kind`, then `text` with `\r` and `\n` turned into spaces, then CRLF.
fn line_reply(kind: u8, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(kind);
    push_line_sanitized(&mut out, text);
    out.extend_from_slice(b"\r\n");
    out
}

/// `+text\r\n`. `\r` and `\n` inside `text` become spaces.
#[must_use]
pub fn simple_string(text: &[u8]) -> Vec<u8> {
    line_reply(b'+', text)
}

/// `-text\r\n`, where `text` includes the error code, e.g. `ERR syntax error`. `\r` and `\n`
/// inside `text` become spaces, as in Redis's `addReplyErrorFormat`.
#[must_use]
pub fn error(text: &[u8]) -> Vec<u8> {
    line_reply(b'-', text)
}

/// `:n\r\n`.
#[must_use]
pub fn integer(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

/// `$len\r\nbytes\r\n`.
#[must_use]
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    push_bulk(&mut out, bytes);
    out
}

/// The null bulk reply, `$-1\r\n`.
pub const NULL_BULK: &[u8] = b"$-1\r\n";

/// The null bulk reply, `$-1\r\n`, as an owned buffer.
#[must_use]
pub fn null_bulk() -> Vec<u8> {
    NULL_BULK.to_vec()
}

/// `*n\r\n` followed by the already-encoded `items`.
#[must_use]
pub fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A command as a multibulk request, the form in which Redis propagates commands to replicas:
/// `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`.
///
/// # Examples
///
/// ```
/// use durable_resp::encode_command;
/// assert_eq!(encode_command(&["SELECT", "0"]), b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n");
/// ```
#[must_use]
pub fn encode_command<A: AsRef<[u8]>>(argv: &[A]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command_into(&mut out, argv);
    out
}

/// [`encode_command`] appending to `out`, without a buffer of its own.
pub fn encode_command_into<A: AsRef<[u8]>>(out: &mut Vec<u8>, argv: &[A]) {
    encode_parts_into(out, argv.len(), |i| {
        argv.get(i).map_or(&[][..], AsRef::as_ref)
    });
}

/// [`encode_command_into`] for the `n` arguments `arg(0)`, `arg(1)`...: for a command whose
/// arguments are not one slice.
pub fn encode_parts_into<'a>(out: &mut Vec<u8>, n: usize, arg: impl Fn(usize) -> &'a [u8]) {
    let payload: usize = (0..n).map(|i| arg(i).len() + 16).sum();
    out.reserve(payload + 16);
    out.push(b'*');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for i in 0..n {
        push_bulk(out, arg(i));
    }
}

/// One command of a replication stream, with the stream offsets of its first and last byte.
///
/// Offsets follow Redis: the `n`-th byte ever written to the stream has offset `n`, so a
/// replica that applied this command has offset `end` and asks `PSYNC <id> <end + 1>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommand {
    /// Offset of the command's first byte (its `*`).
    pub start: u64,
    /// Offset of the command's last byte (the `\n` of its last argument).
    pub end: u64,
    /// The arguments, command name first.
    pub argv: Vec<Vec<u8>>,
}

/// What [`StreamDecoder`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A complete command.
    Command(StreamCommand),
    /// The bytes end inside a command that is valid so far: it starts at `start` and `have`
    /// of its bytes are present. Nothing follows this item.
    Incomplete {
        /// Offset of the command's first byte.
        start: u64,
        /// How many of its bytes are present.
        have: usize,
    },
}

/// Bytes in a replication stream that are not a well-formed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// Stream offset of the first byte that is wrong.
    pub offset: u64,
    /// Stream offset of the start of the command containing it.
    pub command_start: u64,
    /// What was expected and what was found.
    pub reason: String,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt replication stream at offset {} (in the command starting at offset {}): {}",
            self.offset, self.command_start, self.reason
        )
    }
}

impl std::error::Error for StreamError {}

/// Why one command could not be decoded: the bytes ran out, or byte `at` (an index into the
/// decoder's slice) is wrong.
enum Cut {
    Short,
    Bad { at: usize, reason: String },
}

/// Splits a replication stream into commands with their offsets. Stops after the first
/// [`StreamItem::Incomplete`] or error.
///
/// Every command must be a multibulk request with at least one argument, each `\r\n` present
/// and each length within [`Limits`]: the stream is written by this master only, so any other
/// byte is corruption.
///
/// # Examples
///
/// ```
/// use durable_resp::{StreamDecoder, StreamItem};
///
/// let bytes = b"*1\r\n$4\r\nPING\r\n*2\r\n$6\r\nSEL";
/// let items: Vec<_> = StreamDecoder::new(bytes, 101).collect::<Result<_, _>>().unwrap();
/// let StreamItem::Command(ping) = &items[0] else { panic!() };
/// assert_eq!((ping.start, ping.end), (101, 114));
/// assert_eq!(items[1], StreamItem::Incomplete { start: 115, have: 11 });
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    first_offset: u64,
    limits: Limits,
    done: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder over `bytes`, whose first byte has stream offset `first_offset`.
    #[must_use]
    pub fn new(bytes: &'a [u8], first_offset: u64) -> Self {
        Self::with_limits(bytes, first_offset, Limits::default())
    }

    /// Like [`StreamDecoder::new`] with explicit limits.
    #[must_use]
    pub fn with_limits(bytes: &'a [u8], first_offset: u64, limits: Limits) -> Self {
        StreamDecoder {
            bytes,
            pos: 0,
            first_offset,
            limits,
            done: false,
        }
    }

    /// The stream offset of the slice index `index`, or `None` if it overflows `u64`.
    fn offset_of(&self, index: usize) -> Option<u64> {
        self.first_offset.checked_add(u64::try_from(index).ok()?)
    }

    /// Reads a strict `<tag><digits>\r\n` line at `at`: `(index after the line, number)`.
    fn number_line(&self, at: usize, tag: u8, what: &str) -> Result<(usize, i64), Cut> {
        match self.bytes.get(at) {
            None => return Err(Cut::Short),
            Some(&b) if b != tag => {
                return Err(Cut::Bad {
                    at,
                    reason: format!(
                        "expected '{}' to start {what}, found {}",
                        char::from(tag),
                        describe_byte(b)
                    ),
                });
            }
            Some(_) => {}
        }
        let digits_start = at + 1;
        let rest = self.bytes.get(digits_start..).unwrap_or_default();
        // The longest valid number is 20 bytes ("-9223372036854775808").
        let scan = rest.get(..rest.len().min(21)).unwrap_or_default();
        let Some(cr) = scan.iter().position(|&b| b == b'\r') else {
            if let Some(i) = scan
                .iter()
                .position(|&b| !(b.is_ascii_digit() || b == b'-'))
            {
                return Err(Cut::Bad {
                    at: digits_start + i,
                    reason: format!(
                        "expected a digit in {what}, found {}",
                        describe_byte(scan.get(i).copied().unwrap_or(0))
                    ),
                });
            }
            if scan.len() > 20 {
                return Err(Cut::Bad {
                    at: digits_start,
                    reason: format!("{what} is longer than 20 digits"),
                });
            }
            return Err(Cut::Short);
        };
        let digits = scan.get(..cr).unwrap_or_default();
        let n = parse_i64(digits).ok_or_else(|| Cut::Bad {
            at: digits_start,
            reason: format!(
                "{what} is not a valid integer: {:?}",
                String::from_utf8_lossy(digits)
            ),
        })?;
        let lf = digits_start + cr + 1;
        match self.bytes.get(lf) {
            None => Err(Cut::Short),
            Some(b'\n') => Ok((lf + 1, n)),
            Some(&b) => Err(Cut::Bad {
                at: lf,
                reason: format!("expected '\\n' after {what}, found {}", describe_byte(b)),
            }),
        }
    }

    /// Decodes the command starting at `self.pos`: `(index after it, argv)`.
    fn command(&self) -> Result<(usize, Vec<Vec<u8>>), Cut> {
        let start = self.pos;
        let (mut at, count) = self.number_line(start, b'*', "a command's argument count")?;
        let count = u64::try_from(count)
            .ok()
            .filter(|&c| c >= 1 && c <= self.limits.max_multibulk_len)
            .ok_or_else(|| Cut::Bad {
                at: start + 1,
                reason: format!(
                    "argument count {count} is outside 1..={}",
                    self.limits.max_multibulk_len
                ),
            })?;
        let mut argv = Vec::with_capacity(
            usize::try_from(count)
                .unwrap_or(ARGV_PREALLOC_MAX)
                .min(ARGV_PREALLOC_MAX),
        );
        for _ in 0..count {
            let (payload_start, len) = self.number_line(at, b'$', "a bulk length")?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= self.limits.max_bulk_len)
                .ok_or_else(|| Cut::Bad {
                    at: at + 1,
                    reason: format!(
                        "bulk length {len} is outside 0..={}",
                        self.limits.max_bulk_len
                    ),
                })?;
            let payload_end = payload_start + len;
            let payload = self
                .bytes
                .get(payload_start..payload_end)
                .ok_or(Cut::Short)?;
            for (i, expected) in [b'\r', b'\n'].into_iter().enumerate() {
                match self.bytes.get(payload_end + i) {
                    None => return Err(Cut::Short),
                    Some(&b) if b != expected => {
                        return Err(Cut::Bad {
                            at: payload_end + i,
                            reason: format!(
                                "expected {} after a {len}-byte bulk, found {}",
                                describe_byte(expected),
                                describe_byte(b)
                            ),
                        });
                    }
                    Some(_) => {}
                }
            }
            argv.push(payload.to_vec());
            at = payload_end + 2;
        }
        Ok((at, argv))
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", char::from(b))
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl Iterator for StreamDecoder<'_> {
    type Item = Result<StreamItem, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.bytes.len() {
            return None;
        }
        let overflow = || StreamError {
            offset: u64::MAX,
            command_start: u64::MAX,
            reason: "stream offset overflows u64".to_owned(),
        };
        let Some(start) = self.offset_of(self.pos) else {
            self.done = true;
            return Some(Err(overflow()));
        };
        match self.command() {
            Ok((after, argv)) => {
                let Some(end) = self.offset_of(after - 1) else {
                    self.done = true;
                    return Some(Err(overflow()));
                };
                self.pos = after;
                Some(Ok(StreamItem::Command(StreamCommand { start, end, argv })))
            }
            Err(Cut::Short) => {
                self.done = true;
                Some(Ok(StreamItem::Incomplete {
                    start,
                    have: self.bytes.len() - self.pos,
                }))
            }
            Err(Cut::Bad { at, reason }) => {
                self.done = true;
                let offset = self.offset_of(at).unwrap_or(u64::MAX);
                Some(Err(StreamError {
                    offset,
                    command_start: start,
                    reason,
                }))
            }
        }
    }
}

/// A whole decoded stream slice: see [`decode_stream`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedStream {
    /// The complete commands, in order.
    pub commands: Vec<StreamCommand>,
    /// The truncated command at the end, if any: `(start offset, bytes present)`.
    pub incomplete: Option<(u64, usize)>,
}

/// Decodes all of `bytes` (first byte at stream offset `first_offset`) with [`StreamDecoder`].
///
/// # Errors
///
/// The first [`StreamError`] found.
pub fn decode_stream(bytes: &[u8], first_offset: u64) -> Result<DecodedStream, StreamError> {
    let mut decoded = DecodedStream::default();
    for item in StreamDecoder::new(bytes, first_offset) {
        match item? {
            StreamItem::Command(cmd) => decoded.commands.push(cmd),
            StreamItem::Incomplete { start, have } => decoded.incomplete = Some((start, have)),
        }
    }
    Ok(decoded)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// Feeds everything at once and collects commands until `None` or an error.
    fn parse_all(input: &[u8]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
        let mut parser = RequestParser::new();
        parser.feed(input);
        drain(&mut parser)
    }

    fn drain(parser: &mut RequestParser) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
        let mut out = Vec::new();
        loop {
            match parser.next_command() {
                Ok(Some(cmd)) => out.push(cmd),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn parse_error(input: &[u8]) -> Vec<u8> {
        let (_, err) = parse_all(input);
        err.expect("expected a protocol error").to_reply()
    }

    #[test]
    fn multibulk_and_inline_requests_parse() {
        let (cmds, err) = parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nGET k\r\nPING\n");
        assert_eq!(err, None);
        assert_eq!(
            cmds,
            vec![
                args(&["SET", "k", ""]),
                args(&["GET", "k"]),
                args(&["PING"])
            ]
        );
    }

    #[test]
    fn a_big_bulk_is_received_in_place_whatever_the_split() {
        let value: Vec<u8> = (0..BIG_ARG + 1000).map(|i| (i % 251) as u8).collect();
        let mut stream = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
        stream.extend_from_slice(&value);
        stream.extend_from_slice(b"\r\nPING\r\n");
        for chunk in [1, 7, 4096, 65536, stream.len()] {
            let mut parser = RequestParser::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                parser.feed(piece);
                assert!(parser.buffered() <= stream.len());
                got.extend(drain(&mut parser).0);
            }
            assert_eq!(got.len(), 2, "chunks of {chunk}");
            assert_eq!(got[0][2], value, "chunks of {chunk}");
            assert_eq!(got[1], args(&["PING"]));
            if chunk < stream.len() {
                // Received into its own buffer (room for the "\r\n" after it), not copied out
                // of the parser's.
                assert_eq!(got[0][2].capacity(), value.len() + 2, "chunks of {chunk}");
            }
            assert_eq!(parser.buffered(), 0);
        }
    }

    #[test]
    fn binary_payload_with_crlf_inside_bulk_is_kept_intact() {
        let (cmds, _) = parse_all(b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\n\0\xffb\r\n");
        assert_eq!(cmds, vec![vec![b"ECHO".to_vec(), b"a\r\n\0\xffb".to_vec()]]);
    }

    #[test]
    fn split_at_every_byte_position_gives_the_same_commands() {
        let stream: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n\
            \n\r\nPING\r\nSET \"a b\" 'c\\'d'\r\n*-1\r\n*0\r\n*1\r\n$4\r\nPING\r\necho \"\\x41\"\n";
        let (expected, err) = parse_all(stream);
        assert_eq!(err, None);
        assert_eq!(expected.len(), 5);
        for split in 0..=stream.len() {
            let mut parser = RequestParser::new();
            let mut got = Vec::new();
            parser.feed(&stream[..split]);
            got.extend(drain(&mut parser).0);
            parser.feed(&stream[split..]);
            got.extend(drain(&mut parser).0);
            assert_eq!(got, expected, "split at {split}");
        }
        // And one byte at a time.
        let mut parser = RequestParser::new();
        let mut got = Vec::new();
        for b in stream {
            parser.feed(std::slice::from_ref(b));
            got.extend(drain(&mut parser).0);
        }
        assert_eq!(got, expected);
        assert_eq!(parser.buffered(), 0);
    }

    #[test]
    fn protocol_errors_are_the_same_at_every_split_point() {
        let bad: &[&[u8]] = &[
            b"*1\r\n$4\r\nPING\r\n*x\r\n",
            b"*2\r\n$3\r\nGET\r\n?\r\n",
            b"GET \"unterminated\r\n",
            b"*1\r\n$-3\r\n",
        ];
        for stream in bad {
            let whole = parse_all(stream);
            assert!(whole.1.is_some());
            for split in 0..=stream.len() {
                let mut parser = RequestParser::new();
                parser.feed(&stream[..split]);
                let (mut cmds, first_err) = drain(&mut parser);
                let err = if first_err.is_some() {
                    first_err
                } else {
                    parser.feed(&stream[split..]);
                    let (more, err) = drain(&mut parser);
                    cmds.extend(more);
                    err
                };
                assert_eq!((cmds, err), whole.clone(), "split at {split}");
            }
        }
    }

    #[test]
    fn empty_lines_and_bare_newlines_from_replicas_are_ignored() {
        let mut parser = RequestParser::new();
        parser.feed(b"\n\r\n   \r\n\t\nPING\r\n");
        assert_eq!(parser.next_command(), Ok(Some(args(&["PING"]))));
        assert_eq!(parser.ignored_lines(), 4);
        assert_eq!(parser.next_command(), Ok(None));
    }

    #[test]
    fn zero_and_negative_multibulk_counts_are_skipped_like_redis() {
        let (cmds, err) = parse_all(b"*0\r\n*-5\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(err, None);
        assert_eq!(cmds, vec![args(&["PING"])]);
    }

    #[test]
    fn invalid_multibulk_length_uses_redis_text() {
        for input in [
            &b"*x\r\n"[..],
            b"*\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"*2147483648\r\n",
        ] {
            assert_eq!(
                parse_error(input),
                b"-ERR Protocol error: invalid multibulk length\r\n",
                "{input:?}"
            );
        }
        // Redis 7.0 accepts counts up to INT_MAX and waits for the arguments.
        assert_eq!(parse_all(b"*2147483647\r\n"), (vec![], None));
    }

    #[test]
    fn invalid_bulk_length_uses_redis_text() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$abc\r\n",
            b"*1\r\n$+5\r\n",
            b"*1\r\n$04\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$99999999999999999999999\r\n",
        ] {
            assert_eq!(
                parse_error(input),
                b"-ERR Protocol error: invalid bulk length\r\n",
                "{input:?}"
            );
        }
    }

    #[test]
    fn largest_allowed_bulk_length_is_accepted_without_allocating_it() {
        let mut parser = RequestParser::new();
        parser.feed(b"*1\r\n$536870912\r\nabc");
        assert_eq!(parser.next_command(), Ok(None));
        assert!(
            parser.buf.capacity() < 4096,
            "buffer grew to {}",
            parser.buf.capacity()
        );
        assert!(
            parser
                .multibulk
                .as_ref()
                .is_some_and(|mb| mb.argv.capacity() <= 1)
        );
    }

    #[test]
    fn huge_announced_argument_count_does_not_preallocate() {
        let mut parser = RequestParser::new();
        parser.feed(b"*2000000000\r\n$1\r\na\r\n");
        assert_eq!(parser.next_command(), Ok(None));
        let mb = parser.multibulk.as_ref().unwrap();
        assert!(mb.argv.capacity() <= ARGV_PREALLOC_MAX);
        assert_eq!(mb.argv.len(), 1);
    }

    #[test]
    fn pending_len_counts_unfinished_arguments_and_resets_after_the_command() {
        let mut parser = RequestParser::new();
        parser.feed(b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$10\r\nabc");
        assert_eq!(parser.next_command(), Ok(None));
        assert_eq!(parser.pending_len(), 3 + 5 + 3);
        parser.feed(b"defghij\r\n");
        assert!(parser.next_command().unwrap().is_some());
        assert_eq!(parser.pending_len(), 0);
    }

    #[test]
    fn missing_dollar_reports_the_byte_found() {
        assert_eq!(
            parse_error(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"),
            b"-ERR Protocol error: expected '$', got 'f'\r\n"
        );
        // A newline is mapped to a space in the reply, as Redis does.
        assert_eq!(
            parse_error(b"*2\r\n$1\r\na\r\n\n\r\n"),
            b"-ERR Protocol error: expected '$', got ' '\r\n"
        );
    }

    #[test]
    fn unchecked_terminators_are_skipped_like_redis() {
        let (cmds, err) = parse_all(b"*1\r\n$4\r\nPINGXX*1\rX$4\r\nPING\r\n");
        assert_eq!(err, None);
        assert_eq!(cmds, vec![args(&["PING"]), args(&["PING"])]);
    }

    #[test]
    fn too_big_inline_request_is_rejected_without_a_newline() {
        let mut parser = RequestParser::new();
        parser.feed(&vec![b'a'; PROTO_INLINE_MAX_SIZE]);
        assert_eq!(parser.next_command(), Ok(None));
        parser.feed(b"a");
        assert_eq!(
            parser.next_command().unwrap_err().to_reply(),
            b"-ERR Protocol error: too big inline request\r\n"
        );
        // Poisoned: the same error again.
        parser.feed(b"\r\n");
        assert_eq!(
            parser.next_command(),
            Err(ProtocolError::TooBigInlineRequest)
        );
    }

    #[test]
    fn line_trickling_in_byte_by_byte_is_not_rescanned_quadratically() {
        // 64 KiB fed one byte at a time: quadratic rescanning would take billions of steps.
        let mut parser = RequestParser::new();
        for _ in 0..PROTO_INLINE_MAX_SIZE - 1 {
            parser.feed(b"a");
            assert_eq!(parser.next_command(), Ok(None));
        }
        parser.feed(b"\n");
        let cmd = parser.next_command().unwrap().unwrap();
        assert_eq!(cmd[0].len(), PROTO_INLINE_MAX_SIZE - 1);
        let mut parser = RequestParser::new();
        parser.feed(b"*");
        for _ in 0..PROTO_INLINE_MAX_SIZE {
            parser.feed(b"1");
            let _ = parser.next_command();
        }
        assert_eq!(
            parser.next_command(),
            Err(ProtocolError::TooBigMultibulkCountString)
        );
    }

    #[test]
    fn inline_line_length_limit_does_not_depend_on_packet_boundaries() {
        let mut longest = vec![b'a'; PROTO_INLINE_MAX_SIZE];
        longest.push(b'\n');
        assert_eq!(parse_all(&longest).0.len(), 1);
        let mut too_long = vec![b'a'; PROTO_INLINE_MAX_SIZE + 1];
        too_long.push(b'\n');
        assert_eq!(
            parse_all(&too_long).1,
            Some(ProtocolError::TooBigInlineRequest)
        );
    }

    #[test]
    fn too_big_count_strings_use_redis_text() {
        let mut input = b"*".to_vec();
        input.extend(vec![b'1'; PROTO_INLINE_MAX_SIZE + 1]);
        assert_eq!(
            parse_error(&input),
            b"-ERR Protocol error: too big mbulk count string\r\n"
        );
        let mut input = b"*1\r\n$".to_vec();
        input.extend(vec![b'1'; PROTO_INLINE_MAX_SIZE + 1]);
        assert_eq!(
            parse_error(&input),
            b"-ERR Protocol error: too big bulk count string\r\n"
        );
    }

    #[test]
    fn unauthenticated_limits_match_redis_and_lift_after_auth() {
        let run = |input: &[u8], unauthenticated: bool| {
            let mut p = RequestParser::new();
            p.set_unauthenticated(unauthenticated);
            p.feed(input);
            drain(&mut p)
        };
        let big_bulk = b"*2\r\n$16385\r\n";
        assert_eq!(
            run(b"*11\r\n", true).1,
            Some(ProtocolError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(
            run(big_bulk, true).1,
            Some(ProtocolError::UnauthenticatedBulkLength)
        );
        // At the limits, and non-positive counts, are fine; so is everything once authenticated.
        assert_eq!(run(b"*10\r\n$16384\r\n", true).1, None);
        assert_eq!(
            run(b"*-1\r\n*0\r\nPING\r\n", true),
            (vec![vec![b"PING".to_vec()]], None)
        );
        assert_eq!(run(b"*11\r\n", false).1, None);
        assert_eq!(run(big_bulk, false).1, None);
        // Invalid lengths keep their own error.
        assert_eq!(
            run(b"*2\r\n$-5\r\n", true).1,
            Some(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            ProtocolError::UnauthenticatedMultibulkLength.to_reply(),
            b"-ERR Protocol error: unauthenticated multibulk length\r\n"
        );
        assert_eq!(
            ProtocolError::UnauthenticatedBulkLength.to_reply(),
            b"-ERR Protocol error: unauthenticated bulk length\r\n"
        );
    }

    #[test]
    fn custom_limits_are_enforced() {
        let limits = Limits {
            max_bulk_len: 3,
            max_multibulk_len: 2,
            max_inline_len: 8,
        };
        let run = |input: &[u8]| {
            let mut p = RequestParser::with_limits(limits);
            p.feed(input);
            drain(&mut p)
        };
        assert_eq!(
            run(b"*1\r\n$4\r\n").1,
            Some(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            run(b"*3\r\n").1,
            Some(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            run(b"123456789").1,
            Some(ProtocolError::TooBigInlineRequest)
        );
        assert_eq!(run(b"*2\r\n$3\r\nabc\r\n$0\r\n\r\n").0.len(), 1);
    }

    #[test]
    fn unbalanced_quotes_use_redis_text() {
        for input in [
            &b"set \"a\r\n"[..],
            b"set 'a'b c\r\n",
            b"ping \"a\"b\r\n",
            b"ping 'abc\n",
            b"ping \"a\\\"\n",
        ] {
            assert_eq!(
                parse_error(input),
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
                "{input:?}"
            );
        }
    }

    #[test]
    fn inline_quoting_follows_sdssplitargs() {
        let split = |s: &[u8]| split_inline_args(s).unwrap();
        assert_eq!(split(b"ping a\"b c\""), args(&["ping", "ab c"]));
        assert_eq!(split(b"ping 'a\\'b'"), args(&["ping", "a'b"]));
        assert_eq!(
            split(b"ping \"a\\x41\\n\""),
            vec![b"ping".to_vec(), b"aA\n".to_vec()]
        );
        assert_eq!(split(b"\"\\\\q\\\\x4g\""), vec![b"\\q\\x4g".to_vec()]);
        assert_eq!(split(b"\"\\x4g\""), vec![b"x4g".to_vec()]);
        assert_eq!(
            split(b"\"\\t\\r\\b\\a\\z\""),
            vec![b"\t\r\x08\x07z".to_vec()]
        );
        assert_eq!(split(b"'a\\nb'"), vec![b"a\\nb".to_vec()]);
        assert_eq!(split(b"ping\t  a"), args(&["ping", "a"]));
        // A vertical tab is skipped before a token but does not end one.
        assert_eq!(split(b"\x0bping\x0bb"), vec![b"ping\x0bb".to_vec()]);
        assert_eq!(split(b"\"\" ''"), args(&["", ""]));
        assert_eq!(split(b"a\0b c"), args(&["a"]));
        assert_eq!(split(b""), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn inline_line_ending_in_bare_cr_is_stripped() {
        assert_eq!(parse_all(b"\rping\r\n").0, vec![args(&["ping"])]);
        assert_eq!(parse_all(b"GET a\r\r\n").0, vec![args(&["GET", "a"])]);
    }

    #[test]
    fn parse_i64_matches_string2ll() {
        for (s, v) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("-0", None),
            ("007", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("-", None),
            ("", None),
            ("1x", None),
            ("000000000000000000001", None),
        ] {
            assert_eq!(parse_i64(s.as_bytes()), v, "{s:?}");
        }
    }

    #[test]
    fn encoders_produce_exact_resp_bytes() {
        assert_eq!(simple_string(b"OK"), b"+OK\r\n");
        assert_eq!(error(b"ERR bad\r\nthing"), b"-ERR bad  thing\r\n");
        assert_eq!(integer(-42), b":-42\r\n");
        assert_eq!(bulk(b""), b"$0\r\n\r\n");
        assert_eq!(bulk(b"a\r\nb"), b"$4\r\na\r\nb\r\n");
        assert_eq!(null_bulk(), b"$-1\r\n");
        assert_eq!(
            array(&[bulk(b"a"), null_bulk()]),
            b"*2\r\n$1\r\na\r\n$-1\r\n"
        );
        assert_eq!(array(&[]), b"*0\r\n");
        assert_eq!(encode_command(&[&b"PING"[..]]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode_command(&[b"SELECT".to_vec(), b"0".to_vec()]).len(),
            23
        );
        assert_eq!(
            encode_command(&["REPLCONF", "GETACK", "*"]).len(),
            37,
            "PSYNC.md: REPLCONF GETACK * is 37 bytes"
        );
    }

    #[test]
    fn encoded_commands_parse_back_identically() {
        let argv = vec![
            b"SET".to_vec(),
            b"\r\n\0".to_vec(),
            Vec::new(),
            vec![0xff; 300],
        ];
        let (cmds, err) = parse_all(&encode_command(&argv));
        assert_eq!(err, None);
        assert_eq!(cmds, vec![argv]);
    }

    #[test]
    fn stream_decoder_reports_offsets_of_first_and_last_byte() {
        let mut stream = encode_command(&["SELECT", "0"]);
        stream.extend(encode_command(&["SET", "k", "v"]));
        let decoded = decode_stream(&stream, 1).unwrap();
        assert_eq!(decoded.incomplete, None);
        assert_eq!(decoded.commands.len(), 2);
        assert_eq!(
            (decoded.commands[0].start, decoded.commands[0].end),
            (1, 23)
        );
        assert_eq!(decoded.commands[1].start, 24);
        assert_eq!(decoded.commands[1].end, stream.len() as u64);
        assert_eq!(decoded.commands[1].argv, args(&["SET", "k", "v"]));
    }

    #[test]
    fn stream_truncated_at_every_position_is_incomplete_not_an_error() {
        let mut stream = encode_command(&["SET", "key", "value"]);
        stream.extend(encode_command(&["INCRBY", "n", "-12"]));
        let first_len = encode_command(&["SET", "key", "value"]).len();
        for cut in 0..stream.len() {
            let decoded = decode_stream(&stream[..cut], 500).unwrap();
            if cut == 0 {
                assert_eq!(decoded, DecodedStream::default());
            } else if cut < first_len {
                assert!(decoded.commands.is_empty());
                assert_eq!(decoded.incomplete, Some((500, cut)), "cut {cut}");
            } else if cut == first_len {
                assert_eq!((decoded.commands.len(), decoded.incomplete), (1, None));
            } else {
                assert_eq!(decoded.commands.len(), 1, "cut {cut}");
                assert_eq!(
                    decoded.incomplete,
                    Some((500 + first_len as u64, cut - first_len)),
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn stream_garbage_is_an_error_with_its_offset() {
        let mut stream = encode_command(&["PING"]);
        stream.extend(b"+OK\r\n");
        let err = decode_stream(&stream, 10).unwrap_err();
        assert_eq!((err.offset, err.command_start), (24, 24));
        assert!(err.to_string().contains("offset 24"), "{err}");

        let cases: &[(&[u8], u64)] = &[
            (b"*1\r\n$4\r\nPINGxx", 12),    // terminator checked
            (b"*1\r\n$4\r\nPING\rx", 13),   // '\n' checked
            (b"*1\rx", 3),                  // '\n' after count
            (b"*0\r\n", 1),                 // empty command
            (b"*-1\r\n", 1),                // null array
            (b"*01\r\n", 1),                // leading zero
            (b"*1\r\n$-1\r\n", 5),          // null bulk
            (b"*1\r\n:1\r\n", 4),           // not a bulk
            (b"*1\r\n$4x", 6),              // non-digit
            (b"*123456789012345678901", 1), // too many digits
            (b"\n", 0),
        ];
        for (bytes, offset) in cases {
            let err = decode_stream(bytes, 0).unwrap_err();
            assert_eq!(
                err.offset,
                *offset,
                "{:?}: {err}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn stream_valid_prefixes_of_number_lines_are_incomplete() {
        for bytes in [
            &b"*"[..],
            b"*1",
            b"*1\r",
            b"*1\r\n$",
            b"*1\r\n$-",
            b"*1\r\n$12345",
        ] {
            let decoded = decode_stream(bytes, 1).unwrap();
            assert_eq!(decoded.incomplete, Some((1, bytes.len())), "{bytes:?}");
        }
    }

    #[test]
    fn stream_bulk_over_limit_is_an_error_even_when_truncated() {
        let err = decode_stream(b"*1\r\n$536870913\r\n", 1).unwrap_err();
        assert_eq!(err.offset, 6);
    }

    #[test]
    fn stream_offset_overflow_is_an_error_not_a_panic() {
        let stream = encode_command(&["PING"]);
        let err = decode_stream(&stream, u64::MAX - 3).unwrap_err();
        assert!(err.reason.contains("overflow"));
    }

    #[test]
    fn random_bytes_never_panic_the_parser_or_decoder() {
        let mut state = 0x1234_5678_9abc_def0_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"*$\r\n0123456789-+ab\"'\\x \t";
        for _ in 0..3000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let _ = parse_all(&bytes);
            let _ = decode_stream(&bytes, next() >> 1);
        }
    }
}
