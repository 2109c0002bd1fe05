//! RDB snapshots of a [`Keyspace`]: the writer a master uses for full syncs and the reader it
//! uses to load one, both for string keys only.
//!
//! # Format written (what Redis 7.0's `rdbSaveRio` writes for string keys)
//!
//! ```text
//! "REDIS0010"
//! 0xFA aux: redis-ver, redis-bits, ctime, used-mem, [repl-stream-db, repl-id, repl-offset],
//!           aof-base
//! per non-empty db:  0xFE <db>   0xFB <keys> <keys with expiry = 0>
//!                    per key: 0x00 <key string> <value string>
//! 0xFF
//! CRC-64/Jones of every byte from "REDIS" through 0xFF, 8 bytes little-endian
//! ```
//!
//! Lengths use Redis's variable encoding: `00xxxxxx` (6 bits), `01xxxxxx xxxxxxxx` (14 bits,
//! big-endian), `0x80` + 4 bytes big-endian, `0x81` + 8 bytes big-endian. `11xxxxxx` marks an
//! encoded string: `0xC0`/`0xC1`/`0xC2` an 8/16/32-bit little-endian integer, `0xC3` LZF
//! (`<compressed len> <plain len> <bytes>`). As Redis does, a string of at most 11 bytes that
//! is the canonical decimal of a 32-bit integer is written as an integer, and with
//! compression on a string over 20 bytes is written LZF-compressed when that saves at least
//! 4 bytes.
//!
//! # Reader
//!
//! [`read_rdb`] validates everything and never panics: magic, version (1 to 12; checksum from
//! version 5), every length against the bytes present, LZF data, database numbers (below 16),
//! duplicate keys, the checksum (unless it is zero: "not checked", as in Redis), and that
//! nothing follows the checksum. It reads what Redis 7.0 writes for string keys, including
//! integer-encoded and LZF strings, and skips the LRU/LFU hints (`0xF8`, `0xF9`). Other value
//! types, keys with an expiry (`0xFC`, `0xFD`), modules and functions are refused with a
//! clear error: this master holds plain strings without TTLs.

use crate::keyspace::{DB_COUNT, DbIndex, Keyspace};
use crate::lzf;
use durable_resp::parse_i64;
use std::fmt;
use std::io::{self, Write};

/// The RDB version written: Redis 7.0's.
pub(crate) const RDB_VERSION: u32 = 10;
/// The highest RDB version [`read_rdb`] accepts (Redis 7.4's).
pub(crate) const RDB_MAX_READ_VERSION: u32 = 12;

const OPCODE_FUNCTION2: u8 = 0xF5;
const OPCODE_FUNCTION_PRE_GA: u8 = 0xF6;
const OPCODE_MODULE_AUX: u8 = 0xF7;
const OPCODE_IDLE: u8 = 0xF8;
const OPCODE_FREQ: u8 = 0xF9;
const OPCODE_AUX: u8 = 0xFA;
const OPCODE_RESIZEDB: u8 = 0xFB;
const OPCODE_EXPIRETIME_MS: u8 = 0xFC;
const OPCODE_EXPIRETIME: u8 = 0xFD;
const OPCODE_SELECTDB: u8 = 0xFE;
const OPCODE_EOF: u8 = 0xFF;
const TYPE_STRING: u8 = 0;

const ENC_INT8: u8 = 0;
const ENC_INT16: u8 = 1;
const ENC_INT32: u8 = 2;
const ENC_LZF: u8 = 3;

/// The replication state saved in a snapshot: a restarted replica uses it to ask
/// `PSYNC <id> <offset + 1>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplInfo {
    /// The replication ID (`repl-id`), 40 hex characters.
    pub(crate) id: Vec<u8>,
    /// The replication offset the snapshot is at (`repl-offset`).
    pub(crate) offset: u64,
    /// The database the replication stream has selected at that offset (`repl-stream-db`).
    pub(crate) stream_db: DbIndex,
}

/// What to write besides the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RdbOptions {
    /// `redis-ver`: the Redis version to claim, e.g. `7.0.15`.
    pub(crate) redis_ver: String,
    /// `ctime`: creation time, seconds since the Unix epoch.
    pub(crate) ctime: i64,
    /// `used-mem`: memory in use, in bytes.
    pub(crate) used_mem: u64,
    /// `repl-stream-db`, `repl-id` and `repl-offset`, if known.
    pub(crate) repl: Option<ReplInfo>,
    /// Compress strings over 20 bytes with LZF (Redis's `rdbcompression yes`, its default).
    pub(crate) compress: bool,
}

impl Default for RdbOptions {
    fn default() -> Self {
        RdbOptions {
            redis_ver: "7.0.15".to_owned(),
            ctime: 0,
            used_mem: 0,
            repl: None,
            compress: true,
        }
    }
}

/// Redis's RDB checksum: CRC-64/Jones, reflected, as `crc64.c` computes it (the `crc` crate's
/// catalogue entry, sliced by 16).
static CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// The RDB checksum of `bytes`.
fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// A writer that checksums and counts what passes through.
struct CrcWriter<W> {
    inner: W,
    crc: crc::Digest<'static, u64, crc::Table<16>>,
    written: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_len(&mut self, len: u64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(9);
        encode_len(&mut buf, len);
        self.put(&buf)
    }

