//! Why a metadata operation is refused, and why an event from the log could not be applied.

use edd_events::envelope::DecodeError;
use edd_events::Token;

use crate::chunk::{ChunkHandle, ChunkVersion};

/// A metadata operation that is invalid or impossible in the current state. Commands get it from the
/// `check_*` functions before they append anything; [`ApplyError::Rejected`] carries it when the log
/// itself holds an impossible event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("invalid namespace name {name:?}: {reason}")]
    BadNamespace { name: String, reason: &'static str },
    /// The path itself is not echoed: it may be megabytes of hostile input.
    #[error("invalid path: {0}")]
    BadPath(&'static str),
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    #[error("namespace {0} does not exist")]
    NoNamespace(String),
    #[error("namespace {namespace} still holds {files} files")]
    NamespaceNotEmpty { namespace: String, files: usize },
    #[error("{namespace}:{path} already exists")]
    FileExists { namespace: String, path: String },
    #[error("no file at {namespace}:{path}")]
    NoPath { namespace: String, path: String },
    #[error("file {0} does not exist")]
    NoFile(Token),
    #[error("file id {0} is already in use")]
    FileIdTaken(Token),
    /// An event names a file by id and also says where it is; the two disagree.
    #[error("file {file} is {actual}, not {claimed}")]
    Mismatch { file: Token, actual: String, claimed: String },
    #[error("renaming {file} would replace {expected:?}, but the target holds {actual:?}")]
    ReplaceMismatch { file: Token, expected: Option<Token>, actual: Option<Token> },
    #[error("file {file} has {next} chunks; the next chunk is index {next}, not {index}")]
    ChunkIndex { file: Token, index: u32, next: u64 },
    /// Handles only grow, so a handle is never given to two chunks, even after the first is forgotten.
    #[error("chunk handle {handle} is not above the last allocated handle {last}")]
    StaleHandle { handle: ChunkHandle, last: ChunkHandle },
    #[error("chunk versions start at 1")]
    ZeroVersion,
    #[error("chunk {0} is unknown")]
    NoChunk(ChunkHandle),
    #[error("chunk {handle} is at version {current}; {proposed} would not raise it")]
    VersionNotRaised { handle: ChunkHandle, current: ChunkVersion, proposed: ChunkVersion },
    #[error("chunk {handle} still belongs to file {file}")]
    ChunkInUse { handle: ChunkHandle, file: Token },
    #[error("file {file} has {chunks} chunks ({capacity} bytes); a length of {length} does not fit")]
    LengthBeyondChunks { file: Token, length: u64, chunks: usize, capacity: u64 },
    #[error("file {file} is committed up to {current} bytes; lengths only grow (got {proposed})")]
    LengthShrinks { file: Token, current: u64, proposed: u64 },
}

/// An event of the GFS log that the state machine cannot take. The state is unchanged when this is
/// returned; a master must stop following the log rather than skip it (its metadata would diverge).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("GFS event at sequence {seq} cannot be decoded: {source}")]
    Decode { seq: u64, source: DecodeError },
    /// Most likely written by a newer master: upgrade this one before it follows the log.
    #[error("GFS event at sequence {seq} has unknown type {ty}")]
    UnknownType { seq: u64, ty: String },
    #[error("GFS event at sequence {seq} ({ty}) is impossible in the current state: {source}")]
    Rejected { seq: u64, ty: &'static str, source: MetaError },
}
