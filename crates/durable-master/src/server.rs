//! State shared by the event loop and the threads beside it: the store behind one lock, the backlog reader
//! replica senders tail (library cursors), the replica table and the counters.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use durable_backlog::{Durability, Reader, RunId};

use crate::client_cmds::ClientTable;
use crate::config::Config;
use crate::log;
use crate::pubsub::PubSub;
use crate::settings::Settings;
use crate::store::Store;
use crate::upstream::Upstream;

/// What the master sends its replicas every [`PING_PERIOD`] (Redis 7.0's lowercase `ping`,
/// written into the stream and the backlog like any command).
pub(crate) const PING: &[u8] = b"*1\r\n$4\r\nping\r\n";
/// `REPLCONF GETACK *`, sent to replicas for `WAIT`.
pub(crate) const GETACK: &[u8] = b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n";
/// Redis's `repl-ping-replica-period`.
pub(crate) const PING_PERIOD: Duration = Duration::from_secs(10);

/// Locks a mutex, ignoring poisoning: a panicking thread never leaves the protected state
/// half-changed (the store exits the process on storage errors instead of unwinding).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A replica attached to this master.
#[derive(Debug)]
pub(crate) struct ReplicaInfo {
    pub(crate) id: u64,
    pub(crate) ip: String,
    pub(crate) port: u16,
    /// Offset of the last `REPLCONF ACK`.
    pub(crate) ack: AtomicU64,
    /// Whether any ACK arrived (the `$EOF:` form waits for the first one).
    pub(crate) got_ack: AtomicBool,
    /// Milliseconds since server start of the last ACK.
    pub(crate) last_ack_ms: AtomicU64,
    /// Streaming (as opposed to still receiving its snapshot).
    pub(crate) online: AtomicBool,
    /// The connection is gone or being closed.
    pub(crate) closed: AtomicBool,
    pub(crate) stream: TcpStream,
}

impl ReplicaInfo {
    /// Closes the connection: the sender's next write fails and its wait ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Everything the connection threads share.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) cfg: Config,
    /// The settings `CONFIG SET` changes at run time (read these, not `cfg`'s copies).
    pub(crate) live: Settings,
    /// The one writer lock. `None` only while the server shuts down (it then never unlocks).
    store: Mutex<Option<Store>>,
    /// A reader of the backlog for replica senders and the event loop (see
    /// [`Server::reader`]); replaced, under the store lock, when the backlog is resized.
    reader: Mutex<Reader>,
    /// Wakes the event loop (set once it runs).
    waker: OnceLock<mio::Waker>,
    /// Clients blocked in `WAIT`: while any is, an ACK wakes the event loop.
    pub(crate) waiting: AtomicUsize,
    /// Held by the connection committing for a group (`--durability always`).
    flush_lock: Mutex<()>,
    pub(crate) replicas: Mutex<Vec<Arc<ReplicaInfo>>>,
    pub(crate) sync_full: AtomicU64,
    pub(crate) sync_partial_ok: AtomicU64,
    pub(crate) sync_partial_err: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connected_clients: AtomicU64,
    /// Open connections, replicas included: what `maxclients` bounds.
    pub(crate) clients: AtomicU64,
    /// Connections refused because of `maxclients`.
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) commands: AtomicU64,
    /// Every open connection, for `CLIENT`.
    pub(crate) client_table: Arc<ClientTable>,
    /// Channel and pattern subscriptions.
    pub(crate) pubsub: PubSub,
    next_id: AtomicU64,
    pub(crate) started: Instant,
    /// The replica role: the master followed, if any, and the link's state.
    pub(crate) upstream: Upstream,
    /// A random ID of this process (Redis's `run_id`): a new one at every start, so a monitor
    /// such as Sentinel sees a restart. Unrelated to the replication ID, which survives restarts.
    pub(crate) run_id: RunId,
}

impl Server {
    pub(crate) fn new(cfg: Config, store: Store) -> Server {
        let reader = store.backlog.reader();
        let upstream = Upstream::new(&store);
        Server {
            live: Settings::new(&cfg),
            cfg,
            store: Mutex::new(Some(store)),
            reader: Mutex::new(reader),
            waker: OnceLock::new(),
            waiting: AtomicUsize::new(0),
            flush_lock: Mutex::new(()),
            replicas: Mutex::new(Vec::new()),
            sync_full: AtomicU64::new(0),
            sync_partial_ok: AtomicU64::new(0),
            sync_partial_err: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connected_clients: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            client_table: Arc::default(),
            pubsub: PubSub::default(),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            upstream,
            run_id: RunId::random(),
        }
    }

