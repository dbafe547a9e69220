//! Personal API tokens (issued by [`domain::issue_token`], like service-account tokens).

use axum::{extract::State, http::StatusCode};
use edd_events::{
    catalog::auth::{ScopeMap, TokenRevoked},
    Expected, Token,
};
use edd_kit::Path;
use edd_kit::{auth::Principal, Json, Problem};
use serde::Deserialize;
use serde_json::json;

use crate::{domain, queries, state::AppState};

#[derive(Deserialize)]
pub struct CreateToken {
    name: String,
    scopes: ScopeMap,
    expires_in: Option<String>,
}

/// The `201` answer to issuing a token: its details and its secret, shown this once.
pub fn issued(token: domain::IssuedToken) -> (StatusCode, Json<serde_json::Value>) {
    let mut body = json!(token.info);
    body["token"] = json!(token.secret);
    (StatusCode::CREATED, Json(body))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    principal.require_session()?;
    domain::check_scopes(&req.scopes, &principal.user_id)?;
    let token =
        domain::issue_token(&state, &principal.user_id, req.name, Some(req.scopes), None, req.expires_in.as_deref())
            .await?;
    Ok(issued(token))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::TokenInfo>>, Problem> {
    principal.require_session()?;
    Ok(Json(queries::tokens_of(&state.pool, principal.user_id.as_str(), None).await?))
}

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
