//! The event loop: one thread serves every client connection (as Redis does), with `mio`
//! (epoll) readiness. A connection costs its socket, its parser and its unsent replies — no
//! thread, no stack — so `maxclients` is bounded by file descriptors and memory, not threads.
//!
//! One turn of the loop:
//! 1. accept new connections (refusing those past `maxclients` with Redis's text);
//! 2. read every ready connection (at most [`READ_BUDGET`](crate::conn) bytes each, so one
//!    pipelining client cannot starve the others) and run its complete commands; all of them
//!    share one hold of the store lock and one backlog append ([`Batch`]);
//! 3. release the lock (append), and under `--durability always` sync once for the whole turn
//!    (group commit);
//! 4. end the `WAIT`s that are satisfied or timed out, move published messages behind their
//!    subscribers' replies;
//! 5. write every connection's replies; what the socket does not take waits for writability;
//! 6. wake the replica senders asleep on the backlog (the turn's append did not: a woken
//!    sender could take this thread's CPU before the replies were out).
//!
//! Replica links (`PSYNC` / `SYNC`) leave the loop: their socket is handed to a sender thread
//! (replica.rs) that streams the snapshot and then tails the backlog. The loop sleeps in
//! `epoll_wait` until a socket is ready, a replica's ACK arrives while a client waits in
//! `WAIT` (the [`mio::Waker`]), a `WAIT` times out, or the once-a-second housekeeping
//! (`timeout`, `CLIENT KILL`) is due.

use std::io::{self, Write};
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::accept::MAX_CLIENTS_REACHED;
use crate::client_cmds::Endpoint;
use crate::conn::{Batch, Conn, Next};
use crate::log;
use crate::server::Server;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection `k` of the slab has token `k + FIRST_CONN`.
const FIRST_CONN: usize = 2;

/// How long the loop waits before accepting again after `accept` failed (out of file
/// descriptors): the error persists until a connection closes, so retrying at once would
/// spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often idle clients and killed connections are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Redis's `client-output-buffer-limit` for one class of clients: a client whose unsent
/// replies pass `hard` bytes, or stay above `soft` bytes for `soft_secs` seconds, is closed.
/// 0 disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputLimit {
    pub(crate) hard: u64,
    pub(crate) soft: u64,
    pub(crate) soft_secs: u64,
}

impl OutputLimit {
    /// Redis's default for normal clients: no limit.
    pub(crate) const NORMAL: OutputLimit = OutputLimit {
        hard: 0,
        soft: 0,
        soft_secs: 0,
    };
    /// Redis's default for pub/sub clients: `32mb 8mb 60`.
    pub(crate) const PUBSUB: OutputLimit = OutputLimit {
        hard: 32 << 20,
        soft: 8 << 20,
        soft_secs: 60,
    };

    /// Whether `unsent` bytes break the limit, given since when they have been above the
    /// soft limit (updated here).
    fn broken(self, unsent: u64, soft_since: &mut Option<Instant>, now: Instant) -> bool {
        if self.hard > 0 && unsent >= self.hard {
            return true;
        }
        if self.soft == 0 || unsent < self.soft {
            *soft_since = None;
            return false;
        }
        let since = *soft_since.get_or_insert(now);
        now.duration_since(since).as_secs() >= self.soft_secs
    }
}

struct Loop {
    server: Arc<Server>,
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    /// Connections to read again next turn (budget reached, or a `WAIT` just ended).
    again: Vec<usize>,
    /// Connections with replies to write at the end of this turn.
    dirty: Vec<usize>,
    /// When to try `accept` again after it failed.
    accept_retry: Option<Instant>,
    accept_failing: bool,
    next_housekeeping: Instant,
    /// `CLIENT KILL` count last looked at.
    kills_seen: u64,
    /// Connections blocked in `WAIT` (the only ones whose deadline or ACKs the loop checks).
    blocked: Vec<usize>,
    buf: Vec<u8>,
}

/// How often the loop looks at the store while a client waits for a snapshot.
const STORE_POLL: Duration = Duration::from_millis(10);

