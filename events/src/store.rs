//! Appending events with optimistic concurrency.
//!
//! An aggregate's events share a subject prefix (`auth.user.{id}.>`). [`EventStore::append`] sends the
//! sequence the caller last saw for that prefix in `Nats-Expected-Last-Subject-Sequence` (with the
//! prefix in `…-Subject`, NATS ≥ 2.11); the server refuses the write if anything was appended since,
//! and the caller gets [`AppendError::Conflict`], catches up and retries its command.
//!
//! Every message carries its event id as `Nats-Msg-Id`, so a publish retried after a lost ack or a NATS
//! restart is stored once: the server answers the retry with the original sequence.

use std::time::Duration;

use async_nats::{
    jetstream::{self, context::PublishErrorKind},
    HeaderMap,
};
use bytes::Bytes;
use uuid::Uuid;

use crate::{
    catalog::{auth, Event},
    envelope::Envelope,
    streams::MAX_EVENT_BYTES,
    subject::{Aggregate, Subject, Token},
};

/// What the caller believes the aggregate's last stored sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The aggregate has no events yet (creation, uniqueness claims).
    NoStream,
    /// The last event under the aggregate's prefix has this stream sequence.
    Exactly(u64),
    /// No check: telemetry, work items, or a command that is correct in any order.
    Any,
}

/// Where the appended events landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("aggregate {aggregate} changed concurrently (expected {expected:?}); reload and retry")]
    Conflict { aggregate: String, expected: Expected },
    #[error("{subject} is not part of aggregate {aggregate}")]
    NotInAggregate { subject: String, aggregate: String },
    #[error("event of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("an append needs at least one event")]
    Empty,
    #[error("could not encode event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("no stream stores {0}; run `edd up` or ensure_streams first")]
    NoStream(String),
    #[error("NATS did not confirm the append after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
}

/// The current holder of a uniqueness claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimHolder {
    /// The claim's last stream sequence while this holding stands: its `ClaimMade` event's, or
    /// that of messages not of ours (garbage, a forged origin) stored after it, which change
    /// nothing. What releasing exactly this holding expects.
    pub seq: u64,
    pub owner: String,
    pub made_at: time::OffsetDateTime,
}

/// Most messages read on one claim's subjects when the last one is not an event of ours.
const MAX_CLAIM_MESSAGES: usize = 1000;

/// What a claim's subjects hold: the last sequence (what an append must expect) and the last
/// event of ours (the claim's state).
struct ClaimLog {
    last_seq: u64,
    last_ours: Option<crate::envelope::RawEvent>,
}

/// An encoded event ready to publish: subject, id and bytes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: Subject,
    pub id: Uuid,
    pub bytes: Bytes,
}

impl Outgoing {
    pub fn encode<E: Event>(envelope: &Envelope<E>) -> Result<Self, AppendError> {
        let bytes = serde_json::to_vec(envelope)?;
        if bytes.len() > MAX_EVENT_BYTES as usize {
            return Err(AppendError::TooLarge { size: bytes.len(), max: MAX_EVENT_BYTES as usize });
        }
        Ok(Self { subject: envelope.data.subject(), id: envelope.id, bytes: bytes.into() })
    }
}

/// How often and how patiently a publish is retried when NATS does not answer.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 8, first_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(2) }
    }
}

/// The write side of the event log.
#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    retry: RetryPolicy,
}

