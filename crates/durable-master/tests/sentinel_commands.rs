//! The commands Redis Sentinel and operators send a master answer with Redis 7.0's exact
//! bytes: guards against `ERR unknown command` where Sentinel expects an answer, against error
//! texts that differ from Redis's, and against `CLIENT KILL` missing (or over-reaching) its
//! targets. Every request runs against durable-master and, when one is installed, a real
//! `redis-server`, which must answer the same.

use test_redis as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::master::DurableMaster;
use common::{Client, RedisGuard};

const BINARY: &str = env!("CARGO_BIN_EXE_durable-master");

fn argv(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|a| a.as_bytes().to_vec()).collect()
}

/// Runs `cases` (request line, expected reply) in order on one connection.
fn check(client: &mut Client, server: &str, cases: &[(&str, &str)]) {
    for (line, want) in cases {
        let got = client.call_raw(&argv(line));
        assert_eq!(String::from_utf8_lossy(&got), *want, "{server}: {line}");
    }
}

/// Runs `scenario` against durable-master and, if installed, redis-server.
fn on_both(scenario: impl Fn(u16, &str)) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Redis's default backlog size (durable-master's own default is larger), so CONFIG GET
    // answers the same bytes on both.
    let m = DurableMaster::start(BINARY, dir.path(), &["--backlog-size", "1mb"]);
    scenario(m.port, "durable-master");
    if let Some(redis) = common::redis_server() {
        let rdir = tempfile::tempdir().expect("tempdir");
        // With its append-only file on, as durable-master's backlog always is.
        let r = RedisGuard::start_with(&redis, rdir.path(), &["--appendonly", "yes"]);
        scenario(r.port, "redis-server");
    }
}

