//! The gateway's admin API on its own host: `GET/POST /api/routes`, `DELETE /api/routes/{id}`
//! (an administrator's session). Changes are events; an answer means the route is live.

use std::sync::Arc;

use axum::{
    extract::{FromRef, State},
    http::StatusCode,
};
use edd_events::{
    catalog::gateway::{RouteCreated, RouteDeleted},
    Expected, Token,
};
use edd_kit::{
    auth::{Authorizer, Principal},
    openapi::{routes, ApiRouter, ToSchema},
    Committer, Json, Path, Problem,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{queries, routes::Route};

#[derive(Clone)]
pub struct ApiState {
    /// Follows `gateway/routes` and the live route table: a route command answers once the
    /// route is live.
    pub commits: Committer,
    pub pool: PgPool,
    pub authorizer: Authorizer,
    pub builtin: Arc<Vec<Route>>,
    /// The gateway's own host; no static route may take it over.
    pub admin_host: String,
}

impl FromRef<ApiState> for Authorizer {
    fn from_ref(state: &ApiState) -> Self {
        state.authorizer.clone()
    }
}

/// The admin API, each route with its documentation (see `edd_kit::openapi`).
pub fn routes() -> ApiRouter<ApiState> {
    ApiRouter::new().routes(routes!(list, create)).routes(routes!(remove))
}

/// A route: the host and path prefix it answers and where it sends requests.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RouteView {
    #[serde(default)]
    id: String,
    host: String,
    path_prefix: String,
    upstream: String,
    #[serde(default)]
    strip_prefix: bool,
    /// Largest request body in bytes; absent means the gateway's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<u64>,
    #[serde(default)]
    builtin: bool,
}

/// Bodies up to 1 TiB may be allowed on a route; beyond that is surely a typo.
const MAX_ROUTE_BODY_BYTES: u64 = 1 << 40;

fn upstream_string(route: &Route) -> String {
    let scheme = match route.upstream.protocol {
        crate::routes::Protocol::Http1 => "http",
        crate::routes::Protocol::H2c => "h2c",
    };
    format!("{scheme}://{}{}", route.upstream.authority, route.upstream.base_path)
}

/// Every route: the built-in ones (one per platform host) and those added through this API.
#[utoipa::path(get, path = "/api/routes", tag = "routes", responses((status = 200, body = Vec<RouteView>)))]
async fn list(State(state): State<ApiState>, principal: Principal) -> Result<Json<Vec<RouteView>>, Problem> {
    principal.require_admin()?;
    let mut views: Vec<RouteView> = state
        .builtin
        .iter()
        .map(|r| RouteView {
            id: r.id.clone(),
            host: r.host.clone(),
            path_prefix: r.prefix.clone(),
            upstream: upstream_string(r),
            strip_prefix: r.strip_prefix,
            max_body_bytes: r.max_body_bytes,
            builtin: true,
        })
        .collect();
    for r in queries::routes(&state.pool).await? {
        views.push(RouteView {
            id: r.id,
            host: r.host,
            path_prefix: r.path_prefix,
            upstream: r.upstream,
            strip_prefix: r.strip_prefix,
            max_body_bytes: r.max_body_bytes,
            builtin: false,
        });
    }
    Ok(Json(views))
}

/// Adds a route; it is live when this answers.
#[utoipa::path(post, path = "/api/routes", tag = "routes", request_body = RouteView, responses((status = 201, body = RouteView)))]
async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    Json(req): Json<RouteView>,
) -> Result<(StatusCode, Json<RouteView>), Problem> {
    principal.require_admin()?;
    let id = Token::random();
    let route = Route::new(id.as_str(), &req.host, &req.path_prefix, &req.upstream, req.strip_prefix)
        .map_err(|e| Problem::unprocessable(e.to_string()))?;
    if req.max_body_bytes.is_some_and(|n| n == 0 || n > MAX_ROUTE_BODY_BYTES) {
        return Err(Problem::unprocessable(format!("max_body_bytes must be between 1 and {MAX_ROUTE_BODY_BYTES}")));
    }
    if route.host == state.admin_host {
        return Err(Problem::unprocessable(format!("{} is the gateway's own host", state.admin_host)));
    }
    let created = RouteCreated {
        route_id: id.clone(),
        host: route.host.clone(),
        path_prefix: route.prefix.clone(),
        upstream: req.upstream.clone(),
        strip_prefix: route.strip_prefix,
        max_body_bytes: req.max_body_bytes,
    };
    state.commits.commit(principal.user_id.as_str(), created, Expected::NoStream).await?;
    let view = RouteView {
        id: id.to_string(),
        host: route.host,
        path_prefix: route.prefix,
        upstream: req.upstream,
        strip_prefix: route.strip_prefix,
        max_body_bytes: req.max_body_bytes,
        builtin: false,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Deletes a route added through this API (built-in routes cannot be deleted).
#[utoipa::path(
    delete,
    path = "/api/routes/{id}",
    tag = "routes",
    params(("id" = String, Path, description = "the route's id")),
    responses((status = 204, description = "deleted; no longer routed"))
)]
async fn remove(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require_admin()?;
    let seq = queries::route_seq(&state.pool, &id).await?;
    let seq = seq.ok_or_else(|| Problem::not_found("no such route (built-in routes cannot be deleted)"))?;
    let route_id = Token::new(id).map_err(Problem::internal)?;
    state.commits.commit(principal.user_id.as_str(), RouteDeleted { route_id }, Expected::Exactly(seq)).await?;
    Ok(StatusCode::NO_CONTENT)
}
