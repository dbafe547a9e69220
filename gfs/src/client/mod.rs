//! The GFS client library: what the storage, registry and logs services and `edd gfs` use to keep files
//! in GFS. Metadata goes to the master ([`MasterClient`], which fails over between masters); bytes go
//! straight to the chunkservers ([`DataClient`]), as in the paper.
//!
//! - **Writes** ([`GfsClient::write_at`], [`GfsWriter`]) are cut at chunk boundaries and into
//!   [`GfsConfig::write_piece`] pieces. Each piece: a lease on its chunk (cached until shortly before it
//!   expires), the data pushed along the chain `[primary, secondaries..]`, the write ordered by the
//!   primary, then `Commit` of the new length. Replicas that fail on the way are left out as long as a
//!   majority of the lease's replicas remains, and reported stale in the next `Commit` (the master then
//!   raises the chunk's version past them); an unreachable primary is reported stale and a new lease
//!   asked for. Everything is retried with backoff until [`GfsConfig::retry_deadline`], never longer.
//! - **Record appends** ([`GfsClient::append`]) let the primary pick the offset, on the file's last
//!   chunk, moving to a new chunk when the record does not fit. As in the paper they are *at least
//!   once*: an append that failed part-way is retried, and the record may then appear twice in the file
//!   (and a failed attempt may leave garbage or padding between records). Readers of appended files
//!   must tolerate duplicates and padding (records carrying their own length and id, for example).
//! - **Reads** ([`GfsClient::read_at`], [`GfsClient::read_to`], [`GfsReader`]) never go past the
//!   committed length; each chunk is read from one replica (the starting replica rotates across calls),
//!   failing over to the next on any error, reporting checksum failures to the master; when every
//!   replica failed the locations are asked for again once. Streaming reads never hold a whole chunk.
//!
//! Modules: `error`, `types` (what the master's answers become), `retry` (deadline and backoff), `addr`
//! (resolving replica addresses), `lease` and `locate` (the caches of leases and read locations),
//! `mutate` (one push and mutation with fail-over, and `Commit`), `write`, `append`, `read`, `reader`
//! and `writer` (the `AsyncRead`/`AsyncWrite` adapters).

mod addr;
mod append;
mod error;
mod lease;
mod locate;
mod mutate;
mod read;
mod reader;
mod retry;
mod types;
mod write;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::chunk::CHUNK_SIZE;
use crate::dataplane::{self, DataClient};
use crate::rpc::{self, messages, Credential, MasterClient, Role};
use crate::tls::Tls;

pub use error::GfsError;
pub use read::MAX_READ_AT;
pub use reader::{GfsReader, READ_PIECE};
pub use types::{FileInfo, NamespaceInfo};
pub use writer::GfsWriter;

/// The default [`GfsConfig::write_piece`]: big enough to keep the chain busy, small enough to buffer.
pub const DEFAULT_WRITE_PIECE: usize = 8 * 1024 * 1024;

/// The most addresses one client is configured with.
const MAX_MASTERS: usize = 16;

/// How a [`GfsClient`] reaches the cluster.
#[derive(Clone)]
pub struct GfsConfig {
    /// The masters' RPC addresses (`host:port`); the client finds the active one.
    pub masters: Vec<String>,
    /// The cluster's client secret (at least 16 bytes). Never logged.
    pub client_secret: Vec<u8>,
    pub master: rpc::ClientOptions,
    pub data: dataplane::ClientConfig,
    /// Bytes per push and write (at most a chunk): also what a [`GfsWriter`] buffers, twice over.
    pub write_piece: usize,
    /// How long one operation (one piece of a write, one record append, one commit) keeps retrying.
    pub retry_deadline: Duration,
    /// Speak only TLS to masters and chunkservers, verifying their certificates. `None`: plaintext.
    pub tls: Option<Tls>,
}

impl GfsConfig {
    /// Defaults for everything but where the masters are and the secret.
    pub fn new(masters: Vec<String>, client_secret: Vec<u8>) -> GfsConfig {
        GfsConfig {
            masters,
            client_secret,
            master: rpc::ClientOptions::default(),
            data: dataplane::ClientConfig::default(),
            write_piece: DEFAULT_WRITE_PIECE,
            retry_deadline: Duration::from_secs(60),
            tls: None,
        }
    }
}

impl fmt::Debug for GfsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GfsConfig")
            .field("masters", &self.masters)
            .field("client_secret", &"<redacted>")
            .field("master", &self.master)
            .field("data", &self.data)
            .field("write_piece", &self.write_piece)
            .field("retry_deadline", &self.retry_deadline)
            .finish()
    }
}

/// A client of one GFS cluster. Cheap to clone; clones share connections and caches.
#[derive(Clone)]
pub struct GfsClient {
    inner: Arc<Inner>,
}

