//! Prometheus metrics: one registry per service that every crate in it can register into, and the
//! HTTP request metrics the app's middleware records.
//!
//! `/metrics` answers in the format the scraper asks for ([`Format::negotiate`]): OpenMetrics 1.0
//! when `Accept` names `application/openmetrics-text` (as Prometheus does), else the Prometheus text
//! format 0.0.4 (curl, browsers, `promtool check metrics`). Every registry also carries the
//! projections this process runs (`edd_projection_*`, see [`edd_projections::running`]), measured
//! when the scrape arrives.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use edd_projections::running;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry, Unit};

/// Content type of [`Metrics::render`]'s output (OpenMetrics 1.0 text).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of [`Metrics::render_prometheus`]'s output (Prometheus text 0.0.4).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for PostgreSQL and NATS to measure the projections.
const PROJECTION_DEADLINE: Duration = Duration::from_secs(2);

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: counters declared without `_total`, `# UNIT`, `# EOF`.
    OpenMetrics,
    /// Prometheus text 0.0.4: every `# HELP`/`# TYPE` names the samples' family.
    Prometheus,
}

impl Format {
    /// The format for these `Accept` header values: OpenMetrics when they name
    /// `application/openmetrics-text` at least as high (`q`) as anything else we serve, else
    /// Prometheus text (also when there is no `Accept` at all).
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.into_iter().flat_map(|value| value.split(',')) {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let (mut q, mut version) = (1.0_f32, None);
            for param in parts {
                let Some((key, value)) = param.split_once('=') else { continue };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            match media.as_str() {
                // Any version: Prometheus reads our 1.0.0 output for 0.0.1 as well.
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => text = text.max(q),
                "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_TEXT,
            Self::Prometheus => PROMETHEUS_TEXT,
        }
    }
}

/// A service's metric registry. Clones share it.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    http: HttpMetrics,
    projections: Arc<ProjectionMetrics>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let projections = Arc::new(ProjectionMetrics::default());
        registry.register_collector(Box::new(ProjectionCollector(projections.clone())));
        Self { registry: Arc::new(Mutex::new(registry)), http, projections }
    }

    /// Registers a metric; keep a clone of it to update it. Counters get `_total` appended.
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        // The encoder writes help verbatim; OpenMetrics wants `\`, `\n` and `\"` escaped.
        let help = help.into().replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"");
        self.lock().register(name, help, metric);
    }

    /// Direct access for what [`Metrics::register`] does not cover (units, prefixes, collectors).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    /// All metrics in the OpenMetrics text format. Projections appear as of the last
    /// [`Metrics::refresh`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.lock()) {
            // Only a custom collector can fail here; a partial scrape beats none.
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }

    /// All metrics in the Prometheus text format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render())
    }

    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.render(),
            Format::Prometheus => self.render_prometheus(),
        }
    }

    /// Measures what is measured at scrape time: the projections of this process (their
    /// checkpoints in PostgreSQL, their lag in NATS), giving up on each after 2 s.
    pub async fn refresh(&self) {
        let samples = running::sample(PROJECTION_DEADLINE).await;
        *self.projections.samples.lock().unwrap_or_else(PoisonError::into_inner) = samples;
    }

    /// The answer to `GET /metrics`: refreshed, in the format `Accept` asks for.
    pub async fn scrape(&self, headers: &HeaderMap) -> Response {
        self.refresh().await;
        let format = Format::negotiate(headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
        let mut response = ([(header::CONTENT_TYPE, format.content_type())], self.render_as(format)).into_response();
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
        response
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

/// OpenMetrics text (as prometheus-client writes it) as Prometheus text 0.0.4: `# HELP` and
/// `# TYPE` name the family the samples carry (`foo_total` for a counter `foo`, `foo_info` for an
/// info), `info` and `unknown` become `gauge` and `untyped`, and what 0.0.4 lacks is dropped:
/// `# UNIT`, `# EOF`, exemplars and `_created` samples.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let mut created = String::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                let _ = writeln!(out, "# HELP {family} {}", prometheus_help(text));
            }
            let _ = writeln!(out, "# TYPE {family} {kind}");
            created = format!("{name}_created");
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF`: not part of 0.0.4.
        } else {
            let sample = without_exemplar(line);
            let series = sample.split(['{', ' ']).next().unwrap_or_default();
            if series != created {
                out.push_str(sample);
                out.push('\n');
            }
        }
    }
    out
}

/// OpenMetrics help escapes (`\\`, `\n`, `\"`) as 0.0.4 ones (`\\`, `\n`).
fn prometheus_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some(next @ ('\\' | 'n')) => {
                out.push('\\');
                out.push(next);
            }
            // Not an escape (help registered around `Metrics::register`): a literal backslash.
            Some(other) => {
                out.push_str("\\\\");
                out.push(other);
            }
            None => out.push_str("\\\\"),
        }
    }
    out
}

