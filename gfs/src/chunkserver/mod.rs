//! The chunkserver service: a [`ChunkStore`] served by the data plane ([`DataServer`]), kept known to
//! the master by heartbeats, and doing what the master orders (GFS paper §4.5, §5.2).
//!
//! [`run`] opens the store under `<data_dir>/chunks`, reads (or creates, once) the server's stable id in
//! `<data_dir>/server-id`, serves the data plane on the given listener and then, until shutdown:
//!
//! - **heartbeats** (`heartbeat`): every [`ChunkserverConfig::heartbeat_interval`] it tells the master
//!   what it holds — a full chunk report when it (re)registers, when the master asks, after a failed
//!   heartbeat and every [`ChunkserverConfig::full_report_every`] heartbeats; the changes since the last
//!   acknowledged heartbeat otherwise (`report`);
//! - **orders** from the heartbeat replies: deletes run one after another in the background (`delete`),
//!   clones copy a chunk from another replica, a few at a time, each bounded in time (`clone`);
//! - **scrubbing** (`scrub`): one chunk verified per tick, in handle order; a chunk whose checksums fail
//!   is quarantined (never served again, reported as quarantined), and the master re-replicates it and
//!   orders it deleted once another current replica exists;
//! - **free space** (`free_space`): what the data directory's filesystem has left, for the master's
//!   placement.
//!
//! Modules: `identity` (the server id file), `report` (full and delta chunk reports, and when each is
//! due), `heartbeat`, `delete`, `clone`, `scrub`, `free_space`.

mod clone;
mod delete;
mod free_space;
mod heartbeat;
mod identity;
mod report;
mod scrub;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chunk::{ChunkError, ChunkStore};
use crate::dataplane::{ClusterKey, DataServer, Deadlines, ServerConfig, TokenError, DEFAULT_MAX_CONNECTIONS};
use crate::rpc::{ClientOptions, Credential, CredentialError, MasterClient, Role};
use crate::tls::Tls;

/// The chunk store's directory inside the data directory.
pub const CHUNK_DIR: &str = "chunks";

/// The file holding the server's id inside the data directory.
pub const SERVER_ID_FILE: &str = "server-id";

/// Connecting to a master (within [`ChunkserverConfig::master_timeout`] too).
const MASTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// After shutdown: how long the background tasks (not the data plane, which has its own grace) may
/// take to stop before they are dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a chunkserver runs. `data_dir`, `advertise`, `masters` and `cluster_key` have no useful default.
#[derive(Clone)]
pub struct ChunkserverConfig {
    /// Chunks live in `<data_dir>/chunks`, the server id in `<data_dir>/server-id`.
    pub data_dir: PathBuf,
    /// `host:port` at which clients and peers reach this server's data plane (sent in heartbeats).
    pub advertise: String,
    /// The masters' RPC addresses (`host:port`), in any order: the active one is found by failover.
    pub masters: Vec<String>,
    /// At least 16 bytes: checks capability tokens, and is the credential to the master. Never logged.
    pub cluster_key: Vec<u8>,
    pub heartbeat_interval: Duration,
    /// How long one heartbeat may take, looking for the active master included: short, so that a dead
    /// master delays the heartbeats by seconds, not minutes (the next one tries again anyway).
    pub master_timeout: Duration,
    /// A full chunk report every this many heartbeats (deltas in between); at least 1.
    pub full_report_every: u32,
    /// Clone orders executed at once (the rest wait their turn); at least 1.
    pub max_clones: usize,
    /// One chunk verified per tick in the background; [`Duration::ZERO`] turns scrubbing off.
    pub scrub_interval: Duration,
    /// The data plane's push buffer ([`ServerConfig::buffer_cap`]).
    pub buffer_cap: u64,
    /// The data plane's deadlines ([`ServerConfig::deadlines`]).
    pub deadlines: Deadlines,
    /// The data plane's bound on open connections ([`ServerConfig::max_connections`]); at least 1.
    pub max_connections: usize,
    /// Serve the data plane over TLS only, and speak TLS to the masters and peer replicas; must have a
    /// certificate ([`Tls::serves`]). `None`: plaintext.
    pub tls: Option<Tls>,
}

