//! Command-line options.

use std::path::PathBuf;

use durable_backlog::{Durability, MAX_CAPACITY, MIN_CAPACITY};
use durable_resp::parse_size;

use crate::event_loop::OutputLimit;

/// The default TCP port (Redis's is 6379; this one leaves room for a real Redis beside it).
pub(crate) const DEFAULT_PORT: u16 = 6390;

/// How the server runs.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// TCP port.
    pub(crate) port: u16,
    /// Address to listen on.
    pub(crate) bind: String,
    /// Data directory: `backlog` (the durable backlog, the write-ahead log) and `dump.rdb`
    /// (the latest snapshot).
    pub(crate) dir: PathBuf,
    /// Backlog capacity in bytes.
    pub(crate) backlog_size: u64,
    /// When appends become durable.
    pub(crate) durability: Durability,
    /// Password clients (and replicas, as `masterauth`) must send with `AUTH`.
    pub(crate) requirepass: Option<Vec<u8>>,
    /// Most clients (replicas included) connected at once (Redis's `maxclients`); lowered at
    /// start to what the open-files limit allows.
    pub(crate) maxclients: u64,
    /// Writes are refused unless at least this many replicas are good (Redis's
    /// `min-replicas-to-write`; 0: never refused).
    pub(crate) min_replicas_to_write: u64,
    /// A good replica acknowledged within this many seconds (Redis's `min-replicas-max-lag`;
    /// 0 disables the check).
    pub(crate) min_replicas_max_lag: u64,
    /// Seconds a replica may stay silent (no ACK) or leave a write to it blocked before it is
    /// disconnected (Redis's `repl-timeout`).
    pub(crate) repl_timeout: u64,
    /// Seconds a normal client may stay idle before it is closed (Redis's `timeout`; 0:
    /// never). Replicas, subscribers and clients blocked in `WAIT` are exempt, as in Redis.
    pub(crate) timeout: u64,
    /// `client-output-buffer-limit normal`.
    pub(crate) output_limit_normal: OutputLimit,
    /// `client-output-buffer-limit pubsub`.
    pub(crate) output_limit_pubsub: OutputLimit,
    /// Start as a replica of this master (Redis's `replicaof <host> <port>`).
    pub(crate) replicaof: Option<(String, u16)>,
    /// Password sent with `AUTH` to the master (Redis's `masterauth`).
    pub(crate) masterauth: Option<Vec<u8>>,
    /// Test hook: at start, cut the recovered backlog back to this offset (simulates an OS
    /// crash that lost an unsynced tail).
    pub(crate) debug_truncate_backlog: Option<u64>,
    /// Test hook: how long every background snapshot waits before it is written.
    pub(crate) debug_snapshot_delay: Option<std::time::Duration>,
    /// At start, cut a backlog damaged after the snapshot at the first unusable command
    /// instead of refusing to start (as Redis's `aof-load-truncated`).
    pub(crate) repair: bool,
    /// At start, accept a missing or unreadable snapshot although the backlog wrapped (the
    /// writes before its first offset are lost): start from an empty data set.
    pub(crate) allow_empty_start: bool,
}

impl Default for Config {
    /// The defaults, from the one place that states them: the option table ([`Args`]).
    fn default() -> Self {
        parse_args(Vec::new()).expect("the defaults are valid options")
    }
}

