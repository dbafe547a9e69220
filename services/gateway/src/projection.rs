//! `gateway/routes`: the admin-managed static routes, projected from `gateway.route.*`.

use edd_events::{
    catalog::gateway::{RouteCreated, RouteDeleted},
    RawEvent,
};
use edd_projections::{ApplyError, Outcome, Projection};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;

pub const NAME: &str = "gateway/routes";
pub const SCHEMA: &str = "gateway_routes";

pub struct RoutesProjection;

impl Projection for RoutesProjection {
    fn name(&self) -> &'static str {
        NAME
    }
    fn stream(&self) -> &'static str {
        "GATEWAY"
    }
    fn filters(&self) -> Vec<String> {
        vec!["gateway.route.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE routes (
            route_id text PRIMARY KEY,
            host text NOT NULL,
            path_prefix text NOT NULL,
            upstream text NOT NULL,
            strip_prefix boolean NOT NULL,
            created_at timestamptz NOT NULL,
            seq bigint NOT NULL
        )",
            "ALTER TABLE routes ADD COLUMN max_body_bytes bigint",
        ]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            if event.is::<RouteCreated>() {
                let e: RouteCreated = event.decode()?;
                sqlx::query(
                    "INSERT INTO routes (route_id, host, path_prefix, upstream, strip_prefix, created_at, seq, max_body_bytes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (route_id) DO NOTHING",
                )
                .bind(e.route_id.as_str())
                .bind(&e.host)
                .bind(&e.path_prefix)
                .bind(&e.upstream)
                .bind(e.strip_prefix)
                .bind(event.envelope.time)
                .bind(event.stream_seq as i64)
                .bind(e.max_body_bytes.map(|n| n.min(i64::MAX as u64) as i64))
                .execute(&mut *tx)
                .await?;
            } else if event.is::<RouteDeleted>() {
                let e: RouteDeleted = event.decode()?;
                sqlx::query("DELETE FROM routes WHERE route_id = $1")
                    .bind(e.route_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            } else {
                return Ok(Outcome::Skipped);
            }
            Ok(Outcome::Applied)
        })
    }
}
