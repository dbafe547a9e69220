//! Service accounts: named identities with scopes, for programs; their tokens act with the
//! account's current scopes, so narrowing them takes effect on tokens already issued.

use axum::{extract::State, http::StatusCode};
use edd_events::{
    catalog::auth::{IdentityDeleted, IdentityUpdated, ScopeMap},
    Expected, Token,
};
use edd_kit::Path;
use edd_kit::{auth::Principal, openapi::ToSchema, Json, Problem};
use serde::Deserialize;

use crate::{domain, queries, state::AppState};

async fn owned(state: &AppState, principal: &Principal, id: &str) -> Result<queries::ServiceAccount, Problem> {
    queries::service_account_of(&state.pool, principal.user_id.as_str(), id)
        .await?
        .ok_or_else(|| Problem::not_found("no such service account"))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateServiceAccount {
    /// 1–64 characters.
    name: String,
    /// Scope → allowed actions, e.g. `"storage.u1.files": ["read"]`; the user segment must be the
    /// caller's own id.
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    scopes: ScopeMap,
}

/// Creates a service account (the owner is notified).
#[utoipa::path(
    post,
    path = "/api/service-accounts",
    tag = "service-accounts",
    request_body = CreateServiceAccount,
    responses((status = 201, body = queries::ServiceAccount))
)]
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

/// The signed-in user's service accounts.
#[utoipa::path(
    get,
    path = "/api/service-accounts",
    tag = "service-accounts",
    responses((status = 200, body = Vec<queries::ServiceAccount>))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<queries::ServiceAccount>>, Problem> {
    principal.require_session()?;
    let accounts = queries::service_accounts_of(&state.pool, principal.user_id.as_str()).await?;
    Ok(Json(accounts))
}

/// One of the signed-in user's service accounts.
#[utoipa::path(
    get,
    path = "/api/service-accounts/{id}",
    tag = "service-accounts",
    params(("id" = String, Path, description = "the service account's id")),
    responses((status = 200, body = queries::ServiceAccount))
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<queries::ServiceAccount>, Problem> {
    principal.require_session()?;
    Ok(Json(owned(&state, &principal, &id).await?))
}

/// Deletes a service account; its tokens stop working (the owner is notified).
#[utoipa::path(
    delete,
    path = "/api/service-accounts/{id}",
    tag = "service-accounts",
    params(("id" = String, Path, description = "the service account's id")),
    responses((status = 204, description = "deleted; its tokens no longer work"))
)]
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

#[derive(Deserialize, ToSchema)]
pub struct SetScopes {
    /// The new scopes, replacing the old ones: scope → allowed actions.
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    scopes: ScopeMap,
}

/// Replaces a service account's scopes; its tokens act with the new ones at once.
#[utoipa::path(
    put,
    path = "/api/service-accounts/{id}/scopes",
    tag = "service-accounts",
    params(("id" = String, Path, description = "the service account's id")),
    request_body = SetScopes,
    responses((status = 200, body = queries::ServiceAccount))
)]
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

#[derive(Deserialize, ToSchema)]
pub struct CreateServiceAccountToken {
    /// 1–64 characters.
    name: String,
    /// How long it works: `30d`, `90d` (the default), `365d` or `never`.
    #[schema(pattern = "^(30d|90d|365d|never)$", examples("90d"))]
    expires_in: Option<String>,
}

/// Issues a token acting as a service account, with the account's current scopes.
#[utoipa::path(
    post,
    path = "/api/service-accounts/{id}/tokens",
    tag = "service-accounts",
    params(("id" = String, Path, description = "the service account's id")),
    request_body = CreateServiceAccountToken,
    responses((status = 201, body = super::tokens::NewToken))
)]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(req): Json<CreateServiceAccountToken>,
) -> Result<(StatusCode, Json<super::tokens::NewToken>), Problem> {
    principal.require_session()?;
    let account = owned(&state, &principal, &id).await?;
    let sa = Token::new(account.id).map_err(Problem::internal)?;
    let token =
        domain::issue_token(&state, &principal.user_id, req.name, None, Some(sa), req.expires_in.as_deref()).await?;
    Ok(super::tokens::issued(token))
}

/// A service account's live tokens.
#[utoipa::path(
    get,
    path = "/api/service-accounts/{id}/tokens",
    tag = "service-accounts",
    params(("id" = String, Path, description = "the service account's id")),
    responses((status = 200, body = Vec<queries::TokenInfo>))
)]
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
