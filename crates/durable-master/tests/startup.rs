//! How `durable-master` starts on a data directory, driving the real binary: guards against a
//! second instance that disturbs a running master's directory, and against a start that
//! silently comes up with less data than the directory recorded. Needs no `redis-server`.

use test_redis as common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::master::DurableMaster;
use common::{Reply, info_field};

const BIN: &str = env!("CARGO_BIN_EXE_durable-master");

/// Runs the binary on `data`, for a start expected to be refused: its exit status and log.
/// A process still running after 20 s (it started) is killed and reported as a success.
fn run_once(data: &Path, extra: &[&str]) -> (bool, String) {
    let log_path = data.with_file_name("refused.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(BIN)
        .args(["--port", &common::free_port().to_string(), "--dir"])
        .arg(data)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("run durable-master");
    let deadline = Instant::now() + Duration::from_secs(20);
    let success = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.success();
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            child.wait().expect("reap");
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (success, common::read_log(&log_path))
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

    let (started, log) = run_once(&data, &["--backlog-size", "64kb"]);
    assert!(!started, "the second instance started:\n{log}");
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

/// The FATAL line's "damaged at offset N".
fn refused_offset(log: &str) -> u64 {
    let tail = log
        .split("FATAL: the backlog is damaged at offset ")
        .nth(1)
        .unwrap_or_else(|| panic!("no offset in the refusal:\n{log}"));
    tail.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in the refusal:\n{log}"))
}

/// One damaged byte inside a committed command of the backlog, found after kill -9: the master
/// once replayed up to the damage, cut the file there and started with fewer keys, silently
/// (or, with the damage in a value, replayed it). It must refuse, name the offset and
/// `--repair`, and leave the file byte for byte as it was; `--repair` then starts it from what
/// verifies.
fn damaged_committed_command_refuses_the_start_until_repair(in_value: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--durability", "always", "--backlog-size", "1mb"];
    let mut master = DurableMaster::start(BIN, dir.path(), &args);
    let mut c = master.client();
    // More than one 4 KiB checksum block (the block size of a 1mb backlog) before the damage.
    for i in 0..300 {
        c.ok(&["SET", &format!("before:{i:03}"), "x"]);
    }
    let canary_start: u64 = info_field(&c.info("replication"), "master_repl_offset")
        .parse::<u64>()
        .expect("offset")
        + 1;
    c.ok(&["SET", "canary-key-0123", "canary-value"]);
    for i in 0..300 {
        c.ok(&["SET", &format!("after:{i:03}"), "x"]);
    }
    drop(c);
    master.kill9();

    let data = dir.path().join("data");
    let path = data.join("backlog");
    let mut bytes = std::fs::read(&path).expect("read backlog");
    let key = b"canary-key-0123";
    let hits: Vec<usize> = (0..bytes.len() - key.len())
        .filter(|&i| bytes[i..].starts_with(key))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "the key's bytes appear once, in the data region"
    );
    // The value's first byte (the command still parses: only its checksum tells), or the
    // `$` of the `$15\r\n` before the key.
    let at = if in_value {
        hits[0] + key.len() + "\r\n$12\r\n".len()
    } else {
        hits[0] - "$15\r\n".len()
    };
    assert_eq!(bytes[at], if in_value { b'c' } else { b'$' });
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).expect("damage the backlog");

    let (started, log) = run_once(&data, &args);
    assert!(!started, "started on a damaged backlog:\n{log}");
    assert!(log.contains("FATAL") && log.contains("--repair"), "{log}");
    let cut = refused_offset(&log);
    assert!(
        cut <= canary_start && cut + 4096 > canary_start,
        "refused at {cut}, damaged command starts at {canary_start}:\n{log}"
    );
    assert!(
        std::fs::read(&path).expect("read backlog") == bytes,
        "a refused start changed the backlog file"
    );

    master.spawn(&[args[0], args[1], "--repair"]);
    let mut c = master.client();
    assert_eq!(get(&master, "canary-key-0123"), Reply::Bulk(None));
    assert!(
        master
            .log()
            .contains("--repair: starting from the snapshot")
    );
    c.ok(&["SET", "new", "1"]);
}

#[test]
fn damaged_committed_command_refuses_the_start_until_repair_syntax() {
    damaged_committed_command_refuses_the_start_until_repair(false);
}

#[test]
fn damaged_committed_value_refuses_the_start_until_repair() {
    damaged_committed_command_refuses_the_start_until_repair(true);
}

/// A wrapped backlog without its snapshot: the master once started with the few keys the
/// backlog's bytes rebuild, or none, and reset the backlog. It must refuse, change nothing,
/// and start empty only with `--allow-empty-start`.
#[test]
fn missing_snapshot_beside_a_wrapped_backlog_refuses_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--backlog-size", "16kb"];
    let mut master = DurableMaster::start(BIN, dir.path(), &args);
    let mut c = master.client();
    let value = "v".repeat(100);
    // About 40 KB of stream: the 16 KiB ring wraps (and snapshots are written).
    for i in 0..300 {
        c.ok(&["SET", &format!("key:{i:03}"), &value]);
    }
    drop(c);
    master.kill9();
    let data = dir.path().join("data");
    std::fs::remove_file(data.join("dump.rdb")).expect("a snapshot was written");
    let backlog = std::fs::read(data.join("backlog")).expect("read backlog");

    let (started, log) = run_once(&data, &args);
    assert!(
        !started,
        "started without the snapshot of a wrapped backlog:\n{log}"
    );
    assert!(
        log.contains("dump.rdb is missing and the backlog starts at offset")
            && log.contains("--allow-empty-start"),
        "{log}"
    );
    assert!(
        std::fs::read(data.join("backlog")).expect("read backlog") == backlog,
        "a refused start changed the backlog file"
    );
    assert!(!data.join("dump.rdb").exists());

    master.spawn(&["--allow-empty-start"]);
    let mut c = master.client();
    assert_eq!(c.integer(&["DBSIZE"]), 0);
    c.ok(&["SET", "new", "1"]);
}

/// SIGTERM must stop the master as `SHUTDOWN` does: without a handler it died like kill -9
/// (exit by signal, no final snapshot, the backlog left unclean).
#[test]
fn sigterm_snapshots_closes_the_backlog_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log_path = dir.path().join("master.log");
    let port = common::free_port();
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(BIN)
        .args(["--port", &port.to_string(), "--dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn durable-master");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Ok(mut c) = common::Client::connect(port)
            && c.call(&["PING"]) == Reply::Status("PONG".to_owned())
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no PING answer");
        std::thread::sleep(Duration::from_millis(20));
    };
    c.ok(&["SET", "k", "v"]);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("still running 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = common::read_log(&log_path);
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{log}");
    assert!(
        log.contains("Received SIGTERM scheduling shutdown..."),
        "{log}"
    );
    assert!(data.join("dump.rdb").exists(), "no final snapshot");

    let master = DurableMaster::start(BIN, dir.path(), &[]);
    let log = master.log();
    assert!(log.contains("Backlog opened (clean shutdown)"), "{log}");
    assert_eq!(get(&master, "k"), Reply::Bulk(Some(b"v".to_vec())));
}
