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
