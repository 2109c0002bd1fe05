//! Real `redis-server` 7.0 replicas following `durable-master` (the binary, spawned and killed
//! by PID): guards against a master that loses acknowledged writes on kill -9, that sends a
//! replica a full resync where a partial one is possible (or a partial one where it would
//! splice two histories), or whose stream or snapshot a real replica applies differently.
//!
//! Every scenario checks that the replica's whole keyspace equals the master's and the test's
//! own model of what was acknowledged, and reads the replica's log and the master's INFO for the
//! kind of sync that happened.
//!
//! Without `redis-server` on the PATH these tests print a loud `SKIPPED` notice and pass,
//! unless `REQUIRE_REDIS=1`, in which case they fail.

#![allow(
    clippy::missing_panics_doc,
    clippy::cast_possible_truncation,
    clippy::too_many_lines
)]

use test_redis as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{Client, RedisGuard, Reply, info_field, redis_server, signal};

/// (db, key) -> value.
type Model = common::Dataset;

const FULL: &str = "MASTER <-> REPLICA sync: Finished with success";
const PARTIAL: &str = "Successful partial resynchronization with master";

/// `durable-master` with its data and log in `dir`, and a backlog of `backlog`.
fn start_master(dir: &Path, backlog: &str) -> DurableMaster {
    DurableMaster::start(
        env!("CARGO_BIN_EXE_durable-master"),
        dir,
        &["--backlog-size", backlog],
    )
}

/// What the tests read from the master's INFO.
trait MasterInfo {
    fn offset(&self) -> u64;
    fn stat(&self, name: &str) -> u64;
}

impl MasterInfo for DurableMaster {
    fn offset(&self) -> u64 {
        field(&self.client().info("replication"), "master_repl_offset")
    }

    fn stat(&self, name: &str) -> u64 {
        field(&self.client().info("stats"), name)
    }
}

fn field(info: &str, name: &str) -> u64 {
    info_field(info, name).parse().expect("numeric INFO field")
}

/// The start of most scenarios: a master with a `backlog`-sized backlog, one real replica
/// following it, and `n` keys `a0..` written in db 0 (and in the model). `None` (after the
/// skip notice) without `redis-server`. Bind the directory first so it is deleted last.
fn master_with_replica(
    backlog: &str,
    n: usize,
) -> Option<(tempfile::TempDir, DurableMaster, RedisGuard, Model)> {
    let bin = redis_server()?;
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), backlog);
    let replica = start_replica(&bin, &dir.path().join("r"), &master);
    let mut model = Model::new();
    set_many(&mut master.client(), &mut model, 0, keys("a", 0..n));
    Some((dir, master, replica, model))
}

fn start_replica(binary: &Path, dir: &Path, master: &DurableMaster) -> RedisGuard {
    std::fs::create_dir_all(dir).expect("replica dir");
    RedisGuard::start_with(
        binary,
        dir,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    )
}

/// Waits until the replica's link is up and it processed everything the master wrote.
fn wait_in_sync(master: &DurableMaster, replica: &RedisGuard) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while Instant::now() < deadline {
        let m = master.offset();
        let info = replica.client().info("replication");
        if info.contains("master_link_status:up") && field(&info, "master_repl_offset") == m {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "replica did not catch up; master log:\n{}\nreplica log:\n{}",
        master.log(),
        replica.log()
    );
}

/// Master, replica and model hold exactly the same keys and values.
fn assert_same(master: &DurableMaster, replica: &RedisGuard, model: &Model) {
    common::assert_same_dataset("master", &common::dump(&mut master.client()), model);
    common::assert_same_dataset("replica", &common::dump(&mut replica.client()), model);
}

