//! `CLIENT` and the table of open connections it reads: `SETNAME`, `GETNAME`, `ID`, `LIST`
//! and `KILL` (the old `<ip:port>` form and the filter form), with Redis 7.0's replies and
//! error texts (checked against `redis-server` 7.0.15). Sentinel names its links with
//! `CLIENT SETNAME`; operators find and drop clients with `LIST` and `KILL`.
//!
//! Every connection thread registers a [`ClientEntry`] for as long as it runs, also after it
//! became a replica link. `KILL` shuts the victim's socket down: its thread's next read or
//! write fails and it closes, as when the peer disconnects.

use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use durable_resp::{self as resp, parse_i64};

use crate::server::lock;

/// One open connection, as `CLIENT LIST` shows it and `CLIENT KILL` finds it.
#[derive(Debug)]
pub(crate) struct ClientEntry {
    id: u64,
    /// Peer address, `ip:port`.
    addr: String,
    /// Local address, `ip:port`.
    laddr: String,
    fd: i32,
    created: Instant,
    /// Set by `CLIENT SETNAME`; empty means no name.
    name: Mutex<Vec<u8>>,
    /// The database of the last command.
    db: AtomicU32,
    /// Milliseconds after `created` of the last command.
    last_cmd_ms: AtomicU64,
    /// The last command's name as Redis prints it (`get`, `client|list`).
    last_cmd: Mutex<String>,
    /// Became a replica link (`PSYNC` / `SYNC`).
    replica: AtomicBool,
    /// Channels and patterns it is subscribed to (a client with any is of type `pubsub`).
    sub: AtomicU32,
    psub: AtomicU32,
    /// Killed by `CLIENT KILL`: no longer listed or counted, though its thread may not have
    /// seen the closed socket yet.
    killed: AtomicBool,
    /// For a connection served by a thread of its own (a replica link), a second handle on
    /// its socket, to shut it down from another thread. Event-loop connections have none:
    /// the loop closes them when it sees [`ClientEntry::killed`].
    stream: Mutex<Option<TcpStream>>,
}

impl ClientEntry {
    /// Records a command the connection is about to run, in database `db`, at `now`. Runs for
    /// every command: no allocation unless the command's name changed, no clock read.
    pub(crate) fn touch(&self, argv: &[Vec<u8>], db: u32, now: Instant) {
        self.db.store(db, Ordering::Relaxed);
        let ms = u64::try_from(now.saturating_duration_since(self.created).as_millis())
            .unwrap_or(u64::MAX);
        self.last_cmd_ms.store(ms, Ordering::Relaxed);
        let name = argv.first().map_or(&[][..], Vec::as_slice);
        let sub = argv.get(1).filter(|_| name.eq_ignore_ascii_case(b"client"));
        let mut last = lock(&self.last_cmd);
        let same = match sub {
            None => last.as_bytes().eq_ignore_ascii_case(name),
            Some(sub) => last.split_once('|').is_some_and(|(n, s)| {
                n.as_bytes().eq_ignore_ascii_case(name) && s.as_bytes().eq_ignore_ascii_case(sub)
            }),
        };
        if same {
            return;
        }
        let mut text = String::from_utf8_lossy(name).to_ascii_lowercase();
        if let Some(sub) = sub {
            text.push('|');
            text.push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
        }
        *last = text;
    }

    /// Marks the connection as a replica link served by a thread of its own; `stream` is a
    /// second handle on its socket for `CLIENT KILL`.
    pub(crate) fn set_replica(&self, stream: Option<TcpStream>) {
        *lock(&self.stream) = stream;
        self.replica.store(true, Ordering::Relaxed);
    }

    /// Records the connection's subscriptions after a pub/sub command.
    pub(crate) fn set_subscriptions(&self, channels: usize, patterns: usize) {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        self.sub.store(n(channels), Ordering::Relaxed);
        self.psub.store(n(patterns), Ordering::Relaxed);
    }

    /// Forgets the name `CLIENT SETNAME` gave (`RESET`).
    pub(crate) fn clear_name(&self) {
        lock(&self.name).clear();
    }

