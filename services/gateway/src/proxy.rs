//! Forwarding one request: admit it (rate and body limits), pick the route, rewrite the URI and
//! headers, stream the bodies both ways, retry an idempotent request once if its upstream
//! connection failed before any answer, pass on an upstream's answer that comes before it has read
//! the request body (see [`crate::early`]), and tunnel protocol upgrades (WebSocket) once the
//! upstream agrees to them.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use edd_kit::Problem;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Method, Request, Response, StatusCode, Uri,
};
use hyper_util::{
    client::legacy::{
        connect::{capture_connection, HttpConnector},
        Client,
    },
    rt::{TokioExecutor, TokioIo},
};

use crate::{
    clients::{ClientLimits, ClientLimitsConfig},
    early,
    observe::{Exchange, Observed, Observer, Refusal},
    routes::{Protocol, Route, RouteTable},
};
/// The body of everything the gateway answers: a streamed upstream body or a small local one.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How the gateway behaves beyond its routes.
#[derive(Clone, Debug)]
pub struct Options {
    pub clients: ClientLimitsConfig,
    /// Largest request body on a route that sets none.
    pub max_body_bytes: u64,
    /// Longest wait for an upstream's response head.
    pub upstream_timeout: Duration,
    pub observer: Observer,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clients: ClientLimitsConfig::default(),
            max_body_bytes: 1 << 30,
            upstream_timeout: Duration::from_secs(60),
            observer: Observer::quiet(),
        }
    }
}

/// How a request reached the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    /// Plain HTTP on a listener that only redirects to HTTPS on this port.
    RedirectToHttps {
        port: u16,
    },
}

/// The proxy: the current route table, pooled upstream clients and the per-client limits.
///
/// [`Gateway::sibling`] makes another one sharing the table, limits and observer but with its own
/// upstream pools, for a listener running on another runtime (see [`crate::workers`]).
pub struct Gateway {
    routes: Arc<RwLock<Arc<RouteTable>>>,
    http1: Client<early::Connector, UpstreamBody>,
    h2c: Client<HttpConnector, UpstreamBody>,
    clients: ClientLimits,
    options: Options,
}

impl Gateway {
    pub fn new(routes: RouteTable, options: Options) -> Self {
        let (http1, h2c) = upstream_clients();
        let clients = ClientLimits::new(options.clients);
        Self { routes: Arc::new(RwLock::new(Arc::new(routes))), http1, h2c, clients, options }
    }

    /// A gateway sharing this one's routes (a swap reaches both), client limits and observer, with
    /// its own upstream connection pools: pooled connections belong to the runtime that opened them.
    pub fn sibling(&self) -> Self {
        let (http1, h2c) = upstream_clients();
        Self { routes: self.routes.clone(), http1, h2c, clients: self.clients.clone(), options: self.options.clone() }
    }

    /// Swaps in a new table; requests already routed keep going where they were sent.
    pub fn set_routes(&self, routes: RouteTable) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clients(&self) -> &ClientLimits {
        &self.clients
    }

    pub fn observer(&self) -> &Observer {
        &self.options.observer
    }

