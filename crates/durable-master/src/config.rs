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
    /// At start, cut a backlog damaged after the snapshot at the first unusable command
    /// instead of refusing to start (as Redis's `aof-load-truncated`).
    pub(crate) repair: bool,
    /// At start, accept a missing or unreadable snapshot although the backlog wrapped (the
    /// writes before its first offset are lost): start from an empty data set.
    pub(crate) allow_empty_start: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: DEFAULT_PORT,
            bind: "127.0.0.1".to_owned(),
            dir: PathBuf::from("data"),
            backlog_size: 64 * 1024 * 1024,
            durability: Durability::EverySec,
            requirepass: None,
            maxclients: 10_000,
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10,
            repl_timeout: 60,
            timeout: 0,
            output_limit_normal: OutputLimit::NORMAL,
            output_limit_pubsub: OutputLimit::PUBSUB,
            replicaof: None,
            masterauth: None,
            debug_truncate_backlog: None,
            repair: false,
            allow_empty_start: false,
        }
    }
}

pub(crate) const HELP: &str = "\
durable-master: a Redis-protocol master whose replication backlog and data survive kill -9.
Real redis-server replicas follow it with PSYNC, also across its restarts.

USAGE:
    durable-master [OPTIONS]

OPTIONS:
    --port <port>              TCP port [default: 6390]
    --bind <addr>              address to listen on [default: 127.0.0.1]
    --dir <path>               data directory (backlog + dump.rdb) [default: ./data]
    --backlog-size <size>      backlog capacity, Redis size syntax: 1mb, 64kb, 1gb, bytes
                               [default: 64mb; at least 16kb]
    --durability <mode>        always | everysec | never, like appendfsync [default: everysec]
                                 always:   every write is synced before it is acknowledged
                                 everysec: synced once a second (an OS crash loses <= 1 s)
                                 never:    synced at snapshots and shutdown only
                               kill -9 loses nothing acknowledged under every mode.
    --requirepass <password>   clients must AUTH; replicas need masterauth <password>
    --maxclients <n>           most clients connected at once, replicas included; lowered
                               at start to the open-files limit minus 32 [default: 10000]
    --min-replicas-to-write <n>
                               refuse writes (-NOREPLICAS) unless n replicas acknowledged
                               within --min-replicas-max-lag seconds [default: 0, off]
    --min-replicas-max-lag <s> [default: 10; 0 turns the check off]
    --repl-timeout <s>         disconnect a replica silent (no ACK) for s seconds, or that
                               reads nothing for s seconds [default: 60]
    --timeout <s>              close a normal client idle for s seconds [default: 0, never]
    --client-output-buffer-limit '<class> <hard> <soft> <s>'
                               close a client whose unsent replies pass <hard> bytes, or
                               stay above <soft> for <s> seconds; class normal or pubsub
                               (0 turns a limit off) [defaults: normal 0 0 0,
                               pubsub 32mb 8mb 60]
    --replicaof <host> <port>  start as a replica of that master (also one argument
                               \"<host> <port>\"; --slaveof is the same); REPLICAOF at run
                               time changes it, REPLICAOF NO ONE promotes this server
    --masterauth <password>    password for AUTH to the master
    --debug-truncate-backlog <offset>
                               test hook: cut the recovered backlog back to <offset> at
                               start, as an OS crash that lost an unsynced tail would
    --repair                   start even if the backlog is damaged after the snapshot: cut it
                               at the first unusable command (the writes after it are lost)
    --allow-empty-start        start from an empty data set when dump.rdb is missing or
                               unreadable and the backlog no longer starts at offset 1
    -h, --help                 print this help

Attach a replica:  redis-server --port 6391 --replicaof 127.0.0.1 6390
";

/// `--replicaof "<host> <port>"` (one argument, as in a Redis config line) or
/// `--replicaof <host> <port>` (the port taken from the next argument).
fn parse_replicaof(
    name: &str,
    value: String,
    rest: &mut impl Iterator<Item = String>,
) -> Result<(String, u16), String> {
    let (host, port) = match value.split_once(' ') {
        Some((h, p)) => (h.to_owned(), p.trim().to_owned()),
        None => (
            value,
            rest.next()
                .ok_or_else(|| format!("{name} needs a host and a port"))?,
        ),
    };
    let port = port
        .parse()
        .map_err(|_| format!("invalid master port {port:?}"))?;
    Ok((host, port))
}

/// Parses the arguments (without the program name). `Ok(None)`: help was asked for.
// One match arm per option: the option table reads best in one place.
#[allow(clippy::too_many_lines)]
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let mut cfg = Config::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--port" => {
                let v = value()?;
                cfg.port = v.parse().map_err(|_| format!("invalid port {v:?}"))?;
            }
            "--bind" => cfg.bind = value()?,
            "--dir" => cfg.dir = PathBuf::from(value()?),
            "--backlog-size" => {
                let v = value()?;
                let size =
                    durable_resp::parse_size(&v).map_err(|_| format!("invalid size {v:?}"))?;
                if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&size) {
                    return Err(format!(
                        "--backlog-size must be between {MIN_CAPACITY} and {MAX_CAPACITY} bytes"
                    ));
                }
                cfg.backlog_size = size;
            }
            "--durability" => {
                let v = value()?;
                cfg.durability = match v.to_ascii_lowercase().as_str() {
                    "always" => Durability::Always,
                    "everysec" => Durability::EverySec,
                    "never" | "no" => Durability::Never,
                    _ => return Err(format!("invalid durability {v:?}: always|everysec|never")),
                };
            }
            "--requirepass" => {
                let v = value()?;
                cfg.requirepass = (!v.is_empty()).then(|| v.into_bytes());
            }
            "--maxclients" => {
                let v = value()?;
                cfg.maxclients = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("invalid maxclients {v:?}: at least 1"))?;
            }
            "--min-replicas-to-write" => {
                let v = value()?;
                cfg.min_replicas_to_write = v
                    .parse()
                    .map_err(|_| format!("invalid min-replicas-to-write {v:?}"))?;
            }
            "--min-replicas-max-lag" => {
                let v = value()?;
                cfg.min_replicas_max_lag = v
                    .parse()
                    .map_err(|_| format!("invalid min-replicas-max-lag {v:?}"))?;
            }
            "--repl-timeout" => {
                let v = value()?;
                cfg.repl_timeout = v
                    .parse()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| format!("invalid repl-timeout {v:?}: at least 1 second"))?;
            }
            "--timeout" => {
                let v = value()?;
                cfg.timeout = v
                    .parse()
                    .map_err(|_| format!("invalid timeout {v:?}: seconds"))?;
            }
            "--client-output-buffer-limit" => {
                let v = value()?;
                let (class, limit) = parse_output_limit(&v)?;
                match class {
                    OutputClass::Normal => cfg.output_limit_normal = limit,
                    OutputClass::Pubsub => cfg.output_limit_pubsub = limit,
                }
            }
            "--replicaof" | "--slaveof" => {
                cfg.replicaof = Some(parse_replicaof(&name, value()?, &mut args)?);
            }
            "--masterauth" => {
                cfg.masterauth = Some(value()?.into_bytes()).filter(|v| !v.is_empty());
            }
            "--debug-truncate-backlog" => {
                let v = value()?;
                cfg.debug_truncate_backlog =
                    Some(v.parse().map_err(|_| format!("invalid offset {v:?}"))?);
            }
            "--repair" => cfg.repair = true,
            "--allow-empty-start" => cfg.allow_empty_start = true,
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    Ok(Some(cfg))
}

