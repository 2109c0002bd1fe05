//! One client connection of the event loop (see `event_loop.rs`): its parser and unsent
//! replies, running its commands (writes are appended to the backlog before they are
//! acknowledged), the server's own commands, `WAIT` as a blocked state, and the hand-over to
//! a replica sender thread on `PSYNC` / `SYNC`.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use durable_resp::{self as resp, RequestParser, parse_i64};
use mio::net::TcpStream;

use crate::client_cmds::{self, After, Registration};
use crate::commands::{ArgList, Outcome, execute, is_server_command, is_write_command};
use crate::config_cmd;
use crate::keyspace::DbIndex;
use crate::multi::{self, Step, Transaction};
use crate::pubsub::Subscriptions;
use crate::replica::Handshake;
use crate::server::{GETACK, Server, StoreGuard};
use crate::store::{Room, Store};

/// Redis's `client-query-buffer-limit`: a client with more bytes received and not yet parsed
/// into arguments is closed. As in Redis, the arguments already parsed do not count (each is
/// bounded by the 512 MB bulk limit and their number by the 1M multibulk limit), so a 1.5 GB
/// `MSET` made of smaller arguments is accepted.
const QUERY_BUFFER_LIMIT: usize = 1024 * 1024 * 1024;

const NOAUTH: &[u8] = b"NOAUTH Authentication required.";
const WRONGPASS: &[u8] = b"WRONGPASS invalid username-password pair or user is disabled.";
const NOT_AN_INTEGER: &[u8] = b"ERR value is not an integer or out of range";
const NOREPLICAS: &[u8] = b"NOREPLICAS Not enough good replicas to write.";
/// Redis's reply to writes (and `PING`) while snapshots fail
/// (`stop-writes-on-bgsave-error`).
pub(crate) const MISCONF: &[u8] = b"MISCONF Redis is configured to save RDB snapshots, but it's \
    currently unable to persist to disk. Commands that may modify the data set are disabled, \
    because this instance is configured to report errors during writes if RDB snapshotting \
    fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about \
    the RDB error.";

/// Redis's `NET_HOST_STR_LEN`: a replica's announced `ip-address` must be shorter.
const NET_HOST_STR_LEN: usize = 256;

/// Whether `given` equals the configured password, without an early exit at the first
/// difference: every byte of `given` is compared, so timing does not reveal how many leading
/// bytes were right (it may reveal the password's length; Redis 7 compares SHA-256 digests of
/// both, which hides that as well, at the cost of a hash dependency). The differences are folded with XOR and OR; `black_box` keeps the optimizer from turning
/// the fold back into a short-circuiting comparison. Redis gets the same property with
/// `time_independent_strcmp`.
fn password_matches(given: &[u8], pass: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != pass.len());
    for (i, &g) in given.iter().enumerate() {
        diff |= std::hint::black_box(g ^ pass.get(i).copied().unwrap_or(!g));
    }
    std::hint::black_box(diff) == 0
}

/// Checks `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]` as Redis 7.0 does. `Ok`: shut down
/// (every flag is accepted; the backlog is the write-ahead log, so the data is kept whatever
/// the flags). `Err`: the error text to reply; nothing happens.
fn shutdown_request(args: &[Vec<u8>]) -> Result<(), &'static [u8]> {
    const SYNTAX: &[u8] = b"ERR syntax error";
    let (mut save, mut nosave, mut other_flag, mut abort) = (false, false, false, false);
    for a in args {
        match a.to_ascii_lowercase().as_slice() {
            b"nosave" => nosave = true,
            b"save" => save = true,
            b"now" | b"force" => other_flag = true,
            b"abort" => abort = true,
            _ => return Err(SYNTAX),
        }
    }
    if (abort && (save || nosave || other_flag)) || (save && nosave) {
        return Err(SYNTAX);
    }
    if abort {
        // A shutdown here never waits for anything, so none can be in progress.
        return Err(b"ERR No shutdown in progress.");
    }
    Ok(())
}

/// What the event loop does with a connection after running its commands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Continue,
    /// Close once the replies are written.
    Close,
    /// `PSYNC <id> <offset>` (or `SYNC` when `None`): hand the connection to a replica
    /// sender thread.
    Replicate(Option<(Vec<u8>, Vec<u8>)>),
}

