//! Administration: users, everyone's sessions, key rotation and revocation. An administrator's
//! session only.

use axum::{extract::State, http::StatusCode};
use edd_events::{catalog::auth::UserDeleted, Expected, Token};
use edd_kit::Path;
use edd_kit::{auth::Principal, openapi::ToSchema, Json, Problem};
use serde::{Deserialize, Serialize};

use crate::{domain, queries, secrets, state::AppState};

/// Every user (an administrator's session).
#[utoipa::path(get, path = "/admin/users", tag = "admin", responses((status = 200, body = Vec<queries::User>)))]
pub async fn users(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<queries::User>>, Problem> {
    principal.require_admin()?;
    Ok(Json(queries::users(&state.pool).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateUser {
    /// 3–32 characters: lowercase letters, digits, `-` and `_`, starting with a letter; unique
    /// case-insensitively.
    username: String,
    /// 8–256 bytes.
    password: String,
    /// Defaults to the username.
    display_name: Option<String>,
    #[serde(default)]
    #[schema(default = false)]
    is_admin: bool,
}

/// Creates a user (an administrator's session).
#[utoipa::path(
    post,
    path = "/admin/users",
    tag = "admin",
    request_body = CreateUser,
    responses((status = 201, body = queries::User))
)]
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

/// Deletes a user (an administrator's session); not oneself (`409`).
#[utoipa::path(
    delete,
    path = "/admin/users/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "the user's id")),
    responses((status = 204, description = "deleted; the username is free again"))
)]
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

/// Every active session, of every user (an administrator's session).
#[utoipa::path(get, path = "/admin/sessions", tag = "admin", responses((status = 200, body = Vec<queries::Session>)))]
pub async fn sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::Session>>, Problem> {
    principal.require_admin()?;
    Ok(Json(queries::active_sessions(&state.pool, None).await?))
}

/// The signing key new session tokens are signed with.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    /// The new key's id (`kid`), as in `/.well-known/jwks.json`.
    #[schema(value_type = String)]
    kid: Token,
}

/// Rotates the session-signing key (an administrator's session).
///
/// New session tokens are signed with a new key; the old key keeps verifying until its last token
/// expires.
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", responses((status = 200, body = RotatedKey)))]
pub async fn rotate_key(State(state): State<AppState>, principal: Principal) -> Result<Json<RotatedKey>, Problem> {
    principal.require_admin()?;
    let kid = state.rotate_key(principal.user_id.as_str()).await?;
    Ok(Json(RotatedKey { kid }))
}

/// A revoked signing key, and the key new session tokens are signed with now.
#[derive(Serialize, ToSchema)]
pub struct RevokedKey {
    /// The revoked key's id.
    #[schema(value_type = String)]
    revoked: Token,
    /// The active key's id (a new one when the revoked key was active).
    #[schema(value_type = String)]
    kid: Token,
}

/// Revokes a session-signing key at once (an administrator's session): for a compromised key.
///
/// Unlike a rotation there is no grace: every token the key signed is refused by every service from
/// the answer on (live connections close too), so its users sign in again. When it is the active
/// key, a new one is rotated in first. Revoking a revoked key again is a no-op; `404` for a key id
/// that is not the auth service's.
#[utoipa::path(
    post,
    path = "/admin/keys/{kid}/revoke",
    tag = "admin",
    params(("kid" = String, Path, description = "the key's id (`kid`), as in `/.well-known/jwks.json`")),
    responses((status = 200, body = RevokedKey))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(kid): Path<String>,
) -> Result<Json<RevokedKey>, Problem> {
    principal.require_admin()?;
    let revoked = Token::new(kid).map_err(|_| Problem::not_found("no such signing key"))?;
    let kid = state.revoke_key(principal.user_id.as_str(), &revoked).await?;
    Ok(Json(RevokedKey { revoked, kid }))
}