impl EventStore {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js, retry: RetryPolicy::default() }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Appends `events` to `aggregate` if its last sequence is still `expected`.
    ///
    /// Several events go in one after another, each conditional on the one before, so no other writer
    /// can interleave. (A crash between them leaves a prefix of the command stored; commands that must
    /// be all-or-nothing emit one event.)
    pub async fn append(
        &self,
        aggregate: &Aggregate,
        expected: Expected,
        events: &[Outgoing],
    ) -> Result<Appended, AppendError> {
        let Some(first) = events.first() else { return Err(AppendError::Empty) };
        if let Some(stray) = events.iter().find(|e| !aggregate.contains(&e.subject)) {
            return Err(AppendError::NotInAggregate {
                subject: stray.subject.to_string(),
                aggregate: aggregate.filter().to_owned(),
            });
        }
        let first_seq = self.publish_checked(aggregate, expected, first).await?;
        let mut last_seq = first_seq;
        for event in &events[1..] {
            last_seq = self.publish_checked(aggregate, Expected::Exactly(last_seq), event).await?;
        }
        Ok(Appended { first_seq, last_seq })
    }

    /// Appends one event to its own aggregate.
    pub async fn append_one<E: Event>(&self, envelope: &Envelope<E>, expected: Expected) -> Result<u64, AppendError> {
        let out = Outgoing::encode(envelope)?;
        match envelope.data.aggregate() {
            Some(aggregate) => Ok(self.append(&aggregate, expected, &[out]).await?.last_seq),
            None => self.publish_with_retry(&out, HeaderMap::new()).await,
        }
    }

    /// Publishes an event that belongs to no aggregate (notifications, telemetry, logs).
    pub async fn publish<E: Event>(&self, envelope: &Envelope<E>) -> Result<u64, AppendError> {
        let out = Outgoing::encode(envelope)?;
        self.publish_with_retry(&out, HeaderMap::new()).await
    }

    /// Claims `value` of `kind` (e.g. a username) for `owner`. Exactly one of any number of racing
    /// claims wins; the others get [`AppendError::Conflict`]. A released value can be claimed again.
    pub async fn claim(&self, source: &str, kind: &Token, value: &str, owner: &str) -> Result<u64, AppendError> {
        let made = auth::ClaimMade { kind: kind.clone(), value: value.to_owned(), owner: owner.to_owned() };
        let aggregate = made.aggregate().ok_or(AppendError::Empty)?;
        let envelope = Envelope::new(source, made);
        let out = Outgoing::encode(&envelope)?;
        match self.append(&aggregate, Expected::NoStream, std::slice::from_ref(&out)).await {
            Err(AppendError::Conflict { .. }) => {
                // Taken, unless the last word of ours on it is a release, or there is none (only
                // messages that are not events of ours): then claim after whatever is last.
                let claim = self.claim_log(aggregate.filter()).await?;
                match claim.last_ours {
                    Some(raw) if raw.ty() == auth::ClaimMade::TYPE => Err(AppendError::Conflict {
                        aggregate: aggregate.filter().to_owned(),
                        expected: Expected::NoStream,
                    }),
                    _ => Ok(self.append(&aggregate, Expected::Exactly(claim.last_seq), &[out]).await?.last_seq),
                }
            }
            other => other.map(|a| a.last_seq),
        }
    }

    /// Releases a claim held by `owner`.
    pub async fn release(&self, source: &str, kind: &Token, value: &str, owner: &str) -> Result<u64, AppendError> {
        let released = auth::ClaimReleased { kind: kind.clone(), value: value.to_owned(), owner: owner.to_owned() };
        self.append_one(&Envelope::new(source, released), Expected::Any).await
    }

    /// Who holds the claim on `value` of `kind` now, if anyone.
    pub async fn claim_holder(&self, kind: &Token, value: &str) -> Result<Option<ClaimHolder>, AppendError> {
        let made = auth::ClaimMade { kind: kind.clone(), value: value.to_owned(), owner: String::new() };
        let aggregate = made.aggregate().ok_or(AppendError::Empty)?;
        let claim = self.claim_log(aggregate.filter()).await?;
        let Some(raw) = claim.last_ours else { return Ok(None) };
        if raw.ty() != auth::ClaimMade::TYPE {
            return Ok(None);
        }
        let made: auth::ClaimMade =
            raw.decode().map_err(|e| AppendError::Unavailable { attempts: 1, last: e.to_string() })?;
        Ok(Some(ClaimHolder { seq: claim.last_seq, owner: made.owner, made_at: raw.envelope.time }))
    }

    /// Releases the claim on `value` only if its last event is still the one at `seq`: frees a claim
    /// abandoned by a crashed command without racing a live one.
    pub async fn release_stale(
        &self,
        source: &str,
        kind: &Token,
        value: &str,
        holder: &ClaimHolder,
    ) -> Result<u64, AppendError> {
        let released = auth::ClaimReleased { kind: kind.clone(), value: value.to_owned(), owner: holder.owner.clone() };
        self.append_one(&Envelope::new(source, released), Expected::Exactly(holder.seq)).await
    }

    /// The sequence and id of the last event under `filter`, if any.
    async fn last_event_id(&self, filter: &str) -> Result<Option<(u64, Uuid)>, AppendError> {
        Ok(self.last_raw(filter).await?.map(|raw| (raw.stream_seq, raw.envelope.id)))
    }

    async fn last_raw(&self, filter: &str) -> Result<Option<crate::envelope::RawEvent>, AppendError> {
        Ok(self.last_message(filter).await?.and_then(|(_, ours)| ours))
    }

    async fn stream_of(&self, filter: &str) -> Result<jetstream::stream::Stream, AppendError> {
        let stream_name = crate::streams::stream_for_subject(filter)
            .map(|s| s.name)
            .ok_or_else(|| AppendError::NoStream(filter.to_owned()))?;
        self.js.get_stream(stream_name).await.map_err(|e| AppendError::Unavailable { attempts: 1, last: e.to_string() })
    }

    /// The sequence of the last message under `filter`, if any, and that message if it is an event
    /// of ours. A message that is not (garbage, a forged origin: see
    /// [`publishers::check`](crate::catalog::publishers::check)) is nobody's event: an append that
    /// conflicts with it is a conflict, never an unreachable log.
    async fn last_message(
        &self,
        filter: &str,
    ) -> Result<Option<(u64, Option<crate::envelope::RawEvent>)>, AppendError> {
        let stream = self.stream_of(filter).await?;
        match stream.get_last_raw_message_by_subject(filter).await {
            Ok(msg) => Ok(Some((
                msg.sequence,
                crate::catalog::publishers::check(msg.sequence, msg.subject.as_str(), &msg.payload).ok(),
            ))),
            Err(e) if matches!(e.kind(), jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(AppendError::Unavailable { attempts: 1, last: e.to_string() }),
        }
    }

    /// A claim's log: its last sequence and its last event of ours, passing over messages that are
    /// not events of ours wherever they are. Such a message says nothing about the claim: one on a
    /// free value does not take it, one after a `ClaimMade` does not free it.
    async fn claim_log(&self, filter: &str) -> Result<ClaimLog, AppendError> {
        let Some((last_seq, last)) = self.last_message(filter).await? else {
            return Ok(ClaimLog { last_seq: 0, last_ours: None });
        };
        if last.is_some() {
            return Ok(ClaimLog { last_seq, last_ours: last });
        }
        // The last message is not ours: the claim's state is its last event of ours before it,
        // found by reading the claim's few messages from its first (garbage is bounded, or the read
        // would be unbounded too).
        let stream = self.stream_of(filter).await?;
        let unavailable = |e: &dyn std::fmt::Display| AppendError::Unavailable { attempts: 1, last: e.to_string() };
        let mut last_ours = None;
        let mut from = 1;
        for _ in 0..MAX_CLAIM_MESSAGES {
            let next = stream.raw_message_builder().sequence(from).next_by_subject(filter).send().await;
            let msg = match next {
                Ok(msg) if msg.sequence < last_seq => msg,
                Ok(_) => return Ok(ClaimLog { last_seq, last_ours }),
                Err(e) if matches!(e.kind(), jetstream::stream::RawMessageErrorKind::NoMessageFound) => {
                    return Ok(ClaimLog { last_seq, last_ours })
                }
                Err(e) => return Err(unavailable(&e)),
            };
            if let Ok(raw) = crate::catalog::publishers::check(msg.sequence, msg.subject.as_str(), &msg.payload) {
                last_ours = Some(raw);
            }
            from = msg.sequence + 1;
        }
        Err(unavailable(&format!("more than {MAX_CLAIM_MESSAGES} messages on {filter}")))
    }

    async fn publish_checked(
        &self,
        aggregate: &Aggregate,
        expected: Expected,
        event: &Outgoing,
    ) -> Result<u64, AppendError> {
        let mut headers = HeaderMap::new();
        let expected_seq = match expected {
            Expected::NoStream => Some(0),
            Expected::Exactly(seq) => Some(seq),
            Expected::Any => None,
        };
        if let Some(seq) = expected_seq {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
            headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", aggregate.filter());
        }
        match self.publish_with_retry(event, headers).await {
            Err(AppendError::Conflict { .. }) => {
                // The server checks the expected sequence before de-duplicating, so a retry of an append
                // whose ack was lost looks like a conflict. If the aggregate's last event is this very
                // event, the append did happen: answer with its sequence.
                match self.last_event_id(aggregate.filter()).await? {
                    Some((seq, id)) if id == event.id => Ok(seq),
                    _ => Err(AppendError::Conflict { aggregate: aggregate.filter().to_owned(), expected }),
                }
            }
            other => other,
        }
    }

    /// Publishes with the event id as `Nats-Msg-Id`, retrying transient failures with the same id.
    async fn publish_with_retry(&self, event: &Outgoing, mut headers: HeaderMap) -> Result<u64, AppendError> {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.to_string().as_str());
        let mut backoff = self.retry.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts {
            let outcome = match self
                .js
                .publish_with_headers(event.subject.to_string(), headers.clone(), event.bytes.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => match e.kind() {
                    PublishErrorKind::WrongLastSequence => {
                        return Err(AppendError::Conflict { aggregate: String::new(), expected: Expected::Any })
                    }
                    PublishErrorKind::MaxPayloadExceeded => {
                        return Err(AppendError::TooLarge { size: event.bytes.len(), max: MAX_EVENT_BYTES as usize })
                    }
                    PublishErrorKind::StreamNotFound if attempt == self.retry.attempts => {
                        return Err(AppendError::NoStream(event.subject.to_string()))
                    }
                    _ => {
                        tracing::warn!(subject = %event.subject, attempt, error = %e, "publish not confirmed; retrying");
                        last = e.to_string();
                    }
                },
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
        Err(AppendError::Unavailable { attempts: self.retry.attempts, last })
    }
}
