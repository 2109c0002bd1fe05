//! durable-master in a Redis high-availability topology run by three real `redis-sentinel`
//! 7.0 processes (quorum 2, `down-after-milliseconds` 1000, `failover-timeout` 3000) beside
//! stock `redis-server` replicas. Guards against a master Sentinel flags `disconnected` or
//! whose restart it cannot see (no `run_id`), against a failed master that comes back
//! writable (split brain) or cannot be demoted (a command of Sentinel's reconfiguration
//! refused, the new master's stream not applied), against writes accepted in the window
//! before the demotion despite `min-replicas-to-write`, against a promoted durable replica
//! whose siblings resync fully (its old master's ID not kept) or whose `kill -9` costs its
//! replicas a full resync, and against a start from another master's snapshot that forgets
//! the snapshot's replication ID (fail-back costs a full resync).
//!
//! Every scenario waits for what Sentinel does (no assertion on how long it took), then reads
//! the kind of each sync from the servers' `INFO stats` and logs, and compares keyspaces.
//! Without `redis-server` / `redis-sentinel` on the PATH these tests print a loud `SKIPPED`
//! notice and pass, unless `REQUIRE_REDIS=1`, in which case they fail.

#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use test_redis as common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::sentinel::{self, SentinelGuard, Timing};
use common::{
    Client, Dataset, RedisGuard, Reply, assert_same_dataset, info_field, read_log, redis_server,
    signal,
};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");
const FULL: &str = "MASTER <-> REPLICA sync: Finished with success";
const PARTIAL: &str = "Successful partial resynchronization with master";
const READONLY: &str = "READONLY You can't write against a read only replica.";
const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";

/// The binaries, or `None` when the test is skipped.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    Some((redis_server()?, sentinel::redis_sentinel()?))
}

fn field(info: &str, name: &str) -> u64 {
    info_field(info, name).parse().expect("numeric INFO field")
}

/// Polls `done` every 50 ms for up to `limit`; panics with `what` and `logs()` if it never
/// holds. The limit is a hang guard, not a performance claim.
fn wait_for(
    what: &str,
    limit: Duration,
    logs: &dyn Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}; logs:\n{}", logs());
}

/// A stock `redis-server` replica of the server on `port`, in `dir/name`.
fn stock_replica(bin: &Path, dir: &Path, name: &str, port: u16, extra: &[&str]) -> RedisGuard {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("replica dir");
    let port = port.to_string();
    let mut args = vec![
        "--replicaof",
        "127.0.0.1",
        port.as_str(),
        "--repl-diskless-sync-delay",
        "0",
    ];
    args.extend_from_slice(extra);
    RedisGuard::start_with(bin, &dir, &args)
}

fn durable(dir: &Path, args: &[&str]) -> DurableMaster {
    std::fs::create_dir_all(dir).expect("durable dir");
    let mut all = vec!["--backlog-size", "1mb"];
    all.extend_from_slice(args);
    DurableMaster::start(BINARY, dir, &all)
}

/// The replication offset of the server on `port`.
fn offset(port: u16) -> u64 {
    field(
        &Client::open(port).info("replication"),
        "master_repl_offset",
    )
}

/// Whether the server on `replica` follows `master` with its link up and at its offset.
fn in_sync(master: u16, replica: u16) -> bool {
    let m = offset(master);
    let info = Client::open(replica).info("replication");
    info.contains("master_link_status:up")
        && info.contains(&format!("master_port:{master}\r\n"))
        && field(&info, "master_repl_offset") == m
}

/// The data set of the server on `port`.
fn dump(port: u16) -> Dataset {
    common::dump(&mut Client::open(port))
}

/// Writes `n` keys tagged `tag` (in db 0 and db 3) and a counter.
fn write(port: u16, tag: &str, n: usize) {
    let mut c = Client::open(port);
    for i in 0..n {
        c.ok(&["SET", &format!("{tag}:{i}"), &format!("value {i}")]);
        c.integer(&["INCR", &format!("{tag}:count")]);
    }
    c.ok(&["SELECT", "3"]);
    c.ok(&["SET", &format!("{tag}:in-3"), "three"]);
}

fn run_id(port: u16) -> String {
    info_field(&Client::open(port).info("server"), "run_id").to_owned()
}