    /// Whether `CLIENT KILL` chose this connection.
    pub(crate) fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// The connection's ID.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn kind(&self) -> ClientKind {
        if self.replica.load(Ordering::Relaxed) {
            ClientKind::Replica
        } else if self.sub.load(Ordering::Relaxed) + self.psub.load(Ordering::Relaxed) > 0 {
            ClientKind::Pubsub
        } else {
            ClientKind::Normal
        }
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(s) = lock(&self.stream).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// The `CLIENT LIST` line (Redis's field names and order; the memory and buffer fields
    /// Redis adds are left out, as this server does not account them per client).
    fn line(&self) -> String {
        let now = self.created.elapsed();
        let idle_ms = u64::try_from(now.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_sub(self.last_cmd_ms.load(Ordering::Relaxed));
        let flags = match self.kind() {
            ClientKind::Replica => "S",
            ClientKind::Pubsub => "P",
            _ => "N",
        };
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db={} sub={} \
             psub={} ssub=0 multi=-1 cmd={} user=default redir=-1 resp=2\n",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            String::from_utf8_lossy(&lock(&self.name)),
            now.as_secs(),
            idle_ms / 1000,
            self.db.load(Ordering::Relaxed),
            self.sub.load(Ordering::Relaxed),
            self.psub.load(Ordering::Relaxed),
            lock(&self.last_cmd),
        )
    }
}

/// Redis's client types, as `CLIENT LIST TYPE` and `CLIENT KILL TYPE` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Normal,
    Replica,
    /// This server never connects to a master: no client is of this type.
    Master,
    /// Subscribed to a channel or a pattern.
    Pubsub,
}

impl ClientKind {
    /// Redis's `getClientTypeByName` (any case).
    fn parse(name: &[u8]) -> Option<ClientKind> {
        match name.to_ascii_lowercase().as_slice() {
            b"normal" => Some(ClientKind::Normal),
            b"slave" | b"replica" => Some(ClientKind::Replica),
            b"master" => Some(ClientKind::Master),
            b"pubsub" => Some(ClientKind::Pubsub),
            _ => None,
        }
    }
}

/// Every open connection.
#[derive(Debug, Default)]
pub(crate) struct ClientTable {
    entries: Mutex<Vec<Arc<ClientEntry>>>,
    /// Counts `CLIENT KILL` victims, so the event loop knows when to look for killed
    /// connections of its own.
    kills: AtomicU64,
}

/// Keeps a connection in the [`ClientTable`]; removes it when dropped. It moves with the
/// connection when the event loop hands it to a replica sender thread.
#[derive(Debug)]
pub(crate) struct Registration {
    table: Arc<ClientTable>,
    entry: Arc<ClientEntry>,
}

impl Registration {
    /// The registered entry.
    pub(crate) fn entry(&self) -> &Arc<ClientEntry> {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.table.entries).retain(|e| !Arc::ptr_eq(e, &self.entry));
    }
}

/// Where a connection is, as `CLIENT LIST` prints it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Peer address, `ip:port`.
    pub(crate) addr: String,
    /// Local address, `ip:port`.
    pub(crate) laddr: String,
    pub(crate) fd: i32,
}

impl Endpoint {
    /// The addresses and descriptor of `socket`.
    pub(crate) fn of(
        peer: std::io::Result<std::net::SocketAddr>,
        local: std::io::Result<std::net::SocketAddr>,
        socket: &impl AsRawFd,
    ) -> Endpoint {
        let addr =
            |a: std::io::Result<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        Endpoint {
            addr: addr(peer),
            laddr: addr(local),
            fd: socket.as_raw_fd(),
        }
    }
}