/// A sample line without its OpenMetrics exemplar (` # {...} value`), minding quoted label values.
fn without_exemplar(line: &str) -> &str {
    let (mut in_quotes, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '#' if !in_quotes => return line[..i].trim_end(),
            _ => {}
        }
    }
    line
}

/// The projections of this process as of the last [`Metrics::refresh`].
#[derive(Debug, Default)]
struct ProjectionMetrics {
    samples: Mutex<Vec<running::Sample>>,
}

#[derive(Debug)]
struct ProjectionCollector(Arc<ProjectionMetrics>);

impl Collector for ProjectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let samples = self.0.samples.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if samples.is_empty() {
            return Ok(());
        }
        let by_name = |value: fn(&running::Sample) -> Option<u64>| {
            samples.iter().filter_map(move |s| Some((vec![("projection", s.name)], value(s)?)))
        };
        gauges(
            &mut encoder,
            "edd_projection_applied_seq",
            "Last stream sequence the projection applied (its checkpoint)",
            by_name(|s| Some(s.applied_seq)),
        )?;
        gauges(
            &mut encoder,
            "edd_projection_lag_events",
            "Events of the projection's subjects in its stream after its checkpoint, not yet applied",
            by_name(|s| s.lag),
        )?;
        gauges(
            &mut encoder,
            "edd_projection_leader",
            "1 while a runner in this process holds the projection's leader lock and applies events",
            by_name(|s| Some(u64::from(s.leader))),
        )?;
        // One series per state, 1 for the current one, so `== 1` alerts never see a gap.
        let states = samples.iter().filter_map(|s| Some((s.name, s.state.as_deref()?))).flat_map(|(name, state)| {
            let extra = (!running::STATES.contains(&state)).then_some(state);
            running::STATES
                .iter()
                .copied()
                .chain(extra)
                .map(move |st| (vec![("projection", name), ("state", st)], u64::from(st == state)))
        });
        gauges(
            &mut encoder,
            "edd_projection_state",
            "1 for the state of the projection's checkpoint, 0 for the others",
            states,
        )
    }
}