/// The store work of one event-loop turn, shared by every connection that runs commands in
/// it: the store lock is taken once, the writes of all of them are appended in one piece
/// when the lock is released, and (under `--durability always`) one sync at the end of the
/// turn covers them all before any reply is written (group commit).
pub(crate) struct Batch<'s> {
    server: &'s Server,
    held: Option<StoreGuard<'s>>,
    /// Stream bytes of this hold of the lock, not yet appended.
    pending: Vec<u8>,
    /// The stream offset the turn's replies may depend on: the end of the backlog when the
    /// lock was last released.
    pub(crate) seen: u64,
    /// When the turn started: the time of its commands (one clock read per turn).
    now: Instant,
    /// Bytes were appended this turn: the replica senders are woken once its replies are
    /// written ([`Batch::wake_senders`]).
    appended: bool,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("locked", &self.held.is_some())
            .field("pending", &self.pending.len())
            .field("seen", &self.seen)
            .finish()
    }
}

impl<'s> Batch<'s> {
    pub(crate) fn new(server: &'s Server) -> Batch<'s> {
        Batch {
            server,
            held: None,
            pending: Vec::new(),
            seen: 0,
            now: Instant::now(),
            appended: false,
        }
    }

    /// The store, locked until [`Batch::release`].
    fn store(&mut self) -> &mut Store {
        let server = self.server;
        self.held.get_or_insert_with(|| server.store()).get()
    }

    /// Queues `bytes` for the stream; the stream offset right after them.
    fn push(&mut self, bytes: &[u8]) -> u64 {
        let base = self.store().backlog.offset();
        self.pending.extend_from_slice(bytes);
        let end = base + self.pending.len() as u64;
        self.append_if_large();
        end
    }

    /// Queues the stream form of `argv` run in `db`, encoded straight into the queue; the
    /// stream offset right after it.
    fn push_command<L: ArgList + ?Sized>(&mut self, db: DbIndex, argv: &L) -> u64 {
        let size: usize = (0..argv.count()).map(|i| argv.arg(i).len()).sum();
        if size >= APPEND_CHUNK {
            // Big arguments go into the ring from where they are, not through the queue.
            self.append_queued();
            return self.store().append_command(db, argv);
        }
        let server = self.server;
        let store = self.held.get_or_insert_with(|| server.store()).get();
        let base = store.backlog.offset();
        store.feed.encode_into(&mut self.pending, db, argv);
        let end = base + self.pending.len() as u64;
        self.append_if_large();
        end
    }

    /// Past [`APPEND_CHUNK`] queued bytes, appends them at once (the lock kept): one append
    /// never carries a large part of the ring, which would lap replicas that stream well. A
    /// queue grown by a big value gives its memory back.
    fn append_if_large(&mut self) {
        if self.pending.len() < APPEND_CHUNK {
            return;
        }
        self.append_queued();
        if self.pending.capacity() > 4 * APPEND_CHUNK {
            self.pending = Vec::new();
        }
    }

    /// Whether `need` more stream bytes fit after the queued ones without waiting.
    fn has_room(&mut self, need: u64) -> bool {
        let queued = self.pending.len() as u64;
        self.store().has_room(queued + need)
    }

    /// What a write whose stream form takes at most `need` bytes, lacking ring room, does
    /// (see [`Store::room_for`]); the queued bytes are appended first.
    fn room_for(&mut self, need: u64) -> Room {
        self.append_queued();
        self.store().room_for(need)
    }

    /// Appends the queued stream bytes now (the lock kept).
    fn append_queued(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        self.appended |= !pending.is_empty();
        self.store().append_quiet(&pending);
        pending.clear();
        self.pending = pending;
    }

    /// Appends what was queued and releases the store lock, before anything that takes the
    /// lock by itself runs. The replica senders are not woken yet: see
    /// [`Batch::wake_senders`].
    pub(crate) fn release(&mut self) {
        if let Some(mut g) = self.held.take() {
            self.appended |= !self.pending.is_empty();
            let end = g.get().append_quiet(&self.pending);
            self.pending.clear();
            self.seen = self.seen.max(end);
        }
    }

    /// Wakes the replica senders asleep on the backlog if this turn appended anything. The
    /// event loop calls it after writing the turn's replies: the wake-up is a syscall on
    /// whose return a woken sender can take the loop's CPU (measured: the loop preempted
    /// there while the turn's replies waited), and a sender that is not asleep saw the bytes
    /// at the append anyway.
    pub(crate) fn wake_senders(&mut self) {
        if std::mem::take(&mut self.appended) {
            self.server.store().get().wake_senders();
        }
    }
}

/// Queued stream bytes past which [`Batch::push`] appends without waiting for the lock's
/// release.
const APPEND_CHUNK: usize = 64 * 1024;

/// What a client blocked for ring room runs once unblocked.
#[derive(Debug)]
pub(crate) enum Parked {
    /// A command.
    Command(Vec<Vec<u8>>),
    /// An `EXEC`, with the commands it runs.
    Exec(Vec<Vec<Vec<u8>>>),
}

/// Why a client is blocked: it reads nothing more until unblocked.
#[derive(Debug)]
pub(crate) enum Blocked {
    /// In `WAIT`.
    Wait {
        /// The stream offset the replicas must have acknowledged.
        target: u64,
        want: usize,
        deadline: Option<Instant>,
    },
    /// A write waiting for ring room (the running snapshot) or for a write larger than the
    /// ring to be in place; it runs again once the snapshot finishes.
    Room(Parked),
    /// A write larger than the ring, done once the snapshot at `at` is: then `reply`.
    Big { at: u64, reply: Vec<u8> },
}

/// One client connection.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent states of one connection, each read in a different place"
)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    parser: RequestParser,
    /// Replies not yet written; `out[sent..]` is what is left.
    out: Vec<u8>,
    sent: usize,
    db: DbIndex,
    authed: bool,
    handshake: Handshake,
    /// Stream offset right after this client's last write (Redis's `c->woff`; 0 before its
    /// first): what `WAIT` asks the replicas to have acknowledged.
    woff: u64,
    /// This connection's entry in the server's client table.
    registration: Registration,
    tx: Transaction,
    pub(crate) subs: Subscriptions,
    pub(crate) blocked: Option<Blocked>,
    /// What waited for ring room ([`Blocked::Room`]): it runs first.
    parked: Option<Parked>,
    /// The socket may hold unread bytes (reading stopped at the turn's budget or while
    /// blocked).
    pub(crate) unread: bool,
    /// The peer closed its side or the socket failed (as epoll reported): read until the
    /// end instead of stopping at a short read.
    pub(crate) hung_up: bool,
    /// Time of the last byte read (for `timeout`).
    pub(crate) last_read: Instant,
    /// Whether the connection is on the loop's list of connections to write this turn.
    pub(crate) dirty: bool,
    /// Since when the unsent replies exceed the soft output limit.
    pub(crate) soft_since: Option<Instant>,
    /// Close once the replies are written.
    pub(crate) closing: bool,
}