/// The command line, as clap reads it; [`parse_args`] turns it into a [`Config`].
#[derive(Debug, clap::Parser)]
// A later option overrides an earlier one, as with redis-server's command line.
#[command(
    name = "durable-master",
    version,
    args_override_self = true,
    about = "A Redis-protocol master whose replication backlog and data survive kill -9.\n\
             Real redis-server replicas follow it with PSYNC, also across its restarts.",
    after_help = "Attach a replica:  redis-server --port 6391 --replicaof 127.0.0.1 6390"
)]
struct Args {
    /// TCP port
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Data directory (backlog + dump.rdb)
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Backlog capacity, Redis size syntax: 1mb, 64kb, 1gb, bytes; at least 16kb
    #[arg(long, value_name = "SIZE", default_value = "64mb", value_parser = backlog_size)]
    backlog_size: u64,
    /// When writes become durable, like appendfsync. always: every write is synced before
    /// it is acknowledged; everysec: synced once a second (an OS crash loses <= 1 s); never:
    /// synced at snapshots and shutdown only. kill -9 loses nothing acknowledged under every
    /// mode
    #[arg(long, value_name = "MODE", default_value = "everysec", value_parser = durability)]
    durability: Durability,
    /// Clients must AUTH with this password; replicas need masterauth PASSWORD
    #[arg(long, value_name = "PASSWORD")]
    requirepass: Option<String>,
    /// Most clients connected at once, replicas included; lowered at start to the
    /// open-files limit minus 32
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    maxclients: u64,
    /// Refuse writes (-NOREPLICAS) unless N replicas acknowledged within
    /// --min-replicas-max-lag seconds (0: off)
    #[arg(long, value_name = "N", default_value_t = 0)]
    min_replicas_to_write: u64,
    /// See --min-replicas-to-write (0 turns the check off)
    #[arg(long, value_name = "S", default_value_t = 10)]
    min_replicas_max_lag: u64,
    /// Disconnect a replica silent (no ACK) for S seconds, or that reads nothing for S
    /// seconds
    #[arg(long, value_name = "S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    repl_timeout: u64,
    /// Close a normal client idle for S seconds (0: never)
    #[arg(long, value_name = "S", default_value_t = 0)]
    timeout: u64,
    /// 'CLASS HARD SOFT SECONDS': close a client whose unsent replies pass HARD bytes, or
    /// stay above SOFT for SECONDS; CLASS normal or pubsub (0 turns a limit off);
    /// may be given once per class [defaults: normal 0 0 0, pubsub 32mb 8mb 60]
    #[arg(long, value_name = "LIMIT", value_parser = parse_output_limit)]
    client_output_buffer_limit: Vec<(OutputClass, OutputLimit)>,
    /// Start as a replica of that master: HOST PORT, or one argument "HOST PORT";
    /// REPLICAOF at run time changes it, REPLICAOF NO ONE promotes this server
    #[arg(long, visible_alias = "slaveof", value_name = "HOST PORT", num_args = 1..=2)]
    replicaof: Option<Vec<String>>,
    /// Password for AUTH to the master
    #[arg(long, value_name = "PASSWORD")]
    masterauth: Option<String>,
    /// Test hook: cut the recovered backlog back to OFFSET at start, as an OS crash that
    /// lost an unsynced tail would
    #[arg(long, value_name = "OFFSET")]
    debug_truncate_backlog: Option<u64>,
    /// Test hook: every background snapshot waits MS milliseconds before it is written, so
    /// tests can see what goes on while one runs
    #[arg(long, value_name = "MS", hide = true)]
    debug_snapshot_delay_ms: Option<u64>,
    /// Start even if the backlog is damaged after the snapshot: cut it at the first unusable
    /// command (the writes after it are lost)
    #[arg(long)]
    repair: bool,
    /// Start from an empty data set when dump.rdb is missing or unreadable and the backlog
    /// no longer starts at offset 1
    #[arg(long)]
    allow_empty_start: bool,
}

fn backlog_size(v: &str) -> Result<u64, String> {
    let size = parse_size(v).map_err(|_| format!("invalid size {v:?}"))?;
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&size) {
        return Err(format!(
            "must be between {MIN_CAPACITY} and {MAX_CAPACITY} bytes"
        ));
    }
    Ok(size)
}

fn durability(v: &str) -> Result<Durability, String> {
    match v.to_ascii_lowercase().as_str() {
        "always" => Ok(Durability::Always),
        "everysec" => Ok(Durability::EverySec),
        "never" | "no" => Ok(Durability::Never),
        _ => Err("always|everysec|never".to_owned()),
    }
}

/// `--replicaof "<host> <port>"` (one argument, as in a Redis config line) or
/// `--replicaof <host> <port>`.
fn parse_replicaof(values: &[String]) -> Result<(String, u16), String> {
    let (host, port) = match values {
        [one] => one
            .split_once(' ')
            .map(|(h, p)| (h.to_owned(), p.trim().to_owned()))
            .ok_or("--replicaof needs a host and a port")?,
        [host, port] => (host.clone(), port.clone()),
        _ => return Err("--replicaof needs a host and a port".to_owned()),
    };
    let port = port
        .parse()
        .map_err(|_| format!("invalid master port {port:?}"))?;
    Ok((host, port))
}

/// A password option: empty means none, as in Redis.
fn password(p: Option<String>) -> Option<Vec<u8>> {
    p.filter(|p| !p.is_empty()).map(String::into_bytes)
}

/// Parses the arguments (without the program name). `--help`, `--version` and mistakes come
/// back as clap's error, whose `exit()` prints them (status 0 for help, 2 for a mistake).
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Config, clap::Error> {
    use clap::{CommandFactory, Parser};
    let a = Args::try_parse_from(std::iter::once("durable-master".to_owned()).chain(args))?;
    let replicaof = a
        .replicaof
        .as_deref()
        .map(parse_replicaof)
        .transpose()
        .map_err(|e| Args::command().error(clap::error::ErrorKind::ValueValidation, e))?;
    let mut cfg = Config {
        port: a.port,
        bind: a.bind,
        dir: a.dir,
        backlog_size: a.backlog_size,
        durability: a.durability,
        requirepass: password(a.requirepass),
        maxclients: a.maxclients,
        min_replicas_to_write: a.min_replicas_to_write,
        min_replicas_max_lag: a.min_replicas_max_lag,
        repl_timeout: a.repl_timeout,
        timeout: a.timeout,
        replicaof,
        masterauth: password(a.masterauth),
        debug_truncate_backlog: a.debug_truncate_backlog,
        debug_snapshot_delay: a
            .debug_snapshot_delay_ms
            .map(std::time::Duration::from_millis),
        repair: a.repair,
        allow_empty_start: a.allow_empty_start,
        output_limit_normal: OutputLimit::NORMAL,
        output_limit_pubsub: OutputLimit::PUBSUB,
    };
    for (class, limit) in a.client_output_buffer_limit {
        match class {
            OutputClass::Normal => cfg.output_limit_normal = limit,
            OutputClass::Pubsub => cfg.output_limit_pubsub = limit,
        }
    }
    Ok(cfg)
}

