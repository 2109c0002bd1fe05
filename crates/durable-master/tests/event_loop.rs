//! The connection model: idle clients cost no thread, a client that does not read its replies
//! stalls nobody else, `timeout` closes idle clients (not subscribers), and a subscriber that
//! does not read is closed at its output limit. Needs no `redis-server`.

use test_redis as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::master::DurableMaster;

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

/// The server's thread count, from `/proc`.
fn threads(m: &DurableMaster) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads line")
}

fn ping(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"PING\r\n").expect("send");
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply).expect("PONG");
    assert_eq!(&reply, b"+PONG\r\n");
}

/// Whether the server closed `s` within `within` (reading and dropping what it sends).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            // Data, or nothing yet.
            Ok(_) | Err(_) => {}
        }
    }
    false
}

#[test]
fn idle_clients_cost_no_thread_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let before = threads(&m);
    let mut conns: Vec<TcpStream> = (0..2000).map(|_| m.connect()).collect();
    for s in &mut conns {
        ping(s);
    }
    let during = threads(&m);
    assert!(
        during <= before + 2,
        "2000 idle clients took the server from {before} to {during} threads"
    );
    let info = m.client().info("clients");
    assert_eq!(common::info_field(&info, "connected_clients"), "2001");
}

/// A client that sends its commands and hangs up at once (data and FIN in one readiness
/// event) is served and then closed: the loop stops reading a connection at a short read,
/// except after a hang-up, whose end only a further read shows.
#[test]
fn a_client_that_writes_and_hangs_up_at_once_is_served_and_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = m.connect();
            s.write_all(format!("SET k{i} v{i}\r\n").as_bytes())
                .expect("send");
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
            s
        })
        .collect();
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)
            .unwrap_or_else(|e| panic!("client {i} was not closed: {e}"));
        assert_eq!(reply, b"+OK\r\n", "client {i}");
    }
    let mut c = m.client();
    assert_eq!(c.integer(&["DBSIZE"]), 200);
    let info = c.info("clients");
    assert_eq!(common::info_field(&info, "connected_clients"), "1");
}

#[test]
fn a_client_that_does_not_read_stalls_nobody_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let mut c = m.client();
    c.ok(&[&b"SET"[..], b"big", &vec![b'v'; 1 << 20]]);
    // 64 MB of replies the client never reads: far more than the socket buffers hold.
    let mut hog = m.connect();
    let mut pipeline = Vec::new();
    for _ in 0..64 {
        pipeline.extend_from_slice(b"GET big\r\n");
    }
    hog.write_all(&pipeline).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let mut other = m.connect();
    ping(&mut other);
    assert_eq!(c.integer(&["DBSIZE"]), 1);
}

#[test]
fn timeout_closes_idle_clients_but_not_subscribers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &["--timeout", "1"]);
    let mut idle = m.connect();
    ping(&mut idle);
    let mut sub = m.connect();
    sub.write_all(b"SUBSCRIBE news\r\n").expect("send");
    let mut busy = m.connect();
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        ping(&mut busy);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)),
        "an idle client outlived --timeout 1"
    );
    let mut publisher = m.client();
    assert_eq!(publisher.integer(&["PUBLISH", "news", "hi"]), 1);
    assert!(!closed_within(&mut sub, Duration::from_millis(300)));
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_at_its_output_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(
        BINARY,
        dir.path(),
        &["--client-output-buffer-limit", "pubsub 1mb 0 0"],
    );
    let mut sub = m.connect();
    sub.write_all(b"SUBSCRIBE news\r\n").expect("send");
    let mut publisher = m.client();
    let message = vec![b'm'; 64 * 1024];
    let mut delivered = 0;
    for _ in 0..256 {
        delivered += publisher.integer(&[&b"PUBLISH"[..], b"news", &message]);
    }
    assert!(
        delivered < 256,
        "16 MB went to a subscriber that reads nothing"
    );
    assert!(closed_within(&mut sub, Duration::from_secs(10)));
    assert!(
        m.log()
            .contains("overcoming of output buffer limits (pubsub)"),
        "{}",
        m.log()
    );
}

/// The `+OK` replies readable on `s` now, without waiting.
fn oks_ready(s: &mut TcpStream, seen: &mut Vec<u8>) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    s.set_nonblocking(false).expect("blocking");
    seen.windows(5).filter(|w| w == b"+OK\r\n").count()
}

#[test]
fn writes_that_outrun_the_snapshot_wait_without_stalling_other_clients() {
    outrun_the_snapshot(false);
}

#[test]
fn transactions_that_outrun_the_snapshot_wait_without_stalling_other_clients() {
    outrun_the_snapshot(true);
}

/// 20 writes of 100 KB pipelined at once by one client (each in `MULTI`/`EXEC` if
/// `in_transactions`) outrun the snapshot; another client is served while they wait.
fn outrun_the_snapshot(in_transactions: bool) {
    const WRITES: usize = 20;
    // `+OK` of each SET, or of each MULTI and in each EXEC's reply.
    let oks = if in_transactions { 2 * WRITES } else { WRITES };
    let dir = tempfile::tempdir().expect("tempdir");
    // A 1 MB ring and snapshots that take at least 2 s: 100 KB writes fill the ring's
    // uncovered part long before the snapshot that starts at its half finishes.
    let m = DurableMaster::start(
        BINARY,
        dir.path(),
        &["--backlog-size", "1mb", "--debug-snapshot-delay-ms", "2000"],
    );
    let mut b = m.client();
    b.ok(&["SET", "k", "v"]);
    let waits = |c: &mut common::Client| c.info_number("persistence", "backlog_snapshot_waits");
    let before = waits(&mut b);
    let value = vec![b'w'; 100 * 1024];
    let mut a = m.connect();
    let mut pipeline = Vec::new();
    for i in 0..WRITES {
        let key = format!("w{i:02}");
        if in_transactions {
            pipeline.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
        }
        pipeline.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                key.len(),
                value.len()
            )
            .as_bytes(),
        );
        pipeline.extend_from_slice(&value);
        pipeline.extend_from_slice(b"\r\n");
        if in_transactions {
            pipeline.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
        }
    }
    // Sent from a thread: the server stops reading from a client whose write waits, so the
    // send may not finish before the snapshot does.
    let mut sender = a.try_clone().expect("clone");
    let sending = std::thread::spawn(move || sender.write_all(&pipeline).expect("send the writes"));

    // Once a write waits for the snapshot, other clients are still served.
    let deadline = Instant::now() + Duration::from_secs(30);
    while waits(&mut b) == before {
        assert!(Instant::now() < deadline, "no write ever waited");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        b.call(&["GET", "k"]),
        common::Reply::Bulk(Some(b"v".to_vec()))
    );
    assert_eq!(b.call(&["PING"]), common::Reply::Status("PONG".into()));
    let mut seen = Vec::new();
    assert!(
        oks_ready(&mut a, &mut seen) < oks,
        "every write was answered before other clients were: the loop waited for the snapshot"
    );
    // Then every write is done, in order.
    sending.join().expect("sender");
    a.set_read_timeout(Some(Duration::from_mins(1)))
        .expect("timeout");
    while oks_ready(&mut a, &mut seen) < oks {
        assert!(Instant::now() < deadline, "the writes never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        m.log().contains("Writes wait for a snapshot"),
        "{}",
        m.log()
    );
    for i in 0..WRITES {
        match b.call(&["GET", &format!("w{i:02}")]) {
            common::Reply::Bulk(Some(v)) => assert!(v == value, "w{i:02} wrong"),
            _ => panic!("w{i:02} missing"),
        }
    }
}
