//! The background flusher of [`Durability::EverySec`](crate::Durability::EverySec): a thread
//! that commits what the writer appended, once a second, while the writer keeps appending.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::commit::{CommitKind, CommitState};
use crate::error::{Error, Result};
use crate::shared::Shared;

/// How long the flusher waits between turns on a real file.
const PERIOD: Duration = Duration::from_secs(1);

/// The flusher thread's handle; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Flusher {
    turns: Arc<Turns>,
    handle: Option<JoinHandle<()>>,
}

/// When the flusher runs a turn and when it stops: shared by the thread, its handle and, on
/// simulated storage, the disk's clock (`SimDisk::tick_flusher`).
#[derive(Debug, Default)]
pub(crate) struct Turns {
    state: Mutex<TurnState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct TurnState {
    /// The handle asked the thread to stop.
    stopped: bool,
    /// The thread is gone (stopped, or a failed commit poisoned the backlog).
    exited: bool,
    /// Turns asked for by [`Turns::run_one`], and how many of them are over.
    requested: u64,
    done: u64,
}

impl Turns {
    /// Flusher: waits for its next turn — `period` passed (`None`: only turns asked for), or
    /// a turn was asked for. `false`: stop instead.
    fn next(&self, period: Option<Duration>) -> bool {
        let deadline = period.map(|p| Instant::now() + p);
        let mut st = self.state.lock();
        loop {
            if st.stopped {
                return false;
            }
            if st.requested > st.done {
                return true;
            }
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut st, d).timed_out() {
                        return !st.stopped;
                    }
                }
                None => self.cv.wait(&mut st),
            }
        }
    }

    /// Flusher: the turn is over, whether it committed or had nothing to do.
    fn finished(&self) {
        let mut st = self.state.lock();
        st.done = st.requested;
        self.cv.notify_all();
    }

    fn exited(&self) {
        self.state.lock().exited = true;
        self.cv.notify_all();
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.cv.notify_all();
    }

    /// Asks for one turn now and waits until it is over; returns at once if the flusher is
    /// gone or stopping.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn run_one(&self) {
        let mut st = self.state.lock();
        if st.exited || st.stopped {
            return;
        }
        st.requested += 1;
        let want = st.requested;
        self.cv.notify_all();
        while st.done < want && !st.exited && !st.stopped {
            self.cv.wait(&mut st);
        }
    }
}

/// Marks the thread gone however it ends, so nobody waits for a turn that never comes.
struct ExitGuard<'a>(&'a Turns);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.exited();
    }
}

impl Flusher {
    /// Starts the thread. On a file it runs a turn every [`PERIOD`]; on simulated storage
    /// only when the test lets a second pass (`SimDisk::tick_flusher`), so that storage
    /// operations happen at the same points in every run.
    pub(crate) fn start(sh: Arc<Shared>, commit: Arc<Mutex<CommitState>>) -> Result<Self> {
        let turns = Arc::new(Turns::default());
        let period = schedule(&sh, &turns);
        let thread_turns = Arc::clone(&turns);
        let handle = std::thread::Builder::new()
            .name("backlog-flush".into())
            .spawn(move || {
                let turns = &*thread_turns;
                let _exit = ExitGuard(turns);
                while turns.next(period) {
                    let go_on = turn(&sh, &commit);
                    turns.finished();
                    if !go_on {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("starting the flush thread", None, e))?;
        Ok(Flusher {
            turns,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it (a turn in progress completes first).
    pub(crate) fn stop(&mut self) {
        self.turns.stop();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One turn: commits what was appended since the last commit, if anything. `false` once a
/// failed commit poisoned the backlog (nothing will ever be committed again).
fn turn(sh: &Shared, commit: &Mutex<CommitState>) -> bool {
    let mut st = commit.lock();
    let end = sh.end().load(Ordering::Acquire);
    if end == st.last.end || sh.check_poison().is_err() {
        return true;
    }
    let start = sh.start().load(Ordering::Acquire).min(end + 1);
    match st.commit(sh, start, end, CommitKind::Background) {
        Ok(_) => true,
        Err(e) => {
            // Nobody waits for this commit: the error lives on in every later write's.
            let _ = sh.poison(e);
            false
        }
    }
}

/// The period of the flusher on `sh`'s medium (see [`Flusher::start`]).
#[cfg_attr(not(feature = "sim"), allow(clippy::unnecessary_wraps))] // `None` on simulated storage
fn schedule(sh: &Shared, turns: &Arc<Turns>) -> Option<Duration> {
    #[cfg(feature = "sim")]
    if let crate::region::Medium::Sim(disk) = &sh.medium {
        disk.attach_flusher(turns);
        return None;
    }
    let _ = (sh, turns);
    Some(PERIOD)
}
