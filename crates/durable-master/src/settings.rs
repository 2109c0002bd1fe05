//! The settings `CONFIG SET` may change while the server runs: the ones Sentinel and
//! operators touch that every reader can take up safely at its next use. Each is read where
//! it is used (a connection's next command, the next handshake with a master, the next
//! housekeeping pass), so a change needs no coordination; the integers are atomics and the
//! two passwords sit behind a lock taken only on a connection's start and on `AUTH`.
//!
//! `appendfsync` (the durability) changes the backlog's policy under the store lock
//! (`config_cmd.rs`) and is mirrored here for the event loop's commit.
//!
//! `maxclients` is read by the event loop at every accept; a larger value first raises the
//! open-files limit (`accept.rs`). The backlog's size is the backlog's own capacity, changed
//! under the store lock (`Server::resize_backlog`).
//!
//! The other settings (port, bind, dir) are fixed at start: the listener is bound once and the
//! data directory opened once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use durable_backlog::Durability;

use crate::config::Config;
use crate::server::lock;

/// The run-time settings, initialised from the command line.
#[derive(Debug)]
pub(crate) struct Settings {
    requirepass: Mutex<Option<Vec<u8>>>,
    /// Mirror of `requirepass.is_some()`, read per command of a connection that has not
    /// authenticated.
    password_required: AtomicBool,
    masterauth: Mutex<Option<Vec<u8>>>,
    replica_priority: AtomicU64,
    min_replicas_to_write: AtomicU64,
    min_replicas_max_lag: AtomicU64,
    timeout: AtomicU64,
    /// `appendfsync`, as [`durability_code`].
    durability: AtomicU8,
    /// `maxclients`, checked at every accept.
    maxclients: AtomicU64,
}

fn durability_code(d: Durability) -> u8 {
    match d {
        Durability::Always => 0,
        Durability::EverySec => 1,
        Durability::Never => 2,
    }
}

impl Settings {
    pub(crate) fn new(cfg: &Config) -> Settings {
        Settings {
            requirepass: Mutex::new(cfg.requirepass.clone()),
            password_required: AtomicBool::new(cfg.requirepass.is_some()),
            masterauth: Mutex::new(cfg.masterauth.clone()),
            replica_priority: AtomicU64::new(100),
            min_replicas_to_write: AtomicU64::new(cfg.min_replicas_to_write),
            min_replicas_max_lag: AtomicU64::new(cfg.min_replicas_max_lag),
            timeout: AtomicU64::new(cfg.timeout),
            durability: AtomicU8::new(durability_code(cfg.durability)),
            maxclients: AtomicU64::new(cfg.maxclients),
        }
    }

    /// The durability in force (`appendfsync`).
    /// Most clients (replicas included) connected at once.
    pub(crate) fn maxclients(&self) -> u64 {
        self.maxclients.load(Ordering::Relaxed)
    }

    pub(crate) fn set_maxclients(&self, v: u64) {
        self.maxclients.store(v, Ordering::Relaxed);
    }

    pub(crate) fn durability(&self) -> Durability {
        match self.durability.load(Ordering::SeqCst) {
            0 => Durability::Always,
            1 => Durability::EverySec,
            _ => Durability::Never,
        }
    }

    /// Records the durability in force; only `config_cmd`'s `appendfsync` setter calls it,
    /// after changing the backlog's own policy.
    pub(crate) fn set_durability(&self, d: Durability) {
        self.durability.store(durability_code(d), Ordering::SeqCst);
    }

    /// The password clients must give with `AUTH`, if any.
    pub(crate) fn requirepass(&self) -> Option<Vec<u8>> {
        lock(&self.requirepass).clone()
    }

    /// Whether a connection that has not authenticated must (a password is set now).
    pub(crate) fn password_required(&self) -> bool {
        self.password_required.load(Ordering::SeqCst)
    }

    /// Sets the password (`None` or empty: none). Connections already authenticated stay so,
    /// as in Redis; the others need `AUTH` while a password is set.
    pub(crate) fn set_requirepass(&self, pass: Option<Vec<u8>>) {
        let pass = pass.filter(|p| !p.is_empty());
        let mut g = lock(&self.requirepass);
        self.password_required
            .store(pass.is_some(), Ordering::SeqCst);
        *g = pass;
    }

    /// The password sent to a master with `AUTH`, if any.
    pub(crate) fn masterauth(&self) -> Option<Vec<u8>> {
        lock(&self.masterauth).clone()
    }

    /// Takes effect at the next connection to the master, as in Redis.
    pub(crate) fn set_masterauth(&self, pass: Option<Vec<u8>>) {
        *lock(&self.masterauth) = pass.filter(|p| !p.is_empty());
    }

    pub(crate) fn replica_priority(&self) -> u64 {
        self.replica_priority.load(Ordering::Relaxed)
    }

    pub(crate) fn set_replica_priority(&self, v: u64) {
        self.replica_priority.store(v, Ordering::Relaxed);
    }

    pub(crate) fn min_replicas_to_write(&self) -> u64 {
        self.min_replicas_to_write.load(Ordering::Relaxed)
    }

    pub(crate) fn set_min_replicas_to_write(&self, v: u64) {
        self.min_replicas_to_write.store(v, Ordering::Relaxed);
    }

    pub(crate) fn min_replicas_max_lag(&self) -> u64 {
        self.min_replicas_max_lag.load(Ordering::Relaxed)
    }

    pub(crate) fn set_min_replicas_max_lag(&self, v: u64) {
        self.min_replicas_max_lag.store(v, Ordering::Relaxed);
    }

    /// Seconds a normal client may stay idle (0: forever).
    pub(crate) fn timeout(&self) -> u64 {
        self.timeout.load(Ordering::Relaxed)
    }

    pub(crate) fn set_timeout(&self, v: u64) {
        self.timeout.store(v, Ordering::Relaxed);
    }
}
