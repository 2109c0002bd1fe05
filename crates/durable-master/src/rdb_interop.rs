//! Interop with a real `redis-server`: guards against snapshots that our tests accept but Redis
//! does not (a replica that rejects a snapshot has already wiped its data and exits), and
//! against misreading the RDB files Redis writes (integer-encoded and LZF-compressed strings).
//!
//! Without `redis-server` on the PATH these tests print a loud `SKIPPED` notice and pass,
//! unless `REQUIRE_REDIS=1`, in which case they fail.

// Test code: a panic is a failed test.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use crate::keyspace::{DbIndex, Keyspace};
use crate::rdb::{RdbOptions, ReplInfo, rdb_to_vec, read_rdb};
use test_redis::{Client, RedisGuard, Reply, redis_server};

fn db(n: u64) -> DbIndex {
    DbIndex::new(n).expect("db index")
}

/// A deterministic value for key number `i`: integer-like, long and compressible, binary,
/// empty, and plain strings, so every string encoding is exercised.
fn value_for(i: usize) -> Vec<u8> {
    match i % 7 {
        0 => i.to_string().into_bytes(),
        1 => format!("-{}", i * 1_000_003).into_bytes(),
        2 => format!("compressible-{i}-").repeat(40).into_bytes(),
        3 => vec![0, b'\r', b'\n', 0xFF, (i % 256) as u8],
        4 => Vec::new(),
        5 => format!("{}", 4_294_967_296_u64 + i as u64).into_bytes(),
        _ => format!("value:{i}").into_bytes(),
    }
}

fn key_for(i: usize) -> Vec<u8> {
    if i.is_multiple_of(11) {
        // Integer-like keys are integer-encoded too.
        i.to_string().into_bytes()
    } else {
        format!("key:{i:05}").into_bytes()
    }
}

