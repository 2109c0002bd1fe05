//! The crate's error type for failures (read outcomes are in `read_error.rs`).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong opening, writing or inspecting a backlog.
///
/// Normal outcomes are values, not errors: a PSYNC answer, what recovery found, and why a
/// read returned no bytes (a [`ReadError`](crate::ReadError) or
/// [`TailError`](crate::TailError): the bytes are gone, not written yet, or the history
/// changed).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    Io {
        /// What the crate was doing, e.g. "mapping the backlog file".
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
    /// Another handle (in this or another process) holds the backlog open for writing.
    AlreadyOpen {
        /// The file that is locked.
        path: PathBuf,
    },
    /// The file holds no backlog header at all (no magic in either header slot): it is some
    /// other file, not a damaged backlog.
    NotABacklog {
        /// The file.
        path: PathBuf,
    },
    /// `create` found a file already at the path.
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file is not a backlog, is damaged beyond what recovery may repair, or is truncated.
    Corrupt {
        /// The file (or `<simulated>`).
        path: PathBuf,
        /// Where in the file, in bytes from its start.
        at: u64,
        /// What was expected there.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The file is a backlog of a format version this build does not read.
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// An earlier flush failed, so nothing written since can be promised durable.
    ///
    /// Every later write fails with this error; reopen the file to recover. The call whose
    /// flush failed returned [`Error::Io`] with the same operation, path and OS error.
    Poisoned {
        /// What failed, e.g. "syncing the backlog".
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// The I/O error of that failure (also [`source`](std::error::Error::source)),
        /// shared by every `Poisoned` error of the handle.
        source: Arc<io::Error>,
    },
    /// A read-only open found a backlog whose last writer neither closed it cleanly nor left
    /// a live state valid on this boot (the machine crashed or restarted since): only a
    /// writer's recovery may decide which bytes to trust. Open it for writing once.
    NeedsRecovery {
        /// The file.
        path: PathBuf,
    },
    /// An argument is out of its documented range.
    InvalidArgument(String),
    /// A string is not a run ID (40 lowercase hexadecimal characters).
    InvalidRunId(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: Option<&std::path::Path>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.map(std::path::Path::to_path_buf),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                op,
                path: Some(p),
                source,
            } => {
                write!(f, "{op} ({}): {source}", p.display())
            }
            Error::Io {
                op,
                path: None,
                source,
            } => write!(f, "{op}: {source}"),
            Error::AlreadyOpen { path } => write!(
                f,
                "{} is already open for writing by another handle or process",
                path.display()
            ),
            Error::AlreadyExists { path } => write!(f, "{} already exists", path.display()),
            Error::NotABacklog { path } => write!(
                f,
                "{} is not a backlog file (no \"DBACKLOG\" header at byte 0 or 4096)",
                path.display()
            ),
            Error::Corrupt {
                path,
                at,
                expected,
                found,
            } => write!(
                f,
                "{} is corrupt at byte {at}: expected {expected}, found {found}",
                path.display()
            ),
            Error::UnsupportedVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} has backlog format version {found}; this build reads version {supported}",
                path.display()
            ),
            Error::Poisoned {
                op,
                path: Some(p),
                source,
            } => write!(
                f,
                "backlog is poisoned by an earlier failed flush ({op} ({}): {source}); reopen it \
                 to recover",
                p.display()
            ),
            Error::Poisoned {
                op,
                path: None,
                source,
            } => write!(
                f,
                "backlog is poisoned by an earlier failed flush ({op}: {source}); reopen it to \
                 recover"
            ),
            Error::NeedsRecovery { path } => write!(
                f,
                "{} was not closed cleanly before the machine restarted: open it for writing \
                 once to recover it before reading it read-only",
                path.display()
            ),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::InvalidRunId(s) => write!(
                f,
                "invalid run ID {s:?}: expected 40 lowercase hexadecimal characters"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Poisoned { source, .. } => Some(&**source),
            _ => None,
        }
    }
}
