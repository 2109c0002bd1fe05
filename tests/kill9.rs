//! Process kill: a child process (this test binary, re-executed) appends a deterministic
//! stream to a real backlog file under each `Durability` and reports every offset `append`
//! returned on stdout; the parent SIGKILLs it at random moments, or the child aborts itself
//! after its Nth append or flush, or from a second thread at a random moment (mid-append,
//! mid-commit, mid-recovery, mid-resize). After every death the parent reopens the file and checks:
//! nothing acknowledged is lost, every held byte is the stream's, the run-ID chain lets the
//! child's replicas continue and nobody beyond the end, and a second reopen of the same
//! image gives the same state.
//!
//! Guards against: a process crash losing bytes `append` returned, serving bytes from an
//! unfinished write, a torn recovery, and a run-ID chain that breaks across crashes.
//!
//! `DB_KILLS` sets the total number of kills (default 300, split over the durabilities);
//! `DB_KILL9_SEED` replays a run. Long run: `DB_KILLS=30000 cargo test --release --test kill9`.
#![allow(clippy::cast_possible_wrap, clippy::many_single_char_names)]

mod crashmodel;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crashmodel::{check_bytes, env_u64, stream, tempdir};
use durable_backlog::{Backlog, Durability, Options, RecoveryKind, RunId};

const CAP: u64 = 64 * 1024;
/// Every seventh child opens with this capacity and the next one with `CAP` again: both
/// resize the file (a new file renamed over the old one) and may be killed doing it. Children
/// also switch between the two while open (`Backlog::resize`), now and then.
const CAP_ALT: u64 = 48 * 1024;
const TAG: u64 = 9;
const MAX_CHUNK: u64 = 20_000;
const CHILD: &str = "DB_KILL9_CHILD";

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn durability(name: &str) -> Durability {
    match name {
        "always" => Durability::Always,
        "never" => Durability::Never,
        _ => Durability::EverySec,
    }
}

/// How the child dies.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// The parent sends SIGKILL after this many microseconds from spawning.
    ParentKill(u64),
    /// The child aborts right after its Nth append returned (before reporting it).
    AbortAfterAppend(u64),
    /// The child aborts right after its Nth flush returned.
    AbortAfterFlush(u64),
    /// A second thread of the child aborts it after this many microseconds, wherever the
    /// writer is (often inside a commit).
    AbortFromThread(u64),
}

fn child(spec: &str) {
    let f: Vec<&str> = spec.split('|').collect();
    let (path, d, death, mut rng) = (f[0], durability(f[1]), f[2], f[3].parse::<u64>().unwrap());
    let n: u64 = f[4].parse().unwrap();
    let cap: u64 = f[5].parse().unwrap();
    if death == "thread" {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(n));
            std::process::abort();
        });
    }
    let opts = Options::new().capacity(cap).durability(d);
    let mut b = match Backlog::open_or_create(path, opts) {
        Ok(b) => b,
        Err(e) => {
            println!("E open: {e}");
            std::process::exit(2);
        }
    };
    println!("O {} {} {}", b.run_id(), b.first_offset(), b.offset());
    let (mut appends, mut flushes) = (0u64, 0u64);
    loop {
        let r = splitmix(&mut rng);
        let len = if r.is_multiple_of(50) {
            MAX_CHUNK
        } else {
            1 + r % 3000
        };
        let first = b.offset() + 1;
        let bytes: Vec<u8> = (first..first + len).map(|o| stream(o, TAG)).collect();
        let end = b.append(&bytes).unwrap();
        appends += 1;
        if death == "append" && appends == n {
            std::process::abort();
        }
        println!("A {end}");
        if r % 41 == 5 {
            // A resize while open (a new file renamed over this one), killed in it at times.
            let other = if b.capacity() == CAP { CAP_ALT } else { CAP };
            b.resize(other).unwrap();
            println!("R {other}");
        }
        if r.is_multiple_of(17) {
            let durable = b.flush().unwrap();
            flushes += 1;
            if death == "flush" && flushes == n {
                std::process::abort();
            }
            println!("F {durable}");
        }
    }
}

/// What the parent learnt from the child's reports.
#[derive(Debug, Default)]
struct Reports {
    run_id: Option<RunId>,
    opened_at: u64,
    acked: Option<u64>,
    flushed: u64,
    resizes: u64,
    error: Option<String>,
}

