//! The request pipeline every service shares: request ids, a span and an access-log line per
//! request, timeouts, caught panics, and problem+json for errors the framework answers itself.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::problem::{is_problem, Problem, PROBLEM_JSON};

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in the request extensions for handlers that pass it on (e.g. as an event's
/// correlation id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keeps the caller's request id when it is safe to log and forward, else makes a fresh one, and
/// runs the request inside a span that carries it.
pub(crate) async fn trace(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    // A checked client id or a UUID: both are valid header values, so this never fails in practice.
    let header = HeaderValue::from_str(&id).ok();
    if let Some(header) = &header {
        request.headers_mut().insert(REQUEST_ID_HEADER, header.clone());
    }
    // The query string is left out of logs: it can carry tokens.
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id.as_str(),
    );
    request.extensions_mut().insert(RequestId(id));

    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            // Whole microseconds keep the number short in the log line.
            latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
            "request completed"
        );
    });
    if let Some(header) = header {
        response.headers_mut().insert(REQUEST_ID_HEADER, header);
    }
    response
}

/// `^[A-Za-z0-9._-]{1,128}$`: ids end up in logs, headers and event metadata, so nothing that
/// could forge a log line or bloat every record gets through.
fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Turns a handler panic into a logged 500 instead of a dropped connection.
pub(crate) async fn catch_panic(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => Problem::internal(format!("handler panicked: {}", panic_message(&*payload))).into_response(),
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
}
