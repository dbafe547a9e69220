//! `GET /admin/namespaces` and `GET /admin/files` for administrators.

use axum::extract::{Query, State};
use edd_kit::{auth::Principal, Json, Problem};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;

use super::{
    files::{FilePage, ListQuery},
    page_size,
};
use crate::{projection::SCHEMA, state::AppState};

#[derive(Deserialize)]
pub struct Paging {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

#[derive(Serialize)]
pub struct AdminNamespace {
    name: String,
    owner: String,
    visibility: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    files: i64,
    bytes: i64,
}

pub async fn namespaces(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<Paging>,
) -> Result<Json<Vec<AdminNamespace>>, Problem> {
    principal.require_admin()?;
    let limit = page_size(q.limit, 100, 1000)?;
    let rows = sqlx::query(&format!(
        "SELECT n.name, n.owner, n.visibility, n.created_at,
                count(f.path) AS files, coalesce(sum(f.size), 0)::bigint AS bytes
         FROM {SCHEMA}.namespaces n LEFT JOIN {SCHEMA}.files f ON f.ns_id = n.ns_id AND NOT f.deleted
         WHERE NOT n.deleted GROUP BY n.ns_key ORDER BY n.name LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(i64::from(q.offset.unwrap_or(0)))
    .fetch_all(&state.pool)
    .await
    .map_err(Problem::internal)?;
    rows.iter()
        .map(|row| {
            Ok(AdminNamespace {
                name: row.try_get("name")?,
                owner: row.try_get("owner")?,
                visibility: row.try_get("visibility")?,
                created_at: row.try_get("created_at")?,
                files: row.try_get("files")?,
                bytes: row.try_get("bytes")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Json)
        .map_err(Problem::internal)
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
