//! What a replica may send on its link, as Redis 7.0 decides it: `PSYNC` behind unread
//! replies is refused (the replica would read them as stream), a second `PSYNC` is ignored,
//! and a command that would need a reply closes the link (no reply can go into the stream).
//! The refusal's bytes are compared with `redis-server` when it is installed.

use test_redis as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{RedisGuard, Reply, redis_server};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

/// Sends `input`, then returns what arrives until `idle` passes without a byte (`false`) or
/// the server closes the connection (`true`).
fn exchange(s: &mut TcpStream, input: &[u8], idle: Duration) -> (Vec<u8>, bool) {
    s.write_all(input).expect("send");
    s.set_read_timeout(Some(idle)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

const PENDING: &[u8] = b"+PONG\r\n-ERR SYNC and PSYNC are invalid with pending output\r\n";

#[test]
fn psync_behind_unread_replies_is_refused_like_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let mut s = m.connect();
    let idle = Duration::from_millis(500);
    let (got, closed) = exchange(&mut s, b"PING\r\nPSYNC ? -1\r\n", idle);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(PENDING)
    );
    assert!(!closed);
    // Still a normal client.
    assert_eq!(exchange(&mut s, b"PING\r\n", idle).0, b"+PONG\r\n");
    let info = m.client().info("stats");
    assert_eq!(common::info_field(&info, "sync_full"), "0");
    if let Some(bin) = redis_server() {
        let rdir = tempfile::tempdir().expect("tempdir");
        let redis = RedisGuard::start(&bin, rdir.path());
        let mut r = common::connect(redis.port);
        assert_eq!(exchange(&mut r, b"PING\r\nPSYNC ? -1\r\n", idle).0, PENDING);
    }
}

/// Opens a replica link (`PSYNC ? -1`) and reads its snapshot.
fn replica_link(m: &DurableMaster) -> TcpStream {
    let mut s = m.connect();
    let (got, closed) = exchange(&mut s, b"PSYNC ? -1\r\n", Duration::from_millis(500));
    assert!(got.starts_with(b"+FULLRESYNC "), "{got:?}");
    assert!(!closed);
    s
}

#[test]
fn a_second_psync_is_ignored_and_a_command_needing_a_reply_closes_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let mut c = m.client();
    let idle = Duration::from_millis(500);

    let mut link = replica_link(&m);
    let (got, closed) = exchange(&mut link, b"PSYNC ? -1\r\nREPLCONF ACK 0\r\n", idle);
    assert!(got.is_empty(), "{got:?}");
    assert!(!closed, "a second PSYNC closed the link");
    let info = c.info("stats");
    assert_eq!(common::info_field(&info, "sync_full"), "1");

    // A write (it would be answered) closes the link and changes nothing.
    let (_, closed) = exchange(&mut link, b"SET a 1\r\n", Duration::from_secs(5));
    assert!(closed, "a write on a replica link left it open");
    assert_eq!(c.call(&["GET", "a"]), Reply::Bulk(None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m
        .log()
        .contains("Replica generated a reply to command 'set'")
    {
        assert!(Instant::now() < deadline, "{}", m.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // So does any other command that would be answered.
    let mut link = replica_link(&m);
    let (_, closed) = exchange(&mut link, b"PING\r\n", Duration::from_secs(5));
    assert!(closed, "a PING on a replica link left it open");
}
