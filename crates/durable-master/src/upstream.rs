//! The replica role: the link to a master (`REPLICAOF host port`, `--replicaof`), as a Redis
//! 7.0 replica runs it.
//!
//! One thread per configured master runs the handshake (`PING`, `AUTH` with `--masterauth`,
//! `REPLCONF listening-port`, `REPLCONF capa eof capa psync2`, `PSYNC`), loads a full sync's
//! snapshot (`$<len>` or `$EOF:<mark>`), then applies the stream. Every command of the stream
//! is applied to the keyspace **and appended verbatim to this server's own backlog**, so the
//! backlog's offset is the master's replication offset and its run ID the master's: the
//! backlog is the write-ahead log here too (a restart replays it and asks the master for
//! `PSYNC <master id> <offset + 1>`), and sub-replicas are served from it by the ordinary
//! replica senders (chained replication).
//!
//! Offsets follow Redis: the applied offset only ever sits on a command boundary, and a
//! `MULTI` ... `EXEC` block from the master is applied and appended in one piece once its
//! `EXEC` arrived. `REPLCONF ACK <offset>` goes to the master every second and on
//! `REPLCONF GETACK *` (reporting the offset before the `GETACK`, whose bytes count after).
//!
//! Lock order: the store lock, then the link state's. The link thread checks, under the
//! store lock, that it is still the current link (its generation) before it changes the
//! data, so once `REPLICAOF` returned no byte of the previous master is applied.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use durable_backlog::{RecoveryKind, RunId};
use durable_resp::{self as resp, StreamDecoder, StreamItem, parse_i64};

use crate::commands::apply;
use crate::keyspace::DbIndex;
use crate::log;
use crate::rdb::read_rdb;
use crate::server::{Server, lock};
use crate::store::{Room, Store, fatal};

/// Redis's text for a write sent to a read-only replica (without the dash).
pub(crate) const READONLY: &[u8] = b"READONLY You can't write against a read only replica.";

/// Redis 7.0's reply to `WAIT` on a replica (without the dash).
pub(crate) const WAIT_ON_REPLICA: &[u8] = b"ERR WAIT cannot be used with replica instances. \
Please also note that since Redis 4.0 if a replica is configured to be writable (which is not \
the default) writes to replicas are just local and are not propagated.";

/// How often the link reports its offset (Redis's `replicationCron` sends an ACK every second).
const ACK_PERIOD: Duration = Duration::from_secs(1);
/// How long one socket read waits, so ACKs and a change of master are noticed in time.
const READ_TICK: Duration = Duration::from_millis(250);
/// The first and the longest wait between two connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest status line the master may send during the handshake.
const MAX_LINE: usize = 64 * 1024;

/// Where the link is, with the names `ROLE` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Waiting to connect.
    Connect,
    /// The TCP connection is being made.
    Connecting,
    /// Connected; `PING` ... `PSYNC`.
    Handshake,
    /// Receiving the snapshot of a full resynchronization.
    Sync,
    /// Streaming.
    Connected,
}

impl Status {
    fn role_name(self) -> &'static str {
        match self {
            Status::Connect => "connect",
            Status::Connecting => "connecting",
            Status::Handshake => "handshake",
            Status::Sync => "sync",
            Status::Connected => "connected",
        }
    }
}

/// The replica side's state, behind [`Upstream`]'s lock.
#[derive(Debug)]
struct LinkState {
    /// The master followed, if this server is a replica.
    master: Option<(String, u16)>,
    /// Bumped at every change of master: a link thread whose generation is not the current
    /// one stops and changes nothing.
    generation: u64,
    status: Status,
    /// A handle on the current link's socket, to cut it when the master changes.
    socket: Option<TcpStream>,
    /// Milliseconds (server clock) of the last byte read from the master while streaming.
    last_io_ms: Option<u64>,
    /// Milliseconds (server clock) when a streaming link was lost.
    down_since_ms: Option<u64>,
    /// Offset of the last byte read from the master (`slave_read_repl_offset`) while
    /// streaming.
    read_offset: Option<u64>,
    /// Offset of the last byte applied (`slave_repl_offset`) while streaming.
    applied_offset: Option<u64>,
    /// The snapshot being received: its size (-1 for the `$EOF:` form), bytes read so far and
    /// the time of the last read.
    transfer: Option<(i64, u64, u64)>,
}

/// The ID this server's history was known by before this process opened the backlog, and
/// the state of the backlog right after the open (which draws a new run ID).
#[derive(Debug, Clone, Copy)]
struct Opened {
    /// The run ID the open drew.
    run_id: RunId,
    /// The offset the backlog was opened at.
    offset: u64,
    /// The ID before the open, valid up to `offset + 1`.
    previous: Option<RunId>,
    /// The backlog was created by this open: it never held a byte nor followed a master.
    created: bool,
}

