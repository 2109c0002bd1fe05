//! `CONFIG GET | SET | REWRITE | RESETSTAT` over the settings durable-master has, under their
//! Redis names, with Redis 7.0's replies and error texts (checked against `redis-server`
//! 7.0.15).
//!
//! `CONFIG SET` changes the settings of [`crate::settings`] (`requirepass`, `masterauth`,
//! `replica-priority`, `min-replicas-to-write`, `min-replicas-max-lag`, `timeout`,
//! `appendfsync`, `maxclients`) and the backlog's capacity (`repl-backlog-size`) with
//! Redis's checks in Redis's order: every name is looked up first (an unknown name, then an
//! immutable one, then a repeated one fails the whole command), then every value is parsed
//! (Redis's integer and memory rules and bounds; a larger `maxclients` must fit the
//! open-files limit), and only then is anything changed, so a command either sets every pair
//! or none — except that a resize of the backlog, done first, can still fail on the disk
//! (then nothing else is set). `port`, `bind`, `dir` and `replicaof` are refused as Redis
//! refuses an immutable setting.

use durable_backlog::{Durability, MAX_CAPACITY, MIN_CAPACITY};
use durable_resp::{self as resp, parse_i64};

use crate::commands::glob_match;
use crate::server::Server;
use crate::settings::Settings;

/// A setting: its Redis name, an older alias Redis still answers to, its value, and how
/// `CONFIG SET` changes it (`None`: fixed at start).
struct Param {
    name: &'static str,
    alias: Option<&'static str>,
    value: fn(&Server) -> String,
    set: Option<Setter>,
}

/// How a mutable setting is parsed and applied.
#[derive(Clone, Copy)]
enum Setter {
    /// An integer in 0..=2147483647 (Redis's `createIntConfig(..., 0, INT_MAX, ...)`).
    Int(fn(&Settings, u64)),
    /// A string; empty means none.
    Text(fn(&Settings, Option<Vec<u8>>)),
    /// `appendfsync`: `always`, `everysec` or `no`, any case.
    Durability,
    /// `repl-backlog-size`: a memory value (see [`memtoull`]).
    BacklogSize,
    /// `maxclients`: 1 ..= 4294967295 (Redis's `createUIntConfig`), within the open-files
    /// limit.
    MaxClients,
}

/// A value parsed by [`Setter`], applied once every pair parsed.
enum Parsed {
    Int(fn(&Settings, u64), u64),
    Text(fn(&Settings, Option<Vec<u8>>), Vec<u8>),
    Durability(Durability),
    BacklogSize(Vec<u8>, u64),
    MaxClients(u64),
}

/// Redis 7.0's `memtoull`, as `CONFIG SET` reads a memory value: decimal digits (fewer than
/// 128) and an optional unit, case-insensitive: `b` (1), `k` (1000), `kb` (1024), `m`, `mb`,
/// `g`, `gb`. No digits read as 0, a number past 2^64 - 1 as 2^64 - 1, and the product wraps,
/// as in C. `None` where Redis answers "argument must be a memory value" (a sign, another
/// unit, spaces).
fn memtoull(v: &[u8]) -> Option<u64> {
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits >= 128 {
        return None;
    }
    let (num, unit) = v.split_at(digits);
    let mul: u64 = match unit.to_ascii_lowercase().as_slice() {
        b"" | b"b" => 1,
        b"k" => 1000,
        b"kb" => 1024,
        b"m" => 1000 * 1000,
        b"mb" => 1024 * 1024,
        b"g" => 1000 * 1000 * 1000,
        b"gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    let n = num.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(n.wrapping_mul(mul))
}

/// `CONFIG SET repl-backlog-size`'s value: Redis's bounds (1 ..= 2^63 - 1, its text), then
/// this server's largest capacity (the same text with [`MAX_CAPACITY`]); below
/// [`MIN_CAPACITY`] it is raised to it, as Redis raises it to its 16 KiB minimum.
fn backlog_size(v: &[u8]) -> Result<u64, String> {
    let size = memtoull(v).ok_or("argument must be a memory value")?;
    for max in [i64::MAX as u64, MAX_CAPACITY] {
        if size == 0 || size > max {
            return Err(format!("argument must be between 1 and {max} inclusive"));
        }
    }
    Ok(size.max(MIN_CAPACITY))
}

/// Applies `CONFIG SET repl-backlog-size` (the backlog keeps its size if it fails).
fn set_backlog_size(server: &Server, size: u64) -> Result<(), String> {
    server.resize_backlog(size).inspect_err(|e| {
        crate::log::warning(format_args!(
            "CONFIG SET repl-backlog-size {size} failed: {e}"
        ));
    })
}

/// Applies `CONFIG SET appendfsync`: the backlog's policy under the store lock, then the
/// event loop's view of it.
fn set_durability(server: &Server, d: Durability) {
    let mut g = server.store();
    g.get().set_durability(d);
    server.live.set_durability(d);
    crate::log::notice(format_args!("appendfsync set to {}", durability_name(d)));
}

/// Redis's name of a durability (`appendfsync`).
fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Always => "always",
        Durability::EverySec => "everysec",
        Durability::Never => "no",
    }
}

