//! Personal API tokens, and issuing tokens in general (service-account tokens use [`issue`] too).

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use edd_events::{
    catalog::auth::{ScopeMap, TokenCreated, TokenRevoked},
    Expected, Token,
};
use edd_kit::{
    auth::{api_token, Principal},
    Json, Problem,
};
use serde::Deserialize;
use serde_json::json;

use crate::{domain, queries, state::AppState};

#[derive(Deserialize)]
pub struct CreateToken {
    name: String,
    scopes: ScopeMap,
    expires_in: Option<String>,
}

/// Issues a token for `owner` and answers with its secret, shown this once.
pub async fn issue(
    state: &AppState,
    owner: &Token,
    name: String,
    scopes: Option<ScopeMap>,
    service_account_id: Option<Token>,
    expires_in: Option<&str>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    domain::check_name("name", &name)?;
    let expires_at = domain::expiry(expires_in)?;
    let (tokens, _) = queries::counts(&state.pool, owner.as_str()).await.map_err(Problem::internal)?;
    if tokens >= domain::MAX_TOKENS {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_detail(format!("at most {} live tokens per user; revoke some first", domain::MAX_TOKENS)));
    }
    let secret = api_token::generate().map_err(|_| Problem::internal("no randomness for a token"))?;
    let token_id = Token::random();
    let created = TokenCreated {
        token_id: token_id.clone(),
        owner: owner.clone(),
        name,
        sha256: api_token::sha256_hex(&secret),
        scopes,
        service_account_id,
        expires_at,
    };
    state.commit(owner.as_str(), created, Expected::NoStream).await?;
    let info = queries::token_of(&state.pool, owner.as_str(), token_id.as_str())
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::internal("created token is not in the projection"))?;
    let mut body = json!(info);
    body["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    principal.require_session()?;
    domain::check_scopes(&req.scopes, &principal.user_id)?;
    issue(&state, &principal.user_id, req.name, Some(req.scopes), None, req.expires_in.as_deref()).await
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::TokenInfo>>, Problem> {
    principal.require_session()?;
    Ok(Json(queries::tokens_of(&state.pool, principal.user_id.as_str(), None).await.map_err(Problem::internal)?))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require_session()?;
    let token = queries::token_of(&state.pool, principal.user_id.as_str(), &id)
        .await
        .map_err(Problem::internal)?
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
