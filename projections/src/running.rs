//! The projections this process runs, for its metrics: every [`Runner`](crate::Runner) enters itself
//! here when it is created and leaves when it is dropped, so a service exports its projections'
//! lag and state (`edd_projection_*` in edd-kit's `/metrics`) without wiring each one.
//!
//! [`sample`] is meant for scrape time: it reads each checkpoint from PostgreSQL and counts the
//! matching events after it in NATS (the same numbers as `edd projections status`), so the lag keeps
//! growing while a projection is halted or stuck, on the leader and on standbys alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio::time::{timeout_at, Instant};

use edd_events::consume;

use crate::{Handle, Projection};

/// The values of a projection's `state` in its checkpoint.
pub const STATES: &[&str] = &["running", "halted"];

/// One projection as this process sees it at scrape time.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub stream: &'static str,
    /// Last stream sequence applied: the checkpoint, or what this process knows of it when
    /// PostgreSQL did not answer in time.
    pub applied_seq: u64,
    /// Matching events after `applied_seq`; `None` when NATS did not answer in time.
    pub lag: Option<u64>,
    /// The checkpoint's state (one of [`STATES`]); `None` when PostgreSQL did not answer in time.
    pub state: Option<String>,
    /// Whether a runner in this process holds the leader lock (applies the events).
    pub leader: bool,
}

struct Entry {
    id: u64,
    name: &'static str,
    stream: &'static str,
    filters: Vec<String>,
    pool: PgPool,
    js: jetstream::Context,
    handle: Handle,
}

static RUNNING: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn running() -> MutexGuard<'static, Vec<Entry>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A runner's place in the list; dropping it takes the runner out.
#[derive(Debug)]
pub(crate) struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        running().retain(|e| e.id != self.0);
    }
}

pub(crate) fn register(
    projection: &dyn Projection,
    pool: PgPool,
    js: jetstream::Context,
    handle: Handle,
) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    running().push(Entry {
        id,
        name: projection.name(),
        stream: projection.stream(),
        filters: projection.filters(),
        pool,
        js,
        handle,
    });
    Registration(id)
}

/// Every projection running in this process (once per name, however many runners it has here),
/// sorted by name. Each lookup gives up at `deadline` after the call, leaving its field `None`.
pub async fn sample(deadline: Duration) -> Vec<Sample> {
    let until = Instant::now() + deadline;
    // One sample per name: a process may run a leader and a standby of the same projection.
    let mut by_name: BTreeMap<&'static str, (Sample, Vec<String>, PgPool, jetstream::Context)> = BTreeMap::new();
    for e in running().iter() {
        let (position, leader) = (e.handle.position(), e.handle.is_leader());
        let (sample, ..) = by_name.entry(e.name).or_insert_with(|| {
            let sample =
                Sample { name: e.name, stream: e.stream, applied_seq: 0, lag: None, state: None, leader: false };
            (sample, e.filters.clone(), e.pool.clone(), e.js.clone())
        });
        sample.applied_seq = sample.applied_seq.max(position);
        sample.leader |= leader;
    }
    let lookups = by_name.into_values().map(|(mut sample, filters, pool, js)| async move {
        let checkpoint = timeout_at(
            until,
            sqlx::query_as::<_, (String, i64)>(
                "SELECT state, position FROM edd_projections.checkpoints WHERE name = $1",
            )
            .bind(sample.name)
            .fetch_optional(&pool),
        )
        .await;
        match checkpoint {
            Ok(Ok(Some((state, position)))) => {
                sample.state = Some(state);
                sample.applied_seq = sample.applied_seq.max(position as u64);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(projection = sample.name, error = %e, "cannot read the checkpoint"),
            Err(_) => tracing::debug!(projection = sample.name, "checkpoint read timed out"),
        }
        let lag = timeout_at(until, consume::pending_after(&js, sample.stream, &filters, sample.applied_seq)).await;
        match lag {
            Ok(Ok(lag)) => sample.lag = Some(lag),
            Ok(Err(e)) => tracing::debug!(projection = sample.name, error = %e, "cannot measure the lag"),
            Err(_) => tracing::debug!(projection = sample.name, "lag measurement timed out"),
        }
        sample
    });
    futures_util::future::join_all(lookups).await
}