impl Default for ChunkserverConfig {
    fn default() -> Self {
        ChunkserverConfig {
            data_dir: PathBuf::from("gfs-chunkserver"),
            advertise: "127.0.0.1:9080".to_owned(),
            masters: vec!["127.0.0.1:9000".to_owned()],
            cluster_key: Vec::new(),
            heartbeat_interval: Duration::from_secs(1),
            master_timeout: Duration::from_secs(5),
            full_report_every: 60,
            max_clones: 2,
            scrub_interval: Duration::from_secs(10),
            buffer_cap: 512 * 1024 * 1024,
            deadlines: Deadlines::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

impl fmt::Debug for ChunkserverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkserverConfig")
            .field("data_dir", &self.data_dir)
            .field("advertise", &self.advertise)
            .field("masters", &self.masters)
            .field("cluster_key", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("master_timeout", &self.master_timeout)
            .field("full_report_every", &self.full_report_every)
            .field("max_clones", &self.max_clones)
            .field("scrub_interval", &self.scrub_interval)
            .field("buffer_cap", &self.buffer_cap)
            .field("deadlines", &self.deadlines)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ChunkserverConfig {
    fn validate(&self) -> Result<(), ChunkserverError> {
        let invalid = |why: &str| Err(ChunkserverError::Config(why.to_owned()));
        if self.advertise.is_empty() || !self.advertise.contains(':') {
            return invalid("the advertised data plane address must be host:port");
        }
        if self.masters.is_empty() || self.masters.iter().any(|m| m.is_empty()) {
            return invalid("at least one master address is needed, and none may be empty");
        }
        if self.heartbeat_interval.is_zero() || self.master_timeout.is_zero() {
            return invalid("the heartbeat interval and the master timeout must not be zero");
        }
        if self.full_report_every == 0 {
            return invalid("full_report_every must be at least 1");
        }
        if self.max_clones == 0 {
            return invalid("max_clones must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if self.tls.as_ref().is_some_and(|tls| !tls.serves()) {
            return invalid("TLS needs a certificate and key to serve with");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkserverError {
    #[error("invalid chunkserver configuration: {0}")]
    Config(String),
    #[error("cluster key: {0}")]
    Key(#[from] TokenError),
    #[error("master credential: {0}")]
    Credential(#[from] CredentialError),
    #[error("data directory {}: {source}", .path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("chunk store: {0}")]
    Store(#[from] ChunkError),
    #[error("server id file {}: {source}", .path.display())]
    Identity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The id file exists but does not hold an id: refused rather than replaced, because a new id would
    /// make the master see a second server with the same chunks.
    #[error("server id file {} does not hold a server id (16 lowercase hex digits)", .path.display())]
    BadIdentity { path: PathBuf },
    #[error("data plane: {0}")]
    DataPlane(io::Error),
    #[error("chunkserver task failed: {0}")]
    Task(String),
}

/// Runs a chunkserver with its data plane on `listener` until `shutdown` completes; then stops the
/// heartbeats and background work and lets the data plane drain (within
/// [`Deadlines::shutdown_grace`]).
pub async fn run(
    config: ChunkserverConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ChunkserverError> {
    config.validate()?;
    let key = Arc::new(ClusterKey::new(&config.cluster_key)?);
    let credential = Credential::new(Role::Peer, &config.cluster_key)?;
    let master_options = ClientOptions {
        connect_timeout: MASTER_CONNECT_TIMEOUT.min(config.master_timeout),
        call_timeout: config.master_timeout,
        failover_timeout: config.master_timeout,
    };
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .map_err(|source| ChunkserverError::DataDir { path: config.data_dir.clone(), source })?;

    // The store's directory lock is taken first: it also keeps a second chunkserver from racing this
    // one to create the server id.
    let store = ChunkStore::open(config.data_dir.join(CHUNK_DIR)).await?;
    log_open_report(&store);
    let server_id = identity::load_or_create(&config.data_dir).await?;
    tracing::info!(
        %server_id,
        advertise = %config.advertise,
        masters = ?config.masters,
        data_dir = %config.data_dir.display(),
        chunks = store.report().len(),
        "chunkserver starting"
    );

    let (stop_tx, stop) = watch::channel(false);
    let mut server_config = ServerConfig::new(key);
    server_config.buffer_cap = config.buffer_cap;
    server_config.deadlines = config.deadlines;
    server_config.max_connections = config.max_connections;
    server_config.tls = config.tls.clone();
    let mut data_plane =
        tokio::spawn(DataServer::new(store.clone(), server_config).serve(listener, stopped(stop.clone())));

    let free_space = free_space::FreeSpace::start(config.data_dir.clone(), stop.clone()).await;
    let cloner = clone::Cloner::new(store.clone(), config.max_clones, config.tls.clone());
    let (deleter, delete_worker) = delete::Deleter::start(store.clone(), stop.clone());
    let heartbeats = tokio::spawn(
        heartbeat::Heartbeater {
            master: MasterClient::new_with_tls(config.masters.clone(), credential, master_options, config.tls.clone()),
            store: store.clone(),
            server_id,
            data_addr: config.advertise.clone(),
            interval: config.heartbeat_interval,
            full_report_every: config.full_report_every,
            cloner: cloner.clone(),
            deleter,
            free_space,
        }
        .run(stop.clone()),
    );
    let scrubber = (!config.scrub_interval.is_zero())
        .then(|| tokio::spawn(scrub::run(store.clone(), config.scrub_interval, stop.clone())));

    // The data plane never ends on its own; if it does (a panic), the server is of no use.
    let early_end = tokio::select! {
        () = shutdown => None,
        ended = &mut data_plane => Some(ended),
    };
    tracing::info!("chunkserver shutting down");
    let _ = stop_tx.send(true);
    // Everything holding the store is waited for, so that its directory lock is free on return.
    cloner.abort_all(STOP_GRACE).await;
    join_within(heartbeats, "heartbeats").await;
    join_within(delete_worker, "delete worker").await;
    if let Some(scrubber) = scrubber {
        join_within(scrubber, "scrubber").await;
    }
    let served = match early_end {
        Some(ended) => ended,
        None => data_plane.await,
    };
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ChunkserverError::DataPlane(error)),
        Err(error) => Err(ChunkserverError::Task(format!("data plane: {error}"))),
    }
}

/// Completes once `stop` says so (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Waits for a background task that was told to stop; one that does not within [`STOP_GRACE`] is dropped.
async fn join_within(task: JoinHandle<()>, name: &'static str) {
    let abort = task.abort_handle();
    match tokio::time::timeout(STOP_GRACE, task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) if error.is_panic() => tracing::error!(task = name, %error, "chunkserver task panicked"),
        Ok(Err(_)) => {}
        Err(_) => {
            tracing::warn!(task = name, "chunkserver task did not stop in time; dropped");
            abort.abort();
        }
    }
}

/// How many quarantined chunks are named one by one in the start-up log.
const LOGGED_QUARANTINED: usize = 32;

fn log_open_report(store: &ChunkStore) {
    let report = store.open_report();
    for q in report.quarantined.iter().take(LOGGED_QUARANTINED) {
        tracing::warn!(handle = %q.handle, reason = %q.reason, "chunk quarantined at start; reported to the master");
    }
    if report.quarantined.len() > LOGGED_QUARANTINED {
        tracing::warn!(more = report.quarantined.len() - LOGGED_QUARANTINED, "more chunks quarantined at start");
    }
    if !report.ignored.is_empty() {
        tracing::info!(
            files = report.ignored.len(),
            "files in the chunk directory that belong to no chunk were left alone"
        );
    }
}
