//! Loom model of the publication protocol (`src/seqlock.rs`, the code the engine runs),
//! exploring every interleaving and every stale value the memory model allows on a tiny
//! ring. Guards against a reader accepting a torn copy (a byte overwritten during the copy,
//! or a byte of another history), against a tailer sleeping through an append, and against
//! a background commit whose slot would not verify after a power loss because a lapping
//! append overwrote bytes of its delta unprotected (the writer's start store against the
//! flusher's `protect_above`).
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test
//! loom`. The model needs the library built with `--cfg loom` (its fences and atomics are
//! swapped for loom's); a normal build reports one ignored test saying so.

#[cfg(loom)]
#[path = "loom/model.rs"]
mod model;

#[cfg(not(loom))]
#[test]
#[ignore = "the loom model needs the library built with RUSTFLAGS=\"--cfg loom\" (see tests/loom.rs)"]
fn loom_model_of_the_publication_protocol() {}
