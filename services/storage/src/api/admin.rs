//! `GET /admin/namespaces` and `GET /admin/files` for administrators.

use axum::extract::State;
use edd_kit::Query;
use edd_kit::{auth::Principal, Json, Problem};
use serde::Deserialize;

use super::{
    files::{FilePage, ListQuery},
    page_size,
};
use crate::{queries::AdminNamespace, state::AppState};

#[derive(Deserialize)]
pub struct Paging {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

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
