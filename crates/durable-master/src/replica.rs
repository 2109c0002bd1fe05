//! The replica side of a connection after `PSYNC` / `SYNC`: the decision, the snapshot
//! (`$<len>` or `$EOF:` form), then the stream from the durable backlog, with a thread
//! reading the replica's `REPLCONF ACK`s.

use std::io::{self, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_backlog::{PsyncReply, RunId, TailError, WriteToError};
use durable_resp::{RequestParser, parse_i64};

use crate::keyspace::Keyspace;
use crate::log;
use crate::rdb::{RdbOptions, write_rdb};
use crate::server::{ReplicaInfo, Server, lock};

/// The most snapshot bytes held for one replica's socket beyond the data copy itself: the
/// snapshot is encoded straight into a buffer of this size as the replica reads it.
const SNAPSHOT_BUFFER: usize = 64 * 1024;

/// What a replica said during its handshake.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    pub(crate) ip: String,
    pub(crate) listening_port: u16,
    pub(crate) capa_eof: bool,
    pub(crate) capa_psync2: bool,
}

impl Handshake {
    pub(crate) fn new(peer_ip: String) -> Self {
        Handshake {
            ip: peer_ip,
            listening_port: 0,
            capa_eof: false,
            capa_psync2: false,
        }
    }
}

/// How the replica is synchronized.
enum Sync {
    /// Stream from this offset.
    Partial { from: u64 },
    /// Send this snapshot, then stream from `from`.
    Full {
        rdb: Box<(Keyspace, RdbOptions)>,
        from: u64,
    },
}

/// Serves a replica until its connection ends.
pub(crate) fn serve(
    server: &Arc<Server>,
    mut stream: TcpStream,
    parser: RequestParser,
    hs: &Handshake,
    psync: Option<&(Vec<u8>, Vec<u8>)>,
) {
    let name = format!("{}:{}", hs.ip, hs.listening_port);
    log::notice(format_args!("Replica {name} asks for synchronization"));
    let timeout = Duration::from_secs(server.cfg.repl_timeout);
    // A write the replica does not read within repl-timeout fails, which ends the link.
    if stream.set_write_timeout(Some(timeout)).is_err() {
        return;
    }
    let info = Arc::new(ReplicaInfo {
        id: server.next_id(),
        ip: hs.ip.clone(),
        port: hs.listening_port,
        ack: AtomicU64::new(0),
        got_ack: AtomicBool::new(false),
        last_ack_ms: AtomicU64::new(server.millis()),
        online: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        stream: match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        },
    });
    let (reply, sync) = decide(server, &name, hs, psync, &info);
    let mut ok = stream.write_all(&reply).is_ok();
    if ok {
        let acker = Arc::clone(&info);
        let srv = Arc::clone(server);
        let spawned = std::thread::Builder::new()
            .name(format!("ack-{}", info.id))
            .spawn(move || read_acks(&srv, &acker, parser));
        ok = spawned.is_ok();
    }
    let from = match sync {
        Sync::Partial { from } => from,
        Sync::Full { rdb, from } => {
            let (ks, mut opts) = *rdb;
            opts.used_mem = ks.payload_bytes();
            ok = ok
                && send_snapshot(
                    &mut stream,
                    &(ks, opts),
                    hs,
                    psync.is_none(),
                    &info,
                    &name,
                    timeout,
                );
            from
        }
    };
    if ok {
        // The silence that times the replica out counts from here (Redis: "prevent false
        // timeout" when a replica goes online after a long transfer).
        info.last_ack_ms
            .fetch_max(server.millis(), Ordering::Relaxed);
        info.online.store(true, Ordering::SeqCst);
        if info.ack.load(Ordering::SeqCst) == 0 {
            info.ack.store(from - 1, Ordering::SeqCst);
        }
        stream_to(server, &mut stream, from, &info, &name);
    }
    info.close();
    lock(&server.replicas).retain(|r| r.id != info.id);
    log::notice(format_args!("Connection with replica {name} lost."));
}