    fn put_string(&mut self, s: &[u8], compress: bool) -> io::Result<()> {
        let mut buf = Vec::new();
        encode_string(&mut buf, s, compress);
        self.put(&buf)
    }

    fn put_aux(&mut self, key: &str, value: &[u8], compress: bool) -> io::Result<()> {
        self.put(&[OPCODE_AUX])?;
        self.put_string(key.as_bytes(), compress)?;
        self.put_string(value, compress)
    }
}

/// Appends Redis's length encoding of `len`.
pub(crate) fn encode_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len.to_le_bytes()[0]);
    } else if len < 1 << 14 {
        let [lo, hi, ..] = len.to_le_bytes();
        out.extend_from_slice(&[0x40 | hi, lo]);
    } else if let Ok(len32) = u32::try_from(len) {
        out.push(0x80);
        out.extend_from_slice(&len32.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Appends a string as Redis's `rdbSaveRawString` does: integer-encoded if it is the canonical
/// decimal of a 32-bit integer in at most 11 bytes, else LZF if `compress`, longer than 20 bytes
/// and at least 4 bytes shorter, else plain.
pub(crate) fn encode_string(out: &mut Vec<u8>, s: &[u8], compress: bool) {
    if s.len() <= 11
        && let Some(n) = parse_i64(s)
    {
        if let Ok(small) = i8::try_from(n) {
            out.push(0xC0 | ENC_INT8);
            out.extend_from_slice(&small.to_le_bytes());
            return;
        }
        if let Ok(small) = i16::try_from(n) {
            out.push(0xC0 | ENC_INT16);
            out.extend_from_slice(&small.to_le_bytes());
            return;
        }
        if let Ok(small) = i32::try_from(n) {
            out.push(0xC0 | ENC_INT32);
            out.extend_from_slice(&small.to_le_bytes());
            return;
        }
    }
    if compress
        && s.len() > 20
        && let Some(packed) = lzf::compress(s, s.len() - 4)
    {
        out.push(0xC0 | ENC_LZF);
        encode_len(out, packed.len() as u64);
        encode_len(out, s.len() as u64);
        out.extend_from_slice(&packed);
        return;
    }
    encode_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Writes `ks` as an RDB file to `out`, returning the number of bytes written.
///
/// Databases are written in order; keys within one in no particular order.
///
/// # Errors
///
/// Any I/O error from `out`; the output is then incomplete and must not be used.
pub(crate) fn write_rdb<W: Write>(out: W, ks: &Keyspace, options: &RdbOptions) -> io::Result<u64> {
    let mut w = CrcWriter {
        inner: out,
        crc: CRC64.digest(),
        written: 0,
    };
    let z = options.compress;
    w.put(format!("REDIS{RDB_VERSION:04}").as_bytes())?;
    w.put_aux("redis-ver", options.redis_ver.as_bytes(), z)?;
    w.put_aux("redis-bits", b"64", z)?;
    w.put_aux("ctime", options.ctime.to_string().as_bytes(), z)?;
    w.put_aux("used-mem", options.used_mem.to_string().as_bytes(), z)?;
    if let Some(repl) = &options.repl {
        w.put_aux("repl-stream-db", repl.stream_db.to_string().as_bytes(), z)?;
        w.put_aux("repl-id", &repl.id, z)?;
        w.put_aux("repl-offset", repl.offset.to_string().as_bytes(), z)?;
    }
    w.put_aux("aof-base", b"0", z)?;
    for db in DbIndex::all() {
        let len = ks.db_len(db);
        if len == 0 {
            continue;
        }
        w.put(&[OPCODE_SELECTDB])?;
        w.put_len(u64::from(db.get()))?;
        w.put(&[OPCODE_RESIZEDB])?;
        w.put_len(len as u64)?;
        w.put_len(0)?;
        let mut entry = Vec::new();
        for (key, value) in ks.iter(db) {
            entry.clear();
            entry.push(TYPE_STRING);
            encode_string(&mut entry, key, z);
            encode_string(&mut entry, value, z);
            w.put(&entry)?;
        }
    }
    w.put(&[OPCODE_EOF])?;
    let checksum = w.crc.clone().finalize().to_le_bytes();
    w.put(&checksum)?;
    w.inner.flush()?;
    Ok(w.written)
}

/// [`write_rdb`] into memory.
#[cfg(test)]
#[must_use]
pub(crate) fn rdb_to_vec(ks: &Keyspace, options: &RdbOptions) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_rdb(&mut out, ks, options);
    out
}

/// A loaded RDB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadedRdb {
    /// The RDB version from the header.
    pub(crate) version: u32,
    /// The keys.
    pub(crate) keyspace: Keyspace,
    /// Every aux field, in file order.
    pub(crate) aux: Vec<(Vec<u8>, Vec<u8>)>,
    /// `repl-id`, if present.
    pub(crate) repl_id: Option<Vec<u8>>,
    /// `repl-offset`, if present.
    pub(crate) repl_offset: Option<u64>,
    /// `repl-stream-db`, if present.
    pub(crate) repl_stream_db: Option<DbIndex>,
    /// Whether a checksum was verified (`false` when the file's checksum is zero or its
    /// version predates checksums).
    pub(crate) checksum_verified: bool,
}

impl LoadedRdb {
    /// The snapshot's replication state, if it has an ID and an offset (the stream db
    /// defaults to 0, as in Redis).
    #[must_use]
    pub(crate) fn repl_info(&self) -> Option<ReplInfo> {
        Some(ReplInfo {
            id: self.repl_id.clone()?,
            offset: self.repl_offset?,
            stream_db: self.repl_stream_db.unwrap_or(DbIndex::ZERO),
        })
    }
}

/// What is wrong with an RDB file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum RdbErrorKind {
    /// The file ends while reading the named item.
    Truncated(&'static str),
    /// The file does not start with `REDIS` and four digits.
    BadMagic,
    /// The version is outside 1 to [`RDB_MAX_READ_VERSION`].
    UnsupportedVersion(u32),
    /// The stored checksum does not match the computed one.
    ChecksumMismatch {
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum of the file's bytes.
        computed: u64,
    },
    /// A length uses an unknown encoding (`0x82` to `0xBF`).
    BadLengthEncoding(u8),
    /// A string uses an unknown encoding (`0xC4` to `0xFF`).
    BadStringEncoding(u8),
    /// A length does not fit this machine.
    LengthTooLarge(u64),
    /// LZF data is malformed.
    Lzf(lzf::LzfError),
    /// `SELECTDB` names a database at or above 16.
    DbOutOfRange(u64),
    /// The same key appears twice in one database.
    DuplicateKey {
        /// The database.
        db: DbIndex,
    },
    /// A value type other than plain string (0).
    UnsupportedType(u8),
    /// A key with an expiry: this master has no TTLs.
    ExpiryUnsupported,
    /// A module or function opcode.
    UnsupportedOpcode(u8),
    /// A `repl-*` aux field with a malformed value.
    BadAux(&'static str),
    /// Bytes after the checksum.
    TrailingBytes(usize),
}

impl fmt::Display for RdbErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbErrorKind::Truncated(what) => write!(f, "file ends inside {what}"),
            RdbErrorKind::BadMagic => f.write_str("expected \"REDIS\" and a 4-digit version"),
            RdbErrorKind::UnsupportedVersion(v) => {
                write!(f, "RDB version {v} is not in 1..={RDB_MAX_READ_VERSION}")
            }
            RdbErrorKind::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: file says {stored:#018x}, content hashes to {computed:#018x}"
            ),
            RdbErrorKind::BadLengthEncoding(b) => write!(f, "unknown length encoding {b:#04x}"),
            RdbErrorKind::BadStringEncoding(b) => write!(f, "unknown string encoding {b:#04x}"),
            RdbErrorKind::LengthTooLarge(n) => write!(f, "length {n} does not fit in memory"),
            RdbErrorKind::Lzf(e) => write!(f, "{e}"),
            RdbErrorKind::DbOutOfRange(n) => {
                write!(
                    f,
                    "database {n} is out of range (expected below {DB_COUNT})"
                )
            }
            RdbErrorKind::DuplicateKey { db } => write!(f, "duplicate key in database {db}"),
            RdbErrorKind::UnsupportedType(t) => {
                write!(f, "value type {t} is not supported (only strings, type 0)")
            }
            RdbErrorKind::ExpiryUnsupported => {
                f.write_str("a key has an expiry; keys with a TTL are not supported")
            }
            RdbErrorKind::UnsupportedOpcode(op) => {
                write!(
                    f,
                    "opcode {op:#04x} (module or function data) is not supported"
                )
            }
            RdbErrorKind::BadAux(field) => write!(f, "aux field {field} has a malformed value"),
            RdbErrorKind::TrailingBytes(n) => write!(f, "{n} bytes follow the checksum"),
        }
    }
}

