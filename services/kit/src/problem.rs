//! RFC 9457 problem details: the one error shape every Edd Cloud HTTP API answers with.
//!
//! Handlers return `Result<T, Problem>`; clients (the CLI, other services, tests) deserialize
//! the same type from error responses.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Media type of a problem details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details object.
///
/// Extension members must not reuse the standard member names (`type`, `title`, `status`,
/// `detail`, `instance`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type", default = "about_blank")]
    pub type_uri: String,
    pub title: String,
    #[serde(with = "status_code")]
    #[schema(value_type = u16)]
    pub status: StatusCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Members naming what went wrong (`field`, `quota_bytes`, …); other members are allowed.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
    /// Seconds for the `Retry-After` header; a header, so not part of the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    /// A problem with the status's standard reason phrase as its title.
    pub fn new(status: StatusCode) -> Self {
        Self {
            type_uri: about_blank(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status,
            detail: None,
            instance: None,
            extensions: Map::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED).with_detail(detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN).with_detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND).with_detail(detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT).with_detail(detail)
    }

    /// 422: the request is well-formed but asks for something that cannot be (a bad name, a
    /// value out of range).
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY).with_detail(detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE).with_detail(detail)
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS)
            .with_detail(format!("rate limit exceeded; retry after {retry_after_secs} s"))
            .with_retry_after(retry_after_secs)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE).with_detail(detail)
    }

    /// 503 for a command whose event is in the log but not yet in the reader it answers from
    /// (see [`crate::Committer`]): retrying the read shortly shows it.
    pub fn not_visible_yet() -> Self {
        Self::unavailable("the change is recorded but not visible yet; read it again shortly").with_retry_after(1)
    }

    /// A 500 that logs `err` (inside the request's span, so with its request id) and tells the
    /// client nothing about it: internal error text can name tables, hosts or secrets.
    pub fn internal(err: impl fmt::Display) -> Self {
        tracing::error!(error = format!("{err:#}"), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail("an internal error occurred; it has been logged")
    }

    pub fn with_type(mut self, type_uri: impl Into<String>) -> Self {
        self.type_uri = type_uri.into();
        self
    }

    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.into(), value.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|err| {
            // Unreachable with a `Map` of `Value`s, but an error response must never fail.
            tracing::error!(error = %err, "cannot serialize problem");
            format!(r#"{{"title":"Error","status":{}}}"#, self.status.as_u16()).into_bytes()
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// A failed append as the client sees it: a concurrent change is a 409 to retry, an unreachable
/// log a 503 (nothing was changed), an oversize event a 413.
impl From<edd_events::AppendError> for Problem {
    fn from(e: edd_events::AppendError) -> Self {
        use edd_events::AppendError;
        match e {
            AppendError::Conflict { .. } => {
                Self::conflict("the resource was changed by another request at the same time; retry")
            }
            AppendError::Unavailable { .. } | AppendError::NoStream(_) => {
                tracing::error!(error = %e, "event log unavailable");
                Self::unavailable("the event log is unavailable; nothing was changed, retry shortly")
                    .with_retry_after(2)
            }
            AppendError::TooLarge { size, max } => {
                Self::payload_too_large(format!("the change is {size} bytes as an event; the limit is {max}"))
            }
            e => Self::internal(e),
        }
    }
}

/// A database failure as the client sees it: the database being away (a pool timeout, a broken
/// connection) is a 503 to retry; anything else is a logged 500 that names nothing.
impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %e, "database unavailable");
                Self::unavailable("the database is unavailable; retry shortly").with_retry_after(2)
            }
            // PostgreSQL text cannot hold NUL (22021) or characters outside the encoding (22P05):
            // that is the client's input, not our failure (found by schemathesis on /api/login).
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22021" | "22P05")) => {
                Self::bad_request("text may not contain NUL or characters outside UTF-8")
            }
            e => Self::internal(e),
        }
    }
}

/// A projection (or another reader of the log) that did not reach a command's event in time: the
/// change is recorded, only not visible yet.
impl From<edd_projections::WaitError> for Problem {
    fn from(e: edd_projections::WaitError) -> Self {
        tracing::warn!(error = %e, "a reader of the log is slow to apply a command");
        Self::not_visible_yet()
    }
}

/// GFS failures as the client sees them: the file system being away is a 503 to retry.
#[cfg(feature = "gfs")]
impl From<edd_gfs::client::GfsError> for Problem {
    fn from(e: edd_gfs::client::GfsError) -> Self {
        use edd_gfs::client::GfsError;
        match e {
            GfsError::NotFound(_) => Self::not_found("the file's data is missing"),
            GfsError::Unavailable(_) | GfsError::Timeout(_) | GfsError::ResourceExhausted(_) => {
                tracing::warn!(error = %e, "GFS unavailable");
                Self::unavailable("the file system is unavailable; retry shortly").with_retry_after(2)
            }
            e => {
                tracing::error!(error = %e, "GFS failed");
                Self::internal(e)
            }
        }
    }
}

/// Lets handlers use `?` on anything `anyhow` accepts; the client sees a generic 500.
impl From<anyhow::Error> for Problem {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(err)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], self.to_json())
                .into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would work.
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"edd\""));
        }
        response
    }
}

/// `true` if the response already carries a problem details body.
pub(crate) fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

mod status_code {
    use axum::http::StatusCode;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(status.as_u16())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StatusCode, D::Error> {
        let code = u16::deserialize(d)?;
        StatusCode::from_u16(code).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc_9457_members() {
        let problem = Problem::not_found("no such bucket").with_instance("/buckets/x").with_extension("bucket", "x");
        let json: Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": "no such bucket",
                "instance": "/buckets/x",
                "bucket": "x",
            })
        );
    }

    #[test]
    fn round_trips_through_json() {
        let problem = Problem::conflict("name taken").with_extension("name", "alice");
        let back: Problem = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(back, problem);
    }

    #[test]
    fn deserializes_minimal_problem() {
        let back: Problem = serde_json::from_str(r#"{"title":"Teapot","status":418}"#).unwrap();
        assert_eq!(back.type_uri, "about:blank");
        assert_eq!(back.status, StatusCode::IM_A_TEAPOT);
    }

    #[test]
    fn too_many_requests_sets_retry_after() {
        let response = Problem::too_many_requests(7).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert!(is_problem(&response));
    }

    #[test]
    fn internal_hides_the_error() {
        let problem = Problem::internal("password=hunter2 at db-0");
        assert_eq!(problem.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!problem.to_string().contains("hunter2"));
        assert!(!String::from_utf8_lossy(&problem.to_json()).contains("hunter2"));
    }

    #[test]
    fn display_shows_status_title_and_detail() {
        assert_eq!(
            Problem::forbidden("scope storage.u1 missing").to_string(),
            "403 Forbidden: scope storage.u1 missing"
        );
    }
}
