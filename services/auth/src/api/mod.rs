//! The HTTP API (paths as existing clients call them; see `docs/auth.md`). Handlers are thin: parse,
//! check, call a command or a query.

mod admin;
mod service_accounts;
mod session;
mod settings;
mod tokens;

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
    routing::{delete, get, post, put},
    Router,
};
use edd_kit::Problem;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/login", post(session::login))
        .route("/api/logout", post(session::logout))
        .route("/api/session", get(session::whoami))
        .route("/api/signup", post(session::signup))
        .route("/api/settings/profile", put(settings::profile))
        .route("/api/settings/password", put(settings::password))
        .route("/api/settings/sessions", get(settings::sessions))
        .route("/api/settings/sessions/revoke-all", post(settings::revoke_all))
        .route("/api/settings/sessions/{id}", delete(settings::revoke))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{id}", delete(admin::delete_user))
        .route("/admin/sessions", get(admin::sessions))
        .route("/admin/keys/rotate", post(admin::rotate_key))
        .route("/api/service-accounts", get(service_accounts::list).post(service_accounts::create))
        .route("/api/service-accounts/{id}", get(service_accounts::show).delete(service_accounts::remove))
        .route("/api/service-accounts/{id}/scopes", put(service_accounts::set_scopes))
        .route("/api/service-accounts/{id}/tokens", get(service_accounts::tokens).post(service_accounts::create_token))
        .route("/api/tokens", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}", delete(tokens::revoke))
        .route("/.well-known/jwks.json", get(session::jwks))
        .with_state(state)
}

/// Where a request came from: the peer address (or, behind our gateway when configured, the
/// first `X-Forwarded-For` entry) and its user agent, both bounded.
pub struct Client {
    pub ip: String,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let forwarded = state
            .config
            .trust_forwarded_for
            .then(|| parts.headers.get("x-forwarded-for")?.to_str().ok()?.split(',').next().map(str::trim))
            .flatten()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let ip = forwarded.map(str::to_owned).or(peer).unwrap_or_else(|| "unknown".into());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(Self { ip, user_agent })
    }
}