/// How many bytes a connection may read in one turn before the others get theirs.
const READ_BUDGET: usize = 1024 * 1024;

impl Conn {
    /// A new connection with event-loop token `token`.
    pub(crate) fn new(
        server: &Server,
        stream: TcpStream,
        token: usize,
        registration: Registration,
    ) -> Conn {
        let peer_ip = stream
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        Conn {
            stream,
            parser: RequestParser::new(),
            out: Vec::new(),
            sent: 0,
            db: DbIndex::ZERO,
            authed: !server.live.password_required(),
            handshake: Handshake::new(peer_ip),
            woff: 0,
            registration,
            tx: Transaction::default(),
            subs: Subscriptions::new(token),
            blocked: None,
            parked: None,
            unread: false,
            hung_up: false,
            last_read: Instant::now(),
            dirty: false,
            soft_since: None,
            closing: false,
        }
    }

    /// The connection's client-table registration.
    pub(crate) fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Takes the connection apart for a replica sender thread: its socket, the bytes it sent
    /// after `PSYNC`, its handshake, its registration and its unsent replies.
    pub(crate) fn into_parts(self) -> (TcpStream, RequestParser, Handshake, Registration, Vec<u8>) {
        let mut out = self.out;
        out.drain(..self.sent);
        (
            self.stream,
            self.parser,
            self.handshake,
            self.registration,
            out,
        )
    }

