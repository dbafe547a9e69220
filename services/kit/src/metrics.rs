//! Prometheus metrics: one registry per service that every crate in it can register into, and the
//! HTTP request metrics the app's middleware records.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

/// Content type of [`Metrics::render`]'s output.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A service's metric registry. Clones share it.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    http: HttpMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        Self { registry: Arc::new(Mutex::new(registry)), http }
    }

    /// Registers a metric; keep a clone of it to update it. Counters get `_total` appended.
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Direct access for what [`Metrics::register`] does not cover (units, prefixes, collectors).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    /// All metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.lock()) {
            // Only a custom collector can fail here; a partial scrape beats none.
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable; metrics must not take the
        // service down with them.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    method: &'static str,
    route: String,
}

type HistogramFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let duration = HistogramFamily::new_with_constructor(|| {
            // 5 ms to ~10 s.
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time until the response head was ready",
            Unit::Seconds,
            duration.clone(),
        );
        Self { requests, duration }
    }

    fn observe(&self, method: &'static str, route: String, status: StatusCode, elapsed: Duration) {
        self.duration.get_or_create(&DurationLabels { method, route: route.clone() }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, status_class: status_class(status) }).inc();
    }
}

/// Middleware recording [`HttpMetrics`]. It must run after routing (`Router::layer`), where the
/// matched route template is known, so `/files/{id}` stays one series however many ids exist.
pub(crate) async fn record_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.http.observe(method, route, response.status(), started.elapsed());
    response
}

// Clients can send any token as a method; only known ones become label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn renders_registered_metrics_in_openmetrics_text() {
        let metrics = Metrics::new();
        let lag = Gauge::<i64>::default();
        metrics.register("projection_lag", "Events behind the stream head", lag.clone());
        lag.set(42);
        let text = metrics.clone().render();
        assert!(text.contains("projection_lag 42"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn http_metrics_use_bounded_labels() {
        let metrics = Metrics::new();
        metrics.http.observe(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "/files/{id}".to_owned(),
            StatusCode::NOT_FOUND,
            Duration::from_millis(3),
        );
        let text = metrics.render();
        assert!(
            text.contains(r#"http_requests_total{method="OTHER",route="/files/{id}",status_class="4xx"} 1"#),
            "{text}"
        );
        assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
    }
}
