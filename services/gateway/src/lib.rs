//! The gateway: the one ingress of the platform (see `docs/gateway.md`).
//!
//! - [`routes`]: the route table — host (exact or `*.suffix`) and longest path prefix, prefix strip;
//! - [`proxy`]: forwarding — HTTP/1.1 upstreams with pooled keep-alive or h2c, bodies streamed both
//!   ways, upgrades (WebSocket) tunnelled, hop-by-hop and `X-Forwarded-*` handling, request ids,
//!   body limits, upstream timeouts and one retry for idempotent requests;
//! - [`server`]: the listeners — HTTP/1.1 and HTTP/2 (h2c in cleartext, ALPN under TLS), header,
//!   handshake and idle timeouts, connections per client address;
//! - [`workers`]: the listeners served on one single-threaded runtime per core;
//! - [`tls`]: certificates by SNI, reloaded when their files change, the development certificate;
//! - [`clients`]: connection and request-rate limits per client address;
//! - [`observe`]: the JSON access log and per-route Prometheus metrics;
//! - [`projection`], `sync`, `api`: admin-managed routes as `gateway.route.*` events, projected
//!   into `gateway_db` and swapped into the live table; `GET/POST/DELETE /api/routes` on the
//!   gateway's own host (`gateway.<base domain>`), for administrators.

mod api;
pub mod clients;
pub mod config;
pub mod early;
pub mod observe;
pub mod projection;
pub mod proxy;
mod queries;
pub mod routes;
pub mod server;
mod sync;
pub mod tls;
pub mod workers;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use edd_events::EventStore;
use edd_kit::{auth::PermissionsProjection, App, Committer, Metrics, Shutdown};
use edd_projections::{Projection, RunnerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::GatewayConfig;
pub use proxy::{Gateway, Options};
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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("invalid setting: {0}")]
    Config(String),
}

/// The platform's own routes: `<service>.<base domain>` for each service, and the gateway's admin
/// host.
pub fn builtin_routes(config: &GatewayConfig, admin_upstream: &str) -> Result<Vec<Route>, RouteError> {
    let base = &config.base_domain;
    let up = &config.upstreams;
    let route = |service: &str, upstream: &str| {
        Route::new(&format!("builtin-{service}"), &format!("{service}.{base}"), "/", upstream, false)
            .map(Route::builtin)
    };
    Ok(vec![
        route("auth", &up.auth)?,
        route("storage", &up.storage)?.with_max_body(Some(config.storage_max_body_bytes)),
        route("compute", &up.compute)?,
        route("notifications", &up.notifications)?,
        route("registry", &up.registry)?.with_max_body(Some(config.registry_max_body_bytes)),
        route("health", &up.health)?,
        route("cloud", &up.cloud)?,
        route("docs", &up.docs)?,
        route("gateway", admin_upstream)?,
    ])
}

/// The sockets the gateway serves, bound by the caller (so tests can use port 0).
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub async fn bind(config: &GatewayConfig) -> std::io::Result<Self> {
        Ok(Self {
            http: TcpListener::bind(config.listen_addr).await?,
            https: match config.https_addr.0 {
                Some(addr) => Some(TcpListener::bind(addr).await?),
                None => None,
            },
            admin: TcpListener::bind(config.admin_addr).await?,
        })
    }
}

/// The admin API's HTTP contract (`GET /openapi.json` on the gateway's host, `docs/openapi/gateway.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    edd_kit::openapi::document("gateway", api::routes().split_for_parts().1)
}

/// Runs the gateway on `listeners` until `shutdown`.
pub async fn run(config: GatewayConfig, deps: Deps, listeners: Listeners, shutdown: Shutdown) -> Result<(), Error> {
    let Deps { js, pool } = deps;
    let Listeners { http, https, admin } = listeners;
    let admin_upstream = format!("http://{}", admin.local_addr()?);
    let builtin = builtin_routes(&config, &admin_upstream)?;
    let metrics = Metrics::new();
    let options = Options {
        clients: clients::ClientLimitsConfig {
            max_connections: config.max_connections_per_ip,
            requests_per_sec: config.requests_per_sec_per_ip,
            burst: config.request_burst_per_ip,
        },
        max_body_bytes: config.max_body_bytes,
        upstream_timeout: Duration::from_secs(config.upstream_timeout_secs),
        observer: observe::Observer::new(&metrics, &config.access_log)?,
    };
    let gateway = Arc::new(Gateway::new(RouteTable::new(builtin.clone()), options));

    let routes_handle = edd_projections::spawn(
        pool.clone(),
        js.clone(),
        Arc::new(projection::RoutesProjection),
        RunnerConfig::default(),
        shutdown.wait(),
    );
    let sync = sync::RouteSync::follow(pool.clone(), routes_handle.clone(), gateway.clone(), builtin.clone());
    let (authorizer, _) =
        edd_kit::auth::start(pool.clone(), js.clone(), PERMISSIONS, RunnerConfig::default(), shutdown.wait());

    let builtin_hosts: Vec<String> = builtin.iter().map(|r| r.host.clone()).collect();
    let state = api::ApiState {
        commits: Committer::new(EventStore::new(js), "gateway")
            .follow(projection::RoutesProjection.filters(), routes_handle.watermark())
            .follow(projection::RoutesProjection.filters(), sync.watermark()),
        pool,
        authorizer,
        builtin: Arc::new(builtin),
        admin_host: format!("gateway.{}", config.base_domain),
    };
    let (admin_routes, _) = api::routes().with_state(state).split_for_parts();
    let admin_app = App::new("gateway", metrics).router(admin_routes).openapi(openapi()).build();
    let admin_server = tokio::spawn(edd_kit::shutdown::serve(admin, admin_app, shutdown.wait()));
    let mut tasks = Vec::new();
    let limits = server::Limits {
        max_header_bytes: config.max_header_bytes,
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
    };
    let mut http_transport = server::Transport::Plain;
    let mut listeners = Vec::new();
    if let Some(https) = https {
        let files = if config.tls_certs.is_empty() {
            let mut names = vec![config.base_domain.clone(), format!("*.{}", config.base_domain)];
            names.extend(builtin_hosts.iter().cloned());
            let dev = tls::dev_certificate(&config.tls_dev_dir, &names)?;
            tracing::warn!(cert = %dev.cert.display(), "no TLS certificate configured; serving the self-signed development certificate");
            vec![dev]
        } else {
            config.tls_certs.clone()
        };
        let store = tls::CertStore::load(files)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config()?);
        tasks.push(tokio::spawn(store.watch(Duration::from_secs(config.tls_reload_secs), shutdown.clone())));
        if config.redirect_https {
            http_transport = server::Transport::RedirectToHttps { port: https.local_addr()?.port() };
        }
        listeners.push((https, server::Transport::Tls(acceptor)));
    }
    listeners.push((http, http_transport));
    workers::serve(listeners, gateway, workers::count(config.workers), limits, shutdown).await?;
    for task in tasks {
        let _ = task.await;
    }
    let _ = admin_server.await;
    Ok(())
}
