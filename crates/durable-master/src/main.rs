//! `durable-master`: a small Redis-protocol master built on the `durable-backlog` library.
//!
//! Real `redis-server` replicas follow it with `PSYNC`, also across its restarts and crashes:
//! the durable backlog is both the replication backlog and the master's write-ahead log.
//! See docs/MASTER.md.

mod accept;
mod client_cmds;
mod commands;
mod config;
mod config_cmd;
mod conn;
mod event_loop;
mod info;
mod keyspace;
mod log;
mod lzf;
mod multi;
mod pubsub;
mod rdb;
mod replica;
mod replicaof_file;
mod server;
mod settings;
mod store;
mod upstream;

#[cfg(test)]
mod commands_interop;
#[cfg(test)]
mod rdb_interop;

use std::net::TcpListener;

/// The server allocates per command (arguments, replies, stream encoding); glibc's malloc
/// took about a third of its CPU time under pipelined MSET. Redis links jemalloc for the same
/// reason.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use crate::server::Server;
use crate::store::Store;

fn main() {
    let cfg = match config::parse_args(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        // Help and version to stdout with status 0, a mistake to stderr with status 2.
        Err(e) => e.exit(),
    };
    log::notice(format_args!(
        "durable-master {} starting: data in {}, backlog {} bytes, durability {:?}",
        env!("CARGO_PKG_VERSION"),
        cfg.dir.display(),
        cfg.backlog_size,
        cfg.durability
    ));
    let store = match Store::recover(&cfg) {
        Ok(s) => s,
        Err(e) => {
            log::warning(format_args!("FATAL: {e}"));
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind((cfg.bind.as_str(), cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            log::warning(format_args!(
                "FATAL: cannot listen on {}:{}: {e}",
                cfg.bind, cfg.port
            ));
            std::process::exit(1);
        }
    };
    log::notice(format_args!(
        "Ready to accept connections on {}:{}",
        cfg.bind, cfg.port
    ));
    let cfg = accept::adjust_open_files_limit(cfg);
    let server = Arc::new(Server::new(cfg, store));
    let pinger = Arc::clone(&server);
    if let Err(e) = std::thread::Builder::new()
        .name("pinger".into())
        .spawn(move || pinger.run_pinger())
    {
        log::warning(format_args!("FATAL: starting the ping thread: {e}"));
        std::process::exit(1);
    }
    upstream::attach(&server);
    if let Some((host, port)) = server.cfg.replicaof.clone() {
        replicaof_file::save(&server.cfg.dir, &host, port);
        upstream::set_master(&server, host.clone(), port);
        log::notice(format_args!(
            "REPLICAOF {host}:{port} enabled (--replicaof)"
        ));
    } else {
        match replicaof_file::load(&server.cfg.dir) {
            Ok(None) => {}
            Ok(Some((host, port))) => {
                upstream::set_master(&server, host.clone(), port);
                log::notice(format_args!(
                    "REPLICAOF {host}:{port} enabled (kept from the last run in the data \
                     directory's replicaof file; REPLICAOF NO ONE makes this server a master)"
                ));
            }
            Err(e) => {
                log::warning(format_args!("FATAL: {e}"));
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = handle_signals(&server) {
        log::warning(format_args!("FATAL: setting up signal handling: {e}"));
        std::process::exit(1);
    }
    if let Err(e) = event_loop::run(listener, &server) {
        log::warning(format_args!("FATAL: event loop: {e}"));
        std::process::exit(1);
    }
}

/// SIGTERM and SIGINT stop the server as `SHUTDOWN` does (final snapshot, backlog closed
/// cleanly, exit 0), from a thread of their own: the handler signal-hook installs only wakes
/// it.
fn handle_signals(server: &Arc<Server>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let server = Arc::clone(server);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                log::warning(format_args!("Received {name} scheduling shutdown..."));
                server.shutdown();
            }
        })?;
    Ok(())
}
