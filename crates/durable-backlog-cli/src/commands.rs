//! The commands: each prints to stdout (text or JSON) and returns the exit code.

use std::fmt::Write as _;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use durable_backlog::inspect::{BacklogFile, Holder, Inspection, SlotView, VerifyReport};
use durable_backlog::{Backlog, Durability, Error, Options, PsyncReply, RecoveryKind, TailError};
use serde_json::{Value, json};

use crate::Fail;
use crate::resp::{Decoder, Item, render_arg};
use crate::size::{human, parse_offset, parse_psync_offset, parse_size};

type Outcome = Result<ExitCode, Fail>;

/// Bytes read from the file per step of `dump` and per progress update of `verify`.
const STEP: usize = 1 << 20;

fn out() -> BufWriter<io::StdoutLock<'static>> {
    BufWriter::with_capacity(1 << 16, io::stdout().lock())
}

fn print_json(v: &Value) -> Outcome {
    let mut o = out();
    writeln!(o, "{v:#}")?;
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn open(path: &Path) -> Result<BacklogFile, Fail> {
    BacklogFile::open(path).map_err(|e| {
        Fail::Error(match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                format!("{}: no such file", path.display())
            }
            Error::NotABacklog { .. } => format!(
                "{} is not a backlog file (no \"DBACKLOG\" header)",
                path.display()
            ),
            Error::InvalidArgument(msg) => msg,
            e => e.to_string(),
        })
    })
}

fn kind_name(k: RecoveryKind) -> &'static str {
    match k {
        RecoveryKind::Created => "created",
        RecoveryKind::Clean => "clean",
        RecoveryKind::ProcessCrash => "process-crash",
        _ => "verified",
    }
}

fn holder_text(h: Holder) -> String {
    match h {
        Holder::Process { pid } => format!("live: held open by a writer (pid {pid})"),
        Holder::Nobody => "at rest (no writer holds it)".into(),
        _ => "unknown (the OS lock table is not readable)".into(),
    }
}

fn holder_json(h: Holder) -> Value {
    match h {
        Holder::Process { pid } => json!({ "state": "live", "pid": pid }),
        Holder::Nobody => json!({ "state": "at-rest" }),
        _ => json!({ "state": "unknown" }),
    }
}

fn slot_text(s: &SlotView) -> String {
    match s {
        SlotView::Valid(v) => format!(
            "seq {}, {}, offsets {}..={} (previous commit ended at {}), epoch {}, run id {}",
            v.seq,
            if v.clean { "clean" } else { "unclean" },
            v.first,
            v.last,
            v.prev_last,
            v.epoch,
            v.run_id
        ),
        SlotView::NeverWritten => "never written".into(),
        SlotView::Invalid {
            at,
            expected,
            found,
        } => format!("DAMAGED at byte {at}: expected {expected}, found {found}"),
        _ => "unknown".into(),
    }
}

fn slot_json(s: &SlotView) -> Value {
    match s {
        SlotView::Valid(v) => json!({
            "state": "valid",
            "seq": v.seq,
            "clean": v.clean,
            "epoch": v.epoch,
            "first_offset": v.first,
            "last_offset": v.last,
            "prev_last_offset": v.prev_last,
            "run_id": v.run_id.as_str(),
            "past_run_ids": v.past_run_ids.iter().map(|(id, o)| json!({"run_id": id.as_str(), "valid_up_to": o})).collect::<Vec<_>>(),
            "past_epochs": v.past_epochs.iter().map(|(e, u)| json!({"epoch": e, "until": u})).collect::<Vec<_>>(),
        }),
        SlotView::NeverWritten => json!({ "state": "never-written" }),
        SlotView::Invalid {
            at,
            expected,
            found,
        } => json!({ "state": "damaged", "at": at, "expected": expected, "found": found }),
        _ => json!({ "state": "unknown" }),
    }
}