const PARAMS: &[Param] = &[
    Param {
        name: "port",
        alias: None,
        value: |s| s.cfg.port.to_string(),
        set: None,
    },
    Param {
        name: "bind",
        alias: None,
        value: |s| s.cfg.bind.clone(),
        set: None,
    },
    Param {
        name: "dir",
        alias: None,
        value: |s| {
            std::fs::canonicalize(&s.cfg.dir)
                .unwrap_or_else(|_| s.cfg.dir.clone())
                .display()
                .to_string()
        },
        set: None,
    },
    Param {
        name: "requirepass",
        alias: None,
        value: |s| String::from_utf8_lossy(&s.live.requirepass().unwrap_or_default()).into_owned(),
        set: Some(Setter::Text(Settings::set_requirepass)),
    },
    Param {
        name: "maxclients",
        alias: None,
        value: |s| s.live.maxclients().to_string(),
        set: Some(Setter::MaxClients),
    },
    Param {
        name: "repl-backlog-size",
        alias: None,
        value: |s| s.reader().capacity().to_string(),
        set: Some(Setter::BacklogSize),
    },
    // What redis-benchmark asks for before it runs (it warns it could not fetch CONFIG
    // otherwise): no save points (snapshots follow the backlog, see docs/MASTER.md), and
    // an append-only log, the backlog, always on.
    Param {
        name: "save",
        alias: None,
        value: |_| String::new(),
        set: None,
    },
    Param {
        name: "appendonly",
        alias: None,
        value: |_| "yes".to_owned(),
        set: None,
    },
    Param {
        name: "appendfsync",
        alias: None,
        value: |s| durability_name(s.live.durability()).to_owned(),
        set: Some(Setter::Durability),
    },
    Param {
        name: "min-replicas-to-write",
        alias: Some("min-slaves-to-write"),
        value: |s| s.live.min_replicas_to_write().to_string(),
        set: Some(Setter::Int(Settings::set_min_replicas_to_write)),
    },
    Param {
        name: "min-replicas-max-lag",
        alias: Some("min-slaves-max-lag"),
        value: |s| s.live.min_replicas_max_lag().to_string(),
        set: Some(Setter::Int(Settings::set_min_replicas_max_lag)),
    },
    Param {
        name: "replicaof",
        alias: Some("slaveof"),
        value: |s| {
            s.upstream
                .master()
                .map(|(host, port)| format!("{host} {port}"))
                .unwrap_or_default()
        },
        // Immutable in Redis too: REPLICAOF changes it.
        set: None,
    },
    Param {
        name: "masterauth",
        alias: None,
        value: |s| String::from_utf8_lossy(&s.live.masterauth().unwrap_or_default()).into_owned(),
        set: Some(Setter::Text(Settings::set_masterauth)),
    },
    Param {
        name: "replica-priority",
        alias: Some("slave-priority"),
        value: |s| s.live.replica_priority().to_string(),
        set: Some(Setter::Int(Settings::set_replica_priority)),
    },
    Param {
        name: "timeout",
        alias: None,
        value: |s| s.live.timeout().to_string(),
        set: Some(Setter::Int(Settings::set_timeout)),
    },
];

