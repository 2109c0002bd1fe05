//! The master's data and its durability: the keyspace, the durable backlog as its write-ahead
//! log, snapshots, and recovery at start.
//!
//! Invariant: the dataset at replication offset `o` is the latest snapshot (taken at offset
//! `S`) plus the replay of backlog bytes `S+1 ..= o`. Two rules keep it true across crashes:
//! - a write is executed, its propagated form appended to the backlog, and only then
//!   acknowledged;
//! - the ring never overwrites a byte after the last finished snapshot's offset: once
//!   `offset - S` passes half the capacity a background snapshot starts (after the backlog is
//!   flushed, so the backlog on disk reaches the snapshot's offset), and an append that would
//!   overwrite uncovered bytes first waits for it (or writes one itself). A smaller capacity
//!   set at run time ([`Store::resize_backlog`]) or at start likewise finishes a snapshot
//!   first when the smaller ring could not hold every byte after the last one.
//!
//! The event loop never writes a snapshot itself: a client write that lacks ring room waits
//! (the connection parked, everyone else served) for a background snapshot, and a write whose
//! stream form is larger than the ring is a [`BigWrite`]: executed on an O(1) copy of the
//! keyspace, which a background snapshot at the offset after it writes out; only then does
//! the copy become the keyspace and its stream bytes go into the ring (the snapshot covers
//! every byte they overwrite). Until then every other client write waits and a failure
//! refuses it (`-MISCONF`) having changed nothing.

use std::fs::{self, File};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_backlog::inspect::{BacklogFile, Holder};
use durable_backlog::{Backlog, Durability, Options, RecoveryKind, RunId};
use durable_resp::{StreamDecoder, StreamItem};

use crate::commands::{ArgList, Propagate, ReplicationFeed, apply, command_frames};
use crate::config::Config;
use crate::keyspace::{DbIndex, Keyspace};
use crate::log;
use crate::rdb::{RdbOptions, ReplInfo, read_rdb, write_rdb};

/// File name of the snapshot in the data directory.
pub(crate) const SNAPSHOT_FILE: &str = "dump.rdb";
/// How long after a failed snapshot the next one is tried (Redis's
/// `CONFIG_BGSAVE_RETRY_DELAY`).
const SNAPSHOT_RETRY: Duration = Duration::from_secs(5);

/// File name of the backlog in the data directory.
pub(crate) const BACKLOG_FILE: &str = "backlog";

/// A write whose stream form is larger than the ring's room, executed on a copy of the
/// keyspace and waiting for the background snapshot at [`BigWrite::at`] that covers it.
#[derive(Debug)]
struct BigWrite {
    /// The keyspace with the write done.
    ks: Keyspace,
    /// The feed the stream had before it (its stream form starts with a `SELECT` if needed).
    /// Kept apart from the store's: a full sync meanwhile forces a `SELECT` on that one,
    /// which would make the write's bytes longer than the offset its snapshot records.
    feed: ReplicationFeed,
    /// The command, its database and what it propagates (its value moved into `ks`).
    db: DbIndex,
    argv: Vec<Vec<u8>>,
    propagate: Propagate,
    /// The stream offset right after it: the snapshot's offset.
    at: u64,
    /// Stream bytes that are not writes (`REPLCONF GETACK`), queued behind it.
    after: Vec<u8>,
}

/// What a write that lacks ring room does (see [`Store::room_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// Run it now.
    Now,
    /// Refuse it with `-MISCONF`: snapshots fail.
    Refuse,
    /// Park it until the running snapshot finishes, then try again.
    Wait,
    /// Its stream form may be larger than the whole ring: run it as a
    /// [`Store::begin_big_write`].
    Big,
}

/// Whether an append wakes the replica senders asleep on the backlog at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    Now,
    /// The caller wakes them with [`Store::wake_senders`].
    Later,
}

/// Everything the writer owns, behind the server's one lock.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) ks: Keyspace,
    pub(crate) backlog: Backlog,
    pub(crate) feed: ReplicationFeed,
    /// Replication offset of the latest snapshot on disk.
    pub(crate) snapshot_offset: u64,
    /// Unix time of the latest snapshot.
    pub(crate) last_save: u64,
    /// Snapshots written since start.
    pub(crate) snapshots: u64,
    /// Appends that had to wait for (or write) a snapshot before they could go into the ring.
    pub(crate) snapshot_waits: u64,
    /// The background snapshot being written, and its offset.
    running: Option<(u64, std::thread::JoinHandle<std::io::Result<()>>)>,
    /// A write larger than the ring, waiting for the snapshot that covers it.
    big: Option<BigWrite>,
    /// The offset of the running snapshot whose wait was logged (once a snapshot).
    wait_logged: Option<u64>,
    /// When the last snapshot failed, if it did (a full disk, an I/O error): until one
    /// succeeds, write commands are refused with `-MISCONF` (Redis's
    /// `stop-writes-on-bgsave-error`) and a snapshot is retried every [`SNAPSHOT_RETRY`].
    snapshot_failed: Option<Instant>,
    dir: PathBuf,
    /// Test hook: how long a background snapshot waits before it is written.
    snapshot_delay: Option<Duration>,
    /// Something other than the snapshot commits the backlog: the library's once-a-second
    /// commit (`everysec`) or the event loop's group commit (`always`). Under `never` nothing
    /// does, and a snapshot start commits itself.
    commits_elsewhere: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Logs a fatal storage error and exits: nothing unacknowledged is lost, and recovery at the