/// The replica role's shared state (one per server).
#[derive(Debug)]
pub(crate) struct Upstream {
    state: Mutex<LinkState>,
    /// Mirrors `state.master.is_some()` (written under the state lock) for the per-command
    /// read-only check, which must not take a lock.
    replica: AtomicBool,
    /// Wakes a link thread waiting between connection attempts.
    wake: Condvar,
    /// The server this state belongs to, for the link threads `REPLICAOF` starts from a
    /// connection that only borrows it (set once at start, see [`attach`]).
    this: OnceLock<Weak<Server>>,
    opened: Opened,
}

impl Upstream {
    /// The state of a server that just opened `store` (not yet a replica).
    pub(crate) fn new(store: &Store) -> Upstream {
        let offset = store.backlog.offset();
        let previous = store
            .backlog
            .past_run_ids()
            .first()
            .filter(|(_, valid_to)| *valid_to == offset + 1)
            .map(|(id, _)| *id);
        Upstream {
            state: Mutex::new(LinkState {
                master: None,
                generation: 0,
                status: Status::Connect,
                socket: None,
                last_io_ms: None,
                down_since_ms: None,
                read_offset: None,
                applied_offset: None,
                transfer: None,
            }),
            wake: Condvar::new(),
            this: OnceLock::new(),
            replica: AtomicBool::new(false),
            opened: Opened {
                run_id: store.backlog.run_id(),
                offset,
                previous,
                created: store.backlog.recovery().kind == RecoveryKind::Created && offset == 0,
            },
        }
    }

    /// Whether this server follows a master (Redis's `server.masterhost != NULL`).
    pub(crate) fn is_replica(&self) -> bool {
        self.replica.load(Ordering::SeqCst)
    }

    /// The master followed, if any.
    pub(crate) fn master(&self) -> Option<(String, u16)> {
        lock(&self.state).master.clone()
    }

    /// The `PSYNC` request for the history in `store`: its replication ID and first missing
    /// offset, or `PSYNC ? -1` for a backlog created by this process that never held a byte
    /// nor took a master's ID (a replica of a master at offset 0 asks `PSYNC <id> 1`).
    ///
    /// The open of the backlog drew a fresh run ID that no master knows: until this process
    /// changed the history (appended as a master, or adopted a master's ID), the ID the
    /// history had before the restart is asked for instead — the master's own ID for a
    /// restarted replica — as Redis's replica does with the ID saved in its RDB.
    fn psync_request(&self, store: &Store) -> (String, String) {
        let (id, offset) = (store.backlog.run_id(), store.backlog.offset());
        if self.opened.created && offset == 0 && id == self.opened.run_id {
            return ("?".to_owned(), "-1".to_owned());
        }
        let id = match self.opened.previous {
            Some(prev) if id == self.opened.run_id && offset == self.opened.offset => prev,
            _ => id,
        };
        (id.to_string(), (offset + 1).to_string())
    }
}

/// Lets `REPLICAOF` start link threads: they hold the server while they run.
pub(crate) fn attach(server: &Arc<Server>) {
    let _ = server.upstream.this.set(Arc::downgrade(server));
}

/// Whether link `generation` is still the current one.
fn current(server: &Server, generation: u64) -> bool {
    lock(&server.upstream.state).generation == generation
}

/// Closes every sub-replica's connection (Redis's `disconnectSlaves`): they reconnect and
/// learn the new history (partially when they can).
fn disconnect_sub_replicas(server: &Server) {
    for r in lock(&server.replicas).iter() {
        r.close();
    }
}

/// `REPLICAOF host port` / `SLAVEOF host port` / `REPLICAOF NO ONE`, with Redis 7.0's replies.
pub(crate) fn replicaof_command(server: &Server, argv: &[Vec<u8>]) -> Vec<u8> {
    let name =
        String::from_utf8_lossy(argv.first().map_or(&[][..], Vec::as_slice)).to_ascii_lowercase();
    let [_, host, port] = argv else {
        return resp::error(
            format!("ERR wrong number of arguments for '{name}' command").as_bytes(),
        );
    };
    if host.eq_ignore_ascii_case(b"no") && port.eq_ignore_ascii_case(b"one") {
        if unset_master(server) {
            log::notice("MASTER MODE enabled (user request)");
        }
        crate::replicaof_file::clear(&server.cfg.dir);
        return resp::simple_string(b"OK");
    }
    let Some(port) = parse_i64(port).and_then(|p| u16::try_from(p).ok()) else {
        return resp::error(b"ERR Invalid master port");
    };
    let host = String::from_utf8_lossy(host).into_owned();
    if server
        .upstream
        .master()
        .is_some_and(|(h, p)| h.eq_ignore_ascii_case(&host) && p == port)
    {
        log::notice(
            "REPLICAOF would result into synchronization with the master we are already \
             connected with. No operation performed.",
        );
        return resp::simple_string(b"OK Already connected to specified master");
    }
    crate::replicaof_file::save(&server.cfg.dir, &host, port);
    set_master(server, host, port);
    if let Some((h, p)) = server.upstream.master() {
        log::notice(format_args!("REPLICAOF {h}:{p} enabled (user request)"));
    }
    resp::simple_string(b"OK")
}

