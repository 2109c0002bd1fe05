//! Engine behaviour on real files: appends, reads, PSYNC answers, reopen and restart
//! semantics, resize, history changes and bad input. Guards against a backlog that forgets,
//! misplaces or invents bytes, or answers PSYNC differently from Redis.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::match_wildcard_for_single_variants
)]

use durable_backlog::{
    Backlog, Durability, Error, FullResyncReason, Options, PsyncReply, ReadError, RecoveryKind,
    RunId,
};

mod stream;
use stream::{append_stream, bytes_from, check_held};

#[test]
fn new_backlog_starts_empty_at_offset_zero() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backlog::create(dir.path().join("b"), Options::new()).unwrap();
    assert_eq!((b.offset(), b.first_offset(), b.histlen()), (0, 1, 0));
    assert_eq!(b.capacity(), 1 << 20);
    assert_eq!(b.recovery().kind, RecoveryKind::Created);
    assert!(b.replid2().is_none());
    let s = b.stats();
    assert_eq!(s.second_repl_offset, -1);
    assert_eq!(s.master_replid2, None);
}

/// `Stats` renders Redis's `INFO replication` backlog fields byte for byte: forty zeros and
/// -1 before there is a previous run ID, that ID and its offset after a shift.
#[test]
fn stats_render_redis_info_lines_with_and_without_a_previous_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new()
            .capacity(16 * 1024)
            .durability(Durability::Never),
    )
    .unwrap();
    b.append(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let first = b.run_id();
    let s = b.stats();
    assert_eq!((s.master_replid, s.master_replid2), (first, None));
    assert_eq!(
        s.to_string(),
        format!(
            "master_replid:{first}\r\n\
             master_replid2:0000000000000000000000000000000000000000\r\n\
             master_repl_offset:14\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n\
             repl_backlog_size:16384\r\nrepl_backlog_first_byte_offset:1\r\n\
             repl_backlog_histlen:14\r\n"
        )
    );
    b.shift_run_id().unwrap();
    let second = b.run_id();
    let s = b.stats();
    assert_eq!((s.master_replid, s.master_replid2), (second, Some(first)));
    assert_eq!(
        s.to_string(),
        format!(
            "master_replid:{second}\r\nmaster_replid2:{first}\r\n\
             master_repl_offset:14\r\nsecond_repl_offset:15\r\nrepl_backlog_active:1\r\n\
             repl_backlog_size:16384\r\nrepl_backlog_first_byte_offset:1\r\n\
             repl_backlog_histlen:14\r\n"
        )
    );
}

#[test]
fn classic_scenario_continue_then_restart_keeps_continuing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new().durability(Durability::Never)).unwrap();
    append_stream(&mut b, 10_010);
    append_stream(&mut b, 33);
    let id = b.run_id();
    match b.psync(id.as_str(), 10_011) {
        PsyncReply::Continue { from, len, .. } => assert_eq!((from, len), (10_011, 33)),
        r => panic!("{r:?}"),
    }
    let mut missing = vec![0u8; 33];
    b.reader().read_at(10_011, &mut missing).unwrap();
    assert_eq!(missing, bytes_from(10_011, 33));
    b.close().unwrap();

    let b = Backlog::open(&path, Options::new()).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::Clean);
    assert_ne!(b.run_id(), id);
    assert_eq!(b.replid2(), Some((id, 10_044)));
    assert_eq!(b.offset(), 10_043);
    check_held(&b);
    for o in [10_011, 10_044, 1] {
        assert!(b.psync(id.as_str(), o).is_continue(), "old id at {o}");
    }
    assert!(matches!(
        b.psync(id.as_str(), 10_045),
        PsyncReply::FullResync {
            reason: FullResyncReason::BeyondPastIdOffset { limit: 10_044 },
            ..
        }
    ));
}

