//! [`Master`]: what every task of a master process shares — the metadata, the soft cluster state, the
//! role (active or standby) — and the one path by which metadata changes: [`Master::commit`].
//!
//! Locks, always taken in this order and never the cluster lock across an `.await`:
//! 1. `writer` (async): the right to change [`MasterState`] — held by a command from its check to its
//!    apply, by the standby's follower per event, and by a takeover's catch-up;
//! 2. `meta` (async read/write): the state itself; readers share it;
//! 3. `cluster` (sync): chunkservers, replicas, leases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::object_store::ObjectStore;
use edd_events::store::AppendError;
use tokio::sync::{watch, Notify, RwLock};
use tonic::metadata::MetadataValue;
use tonic::Status;

use super::cluster::{Cluster, Policy};
use super::config::MasterConfig;
use super::error::meta_status;
use super::journal::{FollowError, Journal};
use super::locks::KeyedLocks;
use crate::chunk::ChunkHandle;
use crate::dataplane::{ClientConfig, ClusterKey, DataClient};
use crate::master::{MasterState, MetaEvent};
use crate::rpc::{ACTIVE_HEADER, STANDBY_HEADER};

/// An append that NATS has not confirmed by then counts as failed (its outcome is then unknown).
const APPEND_DEADLINE: Duration = Duration::from_secs(15);

/// Whether this master serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Following the log; `active` is the active master's RPC address as its lease names it.
    Standby { active: Option<String> },
    /// Holding the lease and caught up with the log since `since`.
    Active { since: Instant },
}

/// The writer's own state, guarded by the writer lock.
#[derive(Debug, Default)]
pub(super) struct Writer {
    /// An append's outcome is unknown (it timed out, or NATS failed after sending): the log may hold
    /// an event this state does not, so catch up before the next command.
    pub dirty: bool,
}

pub(super) struct Master {
    pub config: MasterConfig,
    pub policy: Policy,
    pub key: ClusterKey,
    pub meta: Arc<RwLock<MasterState>>,
    pub writer: tokio::sync::Mutex<Writer>,
    pub journal: Journal,
    cluster: Mutex<Cluster>,
    pub role: watch::Sender<Role>,
    /// Bumped when an append was refused because another master wrote: the election steps down.
    pub conflicts: watch::Sender<u64>,
    /// Talks to chunkservers (prepare calls for leases).
    pub data: DataClient,
    /// Serializes chunk allocation (handles must be appended in increasing order) and guards the
    /// highest handle tried: a handle is never tried twice, even if its allocation failed.
    pub alloc: tokio::sync::Mutex<u64>,
    /// Serializes lease grants and version raises per chunk.
    pub chunk_locks: KeyedLocks<ChunkHandle>,
    /// Notified whenever a chunkserver's report was taken (waiters for locations after a takeover).
    pub reported: Notify,
    /// Events applied since the last snapshot was taken.
    pub since_snapshot: AtomicU64,
    pub snapshot_due: Notify,
    /// One snapshot at a time.
    pub snapshot_lock: tokio::sync::Mutex<()>,
    pub snapshots: ObjectStore,
}

impl Master {
    pub fn new(
        config: MasterConfig,
        key: ClusterKey,
        state: MasterState,
        journal: Journal,
        snapshots: ObjectStore,
    ) -> Master {
        let policy = Policy {
            chunkserver_timeout: config.chunkserver_timeout,
            orphan_grace: config.orphan_grace,
            replication: config.replication,
            max_clones_in_flight: config.max_clones_in_flight,
            clone_timeout: config.clone_timeout,
            min_replicas: config.min_replicas,
            chunk_lease: config.chunk_lease,
        };
        let data = DataClient::new(ClientConfig {
            connect_timeout: config.prepare_timeout.min(Duration::from_secs(3)),
            io_timeout: config.prepare_timeout,
            reply_timeout: config.prepare_timeout,
            ..ClientConfig::default()
        })
        .with_tls(config.tls.clone());
        Master {
            policy,
            key,
            meta: Arc::new(RwLock::new(state)),
            writer: tokio::sync::Mutex::new(Writer::default()),
            journal,
            cluster: Mutex::new(Cluster::default()),
            role: watch::Sender::new(Role::Standby { active: None }),
            conflicts: watch::Sender::new(0),
            data,
            alloc: tokio::sync::Mutex::new(0),
            chunk_locks: KeyedLocks::default(),
            since_snapshot: AtomicU64::new(0),
            snapshot_due: Notify::new(),
            reported: Notify::new(),
            snapshot_lock: tokio::sync::Mutex::new(()),
            snapshots,
            config,
        }
    }

