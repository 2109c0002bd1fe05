//! `maxclients`, sized against the process's open-files limit at start and by `CONFIG SET`
//! as Redis does (the event loop refuses clients past it).

use rlimit::Resource;

use crate::config::Config;
use crate::log;

/// File descriptors kept for everything that is not a client (Redis's
/// `CONFIG_MIN_RESERVED_FDS`): the backlog, the snapshot, logs, the listener.
pub(crate) const RESERVED_FDS: u64 = 32;

/// What a client past `maxclients` reads before its connection is closed (Redis's text).
pub(crate) const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Raises the soft open-files limit to `maxclients` + [`RESERVED_FDS`] if the hard limit
/// allows, else lowers `maxclients` to fit, with Redis's log lines
/// (`adjustOpenFilesLimit`). Exits if the limit leaves no room for a single client.
pub(crate) fn adjust_open_files_limit(mut cfg: Config) -> Config {
    match fit_open_files_limit(cfg.maxclients) {
        Some(clients) => cfg.maxclients = clients,
        None => std::process::exit(1),
    }
    cfg
}

/// Redis's `adjustOpenFilesLimit` for `maxclients` clients: raises the soft open-files limit
/// to `maxclients` + [`RESERVED_FDS`] if the hard limit allows. Returns how many clients
/// fit: `maxclients`, or fewer after Redis's log lines (`None`, logged, if not even one).
pub(crate) fn fit_open_files_limit(maxclients: u64) -> Option<u64> {
    let wanted = maxclients.saturating_add(RESERVED_FDS);
    let (soft, hard) = match rlimit::getrlimit(Resource::NOFILE) {
        Ok(l) => l,
        Err(e) => {
            log::warning(format_args!(
                "Unable to obtain the current NOFILE limit ({e}), assuming 1024 and setting \
                 the max clients configuration accordingly."
            ));
            return Some(maxclients.min(1024 - RESERVED_FDS));
        }
    };
    if soft >= wanted {
        return Some(maxclients);
    }
    let target = wanted.min(hard);
    let raised = rlimit::setrlimit(Resource::NOFILE, target, hard);
    let best = match &raised {
        Ok(()) => target,
        Err(_) => soft,
    };
    if best >= wanted {
        log::notice(format_args!(
            "Increased maximum number of open files to {wanted} (it was originally set to {soft})."
        ));
        return Some(maxclients);
    }
    let Some(clients) = clients_within(best) else {
        log::warning(format_args!(
            "Your current 'ulimit -n' of {best} is not enough for the server to start. Please \
             increase your open file limit to at least {}. Exiting.",
            RESERVED_FDS + 1
        ));
        return None;
    };
    log::warning(format_args!(
        "You requested maxclients of {maxclients} requiring at least {wanted} max file \
         descriptors."
    ));
    match raised {
        Ok(()) => log::warning(format_args!(
            "Server can't set maximum open files to {wanted} because the hard limit is {hard}."
        )),
        Err(e) => log::warning(format_args!(
            "Server can't set maximum open files to {wanted} because of OS error: {e}."
        )),
    }
    log::warning(format_args!(
        "Current maximum open files is {best}. maxclients has been reduced to {clients} to \
         compensate for low ulimit. If you need higher maxclients increase 'ulimit -n'."
    ));
    Some(clients)
}

/// `CONFIG SET maxclients` (Redis's `updateMaxclients`): a larger value needs the open-files
/// limit to fit it. `Err` carries Redis's reason, naming how many clients would fit.
pub(crate) fn check_new_maxclients(new: u64, current: u64) -> Result<(), String> {
    if new <= current {
        return Ok(());
    }
    match fit_open_files_limit(new) {
        Some(n) if n == new => Ok(()),
        fits => {
            log::warning(
                "Failed applying new configuration. Possibly related to new maxclients \
                 setting. Restoring previous settings.",
            );
            Err(format!(
                "The operating system is not able to handle the specified number of clients, \
                 try with {}",
                fits.unwrap_or(current)
            ))
        }
    }
}

/// How many clients an open-files limit of `fds` leaves room for, if any.
fn clients_within(fds: u64) -> Option<u64> {
    fds.checked_sub(RESERVED_FDS).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_within_keeps_redis_reserve_and_needs_room_for_one() {
        assert_eq!(clients_within(1024), Some(992));
        assert_eq!(clients_within(RESERVED_FDS + 1), Some(1));
        assert_eq!(clients_within(RESERVED_FDS), None);
        assert_eq!(clients_within(0), None);
    }
}