/// Whether every Sentinel lists the node on `port` as a replica of the master on `master`,
/// with its link up and `also` true of its fields.
fn every_sentinel_lists_replica(
    sentinels: &[SentinelGuard],
    port: u16,
    master: u16,
    also: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) -> bool {
    sentinels.iter().all(|s| {
        s.replicas().iter().any(|r| {
            r["port"] == port.to_string()
                && r["flags"] == "slave"
                && r["role-reported"] == "slave"
                && r["master-port"] == master.to_string()
                && r["master-link-status"] == "ok"
                && also(r)
        })
    })
}

/// The durable node served its replica `r` exactly one partial resync and no full one since
/// its start, and `r` was fully synced only once ever.
fn assert_one_partial_sync_served(d: &DurableMaster, r: &RedisGuard, logs: &dyn Fn() -> String) {
    let stats = d.client().info("stats");
    assert_eq!(field(&stats, "sync_full"), 0, "{stats}\n{}", logs());
    assert_eq!(field(&stats, "sync_partial_ok"), 1, "{stats}\n{}", logs());
    assert_eq!(r.log().matches(FULL).count(), 1, "{}", logs());
}

/// Waits until every replica on `replicas` holds all of the master's stream.
fn wait_replicas(logs: &dyn Fn() -> String, master: u16, replicas: &[u16]) {
    wait_for("the replicas to sync", Duration::from_mins(1), logs, || {
        replicas.iter().all(|&r| in_sync(master, r))
    });
}

/// Waits until every replica on `replicas` holds all of the stream of the master on `master`
/// and every Sentinel knows that master, those replicas and the other two Sentinels.
fn wait_settled(
    logs: &dyn Fn() -> String,
    sentinels: &[SentinelGuard],
    master: u16,
    replicas: &[u16],
) {
    wait_replicas(logs, master, replicas);
    wait_for(
        "the Sentinels to settle",
        Duration::from_mins(1),
        logs,
        || sentinels_settled(sentinels, master, replicas.len()),
    );
}

/// Every Sentinel knows the master on `port`, its replicas and the other two Sentinels.
fn sentinels_settled(sentinels: &[SentinelGuard], port: u16, replicas: usize) -> bool {
    sentinels.iter().all(|s| {
        let m = s.master();
        m.get("port").map(String::as_str) == Some(port.to_string().as_str())
            && m.get("num-slaves") == Some(&replicas.to_string())
            && m.get("num-other-sentinels").map(String::as_str) == Some("2")
    })
}

/// H1: three Sentinels monitor durable-master and two stock replicas: the master's link is
/// healthy (flags exactly `master`, Sentinel's pub/sub link subscribed on it), its `run_id`
/// is shown, and a `kill -9` + restart is seen as `+reboot` with the new `run_id`.
#[test]
fn h1_sentinels_monitor_durable_master_and_see_its_restart() {
    let Some((redis, sentinel_bin)) = binaries() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = durable(&dir.path().join("m"), &[]);
    let r1 = stock_replica(&redis, dir.path(), "r1", m.port, &[]);
    let r2 = stock_replica(&redis, dir.path(), "r2", m.port, &[]);
    // No failover wanted here: the master's restart must not look like a failure.
    let timing = Timing {
        down_after_ms: 10_000,
        failover_timeout_ms: 60_000,
    };
    let sentinels = sentinel::three(&sentinel_bin, dir.path(), m.port, timing);
    let mlog = dir.path().join("m/master.log");
    let logs = || {
        format!(
            "{}\n--- master:\n{}",
            sentinel::logs(&sentinels),
            read_log(&mlog)
        )
    };
    write(m.port, "h1", 20);
    wait_settled(&logs, &sentinels, m.port, &[r1.port, r2.port]);
    let first = run_id(m.port);
    for (i, s) in sentinels.iter().enumerate() {
        let master = s.master();
        assert_eq!(
            master["flags"],
            "master",
            "sentinel {i}: {master:?}\n{}",
            logs()
        );
        assert_eq!(master["runid"], first, "sentinel {i}");
        assert_eq!(master["role-reported"], "master", "sentinel {i}");
        for r in s.replicas() {
            assert_eq!(r["flags"], "slave", "sentinel {i}: {r:?}");
            assert_eq!(r["master-link-status"], "ok", "sentinel {i}: {r:?}");
            assert_eq!(r["master-port"], m.port.to_string(), "sentinel {i}: {r:?}");
        }
    }
    // Each Sentinel's hello link is subscribed on the master (a Sentinel that cannot
    // subscribe reconnects every second and shows `disconnected`).
    let Reply::Bulk(Some(list)) = m.client().call(&["CLIENT", "LIST", "TYPE", "pubsub"]) else {
        panic!("CLIENT LIST")
    };
    let list = String::from_utf8(list).expect("text");
    let hello = list
        .lines()
        .filter(|l| l.contains("-pubsub ") && l.contains(" sub=1 "))
        .count();
    assert_eq!(hello, 3, "{list}");

    m.restart(&[]);
    let second = run_id(m.port);
    assert_ne!(first, second, "a restart must draw a new run_id");
    wait_for(
        "+reboot on every Sentinel",
        Duration::from_mins(1),
        &logs,
        || {
            sentinels.iter().all(|s| {
                s.log().contains("+reboot master mymaster") && s.master()["runid"] == second
            })
        },
    );
    wait_for(
        "the replicas to continue",
        Duration::from_mins(1),
        &logs,
        || in_sync(m.port, r1.port) && in_sync(m.port, r2.port),
    );
    assert_eq!(
        field(&m.client().info("stats"), "sync_full"),
        0,
        "{}",
        logs()
    );
    for s in &sentinels {
        assert_eq!(s.master()["flags"], "master", "{}", logs());
        assert_eq!(s.master_port(), m.port);
    }
}