/// Starts following `host:port` (replacing any previous master): Redis's
/// `replicationSetMaster`. A master being demoted keeps its data and backlog and asks the new
/// master for `PSYNC <its id> <offset + 1>`.
pub(crate) fn set_master(server: &Server, host: String, port: u16) {
    let Some(server) = server.upstream.this.get().and_then(Weak::upgrade) else {
        fatal("starting the master link", "the server is not attached");
    };
    let server = &server;
    let generation = {
        let _store = server.store();
        let mut st = lock(&server.upstream.state);
        st.generation += 1;
        if let Some(s) = st.socket.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        st.master = Some((host.clone(), port));
        server.upstream.replica.store(true, Ordering::SeqCst);
        st.status = Status::Connect;
        st.down_since_ms = None;
        st.last_io_ms = None;
        st.read_offset = None;
        st.applied_offset = None;
        st.transfer = None;
        st.generation
    };
    server.upstream.wake.notify_all();
    disconnect_sub_replicas(server);
    let srv = Arc::clone(server);
    let spawned = std::thread::Builder::new()
        .name("master-link".into())
        .spawn(move || run_link(&srv, generation, &host, port));
    if let Err(e) = spawned {
        fatal("starting the master link thread", e);
    }
}

/// `REPLICAOF NO ONE`: stops following the master, and continues the history under a new
/// run ID; the master's ID stays valid up to the current offset + 1, so replicas of the same
/// master continue partially with this server (Redis's `replicationUnsetMaster`). Returns
/// whether this server was a replica.
pub(crate) fn unset_master(server: &Server) -> bool {
    let mut g = server.store();
    let store = g.get();
    {
        let mut st = lock(&server.upstream.state);
        if st.master.is_none() {
            return false;
        }
        st.generation += 1;
        st.master = None;
        server.upstream.replica.store(false, Ordering::SeqCst);
        st.status = Status::Connect;
        if let Some(s) = st.socket.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        st.down_since_ms = None;
        st.read_offset = None;
        st.applied_offset = None;
        st.transfer = None;
    }
    server.upstream.wake.notify_all();
    log::notice("Connection with master lost.");
    let old = store.backlog.run_id();
    if let Err(e) = store.backlog.shift_run_id() {
        fatal("changing the replication ID", e);
    }
    log::notice(format_args!(
        "Setting secondary replication ID to {old}, valid up to offset: {}. New replication \
         ID is {}",
        store.backlog.offset() + 1,
        store.backlog.run_id()
    ));
    // The first write as a master names its database (Redis's `slaveseldb = -1`).
    store.feed.force_select();
    drop(g);
    disconnect_sub_replicas(server);
    true
}

/// Runs the link to `host:port` until the master changes: connects, synchronizes, streams,
/// and reconnects with a growing pause (up to a second, as Redis's once-a-second cron) after
/// every failure or loss.
fn run_link(server: &Arc<Server>, generation: u64, host: &str, port: u16) {
    let mut backoff = BACKOFF_MIN;
    while current(server, generation) {
        let result = link_once(server, generation, host, port);
        let was_streaming = {
            let mut st = lock(&server.upstream.state);
            if st.generation != generation {
                return;
            }
            let streaming = st.status == Status::Connected;
            if streaming {
                st.down_since_ms = Some(server.millis());
                backoff = BACKOFF_MIN;
            }
            st.status = Status::Connect;
            st.socket = None;
            st.last_io_ms = None;
            st.read_offset = None;
            st.applied_offset = None;
            st.transfer = None;
            streaming
        };
        match result {
            Ok(()) => {}
            Err(e) => log::warning(e),
        }
        if was_streaming {
            log::notice("Connection with master lost.");
        }
        let st = lock(&server.upstream.state);
        if st.generation != generation {
            return;
        }
        let _ = server
            .upstream
            .wake
            .wait_timeout(st, backoff)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The connection to the master with a read buffer.
struct Link {
    stream: TcpStream,
    buf: Vec<u8>,
    /// One read's worth of bytes.
    chunk: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// Seconds of silence after which the link is dropped (`--repl-timeout`).
    timeout: Duration,
    /// When the master last sent anything.
    last_read: Instant,
}

impl Link {
    /// Reads more bytes into the buffer; `Ok(0)` when nothing arrived within a tick.
    fn fill(&mut self) -> Result<usize, String> {
        // Consumed bytes are dropped once they are most of the buffer (a command cut by a
        // read stays in it until its end arrives).
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        match self.stream.read(&mut self.chunk) {
            Ok(0) => Err("the master closed the connection".to_owned()),
            Ok(n) => {
                self.buf
                    .extend_from_slice(self.chunk.get(..n).unwrap_or_default());
                self.last_read = Instant::now();
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if self.last_read.elapsed() > self.timeout {
                    return Err("MASTER timeout: no data nor PING received...".to_owned());
                }
                Ok(0)
            }
            Err(e) => Err(format!("reading from the master: {e}")),
        }
    }

    /// The unconsumed bytes.
    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// One `\n`-terminated line without its line end.
    fn line(&mut self, server: &Server, generation: u64) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.pending().iter().position(|&b| b == b'\n') {
                let mut line = self.pending().get(..i).unwrap_or_default().to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.consume(i + 1);
                return Ok(line);
            }
            if self.pending().len() > MAX_LINE {
                return Err("the master sent an overlong line".to_owned());
            }
            if !current(server, generation) {
                return Err("the master changed".to_owned());
            }
            self.fill()?;
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("writing to the master: {e}"))
    }
}