/// One gauge family with the given series.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut series = series.peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
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
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::info::Info;
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use tower::ServiceExt;

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

    #[test]
    fn openmetrics_only_when_the_scraper_asks_for_it() {
        let negotiate = |accept: &[&str]| Format::negotiate(accept.iter().copied());
        // What Prometheus 2.x and 3.x send.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(&[prometheus]), Format::OpenMetrics);
        let prometheus3 = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert_eq!(negotiate(&[prometheus3]), Format::OpenMetrics);
        assert_eq!(negotiate(&["application/openmetrics-text"]), Format::OpenMetrics);
        assert_eq!(negotiate(&["text/plain", "application/openmetrics-text; version=1.0.0"]), Format::OpenMetrics);
        // Prometheus configured for the classic format only.
        assert_eq!(negotiate(&["text/plain;version=0.0.4;q=1,*/*;q=0.1"]), Format::Prometheus);
        // curl, browsers, no header at all, a refusal.
        assert_eq!(negotiate(&["*/*"]), Format::Prometheus);
        assert_eq!(negotiate(&["text/html,application/xhtml+xml,*/*;q=0.8"]), Format::Prometheus);
        assert_eq!(negotiate(&[]), Format::Prometheus);
        assert_eq!(negotiate(&["application/openmetrics-text;q=0, */*"]), Format::Prometheus);
        assert_eq!(negotiate(&["application/openmetrics-text;q=0.2, text/plain"]), Format::Prometheus);
    }

    #[test]
    fn prometheus_text_declares_the_families_the_samples_carry() {
        let metrics = Metrics::new();
        let jobs = Counter::<u64>::default();
        metrics.register("jobs", "Jobs done, \"all\" of them\nper C:\\queue", jobs.clone());
        jobs.inc();
        metrics.register("build", "Build of this binary", Info::new(vec![("version", "1.2.3")]));
        metrics.http.observe("GET", "/".to_owned(), StatusCode::OK, Duration::from_millis(1));

        let text = metrics.render_prometheus();
        // (prometheus-client ends help with a full stop.)
        assert!(text.contains("# HELP jobs_total Jobs done, \"all\" of them\\nper C:\\\\queue.\n"), "{text}");
        assert!(text.contains("# TYPE jobs_total counter\njobs_total 1\n"), "{text}");
        assert!(text.contains("# TYPE build_info gauge\nbuild_info{version=\"1.2.3\"} 1\n"), "{text}");
        assert!(
            text.contains("# HELP http_requests_total HTTP requests answered.\n# TYPE http_requests_total counter\n")
        );
        assert!(text.contains("# TYPE http_request_duration_seconds histogram\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        // OpenMetrics keeps its own conventions.
        assert!(metrics.render().contains("# TYPE jobs counter\njobs_total 1\n"));
    }

    #[test]
    fn exemplars_and_created_samples_are_left_out_of_prometheus_text() {
        let openmetrics = "# HELP reqs Requests\n# TYPE reqs counter\nreqs_total{path=\"/a # b\"} 3 # {trace_id=\"x\"} 1.0\nreqs_created{path=\"/a # b\"} 1.7e9\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(openmetrics),
            "# HELP reqs_total Requests\n# TYPE reqs_total counter\nreqs_total{path=\"/a # b\"} 3\n"
        );
    }

    fn projection(name: &'static str, state: &str, lag: Option<u64>, leader: bool) -> running::Sample {
        running::Sample { name, stream: "AUTH", applied_seq: 41, lag, state: Some(state.to_owned()), leader }
    }

    #[test]
    fn projections_are_gauges_with_one_series_per_state() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("edd_projection"), "no projections, no families");
        *metrics.projections.samples.lock().unwrap() = vec![
            projection("auth/users", "running", Some(0), true),
            projection("auth/permissions", "halted", Some(7), false),
            running::Sample { state: None, lag: None, ..projection("gateway/routes", "running", None, false) },
        ];
        let text = metrics.render_prometheus();
        for line in [
            r#"edd_projection_applied_seq{projection="auth/users"} 41"#,
            r#"edd_projection_applied_seq{projection="gateway/routes"} 41"#,
            r#"edd_projection_lag_events{projection="auth/permissions"} 7"#,
            r#"edd_projection_leader{projection="auth/users"} 1"#,
            r#"edd_projection_leader{projection="auth/permissions"} 0"#,
            r#"edd_projection_state{projection="auth/permissions",state="running"} 0"#,
            r#"edd_projection_state{projection="auth/permissions",state="halted"} 1"#,
            r#"edd_projection_state{projection="auth/users",state="running"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // What a lookup could not measure is left out rather than reported as 0.
        assert!(!text.contains(r#"edd_projection_lag_events{projection="gateway/routes"}"#), "{text}");
        assert!(!text.contains(r#"edd_projection_state{projection="gateway/routes""#), "{text}");
        promtool_check(&text);
        promtool_check(&metrics.render_as(Format::Prometheus));
    }

    /// A service's `/metrics`, as the App serves it, passes `promtool check metrics` (parse and lint).
    #[tokio::test]
    async fn metrics_endpoint_passes_promtool() {
        let metrics = Metrics::new();
        let uploads = Counter::<u64>::default();
        metrics.register("uploads", "Files uploaded", uploads.clone());
        let queue = Family::<Vec<(String, String)>, Gauge>::default();
        metrics.register("queue_depth", "Jobs waiting, by queue", queue.clone());
        let sizes = Histogram::new(exponential_buckets(1024.0, 4.0, 6));
        metrics.with_registry(|r| r.register_with_unit("upload_size", "Size of an upload", Unit::Bytes, sizes.clone()));
        uploads.inc_by(3);
        queue.get_or_create(&vec![("queue".to_owned(), "thumbnails".to_owned())]).set(5);
        queue.get_or_create(&vec![("queue".to_owned(), "mail".to_owned())]).set(0);
        sizes.observe(5000.0);

        let router = crate::App::new("test", metrics)
            .router(Router::new().route("/items/{id}", get(|| async { "item" })))
            .build();
        let get_with = |path: &str, accept: Option<&str>| {
            let mut request = axum::http::Request::get(path);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            router.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        get_with("/items/1", None).await.unwrap();
        get_with("/nope", None).await.unwrap();

        for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
            let response = get_with("/metrics", accept).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], PROMETHEUS_TEXT, "Accept: {accept:?}");
            assert_eq!(response.headers()[header::VARY], "accept");
            let text = body_text(response).await;
            assert!(text.contains(r#"http_requests_total{method="GET",route="/items/{id}",status_class="2xx"} 1"#));
            assert!(text.contains(r#"queue_depth{queue="thumbnails"} 5"#), "{text}");
            assert!(text.contains("upload_size_bytes_bucket"), "{text}");
            promtool_check(&text);
        }

        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let response = get_with("/metrics", Some(prometheus)).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], OPENMETRICS_TEXT);
        let text = body_text(response).await;
        assert!(text.contains("# TYPE uploads counter\nuploads_total 3\n") && text.ends_with("# EOF\n"), "{text}");
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Runs `promtool check metrics` on `text` and fails on any complaint. Without promtool the
    /// check is skipped with a message, except under CI, where it must be installed
    /// (`ensure_promtool` in deploy/local/lib.sh, Debian package `prometheus`).
    fn promtool_check(text: &str) {
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
                assert!(!ci, "promtool is not installed and CI is set: run `ensure_promtool` from deploy/local/lib.sh");
                eprintln!("SKIPPED promtool check: promtool is not installed (Debian package prometheus)");
                return;
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}\non\n{text}");
    }
}
