//! `MULTI` / `EXEC` / `DISCARD` as Redis 7.0 (replies and error texts checked against
//! `redis-server` 7.0.15): commands between `MULTI` and `EXEC` are checked (unknown command,
//! wrong number of arguments, `NOREPLICAS`) and queued with `+QUEUED`; a refused one makes
//! `EXEC` discard the transaction with `-EXECABORT`.
//!
//! `EXEC` runs the queued data commands under one hold of the store lock, so no other client's
//! command runs between them, and appends their propagation in one piece: two or more writes
//! are wrapped in `MULTI` ... `EXEC` (the stream's `SELECT` before `MULTI` names the first
//! write's database), a single write goes alone, as Redis 7.0 propagates them. A queued server
//! or pub/sub command (`INFO`, `CLIENT`, `SUBSCRIBE`, ...) runs in its place with the lock released.

use durable_resp as resp;

use crate::commands::{Outcome, execute, is_server_command, is_write_command, rejection};
use crate::keyspace::DbIndex;
use crate::pubsub::is_pubsub_command;
use crate::server::{Server, StoreGuard};
use crate::upstream::READONLY;

/// `-NOREPLICAS` without its dash (Redis's text).
const NOREPLICAS: &[u8] = b"NOREPLICAS Not enough good replicas to write.";

/// A connection's transaction state.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// `Some` between `MULTI` and `EXEC` / `DISCARD`.
    queued: Option<Vec<Vec<Vec<u8>>>>,
    /// A command was refused while queueing.
    dirty: bool,
}

/// What the connection does with a command.
#[derive(Debug)]
pub(crate) enum Step {
    /// Not in a transaction and not a transaction command: run it as usual.
    Pass,
    /// Answered (queued, refused, `MULTI`, `DISCARD`, an aborted `EXEC`).
    Reply(Vec<u8>),
    /// `EXEC`: run these commands with [`exec`].
    Exec(Vec<Vec<Vec<u8>>>),
}

fn is(argv: &[Vec<u8>], name: &[u8]) -> bool {
    argv.first().is_some_and(|n| n.eq_ignore_ascii_case(name))
}

fn arity(name: &str) -> Vec<u8> {
    format!("ERR wrong number of arguments for '{name}' command").into_bytes()
}

impl Transaction {
    /// Routes one command (after authentication).
    pub(crate) fn step(&mut self, server: &Server, argv: &[Vec<u8>]) -> Step {
        if is(argv, b"exec") {
            if argv.len() != 1 {
                // Redis aborts the transaction, in or out of one, when EXEC itself is refused.
                self.queued = None;
                self.dirty = false;
                let mut text = b"EXECABORT Transaction discarded because of: ".to_vec();
                text.extend_from_slice(b"wrong number of arguments for 'exec' command");
                return Step::Reply(resp::error(&text));
            }
            let Some(queued) = self.queued.take() else {
                return Step::Reply(resp::error(b"ERR EXEC without MULTI"));
            };
            if std::mem::take(&mut self.dirty) {
                return Step::Reply(resp::error(
                    b"EXECABORT Transaction discarded because of previous errors.",
                ));
            }
            if queued.iter().any(|a| is_write_command(a)) && !server.enough_good_replicas() {
                let mut text = b"EXECABORT Transaction discarded because of: ".to_vec();
                text.extend_from_slice(NOREPLICAS);
                return Step::Reply(resp::error(&text));
            }
            if server.read_only() && queued.iter().any(|a| is_write_command(a)) {
                let mut text = b"EXECABORT Transaction discarded because of: ".to_vec();
                text.extend_from_slice(READONLY);
                return Step::Reply(resp::error(&text));
            }
            return Step::Exec(queued);
        }
        if is(argv, b"multi") || is(argv, b"discard") {
            let multi = is(argv, b"multi");
            let reply = if argv.len() != 1 {
                self.flag();
                resp::error(&arity(if multi { "multi" } else { "discard" }))
            } else if multi && self.queued.is_some() {
                resp::error(b"ERR MULTI calls can not be nested")
            } else if multi {
                self.queued = Some(Vec::new());
                resp::simple_string(b"OK")
            } else if self.queued.take().is_some() {
                self.dirty = false;
                resp::simple_string(b"OK")
            } else {
                resp::error(b"ERR DISCARD without MULTI")
            };
            return Step::Reply(reply);
        }
        if self.queued.is_none() || is(argv, b"quit") {
            return Step::Pass;
        }
        let name = argv.first().map_or(&[][..], Vec::as_slice);
        let refused = if is(argv, b"psync") || is(argv, b"sync") {
            Some(resp::error(b"ERR Command not allowed inside a transaction"))
        } else if is_server_command(name) || is_pubsub_command(name) {
            None
        } else if let Some(e) = rejection(argv) {
            Some(e)
        } else if is_write_command(argv) && !server.enough_good_replicas() {
            Some(resp::error(NOREPLICAS))
        } else if server.read_only() && is_write_command(argv) {
            Some(resp::error(READONLY))
        } else {
            None
        };
        if let Some(e) = refused {
            self.dirty = true;
            return Step::Reply(e);
        }
        if let Some(q) = self.queued.as_mut() {
            q.push(argv.to_vec());
        }
        Step::Reply(resp::simple_string(b"QUEUED"))
    }