/// H2: the durable master is killed and kept down; Sentinel promotes a stock replica. The
/// durable master restarted with `min-replicas-to-write 1` refuses writes until Sentinel
/// demotes it (`-NOREPLICAS`), then follows the new master with a partial resynchronization
/// (every write it had reached a replica), ends with the new master's keyspace and refuses
/// writes (`-READONLY`).
#[test]
fn h2_sentinel_fails_over_to_a_stock_replica_and_demotes_the_restarted_durable_master() {
    let Some((redis, sentinel_bin)) = binaries() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = durable(
        &dir.path().join("m"),
        &[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            "10",
        ],
    );
    let r1 = stock_replica(&redis, dir.path(), "r1", m.port, &[]);
    let r2 = stock_replica(&redis, dir.path(), "r2", m.port, &[]);
    let sentinels = sentinel::three(&sentinel_bin, dir.path(), m.port, Timing::default());
    let mlog = dir.path().join("m/master.log");
    let logs = || {
        format!(
            "{}\n--- master:\n{}\n--- r1:\n{}\n--- r2:\n{}",
            sentinel::logs(&sentinels),
            read_log(&mlog),
            r1.log(),
            r2.log()
        )
    };
    wait_settled(&logs, &sentinels, m.port, &[r1.port, r2.port]);
    write(m.port, "before", 50);
    wait_replicas(&logs, m.port, &[r1.port, r2.port]);

    m.kill9();
    wait_for(
        "Sentinel to promote a replica",
        Duration::from_mins(1),
        &logs,
        || {
            sentinels
                .iter()
                .all(|s| [r1.port, r2.port].contains(&s.master_port()))
        },
    );
    let new = sentinels[0].master_port();
    let other = if new == r1.port { r2.port } else { r1.port };
    wait_for(
        "the other replica to follow",
        Duration::from_mins(1),
        &logs,
        || in_sync(new, other),
    );
    write(new, "after", 20);

    m.spawn(&[]);
    // The window before Sentinel demotes it: no replica, so no write (a write taken here
    // would be discarded by the demotion's full resync).
    let mut c = m.client();
    let reply = c.call(&["SET", "window", "lost"]);
    let demoted = || matches!(Client::open(m.port).call(&["ROLE"]), Reply::Array(a) if a.first() == Some(&Reply::Bulk(Some(b"slave".to_vec()))));
    match &reply {
        Reply::Error(e) if e == NOREPLICAS => {}
        Reply::Error(e) if e == READONLY && demoted() => {}
        other => panic!("a write before the demotion: {other:?}\n{}", logs()),
    }
    wait_for(
        "Sentinel to demote the durable master",
        Duration::from_mins(2),
        &logs,
        || demoted() && in_sync(new, m.port),
    );
    let log = m.log();
    let after_restart = log
        .rsplit("durable-master 0.1.0 starting")
        .next()
        .unwrap_or_default();
    assert!(
        after_restart.contains(PARTIAL),
        "no partial resync:\n{}",
        logs()
    );
    assert!(
        !after_restart.contains("Full resync from master"),
        "{}",
        logs()
    );
    let stats = Client::open(new).info("stats");
    assert_eq!(field(&stats, "sync_full"), 0, "{stats}\n{}", logs());
    assert_eq!(field(&stats, "sync_partial_ok"), 2, "{stats}\n{}", logs());

    write(new, "later", 10);
    wait_for(
        "the durable replica to catch up",
        Duration::from_mins(1),
        &logs,
        || in_sync(new, m.port),
    );
    let want = dump(new);
    assert!(want.contains_key(&(0, b"after:0".to_vec())));
    assert_same_dataset("demoted durable-master", &dump(m.port), &want);
    assert_eq!(
        m.client().call(&["SET", "k", "v"]),
        Reply::Error(READONLY.into())
    );
    // Each Sentinel's view (refreshed by its next INFO) shows it as the new master's replica.
    wait_for(
        "the Sentinels to list it as a replica",
        Duration::from_mins(1),
        &logs,
        || every_sentinel_lists_replica(&sentinels, m.port, new, |_| true),
    );
}

