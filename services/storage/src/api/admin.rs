//! `GET /admin/namespaces` and `GET /admin/files` for administrators.

use axum::extract::State;
use edd_kit::Query;
use edd_kit::{auth::Principal, openapi::IntoParams, Json, Problem};
use serde::Deserialize;

use super::{
    files::{FilePage, ListQuery},
    page_size,
};
use crate::{queries::AdminNamespace, state::AppState};

/// `?limit=&offset=` of the namespace listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Namespaces per page, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(value_type = u32, minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Namespaces to skip (default 0).
    #[serde(default)]
    #[param(value_type = u32)]
    offset: Option<u32>,
}

/// Every user's namespaces, by name, with their totals.
#[utoipa::path(
    get,
    path = "/admin/namespaces",
    tag = "admin",
    params(Paging),
    responses((status = 200, body = Vec<AdminNamespace>))
)]
pub async fn namespaces(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<Paging>,
) -> Result<Json<Vec<AdminNamespace>>, Problem> {
    principal.require_admin()?;
    let limit = page_size(q.limit, 100, 1000)?;
    Ok(Json(state.all_namespaces(limit, i64::from(q.offset.unwrap_or(0))).await?))
}

/// Any namespace's files, for an administrator.
#[utoipa::path(get, path = "/admin/files", tag = "admin", params(ListQuery), responses((status = 200, body = FilePage)))]
pub async fn files(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
) -> Result<Json<FilePage>, Problem> {
    principal.require_admin()?;
    let ns = state.namespace(&q.namespace).await?;
    let limit = page_size(q.limit, 100, 1000)?;
    Ok(Json(super::files::page(&state, &ns, q.prefix.as_deref().unwrap_or(""), q.after.as_deref(), limit).await?))
}
