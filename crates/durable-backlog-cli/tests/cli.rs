//! The `durable-backlog` command run as a user runs it: a spawned process whose stdout, stderr
//! and exit code are checked. Guards against a tool that panics or prints a backtrace on a
//! damaged or foreign file, misreports what a file holds, decodes the stream wrongly, answers
//! PSYNC differently from the library, exits with the wrong code, or disturbs a live writer.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use durable_backlog::{Backlog, Durability, Options};

struct Run {
    code: i32,
    out: String,
    err: String,
    raw: Vec<u8>,
}

/// Tests in this file run one at a time. A backlog's lock belongs to its open file
/// description (flock), and a child that another test thread forks while this test holds a
/// backlog open inherits that description until it execs: a `close` would then not release
/// the lock at once, and a spawned CLI would find the file still "already open".
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(args: &[&str]) -> Run {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_durable-backlog"))
        .args(args)
        .output()
        .expect("spawn the binary");
    Run {
        code: o.status.code().expect("exited, not killed by a signal"),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        raw: o.stdout,
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An error run: exit 2, exactly one line on stderr, no panic or backtrace.
fn assert_error(r: &Run, needle: &str) {
    assert_eq!(r.code, 2, "stdout {:?} stderr {:?}", r.out, r.err);
    assert_eq!(r.err.lines().count(), 1, "one line: {:?}", r.err);
    assert!(r.err.starts_with("durable-backlog: error: "), "{:?}", r.err);
    assert!(r.err.contains(needle), "{:?} lacks {needle:?}", r.err);
    assert!(!r.err.contains("panicked") && !r.err.contains("RUST_BACKTRACE"));
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    v
}

/// A backlog holding `SELECT 0` then `n` SETs, closed; returns each command's first offset.
fn make_backlog(path: &Path, cap: u64, n: usize) -> Vec<(u64, String)> {
    let mut b = Backlog::create(
        path,
        Options::new().capacity(cap).durability(Durability::Never),
    )
    .unwrap();
    let mut cmds = vec![(1, "SELECT 0".to_string())];
    b.append(&cmd(&["SELECT", "0"])).unwrap();
    for i in 0..n {
        let key = format!("key:{i}");
        let val = format!("value {i} {}", "x".repeat(i % 50));
        cmds.push((b.offset() + 1, format!("SET {key} \"{val}\"")));
        b.append(&cmd(&["SET", &key, &val])).unwrap();
    }
    b.close().unwrap();
    cmds
}

#[test]
fn create_info_psync_dump_session() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("backlog");
    let r = run(&["create", p(&f), "--size", "1mb"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("capacity 1048576 bytes (1 MiB)"),
        "{}",
        r.out
    );

    let mut b = Backlog::open(&f, Options::new().durability(Durability::Never)).unwrap();
    let mut filler = Vec::new();
    while filler.len() < 10_010 {
        filler.extend(cmd(&["PING"]));
    }
    b.append(&filler).unwrap();
    let o = b.offset();
    b.append(&cmd(&["SET", "k", "v"])).unwrap();
    let id = b.run_id();
    b.close().unwrap();

    let r = run(&["info", p(&f)]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains(&format!("run id:           {id}")),
        "{}",
        r.out
    );
    assert!(r.out.contains("shutdown:         clean"));
    assert!(r.out.contains(&format!("last offset:      {}", o + 27)));
    assert!(r.out.contains("state:            at rest"));

    let r = run(&["psync", p(&f), id.as_str(), &(o + 1).to_string()]);
    assert_eq!(r.code, 0);
    let mut lines = r.out.lines();
    assert_eq!(lines.next(), Some(format!("+CONTINUE {id}").as_str()));
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "partial resync: sending 27 bytes of backlog (offsets {}..={}), then the live stream",
                o + 1,
                o + 27
            )
            .as_str()
        )
    );
    let r = run(&["psync", p(&f), &"0".repeat(40), "5"]);
    assert_eq!(
        r.out.lines().next(),
        Some(format!("+FULLRESYNC {id} {}", o + 27).as_str())
    );
    assert!(r.out.contains("full resync: replication ID mismatch"));

    let r = run(&["dump", p(&f), "--from", &(o + 1).to_string(), "--resp"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, format!("{} SET k v\n", o + 1));
    assert!(r.err.is_empty());

    let r = run(&["dump", p(&f), "--from", "1", "--len", "14"]);
    assert_eq!(r.raw, cmd(&["PING"]));
}

