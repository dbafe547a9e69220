//! Login, logout, "who am I", sign-up and the public keys.

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use edd_events::{catalog::auth::SessionCreated, Expected, Token};
use edd_kit::{
    auth::{jwt, Credential, Principal},
    Json, Problem,
};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::Client;
use crate::{config::Signup, domain, queries, secrets, state::AppState};

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<LoginRequest>,
) -> Result<Response, Problem> {
    if req.username.len() > 64 || req.password.len() > domain::MAX_PASSWORD_BYTES {
        return Err(Problem::unprocessable("username or password too long"));
    }
    let user_key = req.username.to_lowercase();
    if let Err(wait) = state.ip_limit.check(&client.ip).and_then(|()| state.user_limit.check(&user_key)) {
        tracing::warn!(ip = %client.ip, "login rate limit reached");
        return Err(Problem::too_many_requests(wait));
    }
    let user = queries::user_by_name(&state.pool, &req.username).await?;
    let phc = match &user {
        Some(u) => secrets::password(&state.pool, &u.id).await?,
        None => None,
    };
    let ok = state.hasher.verify(req.password, phc).await.map_err(Problem::internal)?;
    let Some(user) = user.filter(|_| ok) else {
        state.ip_limit.record(&client.ip);
        state.user_limit.record(&user_key);
        return Err(Problem::unauthorized("invalid username or password"));
    };

    let user_id = Token::new(user.id.clone()).map_err(Problem::internal)?;
    let session_id = Token::random();
    let now = OffsetDateTime::now_utc();
    let expires_at = now + state.config.session_ttl();
    let created = SessionCreated {
        session_id: session_id.clone(),
        user_id: user_id.clone(),
        expires_at,
        ip: Some(client.ip),
        user_agent: client.user_agent,
    };
    state.commit(user_id.as_str(), created, Expected::NoStream).await?;
    // The accounts projection may show a new user before this replica's authorizer does (it
    // follows the permissions projection): a session answered now must authenticate here next.
    state.authorizer.wait_for(user.seq as u64, edd_kit::commit::SETTLE_TIMEOUT).await?;
    let key = state.signer().await?;
    let token = key.sign(&jwt::Claims {
        iss: jwt::ISSUER.into(),
        sub: user.id.clone(),
        sid: session_id.to_string(),
        typ: jwt::SESSION.into(),
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
    });
    let cookie = format!("token={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}", state.config.session_ttl_secs);
    let body = json!({
        "token": token,
        "session_id": session_id,
        "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).map_err(Problem::internal)?,
        "user": user,
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(Problem::internal)?);
    Ok(response)
}

pub async fn logout(State(state): State<AppState>, principal: Principal) -> Result<Response, Problem> {
    let session_id = principal.require_session()?;
    domain::revoke_session(&state, principal.user_id.as_str(), session_id.as_str(), Some(principal.user_id.as_str()))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static("token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"));
    Ok(response)
}

pub async fn whoami(State(state): State<AppState>, principal: Principal) -> Result<Json<serde_json::Value>, Problem> {
    let user = queries::user_by_id(&state.pool, principal.user_id.as_str())
        .await?
        .ok_or_else(|| Problem::unauthorized("the account behind this token no longer exists"))?;
    let expires_at = principal
        .expires_at
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let mut body = json!({ "user": user, "kind": principal.kind(), "expires_at": expires_at });
    match &principal.credential {
        Credential::Session { session_id } => {
            body["session_id"] = json!(session_id);
        }
        Credential::ApiToken { token_id, scopes } => {
            body["token_id"] = json!(token_id);
            body["scopes"] = json!(scopes);
        }
        Credential::ServiceAccount { token_id, service_account_id, scopes } => {
            body["token_id"] = json!(token_id);
            body["service_account_id"] = json!(service_account_id);
            body["scopes"] = json!(scopes);
        }
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct SignupRequest {
    username: String,
    password: String,
    display_name: Option<String>,
}

pub async fn signup(
    State(state): State<AppState>,
    Json(req): Json<SignupRequest>,
) -> Result<(StatusCode, Json<queries::User>), Problem> {
    if state.config.signup != Signup::Open {
        return Err(Problem::forbidden("sign-up is closed; ask an administrator for an account"));
    }
    let user = domain::create_user(&state, "signup", &req.username, req.password, req.display_name, false).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.authorizer.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    response
}