pub(crate) fn info(path: &Path, json: bool) -> Outcome {
    let file = open(path)?;
    let i = file.inspection();
    if json {
        return print_json(&info_json(i));
    }
    let rec = &i.recovery;
    let mut o = out();
    let slot = |n: usize| if n == 0 { "A" } else { "B" };
    writeln!(
        o,
        "file:             {} ({} bytes, format version {})",
        i.path.display(),
        i.file_len,
        i.format_version
    )?;
    writeln!(o, "state:            {}", holder_text(i.holder))?;
    writeln!(
        o,
        "capacity:         {}, {} checksum blocks of {} bytes",
        human(i.capacity),
        i.blocks,
        i.block_size
    )?;
    writeln!(
        o,
        "generation:       {} (commits; newest header slot {})",
        i.generation,
        slot(i.newest_slot)
    )?;
    writeln!(
        o,
        "shutdown:         {}",
        if i.clean {
            "clean"
        } else if i.holder == Holder::Nobody {
            "unclean (the last writer did not close it)"
        } else {
            "unclean (open, or the last writer did not close it)"
        }
    )?;
    let mut path_line = format!("{}", rec.kind);
    if rec.used_older_slot {
        path_line.push_str(", falls back to the older header slot");
    }
    if rec.history_cut {
        let _ = write!(
            path_line,
            ", cuts the history after offset {} (recorded end {})",
            rec.last, rec.recorded_end
        );
    }
    writeln!(o, "open would take:  {path_line}")?;
    writeln!(o, "run id:           {}", i.run_id)?;
    if i.past_run_ids.is_empty() {
        writeln!(o, "earlier run ids:  none")?;
    }
    for (n, (id, upto)) in i.past_run_ids.iter().enumerate() {
        let label = if n == 0 { "earlier run ids:" } else { "" };
        writeln!(o, "{label:<17} {id} (PSYNC offsets up to {upto})")?;
    }
    writeln!(o, "epoch:            {}", i.epoch)?;
    for (e, until) in &i.past_epochs {
        writeln!(o, "                  epoch {e} valid up to offset {until}")?;
    }
    writeln!(o, "first offset:     {}", i.first_offset)?;
    writeln!(o, "last offset:      {}", i.last_offset)?;
    writeln!(o, "durable offset:   {}", i.durable_offset)?;
    writeln!(o, "histlen:          {}", i.histlen())?;
    writeln!(o, "fill:             {:.2}%", i.fill() * 100.0)?;
    for (n, s) in i.slots.iter().enumerate() {
        writeln!(o, "slot {}:           {}", slot(n), slot_text(s))?;
    }
    let l = &i.live;
    writeln!(
        o,
        "live page:        {}, {}, epoch {}, offsets {}..={}, durable {}, change count {}",
        if l.initialised {
            "initialised"
        } else {
            "not initialised"
        },
        if l.this_boot {
            "written this boot"
        } else {
            "from another boot"
        },
        l.epoch,
        l.first,
        l.last,
        l.durable,
        l.change
    )?;
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn info_json(i: &Inspection) -> Value {
    let r = &i.recovery;
    json!({
        "file": i.path.display().to_string(),
        "file_len": i.file_len,
        "format_version": i.format_version,
        "holder": holder_json(i.holder),
        "capacity": i.capacity,
        "block_size": i.block_size,
        "blocks": i.blocks,
        "generation": i.generation,
        "newest_slot": if i.newest_slot == 0 { "A" } else { "B" },
        "clean": i.clean,
        "recovery": {
            "kind": kind_name(r.kind),
            "used_older_slot": r.used_older_slot,
            "history_cut": r.history_cut,
            "recorded_end": r.recorded_end,
            "verified_bytes": r.verified_bytes,
        },
        "run_id": i.run_id.as_str(),
        "past_run_ids": i.past_run_ids.iter().map(|(id, o)| json!({"run_id": id.as_str(), "valid_up_to": o})).collect::<Vec<_>>(),
        "epoch": i.epoch,
        "past_epochs": i.past_epochs.iter().map(|(e, u)| json!({"epoch": e, "until": u})).collect::<Vec<_>>(),
        "first_offset": i.first_offset,
        "last_offset": i.last_offset,
        "durable_offset": i.durable_offset,
        "histlen": i.histlen(),
        "fill": i.fill(),
        "slots": { "A": slot_json(&i.slots[0]), "B": slot_json(&i.slots[1]) },
        "live_page": {
            "initialised": i.live.initialised,
            "this_boot": i.live.this_boot,
            "epoch": i.live.epoch,
            "first_offset": i.live.first,
            "last_offset": i.live.last,
            "durable_offset": i.live.durable,
            "change": i.live.change,
        },
    })
}

/// A `\r`-updated progress line on stderr, only when stderr is a terminal.
struct Progress {
    on: bool,
    shown: Option<u64>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            on: io::stderr().is_terminal(),
            shown: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.on {
            return;
        }
        let pct = (u128::from(done) * 100 / u128::from(total.max(1))) as u64;
        if self.shown == Some(pct) {
            return;
        }
        self.shown = Some(pct);
        let _ = write!(
            io::stderr(),
            "\rverifying: {pct:3}% ({} of {} MiB)",
            done >> 20,
            total >> 20
        );
    }

    fn clear(&self) {
        if self.on && self.shown.is_some() {
            let _ = write!(io::stderr(), "\r{:60}\r", "");
        }
    }
}