/// An RDB file that cannot be loaded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RdbError {
    /// Byte offset in the file of the item that is wrong.
    pub(crate) offset: usize,
    /// What is wrong.
    pub(crate) kind: RdbErrorKind,
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid RDB at byte {}: {}", self.offset, self.kind)
    }
}

impl std::error::Error for RdbError {}

/// A bounds-checked read position in the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A string as read: borrowed from the file when stored plainly.
enum RdbString<'a> {
    Plain(&'a [u8]),
    Owned(Vec<u8>),
}

impl RdbString<'_> {
    fn into_vec(self) -> Vec<u8> {
        match self {
            RdbString::Plain(s) => s.to_vec(),
            RdbString::Owned(v) => v,
        }
    }
}

/// A decoded length field: a plain length, or the marker of a specially encoded string.
enum Len {
    Plain(u64),
    Encoded(u8),
}

/// An error at byte `at`.
fn fail(at: usize, kind: RdbErrorKind) -> RdbError {
    RdbError { offset: at, kind }
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RdbError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(fail(self.pos, RdbErrorKind::Truncated(what))),
        }
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, RdbError> {
        let slice = self.take(1, what)?;
        slice
            .first()
            .copied()
            .ok_or_else(|| fail(self.pos, RdbErrorKind::Truncated(what)))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RdbError> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn len_field(&mut self, what: &'static str) -> Result<Len, RdbError> {
        let at = self.pos;
        let first = self.byte(what)?;
        Ok(match first >> 6 {
            0 => Len::Plain(u64::from(first & 0x3F)),
            1 => {
                let low = self.byte(what)?;
                Len::Plain((u64::from(first & 0x3F) << 8) | u64::from(low))
            }
            3 => Len::Encoded(first & 0x3F),
            _ => match first {
                0x80 => Len::Plain(u64::from(u32::from_be_bytes(self.array(what)?))),
                0x81 => Len::Plain(u64::from_be_bytes(self.array(what)?)),
                other => return Err(fail(at, RdbErrorKind::BadLengthEncoding(other))),
            },
        })
    }

    /// A plain length (an encoded-string marker is an error here).
    fn len(&mut self, what: &'static str) -> Result<u64, RdbError> {
        let at = self.pos;
        match self.len_field(what)? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(_) => {
                let first = self.bytes.get(at).copied().unwrap_or(0);
                Err(fail(at, RdbErrorKind::BadLengthEncoding(first)))
            }
        }
    }

    fn usize_len(&mut self, what: &'static str) -> Result<usize, RdbError> {
        let at = self.pos;
        let n = self.len(what)?;
        usize::try_from(n).map_err(|_| fail(at, RdbErrorKind::LengthTooLarge(n)))
    }

    fn string(&mut self, what: &'static str) -> Result<RdbString<'a>, RdbError> {
        let at = self.pos;
        match self.len_field(what)? {
            Len::Plain(n) => {
                let n =
                    usize::try_from(n).map_err(|_| fail(at, RdbErrorKind::LengthTooLarge(n)))?;
                Ok(RdbString::Plain(self.take(n, what)?))
            }
            Len::Encoded(ENC_INT8) => {
                let v = i8::from_le_bytes(self.array(what)?);
                Ok(RdbString::Owned(v.to_string().into_bytes()))
            }
            Len::Encoded(ENC_INT16) => {
                let v = i16::from_le_bytes(self.array(what)?);
                Ok(RdbString::Owned(v.to_string().into_bytes()))
            }
            Len::Encoded(ENC_INT32) => {
                let v = i32::from_le_bytes(self.array(what)?);
                Ok(RdbString::Owned(v.to_string().into_bytes()))
            }
            Len::Encoded(ENC_LZF) => {
                let packed_len = self.usize_len(what)?;
                let plain_len = self.usize_len(what)?;
                let data_at = self.pos;
                let packed = self.take(packed_len, what)?;
                lzf::decompress(packed, plain_len)
                    .map(RdbString::Owned)
                    .map_err(|e| fail(data_at, RdbErrorKind::Lzf(e)))
            }
            Len::Encoded(other) => Err(fail(at, RdbErrorKind::BadStringEncoding(0xC0 | other))),
        }
    }
}