    /// Answers one client request. `connection` is whatever keeps the client's connection counted
    /// (its slot, the open-connections gauge): an upgraded tunnel holds it until the tunnel closes.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        scheme: Scheme,
        connection: Held,
    ) -> Response<Observed> {
        let request_id = request_id(req.headers());
        let mut exchange = Exchange {
            started: Instant::now(),
            client: peer.ip(),
            request_id: request_id.to_str().unwrap_or("-").to_owned(),
            method: req.method().as_str().chars().take(32).collect(),
            host: request_host(&req).unwrap_or_default().chars().take(255).collect(),
            path: req.uri().path().chars().take(1024).collect(),
            route: None,
            status: 0,
            upstream: None,
            head: Duration::ZERO,
        };
        let result = match scheme {
            Scheme::RedirectToHttps { port } => redirect_to_https(&req, port),
            Scheme::Http | Scheme::Https => {
                let scheme = if scheme == Scheme::Https { "https" } else { "http" };
                self.forward(req, peer, scheme, &request_id, &mut exchange, connection).await
            }
        };
        let mut response = result.unwrap_or_else(problem_response);
        response.headers_mut().insert(REQUEST_ID, request_id);
        exchange.status = response.status().as_u16();
        exchange.head = exchange.started.elapsed();
        let observer = self.options.observer.clone();
        response.map(|body| Observed::new(body, exchange, observer))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        request_id: &HeaderValue,
        exchange: &mut Exchange,
        connection: Held,
    ) -> Result<Response<ProxyBody>, Problem> {
        if let Err(wait) = self.clients.admit(peer.ip()) {
            self.options.observer.refused(Refusal::Rate);
            return Err(Problem::too_many_requests(wait.as_secs().max(1)));
        }
        if req.method() == Method::CONNECT {
            return Err(Problem::new(StatusCode::METHOD_NOT_ALLOWED).with_detail("the gateway is not a forward proxy"));
        }
        let host = request_host(&req).ok_or_else(|| Problem::bad_request("the request names no host"))?;
        // Checked before any lookup: a long or odd host costs work and must not reach upstreams.
        let host = valid_host(host).ok_or_else(|| Problem::bad_request("the Host header is not a valid host name"))?;
        let routes = self.routes();
        let route = routes
            .lookup(&host, req.uri().path())
            .ok_or_else(|| Problem::not_found(format!("no route for {host}{}", req.uri().path())))?;
        exchange.route = Some(route.id.clone());
        if route.builtin && req.uri().path() == "/metrics" {
            // The services' metrics are for the cluster's scraper, not the internet.
            return Err(Problem::not_found("/metrics is not served through the gateway"));
        }
        let limit = route.max_body_bytes.unwrap_or(self.options.max_body_bytes);
        if req.body().size_hint().lower() > limit {
            self.options.observer.refused(Refusal::BodyTooLarge);
            return Err(too_large(limit));
        }
        let path = route.upstream_path(req.uri().path(), req.uri().query());
        let uri: Uri = format!("http://{}{}", route.upstream.authority, path)
            .parse()
            .map_err(|_| Problem::bad_request("the request path cannot be forwarded"))?;
        let upgrade = upgrade_protocol(req.headers());
        // gRPC needs `te: trailers` to reach the upstream; every other `te` is hop-by-hop.
        let wants_trailers =
            req.headers().get(header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));

        let mut headers = std::mem::take(req.headers_mut());
        strip_hop_by_hop(&mut headers);
        match route.upstream.protocol {
            // HTTP/2 carries the host in `:authority` (the URI).
            Protocol::H2c => {
                headers.remove(header::HOST);
            }
            // The host the request was routed by, whichever way the client named it (HTTP/2
            // clients send none); this also drops duplicate Host headers.
            Protocol::Http1 => {
                if let Ok(value) = HeaderValue::from_str(&host) {
                    headers.insert(header::HOST, value);
                }
                merge_cookies(&mut headers);
            }
        }
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        set_forwarded(&mut headers, peer, scheme, &host);
        headers.insert(REQUEST_ID, request_id.clone());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

        let method = req.method().clone();
        let body = UpstreamBody::new(req.into_body(), limit);
        let body_sent = body.finished.clone();
        let tripped = body.tripped.clone();
        // Only a request that can be sent again unchanged is retried: idempotent, with no body.
        let retry = (is_idempotent(&method) && body.is_end_stream()).then(|| (headers.clone(), uri.clone()));
        let upstream_request = |headers: HeaderMap, uri: Uri, body: UpstreamBody| {
            let mut request = Request::new(body);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            if route.upstream.protocol == Protocol::H2c {
                *request.version_mut() = hyper::Version::HTTP_2;
            }
            request
        };

        let asked = Instant::now();
        let mut result = self.send(route, upstream_request(headers, uri, body), body_sent).await;
        if let (Err(failure), Some((headers, uri))) = (&result, retry) {
            if failure.retryable() {
                if failure.is_connect() {
                    // A restarting upstream gets a moment before the one retry.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tracing::debug!(route = %route.id, "retrying an idempotent request once");
                let empty = UpstreamBody::empty();
                let sent = empty.finished.clone();
                result = self.send(route, upstream_request(headers, uri, empty), sent).await;
            }
        }
        exchange.upstream = Some(asked.elapsed());
        let mut response = result.map_err(|failure| {
            if tripped.load(Ordering::Relaxed) {
                self.options.observer.refused(Refusal::BodyTooLarge);
                return too_large(limit);
            }
            failure.problem(route)
        })?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    // The tunnel is still the client's connection: it keeps its slot until it closes.
                    let _connection = connection;
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                    }
                });
                let (mut parts, _) = response.into_parts();
                let protocol = parts.headers.get(header::UPGRADE).cloned();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Some(p) = protocol {
                    parts.headers.insert(header::UPGRADE, p);
                }
                return Ok(Response::from_parts(parts, empty()));
            }
        }
        strip_hop_by_hop(response.headers_mut());
        Ok(response.map(|b| b.boxed()))
    }

    /// One attempt at the upstream. The upstream timeout runs from when the request body has been
    /// sent: an upload takes as long as the client takes (the idle timeout bounds a stalled one).
    ///
    /// An answer that arrives before the body is all sent (the upstream refused it unread) is the
    /// answer: it goes back to the client, and the HTTP/1.1 connection it came on is not reused.
    async fn send(
        &self,
        route: &Route,
        mut request: Request<UpstreamBody>,
        body_sent: Arc<tokio::sync::Notify>,
    ) -> Result<Response<Incoming>, Failure> {
        let already_sent = request.body().is_end_stream();
        let (response, connection) = match route.upstream.protocol {
            Protocol::Http1 => {
                let connection = capture_connection(&mut request);
                (self.http1.request(request), Some(connection))
            }
            // One HTTP/2 stream answering early ends only that stream (hyper resets it).
            Protocol::H2c => (self.h2c.request(request), None),
        };
        tokio::pin!(response);
        if !already_sent {
            tokio::select! {
                result = &mut response => {
                    let response = result.map_err(Failure::Client)?;
                    if let Some(connection) = &connection {
                        early::poison(connection);
                    }
                    return Ok(response);
                }
                () = body_sent.notified() => {}
            }
        }
        let response = match tokio::time::timeout(self.options.upstream_timeout, response).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(Failure::Client(e)),
            Err(_) => return Err(Failure::Timeout(self.options.upstream_timeout)),
        };
        // Writing to it failed: the upstream closed it, or is about to.
        if let (true, Some(connection)) = (early::write_broken(&response), &connection) {
            early::poison(connection);
        }
        Ok(response)
    }
}