/// The PSYNC decision, under the store lock (a full sync's snapshot is taken at exactly the
/// offset it announces), and the replica's registration.
fn decide(
    server: &Server,
    name: &str,
    hs: &Handshake,
    psync: Option<&(Vec<u8>, Vec<u8>)>,
    info: &Arc<ReplicaInfo>,
) -> (Vec<u8>, Sync) {
    let mut g = server.store();
    let store = g.get();
    lock(&server.replicas).push(Arc::clone(info));
    let (replid, offset) = match psync {
        Some((id, off)) => (
            String::from_utf8_lossy(id).into_owned(),
            parse_i64(off).unwrap_or(-1),
        ),
        None => ("?".to_owned(), -1),
    };
    let answer = store.backlog.psync(&replid, offset);
    match answer {
        PsyncReply::Continue { from, len, .. } => {
            server.sync_partial_ok.fetch_add(1, Ordering::SeqCst);
            log::notice(format_args!(
                "Partial resynchronization request from {name} accepted. Sending {len} bytes \
                 of backlog starting from offset {from}."
            ));
            let wire = if hs.capa_psync2 {
                answer.to_wire()
            } else {
                answer.to_wire_legacy()
            };
            (wire, Sync::Partial { from })
        }
        PsyncReply::FullResync {
            offset: at, reason, ..
        } => {
            if replid != "?" {
                server.sync_partial_err.fetch_add(1, Ordering::SeqCst);
                log::notice(format_args!(
                    "Partial resynchronization not accepted: {reason} (replica {name} asked \
                     for '{replid}' offset {offset})"
                ));
            }
            server.sync_full.fetch_add(1, Ordering::SeqCst);
            log::notice(format_args!("Full resync requested by replica {name}"));
            let target = if hs.capa_eof && psync.is_some() {
                "replicas sockets"
            } else {
                "disk"
            };
            log::notice(format_args!(
                "Starting BGSAVE for SYNC with target: {target} (full resync at offset {at})"
            ));
            // A copy of the data (O(1): the maps are structurally shared), encoded after the lock is
            // released (Redis forks for this).
            let rdb = Box::new((store.ks.clone(), store.rdb_options(at)));
            // The stream after a full sync starts with a SELECT.
            store.feed.force_select();
            let wire = if psync.is_some() {
                answer.to_wire()
            } else {
                Vec::new()
            };
            (wire, Sync::Full { rdb, from: at + 1 })
        }
    }
}

