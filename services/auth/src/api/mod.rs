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
};
use edd_kit::{
    openapi::{routes, ApiRouter},
    Problem,
};

use crate::state::AppState;

/// The HTTP API, each route with its documentation (see `edd_kit::openapi`). Handlers of one path
/// share a `routes!`.
pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .routes(routes!(session::login))
        .routes(routes!(session::logout))
        .routes(routes!(session::whoami))
        .routes(routes!(session::signup))
        .routes(routes!(settings::profile))
        .routes(routes!(settings::password))
        .routes(routes!(settings::sessions))
        .routes(routes!(settings::revoke_all))
        .routes(routes!(settings::revoke))
        .routes(routes!(admin::users, admin::create_user))
        .routes(routes!(admin::delete_user))
        .routes(routes!(admin::sessions))
        .routes(routes!(admin::rotate_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(service_accounts::list, service_accounts::create))
        .routes(routes!(service_accounts::show, service_accounts::remove))
        .routes(routes!(service_accounts::set_scopes))
        .routes(routes!(service_accounts::tokens, service_accounts::create_token))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(session::jwks))
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
