//! Why the master cannot run ([`MasterError`]), and how refused operations read on the wire
//! ([`meta_status`]: a metadata refusal as a gRPC status).

use tonic::Status;

use crate::dataplane::TokenError;
use crate::master::MetaError;
use crate::rpc::CredentialError;

/// Why a master stopped (or never started).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("invalid GFS master configuration: {0}")]
    Config(String),
    #[error("GFS master credentials: {0}")]
    Credential(#[from] CredentialError),
    #[error("GFS cluster key: {0}")]
    ClusterKey(#[from] TokenError),
    /// The URL is not repeated: it may carry a password.
    #[error("cannot set up the GFS master's NATS resources ({what}): {detail}")]
    Setup { what: &'static str, detail: String },
    /// The log holds something this master cannot apply; it stops rather than diverge.
    #[error("the GFS log cannot be followed: {0}")]
    Log(String),
    #[error("serving the GFS master RPC failed: {0}")]
    Serve(std::io::Error),
    #[error("a GFS master task failed: {0}")]
    Task(String),
}

/// A metadata refusal as the gRPC status a caller can act on.
pub(super) fn meta_status(error: MetaError) -> Status {
    use MetaError::*;
    let message = error.to_string();
    match error {
        NoNamespace(_) | NoPath { .. } | NoFile(_) | NoChunk(_) => Status::not_found(message),
        NamespaceExists(_) | FileExists { .. } | FileIdTaken(_) => Status::already_exists(message),
        BadNamespace { .. } | BadPath(_) => Status::invalid_argument(message),
        NamespaceNotEmpty { .. }
        | Mismatch { .. }
        | ReplaceMismatch { .. }
        | ChunkIndex { .. }
        | StaleHandle { .. }
        | ZeroVersion
        | VersionNotRaised { .. }
        | ChunkInUse { .. }
        | LengthBeyondChunks { .. }
        | LengthShrinks { .. } => Status::failed_precondition(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn refusals_map_to_codes_a_caller_can_act_on() {
        assert_eq!(meta_status(MetaError::NoNamespace("a".into())).code(), Code::NotFound);
        assert_eq!(meta_status(MetaError::NamespaceExists("a".into())).code(), Code::AlreadyExists);
        assert_eq!(meta_status(MetaError::BadPath("x")).code(), Code::InvalidArgument);
        let not_empty = MetaError::NamespaceNotEmpty { namespace: "a".into(), files: 2 };
        let status = meta_status(not_empty);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("2 files"), "{}", status.message());
    }
}
