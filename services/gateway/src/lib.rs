//! The gateway: the one ingress of the platform (work in progress; see `docs/gateway.md`).
//!
//! - [`routes`]: the route table — host (exact or `*.suffix`) and longest path prefix, prefix strip;
//! - [`proxy`]: forwarding — HTTP/1.1 upstreams with pooled keep-alive or h2c, bodies streamed both
//!   ways, upgrades (WebSocket) tunnelled, hop-by-hop and `X-Forwarded-*` handling, request ids;
//! - [`server`]: the listener — HTTP/1.1 and h2c on one port, header size limit and timeout;
//! - [`projection`], [`sync`], [`api`]: admin-managed routes as `gateway.route.*` events, projected
//!   into `gateway_db` and swapped into the live table; `GET/POST/DELETE /api/routes` on the
//!   gateway's own host (`gateway.<base domain>`), for administrators.

mod api;
pub mod config;
pub mod projection;
pub mod proxy;
pub mod routes;
pub mod server;
mod sync;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use edd_events::EventStore;
use edd_kit::{auth::PermissionsProjection, App, Metrics, Shutdown};
use edd_projections::{Projection, Runner, RunnerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::GatewayConfig;
pub use proxy::Gateway;
pub use routes::{Route, RouteError, RouteTable};

/// The gateway's permissions: admin flags and sessions (no scope root of its own yet).
pub const PERMISSIONS: PermissionsProjection = PermissionsProjection::new("gateway/permissions", Some("networking"));

/// The projections the gateway runs in `gateway_db`.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(projection::RoutesProjection), Arc::new(PERMISSIONS)]
}

pub struct Deps {
    pub js: jetstream::Context,
    pub pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("built-in route: {0}")]
    Route(#[from] RouteError),
    #[error("gateway I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The platform's own routes: `auth.<base>` and the gateway's admin host.
pub fn builtin_routes(config: &GatewayConfig, admin_upstream: &str) -> Result<Vec<Route>, RouteError> {
    let base = &config.base_domain;
    Ok(vec![
        Route::new("builtin-auth", &format!("auth.{base}"), "/", &config.auth_upstream, false)?,
        Route::new("builtin-gateway", &format!("gateway.{base}"), "/", admin_upstream, false)?,
    ])
}

/// Runs the gateway: the public listener `public` and the admin API on `admin`, until `shutdown`.
pub async fn run(
    config: GatewayConfig,
    deps: Deps,
    public: TcpListener,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let Deps { js, pool } = deps;
    let admin_upstream = format!("http://{}", admin.local_addr()?);
    let builtin = builtin_routes(&config, &admin_upstream)?;
    let gateway = Arc::new(Gateway::new(RouteTable::new(builtin.clone())));

    let (runner, routes_handle) =
        Runner::new(pool.clone(), js.clone(), Arc::new(projection::RoutesProjection), RunnerConfig::default());
    tokio::spawn(runner.run(shutdown.wait()));
    let sync = sync::RouteSync::follow(pool.clone(), routes_handle.clone(), gateway.clone(), builtin.clone());
    let (authorizer, _) =
        edd_kit::auth::start(pool.clone(), js.clone(), PERMISSIONS, RunnerConfig::default(), shutdown.wait());

    let state = api::ApiState {
        store: EventStore::new(js),
        pool,
        authorizer,
        routes: routes_handle,
        sync,
        builtin: Arc::new(builtin),
        admin_host: format!("gateway.{}", config.base_domain),
    };
    let admin_app = App::new("gateway", Metrics::new()).router(api::router(state)).build();
    let admin_server = tokio::spawn(edd_kit::shutdown::serve(admin, admin_app, shutdown.wait()));
    let limits = server::Limits {
        max_header_bytes: config.max_header_bytes,
        header_timeout: Duration::from_secs(config.header_timeout_secs),
    };
    server::serve(public, gateway, limits, shutdown).await;
    let _ = admin_server.await;
    Ok(())
}