/// Pooled HTTP/1.1 keep-alive (on [`early::Connector`] connections) and h2c clients.
fn upstream_clients() -> (Client<early::Connector, UpstreamBody>, Client<HttpConnector, UpstreamBody>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let http1 = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(early::Connector(connector.clone()));
    let h2c = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
    (http1, h2c)
}

/// Why an upstream gave no response.
enum Failure {
    Client(hyper_util::client::legacy::Error),
    Timeout(Duration),
}

impl Failure {
    fn is_connect(&self) -> bool {
        matches!(self, Self::Client(e) if e.is_connect())
    }

    /// No connection, or one that closed before any answer: the upstream did not act on it.
    fn retryable(&self) -> bool {
        let Self::Client(e) = self else { return false };
        let closed_early = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled());
        e.is_connect() || closed_early
    }

    /// The client's own body failed (it went away mid-upload): not the upstream's fault.
    fn client_aborted(&self) -> bool {
        let Self::Client(e) = self else { return false };
        let mut source = std::error::Error::source(e);
        while let Some(error) = source {
            if matches!(error.downcast_ref::<UpstreamBodyError>(), Some(UpstreamBodyError::Client(_))) {
                return true;
            }
            source = error.source();
        }
        false
    }

    fn problem(&self, route: &Route) -> Problem {
        if self.client_aborted() {
            tracing::debug!(route = %route.id, "the client's request body ended early");
            return Problem::bad_request("the request body ended before it was complete");
        }
        match self {
            Self::Timeout(after) => {
                tracing::warn!(route = %route.id, timeout = ?after, "upstream timed out");
                Problem::new(StatusCode::GATEWAY_TIMEOUT)
                    .with_detail(format!("the upstream of route {} did not answer within {after:?}", route.id))
            }
            Self::Client(e) if e.is_connect() => {
                tracing::warn!(route = %route.id, error = %e, "upstream unreachable");
                Problem::unavailable(format!("the upstream of route {} is not accepting connections", route.id))
                    .with_retry_after(1)
            }
            Self::Client(e) => {
                tracing::warn!(route = %route.id, error = %e, "upstream failed");
                Problem::new(StatusCode::BAD_GATEWAY)
                    .with_detail(format!("the upstream of route {} failed to answer", route.id))
            }
        }
    }
}

/// What keeps a client connection counted while something outlives its request (a tunnel).
pub type Held = Arc<dyn std::any::Any + Send + Sync>;

/// `host[:port]` as routed (lowercase, no port, no trailing dot) if it is a DNS name or an IP
/// literal of sane length with a numeric port; else `None`.
fn valid_host(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > crate::routes::MAX_HOST_LEN + 6 {
        return None;
    }
    let (name, port) = match raw.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            (&raw[..v6.len() + 2], after.strip_prefix(':'))
        }
        None => match raw.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    let name = name.trim_end_matches('.');
    let dns = !name.is_empty()
        && name.len() <= crate::routes::MAX_HOST_LEN
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    (dns || name.starts_with('[')).then(|| name.to_ascii_lowercase())
}

/// HTTP/2 clients may split `cookie` into several fields; an HTTP/1.1 upstream gets one
/// (RFC 9113 §8.2.3).
fn merge_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

