//! The master this server follows, kept in the data directory (`replicaof`), so that a node
//! demoted at run time (by Sentinel or an operator's `REPLICAOF host port`) restarts as a
//! replica of that master instead of as a second master accepting writes (split brain).
//! Redis keeps it only if `CONFIG REWRITE` can write a config file; this server has none, so
//! the data directory holds it: written atomically when `REPLICAOF host port` takes effect,
//! removed by `REPLICAOF NO ONE`, read at start when `--replicaof` is not given (the flag
//! wins and replaces it).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::log;

/// File name in the data directory.
const FILE: &str = "replicaof";

/// Longest file accepted: a host name (Redis's `NET_HOST_STR_LEN`) and a port.
const MAX_LEN: u64 = 512;

/// Records `host port` as the master to follow after a restart. A failure is logged: the
/// running server follows its master regardless; only the next start would not know it.
pub(crate) fn save(dir: &Path, host: &str, port: u16) {
    if load(dir).is_ok_and(|m| m.is_some_and(|(h, p)| h == host && p == port)) {
        // Already recorded (a restart with the same --replicaof): no write, no sync.
        return;
    }
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{host} {port}")?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        log::warning(format_args!(
            "Could not record the master in {}: {e}; a restart would not follow it",
            path.display()
        ));
    }
}

/// Forgets the recorded master (`REPLICAOF NO ONE`).
pub(crate) fn clear(dir: &Path) {
    let path = dir.join(FILE);
    match fs::remove_file(&path) {
        Ok(()) => {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warning(format_args!(
            "Could not remove {}: {e}; a restart would follow the old master",
            path.display()
        )),
    }
}

/// The recorded master, if any. An unreadable or malformed file is an error: starting as a
/// master when the operator's last word was "follow X" must not happen silently.
pub(crate) fn load(dir: &Path) -> Result<Option<(String, u16)>, String> {
    let path = dir.join(FILE);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let bad = || {
        format!(
            "{} is not '<host> <port>': remove it to start as a master, or give --replicaof",
            path.display()
        )
    };
    if meta.len() > MAX_LEN {
        return Err(bad());
    }
    let text = fs::read_to_string(&path).map_err(|_| bad())?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(host), Some(port), None) => {
            let port = port.parse().map_err(|_| bad())?;
            Ok(Some((host.to_owned(), port)))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_master_loads_back_and_clear_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        save(dir.path(), "10.0.0.7", 6379);
        assert_eq!(load(dir.path()), Ok(Some(("10.0.0.7".into(), 6379))));
        save(dir.path(), "other", 7000);
        assert_eq!(load(dir.path()), Ok(Some(("other".into(), 7000))));
        clear(dir.path());
        assert_eq!(load(dir.path()), Ok(None));
        clear(dir.path());
    }

    #[test]
    fn malformed_file_is_an_error_not_a_master_start() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "host",
            "host port",
            "host 70000",
            "a 1 b",
            &"x".repeat(600),
        ] {
            fs::write(dir.path().join(FILE), bad).unwrap();
            assert!(load(dir.path()).is_err(), "{bad:?}");
        }
    }
}