    /// Between `MULTI` and `EXEC` / `DISCARD`.
    pub(crate) fn active(&self) -> bool {
        self.queued.is_some()
    }

    fn flag(&mut self) {
        if self.queued.is_some() {
            self.dirty = true;
        }
    }
}

/// Runs an `EXEC`'s commands in database `*db`; `server_command` runs a server command,
/// writing its reply, and says whether the connection must close after the reply. Returns the
/// `EXEC` reply, the stream offset after its writes (if it wrote) and whether to close.
pub(crate) fn exec(
    server: &Server,
    db: &mut DbIndex,
    queued: &mut [Vec<Vec<u8>>],
    mut server_command: impl FnMut(&[Vec<u8>], &mut Vec<u8>) -> bool,
) -> (Vec<u8>, Option<u64>, bool) {
    let mut replies = Vec::with_capacity(queued.len());
    let mut writes: Vec<(DbIndex, Vec<Vec<u8>>)> = Vec::new();
    let mut held: Option<StoreGuard<'_>> = None;
    let mut woff = None;
    let mut close = false;
    for argv in queued {
        let name = argv.first().map_or(&[][..], Vec::as_slice);
        if is_server_command(name) || is_pubsub_command(name) {
            if let Some(g) = held.take() {
                woff = flush(g, &mut writes).or(woff);
            }
            let mut reply = Vec::new();
            close |= server_command(argv, &mut reply);
            replies.push(reply);
            continue;
        }
        let g = held.get_or_insert_with(|| server.store());
        match execute(&mut g.get().ks, db, argv) {
            Outcome::Executed(done) => {
                if let Some(p) = done.propagated(argv) {
                    writes.push((*db, p.to_vec()));
                }
                replies.push(done.reply);
            }
            Outcome::NotMine => replies.push(resp::error(b"ERR unknown command")),
        }
    }
    if let Some(g) = held.take() {
        woff = flush(g, &mut writes).or(woff);
    }
    (resp::array(&replies), woff, close)
}

/// Appends the propagation of `writes` (wrapped in `MULTI`/`EXEC` when there are two or more)
/// in one append, then releases the lock. The offset after it, if anything was written.
fn flush(mut g: StoreGuard<'_>, writes: &mut Vec<(DbIndex, Vec<Vec<u8>>)>) -> Option<u64> {
    let (first_db, last_db) = match (writes.first(), writes.last()) {
        (Some((f, _)), Some((l, _))) => (*f, *l),
        _ => return None,
    };
    let wrap = writes.len() > 1;
    let store = g.get();
    let mut bytes = Vec::new();
    if wrap {
        bytes.extend(store.feed.encode(first_db, &[b"MULTI".to_vec()]));
    }
    for (db, argv) in writes.drain(..) {
        bytes.extend(store.feed.encode(db, &argv));
    }
    if wrap {
        bytes.extend(store.feed.encode(last_db, &[b"EXEC".to_vec()]));
    }
    Some(g.append(&bytes))
}