/// Whether the server closed `stream` (a read sees end of file or a reset) within a second.
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// A raw connection the server has answered a `PING` on (so it is in the client table).
fn served(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("send");
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"+PONG\r\n");
    s
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn client_subcommands_answer_as_redis() {
    let cases = [
        ("CLIENT GETNAME", "$-1\r\n"),
        ("CLIENT SETNAME sentinel-1a2b3c4d-cmd", "+OK\r\n"),
        ("client getname", "$21\r\nsentinel-1a2b3c4d-cmd\r\n"),
        (
            "CLIENT SETNAME",
            "-ERR wrong number of arguments for 'client|setname' command\r\n",
        ),
        (
            "CLIENT SETNAME a b",
            "-ERR wrong number of arguments for 'client|setname' command\r\n",
        ),
        (
            "client setname é",
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
        // The refused name left the old one.
        ("CLIENT GETNAME", "$21\r\nsentinel-1a2b3c4d-cmd\r\n"),
        // An empty name removes the name.
        ("CLIENT SETNAME ", "+OK\r\n"),
        ("CLIENT GETNAME", "$-1\r\n"),
        (
            "CLIENT GETNAME x",
            "-ERR wrong number of arguments for 'client|getname' command\r\n",
        ),
        (
            "CLIENT ID x",
            "-ERR wrong number of arguments for 'client|id' command\r\n",
        ),
        (
            "CLIENT",
            "-ERR wrong number of arguments for 'client' command\r\n",
        ),
        (
            "client Foo",
            "-ERR unknown subcommand 'Foo'. Try CLIENT HELP.\r\n",
        ),
        ("CLIENT LIST x", "-ERR syntax error\r\n"),
        ("CLIENT LIST TYPE foo", "-ERR Unknown client type 'foo'\r\n"),
        ("CLIENT LIST ID 3 x", "-ERR Invalid client ID\r\n"),
        ("CLIENT LIST ID 0", "$0\r\n\r\n"),
        ("CLIENT LIST TYPE master", "$0\r\n\r\n"),
        ("CLIENT LIST TYPE replica", "$0\r\n\r\n"),
        (
            "CLIENT KILL",
            "-ERR wrong number of arguments for 'client|kill' command\r\n",
        ),
        ("CLIENT KILL 1.2.3.4:5", "-ERR No such client\r\n"),
        ("CLIENT KILL TYPE", "-ERR No such client\r\n"),
        ("CLIENT KILL TYPE foo", "-ERR Unknown client type 'foo'\r\n"),
        ("CLIENT KILL TYPE normal SKIPME", "-ERR syntax error\r\n"),
        ("CLIENT KILL FOO bar", "-ERR syntax error\r\n"),
        ("CLIENT KILL SKIPME maybe", "-ERR syntax error\r\n"),
        (
            "CLIENT KILL ID 0",
            "-ERR client-id should be greater than 0\r\n",
        ),
        (
            "CLIENT KILL ID x",
            "-ERR client-id should be greater than 0\r\n",
        ),
        ("CLIENT KILL USER foo", "-ERR No such user 'foo'\r\n"),
        ("CLIENT KILL TYPE replica", ":0\r\n"),
        ("CLIENT KILL ADDR 1.2.3.4:5", ":0\r\n"),
        ("CLIENT KILL LADDR 1.2.3.4:5", ":0\r\n"),
        // This client is skipped by default: nothing else is connected.
        ("CLIENT KILL TYPE normal", ":0\r\n"),
        ("PING", "+PONG\r\n"),
    ];
    on_both(|port, server| check(&mut Client::open(port), server, &cases));
}

#[test]
fn client_list_shows_each_connection_like_redis() {
    let lines = |port: u16| -> (String, i64, String) {
        let mut c = Client::open(port);
        c.ok(&["CLIENT", "SETNAME", "lister"]);
        c.ok(&["SELECT", "3"]);
        let id = c.integer(&["CLIENT", "ID"]);
        let mut other = Client::open(port);
        assert_eq!(other.call_raw(&["PING"]), b"+PONG\r\n");
        let raw = c.call_raw(&["CLIENT", "LIST"]);
        let text = String::from_utf8(raw).expect("utf8");
        let body = text.split_once("\r\n").expect("bulk").1.to_owned();
        let only = c.call_raw(&["CLIENT", "LIST", "ID", &id.to_string()]);
        drop(other);
        (body, id, String::from_utf8(only).expect("utf8"))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let (body, id, only) = lines(m.port);
    let list: Vec<&str> = body.trim_end_matches("\r\n").lines().collect();
    assert_eq!(list.len(), 2, "{body:?}");
    let mine = list
        .iter()
        .find(|l| field(l, "id") == id.to_string())
        .expect("own line");
    assert_eq!(field(mine, "name"), "lister");
    assert_eq!(field(mine, "db"), "3");
    assert_eq!(field(mine, "flags"), "N");
    assert_eq!(field(mine, "cmd"), "client|list");
    assert_eq!(field(mine, "laddr"), format!("127.0.0.1:{}", m.port));
    assert_eq!(only, format!("${}\r\n{mine}\n\r\n", mine.len() + 1));
    if let Some(redis) = common::redis_server() {
        let rdir = tempfile::tempdir().expect("tempdir");
        // With its append-only file on, as durable-master's backlog always is.
        let r = RedisGuard::start_with(&redis, rdir.path(), &["--appendonly", "yes"]);
        let (rbody, rid, _) = lines(r.port);
        let rmine = rbody
            .lines()
            .find(|l| field(l, "id") == rid.to_string())
            .expect("own line");
        // Every field durable-master prints, Redis prints too, in the same order and with the
        // same value where the value does not depend on the process.
        let keys = |l: &str| -> Vec<String> {
            l.split(' ')
                .map(|kv| kv.split('=').next().unwrap_or_default().to_owned())
                .collect()
        };
        let rkeys = keys(rmine);
        let positions: Vec<usize> = keys(mine)
            .iter()
            .map(|k| {
                rkeys
                    .iter()
                    .position(|r| r == k)
                    .unwrap_or_else(|| panic!("{k} not in {rmine}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{mine}\n{rmine}");
        for key in [
            "name", "flags", "db", "sub", "psub", "ssub", "multi", "cmd", "user", "redir", "resp",
        ] {
            assert_eq!(field(mine, key), field(rmine, key), "{key}");
        }
    }
}

#[test]
fn client_kill_closes_the_chosen_connections_only() {
    on_both(|port, server| {
        let mut killer = Client::open(port);
        let mut by_addr = served(port);
        let mut by_old_form = served(port);
        let mut spared = Client::open(port);
        assert_eq!(spared.call_raw(&["PING"]), b"+PONG\r\n", "{server}");
        let addr = |s: &TcpStream| s.local_addr().expect("addr").to_string();
        assert_eq!(
            killer.call_raw(&["CLIENT", "KILL", "ADDR", &addr(&by_addr)]),
            b":1\r\n",
            "{server}"
        );
        assert!(closed(&mut by_addr), "{server}: ADDR victim still open");
        assert_eq!(
            killer.call_raw(&["CLIENT", "KILL", &addr(&by_old_form)]),
            b"+OK\r\n",
            "{server}"
        );
        assert!(closed(&mut by_old_form), "{server}: old-form victim open");
        assert_eq!(spared.call_raw(&["PING"]), b"+PONG\r\n", "{server}");
        // TYPE normal kills every normal client but the caller.
        assert_eq!(
            killer.call_raw(&["CLIENT", "KILL", "TYPE", "normal"]),
            b":1\r\n",
            "{server}"
        );
        assert_eq!(killer.call_raw(&["PING"]), b"+PONG\r\n", "{server}");
        // The caller itself, with SKIPME no: the reply, then the connection closes.
        let mut me = served(port);
        let mut own = Client::open(port);
        let my_addr = addr(&me);
        drop(own.call_raw(&["PING"]));
        let req = format!(
            "*6\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nADDR\r\n${}\r\n{my_addr}\r\n$6\r\nSKIPME\r\n$2\r\nno\r\n",
            my_addr.len()
        );
        me.write_all(req.as_bytes()).expect("send");
        me.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut got = Vec::new();
        let _ = me.read_to_end(&mut got);
        assert_eq!(String::from_utf8_lossy(&got), ":1\r\n", "{server}");
        assert_eq!(own.call_raw(&["PING"]), b"+PONG\r\n", "{server}");
    });
}

#[test]
fn config_answers_as_redis() {
    let cases = [
        (
            "CONFIG GET repl-backlog-size",
            "*2\r\n$17\r\nrepl-backlog-size\r\n$7\r\n1048576\r\n",
        ),
        (
            "CONFIG GET appendfsync",
            "*2\r\n$11\r\nappendfsync\r\n$8\r\neverysec\r\n",
        ),
        (
            "config get min-replicas-to-write",
            "*2\r\n$21\r\nmin-replicas-to-write\r\n$1\r\n0\r\n",
        ),
        // A name without glob characters is answered under the name as given.
        (
            "CONFIG GET MIN-SLAVES-max-lag",
            "*2\r\n$18\r\nMIN-SLAVES-max-lag\r\n$2\r\n10\r\n",
        ),
        (
            "CONFIG GET min-replicas-max-l?g",
            "*2\r\n$20\r\nmin-replicas-max-lag\r\n$2\r\n10\r\n",
        ),
        (
            "CONFIG GET requirepass",
            "*2\r\n$11\r\nrequirepass\r\n$0\r\n\r\n",
        ),
        ("CONFIG GET bind", "*2\r\n$4\r\nbind\r\n$9\r\n127.0.0.1\r\n"),
        // redis-benchmark reads these two before it runs.
        ("CONFIG GET save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            "CONFIG GET appendonly",
            "*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n",
        ),
        ("CONFIG GET timeout", "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"),
        (
            "CONFIG GET replica-priority",
            "*2\r\n$16\r\nreplica-priority\r\n$3\r\n100\r\n",
        ),
        (
            "CONFIG GET masterauth",
            "*2\r\n$10\r\nmasterauth\r\n$0\r\n\r\n",
        ),
        (
            "CONFIG GET replicaof",
            "*2\r\n$9\r\nreplicaof\r\n$0\r\n\r\n",
        ),
        ("CONFIG GET nosuch", "*0\r\n"),
        ("CONFIG GET nosuch*", "*0\r\n"),
        (
            "CONFIG GET",
            "-ERR wrong number of arguments for 'config|get' command\r\n",
        ),
        (
            "CONFIG SET nosuch 1",
            "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n",
        ),
        (
            "CONFIG SET port",
            "-ERR wrong number of arguments for 'config|set' command\r\n",
        ),
        ("CONFIG SET nosuch 1 x", "-ERR syntax error\r\n"),
        (
            "CONFIG REWRITE",
            "-ERR The server is running without a config file\r\n",
        ),
        (
            "CONFIG REWRITE x",
            "-ERR wrong number of arguments for 'config|rewrite' command\r\n",
        ),
        (
            "CONFIG Foo",
            "-ERR unknown subcommand 'Foo'. Try CONFIG HELP.\r\n",
        ),
        (
            "CONFIG",
            "-ERR wrong number of arguments for 'config' command\r\n",
        ),
    ];
    on_both(|port, server| {
        let mut c = Client::open(port);
        check(&mut c, server, &cases);
        let own_port = c.call_raw(&["CONFIG", "GET", "port"]);
        let p = port.to_string();
        assert_eq!(
            String::from_utf8_lossy(&own_port),
            format!("*2\r\n$4\r\nport\r\n${}\r\n{p}\r\n", p.len()),
            "{server}"
        );
        // Both aliases of a setting match a glob.
        let both = String::from_utf8(c.call_raw(&["CONFIG", "GET", "min-*-to-write"])).unwrap();
        assert!(
            both.starts_with("*4\r\n")
                && both.contains("$21\r\nmin-replicas-to-write\r\n$1\r\n0\r\n")
                && both.contains("$19\r\nmin-slaves-to-write\r\n$1\r\n0\r\n"),
            "{server}: {both:?}"
        );
    });
}

/// `CONFIG SET` of the settings Sentinel and operators change at run time: the values, the
/// aliases, Redis's integer rules and bounds, its order of checks (unknown name, immutable,
/// duplicate, then values) and all-or-nothing.
#[test]
#[allow(clippy::too_many_lines)] // one table of cases
fn config_set_changes_the_run_time_settings_as_redis() {
    let parse = |name: &str| {
        format!(
            "-ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't \
             be parsed into an integer\r\n"
        )
    };
    let range = |name: &str| {
        format!(
            "-ERR CONFIG SET failed (possibly related to argument '{name}') - argument must be \
             between 0 and 2147483647 inclusive\r\n"
        )
    };
    let (p_min, r_min, p_timeout, p_prio, r_prio) = (
        parse("min-replicas-to-write"),
        range("min-replicas-to-write"),
        parse("timeout"),
        parse("replica-priority"),
        range("replica-priority"),
    );
    let cases = [
        (
            "CONFIG SET replicaof x",
            "-ERR CONFIG SET failed (possibly related to argument 'replicaof') - can't set \
             immutable config\r\n",
        ),
        ("CONFIG SET min-replicas-to-write abc", p_min.as_str()),
        ("CONFIG SET min-replicas-to-write -1", r_min.as_str()),
        (
            "CONFIG SET min-replicas-to-write 2147483648",
            r_min.as_str(),
        ),
        (
            "CONFIG SET min-replicas-to-write 99999999999999999999",
            p_min.as_str(),
        ),
        (
            "CONFIG SET MIN-replicas-to-write 3 min-slaves-to-write 4",
            "+OK\r\n",
        ),
        (
            "CONFIG GET min-replicas-to-write",
            "*2\r\n$21\r\nmin-replicas-to-write\r\n$1\r\n4\r\n",
        ),
        ("CONFIG SET timeout 1.5", p_timeout.as_str()),
        ("CONFIG SET timeout 0x10", p_timeout.as_str()),
        ("CONFIG SET timeout +5", p_timeout.as_str()),
        ("CONFIG SET timeout 007", p_timeout.as_str()),
        ("CONFIG SET timeout 1k", p_timeout.as_str()),
        ("CONFIG SET timeout ", p_timeout.as_str()),
        (
            "CONFIG SET timeout 30 min-slaves-max-lag 5 replica-priority 7",
            "+OK\r\n",
        ),
        ("CONFIG GET timeout", "*2\r\n$7\r\ntimeout\r\n$2\r\n30\r\n"),
        (
            "CONFIG GET min-replicas-max-lag",
            "*2\r\n$20\r\nmin-replicas-max-lag\r\n$1\r\n5\r\n",
        ),
        (
            "CONFIG GET slave-priority",
            "*2\r\n$14\r\nslave-priority\r\n$1\r\n7\r\n",
        ),
        ("CONFIG SET replica-priority 10x", p_prio.as_str()),
        // Nothing is set when any value is refused.
        ("CONFIG SET timeout 9 replica-priority -1", r_prio.as_str()),
        ("CONFIG GET timeout", "*2\r\n$7\r\ntimeout\r\n$2\r\n30\r\n"),
        (
            "CONFIG SET timeout 5 nosuch 1",
            "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n",
        ),
        (
            "CONFIG SET timeout x nosuch 1",
            "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n",
        ),
        (
            "CONFIG SET replicaof x nosuch 1",
            "-ERR CONFIG SET failed (possibly related to argument 'replicaof') - can't set \
             immutable config\r\n",
        ),
        (
            "CONFIG SET timeout x replicaof 1",
            "-ERR CONFIG SET failed (possibly related to argument 'replicaof') - can't set \
             immutable config\r\n",
        ),
        (
            "CONFIG SET timeout 5 TIMEOUT 6",
            "-ERR CONFIG SET failed (possibly related to argument 'TIMEOUT') - duplicate \
             parameter\r\n",
        ),
        ("CONFIG SET masterauth s3cret", "+OK\r\n"),
        (
            "CONFIG GET masterauth",
            "*2\r\n$10\r\nmasterauth\r\n$6\r\ns3cret\r\n",
        ),
        ("CONFIG SET masterauth ", "+OK\r\n"),
        (
            "CONFIG GET masterauth",
            "*2\r\n$10\r\nmasterauth\r\n$0\r\n\r\n",
        ),
        (
            "CONFIG SET timeout 0 min-replicas-to-write 0 min-replicas-max-lag 10 \
             replica-priority 100",
            "+OK\r\n",
        ),
        ("CONFIG SET timeout 0 masterauth", "-ERR syntax error\r\n"),
    ];
    on_both(|port, server| check(&mut Client::open(port), server, &cases));
}

/// `CONFIG SET requirepass`: new connections need `AUTH`, connections already in keep
/// working, an empty password lets every connection through again; the replies are Redis's.
#[test]
fn config_set_requirepass_applies_to_connections_as_redis() {
    on_both(|port, server| {
        let mut admin = Client::open(port);
        let mut before = Client::open(port);
        assert_eq!(before.call_raw(&["PING"]), b"+PONG\r\n");
        check(
            &mut admin,
            server,
            &[
                (
                    "AUTH x",
                    "-ERR AUTH <password> called without any password configured for the \
                     default user. Are you sure your configuration is correct?\r\n",
                ),
                ("CONFIG SET requirepass pw", "+OK\r\n"),
                (
                    "CONFIG GET requirepass",
                    "*2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n",
                ),
            ],
        );
        assert_eq!(before.call_raw(&["SET", "k", "1"]), b"+OK\r\n", "{server}");
        let mut after = Client::open(port);
        check(
            &mut after,
            server,
            &[
                ("GET k", "-NOAUTH Authentication required.\r\n"),
                (
                    "AUTH nope",
                    "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                ),
                ("AUTH pw", "+OK\r\n"),
                ("GET k", "$1\r\n1\r\n"),
            ],
        );
        let mut waiting = Client::open(port);
        assert_eq!(
            waiting.call_raw(&["GET", "k"]),
            b"-NOAUTH Authentication required.\r\n",
            "{server}"
        );
        check(
            &mut admin,
            server,
            &[("CONFIG SET requirepass ", "+OK\r\n")],
        );
        assert_eq!(waiting.call_raw(&["GET", "k"]), b"$1\r\n1\r\n", "{server}");
    });
}

/// `CONFIG SET min-replicas-to-write` and `timeout` take effect at once: a master without
/// replicas refuses writes, and an idle client is closed.
#[test]
fn config_set_min_replicas_and_timeout_take_effect() {
    on_both(|port, server| {
        let mut c = Client::open(port);
        check(
            &mut c,
            server,
            &[
                ("SET k 1", "+OK\r\n"),
                ("CONFIG SET min-replicas-to-write 1", "+OK\r\n"),
                (
                    "SET k 2",
                    "-NOREPLICAS Not enough good replicas to write.\r\n",
                ),
                ("GET k", "$1\r\n1\r\n"),
                ("CONFIG SET min-slaves-to-write 0", "+OK\r\n"),
                ("SET k 3", "+OK\r\n"),
            ],
        );
        let mut idle = served(port);
        check(&mut c, server, &[("CONFIG SET timeout 1", "+OK\r\n")]);
        // Redis checks idle clients in its cron; wait well past the second.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut gone = false;
        while !gone && std::time::Instant::now() < deadline {
            gone = closed(&mut idle);
        }
        assert!(gone, "{server}: an idle client outlived timeout 1");
    });
}

/// The settings fixed at start (Redis can change some of them at run time; this server
/// cannot: the listener is bound once, the data directory opened once)
/// are refused as immutable, and a refused `CONFIG SET` changes nothing.
#[test]
fn config_set_refuses_the_settings_fixed_at_start_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &["--min-replicas-max-lag", "7"]);
    let mut c = m.client();
    let immutable = |name: &str| {
        format!(
            "-ERR CONFIG SET failed (possibly related to argument '{name}') - can't set \
             immutable config\r\n"
        )
    };
    for name in ["port", "bind", "dir", "replicaof", "slaveof"] {
        let want = immutable(name);
        check(
            &mut c,
            "durable-master",
            &[(&format!("CONFIG SET {name} 1"), &want)],
        );
    }
    let port = immutable("Port");
    check(
        &mut c,
        "durable-master",
        &[
            (
                "CONFIG SET min-replicas-max-lag 9 Port 1 nosuch 2",
                port.as_str(),
            ),
            (
                "CONFIG GET min-slaves-max-lag",
                "*2\r\n$18\r\nmin-slaves-max-lag\r\n$1\r\n7\r\n",
            ),
        ],
    );
    let reply = String::from_utf8(c.call_raw(&["CONFIG", "GET", "dir"])).unwrap();
    let value = reply.rsplit("\r\n").nth(1).expect("value");
    assert!(std::path::Path::new(value).is_absolute(), "{reply:?}");
    assert!(std::path::Path::new(value).is_dir(), "{reply:?}");
}

/// Sentinel's reconfiguration of an instance, as Redis 7.0's Sentinel sends it: `MULTI`,
/// `SLAVEOF host port`, `CONFIG REWRITE`, `CLIENT KILL TYPE normal`, `CLIENT KILL TYPE pubsub`,
/// `EXEC`. Every command queues; `EXEC` answers each (the `CONFIG REWRITE` error among them,
/// as Redis does without a config file) and does the work: the server is a replica after
/// it, the other normal client and the subscriber are closed, the caller is not. Then
/// `SLAVEOF NO ONE` in the same form promotes it back.
#[test]
fn sentinel_reconfiguration_transaction_answers_as_redis() {
    on_both(|port, server| {
        let mut sentinel = Client::open(port);
        let mut normal = served(port);
        let mut subscriber = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        subscriber
            .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$18\r\n__sentinel__:hello\r\n")
            .expect("send");
        let mut confirm = [0u8; 48];
        subscriber.read_exact(&mut confirm).expect("subscribed");
        assert_eq!(
            &confirm[..],
            b"*3\r\n$9\r\nsubscribe\r\n$18\r\n__sentinel__:hello\r\n:1\r\n",
            "{server}"
        );
        // Nothing listens on port 1: the link stays down, the role is what counts.
        let cases = [
            ("CLIENT SETNAME sentinel-1a2b3c4d-cmd", "+OK\r\n"),
            ("MULTI", "+OK\r\n"),
            ("SLAVEOF 127.0.0.1 1", "+QUEUED\r\n"),
            ("CONFIG REWRITE", "+QUEUED\r\n"),
            ("CLIENT KILL TYPE normal", "+QUEUED\r\n"),
            ("CLIENT KILL TYPE pubsub", "+QUEUED\r\n"),
            (
                "EXEC",
                "*4\r\n+OK\r\n-ERR The server is running without a config file\r\n:1\r\n\
                 :1\r\n",
            ),
            (
                "SET k v",
                "-READONLY You can't write against a read only replica.\r\n",
            ),
            (
                "CONFIG GET slaveof",
                "*2\r\n$7\r\nslaveof\r\n$11\r\n127.0.0.1 1\r\n",
            ),
            ("MULTI", "+OK\r\n"),
            ("SLAVEOF NO ONE", "+QUEUED\r\n"),
            ("CONFIG REWRITE", "+QUEUED\r\n"),
            ("CLIENT KILL TYPE normal", "+QUEUED\r\n"),
            ("CLIENT KILL TYPE pubsub", "+QUEUED\r\n"),
            (
                "EXEC",
                "*4\r\n+OK\r\n-ERR The server is running without a config file\r\n:0\r\n\
                 :0\r\n",
            ),
            ("SET k v", "+OK\r\n"),
            ("CONFIG GET slaveof", "*2\r\n$7\r\nslaveof\r\n$0\r\n\r\n"),
            ("SLAVEOF 127.0.0.1 x", "-ERR Invalid master port\r\n"),
            (
                "SLAVEOF NO",
                "-ERR wrong number of arguments for 'slaveof' command\r\n",
            ),
        ];
        check(&mut sentinel, server, &cases);
        // A replica reports the priority Sentinel ranks it by (0: never promoted).
        check(
            &mut sentinel,
            server,
            &[
                ("SLAVEOF 127.0.0.1 1", "+OK\r\n"),
                ("CONFIG SET replica-priority 0", "+OK\r\n"),
            ],
        );
        let info = sentinel.info("replication");
        assert!(
            info.contains("\r\nslave_priority:0\r\n"),
            "{server}: {info}"
        );
        check(&mut sentinel, server, &[("SLAVEOF NO ONE", "+OK\r\n")]);
        assert!(closed(&mut normal), "{server}: normal client still open");
        assert!(closed(&mut subscriber), "{server}: subscriber still open");
    });
}

#[test]
fn multi_exec_discard_answer_as_redis() {
    let arity = |name: &str| format!("-ERR wrong number of arguments for '{name}' command\r\n");
    let aborted = "-EXECABORT Transaction discarded because of previous errors.\r\n";
    let exec_arity = "-EXECABORT Transaction discarded because of: wrong number of arguments \
                      for 'exec' command\r\n";
    let get_arity = arity("get");
    let multi_arity = arity("multi");
    let discard_arity = arity("discard");
    let cases = [
        ("EXEC", "-ERR EXEC without MULTI\r\n"),
        ("DISCARD", "-ERR DISCARD without MULTI\r\n"),
        ("MULTI x", multi_arity.as_str()),
        ("MULTI", "+OK\r\n"),
        ("MULTI", "-ERR MULTI calls can not be nested\r\n"),
        ("SET a 1", "+QUEUED\r\n"),
        ("INFO server", "+QUEUED\r\n"),
        ("GET", get_arity.as_str()),
        ("EXEC", aborted),
        // The aborted transaction wrote nothing.
        ("EXISTS a", ":0\r\n"),
        ("MULTI", "+OK\r\n"),
        ("SET a 1", "+QUEUED\r\n"),
        (
            "FOO bar",
            "-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n",
        ),
        ("EXEC", aborted),
        ("MULTI", "+OK\r\n"),
        (
            "PSYNC ? -1",
            "-ERR Command not allowed inside a transaction\r\n",
        ),
        ("EXEC", aborted),
        ("MULTI", "+OK\r\n"),
        ("MULTI x", multi_arity.as_str()),
        ("EXEC", aborted),
        ("MULTI", "+OK\r\n"),
        ("SET a 1", "+QUEUED\r\n"),
        ("INCR a", "+QUEUED\r\n"),
        ("GET a", "+QUEUED\r\n"),
        ("PING", "+QUEUED\r\n"),
        ("EXEC", "*4\r\n+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n"),
        ("MULTI", "+OK\r\n"),
        ("INCR a", "+QUEUED\r\n"),
        ("DISCARD x", discard_arity.as_str()),
        ("EXEC", aborted),
        ("MULTI", "+OK\r\n"),
        ("INCR a", "+QUEUED\r\n"),
        ("DISCARD", "+OK\r\n"),
        ("GET a", "$1\r\n2\r\n"),
        ("MULTI", "+OK\r\n"),
        ("SET b 1", "+QUEUED\r\n"),
        ("EXEC x", exec_arity),
        ("EXEC", "-ERR EXEC without MULTI\r\n"),
        ("EXISTS b", ":0\r\n"),
        ("EXEC x", exec_arity),
        ("MULTI", "+OK\r\n"),
        ("EXEC", "*0\r\n"),
    ];
    on_both(|port, server| check(&mut Client::open(port), server, &cases));
}

/// What a replica receives for transactions: two or more writes wrapped in `MULTI` ... `EXEC`
/// after the `SELECT` of the first one's database, one write alone, reads nothing.
#[test]
fn exec_propagates_like_redis() {
    let script = [
        "SELECT 3", "MULTI", "SET a 1", "INCR a", "GET a", "EXEC", "MULTI", "SET b 1", "EXEC",
        "MULTI", "GET b", "EXEC", "MULTI", "SET c 1", "SELECT 5", "SET d 1", "EXEC", "SET e 1",
    ];
    let stream = |port: u16| -> Vec<u8> {
        let mut replica = Client::open(port);
        replica.send_raw(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n");
        // The FULLRESYNC line and the snapshot.
        assert!(!replica.read_until_idle(Duration::from_secs(1)).is_empty());
        let mut c = Client::open(port);
        for line in script {
            c.call_raw(&argv(line));
        }
        replica.read_until_idle(Duration::from_millis(500))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let got = stream(m.port);
    let want = "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*1\r\n$5\r\nMULTI\r\n\
                *3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\n\
                *1\r\n$4\r\nEXEC\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n1\r\n\
                *1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nc\r\n$1\r\n1\r\n\
                *2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n*3\r\n$3\r\nSET\r\n$1\r\nd\r\n$1\r\n1\r\n\
                *1\r\n$4\r\nEXEC\r\n*3\r\n$3\r\nSET\r\n$1\r\ne\r\n$1\r\n1\r\n";
    assert_eq!(String::from_utf8_lossy(&got), want, "durable-master");
    if let Some(redis) = common::redis_server() {
        let rdir = tempfile::tempdir().expect("tempdir");
        // With its append-only file on, as durable-master's backlog always is.
        let r = RedisGuard::start_with(&redis, rdir.path(), &["--appendonly", "yes"]);
        assert_eq!(
            String::from_utf8_lossy(&stream(r.port)),
            want,
            "redis-server"
        );
    }
}

/// No other client sees a transaction half done: two `INCR`s in one `EXEC` keep the value
/// even for a reader polling meanwhile.
#[test]
fn exec_is_atomic_for_other_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &[]);
    let port = m.port;
    let writer = std::thread::spawn(move || {
        let mut c = Client::open(port);
        for _ in 0..300 {
            let mut batch = Vec::new();
            for line in ["MULTI", "INCR n", "INCR n", "EXEC"] {
                let args = argv(line);
                batch.extend(format!("*{}\r\n", args.len()).into_bytes());
                for a in args {
                    batch.extend(format!("${}\r\n", a.len()).into_bytes());
                    batch.extend(a);
                    batch.extend(b"\r\n");
                }
            }
            c.send_raw(&batch);
            for _ in 0..4 {
                c.read_raw_reply();
            }
        }
    });
    let mut reader = Client::open(port);
    let mut seen = 0;
    while !writer.is_finished() {
        let v = match reader.call(&["GET", "n"]) {
            common::Reply::Bulk(Some(v)) => String::from_utf8(v).unwrap().parse::<i64>().unwrap(),
            _ => 0,
        };
        assert_eq!(v % 2, 0, "a reader saw half a transaction: {v}");
        seen += 1;
    }
    writer.join().expect("writer");
    assert!(seen > 0);
    assert_eq!(reader.call_raw(&["GET", "n"]), b"$3\r\n600\r\n");
}

#[test]
fn pubsub_replies_and_subscribed_mode_as_redis() {
    let only = |cmd: &str| {
        format!(
            "-ERR Can't execute '{cmd}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
             RESET are allowed in this context\r\n"
        )
    };
    let (get, publish) = (only("get"), only("publish"));
    let cases = [
        (
            "PUBLISH a",
            "-ERR wrong number of arguments for 'publish' command\r\n",
        ),
        (
            "SUBSCRIBE",
            "-ERR wrong number of arguments for 'subscribe' command\r\n",
        ),
        ("UNSUBSCRIBE", "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
        ("PUNSUBSCRIBE", "*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"),
        ("PUBLISH nobody x", ":0\r\n"),
        ("SUBSCRIBE a", "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
        ("subscribe b", "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
        ("SUBSCRIBE a", "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n"),
        ("PING", "*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        ("PING x", "*2\r\n$4\r\npong\r\n$1\r\nx\r\n"),
        ("GET a", get.as_str()),
        ("PUBLISH a x", publish.as_str()),
        (
            "UNSUBSCRIBE a",
            "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n",
        ),
        (
            "PSUBSCRIBE h*",
            "*3\r\n$10\r\npsubscribe\r\n$2\r\nh*\r\n:2\r\n",
        ),
        (
            "UNSUBSCRIBE",
            "*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n",
        ),
        (
            "PUNSUBSCRIBE",
            "*3\r\n$12\r\npunsubscribe\r\n$2\r\nh*\r\n:0\r\n",
        ),
        // Out of subscribed mode again.
        ("PING", "+PONG\r\n"),
        ("MULTI", "+OK\r\n"),
        ("SUBSCRIBE x", "+QUEUED\r\n"),
        ("EXEC", "*1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n"),
        ("PING", "*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
    ];
    on_both(|port, server| check(&mut Client::open(port), server, &cases));
}

/// A message published on one connection reaches subscribers on other connections (channel
/// and pattern), in Redis's frames, and `PUBLISH` counts them.
#[test]
fn published_messages_reach_other_connections() {
    on_both(|port, server| {
        let mut sub = Client::open(port);
        sub.send_raw(
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$18\r\n__sentinel__:hello\r\n\
              *2\r\n$10\r\nPSUBSCRIBE\r\n$11\r\n__sentinel*\r\n",
        );
        let acks = sub.read_exactly(
            "*3\r\n$9\r\nsubscribe\r\n$18\r\n__sentinel__:hello\r\n:1\r\n\
             *3\r\n$10\r\npsubscribe\r\n$11\r\n__sentinel*\r\n:2\r\n"
                .len(),
            Duration::from_secs(2),
        );
        assert_eq!(
            String::from_utf8_lossy(&acks),
            "*3\r\n$9\r\nsubscribe\r\n$18\r\n__sentinel__:hello\r\n:1\r\n\
             *3\r\n$10\r\npsubscribe\r\n$11\r\n__sentinel*\r\n:2\r\n",
            "{server}"
        );
        let mut publisher = Client::open(port);
        assert_eq!(
            publisher.call_raw(&["PUBLISH", "__sentinel__:hello", "hi"]),
            b":2\r\n",
            "{server}"
        );
        assert_eq!(
            publisher.call_raw(&["PUBLISH", "other", "x"]),
            b":0\r\n",
            "{server}"
        );
        let want = "*3\r\n$7\r\nmessage\r\n$18\r\n__sentinel__:hello\r\n$2\r\nhi\r\n\
                    *4\r\n$8\r\npmessage\r\n$11\r\n__sentinel*\r\n$18\r\n__sentinel__:hello\r\n\
                    $2\r\nhi\r\n";
        let got = sub.read_exactly(want.len(), Duration::from_secs(2));
        assert_eq!(String::from_utf8_lossy(&got), want, "{server}");
        // A closed subscriber is no longer counted.
        drop(sub);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            publisher.call_raw(&["PUBLISH", "__sentinel__:hello", "hi"]),
            b":0\r\n",
            "{server}"
        );
    });
}

#[test]
fn reset_answers_and_resets_the_connection_as_redis() {
    on_both(|port, server| {
        let mut c = Client::open(port);
        check(
            &mut c,
            server,
            &[
                (
                    "RESET x",
                    "-ERR wrong number of arguments for 'reset' command\r\n",
                ),
                ("CLIENT SETNAME conn", "+OK\r\n"),
                ("SELECT 3", "+OK\r\n"),
                ("SET k in3", "+OK\r\n"),
                ("MULTI", "+OK\r\n"),
                ("SET k queued", "+QUEUED\r\n"),
                // Never queued: it ends the transaction, the name and the database.
                ("RESET", "+RESET\r\n"),
                ("EXEC", "-ERR EXEC without MULTI\r\n"),
                ("CLIENT GETNAME", "$-1\r\n"),
                ("GET k", "$-1\r\n"),
                ("SELECT 3", "+OK\r\n"),
                ("GET k", "$3\r\nin3\r\n"),
                (
                    "SUBSCRIBE news",
                    "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
                ),
                // Allowed in subscribed mode; it leaves it.
                ("RESET", "+RESET\r\n"),
                ("PING", "+PONG\r\n"),
            ],
        );
        let mut p = Client::open(port);
        assert_eq!(p.call_raw(&["PUBLISH", "news", "x"]), b":0\r\n", "{server}");
        // With a password, RESET is allowed before AUTH and leaves the connection
        // unauthenticated; a refused EXEC says so with Redis's prefix.
        check(
            &mut c,
            server,
            &[
                ("CONFIG SET requirepass pw", "+OK\r\n"),
                ("RESET", "+RESET\r\n"),
                ("PING", "-NOAUTH Authentication required.\r\n"),
                (
                    "EXEC",
                    "-EXECABORT Transaction discarded because of: NOAUTH Authentication \
                     required.\r\n",
                ),
                ("RESET", "+RESET\r\n"),
                ("AUTH pw", "+OK\r\n"),
            ],
        );
    });
}

/// `CONFIG SET appendfsync` answers as Redis and changes the durability while running:
/// under `always` a write's reply comes only after the backlog is durable up to it.
#[test]
fn config_set_appendfsync_answers_as_redis_and_changes_the_durability() {
    on_both(|port, server| {
        let mut c = Client::open(port);
        check(
            &mut c,
            server,
            &[
                (
                    "CONFIG SET appendfsync sometimes",
                    "-ERR CONFIG SET failed (possibly related to argument 'appendfsync') - \
                     argument(s) must be one of the following: everysec, always, no\r\n",
                ),
                ("CONFIG SET appendfsync NO", "+OK\r\n"),
                (
                    "CONFIG GET appendfsync",
                    "*2\r\n$11\r\nappendfsync\r\n$2\r\nno\r\n",
                ),
                ("CONFIG SET appendfsync always", "+OK\r\n"),
                (
                    "CONFIG GET appendfsync",
                    "*2\r\n$11\r\nappendfsync\r\n$6\r\nalways\r\n",
                ),
            ],
        );
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let m = DurableMaster::start(BINARY, dir.path(), &["--durability", "never"]);
    let mut c = m.client();
    let durable_behind = |c: &mut Client| {
        let persistence = c.info("persistence");
        let replication = c.info("replication");
        let durable: u64 = common::info_field(&persistence, "backlog_durable_offset")
            .parse()
            .expect("backlog_durable_offset");
        let end: u64 = common::info_field(&replication, "master_repl_offset")
            .parse()
            .expect("master_repl_offset");
        end - durable
    };
    c.ok(&["SET", "k", "1"]);
    assert!(durable_behind(&mut c) > 0, "never: nothing commits a write");
    c.ok(&["CONFIG", "SET", "appendfsync", "always"]);
    for i in 0..20 {
        c.ok(&["SET", "k", &i.to_string()]);
        assert_eq!(
            durable_behind(&mut c),
            0,
            "always: acknowledged means durable"
        );
    }
    let info = c.info("persistence");
    assert_eq!(common::info_field(&info, "durability"), "always");
}

/// The open-files hard limit of this process (which the servers it starts inherit), if finite.
fn open_files_hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// `CONFIG SET repl-backlog-size` and `CONFIG SET maxclients` answer as Redis 7.0 does, byte
/// for byte: memory values with their units, a size below the 16 KiB minimum raised to it,
/// Redis's texts for a malformed, negative, zero or out-of-range value, `maxclients` bounded
/// by the open-files limit (with the number that fits), all-or-nothing with another pair;
/// `CONFIG GET` follows; a lower `maxclients` refuses the next connection at once.
#[test]
#[allow(clippy::too_many_lines)] // one table of cases
fn config_set_backlog_size_and_maxclients_answer_as_redis() {
    let failed = |name: &str, why: &str| {
        format!("-ERR CONFIG SET failed (possibly related to argument '{name}') - {why}\r\n")
    };
    let size = |bytes: &str| {
        format!(
            "*2\r\n$17\r\nrepl-backlog-size\r\n${}\r\n{bytes}\r\n",
            bytes.len()
        )
    };
    let clients = |n: &str| format!("*2\r\n$10\r\nmaxclients\r\n${}\r\n{n}\r\n", n.len());
    let memory = failed("repl-backlog-size", "argument must be a memory value");
    let range = failed(
        "repl-backlog-size",
        "argument must be between 1 and 9223372036854775807 inclusive",
    );
    let (m_parse, m_range) = (
        failed("maxclients", "argument couldn't be parsed into an integer"),
        failed(
            "maxclients",
            "argument must be between 1 and 4294967295 inclusive",
        ),
    );
    let cases: Vec<(String, String)> = [
        ("CONFIG SET repl-backlog-size abc", memory.as_str()),
        ("CONFIG SET repl-backlog-size -1", &memory),
        ("CONFIG SET repl-backlog-size -1mb", &memory),
        ("CONFIG SET repl-backlog-size 1.5mb", &memory),
        ("CONFIG SET repl-backlog-size 1tb", &memory),
        ("CONFIG SET repl-backlog-size 0x10", &memory),
        ("CONFIG SET repl-backlog-size 0", &range),
        ("CONFIG SET repl-backlog-size ", &range),
        ("CONFIG SET repl-backlog-size mb", &range),
        ("CONFIG SET repl-backlog-size 99999999999999999999", &range),
        (
            "CONFIG SET repl-backlog-size 18446744073709551615kb",
            &range,
        ),
        ("CONFIG GET repl-backlog-size", &size("1048576")),
        ("CONFIG SET repl-backlog-size 100", "+OK\r\n"),
        ("CONFIG GET repl-backlog-size", &size("16384")),
        ("CONFIG SET repl-backlog-size 2MB", "+OK\r\n"),
        ("CONFIG GET repl-backlog-size", &size("2097152")),
        ("CONFIG SET repl-backlog-size 3m", "+OK\r\n"),
        ("CONFIG GET repl-backlog-size", &size("3000000")),
        ("CONFIG SET repl-backlog-size 00016kb", "+OK\r\n"),
        ("CONFIG GET repl-backlog-size", &size("16384")),
        (
            "CONFIG SET repl-backlog-size 1mb REPL-BACKLOG-SIZE 2mb",
            &failed("REPL-BACKLOG-SIZE", "duplicate parameter"),
        ),
        ("CONFIG SET repl-backlog-size 1mb maxclients 0", &m_range),
        ("CONFIG GET repl-backlog-size", &size("16384")),
        ("CONFIG SET maxclients abc", &m_parse),
        ("CONFIG SET maxclients 1.5", &m_parse),
        ("CONFIG SET maxclients -1", &m_range),
        ("CONFIG SET maxclients 0", &m_range),
        ("CONFIG SET maxclients 4294967296", &m_range),
        ("CONFIG SET maxclients 100 repl-backlog-size 1mb", "+OK\r\n"),
        ("CONFIG GET maxclients", &clients("100")),
        ("CONFIG GET repl-backlog-size", &size("1048576")),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    let too_many = open_files_hard_limit()
        .filter(|&h| h < u64::from(u32::MAX) - 64)
        .map(|hard| {
            (
                format!("CONFIG SET maxclients {}", hard + 1),
                failed(
                    "maxclients",
                    &format!(
                        "The operating system is not able to handle the specified number of \
                         clients, try with {}",
                        hard - 32
                    ),
                ),
            )
        });
    on_both(|port, server| {
        let mut c = Client::open(port);
        for (line, want) in cases.iter().chain(&too_many) {
            let got = c.call_raw(&argv(line));
            assert_eq!(String::from_utf8_lossy(&got), *want, "{server}: {line}");
        }
        check(
            &mut c,
            server,
            &[("CONFIG GET maxclients", &clients("100"))],
        );
        // One client connected (this one): with maxclients 1 the next is refused at once.
        check(&mut c, server, &[("CONFIG SET maxclients 1", "+OK\r\n")]);
        let mut refused = common::connect(port);
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = refused.read_to_end(&mut buf);
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "-ERR max number of clients reached\r\n",
            "{server}"
        );
        check(
            &mut c,
            server,
            &[("CONFIG SET maxclients 10000", "+OK\r\n")],
        );
        check(&mut c, server, &[("PING", "+PONG\r\n")]);
        let mut admitted = Client::open(port);
        assert_eq!(admitted.call_raw(&argv("PING")), b"+PONG\r\n", "{server}");
    });
}
