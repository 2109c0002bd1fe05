//! `CONFIG GET | SET | REWRITE | RESETSTAT` over the settings durable-master has, under their
//! Redis names, with Redis 7.0's replies and error texts (checked against `redis-server`
//! 7.0.15).
//!
//! Every setting is fixed at start (the connection threads read the configuration without a
//! lock), so `CONFIG SET` of a known name is refused as Redis refuses an immutable setting;
//! the argument checks before that (arity, unknown names) are Redis's.

use durable_backlog::Durability;
use durable_resp as resp;

use crate::commands::glob_match;
use crate::server::Server;

/// A setting: its Redis name, an older alias Redis still answers to, and its value.
struct Param {
    name: &'static str,
    alias: Option<&'static str>,
    value: fn(&Server) -> String,
}

const PARAMS: &[Param] = &[
    Param {
        name: "port",
        alias: None,
        value: |s| s.cfg.port.to_string(),
    },
    Param {
        name: "bind",
        alias: None,
        value: |s| s.cfg.bind.clone(),
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
    },
    Param {
        name: "requirepass",
        alias: None,
        value: |s| {
            String::from_utf8_lossy(s.cfg.requirepass.as_deref().unwrap_or_default()).into_owned()
        },
    },
    Param {
        name: "maxclients",
        alias: None,
        value: |s| s.cfg.maxclients.to_string(),
    },
    Param {
        name: "repl-backlog-size",
        alias: None,
        value: |s| s.cfg.backlog_size.to_string(),
    },
    Param {
        name: "appendfsync",
        alias: None,
        value: |s| {
            match s.cfg.durability {
                Durability::Always => "always",
                Durability::EverySec => "everysec",
                Durability::Never => "no",
            }
            .to_owned()
        },
    },
    Param {
        name: "min-replicas-to-write",
        alias: Some("min-slaves-to-write"),
        value: |s| s.cfg.min_replicas_to_write.to_string(),
    },
    Param {
        name: "min-replicas-max-lag",
        alias: Some("min-slaves-max-lag"),
        value: |s| s.cfg.min_replicas_max_lag.to_string(),
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
    },
    Param {
        name: "masterauth",
        alias: None,
        value: |s| {
            String::from_utf8_lossy(s.cfg.masterauth.as_deref().unwrap_or_default()).into_owned()
        },
    },
    Param {
        name: "replica-priority",
        alias: Some("slave-priority"),
        value: |_| "100".to_owned(),
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
        b"set" if n >= 4 => set(argv.get(2..).unwrap_or_default()),
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

/// `CONFIG SET name value ...`: Redis's checks, in Redis's order. Redis stops at the first
/// setting it cannot set; here every known setting is immutable, so the first name decides.
fn set(pairs: &[Vec<u8>]) -> Vec<u8> {
    if !pairs.len().is_multiple_of(2) {
        return resp::error(b"ERR syntax error");
    }
    let Some(name) = pairs.first() else {
        return arity("set");
    };
    let lower = name.to_ascii_lowercase();
    let known = PARAMS
        .iter()
        .any(|p| names(p).any(|n| n.as_bytes() == lower));
    let mut text = if known {
        b"ERR CONFIG SET failed (possibly related to argument '".to_vec()
    } else {
        b"ERR Unknown option or number of arguments for CONFIG SET - '".to_vec()
    };
    text.extend_from_slice(name);
    text.push(b'\'');
    if known {
        text.extend_from_slice(b") - can't set immutable config");
    }
    resp::error(&text)
}
