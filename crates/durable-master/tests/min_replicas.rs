//! `min-replicas-to-write` / `min-replicas-max-lag` as Redis 7.0: guards against a master that
//! accepts writes no replica will receive (none attached, or the only one stalled), and against
//! refusing what Redis lets through (reads, and commands that fail their own checks first).

use test_redis as common;

use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{Client, RedisGuard, info_field, redis_server, signal};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

/// A pipeline, and Redis 7.0.15's exact answer with `min-replicas-to-write 1` and no replica.
const PIPELINE: &[u8] =
    b"SET k v\r\nGET k\r\nSET k\r\nNOPE\r\nMSET a 1\r\nFLUSHALL\r\nDEL k\r\nINCR k\r\nPING\r\n";
const REFUSED: &str = "-NOREPLICAS Not enough good replicas to write.\r\n$-1\r\n\
    -ERR wrong number of arguments for 'set' command\r\n\
    -ERR unknown command 'NOPE', with args beginning with: \r\n\
    -NOREPLICAS Not enough good replicas to write.\r\n\
    -NOREPLICAS Not enough good replicas to write.\r\n\
    -NOREPLICAS Not enough good replicas to write.\r\n\
    -NOREPLICAS Not enough good replicas to write.\r\n+PONG\r\n";

fn check_refused(c: &mut Client, server: &str) {
    c.send_raw(PIPELINE);
    let got = c.read_exactly(REFUSED.len(), Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&got), REFUSED, "{server}");
    let info = c.info("replication");
    assert_eq!(info_field(&info, "min_slaves_good_slaves"), "0", "{server}");
}

#[test]
fn writes_without_enough_good_replicas_get_noreplicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--min-replicas-to-write",
        "1",
        "--min-replicas-max-lag",
        "1",
    ];
    let master = DurableMaster::start(BINARY, dir.path(), &args);
    check_refused(&mut master.client(), "durable-master");
    assert_eq!(
        info_field(&master.client().info("replication"), "master_repl_offset"),
        "0",
        "nothing refused reached the stream"
    );
    let Some(redis) = redis_server() else { return };
    let rdir = tempfile::tempdir().expect("tempdir");
    let r = RedisGuard::start_with(&redis, rdir.path(), &args);
    check_refused(&mut r.client(), "redis-server");

    // With a replica acknowledging every second, writes go through.
    let replica_dir = dir.path().join("r");
    std::fs::create_dir_all(&replica_dir).expect("replica dir");
    let replica = RedisGuard::start_with(
        &redis,
        &replica_dir,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    let mut c = master.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.call_raw(&["SET", "k", "v"]) != b"+OK\r\n" {
        assert!(Instant::now() < deadline, "never accepted a write");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        info_field(&c.info("replication"), "min_slaves_good_slaves"),
        "1"
    );

    // The replica stalls: once its last ACK is older than the max lag, writes are refused.
    signal(replica.pid(), "-STOP");
    let stopped = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = c.call_raw(&["SET", "k", "v"]);
        if got == b"-NOREPLICAS Not enough good replicas to write.\r\n" {
            break;
        }
        assert_eq!(got, b"+OK\r\n");
        assert!(Instant::now() < deadline, "writes still accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "refused before the replica's lag passed the max lag"
    );
    signal(replica.pid(), "-CONT");
}
