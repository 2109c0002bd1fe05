//! The replica side of a connection after `PSYNC` / `SYNC`: the decision, the snapshot
//! (`$<len>` or `$EOF:` form), then the stream from the durable backlog, with a thread
//! reading the replica's `REPLCONF ACK`s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_backlog::{Error, PsyncReply, Reader, RunId};
use durable_resp::{RequestParser, parse_i64};

use crate::keyspace::Keyspace;
use crate::log;
use crate::rdb::{RdbOptions, rdb_to_vec};
use crate::server::{ReplicaInfo, Server, lock};

/// How long a `$EOF:` replica may take to load the snapshot and send its first ACK
/// (Redis's `repl-timeout`).
const REPL_TIMEOUT: Duration = Duration::from_mins(1);

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
            let rdb = rdb_to_vec(&ks, &opts);
            ok = ok && send_snapshot(&mut stream, &rdb, hs, psync.is_none(), &info, &name);
            from
        }
    };
    if ok {
        info.online.store(true, Ordering::SeqCst);
        if info.ack.load(Ordering::SeqCst) == 0 {
            info.ack.store(from - 1, Ordering::SeqCst);
        }
        stream_to(&server.reader, &mut stream, from, &info, &name);
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

/// Sends the snapshot; for the `$EOF:` form waits for the replica's first ACK.
fn send_snapshot(
    stream: &mut TcpStream,
    rdb: &[u8],
    hs: &Handshake,
    legacy_sync: bool,
    info: &ReplicaInfo,
    name: &str,
) -> bool {
    let eof = hs.capa_eof && !legacy_sync;
    let mut payload = Vec::with_capacity(rdb.len() + 100);
    let mark = RunId::random().to_string();
    if eof {
        payload.extend_from_slice(format!("$EOF:{mark}\r\n").as_bytes());
        payload.extend_from_slice(rdb);
        payload.extend_from_slice(mark.as_bytes());
    } else {
        payload.extend_from_slice(format!("${}\r\n", rdb.len()).as_bytes());
        payload.extend_from_slice(rdb);
    }
    if stream.write_all(&payload).is_err() {
        log::notice(format_args!(
            "Replica {name} disconnected during the snapshot transfer"
        ));
        return false;
    }
    if eof {
        // Nothing may follow the end mark until the replica has loaded the snapshot.
        let deadline = Instant::now() + REPL_TIMEOUT;
        while !info.got_ack.load(Ordering::SeqCst) {
            if info.closed.load(Ordering::SeqCst) || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    log::notice(format_args!(
        "Synchronization with replica {name} succeeded ({} bytes of snapshot)",
        rdb.len()
    ));
    true
}

/// Streams the backlog to the replica from offset `from` until the link ends, through the
/// library's tailing cursor: bytes are copied and validated before they reach the socket, the
/// sender sleeps on the backlog's futex while caught up, and a lapped cursor (or a history
/// change under it) ends the link so the replica comes back for a full resync.
fn stream_to(reader: &Reader, stream: &mut TcpStream, from: u64, info: &ReplicaInfo, name: &str) {
    let mut cursor = reader.cursor(from);
    while !info.closed.load(Ordering::SeqCst) {
        match cursor.write_to(stream, 256 * 1024) {
            Ok(0) => {
                cursor.wait(Duration::from_secs(1));
            }
            Ok(_) => {}
            Err(Error::Overwritten { first, .. }) => {
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

/// Reads the replica's `REPLCONF ACK <offset>` messages until the link ends.
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
                    let is_ack = argv.len() >= 3
                        && argv[0].eq_ignore_ascii_case(b"replconf")
                        && argv[1].eq_ignore_ascii_case(b"ack");
                    if is_ack
                        && let Some(off) = parse_i64(&argv[2]).and_then(|o| u64::try_from(o).ok())
                    {
                        server.record_ack(info, off);
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
