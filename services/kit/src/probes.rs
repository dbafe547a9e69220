//! `/healthz`, `/readyz` and `/metrics`: what Kubernetes probes and Prometheus scrape.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::problem::Problem;

/// How long one readiness check may take before it counts as failed.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named dependency the service needs before it can take traffic.
#[derive(Clone)]
pub(crate) struct ReadinessCheck {
    name: String,
    check: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl ReadinessCheck {
    pub(crate) fn new<F, Fut, E>(name: String, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let check = move || -> CheckFuture {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|err| format!("{err:#}")) })
        };
        Self { name, check: Arc::new(check) }
    }

    async fn run(&self) -> Result<(), String> {
        tokio::time::timeout(CHECK_DEADLINE, (self.check)())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", CHECK_DEADLINE.as_secs())))
    }
}

#[derive(Clone)]
struct Probes {
    service: &'static str,
    checks: Arc<[ReadinessCheck]>,
    metrics: Metrics,
}

pub(crate) fn router(service: &'static str, checks: Vec<ReadinessCheck>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Probes { service, checks: checks.into(), metrics })
}

/// Alive as long as the process answers; dependencies are `/readyz`'s business, so a database
/// outage does not make Kubernetes restart every pod.
async fn healthz(State(probes): State<Probes>) -> Json<Value> {
    Json(json!({ "status": "ok", "service": probes.service }))
}

async fn readyz(State(probes): State<Probes>) -> Response {
    let results = futures_util::future::join_all(
        probes.checks.iter().map(|check| async move { (check.name.as_str(), check.run().await) }),
    )
    .await;

    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => {
                checks.insert(name, "ok");
            }
            Err(err) => {
                // The reason goes to the log only: it can name hosts and users.
                tracing::warn!(check = name, error = err, "readiness check failed");
                checks.insert(name, "failing");
                failing.push(name);
            }
        }
    }

    if failing.is_empty() {
        Json(json!({ "status": "ready", "service": probes.service, "checks": checks })).into_response()
    } else {
        Problem::unavailable(format!("not ready: {}", failing.join(", ")))
            .with_extension("service", probes.service)
            .with_extension("checks", json!(checks))
            .into_response()
    }
}

/// OpenMetrics or Prometheus text, as `Accept` asks (see [`Metrics::scrape`]).
async fn metrics_text(State(probes): State<Probes>, headers: HeaderMap) -> Response {
    probes.metrics.scrape(&headers).await
}