impl ClientTable {
    /// Adds a connection with ID `id`. An event-loop connection passes no `stream`: `KILL`
    /// only marks it and the loop closes it (see [`ClientEntry::killed`]); a connection
    /// served by a thread of its own passes a second handle on its socket, which `KILL` shuts
    /// down.
    pub(crate) fn register(
        self: &Arc<Self>,
        at: Endpoint,
        stream: Option<TcpStream>,
        id: u64,
    ) -> Registration {
        let entry = Arc::new(ClientEntry {
            id,
            addr: at.addr,
            laddr: at.laddr,
            fd: at.fd,
            created: Instant::now(),
            name: Mutex::new(Vec::new()),
            db: AtomicU32::new(0),
            last_cmd_ms: AtomicU64::new(0),
            last_cmd: Mutex::new("NULL".to_owned()),
            replica: AtomicBool::new(false),
            sub: AtomicU32::new(0),
            psub: AtomicU32::new(0),
            killed: AtomicBool::new(false),
            stream: Mutex::new(stream),
        });
        lock(&self.entries).push(Arc::clone(&entry));
        Registration {
            table: Arc::clone(self),
            entry,
        }
    }

    fn kill(&self, victim: &ClientEntry) {
        victim.kill();
        self.kills.fetch_add(1, Ordering::SeqCst);
    }

    /// How many connections `CLIENT KILL` chose so far.
    pub(crate) fn kills(&self) -> u64 {
        self.kills.load(Ordering::SeqCst)
    }

    fn snapshot(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.entries)
            .iter()
            .filter(|e| !e.killed.load(Ordering::SeqCst))
            .cloned()
            .collect()
    }
}

/// What `CLIENT` asks of the connection after its reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    /// The client killed itself: close once the reply is written.
    Close,
}

const SYNTAX: &[u8] = b"ERR syntax error";

fn arity(sub: &str) -> Vec<u8> {
    resp::error(format!("ERR wrong number of arguments for 'client|{sub}' command").as_bytes())
}

fn unknown_type(name: &[u8]) -> Vec<u8> {
    let mut text = b"ERR Unknown client type '".to_vec();
    text.extend_from_slice(name);
    text.push(b'\'');
    resp::error(&text)
}

/// `CLIENT <subcommand> ...` from connection `me`.
pub(crate) fn client(table: &ClientTable, me: &ClientEntry, argv: &[Vec<u8>]) -> (Vec<u8>, After) {
    let done = |reply| (reply, After::Continue);
    let Some(sub) = argv.get(1) else {
        return done(resp::error(
            b"ERR wrong number of arguments for 'client' command",
        ));
    };
    let n = argv.len();
    match sub.to_ascii_lowercase().as_slice() {
        b"id" if n == 2 => done(resp::integer(i64::try_from(me.id).unwrap_or(i64::MAX))),
        b"id" => done(arity("id")),
        b"getname" if n == 2 => {
            let name = lock(&me.name);
            done(if name.is_empty() {
                resp::null_bulk()
            } else {
                resp::bulk(&name)
            })
        }
        b"getname" => done(arity("getname")),
        b"setname" if n == 3 => done(setname(me, argv.get(2).map_or(&[][..], Vec::as_slice))),
        b"setname" => done(arity("setname")),
        b"list" => done(list(table, argv)),
        b"kill" if n == 2 => done(arity("kill")),
        b"kill" => kill(table, me, argv),
        _ => {
            let mut text = b"ERR unknown subcommand '".to_vec();
            let end = sub.iter().position(|&b| b == 0).unwrap_or(sub.len());
            text.extend_from_slice(sub.get(..end.min(128)).unwrap_or_default());
            text.extend_from_slice(b"'. Try CLIENT HELP.");
            done(resp::error(&text))
        }
    }
}

/// `CLIENT SETNAME`: printable ASCII without spaces; an empty name removes the name.
fn setname(me: &ClientEntry, name: &[u8]) -> Vec<u8> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return resp::error(
            b"ERR Client names cannot contain spaces, newlines or special characters.",
        );
    }
    *lock(&me.name) = name.to_vec();
    resp::simple_string(b"OK")
}

