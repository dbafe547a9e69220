//! What the gateway records of each request: one JSON access-log line and the per-route Prometheus
//! metrics, both written when the response body ends (or is abandoned), so `bytes` is what was
//! actually sent.
//!
//! The access log is written by its own thread from a bounded queue: a slow disk never slows the
//! proxy, and a full queue drops lines (counted in `gateway_access_log_dropped_total`) rather than
//! growing. Paths are logged without their query string, which may carry a token.

use std::{
    fs,
    io::{self, Write},
    net::IpAddr,
    path::PathBuf,
    pin::Pin,
    sync::mpsc::{self, SyncSender, TrySendError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use edd_kit::Metrics;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
};
use serde::Serialize;

use crate::proxy::ProxyBody;

/// Lines waiting for the writer; at 20 ms batches this covers ~800k requests/s.
const QUEUE: usize = 16 * 1024;
/// How long the writer lets lines gather before writing them.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for AccessLogTarget {
    type Err = String;

    /// `off`, `-` (standard output) or a file path (appended to).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" => return Err("empty access log target; use off, - or a path".into()),
            "off" => Self::Off,
            "-" => Self::Stdout,
            path => Self::File(path.into()),
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Why the gateway refused a request or connection itself.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    Connections,
    Rate,
    BodyTooLarge,
}

/// The access log and the gateway's metrics. Clones share them.
#[derive(Clone)]
pub struct Observer {
    log: Option<SyncSender<Vec<u8>>>,
    requests: Family<StatusLabels, Counter>,
    latency: HistogramFamily,
    refused: Family<ReasonLabels, Counter>,
    open_connections: Gauge,
    dropped_lines: Counter,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("access_log", &self.log.is_some()).finish_non_exhaustive()
    }
}

impl Observer {
    /// Registers the gateway's metrics in `metrics` and starts the access-log writer.
    pub fn new(metrics: &Metrics, access_log: &AccessLogTarget) -> io::Result<Self> {
        let observer = Self {
            log: start_writer(access_log)?,
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            refused: Family::default(),
            open_connections: Gauge::default(),
            dropped_lines: Counter::default(),
        };
        metrics.register("gateway_requests", "Requests by route and status class", observer.requests.clone());
        metrics.register(
            "gateway_request_duration_seconds",
            "Time from request to response head, by route",
            observer.latency.clone(),
        );
        metrics.register(
            "gateway_refused",
            "Requests and connections the gateway refused itself",
            observer.refused.clone(),
        );
        metrics.register("gateway_open_connections", "Client connections open now", observer.open_connections.clone());
        metrics.register(
            "gateway_access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            observer.dropped_lines.clone(),
        );
        Ok(observer)
    }

    /// Metrics in a registry nobody reads and no access log (tests and tools).
    pub fn quiet() -> Self {
        Self::new(&Metrics::new(), &AccessLogTarget::Off).unwrap_or_else(|_| unreachable!("no writer to start"))
    }

    pub fn refused(&self, why: Refusal) {
        let reason = match why {
            Refusal::Connections => "connections",
            Refusal::Rate => "rate",
            Refusal::BodyTooLarge => "body_too_large",
        };
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection(&self) -> ConnectionGauge {
        self.open_connections.inc();
        ConnectionGauge(self.open_connections.clone())
    }

    fn finish(&self, exchange: &Exchange, bytes: u64, completed: bool) {
        let route = exchange.route.clone().unwrap_or_else(|| "-".to_owned());
        let status_class = match exchange.status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.get_or_create(&StatusLabels { route: route.clone(), status_class }).inc();
        self.latency.get_or_create(&RouteLabels { route }).observe(exchange.head.as_secs_f64());
        let Some(log) = &self.log else { return };
        let line = AccessLine {
            ts: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            request_id: &exchange.request_id,
            client: exchange.client,
            method: &exchange.method,
            host: &exchange.host,
            path: &exchange.path,
            route: exchange.route.as_deref(),
            status: exchange.status,
            bytes,
            upstream_ms: exchange.upstream.map(|d| d.as_secs_f64() * 1e3),
            duration_ms: exchange.started.elapsed().as_secs_f64() * 1e3,
            completed,
        };
        let Ok(mut json) = serde_json::to_vec(&line) else { return };
        json.push(b'\n');
        match log.try_send(json) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped_lines.inc();
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Decrements the open-connection gauge when dropped.
pub struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Serialize)]
struct AccessLine<'a> {
    ts: String,
    request_id: &'a str,
    client: IpAddr,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    status: u16,
    bytes: u64,
    upstream_ms: Option<f64>,
    duration_ms: f64,
    completed: bool,
}

fn start_writer(target: &AccessLogTarget) -> io::Result<Option<SyncSender<Vec<u8>>>> {
    let out: Box<dyn Write + Send> = match target {
        AccessLogTarget::Off => return Ok(None),
        AccessLogTarget::Stdout => Box::new(io::stdout()),
        AccessLogTarget::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)?;
            }
            // An access log names clients and paths: for the operator only (0600), also when an
            // older run left it readable by others.
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            let file = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            Box::new(file)
        }
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    std::thread::Builder::new().name("gateway-access-log".into()).spawn(move || {
        let mut out = io::BufWriter::with_capacity(64 * 1024, out);
        // Blocks while idle; under load it wakes once per batch, not once per request (a wake-up
        // per line cost more CPU than the proxying). Ends when the gateway is gone.
        while let Ok(first) = rx.recv() {
            std::thread::sleep(BATCH_WAIT);
            let mut result = out.write_all(&first);
            while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
                result = out.write_all(&line);
            }
            if let Err(e) = result.and_then(|()| out.flush()) {
                tracing::warn!(error = %e, "cannot write the access log");
            }
        }
    })?;
    Ok(Some(tx))
}

/// One request as the gateway saw it, completed as the exchange goes on.
#[derive(Debug)]
pub struct Exchange {
    pub started: Instant,
    pub client: IpAddr,
    pub request_id: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub route: Option<String>,
    pub status: u16,
    /// Time until the upstream's response head, if one was asked.
    pub upstream: Option<Duration>,
    /// Time until the response head went back to the client.
    pub head: Duration,
}

/// A response body that records the exchange when it ends or is dropped.
pub struct Observed {
    inner: ProxyBody,
    bytes: u64,
    record: Option<(Box<Exchange>, Observer)>,
}

impl Observed {
    pub fn new(inner: ProxyBody, exchange: Exchange, observer: Observer) -> Self {
        Self { inner, bytes: 0, record: Some((Box::new(exchange), observer)) }
    }

    fn finish(&mut self, completed: bool) {
        if let Some((exchange, observer)) = self.record.take() {
            observer.finish(&exchange, self.bytes, completed);
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // A body hyper never polled (empty, HEAD, 101) ended when it was dropped.
        let completed = self.inner.is_end_stream();
        self.finish(completed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_access_log_is_readable_by_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("edd-access-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        // An older run's log, readable by everyone, is tightened too.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _ = start_writer(&AccessLogTarget::File(path.clone())).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
