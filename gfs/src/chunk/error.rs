//! What can go wrong with a chunk, and why a chunk found on disk may be refused service.

use std::io;
use std::path::{Path, PathBuf};

use super::types::{ChunkHandle, ChunkVersion};

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {0} not found")]
    NotFound(ChunkHandle),
    #[error("chunk {0} already exists")]
    Exists(ChunkHandle),
    /// The chunk's files are on disk but cannot be trusted; only [`delete`](super::ChunkStore::delete) works.
    #[error("chunk {handle} is quarantined ({reason}) and not served")]
    Quarantined { handle: ChunkHandle, reason: QuarantineReason },
    /// The writer's version is not the stored one: one of the two replicas missed a lease round.
    #[error("chunk {handle}: write for version {requested} refused, the replica holds version {stored}")]
    StaleVersion { handle: ChunkHandle, stored: ChunkVersion, requested: ChunkVersion },
    #[error("chunk {handle}: version may not go back from {current} to {requested}")]
    VersionRegression { handle: ChunkHandle, current: ChunkVersion, requested: ChunkVersion },
    /// `offset + len` is past `limit`: the chunk size for writes, the chunk's length for reads.
    #[error("chunk {handle}: range at offset {offset} of {len} bytes is outside the first {limit} bytes")]
    OutOfRange { handle: ChunkHandle, offset: u64, len: u64, limit: u64 },
    /// A block's bytes on disk do not match its checksum (or the data file ends inside it).
    #[error("chunk {handle} is corrupt: block {block} does not match its checksum")]
    Corrupt { handle: ChunkHandle, block: u32 },
    #[error("chunk directory {} is in use by another chunk store", .0.display())]
    Locked(PathBuf),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The blocking task running the I/O panicked or was cancelled at shutdown.
    #[error("chunk I/O task failed: {0}")]
    Task(String),
}

impl ChunkError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }
}

/// Why a chunk is kept out of service. Its files stay where they are for an operator or the master to
/// look at; the master answers a quarantine report by deleting the replica and cloning a good one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuarantineReason {
    /// A data file without metadata: a create or delete cut short, or a lost metadata file.
    #[error("data file without metadata")]
    MissingMeta,
    #[error("metadata without data file")]
    MissingData,
    #[error("unreadable metadata: {0}")]
    BadMeta(String),
    /// The data file is not as long as the metadata says: a write that extended the chunk was cut short
    /// between the data and the metadata, or the file was truncated.
    #[error("data file holds {data} bytes, metadata says {meta}")]
    LengthMismatch { meta: u64, data: u64 },
    /// A full check (after a write was found interrupted) found a block that does not match its checksum.
    #[error("block {block} does not match its checksum")]
    Corrupt { block: u32 },
    /// An I/O error while reading the chunk's files at start-up, or in the middle of a mutation, after
    /// which what is on disk is unknown.
    #[error("I/O failure: {0}")]
    Failed(String),
    /// Quarantined while the store ran ([`ChunkStore::quarantine`](super::ChunkStore::quarantine)), for
    /// the reason recorded then.
    #[error("quarantined before the restart: {0}")]
    Marked(String),
}
