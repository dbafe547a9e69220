//! The request pipeline every service shares: request ids, a span and an access-log line per
//! request, timeouts, caught panics, CORS, compression, and problem+json for errors the framework
//! answers itself.
//!
//! The layers are tower-http's ([`crate::App::build`] stacks them); what is written here is their
//! configuration and the pieces tower-http has no layer for: the request id's alphabet, the
//! kit's [`RequestId`] extension, which origins are the platform's, which responses are compressed,
//! and `problem_errors`. One piece stays hand-written because it measured cheaper: `timeout`.

use std::any::Any;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::ResponseForPanic;
use tower_http::compression::predicate::Predicate;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
use tower_http::request_id::MakeRequestId;
use tower_http::trace::{MakeSpan, OnResponse};
use tracing::Span;

use crate::problem::{is_problem, Problem, PROBLEM_JSON};

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in the request extensions for handlers that pass it on (e.g. as an event's
/// correlation id). tower-http's `tower_http::request_id::RequestId` is there too, with the same
/// value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ids of `is_valid_request_id`'s alphabet (or UUIDs) get here: always ASCII.
        self.0.to_str().unwrap_or_default()
    }
}

/// Before `SetRequestIdLayer`: removes a client's `x-request-id` that is not safe to log and
/// forward, so a fresh one is made instead.
pub(crate) fn drop_invalid_request_id<B>(mut request: Request<B>) -> Request<B> {
    let valid = request.headers().get(&REQUEST_ID_HEADER).is_none_or(|v| v.to_str().is_ok_and(is_valid_request_id));
    if !valid {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

/// After `SetRequestIdLayer`: the id, kept or made, as the kit's [`RequestId`] extension.
pub(crate) fn expose_request_id<B>(mut request: Request<B>) -> Request<B> {
    if let Some(id) = request.headers().get(&REQUEST_ID_HEADER).cloned() {
        request.extensions_mut().insert(RequestId(id));
    }
    request
}

/// `^[A-Za-z0-9._-]{1,128}$`: ids end up in logs, headers and event metadata, so nothing that
/// could forge a log line or bloat every record gets through.
fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Fresh request ids are UUIDv7s: unique, and sorted by time in logs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UuidV7;

impl MakeRequestId for UuidV7 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<tower_http::request_id::RequestId> {
        let id = uuid::Uuid::now_v7();
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).ok().map(tower_http::request_id::RequestId::new)
    }
}

/// The span every request runs in: `request` with the method, the path and the request id. The
/// query string is left out: it can carry tokens.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let id = request.headers().get(&REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        tracing::info_span!("request", method = %request.method(), path = request.uri().path(), request_id = id)
    }
}

/// The access-log line, inside the request's span, when the response head is ready.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogCompletion;

impl<B> OnResponse<B> for LogCompletion {
    fn on_response(self, response: &Response<B>, latency: Duration, _: &Span) {
        tracing::info!(
            status = response.status().as_u16(),
            // Whole microseconds keep the number short in the log line.
            latency_ms = latency.as_micros() as f64 / 1000.0,
            "request completed"
        );
    }
}

/// A handler panic becomes a logged 500 instead of a dropped connection; the client is not told
/// the panic's text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanicProblem;

impl ResponseForPanic for PanicProblem {
    type ResponseBody = Body;

    fn response_for_panic(&mut self, payload: Box<dyn Any + Send + 'static>) -> Response {
        Problem::internal(format!("handler panicked: {}", panic_message(&*payload))).into_response()
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Bounds the time until a handler produces its response head (streamed bodies are not cut off).
///
/// Hand-written on purpose, not tower-http's `TimeoutLayer`: that one polls its `Sleep` before
/// the handler, so every request registers a timer in tokio's wheel and cancels it again, while
/// `tokio::time::timeout` polls the handler first and a handler that answers on its first poll
/// never touches the timer. Measured like `pipeline_overhead` (release, 50k `GET /healthz`, CPU
/// time, medians of 5–9 interleaved rounds), the full pipeline with only the timeout swapped:
/// tower-http's cost more in each of 11 runs, by 0.65–3.0 µs a request (median 0.8 µs of ~8.5
/// without a subscriber, 2.0 µs of ~18 with JSON logs). It also keeps the detail below.
pub(crate) async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_s = limit.as_secs_f64(), "request timed out");
            Problem::unavailable(format!("the request did not complete within {} s", limit.as_secs_f64()))
                .into_response()
        }
    }
}

/// Which browser origins may call a service (CORS) or open live connections to it: the platform's
/// own hosts — `http(s)://<base domain>` and `http(s)://*.<base domain>`, any port, so the
/// dashboard at `cloud.<base domain>` can call `auth.`, `storage.`, … — and configured extras,
/// exactly as browsers send them (`https://app.example.com`).
#[derive(Clone, Debug)]
pub struct AllowedOrigins {
    base: String,
    extra: Vec<String>,
}

impl AllowedOrigins {
    pub fn new(base_domain: &str, extra: &[String]) -> Self {
        Self {
            base: base_domain.trim().trim_end_matches('.').to_ascii_lowercase(),
            extra: extra.iter().map(|o| normalize_origin(o)).filter(|o| !o.is_empty()).collect(),
        }
    }