#[test]
fn appends_larger_than_capacity_keep_the_last_capacity_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 16 * 1024 + 7;
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new().capacity(cap).durability(Durability::Never),
    )
    .unwrap();
    append_stream(&mut b, 100);
    append_stream(&mut b, 3 * cap as usize + 11);
    assert_eq!(b.histlen(), cap);
    assert_eq!(b.first_offset(), b.offset() - cap + 1);
    check_held(&b);
    let mut one = [0u8; 1];
    assert!(matches!(
        b.reader().read_at(b.first_offset() - 1, &mut one),
        Err(ReadError::Overwritten { .. })
    ));
    assert!(matches!(
        b.reader().read_at(b.offset() + 2, &mut one),
        Err(ReadError::NotWritten { .. })
    ));
    assert_eq!(b.reader().read_at(b.offset() + 1, &mut one).unwrap(), 0);
}

#[test]
fn odd_capacities_and_offsets_near_two_to_the_62_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for (i, cap) in [16 * 1024u64, 20_000, 1_000_003, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("b{i}"));
        let mut b = Backlog::create(
            &path,
            Options::new().capacity(cap).durability(Durability::Never),
        )
        .unwrap();
        let id = RunId::random();
        b.reset(id, (1 << 62) - 5000).unwrap();
        for n in [1, 4095, 4097, 70_000, 13] {
            append_stream(&mut b, n);
            check_held(&b);
        }
        let end = b.offset();
        b.close().unwrap();
        let b = Backlog::open(&path, Options::new()).unwrap();
        assert_eq!(b.offset(), end);
        check_held(&b);
        assert!(b.psync(id.as_str(), end as i64 + 1).is_continue());
    }
}

#[test]
fn second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let b = Backlog::create(&path, Options::new()).unwrap();
    assert!(matches!(
        Backlog::open(&path, Options::new()),
        Err(Error::AlreadyOpen { .. })
    ));
    assert!(matches!(
        Backlog::create(&path, Options::new()),
        Err(Error::AlreadyExists { .. })
    ));
    b.close().unwrap();
    Backlog::open(&path, Options::new())
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn files_that_are_not_backlogs_get_clear_errors_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    Backlog::create(&path, Options::new().capacity(16 * 1024))
        .unwrap()
        .close()
        .unwrap();
    let good = std::fs::read(&path).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, this is not a backlog\n".repeat(1000)),
        ("truncated", good[..good.len() - 4096].to_vec()),
        ("no slots", {
            let mut v = good.clone();
            v[..8192].fill(0);
            v
        }),
    ];
    for (name, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = Backlog::open(&path, Options::new()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("expected") && msg.contains("found"),
            "{name}: {msg}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{name}: file was modified"
        );
    }
    assert!(matches!(
        Backlog::open(dir.path().join("missing"), Options::new()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn reopen_with_another_capacity_resizes_keeping_the_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(
        &path,
        Options::new()
            .capacity(64 * 1024)
            .durability(Durability::Never),
    )
    .unwrap();
    append_stream(&mut b, 100_000);
    let id = b.run_id();
    b.close().unwrap();
    let mut b = Backlog::open(&path, Options::new().capacity(20_000)).unwrap();
    assert_eq!(b.recovery().resized_from, Some(64 * 1024));
    assert_eq!(
        (b.capacity(), b.offset(), b.histlen()),
        (20_000, 100_000, 20_000)
    );
    check_held(&b);
    assert!(b.psync(id.as_str(), 90_000).is_continue());
    append_stream(&mut b, 5000);
    b.close().unwrap();
    let b = Backlog::open(&path, Options::new().capacity(1 << 20)).unwrap();
    assert_eq!((b.offset(), b.histlen()), (105_000, 20_000));
    check_held(&b);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");
}

#[test]
fn truncate_to_cuts_the_history_and_replicas_ahead_must_fully_resync() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new().durability(Durability::Never),
    )
    .unwrap();
    append_stream(&mut b, 1000);
    let id = b.run_id();
    b.truncate_to(900).unwrap();
    assert_eq!(b.offset(), 900);
    assert_ne!(b.run_id(), id);
    b.append(&[0xAA; 200]).unwrap();
    assert!(b.psync(id.as_str(), 901).is_continue());
    assert!(
        !b.psync(id.as_str(), 950).is_continue(),
        "a replica that saw dropped bytes continued"
    );
    assert!(matches!(
        b.truncate_to(5000),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn shift_run_id_keeps_the_old_id_valid_up_to_the_shift() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new().durability(Durability::Never),
    )
    .unwrap();
    append_stream(&mut b, 500);
    let id = b.run_id();
    b.shift_run_id().unwrap();
    append_stream(&mut b, 500);
    assert_eq!(b.replid2(), Some((id, 501)));
    assert!(b.psync(id.as_str(), 501).is_continue());
    assert!(!b.psync(id.as_str(), 502).is_continue());
    assert!(b.psync(b.run_id().as_str(), 1001).is_continue());
}

#[test]
fn adopted_master_id_is_current_and_survives_a_reopen_as_the_previous_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new().durability(Durability::Always)).unwrap();
    append_stream(&mut b, 500);
    let (mine, master) = (b.run_id(), RunId::random());
    b.adopt_run_id(master).unwrap();
    b.adopt_run_id(master).unwrap(); // already current: no new generation
    assert_eq!(b.run_id(), master);
    assert_eq!(b.past_run_ids(), vec![(mine, 501)]);
    append_stream(&mut b, 100);
    assert!(b.psync(master.as_str(), 601).is_continue());
    assert!(b.psync(mine.as_str(), 501).is_continue());
    assert!(!b.psync(mine.as_str(), 502).is_continue());
    drop(b);
    // A restarted replica: the open draws a fresh ID; the master's is the previous one, valid
    // up to the end + 1; adopting it again does not keep a second entry for it.
    let mut b = Backlog::open(&path, Options::new().durability(Durability::Always)).unwrap();
    let fresh = b.run_id();
    assert_eq!(b.replid2(), Some((master, 601)));
    b.adopt_run_id(master).unwrap();
    assert_eq!(b.run_id(), master);
    assert_eq!(b.past_run_ids(), vec![(fresh, 601), (mine, 501)]);
    assert!(b.psync(fresh.as_str(), 601).is_continue());
    assert!(b.psync(mine.as_str(), 501).is_continue());
}

