//! The one way a command writes: append its event to the log, then wait until every reader the
//! service answers from has applied it (read-your-writes, on any replica).
//!
//! A service builds one [`Committer`] at start, naming what it reads and which subjects each
//! reader covers (its projections, the authorizer's memory, an in-memory table). A command calls
//! [`Committer::commit`]; when that returns `Ok`, the event is durably in JetStream *and* visible
//! to the next request. If a reader is slow the answer is [`Problem::not_visible_yet`] (503 with
//! `Retry-After`): the change is recorded, only not visible yet, after one settle timeout that is
//! the same for every service.

use std::{sync::Arc, time::Duration};

use edd_events::{filter_matches, Envelope, Event, EventStore, Expected};
use edd_projections::Watermark;

use crate::{
    auth::{permissions, Authorizer},
    Problem,
};

/// How long a command waits for the readers of its event before answering 503.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A reader of the log a command waits on, with the subjects it applies.
#[derive(Clone, Debug)]
struct Follower {
    filters: Vec<String>,
    mark: Watermark,
}

/// Appends events as one service and waits until its readers show them. Clones share the setup.
#[derive(Clone)]
pub struct Committer {
    store: EventStore,
    source: &'static str,
    followers: Arc<Vec<Follower>>,
    settle: Duration,
}

impl Committer {
    /// Appends as `source` (the envelope's `source`: the service's name) through `store`.
    pub fn new(store: EventStore, source: &'static str) -> Self {
        Self { store, source, followers: Arc::new(Vec::new()), settle: SETTLE_TIMEOUT }
    }

    /// Waits on `mark` for events on subjects matching any of `filters`.
    pub fn follow<I, F>(mut self, filters: I, mark: Watermark) -> Self
    where
        I: IntoIterator<Item = F>,
        F: Into<String>,
    {
        let follower = Follower { filters: filters.into_iter().map(Into::into).collect(), mark };
        Arc::make_mut(&mut self.followers).push(follower);
        self
    }

    /// Waits on the authorizer's memory for permission events: a token or key created by a
    /// command then authenticates on the very next request.
    pub fn follow_authorizer(self, authorizer: &Authorizer) -> Self {
        self.follow(permissions::FILTERS.iter().copied(), authorizer.watermark())
    }

    /// The event store, for reads of the log (heads, catch-up) that are not commands.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Appends `data` for `actor` with `expected` and waits until the readers of its subject have
    /// applied it. Returns the event's stream sequence.
    pub async fn commit<E: Event>(&self, actor: &str, data: E, expected: Expected) -> Result<u64, Problem> {
        self.append(actor, data, expected).await?.visible().await
    }

    /// The first half of [`Self::commit`], for a command with work between the two (undoing a
    /// side effect when the append fails, cleaning up once it succeeded): the event is in the log
    /// when this returns `Ok`; [`Appended::visible`] waits for the readers.
    pub async fn append<E: Event>(&self, actor: &str, data: E, expected: Expected) -> Result<Appended<'_>, Problem> {
        let subject = data.subject().as_str().to_owned();
        let envelope = Envelope::new(self.source, data).actor(actor);
        let seq = self.store.append_one(&envelope, expected).await?;
        Ok(Appended { committer: self, subject, seq })
    }

    /// Waits until every reader whose filters match `subject` has applied stream sequence `seq`
    /// (for a command that appended by other means and must still read its own write).
    pub async fn settle(&self, subject: &str, seq: u64) -> Result<(), Problem> {
        for follower in self.followers.iter() {
            if follower.filters.iter().any(|f| filter_matches(f, subject)) {
                follower.mark.wait_for(seq, self.settle).await?;
            }
        }
        Ok(())
    }

    /// Publishes `data` (a notification, telemetry) without waiting on any reader; best effort:
    /// the command it reports on has already happened, so a failure is logged, not returned.
    pub async fn publish<E: Event>(&self, data: E) {
        if let Err(e) = self.store.publish(&Envelope::new(self.source, data)).await {
            tracing::error!(error = %e, "could not publish an event");
        }
    }
}

/// An event in the log that its readers may not show yet (see [`Committer::append`]).
#[must_use = "a command answers once its event is visible: call `visible`"]
pub struct Appended<'a> {
    committer: &'a Committer,
    subject: String,
    seq: u64,
}

impl Appended<'_> {
    /// The event's stream sequence.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits until the readers of the event's subject have applied it; returns its sequence.
    pub async fn visible(self) -> Result<u64, Problem> {
        self.committer.settle(&self.subject, self.seq).await?;
        Ok(self.seq)
    }
}
