//! A full disk, for real: the data directory on a small tmpfs that a filler file fills.
//! Snapshots fail there; the master must keep serving reads, refuse writes (and `PING`) with
//! Redis's `-MISCONF` text, never exit, resume writes once space returns, and lose no
//! acknowledged write — also when it is killed and restarted on the still-full disk.
//!
//! Mounting a tmpfs needs root: the test is skipped without it, unless
//! `REQUIRE_TMPFS=1` (CI), where it fails instead.

use test_redis as common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Reply;
use common::master::DurableMaster;

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

const MISCONF: &str = "MISCONF Redis is configured to save RDB snapshots, but it's currently \
    unable to persist to disk. Commands that may modify the data set are disabled, because this \
    instance is configured to report errors during writes if RDB snapshotting fails \
    (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB \
    error.";

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(under: &Path, size: &str) -> Option<Tmpfs> {
        let path = under.join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs { path });
        }
        assert!(
            std::env::var_os("REQUIRE_TMPFS").is_none(),
            "REQUIRE_TMPFS is set but a tmpfs cannot be mounted (root needed)"
        );
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system holding `path` (the filler grows until `ENOSPC`).
fn fill(path: &Path) {
    let mut f = File::create(path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

/// Writes `prefix:<i>` keys until one is refused with `-MISCONF`, recording the acknowledged
/// ones.
fn write_until_refused(
    m: &DurableMaster,
    c: &mut common::Client,
    prefix: &str,
    value: &[u8],
    acked: &mut Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_mins(1);
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "writes never refused; log:\n{}",
            m.log()
        );
        let key = format!("{prefix}:{i}");
        match set(c, &key, value) {
            Reply::Status(s) if s == "OK" => acked.push(key),
            Reply::Error(e) => {
                assert_eq!(e, MISCONF);
                return;
            }
            other => panic!("unexpected reply {other:?}; log:\n{}", m.log()),
        }
    }
}

fn set(c: &mut common::Client, key: &str, value: &[u8]) -> Reply {
    c.call(&[&b"SET"[..], key.as_bytes(), value])
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_resumes_without_losing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(dir.path(), "16m") else {
        return;
    };
    let mut m = DurableMaster::start(BINARY, &fs.path, &["--backlog-size", "1mb"]);
    let mut c = m.client();
    let value = vec![b'v'; 4096];
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("before:{i}");
        assert_eq!(set(&mut c, &key, &value), Reply::Status("OK".into()));
        acked.push(key);
    }
    let filler = fs.path.join("filler");
    fill(&filler);

    // Writes go on until a snapshot is due and fails; then they are refused, and so is PING.
    write_until_refused(&m, &mut c, "during", &value, &mut acked);
    assert_eq!(c.call(&["PING"]), Reply::Error(MISCONF.into()));
    assert_eq!(
        c.call(&["GET", "before:0"]),
        Reply::Bulk(Some(value.clone()))
    );
    let info = c.info("persistence");
    assert_eq!(common::info_field(&info, "rdb_last_bgsave_status"), "err");
    assert!(
        m.alive(),
        "the master exited on a full disk; log:\n{}",
        m.log()
    );

    // Killed and restarted on the still-full disk: it starts, serves every acknowledged write
    // and refuses writes again once a snapshot fails, instead of exiting in a loop.
    m.kill9();
    m.spawn(&[]);
    let mut c = m.client();
    write_until_refused(&m, &mut c, "again", &value, &mut acked);
    assert!(
        m.alive(),
        "the master exited on a full disk; log:\n{}",
        m.log()
    );
    for key in &acked {
        assert_eq!(
            c.call(&["GET", key.as_str()]),
            Reply::Bulk(Some(value.clone())),
            "{key} lost"
        );
    }

    // Space returns: a retried snapshot succeeds and writes are accepted again.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match set(&mut c, "after", &value) {
            Reply::Status(s) if s == "OK" => break,
            Reply::Error(e) => assert_eq!(e, MISCONF),
            other => panic!("unexpected reply {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "writes never resumed; log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    assert!(m.log().contains("writes are accepted again"), "{}", m.log());
    acked.push("after".into());
    m.kill9();
    m.spawn(&[]);
    let mut c = m.client();
    for key in &acked {
        assert_eq!(
            c.call(&["GET", key.as_str()]),
            Reply::Bulk(Some(value.clone())),
            "{key} lost"
        );
    }
}