    /// Bytes of replies not yet written.
    pub(crate) fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Queues bytes for the client (messages of its subscriptions).
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes what the socket takes of the unsent replies. `Ok(true)`: all written.
    pub(crate) fn write_out(&mut self) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(true)
    }

    /// Reads what the socket has (up to the turn's budget) and runs every complete command,
    /// unless the client is blocked or closing. `buf` is the loop's read buffer.
    pub(crate) fn read_and_run(&mut self, batch: &mut Batch<'_>, buf: &mut [u8]) -> Next {
        let now = batch.now;
        let mut budget = READ_BUDGET;
        // Commands left in the parser by a WAIT that just ended run first.
        let next = self.run(batch);
        if next != Next::Continue {
            return next;
        }
        loop {
            if self.blocked.is_some() || self.closing {
                return Next::Continue;
            }
            if budget == 0 {
                self.unread = true;
                return Next::Continue;
            }
            let n = match self.stream.read(buf) {
                Ok(0) => return Next::Close,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread = false;
                    return Next::Continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            };
            budget = budget.saturating_sub(n);
            self.last_read = now;
            self.parser.feed(&buf[..n]);
            if self.parser.buffered() > QUERY_BUFFER_LIMIT {
                crate::log::warning("Closing client that reached max query buffer length (1gb)");
                return Next::Close;
            }
            let next = self.run(batch);
            if next != Next::Continue {
                return next;
            }
            if n < buf.len() && !self.hung_up {
                // A short read emptied the socket: bytes that arrive later raise a new
                // (edge-triggered) readiness event, so the read that would only say
                // `WouldBlock` is skipped — one syscall less per client and turn. Not after a
                // hang-up: its event is already taken, and only a read shows the end.
                self.unread = false;
                return Next::Continue;
            }
        }
    }

    /// Runs the complete commands in the parser until it needs more bytes, the client blocks
    /// or the connection must close or be handed over.
    fn run(&mut self, batch: &mut Batch<'_>) -> Next {
        let mut out = std::mem::take(&mut self.out);
        let next = self.run_commands(batch, &mut out);
        self.out = out;
        next
    }

    /// The command that waited for the store, else the parser's next one (counted); `None`
    /// if a waiting `EXEC` ran instead; `Err`: what the connection does when there is none.
    fn next_command(
        &mut self,
        batch: &mut Batch<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<Vec<u8>>>, Next> {
        match self.parked.take() {
            Some(Parked::Command(argv)) => return Ok(Some(argv)),
            Some(Parked::Exec(queued)) => {
                batch.release();
                return if self.exec(batch, queued, out) {
                    Err(Next::Close)
                } else {
                    Ok(None)
                };
            }
            None => {}
        }
        let argv = match self.parser.next_command() {
            Ok(Some(argv)) => argv,
            Ok(None) => return Err(Next::Continue),
            Err(e) => {
                out.extend(e.to_reply());
                return Err(Next::Close);
            }
        };
        batch.server.commands.fetch_add(1, Ordering::Relaxed);
        self.registration
            .entry()
            .touch(&argv, self.db.get(), batch.now);
        Ok(Some(argv))
    }

    /// Whether `argv` waits because a write larger than the ring is waiting for its snapshot:
    /// writes (and an `EXEC`, which may hold some) wait for it, in order; reads go on.
    fn must_wait(&self, batch: &mut Batch<'_>, argv: &[Vec<u8>]) -> bool {
        let writes = if self.tx.active() {
            argv.first()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"exec"))
        } else {
            is_write_command(argv)
        };
        writes && batch.store().writes_wait()
    }

    fn run_commands(&mut self, batch: &mut Batch<'_>, out: &mut Vec<u8>) -> Next {
        let server = batch.server;
        loop {
            if self.blocked.is_some() {
                return Next::Continue;
            }

            // Messages published before this command go out before its reply (only a
            // subscribed connection receives any: no lock taken per command otherwise).
            if self.subs.active() {
                out.extend(self.subs.subscriber().take());
            }
            // AUTH may have just succeeded: the next request is parsed with the new limits.
            self.parser.set_unauthenticated(!self.authed);
            let argv = match self.next_command(batch, out) {
                Ok(Some(argv)) => argv,
                Ok(None) => continue,
                Err(next) => return next,
            };
            let name = argv.first().map_or(&[][..], Vec::as_slice);
            match self.connection_gate(server, &argv, out) {
                None => {}
                Some(Next::Continue) => continue,
                Some(other) => return other,
            }
            if self.must_wait(batch, &argv) {
                self.blocked = Some(Blocked::Room(Parked::Command(argv)));
                return Next::Continue;
            }
            if !self.tx.active()
                && let Some(reply) = self.subs.step(&server.pubsub, &argv)
            {
                let (sub, psub) = self.subs.counts();
                self.registration.entry().set_subscriptions(sub, psub);
                out.extend(reply);
                continue;
            }
            match self.tx.step(server, &argv) {
                Step::Pass => {}
                Step::Reply(reply) => {
                    out.extend(reply);
                    continue;
                }
                Step::Exec(queued) => {
                    batch.release();
                    if self.exec(batch, queued, out) {
                        return Next::Close;
                    }
                    continue;
                }
            }
            if is_server_command(name) || name.eq_ignore_ascii_case(b"quit") {
                batch.release();
                match self.server_command(batch, &argv, out, false) {
                    Next::Continue => continue,
                    other => return other,
                }
            }
            if server.live.min_replicas_to_write() > 0
                && is_write_command(&argv)
                && !server.enough_good_replicas()
            {
                out.extend(resp::error(NOREPLICAS));
                continue;
            }
            if server.read_only() && is_write_command(&argv) {
                out.extend(resp::error(crate::upstream::READONLY));
                continue;
            }
            let store = batch.store();
            if store.snapshot_failed()
                && (name.eq_ignore_ascii_case(b"ping") || is_write_command(&argv))
            {
                out.extend(resp::error(MISCONF));
                continue;
            }
            let Some(argv) = self.with_room(batch, argv, out) else {
                continue;
            };
            let store = batch.store();
            let mut argv = argv;
            match execute(&mut store.ks, &mut self.db, &mut argv) {
                Outcome::Executed(done) => {
                    out.extend_from_slice(&done.reply);
                    if let Some(p) = done.propagated(&argv) {
                        self.woff = batch.push_command(self.db, &p);
                    }
                }
                Outcome::NotMine => out.extend(resp::error(b"ERR unknown command")),
            }
        }
    }

    /// `argv` if it can run now: not a write, or a write the ring has room for; else `None`,
    /// having refused it (`-MISCONF`), parked it until the running snapshot finishes, or run
    /// it as a big write.
    fn with_room(
        &mut self,
        batch: &mut Batch<'_>,
        argv: Vec<Vec<u8>>,
        out: &mut Vec<u8>,
    ) -> Option<Vec<Vec<u8>>> {
        let need = stream_size_bound(&argv);
        if batch.has_room(need) || !is_write_command(&argv) {
            return Some(argv);
        }
        match batch.room_for(need) {
            Room::Now => return Some(argv),
            Room::Refuse => out.extend(resp::error(MISCONF)),
            Room::Wait => self.blocked = Some(Blocked::Room(Parked::Command(argv))),
            Room::Big => self.big_write(batch, argv, out),
        }
        None
    }

    /// Runs a write whose stream form may be larger than the ring as a [`Store`] big write:
    /// done on a copy of the keyspace, the client blocked until the snapshot that covers it
    /// is written (see the store's module docs). A write that changes nothing answers at once.
    fn big_write(&mut self, batch: &mut Batch<'_>, mut argv: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        let store = batch.store();
        let mut ks = store.ks.clone();
        match execute(&mut ks, &mut self.db, &mut argv) {
            Outcome::Executed(done) => {
                let Some(propagate) = done.propagate else {
                    out.extend_from_slice(&done.reply);
                    return;
                };
                let at = store.begin_big_write(ks, self.db, argv, propagate);
                self.woff = at;
                self.blocked = Some(Blocked::Big {
                    at,
                    reply: done.reply,
                });
            }
            Outcome::NotMine => out.extend(resp::error(b"ERR unknown command")),
        }
    }

    /// What runs before a command whatever the connection's state: `RESET` (allowed before
    /// `AUTH`, in subscribed mode and inside `MULTI`, never queued) and the `AUTH` gate.
    /// `None`: run the command; else what the connection does next.
    fn connection_gate(
        &mut self,
        server: &Server,
        argv: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Option<Next> {
        let name = argv.first().map_or(&[][..], Vec::as_slice);
        if name.eq_ignore_ascii_case(b"reset") {
            // Allowed before AUTH, in subscribed mode and inside MULTI (never queued).
            if argv.len() == 1 {
                self.reset(server);
                out.extend_from_slice(b"+RESET\r\n");
            } else {
                out.extend(resp::error(
                    b"ERR wrong number of arguments for 'reset' command",
                ));
            }
            return Some(Next::Continue);
        }
        if !self.authed && server.live.password_required() && !name.eq_ignore_ascii_case(b"auth") {
            if name.eq_ignore_ascii_case(b"quit") {
                out.extend(resp::simple_string(b"OK"));
                return Some(Next::Close);
            }
            if name.eq_ignore_ascii_case(b"exec") {
                // Redis prefixes a refused EXEC's error so.
                out.extend(resp::error(
                    b"EXECABORT Transaction discarded because of: NOAUTH Authentication \
                      required.",
                ));
            } else {
                out.extend(resp::error(NOAUTH));
            }
            return Some(Next::Continue);
        }
        None
    }

    /// `EXEC` (see multi.rs); `true` if the connection must close after the reply. One whose
    /// writes lack ring room waits for the snapshot as a write does ([`Blocked::Room`]).
    fn exec(
        &mut self,
        batch: &mut Batch<'_>,
        mut queued: Vec<Vec<Vec<u8>>>,
        out: &mut Vec<u8>,
    ) -> bool {
        let server = batch.server;
        let writes: u64 = queued
            .iter()
            .filter(|argv| is_write_command(argv))
            .map(|argv| stream_size_bound(argv))
            .sum();
        if writes > 0 {
            // The writes, and the MULTI and EXEC around them.
            let need = writes + 64;
            let mut g = server.store();
            let store = g.get();
            let room = if store.snapshot_failed() {
                Room::Refuse
            } else {
                store.room_for(need)
            };
            match room {
                // Larger than the ring: the store writes the snapshot it needs.
                Room::Now | Room::Big => {}
                Room::Refuse => {
                    // Redis refuses such an EXEC as a whole.
                    out.extend(resp::error(MISCONF));
                    return false;
                }
                Room::Wait => {
                    self.blocked = Some(Blocked::Room(Parked::Exec(queued)));
                    return false;
                }
            }
        }
        let mut db = self.db;
        let (reply, woff, close) = multi::exec(server, &mut db, &mut queued, |argv, o| {
            if let Some(reply) = self.subs.step(&server.pubsub, argv) {
                let (sub, psub) = self.subs.counts();
                self.registration.entry().set_subscriptions(sub, psub);
                o.extend(reply);
                return false;
            }
            !matches!(self.server_command(batch, argv, o, true), Next::Continue)
        });
        self.db = db;
        if let Some(w) = woff {
            self.woff = w;
            batch.seen = batch.seen.max(w);
        }
        out.extend(reply);
        close
    }

    /// Runs a server command (`in_multi`: queued in a transaction, where `WAIT` does not
    /// block), the store lock released.
    fn server_command(
        &mut self,
        batch: &mut Batch<'_>,
        argv: &[Vec<u8>],
        out: &mut Vec<u8>,
        in_multi: bool,
    ) -> Next {
        let server = batch.server;
        let name = String::from_utf8_lossy(argv.first().map_or(&[][..], Vec::as_slice))
            .to_ascii_lowercase();
        let arg = |i: usize| argv.get(i).map_or(&[][..], Vec::as_slice);
        let arity = |n: usize, exact: bool| {
            if (exact && argv.len() != n) || argv.len() < n {
                Some(resp::error(
                    format!("ERR wrong number of arguments for '{name}' command").as_bytes(),
                ))
            } else {
                None
            }
        };
        match name.as_str() {
            "quit" => {
                out.extend(resp::simple_string(b"OK"));
                return Next::Close;
            }
            "auth" => {
                if let Some(e) = arity(2, false)
                    .or_else(|| (argv.len() > 3).then(|| resp::error(b"ERR syntax error")))
                {
                    out.extend(e);
                } else {
                    out.extend(self.auth(server, argv));
                }
            }
            "info" => {
                let section = argv
                    .get(1)
                    .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
                let text = crate::info::info(server, section.as_deref());
                out.extend(resp::bulk(text.as_bytes()));
            }
            "role" => out.extend(arity(1, true).unwrap_or_else(|| crate::info::role(server))),
            "wait" => match arity(3, true) {
                Some(e) => out.extend(e),
                None if server.read_only() => {
                    out.extend(resp::error(crate::upstream::WAIT_ON_REPLICA));
                }
                None => {
                    if let Some(reply) = self.wait(batch, arg(1), arg(2), in_multi) {
                        out.extend(reply);
                    }
                }
            },
            "shutdown" => match shutdown_request(argv.get(1..).unwrap_or_default()) {
                Ok(()) => {
                    server.shutdown();
                }
                Err(text) => out.extend(resp::error(text)),
            },
            "replconf" => {
                if argv.len().is_multiple_of(2) {
                    out.extend(resp::error(b"ERR syntax error"));
                } else if let Some(reply) = self.replconf(argv) {
                    out.extend(reply);
                }
            }
            "psync" | "sync" if self.sent < out.len() && (name == "sync" || argv.len() == 3) => {
                // As Redis: a replica must not have unread replies in front of its stream.
                out.extend(resp::error(
                    b"ERR SYNC and PSYNC are invalid with pending output",
                ));
            }
            "psync" => match arity(3, true) {
                Some(e) => out.extend(e),
                // As Redis: a bad offset is refused and the client stays a normal client.
                None if parse_i64(arg(2)).is_none() => {
                    crate::log::warning("Replica asks for synchronization but with a wrong offset");
                    out.extend(resp::error(NOT_AN_INTEGER));
                }
                None => return Next::Replicate(Some((arg(1).to_vec(), arg(2).to_vec()))),
            },
            "sync" => return Next::Replicate(None),
            "config" => out.extend(config_cmd::config(server, argv)),
            "replicaof" | "slaveof" => {
                out.extend(crate::upstream::replicaof_command(server, argv));
            }
            "client" => {
                let (reply, after) =
                    client_cmds::client(&server.client_table, self.registration.entry(), argv);
                out.extend(reply);
                if after == After::Close {
                    return Next::Close;
                }
            }
            _ => out.extend(resp::error(b"ERR unknown command")),
        }
        Next::Continue
    }

    fn auth(&mut self, server: &Server, argv: &[Vec<u8>]) -> Vec<u8> {
        let Some(pass) = server.live.requirepass() else {
            return resp::error(
                b"ERR AUTH <password> called without any password configured for the default user. \
                  Are you sure your configuration is correct?",
            );
        };
        let (user, given) = match argv {
            [_, p] => (&b"default"[..], p.as_slice()),
            [_, u, p] => (u.as_slice(), p.as_slice()),
            _ => return resp::error(b"ERR syntax error"),
        };
        if user == b"default" && password_matches(given, &pass) {
            self.authed = true;
            resp::simple_string(b"OK")
        } else {
            resp::error(WRONGPASS)
        }
    }

    /// `REPLCONF <option> <value> ...` during a replica's handshake. `None`: no reply (ACK).
    fn replconf(&mut self, argv: &[Vec<u8>]) -> Option<Vec<u8>> {
        let mut pairs = argv.get(1..).unwrap_or_default().chunks_exact(2);
        for pair in pairs.by_ref() {
            let [opt, value] = pair else { continue };
            let opt_l = opt.to_ascii_lowercase();
            match opt_l.as_slice() {
                b"listening-port" => match parse_i64(value).and_then(|p| u16::try_from(p).ok()) {
                    Some(p) => self.handshake.listening_port = p,
                    None => return Some(resp::error(NOT_AN_INTEGER)),
                },
                b"ip-address" => {
                    if value.len() >= NET_HOST_STR_LEN {
                        return Some(resp::error(
                            format!(
                                "ERR REPLCONF ip-address provided by replica instance is too \
                                 long: {} bytes",
                                value.len()
                            )
                            .as_bytes(),
                        ));
                    }
                    self.handshake.ip = String::from_utf8_lossy(value).into_owned();
                }
                b"capa" => {
                    if value.eq_ignore_ascii_case(b"eof") {
                        self.handshake.capa_eof = true;
                    } else if value.eq_ignore_ascii_case(b"psync2") {
                        self.handshake.capa_psync2 = true;
                    }
                }
                // Only meaningful on a replica link (handled by the ACK reader there).
                b"ack" | b"getack" | b"fack" => return None,
                b"rdb-only" | b"rdb-filter-only" => {}
                _ => {
                    let mut text = b"ERR Unrecognized REPLCONF option: ".to_vec();
                    text.extend_from_slice(opt);
                    return Some(resp::error(&text));
                }
            }
        }
        Some(resp::simple_string(b"OK"))
    }

    /// `WAIT numreplicas timeout` as Redis's `waitCommand`: how many online replicas
    /// acknowledged this client's last write (`woff`); answers at once if at least
    /// `numreplicas` did (always, for a client that never wrote) or inside `MULTI`, else asks
    /// the replicas for an ACK and blocks the client (`None`) until enough of them
    /// acknowledged or the timeout (0: none) passed; the event loop then answers with
    /// [`Conn::try_unblock`].
    fn wait(
        &mut self,
        batch: &mut Batch<'_>,
        n: &[u8],
        timeout: &[u8],
        in_multi: bool,
    ) -> Option<Vec<u8>> {
        let Some(n) = parse_i64(n) else {
            return Some(resp::error(NOT_AN_INTEGER));
        };
        let Some(timeout) = parse_i64(timeout) else {
            return Some(resp::error(
                b"ERR timeout is not an integer or out of range",
            ));
        };
        if timeout < 0 {
            return Some(resp::error(b"ERR timeout is negative"));
        }
        let server = batch.server;
        let target = self.woff;
        let want = usize::try_from(n).unwrap_or(0);
        let count = server.replicas_acked(target);
        if count >= want || in_multi {
            return Some(count_reply(count));
        }
        batch.push(GETACK);
        batch.release();
        let deadline = (timeout > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::try_from(timeout).unwrap_or(0)));
        self.blocked = Some(Blocked::Wait {
            target,
            want,
            deadline,
        });
        server.waiting.fetch_add(1, Ordering::SeqCst);
        None
    }

    /// Ends a `WAIT` if enough replicas acknowledged or its timeout passed, queueing its
    /// reply; ends a wait for the store when its snapshot finished (the parked command runs
    /// at the connection's next turn). Whether the client was unblocked.
    pub(crate) fn try_unblock(&mut self, server: &Server, now: Instant) -> bool {
        match &self.blocked {
            None => return false,
            Some(Blocked::Wait {
                target,
                want,
                deadline,
            }) => {
                let count = server.replicas_acked(*target);
                if count < *want && deadline.is_none_or(|d| now < d) {
                    return false;
                }
                server.waiting.fetch_sub(1, Ordering::SeqCst);
                self.out.extend(count_reply(count));
            }
            Some(Blocked::Room(_)) => {
                let mut g = server.store();
                let store = g.get();
                store.poll_snapshot();
                if store.writes_wait() || store.snapshot_running() {
                    return false;
                }
                if let Some(Blocked::Room(parked)) = self.blocked.take() {
                    self.parked = Some(parked);
                }
            }
            Some(Blocked::Big { at, .. }) => {
                let Some(done) = server.store().get().big_write_done(*at) else {
                    return false;
                };
                if let Some(Blocked::Big { reply, .. }) = self.blocked.take() {
                    if done {
                        self.out.extend(reply);
                    } else {
                        self.out.extend(resp::error(MISCONF));
                    }
                }
            }
        }
        self.blocked = None;
        true
    }

    /// When the `WAIT` this client is blocked in times out.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.blocked {
            Some(Blocked::Wait { deadline, .. }) => *deadline,
            _ => None,
        }
    }

    /// Whether the client waits for the store (a snapshot): the loop then polls for it.
    pub(crate) fn waits_for_store(&self) -> bool {
        matches!(self.blocked, Some(Blocked::Room(_) | Blocked::Big { .. }))
    }

    /// `RESET` as Redis 7.0: the transaction discarded, every subscription dropped, the
    /// name cleared, database 0, and authenticated only if no password is required.
    fn reset(&mut self, server: &Server) {
        self.tx = Transaction::default();
        self.subs.clear(&server.pubsub);
        self.registration.entry().set_subscriptions(0, 0);
        self.registration.entry().clear_name();
        self.db = DbIndex::ZERO;
        self.authed = !server.live.password_required();
    }

    /// Ends the connection's shared state: subscriptions, a pending `WAIT`.
    pub(crate) fn close(&mut self, server: &Server) {
        self.subs.clear(&server.pubsub);
        if let Some(Blocked::Wait { .. }) = self.blocked.take() {
            server.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// At least the stream size of `argv`'s propagation: its RESP form, plus room for a `SELECT`
/// before it (commands propagate as they came, or shorter).
fn stream_size_bound(argv: &[Vec<u8>]) -> u64 {
    let framed: usize = argv.iter().map(|a| a.len() + 32).sum();
    (framed + 64) as u64
}

fn count_reply(count: usize) -> Vec<u8> {
    resp::integer(i64::try_from(count).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_only_the_exact_password() {
        assert!(password_matches(b"secret", b"secret"));
        for wrong in [
            &b""[..],
            b"secre",
            b"secreT",
            b"secret\0",
            b"xecret",
            b"secretsecret",
        ] {
            assert!(!password_matches(wrong, b"secret"), "{wrong:?}");
        }
        assert!(!password_matches(b"\xff", b""));
    }

    #[test]
    fn shutdown_flags_are_checked_like_redis_7_0() {
        let args = |line: &str| {
            line.split_whitespace()
                .map(|a| a.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        for ok in ["", "NOSAVE", "save", "NOW", "FORCE", "nosave now force"] {
            assert_eq!(shutdown_request(&args(ok)), Ok(()), "{ok}");
        }
        for syntax in ["FOO", "NOSAVE ABORT", "now abort", "SAVE NOSAVE", "NOW FOO"] {
            assert_eq!(
                shutdown_request(&args(syntax)),
                Err(&b"ERR syntax error"[..]),
                "{syntax}"
            );
        }
        assert_eq!(
            shutdown_request(&args("abort")),
            Err(&b"ERR No shutdown in progress."[..])
        );
    }
}
