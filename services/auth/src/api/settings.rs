//! The signed-in user's own account: profile, password, sessions.

use axum::{extract::State, http::StatusCode};
use edd_events::{catalog::auth::UserUpdated, Expected, Token};
use edd_kit::Path;
use edd_kit::{auth::Principal, Json, Problem};
use serde::Deserialize;
use serde_json::json;

use crate::{domain, queries, secrets, state::AppState};

async fn me(state: &AppState, principal: &Principal) -> Result<queries::User, Problem> {
    queries::user_by_id(&state.pool, principal.user_id.as_str())
        .await?
        .ok_or_else(|| Problem::unauthorized("the account behind this token no longer exists"))
}

#[derive(Deserialize)]
pub struct ProfileRequest {
    display_name: String,
}

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

#[derive(Deserialize)]
pub struct PasswordRequest {
    current_password: String,
    new_password: String,
}

pub async fn password(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<PasswordRequest>,
) -> Result<StatusCode, Problem> {
    let session_id = principal.require_session()?.clone();
    domain::check_password(&req.new_password)?;
    if req.current_password.len() > domain::MAX_PASSWORD_BYTES {
        return Err(Problem::forbidden("the current password is wrong"));
    }
    let user = me(&state, &principal).await?;
    let key = user.username.to_lowercase();
    state.user_limit.check(&key).map_err(Problem::too_many_requests)?;
    let phc = secrets::password(&state.pool, &user.id).await?;
    if !state.hasher.verify(req.current_password, phc).await.map_err(Problem::internal)? {
        state.user_limit.record(&key);
        return Err(Problem::forbidden("the current password is wrong").with_extension("field", "current_password"));
    }
    // Sessions first: if we crash before the new hash is stored, a retry with the old password
    // still works and nobody kept a session the user meant to end.
    domain::revoke_sessions(&state, &user.id, &user.id, Some(session_id.as_str())).await?;
    let phc = state.hasher.hash(req.new_password).await.map_err(Problem::internal)?;
    secrets::set_password(&state.pool, &user.id, &phc).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

pub async fn revoke_all(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<serde_json::Value>, Problem> {
    principal.require_session()?;
    let me = principal.user_id.as_str();
    let revoked = domain::revoke_sessions(&state, me, me, None).await?;
    Ok(Json(json!({ "revoked": revoked })))
}
