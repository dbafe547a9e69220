//! Every read of the `gateway/routes` projection: the admin API's listing and lookups, and the
//! route table the proxy is rebuilt from.

use sqlx::{PgPool, Row};

use crate::projection::SCHEMA;

/// A route as the projection stores it (validated before its event was written).
pub struct StoredRoute {
    pub id: String,
    pub host: String,
    pub path_prefix: String,
    pub upstream: String,
    pub strip_prefix: bool,
    pub max_body_bytes: Option<u64>,
}

/// Every stored route, oldest first (at most 10,000: the route table is held in memory whole).
pub async fn routes(pool: &PgPool) -> Result<Vec<StoredRoute>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT route_id, host, path_prefix, upstream, strip_prefix, max_body_bytes FROM {SCHEMA}.routes
         ORDER BY created_at, route_id LIMIT 10000"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredRoute {
                id: row.try_get("route_id")?,
                host: row.try_get("host")?,
                path_prefix: row.try_get("path_prefix")?,
                upstream: row.try_get("upstream")?,
                strip_prefix: row.try_get("strip_prefix")?,
                max_body_bytes: row.try_get::<Option<i64>, _>("max_body_bytes")?.map(|n| n as u64),
            })
        })
        .collect()
}

/// The last event's sequence of route `id`, if it exists.
pub async fn route_seq(pool: &PgPool, id: &str) -> Result<Option<u64>, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar(&format!("SELECT seq FROM {SCHEMA}.routes WHERE route_id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(seq.map(|s| s as u64))
}
