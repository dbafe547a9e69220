//! Request extractors whose rejections are problem+json, like every other error we send:
//! `Json` (bodies), `Query` (query strings) and `Path` (path parameters). Handlers import these
//! from `edd_kit` instead of axum's, so no input error answers in plain text.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
    response::{IntoResponse, Response},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::Problem;

/// `axum::Json`, but a malformed body is a 400/415/422 problem naming what is wrong.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::new(rejection.status()).with_detail(rejection.body_text())),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, but a query string that does not fit is a 400 problem naming the field.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::new(rejection.status()).with_detail(rejection.body_text())),
        }
    }
}

/// `axum::extract::Path`, but a path parameter that does not fit is a 400 problem.
#[derive(Clone, Copy, Debug, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::new(rejection.status()).with_detail(rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::StatusCode, routing::get, Router};
    use tower::ServiceExt;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: u32,
    }

    async fn answer(uri: &str) -> Response {
        let app = Router::new()
            .route("/q", get(|Query(_): Query<Page>| async { "ok" }))
            .route("/p/{n}", get(|Path(_): Path<u32>| async { "ok" }));
        app.oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn query_and_path_rejections_are_problems() {
        for uri in ["/q?limit=99999999999999999999", "/q", "/p/x"] {
            let response = answer(uri).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
            assert!(crate::problem::is_problem(&response), "{uri} answered {:?}", response.headers());
        }
        assert_eq!(answer("/q?limit=5").await.status(), StatusCode::OK);
        assert_eq!(answer("/p/5").await.status(), StatusCode::OK);
    }
}
