//! Test support for the programs' tests that run a real `redis-server` or a `durable-master`
//! child: finding `redis-server` (or skipping loudly),
//! starting it on a free port with a kill-on-drop guard, and a minimal RESP client written
//! independently of the crate's own encoder and parser, so that the two cannot share a bug.

// Test support: a panic here is a failed test.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    missing_docs
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod master;
pub mod sentinel;

/// The `redis-server` binary, or `None` (after the skip notice) when the test should pass
/// without it.
pub fn redis_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("REQUIRE_REDIS").as_deref() != Ok("1"),
            "REQUIRE_REDIS=1 but redis-server was not found on the PATH"
        );
        // Straight to the process's stderr: the test harness captures `eprintln!` of passing
        // tests, and this notice must be seen.
        let _ = std::io::stderr().write_all(
            b"\n************************************************************\n\
              *** SKIPPED: redis-server not found (set REQUIRE_REDIS=1  ***\n\
              *** to make this a failure; apt-get install redis-server) ***\n\
              ************************************************************\n\n",
        );
    }
    found
}

/// A `redis-server` child process, killed (by its PID) and reaped when dropped, also when a
/// test panics.
#[derive(Debug)]
pub struct RedisGuard {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisGuard {
    /// Starts `redis-server` serving `dir/dump.rdb` (loaded if present), without persistence
    /// of its own, and waits until it answers `PING`.
    pub fn start(binary: &Path, dir: &Path) -> RedisGuard {
        Self::start_with(binary, dir, &[])
    }

    /// Like [`RedisGuard::start`], with extra command-line arguments.
    pub fn start_with(binary: &Path, dir: &Path, extra: &[&str]) -> RedisGuard {
        let log = dir.join("redis.log");
        for _attempt in 0..5 {
            let port = free_port();
            let child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir)
                .args([
                    "--dbfilename",
                    "dump.rdb",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--daemonize", "no", "--enable-debug-command", "yes"])
                .args(extra)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut guard = RedisGuard {
                child,
                port,
                log: log.clone(),
            };
            if guard.wait_ready() {
                return guard;
            }
            // Most likely the port was taken between choosing and binding: try another.
        }
        panic!("redis-server did not start; log:\n{}", read_log(&log));
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut client) = Client::connect(self.port) {
                match client.call(&[b"PING"]) {
                    Reply::Status(s) if s == "PONG" => return true,
                    _ => {} // -LOADING while it reads the snapshot
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn client(&self) -> Client {
        Client::open(self.port)
    }

    /// The process ID (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most 30 s) for the process to exit by itself, e.g. after `SHUTDOWN`.
    pub fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not exit");
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// A free port on 127.0.0.1 below the kernel's ephemeral range, so that no outgoing
/// connection (of this test or a parallel one) can take it as its local port between the
/// choice and the server binding it, or while a killed server is restarted on it.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(ephemeral_low / 2);
    for _ in 0..1000 {
        let port = rand::random_range(low..ephemeral_low);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_low}");
}

/// Connects to a server known to be listening on `port`. A refused connection is retried
/// for up to 10 s: this machine's loopback has been seen to refuse a connection to a socket
/// that `ss` listed as listening, with an empty accept queue, and to accept the next one.
pub fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect to 127.0.0.1:{port}: {e}"),
        }
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A minimal blocking RESP client, written independently of the crate's encoder so that the
/// two cannot share a bug.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// A client of a server known to be listening (see [`connect`]).
    pub fn open(port: u16) -> Client {
        Client::over(connect(port)).expect("client socket")
    }

    /// A client if a connection can be made now: for polling a server that is starting.
    pub fn connect(port: u16) -> std::io::Result<Client> {
        Client::over(TcpStream::connect(("127.0.0.1", port))?)
    }

    fn over(stream: TcpStream) -> std::io::Result<Client> {
        stream.set_read_timeout(Some(Duration::from_mins(1)))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Reply {
        let mut out = format!("*{}\r\n", argv.len()).into_bytes();
        for arg in argv {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("send command");
        self.read_reply()
    }

    fn line(&mut self) -> String {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read reply line");
        assert!(line.ends_with(b"\r\n"), "bad reply line {line:?}");
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("reply line is UTF-8")
    }

    pub fn read_reply(&mut self) -> Reply {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(rest.parse().expect("integer reply")),
            "$" => {
                let len: i64 = rest.parse().expect("bulk length");
                if len < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0; usize::try_from(len).expect("length") + 2];
                self.reader.read_exact(&mut buf).expect("read bulk");
                buf.truncate(buf.len() - 2);
                Reply::Bulk(Some(buf))
            }
            "*" => {
                let n: i64 = rest.parse().expect("array length");
                Reply::Array((0..n).map(|_| self.read_reply()).collect())
            }
            _ => panic!("unexpected reply {line:?}"),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends a command and returns its reply's exact bytes.
    pub fn call_raw<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", argv.len()).into_bytes();
        for arg in argv {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.send_raw(&out);
        self.read_raw_reply()
    }

    /// The exact bytes of the next reply.
    pub fn read_raw_reply(&mut self) -> Vec<u8> {
        let mut raw = Vec::new();
        self.reader
            .read_until(b'\n', &mut raw)
            .expect("read reply line");
        let line = String::from_utf8_lossy(&raw[1..raw.len() - 2]).into_owned();
        match raw[0] {
            b'$' => {
                let len: i64 = line.parse().expect("bulk length");
                if len >= 0 {
                    let mut buf = vec![0; usize::try_from(len).expect("length") + 2];
                    self.reader.read_exact(&mut buf).expect("read bulk");
                    raw.extend_from_slice(&buf);
                }
            }
            b'*' => {
                let n: i64 = line.parse().expect("array length");
                for _ in 0..n {
                    raw.extend(self.read_raw_reply());
                }
            }
            _ => {}
        }
        raw
    }

    /// Everything the server sends until it closes the connection or stays silent for
    /// `idle`.
    pub fn read_until_idle(&mut self, idle: Duration) -> Vec<u8> {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(idle)).expect("set timeout");
        let mut out = self.reader.buffer().to_vec();
        self.reader.consume(out.len());
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.get_mut().read(&mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads exactly `n` bytes, waiting at most `timeout` in total; returns what arrived.
    pub fn read_exactly(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; 4096];
        while out.len() < n && Instant::now() < deadline {
            let want = (n - out.len()).min(buf.len());
            let stream = self.reader.get_ref();
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("set timeout");
            match self.reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(_) => {}
            }
        }
        out
    }

    /// Reads one `\n`-terminated line, without the line end.
    pub fn read_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read line");
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        line
    }

    pub fn ok<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        let reply = self.call(argv);
        assert_eq!(reply, Reply::Status("OK".into()), "{:?}", first(argv));
    }