    pub fn cluster(&self) -> MutexGuard<'_, Cluster> {
        // Every critical section leaves the cluster consistent before it can panic.
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- role ---------------------------------------------------------------------------------------

    pub fn is_active(&self) -> bool {
        matches!(*self.role.borrow(), Role::Active { .. })
    }

    /// The active master's address, as far as this one knows.
    pub fn active_addr(&self) -> Option<String> {
        match &*self.role.borrow() {
            Role::Active { .. } => Some(self.config.advertise.clone()),
            Role::Standby { active } => active.clone(),
        }
    }

    /// `UNAVAILABLE` with the active master's address unless this one is active.
    pub fn require_active(&self) -> Result<(), Status> {
        match &*self.role.borrow() {
            Role::Active { .. } => Ok(()),
            Role::Standby { active } => Err(standby_status(active.as_deref().filter(|a| *a != self.config.advertise))),
        }
    }

    /// A standby learns who is active (from the KV lease).
    pub fn note_active(&self, active: Option<String>) {
        self.role.send_if_modified(|role| match role {
            Role::Standby { active: known } if *known != active => {
                *known = active;
                true
            }
            _ => false,
        });
    }

    /// Catches up with the log and starts serving: called by the election once it holds the lease.
    /// Every chunkserver is unknown until it sends a full report.
    pub async fn take_over(&self) -> Result<(), FollowError> {
        let mut writer = self.writer.lock().await;
        let applied = self.journal.catch_up(&self.meta).await?;
        self.applied(applied);
        writer.dirty = false;
        let now = Instant::now();
        self.cluster().reset(Some(now));
        self.role.send_replace(Role::Active { since: now });
        let last_seq = self.meta.read().await.last_seq();
        tracing::info!(id = %self.config.id, last_seq, "GFS master is active");
        Ok(())
    }

    /// Stops serving at once (lease lost or given up): back to following the log.
    pub fn step_down(&self) {
        let was_active = self.is_active();
        self.role.send_replace(Role::Standby { active: None });
        self.cluster().reset(None);
        if was_active {
            tracing::warn!(id = %self.config.id, "GFS master stepped down to standby");
        }
    }

    /// Right after a takeover, chunkservers are still sending their first full reports: waits until
    /// `ready` holds of the cluster or the takeover grace is over (whichever comes first), so that a
    /// fresh master does not answer "no replica" for a chunk whose replicas simply have not reported
    /// yet. Returns at once on a settled master.
    pub async fn await_reports(&self, ready: impl Fn(&Cluster, Instant) -> bool) -> Result<(), Status> {
        loop {
            self.require_active()?;
            let notified = self.reported.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let settles_at = {
                let cluster = self.cluster();
                if ready(&cluster, now) {
                    return Ok(());
                }
                match cluster.settles_at(&self.policy) {
                    Some(at) if at > now => at,
                    _ => return Ok(()),
                }
            };
            let _ = tokio::time::timeout(settles_at - now, notified).await;
        }
    }

    /// Counts applied events towards the next snapshot.
    pub fn applied(&self, events: u64) {
        if events == 0 {
            return;
        }
        let since = self.since_snapshot.fetch_add(events, Ordering::Relaxed) + events;
        if since >= self.config.snapshot_every {
            self.snapshot_due.notify_one();
        }
    }