fn arity(sub: &str) -> Vec<u8> {
    resp::error(format!("ERR wrong number of arguments for 'config|{sub}' command").as_bytes())
}

/// `CONFIG <subcommand> ...`.
pub(crate) fn config(server: &Server, argv: &[Vec<u8>]) -> Vec<u8> {
    let Some(sub) = argv.get(1) else {
        return resp::error(b"ERR wrong number of arguments for 'config' command");
    };
    let n = argv.len();
    match sub.to_ascii_lowercase().as_slice() {
        b"get" if n >= 3 => get(server, argv.get(2..).unwrap_or_default()),
        b"get" => arity("get"),
        b"set" if n >= 4 => set(server, argv.get(2..).unwrap_or_default()),
        b"set" => arity("set"),
        b"rewrite" if n == 2 => resp::error(b"ERR The server is running without a config file"),
        b"rewrite" => arity("rewrite"),
        _ => {
            let mut text = b"ERR unknown subcommand '".to_vec();
            let end = sub.iter().position(|&b| b == 0).unwrap_or(sub.len());
            text.extend_from_slice(sub.get(..end.min(128)).unwrap_or_default());
            text.extend_from_slice(b"'. Try CONFIG HELP.");
            resp::error(&text)
        }
    }
}

/// `CONFIG GET pattern...`, as name/value pairs, each name once. A pattern without glob
/// characters is a name, looked up in any case and answered under the name as given (as
/// Redis does); a glob matches names and aliases case-insensitively.
fn get(server: &Server, patterns: &[Vec<u8>]) -> Vec<u8> {
    let mut found: Vec<(Vec<u8>, String)> = Vec::new();
    let mut add = |name: &[u8], value: String| {
        if !found.iter().any(|(n, _)| n.as_slice() == name) {
            found.push((name.to_vec(), value));
        }
    };
    for pattern in patterns {
        let lower = pattern.to_ascii_lowercase();
        if !pattern.iter().any(|b| b"[*?".contains(b)) {
            if let Some(p) = PARAMS
                .iter()
                .find(|p| names(p).any(|n| n.as_bytes() == lower))
            {
                add(pattern, (p.value)(server));
            }
            continue;
        }
        for p in PARAMS {
            for name in names(p).filter(|n| glob_match(&lower, n.as_bytes())) {
                add(name.as_bytes(), (p.value)(server));
            }
        }
    }
    let items: Vec<Vec<u8>> = found
        .iter()
        .flat_map(|(name, value)| [resp::bulk(name), resp::bulk(value.as_bytes())])
        .collect();
    resp::array(&items)
}

/// A setting's name and its alias, if any.
fn names(p: &Param) -> impl Iterator<Item = &'static str> {
    std::iter::once(p.name).chain(p.alias)
}

