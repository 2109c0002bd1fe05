//! How `durable-master` starts on a data directory, driving the real binary: guards against a
//! second instance that disturbs a running master's directory, and against a start that
//! silently comes up with less data than the directory recorded. Needs no `redis-server`.

use test_redis as common;

use std::path::Path;
use std::process::{Command, Output};

use common::Reply;
use common::master::DurableMaster;

const BIN: &str = env!("CARGO_BIN_EXE_durable-master");

/// Runs the binary to completion on `data` (a start expected to be refused).
fn run_once(data: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--port", &common::free_port().to_string(), "--dir"])
        .arg(data)
        .args(extra)
        .output()
        .expect("run durable-master")
}

fn get(master: &DurableMaster, key: &str) -> Reply {
    master.client().call(&[b"GET".as_slice(), key.as_bytes()])
}

/// A second instance on a live directory must fail before it touches anything: it once
/// removed the running master's in-progress snapshot (`temp-<pid>.rdb`) before finding the
/// backlog locked.
#[test]
fn second_instance_is_refused_and_leaves_the_directory_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DurableMaster::start(BIN, dir.path(), &["--backlog-size", "64kb"]);
    a.client().ok(&["SET", "k", "v"]);
    let data = dir.path().join("data");
    let temp = data.join("temp-123.rdb");
    std::fs::write(&temp, b"in-progress snapshot").expect("write temp file");

    let b = run_once(&data, &["--backlog-size", "64kb"]);
    let log = String::from_utf8_lossy(&b.stdout).into_owned() + &String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "the second instance started:\n{log}");
    assert!(log.contains("in use by another durable-master"), "{log}");
    assert_eq!(
        std::fs::read(&temp).ok().as_deref(),
        Some(&b"in-progress snapshot"[..]),
        "the second instance touched the running master's snapshot file\n{log}"
    );
    assert_eq!(
        get(&a, "k"),
        Reply::Bulk(Some(b"v".to_vec())),
        "A still serves"
    );
}