#[test]
fn dump_decodes_every_command_and_skips_a_cut_one_saying_so() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    let cmds = make_backlog(&f, 16 * 1024, 400); // laps the ring several times
    let info = run(&["info", "--json", p(&f)]);
    let v: serde_json::Value = serde_json::from_str(&info.out).unwrap();
    let first = v["first_offset"].as_u64().unwrap();
    let last = v["last_offset"].as_u64().unwrap();
    assert_eq!(last + 1 - first, 16 * 1024);

    let r = run(&["dump", p(&f), "--resp"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let held: Vec<String> = cmds
        .iter()
        .filter(|(o, _)| *o >= first)
        .map(|(o, c)| format!("{o} {c}"))
        .collect();
    assert_eq!(r.out.lines().collect::<Vec<_>>(), held);
    let boundary = cmds.iter().find(|(o, _)| *o >= first).unwrap().0;
    if boundary > first {
        assert!(
            r.err.contains(&format!(
                "skipped {} bytes at offsets {first}..={}",
                boundary - first,
                boundary - 1
            )),
            "{}",
            r.err
        );
    }
    // Start in the middle of a command on purpose.
    let (o, _) = cmds[cmds.len() - 3];
    let r = run(&["dump", p(&f), "--from", &(o + 3).to_string(), "--resp"]);
    assert_eq!(r.out.lines().count(), 2);
    assert!(r.err.contains("skipped"), "{}", r.err);
    // End in the middle of one.
    let r = run(&[
        "dump",
        p(&f),
        "--from",
        &o.to_string(),
        "--len",
        "10",
        "--resp",
    ]);
    assert_eq!(r.out, "");
    assert!(
        r.err
            .contains(&format!("the command at offset {o} continues"))
    );
    // JSON lines.
    let r = run(&["dump", "--json", p(&f), "--from", &o.to_string(), "--resp"]);
    let lines: Vec<serde_json::Value> = r
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["offset"].as_u64(), Some(o));
    assert_eq!(lines[0]["args"][0], "SET");
}

#[test]
fn raw_dump_returns_exactly_the_held_bytes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    let mut b = Backlog::create(&f, Options::new().capacity(16 * 1024)).unwrap();
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.append(&data).unwrap();
    b.close().unwrap();
    let r = run(&["dump", p(&f)]);
    assert_eq!(r.code, 0);
    assert_eq!(r.raw, &data[40_000 - 16 * 1024..]);
    let r = run(&["dump", p(&f), "--from", "30000", "--len", "1kb"]);
    assert_eq!(r.raw, &data[29_999..29_999 + 1024]);
    let r = run(&["dump", p(&f), "--from", "39990", "--len", "100"]);
    assert_eq!(r.raw, &data[39_989..]);
    assert!(r.err.contains("only 11 bytes are held"));
    let r = run(&["dump", "--json", p(&f), "--from", "39999"]);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(
        v["hex"],
        format!("{:02x}{:02x}", data[39_998], data[39_999])
    );

    assert_error(
        &run(&["dump", p(&f), "--from", "5"]),
        "no longer in the backlog",
    );
    assert_error(
        &run(&["dump", p(&f), "--from", "40002"]),
        "beyond the newest offset 40000",
    );
    assert_error(
        &run(&["dump", p(&f), "--from", "12x"]),
        "bad offset \"12x\"",
    );
    assert_error(&run(&["dump", p(&f), "--len", "1tb"]), "bad size \"1tb\"");
}

#[test]
fn create_and_resize_take_redis_sizes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    assert_error(
        &run(&["create", p(&f), "--size", "1kb"]),
        "capacity 1024 is outside",
    );
    assert_error(&run(&["create", p(&f), "--size", "1.5mb"]), "bad size");
    assert!(!f.exists());
    let r = run(&["create", p(&f), "--size", "16KB"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_error(&run(&["create", p(&f), "--size", "16kb"]), "already exists");
    let mut b = Backlog::open(&f, Options::new()).unwrap();
    b.append(&vec![7u8; 20_000]).unwrap();
    let r = run(&["resize", p(&f), "--size", "64mb"]);
    assert_error(&r, "already open");
    b.close().unwrap();
    let r = run(&["resize", p(&f), "--size", "64mb"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out
            .contains("16384 bytes (16 KiB) -> 67108864 bytes (64 MiB)"),
        "{}",
        r.out
    );
    assert!(r.out.contains("kept offsets 3617..=20000"), "{}", r.out);
    let r = run(&["info", "--json", p(&f)]);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["capacity"], 64 << 20);
    assert_eq!(v["first_offset"], 3617);
    let r = run(&["resize", p(&f), "--size", "64mb"]);
    assert!(r.out.contains("nothing changed"));
    let r = run(&["resize", "--json", p(&f), "--size", "16000"]);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_error(&run(&["resize", p(&f), "--size", "16000"]), "outside");
    assert_eq!(
        v["error"].as_str().map(|s| s.contains("outside")),
        Some(true)
    );
}

#[test]
fn bad_input_gets_one_line_and_exit_2() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for c in ["info", "verify", "dump"] {
        assert_error(&run(&[c, p(&missing)]), "no such file");
    }
    assert_error(&run(&["psync", p(&missing), "?", "-1"]), "no such file");
    assert_error(&run(&["info", p(dir.path())]), "not a regular file");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 100_000]).unwrap();
    assert_error(&run(&["verify", p(&junk)]), "not a backlog file");
    std::fs::write(&junk, b"").unwrap();
    assert_error(&run(&["info", p(&junk)]), "is not a backlog file");
    let short = dir.path().join("short");
    let f = dir.path().join("b");
    make_backlog(&f, 16 * 1024, 10);
    std::fs::write(&short, &std::fs::read(&f).unwrap()[..9000]).unwrap();
    assert_error(
        &run(&["info", p(&short)]),
        "at least 12288 bytes, found 9000",
    );
    assert_error(&run(&["psync", p(&f), "?", "minus one"]), "bad offset");
    // clap's own usage errors also exit 2 (with its usage text).
    for args in [
        &[][..],
        &["info"],
        &["frobnicate"],
        &["info", p(&f), "--bogus"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(!r.err.contains("panicked"));
    }
    assert_eq!(run(&["--help"]).code, 0);
}