    /// A new connection or replica ID.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Locks the store.
    pub(crate) fn store(&self) -> StoreGuard<'_> {
        StoreGuard {
            guard: lock(&self.store),
        }
    }

    /// A reader of the backlog. After a resize, one taken before reports
    /// `TailError::Moved`; a sender then takes a new one under the store lock, which the
    /// resize holds until this one is replaced ([`Server::resize_backlog`]).
    pub(crate) fn reader(&self) -> Reader {
        lock(&self.reader).clone()
    }

    /// `CONFIG SET repl-backlog-size`: resizes the backlog under the store lock and
    /// replaces the shared reader before the lock is released.
    ///
    /// # Errors
    /// As [`Store::resize_backlog`].
    pub(crate) fn resize_backlog(&self, capacity: u64) -> Result<(), String> {
        let mut g = self.store();
        let store = g.get();
        let result = store.resize_backlog(capacity);
        *lock(&self.reader) = store.backlog.reader();
        result
    }

    /// Under `--durability always`, returns once the backlog is committed up to `offset`.
    ///
    /// Group commit: appends run without a sync (the backlog is opened with
    /// `Durability::Never`); the first waiter to take `flush_lock` commits everything appended
    /// so far with one sync, which covers every connection that appended meanwhile.
    pub(crate) fn make_durable(&self, offset: u64) {
        if self.live.durability() != Durability::Always {
            return;
        }
        while self.reader().durable_offset() < offset {
            let _leader = lock(&self.flush_lock);
            if self.reader().durable_offset() >= offset {
                return;
            }
            self.store().get().flush();
        }
    }

    /// Records a replica's `REPLCONF ACK`; wakes the event loop if a client waits in `WAIT`.
    pub(crate) fn record_ack(&self, r: &ReplicaInfo, offset: u64) {
        r.ack.fetch_max(offset, Ordering::SeqCst);
        r.got_ack.store(true, Ordering::SeqCst);
        r.last_ack_ms.store(self.millis(), Ordering::Relaxed);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake();
        }
    }

    /// Installs the event loop's waker.
    pub(crate) fn set_waker(&self, waker: mio::Waker) {
        let _ = self.waker.set(waker);
    }

    /// Wakes the event loop (no-op before it runs).
    pub(crate) fn wake(&self) {
        if let Some(w) = self.waker.get() {
            let _ = w.wake();
        }
    }

    /// Milliseconds since start.
    pub(crate) fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Replicas that are streaming and acknowledged at least `offset`.
    pub(crate) fn replicas_acked(&self, offset: u64) -> usize {
        lock(&self.replicas)
            .iter()
            .filter(|r| r.online.load(Ordering::SeqCst) && r.ack.load(Ordering::SeqCst) >= offset)
            .count()
    }

    /// Online replicas whose last ACK is at most `min-replicas-max-lag` seconds old (Redis's
    /// `repl_good_slaves_count`).
    pub(crate) fn good_replicas(&self) -> u64 {
        let now = self.millis();
        let max_lag = self.live.min_replicas_max_lag();
        let good = lock(&self.replicas)
            .iter()
            .filter(|r| {
                r.online.load(Ordering::SeqCst)
                    && now.saturating_sub(r.last_ack_ms.load(Ordering::Relaxed)) / 1000 <= max_lag
            })
            .count();
        u64::try_from(good).unwrap_or(u64::MAX)
    }

    /// Whether `min-replicas-to-write` lets writes through (Redis's
    /// `checkGoodReplicasStatus`): always when either setting is 0, and on a replica (which
    /// refuses writes with `-READONLY` instead).
    pub(crate) fn enough_good_replicas(&self) -> bool {
        let want = self.live.min_replicas_to_write();
        want == 0
            || self.live.min_replicas_max_lag() == 0
            || self.upstream.is_replica()
            || self.good_replicas() >= want
    }

    /// Whether a write command must be refused with `-READONLY` (this server is a replica).
    pub(crate) fn read_only(&self) -> bool {
        self.upstream.is_replica()
    }

    /// Flushes, snapshots and closes the backlog, then exits the process.
    pub(crate) fn shutdown(&self) -> ! {
        log::notice("User requested shutdown...");
        let mut g = lock(&self.store);
        if let Some(store) = g.take() {
            log::notice("Saving the final snapshot and closing the backlog.");
            store.shutdown();
        }
        log::notice("durable-master is now ready to exit, bye bye...");
        std::process::exit(0)
    }

    /// Sends `ping` into the stream every [`PING_PERIOD`] while replicas are attached. A
    /// replica does not: its stream is its master's, byte for byte.
    pub(crate) fn run_pinger(self: Arc<Self>) {
        loop {
            std::thread::sleep(PING_PERIOD);
            if !lock(&self.replicas).is_empty() {
                let mut g = self.store();
                if !self.upstream.is_replica() {
                    g.append(PING);
                }
            }
        }
    }
}

/// The locked store.
pub(crate) struct StoreGuard<'a> {
    guard: MutexGuard<'a, Option<Store>>,
}

impl std::fmt::Debug for StoreGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreGuard")
    }
}

impl StoreGuard<'_> {
    /// The store. Only a shutdown in progress (which exits the process while holding the
    /// lock) leaves it empty, so this never returns in that case.
    pub(crate) fn get(&mut self) -> &mut Store {
        match self.guard.as_mut() {
            Some(s) => s,
            None => loop {
                std::thread::park();
            },
        }
    }

    /// Appends stream bytes.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> u64 {
        self.get().append(bytes)
    }
}
