//! `repl-timeout` on replica links: guards against a replica that stops reading during its
//! full sync pinning a sender thread and the snapshot in memory forever, and against an online
//! replica that never acknowledges anything keeping its link (and the master's accounting of
//! it) forever. Redis 7.0 disconnects both after `repl-timeout`, with the log lines used here.

use test_redis as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::info_field;
use common::master::DurableMaster;
use rand::{RngExt, SeedableRng};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

fn psync_full(m: &DurableMaster) -> TcpStream {
    let mut s = m.connect();
    s.write_all(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n")
        .expect("send PSYNC");
    s
}

fn connected_replicas(m: &DurableMaster) -> String {
    info_field(&m.client().info("replication"), "connected_slaves").to_owned()
}

/// Waits until the master's log has `line` and it counts no replica.
fn wait_disconnected(m: &DurableMaster, line: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if m.log().contains(line) && connected_replicas(m) == "0" {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "replica not disconnected ({line:?}); log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replica_that_stops_reading_during_full_sync_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(
        BINARY,
        dir.path(),
        &["--repl-timeout", "2", "--backlog-size", "64mb"],
    );
    // 32 MB that does not compress: far more than the loopback socket buffers hold.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut c = m.client();
    let mut value = vec![0u8; 1024 * 1024];
    for i in 0..32 {
        rng.fill(&mut value[..]);
        c.ok(&[b"SET".as_slice(), format!("k{i}").as_bytes(), &value]);
    }
    let replica = psync_full(&m);
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected_replicas(&m) != "1" {
        assert!(Instant::now() < deadline, "the replica never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_disconnected(
        &m,
        "Disconnecting timedout replica (full sync)",
        Duration::from_secs(30),
    );
    assert_eq!(c.call_raw(&["PING"]), b"+PONG\r\n");
    drop(replica);
}

#[test]
fn online_replica_that_never_acks_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &["--repl-timeout", "2"]);
    m.client().ok(&["SET", "k", "v"]);
    let mut replica = psync_full(&m);
    replica
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    // It reads everything (snapshot, then the stream) but never sends REPLCONF ACK.
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(20) {
        match replica.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    let took = start.elapsed();
    assert!(received.starts_with(b"+FULLRESYNC "), "{received:?}");
    // `$<len>` framing: exactly `len` snapshot bytes (ending in the EOF opcode and checksum),
    // then nothing but the stream's commands.
    let line_end = |from: usize| {
        from + received[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("line end")
    };
    let bulk_line = line_end(0) + 2;
    let rdb_start = line_end(bulk_line) + 2;
    let len: usize = std::str::from_utf8(&received[bulk_line + 1..rdb_start - 2])
        .expect("utf8")
        .parse()
        .expect("length");
    let rdb = &received[rdb_start..rdb_start + len];
    assert!(rdb.starts_with(b"REDIS"));
    assert_eq!(rdb[len - 9], 0xFF, "EOF opcode before the checksum");
    let rest = &received[rdb_start + len..];
    assert!(rest.is_empty() || rest.starts_with(b"*"), "{rest:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "disconnected after {took:?}"
    );
    wait_disconnected(
        &m,
        "Disconnecting timedout replica (streaming sync)",
        Duration::from_secs(10),
    );
}