pub(crate) fn verify(path: &Path, json: bool) -> Outcome {
    let file = open(path)?;
    let mut progress = Progress::new();
    let report = file.verify(|done, total| progress.update(done, total));
    progress.clear();
    let code = if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if json {
        print_json(&verify_json(file.inspection(), &report))?;
        return Ok(code);
    }
    let mut o = out();
    let name = path.display();
    match report.first_damage() {
        None => {
            write!(
                o,
                "{name}: intact: {} committed bytes verified; both header slots and every checksum entry checked",
                report.checked_bytes
            )?;
            if report.unchecked_tail > 0 {
                write!(
                    o,
                    "; {} newer bytes not yet committed (no checksum to check)",
                    report.unchecked_tail
                )?;
            }
            if report.uncovered_head > 0 {
                write!(
                    o,
                    "; the {} oldest bytes share a checksum block with newer ones and cannot be \
                     checked",
                    report.uncovered_head
                )?;
            }
            if report.lapped_bytes > 0 {
                write!(
                    o,
                    "; {} bytes overwritten by the live writer while checking",
                    report.lapped_bytes
                )?;
            }
            writeln!(o)?;
        }
        Some(d) => {
            let at = match d.stream_offset {
                Some(s) => format!("first bad offset {s} (file byte {})", d.file_offset),
                None => format!("first bad file byte {}", d.file_offset),
            };
            writeln!(
                o,
                "{name}: damaged: {at}: {} ({} problem{} found)",
                d.what,
                report.damage.len(),
                if report.damage.len() == 1 { "" } else { "s" }
            )?;
            for d in report.damage.iter().skip(1) {
                writeln!(o, "  also: {}", d.what)?;
            }
            let rec = &file.inspection().recovery;
            writeln!(
                o,
                "  an open would recover offsets {}..={} ({})",
                rec.first, rec.last, rec.kind
            )?;
        }
    }
    o.flush()?;
    Ok(code)
}

fn verify_json(i: &Inspection, r: &VerifyReport) -> Value {
    json!({
        "file": i.path.display().to_string(),
        "intact": r.is_intact(),
        "checked_bytes": r.checked_bytes,
        "unchecked_tail": r.unchecked_tail,
        "lapped_bytes": r.lapped_bytes,
        "uncovered_head": r.uncovered_head,
        "first_bad_offset": r.damage.iter().find_map(|d| d.stream_offset),
        "first_bad_file_offset": r.first_damage().map(|d| d.file_offset),
        "damage": r.damage.iter().map(|d| json!({
            "file_offset": d.file_offset,
            "stream_offset": d.stream_offset,
            "what": d.what,
        })).collect::<Vec<_>>(),
        "recovery": {
            "kind": kind_name(i.recovery.kind),
            "first_offset": i.recovery.first,
            "last_offset": i.recovery.last,
        },
    })
}

