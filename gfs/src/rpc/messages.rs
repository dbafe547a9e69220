//! The control plane's messages (`edd.gfs.Master`), written as prost structs by hand so the build needs
//! neither `protoc` nor a build script. Field numbers are the wire contract: never reuse one.
//!
//! Conventions: chunk handles travel as `fixed64`, addresses as `host:port` strings (the data plane
//! address a chunkserver registered), times as Unix milliseconds, tokens as the 40 encoded bytes of a
//! [`CapabilityToken`](crate::dataplane::CapabilityToken).

/// No fields (answers that only say "done").
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

// ---- namespaces -----------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceRequest {
    #[prost(string, tag = "1")]
    pub namespace: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub file_count: u64,
    #[prost(int64, tag = "3")]
    pub created_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceList {
    #[prost(message, repeated, tag = "1")]
    pub namespaces: Vec<NamespaceInfo>,
}

// ---- files ----------------------------------------------------------------------------------------

/// A file by namespace and path (create, stat, delete).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathRequest {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileInfo {
    /// The file's id (a [`Token`](edd_events::Token)): what chunk operations name.
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub path: String,
    /// Committed bytes.
    #[prost(uint64, tag = "4")]
    pub length: u64,
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
    #[prost(int64, tag = "6")]
    pub modified_ms: i64,
    #[prost(uint32, tag = "7")]
    pub chunk_count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListRequest {
    #[prost(string, tag = "1")]
    pub namespace: String,
    /// Paths starting with this ("" for all).
    #[prost(string, tag = "2")]
    pub prefix: String,
    /// Resume after this path (the previous page's `next`; "" for the first page).
    #[prost(string, tag = "3")]
    pub after: String,
    /// At most this many (0 or over [`MAX_LIST_LIMIT`](crate::master::MAX_LIST_LIMIT): that limit).
    #[prost(uint32, tag = "4")]
    pub limit: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileList {
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<FileInfo>,
    /// "" when this page is the last.
    #[prost(string, tag = "2")]
    pub next: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RenameRequest {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub from: String,
    #[prost(string, tag = "3")]
    pub to: String,
    /// Replace a file already at `to` (atomically); otherwise that is `ALREADY_EXISTS`.
    #[prost(bool, tag = "4")]
    pub replace: bool,
}

// ---- chunks: reading ------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct LocateRequest {
    #[prost(string, tag = "1")]
    pub file_id: String,
    #[prost(uint32, tag = "2")]
    pub first_index: u32,
    /// How many chunks from `first_index` (0: to the end; at most [`MAX_LOCATE`](super::MAX_LOCATE)).
    #[prost(uint32, tag = "3")]
    pub count: u32,
}

/// Where one chunk can be read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkLocation {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(fixed64, tag = "2")]
    pub handle: u64,
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// Live replicas at `version`, nearest first (no stale, corrupt or dead one is ever listed).
    #[prost(string, repeated, tag = "4")]
    pub replicas: Vec<String>,
    /// A read token for this chunk at `version`.
    #[prost(bytes = "vec", tag = "5")]
    pub read_token: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Locations {
    /// The file's committed length when the locations were taken.
    #[prost(uint64, tag = "1")]
    pub length: u64,
    #[prost(uint32, tag = "2")]
    pub chunk_count: u32,
    #[prost(message, repeated, tag = "3")]
    pub chunks: Vec<ChunkLocation>,
    /// When the read tokens expire.
    #[prost(int64, tag = "4")]
    pub tokens_expire_ms: i64,
}

// ---- chunks: mutating -----------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRequest {
    #[prost(string, tag = "1")]
    pub file_id: String,
    /// The chunk to mutate. A write may name any index up to the file's chunk count (`index <=
    /// chunk_count`: one new chunk at most is allocated, at the end). An append names the file's last chunk, or the chunk count to have a new chunk
    /// allocated (an empty file, or after [`ChunkFull`](crate::dataplane::AppendOutcome::ChunkFull)); an
    /// append naming an earlier chunk is answered with the last one.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    #[prost(bool, tag = "3")]
    pub append: bool,
}

/// A chunk's lease: who orders its mutations, and the tokens to send them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(fixed64, tag = "2")]
    pub handle: u64,
    #[prost(uint64, tag = "3")]
    pub version: u64,
    #[prost(string, tag = "4")]
    pub primary: String,
    #[prost(string, repeated, tag = "5")]
    pub secondaries: Vec<String>,
    /// Push token (for the whole chain) and mutation token (write, or append) at `version`.
    #[prost(bytes = "vec", tag = "6")]
    pub push_token: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub mutate_token: Vec<u8>,
    /// The lease (and its tokens) hold until then; ask again after.
    #[prost(int64, tag = "8")]
    pub expires_ms: i64,
}

