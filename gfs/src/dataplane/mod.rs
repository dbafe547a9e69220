//! The chunkserver's data plane (GFS paper §3.1–3.3): how bytes reach the replicas of a chunk and come
//! back out, over plain TCP built for throughput.
//!
//! Data flow is decoupled from control flow, as in the paper:
//!
//! 1. **Push** — the client sends the bytes of a mutation to the first replica of a chain; each replica
//!    keeps them in a bounded in-memory buffer ([`ServerConfig::buffer_cap`], entries expire) and forwards
//!    every piece to the next replica as it arrives, so the chain is pipelined. The push is acknowledged
//!    only when every replica down the chain holds the data. Nothing touches a disk yet.
//! 2. **Write / record append** — the client asks the *primary* to apply the pushed data. The primary
//!    orders mutations of a chunk (one at a time, under a per-chunk lock held across apply and
//!    replication), applies locally (durable on return) while every secondary applies the same data at
//!    the same offset, in parallel, each with a deadline. The mutation is acknowledged when a majority of
//!    the replicas hold it durably (2 of 3); the secondaries that failed or timed out are named so that the
//!    master can mark them stale. A record append picks the offset itself (the chunk's current length)
//!    and pads the chunk when the record does not fit ([`AppendOutcome::ChunkFull`]); a failed append is
//!    retried by the client, hence at-least-once.
//! 3. **Read** — a replica streams a range back, every 64 KiB block verified by the chunk store; a
//!    checksum mismatch is a distinct error ([`ErrorCode::Corrupt`]) so the client fails over and reports.
//!
//! Every request carries a [`CapabilityToken`] (HMAC-SHA256 under the cluster key over operation, chunk,
//! version and expiry); replicas mint their own for server-to-server steps. A request without a valid
//! token is answered with a refusal and its connection closed. Every network step has a deadline
//! ([`Deadlines`]), so a dead or slow replica costs a bounded wait, never a hang; connections are
//! bounded in number ([`ServerConfig::max_connections`]) and one that sends no valid request within
//! [`Deadlines::first_frame`] is closed. With [`ServerConfig::tls`] every connection is TLS (its
//! handshake within `first_frame`), and [`DataClient::with_tls`] speaks only TLS, verifying the
//! server's certificate for the IP address it dials ([`crate::tls`]).
//!
//! Modules: `token` (capability tokens), `frame` (the wire format and its bounds), `error`, `buffer`
//! (pushed data awaiting a mutation), `locks` (the primary's per-chunk ordering), `server` (connections
//! and dispatch), `push` (receiving and forwarding pushed data), `mutate` (write, append and their
//! replication), `read` (streaming reads), `stream` (plain or TLS connections), `client` ([`DataClient`], also used by servers for their peers).

mod buffer;
mod client;
mod error;
mod frame;
mod locks;
mod mutate;
mod push;
mod read;
mod server;
mod stream;
mod token;

#[cfg(test)]
mod tests;

use crate::chunk::{ChunkHandle, ChunkVersion};
pub use client::{AppendOutcome, ClientConfig, DataClient, WriteOutcome};
pub use error::{ClientError, ErrorCode};
pub use frame::{FrameError, MAX_HEADER, MAX_REPLICAS, MAX_TOKEN, PIECE};
pub use server::{DataServer, Deadlines, ServerConfig, DEFAULT_MAX_CONNECTIONS};
pub use token::{CapabilityToken, ClusterKey, TokenError, TokenOp};

/// A chunk at a version: what every data-plane request is about (tokens are minted for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
}

/// Names one pushed piece of data in the replicas' buffers until a mutation applies it. Random (128 bits),
/// so that clients need no coordination to pick one.
pub type DataId = u128;

/// The largest record [`DataClient::append`] accepts: a quarter of a chunk, as in the paper, so that
/// padding wastes at most a quarter of a chunk.
pub const MAX_RECORD: u64 = crate::chunk::CHUNK_SIZE / 4;
