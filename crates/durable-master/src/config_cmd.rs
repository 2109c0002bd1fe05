//! `CONFIG GET | SET | REWRITE | RESETSTAT` over the settings durable-master has, under their
//! Redis names, with Redis 7.0's replies and error texts (checked against `redis-server`
//! 7.0.15).
//!
//! `CONFIG SET` changes the settings of [`crate::settings`] (`requirepass`, `masterauth`,
//! `replica-priority`, `min-replicas-to-write`, `min-replicas-max-lag`, `timeout`) with
//! Redis's checks in Redis's order: every name is looked up first (an unknown name, then an
//! immutable one, then a repeated one fails the whole command), then every value is parsed
//! (Redis's integer rules and bounds), and only then is anything changed, so a command
//! either sets every pair or none. The other settings are fixed at start and refused as
//! Redis refuses an immutable setting.

use durable_backlog::Durability;
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
}

/// A value parsed by [`Setter`], applied once every pair parsed.
enum Parsed {
    Int(fn(&Settings, u64), u64),
    Text(fn(&Settings, Option<Vec<u8>>), Vec<u8>),
    Durability(Durability),
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
        value: |s| s.cfg.maxclients.to_string(),
        set: None,
    },
    Param {
        name: "repl-backlog-size",
        alias: None,
        value: |s| s.cfg.backlog_size.to_string(),
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
        match p.set {
            Some(Setter::Int(apply)) => match parse_i64(value) {
                None => return failed(name, "argument couldn't be parsed into an integer"),
                Some(v) => match u64::try_from(v) {
                    Ok(v) if i32::try_from(v).is_ok() => parsed.push(Parsed::Int(apply, v)),
                    _ => {
                        return failed(name, "argument must be between 0 and 2147483647 inclusive");
                    }
                },
            },
            Some(Setter::Text(apply)) => parsed.push(Parsed::Text(apply, value.clone())),
            Some(Setter::Durability) => match value.to_ascii_lowercase().as_slice() {
                b"always" => parsed.push(Parsed::Durability(Durability::Always)),
                b"everysec" => parsed.push(Parsed::Durability(Durability::EverySec)),
                b"no" => parsed.push(Parsed::Durability(Durability::Never)),
                _ => {
                    return failed(
                        name,
                        "argument(s) must be one of the following: everysec, always, no",
                    );
                }
            },
            None => {}
        }
    }
    for p in parsed {
        match p {
            Parsed::Int(apply, v) => apply(&server.live, v),
            Parsed::Text(apply, v) => apply(&server.live, Some(v)),
            Parsed::Durability(d) => set_durability(server, d),
        }
    }
    resp::simple_string(b"OK")
}
