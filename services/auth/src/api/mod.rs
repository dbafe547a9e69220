//! The HTTP API (paths as existing clients call them; see `docs/auth.md`). Handlers are thin: parse,
//! check, call a command or a query.

mod admin;
mod service_accounts;
mod session;
mod settings;
mod tokens;

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};
use edd_kit::{
    openapi::{routes, ApiRouter},
    Problem,
};

use crate::{
    config::{AuthConfig, SecureCookie},
    state::AppState,
};

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

/// Where a request came from: the peer address, or — from one of the configured trusted proxies
/// (the platform's gateway) — the client its `X-Forwarded-For` names, with the scheme its
/// `X-Forwarded-Proto` names; and the user agent, bounded.
pub struct Client {
    pub ip: String,
    /// What the login limits count this client as: its address, or an IPv6 client's /64 (one
    /// host usually has a whole /64 to pick addresses from).
    pub bucket: String,
    /// Whether the client reached the platform over HTTPS.
    pub https: bool,
    pub user_agent: Option<String>,
}

impl Client {
    /// The attributes of the session cookie for this client: `Secure` over HTTPS (or always, when
    /// so configured).
    pub fn cookie_attributes(&self, config: &AuthConfig) -> &'static str {
        if self.https || config.secure_cookie == SecureCookie::Always {
            "HttpOnly; Secure; SameSite=Lax; Path=/"
        } else {
            "HttpOnly; SameSite=Lax; Path=/"
        }
    }
}

fn bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let (ip, bucket, https) = match peer {
            Some(peer) => {
                let origin = state.config.trusted_proxies.origin(peer, &parts.headers);
                (origin.ip.to_string(), bucket(origin.ip), origin.https)
            }
            None => ("unknown".to_owned(), "unknown".to_owned(), false),
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(Self { ip, bucket, https, user_agent })
    }
}
