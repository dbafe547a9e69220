//! The notification service: per-user inboxes of the `notify.{user_id}` notifications other
//! services publish, read marks and mutes, and live delivery over WebSocket and SSE
//! (see `docs/notify.md`).
//!
//! - [`projection`]: `notify/inbox` (stream `NOTIFY`) and `notify/state` (stream `INBOX`, what users
//!   did: read marks, mutes) in `notifications_db`; `notify/permissions` for local authorization;
//! - [`queries`]: reads (read state and mute visibility are decided here);
//! - [`api`]: the HTTP API; commands append `INBOX` events and answer once `notify/state` shows them;
//! - [`live`]: the per-replica fanout from `NOTIFY` to the open WebSockets and SSE streams;
//! - retention: an hourly sweep removes read notifications older than `retention_days`.

pub mod api;
pub mod config;
pub mod live;
pub mod projection;
pub mod queries;
mod state;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use edd_events::EventStore;
use edd_kit::{auth::PermissionsProjection, App, Committer, Metrics, Shutdown};
use edd_projections::{Projection, RunnerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::NotifyConfig;

/// The notify service's permissions: scopes under the `notifications` root, sessions, tokens.
pub const PERMISSIONS: PermissionsProjection = PermissionsProjection::new("notify/permissions", Some("notifications"));

/// The projections the notify service runs in `notifications_db`.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(projection::InboxProjection), Arc::new(projection::StateProjection), Arc::new(PERMISSIONS)]
}

/// What the service needs from outside: the event log and its own database.
pub struct Deps {
    pub js: jetstream::Context,
    pub pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// The HTTP API's contract (`GET /openapi.json` on `notifications.<base domain>`,
/// `docs/openapi/notify.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    edd_kit::openapi::document("notify", api::routes().split_for_parts().1)
}

/// Runs the notification service on `listener` until `shutdown`.
pub async fn run(config: NotifyConfig, deps: Deps, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let Deps { js, pool } = deps;
    let metrics = Metrics::new();

    let spawn = |projection: Arc<dyn Projection>| {
        edd_projections::spawn(pool.clone(), js.clone(), projection, RunnerConfig::default(), shutdown.wait())
    };
    spawn(Arc::new(projection::InboxProjection));
    let state_handle = spawn(Arc::new(projection::StateProjection));
    let (authorizer, _) =
        edd_kit::auth::start(pool.clone(), js.clone(), PERMISSIONS, RunnerConfig::default(), shutdown.wait());

    let hub = live::Hub::new(&config, &metrics);
    tokio::spawn(live::follow_mutes(hub.clone(), pool.clone(), state_handle.clone(), shutdown.clone()));
    tokio::spawn(live::fanout(hub.clone(), js.clone(), shutdown.clone()));
    let retention = (config.retention_days, Duration::from_secs(config.retention_sweep_secs));
    tokio::spawn(retention_sweeps(pool.clone(), retention, shutdown.clone()));

    let commits = Committer::new(EventStore::new(js), "notify")
        .follow(projection::StateProjection.filters(), state_handle.watermark())
        .follow(state::MUTE_FILTERS, hub.mutes_watermark());
    let state = state::AppState {
        commits,
        pool: pool.clone(),
        authorizer: authorizer.clone(),
        hub: hub.clone(),
        origins: Arc::new(edd_kit::AllowedOrigins::new(&config.base_domain, &config.allowed_origins)),
        ping_interval: config.ping_interval(),
        shutdown: shutdown.clone(),
    };
    let (routes, _) = api::routes().with_state(state).split_for_parts();
    let router = App::new("notify", metrics)
        .router(routes)
        .openapi(openapi())
        .cors(edd_kit::AllowedOrigins::new(&config.base_domain, &config.allowed_origins))
        .readiness("permissions", move || authorizer.clone().readiness())
        .readiness("live", move || {
            let ready = hub.is_ready();
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("live fanout still starting")
                }
            }
        })
        .readiness("postgres", move || {
            let pool = pool.clone();
            async move {
                match queries::ready(&pool).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("projections not created yet".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .build();
    edd_kit::shutdown::serve(listener, router, shutdown.wait()).await?;
    Ok(())
}

/// Every `every`, removes read notifications older than `days` days (and their read marks).
///
/// This prunes the read model only: the notifications stay in `NOTIFY` until the stream's own
/// age limit (30 days), so a rebuild within that window brings back read ones the sweep removed;
/// the next sweep removes them again.
async fn retention_sweeps(pool: PgPool, (days, every): (u32, Duration), shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        let before = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
        match queries::sweep(&pool, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, days, "retention removed read notifications"),
            // Before the projections' first run the tables may not exist; the next sweep retries.
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
        match queries::sweep_deleted_users(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed deleted users' notifications"),
            Err(e) => tracing::warn!(error = %e, "deleted users' sweep failed"),
        }
    }
}
