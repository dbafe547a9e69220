//! `GET /storage/status` (the file system's health), `GET /storage/usage` (the caller's bytes and
//! quota) and `GET /sse/progress?id=` (a transfer's progress as server-sent events).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use edd_kit::Query;
use edd_kit::{
    auth::{Presented, Principal},
    openapi::{IntoParams, ToSchema},
    Json, Problem,
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::{progress::check_id, state::AppState};

/// The file system's health.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// Every chunk has a live replica and the active master answers.
    healthy: bool,
    /// The active master's address, for administrators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    active_master: Option<String>,
    chunkservers_live: usize,
    chunkservers: usize,
    files: u64,
    chunks: u64,
    under_replicated: u64,
    missing: u64,
}

/// The file system's health: chunkservers live, under-replicated and missing chunks.
#[utoipa::path(get, path = "/storage/status", tag = "status", responses((status = 200, body = Status)))]
pub async fn status(State(state): State<AppState>, principal: Principal) -> Result<Json<Status>, Problem> {
    principal.require("storage", &principal.user_id, Some("files"), None, "read")?;
    let s = state.gfs.status().await?;
    let live = s.chunkservers.iter().filter(|c| c.alive).count();
    Ok(Json(Status {
        healthy: s.active && s.missing == 0 && live > 0,
        active_master: principal.is_admin.then_some(s.active_addr),
        chunkservers_live: live,
        chunkservers: s.chunkservers.len(),
        files: s.files,
        chunks: s.chunks,
        under_replicated: s.under_replicated,
        missing: s.missing,
    }))
}

/// What the caller stores, and the limits.
#[derive(Serialize, ToSchema)]
pub struct Usage {
    bytes: u64,
    files: u64,
    quota_bytes: u64,
    max_upload_bytes: u64,
}

/// Bytes and files the caller stores over all their namespaces, their quota and the upload limit.
#[utoipa::path(get, path = "/storage/usage", tag = "status", responses((status = 200, body = Usage)))]
pub async fn usage(State(state): State<AppState>, principal: Principal) -> Result<Json<Usage>, Problem> {
    principal.require("storage", &principal.user_id, Some("files"), None, "read")?;
    let (bytes, files) = state.usage(&principal.user_id).await?;
    Ok(Json(Usage {
        bytes,
        files,
        quota_bytes: state.config.quota_bytes,
        max_upload_bytes: state.config.max_upload_bytes,
    }))
}

/// `?id=` of a progress stream.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProgressQuery {
    /// The transfer id given as `progress=` to the upload or download: 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    id: String,
}

/// Follows one of the caller's transfers as server-sent events; ends when it does.
///
/// Works whether the watcher arrives before or after the transfer starts. The stream also ends the
/// moment the caller's credential stops working (revoked, logged out, its key revoked).
#[utoipa::path(
    get,
    path = "/sse/progress",
    tag = "status",
    params(ProgressQuery),
    responses((
        status = 200,
        description = "server-sent events named `progress`, each `data` a JSON object `{bytes, total?, done, \
                       error?}` (bytes so far, the total when known, whether it ended, and how it failed); the \
                       stream ends after the event with `done: true`",
        body = String,
        content_type = "text/event-stream"
    ))
)]
pub async fn progress(
    State(state): State<AppState>,
    principal: Principal,
    Presented(credential): Presented,
    Query(q): Query<ProgressQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    principal.require("storage", &principal.user_id, Some("files"), None, "read")?;
    check_id(&q.id)?;
    let rx = state.progress.watch(&principal.user_id, &q.id)?;
    let user = principal.user_id.clone();
    let revoked =
        state.authorizer.refused(credential, move |p| p.require("storage", &user, Some("files"), None, "read").is_ok());
    // The state at once, then each change; the stream ends after the event with `done: true` (or
    // when the transfer's entry is gone).
    let events = futures_util::stream::unfold((rx, true, false), |(mut rx, first, finished)| async move {
        if finished {
            return None;
        }
        if !first {
            rx.changed().await.ok()?;
        }
        let snapshot = rx.borrow_and_update().clone();
        let done = snapshot.done;
        let event = Event::default().event("progress").json_data(&snapshot).unwrap_or_default();
        Some((Ok(event), (rx, false, done)))
    });
    // Ends with the credential: `take_until` drops the stream, which closes the response.
    let events = futures_util::StreamExt::take_until(events, revoked);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