/// The client classes `--client-output-buffer-limit` sets (replicas are bounded by
/// `repl-timeout` instead: they stream from the backlog, with no buffer of their own).
#[derive(Debug, PartialEq, Eq)]
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
        let cfg = parse_args(args("--port 7000 --backlog-size=64kb --durability always"))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.port, 7000);
        assert_eq!(cfg.backlog_size, 65536);
        assert_eq!(cfg.durability, Durability::Always);
        assert!(parse_args(args("--help")).unwrap().is_none());
        assert!(parse_args(args("--backlog-size 1kb")).is_err());
        assert!(parse_args(args("--durability sometimes")).is_err());
        assert!(parse_args(args("--port")).is_err());
        assert!(parse_args(args("--bogus 1")).is_err());
        assert_eq!(
            parse_args(args("--maxclients 50"))
                .unwrap()
                .unwrap()
                .maxclients,
            50
        );
        assert!(parse_args(args("--maxclients 0")).is_err());
        let cfg = parse_args(vec![
            "--client-output-buffer-limit".to_owned(),
            "normal 1mb 512kb 10".to_owned(),
            "--timeout".to_owned(),
            "30".to_owned(),
        ])
        .unwrap()
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
        let two = parse_args(args("--replicaof 10.0.0.1 6379 --masterauth pw"))
            .unwrap()
            .unwrap();
        assert_eq!(two.replicaof, Some(("10.0.0.1".to_owned(), 6379)));
        assert_eq!(two.masterauth.as_deref(), Some(&b"pw"[..]));
        let one = parse_args(vec!["--replicaof".to_owned(), "localhost 7000".to_owned()])
            .unwrap()
            .unwrap();
        assert_eq!(one.replicaof, Some(("localhost".to_owned(), 7000)));
        assert!(parse_args(args("--replicaof host")).is_err());
        assert!(parse_args(args("--replicaof host 70000")).is_err());
    }
}
