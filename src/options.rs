//! What a backlog is opened with: its capacity and its durability policy.

/// Default capacity: 1 MiB, like Redis's `repl-backlog-size`.
pub const DEFAULT_CAPACITY: u64 = 1024 * 1024;

/// When appended bytes become durable — Redis's `appendfsync` choices.
///
/// Under **every** variant a process crash (kill -9, panic, abort) loses nothing `append`
/// returned: the bytes and the live offsets are in the kernel's page cache, and recovery on
/// the same boot reads them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every `append` commits (checksums, header slot, one sync) before it returns.
    /// Survives: process crash, OS crash and power loss lose nothing `append` returned.
    Always,
    /// A background thread commits at least once a second.
    /// Survives: process crash loses nothing; OS crash or power loss loses at most the last
    /// second of appends (never a byte in the middle: the recovered history is a prefix).
    #[default]
    EverySec,
    /// Commits only on [`Backlog::flush`](crate::Backlog::flush) and
    /// [`Backlog::close`](crate::Backlog::close) (and at open).
    /// Survives: process crash loses nothing; OS crash or power loss keeps what the last
    /// flush covered.
    Never,
}

/// How to create or open a backlog.
///
/// # Examples
/// ```
/// use durable_backlog::{Durability, Options};
/// let opts = Options::new().capacity(64 * 1024).durability(Durability::Always);
/// assert_eq!(opts.get_capacity(), Some(64 * 1024));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub(crate) capacity: Option<u64>,
    pub(crate) durability: Durability,
    pub(crate) verify_on_open: bool,
}

impl Options {
    /// Defaults: capacity of the existing file (1 MiB for a new one), `EverySec`.
    #[must_use]
    pub fn new() -> Self {
        Options::default()
    }

    /// Ring capacity in bytes (16 KiB ..= 1 TiB, any value, not only powers of two).
    /// Opening an existing file with a different capacity resizes it atomically, keeping the
    /// newest bytes.
    #[must_use]
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// The durability policy.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Verify every held byte's checksum at open, even after a clean shutdown, and keep only
    /// verified bytes, so that nothing unverified is ever served. (By default a clean reopen
    /// verifies nothing; an unclean open on the same boot verifies the committed bytes but
    /// keeps the bytes after the last commit, which have no checksum, from the page cache;
    /// recovery after an OS crash or power loss keeps only verified bytes.) Costs a read of the whole backlog; catches media
    /// corruption of data at rest. After a process crash, bytes appended since the last
    /// commit have no checksum yet: this option drops them (the history is cut at the last
    /// commit), so pair it with [`Durability::Always`] when no returned append may be lost.
    #[must_use]
    pub fn verify_on_open(mut self, yes: bool) -> Self {
        self.verify_on_open = yes;
        self
    }

    /// The capacity set, if any.
    #[must_use]
    pub fn get_capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// The durability policy set.
    #[must_use]
    pub fn get_durability(&self) -> Durability {
        self.durability
    }
}