/// `REPLCONF ACK <offset>`.
fn ack_command(offset: u64) -> Vec<u8> {
    resp::encode_command(&[&b"REPLCONF"[..], b"ACK", offset.to_string().as_bytes()])
}

/// Updates the link state if this link is still the current one.
fn with_state(server: &Server, generation: u64, f: impl FnOnce(&mut LinkState)) -> bool {
    let mut st = lock(&server.upstream.state);
    if st.generation != generation {
        return false;
    }
    f(&mut st);
    true
}

/// One connection: handshake, synchronization, then the stream until it ends.
fn link_once(server: &Arc<Server>, generation: u64, host: &str, port: u16) -> Result<(), String> {
    let timeout = Duration::from_secs(server.cfg.repl_timeout);
    with_state(server, generation, |st| st.status = Status::Connecting);
    log::notice(format_args!("Connecting to MASTER {host}:{port}"));
    log::notice("MASTER <-> REPLICA sync started");
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("Unable to connect to MASTER: {e}"))?
        .next()
        .ok_or_else(|| format!("Unable to connect to MASTER: {host} has no address"))?;
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("Error condition on socket for SYNC: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(READ_TICK))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("setting up the master link: {e}"))?;
    let handle = stream
        .try_clone()
        .map_err(|e| format!("setting up the master link: {e}"))?;
    if !with_state(server, generation, |st| {
        st.socket = Some(handle);
        st.status = Status::Handshake;
    }) {
        return Ok(());
    }
    log::notice("Non blocking connect for SYNC fired the event.");
    let mut link = Link {
        stream,
        buf: Vec::new(),
        chunk: vec![0u8; 64 * 1024],
        pos: 0,
        timeout,
        last_read: Instant::now(),
    };
    handshake(server, generation, &mut link)?;

    let (id, offset) = {
        let mut g = server.store();
        server.upstream.psync_request(g.get())
    };
    if id == "?" {
        log::notice("Partial resynchronization not possible (no cached master)");
    } else {
        log::notice(format_args!(
            "Trying a partial resynchronization (request {id}:{offset})."
        ));
    }
    link.send(&resp::encode_command(&[
        "PSYNC".as_bytes(),
        id.as_bytes(),
        offset.as_bytes(),
    ]))?;
    let reply = loop {
        // A master preparing a snapshot may send newlines to keep the link alive.
        let text = link.line(server, generation)?;
        if !text.is_empty() {
            break text;
        }
    };
    let asked = RunId::from_bytes(id.as_bytes()).ok();
    let db = match parse_psync_reply(&reply, asked)? {
        PsyncAnswer::FullResync { id: new_id, offset } => {
            log::notice(format_args!("Full resync from master: {new_id}:{offset}"));
            match full_sync(server, generation, &mut link, new_id, offset)? {
                Some(db) => db,
                None => return Ok(()),
            }
        }
        PsyncAnswer::Continue(new_id) => {
            log::notice("Successful partial resynchronization with master.");
            match continue_sync(server, generation, new_id) {
                Some(db) => db,
                None => return Ok(()),
            }
        }
    };
    follow_stream(server, generation, &mut link, db)
}

/// The master's answer to `PSYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PsyncAnswer {
    /// `+FULLRESYNC <id> <offset>`.
    FullResync { id: RunId, offset: u64 },
    /// `+CONTINUE [<id>]`: the master's ID (the one asked for when it sent none, `None` if
    /// that was `?`).
    Continue(Option<RunId>),
}

/// Reads the master's reply to `PSYNC` (`asked`: the ID the replica asked with). Anything
/// but a well-formed `+FULLRESYNC` (a 40-character ID, an offset a backlog can hold) or
/// `+CONTINUE` is an error with Redis's wording; the link is then retried.
fn parse_psync_reply(reply: &[u8], asked: Option<RunId>) -> Result<PsyncAnswer, String> {
    let text = String::from_utf8_lossy(reply).into_owned();
    if let Some(rest) = text.strip_prefix("+FULLRESYNC") {
        let mut words = rest.split_whitespace();
        let id = words
            .next()
            .and_then(|w| RunId::from_bytes(w.as_bytes()).ok());
        let offset = words
            .next()
            .and_then(|o| o.parse::<u64>().ok())
            .filter(|&o| o < 1 << 62);
        return match (id, offset) {
            (Some(id), Some(offset)) => Ok(PsyncAnswer::FullResync { id, offset }),
            _ => Err("Master replied with wrong +FULLRESYNC syntax.".to_owned()),
        };
    }
    if let Some(rest) = text.strip_prefix("+CONTINUE") {
        return match rest.trim() {
            "" => Ok(PsyncAnswer::Continue(asked)),
            other => RunId::from_bytes(other.as_bytes())
                .map(|id| PsyncAnswer::Continue(Some(id)))
                .map_err(|_| format!("Master replied with a wrong +CONTINUE: {text}")),
        };
    }
    if text.starts_with("-NOMASTERLINK") || text.starts_with("-LOADING") {
        return Err(format!(
            "Master is currently unable to PSYNC but should be in the future: {text}"
        ));
    }
    Err(format!("Unexpected reply to PSYNC from master: {text}"))
}

