//! Reading events back: ordered replay for projections, durable pull consumers for reactions.
//!
//! - [`replay`] streams every message under some filters from a sequence on, in order, with no state on
//!   the server (an ordered consumer that recreates itself after a gap or a reconnect).
//! - [`Reactor`] runs a durable consumer with explicit acks for work that must happen once per event
//!   (send a Discord message, delete a user's containers): failures are retried with backoff, and after
//!   `max_deliver` attempts the event is written to the `DEADLETTER` stream and terminated, so one bad
//!   event never blocks the ones behind it. Unknown types are skipped and counted, never a crash.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{
    jetstream::{
        self,
        consumer::{self, pull, AckPolicy, DeliverPolicy},
        AckKind,
    },
    HeaderMap,
};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::envelope::RawEvent;

/// A message as stored: its position, subject and raw bytes (not yet parsed, so a consumer decides
/// what a malformed payload means for it).
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub payload: Bytes,
    /// How many matching messages remain after this one when it was delivered.
    pub pending: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("stream {stream} is not available: {detail}")]
    Stream { stream: String, detail: String },
    #[error("consumer failed: {0}")]
    Consumer(String),
}

/// An ordered, server-stateless read of `stream` under `filters`, starting at `from_seq` (1 = start).
pub async fn replay(
    js: &jetstream::Context,
    stream: &str,
    filters: &[String],
    from_seq: u64,
) -> Result<impl futures_util::Stream<Item = Result<Stored, ConsumeError>> + Unpin + Send + 'static, ConsumeError> {
    let stream_handle = js
        .get_stream(stream)
        .await
        .map_err(|e| ConsumeError::Stream { stream: stream.to_owned(), detail: e.to_string() })?;
    let config = pull::OrderedConfig {
        filter_subjects: filters.to_vec(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from_seq.max(1) },
        ..Default::default()
    };
    let consumer = stream_handle.create_consumer(config).await.map_err(|e| ConsumeError::Consumer(e.to_string()))?;
    let messages = consumer.messages().await.map_err(|e| ConsumeError::Consumer(e.to_string()))?;
    Ok(messages.map(|item| {
        let msg = item.map_err(|e| ConsumeError::Consumer(e.to_string()))?;
        let info = msg.info().map_err(|e| ConsumeError::Consumer(e.to_string()))?;
        Ok(Stored {
            seq: info.stream_sequence,
            pending: info.pending,
            subject: msg.subject.to_string(),
            payload: msg.payload.clone(),
        })
    }))
}

/// The last sequence stored in `stream` (0 when empty).
pub async fn stream_head(js: &jetstream::Context, stream: &str) -> Result<u64, ConsumeError> {
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|e| ConsumeError::Stream { stream: stream.to_owned(), detail: e.to_string() })?;
    let info =
        handle.info().await.map_err(|e| ConsumeError::Stream { stream: stream.to_owned(), detail: e.to_string() })?;
    Ok(info.state.last_sequence)
}

/// How many messages under `filters` come after `after_seq`: the lag of a reader at that position.
pub async fn pending_after(
    js: &jetstream::Context,
    stream: &str,
    filters: &[String],
    after_seq: u64,
) -> Result<u64, ConsumeError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| ConsumeError::Stream { stream: stream.to_owned(), detail: e.to_string() })?;
    let config = pull::Config {
        filter_subjects: filters.to_vec(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: after_seq + 1 },
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(5),
        ..Default::default()
    };
    let mut consumer: consumer::Consumer<pull::Config> =
        handle.create_consumer(config).await.map_err(|e| ConsumeError::Consumer(e.to_string()))?;
    let pending = consumer.info().await.map_err(|e| ConsumeError::Consumer(e.to_string()))?.num_pending;
    let name = consumer.cached_info().name.clone();
    // Best effort: the inactivity threshold removes it anyway.
    let _ = handle.delete_consumer(&name).await;
    Ok(pending)
}

/// What a reaction did with one event.
#[derive(Debug)]
pub enum Outcome {
    /// Done; acknowledge.
    Handled,
    /// Not an event this reactor knows (another type or a newer version); acknowledge and count.
    Skipped,
}

/// Settings of a durable reaction.
#[derive(Clone, Debug)]
pub struct ReactorConfig {
    pub stream: String,
    /// Durable consumer name; also names its dead-letter subject `deadletter.{durable}`.
    pub durable: String,
    pub filters: Vec<String>,
    /// Attempts before an event goes to the dead letter.
    pub max_deliver: i64,
    /// Delay before the n-th retry (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// How long a handler may work on one event before it is redelivered.
    pub ack_wait: Duration,
}