fn read_error(e: TailError) -> Fail {
    Fail::Error(match e {
        TailError::Overwritten { requested, first } => format!(
            "offset {requested} was overwritten by the live writer while being read (oldest now \
             {first}); dump a later range"
        ),
        TailError::HistoryChanged => {
            "a writer reset, truncated or reopened the backlog during the read; run again".into()
        }
        TailError::Moved => "a writer resized the backlog during the read; run again".into(),
        e @ TailError::NotWritten { .. } => e.to_string(),
    })
}

pub(crate) fn dump(
    path: &Path,
    from: Option<&str>,
    len: Option<&str>,
    resp: bool,
    json: bool,
) -> Outcome {
    let from = from.map(parse_offset).transpose()?;
    let len = len.map(parse_size).transpose()?;
    let f = open(path)?;
    let i = f.inspection();
    let (first, last) = (i.first_offset, i.last_offset);
    let from = from.unwrap_or(first);
    if from < first {
        return Err(Fail::Error(format!(
            "offset {from} is no longer in the backlog (oldest held: {first})"
        )));
    }
    if from > last + 1 {
        return Err(Fail::Error(format!(
            "offset {from} is beyond the newest offset {last}"
        )));
    }
    let avail = last + 1 - from;
    let n = len.map_or(avail, |l| l.min(avail));
    if len.is_some_and(|l| l > avail) && !json {
        let _ = writeln!(
            io::stderr(),
            "note: only {avail} bytes are held from offset {from} (up to {last})"
        );
    }
    let mut o = out();
    let mut buf = vec![0u8; STEP.min(usize::try_from(n).unwrap_or(STEP)).max(1)];
    let mut dec = Decoder::new(from);
    let mut hex_out = String::new();
    let mut at = from;
    while at < from + n {
        let want = (from + n - at).min(buf.len() as u64) as usize;
        let got = f.read_at(at, &mut buf[..want]).map_err(read_error)?;
        if got == 0 {
            break;
        }
        let bytes = &buf[..got];
        if resp {
            for item in dec.feed(bytes) {
                emit(&mut o, &item, json)?;
            }
        } else if json {
            hex_out.push_str(&hex_encode(bytes));
        } else {
            o.write_all(bytes)?;
        }
        at += got as u64;
    }
    if resp {
        for item in dec.finish() {
            emit(&mut o, &item, json)?;
        }
    } else if json {
        writeln!(
            o,
            "{}",
            json!({ "from": from, "len": at - from, "hex": hex_out })
        )?;
    }
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn hex_encode(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

fn emit(o: &mut impl Write, item: &Item, json: bool) -> io::Result<()> {
    match (item, json) {
        (Item::Command { offset, args }, false) => {
            let line: Vec<String> = args.iter().map(|a| render_arg(a)).collect();
            writeln!(o, "{offset} {}", line.join(" "))
        }
        (Item::Command { offset, args }, true) => {
            let args: Vec<Value> = args
                .iter()
                .map(|a| match std::str::from_utf8(a) {
                    Ok(s) => Value::from(s),
                    Err(_) => json!({ "hex": hex_encode(a) }),
                })
                .collect();
            writeln!(o, "{}", json!({ "offset": offset, "args": args }))
        }
        (Item::Skipped { offset, len }, false) => {
            o.flush()?;
            writeln!(
                io::stderr(),
                "note: skipped {len} bytes at offsets {offset}..={}: not a whole command (the \
                 tail of one cut by the start of the range, or not RESP)",
                offset + len - 1
            )
        }
        (Item::Skipped { offset, len }, true) => writeln!(
            o,
            "{}",
            json!({ "skipped": { "offset": offset, "len": len } })
        ),
        (Item::Incomplete { offset, len }, false) => {
            o.flush()?;
            writeln!(
                io::stderr(),
                "note: the command at offset {offset} continues past the end of the range \
                 ({len} bytes shown of it)"
            )
        }
        (Item::Incomplete { offset, len }, true) => writeln!(
            o,
            "{}",
            json!({ "incomplete": { "offset": offset, "len": len } })
        ),
    }
}

pub(crate) fn psync(path: &Path, replid: &str, offset: &str, json: bool) -> Outcome {
    let off = parse_psync_offset(offset)?;
    let f = open(path)?;
    let i = f.inspection();
    let reply = f.psync(replid, off);
    let is_live = matches!(i.holder, Holder::Process { .. });
    let line = String::from_utf8_lossy(&reply.to_wire())
        .trim_end()
        .to_string();
    let note = (!is_live).then_some(
        "the file is at rest: this is the decision of a master that reopens it, which sends \
         its new run ID in place of the file's (an open starts a new generation)",
    );
    if json {
        let mut v = match &reply {
            PsyncReply::Continue { run_id, from, len } => json!({
                "reply": line, "continue": true, "run_id": run_id.as_str(),
                "from": from, "bytes": len,
            }),
            PsyncReply::FullResync {
                run_id,
                offset,
                reason,
            } => json!({
                "reply": line, "continue": false, "run_id": run_id.as_str(),
                "offset": offset, "reason": reason.to_string(),
            }),
        };
        if let (Some(n), Some(obj)) = (note, v.as_object_mut()) {
            obj.insert("note".into(), Value::from(n));
        }
        return print_json(&v);
    }
    let mut o = out();
    writeln!(o, "{line}")?;
    match &reply {
        PsyncReply::Continue { from, len, .. } => {
            if *len == 0 {
                writeln!(
                    o,
                    "partial resync: the replica is in sync (0 bytes of backlog to send)"
                )?;
            } else {
                writeln!(
                    o,
                    "partial resync: sending {len} bytes of backlog (offsets {from}..={}), then \
                     the live stream",
                    from + len - 1
                )?;
            }
        }
        PsyncReply::FullResync { reason, .. } => {
            writeln!(o, "full resync: {reason}")?;
        }
    }
    if let Some(n) = note {
        writeln!(o, "note: {n}")?;
    }
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn create(path: &Path, size: &str, json: bool) -> Outcome {
    let cap = parse_size(size)?;
    let b = Backlog::create(
        path,
        Options::new().capacity(cap).durability(Durability::Never),
    )?;
    let id = b.run_id();
    b.close()?;
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if json {
        return print_json(&json!({
            "file": path.display().to_string(),
            "capacity": cap,
            "file_len": len,
            "run_id": id.as_str(),
        }));
    }
    let mut o = out();
    writeln!(
        o,
        "created {}: capacity {}, file {} bytes, run id {id}, offset 0",
        path.display(),
        human(cap),
        len
    )?;
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn resize(path: &Path, size: &str, json: bool) -> Outcome {
    let cap = parse_size(size)?;
    let before = open(path)?;
    let old = before.inspection().capacity;
    drop(before);
    if old == cap {
        if json {
            return print_json(&json!({
                "file": path.display().to_string(),
                "capacity": cap,
                "changed": false,
            }));
        }
        let mut o = out();
        writeln!(
            o,
            "{} already has capacity {}; nothing changed",
            path.display(),
            human(cap)
        )?;
        o.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let b = Backlog::open(
        path,
        Options::new().capacity(cap).durability(Durability::Never),
    )?;
    let (first, last, id) = (b.first_offset(), b.offset(), b.run_id());
    let prev = b.replid2();
    let kind = b.recovery().kind;
    b.close()?;
    if json {
        return print_json(&json!({
            "file": path.display().to_string(),
            "changed": true,
            "old_capacity": old,
            "capacity": cap,
            "first_offset": first,
            "last_offset": last,
            "histlen": last + 1 - first,
            "recovery": kind_name(kind),
            "run_id": id.as_str(),
            "previous_run_id": prev.map(|(p, _)| p.as_str().to_string()),
            "previous_valid_up_to": prev.map(|(_, o)| o),
        }));
    }
    let mut o = out();
    writeln!(
        o,
        "resized {}: capacity {} -> {}; kept offsets {first}..={last} ({} bytes); found: {kind}",
        path.display(),
        human(old),
        human(cap),
        last + 1 - first
    )?;
    if let Some((p, upto)) = prev {
        writeln!(
            o,
            "new run id {id}; replicas of {p} continue up to offset {upto}"
        )?;
    }
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}
