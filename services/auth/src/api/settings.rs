//! The signed-in user's own account: profile, password, sessions.

use axum::{extract::State, http::StatusCode};
use edd_events::{catalog::auth::UserUpdated, Expected, Token};
use edd_kit::Path;
use edd_kit::{auth::Principal, openapi::ToSchema, Json, Problem};
use serde::{Deserialize, Serialize};

use super::Client;
use crate::{domain, queries, secrets, state::AppState};

async fn me(state: &AppState, principal: &Principal) -> Result<queries::User, Problem> {
    queries::user_by_id(&state.pool, principal.user_id.as_str())
        .await?
        .ok_or_else(|| Problem::unauthorized("the account behind this token no longer exists"))
}

#[derive(Deserialize, ToSchema)]
pub struct ProfileRequest {
    /// 1–64 characters.
    display_name: String,
}

/// Changes the signed-in user's display name.
#[utoipa::path(
    put,
    path = "/api/settings/profile",
    tag = "settings",
    request_body = ProfileRequest,
    responses((status = 200, body = queries::User))
)]
pub async fn profile(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<ProfileRequest>,
) -> Result<Json<queries::User>, Problem> {
    principal.require_session()?;
    domain::check_name("display_name", &req.display_name)?;
    let user = me(&state, &principal).await?;
    let updated = UserUpdated {
        user_id: principal.user_id.clone(),
        username: user.username.clone(),
        display_name: req.display_name,
        is_admin: user.is_admin,
    };
    state.commit(principal.user_id.as_str(), updated, Expected::Exactly(user.seq as u64)).await?;
    Ok(Json(me(&state, &principal).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordRequest {
    current_password: String,
    new_password: String,
}

/// Changes the signed-in user's password; every other session of theirs is revoked.
///
/// A wrong `current_password` is a `403` naming `"field": "current_password"`; wrong guesses
/// count against the same limits as failed logins (then `429` with `Retry-After`).
#[utoipa::path(
    put,
    path = "/api/settings/password",
    tag = "settings",
    request_body = PasswordRequest,
    responses((status = 204, description = "changed; the other sessions are revoked"))
)]
pub async fn password(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    Json(req): Json<PasswordRequest>,
) -> Result<StatusCode, Problem> {
    let session_id = principal.require_session()?.clone();
    domain::check_password(&req.new_password)?;
    if req.current_password.len() > domain::MAX_PASSWORD_BYTES {
        return Err(Problem::forbidden("the current password is wrong"));
    }
    let user = me(&state, &principal).await?;
    // The same limits as a login's, reserved before verifying (see `session::login`).
    let attempt =
        state.limits.attempt(&user.username.to_lowercase(), &client.bucket).map_err(Problem::too_many_requests)?;
    let phc = secrets::password(&state.pool, &user.id).await?;
    if !state.hasher.verify(req.current_password, phc).await.map_err(Problem::internal)? {
        drop(attempt);
        return Err(Problem::forbidden("the current password is wrong").with_extension("field", "current_password"));
    }
    attempt.succeeded();
    // Sessions first: if we crash before the new hash is stored, a retry with the old password
    // still works and nobody kept a session the user meant to end.
    domain::revoke_sessions(&state, &user.id, &user.id, Some(session_id.as_str())).await?;
    let phc = state.hasher.hash(req.new_password).await.map_err(Problem::internal)?;
    secrets::set_password(&state.pool, &user.id, &phc).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user's active sessions, newest first.
#[utoipa::path(
    get,
    path = "/api/settings/sessions",
    tag = "settings",
    responses((status = 200, body = Vec<queries::Session>))
)]
pub async fn sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::Session>>, Problem> {
    let current = principal.require_session()?;
    let mut sessions =
        queries::active_sessions(&state.pool, Some(principal.user_id.as_str())).await.map_err(Problem::internal)?;
    for s in &mut sessions {
        s.current = s.id == current.as_str();
        s.username = None;
    }
    Ok(Json(sessions))
}

/// Revokes one of the signed-in user's sessions.
#[utoipa::path(
    delete,
    path = "/api/settings/sessions/{id}",
    tag = "settings",
    params(("id" = String, Path, description = "the session's id")),
    responses((status = 204, description = "revoked"))
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require_session()?;
    Token::new(id.as_str()).map_err(|_| Problem::not_found("no such session"))?;
    let me = principal.user_id.as_str();
    domain::revoke_session(&state, me, &id, Some(me)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions were revoked.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    revoked: usize,
}

/// Revokes every session of the signed-in user, the current one too.
///
/// One event however many sessions there are: every service refuses, from then on, each token of
/// the user issued before the request (their live connections close too). Answers within a second
/// (it waits for the next whole second, so that a login after the answer is not caught by it).
#[utoipa::path(
    post,
    path = "/api/settings/sessions/revoke-all",
    tag = "settings",
    responses((status = 200, body = Revoked))
)]
pub async fn revoke_all(State(state): State<AppState>, principal: Principal) -> Result<Json<Revoked>, Problem> {
    principal.require_session()?;
    let me = principal.user_id.as_str();
    let revoked = domain::revoke_sessions(&state, me, me, None).await?;
    Ok(Json(Revoked { revoked }))
}