#[test]
fn a_chain_of_restarts_still_continues_a_replica_from_three_generations_ago() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let mut b = Backlog::create(&path, Options::new().durability(Durability::Always)).unwrap();
    append_stream(&mut b, 300);
    let first_id = b.run_id();
    for _ in 0..3 {
        drop(b);
        b = Backlog::open(&path, Options::new().durability(Durability::Always)).unwrap();
        append_stream(&mut b, 100);
    }
    assert_eq!(b.past_run_ids().len(), 3);
    assert!(b.psync(first_id.as_str(), 301).is_continue());
    assert!(!b.psync(first_id.as_str(), 302).is_continue());
}

#[test]
fn the_history_chain_holds_eight_restarts_and_no_more() {
    // docs/FORMAT.md, "The history chain": a replica continues across 8 restarts of its
    // master while it was away; the 9th sends it into a full resync.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let opts = || Options::new().durability(Durability::Never);
    let mut b = Backlog::create(&path, opts()).unwrap();
    append_stream(&mut b, 300);
    let first_id = b.run_id();
    for restart in 1..=9 {
        b.close().unwrap();
        b = Backlog::open(&path, opts()).unwrap();
        append_stream(&mut b, 10);
        let continues = b.psync(first_id.as_str(), 301).is_continue();
        assert_eq!(continues, restart <= 8, "after restart {restart}");
    }
    assert_eq!(b.past_run_ids().len(), 8);
}

#[test]
fn everysec_commits_in_the_background_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backlog::create(
        dir.path().join("b"),
        Options::new().durability(Durability::EverySec),
    )
    .unwrap();
    append_stream(&mut b, 5000);
    // The flusher runs once a second; wait for it (bounded), never assert how fast.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.durable_offset() < 5000 {
        assert!(
            std::time::Instant::now() < deadline,
            "background flush never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(b.durable_offset(), b.offset());
}

