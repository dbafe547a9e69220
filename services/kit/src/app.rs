//! The HTTP application builder: a service's own routes plus the probes and the shared request
//! pipeline, so every service answers, logs and counts requests the same way.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;

use crate::metrics::{self, Metrics};
use crate::middleware;
use crate::probes::{self, ReadinessCheck};

const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a service's [`Router`].
///
/// The result serves `GET /healthz`, `GET /readyz`, `GET /metrics` (and `GET /openapi.json` when
/// given) besides the service's own
/// routes (which must not reuse those paths), and answers unknown paths with a problem+json 404.
pub struct App {
    service: &'static str,
    metrics: Metrics,
    router: Router,
    checks: Vec<ReadinessCheck>,
    body_limit: usize,
    request_timeout: Duration,
    openapi: Option<utoipa::openapi::OpenApi>,
}

impl App {
    pub fn new(service: &'static str, metrics: Metrics) -> Self {
        Self {
            service,
            metrics,
            router: Router::new(),
            checks: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_TIMEOUT,
            openapi: None,
        }
    }

    /// The service's own routes; called again, the routers are merged.
    pub fn router(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// The service's HTTP contract, served at `GET /openapi.json` (public, like the probes: it is
    /// documentation, and names nothing about any user). Make it with [`crate::openapi::document`].
    pub fn openapi(mut self, document: utoipa::openapi::OpenApi) -> Self {
        self.openapi = Some(document);
        self
    }

    /// A dependency `/readyz` checks, e.g. `|| async move { pool.acquire().await.map(drop) }`.
    /// Each check gets 2 s.
    pub fn readiness<F, Fut, E>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        self.checks.push(ReadinessCheck::new(name.into(), check));
        self
    }

    /// Largest body the `Bytes`, `String`, `Json` and `Form` extractors accept (default 1 MiB).
    /// A route that streams `Body` is not limited; a route needing another limit adds its own
    /// `DefaultBodyLimit` layer, which wins over this one.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Longest time a handler may take to produce its response head (default 30 s); a request
    /// that takes longer gets a 503.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn build(self) -> Router {
        // `Router::layer` wraps each route after routing, so the matched route is known to the
        // metrics; the last layer added runs first.
        let mut router = probes::router(self.service, self.checks, self.metrics.clone()).merge(self.router);
        if let Some(document) = self.openapi {
            let body = axum::body::Bytes::from(crate::openapi::to_json(&document));
            router = router.route(
                "/openapi.json",
                axum::routing::get(move || {
                    let body = body.clone();
                    async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
                }),
            );
        }
        router
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(from_fn(middleware::problem_errors))
            .layer(from_fn(middleware::catch_panic))
            .layer(from_fn_with_state(self.request_timeout, middleware::timeout))
            .layer(from_fn_with_state(self.metrics, metrics::record_http))
            .layer(from_fn(middleware::trace))
    }
}
