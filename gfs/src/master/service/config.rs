//! [`MasterConfig`]: what one master process is told, checked once before anything starts.

use std::fmt;
use std::time::Duration;

use super::error::MasterError;
use crate::rpc::auth::MIN_SECRET;
use crate::tls::Tls;

/// The longest master id (it travels in the KV lease and in status answers).
const MAX_ID_LEN: usize = 64;

/// One master process. Two or three run per cluster: the one holding the KV lease is active, the
/// others follow the log as standbys.
#[derive(Clone)]
pub struct MasterConfig {
    /// Unique per master process, e.g. `m1` (`[A-Za-z0-9._-]`, at most 64 characters).
    pub id: String,
    /// `host:port` where clients reach this master's RPC; goes into the KV lease.
    pub advertise: String,
    pub nats_url: String,
    /// The master's NATS identity (`gfs-master`); `None` connects anonymously, which the
    /// platform's brokers refuse.
    pub nats_credential: Option<edd_events::Credential>,
    /// At least 16 bytes: signs capability tokens and proves peers (chunkservers, masters).
    pub cluster_key: Vec<u8>,
    /// At least 16 bytes: proves clients.
    pub client_secret: Vec<u8>,
    /// The active master's lease in the KV bucket; renewed every third of it.
    pub lease_ttl: Duration,
    /// A chunkserver silent for longer is dead; also the grace after a takeover before anything is
    /// deleted or cloned.
    pub chunkserver_timeout: Duration,
    /// Target replicas per chunk.
    pub replication: usize,
    /// A lease needs at least this many current replicas.
    pub min_replicas: usize,
    /// How long a primary's lease on a chunk lasts.
    pub chunk_lease: Duration,
    /// Lifetime of the read tokens handed to clients.
    pub token_ttl: Duration,
    /// A reported chunk the master does not know is deleted only after this.
    pub orphan_grace: Duration,
    /// Clones in flight, cluster-wide (at most 2 per destination server).
    pub max_clones_in_flight: usize,
    /// Events applied between two snapshots.
    pub snapshot_every: u64,
    /// How often re-replication and garbage collection are planned.
    pub repair_interval: Duration,
    /// Copies of the `GFS` stream, the KV bucket and the snapshot bucket (1 locally, 3 in a cluster).
    pub stream_replicas: usize,
    /// One `Prepare` call to a chunkserver (creating a replica or raising its version).
    pub prepare_timeout: Duration,
    /// A clone not reported done within this is forgotten (and planned again if still needed).
    pub clone_timeout: Duration,
    /// Serve RPC over TLS only, and speak TLS to the chunkservers' data planes; must have a
    /// certificate ([`Tls::serves`]). `None`: plaintext.
    pub tls: Option<Tls>,
}

impl Default for MasterConfig {
    /// Development defaults: secrets and addresses must be filled in.
    fn default() -> Self {
        MasterConfig {
            id: "m1".into(),
            advertise: "127.0.0.1:9000".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_credential: None,
            cluster_key: Vec::new(),
            client_secret: Vec::new(),
            lease_ttl: Duration::from_secs(10),
            chunkserver_timeout: Duration::from_secs(15),
            replication: 3,
            min_replicas: 2,
            chunk_lease: Duration::from_secs(60),
            token_ttl: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(3600),
            max_clones_in_flight: 8,
            snapshot_every: 50_000,
            repair_interval: Duration::from_secs(1),
            stream_replicas: 1,
            prepare_timeout: Duration::from_secs(10),
            clone_timeout: Duration::from_secs(120),
            tls: None,
        }
    }
}

impl fmt::Debug for MasterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The NATS URL may carry a password; the secrets never appear.
        f.debug_struct("MasterConfig")
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .field("lease_ttl", &self.lease_ttl)
            .field("chunkserver_timeout", &self.chunkserver_timeout)
            .field("replication", &self.replication)
            .field("min_replicas", &self.min_replicas)
            .field("chunk_lease", &self.chunk_lease)
            .field("token_ttl", &self.token_ttl)
            .field("orphan_grace", &self.orphan_grace)
            .field("max_clones_in_flight", &self.max_clones_in_flight)
            .field("snapshot_every", &self.snapshot_every)
            .field("repair_interval", &self.repair_interval)
            .field("stream_replicas", &self.stream_replicas)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl MasterConfig {
    /// Refuses a configuration the master could not run safely with.
    pub fn validate(&self) -> Result<(), MasterError> {
        let bad = |reason: String| Err(MasterError::Config(reason));
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_ID_LEN
            && self.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return bad(format!("id must be 1 to {MAX_ID_LEN} of [A-Za-z0-9._-]"));
        }
        if self.advertise.is_empty() || self.advertise.len() > 256 || !self.advertise.contains(':') {
            return bad("advertise must be a host:port of at most 256 bytes".into());
        }
        if self.cluster_key.len() < MIN_SECRET || self.client_secret.len() < MIN_SECRET {
            return bad(format!("the cluster key and the client secret need at least {MIN_SECRET} bytes each"));
        }
        if self.replication == 0 || self.min_replicas == 0 || self.min_replicas > self.replication {
            return bad(format!(
                "need 1 <= min_replicas ({}) <= replication ({})",
                self.min_replicas, self.replication
            ));
        }
        if self.tls.as_ref().is_some_and(|tls| !tls.serves()) {
            return bad("TLS needs a certificate and key to serve with".into());
        }
        if self.replication > crate::dataplane::MAX_REPLICAS {
            return bad(format!("replication is at most {}", crate::dataplane::MAX_REPLICAS));
        }
        let durations = [
            ("lease_ttl", self.lease_ttl),
            ("chunkserver_timeout", self.chunkserver_timeout),
            ("chunk_lease", self.chunk_lease),
            ("token_ttl", self.token_ttl),
            ("repair_interval", self.repair_interval),
            ("prepare_timeout", self.prepare_timeout),
            ("clone_timeout", self.clone_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return bad(format!("{name} must not be zero"));
        }
        // Tokens and leases are signed to the second; shorter values would expire on issue.
        if self.lease_ttl < Duration::from_millis(300) || self.chunk_lease < Duration::from_secs(2) {
            return bad("lease_ttl must be at least 300 ms and chunk_lease at least 2 s".into());
        }
        if self.token_ttl < Duration::from_secs(2) {
            return bad("token_ttl must be at least 2 s".into());
        }
        if self.max_clones_in_flight == 0 || self.snapshot_every == 0 || self.stream_replicas == 0 {
            return bad("max_clones_in_flight, snapshot_every and stream_replicas must be positive".into());
        }
        Ok(())
    }
}