#[test]
fn a_write_larger_than_the_ring_whose_snapshot_fails_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(dir.path(), "8m") else {
        return;
    };
    let mut m = DurableMaster::start(BINARY, &fs.path, &["--backlog-size", "1mb"]);
    let mut c = m.client();
    c.ok(&["SET", "small", "1"]);
    // 12 MB that do not compress: more than the ring, and a snapshot holding them cannot fit
    // in the file system.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let big: Vec<u8> = (0..12 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    assert_eq!(set(&mut c, "big", &big), Reply::Error(MISCONF.into()));
    assert!(
        matches!(c.call(&["GET", "big"]), Reply::Bulk(None)),
        "the refused write is in the data"
    );
    assert_eq!(c.call(&["GET", "small"]), Reply::Bulk(Some(b"1".to_vec())));
    assert!(m.alive(), "the master exited; log:\n{}", m.log());
    // Snapshots of the data as it is fit: once one is retried, writes go on, and a restart
    // finds the data without the refused write.
    let deadline = Instant::now() + Duration::from_secs(30);
    while set(&mut c, "later", b"2") != Reply::Status("OK".into()) {
        assert!(
            Instant::now() < deadline,
            "writes never resumed; log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    m.kill9();
    m.spawn(&[]);
    let mut c = m.client();
    assert_eq!(c.call(&["GET", "small"]), Reply::Bulk(Some(b"1".to_vec())));
    assert_eq!(c.call(&["GET", "later"]), Reply::Bulk(Some(b"2".to_vec())));
    assert!(matches!(c.call(&["GET", "big"]), Reply::Bulk(None)));
}

/// `CONFIG SET repl-backlog-size` larger than the free space fails with the reason, leaves no
/// temporary file and changes nothing: the backlog keeps its size and its bytes, writes go on,
/// and a restart finds every acknowledged write.
#[test]
fn a_backlog_resize_that_does_not_fit_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(dir.path(), "8m") else {
        return;
    };
    let mut m = DurableMaster::start(BINARY, &fs.path, &["--backlog-size", "1mb"]);
    let mut c = m.client();
    let value = vec![b'v'; 1000];
    assert_eq!(set(&mut c, "a", &value), Reply::Status("OK".into()));
    let reply = String::from_utf8(c.call_raw(&["CONFIG", "SET", "repl-backlog-size", "64mb"]))
        .expect("utf-8");
    assert!(
        reply.starts_with(
            "-ERR CONFIG SET failed (possibly related to argument 'repl-backlog-size') - \
             resizing the backlog: "
        ),
        "{reply:?}"
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "repl-backlog-size"]),
        Reply::Array(vec![
            Reply::Bulk(Some(b"repl-backlog-size".to_vec())),
            Reply::Bulk(Some(b"1048576".to_vec())),
        ])
    );
    let mut files: Vec<String> = std::fs::read_dir(fs.path.join("data"))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "dump.rdb")
        .collect();
    files.sort();
    assert_eq!(files, ["backlog"], "a temporary file was left behind");
    assert_eq!(set(&mut c, "b", &value), Reply::Status("OK".into()));
    // A size that fits still works after the failure.
    c.ok(&["CONFIG", "SET", "repl-backlog-size", "2mb"]);
    assert_eq!(set(&mut c, "c", &value), Reply::Status("OK".into()));
    m.kill9();
    m.spawn(&[]);
    let mut c = m.client();
    for key in ["a", "b", "c"] {
        assert_eq!(
            c.call(&["GET", key]),
            Reply::Bulk(Some(value.clone())),
            "{key}"
        );
    }
}