/// `PING`, then `AUTH` (with `--masterauth`), `REPLCONF listening-port` and
/// `REPLCONF capa eof capa psync2` in one write, and their replies, as Redis 7.0 sends them.
fn handshake(server: &Server, generation: u64, link: &mut Link) -> Result<(), String> {
    link.send(&resp::encode_command(&["PING"]))?;
    let pong = link.line(server, generation)?;
    let text = String::from_utf8_lossy(&pong).into_owned();
    // Redis accepts an authentication or permission error here: AUTH follows.
    if !(text.starts_with('+')
        || text.starts_with("-NOAUTH")
        || text.starts_with("-NOPERM")
        || text.starts_with("-ERR operation not permitted"))
    {
        return Err(format!("Error reply to PING from master: '{text}'"));
    }
    log::notice("Master replied to PING, replication can continue...");
    let mut out = Vec::new();
    let auth = server.live.masterauth();
    let auth = auth.as_deref();
    if let Some(pass) = auth {
        out.extend(resp::encode_command(&[&b"AUTH"[..], pass]));
    }
    out.extend(resp::encode_command(&[
        "REPLCONF".as_bytes(),
        b"listening-port",
        server.cfg.port.to_string().as_bytes(),
    ]));
    out.extend(resp::encode_command(&[
        "REPLCONF", "capa", "eof", "capa", "psync2",
    ]));
    link.send(&out)?;
    if auth.is_some() {
        let reply = link.line(server, generation)?;
        if reply.first() == Some(&b'-') {
            return Err(format!(
                "Unable to AUTH to MASTER: {}",
                String::from_utf8_lossy(&reply)
            ));
        }
    }
    let reply = link.line(server, generation)?;
    if reply.first() == Some(&b'-') {
        log::notice(format_args!(
            "(Non critical) Master does not understand REPLCONF listening-port: {}",
            String::from_utf8_lossy(&reply)
        ));
    }
    let reply = link.line(server, generation)?;
    if reply.first() == Some(&b'-') {
        log::notice(format_args!(
            "(Non critical) Master does not understand REPLCONF capa: {}",
            String::from_utf8_lossy(&reply)
        ));
    }
    Ok(())
}

/// Receives a full resynchronization's snapshot and installs it: the data replaced, the
/// backlog reset at `at` under the master's ID, a snapshot written. Returns the database the
/// stream starts in, or `None` if the master changed meanwhile.
fn full_sync(
    server: &Server,
    generation: u64,
    link: &mut Link,
    master_id: RunId,
    at: u64,
) -> Result<Option<DbIndex>, String> {
    with_state(server, generation, |st| {
        st.status = Status::Sync;
        st.transfer = Some((-1, 0, server.millis()));
    });
    let header = loop {
        let text = link.line(server, generation)?;
        if !text.is_empty() {
            break text;
        }
    };
    if header.first() == Some(&b'-') {
        return Err(format!(
            "MASTER aborted replication with an error: {}",
            String::from_utf8_lossy(&header)
        ));
    }
    let Some(spec) = header.strip_prefix(b"$") else {
        return Err(format!(
            "Bad protocol from MASTER, the first byte is not '$' (we received '{}'), are you \
             sure the host and port are right?",
            String::from_utf8_lossy(&header)
        ));
    };
    let payload = if let Some(mark) = spec.strip_prefix(b"EOF:") {
        if mark.len() != RunId::LEN {
            return Err("Bad $EOF: mark from MASTER".to_owned());
        }
        log::notice(
            "MASTER <-> REPLICA sync: receiving streamed RDB from master with EOF to memory",
        );
        let mark = mark.to_vec();
        loop {
            if link.pending().ends_with(&mark) {
                let p = link.pending();
                let body = p.get(..p.len() - mark.len()).unwrap_or_default().to_vec();
                link.consume(p.len());
                break body;
            }
            progress(server, generation, link, -1)?;
        }
    } else {
        let len = parse_i64(spec)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| "Bad snapshot length from MASTER".to_owned())?;
        log::notice(format_args!(
            "MASTER <-> REPLICA sync: receiving {len} bytes from master to memory"
        ));
        let size = i64::try_from(len).unwrap_or(i64::MAX);
        while link.pending().len() < len {
            progress(server, generation, link, size)?;
        }
        let body = link.pending().get(..len).unwrap_or_default().to_vec();
        link.consume(len);
        body
    };
    let loaded = read_rdb(&payload).map_err(|e| {
        format!("Failed trying to load the MASTER synchronization DB: {e}; keeping the old data")
    })?;
    let db = loaded.repl_stream_db.unwrap_or(DbIndex::ZERO);
    {
        let mut g = server.store();
        if !current(server, generation) {
            return Ok(None);
        }
        log::notice("MASTER <-> REPLICA sync: Flushing old data");
        log::notice("MASTER <-> REPLICA sync: Loading DB in memory");
        let keys = loaded.keyspace.len();
        g.get()
            .install_full_sync(loaded.keyspace, master_id, at, db);
        log::notice(format_args!(
            "Done loading RDB, keys loaded: {keys}, keys expired: 0."
        ));
    }
    disconnect_sub_replicas(server);
    log::notice("MASTER <-> REPLICA sync: Finished with success");
    // The first ACK at once: a master that sent the `$EOF:` form waits for it.
    link.send(&ack_command(at))?;
    Ok(Some(db))
}