    pub fn integer<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> i64 {
        match self.call(argv) {
            Reply::Integer(n) => n,
            other => panic!("{:?}: expected an integer, got {other:?}", first(argv)),
        }
    }

    pub fn info(&mut self, section: &str) -> String {
        match self.call(&[b"INFO".as_slice(), section.as_bytes()]) {
            Reply::Bulk(Some(text)) => String::from_utf8(text).expect("INFO is text"),
            other => panic!("INFO: {other:?}"),
        }
    }

    /// The number in field `name` of `INFO section`.
    pub fn info_number(&mut self, section: &str, name: &str) -> u64 {
        let info = self.info(section);
        info_field(&info, name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in INFO:\n{info}"))
    }
}

/// The value of field `name` in an INFO reply.
pub fn info_field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in INFO:\n{info}"))
        .trim()
}

pub fn first<A: AsRef<[u8]>>(argv: &[A]) -> String {
    argv.first()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .unwrap_or_default()
}

/// Sends signal `sig` (as `kill` spells it: `-STOP`, `-CONT`, `-9`...) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Every key of every database with its value: `(database, key) -> value`.
pub type Dataset = std::collections::BTreeMap<(u8, Vec<u8>), Vec<u8>>;

/// The whole data set of the server `c` talks to (string keys, databases 0-15), read with
/// `KEYS *` and `MGET`; leaves database 0 selected.
pub fn dump(c: &mut Client) -> Dataset {
    let mut out = Dataset::new();
    for db in 0u8..16 {
        c.ok(&[b"SELECT".to_vec(), db.to_string().into_bytes()]);
        let Reply::Array(keys) = c.call(&[&b"KEYS"[..], b"*"]) else {
            panic!("KEYS")
        };
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|k| match k {
                Reply::Bulk(Some(k)) => k,
                other => panic!("key {other:?}"),
            })
            .collect();
        for chunk in keys.chunks(1000) {
            let mut argv = vec![b"MGET".to_vec()];
            argv.extend(chunk.iter().cloned());
            let Reply::Array(values) = c.call(&argv) else {
                panic!("MGET")
            };
            for (k, v) in chunk.iter().zip(values) {
                let Reply::Bulk(Some(v)) = v else {
                    panic!("value of {k:?}: {v:?}")
                };
                out.insert((db, k.clone()), v);
            }
        }
    }
    c.ok(&[&b"SELECT"[..], b"0"]);
    out
}

/// Panics, naming `what` and the first difference, unless `got` and `want` hold the same
/// keys and values.
pub fn assert_same_dataset(what: &str, got: &Dataset, want: &Dataset) {
    assert_eq!(got.len(), want.len(), "{what}: number of keys");
    if let Some((k, v)) = want.iter().find(|(k, v)| got.get(*k) != Some(*v)) {
        panic!(
            "{what}: key {k:?} expected {:?}, got {:?}",
            String::from_utf8_lossy(v),
            got.get(k).map(|g| String::from_utf8_lossy(g).into_owned())
        );
    }
}