/// H4: Sentinel promotes the durable replica (the stock master stopped for good; the stock
/// replica has `replica-priority 0`, so it is never chosen). The stock replica continues
/// partially with it; after a `kill -9` and restart of the promoted node it continues
/// partially again.
#[test]
fn h4_sentinel_promotes_the_durable_replica_and_its_kill9_keeps_replicas_partial() {
    let Some((redis, sentinel_bin)) = binaries() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sdir = dir.path().join("s");
    std::fs::create_dir_all(&sdir).expect("dir");
    let s = RedisGuard::start_with(&redis, &sdir, &["--repl-diskless-sync-delay", "0"]);
    // Started as a master and made a replica at run time, so that a restart comes back as
    // a master (REPLICAOF is not persisted: there is no config file).
    let mut d = durable(&dir.path().join("d"), &[]);
    d.client()
        .ok(&["REPLICAOF", "127.0.0.1", &s.port.to_string()]);
    let r = stock_replica(
        &redis,
        dir.path(),
        "r",
        s.port,
        &["--replica-priority", "0"],
    );
    let sentinels = sentinel::three(&sentinel_bin, dir.path(), s.port, Timing::default());
    let dlog = dir.path().join("d/master.log");
    let logs = || {
        format!(
            "{}\n--- durable:\n{}\n--- stock replica:\n{}",
            sentinel::logs(&sentinels),
            read_log(&dlog),
            r.log()
        )
    };
    write(s.port, "stock", 50);
    wait_settled(&logs, &sentinels, s.port, &[d.port, r.port]);
    // Every Sentinel reads the durable replica's INFO as a stock replica's: its link, its
    // priority and its offset.
    wait_for(
        "the Sentinels to read the durable replica",
        Duration::from_mins(1),
        &logs,
        || {
            every_sentinel_lists_replica(&sentinels, d.port, s.port, |r| {
                r["slave-priority"] == "100"
                    && r["replica-announced"] == "1"
                    && r["slave-repl-offset"].parse::<u64>().is_ok_and(|o| o > 0)
            })
        },
    );
    // Sentinel's hello messages published on the master flow through the stream: both
    // replicas must hold every byte before the master dies.
    wait_replicas(&logs, s.port, &[d.port, r.port]);

    signal(s.pid(), "-9");
    wait_for(
        "Sentinel to promote the durable replica",
        Duration::from_mins(1),
        &logs,
        || sentinels.iter().all(|x| x.master_port() == d.port),
    );
    wait_for(
        "the stock replica to follow it",
        Duration::from_mins(1),
        &logs,
        || in_sync(d.port, r.port),
    );
    assert_one_partial_sync_served(&d, &r, &logs);
    write(d.port, "promoted", 30);
    wait_for(
        "the stock replica to sync",
        Duration::from_mins(1),
        &logs,
        || in_sync(d.port, r.port),
    );
    let partial_before = r.log().matches(PARTIAL).count();

    d.restart(&[]);
    wait_for(
        "the stock replica to continue",
        Duration::from_mins(1),
        &logs,
        || in_sync(d.port, r.port),
    );
    assert_one_partial_sync_served(&d, &r, &logs);
    assert!(
        r.log().matches(PARTIAL).count() > partial_before,
        "{}",
        logs()
    );
    write(d.port, "restarted", 10);
    wait_for(
        "the stock replica to sync",
        Duration::from_mins(1),
        &logs,
        || in_sync(d.port, r.port),
    );
    assert_same_dataset("stock replica", &dump(r.port), &dump(d.port));
    assert!(dump(d.port).contains_key(&(0, b"stock:49".to_vec())));
    for x in &sentinels {
        assert_eq!(x.master_port(), d.port, "{}", logs());
    }
}

