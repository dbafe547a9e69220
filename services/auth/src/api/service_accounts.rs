//! Service accounts: named identities with scopes, for programs; their tokens act with the
//! account's current scopes, so narrowing them takes effect on tokens already issued.

use axum::{extract::State, http::StatusCode};
use edd_events::{
    catalog::auth::{IdentityDeleted, IdentityUpdated, ScopeMap},
    Expected, Token,
};
use edd_kit::Path;
use edd_kit::{auth::Principal, Json, Problem};
use serde::Deserialize;

use crate::{domain, queries, state::AppState};

async fn owned(state: &AppState, principal: &Principal, id: &str) -> Result<queries::ServiceAccount, Problem> {
    queries::service_account_of(&state.pool, principal.user_id.as_str(), id)
        .await?
        .ok_or_else(|| Problem::not_found("no such service account"))
}

#[derive(Deserialize)]
pub struct CreateServiceAccount {
    name: String,
    scopes: ScopeMap,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateServiceAccount>,
) -> Result<(StatusCode, Json<queries::ServiceAccount>), Problem> {
    principal.require_session()?;
    domain::check_name("name", &req.name)?;
    domain::check_scopes(&req.scopes, &principal.user_id)?;
    let (_, accounts) = queries::counts(&state.pool, principal.user_id.as_str()).await?;
    if accounts >= domain::MAX_SERVICE_ACCOUNTS {
        return Err(Problem::unprocessable(format!(
            "at most {} service accounts per user",
            domain::MAX_SERVICE_ACCOUNTS
        )));
    }
    let id = Token::random();
    let updated = IdentityUpdated {
        service_account_id: id.clone(),
        user_id: principal.user_id.clone(),
        name: req.name.clone(),
        scopes: req.scopes,
        version: 1,
    };
    state.commit(principal.user_id.as_str(), updated, Expected::NoStream).await?;
    state
        .notify(&principal.user_id, "Service account created", format!("Service account {:?} was created.", req.name))
        .await;
    Ok((StatusCode::CREATED, Json(owned(&state, &principal, id.as_str()).await?)))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::ServiceAccount>>, Problem> {
    principal.require_session()?;
    let accounts = queries::service_accounts_of(&state.pool, principal.user_id.as_str()).await?;
    Ok(Json(accounts))
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<queries::ServiceAccount>, Problem> {
    principal.require_session()?;
    Ok(Json(owned(&state, &principal, &id).await?))
}

pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require_session()?;
    let account = owned(&state, &principal, &id).await?;
    let deleted = IdentityDeleted {
        service_account_id: Token::new(account.id.clone()).map_err(Problem::internal)?,
        user_id: principal.user_id.clone(),
        version: account.version as u64 + 1,
    };
    state.commit(principal.user_id.as_str(), deleted, Expected::Exactly(account.seq as u64)).await?;
    state
        .notify(
            &principal.user_id,
            "Service account deleted",
            format!("Service account {:?} was deleted; its tokens no longer work.", account.name),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SetScopes {
    scopes: ScopeMap,
}

pub async fn set_scopes(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(req): Json<SetScopes>,
) -> Result<Json<queries::ServiceAccount>, Problem> {
    principal.require_session()?;
    domain::check_scopes(&req.scopes, &principal.user_id)?;
    let account = owned(&state, &principal, &id).await?;
    let updated = IdentityUpdated {
        service_account_id: Token::new(account.id.clone()).map_err(Problem::internal)?,
        user_id: principal.user_id.clone(),
        name: account.name.clone(),
        scopes: req.scopes,
        version: account.version as u64 + 1,
    };
    state.commit(principal.user_id.as_str(), updated, Expected::Exactly(account.seq as u64)).await?;
    Ok(Json(owned(&state, &principal, &id).await?))
}

#[derive(Deserialize)]
pub struct CreateToken {
    name: String,
    expires_in: Option<String>,
}

pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    principal.require_session()?;
    let account = owned(&state, &principal, &id).await?;
    let sa = Token::new(account.id).map_err(Problem::internal)?;
    let token =
        domain::issue_token(&state, &principal.user_id, req.name, None, Some(sa), req.expires_in.as_deref()).await?;
    Ok(super::tokens::issued(token))
}

pub async fn tokens(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<queries::TokenInfo>>, Problem> {
    principal.require_session()?;
    let account = owned(&state, &principal, &id).await?;
    let tokens = queries::tokens_of(&state.pool, principal.user_id.as_str(), Some(&account.id)).await?;
    Ok(Json(tokens))
}