impl ReactorConfig {
    pub fn new(stream: &str, durable: &str, filters: &[&str]) -> Self {
        Self {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
            max_deliver: 5,
            backoff: vec![Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)],
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// Counters a reactor keeps; shared so `/metrics` and tests can read them.
#[derive(Debug, Default)]
pub struct ReactorStats {
    pub handled: AtomicU64,
    pub skipped: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// A durable consumer that hands each event to a handler, at least once, with bounded retries.
pub struct Reactor {
    js: jetstream::Context,
    config: ReactorConfig,
    stats: Arc<ReactorStats>,
}

/// Headers on a dead-letter record, so an operator can see what failed and where it came from.
pub mod dead_letter_headers {
    pub const SUBJECT: &str = "Edd-Original-Subject";
    pub const SEQUENCE: &str = "Edd-Original-Sequence";
    pub const STREAM: &str = "Edd-Original-Stream";
    pub const ERROR: &str = "Edd-Error";
    pub const DELIVERIES: &str = "Edd-Deliveries";
}

impl Reactor {
    pub fn new(js: jetstream::Context, config: ReactorConfig) -> Self {
        Self { js, config, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<ReactorStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves. The handler gets every event under the filters; an `Err` means
    /// "try again later" (a message for the log, never shown to users).
    pub async fn run<H, F>(self, handler: H, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError>
    where
        H: Fn(RawEvent) -> F,
        F: Future<Output = Result<Outcome, String>>,
    {
        let stream = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| ConsumeError::Stream { stream: self.config.stream.clone(), detail: e.to_string() })?;
        let consumer: consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.config.durable,
                pull::Config {
                    durable_name: Some(self.config.durable.clone()),
                    filter_subjects: self.config.filters.clone(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_deliver: self.config.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ConsumeError::Consumer(e.to_string()))?;
        let mut messages = consumer.messages().await.map_err(|e| ConsumeError::Consumer(e.to_string()))?;
        tokio::pin!(shutdown);
        loop {
            let msg = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                next = messages.next() => match next {
                    None => return Err(ConsumeError::Consumer("message stream ended".into())),
                    Some(Err(e)) => {
                        tracing::warn!(durable = %self.config.durable, error = %e, "consumer hiccup");
                        continue;
                    }
                    Some(Ok(msg)) => msg,
                },
            };
            self.handle_one(&handler, msg).await;
        }
    }

    async fn handle_one<H, F>(&self, handler: &H, msg: jetstream::Message)
    where
        H: Fn(RawEvent) -> F,
        F: Future<Output = Result<Outcome, String>>,
    {
        let (seq, delivered) = match msg.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::warn!(error = %e, "message without JetStream metadata; ignoring");
                return;
            }
        };
        let result = match RawEvent::parse(seq, msg.subject.as_str(), &msg.payload) {
            Ok(event) => handler(event).await,
            Err(e) => Err(e.to_string()),
        };
        let ack = match result {
            Ok(Outcome::Handled) => {
                self.stats.handled.fetch_add(1, Ordering::Relaxed);
                msg.double_ack().await
            }
            Ok(Outcome::Skipped) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                msg.double_ack().await
            }
            Err(error) if delivered >= self.config.max_deliver => {
                tracing::error!(durable = %self.config.durable, seq, %error, "giving up; dead-lettering event");
                if let Err(e) = self.dead_letter(&msg, seq, delivered, &error).await {
                    // Not terminated: the server will redeliver it once more rather than lose it.
                    tracing::error!(error = %e, "could not record dead letter");
                    return;
                }
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                msg.ack_with(AckKind::Term).await
            }
            Err(error) => {
                let idx = usize::try_from(delivered.max(1) - 1).unwrap_or(usize::MAX);
                let delay = self.config.backoff.get(idx).or(self.config.backoff.last()).copied();
                tracing::warn!(durable = %self.config.durable, seq, delivered, %error, "reaction failed; will retry");
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                msg.ack_with(AckKind::Nak(delay)).await
            }
        };
        if let Err(e) = ack {
            tracing::warn!(error = %e, seq, "ack not confirmed; the event may be delivered again");
        }
    }

    async fn dead_letter(&self, msg: &jetstream::Message, seq: u64, delivered: i64, error: &str) -> Result<(), String> {
        use dead_letter_headers as h;
        let mut headers = HeaderMap::new();
        headers.insert(h::SUBJECT, msg.subject.as_str());
        headers.insert(h::SEQUENCE, seq.to_string().as_str());
        headers.insert(h::STREAM, self.config.stream.as_str());
        headers.insert(h::DELIVERIES, delivered.to_string().as_str());
        // Header values are one line; keep the error readable and bounded.
        let one_line: String = error.replace(['\r', '\n'], " ").chars().take(512).collect();
        headers.insert(h::ERROR, one_line.as_str());
        // One dead letter per (consumer, sequence), however often this runs.
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("dl-{}-{}", self.config.durable, seq).as_str());
        let ack = self
            .js
            .publish_with_headers(format!("deadletter.{}", self.config.durable), headers, msg.payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
