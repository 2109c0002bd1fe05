//! Real `redis-sentinel` processes for the high-availability tests: found on the PATH (or
//! skipped loudly, as `redis-server` is), each started with a config file of its own in a
//! directory of its own, on a free port, killed (by PID) and reaped when dropped.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Client, Reply, free_port, read_log};

/// The `redis-sentinel` binary, or `None` (after the skip notice) when the test should pass
/// without it.
pub fn redis_sentinel() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-sentinel"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("REQUIRE_REDIS").as_deref() != Ok("1"),
            "REQUIRE_REDIS=1 but redis-sentinel was not found on the PATH"
        );
        let _ = std::io::stderr().write_all(
            b"\n**************************************************************\n\
              *** SKIPPED: redis-sentinel not found (set REQUIRE_REDIS=1  ***\n\
              *** to make this a failure; apt-get install redis-sentinel) ***\n\
              **************************************************************\n\n",
        );
    }
    found
}

/// How the Sentinels watch the master: short timeouts so a failover takes seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `down-after-milliseconds`.
    pub down_after_ms: u64,
    /// `failover-timeout` (ms).
    pub failover_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            down_after_ms: 1000,
            failover_timeout_ms: 3000,
        }
    }
}

/// One `redis-sentinel` process.
#[derive(Debug)]
pub struct SentinelGuard {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Drop for SentinelGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name every test's Sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

impl SentinelGuard {
    /// Starts a Sentinel in `dir` (created) monitoring the master on `master_port` under
    /// [`MASTER_NAME`] with quorum 2, and waits until it answers `PING`.
    pub fn start(binary: &Path, dir: &Path, master_port: u16, timing: Timing) -> SentinelGuard {
        std::fs::create_dir_all(dir).expect("sentinel dir");
        let log = dir.join("sentinel.log");
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {}\n\
                     sentinel failover-timeout {MASTER_NAME} {}\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    timing.down_after_ms,
                    timing.failover_timeout_ms,
                    dir = dir.display(),
                    log = log.display(),
                ),
            )
            .expect("sentinel.conf");
            let child = Command::new(binary)
                .arg(&conf)
                .args(["--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-sentinel");
            let mut guard = SentinelGuard {
                child,
                port,
                log: log.clone(),
            };
            if guard.wait_ready() {
                return guard;
            }
        }
        panic!("redis-sentinel did not start; log:\n{}", read_log(&log));
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut c) = Client::connect(self.port)
                && c.call(&[b"PING"]) == Reply::Status("PONG".into())
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn client(&self) -> Client {
        Client::open(self.port)
    }

    /// `SENTINEL MASTER mymaster` as field -> value.
    pub fn master(&self) -> HashMap<String, String> {
        pairs(self.client().call(&["SENTINEL", "MASTER", MASTER_NAME]))
    }

    /// `SENTINEL REPLICAS mymaster`, each as field -> value.
    pub fn replicas(&self) -> Vec<HashMap<String, String>> {
        match self.client().call(&["SENTINEL", "REPLICAS", MASTER_NAME]) {
            Reply::Array(items) => items.into_iter().map(pairs).collect(),
            other => panic!("SENTINEL REPLICAS: {other:?}"),
        }
    }

    /// The port of the master it currently names (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub fn master_port(&self) -> u16 {
        match self
            .client()
            .call(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
        {
            Reply::Array(a) if a.len() == 2 => match &a[1] {
                Reply::Bulk(Some(p)) => String::from_utf8_lossy(p).parse().expect("port"),
                other => panic!("port {other:?}"),
            },
            other => panic!("GET-MASTER-ADDR-BY-NAME: {other:?}"),
        }
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

/// A flat field/value array as a map.
fn pairs(reply: Reply) -> HashMap<String, String> {
    let Reply::Array(items) = reply else {
        panic!("expected a field/value array, got {reply:?}")
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected a bulk string, got {other:?}"),
    };
    items
        .chunks(2)
        .map(|kv| (text(&kv[0]), text(&kv[1])))
        .collect()
}

/// Three Sentinels monitoring the master on `master_port`, in `dir/s1`..`dir/s3`.
pub fn three(binary: &Path, dir: &Path, master_port: u16, timing: Timing) -> Vec<SentinelGuard> {
    (1..=3)
        .map(|i| SentinelGuard::start(binary, &dir.join(format!("s{i}")), master_port, timing))
        .collect()
}

/// Every Sentinel's log, for failure messages.
pub fn logs(sentinels: &[SentinelGuard]) -> String {
    sentinels
        .iter()
        .enumerate()
        .map(|(i, s)| format!("--- sentinel {}:\n{}", i + 1, s.log()))
        .collect::<Vec<_>>()
        .join("\n")
}
