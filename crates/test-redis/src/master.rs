//! A `durable-master` child process for the tests that drive the binary: started on a port
//! of its own, ready only once it answers `PING`, its log kept in a file the failures print,
//! restartable on the same port, killed with SIGKILL and reaped when dropped.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Client, Reply, connect, free_port, info_field, read_log};

/// A `durable-master` process.
#[derive(Debug)]
pub struct DurableMaster {
    binary: PathBuf,
    child: Option<Child>,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl DurableMaster {
    /// Starts `binary` with its data in `dir/data`, its log in `dir/master.log` and `args`
    /// on every (re)start. If it cannot start on the chosen port (another test bound it
    /// first), tries another.
    pub fn start(binary: &str, dir: &Path, args: &[&str]) -> DurableMaster {
        let mut m = DurableMaster {
            binary: PathBuf::from(binary),
            child: None,
            port: 0,
            dir: dir.to_path_buf(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
        };
        for _attempt in 0..5 {
            m.port = free_port();
            if m.try_spawn(&[]).is_ok() {
                return m;
            }
        }
        panic!("durable-master did not start; log:\n{}", m.log());
    }

    /// Starts the process again (it must not be running) on the same port, with `extra`
    /// arguments this time only.
    pub fn spawn(&mut self, extra: &[&str]) {
        if let Err(why) = self.try_spawn(extra) {
            panic!("durable-master {why}; log:\n{}", self.log());
        }
    }

    fn try_spawn(&mut self, extra: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "durable-master is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("master.log"))
            .expect("master log");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(self.dir.join("data"))
            .args(&self.args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn durable-master");
        let pid = child.id();
        let child = self.child.insert(child);
        // With `--requirepass`, the probe must authenticate to read INFO.
        let password = self
            .args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .skip_while(|&a| a != "--requirepass")
            .nth(1)
            .map(str::to_owned);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("exited: {status}"));
            }
            // Ready when the server on the port is this process: another test's server could
            // answer on a colliding port while this one is still recovering, before it binds.
            if let Ok(mut c) = Client::connect(self.port) {
                if let Some(p) = &password {
                    let _ = c.call(&[b"AUTH".as_slice(), p.as_bytes()]);
                }
                if let Reply::Bulk(Some(info)) = c.call(&[b"INFO".as_slice(), b"server"]) {
                    let info = String::from_utf8_lossy(&info).into_owned();
                    if info_field(&info, "process_id") == pid.to_string() {
                        return Ok(());
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    self.child = None;
                    return Err(format!("port {} is served by another process", self.port));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.child = None;
        Err("did not answer INFO within 20 s".to_owned())
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9 durable-master");
            c.wait().expect("reap durable-master");
        }
    }

    /// `kill -9`, then a start on the same port with `extra` arguments.
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill9();
        self.spawn(extra);
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn client(&self) -> Client {
        Client::open(self.port)
    }

    /// A raw connection (see [`connect`]).
    pub fn connect(&self) -> TcpStream {
        connect(self.port)
    }

    /// The running process's ID.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("durable-master is not running")
            .id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("master.log"))
    }
}

impl Drop for DurableMaster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