/// Pipelined `SET`s in database `db` (selected first), each acknowledged with `+OK`.
fn set_many(
    c: &mut Client,
    model: &mut Model,
    db: u8,
    items: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) {
    c.ok(&[b"SELECT".to_vec(), db.to_string().into_bytes()]);
    let items: Vec<_> = items.into_iter().collect();
    for chunk in items.chunks(500) {
        let mut out = Vec::new();
        for (k, v) in chunk {
            out.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n", k.len()).as_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(format!("\r\n${}\r\n", v.len()).as_bytes());
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        c.send_raw(&out);
        for (k, v) in chunk {
            assert_eq!(c.read_reply(), Reply::Status("OK".into()), "SET {k:?}");
            model.insert((db, k.clone()), v.clone());
        }
    }
}

fn keys(tag: &str, range: std::ops::Range<usize>) -> Vec<(Vec<u8>, Vec<u8>)> {
    range
        .map(|i| {
            (
                format!("{tag}:{i:06}").into_bytes(),
                format!("value-{tag}-{i}-{}", "x".repeat(i % 50)).into_bytes(),
            )
        })
        .collect()
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Scenario 1: a first full sync of 10k keys in two databases; the stream after it starts with
/// a SELECT (the replica starts in db 0 while the master's stream was in db 3).
#[test]
fn s1_first_full_sync_of_10k_keys() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "1mb");
    let mut model = Model::new();
    let mut c = master.client();
    set_many(&mut c, &mut model, 0, keys("a", 0..9000));
    set_many(&mut c, &mut model, 3, keys("b", 0..1000));
    let replica = start_replica(&bin, &dir.path().join("r"), &master);
    wait_in_sync(&master, &replica);
    // Still in db 3 on this connection: the stream must re-select it for the replica.
    set_many(&mut c, &mut model, 3, keys("c", 0..10));
    wait_in_sync(&master, &replica);
    assert_same(&master, &replica, &model);
    assert_eq!(model.len(), 10_010);
    assert_eq!(count(&replica.log(), FULL), 1);
    assert_eq!(master.stat("sync_full"), 1);
    assert_eq!(master.stat("sync_partial_ok"), 0);
}

/// Scenario 2: the replica's link is dropped (twice) while writes continue → partial.
#[test]
fn s2_link_dropped_while_writing_gives_partial_resync() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "1mb");
    let replica = start_replica(&bin, &dir.path().join("r"), &master);
    wait_in_sync(&master, &replica);
    let mut model = Model::new();
    let mut c = master.client();
    for round in 0..3 {
        set_many(&mut c, &mut model, 0, keys(&format!("r{round}"), 0..1000));
        if round < 2 {
            // The link the previous round cut must be back before it can be cut again.
            wait_link_up(&replica);
            let killed = replica
                .client()
                .integer(&[&b"CLIENT"[..], b"KILL", b"TYPE", b"master"]);
            assert_eq!(killed, 1);
        }
    }
    wait_in_sync(&master, &replica);
    assert_same(&master, &replica, &model);
    assert!(count(&replica.log(), PARTIAL) >= 1, "{}", replica.log());
    assert!(master.stat("sync_partial_ok") >= 1);
    assert_eq!(master.stat("sync_full"), 1, "only the first sync is full");
    assert_eq!(count(&replica.log(), FULL), 1);
}