fn parse(lines: &[String]) -> Reports {
    let mut r = Reports::default();
    for l in lines {
        let mut w = l.split(' ');
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("O"), Some(id), Some(_first), Some(end)) => {
                r.run_id = Some(id.parse().unwrap());
                r.opened_at = end.parse().unwrap();
                r.acked = Some(r.opened_at);
            }
            (Some("A"), Some(end), None, None) => r.acked = Some(end.parse().unwrap()),
            (Some("F"), Some(d), None, None) => r.flushed = d.parse().unwrap(),
            (Some("R"), Some(_), None, None) => r.resizes += 1,
            (Some("E"), ..) => r.error = Some(l.clone()),
            _ => {} // a line cut by the kill
        }
    }
    r
}

fn spawn_and_kill(path: &Path, d: &str, death: Death, seed: u64, cap: u64) -> Vec<String> {
    let (kind, n) = match death {
        Death::ParentKill(us) => ("parent", us),
        Death::AbortAfterAppend(k) => ("append", k),
        Death::AbortAfterFlush(k) => ("flush", k),
        Death::AbortFromThread(us) => ("thread", us),
    };
    let spec = format!("{}|{d}|{kind}|{seed}|{n}|{cap}", path.display());
    let mut c = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = c.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    if let Death::ParentKill(us) = death {
        std::thread::sleep(Duration::from_micros(us));
        let _ = c.kill(); // SIGKILL
    }
    // Self-inflicted deaths come quickly; never wait forever on a child that did not die.
    loop {
        if c.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_mins(1) {
            let _ = c.kill();
            panic!("child did not die: {death:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = c.wait().unwrap();
    reader.join().unwrap();
    let mut lines: Vec<String> = rx.try_iter().collect();
    // Only a signal may end the child (SIGKILL, or SIGABRT from its own abort): an exit code
    // means it failed on its own (a panic is 101, an open error 2).
    if status.signal().is_none() {
        lines.push(format!("E child exited with {status}"));
    }
    lines
}

/// Reopens the file a dead child left and checks everything; returns the recovery kind.
/// `before` is the end the previous reopen found (the child may die before reporting).
fn check_after_death(path: &Path, rep: &Reports, before: u64, ctx: &str) -> (RecoveryKind, u64) {
    let opts = Options::new().durability(Durability::Never);
    let twin = path.with_extension("twin");
    std::fs::copy(path, &twin).unwrap();
    let b = Backlog::open(path, opts).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let kind = b.recovery().kind;
    let acked = rep.acked.unwrap_or(0).max(before);
    let end = b.offset();
    assert!(
        end >= acked,
        "{ctx}: lost acknowledged bytes: end {end} < acked {acked}"
    );
    assert!(
        end <= acked + MAX_CHUNK,
        "{ctx}: end {end} beyond anything the child could have appended (acked {acked})"
    );
    // The oldest bytes: all of the last capacity, except that an append in flight publishes
    // its new start before it overwrites, so it may already have dropped up to its length.
    let cap = b.capacity();
    assert!(cap == CAP || cap == CAP_ALT, "{ctx}: capacity {cap}");
    let full_first = (end + 1).saturating_sub(cap).max(1);
    assert!(b.first_offset() >= full_first, "{ctx}");
    if kind != RecoveryKind::Verified {
        // (A resize keeps the newest bytes: at most the smaller capacity.)
        let worst = (acked.max(end) + MAX_CHUNK + 1)
            .saturating_sub(cap.min(CAP_ALT))
            .max(1);
        assert!(
            b.first_offset() <= worst,
            "{ctx}: held range lost bytes ({kind:?}): first {} end {end}",
            b.first_offset()
        );
    }
    check_bytes(&b, |o| stream(o, TAG)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    // The child's replicas: one at the last acknowledged offset continues; none beyond the end.
    let past = b.past_run_ids();
    if let Some(id) = rep.run_id {
        assert_eq!(
            past[0],
            (id, end + 1),
            "{ctx}: the child's run ID is not the previous one"
        );
        if acked + 1 >= b.first_offset() {
            assert!(
                b.psync(id.as_str(), acked as i64 + 1).is_continue(),
                "{ctx}: a replica at the acknowledged offset {acked} must continue"
            );
        }
    }
    for (id, limit) in &past {
        assert!(
            *limit <= end + 1,
            "{ctx}: {id} valid up to {limit} > end + 1"
        );
        assert!(!b.psync(id.as_str(), end as i64 + 2).is_continue(), "{ctx}");
    }
    // A second recovery of the same image finds the same state.
    let b2 = Backlog::open(&twin, opts).unwrap_or_else(|e| panic!("{ctx}: second reopen: {e}"));
    assert_eq!(
        (b2.first_offset(), b2.offset(), b2.recovery().kind),
        (b.first_offset(), end, kind),
        "{ctx}: second reopen of the same image differs"
    );
    assert_eq!(
        b2.past_run_ids(),
        past,
        "{ctx}: second reopen has another ID chain"
    );
    drop(b2);
    std::fs::remove_file(&twin).unwrap();
    // And after a clean close, a clean reopen keeps it all.
    let id = b.run_id();
    b.close().unwrap();
    let b = Backlog::open(path, opts).unwrap();
    assert_eq!(b.recovery().kind, RecoveryKind::Clean, "{ctx}");
    assert_eq!(b.offset(), end, "{ctx}");
    assert_eq!(b.past_run_ids()[0], (id, end + 1), "{ctx}");
    (kind, end)
}

fn parent() {
    let total = env_u64("DB_KILLS", 300);
    let mut seed = env_u64("DB_KILL9_SEED", rand::random::<u64>() >> 1);
    eprintln!("kill9: {total} kills, DB_KILL9_SEED={seed}");
    let dir = tempdir();
    let mut kinds = std::collections::BTreeMap::new();
    let mut done = 0u64;
    let mut acked_total = 0u64;
    let mut resizes = 0u64;
    let t0 = Instant::now();
    for d in ["always", "everysec", "never"] {
        let path = dir.path().join(d);
        let per = total / 3 + u64::from(d == "always") * (total % 3);
        let mut end = 0;
        for k in 0..per {
            let r = splitmix(&mut seed);
            let death = match k % 5 {
                // Early kills land in open and recovery, later ones amid appends.
                0 => Death::ParentKill(r % 4000),
                1 => Death::ParentKill(2000 + r % 30_000),
                2 => Death::AbortAfterAppend(1 + r % 40),
                3 => Death::AbortAfterFlush(1 + r % 4),
                _ => Death::AbortFromThread(r % 20_000),
            };
            let cap = if k % 7 == 6 { CAP_ALT } else { CAP };
            let lines = spawn_and_kill(&path, d, death, r, cap);
            let rep = parse(&lines);
            let ctx = format!("{d} kill {k} ({death:?}, seed {r})");
            assert!(rep.error.is_none(), "{ctx}: child failed: {:?}", rep.error);
            done += 1;
            resizes += rep.resizes;
            if !path.exists() {
                // Killed while creating: the file is linked into place only once complete.
                assert!(
                    rep.run_id.is_none(),
                    "{ctx}: the file vanished after it was opened"
                );
                *kinds.entry("no file yet").or_insert(0u64) += 1;
                continue;
            }
            let (kind, new_end) = check_after_death(&path, &rep, end, &ctx);
            acked_total += new_end - end;
            end = new_end;
            *kinds.entry(kind_name(kind)).or_insert(0u64) += 1;
        }
    }
    eprintln!(
        "kill9: {done} kills checked in {:.1?}, {acked_total} acknowledged bytes, {resizes} \
         resizes while open, recoveries: {kinds:?}",
        t0.elapsed()
    );
}

fn kind_name(k: RecoveryKind) -> &'static str {
    match k {
        RecoveryKind::ProcessCrash => "process crash",
        RecoveryKind::Clean => "clean",
        RecoveryKind::Verified => "verified",
        _ => "other",
    }
}

/// The one test this binary runs, named as libtest would list it.
const TEST_NAME: &str = "every_acknowledged_byte_survives_kill_9";

/// Runs [`parent`] and reports like libtest (`running 1 test`, `test result: ...`), so the
/// harness-less binary reads like the others in `cargo test` output. Honours `--list`, a
/// name filter (`--exact` too), and `--ignored` (nothing is ignored: runs nothing).
fn run_as_test() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let selected = !args.iter().any(|a| a == "--ignored")
        && (filters.is_empty()
            || filters.iter().any(|f| {
                if exact {
                    *f == TEST_NAME
                } else {
                    TEST_NAME.contains(f.as_str())
                }
            }));
    let t0 = Instant::now();
    if !selected {
        println!("\nrunning 0 tests\n");
        println!(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.00s\n"
        );
        return;
    }
    println!("\nrunning 1 test");
    let ok = std::panic::catch_unwind(parent).is_ok();
    let secs = t0.elapsed().as_secs_f64();
    if ok {
        println!("test {TEST_NAME} ... ok\n");
        println!(
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n"
        );
    } else {
        println!("test {TEST_NAME} ... FAILED\n\nfailures:\n    {TEST_NAME}\n");
        println!(
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n"
        );
        std::process::exit(101);
    }
}

fn main() {
    match std::env::var(CHILD) {
        Ok(spec) => child(&spec),
        Err(_) => run_as_test(),
    }
}
