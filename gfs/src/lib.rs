//! `edd-gfs`: Edd Cloud's distributed file system, after the GFS paper (64 MiB chunks, three replicas,
//! per-block CRC32C checksums, chunk versions to tell a stale replica from a current one).
//!
//! - [`chunk`]: the chunkserver's on-disk chunk store — one data file and one metadata file per chunk,
//!   checksums verified on every read, every acknowledged write durable.
//! - [`dataplane`]: the chunkserver's data plane — plain TCP frames for pushing data along a replica
//!   chain, primary-ordered writes and record appends acknowledged by a majority of replicas, and
//!   checksummed reads, every request authorized by a capability token and every network step bounded.
//! - [`master`]: the master's metadata (namespaces, files, chunk handles and versions) as a state
//!   machine over the `gfs.*` events, with snapshots, and [`master::service`], the running master
//!   (election, leases, re-replication, garbage collection).
//! - [`chunkserver`]: the running chunkserver (heartbeats with chunk reports, the master's orders, scrubbing).
//! - [`client`]: the client library the services use.
//! - [`rpc`]: the control plane between them (the master's gRPC service and its credentials).
//! - [`tls`]: optional TLS for both planes.
//!
//! `docs/gfs.md` describes the whole.

pub mod chunk;
pub mod chunkserver;
pub mod client;
pub mod dataplane;
pub mod master;
pub mod rpc;
pub mod tls;

#[cfg(test)]
mod test_support;
