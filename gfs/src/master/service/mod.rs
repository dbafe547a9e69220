//! The running GFS master: `edd.gfs.Master` ([`crate::rpc::MasterApi`]) over [`crate::master::MasterState`], with the
//! metadata event-sourced on the JetStream stream `GFS`.
//!
//! - **Start** ([`run`]): connect to NATS, make sure the stream `GFS`, the KV bucket `GFS_MASTER` and
//!   the object store `GFS_SNAPSHOTS` exist, restore the latest snapshot, replay the log after it,
//!   then serve at once — as a standby until the election makes this master active.
//! - **Election** (`election`): the active master holds the KV key `active`; a standby takes it over
//!   when it expires, catches up with the log and asks every chunkserver for a full report. A standby
//!   answers everything but `ClusterStatus` with `UNAVAILABLE`, `x-gfs-standby` and (when known) the
//!   active master's address in `x-gfs-active`.
//! - **Commands** (`node`): serialized through one writer; each appends its event fenced on the last
//!   applied sequence (another master's write makes this one step down) and applies it.
//! - **Chunks** (`leases`, `cluster`, `plan`): locations come from heartbeats only; leases raise a
//!   chunk's version on its replicas before logging it, and log it only once a majority of the
//!   replicas took it; stale, garbage, corrupt and (after a grace) orphan replicas are ordered
//!   deleted, each order bounded by the version it may remove; under-replicated chunks are fenced
//!   (version raised, so no lease can write to the version copied) and cloned (`repair`). Nothing is
//!   cloned, adopted or deleted as an orphan before the takeover grace has passed, so a fresh master
//!   acts on full knowledge only (and a chunk with enough replicas is not fenced before the previous
//!   master's leases may have ended); during that grace, `Locate` and `LeaseChunk` wait for the
//!   replicas they need to report.
//! - **Snapshots** (`snapshots`): every `snapshot_every` events and at a clean shutdown.
//!
//! Modules: `config`, `error`, `node` (shared state, the command path), `journal` (the stream),
//! `follow` (the standby's follower), `election`, `snapshots`, `cluster` (soft state), `plan` (pure
//! placement and repair rules), `leases`, `repair`, `api` (the RPC methods), `locks`.

mod api;
mod cluster;
mod config;
mod election;
mod error;
mod follow;
mod journal;
mod leases;
mod locks;
mod node;
mod plan;
mod repair;
mod snapshots;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use tokio::net::TcpListener;
use tokio::sync::{watch, RwLock};
use tokio::task::JoinSet;

pub use config::MasterConfig;
pub use error::MasterError;

use self::node::Master;
use crate::dataplane::ClusterKey;
use crate::rpc::{self, Authenticator, ServeOptions};