/// next start rebuilds a consistent state from disk.
pub(crate) fn fatal(what: &str, err: impl std::fmt::Display) -> ! {
    log::warning(format_args!("FATAL: {what}: {err}; exiting"));
    std::process::exit(1)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens the data directory: loads the snapshot, replays the backlog after it and opens
    /// the backlog.
    ///
    /// Whether the start is refused is decided before anything in the directory changes:
    /// first from a read-only look at the backlog (refused at once if another process holds
    /// it; its committed checksums verified after a process crash; the bytes after the
    /// snapshot replayed), then by the open, which takes the lock. Only then are leftover
    /// temporary files removed and, with `--repair`, the backlog cut.
    pub(crate) fn recover(cfg: &Config) -> Result<Store, String> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let backlog_path = dir.join(BACKLOG_FILE);
        let found = match BacklogFile::open(&backlog_path) {
            Ok(f) if matches!(f.inspection().holder, Holder::Process { .. }) => {
                return Err(in_use(&dir));
            }
            Ok(f) => Some(f),
            // Missing (a new directory), or unreadable: the open below creates it or says why.
            Err(_) => None,
        };
        let (mut ks, snap_offset, mut db, snap_id) =
            load_snapshot_or_refuse(cfg, &dir.join(SNAPSHOT_FILE), found.as_ref())?;
        if let Some(t) = cfg.debug_truncate_backlog.filter(|&t| t < snap_offset) {
            return Err(format!(
                "--debug-truncate-backlog {t} is below the snapshot's offset {snap_offset}"
            ));
        }
        let mut plan = Plan::default();
        if let Some(file) = &found {
            plan = replay_found(file, cfg, &mut ks, &mut db, snap_offset)?;
        }

        let mut backlog = open_backlog(cfg, &backlog_path)?;
        let rep = backlog.recovery().clone();
        // The replay read the range the dry run promised; the open must have recovered it.
        if found
            .as_ref()
            .is_some_and(|f| f.inspection().recovery.last != rep.last)
        {
            return Err("the backlog changed while it was being read: start again".to_owned());
        }
        remove_stale_temp_files(&dir);
        if let Some(t) = cfg.debug_truncate_backlog.filter(|&t| t < backlog.offset()) {
            backlog
                .truncate_to(t)
                .map_err(|e| format!("truncating the backlog: {e}"))?;
            log::warning(format_args!(
                "Backlog truncated to offset {t} (--debug-truncate-backlog); new replication ID {}",
                backlog.run_id()
            ));
        }
        if let Some(start) = plan.cut {
            backlog
                .truncate_to(start - 1)
                .map_err(|e| format!("truncating the backlog: {e}"))?;
            log::warning(format_args!(
                "Backlog cut at offset {start} (--repair); new replication ID {}",
                backlog.run_id()
            ));
        }
        let (first, end) = (backlog.first_offset(), backlog.offset());
        if plan.replayed.is_none() && (snap_offset > end || first > snap_offset + 1) {
            // The snapshot is its replication ID's history at its offset, so that ID stays
            // valid up to the offset + 1 (as Redis loads `repl-id` as `replid2` at start):
            // a replica at exactly that offset continues, any other gets a full resync.
            let past = snap_id.filter(|_| snap_offset > 0);
            log::warning(format_args!(
                "The backlog (offsets {first}..={end}) does not cover the bytes after the \
                 snapshot's offset {snap_offset}: starting from the snapshot alone; {}",
                past.map_or_else(
                    || "replicas will get a full resync".to_owned(),
                    |id| format!(
                        "its replication ID {id} stays valid for a partial resynchronization \
                         at offset {}",
                        snap_offset + 1
                    )
                )
            ));
            backlog
                .reset(past.unwrap_or_else(RunId::random), snap_offset)
                .map_err(|e| format!("resetting the backlog: {e}"))?;
            if past.is_some() {
                backlog
                    .shift_run_id()
                    .map_err(|e| format!("starting a new replication ID: {e}"))?;
            }
        }
        let mut store = Store {
            ks,
            backlog,
            // A new feed writes a SELECT before its first command: the stream's database is
            // not assumed across a restart.
            feed: ReplicationFeed::starting_in(db),
            snapshot_offset: snap_offset,
            last_save: unix_now(),
            snapshots: 0,
            snapshot_waits: 0,
            running: None,
            big: None,
            wait_logged: None,
            snapshot_delay: cfg.debug_snapshot_delay,
            snapshot_failed: None,
            dir,
            commits_elsewhere: cfg.durability != Durability::Never,
        };
        if plan.replayed.is_some() && first > snap_offset + 1 {
            // The backlog no longer holds every byte replayed (the open resized it smaller):
            // a snapshot now restores the invariant.
            let at = store.backlog.offset();
            store
                .save_now(at)
                .map_err(|e| format!("writing the snapshot after a smaller resize: {e}"))?;
        }
        log::notice(format_args!(
            "DB loaded: {} keys at replication offset {}",
            store.ks.len(),
            store.backlog.offset()
        ));
        Ok(store)
    }

    /// Appends propagated bytes, taking a snapshot when the ring would otherwise overwrite bytes
    /// no snapshot covers. Exits the process on a storage error (see [`fatal`]).
    ///
    /// Snapshots normally run in the background (a copy of the keyspace is written by another
    /// thread, as Redis forks for BGSAVE): one starts when `offset - snapshot_offset` passes half
    /// the capacity. An append only waits when it would overwrite a byte after the last
    /// *finished* snapshot: it waits for the running one, and if that is not enough writes one
    /// itself before appending.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> u64 {
        self.append_parts(&[IoSlice::new(bytes)], Wake::Now)
    }

    /// As [`Store::append`], but the replica senders asleep on the backlog are not woken
    /// (see `Backlog::append_vectored_quiet`): the event loop writes its clients' replies
    /// first and then calls [`Store::wake_senders`], so a woken sender cannot take the loop's
    /// CPU between a turn's append and its replies.
    pub(crate) fn append_quiet(&mut self, bytes: &[u8]) -> u64 {
        self.append_parts(&[IoSlice::new(bytes)], Wake::Later)
    }

    /// Wakes the replica senders asleep on the backlog after [`Store::append_quiet`].
    pub(crate) fn wake_senders(&self) {
        self.backlog.wake_cursors();
    }

    /// Appends the stream form of `argv` run in `db` (a `SELECT` first if needed) without
    /// copying its arguments: for commands with big ones.
    pub(crate) fn append_command<L: ArgList + ?Sized>(&mut self, db: DbIndex, argv: &L) -> u64 {
        let mut frames = command_frames(argv);
        if let Some(first) = frames.first_mut() {
            let mut select = Vec::new();
            self.feed.select_into(&mut select, db);
            select.append(first);
            *first = select;
        }
        let mut parts = Vec::with_capacity(2 * frames.len());
        for (i, frame) in frames.iter().enumerate() {
            parts.push(IoSlice::new(frame));
            if i < argv.count() {
                parts.push(IoSlice::new(argv.arg(i)));
            }
        }
        self.append_parts(&parts, Wake::Now)
    }

    /// [`Store::append`] of the concatenation of `parts`, waking the replica senders now or
    /// leaving that to [`Store::wake_senders`].
    fn append_parts(&mut self, parts: &[IoSlice<'_>], wake: Wake) -> u64 {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return self.backlog.offset();
        }
        self.reap_snapshot(false);
        if let Some(big) = &mut self.big {
            // Not a write (writes wait for the big one): it follows the big write's bytes.
            for p in parts {
                big.after.extend_from_slice(p);
            }
            return self.backlog.offset();
        }
        let cap = self.backlog.capacity();
        let len = len as u64;
        let end = self.backlog.offset();
        if end + len - self.snapshot_offset > cap {
            // The ring would overwrite bytes no finished snapshot covers: the writes outran
            // a snapshot (the backlog is too small for the write rate; docs/MASTER.md, "Sizing
            // the backlog"), or this one command is larger than the ring's free part.
            self.wait_for_snapshot();
        }
        if end + len - self.snapshot_offset > cap {
            // This append alone would overwrite uncovered bytes: snapshot the state it leads to
            // first (the keyspace already reflects it). A crash before the append leaves a
            // snapshot ahead of the backlog; recovery then starts from the snapshot.
            // If it cannot be written, neither can the append: exit before acknowledging
            // these writes (the restart replays the backlog; nothing acknowledged is lost).
            // Writes are refused while snapshots fail, so this takes a failure that came
            // while the ring's last free part was being filled.
            self.flush();
            if let Err(e) = self.save_now(end + len) {
                fatal("writing the snapshot a write needs", e);
            }
        }
        let appended = match wake {
            Wake::Now => self.backlog.append_vectored(parts),
            Wake::Later => self.backlog.append_vectored_quiet(parts),
        };
        let new_end = match appended {
            Ok(e) => e,
            Err(e) => fatal("appending to the backlog", e),
        };
        if new_end - self.snapshot_offset > cap / 2
            && self.running.is_none()
            && self.snapshot_failed.is_none()
        {
            self.start_snapshot(new_end);
        }
        new_end
    }

    /// Commits everything appended (one sync). Exits the process on a storage error.
    pub(crate) fn flush(&mut self) {
        if let Err(e) = self.backlog.flush() {
            fatal("flushing the backlog", e);
        }
    }

    /// Starts writing a snapshot of the current keyspace (at `offset`) in the background.
    fn start_snapshot(&mut self, offset: u64) {
        // O(1): the keyspace's maps are structurally shared; the snapshot thread walks its copy.
        let ks = self.ks.clone();
        self.start_snapshot_of(ks, offset, offset);
    }

    /// Starts writing `ks` as the snapshot at `offset` in the background, put in place once
    /// the backlog is durable up to `durable_at` (or [`COMMIT_WAIT`] passed).
    fn start_snapshot_of(&mut self, ks: Keyspace, offset: u64, durable_at: u64) {
        // The snapshot is put in place only once the backlog on disk reaches its offset, so a
        // restart after an OS crash can still replay (and serve) the bytes after it. Where
        // something else commits, the snapshot thread waits for that commit instead of the
        // event loop syncing here.
        let reader = if self.commits_elsewhere {
            Some(self.backlog.reader())
        } else {
            self.flush();
            None
        };
        let mut opts = self.rdb_options(offset);
        let dir = self.dir.clone();
        let delay = self.snapshot_delay;
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                opts.used_mem = ks.payload_bytes();
                let durable = || {
                    if let Some(r) = &reader {
                        wait_durable(r, durable_at);
                    }
                };
                write_snapshot_then(&dir, &ks, &opts, durable)
            });
        match spawned {
            Ok(handle) => self.running = Some((offset, handle)),
            Err(e) => fatal("starting the snapshot thread", e),
        }
    }

    /// Collects the background snapshot if it finished (or, with `wait`, once it finishes).
    fn reap_snapshot(&mut self, wait: bool) {
        let done = self
            .running
            .as_ref()
            .is_some_and(|(_, h)| wait || h.is_finished());
        if !done {
            return;
        }
        if wait && self.commits_elsewhere {
            // The snapshot may be waiting for the backlog's commit to reach its offset: a
            // writer that needs it now commits instead of waiting for the next commit.
            self.flush();
        }
        if let Some((offset, handle)) = self.running.take() {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the snapshot thread panicked")));
            // A failure is recorded (and logged) by finish_snapshot: writes are refused
            // until a retry succeeds.
            let ok = self.finish_snapshot(offset, result).is_ok();
            if self.big.as_ref().is_some_and(|b| b.at == offset) {
                self.land_big_write(ok);
            }
        }
    }

    /// Ends the [`BigWrite`] whose snapshot finished: on success its keyspace becomes the
    /// keyspace and its bytes go into the ring (the snapshot covers all they overwrite); on
    /// failure it is dropped, as if refused. Then the bytes queued behind it.
    fn land_big_write(&mut self, snapshot_ok: bool) {
        let Some(big) = self.big.take() else {
            return;
        };
        // On failure the feed stays the one from before the write was encoded.
        if snapshot_ok {
            self.ks = big.ks;
            self.feed = big.feed;
            let end = self.append_command(big.db, &big.propagate.args(&big.argv));
            debug_assert_eq!(end, big.at);
        }
        self.append(&big.after);
    }

    /// Collects a finished background snapshot (and lands the [`BigWrite`] it covered).
    pub(crate) fn poll_snapshot(&mut self) {
        self.reap_snapshot(false);
    }

    /// Whether client writes must wait: a [`BigWrite`] is waiting for its snapshot.
    pub(crate) fn writes_wait(&self) -> bool {
        self.big.is_some()
    }

    /// Whether a snapshot is being written.
    pub(crate) fn snapshot_running(&self) -> bool {
        self.running.is_some()
    }

    /// What a client write whose stream form takes at most `need` bytes does when the ring
    /// lacks room for it (see [`Store::has_room`]). The event loop never waits itself:
    /// without a snapshot running, one of the current data starts (the write then waits for
    /// it), unless the write may not fit in the ring at all ([`Room::Big`]).
    pub(crate) fn room_for(&mut self, need: u64) -> Room {
        self.reap_snapshot(false);
        if self.has_room(need) {
            return Room::Now;
        }
        if self.snapshot_failed.is_some() {
            return Room::Refuse;
        }
        if self.running.is_none() {
            if need > self.backlog.capacity() {
                return Room::Big;
            }
            let at = self.backlog.offset();
            self.start_snapshot(at);
        }
        self.snapshot_waits += 1;
        self.commit_for_snapshot();
        if let Some((at, _)) = self.running
            && self.wait_logged != Some(at)
        {
            self.wait_logged = Some(at);
            log::warning(format_args!(
                "Writes wait for a snapshot: the backlog ({} bytes) filled before the \
                 snapshot finished; a larger --backlog-size avoids it",
                self.backlog.capacity()
            ));
        }
        Room::Wait
    }

    /// Runs a write larger than the ring's room without writing a snapshot in the caller:
    /// `ks` is the keyspace with `argv` (run in `db`) done, `propagate` what it propagates.
    /// The write is in place once [`Store::big_write_done`] answers; the offset after it.
    /// Requires no snapshot running (see [`Store::room_for`]).
    pub(crate) fn begin_big_write(
        &mut self,
        ks: Keyspace,
        db: DbIndex,
        argv: Vec<Vec<u8>>,
        propagate: Propagate,
    ) -> u64 {
        debug_assert!(self.running.is_none() && self.big.is_none());
        self.snapshot_waits += 1;
        let end = self.backlog.offset();
        let stream_args = propagate.args(&argv);
        let framing: usize = command_frames(&stream_args).iter().map(Vec::len).sum();
        let payload: usize = (0..stream_args.count())
            .map(|i| stream_args.arg(i).len())
            .sum();
        // The snapshot records the stream's database after the write.
        let mut select = Vec::new();
        let feed = self.feed.clone();
        self.feed.select_into(&mut select, db);
        let at = end + (select.len() + framing + payload) as u64;
        self.start_snapshot_of(ks.clone(), at, end);
        self.commit_for_snapshot();
        self.feed = feed.clone();
        self.big = Some(BigWrite {
            ks,
            feed,
            db,
            argv,
            propagate,
            at,
            after: Vec::new(),
        });
        at
    }

    /// Commits now what a running snapshot waits to see durable (where the once-a-second or
    /// per-turn commit would otherwise make it wait): a write waits for that snapshot.
    fn commit_for_snapshot(&mut self) {
        if self.commits_elsewhere && self.backlog.durable_offset() < self.backlog.offset() {
            self.flush();
        }
    }

    /// `None` while the big write ending at `at` waits for its snapshot; then whether it
    /// took effect (`false`: its snapshot failed, the write was dropped).
    pub(crate) fn big_write_done(&mut self, at: u64) -> Option<bool> {
        self.reap_snapshot(false);
        if self.big.as_ref().is_some_and(|b| b.at == at) {
            return None;
        }
        Some(self.snapshot_offset >= at && self.backlog.offset() >= at)
    }

    /// Records a snapshot's outcome: on success its offset becomes the snapshot offset and
    /// writes are allowed again; a failure is logged and refuses writes until a retry
    /// succeeds.
    fn finish_snapshot(&mut self, offset: u64, result: std::io::Result<()>) -> std::io::Result<()> {
        match result {
            Ok(()) => {
                if self.snapshot_failed.take().is_some() {
                    log::notice(
                        "Background saving terminated with success: writes are accepted again",
                    );
                }
                self.snapshot_offset = offset;
                self.last_save = unix_now();
                self.snapshots += 1;
                Ok(())
            }
            Err(e) => {
                log::warning(format_args!(
                    "Write error saving the snapshot on disk: {e}; write commands are refused \
                     (-MISCONF) until a snapshot succeeds, retried every {} s",
                    SNAPSHOT_RETRY.as_secs()
                ));
                self.snapshot_failed = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Writes a snapshot of the current keyspace at `offset` now (the backlog must already
    /// reach `offset` on disk when that matters to the caller).
    fn save_now(&mut self, offset: u64) -> std::io::Result<()> {
        let mut opts = self.rdb_options(offset);
        opts.used_mem = self.ks.payload_bytes();
        let result = write_snapshot(&self.dir, &self.ks, &opts);
        self.finish_snapshot(offset, result)
    }

    /// Whether `need` more bytes fit in the ring without overwriting a byte after the last
    /// finished snapshot.
    pub(crate) fn has_room(&self, need: u64) -> bool {
        self.backlog.offset() + need - self.snapshot_offset <= self.backlog.capacity()
    }

    /// Waits for the running snapshot because a write needs the ring room it frees; counted
    /// in INFO (`backlog_snapshot_waits`) and logged.
    fn wait_for_snapshot(&mut self) {
        self.snapshot_waits += 1;
        let started = Instant::now();
        self.reap_snapshot(true);
        log::warning(format_args!(
            "A write waited {} ms for a snapshot: the backlog ({} bytes) filled before the \
             snapshot finished; a larger --backlog-size avoids it",
            started.elapsed().as_millis(),
            self.backlog.capacity()
        ));
    }

    /// Changes the durability while running (`CONFIG SET appendfsync`): the backlog's policy
    /// (see [`backlog_durability`]), then who commits before a snapshot is put in place. Under
    /// `always` everything held is committed at once. Exits on a storage error (see [`fatal`]).
    pub(crate) fn set_durability(&mut self, d: Durability) {
        if let Err(e) = self.backlog.set_durability(backlog_durability(d)) {
            fatal("changing the durability", e);
        }
        if d == Durability::Always {
            self.flush();
        }
        self.commits_elsewhere = d != Durability::Never;
    }

    /// Changes the backlog's capacity while running (`CONFIG SET repl-backlog-size`), keeping
    /// the invariant: a smaller ring must still hold every byte after the last finished
    /// snapshot, so when `offset - snapshot_offset` exceeds the new capacity a snapshot is
    /// finished first (the running one, else one written now). Replica senders re-attach to
    /// the new file at their offsets (`replica.rs`).
    ///
    /// # Errors
    /// A message if the snapshot a shrink needs or the resize fails; the backlog is then
    /// unchanged (or poisoned, and the next append exits, as after any failed commit).
    pub(crate) fn resize_backlog(&mut self, capacity: u64) -> Result<(), String> {
        let old = self.backlog.capacity();
        if capacity == old {
            return Ok(());
        }
        self.reap_snapshot(false);
        let uncovered = |s: &Store| s.backlog.offset().saturating_sub(s.snapshot_offset) > capacity;
        if uncovered(self) && self.running.is_some() {
            self.reap_snapshot(true);
        }
        if uncovered(self) {
            self.flush();
            let at = self.backlog.offset();
            self.save_now(at)
                .map_err(|e| format!("writing the snapshot a smaller backlog needs: {e}"))?;
        }
        let started = Instant::now();
        self.backlog
            .resize(capacity)
            .map_err(|e| format!("resizing the backlog: {e}"))?;
        log::notice(format_args!(
            "Backlog resized from {old} to {capacity} bytes in {} ms: offsets {}..={} held",
            started.elapsed().as_millis(),
            self.backlog.first_offset(),
            self.backlog.offset()
        ));
        Ok(())
    }

    /// Whether write commands are refused because the last snapshot failed.
    pub(crate) fn snapshot_failed(&self) -> bool {
        self.snapshot_failed.is_some()
    }

    /// Once a second from the event loop: collects a finished background snapshot and, after
    /// a failed one, starts the retry when it is due (writes being refused, no append would).
    pub(crate) fn tick(&mut self) {
        self.reap_snapshot(false);
        if self.running.is_none()
            && self
                .snapshot_failed
                .is_some_and(|t| t.elapsed() >= SNAPSHOT_RETRY)
        {
            let at = self.backlog.offset();
            self.start_snapshot(at);
        }
    }

    /// What an RDB at `offset` carries besides the keys (`used_mem` left 0: it walks every
    /// key, so whoever serializes fills it in, off the lock where it can).
    pub(crate) fn rdb_options(&self, offset: u64) -> RdbOptions {
        RdbOptions {
            ctime: i64::try_from(unix_now()).unwrap_or_default(),
            used_mem: 0,
            repl: Some(ReplInfo {
                id: self.backlog.run_id().as_bytes().to_vec(),
                offset,
                stream_db: self.feed.stream_db(),
            }),
            ..RdbOptions::default()
        }
    }

    /// Replaces the data with a snapshot a master sent at `offset` (a full
    /// resynchronization) and continues the master's history `run_id` from there, the
    /// stream having `stream_db` selected.
    ///
    /// Commit order, so that a crash at any point restarts consistent, never with old data
    /// under the master's ID: the backlog is first reset at `offset` under a random ID no one
    /// knows (a restart then finds either the old snapshot, which the empty backlog does not
    /// extend, or one at `offset`: a full resync either way), then the new snapshot is
    /// written, then the backlog reset again under the master's ID. If there is no snapshot yet, one of the current
    /// data is written first, so the reset backlog never looks like a lost snapshot.
    /// Exits the process on a storage error (see [`fatal`]).
    pub(crate) fn install_full_sync(
        &mut self,
        ks: Keyspace,
        run_id: RunId,
        offset: u64,
        stream_db: DbIndex,
    ) {
        self.reap_snapshot(true);
        if !self.dir.join(SNAPSHOT_FILE).exists() {
            self.flush();
            let at = self.backlog.offset();
            if let Err(e) = self.save_now(at) {
                fatal("writing the snapshot before a full sync", e);
            }
        }
        if let Err(e) = self.backlog.reset(RunId::random(), offset) {
            fatal("resetting the backlog", e);
        }
        self.ks = ks;
        self.feed = ReplicationFeed::starting_in(stream_db);
        if let Err(e) = self.save_now(offset) {
            fatal("writing the master's snapshot", e);
        }
        // The same empty history, now under the master's ID and with no past IDs (Redis's
        // replica clears its `replid2` after a full sync).
        if let Err(e) = self.backlog.reset(run_id, offset) {
            fatal("adopting the master's replication ID", e);
        }
    }

    /// Graceful shutdown: flush, snapshot, close the backlog cleanly.
    pub(crate) fn shutdown(mut self) {
        self.reap_snapshot(true);
        self.flush();
        let end = self.backlog.offset();
        // A failed final snapshot loses nothing: the backlog, closed cleanly below, still
        // holds every write after the last snapshot that succeeded.
        let _ = self.save_now(end);
        if let Err(e) = self.backlog.close() {
            fatal("closing the backlog", e);
        }
    }
}

/// How long a background snapshot waits for the backlog's commit to reach its offset before
/// it is put in place anyway (a commit that does not come, e.g. a failing disk, must not hold
/// the snapshot: waiting only keeps partial resyncs possible after an OS crash).
const COMMIT_WAIT: Duration = Duration::from_secs(3);

/// Waits until the backlog is durable up to `offset`, or [`COMMIT_WAIT`].
fn wait_durable(reader: &durable_backlog::Reader, offset: u64) {
    let deadline = Instant::now() + COMMIT_WAIT;
    while reader.durable_offset() < offset && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `ks` as the data directory's snapshot, atomically: temporary file, fsync, rename,
/// directory fsync. The RDB is encoded straight into the file (no copy of it in memory).
fn write_snapshot(dir: &Path, ks: &Keyspace, opts: &RdbOptions) -> std::io::Result<()> {
    write_snapshot_then(dir, ks, opts, || {})
}

/// [`write_snapshot`], calling `before_rename` once the temporary file is synced.
fn write_snapshot_then(
    dir: &Path,
    ks: &Keyspace,
    opts: &RdbOptions,
    before_rename: impl FnOnce(),
) -> std::io::Result<()> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("temp-{}.rdb", std::process::id()));
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        write_rdb(&mut out, ks, opts)?;
        let f = out
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        drop(f);
        before_rename();
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A crash during a snapshot leaves its temporary file behind.
fn remove_stale_temp_files(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("temp-") && name.ends_with(".rdb") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The snapshot, or an empty start at offset 0 when there is none and the backlog (if any)
/// starts at offset 1, so that replaying it rebuilds everything. A missing or unreadable
/// snapshot beside a backlog that wrapped (its first offset is above 1: the older writes are
/// only in a snapshot) refuses the start unless `--allow-empty-start`.
fn load_snapshot_or_refuse(
    cfg: &Config,
    snap_path: &Path,
    found: Option<&BacklogFile>,
) -> Result<Loaded, String> {
    let problem = match load_snapshot(snap_path) {
        Ok(Some(loaded)) => return Ok(loaded),
        Ok(None) => "is missing".to_owned(),
        Err(e) => format!("is unreadable ({e})"),
    };
    // The oldest byte the backlog held: the live page's after a process crash (recovery may
    // keep fewer bytes when some fail their checksums; that refusal names the damage).
    let first = found.map_or(1, |f| {
        let i = f.inspection();
        if i.live.initialised && i.live.this_boot {
            i.live.first.min(i.first_offset)
        } else {
            i.first_offset
        }
    });
    if first <= 1 && problem == "is missing" {
        return Ok((Keyspace::new(), 0, DbIndex::ZERO, None));
    }
    let why = if first > 1 {
        format!(
            "{} {problem} and the backlog starts at offset {first}: the writes before it are \
             only in a snapshot",
            snap_path.display()
        )
    } else {
        format!("{} {problem}", snap_path.display())
    };
    if !cfg.allow_empty_start {
        return Err(format!(
            "{why}; starting would lose them. Nothing was changed. Restore the snapshot, or \
             restart with --allow-empty-start to start from an empty data set (the backlog is \
             reset; replicas get a full resync)"
        ));
    }
    log::warning(format_args!(
        "{why}: --allow-empty-start: starting without it"
    ));
    Ok((Keyspace::new(), 0, DbIndex::ZERO, None))
}

/// A loaded snapshot: its data, replication offset, stream database and replication ID.
type Loaded = (Keyspace, u64, DbIndex, Option<RunId>);

/// The snapshot's data, replication offset, stream database and replication ID (when it
/// names a valid one), if there is one.
fn load_snapshot(snap_path: &Path) -> Result<Option<Loaded>, String> {
    match fs::read(snap_path) {
        Ok(bytes) => {
            let loaded =
                read_rdb(&bytes).map_err(|e| format!("loading {}: {e}", snap_path.display()))?;
            let repl = loaded.repl_info();
            let (offset, db) = repl
                .as_ref()
                .map_or((0, DbIndex::ZERO), |r| (r.offset, r.stream_db));
            let id = repl.and_then(|r| RunId::from_bytes(&r.id).ok());
            log::notice(format_args!(
                "Loaded snapshot {} at replication offset {offset}: {} keys",
                snap_path.display(),
                loaded.keyspace.len()
            ));
            Ok(Some((loaded.keyspace, offset, db, id)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", snap_path.display())),
    }
}

/// Why a directory another process holds is refused.
fn in_use(dir: &Path) -> String {
    format!(
        "{} is in use by another durable-master (its backlog is locked): refusing to start; \
         nothing in the directory was changed",
        dir.display()
    )
}

/// The backlog's own policy for the server's durability: `always` is group commit in the
/// event loop (`Server::make_durable`), so the backlog itself never syncs on append.
pub(crate) fn backlog_durability(d: Durability) -> Durability {
    match d {
        Durability::Always => Durability::Never,
        d => d,
    }
}

/// Opens (or creates) the backlog, taking its lock, and logs what recovery found.
fn open_backlog(cfg: &Config, path: &Path) -> Result<Backlog, String> {
    let backlog_durability = backlog_durability(cfg.durability);
    let opts = Options::new()
        .capacity(cfg.backlog_size)
        .durability(backlog_durability);
    let backlog = Backlog::open_or_create(path, opts).map_err(|e| match e {
        durable_backlog::Error::AlreadyOpen { .. } => in_use(path.parent().unwrap_or(path)),
        e => format!("opening the backlog: {e}"),
    })?;
    let rep = backlog.recovery();
    log::notice(format_args!(
        "Backlog opened ({}): offsets {}..={}, replication ID {}",
        rep.kind,
        backlog.first_offset(),
        backlog.offset(),
        backlog.run_id()
    ));
    if rep.history_cut {
        log::warning(format_args!(
            "The backlog's history was cut at offset {} (bytes up to {} were recorded but \
             did not verify): replicas beyond it will get a full resync",
            rep.last, rep.recorded_end
        ));
    }
    Ok(backlog)
}

/// What the read-only look at an existing backlog decided.
#[derive(Debug, Default)]
struct Plan {
    /// Commands replayed, if the backlog covers the bytes after the snapshot.
    replayed: Option<u64>,
    /// `--repair`: cut the backlog before this offset once it is open.
    cut: Option<u64>,
}

/// Replays the found backlog's bytes after the snapshot, refusing the start (unless
/// `--repair`) when damage would lose writes: committed bytes that fail their checksums
/// before the snapshot's offset is reached, or an unusable command.
fn replay_found(
    file: &BacklogFile,
    cfg: &Config,
    ks: &mut Keyspace,
    db: &mut DbIndex,
    snap_offset: u64,
) -> Result<Plan, String> {
    let info = file.inspection();
    let (first, mut last) = (info.first_offset, info.last_offset);
    if let Some(t) = cfg.debug_truncate_backlog {
        last = last.min(t);
    }
    let covered = snap_offset <= last && first <= snap_offset + 1;
    if let Some(d) = committed_damage(file) {
        let why = format!(
            "the backlog is damaged at offset {} ({}); the library keeps only the bytes that \
             verify after it, offsets {first}..={last}",
            d.offset, d.what
        );
        if covered {
            log::warning(format_args!(
                "{why}: they cover the bytes after the snapshot's offset {snap_offset}, so no \
                 write is lost; replicas behind offset {first} get a full resync"
            ));
        } else if cfg.repair {
            log::warning(format_args!(
                "{why}: --repair: starting from the snapshot at offset {snap_offset} alone; the \
                 writes after it are lost"
            ));
        } else {
            return Err(format!(
                "{why}, which do not reach back to the snapshot's offset {snap_offset}: starting \
                 would lose the writes after it. The backlog file was left as it is \
                 (`durable-backlog verify` shows the damage). Restart with --repair to start \
                 from the snapshot alone"
            ));
        }
    }
    let mut plan = Plan::default();
    if !covered {
        return Ok(plan);
    }
    let (count, cut) = replay(ks, db, file, snap_offset, last)?;
    plan.replayed = Some(count);
    if let Some((start, why)) = &cut {
        let start = *start;
        if !cfg.repair {
            return Err(format!(
                "the backlog is damaged at offset {start}: an unusable command ({why}), after \
                 the snapshot's offset {snap_offset}; starting would lose the writes from \
                 offset {start} on. The backlog file was left as it is (`durable-backlog \
                 verify` checks it). Restart with --repair to cut the backlog at offset {start} \
                 (keeping offsets up to {}) and start",
                start - 1
            ));
        }
        log::warning(format_args!(
            "The backlog is damaged at offset {start}: an unusable command ({why}); --repair: \
             cutting the backlog there (offsets up to {} kept)",
            start - 1
        ));
        plan.cut = Some(start);
    }
    log::notice(format_args!(
        "Replayed {count} commands (offsets {}..={}) from the backlog",
        snap_offset + 1,
        plan.cut.map_or(last, |start| start - 1)
    ));
    Ok(plan)
}

/// Committed bytes that failed their checksums.
#[derive(Debug, Clone)]
struct Damage {
    /// Replication offset of the first byte of the damaged checksum block.
    offset: u64,
    what: String,
}

/// After a process crash (the live page was written on this boot) the library verifies the
/// committed bytes the page cache holds; if any fail, it does not trust the page and keeps
/// only the newest bytes that verify, as after a power loss. This tells that case apart from
/// a real OS crash and finds where the damage is (read-only), for the refusal to name it.
fn committed_damage(file: &BacklogFile) -> Option<Damage> {
    let info = file.inspection();
    if !(info.live.initialised
        && info.live.this_boot
        && info.recovery.kind == RecoveryKind::Verified)
    {
        return None;
    }
    let report = file.verify(|_, _| {});
    for d in &report.damage {
        log::warning(format_args!(
            "Backlog damage at file offset {}: {}",
            d.file_offset, d.what
        ));
    }
    // Bytes before the live page's start, and its oldest block, were overwritten after the
    // last commit: their checksums describe bytes that are gone (not damage).
    let found = report.damage.iter().find_map(|d| {
        d.stream_offset
            .filter(|&o| o > info.live.first)
            .map(|o| (o, d))
    });
    Some(match found {
        Some((offset, d)) => Damage {
            offset,
            what: d.what.clone(),
        },
        None => Damage {
            offset: info.recovery.first,
            what: "committed bytes held by the page cache failed their checksums".to_owned(),
        },
    })
}

/// Replays the bytes `from+1 ..= last` of `file` onto `ks`, up to the first unusable command:
/// one that does not parse, is cut or fails to execute (which only a damaged file can hold).
/// Returns the commands applied and where and why it stopped.
fn replay(
    ks: &mut Keyspace,
    db: &mut DbIndex,
    file: &BacklogFile,
    from: u64,
    last: u64,
) -> Result<(u64, Option<(u64, String)>), String> {
    let len = usize::try_from(last - from).map_err(|_| "backlog too large".to_owned())?;
    let mut bytes = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file
            .read_at(from + 1 + done as u64, &mut bytes[done..])
            .map_err(|e| format!("reading the backlog: {e}"))?;
        if n == 0 {
            return Err("the backlog ended early".to_owned());
        }
        done += n;
    }
    let mut count = 0;
    let mut cut: Option<(u64, String)> = None;
    for item in StreamDecoder::new(&bytes, from + 1) {
        match item {
            Ok(StreamItem::Command(mut cmd)) => {
                if let Err(e) = apply(ks, db, &mut cmd.argv) {
                    cut = Some((cmd.start, e.to_string()));
                    break;
                }
                count += 1;
            }
            Ok(StreamItem::Incomplete { start, have }) => {
                cut = Some((start, format!("a command cut after {have} bytes")));
            }
            Err(e) => {
                cut = Some((e.command_start, e.to_string()));
                break;
            }
        }
    }
    Ok((count, cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Outcome, execute};

    fn cfg(dir: &Path) -> Config {
        Config {
            dir: dir.to_path_buf(),
            backlog_size: 64 * 1024,
            ..Config::default()
        }
    }

    /// Runs a client command and appends what it propagates, as a connection does.
    fn run(store: &mut Store, db: &mut DbIndex, line: &str) {
        let mut argv: Vec<Vec<u8>> = line.split(' ').map(|a| a.as_bytes().to_vec()).collect();
        let Outcome::Executed(done) = execute(&mut store.ks, db, &mut argv) else {
            panic!("{line}")
        };
        assert_ne!(done.reply.first(), Some(&b'-'), "{line}");
        if let Some(p) = done.propagated(&argv) {
            let bytes = store.feed.encode(*db, &p);
            store.append(&bytes);
        }
    }

    fn value(store: &Store, db: u64, key: &str) -> Option<Vec<u8>> {
        store
            .ks
            .get(DbIndex::new(db).unwrap(), key.as_bytes())
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn restart_restores_snapshot_plus_replay_across_many_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::recover(&cfg(dir.path())).unwrap();
        let mut db = DbIndex::ZERO;
        for i in 0..3000 {
            if i % 1000 == 0 {
                run(&mut s, &mut db, &format!("SELECT {}", i / 1000));
            }
            run(&mut s, &mut db, &format!("SET key:{i} value-{i}"));
            run(&mut s, &mut db, "INCR counter");
        }
        s.reap_snapshot(true);
        assert!(s.snapshots >= 3, "{} snapshots", s.snapshots);
        assert!(
            s.backlog.offset() > s.snapshot_offset,
            "some bytes only in the backlog"
        );
        let (end, keys) = (s.backlog.offset(), s.ks.len());
        drop(s);
        let s = Store::recover(&cfg(dir.path())).unwrap();
        assert_eq!(s.backlog.offset(), end);
        assert_eq!(s.ks.len(), keys);
        assert_eq!(
            value(&s, 2, "key:2999").as_deref(),
            Some(&b"value-2999"[..])
        );
        assert_eq!(value(&s, 0, "key:0").as_deref(), Some(&b"value-0"[..]));
        assert_eq!(value(&s, 2, "counter").as_deref(), Some(&b"1000"[..]));
    }

    #[test]
    fn value_larger_than_half_the_ring_is_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::recover(&cfg(dir.path())).unwrap();
        let mut db = DbIndex::ZERO;
        let big = "x".repeat(60_000);
        for i in 0..5 {
            run(&mut s, &mut db, &format!("SET small{i} {i}"));
            run(&mut s, &mut db, &format!("SET big{i} {big}"));
        }
        // Each big value outruns the ring (64 KiB): the appends waited for snapshots, and
        // INFO's counter says so.
        assert!(s.snapshot_waits >= 4, "{} waits", s.snapshot_waits);
        s.reap_snapshot(true);
        drop(s);
        let s = Store::recover(&cfg(dir.path())).unwrap();
        for i in 0..5 {
            assert_eq!(
                value(&s, 0, &format!("big{i}")).map(|v| v.len()),
                Some(60_000)
            );
            assert!(value(&s, 0, &format!("small{i}")).is_some());
        }
    }

    #[test]
    fn snapshot_ahead_of_the_backlog_starts_from_the_snapshot_keeping_its_id_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::recover(&cfg(dir.path())).unwrap();
        let mut db = DbIndex::ZERO;
        run(&mut s, &mut db, "SET a 1");
        let old_id = s.backlog.run_id();
        // As if a snapshot was written for an append that never reached the backlog.
        s.ks.set(DbIndex::ZERO, b"b".to_vec(), b"2".to_vec());
        let ahead = s.backlog.offset() + 100;
        s.save_now(ahead).unwrap();
        drop(s);
        let s = Store::recover(&cfg(dir.path())).unwrap();
        assert_eq!(s.backlog.offset(), ahead);
        assert_eq!(value(&s, 0, "b").as_deref(), Some(&b"2"[..]));
        assert!(!s.backlog.psync(old_id.as_str(), 2).is_continue());
        // The snapshot's ID is its history at its offset: valid there (a replica at exactly
        // that offset continues), not past it, and no longer the current one.
        assert_ne!(s.backlog.run_id(), old_id);
        let at = i64::try_from(ahead).unwrap();
        assert!(s.backlog.psync(old_id.as_str(), at + 1).is_continue());
        assert!(!s.backlog.psync(old_id.as_str(), at + 2).is_continue());
        assert!(!s.backlog.psync(old_id.as_str(), at).is_continue());
    }

    #[test]
    fn damaged_command_after_the_snapshot_refuses_the_start_and_repair_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        let repair = Config {
            repair: true,
            ..cfg(dir.path())
        };
        let mut s = Store::recover(&cfg(dir.path())).unwrap();
        let mut db = DbIndex::ZERO;
        run(&mut s, &mut db, "SET a 1");
        let good_end = s.backlog.offset();
        s.backlog.append(b"*1\r\n$4\r\nPI").unwrap();
        drop(s);
        let err = Store::recover(&cfg(dir.path())).unwrap_err();
        assert!(
            err.contains(&format!("damaged at offset {}", good_end + 1)),
            "{err}"
        );
        assert!(err.contains("--repair"), "{err}");
        let mut s = Store::recover(&repair).unwrap();
        assert_eq!(s.backlog.offset(), good_end, "a cut command is cut off");
        assert_eq!(value(&s, 0, "a").as_deref(), Some(&b"1"[..]));
        s.backlog
            .append(b"+garbage\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n")
            .unwrap();
        drop(s);
        assert!(Store::recover(&cfg(dir.path())).is_err());
        let s = Store::recover(&repair).unwrap();
        assert_eq!(
            s.backlog.offset(),
            good_end,
            "garbage and what follows it are cut off"
        );
        assert_eq!(value(&s, 0, "b"), None);
    }

    #[test]
    fn truncation_below_the_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::recover(&cfg(dir.path())).unwrap();
        let mut db = DbIndex::ZERO;
        run(&mut s, &mut db, "SET a 1");
        s.shutdown();
        let mut c = cfg(dir.path());
        c.debug_truncate_backlog = Some(1);
        let err = Store::recover(&c).unwrap_err();
        assert!(err.contains("below the snapshot"), "{err}");
    }
}