#[test]
fn verify_names_the_first_bad_offset() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    make_backlog(&f, 64 * 1024, 300);
    let r = run(&["verify", p(&f)]);
    assert_eq!(r.code, 0, "{} {}", r.out, r.err);
    assert!(r.out.contains(": intact:"), "{}", r.out);
    assert!(
        r.err.is_empty(),
        "no progress bar when stderr is not a terminal"
    );

    let v: serde_json::Value = serde_json::from_str(&run(&["info", "--json", p(&f)]).out).unwrap();
    let data_offset = v["file_len"].as_u64().unwrap() - 64 * 1024;
    let last = v["last_offset"].as_u64().unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    // Damage stream offset 9000 (ring position 9000, block 2 = offsets 8192..=12287).
    bytes[(data_offset + 9000) as usize] ^= 0x40;
    std::fs::write(&f, &bytes).unwrap();
    let r = run(&["verify", p(&f)]);
    assert_eq!(r.code, 1, "{}", r.out);
    let first = r.out.lines().next().unwrap();
    assert!(
        first.contains(&format!(
            "damaged: first bad offset 8192 (file byte {}): data of offsets 8192..=12287",
            data_offset + 8192
        )),
        "{first}"
    );
    let r = run(&["verify", "--json", p(&f)]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["first_bad_offset"], 8192);
    assert_eq!(v["intact"], false);
    assert!(last > 12_287);
}

/// Every reading command on every damaged variant of a good file: exit 0, 1 or 2; an error
/// is one line; nothing panics.
#[test]
fn corrupted_file_corpus() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    make_backlog(&f, 16 * 1024, 400); // the ring is full: every data byte is held
    let good = std::fs::read(&f).unwrap();
    let len = good.len();
    let mut corpus: Vec<(String, Vec<u8>, Option<i32>)> =
        vec![("untouched".into(), good.clone(), Some(0))];
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x10;
        b
    };
    // Header slots (both pages), live page, table, data.
    for at in [0, 9, 20, 60, 200, 635, 4096, 4100, 4200, 4731] {
        corpus.push((format!("flip {at}"), flip(at), None));
    }
    corpus.push(("flip table".into(), flip(3 * 4096 + 5), Some(1)));
    corpus.push(("flip data".into(), flip(len - 100), Some(1)));
    corpus.push(("flip live page".into(), flip(2 * 4096 + 40), None));
    let mut both = good.clone();
    both[20] ^= 1;
    both[4096 + 20] ^= 1;
    corpus.push(("both slots".into(), both, Some(2)));
    for cut in [0, 1, 100, 4096, 8192, 12_288, len - 4096, len - 1] {
        corpus.push((format!("truncated to {cut}"), good[..cut].to_vec(), Some(2)));
    }
    for page in 0..len / 4096 {
        let mut b = good.clone();
        b[page * 4096..(page + 1) * 4096].fill(0);
        let want = match page {
            2 => Some(0), // the live page of a clean file is not needed
            _ => None,
        };
        corpus.push((format!("zeroed page {page}"), b, want));
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    corpus.push(("random bytes".into(), random.clone(), Some(2)));
    let mut magic_then_random = random;
    magic_then_random[..8].copy_from_slice(b"DBACKLOG");
    corpus.push(("magic then random".into(), magic_then_random, Some(2)));

    let bad = dir.path().join("bad");
    for (name, bytes, want_verify) in &corpus {
        std::fs::write(&bad, bytes).unwrap();
        let b = p(&bad);
        for args in [
            vec!["info", b],
            vec!["info", "--json", b],
            vec!["verify", b],
            vec!["dump", b],
            vec!["dump", b, "--resp"],
            vec!["dump", "--json", b, "--resp"],
            vec!["psync", b, "?", "-1"],
            vec!["psync", b, &"a".repeat(40), "1"],
        ] {
            let r = run(&args);
            assert!(
                (0..=2).contains(&r.code),
                "{name}: {args:?} exit {}",
                r.code
            );
            assert!(!r.err.contains("panicked"), "{name}: {args:?}: {}", r.err);
            if r.code == 2 {
                assert_eq!(r.err.lines().count(), 1, "{name}: {args:?}: {}", r.err);
            }
            if args[0] == "verify" {
                if let Some(w) = want_verify {
                    assert_eq!(r.code, *w, "{name}: {}{}", r.out, r.err);
                }
                if r.code == 1 {
                    assert!(r.out.contains("damaged: first bad"), "{name}: {}", r.out);
                }
            }
        }
        std::fs::remove_file(&bad).unwrap();
    }
    assert!(good == std::fs::read(&f).unwrap());
}

