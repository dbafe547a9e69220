//! Who is calling, as an axum extractor, and the checks handlers make with it.
//!
//! A handler takes a [`Principal`] argument and the request is authenticated before the handler
//! runs: `Authorization: Bearer …`, else a `token` cookie, else — only for WebSocket upgrades and
//! `text/event-stream` requests, which browsers cannot give headers — a `?token=` query parameter.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts, HeaderMap, StatusCode},
};
use edd_events::{catalog::auth::ScopeMap, Token};

use super::{
    authorizer::{AuthError, Authorizer},
    scope,
};
use crate::Problem;

/// How the caller authenticated.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A login session: acts for its own user on everything the user owns.
    Session { session_id: Token },
    /// A personal API token with its own scopes.
    ApiToken { token_id: Token, scopes: Arc<ScopeMap> },
    /// A service-account token: the service account's current scopes.
    ServiceAccount { token_id: Token, service_account_id: Token, scopes: Arc<ScopeMap> },
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: Token,
    pub is_admin: bool,
    /// When the credential stops working (Unix seconds); `None` for tokens that never expire.
    pub expires_at: Option<i64>,
    pub credential: Credential,
}

impl Principal {
    /// Whether the caller may do `action` on `scope` (`<root>.<user>[.<resource>[.<id>]]`).
    pub fn can(&self, scope: &str, action: &str) -> bool {
        let mut parts = scope.split('.');
        let (_root, Some(user)) = (parts.next(), parts.next()) else { return false };
        if user != self.user_id.as_str() {
            return false;
        }
        match &self.credential {
            Credential::Session { .. } => true,
            Credential::ApiToken { scopes, .. } | Credential::ServiceAccount { scopes, .. } => {
                scope::allows(scopes, scope, action)
            }
        }
    }

    /// Checks ownership, then scope: another user's resource is a 404 (its existence is not
    /// revealed), a missing grant on one's own is a 403 naming what is needed.
    pub fn require(
        &self,
        root: &str,
        owner: &Token,
        resource: Option<&str>,
        id: Option<&str>,
        action: &str,
    ) -> Result<(), Problem> {
        if owner != &self.user_id {
            return Err(Problem::not_found("no such resource"));
        }
        let needed = scope::scope(root, owner, resource, id);
        if self.can(&needed, action) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this token lacks {action:?} on {needed}"))
                .with_extension("scope", needed)
                .with_extension("action", action))
        }
    }

    /// The session id, for endpoints that manage the account itself and so refuse API tokens.
    pub fn require_session(&self) -> Result<&Token, Problem> {
        match &self.credential {
            Credential::Session { session_id, .. } => Ok(session_id),
            _ => Err(Problem::forbidden("this endpoint needs a login session, not an API token")),
        }
    }

    /// Admin routes: an administrator's login session.
    pub fn require_admin(&self) -> Result<(), Problem> {
        self.require_session()?;
        if self.is_admin {
            Ok(())
        } else {
            Err(Problem::forbidden("administrators only"))
        }
    }

    /// `session`, `api_token` or `service_account`.
    pub fn kind(&self) -> &'static str {
        match self.credential {
            Credential::Session { .. } => "session",
            Credential::ApiToken { .. } => "api_token",
            Credential::ServiceAccount { .. } => "service_account",
        }
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NotReady => Problem::unavailable(e.to_string()).with_retry_after(1),
            e => Problem::unauthorized(e.to_string()),
        }
    }
}

/// The credential a request carries, if any.
pub fn credential(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    if let Some(token) = cookie_token(&parts.headers) {
        return Some(token);
    }
    let streaming = parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        || parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if streaming {
        return parts.uri.query()?.split('&').find_map(|pair| pair.strip_prefix("token="));
    }
    None
}

/// The `token` cookie's value, if the request has one.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|cookies| cookies.to_str().ok())
        .find_map(|cookies| cookies.split(';').find_map(|c| c.trim().strip_prefix("token=")))
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Authorizer: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authorizer = Authorizer::from_ref(state);
        let token = credential(parts).ok_or(AuthError::Missing)?;
        if token.is_empty() {
            return Err(AuthError::Missing.into());
        }
        let principal = authorizer.authenticate(token)?;
        Ok(principal)
    }
}

/// For handlers that work with or without a caller.
pub struct MaybePrincipal(pub Option<Principal>);

impl<S> FromRequestParts<S> for MaybePrincipal
where
    S: Send + Sync,
    Authorizer: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Principal::from_request_parts(parts, state).await {
            Ok(p) => Ok(Self(Some(p))),
            Err(p) if p.status == StatusCode::UNAUTHORIZED && credential(parts).is_none() => Ok(Self(None)),
            Err(p) => Err(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn finds_the_credential_where_clients_put_it() {
        let p = parts(Request::get("/").header("authorization", "Bearer abc").body(()).unwrap());
        assert_eq!(credential(&p), Some("abc"));
        let p = parts(Request::get("/").header("cookie", "a=1; token=xyz; b=2").body(()).unwrap());
        assert_eq!(credential(&p), Some("xyz"));
        let p = parts(Request::get("/x?a=1&token=q").header("accept", "text/event-stream").body(()).unwrap());
        assert_eq!(credential(&p), Some("q"));
        // A query token on an ordinary request would end up in logs and Referer headers: ignored.
        let p = parts(Request::get("/x?token=q").body(()).unwrap());
        assert_eq!(credential(&p), None);
        let p = parts(Request::get("/").header("authorization", "Basic abc").body(()).unwrap());
        assert_eq!(credential(&p), None);
    }

    #[test]
    fn sessions_act_for_their_user_and_tokens_for_their_scopes() {
        let u1 = Token::new("u1").unwrap();
        let session = Principal {
            user_id: u1.clone(),
            is_admin: false,
            expires_at: None,
            credential: Credential::Session { session_id: Token::new("s").unwrap() },
        };
        assert!(session.require("storage", &u1, Some("files"), Some("f1"), "delete").is_ok());
        let other = Token::new("u2").unwrap();
        assert_eq!(session.require("storage", &other, None, None, "read").unwrap_err().status, StatusCode::NOT_FOUND);

        let scopes: ScopeMap = [("storage.u1.files".to_string(), vec!["read".to_string()])].into();
        let token = Principal {
            user_id: u1.clone(),
            is_admin: true,
            expires_at: None,
            credential: Credential::ApiToken { token_id: Token::new("t").unwrap(), scopes: Arc::new(scopes) },
        };
        assert!(token.require("storage", &u1, Some("files"), Some("f1"), "read").is_ok());
        assert_eq!(
            token.require("storage", &u1, Some("files"), Some("f1"), "delete").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(token.require_admin().unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
