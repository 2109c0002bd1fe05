//! The classic partial-resync scenario, then a master restart.
//!
//! Three replicas sit at offset 10010. The master streams 33 more bytes (`SET key value`);
//! replica A misses them and reconnects with `PSYNC <replid> 10011`. Then the master closes its
//! backlog and reopens it as a restarted master would, and answers the replicas again; a
//! replica too far behind the 16 KiB ring gets `+FULLRESYNC`.
//!
//! Run: `cargo run --release -p quickstart` (a package of its own, so only the library and
//! `tempfile` are built for it, not the library's test and bench dependencies).

use durable_backlog::{Backlog, Durability, Options, PsyncReply};

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";

fn show(who: &str, replid: &str, offset: i64, backlog: &Backlog) {
    let reply = backlog.psync(replid, offset);
    let line = String::from_utf8_lossy(&reply.to_wire())
        .trim_end()
        .to_string();
    print!("  {who:<32} PSYNC {replid} {offset:<6} -> {line}");
    match reply {
        PsyncReply::Continue { from, len, .. } => {
            let mut bytes = vec![0u8; len as usize];
            let n = backlog
                .reader()
                .read_at(from, &mut bytes)
                .expect("bytes are in the backlog");
            let text = String::from_utf8_lossy(&bytes[..n]);
            let shown: String = text.chars().take(40).collect();
            let more = if text.chars().count() > 40 { "..." } else { "" };
            println!("  ({n} bytes sent: {shown:?}{more})");
        }
        PsyncReply::FullResync { reason, .. } => println!("  ({reason})"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("replication.backlog");
    // 16 KiB: Redis's smallest repl-backlog-size, so the ring wraps within the demo.
    let opts = Options::new()
        .capacity(16 * 1024)
        .durability(Durability::Always);

    let mut master = Backlog::create(&path, opts)?;
    println!(
        "master created {} (capacity {} bytes, run ID {})",
        path.display(),
        master.capacity(),
        master.run_id()
    );
    for _ in 0..715 {
        master.append(PING)?; // 715 x 14 bytes: every replica is at offset 10010
    }
    let id = master.run_id().to_string();
    println!("replicas A, B and C are at offset {}", master.offset());
    master.append(SET)?;
    println!(
        "master streamed {} more bytes (SET key value); B and C got them, A did not; master offset {}",
        SET.len(),
        master.offset()
    );

    println!("\nreconnections:");
    show("replica A (missed 33 bytes)", &id, 10_011, &master);
    show("replica B (in sync)", &id, 10_044, &master);
    show("new replica", "?", -1, &master);

    master.close()?;
    println!("\nmaster restarted (backlog closed and reopened)");
    let master = Backlog::open(&path, opts)?;
    let r = master.recovery();
    println!(
        "recovered: {}; offsets {}..={}; new run ID {}; previous {} valid up to PSYNC offset {}",
        r.kind,
        master.first_offset(),
        master.offset(),
        master.run_id(),
        id,
        master.replid2().map_or(0, |(_, o)| o)
    );
    println!("\nreconnections after the restart:");
    show("replica A (missed 33 bytes)", &id, 10_011, &master);
    show("replica B (in sync)", &id, 10_044, &master);
    show("replica D (ahead: offset 10100)", &id, 10_101, &master);
    show(
        "replica E (other master)",
        "0123456789abcdef0123456789abcdef01234567",
        10_044,
        &master,
    );

    let mut master = master;
    for _ in 0..714 {
        master.append(PING)?;
    }
    println!(
        "\nmaster streamed 9996 more bytes; the 16 KiB ring now holds offsets {}..={}",
        master.first_offset(),
        master.offset()
    );
    show("replica C (at 10043)", &id, 10_044, &master);
    show("replica F (lagging at 100)", &id, 101, &master);
    master.close()?;
    Ok(())
}
