//! `WAIT` as Redis 7.0 answers it, with a real `redis-server` replica: guards against a `WAIT`
//! that waits for the whole stream instead of the calling client's own last write (a client
//! that never wrote, or whose writes are acknowledged, must not block behind other clients'
//! writes a stalled replica has not acknowledged), and against error texts that differ from
//! Redis's.

use test_redis as common;

use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{Client, RedisGuard, Reply, info_field, redis_server, signal};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

fn wait(c: &mut Client, n: &str, timeout_ms: &str) -> (i64, Duration) {
    let start = Instant::now();
    let got = c.integer(&["WAIT", n, timeout_ms]);
    (got, start.elapsed())
}

/// Waits until the replica's link is up and it acknowledged the master's whole stream.
fn wait_in_sync(master: &DurableMaster) {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let info = master.client().info("replication");
        let offset = info_field(&info, "master_repl_offset").to_owned();
        if info.contains(&format!("state=online,offset={offset},")) {
            return;
        }
        assert!(Instant::now() < deadline, "no replica caught up:\n{info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn wait_counts_acks_of_the_clients_own_last_write() {
    let Some(redis) = redis_server() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let master = DurableMaster::start(BINARY, dir.path(), &[]);
    let rdir = dir.path().join("r");
    std::fs::create_dir_all(&rdir).expect("replica dir");
    let replica = RedisGuard::start_with(
        &redis,
        &rdir,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    let mut writer = master.client();
    writer.ok(&["SET", "k", "1"]);
    wait_in_sync(&master);
    let mut reader = master.client();
    assert_eq!(
        wait(&mut reader, "0", "0").0,
        1,
        "WAIT 0 0 counts the replica"
    );
    assert_eq!(wait(&mut writer, "1", "5000").0, 1);

    // The replica stalls; the writer's next write cannot be acknowledged.
    signal(replica.pid(), "-STOP");
    writer.ok(&["SET", "k", "2"]);
    let (n, took) = wait(&mut writer, "1", "300");
    assert_eq!(
        n, 0,
        "the stalled replica has not acknowledged the new write"
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // A client that never wrote waits for nothing: the replica covers its offset 0.
    let (n, took) = wait(&mut reader, "1", "0");
    assert_eq!(n, 1);
    assert!(took < Duration::from_secs(1), "{took:?}");
    signal(replica.pid(), "-CONT");
    assert_eq!(wait(&mut writer, "1", "10000").0, 1, "{}", master.log());
}

/// Redis 7.0.15's replies to bad `WAIT` arguments.
const BAD_ARGUMENTS: &[(&[&str], &str)] = &[
    (&["WAIT", "0", "-1"], "-ERR timeout is negative\r\n"),
    (
        &["WAIT", "x", "0"],
        "-ERR value is not an integer or out of range\r\n",
    ),
    (
        &["WAIT", "0", "x"],
        "-ERR timeout is not an integer or out of range\r\n",
    ),
    (
        &["WAIT", "1", "1.5"],
        "-ERR timeout is not an integer or out of range\r\n",
    ),
    (&["WAIT", "-1", "0"], ":0\r\n"),
    (
        &["WAIT", "1"],
        "-ERR wrong number of arguments for 'wait' command\r\n",
    ),
];

fn check_bad_arguments(c: &mut Client, server: &str) {
    for (argv, want) in BAD_ARGUMENTS {
        let got = c.call_raw(argv);
        assert_eq!(String::from_utf8_lossy(&got), *want, "{server}: {argv:?}");
    }
    assert!(matches!(c.call(&["PING"]), Reply::Status(_)));
}

#[test]
fn wait_rejects_bad_arguments_with_redis_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = DurableMaster::start(BINARY, dir.path(), &[]);
    check_bad_arguments(&mut master.client(), "durable-master");
    if let Some(redis) = redis_server() {
        let rdir = tempfile::tempdir().expect("tempdir");
        let r = RedisGuard::start(&redis, rdir.path());
        check_bad_arguments(&mut r.client(), "redis-server");
    }
}
