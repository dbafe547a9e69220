//! The control plane: the master's gRPC service `edd.gfs.Master` (cluster port 9000), spoken by
//! clients, chunkservers and `edd gfs`.
//!
//! Written against tonic's runtime API the way generated code uses it (prost messages, tonic's
//! `Grpc` codec machinery) over cleartext HTTP/2 served by hyper, so the build needs neither `protoc`
//! nor a build script. One table, `master_methods!`, names every method once: it generates the
//! [`MasterApi`] trait a master implements, the server's dispatch and [`MasterClient`]'s methods, so
//! the three cannot drift apart.
//!
//! Every call is authenticated ([`auth`]): its credential is bound to the method and the request's
//! bytes and accepted once, and a method is refused unless the caller's role is among the roles the
//! table lists for it. Every reply is signed for its call with the same secret ([`REPLY_HEADER`]), and
//! [`MasterClient`] refuses a reply that is not, so something answering at a master's address without
//! the secret is no master. Messages travel as raw bytes (`codec`): both sides sign and check the
//! exact bytes sent. A standby master answers `UNAVAILABLE` with `x-gfs-standby: 1` and,
//! when it knows it, the active master's address in `x-gfs-active`; [`MasterClient`] then moves on to
//! another master of its list. An active master's own `UNAVAILABLE` is its answer and is not retried.
//!
//! Modules: `messages` (the wire types), `auth` (credentials and reply signatures), `server` (serving
//! a [`MasterApi`]), `channel` (one HTTP/2 connection as a tonic transport), `codec` (messages as
//! bytes), `client` ([`MasterClient`] with failover across masters).

pub mod auth;
mod channel;
mod client;
pub(crate) mod codec;
pub mod messages;
mod server;

#[cfg(test)]
mod tests;

pub use auth::{Authenticator, Credential, CredentialError, Refused, Role, SignedCall, Verified, REPLY_HEADER};
pub use channel::H2Channel;
pub use client::{ClientOptions, MasterClient};
pub use server::{serve, serve_with, ServeOptions, TLS_HANDSHAKE};

/// The service's full name, the first segment of every method path.
pub const SERVICE: &str = "edd.gfs.Master";

/// Metadata key by which a standby names the active master's address.
pub const ACTIVE_HEADER: &str = "x-gfs-active";

/// Metadata key present (value `1`) on every answer a standby gives instead of serving the call, so a
/// client tells "ask another master" from an active master's own `UNAVAILABLE`.
pub const STANDBY_HEADER: &str = "x-gfs-standby";

/// The most chunks one `Locate` answers (64 GiB of file).
pub const MAX_LOCATE: u32 = 1024;

/// The largest message either side accepts (a full chunk report of a large chunkserver).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Declares every method of `edd.gfs.Master`: `Name => fn_name(Request) -> Reply, [roles];`. Expands
/// to the [`MasterApi`] trait, the server's dispatch and the client's calls.
macro_rules! master_methods {
    ($($name:ident => $fn:ident($req:ty) -> $reply:ty, [$($role:ident),+];)+) => {
        /// What a master answers. Each method gets the decoded request and the caller's verified role
        /// (already checked against the roles allowed for the method).
        pub trait MasterApi: Send + Sync + 'static {
            $(
                fn $fn(
                    &self,
                    role: Role,
                    request: $req,
                ) -> impl std::future::Future<Output = Result<$reply, tonic::Status>> + Send;
            )+
        }

        /// Checks the call for `method` against its verified credential (role allowed, body the one
        /// signed), decodes it, runs it on `api` and encodes the answer, signed for this call.
        pub(crate) async fn dispatch<A: MasterApi>(
            api: std::sync::Arc<A>,
            verified: Verified,
            method: &str,
            req: hyper::Request<hyper::body::Incoming>,
        ) -> hyper::Response<tonic::body::Body> {
            let role = verified.role();
            match method {
                $(
                    stringify!($name) => {
                        if ![$(Role::$role),+].contains(&role) {
                            return tonic::Status::permission_denied(concat!(stringify!($name), " is not allowed for this credential"))
                                .into_http();
                        }
                        let mut grpc = tonic::server::Grpc::new(codec::RawCodec)
                            .max_decoding_message_size(MAX_MESSAGE)
                            .max_encoding_message_size(MAX_MESSAGE);
                        let svc = tower::service_fn(move |r: tonic::Request<bytes::Bytes>| {
                            let api = std::sync::Arc::clone(&api);
                            let verified = verified.clone();
                            async move {
                                let body = r.into_inner();
                                if !verified.covers(&body) {
                                    return Err(tonic::Status::unauthenticated("the request is not the one its credential was made for"));
                                }
                                let request = <$req as prost::Message>::decode(body).map_err(|e| {
                                    tonic::Status::invalid_argument(format!(concat!("undecodable ", stringify!($name), " request: {}"), e))
                                })?;
                                let reply = bytes::Bytes::from(prost::Message::encode_to_vec(&api.$fn(role, request).await?));
                                let mac = verified
                                    .sign_reply(&reply)
                                    .parse()
                                    .map_err(|_| tonic::Status::internal("unencodable reply signature"))?;
                                let mut response = tonic::Response::new(reply);
                                response.metadata_mut().insert(REPLY_HEADER, mac);
                                Ok(response)
                            }
                        });
                        grpc.unary(svc, req).await
                    }
                )+
                other => tonic::Status::unimplemented(format!("{SERVICE} has no method {other:?}")).into_http(),
            }
        }

        impl MasterClient {
            $(
                pub async fn $fn(&self, request: $req) -> Result<$reply, tonic::Status> {
                    self.call(stringify!($name), request).await
                }
            )+
        }
    };
}

use messages::*;

master_methods! {
    CreateNamespace => create_namespace(NamespaceRequest) -> Empty, [Client, Peer];
    DeleteNamespace => delete_namespace(NamespaceRequest) -> Empty, [Client, Peer];
    ListNamespaces => list_namespaces(Empty) -> NamespaceList, [Client, Peer];
    CreateFile => create_file(PathRequest) -> FileInfo, [Client, Peer];
    Stat => stat(PathRequest) -> FileInfo, [Client, Peer];
    List => list(ListRequest) -> FileList, [Client, Peer];
    Rename => rename(RenameRequest) -> FileInfo, [Client, Peer];
    DeleteFile => delete_file(PathRequest) -> Empty, [Client, Peer];
    Locate => locate(LocateRequest) -> Locations, [Client, Peer];
    LeaseChunk => lease_chunk(LeaseRequest) -> Lease, [Client, Peer];
    Commit => commit(CommitRequest) -> Empty, [Client, Peer];
    ReportCorrupt => report_corrupt(CorruptReport) -> Empty, [Client, Peer];
    ClusterStatus => cluster_status(Empty) -> Status, [Client, Peer];
    Heartbeat => heartbeat(Heartbeat) -> HeartbeatReply, [Peer];
}
