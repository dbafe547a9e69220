//! Administration: users, everyone's sessions, key rotation. An administrator's session only.

use axum::{extract::State, http::StatusCode};
use edd_events::{catalog::auth::UserDeleted, Expected, Token};
use edd_kit::Path;
use edd_kit::{auth::Principal, Json, Problem};
use serde::Deserialize;
use serde_json::json;

use crate::{domain, queries, secrets, state::AppState};

pub async fn users(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<queries::User>>, Problem> {
    principal.require_admin()?;
    Ok(Json(queries::users(&state.pool).await?))
}

#[derive(Deserialize)]
pub struct CreateUser {
    username: String,
    password: String,
    display_name: Option<String>,
    #[serde(default)]
    is_admin: bool,
}

pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, Json<queries::User>), Problem> {
    principal.require_admin()?;
    let user = domain::create_user(
        &state,
        principal.user_id.as_str(),
        &req.username,
        req.password,
        req.display_name,
        req.is_admin,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require_admin()?;
    if id == principal.user_id.as_str() {
        return Err(Problem::conflict("you cannot delete your own account"));
    }
    let user = queries::user_by_id(&state.pool, &id).await?.ok_or_else(|| Problem::not_found("no such user"))?;
    let user_id = Token::new(user.id.clone()).map_err(Problem::internal)?;
    let deleted = UserDeleted {
        user_id: user_id.clone(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        is_admin: user.is_admin,
    };
    state.commit(principal.user_id.as_str(), deleted, Expected::Exactly(user.seq as u64)).await?;
    let kind = Token::new("username").map_err(Problem::internal)?;
    state.store.release("auth", &kind, &user.username, user_id.as_str()).await.map_err(Problem::from)?;
    secrets::delete_password(&state.pool, &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::Session>>, Problem> {
    principal.require_admin()?;
    Ok(Json(queries::active_sessions(&state.pool, None).await?))
}

pub async fn rotate_key(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<serde_json::Value>, Problem> {
    principal.require_admin()?;
    let kid = state.rotate_key(principal.user_id.as_str()).await?;
    Ok(Json(json!({ "kid": kid })))
}
