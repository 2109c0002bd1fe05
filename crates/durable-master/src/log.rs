//! Redis-style log lines on standard output: `<pid>:M <day> <mon> <year> <hh:mm:ss.mmm> <level> <text>`.

use std::fmt::Display;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// A notice (`*` in Redis's log).
pub(crate) fn notice(msg: impl Display) {
    line('*', &msg);
}

/// A warning (`#` in Redis's log).
pub(crate) fn warning(msg: impl Display) {
    line('#', &msg);
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn line(level: char, msg: &dyn Display) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (y, m, d) = civil_from_days(secs / 86_400);
    let tod = secs % 86_400;
    let mon = MONTHS.get(m.saturating_sub(1) as usize).unwrap_or(&"???");
    let text = format!(
        "{}:M {d:02} {mon} {y} {:02}:{:02}:{:02}.{:03} {level} {msg}\n",
        std::process::id(),
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        now.subsec_millis()
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_538), (2026, 3, 26));
    }
}
