//! Hostile and broken clients against `durable-master`: guards against a server that panics,
//! hangs, allocates what a client merely announced, or stops serving others when a client
//! sends malformed RESP, huge lengths, wrong arities, or a replica vanishes mid-snapshot.
//! Needs no `redis-server`.

use test_redis as common;

use std::io::{Read, Write};
use std::time::Duration;

use common::master::DurableMaster;

fn start(dir: &std::path::Path) -> DurableMaster {
    DurableMaster::start(
        env!("CARGO_BIN_EXE_durable-master"),
        dir,
        &["--backlog-size", "64kb"],
    )
}

/// Sends `input` on a fresh connection; returns everything received until the server closes
/// the connection or, once it answered, stays silent for half a second.
fn exchange(port: u16, input: &[u8]) -> Vec<u8> {
    let mut s = common::connect(port);
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(input).expect("send");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if !out.is_empty() {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn closes_after(port: u16, input: &[u8]) -> bool {
    let mut s = common::connect(port);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(input).expect("send");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[test]
fn protocol_errors_get_redis_text_and_close_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = start(dir.path());
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"*1\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$999999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*3000000000\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"SET \"a b\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, reply) in cases {
        assert_eq!(exchange(m.port, input), *reply, "{input:?}");
        assert!(closes_after(m.port, input), "{input:?} must close");
    }
    // A 2^31-1 argument count is legal: the server waits for the arguments without
    // allocating for them, and keeps serving others.
    let mut hog = m.connect();
    hog.write_all(b"*2147483647\r\n$536870912\r\nabc")
        .expect("send");
    assert_eq!(exchange(m.port, b"PING\r\n"), b"+PONG\r\n");
}

#[test]
fn arity_and_unknown_commands_get_redis_errors_and_the_connection_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = start(dir.path());
    let out = exchange(
        m.port,
        b"GET\r\nSET k\r\nFOO a b\r\nINCR x y\r\nSELECT 16\r\nSET k v\r\nGET k\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR wrong number of arguments for 'get' command\r\n\
         -ERR wrong number of arguments for 'set' command\r\n\
         -ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n\
         -ERR wrong number of arguments for 'incr' command\r\n\
         -ERR DB index is out of range\r\n\
         +OK\r\n$1\r\nv\r\n"
    );
}

#[test]
fn replica_vanishing_mid_snapshot_leaves_the_server_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = start(dir.path());
    // Enough data for a snapshot that does not fit one socket buffer.
    let mut load = Vec::new();
    for i in 0..2000 {
        let v = format!("{i:0>500}");
        load.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$8\r\nk{i:07}\r\n${}\r\n{v}\r\n",
                v.len()
            )
            .as_bytes(),
        );
    }
    let mut c = m.connect();
    c.set_read_timeout(Some(Duration::from_mins(1)))
        .expect("timeout");
    c.write_all(&load).expect("send");
    let mut replies = vec![0u8; 5 * 2000];
    c.read_exact(&mut replies).expect("replies");
    assert_eq!(replies, b"+OK\r\n".repeat(2000));
    for _ in 0..5 {
        let mut s = m.connect();
        // PSYNC only once REPLCONF's reply is read, as a replica does (behind an unread reply
        // it would be refused).
        s.write_all(b"REPLCONF capa eof capa psync2\r\n")
            .expect("send");
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).expect("+OK");
        s.write_all(b"PSYNC ? -1\r\n").expect("send");
        let mut buf = [0u8; 100];
        let _ = s.read(&mut buf);
        drop(s);
    }
    assert_eq!(exchange(m.port, b"DBSIZE\r\n"), b":2000\r\n");
    let info = String::from_utf8_lossy(&exchange(m.port, b"INFO stats\r\n")).into_owned();
    assert!(info.contains("sync_full:5"), "{info}");
}

#[test]
fn legacy_sync_gets_a_length_prefixed_snapshot_without_fullresync_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = start(dir.path());
    assert_eq!(exchange(m.port, b"SET k v\r\n"), b"+OK\r\n");
    let mut s = m.connect();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"SYNC\r\n").expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(9).any(|w| w == b"REDIS0010") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"$"), "{got:?}");
    let header_end = got.iter().position(|&b| b == b'\n').expect("header");
    assert_eq!(&got[header_end + 1..header_end + 10], b"REDIS0010");
}
