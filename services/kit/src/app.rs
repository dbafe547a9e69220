//! The HTTP application builder: a service's own routes plus the probes and the shared request
//! pipeline, so every service answers, logs and counts requests the same way.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use tower::util::MapRequestLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::metrics::{self, Metrics};
use crate::middleware::{self, AllowedOrigins, REQUEST_ID_HEADER};
use crate::probes::{self, ReadinessCheck};

const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a service's [`Router`].
///
/// The result serves `GET /healthz`, `GET /readyz`, `GET /metrics` (and `GET /openapi.json` when
/// given) besides the service's own
/// routes (which must not reuse those paths), and answers unknown paths with a problem+json 404.
/// A request authenticated by the session cookie that changes state must carry `X-Requested-With`
/// ([`crate::csrf`]).
pub struct App {
    service: &'static str,
    metrics: Metrics,
    router: Router,
    checks: Vec<ReadinessCheck>,
    body_limit: usize,
    request_timeout: Duration,
    openapi: Option<utoipa::openapi::OpenApi>,
    cors: Option<AllowedOrigins>,
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
            cors: None,
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

    /// Lets browser pages of `origins` call the service (CORS): an allowed origin is answered
    /// with itself (never `*`) and credentials allowed; methods GET, POST, PUT, DELETE, PATCH;
    /// request headers `Authorization`, `Content-Type`, `X-Request-Id`, `X-Requested-With` (see
    /// [`crate::csrf`]), `Range` and the `If-*` ones; `Content-Range`, `ETag`, `X-Request-Id` and `Retry-After` readable by the page.
    /// Without it, no CORS headers are sent (browsers then refuse cross-origin reads). With it,
    /// every `OPTIONS` request is answered as a preflight.
    pub fn cors(mut self, origins: AllowedOrigins) -> Self {
        self.cors = Some(origins);
        self
    }

    pub fn build(self) -> Router {
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
        // One stack, outermost first, given to `Router::layer` once: it wraps each route after
        // routing, so the matched route is known to the metrics; each further `Router::layer`
        // call would box the service and its future again (one call per layer measured ~2.5 µs
        // a request more, of ~10, in the `pipeline_overhead` setup).
        let pipeline = ServiceBuilder::new()
            .layer(MapRequestLayer::new(middleware::drop_invalid_request_id))
            .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, middleware::UuidV7))
            .layer(MapRequestLayer::new(middleware::expose_request_id))
            // Outside the span and everything else, so every answer carries the id.
            .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(middleware::RequestSpan)
                    .on_request(())
                    .on_response(middleware::LogCompletion)
                    .on_body_chunk(())
                    .on_eos(())
                    // The "request completed" line has the status already; a 500's cause is
                    // logged where it happens (`Problem::internal`).
                    .on_failure(()),
            )
            .layer(from_fn_with_state(self.metrics, metrics::record_http))
            // Outside the error answers, so a browser page can read those too.
            .option_layer(self.cors.map(AllowedOrigins::cors_layer))
            // Inside CORS, so a page of the platform can read the refusal; see `crate::csrf`.
            .layer(from_fn(crate::csrf::refuse_cross_site))
            .layer(CompressionLayer::new().compress_when(middleware::CompressJson))
            .layer(from_fn(middleware::problem_errors))
            .layer(CatchPanicLayer::custom(middleware::PanicProblem))
            // Hand-written, not tower-http's `TimeoutLayer`: measured cheaper (see its comment).
            // Bounds the time to the response head only: a streamed body is not cut off.
            .layer(from_fn_with_state(self.request_timeout, middleware::timeout))
            // axum's limit, not tower-http's `RequestBodyLimitLayer`: it applies to the buffering
            // extractors (`Bytes`, `Json`, `Form`, …) only, so a route that streams `Body`
            // (storage uploads, limited by quota) is not cut off; tower-http's would limit every
            // body, streamed or not, and answer 413 on the `Content-Length` alone.
            .layer(DefaultBodyLimit::max(self.body_limit));
        router.layer(pipeline)
    }
}