/// Reads more of a snapshot, keeping `INFO`'s transfer fields up to date.
fn progress(server: &Server, generation: u64, link: &mut Link, size: i64) -> Result<(), String> {
    if !current(server, generation) {
        return Err("the master changed".to_owned());
    }
    if link.fill()? > 0 {
        let read = link.pending().len() as u64;
        with_state(server, generation, |st| {
            st.transfer = Some((size, read, server.millis()));
        });
    }
    Ok(())
}

/// After `+CONTINUE [<id>]`: the master's ID (if it differs from this history's current one)
/// becomes the current ID, the old one valid up to the offset + 1. Returns the database the
/// stream is in, or `None` if the master changed meanwhile.
fn continue_sync(server: &Server, generation: u64, master_id: Option<RunId>) -> Option<DbIndex> {
    let changed = {
        let mut g = server.store();
        if !current(server, generation) {
            return None;
        }
        let store = g.get();
        match master_id.filter(|&id| id != store.backlog.run_id()) {
            Some(id) => {
                if let Err(e) = store.backlog.adopt_run_id(id) {
                    fatal("adopting the master's replication ID", e);
                }
                log::notice(format_args!("Master replication ID changed to {id}"));
                true
            }
            None => false,
        }
    };
    if changed {
        disconnect_sub_replicas(server);
    }
    let mut g = server.store();
    Some(g.get().feed.stream_db())
}

/// A unit the offset moves over in one step: one command, or a whole `MULTI` ... `EXEC`
/// block.
#[derive(Debug)]
struct Unit {
    commands: Vec<Vec<Vec<u8>>>,
    /// Where the unit ends, in bytes from the start of the pending buffer.
    end: usize,
    /// For a `REPLCONF GETACK`: the offset its ACK reports (the offset before it).
    ack: Option<u64>,
}

/// Splits the pending stream bytes (the first at offset `from`) into the units that can be
/// applied now: complete commands, and `MULTI` blocks whose `EXEC` arrived.
fn ready_units(bytes: &[u8], from: u64) -> Result<Vec<Unit>, String> {
    let mut units = Vec::new();
    let mut in_multi: Option<Vec<Vec<Vec<u8>>>> = None;
    for item in StreamDecoder::new(bytes, from) {
        match item {
            Ok(StreamItem::Command(cmd)) => {
                let name = cmd.argv.first().map_or(&[][..], Vec::as_slice);
                let end = usize::try_from(cmd.end + 1 - from).unwrap_or(usize::MAX);
                let exec = name.eq_ignore_ascii_case(b"exec");
                if let Some(block) = in_multi.as_mut() {
                    block.push(cmd.argv);
                    if exec {
                        let commands = in_multi.take().unwrap_or_default();
                        units.push(Unit {
                            commands,
                            end,
                            ack: None,
                        });
                    }
                    continue;
                }
                if name.eq_ignore_ascii_case(b"multi") {
                    in_multi = Some(vec![cmd.argv]);
                    continue;
                }
                let getack = name.eq_ignore_ascii_case(b"replconf")
                    && cmd
                        .argv
                        .get(1)
                        .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
                units.push(Unit {
                    commands: vec![cmd.argv],
                    end,
                    ack: getack.then(|| cmd.start - 1),
                });
            }
            Ok(StreamItem::Incomplete { .. }) => break,
            Err(e) => return Err(format!("Protocol error from MASTER: {e}")),
        }
    }
    Ok(units)
}

/// How many of `units` (their `end`s counted from the store's offset) to apply now: those
/// the ring has room for without overwriting a byte no finished snapshot covers. When none
/// fits, a snapshot starts (or runs) and the stream waits for it, the lock released and the
/// master still read and acknowledged, as a client's write waits; a unit larger than the
/// whole ring is applied alone (the store writes the snapshot it needs under the lock). While
/// snapshots fail, nothing is applied: the replica lags until one succeeds.
fn units_with_room(store: &mut Store, units: &[Unit]) -> usize {
    let fit = units
        .iter()
        .take_while(|u| store.has_room(u.end as u64))
        .count();
    if fit > 0 {
        return fit;
    }
    let Some(first) = units.first() else {
        return 0;
    };
    match store.room_for(first.end as u64) {
        Room::Now | Room::Big => 1,
        Room::Wait | Room::Refuse => 0,
    }
}