/// The client classes `--client-output-buffer-limit` sets (replicas are bounded by
/// `repl-timeout` instead: they stream from the backlog, with no buffer of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputClass {
    Normal,
    Pubsub,
}

/// Parses `<class> <hard> <soft> <soft-seconds>` as Redis's `client-output-buffer-limit`.
fn parse_output_limit(v: &str) -> Result<(OutputClass, OutputLimit), String> {
    let bad = || format!("invalid client-output-buffer-limit {v:?}: <class> <hard> <soft> <s>");
    let words: Vec<&str> = v.split_whitespace().collect();
    let [class, hard, soft, secs] = words.as_slice() else {
        return Err(bad());
    };
    let class = match class.to_ascii_lowercase().as_str() {
        "normal" => OutputClass::Normal,
        "pubsub" => OutputClass::Pubsub,
        _ => return Err(bad()),
    };
    let limit = OutputLimit {
        hard: parse_size(hard).map_err(|_| bad())?,
        soft: parse_size(soft).map_err(|_| bad())?,
        soft_secs: secs.parse().map_err(|_| bad())?,
    };
    Ok((class, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed_and_bad_ones_rejected() {
        let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let cfg = parse_args(args("--port 7000 --backlog-size=64kb --durability always")).unwrap();
        assert_eq!(cfg.port, 7000);
        assert_eq!(cfg.backlog_size, 65536);
        assert_eq!(cfg.durability, Durability::Always);
        assert_eq!(
            parse_args(args("--help")).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
        assert!(parse_args(args("--backlog-size 1kb")).is_err());
        assert!(parse_args(args("--durability sometimes")).is_err());
        assert!(parse_args(args("--port")).is_err());
        assert!(parse_args(args("--bogus 1")).is_err());
        assert_eq!(parse_args(args("--maxclients 50")).unwrap().maxclients, 50);
        assert!(parse_args(args("--maxclients 0")).is_err());
        let cfg = parse_args(vec![
            "--client-output-buffer-limit".to_owned(),
            "normal 1mb 512kb 10".to_owned(),
            "--timeout".to_owned(),
            "30".to_owned(),
        ])
        .unwrap();
        assert_eq!(
            cfg.output_limit_normal,
            OutputLimit {
                hard: 1 << 20,
                soft: 512 << 10,
                soft_secs: 10
            }
        );
        assert_eq!(cfg.output_limit_pubsub, OutputLimit::PUBSUB);
        assert_eq!(cfg.timeout, 30);
        for bad in ["slave 1 1 1", "normal 1 1", "normal x 1 1", "pubsub 1 1 -1"] {
            assert!(parse_output_limit(bad).is_err(), "{bad}");
        }
        let two = parse_args(args("--replicaof 10.0.0.1 6379 --masterauth pw")).unwrap();
        assert_eq!(two.replicaof, Some(("10.0.0.1".to_owned(), 6379)));
        assert_eq!(two.masterauth.as_deref(), Some(&b"pw"[..]));
        let one = parse_args(vec!["--replicaof".to_owned(), "localhost 7000".to_owned()]).unwrap();
        assert_eq!(one.replicaof, Some(("localhost".to_owned(), 7000)));
        assert!(parse_args(args("--replicaof host")).is_err());
        assert!(parse_args(args("--replicaof host 70000")).is_err());
        assert_eq!(parse_args(args("--port 1 --port 2")).unwrap().port, 2);
        let both = parse_args(vec![
            "--client-output-buffer-limit".to_owned(),
            "pubsub 1mb 0 0".to_owned(),
            "--client-output-buffer-limit".to_owned(),
            "normal 2mb 0 0".to_owned(),
            "--slaveof".to_owned(),
            "h".to_owned(),
            "1".to_owned(),
        ])
        .unwrap();
        assert_eq!(both.output_limit_pubsub.hard, 1 << 20);
        assert_eq!(both.output_limit_normal.hard, 2 << 20);
        assert_eq!(both.replicaof, Some(("h".to_owned(), 1)));
        let defaults = Config::default();
        assert_eq!(defaults.backlog_size, 64 << 20);
        assert_eq!(defaults.port, DEFAULT_PORT);
        assert_eq!(defaults.durability, Durability::EverySec);
        assert_eq!(defaults.maxclients, 10_000);
        assert_eq!(defaults.repl_timeout, 60);
    }
}
