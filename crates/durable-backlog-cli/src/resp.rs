//! A streaming decoder for the replication stream: RESP multi-bulk commands
//! (`*<n>\r\n` then `n` × `$<len>\r\n<bytes>\r\n`), each tagged with the replication offset of
//! its first byte.
//!
//! A range that starts inside a command (the ring overwrote its head, or `--from` points into
//! it) is skipped up to the first command boundary that is followed by well-formed commands;
//! bytes that are not RESP are skipped the same way. Both are reported, never guessed at.

use std::fmt::Write as _;

use durable_resp::{Limits, StreamDecoder, StreamItem};

/// Largest element count and bulk length accepted (Redis's own limits).
const MAX_ELEMENTS: u64 = 1024 * 1024;
const MAX_BULK: usize = durable_resp::PROTO_MAX_BULK_LEN;
/// Well-formed commands that must follow a candidate boundary for it to be trusted.
const SYNC_CHAIN: usize = 3;

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A whole command starting at `offset`.
    Command { offset: u64, args: Vec<Vec<u8>> },
    /// Bytes `offset..offset + len` that are not (the start of) a whole command.
    Skipped { offset: u64, len: u64 },
    /// A command starting at `offset` whose last `len` bytes are past the end of the range.
    Incomplete { offset: u64, len: u64 },
}

enum Parse {
    Complete(Vec<Vec<u8>>, usize),
    NeedMore,
    Invalid,
}

/// Decodes the command at the start of `buf` with the one stream decoder the server's replay
/// also uses (`durable_resp::StreamDecoder`), under the limits above.
fn parse_one(buf: &[u8]) -> Parse {
    let limits = Limits {
        max_multibulk_len: MAX_ELEMENTS,
        max_bulk_len: MAX_BULK,
        ..Limits::default()
    };
    match StreamDecoder::with_limits(buf, 0, limits).next() {
        None | Some(Ok(StreamItem::Incomplete { .. })) => Parse::NeedMore,
        Some(Ok(StreamItem::Command(c))) => Parse::Complete(c.argv, c.end as usize + 1),
        Some(Err(_)) => Parse::Invalid,
    }
}

/// Whether `buf` starts a run of well-formed commands: `Some(true)` yes, `Some(false)` no,
/// `None` cannot tell before more bytes arrive.
fn starts_chain(buf: &[u8], eof: bool) -> Option<bool> {
    let mut at = 0;
    for _ in 0..SYNC_CHAIN {
        if eof && at == buf.len() && at > 0 {
            return Some(true);
        }
        match parse_one(&buf[at..]) {
            Parse::Complete(_, n) => at += n,
            Parse::Invalid => return Some(false),
            Parse::NeedMore => return eof.then_some(true),
        }
    }
    Some(true)
}

/// Whether more input may follow what a [`Decoder`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    MayContinue,
    Ended,
}

/// Feed it bytes in stream order; it returns the items they complete.
#[derive(Debug)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    /// Replication offset of `buf[0]`.
    base: u64,
    /// Whether `buf[0]` is known to be a command boundary.
    synced: bool,
    /// Start of the bytes being skipped, if any.
    skip_from: Option<u64>,
}

impl Decoder {
    /// A decoder whose first byte has replication offset `first` and may be mid-command.
    pub(crate) fn new(first: u64) -> Self {
        Decoder {
            buf: Vec::new(),
            base: first,
            synced: false,
            skip_from: None,
        }
    }

    /// Adds bytes; returns what they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Item> {
        self.buf.extend_from_slice(bytes);
        self.run(Input::MayContinue)
    }

    /// Ends the input; returns what is left.
    pub(crate) fn finish(&mut self) -> Vec<Item> {
        self.run(Input::Ended)
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.base += n as u64;
    }

    fn skip(&mut self, n: usize) {
        if n > 0 {
            self.skip_from.get_or_insert(self.base);
            self.consume(n);
        }
    }

    fn end_skip(&mut self, out: &mut Vec<Item>) {
        if let Some(offset) = self.skip_from.take() {
            out.push(Item::Skipped {
                offset,
                len: self.base - offset,
            });
        }
    }

    fn run(&mut self, input: Input) -> Vec<Item> {
        let eof = input == Input::Ended;
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            if !self.synced {
                self.consume(pos);
                pos = 0;
                let mut from = 0;
                loop {
                    let Some(q) = self.buf[from..].iter().position(|&b| b == b'*') else {
                        let all = self.buf.len();
                        self.skip(all);
                        if eof {
                            self.end_skip(&mut out);
                        }
                        return out;
                    };
                    let q = from + q;
                    match starts_chain(&self.buf[q..], eof) {
                        Some(true) => {
                            self.skip(q);
                            self.end_skip(&mut out);
                            self.synced = true;
                            break;
                        }
                        Some(false) => from = q + 1,
                        None => {
                            self.skip(q);
                            return out;
                        }
                    }
                }
            }
            match parse_one(&self.buf[pos..]) {
                Parse::Complete(args, n) => {
                    out.push(Item::Command {
                        offset: self.base + pos as u64,
                        args,
                    });
                    pos += n;
                }
                Parse::NeedMore => {
                    let left = (self.buf.len() - pos) as u64;
                    if eof && left > 0 {
                        out.push(Item::Incomplete {
                            offset: self.base + pos as u64,
                            len: left,
                        });
                        self.consume(self.buf.len());
                    } else {
                        self.consume(pos);
                    }
                    return out;
                }
                Parse::Invalid => {
                    self.synced = false;
                    self.consume(pos);
                    pos = 0;
                    // Skip at least the byte that broke the sync.
                    self.skip(1);
                }
            }
        }
    }
}

