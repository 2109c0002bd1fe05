//! `durable-backlog`: inspect, verify, dump and question a backlog file, live or at rest.
//!
//! Built on the crate's public API only ([`durable_backlog::inspect`] for read-only access,
//! [`durable_backlog::Backlog`] for `create` and `resize`). Exit codes: 0 success, 1 `verify`
//! found damage, 2 bad input or any other error (one line on stderr, never a backtrace).

mod commands;
mod resp;
mod size;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect, verify, dump and question a durable-backlog file, live or at rest.
///
/// Reading commands (info, verify, dump, psync) never take the file's lock and never write:
/// they work on a file a running master holds open. create and resize write.
#[derive(Debug, Parser)]
#[command(name = "durable-backlog", version)]
struct Cli {
    /// Print JSON (one object; `dump --resp`: one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the format, capacity, run IDs, offsets, fill, shutdown state and what an open
    /// would recover.
    Info {
        /// The backlog file.
        file: PathBuf,
    },
    /// Check every checksum and invariant (exit 0 intact, 1 damaged, 2 unreadable).
    Verify {
        /// The backlog file.
        file: PathBuf,
    },
    /// Write the held stream bytes to stdout, raw or decoded as commands (--resp).
    Dump {
        /// The backlog file.
        file: PathBuf,
        /// First replication offset to dump (default: the oldest held).
        #[arg(long, value_name = "OFFSET")]
        from: Option<String>,
        /// How many bytes (plain or with a unit: 4kb, 1mb; default: up to the newest).
        #[arg(long, value_name = "N")]
        len: Option<String>,
        /// Decode the replication stream: one command per line, after its offset.
        #[arg(long)]
        resp: bool,
    },
    /// Show what a master holding this backlog would answer to `PSYNC REPLID OFFSET`.
    Psync {
        /// The backlog file.
        file: PathBuf,
        /// The replication ID the replica sends (`?` asks for a full resync).
        replid: String,
        /// The offset it sends (its offset + 1, or -1).
        #[arg(allow_hyphen_values = true)]
        offset: String,
    },
    /// Create a new, empty backlog file.
    Create {
        /// The file to create (must not exist).
        file: PathBuf,
        /// Capacity, in Redis syntax: 1mb, 64mb, 16kb, 1gb (k/m/g are powers of 1000).
        #[arg(long)]
        size: String,
    },
    /// Change a backlog's capacity, keeping its newest bytes (the file must be at rest).
    Resize {
        /// The backlog file.
        file: PathBuf,
        /// New capacity, in Redis syntax.
        #[arg(long)]
        size: String,
    },
}

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Print this one line and exit 2.
    Error(String),
    /// Stdout was closed (e.g. piped into `head`): stop quietly.
    BrokenPipe,
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Fail::BrokenPipe
        } else {
            Fail::Error(format!("writing the output: {e}"))
        }
    }
}

impl From<durable_backlog::Error> for Fail {
    fn from(e: durable_backlog::Error) -> Self {
        match e {
            durable_backlog::Error::InvalidArgument(msg) => Fail::Error(msg),
            e => Fail::Error(e.to_string()),
        }
    }
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Error(s)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match cli.command {
        Command::Info { file } => commands::info(&file, json),
        Command::Verify { file } => commands::verify(&file, json),
        Command::Dump {
            file,
            from,
            len,
            resp,
        } => commands::dump(&file, from.as_deref(), len.as_deref(), resp, json),
        Command::Psync {
            file,
            replid,
            offset,
        } => commands::psync(&file, &replid, &offset, json),
        Command::Create { file, size } => commands::create(&file, &size, json),
        Command::Resize { file, size } => commands::resize(&file, &size, json),
    };
    match result {
        Ok(code) => code,
        Err(Fail::BrokenPipe) => ExitCode::SUCCESS,
        Err(Fail::Error(msg)) => {
            let line = msg.replace(['\n', '\r'], " ");
            if json {
                let v = serde_json::json!({ "error": line });
                let _ = writeln!(io::stdout(), "{v}");
            }
            let _ = writeln!(io::stderr(), "durable-backlog: error: {line}");
            ExitCode::from(2)
        }
    }
}