/// Sends the snapshot, encoded as the replica reads it (at most [`SNAPSHOT_BUFFER`] bytes of
/// it held at a time); for the `$EOF:` form waits for the replica's first ACK. A replica that
/// reads nothing, or sends no ACK, for `timeout` is disconnected.
fn send_snapshot(
    stream: &mut TcpStream,
    rdb: &(Keyspace, RdbOptions),
    hs: &Handshake,
    legacy_sync: bool,
    info: &ReplicaInfo,
    name: &str,
    timeout: Duration,
) -> bool {
    let eof = hs.capa_eof && !legacy_sync;
    let (ks, options) = rdb;
    let sent = if eof {
        let mark = RunId::random().to_string();
        let mut out = BufWriter::with_capacity(SNAPSHOT_BUFFER, &mut *stream);
        out.write_all(format!("$EOF:{mark}\r\n").as_bytes())
            .and_then(|()| write_rdb(&mut out, ks, options))
            .and_then(|len| {
                out.write_all(mark.as_bytes())?;
                out.flush()?;
                Ok(len)
            })
    } else {
        // The `$<len>` form needs the length first: a counting pass, then the real one, which
        // may not write more than it announced.
        write_rdb(Counter(0), ks, options).and_then(|len| {
            let mut out = BufWriter::with_capacity(SNAPSHOT_BUFFER, &mut *stream);
            out.write_all(format!("${len}\r\n").as_bytes())?;
            let written = write_rdb(
                Exact {
                    inner: &mut out,
                    left: len,
                },
                ks,
                options,
            )?;
            if written != len {
                return Err(io::Error::other(format!(
                    "the snapshot encoded to {written} bytes after announcing {len}"
                )));
            }
            out.flush()?;
            Ok(len)
        })
    };
    let len = match sent {
        Ok(len) => len,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            log::warning(format_args!(
                "Disconnecting timedout replica (full sync): {name}"
            ));
            return false;
        }
        Err(e) => {
            log::notice(format_args!(
                "Replica {name} disconnected during the snapshot transfer: {e}"
            ));
            return false;
        }
    };
    if eof {
        // Nothing may follow the end mark until the replica has loaded the snapshot.
        let deadline = Instant::now() + timeout;
        while !info.got_ack.load(Ordering::SeqCst) {
            if info.closed.load(Ordering::SeqCst) {
                return false;
            }
            if Instant::now() >= deadline {
                log::warning(format_args!(
                    "Disconnecting timedout replica (full sync): {name}"
                ));
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    log::notice(format_args!(
        "Synchronization with replica {name} succeeded ({len} bytes of snapshot)"
    ));
    true
}

/// A sink that only counts the bytes written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes at most `left` bytes on, and fails rather than write past them: a `$<len>` transfer
/// must never run into the stream that follows it.
struct Exact<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Exact<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(
                "the snapshot grew past its announced length",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the backlog to the replica from offset `from` until the link ends, through the
/// library's tailing cursor: bytes are copied and validated before they reach the socket, the
/// sender sleeps on the backlog's futex while caught up, and a lapped cursor (or a history
/// change under it) ends the link so the replica comes back for a full resync. A resize of the
/// backlog moves the cursor to the new file at the same offset: the replica notices nothing.
fn stream_to(server: &Server, stream: &mut TcpStream, from: u64, info: &ReplicaInfo, name: &str) {
    let mut cursor = server.reader().cursor(from);
    let timeout_ms = server.cfg.repl_timeout.saturating_mul(1000);
    while !info.closed.load(Ordering::SeqCst) {
        let silent_ms = server
            .millis()
            .saturating_sub(info.last_ack_ms.load(Ordering::Relaxed));
        if silent_ms > timeout_ms {
            log::warning(format_args!(
                "Disconnecting timedout replica (streaming sync): {name}"
            ));
            return;
        }
        match cursor.write_to(stream, 256 * 1024) {
            Ok(0) => {
                cursor.wait(Duration::from_secs(1));
            }
            Ok(_) => {}
            Err(WriteToError::Tail(TailError::Moved)) => {
                // The resize holds the store lock until the server's reader is the new
                // file's: taking the lock waits for it.
                let reader = server.store().get().backlog.reader();
                log::notice(format_args!(
                    "The backlog was resized: streaming to replica {name} goes on from offset {}",
                    cursor.position()
                ));
                cursor = reader.cursor(cursor.position());
            }
            Err(WriteToError::Tail(TailError::Overwritten { first, .. })) => {
                log::warning(format_args!(
                    "Replica {name} lagged beyond the backlog: its next byte {} was \
                     overwritten (oldest held: {first}); disconnecting it",
                    cursor.position()
                ));
                return;
            }
            Err(e) => {
                log::warning(format_args!("Stream to replica {name} ended: {e}"));
                return;
            }
        }
    }
}

/// Reads the replica's `REPLCONF ACK <offset>` messages until the link ends. `REPLCONF
/// GETACK`, `PSYNC` and `SYNC` are ignored; any other command closes the link, as Redis closes a
/// replica link on which a command would produce a reply.
fn read_acks(server: &Server, info: &ReplicaInfo, mut parser: RequestParser) {
    let Ok(mut stream) = info.stream.try_clone() else {
        info.close();
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        loop {
            match parser.next_command() {
                Ok(Some(argv)) => {
                    let name = argv.first().map_or(&[][..], Vec::as_slice);
                    let replconf = name.eq_ignore_ascii_case(b"replconf");
                    let opt = argv.get(1).map_or(&[][..], Vec::as_slice);
                    if replconf && opt.eq_ignore_ascii_case(b"ack") {
                        if let Some(off) = argv
                            .get(2)
                            .and_then(|o| parse_i64(o))
                            .and_then(|o| u64::try_from(o).ok())
                        {
                            server.record_ack(info, off);
                        }
                    } else if (replconf && opt.eq_ignore_ascii_case(b"getack"))
                        || name.eq_ignore_ascii_case(b"psync")
                        || name.eq_ignore_ascii_case(b"sync")
                    {
                        // No reply: ignored, as Redis ignores them from a replica.
                    } else {
                        // Anything else would need a reply, which cannot go into the stream:
                        // Redis drops such a replica, and so does this server.
                        log::warning(format_args!(
                            "Replica generated a reply to command '{}', disconnecting it: \
                             id={} addr={}:{}",
                            String::from_utf8_lossy(name).to_ascii_lowercase(),
                            info.id,
                            info.ip,
                            info.port
                        ));
                        info.close();
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    info.close();
                    return;
                }
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                info.close();
                return;
            }
            Ok(n) => parser.feed(&buf[..n]),
        }
    }
}