    /// `http(s)://<base>` or `http(s)://<anything>.<base>`, any port, or one of the extras.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        if self.extra.contains(&origin) {
            return true;
        }
        let Some(authority) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
            return false;
        };
        if authority.contains(['/', '@', '?', '#']) || authority.starts_with('[') {
            return false;
        }
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return false,
            None => authority,
        };
        !self.base.is_empty()
            && (host == self.base
                || host.strip_suffix(self.base.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')))
    }

    fn allows_header(&self, origin: &HeaderValue) -> bool {
        origin.to_str().is_ok_and(|o| self.allows(o))
    }

    /// The CORS layer: an allowed origin is echoed (never `*`) with credentials allowed; any
    /// other origin gets no CORS headers, so its browser keeps the answer from the page.
    pub(crate) fn cors_layer(self) -> CorsLayer {
        let origins = std::sync::Arc::new(self);
        let credentials = origins.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| origins.allows_header(origin)))
            .allow_credentials(AllowCredentials::predicate(move |origin, _| credentials.allows_header(origin)))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                REQUEST_ID_HEADER,
                crate::csrf::CSRF_HEADER,
                header::RANGE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::IF_UNMODIFIED_SINCE,
                header::IF_RANGE,
            ])
            .expose_headers([header::CONTENT_RANGE, header::ETAG, REQUEST_ID_HEADER, header::RETRY_AFTER])
            // Browsers cache a preflight this long (Chromium caps it at 2 h).
            .max_age(Duration::from_secs(600))
    }
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Smallest response body worth compressing: below it, gzip's header and the CPU cost more than
/// the bytes saved.
const MIN_COMPRESSED_BYTES: u64 = 1024;

/// Which responses `CompressionLayer` compresses: JSON and problem+json bodies of a known size
/// of at least [`MIN_COMPRESSED_BYTES`]. Never a file download (storage serves files with
/// `ETag`, `Accept-Ranges` and `Content-Disposition`, whatever their type: a compressed body
/// would break `Range` offsets, `Content-Length` and the ETag's byte identity), nor a body of
/// unknown size (SSE, streams), nor an upgrade (WebSocket).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompressJson;

impl Predicate for CompressJson {
    fn should_compress<B: HttpBody>(&self, response: &Response<B>) -> bool {
        let headers = response.headers();
        let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case(PROBLEM_JSON)
        });
        is_json
            && !headers.contains_key(header::ETAG)
            && !headers.contains_key(header::ACCEPT_RANGES)
            && !headers.contains_key(header::CONTENT_DISPOSITION)
            && response.body().size_hint().exact().is_some_and(|n| n >= MIN_COMPRESSED_BYTES)
    }
}

/// The longest plain-text error body [`problem_errors`] turns into a problem's detail.
const MAX_REJECTION_BYTES: usize = 4096;

/// Gives error responses axum makes itself (no route, wrong method, body too large, bare
/// `StatusCode`s from handlers, extractor rejections in plain text) a problem+json body, so
/// clients see one error shape.
pub(crate) async fn problem_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // axum's body-limit rejection is plain text naming axum internals.
        return Problem::payload_too_large("the request body is too large").into_response();
    }
    let is_empty =
        response.headers().get(header::CONTENT_TYPE).is_none() && response.body().size_hint().exact() == Some(0);
    let is_rejection = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"))
        && response.body().size_hint().exact().is_some_and(|n| n <= MAX_REJECTION_BYTES as u64);
    if is_rejection {
        // An extractor's rejection (a WebSocket upgrade without `Upgrade`, a bad multipart body):
        // axum writes those as short plain text; the client gets the same words as a problem.
        let (_, body) = response.into_parts();
        let text = axum::body::to_bytes(body, MAX_REJECTION_BYTES).await.unwrap_or_default();
        return Problem::new(status).with_detail(String::from_utf8_lossy(&text).into_owned()).into_response();
    }
    if !is_empty {
        // A body the handler chose to send is left alone.
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(Problem::new(status).to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_alphabet_and_length() {
        assert!(is_valid_request_id("abc-DEF_123.x"));
        assert!(is_valid_request_id(&"a".repeat(128)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert!(!is_valid_request_id("bad id!"));
        assert!(!is_valid_request_id("line\nbreak"));
        assert!(!is_valid_request_id("ünïcode"));
    }

    #[test]
    fn origins_of_the_platform_and_extras_only() {
        let o = AllowedOrigins::new("example.com", &["https://app.other.org/".to_owned()]);
        for ok in [
            "https://example.com",
            "http://example.com:8080",
            "https://cloud.example.com",
            "https://a.b.example.com:443/",
            "HTTPS://Cloud.Example.COM",
            "https://app.other.org",
        ] {
            assert!(o.allows(ok), "{ok}");
        }
        for bad in [
            "null",
            "https://evilexample.com",
            "https://example.com.evil.org",
            "ftp://example.com",
            "https://.example.com",
            "https://user@example.com",
            "https://example.com:x",
            "https://app.other.org:444",
            "http://app.other.org",
            "",
        ] {
            assert!(!o.allows(bad), "{bad}");
        }
        let local = AllowedOrigins::new("localhost", &[]);
        assert!(local.allows("http://cloud.localhost:18080"));
        assert!(local.allows("http://localhost:3000"));
        assert!(!local.allows("http://127.0.0.1:18080"));
        assert!(!AllowedOrigins::new("", &[]).allows("http://localhost"));
    }
}