/// Serves clients on `listener` forever.
pub(crate) fn run(listener: StdListener, server: &Arc<Server>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    server.set_waker(mio::Waker::new(poll.registry(), WAKER)?);
    let mut lp = Loop {
        server: Arc::clone(server),
        poll,
        listener,
        conns: Slab::new(),
        again: Vec::new(),
        dirty: Vec::new(),
        accept_retry: None,
        accept_failing: false,
        next_housekeeping: Instant::now() + HOUSEKEEPING,
        kills_seen: 0,
        blocked: Vec::new(),
        buf: vec![0; 64 * 1024],
    };
    let mut events = Events::with_capacity(1024);
    loop {
        let timeout = lp.poll_timeout();
        match lp.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        lp.turn(&events);
    }
}

impl Loop {
    /// How long the next poll may sleep.
    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        if !self.again.is_empty() {
            return Duration::ZERO;
        }
        let mut until = self.next_housekeeping;
        if let Some(t) = self.accept_retry {
            until = until.min(t);
        }
        for &key in &self.blocked {
            let Some(c) = self.conns.get(key) else {
                continue;
            };
            if let Some(d) = c.deadline() {
                until = until.min(d);
            }
            if c.waits_for_store() {
                // A snapshot's end wakes no one: look again soon.
                until = until.min(now + STORE_POLL);
            }
        }
        until.saturating_duration_since(now)
    }

    fn turn(&mut self, events: &Events) {
        let server = Arc::clone(&self.server);
        let mut ready: Vec<usize> = std::mem::take(&mut self.again);
        let mut accept = self.accept_retry.is_some_and(|t| Instant::now() >= t);
        for ev in events {
            match ev.token() {
                LISTENER => accept = true,
                WAKER => {}
                Token(t) => {
                    let key = t - FIRST_CONN;
                    if (ev.is_read_closed() || ev.is_error())
                        && let Some(c) = self.conns.get_mut(key)
                    {
                        c.hung_up = true;
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        ready.push(key);
                    }
                    if ev.is_writable() {
                        self.mark_dirty(key);
                    }
                }
            }
        }
        if accept {
            self.accept();
        }
        let mut batch = Batch::new(&server);
        let mut handoffs = Vec::new();
        for key in ready {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match conn.read_and_run(&mut batch, &mut self.buf) {
                Next::Continue => {
                    if conn.blocked.is_some() {
                        if !self.blocked.contains(&key) {
                            self.blocked.push(key);
                        }
                    } else if conn.unread {
                        self.again.push(key);
                    }
                }
                Next::Close => conn.closing = true,
                Next::Replicate(psync) => {
                    handoffs.push((key, psync));
                    continue;
                }
            }
            self.mark_dirty(key);
        }
        batch.release();
        server.make_durable(batch.seen);
        for (key, psync) in handoffs {
            self.hand_over(key, psync);
        }
        let now = Instant::now();
        for key in std::mem::take(&mut self.blocked) {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.try_unblock(&server, now) {
                self.again.push(key);
                self.mark_dirty(key);
            } else if c.blocked.is_some() {
                self.blocked.push(key);
            }
        }
        for token in server.pubsub.take_mail() {
            let key = token - FIRST_CONN;
            if let Some(c) = self.conns.get_mut(key) {
                let mail = c.subs.subscriber().take();
                c.queue(&mail);
                self.mark_dirty(key);
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.housekeeping(now);
        } else {
            // CLIENT KILL ran this turn: its victims go now, not at the next housekeeping.
            self.close_killed();
        }
        for key in std::mem::take(&mut self.dirty) {
            self.flush(key, now);
        }
        batch.wake_senders();
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Writes a connection's replies; closes it if it asked to be closed once they are out,
    /// the socket failed or its output limit is broken.
    fn flush(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let Ok(done) = c.write_out() else {
            self.close(key);
            return;
        };
        if c.closing && done {
            self.close(key);
            return;
        }
        let limit = if c.subs.active() {
            self.server.cfg.output_limit_pubsub
        } else {
            self.server.cfg.output_limit_normal
        };
        if limit.broken(c.unsent() as u64, &mut c.soft_since, now) {
            let class = if c.subs.active() { "pubsub" } else { "normal" };
            log::warning(format_args!(
                "Client id={} scheduled to be closed ASAP for overcoming of output buffer \
                 limits ({class}).",
                c.registration().entry().id()
            ));
            self.close(key);
        }
    }

    fn accept(&mut self) {
        self.accept_retry = None;
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_failing = false;
                    stream
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if !self.accept_failing {
                        log::warning(format_args!("Accepting client connection: {e}"));
                        self.accept_failing = true;
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            };
            let server = &self.server;
            if server.clients.load(Ordering::SeqCst) >= server.live.maxclients() {
                refuse(stream);
                server.rejected_connections.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(e) = self.add(stream) {
                log::warning(format_args!("Registering a client connection: {e}"));
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let token = entry.key() + FIRST_CONN;
        self.poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let server = &self.server;
        let at = Endpoint::of(stream.peer_addr(), stream.local_addr(), &stream);
        let registration = server.client_table.register(at, None, server.next_id());
        entry.insert(Conn::new(server, stream, token, registration));
        server.clients.fetch_add(1, Ordering::SeqCst);
        server.connections.fetch_add(1, Ordering::Relaxed);
        server.connected_clients.fetch_add(1, Ordering::Relaxed);
        // Bytes that arrived with the connection are announced by the registration itself
        // (epoll reports the current state when a socket is added).
        Ok(())
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        self.blocked.retain(|&k| k != key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        c.close(&self.server);
        self.server.clients.fetch_sub(1, Ordering::SeqCst);
        self.server
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives a connection that sent `PSYNC` / `SYNC` to a replica sender thread.
    fn hand_over(&mut self, key: usize, psync: Option<(Vec<u8>, Vec<u8>)>) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        c.close(&self.server);
        self.server
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
        let (stream, parser, handshake, registration, unsent) = c.into_parts();
        let mut stream = std::net::TcpStream::from(stream);
        let server = Arc::clone(&self.server);
        let ready = stream
            .set_nonblocking(false)
            .and_then(|()| stream.write_all(&unsent));
        let spawned = ready.and_then(|()| {
            registration.entry().set_replica(stream.try_clone().ok());
            let srv = Arc::clone(&server);
            std::thread::Builder::new()
                .name("replica".into())
                .spawn(move || {
                    crate::replica::serve(&srv, stream, parser, &handshake, psync.as_ref());
                    drop(registration);
                    srv.clients.fetch_sub(1, Ordering::SeqCst);
                })
        });
        if let Err(e) = spawned {
            log::warning(format_args!("Cannot serve a replica: {e}"));
            server.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Collects a finished snapshot (and retries a failed one), closes the connections
    /// `CLIENT KILL` chose and idle clients past `timeout`.
    fn housekeeping(&mut self, now: Instant) {
        self.server.store().get().tick();
        self.close_killed();
        let idle = self.server.live.timeout();
        if idle == 0 {
            return;
        }
        let doomed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.blocked.is_none()
                    && !c.subs.active()
                    && now.duration_since(c.last_read).as_secs() > idle
            })
            .map(|(k, _)| k)
            .collect();
        for key in doomed {
            self.close(key);
        }
    }

    /// Closes the connections `CLIENT KILL` chose since the last look (nothing to scan when
    /// it has not run).
    fn close_killed(&mut self) {
        let kills = self.server.client_table.kills();
        if kills == self.kills_seen {
            return;
        }
        self.kills_seen = kills;
        let doomed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.registration().entry().killed())
            .map(|(k, _)| k)
            .collect();
        for key in doomed {
            self.close(key);
        }
    }
}

/// Tells a client past `maxclients` so and closes it. The socket is non-blocking: the reply
/// fits any fresh socket buffer, and if it does not, it is dropped (as Redis does).
fn refuse(mut stream: TcpStream) {
    let _ = stream.write(MAX_CLIENTS_REACHED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_limits_close_at_hard_or_after_soft_period() {
        let t0 = Instant::now();
        let mut since = None;
        let l = OutputLimit::PUBSUB;
        assert!(!l.broken(1, &mut since, t0));
        assert!(l.broken(32 << 20, &mut since, t0));
        assert!(!l.broken(8 << 20, &mut since, t0));
        assert_eq!(since, Some(t0));
        assert!(!l.broken(8 << 20, &mut since, t0 + Duration::from_secs(59)));
        assert!(l.broken(8 << 20, &mut since, t0 + Duration::from_mins(1)));
        assert!(!l.broken(1, &mut since, t0 + Duration::from_secs(61)));
        assert_eq!(since, None);
        let mut since = None;
        assert!(!OutputLimit::NORMAL.broken(u64::MAX, &mut since, t0));
    }
}