/// Setting up NATS resources at start, retried until then (NATS may come up after the master).
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// After shutdown: how long the tasks may take to finish (hand the lease back, write a snapshot).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Runs a master serving RPC on `listener` until `shutdown` completes, or until it cannot go on (the
/// log holds an event it cannot apply, NATS resources cannot be set up). Dropping the future stops
/// everything at once, like a crash: the lease then expires by itself.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MasterError> {
    config.validate()?;
    let auth = Arc::new(Authenticator::new(&config.cluster_key, &config.client_secret)?);
    let key = ClusterKey::new(&config.cluster_key)?;
    let nats = tokio::time::timeout(
        SETUP_DEADLINE,
        edd_events::connect(&config.nats_url, &format!("gfs-master-{}", config.id), config.nats_credential.as_ref()),
    )
    .await
    .map_err(|_| MasterError::Setup { what: "connection", detail: format!("not connected within {SETUP_DEADLINE:?}") })?
    .map_err(|e| MasterError::Setup { what: "connection", detail: e.to_string() })?;
    let js = jetstream::new(nats);
    let (kv, snapshots) = set_up(&js, &config).await?;

    let journal = journal::Journal::new(js.clone(), &config.id);
    let head = journal.head().await.map_err(|e| MasterError::Setup { what: "stream GFS", detail: e.to_string() })?;
    let restored = snapshots::load(&snapshots, head).await.unwrap_or_default();
    let snapshot_seq = restored.last_seq();
    let state = RwLock::new(restored);
    journal.catch_up(&state).await.map_err(|e| MasterError::Log(e.to_string()))?;
    let state = state.into_inner();
    tracing::info!(id = %config.id, last_seq = state.last_seq(), files = state.file_count(), "GFS master loaded its metadata");

    let replayed = state.last_seq().saturating_sub(snapshot_seq);
    let tls = config.tls.clone();
    let master = Arc::new(Master::new(config, key, state, journal, snapshots));
    // A long tail replayed at start counts towards the next snapshot, so the next start is quick.
    master.applied(replayed);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Owned here: dropping `run` drops the set, which aborts every task (renewals stop at once).
    let mut tasks: JoinSet<Result<(), MasterError>> = JoinSet::new();
    let api = Arc::new(api::Api(Arc::clone(&master)));
    let options = ServeOptions { shutdown_grace: Duration::from_secs(2), ..ServeOptions::default() };
    let mut serve_stop = stop_rx.clone();
    tasks.spawn(async move {
        let stopped = async move {
            let _ = serve_stop.wait_for(|stopped| *stopped).await;
        };
        rpc::serve_with(listener, api, auth, options, tls, stopped).await.map_err(MasterError::Serve)
    });
    tasks.spawn(election::run_election(Arc::clone(&master), kv, stop_rx.clone()));
    tasks.spawn(follow::run_follower(Arc::clone(&master), stop_rx.clone()));
    tasks.spawn(repair::run_repairs(Arc::clone(&master), stop_rx.clone()));
    tasks.spawn(snapshots::run_snapshots(Arc::clone(&master), stop_rx));

    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err(MasterError::Task("a master task ended on its own".into())),
            Ok(Err(error)) => Err(error),
            Err(joined) => Err(MasterError::Task(joined.to_string())),
        },
    };
    if let Err(error) = &outcome {
        tracing::error!(%error, "GFS master stopping");
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok(Err(error)) => tracing::warn!(%error, "GFS master task failed while stopping"),
                Err(joined) => tracing::warn!(error = %joined, "GFS master task failed while stopping"),
                Ok(Ok(())) => {}
            }
        }
    });
    if drained.await.is_err() {
        tracing::warn!("GFS master tasks did not stop in time; aborted");
        tasks.abort_all();
    }
    outcome
}

/// Makes sure the stream, the lease bucket and the snapshot bucket exist, retrying until
/// [`SETUP_DEADLINE`] (NATS may still be starting).
async fn set_up(
    js: &jetstream::Context,
    config: &MasterConfig,
) -> Result<(kv::Store, object_store::ObjectStore), MasterError> {
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match try_set_up(js, config).await {
            Ok(resources) => return Ok(resources),
            Err(error) if tokio::time::Instant::now() + backoff >= deadline => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "GFS master setup failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn try_set_up(
    js: &jetstream::Context,
    config: &MasterConfig,
) -> Result<(kv::Store, object_store::ObjectStore), MasterError> {
    const STEP: Duration = Duration::from_secs(10);
    let setup = |what: &'static str| move |detail: String| MasterError::Setup { what, detail };
    let timed_out = |what: &'static str| MasterError::Setup { what, detail: format!("no answer within {STEP:?}") };

    let spec = edd_events::streams::spec(journal::STREAM)
        .ok_or_else(|| MasterError::Setup { what: "stream GFS", detail: "no stream spec".into() })?;
    tokio::time::timeout(
        STEP,
        edd_events::streams::ensure_streams(js, std::slice::from_ref(spec), config.stream_replicas),
    )
    .await
    .map_err(|_| timed_out("stream GFS"))?
    .map_err(|e| setup("stream GFS")(e.to_string()))?;

    let bucket = election::bucket_config(config.lease_ttl, config.stream_replicas);
    let kv = tokio::time::timeout(STEP, js.create_or_update_key_value(bucket))
        .await
        .map_err(|_| timed_out("KV bucket GFS_MASTER"))?
        .map_err(|e| setup("KV bucket GFS_MASTER")(e.to_string()))?;

    let snapshots = match tokio::time::timeout(STEP, js.get_object_store(snapshots::BUCKET)).await {
        Ok(Ok(store)) => store,
        _ => {
            let bucket = object_store::Config {
                bucket: snapshots::BUCKET.to_owned(),
                description: Some("Edd Cloud GFS: master metadata snapshots".to_owned()),
                num_replicas: config.stream_replicas,
                ..Default::default()
            };
            tokio::time::timeout(STEP, js.create_object_store(bucket))
                .await
                .map_err(|_| timed_out("object store GFS_SNAPSHOTS"))?
                .map_err(|e| setup("object store GFS_SNAPSHOTS")(e.to_string()))?
        }
    };
    Ok((kv, snapshots))
}
