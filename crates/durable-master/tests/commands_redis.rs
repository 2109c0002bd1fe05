//! The server's own commands (`PSYNC`, `REPLCONF`, `SHUTDOWN`, `INFO`) answer malformed and
//! edge-case requests with Redis 7.0's exact bytes, and refuse without side effects: guards
//! against a bad PSYNC offset read as "full sync please", an oversized replica address kept,
//! `SHUTDOWN ABORT` shutting the server down, and a restart Sentinel cannot see. The same
//! requests go to a real `redis-server` when one is installed, which must answer the same.

use test_redis as common;

use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{Client, RedisGuard, info_field};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

/// Requests and the exact replies Redis 7.0.15 gives, in order on one connection.
fn cases() -> Vec<(Vec<Vec<u8>>, Vec<u8>)> {
    let argv = |parts: &[&[u8]]| parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>();
    let not_integer = b"-ERR value is not an integer or out of range\r\n".to_vec();
    let syntax = b"-ERR syntax error\r\n".to_vec();
    let id = [b'a'; 40];
    let host_255 = [b'h'; 255];
    let host_256 = [b'h'; 256];
    vec![
        (argv(&[b"PSYNC", b"?", b"abc"]), not_integer.clone()),
        (
            argv(&[b"PSYNC", b"?", b"18446744073709551616"]),
            not_integer.clone(),
        ),
        (argv(&[b"PSYNC", &id, b"12x"]), not_integer),
        // Still an ordinary client after a refused PSYNC.
        (argv(&[b"PING"]), b"+PONG\r\n".to_vec()),
        (
            argv(&[b"REPLCONF", b"ip-address", &host_255]),
            b"+OK\r\n".to_vec(),
        ),
        (
            argv(&[b"REPLCONF", b"ip-address", &host_256]),
            b"-ERR REPLCONF ip-address provided by replica instance is too long: 256 bytes\r\n"
                .to_vec(),
        ),
        (
            argv(&[b"SHUTDOWN", b"ABORT"]),
            b"-ERR No shutdown in progress.\r\n".to_vec(),
        ),
        (argv(&[b"SHUTDOWN", b"NOSAVE", b"ABORT"]), syntax.clone()),
        (argv(&[b"SHUTDOWN", b"FOO"]), syntax.clone()),
        (argv(&[b"SHUTDOWN", b"SAVE", b"NOSAVE"]), syntax.clone()),
        (argv(&[b"shutdown", b"now", b"abort"]), syntax),
        // None of the refused SHUTDOWNs stopped the server.
        (argv(&[b"PING"]), b"+PONG\r\n".to_vec()),
    ]
}

fn check(client: &mut Client, server: &str) {
    for (argv, want) in cases() {
        let got = client.call_raw(&argv);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{server}: {}",
            String::from_utf8_lossy(&argv.join(&b' '))
        );
    }
}

#[test]
fn server_commands_refuse_bad_requests_with_redis_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    check(&mut m.client(), "durable-master");
    if let Some(redis) = common::redis_server() {
        let rdir = tempfile::tempdir().expect("tempdir");
        let r = RedisGuard::start(&redis, rdir.path());
        check(&mut r.client(), "redis-server");
    }
}

#[test]
fn run_id_is_new_at_every_start_and_not_the_replication_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = DurableMaster::start(BINARY, dir.path(), &[]);
    let ids = |m: &DurableMaster| {
        let mut c = m.client();
        let server = c.info("server");
        let replication = c.info("replication");
        (
            info_field(&server, "run_id").to_owned(),
            info_field(&replication, "master_replid").to_owned(),
        )
    };
    let (run_id, replid) = ids(&m);
    assert_eq!(run_id.len(), 40, "{run_id:?}");
    assert!(
        run_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{run_id:?}"
    );
    assert_ne!(run_id, replid);
    m.restart(&[]);
    let (run_id_2, replid_2) = ids(&m);
    assert_eq!(run_id_2.len(), 40);
    assert_ne!(run_id_2, run_id, "a restart gets a new run_id");
    assert_ne!(run_id_2, replid_2);
}

#[test]
fn shutdown_nosave_stops_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = DurableMaster::start(BINARY, dir.path(), &[]);
    let mut c = m.client();
    c.send_raw(b"SHUTDOWN NOSAVE NOW\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.alive() {
        assert!(
            Instant::now() < deadline,
            "still running; log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
