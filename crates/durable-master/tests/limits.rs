//! Client limits against `durable-master`, with Redis's reply bytes: guards against a server
//! that accepts clients until it runs out of file descriptors (`maxclients`), and one that
//! buffers what an unauthenticated client merely announces. Needs no `redis-server`.

use test_redis as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::master::DurableMaster;

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

/// Everything received until the server closes the connection (`true`) or stays silent for
/// `idle` (`false`).
fn read_until_close(s: &mut TcpStream, idle: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(idle)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

fn ping(s: &mut TcpStream) -> Vec<u8> {
    s.write_all(b"PING\r\n").expect("send");
    let mut reply = [0u8; 7];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.read_exact(&mut reply).expect("PONG");
    reply.to_vec()
}

fn clients_connected(m: &DurableMaster) -> u64 {
    let info = m.client().info("clients");
    common::info_field(&info, "connected_clients")
        .parse()
        .expect("connected_clients")
}

#[test]
fn clients_past_maxclients_read_redis_error_and_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &["--maxclients", "50"]);
    // The start probe's connection must be gone before counting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients_connected(&m) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));

    let mut accepted = Vec::new();
    let mut refused = 0;
    let conns: Vec<TcpStream> = (0..60).map(|_| m.connect()).collect();
    // A refused client is told at once, before it sends anything.
    std::thread::sleep(Duration::from_millis(500));
    for mut s in conns {
        let (got, closed) = read_until_close(&mut s, Duration::from_millis(20));
        if got.is_empty() && !closed {
            assert_eq!(ping(&mut s), b"+PONG\r\n");
            accepted.push(s);
        } else {
            assert_eq!(
                String::from_utf8_lossy(&got),
                "-ERR max number of clients reached\r\n"
            );
            assert!(closed, "a refused client is disconnected");
            refused += 1;
        }
    }
    assert_eq!((accepted.len(), refused), (50, 10), "log:\n{}", m.log());
    for s in &mut accepted {
        assert_eq!(ping(s), b"+PONG\r\n");
    }
    let info = common::info_field(&ping_info(&mut accepted[0]), "rejected_connections").to_owned();
    assert_eq!(info, "10");

    // A slot freed by a client that leaves is taken by the next one.
    drop(accepted.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = m.connect();
        let (got, closed) = read_until_close(&mut s, Duration::from_millis(300));
        if got.is_empty() && !closed {
            assert_eq!(ping(&mut s), b"+PONG\r\n");
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `INFO stats` over a raw connection.
fn ping_info(s: &mut TcpStream) -> String {
    s.write_all(b"INFO stats\r\n").expect("send");
    let (got, _) = read_until_close(s, Duration::from_millis(300));
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `input` on a fresh connection; returns what came back and whether the server closed.
fn exchange(m: &DurableMaster, input: &[u8]) -> (String, bool) {
    let mut s = m.connect();
    s.write_all(input).expect("send");
    let (got, closed) = read_until_close(&mut s, Duration::from_millis(500));
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn unauthenticated_clients_cannot_announce_big_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &["--requirepass", "secret"]);
    let multibulk = "-ERR Protocol error: unauthenticated multibulk length\r\n";
    let bulk = "-ERR Protocol error: unauthenticated bulk length\r\n";
    let noauth = "-NOAUTH Authentication required.\r\n";

    assert_eq!(exchange(&m, b"*11\r\n"), (multibulk.to_owned(), true));
    assert_eq!(exchange(&m, b"*2\r\n$16385\r\n"), (bulk.to_owned(), true));
    assert_eq!(
        exchange(&m, b"*1\r\n$4\r\nPING\r\n*11\r\n"),
        (format!("{noauth}{multibulk}"), true)
    );
    // At the limits the request is only refused for want of AUTH.
    let mut at_limits = b"*10\r\n$3\r\nSET\r\n$16384\r\n".to_vec();
    at_limits.extend(vec![b'v'; 16384]);
    at_limits.extend_from_slice(b"\r\n");
    for _ in 0..8 {
        at_limits.extend_from_slice(b"$1\r\nx\r\n");
    }
    assert_eq!(exchange(&m, &at_limits), (noauth.to_owned(), false));

    // Authenticated (in the same pipeline), the client may send big requests.
    let value = vec![b'v'; 20_000];
    let mut big = b"AUTH secret\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n".to_vec();
    big.extend_from_slice(&value);
    big.extend_from_slice(b"\r\n*13\r\n$4\r\nMSET\r\n$1\r\na\r\n");
    for _ in 0..5 {
        big.extend_from_slice(b"$1\r\n1\r\n$1\r\nb\r\n");
    }
    big.extend_from_slice(b"$1\r\n2\r\n");
    assert_eq!(
        exchange(&m, &big),
        ("+OK\r\n+OK\r\n+OK\r\n".to_owned(), false)
    );
}