/// Parses one `CONFIG SET` value with Redis's rules for its setting (a larger `maxclients`
/// must also fit the open-files limit); `Err` is the reason after Redis's
/// `CONFIG SET failed (possibly related to argument ...) - `.
fn parse_value(
    server: &Server,
    name: &[u8],
    p: &Param,
    value: &[u8],
) -> Result<Option<Parsed>, std::borrow::Cow<'static, str>> {
    const NOT_AN_INTEGER: &str = "argument couldn't be parsed into an integer";
    Ok(Some(match p.set {
        Some(Setter::Int(apply)) => match parse_i64(value).map(u64::try_from) {
            None => return Err(NOT_AN_INTEGER.into()),
            Some(Ok(v)) if i32::try_from(v).is_ok() => Parsed::Int(apply, v),
            Some(_) => return Err("argument must be between 0 and 2147483647 inclusive".into()),
        },
        Some(Setter::Text(apply)) => Parsed::Text(apply, value.to_vec()),
        Some(Setter::Durability) => match value.to_ascii_lowercase().as_slice() {
            b"always" => Parsed::Durability(Durability::Always),
            b"everysec" => Parsed::Durability(Durability::EverySec),
            b"no" => Parsed::Durability(Durability::Never),
            _ => {
                return Err(
                    "argument(s) must be one of the following: everysec, always, no".into(),
                );
            }
        },
        Some(Setter::BacklogSize) => Parsed::BacklogSize(name.to_vec(), backlog_size(value)?),
        Some(Setter::MaxClients) => match parse_i64(value).map(u64::try_from) {
            None => return Err(NOT_AN_INTEGER.into()),
            Some(Ok(v)) if (1..=u64::from(u32::MAX)).contains(&v) => {
                crate::accept::check_new_maxclients(v, server.live.maxclients())?;
                Parsed::MaxClients(v)
            }
            Some(_) => return Err("argument must be between 1 and 4294967295 inclusive".into()),
        },
        None => return Ok(None),
    }))
}

/// `CONFIG SET name value ...`: Redis 7.0's `configSetCommand`. Every name is looked up
/// first: the first unknown name fails the command, else the first immutable one, else the
/// first repeated one; then every value is parsed; only when all parse is anything set.
fn set(server: &Server, pairs: &[Vec<u8>]) -> Vec<u8> {
    if !pairs.len().is_multiple_of(2) {
        return resp::error(b"ERR syntax error");
    }
    let failed = |name: &[u8], why: &str| {
        let mut text = b"ERR CONFIG SET failed (possibly related to argument '".to_vec();
        text.extend_from_slice(name);
        text.extend_from_slice(b"') - ");
        text.extend_from_slice(why.as_bytes());
        resp::error(&text)
    };
    let mut found: Vec<(&Vec<u8>, &Param, &Vec<u8>)> = Vec::new();
    let mut first_problem: Option<Vec<u8>> = None;
    for pair in pairs.chunks_exact(2) {
        let (Some(name), Some(value)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        let Some(p) = PARAMS
            .iter()
            .find(|p| names(p).any(|n| n.as_bytes() == lower))
        else {
            if first_problem.is_none() {
                let mut text =
                    b"ERR Unknown option or number of arguments for CONFIG SET - '".to_vec();
                text.extend_from_slice(name);
                text.push(b'\'');
                return resp::error(&text);
            }
            continue;
        };
        if first_problem.is_some() {
            continue;
        }
        if p.set.is_none() {
            first_problem = Some(failed(name, "can't set immutable config"));
            continue;
        }
        // The same name twice (an alias and its name count as two, as in Redis 7.0).
        if found.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(name)) {
            first_problem = Some(failed(name, "duplicate parameter"));
            continue;
        }
        found.push((name, p, value));
    }
    if let Some(reply) = first_problem {
        return reply;
    }
    let mut parsed = Vec::with_capacity(found.len());
    for (name, p, value) in found {
        match parse_value(server, name, p, value) {
            Ok(Some(v)) => parsed.push(v),
            Ok(None) => {}
            Err(why) => return failed(name, why.as_ref()),
        }
    }
    // The one change that can fail (on the disk) goes first: if it does, nothing is set.
    for p in &parsed {
        if let Parsed::BacklogSize(name, size) = p
            && let Err(why) = set_backlog_size(server, *size)
        {
            return failed(name, &why);
        }
    }
    for p in parsed {
        match p {
            Parsed::Int(apply, v) => apply(&server.live, v),
            Parsed::Text(apply, v) => apply(&server.live, Some(v)),
            Parsed::Durability(d) => set_durability(server, d),
            Parsed::MaxClients(v) => server.live.set_maxclients(v),
            Parsed::BacklogSize(..) => {}
        }
    }
    resp::simple_string(b"OK")
}