/// Waits until `replica` reports its link to the master up.
fn wait_link_up(replica: &RedisGuard) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&replica.client().info("replication"), "master_link_status") != "up" {
        assert!(
            Instant::now() < deadline,
            "the replica's link never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The replica holds the master's data (and the model's), got exactly one full sync (its
/// first), and the restarted master served it exactly one partial resync and no full one.
fn assert_continued_partially(master: &DurableMaster, replica: &RedisGuard, model: &Model) {
    assert_same(master, replica, model);
    assert_eq!(master.stat("sync_partial_ok"), 1, "{}", master.log());
    assert_eq!(master.stat("sync_full"), 0);
    assert_eq!(count(&replica.log(), FULL), 1);
    assert_eq!(count(&replica.log(), PARTIAL), 1);
}

/// Scenario 3: master kill -9 and restart with the replica in sync → partial, nothing lost.
/// The backlog is small, so the master restarts from a snapshot plus a replay of the backlog
/// after it (and one value is larger than half the ring).
#[test]
fn s3_master_kill9_replica_in_sync_gives_partial_and_loses_nothing() {
    let Some((_dir, mut master, replica, mut model)) = master_with_replica("64kb", 1500) else {
        return;
    };
    let big = vec![(b"big".to_vec(), "0123456789".repeat(5000).into_bytes())];
    set_many(&mut master.client(), &mut model, 0, big);
    set_many(&mut master.client(), &mut model, 0, keys("a", 1500..2000));
    set_many(&mut master.client(), &mut model, 0, keys("z", 0..10));
    wait_in_sync(&master, &replica);
    let persistence = master.client().info("persistence");
    assert!(field(&persistence, "rdb_saves") >= 3, "{persistence}");
    assert!(
        field(&persistence, "rdb_changes_since_last_save") > 0,
        "{persistence}"
    );
    master.restart(&[]);
    assert!(master.log().contains("Replayed"), "{}", master.log());
    common::assert_same_dataset(
        "master after kill -9",
        &common::dump(&mut master.client()),
        &model,
    );
    set_many(&mut master.client(), &mut model, 0, keys("b", 0..500));
    wait_in_sync(&master, &replica);
    assert_continued_partially(&master, &replica, &model);
}

/// Scenario 4: master kill -9 while the replica lags inside the backlog (stopped with SIGSTOP)
/// → partial, nothing lost.
#[test]
fn s4_master_kill9_while_replica_lags_gives_partial() {
    let Some((_dir, mut master, replica, mut model)) = master_with_replica("1mb", 1000) else {
        return;
    };
    wait_in_sync(&master, &replica);
    signal(replica.pid(), "-STOP");
    set_many(&mut master.client(), &mut model, 0, keys("b", 0..2000));
    master.restart(&[]);
    set_many(&mut master.client(), &mut model, 0, keys("c", 0..100));
    signal(replica.pid(), "-CONT");
    wait_in_sync(&master, &replica);
    assert_continued_partially(&master, &replica, &model);
}

/// Scenario 5: the master is killed twice while the replica is down across both restarts →
/// still partial (the replica's ID is two generations old). The restarted master runs with
/// `--durability always` (group commit).
#[test]
fn s5_master_killed_twice_while_replica_down_still_partial() {
    let Some((_dir, mut master, replica, mut model)) = master_with_replica("1mb", 500) else {
        return;
    };
    wait_in_sync(&master, &replica);
    signal(replica.pid(), "-STOP");
    set_many(&mut master.client(), &mut model, 0, keys("b", 0..500));
    master.restart(&["--durability", "always"]);
    set_many(&mut master.client(), &mut model, 2, keys("c", 0..500));
    master.restart(&["--durability", "always"]);
    set_many(&mut master.client(), &mut model, 0, keys("d", 0..500));
    signal(replica.pid(), "-CONT");
    wait_in_sync(&master, &replica);
    assert_continued_partially(&master, &replica, &model);
}

/// Starts a replica, writes `before` keys and waits until it is in sync, shuts it down with
/// `SHUTDOWN SAVE` (it keeps an RDB with its replication offset), writes `after` more keys,
/// restarts it from that RDB and waits until it is in sync again.
fn replica_down_while_writing(
    bin: &Path,
    dir: &Path,
    master: &DurableMaster,
    model: &mut Model,
    before: usize,
    after: usize,
) -> RedisGuard {
    let rdir = dir.join("r");
    let mut replica = start_replica(bin, &rdir, master);
    set_many(&mut master.client(), model, 0, keys("a", 0..before));
    wait_in_sync(master, &replica);
    replica
        .client()
        .send_raw(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n");
    replica.wait_exit();
    set_many(&mut master.client(), model, 0, keys("b", 0..after));
    let replica = start_replica(bin, &rdir, master);
    wait_in_sync(master, &replica);
    replica
}

/// Scenario 6: a replica whose offset fell out of the backlog while it was down gets a full
/// resync, and ends with identical data.
#[test]
fn s6_replica_lag_beyond_backlog_gives_full_resync() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "64kb");
    let mut model = Model::new();
    // ~250 KB while the replica is down: four times the backlog.
    let replica = replica_down_while_writing(&bin, dir.path(), &master, &mut model, 300, 4000);
    assert_same(&master, &replica, &model);
    assert_eq!(master.stat("sync_full"), 2, "{}", master.log());
    assert_eq!(master.stat("sync_partial_err"), 1);
    assert_eq!(master.stat("sync_partial_ok"), 0);
    assert!(
        replica.log().contains("Trying a partial resynchronization"),
        "the restarted replica must have asked for a partial resync:\n{}",
        replica.log()
    );
    assert_eq!(count(&replica.log(), FULL), 2);
}

/// Scenario 7: the master's tail is cut back (as an OS crash losing unsynced bytes would) while
/// the replica holds those bytes → full resync, never a spliced history.
#[test]
fn s7_truncated_master_tail_gives_full_resync_never_divergence() {
    let Some((_dir, mut master, replica, model)) = master_with_replica("1mb", 1000) else {
        return;
    };
    let kept = model.clone();
    let cut_at = master.offset();
    let mut lost = model.clone();
    set_many(&mut master.client(), &mut lost, 0, keys("b", 0..500));
    wait_in_sync(&master, &replica);
    master.kill9();
    master.spawn(&["--debug-truncate-backlog", &cut_at.to_string()]);
    assert_eq!(master.offset(), cut_at);
    // New writes reuse the offsets the replica already holds different bytes for.
    let mut model = kept;
    set_many(&mut master.client(), &mut model, 0, keys("c", 0..300));
    wait_in_sync(&master, &replica);
    assert_same(&master, &replica, &model);
    assert_eq!(master.stat("sync_partial_ok"), 0, "{}", master.log());
    assert_eq!(master.stat("sync_partial_err"), 1);
    assert_eq!(master.stat("sync_full"), 1);
    assert_eq!(count(&replica.log(), FULL), 2);
}

/// Scenario 8: two replicas streamed at once; one is stopped until the ring laps it, is
/// disconnected, and comes back with a full resync; the other is untouched.
#[test]
fn s8_two_replicas_one_lapped() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "1mb");
    let a = start_replica(&bin, &dir.path().join("ra"), &master);
    let b = start_replica(&bin, &dir.path().join("rb"), &master);
    let mut model = Model::new();
    set_many(&mut master.client(), &mut model, 0, keys("a", 0..500));
    wait_in_sync(&master, &a);
    wait_in_sync(&master, &b);
    signal(b.pid(), "-STOP");
    // 32 MB through a 1 MB ring: more than the ring plus every socket buffer on the way to
    // the stopped replica. Few keys, rewritten, so snapshots stay small.
    let big = |i: usize| format!("{i:08}").repeat(8 * 1024).into_bytes();
    let mut c = master.client();
    for round in 0..32 {
        set_many(
            &mut c,
            &mut model,
            0,
            (0..16).map(|k| (format!("big:{k}").into_bytes(), big(round * 16 + k))),
        );
    }
    wait_in_sync(&master, &a);
    signal(b.pid(), "-CONT");
    wait_in_sync(&master, &b);
    assert_same(&master, &a, &model);
    assert_same(&master, &b, &model);
    assert!(
        master.log().contains("lagged beyond the backlog"),
        "{}",
        master.log()
    );
    assert_eq!(count(&a.log(), FULL), 1, "the other replica kept streaming");
    assert_eq!(count(&b.log(), FULL), 2, "{}", b.log());
    assert_eq!(master.stat("sync_full"), 3);
}

