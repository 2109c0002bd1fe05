//! `maxclients`, sized against the process's open-files limit at start as Redis does (the
//! event loop refuses clients past it).

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
    let wanted = cfg.maxclients.saturating_add(RESERVED_FDS);
    let (soft, hard) = match rlimit::getrlimit(Resource::NOFILE) {
        Ok(l) => l,
        Err(e) => {
            log::warning(format_args!(
                "Unable to obtain the current NOFILE limit ({e}), assuming 1024 and setting \
                 the max clients configuration accordingly."
            ));
            cfg.maxclients = cfg.maxclients.min(1024 - RESERVED_FDS);
            return cfg;
        }
    };
    if soft >= wanted {
        return cfg;
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
        return cfg;
    }
    let Some(clients) = clients_within(best) else {
        log::warning(format_args!(
            "Your current 'ulimit -n' of {best} is not enough for the server to start. Please \
             increase your open file limit to at least {}. Exiting.",
            RESERVED_FDS + 1
        ));
        std::process::exit(1);
    };
    log::warning(format_args!(
        "You requested maxclients of {} requiring at least {wanted} max file descriptors.",
        cfg.maxclients
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
    cfg.maxclients = clients;
    cfg
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
