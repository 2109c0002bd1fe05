//! `durable-master` killed with SIGKILL in the middle of concurrent writes: guards against a
//! master that acknowledges a write before it is in the backlog (the write would be lost on
//! restart), or that replays a backlog into different data. Runs every durability mode; needs
//! no `redis-server`.

use test_redis as common;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::info_field;
use common::master::DurableMaster;

fn start(dir: &Path, durability: &str) -> DurableMaster {
    DurableMaster::start(
        env!("CARGO_BIN_EXE_durable-master"),
        dir,
        &["--backlog-size", "1mb", "--durability", durability],
    )
}

fn line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(n) if n > 0 => Some(l.trim_end().to_owned()),
        _ => None,
    }
}

fn kill9_during_concurrent_writes_loses_no_acknowledged_write(durability: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut master = start(dir.path(), durability);
    let port = master.port;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let s = common::connect(port);
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut s = s;
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    // Pipelines of 10, so batches share appends (and commits).
                    let batch: Vec<(String, String)> = (0..10)
                        .map(|j| {
                            (
                                format!("w{w}:{i}:{j}"),
                                format!("{}", i * 10 + j).repeat(20),
                            )
                        })
                        .collect();
                    let mut out = String::new();
                    for (k, v) in &batch {
                        let _ = write!(out, "SET {k} {v}\r\n");
                    }
                    if s.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                    for kv in batch {
                        match line(&mut r).as_deref() {
                            Some("+OK") => acked.lock().expect("lock").push(kv),
                            _ => return,
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    master.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    master.spawn(&[]);
    let s = master.connect();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut s = s;
    for chunk in acked.chunks(500) {
        let mut out = String::new();
        for (k, _) in chunk {
            let _ = write!(out, "GET {k}\r\n");
        }
        s.write_all(out.as_bytes()).expect("send");
        for (k, v) in chunk {
            let header = line(&mut r).expect("reply");
            assert_eq!(
                header,
                format!("${}", v.len()),
                "{durability}: key {k} lost"
            );
            assert_eq!(
                line(&mut r).as_deref(),
                Some(v.as_str()),
                "{durability}: {k}"
            );
        }
    }
}

#[test]
fn kill9_loses_no_acknowledged_write_always() {
    kill9_during_concurrent_writes_loses_no_acknowledged_write("always");
}

#[test]
fn kill9_loses_no_acknowledged_write_everysec() {
    kill9_during_concurrent_writes_loses_no_acknowledged_write("everysec");
}

#[test]
fn kill9_loses_no_acknowledged_write_never() {
    kill9_during_concurrent_writes_loses_no_acknowledged_write("never");
}

/// The start path where the backlog does not cover the bytes after the snapshot (here the
/// backlog file was lost after a clean shutdown): the master starts from the snapshot alone,
/// at the snapshot's offset, under a new replication ID (so no replica can continue a history
/// it cannot serve), with every key of the snapshot, and keeps working and surviving kill -9.
#[test]
fn a_lost_backlog_restarts_from_the_snapshot_under_a_new_replication_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut master = start(dir.path(), "everysec");
    let mut c = master.client();
    for i in 0..1000 {
        c.ok(&["SET", &format!("k{i}"), &format!("v{i}")]);
    }
    let info = c.info("replication");
    let (id, offset) = (
        info_field(&info, "master_replid"),
        info_field(&info, "master_repl_offset"),
    );
    // SHUTDOWN saves a final snapshot at the current offset and exits without a reply.
    c.send_raw(b"*1\r\n$8\r\nSHUTDOWN\r\n");
    assert!(c.read_until_idle(Duration::from_secs(5)).is_empty());
    master.kill9();
    std::fs::remove_file(dir.path().join("data/backlog")).expect("remove the backlog file");

    master.spawn(&[]);
    assert!(
        master.log().contains("starting from the snapshot alone"),
        "{}",
        master.log()
    );
    let mut c = master.client();
    let info = c.info("replication");
    assert_ne!(
        info_field(&info, "master_replid"),
        id,
        "the history must not continue"
    );
    assert_eq!(info_field(&info, "master_repl_offset"), offset);
    for i in (0..1000).step_by(37) {
        assert_eq!(
            c.call(&["GET", &format!("k{i}")]),
            common::Reply::Bulk(Some(format!("v{i}").into_bytes()))
        );
    }
    c.ok(&["SET", "after", "1"]);
    master.restart(&[]);
    let mut c = master.client();
    assert_eq!(c.integer(&["DBSIZE"]), 1001);
    assert_eq!(
        c.call(&["GET", "after"]),
        common::Reply::Bulk(Some(b"1".to_vec()))
    );
}