/// Applies the master's stream from the store's offset until the link ends: the ready units
/// are applied and appended to the backlog under one hold of the store lock.
///
/// A unit this server cannot apply (a command the executor does not have, or that fails
/// here) stops the link before it: the data and the backlog stay at the offset before it,
/// identical to the master's there, and the link is retried. The replica lags, loudly,
/// rather than diverge from its master or hold bytes in its backlog it could not replay at
/// the next start.
fn follow_stream(
    server: &Server,
    generation: u64,
    link: &mut Link,
    mut db: DbIndex,
) -> Result<(), String> {
    let mut offset = {
        let mut g = server.store();
        g.get().backlog.offset()
    };
    let mut read_offset = offset + link.pending().len() as u64;
    let started = server.millis();
    if !with_state(server, generation, |st| {
        st.status = Status::Connected;
        st.transfer = None;
        st.last_io_ms = Some(started);
        st.down_since_ms = None;
        st.read_offset = Some(read_offset);
        st.applied_offset = Some(offset);
    }) {
        return Ok(());
    }
    log::notice("MASTER <-> REPLICA link is up: streaming");
    let mut last_ack = Instant::now();
    loop {
        let mut units = ready_units(link.pending(), offset + 1)?;
        if !units.is_empty() {
            let mut g = server.store();
            if !current(server, generation) {
                return Ok(());
            }
            let store = g.get();
            units.truncate(units_with_room(store, &units));
            let waiting = units.is_empty();
            let (mut applied, mut acks, mut refused) = (0, Vec::new(), None);
            let mut published: Vec<&[Vec<u8>]> = Vec::new();
            for unit in &mut units {
                // A block is applied whole or not at all: a copy to go back to (O(1), the
                // maps are structurally shared).
                let before = (unit.commands.len() > 1).then(|| store.ks.clone());
                let mut unit_db = db;
                let result = unit
                    .commands
                    .iter_mut()
                    .try_for_each(|argv| apply(&mut store.ks, &mut unit_db, argv));
                let unit: &Unit = unit;
                if let Err(e) = result {
                    if let Some(ks) = before {
                        store.ks = ks;
                    }
                    refused = Some(e);
                    break;
                }
                db = unit_db;
                applied = unit.end;
                acks.extend(unit.ack);
                published.extend(unit.commands.iter().map(Vec::as_slice).filter(|argv| {
                    argv.len() == 3
                        && argv
                            .first()
                            .is_some_and(|n| n.eq_ignore_ascii_case(b"publish"))
                }));
            }
            if applied > 0 {
                let bytes = link.pending().get(..applied).unwrap_or_default();
                offset = store.append(bytes);
                store.feed.follow(db);
            }
            drop(g);
            if waiting {
                // Waiting for a snapshot (see units_with_room): look again soon.
                std::thread::sleep(Duration::from_millis(5));
            }
            publish_locally(server, &published);
            link.consume(applied);
            with_state(server, generation, |st| st.applied_offset = Some(offset));
            for at in acks {
                server.make_durable(at);
                link.send(&ack_command(at))?;
                last_ack = Instant::now();
            }
            if let Some(e) = refused {
                return Err(format!(
                    "== CRITICAL == This replica cannot apply its master's stream at offset \
                     {}: {e}. It stays at offset {offset}, identical to the master there, and \
                     stops the link before it (the master stream uses a command this server \
                     does not have)",
                    offset + 1
                ));
            }
        }
        if last_ack.elapsed() >= ACK_PERIOD {
            server.make_durable(offset);
            link.send(&ack_command(offset))?;
            last_ack = Instant::now();
        }
        if !current(server, generation) {
            return Ok(());
        }
        let n = link.fill()?;
        if n > 0 {
            read_offset += n as u64;
            let now = server.millis();
            with_state(server, generation, |st| {
                st.read_offset = Some(read_offset);
                st.last_io_ms = Some(now);
            });
        }
    }
}

/// Delivers the master's `PUBLISH` commands to this server's subscribers, as a Redis
/// replica does.
fn publish_locally(server: &Server, published: &[&[Vec<u8>]]) {
    for argv in published {
        if let (Some(channel), Some(message)) = (argv.get(1), argv.get(2)) {
            server.pubsub.publish(channel, message);
        }
    }
    if !published.is_empty() {
        server.wake();
    }
}

/// `ROLE` for a replica: `slave`, the master's host and port, the link state and the
/// applied offset (-1 while not streaming), as Redis 7.0 orders them.
pub(crate) fn role(server: &Server) -> Option<Vec<u8>> {
    let st = lock(&server.upstream.state);
    let (host, port) = st.master.clone()?;
    let offset = st
        .applied_offset
        .and_then(|o| i64::try_from(o).ok())
        .unwrap_or(-1);
    Some(resp::array(&[
        resp::bulk(b"slave"),
        resp::bulk(host.as_bytes()),
        resp::integer(i64::from(port)),
        resp::bulk(st.status.role_name().as_bytes()),
        resp::integer(offset),
    ]))
}

