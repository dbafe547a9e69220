//! What every handler shares, and the one way a command writes: append the `INBOX` event, then
//! wait until `notify/state` has applied it (read-your-writes, on any replica).

use std::{sync::Arc, time::Duration};

use axum::extract::FromRef;
use edd_events::{Envelope, Event, EventStore, Expected};
use edd_kit::{auth::Authorizer, Problem, Shutdown};
use edd_projections::Handle;
use sqlx::PgPool;

use crate::live::{Hub, Origins};

/// How long a command waits for its projection before answering 503.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub pool: PgPool,
    pub authorizer: Authorizer,
    /// `notify/state`, which every command writes to.
    pub state: Handle,
    pub hub: Arc<Hub>,
    pub origins: Arc<Origins>,
    pub ping_interval: Duration,
    pub shutdown: Shutdown,
}

impl FromRef<AppState> for Authorizer {
    fn from_ref(state: &AppState) -> Self {
        state.authorizer.clone()
    }
}

fn not_visible_yet() -> Problem {
    Problem::unavailable("the change is recorded but not visible yet; read it again shortly").with_retry_after(1)
}

impl AppState {
    /// Appends `data` for `actor` and waits until `notify/state` has applied it.
    pub async fn commit<E: Event>(&self, actor: &str, data: E) -> Result<u64, Problem> {
        let envelope = Envelope::new("notify", data).actor(actor);
        // Read marks and mutes commute with everything but their own undoing, which the log orders.
        let seq = self.store.append_one(&envelope, Expected::Any).await.map_err(Problem::from)?;
        self.state.wait_for(seq, SETTLE_TIMEOUT).await.map_err(|e| {
            tracing::warn!(error = %e, "notify/state slow to apply a command");
            not_visible_yet()
        })?;
        Ok(seq)
    }

    /// Like [`Self::commit`], and also waits until this replica's live fanout honours the change
    /// (mutes): once the answer is out, no push ignores it.
    pub async fn commit_mute<E: Event>(&self, actor: &str, data: E) -> Result<u64, Problem> {
        let seq = self.commit(actor, data).await?;
        if !self.hub.wait_mutes(seq, SETTLE_TIMEOUT).await {
            return Err(not_visible_yet());
        }
        Ok(seq)
    }
}