/// Every key of `db` must have the expected value in Redis (checked with MGET in batches).
fn assert_db_matches(client: &mut Client, ks: &Keyspace, index: DbIndex) {
    client.ok(&[b"SELECT".to_vec(), index.to_string().into_bytes()]);
    let expected_len = i64::try_from(ks.db_len(index)).expect("len");
    assert_eq!(
        client.integer(&[b"DBSIZE"]),
        expected_len,
        "DBSIZE of db {index}"
    );
    let entries: Vec<(&[u8], &[u8])> = ks.iter(index).collect();
    for batch in entries.chunks(500) {
        let mut argv: Vec<&[u8]> = vec![b"MGET"];
        argv.extend(batch.iter().map(|(k, _)| *k));
        let Reply::Array(values) = client.call(&argv) else {
            panic!("MGET did not return an array")
        };
        assert_eq!(values.len(), batch.len());
        for ((key, value), got) in batch.iter().zip(values) {
            assert_eq!(
                got,
                Reply::Bulk(Some(value.to_vec())),
                "db {index} key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

fn debug_digest(client: &mut Client) -> String {
    match client.call(&[b"DEBUG".as_slice(), b"DIGEST"]) {
        Reply::Status(digest) => digest,
        other => panic!("DEBUG DIGEST: {other:?}"),
    }
}

#[test]
fn redis_server_loads_our_rdb_with_10k_keys_in_two_dbs() {
    let Some(binary) = redis_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ks = Keyspace::new();
    for i in 0..10_000 {
        let target = if i % 3 == 0 { db(0) } else { db(9) };
        ks.set(target, key_for(i), value_for(i));
    }
    ks.set(db(9), b"big".to_vec(), b"0123456789".repeat(100_000));
    ks.set(db(9), b"\0bin\r\nkey".to_vec(), b"v".to_vec());
    let repl_id = b"53c1f1d6e5e0c6c0b0aa7a6a1d0e8f2c4b7a9e01".to_vec();
    let options = RdbOptions {
        ctime: 1_700_000_000,
        used_mem: 1 << 20,
        repl: Some(ReplInfo {
            id: repl_id.clone(),
            offset: 123_456_789,
            stream_db: db(9),
        }),
        ..RdbOptions::default()
    };
    let bytes = rdb_to_vec(&ks, &options);
    std::fs::write(dir.path().join("dump.rdb"), &bytes).expect("write dump.rdb");

    let redis = RedisGuard::start(&binary, dir.path());
    let mut client = redis.client();
    let log = redis.log();
    assert!(log.contains("DB loaded from disk"), "redis log:\n{log}");
    assert_db_matches(&mut client, &ks, db(0));
    assert_db_matches(&mut client, &ks, db(9));
    for other in [1, 2, 8, 10, 15] {
        client.ok(&[b"SELECT".to_vec(), other.to_string().into_bytes()]);
        assert_eq!(client.integer(&[b"DBSIZE"]), 0, "db {other}");
    }
    // Redis 7.0 keeps the snapshot's replication ID as its secondary ID, valid up to offset+1:
    // proof that it read our repl-id and repl-offset aux fields.
    let info = client.info("replication");
    let id = String::from_utf8(repl_id).expect("hex");
    assert!(
        info.contains(&format!("master_replid2:{id}")),
        "INFO replication:\n{info}"
    );
    assert!(
        info.contains("second_repl_offset:123456790"),
        "INFO replication:\n{info}"
    );
}

#[test]
fn our_reader_reads_what_redis_server_saves_identically() {
    let Some(binary) = redis_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisGuard::start(&binary, dir.path());
    let mut client = redis.client();

    let mut expected = Keyspace::new();
    let special: Vec<(DbIndex, Vec<u8>, Vec<u8>)> = vec![
        (db(0), b"long-compressible".to_vec(), b"abc".repeat(10_000)),
        (
            db(0),
            b"long-text".to_vec(),
            "the quick brown fox ".repeat(500).into_bytes(),
        ),
        (db(0), b"int8".to_vec(), b"-100".to_vec()),
        (db(0), b"int16".to_vec(), b"30000".to_vec()),
        (db(0), b"int32".to_vec(), b"-2000000000".to_vec()),
        (db(0), b"int64".to_vec(), b"9223372036854775807".to_vec()),
        (db(0), b"leading-zero".to_vec(), b"007".to_vec()),
        (db(0), b"12345".to_vec(), b"integer-like key".to_vec()),
        (db(0), b"empty".to_vec(), Vec::new()),
        (db(3), b"bin".to_vec(), vec![0, 1, 2, b'\r', b'\n', 255]),
        (
            db(3),
            b"random".to_vec(),
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        (db(15), b"last-db".to_vec(), b"x".to_vec()),
    ];
    for (index, key, value) in special {
        client.ok(&[b"SELECT".to_vec(), index.to_string().into_bytes()]);
        client.ok(&[b"SET".to_vec(), key.clone(), value.clone()]);
        expected.set(index, key, value);
    }
    // Integers Redis holds in its INT encoding (INCR results) are saved through a different
    // path than strings: cover it.
    client.ok(&[b"SELECT".as_slice(), b"3"]);
    for (key, by) in [("counter", 5_i64), ("negative", -70_000), ("huge", 1 << 40)] {
        client.integer(&[b"INCRBY".to_vec(), key.into(), by.to_string().into_bytes()]);
        expected.set(db(3), key.into(), by.to_string().into_bytes());
    }
    client.ok(&[b"SELECT".as_slice(), b"0"]);
    for i in 0..2_000 {
        let (key, value) = (key_for(i), value_for(i));
        client.ok(&[b"SET".to_vec(), key.clone(), value.clone()]);
        expected.set(db(0), key, value);
    }
    client.ok(&[b"SAVE"]);

    let bytes = std::fs::read(dir.path().join("dump.rdb")).expect("read dump.rdb");
    let loaded = read_rdb(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.version, 10);
    assert!(loaded.checksum_verified);
    let aux = |name: &str| {
        loaded
            .aux
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(aux("redis-bits").as_deref(), Some("64"));
    assert!(
        aux("redis-ver").is_some_and(|v| v.starts_with("7.")),
        "{:?}",
        aux("redis-ver")
    );
    assert_eq!(loaded.keyspace.len(), expected.len());
    for index in DbIndex::all() {
        for (key, value) in expected.iter(index) {
            assert_eq!(
                loaded.keyspace.get(index, key),
                Some(value),
                "db {index} key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
    assert_eq!(loaded.keyspace, expected);
    // The file really used LZF (0xC3) for the long values, so decompression was exercised:
    // it is far smaller than the same data stored plainly.
    let plain = rdb_to_vec(
        &expected,
        &RdbOptions {
            compress: false,
            ..RdbOptions::default()
        },
    );
    assert!(
        bytes.len() + 30_000 < plain.len(),
        "redis wrote {} bytes, plain encoding is {}: values were not compressed",
        bytes.len(),
        plain.len()
    );
}

#[test]
fn redis_snapshot_rewritten_by_us_has_the_same_redis_digest() {
    let Some(binary) = redis_server() else { return };
    let source_dir = tempfile::tempdir().expect("temp dir");
    let source = RedisGuard::start(&binary, source_dir.path());
    let mut client = source.client();
    for (index, count) in [(0, 1500), (5, 700)] {
        client.ok(&[b"SELECT".to_vec(), index.to_string().into_bytes()]);
        for i in 0..count {
            client.ok(&[b"SET".to_vec(), key_for(i), value_for(i + index)]);
        }
    }
    client.ok(&[b"SAVE"]);
    let digest = debug_digest(&mut client);
    let saved = std::fs::read(source_dir.path().join("dump.rdb")).expect("read dump.rdb");
    drop(client);
    drop(source);

    let loaded = read_rdb(&saved).unwrap_or_else(|e| panic!("{e}"));
    for compress in [true, false] {
        let target_dir = tempfile::tempdir().expect("temp dir");
        let options = RdbOptions {
            compress,
            ..RdbOptions::default()
        };
        std::fs::write(
            target_dir.path().join("dump.rdb"),
            rdb_to_vec(&loaded.keyspace, &options),
        )
        .expect("write dump.rdb");
        let target = RedisGuard::start(&binary, target_dir.path());
        let mut client = target.client();
        assert_eq!(debug_digest(&mut client), digest, "compress={compress}");
    }
}
