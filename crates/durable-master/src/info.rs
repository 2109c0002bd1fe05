//! The server's introspection replies: `INFO` and `ROLE`, with Redis's section and field
//! names.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use durable_resp as resp;

use crate::keyspace::{DbIndex, Keyspace};
use crate::server::{Server, lock};

/// `ROLE`: `master`, the offset, and each replica's ip, port and acknowledged offset; on a
/// replica, the replica form (see `upstream::role`).
pub(crate) fn role(server: &Server) -> Vec<u8> {
    if let Some(reply) = crate::upstream::role(server) {
        return reply;
    }
    let offset = server.reader().offset();
    let replicas: Vec<Vec<u8>> = lock(&server.replicas)
        .iter()
        .filter(|r| r.online.load(Ordering::SeqCst))
        .map(|r| {
            resp::array(&[
                resp::bulk(r.ip.as_bytes()),
                resp::bulk(r.port.to_string().as_bytes()),
                resp::bulk(r.ack.load(Ordering::SeqCst).to_string().as_bytes()),
            ])
        })
        .collect();
    resp::array(&[
        resp::bulk(b"master"),
        resp::integer(i64::try_from(offset).unwrap_or(i64::MAX)),
        resp::array(&replicas),
    ])
}

/// `INFO [section]`, with Redis's section and field names.
pub(crate) fn info(server: &Server, section: Option<&str>) -> String {
    let want = |name: &str| match section {
        None | Some("default" | "all" | "everything") => true,
        Some(s) => s == name,
    };
    let mut g = server.store();
    let store = g.get();
    let mut out = String::new();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:7.0.15\r\ndurable_master_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            server.run_id,
            server.cfg.port,
            server.started.elapsed().as_secs()
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            server.connected_clients.load(Ordering::Relaxed)
        );
    }
    if want("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_last_save_time:{}\r\n\
             rdb_last_bgsave_status:{}\r\nrdb_saves:{}\r\nbacklog_snapshot_waits:{}\r\nsnapshot_repl_offset:{}\r\ndurability:{}\r\n\
             backlog_durable_offset:{}\r\n\r\n",
            store.backlog.offset() - store.snapshot_offset,
            store.last_save,
            if store.snapshot_failed() { "err" } else { "ok" },
            store.snapshots,
            store.snapshot_waits,
            store.snapshot_offset,
            format!("{:?}", server.live.durability()).to_ascii_lowercase(),
            store.backlog.durable_offset(),
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\n\r\n",
            server.connections.load(Ordering::Relaxed),
            server.commands.load(Ordering::Relaxed),
            server.rejected_connections.load(Ordering::Relaxed),
            server.sync_full.load(Ordering::SeqCst),
            server.sync_partial_ok.load(Ordering::SeqCst),
            server.sync_partial_err.load(Ordering::SeqCst),
        );
    }
    if want("replication") {
        let now = server.millis();
        let good = (server.live.min_replicas_to_write() > 0
            && server.live.min_replicas_max_lag() > 0)
            .then(|| server.good_replicas());
        let replicas = lock(&server.replicas);
        let online: Vec<_> = replicas
            .iter()
            .filter(|r| !r.closed.load(Ordering::SeqCst))
            .collect();
        out += "# Replication\r\n";
        out += &crate::upstream::info_role_lines(server, store.backlog.offset());
        let _ = write!(out, "connected_slaves:{}\r\n", online.len());
        if let Some(good) = good {
            let _ = write!(out, "min_slaves_good_slaves:{good}\r\n");
        }
        for (i, r) in online.iter().enumerate() {
            let state = if r.online.load(Ordering::SeqCst) {
                "online"
            } else {
                "send_bulk"
            };
            let _ = write!(
                out,
                "slave{i}:ip={},port={},state={state},offset={},lag={}\r\n",
                r.ip,
                r.port,
                r.ack.load(Ordering::SeqCst),
                now.saturating_sub(r.last_ack_ms.load(Ordering::Relaxed)) / 1000
            );
        }
        out += "master_failover_state:no-failover\r\n";
        out += &store.backlog.stats().to_string();
        out += "\r\n";
    }
    if want("keyspace") {
        out += "# Keyspace\r\n";
        out += &keyspace_lines(&store.ks);
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

fn keyspace_lines(ks: &Keyspace) -> String {
    let mut out = String::new();
    for db in DbIndex::all().filter(|&db| ks.db_len(db) > 0) {
        let _ = write!(out, "db{db}:keys={},expires=0,avg_ttl=0\r\n", ks.db_len(db));
    }
    out
}