struct Inner {
    master: MasterClient,
    data: DataClient,
    write_piece: usize,
    retry_deadline: Duration,
    leases: lease::LeaseCache,
    locations: locate::LocationCache,
    /// Picks the replica a chunk read starts with, so that reads spread over the replicas.
    rotation: AtomicUsize,
}

impl fmt::Debug for GfsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GfsClient").field("masters", &self.inner.master.addrs()).finish_non_exhaustive()
    }
}

impl GfsClient {
    /// Checks `config`; connects lazily (nothing is contacted before the first operation).
    pub fn new(config: GfsConfig) -> Result<GfsClient, GfsError> {
        if config.masters.is_empty() || config.masters.len() > MAX_MASTERS {
            return Err(GfsError::InvalidArgument(format!(
                "{} master addresses configured (1 to {MAX_MASTERS})",
                config.masters.len()
            )));
        }
        if config.write_piece == 0 || config.write_piece as u64 > CHUNK_SIZE {
            return Err(GfsError::InvalidArgument(format!(
                "write_piece of {} bytes (1 to {CHUNK_SIZE})",
                config.write_piece
            )));
        }
        if config.retry_deadline.is_zero() {
            return Err(GfsError::InvalidArgument("a zero retry_deadline".into()));
        }
        let credential = Credential::new(Role::Client, &config.client_secret)
            .map_err(|e| GfsError::InvalidArgument(e.to_string()))?;
        Ok(GfsClient {
            inner: Arc::new(Inner {
                master: MasterClient::new_with_tls(config.masters, credential, config.master, config.tls.clone()),
                data: DataClient::new(config.data).with_tls(config.tls),
                write_piece: config.write_piece,
                retry_deadline: config.retry_deadline,
                leases: lease::LeaseCache::default(),
                locations: locate::LocationCache::default(),
                rotation: AtomicUsize::new(0),
            }),
        })
    }

    pub async fn create_namespace(&self, namespace: &str) -> Result<(), GfsError> {
        self.inner.master.create_namespace(namespace_request(namespace)).await?;
        Ok(())
    }

    /// Deletes an empty namespace.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<(), GfsError> {
        self.inner.master.delete_namespace(namespace_request(namespace)).await?;
        Ok(())
    }

    pub async fn namespaces(&self) -> Result<Vec<NamespaceInfo>, GfsError> {
        let list = self.inner.master.list_namespaces(messages::Empty {}).await?;
        Ok(list.namespaces.into_iter().map(NamespaceInfo::from).collect())
    }

    /// Creates an empty file (`ALREADY_EXISTS` if the path is taken).
    pub async fn create(&self, namespace: &str, path: &str) -> Result<FileInfo, GfsError> {
        Ok(self.inner.master.create_file(path_request(namespace, path)).await?.into())
    }

    pub async fn stat(&self, namespace: &str, path: &str) -> Result<FileInfo, GfsError> {
        Ok(self.inner.master.stat(path_request(namespace, path)).await?.into())
    }

    /// One page of the files whose path starts with `prefix`, in path order, after `after`; the second
    /// value is where the next page starts (`None` after the last). `limit` 0 is the master's maximum.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<FileInfo>, Option<String>), GfsError> {
        let request = messages::ListRequest {
            namespace: namespace.to_owned(),
            prefix: prefix.to_owned(),
            after: after.unwrap_or_default().to_owned(),
            limit,
        };
        let page = self.inner.master.list(request).await?;
        let next = (!page.next.is_empty()).then_some(page.next);
        Ok((page.files.into_iter().map(FileInfo::from).collect(), next))
    }

    /// Moves a file (its id, hence open readers and writers, stay valid). With `replace`, a file
    /// already at `to` is replaced atomically; without, that is [`GfsError::AlreadyExists`].
    pub async fn rename(&self, namespace: &str, from: &str, to: &str, replace: bool) -> Result<FileInfo, GfsError> {
        let request = messages::RenameRequest {
            namespace: namespace.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            replace,
        };
        Ok(self.inner.master.rename(request).await?.into())
    }

    pub async fn delete(&self, namespace: &str, path: &str) -> Result<(), GfsError> {
        self.inner.master.delete_file(path_request(namespace, path)).await?;
        Ok(())
    }

    /// The cluster as the master sees it (chunkservers, replication, the active master).
    pub async fn status(&self) -> Result<messages::Status, GfsError> {
        Ok(self.inner.master.cluster_status(messages::Empty {}).await?)
    }

    /// A fresh budget for one operation.
    fn retry(&self, what: &'static str) -> retry::Retry {
        retry::Retry::new(what, self.inner.retry_deadline)
    }
}

fn namespace_request(namespace: &str) -> messages::NamespaceRequest {
    messages::NamespaceRequest { namespace: namespace.to_owned() }
}

fn path_request(namespace: &str, path: &str) -> messages::PathRequest {
    messages::PathRequest { namespace: namespace.to_owned(), path: path.to_owned() }
}
