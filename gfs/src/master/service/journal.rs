//! [`Journal`]: the master's side of the `GFS` stream — appending a command's event fenced on the last
//! applied sequence, and folding stored events into the state (at start, while standing by, before
//! taking over, and after an append whose outcome is unknown).

use std::time::Duration;

use async_nats::jetstream;
use edd_events::catalog::gfs as ev;
use edd_events::consume::{replay, stream_head, Stored};
use edd_events::store::{AppendError, Outgoing};
use edd_events::{Envelope, EventStore, Expected};
use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;
use tokio::sync::RwLock;

use crate::master::{MasterState, MetaEvent};

/// The stream holding the metadata log.
pub(super) const STREAM: &str = "GFS";

/// Reading the stream's head, or waiting for the next stored event during a catch-up.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Why the log could not be folded in.
#[derive(Debug, thiserror::Error)]
pub(super) enum FollowError {
    /// NATS did not answer in time: try again later.
    #[error("the GFS stream is unavailable: {0}")]
    Unavailable(String),
    /// The log holds an event this master cannot apply: it must stop following rather than diverge.
    #[error("{0}")]
    Broken(String),
}

pub(super) struct Journal {
    js: jetstream::Context,
    store: EventStore,
    /// The CloudEvents `source` of this master's events.
    source: String,
}

impl Journal {
    pub fn new(js: jetstream::Context, master_id: &str) -> Journal {
        let store = EventStore::new(js.clone());
        Journal { js, store, source: format!("gfs-master/{master_id}") }
    }

    /// The stream's last sequence.
    pub async fn head(&self) -> Result<u64, FollowError> {
        match tokio::time::timeout(READ_DEADLINE, stream_head(&self.js, STREAM)).await {
            Ok(Ok(head)) => Ok(head),
            Ok(Err(e)) => Err(FollowError::Unavailable(e.to_string())),
            Err(_) => Err(FollowError::Unavailable(format!("no stream info within {READ_DEADLINE:?}"))),
        }
    }

    /// Every stored event from `from` on, in order, waiting for new ones at the end.
    pub async fn events_from(
        &self,
        from: u64,
    ) -> Result<
        impl Stream<Item = Result<Stored, edd_events::consume::ConsumeError>> + Unpin + Send + 'static,
        FollowError,
    > {
        let filters = [ev::metadata_log().filter().to_owned()];
        match tokio::time::timeout(READ_DEADLINE, replay(&self.js, STREAM, &filters, from)).await {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(e)) => Err(FollowError::Unavailable(e.to_string())),
            Err(_) => Err(FollowError::Unavailable(format!("no consumer within {READ_DEADLINE:?}"))),
        }
    }

    /// Applies every event up to the stream's current head to `state`, taking the write lock per
    /// event so readers are not held up by a long catch-up. Returns how many were applied.
    pub async fn catch_up(&self, state: &RwLock<MasterState>) -> Result<u64, FollowError> {
        let head = self.head().await?;
        let last = state.read().await.last_seq();
        if last >= head {
            return Ok(0);
        }
        let mut events = self.events_from(last + 1).await?;
        let mut applied = 0;
        while state.read().await.last_seq() < head {
            let stored = match tokio::time::timeout(READ_DEADLINE, events.next()).await {
                Ok(Some(Ok(stored))) => stored,
                Ok(Some(Err(e))) => return Err(FollowError::Unavailable(e.to_string())),
                Ok(None) => return Err(FollowError::Unavailable("the event stream ended".into())),
                Err(_) => return Err(FollowError::Unavailable(format!("no event within {READ_DEADLINE:?}"))),
            };
            if apply_stored(&mut *state.write().await, &stored)? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Appends `event`, provided the log's last event is still `last_seq`; returns where it landed and
    /// the time in its envelope (which the state must be applied with, as every follower will).
    pub async fn append(&self, last_seq: u64, event: &MetaEvent) -> Result<(u64, OffsetDateTime), AppendError> {
        let (outgoing, at) = encode(&self.source, event)?;
        let expected = match last_seq {
            0 => Expected::NoStream,
            seq => Expected::Exactly(seq),
        };
        let appended = self.store.append(&ev::metadata_log(), expected, &[outgoing]).await?;
        Ok((appended.last_seq, at))
    }
}

/// Applies one stored event unless it is already in `state`; `Ok(true)` if it was applied.
pub(super) fn apply_stored(state: &mut MasterState, stored: &Stored) -> Result<bool, FollowError> {
    if stored.seq <= state.last_seq() {
        return Ok(false);
    }
    let raw = match edd_events::catalog::publishers::check(stored.seq, &stored.subject, &stored.payload) {
        Ok(raw) => raw,
        Err(foreign) => {
            // Not an event of ours (garbage, or not from a GFS master): passed over the same way
            // by every master and every replay, so it can neither change the metadata nor stop
            // the master from taking changes.
            tracing::error!(seq = stored.seq, subject = stored.subject, reason = %foreign, "GFS log: passed over a message that is not an event of ours");
            state.pass_over(stored.seq);
            return Ok(false);
        }
    };
    state.apply(stored.seq, &raw).map_err(|e| FollowError::Broken(e.to_string()))?;
    Ok(true)
}

/// The event in its envelope, ready to append.
fn encode(source: &str, event: &MetaEvent) -> Result<(Outgoing, OffsetDateTime), AppendError> {
    fn one<E: edd_events::Event>(source: &str, data: E) -> Result<(Outgoing, OffsetDateTime), AppendError> {
        let envelope = Envelope::new(source, data);
        Ok((Outgoing::encode(&envelope)?, envelope.time))
    }
    match event.clone() {
        MetaEvent::NamespaceCreated(e) => one(source, e),
        MetaEvent::NamespaceDeleted(e) => one(source, e),
        MetaEvent::FileCreated(e) => one(source, e),
        MetaEvent::FileRenamed(e) => one(source, e),
        MetaEvent::FileDeleted(e) => one(source, e),
        MetaEvent::ChunkAdded(e) => one(source, e),
        MetaEvent::LengthSet(e) => one(source, e),
        MetaEvent::VersionBumped(e) => one(source, e),
        MetaEvent::ChunkDeleted(e) => one(source, e),
    }
}