/// A replica that missed an acknowledged mutation (named in a write's `failed` list).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StaleReplica {
    #[prost(fixed64, tag = "1")]
    pub handle: u64,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(string, tag = "3")]
    pub addr: String,
}

/// After acknowledged mutations: the committed length grows to `length` (if larger), and replicas that
/// missed a mutation are taken out of service (their chunk's version is raised past them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitRequest {
    #[prost(string, tag = "1")]
    pub file_id: String,
    #[prost(uint64, tag = "2")]
    pub length: u64,
    #[prost(message, repeated, tag = "3")]
    pub stale: Vec<StaleReplica>,
}

/// A replica answered `Corrupt` for a read: the master stops listing it and has it replaced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CorruptReport {
    #[prost(fixed64, tag = "1")]
    pub handle: u64,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(string, tag = "3")]
    pub addr: String,
}

// ---- cluster status -------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkserverInfo {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub addr: String,
    #[prost(bool, tag = "3")]
    pub alive: bool,
    #[prost(uint64, tag = "4")]
    pub chunks: u64,
    #[prost(uint64, tag = "5")]
    pub free_bytes: u64,
    #[prost(uint64, tag = "6")]
    pub last_seen_ms_ago: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// This master's id and whether it is the active one (a standby answers `Status` too).
    #[prost(string, tag = "1")]
    pub master_id: String,
    #[prost(bool, tag = "2")]
    pub active: bool,
    /// The active master's RPC address, as its lease names it ("" if none).
    #[prost(string, tag = "3")]
    pub active_addr: String,
    #[prost(uint64, tag = "4")]
    pub last_seq: u64,
    #[prost(uint64, tag = "5")]
    pub files: u64,
    #[prost(uint64, tag = "6")]
    pub chunks: u64,
    #[prost(message, repeated, tag = "7")]
    pub chunkservers: Vec<ChunkserverInfo>,
    /// Live chunks with fewer than the target number of live current replicas.
    #[prost(uint64, tag = "8")]
    pub under_replicated: u64,
    /// Live chunks with no live current replica at all.
    #[prost(uint64, tag = "9")]
    pub missing: u64,
    /// Chunks of deleted files whose replicas are still being removed.
    #[prost(uint64, tag = "10")]
    pub garbage: u64,
    /// Clones ordered and not yet reported done.
    #[prost(uint64, tag = "11")]
    pub clones_in_flight: u64,
}

// ---- chunkservers ---------------------------------------------------------------------------------

/// One chunk a chunkserver holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkReport {
    #[prost(fixed64, tag = "1")]
    pub handle: u64,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(uint64, tag = "3")]
    pub length: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Heartbeat {
    /// Stable across restarts (kept in the data directory).
    #[prost(string, tag = "1")]
    pub server_id: String,
    /// Where clients and peers reach its data plane (`host:port`).
    #[prost(string, tag = "2")]
    pub data_addr: String,
    /// `true`: `chunks` is everything it holds (replaces what the master knew of it). `false`: `chunks`
    /// are the chunks added or changed since its previous heartbeat and `removed` those gone.
    #[prost(bool, tag = "3")]
    pub full: bool,
    #[prost(message, repeated, tag = "4")]
    pub chunks: Vec<ChunkReport>,
    #[prost(fixed64, repeated, tag = "5")]
    pub removed: Vec<u64>,
    /// Chunks it keeps out of service (failed checksums at open or since): never listed as replicas.
    #[prost(fixed64, repeated, tag = "6")]
    pub quarantined: Vec<u64>,
    #[prost(uint64, tag = "7")]
    pub free_bytes: u64,
    /// Clones it has finished since the last heartbeat (handle), successfully or not.
    #[prost(fixed64, repeated, tag = "8")]
    pub clones_done: Vec<u64>,
}

/// What the master wants a chunkserver to do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    #[prost(enumeration = "OrderKind", tag = "1")]
    pub kind: i32,
    #[prost(fixed64, tag = "2")]
    pub handle: u64,
    /// `Clone`: the version to copy (and the source's read token is for it). `Delete`: the highest
    /// version the order may remove — a copy found at a higher version is kept (the order is older than
    /// it); 0: whatever the version (a chunk of a deleted file, an orphan).
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// `Clone`: the replica to copy from.
    #[prost(string, tag = "4")]
    pub source: String,
    #[prost(bytes = "vec", tag = "5")]
    pub read_token: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum OrderKind {
    Unspecified = 0,
    /// Remove the replica (garbage, orphan past its grace period, stale, or corrupt).
    Delete = 1,
    /// Copy the chunk at `version` from `source` (re-replication).
    Clone = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeartbeatReply {
    #[prost(message, repeated, tag = "1")]
    pub orders: Vec<Order>,
    /// The master does not know this server's chunks (it restarted or took over): send a full report.
    #[prost(bool, tag = "2")]
    pub want_full_report: bool,
}
