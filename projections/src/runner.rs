//! The projection runner: leader election, replay, batched exactly-once apply, halting.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use edd_events::{
    catalog::{logs::ErrorLogged, publishers::check},
    consume::{self, Stored},
    Envelope, EventStore, RawEvent, Token,
};
use futures_util::{future::BoxFuture, StreamExt};
use sqlx::{postgres::PgListener, Connection, PgConnection, PgPool};
use tokio::sync::watch;

use crate::{
    projection::ApplyError,
    running, schema_name, store,
    watermark::{WaitError, Watermark},
    Projection,
};

/// Tuning of a runner. The defaults suit a service; tests shorten the waits.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// Attempts at one failing event before the projection halts.
    pub retries: u32,
    /// Pause before the first retry; doubles after each.
    pub retry_backoff: Duration,
    /// How often a standby tries to become leader.
    pub standby_poll: Duration,
    /// How often a halted projection checks whether an operator resumed it.
    pub halted_poll: Duration,
    /// Who this runner is, recorded as the leader (host:pid by default).
    pub instance: String,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            standby_poll: Duration::from_millis(500),
            halted_poll: Duration::from_millis(500),
            instance: format!("pid-{}", std::process::id()),
        }
    }
}

/// Why a runner stopped for good (transient failures are retried inside).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("projection {name}: {source}")]
    Setup { name: &'static str, source: sqlx::Error },
}

/// Read side of a running projection: where it is, and waiting for a position.
#[derive(Clone)]
pub struct Handle {
    position: Watermark,
    leader: watch::Receiver<bool>,
}

impl Handle {
    /// Resolves once the projection has applied stream sequence `seq`, or fails after `timeout`.
    /// Works on every replica: standbys follow the leader's commits through `LISTEN`.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), WaitError> {
        self.position.wait_for(seq, timeout).await
    }

    /// The projection's position as a [`Watermark`] (what a command waits on).
    pub fn watermark(&self) -> Watermark {
        self.position.clone()
    }

    /// The last applied stream sequence this process knows of.
    pub fn position(&self) -> u64 {
        self.position.position()
    }

    /// A receiver that changes whenever the position moves; closed when the runner stops.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.position.watch()
    }

    /// Whether this process is the one applying events.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