#[test]
fn live_file_held_by_a_writer_in_this_process() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    let mut b = Backlog::create(
        &f,
        Options::new()
            .capacity(64 * 1024)
            .durability(Durability::Never),
    )
    .unwrap();
    b.append(&cmd(&["SELECT", "0"])).unwrap();
    b.flush().unwrap();
    b.append(&cmd(&["SET", "live", "yes"])).unwrap(); // only in the live page
    let id = b.run_id();

    let r = run(&["info", p(&f)]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains(&format!(
            "live: held open by a writer (pid {})",
            std::process::id()
        )),
        "{}",
        r.out
    );
    assert!(r.out.contains("last offset:      55"), "{}", r.out);
    assert!(r.out.contains("durable offset:   23"), "{}", r.out);
    let r = run(&["dump", p(&f), "--resp"]);
    assert_eq!(r.out, "1 SELECT 0\n24 SET live yes\n");
    let r = run(&["verify", p(&f)]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("32 newer bytes not yet committed"),
        "{}",
        r.out
    );
    let r = run(&["psync", p(&f), id.as_str(), "24"]);
    assert_eq!(
        r.out.lines().next(),
        Some(format!("+CONTINUE {id}").as_str())
    );
    assert!(!r.out.contains("at rest"));

    // The writer is undisturbed: it still holds its lock, appends and closes.
    b.append(&cmd(&["DEL", "live"])).unwrap();
    b.close().unwrap();
    let r = run(&["dump", p(&f), "--resp", "--from", "56"]);
    assert_eq!(r.out, "56 DEL live\n");
}

/// The CLI reading a file while a writer appends to it as fast as it can, lapping the ring:
/// every command it prints is one the writer wrote at that offset, `verify` finds no damage,
/// and a dump whose bytes were overwritten mid-read fails cleanly instead of printing them.
#[test]
fn live_file_under_concurrent_appends() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _serial = serial();

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    let mut b = Backlog::create(
        &f,
        Options::new()
            .capacity(64 * 1024)
            .durability(Durability::EverySec),
    )
    .unwrap();
    let mut expected = HashMap::new();
    let mut stream = Vec::new();
    let mut offset = 1u64;
    for i in 0..100_000u32 {
        let val = format!("v{}", "y".repeat((i % 40) as usize));
        let c = cmd(&["SET", &format!("k{i}"), &val]);
        expected.insert(offset, format!("SET k{i} {val}"));
        offset += c.len() as u64;
        stream.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let writer = std::thread::spawn(move || {
        for (i, c) in stream.iter().enumerate() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            b.append(c).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        b.close().unwrap();
    });

    let mut clean_dumps = 0;
    for round in 0..12 {
        let r = run(&["dump", p(&f), "--resp"]);
        match r.code {
            0 => {
                clean_dumps += 1;
                for line in r.out.lines() {
                    let (o, text) = line.split_once(' ').unwrap();
                    let o: u64 = o.parse().unwrap();
                    assert_eq!(expected.get(&o), Some(&text.to_string()), "round {round}");
                }
            }
            2 => assert!(
                r.err.contains("overwritten by the live writer"),
                "{}",
                r.err
            ),
            c => panic!("exit {c}: {}", r.err),
        }
        let r = run(&["verify", p(&f)]);
        assert_eq!(r.code, 0, "round {round}: {}{}", r.out, r.err);
        let r = run(&["info", p(&f)]);
        assert_eq!(r.code, 0, "{}", r.err);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(clean_dumps > 0, "no dump completed");
    let r = run(&["verify", p(&f)]);
    assert_eq!(r.code, 0, "{}", r.out);
}
