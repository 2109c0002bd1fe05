//! One client connection: parse requests, execute them (writes are appended to the backlog
//! before they are acknowledged), answer the server's own commands, and hand the connection
//! to the replica sender on `PSYNC` / `SYNC`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use durable_resp::{self as resp, RequestParser, parse_i64};

use crate::client_cmds::{self, After, ClientEntry};
use crate::commands::{Outcome, execute, is_server_command, is_write_command};
use crate::config_cmd;
use crate::keyspace::DbIndex;
use crate::multi::{self, Step, Transaction};
use crate::pubsub::Subscriptions;
use crate::replica::{self, Handshake};
use crate::server::{GETACK, Server, StoreGuard};

/// Redis's `client-query-buffer-limit`: a client whose unfinished command holds more is closed.
const QUERY_BUFFER_LIMIT: usize = 1024 * 1024 * 1024;

const NOAUTH: &[u8] = b"NOAUTH Authentication required.";
const WRONGPASS: &[u8] = b"WRONGPASS invalid username-password pair or user is disabled.";
const NOT_AN_INTEGER: &[u8] = b"ERR value is not an integer or out of range";
const NOREPLICAS: &[u8] = b"NOREPLICAS Not enough good replicas to write.";

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

/// What the connection does after a batch of commands.
enum Next {
    Continue,
    Close,
    /// `PSYNC <id> <offset>` (or `SYNC` when `None`): become a replica link.
    Replicate(Option<(Vec<u8>, Vec<u8>)>),
}

struct Conn {
    server: Arc<Server>,
    stream: TcpStream,
    db: DbIndex,
    authed: bool,
    handshake: Handshake,
    /// Stream offset right after this client's last write (Redis's `c->woff`; 0 before its
    /// first): what `WAIT` asks the replicas to have acknowledged.
    woff: u64,
    /// This connection's entry in the server's client table.
    client: Arc<ClientEntry>,
    tx: Transaction,
    subs: Subscriptions,
}

/// Serves one accepted connection until it closes.
pub(crate) fn handle(server: &Arc<Server>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer_ip = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    server.connections.fetch_add(1, Ordering::Relaxed);
    server.connected_clients.fetch_add(1, Ordering::Relaxed);
    let authed = server.cfg.requirepass.is_none();
    let registration = server.client_table.register(&stream, server.next_id());
    let mut conn = Conn {
        server: Arc::clone(server),
        stream,
        db: DbIndex::ZERO,
        authed,
        handshake: Handshake::new(peer_ip),
        woff: 0,
        client: Arc::clone(registration.entry()),
        tx: Transaction::default(),
        subs: Subscriptions::new(),
    };
    let mut parser = RequestParser::new();
    let next = conn.serve(&mut parser);
    conn.subs.clear(&server.pubsub);
    server.connected_clients.fetch_sub(1, Ordering::Relaxed);
    if let Next::Replicate(psync) = next {
        conn.client.set_replica();
        replica::serve(server, conn.stream, parser, &conn.handshake, psync.as_ref());
    }
}

