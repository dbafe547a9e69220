//! The auth service: users, sessions, service accounts, API tokens and the session-signing keys.
//!
//! Event-sourced on the `AUTH` stream. Commands append events and answer once the service's own
//! projections (`auth/accounts`, `auth/permissions`) show them; reads come from those projections.
//! Secrets — password hashes and private keys — live only in the private `auth_private` schema.
//!
//! Layout: `api` (thin axum handlers), `domain` (rules and shared commands), [`projection`]
//! (the accounts read model), `queries` (reads), [`secrets`] (private tables), [`password`]
//! (Argon2id), `ratelimit` (login limits), `state` (shared state and the commit path).

mod api;
pub mod config;
mod domain;
pub mod password;
pub mod projection;
mod queries;
mod ratelimit;
pub mod secrets;
mod state;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use edd_events::EventStore;
use edd_kit::{auth::PermissionsProjection, App, Committer, Metrics, Problem, Shutdown};
use edd_projections::{Projection, RunnerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::{AuthConfig, SecureCookie, Signup};

/// The permissions projection of the auth service itself: every scope root.
pub const PERMISSIONS: PermissionsProjection = PermissionsProjection::new("auth/permissions", None);

/// The projections the auth service runs in `auth_db`.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(projection::AccountsProjection), Arc::new(PERMISSIONS)]
}

/// The HTTP contract (`GET /openapi.json`, `docs/openapi/auth.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    edd_kit::openapi::document("auth", api::routes().split_for_parts().1)
}

/// What the service needs from outside: the event log and its own database.
pub struct Deps {
    pub js: jetstream::Context,
    pub pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare auth_db: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Runs the auth service on `listener` until `shutdown`. `admin_password`, when given, creates the
/// first administrator (`config.admin_username`) unless that name exists.
pub async fn run(
    config: AuthConfig,
    admin_password: Option<String>,
    deps: Deps,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let Deps { js, pool } = deps;
    secrets::migrate(&pool).await?;
    let hasher = password::Hasher::new(config.argon2_m_kib, config.argon2_t, config.argon2_p, config.hash_concurrency)?;

    let accounts: Arc<dyn Projection> = Arc::new(projection::AccountsProjection);
    let filters = accounts.filters();
    let accounts = edd_projections::spawn(pool.clone(), js.clone(), accounts, RunnerConfig::default(), shutdown.wait());
    let (authorizer, _) =
        edd_kit::auth::start(pool.clone(), js.clone(), PERMISSIONS, RunnerConfig::default(), shutdown.wait());

    let commits = Committer::new(EventStore::new(js), "auth")
        .follow(filters, accounts.watermark())
        .follow_authorizer(&authorizer);
    let state = state::AppState::new(commits, pool.clone(), authorizer.clone(), config, hasher);
    let bootstrapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(bootstrap(state.clone(), admin_password, bootstrapped.clone(), shutdown.clone()));

    let ready = authorizer.clone();
    let (routes, _) = api::routes().with_state(state).split_for_parts();
    let router = App::new("auth", Metrics::new())
        .router(routes)
        .openapi(openapi())
        .readiness("permissions", move || ready.clone().readiness())
        // Ready once its signing key is in the log (and the first admin made, on a new platform).
        .readiness("bootstrap", move || {
            let done = bootstrapped.load(std::sync::atomic::Ordering::Acquire);
            async move {
                if done {
                    Ok(())
                } else {
                    Err("publishing the signing key")
                }
            }
        })
        .readiness("postgres", move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.map(drop) }
        })
        .build();
    edd_kit::shutdown::serve(listener, router, shutdown.wait()).await?;
    Ok(())
}

/// Once permissions are loaded: publish the signing key, create the first admin. Retries until
/// it works or the service stops, since neither can be skipped.
async fn bootstrap(
    state: state::AppState,
    admin_password: Option<String>,
    done: Arc<std::sync::atomic::AtomicBool>,
    shutdown: Shutdown,
) {
    while !state.authorizer.wait_ready(Duration::from_secs(1)).await {
        if shutdown.is_triggered() {
            return;
        }
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        match bootstrap_once(&state, admin_password.clone()).await {
            Ok(()) => {
                done.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "auth bootstrap failed; retrying");
                if shutdown.is_triggered() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn bootstrap_once(state: &state::AppState, admin_password: Option<String>) -> Result<(), Problem> {
    state.ensure_signing_key().await?;
    let Some(password) = admin_password else { return Ok(()) };
    // The first administrator is made once, on a platform that never had a user: a bootstrap
    // admin someone deleted must not come back, with its old password, at the next restart. The
    // log says whether a user was ever created (the read model may still be catching up).
    let filters = ["auth.user.*.created".to_owned()];
    let users = edd_events::consume::pending_after(state.commits.store().jetstream(), "AUTH", &filters, 0)
        .await
        .map_err(|e| Problem::unavailable(format!("the event log is unavailable: {e}")))?;
    if users > 0 {
        return Ok(());
    }
    let username = state.config.admin_username.clone();
    match domain::create_user(state, "bootstrap", &username, password, None, true).await {
        Ok(user) => {
            tracing::info!(username, user_id = %user.id, "created the first administrator");
            Ok(())
        }
        Err(p) if p.status == axum::http::StatusCode::CONFLICT => Ok(()),
        Err(p) => Err(p),
    }
}
