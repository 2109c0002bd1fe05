//! A writer process and a read-only tailer process on one backlog file. Guards against a
//! read-only view that needs the writer's lock, accepts bytes torn by another process's
//! writes, misses a lap, never sees new bytes without the in-process condvar, or loses the
//! stream when the writer process dies without closing.
//!
//! The test re-executes its own binary as the writer (`DB_XPROC_ROLE=writer`).
#![allow(clippy::cast_possible_truncation)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use durable_backlog::{Backlog, Durability, Options, RecoveryKind, TailError};

mod stream;
use stream::stream;

const TOTAL: u64 = 8 << 20;
const CAP: u64 = 1 << 20;

/// The child: appends `TOTAL` bytes of the stream at a moderate pace, then dies without
/// closing (as `kill -9` would leave it).
fn writer(path: &str) {
    let mut b = Backlog::create(
        path,
        Options::new().capacity(CAP).durability(Durability::Never),
    )
    .unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut since_pause = 0u64;
    while b.offset() < TOTAL {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (1 + x % 4096).min(TOTAL - b.offset());
        let first = b.offset() + 1;
        let chunk: Vec<u8> = (first..first + len).map(stream).collect();
        b.append(&chunk).unwrap();
        since_pause += len;
        if since_pause > 64 * 1024 {
            since_pause = 0;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::process::exit(0); // no close, no drop: the file is left as a crashed writer leaves it
}

#[test]
fn writer_process_and_read_only_tailer_process() {
    if let Ok(role) = std::env::var("DB_XPROC_ROLE") {
        if role == "writer" {
            writer(&std::env::var("DB_XPROC_PATH").unwrap());
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process_and_read_only_tailer_process",
            "--nocapture",
        ])
        .env("DB_XPROC_ROLE", "writer")
        .env("DB_XPROC_PATH", &path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(2);
    let view = loop {
        assert!(Instant::now() < deadline, "writer never created the file");
        if path.exists() {
            match Backlog::open_read_only(&path) {
                Ok(v) => break v,
                Err(e) => panic!("read-only open: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut cursor = view.cursor(1);
    let mut buf = vec![0u8; 256 * 1024];
    let (mut verified, mut laps) = (0u64, 0u64);
    while cursor.position() <= TOTAL {
        assert!(
            Instant::now() < deadline,
            "tailer stuck at {}",
            cursor.position()
        );
        let at = cursor.position();
        match cursor.read(&mut buf) {
            Ok(0) => {
                cursor.wait(Duration::from_millis(100));
            }
            Ok(n) => {
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, stream(at + i as u64), "wrong byte at {}", at + i as u64);
                }
                verified += n as u64;
            }
            Err(TailError::Overwritten { .. }) => {
                laps += 1;
                cursor = view.cursor(view.first_offset());
            }
            Err(e) => panic!("tailer: {e}"),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "writer process failed: {status}");
    println!("read-only tailer process verified {verified} bytes, lapped {laps} times");
    assert!(
        verified >= CAP,
        "the tailer must have received at least the last ring"
    );

    // The writer died without closing: a new read-only view still trusts its live state
    // (same boot), and so does the next writer's recovery.
    let after = Backlog::open_read_only(&path).unwrap();
    assert_eq!(after.offset(), TOTAL);
    let mut last = vec![0u8; CAP as usize];
    assert_eq!(
        after.read_at(TOTAL - CAP + 1, &mut last).unwrap(),
        last.len()
    );
    assert!(
        last.iter()
            .enumerate()
            .all(|(i, &b)| b == stream(TOTAL - CAP + 1 + i as u64))
    );
    let mut tail = view.cursor(TOTAL + 1);
    assert!(matches!(tail.read(&mut buf), Ok(0)));
    let b = Backlog::open(&path, Options::new()).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::ProcessCrash);
    assert_eq!(b.offset(), TOTAL);
    // The reopen is a new generation: a history change for the view's cursors.
    assert!(matches!(
        tail.read(&mut buf),
        Err(TailError::HistoryChanged)
    ));
}