/// Reads one aux field (after its opcode) and records the replication fields.
fn read_aux(c: &mut Cursor<'_>, loaded: &mut LoadedRdb) -> Result<(), RdbError> {
    let key = c.string("an aux field name")?.into_vec();
    let value_at = c.pos;
    let value = c.string("an aux field value")?.into_vec();
    let bad = |field| fail(value_at, RdbErrorKind::BadAux(field));
    match key.as_slice() {
        b"repl-id" => loaded.repl_id = Some(value.clone()),
        b"repl-offset" => {
            let n = parse_i64(&value).ok_or_else(|| bad("repl-offset"))?;
            loaded.repl_offset = Some(u64::try_from(n).map_err(|_| bad("repl-offset"))?);
        }
        b"repl-stream-db" => {
            let n = parse_i64(&value).ok_or_else(|| bad("repl-stream-db"))?;
            let stream_db = u64::try_from(n).ok().and_then(DbIndex::new);
            loaded.repl_stream_db = Some(stream_db.ok_or_else(|| bad("repl-stream-db"))?);
        }
        _ => {}
    }
    loaded.aux.push((key, value));
    Ok(())
}

/// Loads an RDB file held in memory.
///
/// # Errors
///
/// An [`RdbError`] naming the byte offset and what is wrong, for any file that is not a
/// complete, intact snapshot of string keys: see the module documentation.
///
/// # Examples
///
/// ```ignore
/// use crate::keyspace::{DbIndex, Keyspace};
/// use crate::rdb::{rdb_to_vec, read_rdb, RdbOptions};
///
/// let mut ks = Keyspace::new();
/// ks.set(DbIndex::ZERO, b"k".to_vec(), b"12345".to_vec());
/// let bytes = rdb_to_vec(&ks, &RdbOptions::default());
/// assert_eq!(read_rdb(&bytes).unwrap().keyspace, ks);
/// assert!(read_rdb(&bytes[..bytes.len() - 1]).is_err());
/// ```
pub(crate) fn read_rdb(bytes: &[u8]) -> Result<LoadedRdb, RdbError> {
    let mut c = Cursor { bytes, pos: 0 };
    let header = c.take(9, "the header")?;
    let (magic, digits) = header.split_at(5);
    if magic != b"REDIS" || !digits.iter().all(u8::is_ascii_digit) {
        return Err(fail(0, RdbErrorKind::BadMagic));
    }
    let version = digits
        .iter()
        .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
    if !(1..=RDB_MAX_READ_VERSION).contains(&version) {
        return Err(fail(5, RdbErrorKind::UnsupportedVersion(version)));
    }
    let mut loaded = LoadedRdb {
        version,
        keyspace: Keyspace::new(),
        aux: Vec::new(),
        repl_id: None,
        repl_offset: None,
        repl_stream_db: None,
        checksum_verified: false,
    };
    let mut db = DbIndex::ZERO;
    loop {
        let at = c.pos;
        let opcode = c.byte("an opcode")?;
        match opcode {
            OPCODE_EOF => break,
            OPCODE_AUX => read_aux(&mut c, &mut loaded)?,
            OPCODE_SELECTDB => {
                let n = c.len("a database number")?;
                db = DbIndex::new(n).ok_or_else(|| fail(at + 1, RdbErrorKind::DbOutOfRange(n)))?;
            }
            OPCODE_RESIZEDB => {
                // Only a hint; not trusted for allocation.
                c.len("a resize hint")?;
                c.len("a resize hint")?;
            }
            OPCODE_IDLE => {
                c.len("an LRU idle time")?;
            }
            OPCODE_FREQ => {
                c.byte("an LFU frequency")?;
            }
            OPCODE_EXPIRETIME_MS | OPCODE_EXPIRETIME => {
                return Err(fail(at, RdbErrorKind::ExpiryUnsupported));
            }
            OPCODE_MODULE_AUX | OPCODE_FUNCTION2 | OPCODE_FUNCTION_PRE_GA => {
                return Err(fail(at, RdbErrorKind::UnsupportedOpcode(opcode)));
            }
            TYPE_STRING => {
                let key = c.string("a key")?.into_vec();
                let value = c.string("a string value")?.into_vec();
                if loaded.keyspace.contains(db, &key) {
                    return Err(fail(at, RdbErrorKind::DuplicateKey { db }));
                }
                loaded.keyspace.set(db, key, value);
            }
            other => return Err(fail(at, RdbErrorKind::UnsupportedType(other))),
        }
    }
    if version >= 5 {
        let covered = c.pos;
        let stored = u64::from_le_bytes(c.array("the checksum")?);
        if stored != 0 {
            let computed = crc64(bytes.get(..covered).unwrap_or_default());
            if stored != computed {
                return Err(fail(
                    covered,
                    RdbErrorKind::ChecksumMismatch { stored, computed },
                ));
            }
            loaded.checksum_verified = true;
        }
    }
    let trailing = bytes.len() - c.pos;
    if trailing > 0 {
        return Err(fail(c.pos, RdbErrorKind::TrailingBytes(trailing)));
    }
    Ok(loaded)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn db(n: u64) -> DbIndex {
        DbIndex::new(n).unwrap()
    }

    fn sample_keyspace() -> Keyspace {
        let mut ks = Keyspace::new();
        ks.set(db(0), b"plain".to_vec(), b"value".to_vec());
        ks.set(db(0), b"int8".to_vec(), b"-128".to_vec());
        ks.set(db(0), b"int16".to_vec(), b"32767".to_vec());
        ks.set(db(0), b"int32".to_vec(), b"-2147483648".to_vec());
        ks.set(db(0), b"int64".to_vec(), b"9223372036854775807".to_vec());
        ks.set(db(0), b"notint".to_vec(), b"007".to_vec());
        ks.set(db(0), b"12".to_vec(), b"".to_vec());
        ks.set(db(3), b"long".to_vec(), b"abc".repeat(1000));
        ks.set(db(3), b"bin\0\r\n".to_vec(), vec![0, 255, 13, 10]);
        ks.set(db(15), vec![b'k'; 20_000], vec![7; 70_000]);
        ks
    }

    fn options_with_repl() -> RdbOptions {
        RdbOptions {
            ctime: 1_700_000_000,
            used_mem: 123_456,
            repl: Some(ReplInfo {
                id: b"0123456789abcdef0123456789abcdef01234567".to_vec(),
                offset: 987_654_321,
                stream_db: db(3),
            }),
            ..RdbOptions::default()
        }
    }

    #[test]
    fn written_rdb_reads_back_identically_with_and_without_compression() {
        let ks = sample_keyspace();
        for compress in [true, false] {
            let options = RdbOptions {
                compress,
                ..options_with_repl()
            };
            let bytes = rdb_to_vec(&ks, &options);
            let loaded = read_rdb(&bytes).unwrap();
            assert_eq!(loaded.keyspace, ks);
            assert_eq!(loaded.version, 10);
            assert!(loaded.checksum_verified);
            assert_eq!(loaded.repl_info(), options.repl);
            let names: Vec<&[u8]> = loaded.aux.iter().map(|(k, _)| k.as_slice()).collect();
            assert_eq!(
                names,
                [
                    &b"redis-ver"[..],
                    b"redis-bits",
                    b"ctime",
                    b"used-mem",
                    b"repl-stream-db",
                    b"repl-id",
                    b"repl-offset",
                    b"aof-base"
                ]
            );
            assert_eq!(loaded.aux[2].1, b"1700000000");
        }
        let small = rdb_to_vec(&ks, &RdbOptions::default()).len();
        let big = rdb_to_vec(
            &ks,
            &RdbOptions {
                compress: false,
                ..RdbOptions::default()
            },
        )
        .len();
        assert!(small < big / 10, "compressed {small}, plain {big}");
    }

    #[test]
    fn empty_keyspace_writes_header_aux_eof_and_checksum_only() {
        let bytes = rdb_to_vec(&Keyspace::new(), &RdbOptions::default());
        assert!(bytes.starts_with(b"REDIS0010\xfa\x09redis-ver\x067.0.15"));
        assert_eq!(bytes[bytes.len() - 9], OPCODE_EOF);
        assert!(!bytes.contains(&OPCODE_SELECTDB));
        let crc = crc64(&bytes[..bytes.len() - 8]);
        assert_eq!(bytes[bytes.len() - 8..], crc.to_le_bytes());
        assert!(read_rdb(&bytes).unwrap().keyspace.is_empty());
    }

    #[test]
    fn length_encoding_uses_each_redis_form_at_its_boundaries() {
        let enc = |n: u64| {
            let mut v = Vec::new();
            encode_len(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(63), [0x3F]);
        assert_eq!(enc(64), [0x40, 0x40]);
        assert_eq!(enc(16383), [0x7F, 0xFF]);
        assert_eq!(enc(16384), [0x80, 0, 0, 0x40, 0]);
        assert_eq!(enc(u64::from(u32::MAX)), [0x80, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(enc(1 << 32), [0x81, 0, 0, 0, 1, 0, 0, 0, 0]);
        for n in [
            0,
            63,
            64,
            16383,
            16384,
            u64::from(u32::MAX),
            1 << 32,
            u64::MAX,
        ] {
            let bytes = enc(n);
            let mut c = Cursor {
                bytes: &bytes,
                pos: 0,
            };
            assert_eq!(c.len("test").unwrap(), n);
            assert_eq!(c.pos, bytes.len());
        }
    }

    #[test]
    fn integer_like_strings_are_encoded_like_redis() {
        let enc = |s: &[u8]| {
            let mut v = Vec::new();
            encode_string(&mut v, s, true);
            v
        };
        assert_eq!(enc(b"0"), [0xC0, 0]);
        assert_eq!(enc(b"-1"), [0xC0, 0xFF]);
        assert_eq!(enc(b"127"), [0xC0, 127]);
        assert_eq!(enc(b"128"), [0xC1, 128, 0]);
        assert_eq!(enc(b"-32768"), [0xC1, 0x00, 0x80]);
        assert_eq!(enc(b"32768"), [0xC2, 0x00, 0x80, 0, 0]);
        assert_eq!(enc(b"2147483647"), [0xC2, 0xFF, 0xFF, 0xFF, 0x7F]);
        // Not canonical, or beyond 32 bits: plain.
        assert_eq!(enc(b"2147483648"), b"\x0a2147483648");
        assert_eq!(enc(b"01"), b"\x0201");
        assert_eq!(enc(b"+1"), b"\x02+1");
        assert_eq!(enc(b"-0"), b"\x02-0");
        assert_eq!(enc(b" 1"), b"\x02 1");
    }

    #[test]
    fn short_or_incompressible_strings_are_not_lzf_encoded() {
        let enc = |s: &[u8]| {
            let mut v = Vec::new();
            encode_string(&mut v, s, true);
            v
        };
        assert_eq!(enc(&[b'a'; 20])[0], 20);
        assert_eq!(enc(&[b'a'; 21])[0], 0xC3);
        let noise: Vec<u8> = (0..40u32).map(|i| (i * 97 % 251) as u8).collect();
        assert_eq!(enc(&noise)[0], 40);
    }

    /// `SET a b` then `SAVE` on redis-server 7.0.15 (no replica attached, so no repl fields).
    const REDIS_7_0_15_ONE_KEY: &[u8] = b"REDIS0010\xfa\x09redis-ver\x067.0.15\xfa\x0aredis-bits\
        \xc0\x40\xfa\x05ctime\xc2\x73\x92\x07\x6b\xfa\x08used-mem\xc2\xf8\x54\x0e\x00\xfa\x08\
        aof-base\xc0\x00\xfe\x00\xfb\x01\x00\x00\x01a\x01b\xff\x7b\x45\xe5\x1b\x2d\xa7\x4a\xb8";

    /// `SET k v` and `SET a b` in db 2, a replica attached, then `SAVE`, on redis-server 7.0.15.
    const REDIS_7_0_15_WITH_REPL: &[u8] = b"REDIS0010\xfa\x09redis-ver\x067.0.15\xfa\x0aredis-bits\
        \xc0\x40\xfa\x05ctime\xc2\x7c\x92\x07\x6b\xfa\x08used-mem\xc2\xb0\xbf\x0f\x00\xfa\x0e\
        repl-stream-db\xc0\x02\xfa\x07repl-id\x28c2d4667b572abe9799e2dfa5ce5a7d20922bb41f\xfa\x0b\
        repl-offset\xc0\x32\xfa\x08aof-base\xc0\x00\xfe\x02\xfb\x02\x00\x00\x01k\x01v\x00\x01a\x01b\
        \xff\xa7\x09\x00\xdb\xe7\x52\x39\x82";

    #[test]
    fn writer_output_is_byte_identical_to_redis_save() {
        let mut ks = Keyspace::new();
        ks.set(db(0), b"a".to_vec(), b"b".to_vec());
        let options = RdbOptions {
            ctime: 0x6b07_9273,
            used_mem: 0x000e_54f8,
            ..RdbOptions::default()
        };
        assert_eq!(rdb_to_vec(&ks, &options), REDIS_7_0_15_ONE_KEY);
    }

    #[test]
    fn writer_output_with_repl_fields_is_byte_identical_to_redis_save() {
        let mut ks = Keyspace::new();
        ks.set(db(2), b"k".to_vec(), b"v".to_vec());
        ks.set(db(2), b"a".to_vec(), b"b".to_vec());
        let options = RdbOptions {
            ctime: 0x6b07_927c,
            used_mem: 0x000f_bfb0,
            repl: Some(ReplInfo {
                id: b"c2d4667b572abe9799e2dfa5ce5a7d20922bb41f".to_vec(),
                offset: 50,
                stream_db: db(2),
            }),
            ..RdbOptions::default()
        };
        let ours = rdb_to_vec(&ks, &options);
        // Keys within a database come in hash order: accept Redis's order or the swapped one.
        let body_end = REDIS_7_0_15_WITH_REPL.len() - 9;
        let entries_start = body_end - 10;
        let mut swapped = REDIS_7_0_15_WITH_REPL[..entries_start].to_vec();
        swapped.extend_from_slice(b"\x00\x01a\x01b\x00\x01k\x01v\xff");
        let crc = crc64(&swapped);
        swapped.extend_from_slice(&crc.to_le_bytes());
        assert!(
            ours == REDIS_7_0_15_WITH_REPL || ours == swapped,
            "{ours:?}"
        );
    }

    #[test]
    fn redis_saved_files_load_with_their_repl_fields() {
        let one = read_rdb(REDIS_7_0_15_ONE_KEY).unwrap();
        assert_eq!(one.keyspace.get(db(0), b"a"), Some(&b"b"[..]));
        assert_eq!(one.repl_info(), None);
        assert!(one.checksum_verified);
        let repl = read_rdb(REDIS_7_0_15_WITH_REPL).unwrap();
        assert_eq!(repl.keyspace.db_len(db(2)), 2);
        assert_eq!(
            repl.repl_info(),
            Some(ReplInfo {
                id: b"c2d4667b572abe9799e2dfa5ce5a7d20922bb41f".to_vec(),
                offset: 50,
                stream_db: db(2),
            })
        );
    }

    /// Fails every write after `budget` bytes.
    struct FailingWriter {
        budget: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.budget {
                return Err(io::Error::other("disk full"));
            }
            self.budget -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_error_is_returned_not_swallowed() {
        let ks = sample_keyspace();
        let total = rdb_to_vec(&ks, &RdbOptions::default()).len();
        for budget in [0, 9, 100, total - 1] {
            let err = write_rdb(FailingWriter { budget }, &ks, &RdbOptions::default()).unwrap_err();
            assert_eq!(err.to_string(), "disk full", "budget {budget}");
        }
        let written = write_rdb(FailingWriter { budget: total }, &ks, &RdbOptions::default());
        assert_eq!(written.unwrap(), total as u64);
    }

    #[test]
    fn every_truncation_of_a_valid_rdb_is_an_error() {
        let mut ks = Keyspace::new();
        ks.set(db(0), b"a".to_vec(), b"1".to_vec());
        ks.set(db(2), b"long".to_vec(), b"xyz".repeat(50));
        ks.set(db(2), b"plain".to_vec(), vec![b'q'; 100]);
        let bytes = rdb_to_vec(&ks, &options_with_repl());
        for cut in 0..bytes.len() {
            let err = read_rdb(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err.kind, RdbErrorKind::Truncated(_)),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut ks = Keyspace::new();
        ks.set(db(1), b"key".to_vec(), b"value".repeat(10));
        ks.set(db(1), b"n".to_vec(), b"300".to_vec());
        let bytes = rdb_to_vec(&ks, &options_with_repl());
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                assert!(
                    read_rdb(&bad).is_err(),
                    "flip {flip:#x} at {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn wrong_checksum_is_reported_with_both_values() {
        let mut bytes = rdb_to_vec(&sample_keyspace(), &RdbOptions::default());
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let err = read_rdb(&bytes).unwrap_err();
        assert!(
            matches!(err.kind, RdbErrorKind::ChecksumMismatch { .. }),
            "{err}"
        );
        assert_eq!(err.offset, n - 8);
        assert!(err.to_string().contains("checksum mismatch"));
    }

    #[test]
    fn zero_checksum_means_not_checked_like_redis() {
        let mut bytes = rdb_to_vec(&sample_keyspace(), &RdbOptions::default());
        let n = bytes.len();
        bytes[n - 8..].fill(0);
        let loaded = read_rdb(&bytes).unwrap();
        assert!(!loaded.checksum_verified);
        assert_eq!(loaded.keyspace, sample_keyspace());
    }

    #[test]
    fn trailing_bytes_after_checksum_are_rejected() {
        let mut bytes = rdb_to_vec(&Keyspace::new(), &RdbOptions::default());
        bytes.push(0);
        assert_eq!(
            read_rdb(&bytes).unwrap_err().kind,
            RdbErrorKind::TrailingBytes(1)
        );
    }

    /// Builds a file from a body (everything between the header and EOF), with a valid checksum.
    fn file(version: &[u8], body: &[u8]) -> Vec<u8> {
        let mut bytes = b"REDIS".to_vec();
        bytes.extend_from_slice(version);
        bytes.extend_from_slice(body);
        bytes.push(OPCODE_EOF);
        let crc = crc64(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn bad_magic_and_unsupported_versions_are_rejected() {
        assert_eq!(
            read_rdb(b"RADIS0010").unwrap_err().kind,
            RdbErrorKind::BadMagic
        );
        assert_eq!(
            read_rdb(b"REDIS00x0").unwrap_err().kind,
            RdbErrorKind::BadMagic
        );
        assert_eq!(
            read_rdb(&file(b"0013", b"")).unwrap_err().kind,
            RdbErrorKind::UnsupportedVersion(13)
        );
        assert_eq!(
            read_rdb(&file(b"0000", b"")).unwrap_err().kind,
            RdbErrorKind::UnsupportedVersion(0)
        );
        assert!(read_rdb(&file(b"0009", b"")).is_ok());
        assert!(read_rdb(&file(b"0011", b"")).is_ok());
    }

    #[test]
    fn unsupported_content_is_refused_with_a_clear_error() {
        let cases: &[(&[u8], RdbErrorKind)] = &[
            (
                b"\xfc\0\0\0\0\0\0\0\0\x00\x01k\x01v",
                RdbErrorKind::ExpiryUnsupported,
            ),
            (
                b"\xfd\0\0\0\0\x00\x01k\x01v",
                RdbErrorKind::ExpiryUnsupported,
            ),
            (b"\x02\x01k\x01\x01v", RdbErrorKind::UnsupportedType(2)),
            (b"\xf7", RdbErrorKind::UnsupportedOpcode(0xF7)),
            (b"\xf5", RdbErrorKind::UnsupportedOpcode(0xF5)),
            (b"\xfe\x10", RdbErrorKind::DbOutOfRange(16)),
            (
                b"\xfe\x81\xff\xff\xff\xff\xff\xff\xff\xff",
                RdbErrorKind::DbOutOfRange(u64::MAX),
            ),
            (
                b"\x00\x01k\x01v\x00\x01k\x01w",
                RdbErrorKind::DuplicateKey { db: DbIndex::ZERO },
            ),
            (b"\x00\x01k\xc4", RdbErrorKind::BadStringEncoding(0xC4)),
            (b"\x00\x82", RdbErrorKind::BadLengthEncoding(0x82)),
            (b"\xfe\xc0", RdbErrorKind::BadLengthEncoding(0xC0)),
            (
                b"\xfa\x0brepl-offset\x02-5",
                RdbErrorKind::BadAux("repl-offset"),
            ),
            (
                b"\xfa\x0brepl-offset\x02x1",
                RdbErrorKind::BadAux("repl-offset"),
            ),
            (
                b"\xfa\x0erepl-stream-db\xc0\x10",
                RdbErrorKind::BadAux("repl-stream-db"),
            ),
            (
                b"\x00\x01k\xc3\x02\x05\x00a",
                RdbErrorKind::Lzf(lzf::LzfError::TooShort),
            ),
        ];
        for (body, kind) in cases {
            assert_eq!(
                &read_rdb(&file(b"0010", body)).unwrap_err().kind,
                kind,
                "{body:?}"
            );
        }
    }

    #[test]
    fn lru_and_lfu_hints_are_skipped() {
        let loaded = read_rdb(&file(b"0010", b"\xf8\x05\xf9\x07\x00\x01k\x01v")).unwrap();
        assert_eq!(loaded.keyspace.get(DbIndex::ZERO, b"k"), Some(&b"v"[..]));
    }

    #[test]
    fn keys_before_any_selectdb_go_to_db_zero_and_resize_hints_are_not_trusted() {
        // A resize hint announcing 2^63 keys must not make the reader allocate.
        let body = b"\xfb\x81\x80\0\0\0\0\0\0\0\x00\x00\x01k\x01v";
        let loaded = read_rdb(&file(b"0010", body)).unwrap();
        assert_eq!(loaded.keyspace.len(), 1);
    }

    #[test]
    fn huge_announced_string_length_is_truncation_not_allocation() {
        let body = b"\x00\x01k\x81\x7f\xff\xff\xff\xff\xff\xff\xff";
        let err = read_rdb(&file(b"0010", body)).unwrap_err();
        assert!(matches!(err.kind, RdbErrorKind::Truncated(_)), "{err}");
        let lzf_bomb = b"\x00\x01k\xc3\x02\x81\x7f\xff\xff\xff\xff\xff\xff\xff\x00a";
        let err = read_rdb(&file(b"0010", lzf_bomb)).unwrap_err();
        assert_eq!(err.kind, RdbErrorKind::Lzf(lzf::LzfError::ImpossibleLength));
    }

    #[test]
    fn old_versions_without_checksum_load() {
        let mut bytes = b"REDIS0004\x00\x01k\x01v".to_vec();
        bytes.push(OPCODE_EOF);
        let loaded = read_rdb(&bytes).unwrap();
        assert!(!loaded.checksum_verified);
        assert_eq!(loaded.keyspace.len(), 1);
    }

    #[test]
    fn random_bytes_never_panic_the_reader() {
        let valid = rdb_to_vec(&sample_keyspace(), &options_with_repl());
        let mut state = 0xDEAD_BEEF_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                // Noise after a valid header, so the parser gets past the magic.
                let mut v = b"REDIS0010".to_vec();
                v.extend((0..next() % 64).map(|_| next() as u8));
                v
            } else {
                // A valid file with a few random bytes changed: deep paths, bad checksum.
                valid[..(next() as usize % valid.len())].to_vec()
            };
            if round % 2 == 1 {
                for _ in 0..3 {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = next() as usize % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            let _ = read_rdb(&bytes);
        }
    }
}