fn too_large(limit: u64) -> Problem {
    Problem::payload_too_large(format!("the request body exceeds this route's limit of {limit} bytes"))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// The host a request is for: the URI's authority (HTTP/2, absolute form) or the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// `308` to the same URL on HTTPS (308 keeps the method and body, unlike 301).
fn redirect_to_https(req: &Request<Incoming>, port: u16) -> Result<Response<ProxyBody>, Problem> {
    let host = request_host(req)
        .and_then(valid_host)
        .ok_or_else(|| Problem::bad_request("the request names no valid host"))?;
    let authority = if port == 443 { host } else { format!("{host}:{port}") };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::from_str(&format!("https://{authority}{path}"))
        .map_err(|_| Problem::bad_request("the request cannot be redirected"))?;
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The request body as sent upstream: the client's, cut off with an error past the route's limit
/// (the check on `Content-Length` catches honest clients before any byte is sent). What the client
/// still sends once nobody reads it (the upstream answered, failed, or the limit tripped) is read
/// and discarded for a while ([`early::linger`]), so the client gets to read its answer.
pub struct UpstreamBody {
    inner: Option<Incoming>,
    /// The client's body ended (nothing left to linger over).
    ended: bool,
    remaining: u64,
    tripped: Arc<AtomicBool>,
    /// Notified once the whole body has been handed to the upstream connection.
    finished: Arc<tokio::sync::Notify>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error("the request body exceeds the route's limit")]
    TooLarge,
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
}

impl UpstreamBody {
    fn new(inner: Incoming, limit: u64) -> Self {
        Self { inner: Some(inner), ended: false, remaining: limit, tripped: Arc::default(), finished: Arc::default() }
    }

    fn empty() -> Self {
        Self { inner: None, ended: true, remaining: 0, tripped: Arc::default(), finished: Arc::default() }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take().filter(|inner| !self.ended && !inner.is_end_stream()) {
            early::linger(inner);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let frame = match std::task::ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => {
                // `notify_one` keeps a permit if nobody waits yet, so the signal is never missed.
                self.ended = true;
                self.finished.notify_one();
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.tripped.store(true, Ordering::Relaxed);
                if let Some(inner) = self.inner.take() {
                    early::linger(inner);
                }
                return Poll::Ready(Some(Err(UpstreamBodyError::TooLarge)));
            }
            self.remaining -= len;
        }
        if self.inner.as_ref().is_some_and(Body::is_end_stream) {
            self.ended = true;
            self.finished.notify_one();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// The client's request id if it is well-formed (`^[A-Za-z0-9._-]{1,128}$`), else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let valid = |v: &&HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    };
    headers.get(REQUEST_ID).filter(valid).cloned().unwrap_or_else(fresh_request_id)
}

/// A UUIDv7 whose random part comes from a per-thread generator: `Uuid::now_v7` asks the kernel for
/// randomness on every request, which showed up in the benchmark. Request ids correlate log lines;
/// they are not secrets, so a seeded xorshift is enough.
fn fresh_request_id() -> HeaderValue {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
    }
    let random = STATE.with(|state| {
        let mut x = state.get();
        let mut bytes = [0u8; 10];
        for chunk in bytes.chunks_mut(5) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..5]);
        }
        state.set(x);
        bytes
    });
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    HeaderValue::from_str(id.simple().encode_lower(&mut buf)).unwrap_or(HeaderValue::from_static("-"))
}

/// The protocol a client asks to switch to, if this is an HTTP/1.1 WebSocket upgrade. Other
/// upgrades (notably `h2c`, which would open an HTTP/2 tunnel past every limit) are not forwarded.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).filter(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket")).cloned())
        .flatten()
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Headers by which a client could claim a different origin; the gateway is the edge, so they are
/// dropped and its own `X-Forwarded-*` set.
const CLIENT_FORWARDING: &[&str] =
    &["forwarded", "x-real-ip", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server"];

/// The gateway is the edge: what clients claim in `X-Forwarded-*` is replaced, not trusted.
fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, scheme: &'static str, host: &str) {
    for name in CLIENT_FORWARDING {
        headers.remove(*name);
    }
    if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", ip);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", host);
    }
}

/// A problem+json answer from the gateway itself.
pub fn problem_response(problem: Problem) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = problem.status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(edd_kit::problem::PROBLEM_JSON));
    if let Some(secs) = problem.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_distinct_v7_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| fresh_request_id().to_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = uuid::Uuid::parse_str(ids.iter().next().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn a_client_request_id_is_kept_only_if_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc.DEF_1-2"));
        assert_eq!(request_id(&headers), "abc.DEF_1-2");
        for bad in ["has space", "semi;colon", ""] {
            headers.insert(REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_ne!(request_id(&headers), bad);
        }
        headers.insert(REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&headers).len(), 32);
    }
}
