//! What a replica can answer instead of doing what was asked ([`ErrorCode`], carried in `Error`
//! frames), and what a [`DataClient`](super::DataClient) call can fail with ([`ClientError`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::buffer::BufferError;
use super::frame::FrameError;
use crate::chunk::ChunkError;

/// Why a replica refused a request. The client acts on the code: fail over on `Corrupt` or
/// `Unavailable`, ask the master again on `StaleVersion` or `NotFound`, re-push on `UnknownData`,
/// back off on `BufferFull`, report `failed` replicas on `QuorumFailed` and `Downstream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed or inconsistent request; the connection is closed.
    BadRequest,
    /// Missing, invalid or expired capability token; the connection is closed.
    Unauthorized,
    /// The replica's push buffer has no room for the data.
    BufferFull,
    /// No pushed data by that id for that chunk (never pushed, expired, or already applied).
    UnknownData,
    NotFound,
    /// The replica holds another version of the chunk than the request names.
    StaleVersion,
    /// A block of the chunk does not match its checksum on this replica.
    Corrupt,
    /// The chunk is quarantined on this replica.
    Unavailable,
    OutOfRange,
    /// A push longer than a chunk, or a record longer than [`MAX_RECORD`](super::MAX_RECORD).
    TooLarge,
    /// The mutation was applied by fewer replicas than a majority: not acknowledged.
    QuorumFailed,
    /// A replica further down the push chain failed; `failed` names it.
    Downstream,
    Internal,
    /// A code this build does not know (a newer peer).
    Unknown(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::Unauthorized => 2,
            ErrorCode::BufferFull => 3,
            ErrorCode::UnknownData => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::StaleVersion => 6,
            ErrorCode::Corrupt => 7,
            ErrorCode::Unavailable => 8,
            ErrorCode::OutOfRange => 9,
            ErrorCode::TooLarge => 10,
            ErrorCode::QuorumFailed => 11,
            ErrorCode::Downstream => 12,
            ErrorCode::Internal => 13,
            ErrorCode::Unknown(code) => code,
        }
    }

    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::Unauthorized,
            3 => ErrorCode::BufferFull,
            4 => ErrorCode::UnknownData,
            5 => ErrorCode::NotFound,
            6 => ErrorCode::StaleVersion,
            7 => ErrorCode::Corrupt,
            8 => ErrorCode::Unavailable,
            9 => ErrorCode::OutOfRange,
            10 => ErrorCode::TooLarge,
            11 => ErrorCode::QuorumFailed,
            12 => ErrorCode::Downstream,
            13 => ErrorCode::Internal,
            other => ErrorCode::Unknown(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A refusal as it travels in an `Error` frame (and as the server builds one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// Replicas at fault, when the refusal is about other replicas (a push chain, a quorum).
    pub failed: Vec<SocketAddr>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into(), failed: Vec::new() }
    }

    pub fn failed(mut self, failed: Vec<SocketAddr>) -> Refusal {
        self.failed = failed;
        self
    }
}

impl From<ChunkError> for Refusal {
    fn from(error: ChunkError) -> Refusal {
        let code = match &error {
            ChunkError::NotFound(_) => ErrorCode::NotFound,
            ChunkError::StaleVersion { .. } | ChunkError::VersionRegression { .. } => ErrorCode::StaleVersion,
            ChunkError::OutOfRange { .. } => ErrorCode::OutOfRange,
            ChunkError::Corrupt { .. } => ErrorCode::Corrupt,
            ChunkError::Quarantined { .. } => ErrorCode::Unavailable,
            ChunkError::Exists(_) => ErrorCode::BadRequest,
            ChunkError::Locked(_) | ChunkError::Io { .. } | ChunkError::Task(_) => {
                // Paths and OS errors stay in this server's log; the peer learns only that it failed.
                tracing::error!(%error, "chunk store failure");
                return Refusal::new(ErrorCode::Internal, "chunk store failure on the replica");
            }
        };
        Refusal::new(code, error.to_string())
    }
}

impl From<BufferError> for Refusal {
    fn from(error: BufferError) -> Refusal {
        let code = match error {
            BufferError::Full { .. } => ErrorCode::BufferFull,
            BufferError::Duplicate => ErrorCode::BadRequest,
            BufferError::Unknown | BufferError::OtherChunk => ErrorCode::UnknownData,
        };
        Refusal::new(code, error.to_string())
    }
}

/// Why a [`DataClient`](super::DataClient) call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{addr}: connect: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A step took longer than its deadline; the connection was dropped.
    #[error("{addr}: {step} timed out")]
    Timeout { addr: SocketAddr, step: &'static str },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The replica answered something that does not fit the protocol.
    #[error("{addr}: protocol error: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    /// The replica refused the request.
    #[error("{addr} refused ({code}): {message}")]
    Refused { addr: SocketAddr, code: ErrorCode, message: String, failed: Vec<SocketAddr> },
    /// The arguments cannot make a valid request (nothing was sent).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The replica's refusal code, if it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The replicas a refusal names as at fault (a broken push chain, a failed quorum).
    pub fn failed(&self) -> &[SocketAddr] {
        match self {
            ClientError::Refused { failed, .. } => failed,
            _ => &[],
        }
    }

    pub(crate) fn frame(addr: SocketAddr, error: FrameError) -> ClientError {
        ClientError::Protocol { addr, reason: error.to_string() }
    }

    pub(crate) fn refused(addr: SocketAddr, refusal: Refusal) -> ClientError {
        ClientError::Refused { addr, code: refusal.code, message: refusal.message, failed: refusal.failed }
    }
}