    // ---- commands -----------------------------------------------------------------------------------

    /// The one way metadata changes: under the writer lock, `build` looks at the state and returns the
    /// event to append (or `None`: nothing to do); the event is checked, appended fenced on the last
    /// applied sequence, and applied at the sequence it got. Returns that sequence.
    ///
    /// A conflict means another master wrote: this one steps down. The writer is dirty from before the
    /// append until the event is applied, so an append with an unknown outcome — failed, timed out, or
    /// this future dropped half-way (a cancelled call) — makes the next command catch up first.
    pub async fn commit<F>(&self, build: F) -> Result<Option<u64>, Status>
    where
        F: FnOnce(&MasterState) -> Result<Option<MetaEvent>, Status>,
    {
        let mut writer = self.writer.lock().await;
        self.require_active()?;
        if writer.dirty {
            let applied = self.journal.catch_up(&self.meta).await.map_err(|e| match e {
                FollowError::Unavailable(_) => Status::unavailable(format!("the GFS log is not reachable: {e}")),
                FollowError::Broken(_) => Status::internal(format!("the GFS log cannot be applied: {e}")),
            })?;
            self.applied(applied);
            writer.dirty = false;
        }
        let (event, last_seq) = {
            let meta = self.meta.read().await;
            let Some(event) = build(&meta)? else { return Ok(None) };
            meta.check(&event).map_err(meta_status)?;
            (event, meta.last_seq())
        };
        let mut last_seq = last_seq;
        let mut passed_over = 0;
        let (seq, at) = loop {
            writer.dirty = true;
            let appended = tokio::time::timeout(APPEND_DEADLINE, self.journal.append(last_seq, &event)).await;
            match appended {
                Ok(Ok(landed)) => break landed,
                Ok(Err(AppendError::Conflict { .. })) => {
                    // Nothing was appended. Something else wrote to the log: if it was only
                    // messages that are not events of ours (passed over by catching up), the state
                    // is as it was and the event is appended at the new end; another master's
                    // events mean this one stops writing.
                    let caught_up = self.journal.catch_up(&self.meta).await;
                    writer.dirty = false;
                    if matches!(caught_up, Ok(0)) && passed_over < 3 {
                        passed_over += 1;
                        last_seq = self.meta.read().await.last_seq();
                        continue;
                    }
                    if let Ok(applied) = caught_up {
                        self.applied(applied);
                    }
                    tracing::warn!(id = %self.config.id, "another master appended to the GFS log; stepping down");
                    self.conflicts.send_modify(|n| *n += 1);
                    // Answered as a standby would: the client asks another master.
                    return Err(standby_status(None));
                }
                Ok(Err(e)) => return Err(Status::unavailable(format!("the GFS log did not take the change: {e}"))),
                Err(_) => {
                    return Err(Status::unavailable(format!("the GFS log did not confirm within {APPEND_DEADLINE:?}")))
                }
            }
        };
        if let Err(e) = self.meta.write().await.apply_event(seq, at, &event) {
            // Checked just before under the same writer lock: only a bug gets here. Re-reading the log
            // before the next command (the writer stays dirty) either applies it or stops this master.
            return Err(Status::internal(format!("an appended event did not apply: {e}")));
        }
        writer.dirty = false;
        self.applied(1);
        Ok(Some(seq))
    }
}

/// `UNAVAILABLE` marked as a standby's (so a client asks another master), naming the active master
/// when known (the client's failover follows it).
pub(super) fn standby_status(active: Option<&str>) -> Status {
    let mut status = Status::unavailable("not the active GFS master");
    status.metadata_mut().insert(STANDBY_HEADER, MetadataValue::from_static("1"));
    if let Some(value) = active.and_then(|a| MetadataValue::try_from(a).ok()) {
        status.metadata_mut().insert(ACTIVE_HEADER, value);
    }
    status
}

/// Milliseconds since the Unix epoch.
pub(super) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}
