//! `durable-master` as a replica of a real `redis-server` 7.0 master (the binaries spawned and
//! killed by PID): guards against a replica whose data differs from its master's, that accepts
//! writes, whose `INFO` / `ROLE` / `REPLICAOF` replies differ from a stock replica's, that
//! needs a full resync after `kill -9` (its snapshot and backlog disagreeing on offsets, or
//! the wrong ID asked for), that makes its own sub-replicas resync fully after a restart, or
//! that breaks its siblings' partial resync when promoted.
//!
//! Every scenario ends with the keyspaces (every database, `KEYS *` + `MGET`) compared, and
//! reads the kind of sync from the masters' `INFO stats` and the stock replicas' logs.
//!
//! Without `redis-server` on the PATH these tests print a loud `SKIPPED` notice and pass,
//! unless `REQUIRE_REDIS=1`, in which case they fail.

#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use test_redis as common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{Client, RedisGuard, Reply, info_field, read_log, redis_server, signal};

const FULL: &str = "MASTER <-> REPLICA sync: Finished with success";
const PARTIAL: &str = "Successful partial resynchronization with master";

fn field(info: &str, name: &str) -> u64 {
    info_field(info, name).parse().expect("numeric INFO field")
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// A stock `redis-server` master (full syncs start at once: no diskless delay; the snapshot
/// in the `$EOF:` form; no periodic pings).
fn stock_master(bin: &Path, dir: &Path) -> RedisGuard {
    stock_master_with(bin, dir, &[])
}

fn stock_master_with(bin: &Path, dir: &Path, extra: &[&str]) -> RedisGuard {
    let dir = dir.join("master");
    std::fs::create_dir_all(&dir).expect("master dir");
    // No pings into the stream: offsets compared across servers stay still between reads.
    let mut args = vec![
        "--repl-diskless-sync-delay",
        "0",
        "--repl-backlog-size",
        "16mb",
        "--repl-ping-replica-period",
        "3600",
    ];
    args.extend_from_slice(extra);
    RedisGuard::start_with(bin, &dir, &args)
}

/// A stock `redis-server` replica of the server on `port`.
fn stock_replica(bin: &Path, dir: &Path, name: &str, port: u16) -> RedisGuard {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("replica dir");
    RedisGuard::start_with(
        bin,
        &dir,
        &[
            "--replicaof",
            "127.0.0.1",
            &port.to_string(),
            "--repl-diskless-sync-delay",
            "0",
        ],
    )
}

/// A `durable-master` started (and restarted) as a replica of the server on `port`.
fn durable_replica(dir: &Path, port: u16, extra: &[&str]) -> DurableMaster {
    std::fs::create_dir_all(dir).expect("durable replica dir");
    let replicaof = format!("127.0.0.1 {port}");
    let mut args = vec!["--replicaof", replicaof.as_str(), "--backlog-size", "1mb"];
    args.extend_from_slice(extra);
    DurableMaster::start(env!("CARGO_BIN_EXE_durable-master"), dir, &args)
}

/// The logs at these paths under `dir`, for failure messages.
fn log_reader(dir: &Path, names: &[&str]) -> impl Fn() -> String {
    let paths: Vec<_> = names.iter().map(|n| dir.join(n)).collect();
    move || {
        paths
            .iter()
            .map(|p| format!("--- {}:\n{}", p.display(), read_log(p)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The replication offset of the server on `port`.
fn offset(port: u16) -> u64 {
    field(
        &Client::open(port).info("replication"),
        "master_repl_offset",
    )
}

/// Waits until the replica on `replica` has its link up and the offset of the master on
/// `master`; `logs` are printed if it never does.
fn wait_in_sync(master: u16, replica: u16, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while Instant::now() < deadline {
        let m = offset(master);
        let info = Client::open(replica).info("replication");
        if info.contains("master_link_status:up") && field(&info, "master_repl_offset") == m {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("replica on {replica} did not catch up; logs:\n{}", logs());
}

/// Writes a mix of commands (SET in two databases, INCR, DEL, MSET, APPEND, a MULTI block)
/// on `c`, `rounds` times, tagged `tag`.
fn write_mix(c: &mut Client, tag: &str, rounds: usize) {
    for i in 0..rounds {
        c.ok(&[&b"SELECT"[..], b"0"]);
        c.ok(&[
            "SET",
            &format!("{tag}:s:{i}"),
            &format!("v{i}-{}", "x".repeat(i % 40)),
        ]);
        c.integer(&["INCR", &format!("{tag}:counter")]);
        c.ok(&[
            "MSET",
            &format!("{tag}:m:{i}"),
            "1",
            &format!("{tag}:gone:{i}"),
            "2",
        ]);
        c.integer(&["DEL", &format!("{tag}:gone:{i}")]);
        c.integer(&["APPEND", &format!("{tag}:log"), &format!("{i},")]);
        c.ok(&[&b"SELECT"[..], b"5"]);
        c.ok(&["SET", &format!("{tag}:five:{i}"), "5"]);
        if i % 10 == 0 {
            c.ok(&["MULTI"]);
            assert_eq!(c.call(&["INCR", "tx"]), Reply::Status("QUEUED".into()));
            assert_eq!(
                c.call(&["SET", &format!("{tag}:tx:{i}"), "t"]),
                Reply::Status("QUEUED".into())
            );
            assert!(matches!(c.call(&["EXEC"]), Reply::Array(a) if a.len() == 2));
        }
    }
    c.ok(&[&b"SELECT"[..], b"0"]);
}

/// A thread writing to the server on `port` until stopped: pipelined batches of SETs and
/// INCRs in db 0 and db 2, with a pause between batches (so a restart fits in the master's
/// backlog). Counts the batches.
struct Writer {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicU64::new(0));
        let (stopping, done) = (Arc::clone(&stop), Arc::clone(&batches));
        let handle = std::thread::spawn(move || {
            let mut c = Client::open(port);
            let mut n = 0u64;
            while !stopping.load(Ordering::SeqCst) {
                let mut out = Vec::new();
                let mut replies = 0;
                for db in [b'0', b'2'] {
                    out.extend_from_slice(b"*2\r\n$6\r\nSELECT\r\n$1\r\n");
                    out.push(db);
                    out.extend_from_slice(b"\r\n");
                    replies += 1;
                    for _ in 0..25 {
                        n += 1;
                        let (k, v) = (format!("w:{}", n % 700), format!("value-{n}"));
                        out.extend_from_slice(
                            format!(
                                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                                k.len(),
                                v.len()
                            )
                            .as_bytes(),
                        );
                        out.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$5\r\nticks\r\n");
                        replies += 2;
                    }
                }
                c.send_raw(&out);
                for _ in 0..replies {
                    let reply = c.read_reply();
                    assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
                }
                done.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            batches,
            handle: Some(handle),
        }
    }

    /// Waits until `n` more batches were acknowledged.
    fn wait_batches(&self, n: u64) {
        let target = self.batches.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.batches.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the writer stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
    }
}

/// The field names of an `INFO replication` reply, in order.
fn field_names(info: &str) -> Vec<String> {
    info.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
        .collect()
}

/// Scenario (a): a durable replica of a stock master gets a full sync (a snapshot with keys in
/// two databases, the master's stream in db 3), then the stream (every command kind the
/// executor has, MULTI blocks included); its data equals the master's, its backlog holds the
/// master's stream at the master's offsets under the master's ID, it refuses writes with
/// Redis's `-READONLY`, and its `INFO replication`, `ROLE`, `REPLICAOF` and `CONFIG GET`
/// replies are byte for byte a stock replica's of the same master.
#[test]
fn durable_replica_of_a_stock_master_syncs_streams_and_answers_as_a_stock_replica() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    let mut m = master.client();
    for i in 0..300 {
        m.ok(&["SET", &format!("pre:{i}"), &format!("value-{i}")]);
    }
    m.ok(&["SELECT", "3"]);
    m.ok(&["SET", "in-three", "3"]);
    let mut replica = durable_replica(&dir.path().join("d"), master.port, &[]);
    let stock = stock_replica(&bin, dir.path(), "stock", master.port);
    let logs = log_reader(dir.path(), &["d/master.log", "master/redis.log"]);
    wait_in_sync(master.port, replica.port, &logs);
    // The master's stream is still in db 3: a replica that assumed db 0 after the snapshot
    // would put this key in the wrong database.
    m.ok(&["SET", "still-in-three", "3"]);
    write_mix(&mut m, "a", 60);
    wait_in_sync(master.port, replica.port, &logs);
    // The links cut by the master: a partial resync, after which the stream goes on in the
    // database it had selected (db 5), without a SELECT.
    m.ok(&["SELECT", "5"]);
    m.ok(&["SET", "five-before-cut", "5"]);
    wait_in_sync(master.port, replica.port, &logs);
    let _ = m.call(&["CLIENT", "KILL", "TYPE", "replica"]);
    m.ok(&["SET", "five-after-cut", "5"]);
    m.ok(&["SELECT", "0"]);
    wait_in_sync(master.port, replica.port, &logs);
    wait_in_sync(master.port, stock.port, &logs);
    assert!(
        field(&master.client().info("stats"), "sync_partial_ok") >= 1,
        "{}",
        logs()
    );
    // Both replicas acknowledge the master's last write (REPLCONF GETACK answered).
    m.ok(&["SET", "acked", "1"]);
    assert_eq!(m.integer(&["WAIT", "2", "10000"]), 2, "{}", logs());
    wait_in_sync(master.port, replica.port, &logs);
    wait_in_sync(master.port, stock.port, &logs);
    let want = common::dump(&mut master.client());
    common::assert_same_dataset(
        "durable replica",
        &common::dump(&mut replica.client()),
        &want,
    );
    assert_eq!(count(&replica.log(), "Full resync from master"), 1);

    // The backlog holds the master's history: same ID and offset.
    let (mi, ri) = (
        master.client().info("replication"),
        replica.client().info("replication"),
    );
    assert_eq!(
        info_field(&mi, "master_replid"),
        info_field(&ri, "master_replid")
    );
    assert_eq!(
        field(&mi, "master_repl_offset"),
        field(&ri, "master_repl_offset")
    );

    // Replies byte for byte as the stock replica's (same master, both in sync).
    let (mut d, mut s) = (replica.client(), stock.client());
    let port = master.port.to_string();
    for argv in [
        vec!["SET", "k", "v"],
        vec!["INCR", "n"],
        vec!["WAIT", "0", "0"],
        vec!["ROLE"],
        vec!["REPLICAOF", "127.0.0.1", &port],
        vec!["SLAVEOF", "127.0.0.1", &port],
        vec!["REPLICAOF", "127.0.0.1", "70000"],
        vec!["REPLICAOF", "127.0.0.1", "port"],
        vec!["REPLICAOF", "127.0.0.1", "-1"],
        vec!["REPLICAOF", "127.0.0.1"],
        vec!["CONFIG", "GET", "replicaof"],
        vec!["CONFIG", "GET", "slaveof"],
        vec!["CONFIG", "GET", "masterauth"],
        vec!["CONFIG", "GET", "replica-priority"],
        vec!["CONFIG", "GET", "slave-priority"],
        vec!["CONFIG", "SET", "replicaof", "x"],
        vec!["GET", "pre:7"],
        vec!["MULTI"],
        vec!["SET", "k", "v"],
        vec!["EXEC"],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&d.call_raw(&argv)),
            String::from_utf8_lossy(&s.call_raw(&argv)),
            "{argv:?}"
        );
    }
    assert_eq!(
        d.call_raw(&["SET", "k", "v"]),
        b"-READONLY You can't write against a read only replica.\r\n"
    );
    // INFO replication: the same fields in the same order, and the same values where they
    // describe the same thing.
    let (di, si) = (d.info("replication"), s.info("replication"));
    assert_eq!(field_names(&di), field_names(&si), "{di}\n{si}");
    for name in [
        "role",
        "master_host",
        "master_port",
        "master_link_status",
        "master_sync_in_progress",
        "slave_read_repl_offset",
        "slave_repl_offset",
        "slave_priority",
        "slave_read_only",
        "replica_announced",
        "connected_slaves",
        "master_replid",
        "master_repl_offset",
    ] {
        assert_eq!(info_field(&di, name), info_field(&si, name), "{name}");
    }

    // The link down: the replica's form of a broken link, as the stock replica's.
    drop(master);
    let deadline = Instant::now() + Duration::from_secs(10);
    let down = loop {
        let di = replica.client().info("replication");
        if di.contains("master_link_status:down") {
            break di;
        }
        assert!(Instant::now() < deadline, "link still up:\n{di}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(field_names(&down).contains(&"master_link_down_since_seconds".to_owned()));
    let Reply::Array(role) = replica.client().call(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::Bulk(Some(b"slave".to_vec())));
    assert!(
        matches!(&role[3], Reply::Bulk(Some(s)) if s == b"connect" || s == b"connecting"),
        "{role:?}"
    );
    assert_eq!(role[4], Reply::Integer(-1));
    // The flag survives a restart: the replica still refuses writes before any link.
    replica.restart(&[]);
    assert_eq!(
        replica.client().call_raw(&["SET", "k", "v"]),
        b"-READONLY You can't write against a read only replica.\r\n"
    );
    common::assert_same_dataset(
        "restarted replica",
        &common::dump(&mut replica.client()),
        &want,
    );
}

/// Scenario (b), H3: a durable replica killed with `kill -9` three times while the stock master
/// takes writes, restarted each time under another durability: every restart is a partial
/// resynchronization (the master counts `sync_partial_ok` once per restart, `sync_full` never
/// again), and the data ends equal to the master's. The master syncs from disk, so the first
/// snapshot comes in the `$<len>` form.
#[test]
fn durable_replica_killed_9_under_write_load_always_continues_partially() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master_with(&bin, dir.path(), &["--repl-diskless-sync", "no"]);
    let mut m = master.client();
    for i in 0..200 {
        m.ok(&["SET", &format!("pre:{i}"), &"p".repeat(i)]);
    }
    let mut replica = durable_replica(&dir.path().join("d"), master.port, &[]);
    let logs = log_reader(dir.path(), &["d/master.log", "master/redis.log"]);
    wait_in_sync(master.port, replica.port, &logs);
    let writer = Writer::start(master.port);
    for (round, durability) in ["always", "never", "everysec"].into_iter().enumerate() {
        writer.wait_batches(20);
        replica.kill9();
        writer.wait_batches(5);
        replica.spawn(&["--durability", durability]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let stats = |name: &str| field(&master.client().info("stats"), name);
        while stats("sync_partial_ok") < round as u64 + 1 {
            assert!(
                Instant::now() < deadline,
                "no partial resync after restart {}; logs:\n{}",
                round + 1,
                logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(stats("sync_full"), 1, "restart {}: {}", round + 1, logs());
    }
    writer.wait_batches(10);
    writer.stop();
    wait_in_sync(master.port, replica.port, &logs);
    let stats = master.client().info("stats");
    assert_eq!(field(&stats, "sync_full"), 1, "{}", logs());
    assert_eq!(field(&stats, "sync_partial_ok"), 3, "{}", logs());
    assert_eq!(field(&stats, "sync_partial_err"), 0, "{}", logs());
    assert_eq!(count(&replica.log(), PARTIAL), 3);
    assert_eq!(count(&replica.log(), "bytes from master to memory"), 1);
    common::assert_same_dataset(
        "durable replica",
        &common::dump(&mut replica.client()),
        &common::dump(&mut master.client()),
    );
}

/// Scenario (c), H5: stock master → durable replica → stock sub-replica. The middle node is
/// killed with `kill -9` under writes and restarted while the master is paused (SIGSTOP), so
/// the sub-replica reconnects before the middle node's own link is up: the sub-replica
/// continues partially with it (the restarted middle node counts partial syncs and no full
/// one), keeps continuing partially after its link is cut again (the ID it learnt must still
/// be valid after the middle node took the master's ID back), and all three hold the same
/// data.
#[test]
fn chained_sub_replica_continues_partially_across_a_kill9_of_the_durable_middle() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    let mut middle = durable_replica(&dir.path().join("d"), master.port, &[]);
    let sub = stock_replica(&bin, dir.path(), "sub", middle.port);
    let logs = log_reader(
        dir.path(),
        &["d/master.log", "sub/redis.log", "master/redis.log"],
    );
    write_mix(&mut master.client(), "c", 20);
    wait_in_sync(master.port, middle.port, &logs);
    wait_in_sync(middle.port, sub.port, &logs);
    assert_eq!(count(&sub.log(), FULL), 1);

    let writer = Writer::start(master.port);
    writer.wait_batches(20);
    middle.kill9();
    writer.wait_batches(5);
    writer.stop();
    // The master paused while the middle node restarts: the sub-replica reconnects first and
    // continues under the middle node's fresh ID; the middle node then takes the master's ID
    // back, and must make the sub-replica reconnect to learn it.
    signal(master.pid(), "-STOP");
    middle.spawn(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while field(&middle.client().info("stats"), "sync_partial_ok") == 0 {
        if Instant::now() > deadline {
            signal(master.pid(), "-CONT");
            panic!("the sub-replica did not reconnect; {}", logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(master.pid(), "-CONT");
    write_mix(&mut master.client(), "c2", 10);
    wait_in_sync(master.port, middle.port, &logs);
    wait_in_sync(middle.port, sub.port, &logs);
    let stats = middle.client().info("stats");
    assert!(field(&stats, "sync_partial_ok") >= 1, "{}", logs());
    assert_eq!(field(&stats, "sync_full"), 0, "{}", logs());
    assert_eq!(count(&sub.log(), FULL), 1, "{}", logs());

    // The sub-replica's link cut once more: still partial.
    let partial_before = field(&middle.client().info("stats"), "sync_partial_ok");
    let _ = sub.client().call(&["CLIENT", "KILL", "TYPE", "master"]);
    write_mix(&mut master.client(), "c3", 5);
    let deadline = Instant::now() + Duration::from_secs(30);
    while field(&middle.client().info("stats"), "sync_partial_ok") == partial_before {
        assert!(Instant::now() < deadline, "no reconnection; {}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_in_sync(middle.port, sub.port, &logs);
    assert_eq!(
        field(&middle.client().info("stats"), "sync_full"),
        0,
        "{}",
        logs()
    );
    assert_eq!(count(&sub.log(), FULL), 1, "{}", logs());
    let want = common::dump(&mut master.client());
    common::assert_same_dataset("middle", &common::dump(&mut middle.client()), &want);
    common::assert_same_dataset("sub-replica", &common::dump(&mut sub.client()), &want);
}

/// Scenario (d): stock master → durable replica + stock sibling replica. The master goes away;
/// `REPLICAOF NO ONE` promotes the durable node (a new ID, the master's kept as `replid2`
/// valid up to offset + 1); the sibling, pointed at it, continues partially; writes to the
/// promoted node reach the sibling.
#[test]
fn promoted_durable_replica_keeps_its_sibling_partial() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    let durable = durable_replica(&dir.path().join("d"), master.port, &[]);
    let sibling = stock_replica(&bin, dir.path(), "sibling", master.port);
    let logs = log_reader(dir.path(), &["d/master.log", "sibling/redis.log"]);
    write_mix(&mut master.client(), "d", 30);
    wait_in_sync(master.port, durable.port, &logs);
    wait_in_sync(master.port, sibling.port, &logs);
    let old_id = info_field(&master.client().info("replication"), "master_replid").to_owned();
    let at = offset(master.port);
    drop(master);

    let mut d = durable.client();
    assert_eq!(d.call_raw(&["REPLICAOF", "NO", "ONE"]), b"+OK\r\n");
    assert_eq!(d.call_raw(&["REPLICAOF", "no", "one"]), b"+OK\r\n");
    let info = d.info("replication");
    assert_eq!(info_field(&info, "role"), "master");
    assert_ne!(info_field(&info, "master_replid"), old_id);
    assert_eq!(info_field(&info, "master_replid2"), old_id, "{info}");
    assert_eq!(field(&info, "second_repl_offset"), at + 1, "{info}");
    assert_eq!(field(&info, "master_repl_offset"), at);
    let Reply::Array(role) = d.call(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::Bulk(Some(b"master".to_vec())));
    d.ok(&["SET", "after-promotion", "1"]);

    let partial_before = count(&sibling.log(), PARTIAL);
    sibling
        .client()
        .ok(&["REPLICAOF", "127.0.0.1", &durable.port.to_string()]);
    write_mix(&mut d, "promoted", 10);
    wait_in_sync(durable.port, sibling.port, &logs);
    let stats = durable.client().info("stats");
    assert_eq!(field(&stats, "sync_partial_ok"), 1, "{}", logs());
    assert_eq!(field(&stats, "sync_full"), 0, "{}", logs());
    assert_eq!(count(&sibling.log(), PARTIAL), partial_before + 1);
    common::assert_same_dataset(
        "sibling",
        &common::dump(&mut sibling.client()),
        &common::dump(&mut durable.client()),
    );
}

/// `--masterauth`: a durable replica of a master with `requirepass` authenticates and syncs;
/// with a wrong password its link stays down (Redis's `Unable to AUTH to MASTER` in its log)
/// and it changes nothing.
#[test]
fn masterauth_is_sent_and_a_wrong_one_keeps_the_link_down() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    let mut m = master.client();
    m.ok(&["CONFIG", "SET", "requirepass", "s3cret"]);
    m.ok(&["SET", "k", "v"]);
    let good = durable_replica(
        &dir.path().join("d"),
        master.port,
        &["--masterauth", "s3cret"],
    );
    let logs = log_reader(
        dir.path(),
        &["d/master.log", "w/master.log", "master/redis.log"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while good.client().call(&["GET", "k"]) != Reply::Bulk(Some(b"v".to_vec())) {
        assert!(Instant::now() < deadline, "no sync; {}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let wrong = durable_replica(
        &dir.path().join("w"),
        master.port,
        &["--masterauth", "nope"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&wrong.log(), "Unable to AUTH to MASTER") < 2 {
        assert!(Instant::now() < deadline, "no AUTH failure; {}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = wrong.client().info("replication");
    assert_eq!(info_field(&info, "master_link_status"), "down");
    assert_eq!(wrong.client().call(&["GET", "k"]), Reply::Bulk(None));
    assert_eq!(
        wrong.client().call_raw(&["CONFIG", "GET", "masterauth"]),
        b"*2\r\n$10\r\nmasterauth\r\n$4\r\nnope\r\n"
    );
}

/// Demotion: a durable master whose stock replica was promoted follows it with
/// `REPLICAOF host port` and continues partially (its own history is the new master's
/// `replid2`), then refuses writes and follows the new master's writes. Demoted again after
/// a write no replica received, it gets a full resync and that write is discarded, as Redis
/// does.
#[test]
fn demoted_durable_master_continues_partially_unless_it_has_unreplicated_writes() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("d")).unwrap();
    let durable = DurableMaster::start(
        env!("CARGO_BIN_EXE_durable-master"),
        &dir.path().join("d"),
        &["--backlog-size", "1mb"],
    );
    let stock = stock_replica(&bin, dir.path(), "stock", durable.port);
    let logs = log_reader(dir.path(), &["d/master.log", "stock/redis.log"]);
    let mut d = durable.client();
    write_mix(&mut d, "first", 20);
    wait_in_sync(durable.port, stock.port, &logs);

    // The stock replica becomes the master; the durable one follows it.
    stock.client().ok(&["REPLICAOF", "NO", "ONE"]);
    stock.client().ok(&["SET", "on-new-master", "1"]);
    assert_eq!(
        d.call_raw(&["REPLICAOF", "127.0.0.1", &stock.port.to_string()]),
        b"+OK\r\n"
    );
    wait_in_sync(stock.port, durable.port, &logs);
    let stats = stock.client().info("stats");
    assert_eq!(field(&stats, "sync_partial_ok"), 1, "{}", logs());
    assert_eq!(field(&stats, "sync_full"), 0, "{}", logs());
    assert_eq!(
        d.call_raw(&["SET", "k", "v"]),
        b"-READONLY You can't write against a read only replica.\r\n"
    );
    common::assert_same_dataset(
        "demoted",
        &common::dump(&mut d),
        &common::dump(&mut stock.client()),
    );

    // Promoted again, a write no replica receives, demoted again: a full resync that
    // discards it.
    d.ok(&["REPLICAOF", "NO", "ONE"]);
    d.ok(&["SET", "unreplicated", "lost"]);
    stock.client().ok(&["SET", "on-new-master-2", "2"]);
    d.ok(&["REPLICAOF", "127.0.0.1", &stock.port.to_string()]);
    wait_in_sync(stock.port, durable.port, &logs);
    let stats = stock.client().info("stats");
    assert_eq!(field(&stats, "sync_full"), 1, "{}", logs());
    assert_eq!(d.call(&["GET", "unreplicated"]), Reply::Bulk(None));
    common::assert_same_dataset(
        "demoted twice",
        &common::dump(&mut d),
        &common::dump(&mut stock.client()),
    );
}

/// A replica fully synced from a master at offset 0 (data written before any replica
/// attached, so the stream is still empty) and killed before any stream byte: its restart
/// asks `PSYNC <master id> 1` and continues, not `PSYNC ? -1` as a replica with no history.
#[test]
fn replica_synced_at_offset_zero_continues_after_kill9() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    master.client().ok(&["SET", "k", "v"]);
    let mut replica = durable_replica(&dir.path().join("d"), master.port, &[]);
    let logs = log_reader(dir.path(), &["d/master.log", "master/redis.log"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.client().call(&["GET", "k"]) != Reply::Bulk(Some(b"v".to_vec())) {
        assert!(Instant::now() < deadline, "no sync; {}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(replica.log().contains("Full resync from master: "));
    assert!(replica.log().contains(":0\n"), "{}", logs());
    replica.restart(&[]);
    master.client().ok(&["SET", "k2", "v2"]);
    wait_in_sync(master.port, replica.port, &logs);
    let stats = master.client().info("stats");
    assert_eq!(field(&stats, "sync_partial_ok"), 1, "{}", logs());
    assert_eq!(field(&stats, "sync_full"), 1, "{}", logs());
    common::assert_same_dataset(
        "replica",
        &common::dump(&mut replica.client()),
        &common::dump(&mut master.client()),
    );
}

/// A master stream command this server cannot apply (a hash command) stops the replica
/// before it: its data and backlog stay at the offset before it, equal to the master's
/// there, nothing after it is applied, the log says why, and a `kill -9` + restart still
/// starts (the backlog holds no byte it cannot replay) at that same offset.
#[test]
fn a_master_command_the_replica_cannot_apply_stops_it_before_the_command() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    let mut replica = durable_replica(&dir.path().join("d"), master.port, &[]);
    let logs = log_reader(dir.path(), &["d/master.log", "master/redis.log"]);
    let mut m = master.client();
    // The link is up before the first write, so that write's SELECT is in the stream before
    // `before` (a write made before any replica attached is not propagated, and the SELECT
    // would come with the hash command instead).
    wait_link_up(replica.port);
    m.ok(&["SET", "a", "1"]);
    wait_in_sync(master.port, replica.port, &logs);
    let before = offset(master.port);
    assert_eq!(m.integer(&["HSET", "h", "f", "v"]), 1);
    m.ok(&["SET", "b", "2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&replica.log(), "cannot apply its master's stream") == 0 {
        assert!(Instant::now() < deadline, "not refused; {}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let check = |replica: &DurableMaster| {
        let mut c = replica.client();
        assert_eq!(offset(replica.port), before, "{}", logs());
        assert_eq!(c.call(&["GET", "a"]), Reply::Bulk(Some(b"1".to_vec())));
        assert_eq!(c.call(&["GET", "b"]), Reply::Bulk(None));
    };
    check(&replica);
    replica.restart(&[]);
    check(&replica);
}

/// Waits until the node on `port` reports its link to the master up.
fn wait_link_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Client::open(port)
        .info("replication")
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the link never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node demoted at run time restarts as a replica of the same master (not as a second
/// master taking writes), and one promoted back with `REPLICAOF NO ONE` restarts as a master.
#[test]
fn a_demoted_node_restarts_as_a_replica_and_a_promoted_one_as_a_master() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let master = stock_master(&bin, dir.path());
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let mut node = DurableMaster::start(
        env!("CARGO_BIN_EXE_durable-master"),
        &node_dir,
        &["--backlog-size", "1mb"],
    );
    let port = master.port.to_string();
    node.client().ok(&["REPLICAOF", "127.0.0.1", port.as_str()]);
    wait_link_up(node.port);
    master.client().ok(&["SET", "k", "from-master"]);

    node.kill9();
    node.spawn(&[]);
    wait_link_up(node.port);
    let mut c = node.client();
    assert_eq!(
        c.call(&["SET", "k", "split-brain"]),
        Reply::Error("READONLY You can't write against a read only replica.".into())
    );
    assert!(
        node.log().contains("kept from the last run"),
        "{}",
        node.log()
    );

    c.ok(&["REPLICAOF", "NO", "ONE"]);
    node.kill9();
    node.spawn(&[]);
    let mut c = node.client();
    c.ok(&["SET", "k", "promoted"]);
    let Reply::Array(role) = c.call(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role.first(), Some(&Reply::Bulk(Some(b"master".to_vec()))));
}

/// A durable replica whose master writes faster than it snapshots (a 1 MB ring, snapshots
/// slowed to 2 s) waits for its snapshots without holding its clients: an `INFO` answered
/// while the stream waits shows the wait counted and the snapshot it waits for unfinished (a
/// replica that waited under its lock could only answer once that snapshot was done). It
/// then catches up with the master's exact data.
#[test]
fn a_replica_that_outruns_its_snapshot_keeps_serving_its_clients() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    master.client().ok(&["SET", "k", "v"]);
    let replica = durable_replica(
        &dir.path().join("d"),
        master.port,
        &["--debug-snapshot-delay-ms", "2000"],
    );
    let logs = log_reader(dir.path(), &["d/master.log", "master/redis.log"]);
    wait_in_sync(master.port, replica.port, &logs);
    let mut r = replica.client();
    let before = r.info("persistence");
    let (waits_before, saves_before) = (
        field(&before, "backlog_snapshot_waits"),
        field(&before, "rdb_saves"),
    );
    let mut m = master.client();
    let value = vec![b'r'; 100 * 1024];
    for i in 0..20 {
        m.ok(&[&b"SET"[..], format!("k{i}").as_bytes(), &value]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = r.info("persistence");
        if field(&info, "backlog_snapshot_waits") > waits_before {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never waited; {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        field(&info, "rdb_saves"),
        saves_before,
        "the replica answered only after the snapshot it waited for; {}",
        logs()
    );
    assert_eq!(r.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    wait_in_sync(master.port, replica.port, &logs);
    common::assert_same_dataset(
        "replica",
        &common::dump(&mut replica.client()),
        &common::dump(&mut master.client()),
    );
}

/// Stock master → durable replica → stock sub-replica, under write load, while the durable
/// node's backlog is resized (`CONFIG SET repl-backlog-size`, larger then smaller): the durable
/// node goes on appending its master's stream at the master's offsets, its sender moves to
/// the new file without the sub-replica noticing, and nobody resyncs. Guards against a resize
/// that moves the replica's offsets or drops its sub-replica's link.
#[test]
fn a_durable_replicas_backlog_resized_under_load_keeps_every_link_streaming() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = stock_master(&bin, dir.path());
    let middle = durable_replica(&dir.path().join("d"), master.port, &[]);
    let logs = log_reader(
        dir.path(),
        &["d/master.log", "sub/redis.log", "master/redis.log"],
    );
    write_mix(&mut master.client(), "r", 20);
    wait_in_sync(master.port, middle.port, &logs);
    // Attached once the middle node's own full sync is over (which would drop it otherwise).
    let sub = stock_replica(&bin, dir.path(), "sub", middle.port);
    wait_in_sync(middle.port, sub.port, &logs);
    let syncs = |port: u16| {
        let stats = Client::open(port).info("stats");
        (field(&stats, "sync_full"), field(&stats, "sync_partial_ok"))
    };
    let (master_before, middle_before) = (syncs(master.port), syncs(middle.port));

    let writer = Writer::start(master.port);
    let mut admin = middle.client();
    for (size, bytes) in [("4mb", 4 << 20), ("256kb", 256 << 10), ("2mb", 2 << 20)] {
        writer.wait_batches(10);
        admin.ok(&["CONFIG", "SET", "repl-backlog-size", size]);
        let info = admin.info("replication");
        assert_eq!(field(&info, "repl_backlog_size"), bytes, "{info}");
    }
    writer.wait_batches(10);
    writer.stop();
    wait_in_sync(master.port, middle.port, &logs);
    wait_in_sync(middle.port, sub.port, &logs);
    // The durable node's ROLE reports its master's offset too.
    let role = admin.call(&["ROLE"]);
    let Reply::Array(parts) = role else {
        panic!("{role:?}")
    };
    assert_eq!(
        parts.get(4),
        Some(&Reply::Integer(
            i64::try_from(offset(master.port)).expect("offset")
        )),
        "{parts:?}"
    );
    assert_eq!(syncs(master.port), master_before, "{}", logs());
    assert_eq!(syncs(middle.port), middle_before, "{}", logs());
    assert_eq!(count(&sub.log(), FULL), 1, "{}", logs());
    assert_eq!(count(&middle.log(), "goes on from offset"), 3, "{}", logs());
    let want = common::dump(&mut master.client());
    common::assert_same_dataset("middle", &common::dump(&mut admin), &want);
    common::assert_same_dataset("sub-replica", &common::dump(&mut sub.client()), &want);
}
