//! Login, logout, "who am I", sign-up and the public keys.

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use edd_events::{
    catalog::auth::{ScopeMap, SessionCreated},
    Expected, Token,
};
use edd_kit::{
    auth::{jwt, Credential, Principal},
    openapi::ToSchema,
    Json, Problem,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Client;
use crate::{config::Signup, domain, queries, secrets, state::AppState};

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// A signed-in session: its token (also set as the `token` cookie) and the user.
// Fields in alphabetical order, the order the answer's keys always had.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// When the session ends.
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(value_type = String)]
    session_id: Token,
    /// The session token (a JWT), for `Authorization: Bearer`.
    token: String,
    user: queries::User,
}

/// Signs in with a username and password.
///
/// Answers the session token and sets it as an HTTP-only `token` cookie (`Secure` when the
/// client came over HTTPS). A wrong username or password is a `401`. Failed attempts are limited
/// per client address, and each further attempt for one username from one client address waits
/// longer (then `429` with `Retry-After`); other clients of that user are not slowed.
#[utoipa::path(
    post,
    path = "/api/login",
    tag = "sessions",
    security(()),
    request_body = LoginRequest,
    responses((
        status = 200,
        body = LoginResponse,
        headers((
            "Set-Cookie" = String,
            description = "`token=<session token>; HttpOnly; [Secure; ]SameSite=Lax; Path=/; Max-Age=<session lifetime in seconds>` (`Secure` over HTTPS)"
        ))
    ))
)]
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<LoginRequest>,
) -> Result<Response, Problem> {
    if req.username.len() > 64 || req.password.len() > domain::MAX_PASSWORD_BYTES {
        return Err(Problem::unprocessable("username or password too long"));
    }
    // Reserved before the password is verified, so parallel guesses cannot all pass the check
    // while the first verifications run; given back only if the password is right.
    let attempt = state.limits.attempt(&req.username.to_lowercase(), &client.bucket).map_err(|wait| {
        tracing::warn!(ip = %client.ip, "login rate limit reached");
        Problem::too_many_requests(wait)
    })?;
    let user = queries::user_by_name(&state.pool, &req.username).await?;
    let phc = match &user {
        Some(u) => secrets::password(&state.pool, &u.id).await?,
        None => None,
    };
    let ok = state.hasher.verify(req.password, phc).await.map_err(Problem::internal)?;
    let Some(user) = user.filter(|_| ok) else {
        drop(attempt);
        return Err(Problem::unauthorized("invalid username or password"));
    };
    attempt.succeeded();

    let attributes = client.cookie_attributes(&state.config);
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
    let cookie = format!("token={token}; {attributes}; Max-Age={}", state.config.session_ttl_secs);
    let body = LoginResponse {
        expires_at: expires_at.format(&time::format_description::well_known::Rfc3339).map_err(Problem::internal)?,
        session_id,
        token,
        user,
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(Problem::internal)?);
    Ok(response)
}

/// Signs out: revokes this session everywhere and clears the `token` cookie.
#[utoipa::path(
    post,
    path = "/api/logout",
    tag = "sessions",
    responses((
        status = 204,
        description = "signed out",
        headers((
            "Set-Cookie" = String,
            description = "`token=; HttpOnly; [Secure; ]SameSite=Lax; Path=/; Max-Age=0` (`Secure` over HTTPS)"
        ))
    ))
)]
pub async fn logout(State(state): State<AppState>, client: Client, principal: Principal) -> Result<Response, Problem> {
    let session_id = principal.require_session()?;
    domain::revoke_session(&state, principal.user_id.as_str(), session_id.as_str(), Some(principal.user_id.as_str()))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("token=; {}; Max-Age=0", client.cookie_attributes(&state.config));
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(Problem::internal)?);
    Ok(response)
}

/// The kind of credential a request was made with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Session,
    ApiToken,
    ServiceAccount,
}

/// Who the caller is, and with which credential.
// Fields in alphabetical order, the order the answer's keys always had.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// When the credential stops working; `null` for an API token that never expires.
    #[schema(format = DateTime, required = true)]
    expires_at: Option<String>,
    kind: CredentialKind,
    /// An API token's scopes: scope → allowed actions (a service-account token's are the account's
    /// current ones). Absent for a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>, nullable = false)]
    scopes: Option<ScopeMap>,
    /// For a service-account token.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    service_account_id: Option<Token>,
    /// For a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    session_id: Option<Token>,
    /// For an API token (personal or service-account).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    token_id: Option<Token>,
    user: queries::User,
}

/// Who am I: the caller's user and credential (any credential).
#[utoipa::path(get, path = "/api/session", tag = "sessions", responses((status = 200, body = WhoAmI)))]
pub async fn whoami(State(state): State<AppState>, principal: Principal) -> Result<Json<WhoAmI>, Problem> {
    let user = queries::user_by_id(&state.pool, principal.user_id.as_str())
        .await?
        .ok_or_else(|| Problem::unauthorized("the account behind this token no longer exists"))?;
    let expires_at = principal
        .expires_at
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let mut body = WhoAmI {
        expires_at,
        kind: CredentialKind::Session,
        scopes: None,
        service_account_id: None,
        session_id: None,
        token_id: None,
        user,
    };
    match &principal.credential {
        Credential::Session { session_id } => {
            body.session_id = Some(session_id.clone());
        }
        Credential::ApiToken { token_id, scopes } => {
            body.kind = CredentialKind::ApiToken;
            body.token_id = Some(token_id.clone());
            body.scopes = Some(ScopeMap::clone(scopes));
        }
        Credential::ServiceAccount { token_id, service_account_id, scopes } => {
            body.kind = CredentialKind::ServiceAccount;
            body.token_id = Some(token_id.clone());
            body.service_account_id = Some(service_account_id.clone());
            body.scopes = Some(ScopeMap::clone(scopes));
        }
    }
    Ok(Json(body))
}

#[derive(Deserialize, ToSchema)]
pub struct SignupRequest {
    username: String,
    password: String,
    display_name: Option<String>,
}

/// Creates an account for oneself.
///
/// Only when self sign-up is open (`EDD_AUTH_SIGNUP=open`); otherwise `403`.
#[utoipa::path(
    post,
    path = "/api/signup",
    tag = "sessions",
    security(()),
    request_body = SignupRequest,
    responses((status = 201, body = queries::User))
)]
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

// `Jwks` and `Jwk` only document the JSON `edd_kit`'s `Authorizer::jwks` builds.

/// A JSON Web Key Set: the public keys session tokens are signed with.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

/// An Ed25519 public key (RFC 8037).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwk {
    /// Always `OKP`.
    #[schema(examples("OKP"))]
    kty: String,
    /// Always `Ed25519`.
    #[schema(examples("Ed25519"))]
    crv: String,
    /// Always `EdDSA`.
    #[schema(examples("EdDSA"))]
    alg: String,
    /// Always `sig`.
    #[schema(rename = "use", examples("sig"))]
    use_: String,
    /// The key id, as in a session token's `kid` header.
    kid: String,
    /// The public key, base64url without padding.
    x: String,
}

/// The public keys that verify session tokens, for outside verifiers (cacheable for 60 s).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    security(()),
    responses((
        status = 200,
        body = Jwks,
        headers(("Cache-Control" = String, description = "`public, max-age=60`"))
    ))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.authorizer.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    response
}