/// Scenario 9: a replica restarted from its own RDB continues from the RDB's repl-offset.
#[test]
fn s9_restarted_replica_continues_from_its_rdb() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "1mb");
    let mut model = Model::new();
    let replica = replica_down_while_writing(&bin, dir.path(), &master, &mut model, 1000, 500);
    assert_same(&master, &replica, &model);
    assert_eq!(master.stat("sync_partial_ok"), 1, "{}", master.log());
    assert_eq!(master.stat("sync_full"), 1);
    assert_eq!(count(&replica.log(), PARTIAL), 1, "{}", replica.log());
}

/// With `--requirepass`, clients must AUTH and a replica with `masterauth` syncs; `WAIT`
/// counts it through `REPLCONF GETACK`.
#[test]
fn requirepass_masterauth_and_wait() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut master = start_master(dir.path(), "1mb");
    master.restart(&["--requirepass", "s3cret"]);
    let mut c = master.client();
    assert_eq!(
        c.call(&[&b"SET"[..], b"k", b"v"]),
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert!(
        matches!(c.call(&[&b"AUTH"[..], b"wrong"]), Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    c.ok(&[&b"AUTH"[..], b"s3cret"]);
    c.ok(&[&b"SET"[..], b"k", b"v"]);
    let rdir = dir.path().join("r");
    std::fs::create_dir_all(&rdir).unwrap();
    let replica = RedisGuard::start_with(
        &bin,
        &rdir,
        &[
            "--replicaof",
            "127.0.0.1",
            &master.port.to_string(),
            "--masterauth",
            "s3cret",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !replica
        .client()
        .info("replication")
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "{}", replica.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    c.ok(&[&b"SET"[..], b"k2", b"v2"]);
    assert_eq!(c.integer(&[&b"WAIT"[..], b"1", b"5000"]), 1);
    assert_eq!(
        replica.client().call(&[&b"GET"[..], b"k2"]),
        Reply::Bulk(Some(b"v2".to_vec()))
    );
    let info = c.info("replication");
    assert!(info.contains("slave0:ip=127.0.0.1,port="), "{info}");
    assert!(info.contains("state=online"), "{info}");
}

/// The master pings its replicas every 10 s with a lowercase `ping` that goes through the
/// stream (14 bytes, counted in the offsets), as Redis 7.0 does; the replica stays in sync.
#[test]
fn master_pings_replicas_through_the_stream() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "1mb");
    let replica = start_replica(&bin, &dir.path().join("r"), &master);
    let mut model = Model::new();
    set_many(&mut master.client(), &mut model, 0, keys("a", 0..10));
    wait_in_sync(&master, &replica);
    let before = master.offset();
    // Pings come every 10 s; 12.5 s leaves room for a loaded machine's scheduling.
    std::thread::sleep(Duration::from_millis(12_500));
    let after = master.offset();
    assert!(after > before, "no ping in 12.5 s");
    assert_eq!((after - before) % 14, 0, "only 14-byte pings were written");
    wait_in_sync(&master, &replica);
    assert_same(&master, &replica, &model);
}

/// Scenario 10: `CONFIG SET repl-backlog-size` grows and shrinks the backlog under write load
/// while a replica streams: its sender moves to the new file at its offset, so the replica
/// sees one unbroken stream (no resync of any kind), and `CONFIG GET`, `INFO replication` and
/// `ROLE` follow the new backlog.
#[test]
fn s10_backlog_resized_under_write_load_keeps_the_replica_streaming() {
    let Some((_dir, master, replica, mut model)) = master_with_replica("1mb", 1000) else {
        return;
    };
    wait_in_sync(&master, &replica);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (port, stop) = (master.port, std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut c, mut model) = (Client::open(port), Model::new());
            let mut round = 0;
            while round < 10 || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                set_many(&mut c, &mut model, 0, keys(&format!("w{round}"), 0..200));
                round += 1;
            }
            model
        })
    };
    let mut admin = master.client();
    for (size, bytes) in [
        ("4mb", 4u64 << 20),
        ("256kb", 256 << 10),
        ("2mb", 2 << 20),
        ("300000", 300_000),
        ("1mb", 1 << 20),
    ] {
        std::thread::sleep(Duration::from_millis(100));
        admin.ok(&["CONFIG", "SET", "repl-backlog-size", size]);
        let got = admin.call(&["CONFIG", "GET", "repl-backlog-size"]);
        let want = Reply::Array(vec![
            Reply::Bulk(Some(b"repl-backlog-size".to_vec())),
            Reply::Bulk(Some(bytes.to_string().into_bytes())),
        ]);
        assert_eq!(got, want, "{size}");
        let info = admin.info("replication");
        assert_eq!(field(&info, "repl_backlog_size"), bytes, "{info}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    model.extend(writer.join().expect("writer"));
    wait_in_sync(&master, &replica);
    assert_same(&master, &replica, &model);
    let Reply::Array(role) = admin.call(&["ROLE"]) else {
        panic!("ROLE")
    };
    let offset = i64::try_from(master.offset()).expect("offset");
    assert_eq!(role.get(1), Some(&Reply::Integer(offset)), "{role:?}");
    assert_eq!(master.stat("sync_full"), 1, "{}", master.log());
    assert_eq!(master.stat("sync_partial_ok"), 0, "{}", master.log());
    assert_eq!(count(&replica.log(), FULL), 1, "{}", replica.log());
    assert_eq!(count(&replica.log(), PARTIAL), 0, "{}", replica.log());
    assert_eq!(
        count(&master.log(), "goes on from offset"),
        5,
        "{}",
        master.log()
    );
}

/// Scenario 11: a shrink below the bytes written since the last snapshot writes a snapshot
/// first (the smaller ring could not hold them for a replay): `kill -9` right after it
/// restarts with every acknowledged key, and the replica continues partially.
#[test]
fn s11_kill9_right_after_a_shrink_loses_nothing_and_the_replica_continues_partially() {
    let Some((_dir, mut master, replica, mut model)) = master_with_replica("8mb", 3000) else {
        return;
    };
    wait_in_sync(&master, &replica);
    let snapshot_offset =
        |m: &DurableMaster| field(&m.client().info("persistence"), "snapshot_repl_offset");
    assert!(
        master.offset() - snapshot_offset(&master) > 64 * 1024,
        "the shrink must need a snapshot"
    );
    master
        .client()
        .ok(&["CONFIG", "SET", "repl-backlog-size", "64kb"]);
    assert_eq!(snapshot_offset(&master), master.offset());
    master.restart(&["--backlog-size", "64kb"]);
    common::assert_same_dataset(
        "master after kill -9",
        &common::dump(&mut master.client()),
        &model,
    );
    set_many(&mut master.client(), &mut model, 0, keys("b", 0..300));
    wait_in_sync(&master, &replica);
    assert_continued_partially(&master, &replica, &model);
}