/// Starts `projection` on its own task until `shutdown` and returns its handle: the one way a
/// service starts a runner. A runner that cannot start (its schema, its checkpoint) logs why; its
/// handle then never moves, so commands waiting on it fail instead of hanging.
pub fn spawn(
    pool: PgPool,
    js: jetstream::Context,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Handle {
    let (runner, handle) = Runner::new(pool, js, projection, config);
    let name = runner.name();
    tokio::spawn(async move {
        if let Err(e) = runner.run(shutdown).await {
            tracing::error!(projection = name, error = %e, "projection stopped: it could not be set up");
        }
    });
    handle
}

/// Runs one projection. Create with [`Runner::new`], then `run` it until shutdown.
pub struct Runner {
    pool: PgPool,
    js: jetstream::Context,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    position: watch::Sender<u64>,
    leader: watch::Sender<bool>,
    /// Keeps the projection in this process's metrics while the runner exists.
    _running: running::Registration,
}

/// The shutdown signal, boxed once so every step can poll it.
type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a leadership term ended.
enum Term {
    Shutdown,
}

/// What applying a batch came to.
enum BatchResult {
    Committed(u64),
    /// The checkpoint moved under us (an operator skip, a rebuild swap): replay from the new position.
    Moved,
}

impl Runner {
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> (Self, Handle) {
        let (position, position_rx) = watch::channel(0);
        let (leader, leader_rx) = watch::channel(false);
        let handle = Handle { position: Watermark::new(projection.name(), position_rx), leader: leader_rx };
        let _running = running::register(projection.as_ref(), pool.clone(), js.clone(), handle.clone());
        (Self { pool, js, projection, config, position, leader, _running }, handle)
    }

    fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Runs until `shutdown` resolves: follows commits as a standby, leads when it gets the lock.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        let name = self.name();
        let setup = async {
            let mut conn = self.pool.acquire().await?;
            store::ensure_bookkeeping(&mut conn).await?;
            store::ensure_row(&mut conn, self.projection.as_ref()).await?;
            let position: i64 = sqlx::query_scalar("SELECT position FROM edd_projections.checkpoints WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *conn)
                .await?;
            self.position.send_replace(position as u64);
            Ok::<_, sqlx::Error>(())
        };
        setup.await.map_err(|source| RunError::Setup { name, source })?;

        let follower = tokio::spawn(follow(self.pool.clone(), name, self.position.clone()));
        let mut shutdown: Shutdown = Box::pin(shutdown);
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.lead(&mut shutdown).await {
                Ok(Term::Shutdown) => break,
                Err(e) => {
                    self.leader.send_replace(false);
                    tracing::warn!(projection = name, error = %e, "projection runner lost its footing; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.leader.send_replace(false);
        follower.abort();
        Ok(())
    }

    /// One leadership term: wait for the lock, then apply until shutdown or an infrastructure error.
    // Boxed with an explicit `Send` so the compiler checks it here, with concrete lifetimes; otherwise
    // spawning `run` trips over sqlx's higher-ranked `Executor` impls.
    fn lead<'a>(&'a self, shutdown: &'a mut Shutdown) -> BoxFuture<'a, Result<Term, sqlx::Error>> {
        Box::pin(self.lead_inner(shutdown))
    }

    async fn lead_inner(&self, shutdown: &mut Shutdown) -> Result<Term, sqlx::Error> {
        let name = self.name();
        // A dedicated connection: the lock lives and dies with it, and every apply runs on it, so a
        // runner that lost its lock cannot write.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let key = store::lock_key(name);
        loop {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
            if got {
                break;
            }
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(Term::Shutdown),
                _ = tokio::time::sleep(self.config.standby_poll) => {}
            }
        }
        tracing::info!(projection = name, instance = %self.config.instance, "leading projection");
        self.leader.send_replace(true);

        let schema = schema_name(name);
        let done = {
            let mut tx = conn.begin().await?;
            let row = store::lock_row(&mut tx, name).await?.ok_or(sqlx::Error::RowNotFound)?;
            tx.commit().await?;
            row.migrations
        };
        let count = store::migrate(&mut conn, self.projection.as_ref(), &schema, done).await?;
        // A new leader gives a halted projection another chance: it may run fixed code.
        sqlx::query(
            "UPDATE edd_projections.checkpoints SET migrations = $2, leader = $3, state = 'running', updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(count as i32)
        .bind(&self.config.instance)
        .execute(&mut conn)
        .await?;

        let mut rate = 0.0;
        'replay: loop {
            let position: i64 = sqlx::query_scalar("SELECT position FROM edd_projections.checkpoints WHERE name = $1")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
            let mut position = position as u64;
            self.position.send_if_modified(|p| bump(p, position));
            let mut replay =
                match consume::replay(&self.js, self.projection.stream(), &self.projection.filters(), position + 1)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(projection = name, error = %e, "cannot read stream; retrying");
                        tokio::select! {
                            _ = shutdown.as_mut() => return Ok(Term::Shutdown),
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'replay,
                        }
                    }
                };
            loop {
                let batch = tokio::select! {
                    _ = shutdown.as_mut() => return Ok(Term::Shutdown),
                    batch = next_batch(&mut replay, self.config.batch_size) => batch,
                };
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(projection = name, error = %e, "stream read failed; replaying from checkpoint");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue 'replay;
                    }
                };
                let started = Instant::now();
                let (events, foreign) = sort_batch(&batch);
                for message in &foreign {
                    self.quarantine(message).await;
                }
                // The checkpoint moves past quarantined messages too, so none is met twice.
                let upto = batch.last().map_or(position, |m| m.seq);
                if !events.is_empty() || upto > position {
                    match self.apply_batch(&mut conn, position, &events, upto, rate).await {
                        Ok(BatchResult::Committed(p)) => {
                            let secs = started.elapsed().as_secs_f64().max(1e-6);
                            rate = 0.8 * rate + 0.2 * (events.len() as f64 / secs);
                            position = p;
                            self.position.send_if_modified(|cur| bump(cur, p));
                        }
                        Ok(BatchResult::Moved) => continue 'replay,
                        Err(e) if e.is_infrastructure() => return Err(into_sqlx(e)),
                        Err(_) => {
                            // Find the event that fails, committing the good ones before it.
                            match self.apply_singly(&mut conn, position, &events, upto, shutdown).await? {
                                Some(Term::Shutdown) => return Ok(Term::Shutdown),
                                None => continue 'replay,
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies `events` and advances the checkpoint from `expected` to `upto` (at least the last
    /// event's sequence) in one transaction.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        expected: u64,
        events: &'a [RawEvent],
        upto: u64,
        rate: f64,
    ) -> BoxFuture<'a, Result<BatchResult, ApplyError>> {
        Box::pin(self.apply_batch_inner(conn, expected, events, upto, rate))
    }

    async fn apply_batch_inner(
        &self,
        conn: &mut PgConnection,
        expected: u64,
        events: &[RawEvent],
        upto: u64,
        rate: f64,
    ) -> Result<BatchResult, ApplyError> {
        let upto = events.last().map_or(upto, |last| upto.max(last.stream_seq));
        if upto <= expected && events.is_empty() {
            return Ok(BatchResult::Committed(expected));
        }
        let mut tx = conn.begin().await?;
        let row = store::lock_row(&mut tx, self.name()).await?.ok_or(sqlx::Error::RowNotFound)?;
        if row.position != expected || row.state != "running" {
            return Ok(BatchResult::Moved);
        }
        store::set_search_path(&mut tx, &schema_name(self.name())).await?;
        let skipped = if events.is_empty() { 0 } else { self.projection.apply_batch(&mut tx, events).await? };
        let applied = events.len() as u64 - skipped;
        store::advance(&mut tx, self.name(), upto, applied, skipped, rate).await?;
        tx.commit().await?;
        Ok(BatchResult::Committed(upto))
    }

    /// Applies events one per transaction, retrying a failing one with backoff, then halting on it.
    /// `None` means "replay from the checkpoint" (after a halt was resumed).
    async fn apply_singly(
        &self,
        conn: &mut PgConnection,
        mut position: u64,
        events: &[RawEvent],
        upto: u64,
        shutdown: &mut Shutdown,
    ) -> Result<Option<Term>, sqlx::Error> {
        for event in events {
            let mut backoff = self.config.retry_backoff;
            let mut attempt = 1;
            loop {
                match self.apply_batch(conn, position, std::slice::from_ref(event), event.stream_seq, 0.0).await {
                    Ok(BatchResult::Committed(p)) => {
                        position = p;
                        self.position.send_if_modified(|cur| bump(cur, p));
                        break;
                    }
                    Ok(BatchResult::Moved) => return Ok(None),
                    Err(e) if e.is_infrastructure() => return Err(into_sqlx(e)),
                    Err(e) if attempt >= self.config.retries => {
                        self.halt(conn, event.stream_seq, &event.subject, Some(event.ty()), &e.to_string()).await?;
                        return self.wait_resumed(conn, shutdown).await;
                    }
                    Err(e) => {
                        tracing::warn!(projection = self.name(), seq = event.stream_seq, attempt, error = %e, "apply failed; retrying");
                        tokio::select! {
                            _ = shutdown.as_mut() => return Ok(Some(Term::Shutdown)),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff *= 2;
                        attempt += 1;
                    }
                }
            }
        }
        // Quarantined messages after the last event: move past them too.
        match self.apply_batch(conn, position, &[], upto, 0.0).await {
            Ok(BatchResult::Committed(p)) => {
                self.position.send_if_modified(|cur| bump(cur, p));
                Ok(None)
            }
            Ok(BatchResult::Moved) => Ok(None),
            Err(e) => Err(into_sqlx(e)),
        }
    }

    /// A message that is not an event of ours: recorded (a dead letter with its origin, the log,
    /// `log.error.projections`) and passed over. It never halts the projection: whoever can write
    /// to a subject must not be able to stop its readers.
    async fn quarantine(&self, message: &Quarantined) {
        let name = self.name();
        tracing::error!(
            projection = name,
            seq = message.seq,
            subject = message.subject,
            reason = message.reason,
            "quarantined a message that is not an event of ours"
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(consume::dead_letter_headers::SUBJECT, message.subject.as_str());
        headers.insert(consume::dead_letter_headers::SEQUENCE, message.seq.to_string().as_str());
        headers.insert(consume::dead_letter_headers::STREAM, self.projection.stream());
        let one_line: String = message.reason.replace(['\r', '\n'], " ").chars().take(512).collect();
        headers.insert(consume::dead_letter_headers::ERROR, one_line.as_str());
        // One dead letter per (projection, sequence) while the server remembers the id.
        headers
            .insert(async_nats::header::NATS_MESSAGE_ID, format!("q-{}-{}", schema_name(name), message.seq).as_str());
        let subject = format!("deadletter.{}", schema_name(name));
        let recorded = match self.js.publish_with_headers(subject, headers, message.payload.clone()).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = recorded {
            tracing::warn!(projection = name, seq = message.seq, error = %e, "could not dead-letter a quarantined message");
        }
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("projection".to_owned(), name.to_owned());
        attributes.insert("seq".to_owned(), message.seq.to_string());
        attributes.insert("subject".to_owned(), message.subject.clone());
        self.raise(
            format!("projection {name} quarantined the message at sequence {}: {}", message.seq, message.reason),
            attributes,
        )
        .await;
    }

    /// Raises `message` as `log.error.projections`; best effort with a short leash.
    async fn raise(&self, message: String, attributes: std::collections::BTreeMap<String, String>) {
        let alert = ErrorLogged {
            source: Token::new("projections").unwrap_or_else(|_| Token::random()),
            level: "ERROR".into(),
            message,
            timestamp: time::OffsetDateTime::now_utc(),
            attributes,
        };
        let events = EventStore::new(self.js.clone())
            .with_retry(edd_events::store::RetryPolicy { attempts: 2, ..Default::default() });
        if let Err(e) = events.publish(&Envelope::new("projections", alert)).await {
            tracing::warn!(error = %e, "could not raise log.error.projections");
        }
    }

    /// Records the failure, raises it as `log.error.projections`, and stops applying.
    async fn halt(
        &self,
        conn: &mut PgConnection,
        seq: u64,
        subject: &str,
        ty: Option<&str>,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        let name = self.name();
        tracing::error!(projection = name, seq, subject, error, "projection halted on an event it cannot apply");
        sqlx::query(
            "UPDATE edd_projections.checkpoints SET state = 'halted', failed_seq = $2, failed_error = $3, \
             failed_at = now(), updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(seq as i64)
        .bind(error)
        .execute(&mut *conn)
        .await?;
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("projection".to_owned(), name.to_owned());
        attributes.insert("seq".to_owned(), seq.to_string());
        attributes.insert("subject".to_owned(), subject.to_owned());
        if let Some(ty) = ty {
            attributes.insert("type".to_owned(), ty.to_owned());
        }
        // The halt is recorded in PostgreSQL either way.
        self.raise(format!("projection {name} halted at sequence {seq}: {error}"), attributes).await;
        Ok(())
    }

    /// Waits until an operator resumes or skips (`Ok(None)`), or shutdown (`Ok(Some(Shutdown))`).
    async fn wait_resumed(
        &self,
        conn: &mut PgConnection,
        shutdown: &mut Shutdown,
    ) -> Result<Option<Term>, sqlx::Error> {
        loop {
            let state: String = sqlx::query_scalar("SELECT state FROM edd_projections.checkpoints WHERE name = $1")
                .bind(self.name())
                .fetch_one(&mut *conn)
                .await?;
            if state == "running" {
                tracing::info!(projection = self.name(), "projection resumed");
                return Ok(None);
            }
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(Some(Term::Shutdown)),
                _ = tokio::time::sleep(self.config.halted_poll) => {}
            }
        }
    }
}

/// Moves a watched position forward only.
fn bump(current: &mut u64, new: u64) -> bool {
    if new > *current {
        *current = new;
        true
    } else {
        false
    }
}

fn into_sqlx(e: ApplyError) -> sqlx::Error {
    match e {
        ApplyError::Db(e) => e,
        ApplyError::Invalid(msg) => sqlx::Error::Protocol(msg),
    }
}

/// Waits for one message, then takes whatever else is already buffered, up to `max`.
pub(crate) async fn next_batch<S>(replay: &mut S, max: usize) -> Result<Vec<Stored>, consume::ConsumeError>
where
    S: futures_util::Stream<Item = Result<Stored, consume::ConsumeError>> + Unpin,
{
    let first = replay.next().await.ok_or_else(|| consume::ConsumeError::Consumer("replay ended".into()))??;
    let mut more = first.pending > 0;
    let mut batch = vec![first];
    while more && batch.len() < max {
        match tokio::time::timeout(Duration::from_millis(20), replay.next()).await {
            Ok(Some(Ok(msg))) => {
                more = msg.pending > 0;
                batch.push(msg);
            }
            Ok(Some(Err(e))) if batch.is_empty() => return Err(e),
            _ => break,
        }
    }
    Ok(batch)
}

/// A stored message that is not an event of ours (see [`edd_events::catalog::publishers::check`]).
pub(crate) struct Quarantined {
    pub seq: u64,
    pub subject: String,
    pub reason: String,
    pub payload: bytes::Bytes,
}

/// Splits a batch into the events to apply and the messages to quarantine. Deterministic: every
/// replay and every rebuild sorts the same messages the same way.
pub(crate) fn sort_batch(batch: &[Stored]) -> (Vec<RawEvent>, Vec<Quarantined>) {
    let mut events = Vec::with_capacity(batch.len());
    let mut foreign = Vec::new();
    for msg in batch {
        match check(msg.seq, &msg.subject, &msg.payload) {
            Ok(e) => events.push(e),
            Err(reason) => foreign.push(Quarantined {
                seq: msg.seq,
                subject: msg.subject.clone(),
                reason: reason.to_string(),
                payload: msg.payload.clone(),
            }),
        }
    }
    (events, foreign)
}

/// Follows other replicas' commits so `wait_for` works on standbys too.
async fn follow(pool: PgPool, name: &'static str, position: watch::Sender<u64>) {
    loop {
        let result = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(store::CHANNEL).await?;
            loop {
                let n = listener.recv().await?;
                if let Some((who, pos)) = n.payload().rsplit_once(':') {
                    if who == name {
                        if let Ok(p) = pos.parse::<u64>() {
                            position.send_if_modified(|cur| bump(cur, p));
                        }
                    }
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(projection = name, error = %e, "checkpoint listener reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