#[test]
#[cfg(feature = "sim")]
fn durability_changes_while_open() {
    use durable_backlog::sim::SimDisk;
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, Options::new().durability(Durability::Never)).unwrap();
    append_stream(&mut b, 1000);
    let created = b.durable_offset();
    assert!(created < b.offset());
    disk.tick_flusher();
    assert_eq!(
        b.durable_offset(),
        created,
        "no background commit under Never"
    );
    b.set_durability(Durability::EverySec).unwrap();
    disk.tick_flusher();
    assert_eq!(b.durable_offset(), b.offset(), "EverySec's commit runs");
    append_stream(&mut b, 500);
    b.set_durability(Durability::Never).unwrap();
    disk.tick_flusher();
    assert!(
        b.durable_offset() < b.offset(),
        "the background commit stopped"
    );
    b.set_durability(Durability::Always).unwrap();
    assert_eq!(
        b.durable_offset(),
        b.offset(),
        "Always covers what was held"
    );
    append_stream(&mut b, 10);
    assert_eq!(b.durable_offset(), b.offset());
    assert_eq!(b.durability(), Durability::Always);
}

#[test]
#[cfg(feature = "sim")]
fn a_failed_sync_poisons_the_handle_and_reopen_recovers() {
    use durable_backlog::sim::SimDisk;
    const EIO: i32 = 5; // what the simulated disk's failed sync returns, as fsync would
    let disk = SimDisk::new();
    let mut b = Backlog::create_sim(&disk, Options::new().durability(Durability::Never)).unwrap();
    append_stream(&mut b, 1000);
    b.flush().unwrap();
    append_stream(&mut b, 1000);
    disk.fail_from(disk.ops());
    let Err(Error::Io { op, path, source }) = b.flush() else {
        panic!("the failed flush must return Error::Io");
    };
    assert_eq!(source.raw_os_error(), Some(EIO), "{source}");
    // Every later write reports the same failure, its io::Error kept as `source()`.
    for e in [b.append(b"x").unwrap_err(), b.flush().unwrap_err()] {
        let Error::Poisoned {
            op: op2,
            path: ref path2,
            ..
        } = e
        else {
            panic!("{e:?} instead of Poisoned");
        };
        assert_eq!((op2, path2), (op, &path));
        let io = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("Poisoned's source() is the io::Error");
        assert_eq!(io.raw_os_error(), Some(EIO));
        assert_eq!(
            e.to_string(),
            format!(
                "backlog is poisoned by an earlier failed flush ({op} (<simulated>): {source}); \
                 reopen it to recover"
            )
        );
    }
    assert!(
        b.close().is_err(),
        "close reported success after a failed sync"
    );
    let image = disk.durable_image();
    let b = Backlog::open_sim(&image, Options::new()).unwrap();
    assert_eq!(b.offset(), 1000);
    check_held(&b);
}

#[test]
fn temporary_files_of_a_killed_create_are_removed_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    // Left by a create that died (no such process), and one a live creator still holds.
    let stale = dir.path().join(format!(".b.tmp.{}.0000abcd", u32::MAX));
    std::fs::write(&stale, vec![0u8; 8192]).unwrap();
    let held = dir.path().join(format!(".b.tmp.{}.0000beef", u32::MAX - 1));
    let held_file = std::fs::File::create(&held).unwrap();
    held_file.try_lock().unwrap();
    let other = dir.path().join(format!(".other.tmp.{}.00000001", u32::MAX));
    std::fs::write(&other, b"x").unwrap();

    Backlog::create(&path, Options::new())
        .unwrap()
        .close()
        .unwrap();
    assert!(!stale.exists(), "stale temporary file survived create");
    assert!(held.exists(), "a locked temporary file was removed");
    assert!(
        other.exists(),
        "another backlog's temporary file was removed"
    );

    std::fs::write(&stale, b"again").unwrap();
    Backlog::open(&path, Options::new())
        .unwrap()
        .close()
        .unwrap();
    assert!(!stale.exists(), "stale temporary file survived open");
    assert!(held.exists());
}
