//! [`GfsError`]: what a client operation fails with. Master answers keep the master's message (the
//! gRPC code picks the variant); data-plane failures are retried inside the library and surface only
//! once the operation's retry deadline has passed, as the kind of the last failure.

use std::io;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum GfsError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request cannot succeed as asked (a bad name, an offset past the end, a record too large).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No master, or not enough replicas, answered within the retry deadline; later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Every replica of a chunk failed its checksums for the range read.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The client secret was refused.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The operation does not fit the current state (for example deleting a namespace that holds files).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A broken answer, or a failure nobody can act on.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's side of a stream failed (the writer `read_to` writes into, for example).
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
}

impl GfsError {
    /// Whether trying again later can succeed without anything else changing.
    pub fn is_transient(&self) -> bool {
        matches!(self, GfsError::Unavailable(_) | GfsError::Timeout(_))
    }

    /// The same kind of error, its message prefixed with `what` (where it happened).
    pub(crate) fn context(self, what: impl std::fmt::Display) -> GfsError {
        let prefix = |message: String| format!("{what}: {message}");
        match self {
            GfsError::NotFound(m) => GfsError::NotFound(prefix(m)),
            GfsError::AlreadyExists(m) => GfsError::AlreadyExists(prefix(m)),
            GfsError::InvalidArgument(m) => GfsError::InvalidArgument(prefix(m)),
            GfsError::Unavailable(m) => GfsError::Unavailable(prefix(m)),
            GfsError::Corrupt(m) => GfsError::Corrupt(prefix(m)),
            GfsError::PermissionDenied(m) => GfsError::PermissionDenied(prefix(m)),
            GfsError::FailedPrecondition(m) => GfsError::FailedPrecondition(prefix(m)),
            GfsError::Timeout(m) => GfsError::Timeout(prefix(m)),
            GfsError::ResourceExhausted(m) => GfsError::ResourceExhausted(prefix(m)),
            GfsError::Internal(m) => GfsError::Internal(prefix(m)),
            GfsError::Io(e) => GfsError::Io(io::Error::new(e.kind(), prefix(e.to_string()))),
        }
    }

    /// A copy, for a failure several callers learn of (an `io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> GfsError {
        match self {
            GfsError::NotFound(m) => GfsError::NotFound(m.clone()),
            GfsError::AlreadyExists(m) => GfsError::AlreadyExists(m.clone()),
            GfsError::InvalidArgument(m) => GfsError::InvalidArgument(m.clone()),
            GfsError::Unavailable(m) => GfsError::Unavailable(m.clone()),
            GfsError::Corrupt(m) => GfsError::Corrupt(m.clone()),
            GfsError::PermissionDenied(m) => GfsError::PermissionDenied(m.clone()),
            GfsError::FailedPrecondition(m) => GfsError::FailedPrecondition(m.clone()),
            GfsError::Timeout(m) => GfsError::Timeout(m.clone()),
            GfsError::ResourceExhausted(m) => GfsError::ResourceExhausted(m.clone()),
            GfsError::Internal(m) => GfsError::Internal(m.clone()),
            GfsError::Io(e) => GfsError::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl From<Status> for GfsError {
    fn from(status: Status) -> GfsError {
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => GfsError::NotFound(message),
            Code::AlreadyExists => GfsError::AlreadyExists(message),
            Code::InvalidArgument | Code::OutOfRange => GfsError::InvalidArgument(message),
            // Aborted: the master lost a race on its log (or its lease); Cancelled: the call was cut off.
            Code::Unavailable | Code::Aborted | Code::Cancelled => GfsError::Unavailable(message),
            Code::DeadlineExceeded => GfsError::Timeout(message),
            Code::Unauthenticated | Code::PermissionDenied => GfsError::PermissionDenied(message),
            Code::FailedPrecondition => GfsError::FailedPrecondition(message),
            Code::ResourceExhausted => GfsError::ResourceExhausted(message),
            Code::DataLoss => GfsError::Corrupt(message),
            code @ (Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal) => {
                GfsError::Internal(format!("{code:?}: {message}"))
            }
        }
    }
}

impl From<GfsError> for io::Error {
    fn from(error: GfsError) -> io::Error {
        let kind = match &error {
            GfsError::Io(e) => return io::Error::new(e.kind(), e.to_string()),
            GfsError::NotFound(_) => io::ErrorKind::NotFound,
            GfsError::AlreadyExists(_) => io::ErrorKind::AlreadyExists,
            GfsError::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            GfsError::Timeout(_) => io::ErrorKind::TimedOut,
            GfsError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            GfsError::Corrupt(_) => io::ErrorKind::InvalidData,
            GfsError::Unavailable(_) => io::ErrorKind::ConnectionAborted,
            GfsError::FailedPrecondition(_) | GfsError::ResourceExhausted(_) | GfsError::Internal(_) => {
                io::ErrorKind::Other
            }
        };
        io::Error::new(kind, error)
    }
}