/// Renders an argument like `redis-cli` does: bare if it is printable and unambiguous,
/// else quoted with escapes.
pub(crate) fn render_arg(a: &[u8]) -> String {
    let bare = !a.is_empty()
        && a.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'\'');
    if bare {
        return String::from_utf8_lossy(a).into_owned();
    }
    let mut s = String::from("\"");
    for &b in a {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
        v
    }

    fn decode_all(first: u64, bytes: &[u8], piece: usize) -> Vec<Item> {
        let mut d = Decoder::new(first);
        let mut out = Vec::new();
        for c in bytes.chunks(piece.max(1)) {
            out.extend(d.feed(c));
        }
        out.extend(d.finish());
        out
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn whole_commands_decode_with_their_offsets_in_any_feed_size() {
        let mut s = cmd(&["SELECT", "0"]);
        s.extend(cmd(&["SET", "k", "v"]));
        s.extend(cmd(&["PING"]));
        for piece in [1, 2, 3, 7, 100] {
            let got = decode_all(1, &s, piece);
            assert_eq!(
                got,
                vec![
                    Item::Command {
                        offset: 1,
                        args: args(&["SELECT", "0"])
                    },
                    Item::Command {
                        offset: 24,
                        args: args(&["SET", "k", "v"])
                    },
                    Item::Command {
                        offset: 51,
                        args: args(&["PING"])
                    },
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn a_command_cut_at_the_start_is_skipped_to_the_next_boundary() {
        let mut s = cmd(&["SET", "k*", "*1\r\n"]);
        let cut = 9;
        s.extend(cmd(&["SET", "a", "b"]));
        s.extend(cmd(&["DEL", "a"]));
        let got = decode_all(100 + cut as u64, &s[cut..], 5);
        let first_len = (cmd(&["SET", "k*", "*1\r\n"]).len() - cut) as u64;
        assert_eq!(
            got[0],
            Item::Skipped {
                offset: 109,
                len: first_len
            }
        );
        assert_eq!(
            got[1],
            Item::Command {
                offset: 109 + first_len,
                args: args(&["SET", "a", "b"])
            }
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_command_cut_at_the_end_is_reported_incomplete() {
        let mut s = cmd(&["SET", "k", "v"]);
        let whole = s.len() as u64;
        s.extend(&cmd(&["SET", "a", "b"])[..10]);
        let got = decode_all(1, &s, 4);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            Item::Incomplete {
                offset: 1 + whole,
                len: 10
            }
        );
    }

    #[test]
    fn garbage_is_skipped_and_reported_never_decoded() {
        let mut s = b"hello world".to_vec();
        s.extend(cmd(&["PING"]));
        s.extend(b"\x00\x01junk");
        s.extend(cmd(&["SET", "x", "y"]));
        s.extend(cmd(&["DEL", "x"]));
        let got = decode_all(1, &s, 3);
        // A lone PING between garbage is not trusted as a boundary: a boundary must be
        // followed by well-formed commands (or the end of the range).
        assert_eq!(
            got[0],
            Item::Skipped {
                offset: 1,
                len: 11 + 14 + 6
            }
        );
        assert!(matches!(&got[1], Item::Command { offset: 32, args } if args[0] == b"SET"));
        assert!(matches!(&got[2], Item::Command { args, .. } if args[0] == b"DEL"));
        assert_eq!(got.len(), 3);
        // Garbage after a trusted boundary is skipped and reported too.
        let mut s = cmd(&["PING"]).repeat(3);
        s.extend(b"\x00junk");
        s.extend(cmd(&["SET", "x", "y"]));
        let got = decode_all(1, &s, 2);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[3], Item::Skipped { offset: 43, len: 5 });
        assert!(matches!(&got[4], Item::Command { offset: 48, .. }));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for round in 0..200 {
            let mut s = Vec::new();
            for _ in 0..(round * 7 % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"*$\r\n0123456789ab";
                s.push(alphabet[(x % 16) as usize]);
            }
            let _ = decode_all(1, &s, (round % 5) + 1);
        }
    }

    #[test]
    fn arguments_render_like_redis_cli() {
        assert_eq!(render_arg(b"SET"), "SET");
        assert_eq!(render_arg(b"a b"), "\"a b\"");
        assert_eq!(render_arg(b""), "\"\"");
        assert_eq!(render_arg(b"\x00\n\""), "\"\\x00\\n\\\"\"");
    }
}