impl Conn {
    fn serve(&mut self, parser: &mut RequestParser) -> Next {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return Next::Close,
                Ok(n) => n,
            };
            parser.feed(&buf[..n]);
            if parser.pending_len() > QUERY_BUFFER_LIMIT {
                crate::log::warning("Closing client that reached max query buffer length (1gb)");
                return Next::Close;
            }
            let mut out = Vec::new();
            let next = self.run_batch(parser, &mut out);
            if !out.is_empty() && self.subs.subscriber().write(&self.stream, &out).is_err() {
                return Next::Close;
            }
            match next {
                Next::Continue => {}
                other => return other,
            }
        }
    }

    /// Runs every complete command received. Consecutive data commands share one lock and
    /// one backlog append: their replies are written only after that append returned.
    fn run_batch(&mut self, parser: &mut RequestParser, out: &mut Vec<u8>) -> Next {
        let server = Arc::clone(&self.server);
        let mut held: Option<StoreGuard<'_>> = None;
        let mut pending: Vec<u8> = Vec::new();
        // Ends a locked run: one append for its writes, then (under `always`) waits until the
        // backlog is durable up to everything the run wrote or read.
        let finish = |held: &mut Option<StoreGuard<'_>>, pending: &mut Vec<u8>, woff: &mut u64| {
            if let Some(mut g) = held.take() {
                let wrote = !pending.is_empty();
                let seen = g.append(pending);
                if wrote {
                    *woff = seen;
                }
                pending.clear();
                drop(g);
                server.make_durable(seen);
            }
        };
        loop {
            // AUTH may have just succeeded: the next request is parsed with the new limits.
            parser.set_unauthenticated(!self.authed);
            let argv = match parser.next_command() {
                Ok(Some(argv)) => argv,
                Ok(None) => {
                    finish(&mut held, &mut pending, &mut self.woff);
                    return Next::Continue;
                }
                Err(e) => {
                    finish(&mut held, &mut pending, &mut self.woff);
                    out.extend(e.to_reply());
                    return Next::Close;
                }
            };
            server.commands.fetch_add(1, Ordering::Relaxed);
            self.client.touch(&argv, self.db.get());
            let name = argv.first().map_or(&[][..], Vec::as_slice);
            if !self.authed && !name.eq_ignore_ascii_case(b"auth") {
                if name.eq_ignore_ascii_case(b"quit") {
                    finish(&mut held, &mut pending, &mut self.woff);
                    out.extend(resp::simple_string(b"OK"));
                    return Next::Close;
                }
                out.extend(resp::error(NOAUTH));
                continue;
            }
            if !self.tx.active()
                && let Some(reply) = self.subs.step(&server.pubsub, &self.stream, &argv)
            {
                out.extend(reply);
                continue;
            }
            match self.tx.step(&server, &argv) {
                Step::Pass => {}
                Step::Reply(reply) => {
                    out.extend(reply);
                    continue;
                }
                Step::Exec(queued) => {
                    finish(&mut held, &mut pending, &mut self.woff);
                    if self.exec(&queued, out) {
                        return Next::Close;
                    }
                    continue;
                }
            }
            if is_server_command(name) || name.eq_ignore_ascii_case(b"quit") {
                finish(&mut held, &mut pending, &mut self.woff);
                match self.server_command(&argv, out) {
                    Next::Continue => continue,
                    other => return other,
                }
            }
            if is_write_command(&argv) && !server.enough_good_replicas() {
                out.extend(resp::error(NOREPLICAS));
                continue;
            }
            let g = held.get_or_insert_with(|| server.store());
            let store = g.get();
            match execute(&mut store.ks, &mut self.db, &argv) {
                Outcome::Executed(done) => {
                    out.extend(done.reply);
                    if let Some(p) = done.propagate {
                        pending.extend(store.feed.encode(self.db, &p));
                    }
                }
                Outcome::NotMine => out.extend(resp::error(b"ERR unknown command")),
            }
        }
    }

    /// `EXEC` (see multi.rs); `true` if the connection must close after the reply.
    fn exec(&mut self, queued: &[Vec<Vec<u8>>], out: &mut Vec<u8>) -> bool {
        let server = Arc::clone(&self.server);
        let mut db = self.db;
        let (reply, woff, close) = multi::exec(&server, &mut db, queued, |argv, o| {
            if let Some(reply) = self.subs.step(&server.pubsub, &self.stream, argv) {
                o.extend(reply);
                return false;
            }
            !matches!(self.server_command(argv, o), Next::Continue)
        });
        self.db = db;
        if let Some(w) = woff {
            self.woff = w;
        }
        out.extend(reply);
        close
    }

    fn server_command(&mut self, argv: &[Vec<u8>], out: &mut Vec<u8>) -> Next {
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
                    out.extend(self.auth(argv));
                }
            }
            "info" => {
                let section = argv
                    .get(1)
                    .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
                let text = crate::info::info(&self.server, section.as_deref());
                out.extend(resp::bulk(text.as_bytes()));
            }
            "role" => out.extend(arity(1, true).unwrap_or_else(|| crate::info::role(&self.server))),
            "wait" => match arity(3, true) {
                Some(e) => out.extend(e),
                None => out.extend(self.wait(arg(1), arg(2))),
            },
            "shutdown" => match shutdown_request(argv.get(1..).unwrap_or_default()) {
                Ok(()) => {
                    let _ = self.stream.flush();
                    self.server.shutdown();
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
            "config" => out.extend(config_cmd::config(&self.server.cfg, argv)),
            "client" => {
                let (reply, after) =
                    client_cmds::client(&self.server.client_table, &self.client, argv);
                out.extend(reply);
                if after == After::Close {
                    return Next::Close;
                }
            }
            _ => out.extend(resp::error(b"ERR unknown command")),
        }
        Next::Continue
    }

    fn auth(&mut self, argv: &[Vec<u8>]) -> Vec<u8> {
        let Some(pass) = &self.server.cfg.requirepass else {
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
        if user == b"default" && password_matches(given, pass) {
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
    /// `numreplicas` did (always, for a client that never wrote), else asks the replicas for
    /// an ACK and waits for enough of them or the timeout (0: no timeout).
    fn wait(&self, n: &[u8], timeout: &[u8]) -> Vec<u8> {
        let Some(n) = parse_i64(n) else {
            return resp::error(NOT_AN_INTEGER);
        };
        let Some(timeout) = parse_i64(timeout) else {
            return resp::error(b"ERR timeout is not an integer or out of range");
        };
        if timeout < 0 {
            return resp::error(b"ERR timeout is negative");
        }
        let server = &self.server;
        let target = self.woff;
        let want = usize::try_from(n).unwrap_or(0);
        let count = server.replicas_acked(target);
        if count >= want {
            return resp::integer(i64::try_from(count).unwrap_or(i64::MAX));
        }
        server.append(GETACK);
        let deadline = (timeout > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::try_from(timeout).unwrap_or(0)));
        loop {
            let count = server.replicas_acked(target);
            let now = Instant::now();
            if count >= want || deadline.is_some_and(|d| now >= d) {
                return resp::integer(i64::try_from(count).unwrap_or(i64::MAX));
            }
            let step = deadline.map_or(Duration::from_millis(100), |d| {
                (d - now).min(Duration::from_millis(100))
            });
            server.wait_for_ack(step);
        }
    }
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
