//! Integration tests of `iomt-log`, compiled as one test binary.
//!
//! Each module exercises one promise of the crate docs: round trips, offsets across segment
//! rolls and restarts, checkpoints and retention, recovery from torn and damaged tails,
//! concurrent appenders, and a real crash (`kill -9` of a child process) losing nothing that
//! was acknowledged.

mod checkpoints;
mod common;
mod concurrency;
mod crash;
mod recovery;
mod round_trip;
mod segments;
