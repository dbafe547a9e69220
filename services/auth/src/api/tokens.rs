//! Personal API tokens (issued by [`domain::issue_token`], like service-account tokens).

use axum::{extract::State, http::StatusCode};
use edd_events::{
    catalog::auth::{ScopeMap, TokenRevoked},
    Expected, Token,
};
use edd_kit::Path;
use edd_kit::{auth::Principal, openapi::ToSchema, Json, Problem};
use serde::{Deserialize, Serialize};

use crate::{domain, queries, state::AppState};

#[derive(Deserialize, ToSchema)]
pub struct CreateToken {
    /// 1–64 characters.
    name: String,
    /// Scope → allowed actions, e.g. `"storage.u1.files": ["read"]`; the user segment must be the
    /// caller's own id.
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    scopes: ScopeMap,
    /// How long it works: `30d`, `90d` (the default), `365d` or `never`.
    #[schema(pattern = "^(30d|90d|365d|never)$", examples("90d"))]
    expires_in: Option<String>,
}

/// A token just issued: its details and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    info: queries::TokenInfo,
    /// The secret (`edd_` + 52 base32 characters), for `Authorization: Bearer`; shown only here.
    token: String,
}

/// The `201` answer to issuing a token.
pub fn issued(token: domain::IssuedToken) -> (StatusCode, Json<NewToken>) {
    (StatusCode::CREATED, Json(NewToken { info: token.info, token: token.secret }))
}

/// Issues a personal API token with its own scopes.
#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses((status = 201, body = NewToken))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<NewToken>), Problem> {
    principal.require_session()?;
    domain::check_scopes(&req.scopes, &principal.user_id)?;
    let token =
        domain::issue_token(&state, &principal.user_id, req.name, Some(req.scopes), None, req.expires_in.as_deref())
            .await?;
    Ok(issued(token))
}

/// The signed-in user's live personal tokens (not their service accounts').
#[utoipa::path(get, path = "/api/tokens", tag = "tokens", responses((status = 200, body = Vec<queries::TokenInfo>)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::TokenInfo>>, Problem> {
    principal.require_session()?;
    Ok(Json(queries::tokens_of(&state.pool, principal.user_id.as_str(), None).await?))
}

/// Revokes one of the signed-in user's tokens, personal or service-account.
///
/// Revoking a token already revoked is not an error.
#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 204, description = "revoked"))
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require_session()?;
    let token = queries::token_of(&state.pool, principal.user_id.as_str(), &id)
        .await?
        .ok_or_else(|| Problem::not_found("no such token"))?;
    if token.revoked {
        return Ok(StatusCode::NO_CONTENT);
    }
    let revoked =
        TokenRevoked { token_id: Token::new(token.id).map_err(Problem::internal)?, owner: principal.user_id.clone() };
    match state.commit(principal.user_id.as_str(), revoked, Expected::Exactly(token.seq as u64)).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(p) if p.status == StatusCode::CONFLICT => Ok(StatusCode::NO_CONTENT),
        Err(p) => Err(p),
    }
}
