//! What every handler shares, and the commit path: a [`Committer`] that waits until `notify/state`
//! has applied a command's `INBOX` event and, for mutes, until this replica's live fanout honours
//! it (read-your-writes, on any replica; once a mute answers, no push ignores it).

use std::{sync::Arc, time::Duration};

use axum::extract::FromRef;
use edd_events::{Event, Expected};
use edd_kit::{auth::Authorizer, Committer, Problem, Shutdown};
use sqlx::PgPool;

use crate::live::Hub;

/// The `INBOX` subjects the live fanout's mute copy follows.
pub const MUTE_FILTERS: [&str; 2] = ["inbox.*.muted", "inbox.*.unmuted"];

#[derive(Clone)]
pub struct AppState {
    /// Follows `notify/state` (every command) and the hub's mutes (mute commands).
    pub commits: Committer,
    pub pool: PgPool,
    pub authorizer: Authorizer,
    pub hub: Arc<Hub>,
    /// The browser origins live connections (and CORS) accept.
    pub origins: Arc<edd_kit::AllowedOrigins>,
    pub ping_interval: Duration,
    pub shutdown: Shutdown,
}

impl FromRef<AppState> for Authorizer {
    fn from_ref(state: &AppState) -> Self {
        state.authorizer.clone()
    }
}

impl AppState {
    /// Appends `data` for `actor` and waits until it is visible (see the module docs).
    pub async fn commit<E: Event>(&self, actor: &str, data: E) -> Result<u64, Problem> {
        // Read marks and mutes commute with everything but their own undoing, which the log orders.
        self.commits.commit(actor, data, Expected::Any).await
    }
}