/// The first lines of `INFO replication`: `role:master`, or a replica's fields in Redis
/// 7.0's order (up to `replica_announced`). `offset` is the backlog's offset.
pub(crate) fn info_role_lines(server: &Server, offset: u64) -> String {
    use std::fmt::Write as _;
    let st = lock(&server.upstream.state);
    let Some((host, port)) = &st.master else {
        return "role:master\r\n".to_owned();
    };
    let now = server.millis();
    let secs_since = |ms: u64| now.saturating_sub(ms) / 1000;
    let up = st.status == Status::Connected;
    let mut out = String::new();
    let _ = write!(
        out,
        "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\n\
         master_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\n\
         slave_read_repl_offset:{}\r\nslave_repl_offset:{}\r\n",
        if up { "up" } else { "down" },
        st.last_io_ms
            .map_or(-1, |ms| i64::try_from(secs_since(ms)).unwrap_or(i64::MAX)),
        u8::from(st.status == Status::Sync),
        st.read_offset.unwrap_or(offset),
        st.applied_offset.unwrap_or(offset),
    );
    if let (Status::Sync, Some((size, read, last))) = (st.status, st.transfer) {
        let read_i = i64::try_from(read).unwrap_or(i64::MAX);
        #[allow(clippy::cast_precision_loss)]
        let perc = if size > 0 {
            read as f64 / size as f64 * 100.0
        } else {
            0.0
        };
        let _ = write!(
            out,
            "master_sync_total_bytes:{size}\r\nmaster_sync_read_bytes:{read}\r\n\
             master_sync_left_bytes:{}\r\nmaster_sync_perc:{perc:.2}\r\n\
             master_sync_last_io_seconds_ago:{}\r\n",
            size - read_i,
            secs_since(last)
        );
    }
    if !up {
        let _ = write!(
            out,
            "master_link_down_since_seconds:{}\r\n",
            st.down_since_ms
                .map_or(-1, |ms| i64::try_from(secs_since(ms)).unwrap_or(i64::MAX))
        );
    }
    let _ = write!(
        out,
        "slave_priority:{}\r\nslave_read_only:1\r\nreplica_announced:1\r\n",
        server.live.replica_priority()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(parts: &[&str]) -> Vec<u8> {
        resp::encode_command(parts)
    }

    #[test]
    fn an_unfinished_multi_is_not_ready_and_a_finished_one_is_one_unit() {
        let mut bytes = cmd(&["SET", "a", "1"]);
        let first = bytes.len();
        bytes.extend(cmd(&["MULTI"]));
        bytes.extend(cmd(&["INCR", "n"]));
        let units = ready_units(&bytes, 101).unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].end, first);
        bytes.extend(cmd(&["EXEC"]));
        bytes.extend(cmd(&["SET", "b"]).get(..5).unwrap());
        let units = ready_units(&bytes, 101).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[1].commands.len(), 3);
        assert_eq!(units[1].end, bytes.len() - 5, "a cut command waits");
    }

    #[test]
    fn getack_is_acknowledged_with_the_offset_before_it() {
        let mut bytes = cmd(&["PING"]);
        bytes.extend(cmd(&["REPLCONF", "GETACK", "*"]));
        let units = ready_units(&bytes, 1).unwrap();
        assert_eq!(units[0].ack, None);
        assert_eq!(units[1].ack, Some(14));
        assert_eq!(units[1].end, 14 + 37);
    }

    #[test]
    fn psync_replies_are_read_as_redis_and_malformed_ones_refused() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let rid = RunId::from_bytes(id.as_bytes()).unwrap();
        let other = RunId::random();
        let full = format!("+FULLRESYNC {id} 1234");
        assert_eq!(
            parse_psync_reply(full.as_bytes(), None),
            Ok(PsyncAnswer::FullResync {
                id: rid,
                offset: 1234
            })
        );
        assert_eq!(
            parse_psync_reply(b"+CONTINUE", Some(other)),
            Ok(PsyncAnswer::Continue(Some(other)))
        );
        assert_eq!(
            parse_psync_reply(format!("+CONTINUE {id}").as_bytes(), Some(other)),
            Ok(PsyncAnswer::Continue(Some(rid)))
        );
        for bad in [
            "+FULLRESYNC".to_owned(),
            format!("+FULLRESYNC {id}"),
            format!("+FULLRESYNC {id} -1"),
            format!("+FULLRESYNC {id} 18446744073709551615"),
            "+FULLRESYNC 0123 5".to_owned(),
            "+CONTINUE short".to_owned(),
            "-ERR unknown command 'PSYNC'".to_owned(),
            "-NOMASTERLINK Can't SYNC while not connected with my master".to_owned(),
            "\u{fffd}\u{0}".to_owned(),
        ] {
            assert!(parse_psync_reply(bad.as_bytes(), None).is_err(), "{bad}");
        }
        assert!(parse_psync_reply(&[0xff, 0xfe, b'+'], None).is_err());
    }

    #[test]
    fn garbage_from_the_master_is_an_error_not_a_panic() {
        assert!(ready_units(b"+OK\r\n", 1).is_err());
        assert!(ready_units(b"*1\r\n$99999999999999999999\r\n", 1).is_err());
        assert!(ready_units(b"*2\r\n$3\r\nGE", 1).unwrap().is_empty());
    }
}