/// H6: fail-back on a snapshot of the new master. durable-master starts on a stock master's
/// `dump.rdb` (`repl-id`, `repl-offset`) alone; that master's replica, at exactly the RDB's
/// offset, asks for RDB offset + 1 and gets `+CONTINUE`.
#[test]
fn h6_start_on_a_stock_masters_rdb_continues_its_replica_partially() {
    let Some(redis) = redis_server() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let stock_dir = dir.path().join("a");
    std::fs::create_dir_all(&stock_dir).expect("dir");
    // No periodic ping: the replica stays at exactly the RDB's offset.
    let a = RedisGuard::start_with(
        &redis,
        &stock_dir,
        &[
            "--repl-diskless-sync-delay",
            "0",
            "--repl-ping-replica-period",
            "3600",
        ],
    );
    let b = stock_replica(&redis, dir.path(), "b", a.port, &[]);
    let logs = || format!("--- a:\n{}\n--- b:\n{}", a.log(), b.log());
    wait_for("the replica to sync", Duration::from_mins(1), &logs, || {
        in_sync(a.port, b.port)
    });
    write(a.port, "a", 40);
    // The replica's diskless transfer may still hold Redis's child process a moment after
    // the link is up: SAVE is refused until it exits.
    wait_for("SAVE", Duration::from_mins(1), &logs, || {
        match a.client().call(&["SAVE"]) {
            Reply::Status(s) if s == "OK" => true,
            Reply::Error(e) if e == "ERR Background save already in progress" => false,
            other => panic!("SAVE: {other:?}"),
        }
    });
    let at = offset(a.port);
    wait_for("the replica to sync", Duration::from_mins(1), &logs, || {
        in_sync(a.port, b.port)
    });
    assert_eq!(offset(b.port), at);
    let want = dump(a.port);
    // Gone for good (kill -9: a SHUTDOWN would send its replica a GETACK past the RDB).
    signal(a.pid(), "-9");
    let durable_dir = dir.path().join("d");
    std::fs::create_dir_all(durable_dir.join("data")).expect("dir");
    std::fs::copy(
        stock_dir.join("dump.rdb"),
        durable_dir.join("data/dump.rdb"),
    )
    .expect("copy dump.rdb");
    let d = durable(&durable_dir, &[]);
    assert_eq!(offset(d.port), at);
    b.client()
        .ok(&["REPLICAOF", "127.0.0.1", &d.port.to_string()]);
    let logs = || format!("--- durable:\n{}\n--- b:\n{}", d.log(), b.log());
    wait_for(
        "the replica to follow",
        Duration::from_mins(1),
        &logs,
        || in_sync(d.port, b.port),
    );
    let stats = d.client().info("stats");
    assert_eq!(field(&stats, "sync_full"), 0, "{stats}\n{}", logs());
    assert_eq!(field(&stats, "sync_partial_ok"), 1, "{stats}\n{}", logs());
    assert!(
        d.log().contains(&format!(
            "accepted. Sending 0 bytes of backlog starting from offset {}",
            at + 1
        )),
        "{}",
        logs()
    );
    assert_same_dataset("durable-master on the RDB", &dump(d.port), &want);
    write(d.port, "d", 5);
    wait_for("the replica to sync", Duration::from_mins(1), &logs, || {
        in_sync(d.port, b.port)
    });
    assert_same_dataset("its replica", &dump(b.port), &dump(d.port));
}
