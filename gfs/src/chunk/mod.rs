//! The chunkserver's chunk store: chunks as files under one data directory.
//!
//! Each chunk is `<handle>.chunk` (its bytes, at most [`CHUNK_SIZE`]) beside `<handle>.meta` (its version,
//! its length and the CRC32C of every [`BLOCK_SIZE`] block, sealed by a checksum of its own; see `meta`).
//! Every read verifies the checksums of the blocks it touches, so a flipped bit on disk is reported
//! ([`ChunkError::Corrupt`]) instead of served; every write is on disk (data, then metadata) before it is
//! acknowledged. A chunk whose files disagree after a crash, or that the scrubber found corrupt, is
//! quarantined: reported by [`ChunkStore::open`] and [`ChunkStore::quarantined`], never served, until
//! the master has it deleted.
//!
//! Modules: `types` (handles, versions, the heartbeat summary), `error`, `layout` (file names, the
//! directory), `block` (block arithmetic, positioned reads), `meta` (the metadata file), `ops` (the blocking
//! I/O of each operation), `scan` (what `open` finds on disk), `store` (the async API and per-chunk locks).

mod block;
mod error;
mod layout;
mod meta;
mod ops;
mod scan;
mod store;
mod types;

#[cfg(test)]
mod tests;

pub use error::{ChunkError, QuarantineReason};
pub use store::{ChunkStore, OpenReport, Quarantined};
pub use types::{ChunkHandle, ChunkInfo, ChunkVersion, ParseHandleError};

/// The size a chunk may grow to (the GFS paper's 64 MiB): big enough that the master's metadata stays
/// small, small enough to re-replicate in seconds.
pub const CHUNK_SIZE: u64 = 64 * 1024 * 1024;

/// The unit of checksumming: a read verifies whole blocks, so this bounds the extra bytes a small read costs.
pub const BLOCK_SIZE: u64 = 64 * 1024;

/// Blocks in a full chunk (1024), hence the most checksums a metadata file holds.
pub const BLOCKS_PER_CHUNK: usize = (CHUNK_SIZE / BLOCK_SIZE) as usize;