/// `CLIENT LIST [TYPE <type>] | [ID <id> ...]`.
fn list(table: &ClientTable, argv: &[Vec<u8>]) -> Vec<u8> {
    let opt = argv.get(2).map(|o| o.to_ascii_lowercase());
    let keep: Box<dyn Fn(&ClientEntry) -> bool> = match (opt.as_deref(), argv.len()) {
        (None, _) => Box::new(|_| true),
        (Some(b"type"), 4) => {
            let name = argv.get(3).map_or(&[][..], Vec::as_slice);
            let Some(kind) = ClientKind::parse(name) else {
                return unknown_type(name);
            };
            Box::new(move |e| e.kind() == kind)
        }
        (Some(b"id"), n) if n >= 4 => {
            let mut ids = Vec::new();
            for a in argv.get(3..).unwrap_or_default() {
                match parse_i64(a) {
                    Some(id) => ids.push(id),
                    None => return resp::error(b"ERR Invalid client ID"),
                }
            }
            Box::new(move |e| ids.iter().any(|&id| u64::try_from(id) == Ok(e.id)))
        }
        _ => return resp::error(SYNTAX),
    };
    let text: String = table
        .snapshot()
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.line())
        .collect();
    resp::bulk(text.as_bytes())
}

/// `CLIENT KILL <ip:port>` or `CLIENT KILL <filter> <value> ...` (`ID`, `TYPE`, `ADDR`,
/// `LADDR`, `USER`, `SKIPME`), as Redis 7.0's `clientKillCommand`.
fn kill(table: &ClientTable, me: &ClientEntry, argv: &[Vec<u8>]) -> (Vec<u8>, After) {
    let n = argv.len();
    if n == 3 {
        let addr = argv.get(2).map_or(&[][..], Vec::as_slice);
        let Some(victim) = table
            .snapshot()
            .into_iter()
            .find(|e| e.addr.as_bytes() == addr)
        else {
            return (resp::error(b"ERR No such client"), After::Continue);
        };
        let reply = resp::simple_string(b"OK");
        if victim.id == me.id {
            return (reply, After::Close);
        }
        table.kill(&victim);
        return (reply, After::Continue);
    }
    if !n.is_multiple_of(2) {
        return (resp::error(SYNTAX), After::Continue);
    }
    let (mut id, mut kind, mut addr, mut laddr) = (None, None, None, None);
    let mut skipme = true;
    for pair in argv.get(2..).unwrap_or_default().chunks_exact(2) {
        let [opt, value] = pair else { continue };
        let fail = |reply: Vec<u8>| (reply, After::Continue);
        match opt.to_ascii_lowercase().as_slice() {
            b"id" => match parse_i64(value).and_then(|v| u64::try_from(v).ok()) {
                Some(v) if v > 0 => id = Some(v),
                _ => return fail(resp::error(b"ERR client-id should be greater than 0")),
            },
            b"type" => match ClientKind::parse(value) {
                Some(k) => kind = Some(k),
                None => return fail(unknown_type(value)),
            },
            b"addr" => addr = Some(value.clone()),
            b"laddr" => laddr = Some(value.clone()),
            // The only user is `default`, and every client is logged in as it.
            b"user" if value.as_slice() == b"default" => {}
            b"user" => {
                let mut text = b"ERR No such user '".to_vec();
                text.extend_from_slice(value);
                text.push(b'\'');
                return fail(resp::error(&text));
            }
            b"skipme" if value.eq_ignore_ascii_case(b"yes") => skipme = true,
            b"skipme" if value.eq_ignore_ascii_case(b"no") => skipme = false,
            _ => return fail(resp::error(SYNTAX)),
        }
    }
    let mut killed = 0i64;
    let mut close_me = false;
    for e in table.snapshot() {
        let matches = id.is_none_or(|id| e.id == id)
            && kind.is_none_or(|k| e.kind() == k)
            && addr
                .as_ref()
                .is_none_or(|a| e.addr.as_bytes() == a.as_slice())
            && laddr
                .as_ref()
                .is_none_or(|a| e.laddr.as_bytes() == a.as_slice());
        if !matches || (skipme && e.id == me.id) {
            continue;
        }
        killed += 1;
        if e.id == me.id {
            close_me = true;
        } else {
            table.kill(&e);
        }
    }
    let after = if close_me {
        After::Close
    } else {
        After::Continue
    };
    (resp::integer(killed), after)
}
