//! Who is active: the key `active` of the JetStream KV bucket `GFS_MASTER` (history 1, `max_age` =
//! the lease TTL) holds `{id, addr}` of the active master.
//!
//! A standby polls the key (every fifth of the TTL) and `create`s it when it is absent — which only
//! one contender can do; the key disappears by itself when its holder stops renewing for a TTL. The
//! holder catches up with the log before it serves, and renews with `update(key, value, revision)`
//! every third of the TTL. It steps down at once when a renewal finds the revision moved (someone
//! else holds the key), when renewals have failed for three quarters of the TTL (before anyone else
//! can have taken the key), or when an append was fenced out by another master. At a clean shutdown
//! the active master stops serving, writes a snapshot and deletes the key, so a standby takes over
//! without waiting for the TTL.
//!
//! The lease only decides who serves; correctness of the metadata rests on the fenced appends
//! ([`super::node::Master::commit`]), so even two masters that both believe they are active cannot
//! corrupt the log.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::error::MasterError;
use super::node::Master;

pub(super) const BUCKET: &str = "GFS_MASTER";
pub(super) const ACTIVE_KEY: &str = "active";

/// The value of the `active` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LeaseValue {
    pub id: String,
    pub addr: String,
}

/// The bucket's configuration: one value per key, gone a TTL after it was last written.
pub(super) fn bucket_config(lease_ttl: Duration, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: BUCKET.to_owned(),
        description: "Edd Cloud GFS: the active master's lease".to_owned(),
        history: 1,
        max_age: lease_ttl,
        max_value_size: 1024,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// How a term as the active master ended.
enum TermEnd {
    /// Lost or given up: back to standing by.
    Lost,
    /// Shut down (the lease was handed back).
    Stopped,
}

/// Timing derived from the lease TTL.
#[derive(Clone, Copy, Debug)]
struct Timing {
    poll: Duration,
    renew_every: Duration,
    retry: Duration,
    give_up: Duration,
    /// One KV operation.
    op: Duration,
}

impl Timing {
    fn new(ttl: Duration) -> Timing {
        Timing { poll: ttl / 5, renew_every: ttl / 3, retry: ttl / 10, give_up: ttl * 3 / 4, op: ttl / 3 }
    }
}

/// Campaigns for the lease and serves while holding it, until `stop`.
pub(super) async fn run_election(
    master: Arc<Master>,
    kv: kv::Store,
    mut stop: watch::Receiver<bool>,
) -> Result<(), MasterError> {
    let timing = Timing::new(master.config.lease_ttl);
    let value = LeaseValue { id: master.config.id.clone(), addr: master.config.advertise.clone() };
    let value: Bytes = serde_json::to_vec(&value).map_err(|e| MasterError::Task(e.to_string()))?.into();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match timeout(timing.op, kv.entry(ACTIVE_KEY)).await {
            Ok(Ok(Some(entry))) if entry.operation == Operation::Put => {
                let holder: Option<LeaseValue> = serde_json::from_slice(&entry.value).ok();
                master.note_active(holder.map(|h| h.addr));
            }
            Ok(Ok(_)) => {
                master.note_active(None);
                let sent = Instant::now();
                match timeout(timing.op, kv.create(ACTIVE_KEY, value.clone())).await {
                    Ok(Ok(revision)) => {
                        tracing::info!(id = %master.config.id, "GFS master won the lease; catching up");
                        match serve_term(&master, &kv, &value, revision, sent, timing, &mut stop).await {
                            TermEnd::Stopped => return Ok(()),
                            TermEnd::Lost => continue,
                        }
                    }
                    // Someone else was quicker.
                    Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {}
                    Ok(Err(error)) => tracing::warn!(%error, "GFS master lease could not be taken"),
                    Err(_) => tracing::warn!("GFS master lease: no answer from NATS within {:?}", timing.op),
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "GFS master lease unreadable"),
            Err(_) => tracing::warn!("GFS master lease: no answer from NATS within {:?}", timing.op),
        }
        tokio::select! {
            () = tokio::time::sleep(timing.poll) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }
}

/// What woke a term's loop.
enum Wake {
    TookOver(Result<(), super::journal::FollowError>),
    Renew,
    /// The last renewal is older than the give-up time.
    Expired,
    Superseded,
    Stop,
}

/// One term holding the lease at `revision` (taken or renewed at `renewed_at`).
async fn serve_term(
    master: &Master,
    kv: &kv::Store,
    value: &Bytes,
    mut revision: u64,
    mut renewed_at: Instant,
    timing: Timing,
    stop: &mut watch::Receiver<bool>,
) -> TermEnd {
    let mut conflicts = master.conflicts.subscribe();
    conflicts.borrow_and_update();
    let mut takeover = Some(Box::pin(master.take_over()));
    let mut next_renewal = renewed_at + timing.renew_every;
    loop {
        let wake = tokio::select! {
            result = async {
                match takeover.as_mut() {
                    Some(catching_up) => catching_up.await,
                    None => std::future::pending().await,
                }
            }, if takeover.is_some() => Wake::TookOver(result),
            () = tokio::time::sleep_until(next_renewal) => Wake::Renew,
            // Whatever a renewal in progress is doing: past this, the key may have expired and a standby
            // may hold it, so this master must not act as the active one a moment longer.
            () = tokio::time::sleep_until(renewed_at + timing.give_up) => Wake::Expired,
            _ = conflicts.changed() => Wake::Superseded,
            _ = stop.wait_for(|stopped| *stopped) => Wake::Stop,
        };
        match wake {
            Wake::TookOver(Ok(())) => takeover = None,
            Wake::TookOver(Err(error)) => {
                tracing::warn!(%error, "GFS master could not catch up with the log; giving the lease back");
                drop(takeover.take());
                release(kv, revision, timing).await;
                master.step_down();
                return TermEnd::Lost;
            }
            Wake::Renew => {
                let sent = Instant::now();
                // Never wait on a renewal past the moment the lease must be given up.
                let budget = timing.op.min((renewed_at + timing.give_up).saturating_duration_since(sent));
                match timeout(budget, kv.update(ACTIVE_KEY, value.clone(), revision)).await {
                    Ok(Ok(next)) => {
                        revision = next;
                        renewed_at = sent;
                        next_renewal = sent + timing.renew_every;
                    }
                    Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!("GFS master lease was taken by another master");
                        drop(takeover.take());
                        master.step_down();
                        return TermEnd::Lost;
                    }
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {budget:?}"),
                        };
                        if sent.saturating_duration_since(renewed_at) >= timing.give_up {
                            tracing::warn!(%error, "GFS master lease could not be renewed in time; stepping down");
                            drop(takeover.take());
                            master.step_down();
                            return TermEnd::Lost;
                        }
                        tracing::warn!(%error, "GFS master lease renewal failed; retrying");
                        next_renewal = Instant::now() + timing.retry;
                    }
                }
            }
            Wake::Expired => {
                tracing::warn!("GFS master lease could not be renewed in time; stepping down");
                drop(takeover.take());
                master.step_down();
                return TermEnd::Lost;
            }
            Wake::Superseded => {
                drop(takeover.take());
                release(kv, revision, timing).await;
                master.step_down();
                return TermEnd::Lost;
            }
            Wake::Stop => {
                let was_serving = takeover.is_none();
                drop(takeover.take());
                if was_serving {
                    retire(master).await;
                }
                release(kv, revision, timing).await;
                master.step_down();
                return TermEnd::Stopped;
            }
        }
    }
}

/// Clean shutdown of the active master: refuse new commands, let the one in progress finish, and
/// write a snapshot if anything happened since the last one.
async fn retire(master: &Master) {
    master.step_down();
    let writer = timeout(Duration::from_secs(10), master.writer.lock()).await;
    if master.since_snapshot.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        if let Err(error) = master.save_snapshot().await {
            tracing::warn!(%error, "GFS snapshot at shutdown failed");
        }
    }
    drop(writer);
}

/// Hands the lease back (best effort: it expires anyway).
async fn release(kv: &kv::Store, revision: u64, timing: Timing) {
    match timeout(timing.op, kv.delete_expect_revision(ACTIVE_KEY, Some(revision))).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "GFS master lease not released"),
        Err(_) => tracing::debug!("GFS master lease release timed out"),
    }
}
