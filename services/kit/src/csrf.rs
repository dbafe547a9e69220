//! Cross-site request forgery: a browser attaches the session cookie to a request another site's
//! page makes (a form, an image, a `fetch` without CORS), so a cookie alone does not show that the
//! user meant the request.
//!
//! The rule, in every service ([`crate::App::build`] installs it): a request that **changes
//! state** (any method but `GET`, `HEAD`, `OPTIONS` and `TRACE`) and is **authenticated by the
//! `token` cookie** (it has no `Authorization` header) must carry the header `X-Requested-With`
//! (any value, e.g. `X-Requested-With: edd`); without it the answer is a `403` problem and the
//! handler never runs. A page can only add a custom header to a cross-origin request after a CORS
//! preflight, which the services answer for the platform's own origins alone, and a form or a
//! link cannot add one at all. Requests with `Authorization: Bearer` (the CLI, scripts, other
//! services) carry no ambient credential and are not affected; nor are reads, WebSocket upgrades
//! and event streams (all `GET`).

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderName, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{auth::cookie_token, Problem};

/// The header a cookie-authenticated request that changes state must carry.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-requested-with");

/// Whether a request would be authenticated by the `token` cookie (and not by a header a page of
/// another site could not set).
pub fn is_cookie_authenticated(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::AUTHORIZATION) && cookie_token(headers).is_some_and(|t| !t.is_empty())
}

/// Whether the request passes the rule above.
pub fn allows(method: &Method, headers: &HeaderMap) -> bool {
    method.is_safe()
        || !is_cookie_authenticated(headers)
        || headers.get(&CSRF_HEADER).is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
}

/// The middleware: refuses what [`allows`] does not.
pub(crate) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if allows(request.method(), request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(method = %request.method(), "cookie-authenticated request without X-Requested-With refused");
    Problem::forbidden(
        "a request authenticated by the session cookie that changes state must carry the header \
         `X-Requested-With` (any value), or authenticate with `Authorization: Bearer`",
    )
    .with_extension("header", "X-Requested-With")
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn cookie_requests_that_change_state_need_the_header() {
        let cookie = headers(&[("cookie", "a=1; token=abc")]);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!allows(&method, &cookie), "{method}");
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(allows(&method, &cookie), "{method}");
        }
        assert!(allows(&Method::POST, &headers(&[("cookie", "token=abc"), ("x-requested-with", "edd")])));
        assert!(!allows(&Method::POST, &headers(&[("cookie", "token=abc"), ("x-requested-with", " ")])));
        // A bearer request, a request without the cookie, an emptied cookie: nothing ambient.
        assert!(allows(&Method::POST, &headers(&[("cookie", "token=abc"), ("authorization", "Bearer x")])));
        assert!(allows(&Method::POST, &headers(&[("cookie", "other=1")])));
        assert!(allows(&Method::DELETE, &headers(&[("cookie", "token=")])));
        assert!(allows(&Method::POST, &HeaderMap::new()));
    }
}
